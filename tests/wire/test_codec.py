"""client.wire.codec: primitive layouts, bounded decoding, Reader/Writer, coalescing."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.wire import codec
from client.wire.codec import DecodeLimits, ProtocolError, Reader, Writer


def mv(data: bytes) -> memoryview:
    return memoryview(data)


# --- varints ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "wire"), [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"), (0xFFFFFFFF, b"\xff\xff\xff\xff\x0f"),
])
def test_uvarint_layout(raw: int, wire: bytes) -> None:
    assert codec.encode_uvarint(raw) == wire
    assert codec.read_uvarint(mv(wire), 0) == (raw, len(wire))


@pytest.mark.parametrize(("value", "wire"), [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-2, b"\x03"),
                                             (63, b"\x7e"), (-64, b"\x7f"), (64, b"\x80\x01")])
def test_varint_zigzag_layout(value: int, wire: bytes) -> None:
    assert codec.encode_varint(value) == wire
    assert codec.read_varint(mv(wire), 0) == (value, len(wire))


@given(st.integers(-(1 << 31), (1 << 31) - 1))
def test_varint_round_trip(value: int) -> None:
    wire = codec.encode_varint(value)
    assert len(wire) <= codec.UVARINT_BYTES_MAX
    assert codec.read_varint(mv(wire), 0) == (value, len(wire))


@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_varlong_round_trip(value: int) -> None:
    wire = codec.encode_varlong(value)
    assert len(wire) <= codec.UVARLONG_BYTES_MAX
    assert codec.read_varlong(mv(wire), 0) == (value, len(wire))


def test_uvarint_longer_than_five_bytes_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="longer than 5"):
        codec.read_uvarint(mv(b"\x80\x80\x80\x80\x80\x01"), 0)


@pytest.mark.parametrize("wire", [b"", b"\x80", b"\xff\xff"])
def test_truncated_uvarint(wire: bytes) -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        codec.read_uvarint(mv(wire), 0)


def test_negative_uvarint_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        codec.encode_uvarint(-1)


# --- strings ---------------------------------------------------------------------------------

def test_string_layouts() -> None:
    assert codec.encode_string("abc") == b"\x00\x03abc"
    assert codec.encode_nullable_string(None) == b"\xff\xff"
    assert codec.encode_compact_string("abc") == b"\x04abc"
    assert codec.encode_compact_nullable_string(None) == b"\x00"
    assert codec.encode_compact_string("") == b"\x01"
    assert codec.encode_string("ü") == b"\x00\x02\xc3\xbc"


@given(st.text(max_size=300))
def test_strings_round_trip(text: str) -> None:
    for enc, dec in [(codec.encode_string, codec.read_string),
                     (codec.encode_nullable_string, codec.read_nullable_string),
                     (codec.encode_compact_string, codec.read_compact_string),
                     (codec.encode_compact_nullable_string, codec.read_compact_nullable_string)]:
        wire = enc(text)
        assert dec(mv(wire), 0) == (text, len(wire))


def test_null_strings() -> None:
    assert codec.read_nullable_string(mv(b"\xff\xff"), 0) == (None, 2)
    assert codec.read_compact_nullable_string(mv(b"\x00"), 0) == (None, 1)
    with pytest.raises(ProtocolError, match="non-nullable"):
        codec.read_string(mv(b"\xff\xff"), 0)
    with pytest.raises(ProtocolError, match="non-nullable"):
        codec.read_compact_string(mv(b"\x00"), 0)


def test_negative_string_length_other_than_null_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="negative"):
        codec.read_nullable_string(mv(b"\xff\xfe"), 0)


@pytest.mark.parametrize(("reader", "wire"), [
    (codec.read_string, b"\x00\x05abc"), (codec.read_string, b"\x00"),
    (codec.read_compact_string, b"\x06abc"), (codec.read_nullable_string, b"\x00\x04ab"),
])
def test_truncated_strings(reader, wire: bytes) -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        reader(mv(wire), 0)


def test_string_limit() -> None:
    wire = codec.encode_compact_string("x" * 100)
    with pytest.raises(ProtocolError, match="exceeds the limit of 99"):
        codec.read_compact_string(mv(wire), 0, 99)
    # a compact length above 0x7fff is refused by default, as Kafka does
    huge = codec.encode_uvarint(0x8000 + 1) + b"x" * 0x8000
    with pytest.raises(ProtocolError, match="limit"):
        codec.read_compact_string(mv(huge), 0)
    with pytest.raises(ValueError):
        codec.encode_string("x" * 0x8000)


def test_invalid_utf8_is_a_decode_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        codec.read_string(mv(b"\x00\x01\xff"), 0)  # the message codecs turn this into ProtocolError


# --- bytes, records, arrays --------------------------------------------------------------------

def test_bytes_layouts_and_round_trip() -> None:
    assert codec.encode_bytes(b"ab") == b"\x00\x00\x00\x02ab"
    assert codec.encode_nullable_bytes(None) == b"\xff\xff\xff\xff"
    assert codec.encode_compact_bytes(b"ab") == b"\x03ab"
    assert codec.encode_compact_nullable_bytes(None) == b"\x00"
    assert codec.read_bytes(mv(b"\x00\x00\x00\x02ab"), 0) == (b"ab", 6)
    assert codec.read_nullable_bytes(mv(b"\xff\xff\xff\xff"), 0) == (None, 4)
    assert codec.read_compact_bytes(mv(b"\x03ab"), 0) == (b"ab", 3)
    assert codec.read_compact_nullable_bytes(mv(b"\x00"), 0) == (None, 1)
    with pytest.raises(ProtocolError):
        codec.read_bytes(mv(b"\xff\xff\xff\xff"), 0)
    with pytest.raises(ProtocolError, match="negative"):
        codec.read_nullable_bytes(mv(b"\xff\xff\xff\xfe"), 0)
    with pytest.raises(ProtocolError, match="limit"):
        codec.read_bytes(mv(b"\x00\x00\x00\x05abcde"), 0, 4)


def test_records_are_zero_copy_slices() -> None:
    data = b"\x00\x00\x00\x03xyz!"
    value, end = codec.read_records(mv(data), 0)
    assert isinstance(value, memoryview) and value.obj is data and bytes(value) == b"xyz" and end == 7
    value, end = codec.read_compact_records(mv(b"\x04xyz"), 0)
    assert bytes(value) == b"xyz"
    assert codec.read_records(mv(b"\xff\xff\xff\xff"), 0) == (None, 4)
    assert codec.read_compact_records(mv(b"\x00"), 0) == (None, 1)


def test_absurd_records_length_does_not_allocate() -> None:
    with pytest.raises(ProtocolError, match="limit"):
        codec.read_records(mv(b"\x7f\xff\xff\xff"), 0)
    with pytest.raises(ProtocolError, match="truncated"):
        codec.read_records(mv(b"\x00\x10\x00\x00"), 0)


def test_array_lengths() -> None:
    assert codec.read_array_length(mv(b"\xff\xff\xff\xff"), 0) == (-1, 4)
    assert codec.read_array_length(mv(b"\x00\x00\x00\x02ab"), 0) == (2, 4)
    assert codec.read_compact_array_length(mv(b"\x00"), 0) == (-1, 1)
    assert codec.read_compact_array_length(mv(b"\x03ab"), 0) == (2, 1)
    assert codec.encode_array_length(None) == b"\xff\xff\xff\xff"
    assert codec.encode_compact_array_length(None) == b"\x00"
    assert codec.encode_compact_array_length(2) == b"\x03"
    with pytest.raises(ProtocolError, match="negative"):
        codec.read_array_length(mv(b"\xff\xff\xff\xfe"), 0)


def test_array_count_bounded_by_limit_and_remaining_bytes() -> None:
    # 2^31-1 items of >= 4 bytes cannot fit in 8 bytes: refused before any list is built
    with pytest.raises(ProtocolError, match="limit"):
        codec.read_array_length(mv(b"\x7f\xff\xff\xff" + bytes(8)), 0, item_bytes_min=4)
    with pytest.raises(ProtocolError, match="cannot fit"):
        codec.read_array_length(mv(b"\x00\x00\x00\x03" + bytes(8)), 0, item_bytes_min=4)
    with pytest.raises(ProtocolError, match="limit"):
        codec.read_compact_array_length(mv(b"\x0b" + bytes(20)), 0, limit=9)


def test_uuid() -> None:
    value = uuid.uuid4()
    assert codec.read_uuid(mv(value.bytes), 0) == (value, 16)
    assert codec.encode_uuid(value) == value.bytes
    assert codec.encode_uuid(None) == bytes(16)
    assert codec.encode_uuid(value.bytes) == value.bytes
    with pytest.raises(ProtocolError):
        codec.read_uuid(mv(bytes(15)), 0)
    with pytest.raises(ValueError):
        codec.encode_uuid(b"short")


# --- tagged fields -----------------------------------------------------------------------------

def test_tagged_fields_written_ascending_and_read_back() -> None:
    wire = codec.encode_tagged_fields({5: b"xy", 0: b"", 2: b"z"})
    assert wire == b"\x03" + b"\x00\x00" + b"\x02\x01z" + b"\x05\x02xy"
    fields, end = codec.read_tagged_fields(mv(wire), 0)
    assert {k: bytes(v) for k, v in fields.items()} == {0: b"", 2: b"z", 5: b"xy"} and end == len(wire)
    assert codec.skip_tagged_fields(mv(wire + b"rest"), 0) == len(wire)
    assert codec.encode_tagged_fields() == b"\x00"


def test_tagged_field_errors() -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        codec.skip_tagged_fields(mv(b"\x01\x00\x05ab"), 0)
    with pytest.raises(ProtocolError, match="limit"):
        codec.skip_tagged_fields(mv(b"\x7f"), 0, limit=10)
    with pytest.raises(ProtocolError, match="twice"):
        codec.read_tagged_fields(mv(b"\x02\x01\x00\x01\x00"), 0)


# --- Reader / Writer ---------------------------------------------------------------------------

def test_writer_and_reader_round_trip_every_primitive() -> None:
    u = uuid.uuid4()
    w = (Writer().int8(-5).int16(-300).int32(-70000).int64(-(1 << 40)).uint16(65535).uint32(0xFFFFFFFF)
         .float64(2.5).bool(True).uuid(u).uvarint(300).varint(-3).varlong(-(1 << 50))
         .string("s").nullable_string(None).compact_string("cs").compact_nullable_string(None)
         .bytes(b"b").nullable_bytes(None).compact_bytes(b"cb").compact_nullable_bytes(None)
         .records(b"rec").records(None, compact=True).array_length(2).compact_array_length(None)
         .tagged_fields({1: b"t"}))
    data = w.getvalue()
    assert w.size_bytes() == len(data)
    r = Reader(data)
    assert [r.int8(), r.int16(), r.int32(), r.int64(), r.uint16(), r.uint32(), r.float64(), r.bool(), r.uuid(),
            r.uvarint(), r.varint(), r.varlong()] == [-5, -300, -70000, -(1 << 40), 65535, 0xFFFFFFFF, 2.5, True,
                                                      u, 300, -3, -(1 << 50)]
    assert [r.string(), r.nullable_string(), r.compact_string(), r.compact_nullable_string()] == ["s", None, "cs", None]
    assert [r.bytes(), r.nullable_bytes(), r.compact_bytes(), r.compact_nullable_bytes()] == [b"b", None, b"cb", None]
    assert bytes(r.records()) == b"rec" and r.compact_records() is None
    assert r.array_length() == 2 and r.compact_array_length() == -1
    assert {k: bytes(v) for k, v in r.tagged_fields().items()} == {1: b"t"}
    assert r.remaining_bytes == 0


def test_reader_truncation_and_limits() -> None:
    r = Reader(b"\x00\x01")
    with pytest.raises(ProtocolError, match="truncated"):
        r.int32()
    r = Reader(b"\x00\x05hello", limits=DecodeLimits(string_bytes_max=4))
    with pytest.raises(ProtocolError, match="limit"):
        r.string()
    r = Reader(b"abc")
    assert bytes(r.raw(2)) == b"ab"
    with pytest.raises(ProtocolError):
        r.raw(2)
    with pytest.raises(ProtocolError):
        r.raw(-1)


def test_writer_records_keep_the_object() -> None:
    big = memoryview(bytes(10_000))
    w = Writer().int32(1).records(big)
    assert w.chunks[-1] is big
    assert w.size_bytes() == 4 + 4 + 10_000


# --- coalesce / buffer_size --------------------------------------------------------------------

class Region:
    """Stands in for a file region the transport sends with sendfile."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def test_buffer_size() -> None:
    assert codec.buffer_size(b"abc") == 3
    assert codec.buffer_size(memoryview(struct.pack(">4i", 1, 2, 3, 4)).cast("i")) == 16
    assert codec.buffer_size([b"ab", memoryview(b"cde"), Region(10)]) == 15
    assert codec.buffer_size(bytearray(4)) == 4


def test_coalesce_joins_small_pieces_and_keeps_large_ones() -> None:
    big = memoryview(bytes(10_000))
    region = Region(1 << 20)
    out = codec.coalesce([b"a", b"b", big, b"c", bytearray(b"d"), region, memoryview(b"e")])
    assert out == [b"ab", big, b"cd", region, b"e"]
    assert out[1] is big and out[3] is region
    assert codec.coalesce([]) == []
