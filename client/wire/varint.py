"""Zigzag varints as Kafka's record format uses them (protobuf encoding, ByteUtils.java).

A signed value v is first zigzag-mapped to an unsigned z = (v << 1) ^ (v >> 63), so small
magnitudes of either sign stay small (0→0, -1→1, 1→2, -2→3 ...); z is then written 7 bits at a
time, least significant group first, with the high bit of each byte set on all but the last byte.
Record fields use varints (int32, at most 5 bytes) and one varlong (timestampDelta, int64, at most
10 bytes).

Encoding is on the hot path of the batch builder, so the encodings of the first
`VARINT_CACHE_SIZE` zigzag values are precomputed; `LENGTH_VARINT[n]` is the encoding of a
non-negative length n (z = 2n) for n < `LENGTH_CACHE_SIZE`.

Decoding raises IndexError when the buffer ends inside a varint and ValueError when the varint is
longer than its type allows; callers in records.py turn both into a Kafka error.
"""

from __future__ import annotations

from client.wire.limits import VARLONG_BYTES_MAX

VARINT_CACHE_SIZE = 1 << 14  # zigzag values 0..16383: every 1- and 2-byte varint
LENGTH_CACHE_SIZE = VARINT_CACHE_SIZE // 2  # lengths 0..8191

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def zigzag(value: int) -> int:
    """Signed int64 → unsigned zigzag value."""
    return (value << 1) ^ (value >> 63)


def unzigzag(raw: int) -> int:
    """Unsigned zigzag value → signed."""
    return (raw >> 1) ^ -(raw & 1)


def encode_uvarint(raw: int) -> bytes:
    """Unsigned LEB128 bytes of raw >= 0."""
    if raw < VARINT_CACHE_SIZE:
        return UVARINT_BYTES[raw]
    return _encode_uvarint_slow(raw)


def _encode_uvarint_slow(raw: int) -> bytes:
    assert raw >= 0, raw
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def encode_varint(value: int) -> bytes:
    """Zigzag varint bytes of a signed value (int32 or int64 range)."""
    return encode_uvarint((value << 1) ^ (value >> 63))


def size_of_varint(value: int) -> int:
    """Number of bytes `encode_varint(value)` takes."""
    raw = (value << 1) ^ (value >> 63)
    return max(1, (raw.bit_length() + 6) // 7)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int,
                   bytes_max: int = VARLONG_BYTES_MAX) -> tuple[int, int]:
    """Read an unsigned varint at `pos`; returns (raw, next position).

    IndexError if the buffer ends inside it, ValueError if it is longer than `bytes_max` bytes.
    """
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    raw = b & 0x7F
    shift = 7
    end = pos + bytes_max
    pos += 1
    while True:
        if pos >= end:
            raise ValueError(f"varint longer than {bytes_max} bytes")
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            return raw, pos
        shift += 7


def decode_varint(buf: bytes | bytearray | memoryview, pos: int,
                  bytes_max: int = VARLONG_BYTES_MAX) -> tuple[int, int]:
    """Read a zigzag varint at `pos`; returns (value, next position). Errors as decode_uvarint."""
    raw, pos = decode_uvarint(buf, pos, bytes_max)
    return (raw >> 1) ^ -(raw & 1), pos


UVARINT_BYTES: tuple[bytes, ...] = tuple(_encode_uvarint_slow(raw) for raw in range(VARINT_CACHE_SIZE))
LENGTH_VARINT: tuple[bytes, ...] = UVARINT_BYTES[0::2]
assert len(LENGTH_VARINT) == LENGTH_CACHE_SIZE
