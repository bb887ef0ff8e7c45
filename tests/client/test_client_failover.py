"""The clients across a partition leader failover, against two scripted fake brokers that share one
log and one producer state (client_fakebroker.share_state): the producer's retry goes to the new
leader with the same producer id, epoch and sequence numbers (so the new leader deduplicates it),
a leader change cuts a retry's backoff short (KIP-951), `retries` bounds the resends, and the
consumer continues from its position after NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH /
UNKNOWN_LEADER_EPOCH."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from client_fakebroker import FakeBroker, share_state

from client import Consumer, Producer
from client.errors import DeliveryError, NotAppendedError, UnknownOutcomeError
from client.wire.errors import ErrorCode
from client.wire.records import read_header

TP = ("t", 0)
FAST = dict(linger_ms=0, request_timeout_ms=1_000, delivery_timeout_ms=5_000, retry_backoff_ms=20,
            retry_backoff_max_ms=50, connect_timeout_ms=300)
INIT_PRODUCER_ID = 22


def with_two_brokers(test: Callable[[FakeBroker, FakeBroker], Awaitable[None]]) -> None:
    """Node 1 leads every partition at first; node 2 is its in-sync follower."""
    async def run() -> None:
        first, second = FakeBroker({"t": 1}, node_id=1), FakeBroker({"t": 1}, node_id=2)
        share_state(first, second)
        await first.start()
        await second.start()
        try:
            await test(first, second)
        finally:
            await first.stop()
            await second.stop()
    asyncio.run(run())


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)  # poll interval of a condition wait with a deadline


def log_sequences(fake: FakeBroker) -> list[tuple[int, int]]:
    """(producer id, base sequence) of every batch in the shared log, in offset order."""
    return [(h.producer_id, h.base_sequence) for h in map(read_header, fake.logs.get(TP, []))]


def test_not_leader_sends_the_retry_to_the_new_leader_with_the_same_sequence() -> None:
    async def test(old: FakeBroker, new: FakeBroker) -> None:
        async with Producer(old.bootstrap, **FAST) as producer:
            assert (await producer.send_and_wait("t", b"a")).offset == 0
            old.move_leader(TP, new.node_id)  # the client's metadata still names node 1
            assert (await producer.send_and_wait("t", b"b")).offset == 1
            assert (await producer.send_and_wait("t", b"c")).offset == 2
            pid, epoch = producer.producer_id, producer.producer_epoch
        # node 1 refused "b" before appending; the retry went to node 2 with the same identity
        assert old.produced == [(pid, epoch, 0, 1, True), (pid, epoch, 1, 1, False)]
        assert new.produced == [(pid, epoch, 1, 1, True), (pid, epoch, 2, 1, True)]
        # NOT_LEADER_OR_FOLLOWER reset nothing: one producer id, sequences continue
        assert old.count(INIT_PRODUCER_ID) + new.count(INIT_PRODUCER_ID) == 1
        assert log_sequences(old) == [(pid, 0), (pid, 1), (pid, 2)]
    with_two_brokers(test)


def test_a_batch_appended_by_the_old_leader_is_deduplicated_by_the_new_one() -> None:
    async def test(old: FakeBroker, new: FakeBroker) -> None:
        old.dedup = new.dedup = True
        # the old leader appends "a" (replicated: the log is shared), loses leadership and the
        # connection before answering: the outcome is unknown to the producer, which retries
        old.produce_actions.append(("move", new.node_id, "drop"))
        async with Producer(old.bootstrap, **FAST) as producer:
            meta = await producer.send_and_wait("t", b"a")
            after = await producer.send_and_wait("t", b"b")
            pid = producer.producer_id
        assert (meta.offset, after.offset) == (0, 1)  # the original offset: not appended twice
        # a retry may reach node 1 before the refreshed metadata names node 2: it is refused there
        assert old.produced[0][2:] == (0, 1, True) and not any(p[4] for p in old.produced[1:])
        assert [p[2:] for p in new.produced] == [(0, 1, False), (1, 1, True)]  # the retry, deduplicated
        assert log_sequences(old) == [(pid, 0), (pid, 1)]
    with_two_brokers(test)


def test_in_flight_batches_follow_the_leader_in_sequence_order() -> None:
    async def test(old: FakeBroker, new: FakeBroker) -> None:
        old.dedup = new.dedup = True
        # two batches in flight to the old leader; it appends both, then loses leadership and the
        # connection before answering either: both go to the new leader, in order, both deduplicated
        old.produce_actions.extend([("hold", ErrorCode.NONE), ("move", new.node_id, "drop")])
        async with Producer(old.bootstrap, **FAST) as producer:
            first = producer.send("t", b"a")
            await until(lambda: len(old.produced) == 1)
            second = producer.send("t", b"b")
            metas = await asyncio.gather(first, second)
            pid = producer.producer_id
        assert [m.offset for m in metas] == [0, 1]
        assert log_sequences(old) == [(pid, 0), (pid, 1)]
        assert [p[2:] for p in new.produced] == [(0, 1, False), (1, 1, False)]
    with_two_brokers(test)


def test_a_leader_change_cuts_the_retry_backoff_short() -> None:
    async def test(old: FakeBroker, new: FakeBroker) -> None:
        # four refusals grow the backoff to 800 ms, then to 1600 ms with the fifth, right behind
        # which the leadership moves: the retry goes to the new leader once the metadata shows it
        old.produce_actions.extend([ErrorCode.NOT_ENOUGH_REPLICAS] * 4
                                   + [("move", new.node_id, ErrorCode.NOT_ENOUGH_REPLICAS)])
        config = {**FAST, "retry_backoff_ms": 100, "retry_backoff_max_ms": 10_000, "delivery_timeout_ms": 20_000}
        loop = asyncio.get_running_loop()
        async with Producer(old.bootstrap, **config) as producer:
            future = producer.send("t", b"a")
            await until(lambda: len(old.produced) == 5, timeout_s=10)
            moved_at = loop.time()
            meta = await future
            waited = loop.time() - moved_at
        assert meta.offset == 0 and [p[4] for p in new.produced] == [True]
        assert waited < 1.0, f"the retry waited {waited:.2f} s: the 1.6 s backoff was not cut short"
    with_two_brokers(test)


@pytest.mark.parametrize(("action", "expected"), [
    (ErrorCode.NOT_ENOUGH_REPLICAS, NotAppendedError),
    (("append", ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND), UnknownOutcomeError),
    ("drop", UnknownOutcomeError),
])
def test_retries_bound_the_resends(action: Any, expected: type[DeliveryError]) -> None:
    async def test(fake: FakeBroker, _: FakeBroker) -> None:
        fake.produce_actions.extend([action] * 100)
        async with Producer(fake.bootstrap, **{**FAST, "retries": 2}) as producer:
            try:
                await producer.send_and_wait("t", b"v")
            except DeliveryError as exc:
                error = exc
        assert type(error) is expected and error.attempts == 3 and len(fake.produced) == 3
    with_two_brokers(test)


def test_retries_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="retries"):
        Producer(retries=-1)
    with pytest.raises(ValueError, match="retries > 0"):
        Producer(retries=0, enable_idempotence=True)
    assert not Producer(retries=0).idempotent  # as Java: idempotence needs retries


async def consume_offsets(consumer: Consumer, count: int, timeout_s: float = 10.0) -> list[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    offsets: list[int] = []
    while len(offsets) < count:
        left_ms = int((deadline - loop.time()) * 1000)
        assert left_ms > 0, f"only {offsets} within {timeout_s} s"
        offsets += [r.offset for r in await consumer.poll(timeout_ms=min(left_ms, 500))]
    return offsets


def test_consumer_follows_the_leader_from_its_position() -> None:
    async def test(old: FakeBroker, new: FakeBroker) -> None:
        async with Producer(old.bootstrap, **FAST) as producer:
            for i in range(3):
                await producer.send_and_wait("t", b"%d" % i)
            async with Consumer(old.bootstrap, fetch_max_wait_ms=50, retry_backoff_ms=20,
                                retry_backoff_max_ms=50) as consumer:
                consumer.assign([TP])
                consumer.seek(TP, 0)
                assert await consume_offsets(consumer, 3) == [0, 1, 2]
                fetches_before = new.count(1)
                # the consumer's next fetch at node 1 gets NOT_LEADER_OR_FOLLOWER (or, at node 2
                # with the old epoch, FENCED_LEADER_EPOCH): it refreshes and goes on from offset 3
                old.move_leader(TP, new.node_id)
                for i in range(3, 5):
                    await producer.send_and_wait("t", b"%d" % i)
                assert await consume_offsets(consumer, 2) == [3, 4]
                assert await consumer.position(TP) == 5
                assert new.count(1) > fetches_before
    with_two_brokers(test)


@pytest.mark.parametrize("code", [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH,
                                  ErrorCode.UNKNOWN_LEADER_EPOCH])
def test_consumer_keeps_its_position_across_leader_errors(code: ErrorCode) -> None:
    async def test(fake: FakeBroker, _: FakeBroker) -> None:
        async with Producer(fake.bootstrap, **FAST) as producer:
            for i in range(4):
                await producer.send_and_wait("t", b"%d" % i)
        async with Consumer(fake.bootstrap, fetch_max_wait_ms=50, retry_backoff_ms=20,
                            retry_backoff_max_ms=50) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 2)
            metadata_before = fake.count(3)
            fake.fetch_errors.extend([code] * 3)
            assert await consume_offsets(consumer, 2) == [2, 3]  # nothing skipped, nothing repeated
            assert not fake.fetch_errors
            assert fake.count(3) > metadata_before  # each error asked for fresh metadata
    with_two_brokers(test)
