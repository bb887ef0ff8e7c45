"""ListOffsets (earliest, latest, by timestamp) and OffsetForLeaderEpoch on the wire, with leader
epoch checks (broker/handlers/offsets.py; KIP-79, KIP-101, KIP-320).
"""

from __future__ import annotations

import pytest
import test_protocol_helpers as helpers
from test_protocol_helpers import (
    API_OFFSET_FOR_LEADER_EPOCH,
    OFFSET_FOR_LEADER_EPOCH_V,
    KafkaConnection,
    bump_leader_epoch,
    create_topic,
    list_offsets,
    produce,
    unique_topic,
)

from client.wire.errors import ErrorCode
from client.wire.records import CODEC_LZ4, build_batch

shared_broker = helpers.shared_broker
conn = helpers.conn
inprocess_broker = helpers.inprocess_broker

LATEST, EARLIEST = -1, -2
T0 = 1_700_000_000_000


def _timed_batch(timestamps: list[int], compression: int = 0) -> bytes:
    return build_batch([(b"k", f"v{t}".encode() * 20, t, ()) for t in timestamps], compression=compression)


def _offset_for_epoch(conn: KafkaConnection, topic: str, epoch: int, partition: int = 0, *,
                      current_leader_epoch: int = -1, version: int = OFFSET_FOR_LEADER_EPOCH_V) -> dict:
    body = conn.request(API_OFFSET_FOR_LEADER_EPOCH, version, {"replica_id": -1, "topics": [
        {"topic": topic, "partitions": [{"partition": partition, "current_leader_epoch": current_leader_epoch,
                                         "leader_epoch": epoch}]}]})
    (t,) = body["topics"]
    assert t["topic"] == topic
    (p,) = t["partitions"]
    assert p["partition"] == partition
    return p


@pytest.fixture
def timed_topic(conn: KafkaConnection) -> str:
    """Offsets 0-2 at T0+100..102 (uncompressed), 3-5 at T0+200, 50, 300 (lz4: max is not last),
    6 at T0+400."""
    topic = unique_topic("timed")
    create_topic(conn, topic)
    assert produce(conn, topic, _timed_batch([T0 + 100, T0 + 101, T0 + 102]))["base_offset"] == 0
    assert produce(conn, topic, _timed_batch([T0 + 200, T0 + 50, T0 + 300], CODEC_LZ4))["base_offset"] == 3
    assert produce(conn, topic, _timed_batch([T0 + 400]))["base_offset"] == 6
    return topic


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_list_offsets_earliest_and_latest(conn: KafkaConnection, timed_topic: str, version: int) -> None:
    earliest = list_offsets(conn, timed_topic, EARLIEST, version=version)
    latest = list_offsets(conn, timed_topic, LATEST, version=version)
    assert (earliest["error_code"], earliest["offset"]) == (0, 0)
    assert (latest["error_code"], latest["offset"]) == (0, 7)
    if version >= 4:
        assert earliest["leader_epoch"] == 0 and latest["leader_epoch"] == 0


@pytest.mark.parametrize(("timestamp", "offset", "found_timestamp"), [
    (T0, 0, T0 + 100),             # before everything: the first record
    (T0 + 100, 0, T0 + 100),
    (T0 + 101, 1, T0 + 101),       # inside a batch: that record, not the batch start
    (T0 + 150, 3, T0 + 200),       # between batches: the first record of the next batch
    (T0 + 250, 5, T0 + 300),       # inside a compressed batch whose records are out of order
    (T0 + 301, 6, T0 + 400),
    (T0 + 401, -1, -1),            # after everything: no offset
])
def test_list_offsets_by_timestamp(conn: KafkaConnection, timed_topic: str, timestamp: int, offset: int,
                                   found_timestamp: int) -> None:
    """Kafka's rule: the first offset whose record timestamp is >= the target, with that timestamp."""
    part = list_offsets(conn, timed_topic, timestamp)
    assert (part["error_code"], part["offset"], part["timestamp"]) == (0, offset, found_timestamp)


def test_list_offsets_unknown_partition_and_topic(conn: KafkaConnection, timed_topic: str) -> None:
    assert list_offsets(conn, timed_topic, LATEST, partition=3)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert list_offsets(conn, unique_topic("none"), LATEST)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_list_offsets_of_an_empty_partition(conn: KafkaConnection) -> None:
    topic = unique_topic("empty")
    create_topic(conn, topic)
    assert list_offsets(conn, topic, EARLIEST)["offset"] == 0
    assert list_offsets(conn, topic, LATEST)["offset"] == 0
    assert list_offsets(conn, topic, T0)["offset"] == -1


def test_offset_for_leader_epoch_single_epoch(conn: KafkaConnection, timed_topic: str) -> None:
    for version in (2, 3):
        current = _offset_for_epoch(conn, timed_topic, 0, version=version)
        assert (current["error_code"], current["leader_epoch"], current["end_offset"]) == (0, 0, 7)
        above = _offset_for_epoch(conn, timed_topic, 5, version=version)  # an epoch this log never had
        assert (above["error_code"], above["leader_epoch"], above["end_offset"]) == (0, -1, -1)
    unknown = _offset_for_epoch(conn, timed_topic, 0, partition=9)
    assert unknown["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert _offset_for_epoch(conn, timed_topic, 0, current_leader_epoch=1)["error_code"] == \
        ErrorCode.UNKNOWN_LEADER_EPOCH


def test_offsets_across_leader_epochs(inprocess_broker) -> None:
    """Epoch 0 holds offsets 0-2, epoch 3 (after a leader change) 3-4: OffsetForLeaderEpoch answers the
    end of each epoch, ListOffsets the epoch of each offset, and stale or future current epochs are refused."""
    topic = unique_topic("epochs")
    with KafkaConnection(inprocess_broker.bootstrap) as c:
        create_topic(c, topic)
        produce(c, topic, _timed_batch([T0, T0 + 1, T0 + 2]))
        inprocess_broker.call(bump_leader_epoch, topic, 0, 3)
        produce(c, topic, _timed_batch([T0 + 10, T0 + 11]))

        def end_of(epoch: int) -> tuple[int, int, int]:
            p = _offset_for_epoch(c, topic, epoch)
            return p["error_code"], p["leader_epoch"], p["end_offset"]

        assert end_of(0) == (0, 0, 3)
        assert end_of(1) == (0, 0, 3)   # the largest epoch <= 1 is 0, which ends where 3 starts
        assert end_of(2) == (0, 0, 3)
        assert end_of(3) == (0, 3, 5)   # the current epoch ends at the log end
        assert end_of(4) == (0, -1, -1)

        by_time = list_offsets(c, topic, T0 + 5)
        assert (by_time["offset"], by_time["leader_epoch"]) == (3, 3)
        first = list_offsets(c, topic, EARLIEST)
        assert (first["offset"], first["leader_epoch"]) == (0, 0)
        last = list_offsets(c, topic, LATEST)
        assert (last["offset"], last["leader_epoch"]) == (5, 3)

        for current, expected in ((-1, 0), (3, 0), (2, ErrorCode.FENCED_LEADER_EPOCH),
                                  (0, ErrorCode.FENCED_LEADER_EPOCH), (4, ErrorCode.UNKNOWN_LEADER_EPOCH)):
            assert list_offsets(c, topic, LATEST, current_leader_epoch=current)["error_code"] == expected, current
            assert _offset_for_epoch(c, topic, 0, current_leader_epoch=current)["error_code"] == expected, current
