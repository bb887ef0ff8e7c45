"""Cross-checks of client.wire.records against kafka-python's independent record v2 implementation.

kafka-python (kp) is the producer and consumer of the interop tests; here its builder writes batches
our reader and validator must accept, and its reader (with its own CRC check) must read ours with
identical fields.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from client.wire.errors import ErrorCode
from client.wire.records import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    TIMESTAMP_LOG_APPEND_TIME,
    Record,
    build_batch,
    crc_is_valid,
    decode_records,
    filter_batch,
    read_header,
    validate_client_batch,
)

TS = 1_700_000_000_000
CODECS = [CODEC_NONE, CODEC_LZ4, CODEC_GZIP]

keys = st.none() | st.binary(max_size=40)
values = st.none() | st.binary(max_size=300)
header_lists = st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=3)
timestamps = st.integers(0, 1 << 45) | st.integers(TS - 10_000, TS + 10_000)
record_inputs = st.tuples(keys, values, timestamps, header_lists)


def kp_build(records: list, codec: int, producer_id: int = -1, producer_epoch: int = -1,
             base_sequence: int = -1, transactional: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=transactional,
                                        producer_id=producer_id, producer_epoch=producer_epoch,
                                        base_sequence=base_sequence, batch_size=1 << 30)
    for offset, (key, value, timestamp, headers) in enumerate(records):
        assert builder.append(offset, timestamp, key, value, list(headers or ())) is not None
    return bytes(builder.build())


def kp_read(batch: bytes) -> tuple[DefaultRecordBatch, list[Record]]:
    kp_batch = DefaultRecordBatch(batch)
    assert kp_batch.validate_crc()
    return kp_batch, [Record(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in kp_batch]


def as_records(inputs: list, base_offset: int = 0) -> list[Record]:
    return [Record(base_offset + i, ts, key, value, tuple(headers or ()))
            for i, (key, value, ts, headers) in enumerate(inputs)]


# --- kafka-python writes, we read -------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_batches_decode_and_validate(codec: int) -> None:
    inputs = [(b"key", b"value" * 30, TS, [("trace", b"abc"), ("none", None)]), (None, b"no key", TS + 3, []),
              (b"tombstone", None, TS + 1, []), (None, None, TS - 2, [("", b"")])] * 20
    batch = kp_build(inputs, codec, producer_id=9, producer_epoch=1, base_sequence=100)
    header = read_header(batch)
    assert header.compression == codec  # kp falls back to none when compression does not help
    assert decode_records(batch) == as_records(inputs) == kp_read(batch)[1]
    assert validate_client_batch(batch) == ErrorCode.NONE
    assert validate_client_batch(batch, require_keys=True) == ErrorCode.INVALID_RECORD


def test_kafka_python_lz4_frame_has_content_size_flag() -> None:
    batch = kp_build([(None, b"x" * 500, TS, [])] * 10, CODEC_LZ4)
    assert batch[61 + 4] == 0x68  # FLG with content size, KAFKA_PROTOCOL.md §3.4
    assert len(decode_records(batch)) == 10


@settings(max_examples=100, deadline=None)
@given(inputs=st.lists(record_inputs, min_size=1, max_size=30), codec=st.sampled_from(CODECS))
def test_kafka_python_to_ours_property(inputs: list, codec: int) -> None:
    batch = kp_build(inputs, codec)
    assert decode_records(batch) == kp_read(batch)[1] == as_records(inputs)
    assert validate_client_batch(batch) == ErrorCode.NONE


def test_kafka_python_compacted_batch_with_skipped_offsets() -> None:
    builder = MemoryRecordsBuilder(magic=2, compression_type=CODEC_LZ4, batch_size=1 << 20)
    builder.append(TS, b"a", b"1")
    builder.skip(3)
    builder.append(TS + 1, b"b", b"2")
    builder.close()
    batch = bytes(builder.buffer())
    assert [(r.offset, r.key) for r in decode_records(batch)] == [(0, b"a"), (4, b"b")]
    assert read_header(batch).last_offset_delta == 4
    assert validate_client_batch(batch) == ErrorCode.INVALID_RECORD  # count 2 != lastOffsetDelta + 1


# --- we write, kafka-python reads ---------------------------------------------------------------------

def assert_kp_reads(batch: bytes, expected: list[Record]) -> DefaultRecordBatch:
    kp_batch, kp_records = kp_read(batch)
    assert kp_records == expected
    header = read_header(batch)
    assert (kp_batch.base_offset, kp_batch.last_offset_delta, kp_batch.records_count) == (
        header.base_offset, header.last_offset_delta, header.records_count)
    assert (kp_batch.first_timestamp, kp_batch.max_timestamp, kp_batch.crc) == (
        header.base_timestamp, header.max_timestamp, header.crc)
    assert (kp_batch.producer_id, kp_batch.producer_epoch, kp_batch.base_sequence) == (
        header.producer_id, header.producer_epoch, header.base_sequence)
    assert (kp_batch.compression_type, kp_batch.is_transactional, kp_batch.timestamp_type) == (
        header.compression, header.is_transactional, header.timestamp_type)
    return kp_batch


@pytest.mark.parametrize("codec", CODECS)
def test_our_batches_read_by_kafka_python(codec: int) -> None:
    inputs = [(b"key", b"value" * 30, TS, [("trace", b"abc"), ("none", None)]), (None, b"no key", TS + 3, ()),
              (b"tombstone", None, TS + 1, None), (None, None, TS - 2, [("", b"")])] * 20
    batch = build_batch(inputs, base_offset=1234, compression=codec, producer_id=5, producer_epoch=2,
                        base_sequence=7, is_transactional=True, partition_leader_epoch=3)
    kp_batch = assert_kp_reads(batch, as_records(inputs, 1234))
    assert kp_batch.leader_epoch == 3 and kp_batch.last_sequence == 7 + 79


@settings(max_examples=100, deadline=None)
@given(inputs=st.lists(record_inputs, min_size=1, max_size=30), codec=st.sampled_from(CODECS),
       base_offset=st.integers(0, 1 << 40))
def test_ours_to_kafka_python_property(inputs: list, codec: int, base_offset: int) -> None:
    batch = build_batch(inputs, base_offset=base_offset, compression=codec)
    assert_kp_reads(batch, as_records(inputs, base_offset))


def test_kafka_python_reads_our_special_batches_through_memory_records() -> None:
    """A fetch-like buffer: normal, compacted with gaps, empty, LogAppendTime, cleaner output."""
    normal = build_batch([(b"a", b"1", TS, ()), (b"b", b"2", TS + 1, ())], compression=CODEC_LZ4)
    gaps = build_batch([(b"c", b"3", TS, ()), (b"d", None, TS + 9, [("h", None)])], base_offset=2,
                       offset_deltas=[1, 5], last_offset_delta=7, compression=CODEC_LZ4)
    empty = build_batch([], base_offset=10, last_offset_delta=4, max_timestamp=TS, producer_id=1,
                        producer_epoch=0, base_sequence=0)
    append_time = build_batch([(b"e", b"5", TS, ())], base_offset=15, timestamp_type=TIMESTAMP_LOG_APPEND_TIME,
                              max_timestamp=TS + 500)
    source = build_batch([(b"k%d" % i, b"v%d" % i, TS + i, ()) for i in range(6)], base_offset=16,
                         compression=CODEC_GZIP)
    cleaned = filter_batch(source, lambda r: r.offset % 2 == 1)
    buffer = normal + gaps + empty + append_time + cleaned
    seen = []
    memory = MemoryRecords(buffer)
    while memory.has_next():
        kp_batch = memory.next_batch()
        assert kp_batch.validate_crc()
        seen.append([(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in kp_batch])
    assert seen == [
        [(0, TS, b"a", b"1", ()), (1, TS + 1, b"b", b"2", ())],
        [(3, TS, b"c", b"3", ()), (7, TS + 9, b"d", None, (("h", None),))],
        [],
        [(15, TS + 500, b"e", b"5", ())],
        [(17, TS + 1, b"k1", b"v1", ()), (19, TS + 3, b"k3", b"v3", ()), (21, TS + 5, b"k5", b"v5", ())],
    ]
    assert all(crc_is_valid(b) for b in (normal, gaps, empty, append_time, cleaned))
    assert read_header(cleaned).next_offset == 22


def test_our_decode_matches_kafka_python_on_its_log_append_time_reading() -> None:
    batch = build_batch([(None, b"x", TS + i, ()) for i in range(3)], timestamp_type=TIMESTAMP_LOG_APPEND_TIME,
                        max_timestamp=TS + 77)
    assert decode_records(batch) == kp_read(batch)[1]
