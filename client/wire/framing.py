"""Length-prefixed Kafka frames: an incremental sans-IO decoder and the encoder.

Every request and response on a Kafka connection is one frame [S: kafka.apache.org/protocol.html
"Protocol"; ak clients/.../network/NetworkReceive.java]::

    size     int32 big-endian   number of bytes that follow (the prefix itself is not counted)
    payload  size bytes         header + body (protocol.py)

`FrameDecoder.feed(data)` takes whatever the socket produced and returns the complete frames
(payload only). Bounds (ARCHITECTURE.md §3 rule 4):
- a size prefix above `max_frame_bytes` or below 0 raises `FrameTooLargeError` as soon as its 4
  bytes are seen, before anything is allocated for it (a 2 GiB prefix costs nothing);
- the decoder keeps at most one partial frame, so it never holds more than
  max_frame_bytes + 4 bytes between calls;
- after an error the decoder stays failed: the connection must be closed (rule 2).

Frames that lie wholly inside one `bytes` object passed to feed() are returned as memoryview
slices of it (no copy; they keep that object alive); frames assembled across calls, or cut from a
mutable buffer the caller may reuse, are returned as `bytes`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from client.wire.codec import ProtocolError, buffer_size

__all__ = ["FRAME_BYTES_MAX", "SIZE_PREFIX_BYTES", "FrameDecoder", "FrameTooLargeError", "encode_frame"]

# Kafka's socket.request.max.bytes default (100 MiB): the largest request a broker accepts.
FRAME_BYTES_MAX = 104_857_600
SIZE_PREFIX_BYTES = 4

_SIZE = struct.Struct(">i")
_size_from = _SIZE.unpack_from


class FrameTooLargeError(ProtocolError):
    """A size prefix above the maximum frame size, or negative."""

    def __init__(self, size_bytes: int, max_frame_bytes: int) -> None:
        super().__init__(f"frame size {size_bytes} outside [0, {max_frame_bytes}]")
        self.size_bytes = size_bytes
        self.max_frame_bytes = max_frame_bytes


class FrameDecoder:
    """Splits a byte stream into frames; see the module docstring for the bounds."""

    __slots__ = ("_failed", "_partial", "_size", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = FRAME_BYTES_MAX) -> None:
        if max_frame_bytes < 0:
            raise ValueError("max_frame_bytes must be >= 0")
        self.max_frame_bytes = max_frame_bytes
        self._partial = bytearray()  # prefix + payload of the one incomplete frame
        self._size = -1  # payload size of the partial frame once its prefix is complete
        self._failed: FrameTooLargeError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the incomplete frame (0 at a frame boundary)."""
        return len(self._partial)

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is pending (a clean place for the peer to close)."""
        return not self._partial

    def _checked(self, size: int) -> int:
        if size < 0 or size > self.max_frame_bytes:
            self._failed = FrameTooLargeError(size, self.max_frame_bytes)
            self._partial = bytearray()
            raise self._failed
        return size

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview | bytes]:
        """Consume `data`; return every frame it completes (possibly none)."""
        if self._failed is not None:
            raise self._failed
        mv = data if data.__class__ is memoryview else memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        frames: list[memoryview | bytes] = []
        pos = 0
        n = len(mv)
        if self._partial:
            pos = self._complete_partial(mv, frames)
            if self._partial:
                return frames
        immutable = data.__class__ is bytes
        max_bytes = self.max_frame_bytes
        while n - pos >= 4:
            size = _size_from(mv, pos)[0]
            if size < 0 or size > max_bytes:
                self._checked(size)
            end = pos + 4 + size
            if end > n:
                self._size = size
                break
            frames.append(mv[pos + 4:end] if immutable else mv[pos + 4:end].tobytes())
            pos = end
        if pos < n:
            self._partial += mv[pos:]
            if len(self._partial) < 4:
                self._size = -1
        return frames

    def _complete_partial(self, mv: memoryview, frames: list[memoryview | bytes]) -> int:
        """Add bytes of `mv` to the partial frame; returns how many were used."""
        partial = self._partial
        pos = 0
        if len(partial) < 4:
            pos = min(4 - len(partial), len(mv))
            partial += mv[:pos]
            if len(partial) < 4:
                return pos
            self._size = self._checked(_size_from(partial, 0)[0])
        take = min(4 + self._size - len(partial), len(mv) - pos)
        partial += mv[pos:pos + take]
        pos += take
        if len(partial) == 4 + self._size:
            frames.append(bytes(memoryview(partial)[4:]))
            self._partial = bytearray()
            self._size = -1
        return pos


def encode_frame(payload: bytes | bytearray | memoryview | Sequence[Any]) -> Any:
    """Prefix a payload with its size.

    bytes-like in, bytes out (one copy); a list of chunks in, a new list out with the prefix as
    its first chunk (no copy, for writelines()).
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        return _SIZE.pack(buffer_size(payload)) + payload
    chunks = list(payload)
    return [_SIZE.pack(sum(buffer_size(c) for c in chunks)), *chunks]
