"""Primitive types of the Kafka wire protocol: bounded decoding and chunked encoding.

Every multi-byte integer is big-endian (network order) [S: kafka.apache.org/protocol.html
"Protocol Primitive Types"; ak clients/.../protocol/types/Type.java]::

    int8 int16 int32 int64   1/2/4/8 bytes, two's complement
    uint16 uint32            2/4 bytes, unsigned
    bool                     1 byte; 0 is false, anything else true (written as 0 or 1)
    float64                  8 bytes, IEEE 754 binary64
    uuid                     16 raw bytes; all zero means "no id" (decoded to `uuid.UUID`)
    uvarint                  unsigned LEB128, 7 bits per byte, low group first, high bit = "more";
                             at most 5 bytes for 32-bit values (Kafka's readUnsignedVarint)
    varint / varlong         zigzag ((v << 1) ^ (v >> 31|63)) then uvarint; at most 5 / 10 bytes
    string                   int16 length N >= 0, then N bytes of UTF-8
    nullable string          as string; length -1 means null
    compact (nullable) str.  uvarint N + 1, then N bytes; 0 means null
    bytes / nullable bytes   int32 length N (-1 = null), then N bytes
    compact (nullable) bytes uvarint N + 1 (0 = null), then N bytes
    records                  bytes whose content is record batches; never decoded here
    array / nullable array   int32 count N (-1 = null), then N items
    compact array            uvarint N + 1 (0 = null), then N items
    tagged-field section     uvarint count, then count x (uvarint tag, uvarint size, size bytes),
                             tags strictly ascending when written; unknown tags are skipped

Decoding is bounded in the h11 sense: nothing is allocated from a length read off the wire
before the length has been checked against both the bytes that remain and a named limit
(`DecodeLimits`). A length of -1 is null only where null is allowed; any other negative length,
a truncated value, or a size above a limit raises `ProtocolError` (a `ValueError`). A peer that
triggers one has broken the protocol: close its connection (ARCHITECTURE.md §3 rule 2).

Two layers are exported:
- functions `read_*(buf, pos, ...) -> (value, next_pos)` over a memoryview and
  `encode_*(value) -> bytes`. The generated message codecs (schema.py) call these directly,
  because a method call on a reader object costs an attribute lookup per field;
- `Reader` and `Writer`, small classes over the same functions for hand-written layouts
  (protocol headers, tests, tools).

Records values are returned as memoryview slices of the input (zero copy) and written as the
caller's object (bytes, memoryview, or any object with a buffer or a `__len__`, such as a file
region the server sends with sendfile); `coalesce` joins the small pieces around them.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from client.wire.varint import decode_uvarint

__all__ = [
    "ARRAY_LENGTH_MAX", "BYTES_MAX", "COALESCE_COPY_BYTES_MAX", "DEFAULT_LIMITS", "RECORDS_BYTES_MAX",
    "STRING_BYTES_MAX", "TAGGED_FIELDS_MAX", "UVARINT_BYTES_MAX", "UVARLONG_BYTES_MAX", "ZERO_UUID",
    "DecodeLimits", "ProtocolError", "Reader", "Writer",
    "buffer_size", "coalesce", "encode_array_length", "encode_bytes", "encode_compact_array_length",
    "encode_compact_bytes", "encode_compact_nullable_bytes", "encode_compact_nullable_string",
    "encode_compact_string", "encode_nullable_bytes", "encode_nullable_string", "encode_string",
    "encode_tagged_fields", "encode_uuid", "encode_uvarint", "encode_varint", "encode_varlong",
    "read_array_length", "read_bytes", "read_compact_array_length", "read_compact_bytes",
    "read_compact_nullable_bytes", "read_compact_nullable_string", "read_compact_records",
    "read_compact_string", "read_nullable_bytes", "read_nullable_string", "read_records", "read_string",
    "read_tagged_fields", "read_uuid", "read_uvarint", "read_varint", "read_varlong", "skip_tagged_fields",
]

# --- named limits ----------------------------------------------------------------------------

# Kafka's generated readers reject strings longer than 0x7fff even in compact form
# (MessageDataGenerator: "string field X had invalid length").
STRING_BYTES_MAX = 0x7FFF
# A `bytes` field (group member metadata, assignments, SASL tokens). Kafka bounds these only by
# the frame; 16 MiB is far above a real group assignment and well under a frame.
BYTES_MAX = 16 * 1024 * 1024
# A `records` field: Kafka's socket.request.max.bytes default (100 MiB). The frame limit is
# normally the tighter bound.
RECORDS_BYTES_MAX = 100 * 1024 * 1024
# Items in one array. Kafka has no such limit (only the frame); 2^20 topics or partitions in a
# single request or response is beyond anything a real cluster sends.
ARRAY_LENGTH_MAX = 1 << 20
# Entries in one tagged-field section. Kafka defines fewer than 10 tags per struct.
TAGGED_FIELDS_MAX = 64
# Encoded widths Kafka's ByteUtils accepts: 32-bit uvarints take at most 5 bytes, 64 at most 10.
UVARINT_BYTES_MAX = 5
UVARLONG_BYTES_MAX = 10
# coalesce(): pieces up to this size are copied into their neighbours; larger ones (records)
# stay separate so the transport can writelines()/sendfile them without a copy.
COALESCE_COPY_BYTES_MAX = 4096

ZERO_UUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """The bounds one decode enforces. The broker builds one from its configuration."""

    string_bytes_max: int = STRING_BYTES_MAX
    bytes_max: int = BYTES_MAX
    records_bytes_max: int = RECORDS_BYTES_MAX
    array_length_max: int = ARRAY_LENGTH_MAX
    tagged_fields_max: int = TAGGED_FIELDS_MAX


DEFAULT_LIMITS = DecodeLimits()


class ProtocolError(ValueError):
    """Bytes that break the Kafka wire format: truncated, negative length, above a limit, bad UTF-8."""


# --- struct packers (shared by schema.py's generated code) ---------------------------------------

INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")
UINT16 = struct.Struct(">H")
UINT32 = struct.Struct(">I")
FLOAT64 = struct.Struct(">d")
BOOL = struct.Struct(">?")
UUID16 = struct.Struct(">16s")

_i16 = INT16.unpack_from
_i32 = INT32.unpack_from
_p16 = INT16.pack
_p32 = INT32.pack

NULL_INT16 = b"\xff\xff"
NULL_INT32 = b"\xff\xff\xff\xff"


# --- varints -------------------------------------------------------------------------------------

def _uvarint_slow(raw: int) -> bytes:
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


_UVARINT_CACHE_SIZE = 1 << 14  # every 1- and 2-byte uvarint
_UVARINT_CACHE: tuple[bytes, ...] = tuple(_uvarint_slow(raw) for raw in range(_UVARINT_CACHE_SIZE))


def encode_uvarint(raw: int) -> bytes:
    """Unsigned LEB128 of 0 <= raw < 2^64."""
    if 0 <= raw < _UVARINT_CACHE_SIZE:
        return _UVARINT_CACHE[raw]
    if _UVARINT_CACHE_SIZE <= raw < 1 << 21:  # records lengths of 16 KiB..2 MiB: 3 bytes
        return bytes(((raw & 0x7F) | 0x80, ((raw >> 7) & 0x7F) | 0x80, raw >> 14))
    if raw < 0:
        raise ValueError(f"uvarint must be >= 0, got {raw}")
    return _uvarint_slow(raw)


def encode_varint(value: int) -> bytes:
    """Zigzag varint of a signed int32."""
    return encode_uvarint(((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)


def encode_varlong(value: int) -> bytes:
    """Zigzag varlong of a signed int64."""
    return encode_uvarint(((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)


def read_uvarint(buf: memoryview, pos: int, bytes_max: int = UVARINT_BYTES_MAX) -> tuple[int, int]:
    """Unsigned varint at pos -> (value, next_pos); at most `bytes_max` bytes."""
    try:
        return decode_uvarint(buf, pos, bytes_max)
    except IndexError:
        raise ProtocolError("truncated uvarint") from None
    except ValueError:
        raise ProtocolError(f"uvarint longer than {bytes_max} bytes") from None


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Zigzag varint (int32) at pos -> (value, next_pos)."""
    raw, pos = read_uvarint(buf, pos, UVARINT_BYTES_MAX)
    if raw > 0xFFFFFFFF:
        raise ProtocolError("varint out of int32 range")
    return (raw >> 1) ^ -(raw & 1), pos


