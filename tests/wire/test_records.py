"""Record batch v2: builder, reader, cleaner filter, client validation, compression and varints.

Records in tests are built two ways: with `build_batch`, and with `raw_record`/`raw_batch` below, a
deliberately naive encoder written from KAFKA_PROTOCOL.md §3 (so malformed batches can be made,
and so the builder is checked against an independent encoder).
"""

from __future__ import annotations

import contextlib
import struct
import zlib

import crc32c
import lz4.frame
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.wire import compression, varint
from client.wire.errors import (
    CorruptRecordError,
    ErrorCode,
    InvalidRecordError,
    UncompressedSizeExceededError,
    UnsupportedCodecError,
)
from client.wire.limits import BATCH_UNCOMPRESSED_BYTES_MAX
from client.wire.records import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    CONTROL_BIT,
    DELETE_HORIZON_BIT,
    HEADER_SIZE,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    NO_TIMESTAMP,
    TIMESTAMP_LOG_APPEND_TIME,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
    Record,
    build_batch,
    crc_is_valid,
    decode_records,
    filter_batch,
    iter_batch_headers,
    read_header,
    set_base_offset,
    set_leader_epoch,
    set_log_append_time,
    validate_client_batch,
)

TS = 1_700_000_000_000
OK = ErrorCode.NONE
INVALID_RECORD = ErrorCode.INVALID_RECORD
CORRUPT_MESSAGE = ErrorCode.CORRUPT_MESSAGE


# --- an independent, naive encoder ----------------------------------------------------------------

def zz(value: int) -> bytes:
    """Zigzag varint, written the long way."""
    raw = (value << 1) ^ (value >> 63) if value >= -(1 << 63) else None
    assert raw is not None and raw >= 0
    out = bytearray()
    while True:
        byte = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def nullable(data: bytes | None) -> bytes:
    return zz(-1) if data is None else zz(len(data)) + data


def raw_record(offset_delta: int, key: bytes | None = None, value: bytes | None = b"v", timestamp_delta: int = 0,
               headers: tuple = (), length_adjust: int = 0) -> bytes:
    body = b"\x00" + zz(timestamp_delta) + zz(offset_delta) + nullable(key) + nullable(value) + zz(len(headers))
    for header_key, header_value in headers:
        body += zz(len(header_key.encode())) + header_key.encode() + nullable(header_value)
    return zz(len(body) + length_adjust) + body


def raw_batch(section: bytes, count: int, last_offset_delta: int | None = None, *, attributes: int = 0,
              base_offset: int = 0, base_timestamp: int = TS, max_timestamp: int = TS, producer_id: int = -1,
              producer_epoch: int = -1, base_sequence: int = -1, magic: int = 2, fix_crc: bool = True) -> bytes:
    """A batch around an already-encoded (and already-compressed) records section."""
    if last_offset_delta is None:
        last_offset_delta = count - 1
    fields = [base_offset, HEADER_SIZE - LOG_OVERHEAD + len(section), 0, magic, 0, attributes, last_offset_delta,
              base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, count]
    batch = HEADER_STRUCT.pack(*fields) + section
    if fix_crc:
        fields[4] = crc32c.crc32c(batch[21:])
        batch = HEADER_STRUCT.pack(*fields) + section
    return batch


def with_fixed_crc(batch: bytes | bytearray) -> bytes:
    batch = bytearray(batch)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


# --- strategies -----------------------------------------------------------------------------------

HALF_RANGE = (1 << 62) - 1  # any two timestamps in +-2^62 differ by less than 2^63
keys = st.none() | st.binary(max_size=40)
values = st.none() | st.binary(max_size=300)
header_lists = st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=3)
timestamps = st.one_of(st.integers(-HALF_RANGE, HALF_RANGE), st.integers(TS - 10_000, TS + 10_000),
                       st.just(NO_TIMESTAMP), st.just(TS))
record_inputs = st.tuples(keys, values, timestamps, header_lists)
codecs = st.sampled_from([CODEC_NONE, CODEC_LZ4, CODEC_GZIP])


@st.composite
def batches_with_gaps(draw: st.DrawFn) -> tuple[list, list[int], int]:
    """(records, strictly increasing offset deltas, last_offset_delta >= the last delta)."""
    records = draw(st.lists(record_inputs, min_size=1, max_size=30))
    deltas = sorted(draw(st.sets(st.integers(0, 100_000), min_size=len(records), max_size=len(records))))
    last = deltas[-1] + draw(st.integers(0, 50))
    return records, deltas, last


def expected_records(records: list, base_offset: int, deltas: list[int]) -> list[Record]:
    return [Record(base_offset + delta, ts, key, value, tuple(headers or ()))
            for (key, value, ts, headers), delta in zip(records, deltas)]


# --- round trips ----------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(records=st.lists(record_inputs, min_size=1, max_size=40), codec=codecs,
       base_offset=st.integers(0, 1 << 62), leader_epoch=st.integers(-1, 1 << 30))
