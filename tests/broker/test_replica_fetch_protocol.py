"""Follower fetches (Fetch v12 with a replica id) against one in-process broker that leads the
partition, over a real socket, plus the long-poll rules (followers wait on the log end, consumers on
the high watermark) driven through the Fetch handler itself.

The broker runs in local metadata mode, so nothing but the test changes its partitions: a test
makes the partition's replica set include a fake follower (broker 7) with a leader change, as the
metadata image would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_protocol_helpers import (
    API_FETCH,
    InProcessBroker,
    KafkaConnection,
    batch,
    create_topic,
    fetch_partitions,
    produce,
    unique_topic,
)

from broker.handlers import fetch as fetch_handler
from broker.partition import Partition
from client.wire.errors import ErrorCode
from client.wire.records import iter_batch_headers
from storage import Log

FETCH_V12 = 12
FAKE_FOLLOWER = 7
NOT_A_REPLICA = 9


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    broker = InProcessBroker(str(tmp_path / "data"), **{"metadata.quorum.enable": "false"})
    try:
        yield broker
    finally:
        broker.stop()


def add_follower(broker: Any, topic: str, leader_epoch: int, in_isr: bool = True) -> int:
    """What a leader change with replicas (this broker, 7) does; returns this broker's id."""
    p: Partition = broker.partitions[(topic, 0)]
    me = p.local_id
    p.make_follower(-1, leader_epoch, 1, (me, FAKE_FOLLOWER), (me,))
    isr = (me, FAKE_FOLLOWER) if in_isr else (me,)
    p.make_leader(leader_epoch, 2, (me, FAKE_FOLLOWER), isr, int(time.time() * 1000))
    return me


def partition_state(broker: Any, topic: str) -> tuple[int, int, list[tuple[int, int]]]:
    p: Partition = broker.partitions[(topic, 0)]
    return p.high_watermark, p.log.log_end_offset, list(p.log.epochs.entries)


def fetch12(conn: KafkaConnection, topic: str, offset: int, *, replica_id: int = -1, last_fetched_epoch: int = -1,
            current_leader_epoch: int = -1, max_wait_ms: int = 0) -> dict[str, Any]:
    body = {"replica_id": replica_id, "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [{
                "partition": 0, "current_leader_epoch": current_leader_epoch, "fetch_offset": offset,
                "last_fetched_epoch": last_fetched_epoch, "log_start_offset": -1,
                "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": ""}
    return fetch_partitions(conn.request(API_FETCH, FETCH_V12, body))[0]


def offsets(records: Any) -> list[tuple[int, int, int]]:
    """(base offset, last offset, leader epoch) per batch."""
    return [(h.base_offset, h.last_offset, h.leader_epoch) for _, h in iter_batch_headers(bytes(records or b""))]


def diverging(part: dict[str, Any]) -> tuple[int, int] | None:
    d = part.get("diverging_epoch") or {}
    epoch, end = d.get("epoch", -1), d.get("end_offset", -1)
    return None if epoch < 0 and end < 0 else (epoch, end)


# --- over the socket --------------------------------------------------------------------------------------