def read_varlong(buf: memoryview, pos: int) -> tuple[int, int]:
    """Zigzag varlong (int64) at pos -> (value, next_pos)."""
    raw, pos = read_uvarint(buf, pos, UVARLONG_BYTES_MAX)
    if raw > 0xFFFFFFFFFFFFFFFF:
        raise ProtocolError("varlong out of int64 range")
    return (raw >> 1) ^ -(raw & 1), pos


# --- lengths -------------------------------------------------------------------------------------

def _int16_length(buf: memoryview, pos: int) -> int:
    if pos + 2 > len(buf):
        raise ProtocolError("truncated int16 length")
    return _i16(buf, pos)[0]


def _int32_length(buf: memoryview, pos: int) -> int:
    if pos + 4 > len(buf):
        raise ProtocolError("truncated int32 length")
    return _i32(buf, pos)[0]


def _check_span(buf: memoryview, pos: int, size: int, limit: int, what: str) -> int:
    if size > limit:
        raise ProtocolError(f"{what} of {size} bytes exceeds the limit of {limit}")
    end = pos + size
    if end > len(buf):
        raise ProtocolError(f"truncated {what}: {size} bytes declared, {len(buf) - pos} remain")
    return end


def read_array_length(buf: memoryview, pos: int, limit: int = ARRAY_LENGTH_MAX,
                      item_bytes_min: int = 1) -> tuple[int, int]:
    """int32 item count -> (count or -1 for null, next_pos).

    The count must fit `limit` and the bytes that remain (each item takes >= item_bytes_min).
    Whether null is allowed is the caller's decision.
    """
    n = _int32_length(buf, pos)
    pos += 4
    if n < 0:
        if n == -1:
            return -1, pos
        raise ProtocolError(f"negative array length {n}")
    _check_count(buf, pos, n, limit, item_bytes_min)
    return n, pos