def test_round_trip(records: list, codec: int, base_offset: int, leader_epoch: int) -> None:
    batch = build_batch(records, base_offset=base_offset, compression=codec, partition_leader_epoch=leader_epoch)
    header = read_header(batch)
    assert header.total_size == len(batch)
    assert crc_is_valid(batch)
    assert (header.base_offset, header.leader_epoch, header.magic) == (base_offset, leader_epoch, 2)
    assert header.records_count == len(records) == header.last_offset_delta + 1
    assert header.compression == codec
    assert header.base_timestamp == records[0][2]
    assert header.max_timestamp == max(r[2] for r in records)
    assert decode_records(batch) == expected_records(records, base_offset, list(range(len(records))))
    assert validate_client_batch(batch) == (OK if base_offset == 0 else INVALID_RECORD)


@settings(max_examples=100, deadline=None)
@given(case=batches_with_gaps(), codec=codecs)
def test_round_trip_with_offset_gaps(case: tuple, codec: int) -> None:
    records, deltas, last = case
    batch = build_batch(records, base_offset=1000, offset_deltas=deltas, last_offset_delta=last, compression=codec)
    header = read_header(batch)
    assert (header.last_offset_delta, header.records_count, header.next_offset) == (last, len(records), 1001 + last)
    assert decode_records(batch) == expected_records(records, 1000, deltas)


def test_builder_matches_the_naive_encoder() -> None:
    records = [(b"k", b"v" * 100, TS, [("h", b"x"), ("n", None)]), (None, None, TS - 5, ()),
               (b"", b"", TS + 100_000, None), (None, b"z" * 9000, TS, ())]
    section = (raw_record(0, b"k", b"v" * 100, 0, (("h", b"x"), ("n", None))) + raw_record(1, None, None, -5)
               + raw_record(2, b"", b"", 100_000) + raw_record(3, None, b"z" * 9000, 0))
    expected = raw_batch(section, 4, max_timestamp=TS + 100_000)
    assert build_batch(records, partition_leader_epoch=0) == expected


def test_every_varint_width_and_the_general_paths() -> None:
    """Values, keys and timestamp deltas past the builder's tables; > 8192 records (3-byte deltas)."""
    big = [(b"k" * 9000, b"v" * 70_000, TS + (1 << 40), [("h" * 200, b"x" * 300)]), (None, b"", TS - (1 << 50), ())]
    batch = build_batch(big, compression=CODEC_LZ4)
    assert decode_records(batch) == expected_records(big, 0, [0, 1])
    assert validate_client_batch(batch) == OK
    many = [(None, b"%d" % i, TS + i, ()) for i in range(20_000)]
    batch = build_batch(many)
    assert [r.offset for r in decode_records(batch)] == list(range(20_000))
    assert validate_client_batch(batch, max_batch_bytes=1 << 30) == OK


def test_log_append_time_batch_reads_max_timestamp_for_every_record() -> None:
    batch = build_batch([(None, b"a", TS, ()), (None, b"b", TS + 5, ())], timestamp_type=TIMESTAMP_LOG_APPEND_TIME,
                        max_timestamp=TS + 99)
    assert read_header(batch).timestamp_type == 1
    assert [r.timestamp for r in decode_records(batch)] == [TS + 99, TS + 99]