def test_non_replica_follower_fetch_is_not_leader_or_follower(local_broker: InProcessBroker) -> None:
    topic = unique_topic("nonrep")
    with KafkaConnection(local_broker.bootstrap) as c:
        create_topic(c, topic)
        produce(c, topic, batch(3))
        me = local_broker.call(lambda b: b.node_id)
        for replica_id in (NOT_A_REPLICA, me):  # single-node: the only replica is the leader itself
            part = fetch12(c, topic, 0, replica_id=replica_id)
            assert part["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER, replica_id
            assert len(part["records"]) == 0
        assert len(fetch12(c, topic, 0)["records"]) > 0  # a consumer reads on


def test_non_replica_is_refused_before_divergence_and_range_checks(local_broker: InProcessBroker) -> None:
    topic = unique_topic("nonrep-div")
    with KafkaConnection(local_broker.bootstrap) as c:
        create_topic(c, topic)
        produce(c, topic, batch(2))
        local_broker.call(add_follower, topic, 2)
        produce(c, topic, batch(2), acks=1)
        assert fetch12(c, topic, 3, replica_id=NOT_A_REPLICA, last_fetched_epoch=1)["error_code"] \
            == ErrorCode.NOT_LEADER_OR_FOLLOWER
        assert fetch12(c, topic, 99, replica_id=NOT_A_REPLICA)["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER


def test_follower_reads_past_high_watermark_consumer_never_does(local_broker: InProcessBroker) -> None:
    topic = unique_topic("hw")
    with KafkaConnection(local_broker.bootstrap) as c:
        create_topic(c, topic)
        local_broker.call(add_follower, topic, 1)
        for _ in range(3):
            assert produce(c, topic, batch(2), acks=1)["error_code"] == 0
        assert partition_state(local_broker.broker, topic)[:2] == (0, 6)
        consumer = fetch12(c, topic, 0)
        assert (consumer["error_code"], consumer["high_watermark"], len(consumer["records"])) == (0, 0, 0)
        between = fetch12(c, topic, 4)  # between the HW and the log end: empty, not out of range
        assert (between["error_code"], len(between["records"])) == (0, 0)
        assert fetch12(c, topic, 7)["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE

        follower = fetch12(c, topic, 0, replica_id=FAKE_FOLLOWER, last_fetched_epoch=-1)
        assert follower["error_code"] == 0 and follower["high_watermark"] == 0
        assert offsets(follower["records"]) == [(0, 1, 1), (2, 3, 1), (4, 5, 1)]

        partial = fetch12(c, topic, 4, replica_id=FAKE_FOLLOWER, last_fetched_epoch=1)
        assert partial["high_watermark"] == 4 and offsets(partial["records"]) == [(4, 5, 1)]
        assert offsets(fetch12(c, topic, 0)["records"]) == [(0, 1, 1), (2, 3, 1)]  # only below the HW
        assert len(fetch12(c, topic, 4)["records"]) == 0

        caught_up = fetch12(c, topic, 6, replica_id=FAKE_FOLLOWER, last_fetched_epoch=1)
        assert caught_up["high_watermark"] == 6 and len(caught_up["records"]) == 0
        assert offsets(fetch12(c, topic, 0)["records"]) == [(0, 1, 1), (2, 3, 1), (4, 5, 1)]


def test_last_fetched_epoch_older_or_newer_gets_diverging_epoch(local_broker: InProcessBroker) -> None:
    topic = unique_topic("div")
    with KafkaConnection(local_broker.bootstrap) as c:
        create_topic(c, topic)
        produce(c, topic, batch(2))
        produce(c, topic, batch(2))                            # epoch 0: [0, 4)
        local_broker.call(add_follower, topic, 2)
        produce(c, topic, batch(2), acks=1)                    # epoch 2: [4, 6)
        assert partition_state(local_broker.broker, topic)[2] == [(0, 0), (2, 4)]

        def follower_fetch(offset: int, epoch: int) -> dict[str, Any]:
            return fetch12(c, topic, offset, replica_id=FAKE_FOLLOWER, last_fetched_epoch=epoch,
                           current_leader_epoch=2)

        # a follower whose last epoch 1 the leader never had: largest leader epoch <= 1 is 0, ending at 4
        part = follower_fetch(6, 1)
        assert part["error_code"] == 0 and diverging(part) == (0, 4) and len(part["records"]) == 0
        # epoch 0 ends at 4 on the leader: a follower at 5 with last epoch 0 diverges there
        assert diverging(follower_fetch(5, 0)) == (0, 4)
        # the diverging answers did not report a log end: the HW stays where epoch 0 left it
        assert partition_state(local_broker.broker, topic)[0] == 4
        # consistent histories get records, and the HW follows
        part = follower_fetch(4, 0)
        assert diverging(part) is None and offsets(part["records"]) == [(4, 5, 2)]
        assert part["high_watermark"] == 4
        part = follower_fetch(6, 2)
        assert diverging(part) is None and part["high_watermark"] == 6
        # an epoch newer than the leader's latest: Kafka's endOffsetFor is undefined -> (-1, -1),
        # which is the tagged field's default: no records, no divergence, no state update
        part = follower_fetch(6, 3)
        assert diverging(part) is None and len(part["records"]) == 0 and part["error_code"] == 0


def test_stale_current_leader_epoch_is_fenced_for_followers(local_broker: InProcessBroker) -> None:
    topic = unique_topic("fence")
    with KafkaConnection(local_broker.bootstrap) as c:
        create_topic(c, topic)
        local_broker.call(add_follower, topic, 3)
        produce(c, topic, batch(2), acks=1)
        stale = fetch12(c, topic, 0, replica_id=FAKE_FOLLOWER, current_leader_epoch=2)
        assert stale["error_code"] == ErrorCode.FENCED_LEADER_EPOCH
        newer = fetch12(c, topic, 0, replica_id=FAKE_FOLLOWER, current_leader_epoch=4)
        assert newer["error_code"] == ErrorCode.UNKNOWN_LEADER_EPOCH
        # neither reported a log end to the leader
        assert partition_state(local_broker.broker, topic)[0] == 0


# --- long polls through the handler (no socket) -------------------------------------------------------------

class FakeReplication:
    def __init__(self) -> None:
        self.isr_checks = 0

    def isr_check_soon(self) -> None:
        self.isr_checks += 1


class FakeBroker:
    def __init__(self, partition: Partition) -> None:
        self.partitions = {partition.tp: partition}
        self.replication = FakeReplication()

    def not_leader_error(self, topic: str, index: int) -> int:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER


def long_poll_body(offset: int, replica_id: int, last_fetched_epoch: int = -1) -> dict[str, Any]:
    return {"replica_id": replica_id, "max_wait_ms": 30_000, "min_bytes": 1, "max_bytes": 1 << 20,
            "topics": [{"topic": "t", "partitions": [{
                "partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                "last_fetched_epoch": last_fetched_epoch, "partition_max_bytes": 1 << 20}]}]}


async def until_waiting(waiters: list[Any], task: asyncio.Task[Any]) -> None:
    """Yield to the loop until the handler parked on a waiter (bounded: no timing involved)."""
    for _ in range(100):
        if waiters or task.done():
            return
        await asyncio.sleep(0)
    raise AssertionError("the fetch never started waiting")


def leader_with_follower(tmp_path: Path) -> Partition:
    p = Partition("t", 0, Log.open(str(tmp_path / "t-0")), 0, local_id=1, leader=False)
    p.make_leader(0, 0, (1, FAKE_FOLLOWER), (1, FAKE_FOLLOWER), 0)
    return p


def test_follower_long_poll_wakes_on_log_end_consumer_on_high_watermark(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader_with_follower(tmp_path)
        broker = FakeBroker(p)
        handle = fetch_handler.handler(broker)  # type: ignore[arg-type]
        conn = SimpleNamespace(closed=False)
        header = SimpleNamespace(api_version=FETCH_V12)
        follower = asyncio.create_task(handle(conn, header, long_poll_body(0, FAKE_FOLLOWER)))
        consumer = asyncio.create_task(handle(conn, header, long_poll_body(0, -1)))
        await until_waiting(p._end_waiters, follower)
        await until_waiting(p._hw_waiters, consumer)
        assert not follower.done() and not consumer.done()
        p.append_as_leader(batch(2), 0)
        reply = await asyncio.wait_for(follower, 5)  # far below the 30 s long poll: it was woken
        (part,) = reply["responses"][0]["partitions"]
        assert offsets(part["records"]) == [(0, 1, 0)] and part["high_watermark"] == 0
        for _ in range(10):
            await asyncio.sleep(0)
        assert not consumer.done()  # the log end moved, the high watermark did not
        p.on_follower_fetch(FAKE_FOLLOWER, 2, 0)
        reply = await asyncio.wait_for(consumer, 5)
        (part,) = reply["responses"][0]["partitions"]
        assert offsets(part["records"]) == [(0, 1, 0)] and part["high_watermark"] == 2
    asyncio.run(run())


def test_consumer_long_poll_wakes_on_demotion(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader_with_follower(tmp_path)
        handle = fetch_handler.handler(FakeBroker(p))  # type: ignore[arg-type]
        consumer = asyncio.create_task(handle(SimpleNamespace(closed=False), SimpleNamespace(api_version=12),
                                              long_poll_body(0, -1)))
        await until_waiting(p._hw_waiters, consumer)
        p.make_follower(FAKE_FOLLOWER, 1, 1, (1, FAKE_FOLLOWER), (1, FAKE_FOLLOWER))
        reply = await asyncio.wait_for(consumer, 5)
        (part,) = reply["responses"][0]["partitions"]
        assert part["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
    asyncio.run(run())