def read_compact_array_length(buf: memoryview, pos: int, limit: int = ARRAY_LENGTH_MAX,
                              item_bytes_min: int = 1) -> tuple[int, int]:
    """uvarint N+1 item count -> (N, or -1 for null (0 on the wire), next_pos)."""
    n, pos = read_uvarint(buf, pos)
    n -= 1
    if n >= 0:
        _check_count(buf, pos, n, limit, item_bytes_min)
    return n, pos


def _check_count(buf: memoryview, pos: int, n: int, limit: int, item_bytes_min: int) -> None:
    if n > limit:
        raise ProtocolError(f"array of {n} items exceeds the limit of {limit}")
    if n * item_bytes_min > len(buf) - pos:
        raise ProtocolError(f"truncated array: {n} items cannot fit in {len(buf) - pos} bytes")


def encode_array_length(n: int | None) -> bytes:
    """int32 count; None -> -1 (null)."""
    return NULL_INT32 if n is None else _p32(n)


def encode_compact_array_length(n: int | None) -> bytes:
    """uvarint N+1; None -> 0 (null)."""
    return b"\x00" if n is None else encode_uvarint(n + 1)


# --- strings -------------------------------------------------------------------------------------

def read_string(buf: memoryview, pos: int, limit: int = STRING_BYTES_MAX) -> tuple[str, int]:
    """int16-length UTF-8 string, not null."""
    n = _int16_length(buf, pos)
    pos += 2
    if n < 0:
        raise ProtocolError(f"non-nullable string has length {n}")
    end = _check_span(buf, pos, n, limit, "string")
    return str(buf[pos:end], "utf-8"), end


def read_nullable_string(buf: memoryview, pos: int, limit: int = STRING_BYTES_MAX) -> tuple[str | None, int]:
    """int16-length UTF-8 string; -1 is None."""
    n = _int16_length(buf, pos)
    pos += 2
    if n < 0:
        if n == -1:
            return None, pos
        raise ProtocolError(f"negative string length {n}")
    end = _check_span(buf, pos, n, limit, "string")
    return str(buf[pos:end], "utf-8"), end