def test_attribute_bits_and_producer_fields() -> None:
    batch = build_batch([(b"k", b"v", TS, ())], producer_id=7, producer_epoch=3, base_sequence=41,
                        is_transactional=True, compression=CODEC_LZ4)
    header = read_header(batch)
    assert header.attributes == CODEC_LZ4 | TRANSACTIONAL_BIT
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 3, 41)
    assert header.last_sequence == 41
    control = build_batch([(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x05", TS, ())], is_control=True,
                          is_transactional=True, producer_id=7, producer_epoch=3)
    assert read_header(control).attributes == CONTROL_BIT | TRANSACTIONAL_BIT


def test_lz4_frame_is_java_style() -> None:
    batch = build_batch([(None, b"x" * 1000, TS, ())], compression=CODEC_LZ4)
    magic, flg, bd = struct.unpack_from("<IBB", batch, HEADER_SIZE)
    assert (magic, flg, bd) == (compression.LZ4_FRAME_MAGIC, 0x60, 0x40)


def test_header_primitives_still_work_on_built_batches() -> None:
    batch = bytearray(build_batch([(None, b"a", TS, ())] * 3))
    set_base_offset(batch, 500)
    set_leader_epoch(batch, 9)
    assert crc_is_valid(batch)
    set_log_append_time(batch, TS + 1)
    assert crc_is_valid(batch)
    header = read_header(batch)
    assert (header.base_offset, header.leader_epoch, header.max_timestamp, header.timestamp_type) == (500, 9, TS + 1, 1)
    assert [r.offset for r in decode_records(batch)] == [500, 501, 502]
    two = bytes(batch) + build_batch([(None, b"b", TS, ())], base_offset=503)
    assert [h.base_offset for _, h in iter_batch_headers(two)] == [500, 503]
    assert [r.offset for r in decode_records(two, read_header(two).total_size)] == [503]


# --- empty batches and builder errors -------------------------------------------------------------

def test_empty_batch_is_written_like_kafkas_write_empty_header() -> None:
    batch = build_batch([], base_offset=100, last_offset_delta=9, compression=CODEC_LZ4, producer_id=5,
                        producer_epoch=1, base_sequence=30, max_timestamp=TS, partition_leader_epoch=4)
    header = read_header(batch)
    assert len(batch) == HEADER_SIZE and crc_is_valid(batch)
    assert header.records_count == 0 and header.compression == CODEC_NONE
    assert (header.base_offset, header.last_offset_delta, header.base_timestamp, header.max_timestamp) == (
        100, 9, NO_TIMESTAMP, TS)
    assert (header.producer_id, header.producer_epoch, header.base_sequence, header.leader_epoch) == (5, 1, 30, 4)
    assert decode_records(batch) == []
    assert validate_client_batch(build_batch([], last_offset_delta=0)) == INVALID_RECORD  # count 0


@pytest.mark.parametrize("kwargs, error", [
    ({"records": []}, ValueError),  # empty needs last_offset_delta
    ({"offset_deltas": [0, 0]}, ValueError),
    ({"offset_deltas": [-1, 3]}, ValueError),
    ({"offset_deltas": [0]}, ValueError),  # wrong length
    ({"offset_deltas": [0, 5], "last_offset_delta": 4}, ValueError),
    ({"last_offset_delta": 0}, ValueError),  # below the last record's delta (1)
    ({"compression": CODEC_SNAPPY}, UnsupportedCodecError),
    ({"compression": CODEC_ZSTD}, UnsupportedCodecError),
    ({"compression": 6}, UnsupportedCodecError),
    ({"timestamp_type": 2}, ValueError),
    ({"base_timestamp": 5, "delete_horizon_ms": 6}, ValueError),
    ({"records": [("key", b"v", TS, ())]}, TypeError),
    ({"records": [(None, b"v", TS, [(b"bytes-key", b"v")])]}, TypeError),
    ({"records": [(None, b"v", -(1 << 63), ()), (None, b"v", (1 << 63) - 1, ())]}, ValueError),
])
def test_builder_rejects_inconsistent_arguments(kwargs: dict, error: type[Exception]) -> None:
    kwargs = {"records": [(None, b"a", TS, ()), (None, b"b", TS, ())]} | kwargs
    records = kwargs.pop("records")
    with pytest.raises(error):
        build_batch(records, **kwargs)


def test_delete_horizon_sets_bit_six_and_base_timestamp() -> None:
    records = [(b"k", None, TS, ()), (b"j", b"v", TS + 7, ())]
    batch = build_batch(records, delete_horizon_ms=TS + 86_400_000)
    header = read_header(batch)
    assert header.attributes & DELETE_HORIZON_BIT and header.base_timestamp == TS + 86_400_000
    assert [r.timestamp for r in decode_records(batch)] == [TS, TS + 7]


# --- filter_batch ---------------------------------------------------------------------------------

def idempotent_batch(codec: int, count: int = 10, **kwargs: object) -> bytes:
    records = [(b"k%d" % (i % 3), None if i == 4 else b"v%d" % i, TS + i, [("i", b"%d" % i)]) for i in range(count)]
    return build_batch(records, base_offset=200, compression=codec, producer_id=77, producer_epoch=2,
                       base_sequence=1000, partition_leader_epoch=6, is_transactional=True, **kwargs)


@pytest.mark.parametrize("codec", [CODEC_NONE, CODEC_LZ4, CODEC_GZIP])
def test_filter_keeps_identity_offsets_and_codec(codec: int) -> None:
    batch = idempotent_batch(codec)
    original = read_header(batch)
    keep_offsets = {201, 203, 207}  # the last record (209) is removed: lastOffsetDelta must survive
    out = filter_batch(batch, lambda r: r.offset in keep_offsets)
    header = read_header(out)
    assert crc_is_valid(out) and header.total_size == len(out)
    assert header.records_count == 3
    same = ("base_offset", "last_offset_delta", "leader_epoch", "producer_id", "producer_epoch", "base_sequence")
    assert [getattr(header, f) for f in same] == [getattr(original, f) for f in same]
    assert header.attributes == original.attributes == codec | TRANSACTIONAL_BIT
    assert header.last_sequence == original.last_sequence == 1009
    assert (header.base_timestamp, header.max_timestamp) == (TS + 1, TS + 7)
    kept = decode_records(out)
    assert kept == [r for r in decode_records(batch) if r.offset in keep_offsets]
    assert validate_client_batch(out) == INVALID_RECORD  # gaps: never a valid *client* batch


def test_filter_with_nothing_removed_returns_the_original_bytes() -> None:
    batch = idempotent_batch(CODEC_LZ4)
    assert filter_batch(batch, lambda r: True) == batch
    assert filter_batch(bytearray(batch), lambda r: True) == batch


def test_filter_to_nothing_gives_an_empty_batch_with_the_same_identity() -> None:
    batch = idempotent_batch(CODEC_LZ4)
    out = filter_batch(batch, lambda r: False)
    header, original = read_header(out), read_header(batch)
    assert len(out) == HEADER_SIZE and crc_is_valid(out)
    assert (header.records_count, header.compression, header.base_timestamp) == (0, CODEC_NONE, NO_TIMESTAMP)
    assert header.max_timestamp == original.max_timestamp
    assert header.attributes == TRANSACTIONAL_BIT
    for field in ("base_offset", "last_offset_delta", "leader_epoch", "producer_id", "producer_epoch",
                  "base_sequence"):
        assert getattr(header, field) == getattr(original, field)
    assert decode_records(out) == []


def test_filter_log_append_time_batch_keeps_its_max_timestamp() -> None:
    batch = build_batch([(b"a", b"1", TS, ()), (b"b", b"2", TS + 1, ()), (b"c", b"3", TS + 2, ())],
                        timestamp_type=TIMESTAMP_LOG_APPEND_TIME, max_timestamp=TS + 500)
    out = filter_batch(batch, lambda r: r.key != b"c")
    header = read_header(out)
    assert header.attributes & TIMESTAMP_TYPE_BIT and header.max_timestamp == TS + 500
    assert [(r.offset, r.timestamp) for r in decode_records(out)] == [(0, TS + 500), (1, TS + 500)]


def test_filter_sets_and_keeps_a_delete_horizon() -> None:
    batch = idempotent_batch(CODEC_NONE)
    out = filter_batch(batch, lambda r: True, delete_horizon_ms=TS + 1_000_000)
    header = read_header(out)
    assert header.attributes & DELETE_HORIZON_BIT and header.base_timestamp == TS + 1_000_000
    assert decode_records(out) == decode_records(batch)
    assert filter_batch(out, lambda r: True, delete_horizon_ms=TS + 5) == out  # nothing to rewrite
    again = filter_batch(out, lambda r: r.offset > 205, delete_horizon_ms=TS + 5)  # the first horizon stays
    assert read_header(again).base_timestamp == TS + 1_000_000
    assert [r.timestamp for r in decode_records(again)] == [TS + i for i in range(6, 10)]


def test_filter_refuses_a_corrupt_batch() -> None:
    batch = bytearray(idempotent_batch(CODEC_NONE))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError):
        filter_batch(bytes(batch), lambda r: False)
    with pytest.raises(InvalidRecordError):
        filter_batch(bytes(idempotent_batch(CODEC_NONE)) + b"\x00", lambda r: False)


@settings(max_examples=100, deadline=None)
@given(case=batches_with_gaps(), codec=codecs, data=st.data())
def test_filter_property(case: tuple, codec: int, data: st.DataObject) -> None:
    records, deltas, last = case
    batch = build_batch(records, base_offset=50, offset_deltas=deltas, last_offset_delta=last, compression=codec,
                        producer_id=3, producer_epoch=0, base_sequence=10)
    kept_offsets = data.draw(st.sets(st.sampled_from([50 + d for d in deltas])))
    out = filter_batch(batch, lambda r: r.offset in kept_offsets)
    header = read_header(out)
    assert crc_is_valid(out)
    assert (header.base_offset, header.last_offset_delta, header.base_sequence) == (50, last, 10)
    expected = [r for r in expected_records(records, 50, deltas) if r.offset in kept_offsets]
    assert decode_records(out) == expected
    if expected and len(expected) < len(records):
        assert header.compression == codec
        assert header.max_timestamp == max(r.timestamp for r in expected)
        assert header.base_timestamp == expected[0].timestamp


# --- decode_records errors ------------------------------------------------------------------------

def test_decode_rejects_crc_mismatch_unless_told_not_to_check() -> None:
    batch = bytearray(build_batch([(None, b"abc", TS, ())]))
    batch[-2] = ord("x")  # the last byte is the header count
    with pytest.raises(CorruptRecordError):
        decode_records(bytes(batch))
    assert decode_records(bytes(batch), verify_crc=False)[0].value == b"abx"


@pytest.mark.parametrize("batch, error", [
    (b"\x00" * 30, CorruptRecordError),  # shorter than a header
    (build_batch([(None, b"abc", TS, ())])[:-1], CorruptRecordError),  # cut
    (raw_batch(raw_record(0), 1, magic=1), CorruptRecordError),
    (raw_batch(raw_record(0), -1), InvalidRecordError),
    (raw_batch(raw_record(0), 2), InvalidRecordError),  # count says 2, one record
    (raw_batch(raw_record(0) + b"\x00", 1), InvalidRecordError),  # trailing byte
    (raw_batch(raw_record(0, length_adjust=1) + b"\x00", 1), InvalidRecordError),  # record shorter than its length
    (raw_batch(raw_record(0, length_adjust=-1), 1), InvalidRecordError),  # record longer than its length
    (raw_batch(zz(-8) + raw_record(0)[1:], 1), InvalidRecordError),  # negative length
    (raw_batch(raw_record(0, headers=(("h", b"x"),)).replace(b"\x02\x02h", b"\x01\x02h"), 1),
     InvalidRecordError),  # negative header count
    (raw_batch(raw_record(0, headers=(("h", b"x"),)).replace(b"\x02\x02h", b"\x02\x01h"), 1),
     InvalidRecordError),  # negative header key length
    (raw_batch(b"\x10\x00" + b"\xff" * 6 + b"\x01" + b"\x00" * 7, 1), InvalidRecordError),  # 7-byte varint
    (raw_batch(raw_record(0), 1, attributes=CODEC_SNAPPY), UnsupportedCodecError),
    (raw_batch(raw_record(0), 1, attributes=7), UnsupportedCodecError),
    (raw_batch(b"\x04\x22\x4d\x18garbage", 1, attributes=CODEC_LZ4), CorruptRecordError),
    (raw_batch(b"\x1f\x8b\x08garbage", 1, attributes=CODEC_GZIP), CorruptRecordError),
])
def test_decode_rejects_malformed_batches(batch: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_records(batch)


def test_decode_reads_negative_lengths_as_null_like_java() -> None:
    record = raw_record(0, key=None, value=None).replace(b"\x01\x01", zz(-7) + zz(-2))
    assert decode_records(raw_batch(record, 1))[0][2:4] == (None, None)
    assert validate_client_batch(raw_batch(record, 1)) == OK


def test_decode_bounds_inflation() -> None:
    batch = build_batch([(None, b"\x00" * 2_000_000, TS, ())], compression=CODEC_LZ4)
    assert len(batch) < 20_000
    with pytest.raises(UncompressedSizeExceededError) as info:
        decode_records(batch, max_uncompressed_bytes=1_000_000)
    assert info.value.code == INVALID_RECORD
    assert decode_records(batch)[0].value == b"\x00" * 2_000_000


# --- validate_client_batch: one test per error path -------------------------------------------------

def good(codec: int = CODEC_NONE, count: int = 5, **kwargs: object) -> bytes:
    return build_batch([(b"k%d" % i, b"v" * 100, TS + i, ()) for i in range(count)], compression=codec,
                       partition_leader_epoch=0, **kwargs)


def lz4_section(section: bytes, **frame_kwargs: object) -> bytes:
    return lz4.frame.compress(section, **({"store_size": False} | frame_kwargs))


VALIDATION_CASES = [
    ("ok none", good(), {}, OK),
    ("ok lz4", good(CODEC_LZ4), {}, OK),
    ("ok gzip", good(CODEC_GZIP), {}, OK),
    ("ok idempotent", good(producer_id=1, producer_epoch=0, base_sequence=0), {}, OK),
    ("ok headers", build_batch([(b"k", b"v", TS, [("a", b"b"), ("c", None)])]), {}, OK),
    ("ok lz4 with content size and checksums", raw_batch(
        lz4_section(raw_record(0) + raw_record(1), store_size=True, content_checksum=True, block_checksum=True), 2,
        attributes=CODEC_LZ4), {}, OK),
    ("empty buffer", b"", {}, INVALID_RECORD),
    ("shorter than the length field", good()[:11], {}, INVALID_RECORD),
    ("partial batch", good()[:-1], {}, INVALID_RECORD),
    ("trailing bytes", good() + b"\x00", {}, INVALID_RECORD),
    ("two batches", good() + good(), {}, INVALID_RECORD),
    ("negative batch length", b"\x00" * 8 + b"\xff\xff\xff\xff" + b"\x00" * 60, {}, INVALID_RECORD),
    ("magic 1", raw_batch(raw_record(0), 1, magic=1), {}, INVALID_RECORD),
    ("magic 0, short v0 message", struct.pack(">qiIbb", 0, 14, 0, 0, 0) + b"\xff" * 8, {}, INVALID_RECORD),
    ("length below the header", struct.pack(">qiib", 0, 20, 0, 2) + b"\x00" * 15, {}, CORRUPT_MESSAGE),
    ("base offset not 0", good(base_offset=5), {}, INVALID_RECORD),
    ("too large", good(), {"max_batch_bytes": len(good()) - 1}, ErrorCode.MESSAGE_TOO_LARGE),
    ("crc", good()[:-1] + b"!", {}, CORRUPT_MESSAGE),
    ("last offset delta negative", raw_batch(raw_record(0), 0, -1), {}, INVALID_RECORD),
    ("count 0", raw_batch(b"", 0, 0), {}, INVALID_RECORD),
    ("count != lastOffsetDelta + 1", raw_batch(raw_record(0) + raw_record(1), 2, 2), {}, INVALID_RECORD),
    ("control batch", good(is_control=True), {}, INVALID_RECORD),
    ("producer id without sequence", good(producer_id=1, producer_epoch=0), {}, INVALID_RECORD),
    ("log append time from a client", good(timestamp_type=1), {}, ErrorCode.INVALID_TIMESTAMP),
    ("snappy", raw_batch(raw_record(0), 1, attributes=CODEC_SNAPPY), {}, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
    ("zstd", raw_batch(raw_record(0), 1, attributes=CODEC_ZSTD), {}, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
    ("codec 5", raw_batch(raw_record(0), 1, attributes=5), {}, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
    ("codec 7", raw_batch(raw_record(0), 1, attributes=7), {}, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
    ("lz4 garbage", raw_batch(b"garbage!", 1, attributes=CODEC_LZ4), {}, CORRUPT_MESSAGE),
    ("lz4 truncated frame", raw_batch(lz4_section(raw_record(0) * 50)[:-9], 1, attributes=CODEC_LZ4), {},
     CORRUPT_MESSAGE),
    ("lz4 dependent blocks (FLG 0x40)", raw_batch(lz4_section(raw_record(0, value=b"v" * 70_000), block_linked=True),
                                                  1, attributes=CODEC_LZ4), {}, CORRUPT_MESSAGE),
    ("lz4 bytes after the frame", raw_batch(lz4_section(raw_record(0)) + b"\x00", 1, attributes=CODEC_LZ4), {},
     CORRUPT_MESSAGE),
    ("gzip garbage", raw_batch(b"\x1f\x8b\x08\x00garbage", 1, attributes=CODEC_GZIP), {}, CORRUPT_MESSAGE),
    ("lz4 bomb", good(CODEC_LZ4), {"max_uncompressed_bytes": 100}, INVALID_RECORD),
    ("gzip bomb", good(CODEC_GZIP), {"max_uncompressed_bytes": 100}, INVALID_RECORD),
    ("count larger than the bytes allow", raw_batch(raw_record(0), 2, 1), {}, INVALID_RECORD),
    ("record cut short", raw_batch(raw_record(0) + raw_record(1) + raw_record(2)[:-1], 3), {}, INVALID_RECORD),
    ("bytes after the last record", raw_batch(raw_record(0) + raw_record(1) + b"\x00" * 7, 2), {},
     INVALID_RECORD),
    ("record shorter than its length", raw_batch(raw_record(0, length_adjust=1) + raw_record(1), 2), {},
     INVALID_RECORD),
    ("record longer than its length", raw_batch(raw_record(0, length_adjust=-1) + raw_record(1), 2), {},
     INVALID_RECORD),
    ("negative record length", raw_batch(zz(-3) + raw_record(0)[1:], 1), {}, INVALID_RECORD),
    ("offset delta gap", raw_batch(raw_record(0) + raw_record(2), 2), {}, INVALID_RECORD),
    ("offset deltas not from 0", raw_batch(raw_record(1) + raw_record(2), 2), {}, INVALID_RECORD),
    ("offset deltas repeated", raw_batch(raw_record(0) + raw_record(0), 2), {}, INVALID_RECORD),
    ("offset delta gap, lz4", raw_batch(lz4_section(raw_record(0) * 2), 2, attributes=CODEC_LZ4), {},
     INVALID_RECORD),
    ("key overruns the record", raw_batch(raw_record(0, key=b"k").replace(b"\x02k", b"\x7ek"), 1), {},
     INVALID_RECORD),
    ("value overruns the batch", raw_batch(raw_record(0, value=b"v" * 100)[:-20], 1), {}, INVALID_RECORD),
    ("negative header count", raw_batch(raw_record(0, headers=(("h", b"x"),)).replace(b"\x02\x02h", b"\x01\x02h"),
                                        1), {}, INVALID_RECORD),
    ("negative header key length", raw_batch(
        raw_record(0, headers=(("h", b"x"),)).replace(b"\x02\x02h", b"\x02\x01h"), 1), {}, INVALID_RECORD),
    ("header count too large", raw_batch(raw_record(0, headers=(("h", b"x"),)).replace(b"\x02\x02h", b"\x7e\x02h"),
                                         1), {}, INVALID_RECORD),
    ("varint too long", raw_batch(b"\x10\x00" + b"\xff" * 6 + b"\x01" + b"\x00" * 7, 1), {}, INVALID_RECORD),
    ("null key, compacted topic", build_batch([(b"k", b"v", TS, ()), (None, b"v", TS, ())]),
     {"require_keys": True}, INVALID_RECORD),
    ("null key, normal topic", build_batch([(b"k", b"v", TS, ()), (None, b"v", TS, ())]), {}, OK),
    ("keys, compacted topic", good(CODEC_LZ4), {"require_keys": True}, OK),
    ("timestamp within window", good(), {"now_ms": TS, "timestamp_before_max_ms": 10,
                                        "timestamp_after_max_ms": 10}, OK),
    ("timestamp too old", good(), {"now_ms": TS + 1000, "timestamp_before_max_ms": 999},
     ErrorCode.INVALID_TIMESTAMP),
    ("timestamp too new", good(), {"now_ms": TS, "timestamp_after_max_ms": 3}, ErrorCode.INVALID_TIMESTAMP),
    ("timestamp at the edges", good(), {"now_ms": TS + 2, "timestamp_before_max_ms": 2,
                                        "timestamp_after_max_ms": 2}, OK),
    ("timestamp -1 is exempt", build_batch([(None, b"v", TS, ()), (None, b"v", -1, ())]),
     {"now_ms": TS, "timestamp_before_max_ms": 1000}, OK),
    ("wide 2-byte deltas, in window", build_batch([(None, b"v", TS + 5000 * i, ()) for i in range(3)]),
     {"now_ms": TS, "timestamp_after_max_ms": 10_000}, OK),
    ("wide 2-byte deltas, out of window", build_batch([(None, b"v", TS + 5000 * i, ()) for i in range(3)]),
     {"now_ms": TS, "timestamp_after_max_ms": 9_999}, ErrorCode.INVALID_TIMESTAMP),
]


@pytest.mark.parametrize("name, buf, kwargs, code", VALIDATION_CASES, ids=[case[0] for case in VALIDATION_CASES])
def test_validate_client_batch(name: str, buf: bytes, kwargs: dict, code: ErrorCode) -> None:
    result = validate_client_batch(buf, **kwargs)
    assert result == code, name
    assert type(result) is ErrorCode
    assert validate_client_batch(bytearray(buf), **kwargs) == code
    assert validate_client_batch(memoryview(buf), **kwargs) == code


def test_validate_agrees_with_decode_on_valid_batches() -> None:
    for codec in (CODEC_NONE, CODEC_LZ4, CODEC_GZIP):
        batch = good(codec, count=300)
        assert validate_client_batch(batch) == OK
        assert [r.offset for r in decode_records(batch)] == list(range(300))


# --- fuzzing: validation never raises, decoding raises only KafkaError --------------------------------

MUTATION_BASES = [good(), good(CODEC_LZ4), good(CODEC_GZIP), build_batch([(b"k", b"v", TS, [("h", None)])] * 3)]


def check_never_raises(buf: bytes, **kwargs: object) -> None:
    code = validate_client_batch(buf, **kwargs)
    assert isinstance(code, int)
    if code == OK:  # whatever validation accepts, the reader reads
        assert [r.offset for r in decode_records(buf)] == list(range(read_header(buf).records_count))
    with contextlib.suppress(CorruptRecordError, InvalidRecordError, UnsupportedCodecError):
        decode_records(buf)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(buf: bytes) -> None:
    check_never_raises(buf)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=HEADER_SIZE - 17, max_size=150))
def test_fuzz_arbitrary_records_behind_a_plausible_header(tail: bytes) -> None:
    """baseOffset 0, a matching length, magic 2, valid CRC: everything after is arbitrary."""
    buf = struct.pack(">qiib", 0, 5 + len(tail), 0, 2) + tail
    check_never_raises(with_fixed_crc(buf))


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(MUTATION_BASES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            buf[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif len(buf) > 1:
            del buf[pos:pos + draw(st.integers(1, 8))]
        if not buf:
            break
    if draw(st.booleans()) and len(buf) >= HEADER_SIZE:  # reach the checks behind the CRC
        if draw(st.booleans()):
            struct.pack_into(">i", buf, 8, len(buf) - 12)
        buf = bytearray(with_fixed_crc(buf))
    return bytes(buf)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(), st.booleans())
def test_fuzz_mutated_batches(buf: bytes, require_keys: bool) -> None:
    check_never_raises(buf, require_keys=require_keys, now_ms=TS, timestamp_before_max_ms=5,
                       timestamp_after_max_ms=5)


@st.composite
def mutated_sections(draw: st.DrawFn) -> bytes:
    """Mutate the *uncompressed* records, then re-frame (lz4 or none) with a valid header and CRC."""
    records = draw(st.lists(st.tuples(keys, st.binary(max_size=30), st.just(TS), header_lists), min_size=1,
                            max_size=5))
    batch = build_batch(records)
    section = bytearray(batch[HEADER_SIZE:])
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(section) - 1))
        section[pos] = draw(st.integers(0, 255))
    codec = draw(st.sampled_from([CODEC_NONE, CODEC_LZ4]))
    body = lz4_section(bytes(section)) if codec == CODEC_LZ4 else bytes(section)
    return raw_batch(body, len(records), attributes=codec)


@settings(max_examples=1000, deadline=None)
@given(mutated_sections())
def test_fuzz_mutated_records_behind_a_valid_crc(buf: bytes) -> None:
    check_never_raises(buf)
    check_never_raises(buf, require_keys=True, now_ms=TS)


# --- compression ----------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=300_000) | st.binary(max_size=50).map(lambda b: b * 5000),
       codec=st.sampled_from([CODEC_NONE, CODEC_LZ4, CODEC_GZIP]))
def test_compression_round_trip(data: bytes, codec: int) -> None:
    assert compression.decompress(codec, compression.compress(codec, data)) == data


def test_lz4_reader_accepts_every_java_readable_frame_flavour() -> None:
    data = b"0123456789abcdef" * 20_000
    for kwargs in ({}, {"store_size": False}, {"content_checksum": True}, {"block_checksum": True},
                   {"block_size": lz4.frame.BLOCKSIZE_MAX4MB}):
        frame = lz4.frame.compress(data, block_linked=False, **kwargs)  # python-lz4 links blocks by default
        assert compression.decompress(CODEC_LZ4, frame) == data


def test_gzip_reads_concatenated_members_like_java() -> None:
    assert compression.decompress(CODEC_GZIP, compression.compress(CODEC_GZIP, b"ab")
                                  + compression.compress(CODEC_GZIP, b"cd")) == b"abcd"


@pytest.mark.parametrize("codec", [CODEC_LZ4, CODEC_GZIP, CODEC_NONE])
def test_decompression_bound_is_exact(codec: int) -> None:
    data = b"\x00" * 100_000
    packed = compression.compress(codec, data)
    assert compression.decompress(codec, packed, max_uncompressed_bytes=100_000) == data
    with pytest.raises(UncompressedSizeExceededError):
        compression.decompress(codec, packed, max_uncompressed_bytes=99_999)


@pytest.mark.parametrize("codec", [CODEC_LZ4, CODEC_GZIP])
def test_decompression_bomb_is_stopped_in_chunks(codec: int) -> None:
    bomb = compression.compress(codec, b"\x00" * (80 << 20))  # 80 MiB of zeros
    assert len(bomb) < 1 << 20
    with pytest.raises(UncompressedSizeExceededError):
        compression.decompress(codec, bomb)
    with pytest.raises(UncompressedSizeExceededError):
        compression.decompress(codec, bomb, max_uncompressed_bytes=3 << 20)


def test_lz4_declared_content_size_above_the_bound_fails_before_inflating() -> None:
    frame = lz4.frame.compress(b"\x00" * 1000, store_size=True)
    with pytest.raises(UncompressedSizeExceededError):
        compression.decompress(CODEC_LZ4, frame, max_uncompressed_bytes=999)
    assert BATCH_UNCOMPRESSED_BYTES_MAX == 64 << 20


@pytest.mark.parametrize("codec", [CODEC_SNAPPY, CODEC_ZSTD, 5, 6, 7])
def test_unsupported_codecs_raise_a_clear_error(codec: int) -> None:
    with pytest.raises(UnsupportedCodecError, match=r"codec") as info:
        compression.decompress(codec, b"data")
    assert info.value.code == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    with pytest.raises(UnsupportedCodecError):
        compression.compress(codec, b"data")


@pytest.mark.parametrize("frame", [
    b"",
    b"\x04\x22\x4d",
    b"\x04\x22\x4d\x18\x80\x40\x00",  # version 2
    b"\x04\x22\x4d\x18\x61\x40\x00",  # dictionary id
    b"\x04\x22\x4d\x18\x60\x30\x00",  # block size 3 (reserved)
    b"\x04\x22\x4d\x18\x68\x40",  # content size flag, header cut
])
def test_lz4_frame_header_checks(frame: bytes) -> None:
    with pytest.raises(CorruptRecordError):
        compression.decompress(CODEC_LZ4, frame)


def test_gzip_truncated_stream_is_corrupt() -> None:
    packed = compression.compress(CODEC_GZIP, bytes(range(256)) * 100)
    with pytest.raises(CorruptRecordError):
        compression.decompress(CODEC_GZIP, packed[:-12])
    assert zlib.decompress(packed, 31) == bytes(range(256)) * 100


# --- varints --------------------------------------------------------------------------------------

@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = varint.encode_varint(value)
    assert encoded == zz(value)
    assert len(encoded) == varint.size_of_varint(value)
    assert varint.decode_varint(encoded + b"junk", 0) == (value, len(encoded))
    assert varint.unzigzag(varint.zigzag(value)) == value


def test_varint_known_encodings_and_errors() -> None:
    assert [varint.encode_varint(v) for v in (0, -1, 1, -64, 64, 8191)] == [
        b"\x00", b"\x01", b"\x02", b"\x7f", b"\x80\x01", b"\xfe\x7f"]
    assert varint.decode_varint(b"\xff\xff\xff\xff\x0f", 0, 5) == (-(1 << 31), 5)
    with pytest.raises(ValueError):
        varint.decode_uvarint(b"\xff" * 5 + b"\x01", 0, 5)
    with pytest.raises(IndexError):
        varint.decode_uvarint(b"\xff\xff", 0)
