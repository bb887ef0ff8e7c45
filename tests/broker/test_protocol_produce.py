"""Produce validation on the wire (broker/handlers/produce.py, client.wire.records.validate_client_batch;
KAFKA_PROTOCOL.md §3.5 "Checks before append"): every refused batch gets its Kafka error code
and leaves the log untouched.
"""

from __future__ import annotations

import pytest
import test_protocol_helpers as helpers
from test_protocol_helpers import (
    API_PRODUCE,
    PRODUCE_V,
    KafkaConnection,
    batch,
    create_topic,
    list_offsets,
    produce,
    produce_body,
    unique_topic,
)

from client.wire.errors import ErrorCode
from client.wire.records import CODEC_LZ4, CRC_POS, HEADER_SIZE, build_batch

shared_broker = helpers.shared_broker
conn = helpers.conn

LATEST = -1


def _log_end(conn: KafkaConnection, topic: str, partition: int = 0) -> int:
    return list_offsets(conn, topic, LATEST, partition=partition)["offset"]


@pytest.fixture
def topic(conn: KafkaConnection) -> str:
    name = unique_topic("produce")
    create_topic(conn, name)
    return name


@pytest.mark.parametrize("version", range(3, 9))
def test_every_served_produce_version_appends(conn: KafkaConnection, topic: str, version: int) -> None:
    first = produce(conn, topic, batch(2), version=version)
    second = produce(conn, topic, batch(3, compression=CODEC_LZ4, value_size=300), version=version)
    assert (first["error_code"], first["base_offset"]) == (0, 0)
    assert (second["error_code"], second["base_offset"]) == (0, 2)
    if version >= 2:
        assert second["log_append_time_ms"] == -1  # CreateTime topic
    if version >= 5:
        assert second["log_start_offset"] == 0