def read_compact_string(buf: memoryview, pos: int, limit: int = STRING_BYTES_MAX) -> tuple[str, int]:
    """uvarint N+1 UTF-8 string, not null."""
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        raise ProtocolError("non-nullable compact string is null")
    end = _check_span(buf, pos, n - 1, limit, "string")
    return str(buf[pos:end], "utf-8"), end


def read_compact_nullable_string(buf: memoryview, pos: int,
                                 limit: int = STRING_BYTES_MAX) -> tuple[str | None, int]:
    """uvarint N+1 UTF-8 string; 0 is None."""
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _check_span(buf, pos, n - 1, limit, "string")
    return str(buf[pos:end], "utf-8"), end


def encode_string(value: str) -> bytes:
    b = value.encode()
    if len(b) > STRING_BYTES_MAX:
        raise ValueError(f"string of {len(b)} bytes is longer than {STRING_BYTES_MAX}")
    return _p16(len(b)) + b


def encode_nullable_string(value: str | None) -> bytes:
    return NULL_INT16 if value is None else encode_string(value)


def encode_compact_string(value: str) -> bytes:
    b = value.encode()
    if len(b) > STRING_BYTES_MAX:
        raise ValueError(f"string of {len(b)} bytes is longer than {STRING_BYTES_MAX}")
    return encode_uvarint(len(b) + 1) + b


def encode_compact_nullable_string(value: str | None) -> bytes:
    return b"\x00" if value is None else encode_compact_string(value)


# --- bytes and records ---------------------------------------------------------------------------

def read_bytes(buf: memoryview, pos: int, limit: int = BYTES_MAX) -> tuple[bytes, int]:
    """int32-length bytes, not null (copied: these are small and often kept)."""
    n = _int32_length(buf, pos)
    pos += 4
    if n < 0:
        raise ProtocolError(f"non-nullable bytes have length {n}")
    end = _check_span(buf, pos, n, limit, "bytes")
    return bytes(buf[pos:end]), end


def read_nullable_bytes(buf: memoryview, pos: int, limit: int = BYTES_MAX) -> tuple[bytes | None, int]:
    n = _int32_length(buf, pos)
    pos += 4
    if n < 0:
        if n == -1:
            return None, pos
        raise ProtocolError(f"negative bytes length {n}")
    end = _check_span(buf, pos, n, limit, "bytes")
    return bytes(buf[pos:end]), end


