"""The delivery-outcome contract (RELIABILITY.md "The history a test records") and the idempotent
producer's retry rules, against the scripted fake broker: each Produce answer is chosen by the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from brokerproc import free_port
from client_fakebroker import FakeBroker

from client import Producer
from client.errors import DeliveryError, NotAppendedError, UnknownOutcomeError
from client.wire.errors import ErrorCode

FAST = dict(linger_ms=0, request_timeout_ms=500, delivery_timeout_ms=1_500, retry_backoff_ms=20,
            retry_backoff_max_ms=50, connect_timeout_ms=300)


def with_fake(test: Callable[[FakeBroker], Awaitable[None]], **topics: int) -> None:
    async def run() -> None:
        fake = await FakeBroker(topics or {"t": 1}).start()
        try:
            await test(fake)
        finally:
            await fake.stop()
    asyncio.run(run())


async def outcome(producer: Producer, value: bytes = b"v") -> Any:
    try:
        return await producer.send_and_wait("t", value)
    except DeliveryError as exc:
        return exc


def test_retry_after_retriable_pre_append_errors_keeps_the_sequence() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.extend([ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.NOT_LEADER_OR_FOLLOWER, "ok"])
        async with Producer(fake.bootstrap, **FAST) as producer:
            metadata_before = fake.count(3)
            meta = await producer.send_and_wait("t", b"v")
        assert meta.offset == 0
        assert [(p[2], p[3]) for p in fake.produced] == [(0, 1)] * 3  # same base sequence every attempt
        assert len({p[0] for p in fake.produced}) == 1 and fake.produced[0][0] > 0
        assert fake.count(3) > metadata_before  # NOT_LEADER_OR_FOLLOWER refreshed the metadata
    with_fake(test)


def test_non_retriable_refusal_is_not_appended_after_one_attempt() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.append(ErrorCode.INVALID_RECORD)
        async with Producer(fake.bootstrap, **FAST) as producer:
            error = await outcome(producer)
        assert isinstance(error, NotAppendedError) and error.definitely_not_appended
        assert error.code == ErrorCode.INVALID_RECORD and error.attempts == 1
        assert len(fake.produced) == 1
    with_fake(test)


def test_retriable_refusals_until_the_deadline_are_not_appended() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.extend([ErrorCode.NOT_ENOUGH_REPLICAS] * 1_000)
        async with Producer(fake.bootstrap, **FAST) as producer:
            started = time.monotonic()
            error = await outcome(producer)
            elapsed = time.monotonic() - started
        assert isinstance(error, NotAppendedError) and error.code == ErrorCode.NOT_ENOUGH_REPLICAS
        assert error.attempts > 3 and elapsed < 1.5 + 0.5
        assert not any(appended for *_, appended in fake.produced)
    with_fake(test)


@pytest.mark.parametrize("after_append", [("append", ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND),
                                          ("append", ErrorCode.REQUEST_TIMED_OUT)])
def test_after_append_errors_make_the_outcome_unknown(after_append: tuple) -> None:
    async def test(fake: FakeBroker) -> None:
        # one after-append answer, then only pre-append refusals: still unknown (an earlier attempt may be in)
        fake.produce_actions.extend([after_append] + [ErrorCode.NOT_ENOUGH_REPLICAS] * 1_000)
        async with Producer(fake.bootstrap, **FAST) as producer:
            error = await outcome(producer)
        assert isinstance(error, UnknownOutcomeError) and not error.definitely_not_appended
        assert error.code == ErrorCode.NOT_ENOUGH_REPLICAS  # the last attempt's code
        assert fake.produced[0][4]  # and indeed the fake appended it
    with_fake(test)


def test_connection_lost_after_the_request_is_retried_with_the_same_sequence() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.extend(["drop", "ok"])
        async with Producer(fake.bootstrap, **FAST) as producer:
            meta = await producer.send_and_wait("t", b"v")
        assert meta.offset == 1  # the fake does not deduplicate: the first attempt is at offset 0
        assert [p[2] for p in fake.produced] == [0, 0]
    with_fake(test)


def test_connection_lost_until_the_deadline_is_unknown() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.extend(["drop"] * 1_000)
        async with Producer(fake.bootstrap, **FAST) as producer:
            error = await outcome(producer)
        assert isinstance(error, UnknownOutcomeError) and error.code == ErrorCode.NETWORK_EXCEPTION
    with_fake(test)


def test_no_answer_is_unknown_within_the_delivery_timeout() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.extend(["hang"] * 1_000)
        async with Producer(fake.bootstrap, **FAST) as producer:
            started = time.monotonic()
            error = await outcome(producer)
            elapsed = time.monotonic() - started
        assert isinstance(error, UnknownOutcomeError)
        assert error.code == ErrorCode.REQUEST_TIMED_OUT
        assert elapsed < 1.5 + 0.5
    with_fake(test)


def test_records_never_sent_are_not_appended() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.advertised_port = free_port()  # bootstrap answers, the partition leader cannot be reached
        async with Producer(fake.bootstrap, **FAST) as producer:
            started = time.monotonic()
            error = await outcome(producer, b"never-sent")
            elapsed = time.monotonic() - started
        assert isinstance(error, NotAppendedError) and error.attempts == 0
        assert error.code == ErrorCode.REQUEST_TIMED_OUT and elapsed < 1.5 + 0.5
        assert not fake.produced
    with_fake(test)


def test_out_of_order_for_the_next_expected_batch_fails_and_resets_the_producer_id() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.append(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        async with Producer(fake.bootstrap, **FAST) as producer:
            error = await outcome(producer, b"a")
            first_id = fake.produced[0][0]
            meta = await producer.send_and_wait("t", b"b")
        assert isinstance(error, NotAppendedError) and error.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert meta.offset == 0
        assert fake.count(22) == 2  # a new InitProducerId after the sequence gap
        assert fake.produced[1][0] != first_id and fake.produced[1][2] == 0
    with_fake(test)


def test_unknown_producer_id_resets_the_id_and_retries() -> None:
    async def test(fake: FakeBroker) -> None:
        fake.produce_actions.append(ErrorCode.UNKNOWN_PRODUCER_ID)
        async with Producer(fake.bootstrap, **FAST) as producer:
            meta = await producer.send_and_wait("t", b"a")
        assert meta.offset == 0
        assert fake.count(22) == 2
        (old_id, _, old_seq, *_), (new_id, _, new_seq, *_) = fake.produced
        assert old_id != new_id and old_seq == new_seq == 0
    with_fake(test)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)  # poll interval of a condition wait with a deadline


def test_a_later_batch_after_a_failed_one_is_retried_in_order() -> None:
    async def test(fake: FakeBroker) -> None:
        # two batches in flight: the first gets a retriable error, the second is refused out of order
        # (as a broker with producer state does, the first not being written); both are retried, in order
        fake.produce_actions.extend([("hold", ErrorCode.NOT_ENOUGH_REPLICAS), ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER])
        async with Producer(fake.bootstrap, **FAST) as producer:
            first = producer.send("t", b"a")
            await until(lambda: len(fake.produced) == 1)
            second = producer.send("t", b"b")
            await until(lambda: len(fake.produced) == 2)
            fake.release()
            metas = await asyncio.gather(first, second)
        assert [m.offset for m in metas] == [0, 1]
        assert [(p[2], p[4]) for p in fake.produced] == [(0, False), (1, False), (0, True), (1, True)]
    with_fake(test)


def test_flush_waits_for_every_record_and_close_delivers_the_rest() -> None:
    async def test(fake: FakeBroker) -> None:
        producer = Producer(fake.bootstrap, linger_ms=10_000, delivery_timeout_ms=60_000)
        await producer.start()
        futures = [producer.send("t", b"%d" % i) for i in range(100)]
        await producer.flush()  # linger would hold them for 10 s; flush sends now
        assert all(f.done() and not f.exception() for f in futures)
        late = producer.send("t", b"late")
        await producer.close()
        assert (await late).offset == 100
    with_fake(test)


def test_flexible_versions_above_brokerd_are_negotiated_and_spoken() -> None:
    """A broker advertising newer versions: the client uses its own maxima (Produce 12, Metadata 12,
    InitProducerId 5, Fetch 12) and a produce/consume round trip works in those encodings."""
    from client import Consumer
    from client.cluster import CLIENT_API_VERSIONS

    advertised = {0: (3, 13), 1: (4, 18), 3: (0, 13), 18: (0, 4), 22: (0, 6)}

    async def run() -> None:
        fake = await FakeBroker({"t": 1}, advertised=advertised).start()
        try:
            async with Producer(fake.bootstrap, **FAST) as producer:
                meta = await producer.send_and_wait("t", b"flex", key=b"k", headers=[("h", b"v")])
            async with Consumer(fake.bootstrap, fetch_max_wait_ms=50) as consumer:
                consumer.assign([("t", 0)])
                consumer.seek(("t", 0), 0)
                records = []
                while not records:
                    records = await consumer.poll(timeout_ms=2_000)
            assert meta.offset == 0 and (records[0].value, records[0].headers) == (b"flex", (("h", b"v"),))
            used = {key: max(v for k, v in fake.requests if k == key) for key, _ in fake.requests}
            assert used == {18: 3, 3: CLIENT_API_VERSIONS[3][1], 22: CLIENT_API_VERSIONS[22][1],
                            0: CLIENT_API_VERSIONS[0][1], 1: CLIENT_API_VERSIONS[1][1]}
        finally:
            await fake.stop()

    asyncio.run(run())