def _corrupt_crc(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[HEADER_SIZE + 3] ^= 0x40  # a byte of the first record: covered by the CRC
    return bytes(flipped)


def _wrong_crc_field(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[CRC_POS] ^= 0x01
    return bytes(flipped)


def _length_lies(data: bytes) -> bytes:
    return data[:8] + (len(data)).to_bytes(4, "big") + data[12:]  # batchLength 12 too large


@pytest.mark.parametrize(("make", "error"), [
    pytest.param(lambda: _corrupt_crc(batch(3)), ErrorCode.CORRUPT_MESSAGE, id="record-byte-flipped"),
    pytest.param(lambda: _wrong_crc_field(batch(3)), ErrorCode.CORRUPT_MESSAGE, id="crc-field-flipped"),
    pytest.param(lambda: _corrupt_crc(batch(3, compression=CODEC_LZ4, value_size=300)), ErrorCode.CORRUPT_MESSAGE,
                 id="lz4-byte-flipped"),
    pytest.param(lambda: batch(2) + batch(2), ErrorCode.INVALID_RECORD, id="two-batches"),
    pytest.param(lambda: batch(2) + b"\x00", ErrorCode.INVALID_RECORD, id="trailing-byte"),
    pytest.param(lambda: batch(2)[:-1], ErrorCode.INVALID_RECORD, id="cut-short"),
    pytest.param(lambda: _length_lies(batch(2)), ErrorCode.INVALID_RECORD, id="length-too-long"),
    pytest.param(lambda: build_batch([(None, b"\x00\x00\x00\x00\x00\x00", 1, ())], is_control=True),
                 ErrorCode.INVALID_RECORD, id="control-batch"),
    pytest.param(lambda: batch(2, base_offset=7), ErrorCode.INVALID_RECORD, id="base-offset-not-0"),
    pytest.param(lambda: batch(2, last_offset_delta=5), ErrorCode.INVALID_RECORD, id="count-mismatch"),
    pytest.param(lambda: batch(2, producer_id=5, producer_epoch=0), ErrorCode.INVALID_RECORD,
                 id="producer-id-without-sequence"),
    pytest.param(lambda: b"", ErrorCode.INVALID_RECORD, id="empty-records"),
    pytest.param(lambda: None, ErrorCode.INVALID_RECORD, id="null-records"),
    pytest.param(lambda: b"\x00" * 70, ErrorCode.INVALID_RECORD, id="zeros"),
])
def test_a_bad_batch_is_refused_and_nothing_is_stored(conn: KafkaConnection, topic: str, make, error: int) -> None:
    assert produce(conn, topic, batch(1))["base_offset"] == 0
    part = produce(conn, topic, make())
    assert (part["error_code"], part["base_offset"]) == (error, -1)
    assert _log_end(conn, topic) == 1
    assert produce(conn, topic, batch(1))["base_offset"] == 1  # the partition is still writable


def test_a_batch_over_max_message_bytes_is_too_large(conn: KafkaConnection) -> None:
    topic = unique_topic("small")
    create_topic(conn, topic, configs={"max.message.bytes": "2000"})
    part = produce(conn, topic, batch(10, value_size=300))
    assert part["error_code"] == ErrorCode.MESSAGE_TOO_LARGE
    # an lz4 batch is judged by its compressed size, as Kafka does
    small = batch(10, value_size=300, compression=CODEC_LZ4)
    assert len(small) < 2000
    assert produce(conn, topic, small)["error_code"] == 0
    assert _log_end(conn, topic) == 10


def test_the_broker_default_message_max_bytes_applies(conn: KafkaConnection, topic: str) -> None:
    too_big = batch(2, value_size=600_000)  # 1.2 MB > message.max.bytes 1048588
    assert produce(conn, topic, too_big)["error_code"] == ErrorCode.MESSAGE_TOO_LARGE
    assert _log_end(conn, topic) == 0


def test_a_compacted_topic_refuses_null_keys(conn: KafkaConnection) -> None:
    topic = unique_topic("compacted")
    create_topic(conn, topic, configs={"cleanup.policy": "compact"})
    null_key = build_batch([(b"k", b"v", 1, ()), (None, b"v", 2, ())])
    assert produce(conn, topic, null_key)["error_code"] == ErrorCode.INVALID_RECORD
    lz4_null_key = build_batch([(None, b"v" * 100, 1, ())], compression=CODEC_LZ4)
    assert produce(conn, topic, lz4_null_key)["error_code"] == ErrorCode.INVALID_RECORD
    tombstone = build_batch([(b"k", None, 3, ())])  # a null value is fine: that is a delete
    assert produce(conn, topic, tombstone)["error_code"] == 0
    assert _log_end(conn, topic) == 1


@pytest.mark.parametrize("acks", [2, -2, 5])
def test_invalid_acks_are_refused_per_partition(conn: KafkaConnection, acks: int) -> None:
    topic = unique_topic("acks")
    create_topic(conn, topic, partitions=2)
    body = conn.request(API_PRODUCE, PRODUCE_V, produce_body(topic, {0: batch(1), 1: batch(1)}, acks=acks))
    parts = body["responses"][0]["partition_responses"]
    assert sorted((p["index"], p["error_code"]) for p in parts) == [
        (0, ErrorCode.INVALID_REQUIRED_ACKS), (1, ErrorCode.INVALID_REQUIRED_ACKS)]
    assert _log_end(conn, topic, 0) == 0 and _log_end(conn, topic, 1) == 0


@pytest.mark.parametrize("acks", [1, -1])
def test_acks_1_and_all_are_answered(conn: KafkaConnection, topic: str, acks: int) -> None:
    part = produce(conn, topic, batch(2), acks=acks)
    assert (part["error_code"], part["base_offset"]) == (0, 0)


def test_unknown_topic_and_partition(conn: KafkaConnection, topic: str) -> None:
    assert produce(conn, topic, batch(1), partition=1)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert produce(conn, unique_topic("never"), batch(1))["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_one_request_many_partitions_each_judged_alone(conn: KafkaConnection) -> None:
    topic = unique_topic("mixed")
    create_topic(conn, topic, partitions=3)
    body = conn.request(API_PRODUCE, PRODUCE_V, produce_body(topic, {0: batch(2), 1: _corrupt_crc(batch(2)),
                                                                     2: batch(4)}))
    parts = {p["index"]: p for p in body["responses"][0]["partition_responses"]}
    assert (parts[0]["error_code"], parts[0]["base_offset"]) == (0, 0)
    assert parts[1]["error_code"] == ErrorCode.CORRUPT_MESSAGE
    assert (parts[2]["error_code"], parts[2]["base_offset"]) == (0, 0)
    assert [_log_end(conn, topic, p) for p in range(3)] == [2, 0, 4]


def test_a_log_append_time_topic_answers_the_append_time(conn: KafkaConnection) -> None:
    topic = unique_topic("lat")
    create_topic(conn, topic, configs={"message.timestamp.type": "LogAppendTime"})
    part = produce(conn, topic, batch(2, timestamp=5))
    assert part["error_code"] == 0
    assert part["log_append_time_ms"] > 1_600_000_000_000