def read_compact_bytes(buf: memoryview, pos: int, limit: int = BYTES_MAX) -> tuple[bytes, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        raise ProtocolError("non-nullable compact bytes are null")
    end = _check_span(buf, pos, n - 1, limit, "bytes")
    return bytes(buf[pos:end]), end


def read_compact_nullable_bytes(buf: memoryview, pos: int, limit: int = BYTES_MAX) -> tuple[bytes | None, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _check_span(buf, pos, n - 1, limit, "bytes")
    return bytes(buf[pos:end]), end


def read_records(buf: memoryview, pos: int, limit: int = RECORDS_BYTES_MAX) -> tuple[memoryview | None, int]:
    """int32-length records (-1 = None) as a zero-copy slice of `buf`."""
    n = _int32_length(buf, pos)
    pos += 4
    if n < 0:
        if n == -1:
            return None, pos
        raise ProtocolError(f"negative records length {n}")
    end = _check_span(buf, pos, n, limit, "records")
    return buf[pos:end], end


def read_compact_records(buf: memoryview, pos: int,
                         limit: int = RECORDS_BYTES_MAX) -> tuple[memoryview | None, int]:
    """uvarint N+1 records (0 = None) as a zero-copy slice of `buf`."""
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _check_span(buf, pos, n - 1, limit, "records")
    return buf[pos:end], end


def encode_bytes(value: bytes | bytearray | memoryview) -> bytes:
    return _p32(len(value)) + value


def encode_nullable_bytes(value: bytes | bytearray | memoryview | None) -> bytes:
    return NULL_INT32 if value is None else _p32(len(value)) + value


def encode_compact_bytes(value: bytes | bytearray | memoryview) -> bytes:
    return encode_uvarint(len(value) + 1) + value


def encode_compact_nullable_bytes(value: bytes | bytearray | memoryview | None) -> bytes:
    return b"\x00" if value is None else encode_uvarint(len(value) + 1) + value


def buffer_size(value: Any) -> int:
    """Byte size of a records value: bytes-like, a list/tuple of pieces, or an object with __len__.

    A memoryview's len() counts items, not bytes, so its nbytes is used; other objects (a file
    region for sendfile) report their byte size through __len__.
    """
    cls = value.__class__
    if cls is bytes or cls is bytearray:
        return len(value)
    if cls is memoryview:
        return value.nbytes
    if cls is list or cls is tuple:
        return sum(buffer_size(piece) for piece in value)
    try:
        return memoryview(value).nbytes
    except TypeError:
        return len(value)


def append_records(ap: Any, value: Any) -> None:
    """Append a records value (bytes-like, region object, or list/tuple of them) as chunks."""
    cls = value.__class__
    if cls is list or cls is tuple:
        for piece in value:
            ap(piece)
    elif cls is bytes or cls is memoryview or cls is bytearray:
        if value:
            ap(value)
    elif buffer_size(value):
        ap(value)


# --- uuid ----------------------------------------------------------------------------------------

def read_uuid(buf: memoryview, pos: int) -> tuple[uuid.UUID, int]:
    end = pos + 16
    if end > len(buf):
        raise ProtocolError("truncated uuid")
    return uuid.UUID(bytes=bytes(buf[pos:end])), end


def uuid_bytes(value: uuid.UUID | bytes | None) -> bytes:
    """16 wire bytes of a uuid.UUID, 16 raw bytes, or None (the zero uuid)."""
    if value is None:
        return bytes(16)
    if value.__class__ is uuid.UUID:
        return value.bytes  # type: ignore[union-attr]
    if len(value) != 16:  # type: ignore[arg-type]
        raise ValueError(f"uuid must be 16 bytes, got {len(value)}")  # type: ignore[arg-type]
    return bytes(value)  # type: ignore[arg-type]


def encode_uuid(value: uuid.UUID | bytes | None) -> bytes:
    return uuid_bytes(value)


# --- tagged fields -------------------------------------------------------------------------------

def skip_tagged_fields(buf: memoryview, pos: int, limit: int = TAGGED_FIELDS_MAX) -> int:
    """Skip a whole tagged-field section; returns the position after it."""
    count, pos = read_uvarint(buf, pos)
    if count > limit:
        raise ProtocolError(f"{count} tagged fields exceed the limit of {limit}")
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos = _check_span(buf, pos, size, len(buf), "tagged field")
    return pos


def read_tagged_fields(buf: memoryview, pos: int,
                       limit: int = TAGGED_FIELDS_MAX) -> tuple[dict[int, memoryview], int]:
    """A tagged-field section as {tag: raw value bytes}; a repeated tag is a ProtocolError."""
    count, pos = read_uvarint(buf, pos)
    if count > limit:
        raise ProtocolError(f"{count} tagged fields exceed the limit of {limit}")
    fields: dict[int, memoryview] = {}
    for _ in range(count):
        tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        end = _check_span(buf, pos, size, len(buf), "tagged field")
        if tag in fields:
            raise ProtocolError(f"tagged field {tag} appears twice")
        fields[tag] = buf[pos:end]
        pos = end
    return fields, pos


def encode_tagged_fields(fields: dict[int, bytes] | None = None) -> bytes:
    """A tagged-field section from {tag: raw value bytes}, written in ascending tag order."""
    if not fields:
        return b"\x00"
    parts = [encode_uvarint(len(fields))]
    for tag in sorted(fields):
        value = fields[tag]
        parts += (encode_uvarint(tag), encode_uvarint(len(value)), value)
    return b"".join(parts)


# --- coalescing ----------------------------------------------------------------------------------

def coalesce(chunks: Iterable[Any], copy_bytes_max: int = COALESCE_COPY_BYTES_MAX) -> list[Any]:
    """Join runs of small bytes-like pieces; keep large pieces and non-buffer objects as they are.

    The result is what a transport hands to writelines() (or sendfile for region objects):
    few pieces, and no copy of large records.
    """
    out: list[Any] = []
    run: list[Any] = []
    for piece in chunks:
        cls = piece.__class__
        if ((cls is bytes or cls is bytearray) and len(piece) <= copy_bytes_max) or (
                cls is memoryview and piece.nbytes <= copy_bytes_max):
            run.append(piece)
        else:
            if run:
                out.append(b"".join(run) if len(run) > 1 else bytes(run[0]))
                run = []
            out.append(piece)
    if run:
        out.append(b"".join(run) if len(run) > 1 else bytes(run[0]))
    return out


# --- Reader / Writer -----------------------------------------------------------------------------

class Reader:
    """Sequential bounded reader over a memoryview; every method raises ProtocolError on bad input."""

    __slots__ = ("buf", "limits", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0,
                 limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self.buf = data if data.__class__ is memoryview else memoryview(data)
        self.pos = pos
        self.limits = limits

    @property
    def remaining_bytes(self) -> int:
        return len(self.buf) - self.pos

    def _fixed(self, packer: struct.Struct) -> Any:
        pos = self.pos
        end = pos + packer.size
        if end > len(self.buf):
            raise ProtocolError(f"truncated: need {packer.size} bytes, {len(self.buf) - pos} remain")
        self.pos = end
        return packer.unpack_from(self.buf, pos)[0]

    def int8(self) -> int:
        return self._fixed(INT8)

    def int16(self) -> int:
        return self._fixed(INT16)

    def int32(self) -> int:
        return self._fixed(INT32)

    def int64(self) -> int:
        return self._fixed(INT64)

    def uint16(self) -> int:
        return self._fixed(UINT16)

    def uint32(self) -> int:
        return self._fixed(UINT32)

    def float64(self) -> float:
        return self._fixed(FLOAT64)

    def bool(self) -> bool:
        return self._fixed(INT8) != 0

    def uuid(self) -> uuid.UUID:
        value, self.pos = read_uuid(self.buf, self.pos)
        return value

    def uvarint(self) -> int:
        value, self.pos = read_uvarint(self.buf, self.pos)
        return value

    def varint(self) -> int:
        value, self.pos = read_varint(self.buf, self.pos)
        return value

    def varlong(self) -> int:
        value, self.pos = read_varlong(self.buf, self.pos)
        return value

    def string(self) -> str:
        value, self.pos = read_string(self.buf, self.pos, self.limits.string_bytes_max)
        return value

    def nullable_string(self) -> str | None:
        value, self.pos = read_nullable_string(self.buf, self.pos, self.limits.string_bytes_max)
        return value

    def compact_string(self) -> str:
        value, self.pos = read_compact_string(self.buf, self.pos, self.limits.string_bytes_max)
        return value

    def compact_nullable_string(self) -> str | None:
        value, self.pos = read_compact_nullable_string(self.buf, self.pos, self.limits.string_bytes_max)
        return value

    def bytes(self) -> bytes:
        value, self.pos = read_bytes(self.buf, self.pos, self.limits.bytes_max)
        return value

    def nullable_bytes(self) -> bytes | None:
        value, self.pos = read_nullable_bytes(self.buf, self.pos, self.limits.bytes_max)
        return value

    def compact_bytes(self) -> bytes:
        value, self.pos = read_compact_bytes(self.buf, self.pos, self.limits.bytes_max)
        return value

    def compact_nullable_bytes(self) -> bytes | None:
        value, self.pos = read_compact_nullable_bytes(self.buf, self.pos, self.limits.bytes_max)
        return value

    def records(self) -> memoryview | None:
        value, self.pos = read_records(self.buf, self.pos, self.limits.records_bytes_max)
        return value

    def compact_records(self) -> memoryview | None:
        value, self.pos = read_compact_records(self.buf, self.pos, self.limits.records_bytes_max)
        return value

    def array_length(self, item_bytes_min: int = 1) -> int:
        """Item count, or -1 for null."""
        value, self.pos = read_array_length(self.buf, self.pos, self.limits.array_length_max, item_bytes_min)
        return value

    def compact_array_length(self, item_bytes_min: int = 1) -> int:
        """Item count, or -1 for null."""
        value, self.pos = read_compact_array_length(self.buf, self.pos, self.limits.array_length_max,
                                                    item_bytes_min)
        return value

    def tagged_fields(self) -> dict[int, memoryview]:
        value, self.pos = read_tagged_fields(self.buf, self.pos, self.limits.tagged_fields_max)
        return value

    def skip_tagged_fields(self) -> None:
        self.pos = skip_tagged_fields(self.buf, self.pos, self.limits.tagged_fields_max)

    def raw(self, size: int) -> memoryview:
        """The next `size` bytes as a zero-copy slice."""
        if size < 0:
            raise ProtocolError(f"negative size {size}")
        end = _check_span(self.buf, self.pos, size, len(self.buf), "raw bytes")
        value = self.buf[self.pos:end]
        self.pos = end
        return value


class Writer:
    """Collects encoded pieces in `chunks` and joins them once (`getvalue`)."""

    __slots__ = ("_ap", "chunks")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self._ap = self.chunks.append

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)

    def size_bytes(self) -> int:
        return sum(buffer_size(piece) for piece in self.chunks)

    def raw(self, data: Any) -> Writer:
        self._ap(data)
        return self

    def int8(self, value: int) -> Writer:
        self._ap(INT8.pack(value))
        return self

    def int16(self, value: int) -> Writer:
        self._ap(INT16.pack(value))
        return self

    def int32(self, value: int) -> Writer:
        self._ap(INT32.pack(value))
        return self

    def int64(self, value: int) -> Writer:
        self._ap(INT64.pack(value))
        return self

    def uint16(self, value: int) -> Writer:
        self._ap(UINT16.pack(value))
        return self

    def uint32(self, value: int) -> Writer:
        self._ap(UINT32.pack(value))
        return self

    def float64(self, value: float) -> Writer:
        self._ap(FLOAT64.pack(value))
        return self

    def bool(self, value: bool) -> Writer:
        self._ap(b"\x01" if value else b"\x00")
        return self

    def uuid(self, value: uuid.UUID | bytes | None) -> Writer:
        self._ap(uuid_bytes(value))
        return self

    def uvarint(self, value: int) -> Writer:
        self._ap(encode_uvarint(value))
        return self

    def varint(self, value: int) -> Writer:
        self._ap(encode_varint(value))
        return self

    def varlong(self, value: int) -> Writer:
        self._ap(encode_varlong(value))
        return self

    def string(self, value: str) -> Writer:
        self._ap(encode_string(value))
        return self

    def nullable_string(self, value: str | None) -> Writer:
        self._ap(encode_nullable_string(value))
        return self

    def compact_string(self, value: str) -> Writer:
        self._ap(encode_compact_string(value))
        return self

    def compact_nullable_string(self, value: str | None) -> Writer:
        self._ap(encode_compact_nullable_string(value))
        return self

    def bytes(self, value: bytes | bytearray | memoryview) -> Writer:
        self._ap(encode_bytes(value))
        return self

    def nullable_bytes(self, value: bytes | bytearray | memoryview | None) -> Writer:
        self._ap(encode_nullable_bytes(value))
        return self

    def compact_bytes(self, value: bytes | bytearray | memoryview) -> Writer:
        self._ap(encode_compact_bytes(value))
        return self

    def compact_nullable_bytes(self, value: bytes | bytearray | memoryview | None) -> Writer:
        self._ap(encode_compact_nullable_bytes(value))
        return self

    def records(self, value: Any, compact: bool = False) -> Writer:
        """Length prefix, then the value itself as its own chunk(s) (no copy); None is null."""
        if value is None:
            self._ap(b"\x00" if compact else NULL_INT32)
            return self
        size = buffer_size(value)
        self._ap(encode_uvarint(size + 1) if compact else _p32(size))
        append_records(self._ap, value)
        return self

    def array_length(self, n: int | None) -> Writer:
        self._ap(encode_array_length(n))
        return self

    def compact_array_length(self, n: int | None) -> Writer:
        self._ap(encode_compact_array_length(n))
        return self

    def tagged_fields(self, fields: dict[int, bytes] | None = None) -> Writer:
        self._ap(encode_tagged_fields(fields))
        return self
