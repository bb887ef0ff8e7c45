"""Idempotent produce on the wire (KIP-98): retries answered with the original offsets, sequence
gaps, unknown producer ids, fenced epochs, and the same after a clean restart and after kill -9.

The producer state is `storage.log.Log.producer_state` (storage/producer_state.py, checked in
`Log.append`; commit 96f5a7c), so these are plain tests.

Batches carry the current time as their CreateTime: producer expiry compares the clock with the
producer's last batch timestamp (Kafka's lastTimestamp), so a batch stamped more than
producer.id.expiration.ms (1 day) ago finds its producer expired at once and is taken for a new
producer: a replay of it would be appended again.
"""

from __future__ import annotations

import time

import pytest
import test_protocol_helpers as helpers
from test_protocol_helpers import (
    API_FETCH,
    API_INIT_PRODUCER_ID,
    FETCH_V,
    KafkaConnection,
    batch,
    create_topic,
    fetch_body,
    fetch_partitions,
    list_offsets,
    produce,
    unique_topic,
)

from client.wire.errors import ErrorCode
from client.wire.records import CODEC_LZ4, iter_batch_headers
from storage.producer_state import ProducerStateConfig

# The documented rule for a batch from an unknown producer id with a non-zero sequence: accepted
# (Kafka >= 2.5, KIP-360) unless ProducerStateConfig.unknown_producer_id_error, then UNKNOWN_PRODUCER_ID.
UNKNOWN_PRODUCER_ID_IS_AN_ERROR = ProducerStateConfig().unknown_producer_id_error

shared_broker = helpers.shared_broker
conn = helpers.conn

LATEST = -1


def _init_producer_id(conn: KafkaConnection, version: int = 1) -> tuple[int, int]:
    body = conn.request(API_INIT_PRODUCER_ID, version, {"transactional_id": None, "transaction_timeout_ms": 60000})
    assert body["error_code"] == 0
    return body["producer_id"], body["producer_epoch"]


def _idempotent(n: int, producer_id: int, sequence: int, epoch: int = 0, **kwargs) -> bytes:
    return batch(n, producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence,
                 timestamp=int(time.time() * 1000), **kwargs)


def _stored_batches(conn: KafkaConnection, topic: str) -> list:
    """Every stored batch header (a fetch returns one segment's batches at most, so read on)."""
    headers: list = []
    offset = 0
    while True:
        part = fetch_partitions(conn.request(API_FETCH, FETCH_V, fetch_body(topic, {0: offset})))[0]
        found = [h for _, h in iter_batch_headers(bytes(part["records"]))]
        if not found:
            return headers
        headers += found
        offset = found[-1].next_offset


def _log_end(conn: KafkaConnection, topic: str) -> int:
    return list_offsets(conn, topic, LATEST)["offset"]


def test_init_producer_id_hands_out_distinct_ids(conn: KafkaConnection) -> None:
    first, second = _init_producer_id(conn, 0), _init_producer_id(conn, 1)
    assert first[0] >= 0 and second[0] >= 0 and first[0] != second[0]
    assert first[1] == second[1] == 0


def test_a_replayed_batch_gets_its_original_offsets_and_is_stored_once(conn: KafkaConnection) -> None:
    topic = unique_topic("replay")
    create_topic(conn, topic)
    pid, epoch = _init_producer_id(conn)
    other = batch(2)  # a non-idempotent batch first, so offsets are not trivially 0
    assert produce(conn, topic, other)["base_offset"] == 0
    first = _idempotent(3, pid, 0, epoch)
    second = _idempotent(2, pid, 3, epoch, compression=CODEC_LZ4, value_size=300)
    assert produce(conn, topic, first)["base_offset"] == 2
    assert produce(conn, topic, second)["base_offset"] == 5
    for replay, offset in ((second, 5), (first, 2), (second, 5)):  # the last 5 batches are remembered
        part = produce(conn, topic, replay)
        assert (part["error_code"], part["base_offset"]) == (0, offset)
        assert part["log_append_time_ms"] == -1  # CreateTime topic, also for a duplicate
    assert _log_end(conn, topic) == 7
    assert [(h.base_offset, h.producer_id, h.base_sequence) for h in _stored_batches(conn, topic)] == [
        (0, -1, -1), (2, pid, 0), (5, pid, 3)]
    assert produce(conn, topic, _idempotent(1, pid, 5, epoch))["base_offset"] == 7


def test_a_sequence_gap_is_out_of_order(conn: KafkaConnection) -> None:
    topic = unique_topic("gap")
    create_topic(conn, topic)
    pid, epoch = _init_producer_id(conn)
    assert produce(conn, topic, _idempotent(3, pid, 0, epoch))["error_code"] == 0
    for sequence in (4, 7, 1):  # ahead of the next (3), far ahead, and an old one that is no exact retry
        part = produce(conn, topic, _idempotent(2, pid, sequence, epoch))
        assert (part["error_code"], part["base_offset"]) == (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1), sequence
    assert _log_end(conn, topic) == 3
    assert produce(conn, topic, _idempotent(2, pid, 3, epoch))["base_offset"] == 3  # the right one still goes


def test_a_producer_id_never_issued_is_unknown(conn: KafkaConnection) -> None:
    """A producer id no InitProducerId returned gets UNKNOWN_PRODUCER_ID (59) and stores nothing."""
    topic = unique_topic("unknown-pid")
    create_topic(conn, topic)
    for stranger, sequence in ((987_654_321, 17), (987_654_322, 0)):
        part = produce(conn, topic, _idempotent(2, stranger, sequence))
        assert (part["error_code"], part["base_offset"]) == (ErrorCode.UNKNOWN_PRODUCER_ID, -1)
    assert _log_end(conn, topic) == 0


def test_an_issued_producer_id_new_to_a_partition_follows_kip_360(conn: KafkaConnection) -> None:
    """An issued id that this partition does not know (never written here, or expired) starting at a
    non-zero sequence is accepted, as Kafka >= 2.5 does (KIP-360), unless
    ProducerStateConfig.unknown_producer_id_error; from then on its sequence is checked."""
    topic = unique_topic("new-to-partition")
    create_topic(conn, topic)
    pid, epoch = _init_producer_id(conn)
    part = produce(conn, topic, _idempotent(2, pid, 17, epoch))
    if UNKNOWN_PRODUCER_ID_IS_AN_ERROR:
        assert part["error_code"] == ErrorCode.UNKNOWN_PRODUCER_ID
        return
    assert (part["error_code"], part["base_offset"]) == (0, 0)
    assert produce(conn, topic, _idempotent(1, pid, 20, epoch))["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(conn, topic, _idempotent(1, pid, 19, epoch))["error_code"] == 0


def test_an_older_epoch_is_fenced_and_a_new_epoch_starts_at_0(conn: KafkaConnection) -> None:
    topic = unique_topic("epochs")
    create_topic(conn, topic)
    pid, _ = _init_producer_id(conn)
    assert produce(conn, topic, _idempotent(2, pid, 0, epoch=0))["error_code"] == 0
    assert produce(conn, topic, _idempotent(1, pid, 5, epoch=1))["error_code"] == \
        ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(conn, topic, _idempotent(1, pid, 0, epoch=1))["base_offset"] == 2
    assert produce(conn, topic, _idempotent(1, pid, 2, epoch=0))["error_code"] == ErrorCode.INVALID_PRODUCER_EPOCH
    assert _log_end(conn, topic) == 3


@pytest.mark.parametrize("stop", ["clean", "kill"])
def test_producer_state_survives_a_restart(start_broker, stop: str) -> None:
    broker = start_broker()
    topic = unique_topic("restart")
    with KafkaConnection(broker.bootstrap) as c:
        create_topic(c, topic)
        pid, epoch = _init_producer_id(c)
        first = _idempotent(3, pid, 0, epoch)
        second = _idempotent(2, pid, 3, epoch)
        assert produce(c, topic, first)["base_offset"] == 0
        assert produce(c, topic, second)["base_offset"] == 3
    if stop == "clean":
        assert broker.stop() == 0
    else:
        broker.kill()
    broker.start()
    with KafkaConnection(broker.bootstrap) as c:
        for replay, offset in ((second, 3), (first, 0)):
            part = produce(c, topic, replay)
            assert (part["error_code"], part["base_offset"]) == (0, offset)
        assert produce(c, topic, _idempotent(1, pid, 9, epoch))["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert _log_end(c, topic) == 5
        assert produce(c, topic, _idempotent(1, pid, 5, epoch))["base_offset"] == 5
        # a new producer id after the restart is never one handed out before it
        assert _init_producer_id(c)[0] != pid
        # ids issued before the restart stay known, ids never issued stay unknown
        assert produce(c, topic, _idempotent(1, 987_654_321, 0))["error_code"] == ErrorCode.UNKNOWN_PRODUCER_ID
    helpers.assert_clean_log(broker)
