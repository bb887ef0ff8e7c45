"""The consumer: seek/position, resets, offsets inside compressed batches, control batches, CRC checks,
leader epochs, against brokerd and (for faults) the scripted fake broker."""

from __future__ import annotations

import asyncio

import pytest
from client_fakebroker import FakeBroker

from client import Consumer, Producer
from client.consumer import _CompletedFetch, _PartitionState
from client.errors import CorruptRecordError, NoOffsetForPartitionError, OffsetOutOfRangeError
from client.wire.errors import ErrorCode
from client.wire.records import CODEC_LZ4, build_batch, set_base_offset

TP = ("c", 0)


async def _produce(bootstrap: str, count: int, topic: str = "c", start: int = 0) -> None:
    async with Producer(bootstrap, compression="lz4", batch_size=2_000, linger_ms=1) as producer:
        await asyncio.gather(*(producer.send(topic, b"%05d" % i + b"x" * 95) for i in range(start, start + count)))


async def _poll_until(consumer: Consumer, count: int, timeout_s: float = 10.0) -> list:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    out: list = []
    while len(out) < count:
        assert loop.time() < deadline, f"{len(out)} of {count} records"
        out += await consumer.poll(timeout_ms=500)
    return out


def test_seek_into_a_compressed_batch_and_position(broker) -> None:
    async def run() -> None:
        await _produce(broker.bootstrap, 200)
        async with Consumer(broker.bootstrap, max_poll_records=30) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 37)  # inside a ~18-record lz4 batch: records below 37 are dropped
            assert await consumer.position(TP) == 37
            records = await _poll_until(consumer, 163)
            assert [r.offset for r in records] == list(range(37, 200))
            assert all(r.value[:5] == b"%05d" % r.offset for r in records)
            assert await consumer.position(TP) == 200
            assert consumer.highwater(TP) == 200
            consumer.seek(TP, 5)
            first = await consumer.poll(timeout_ms=2_000)
            assert first and first[0].offset == 5 and len(first) <= 30

    asyncio.run(run())


def test_seek_to_beginning_end_and_new_records(broker) -> None:
    async def run() -> None:
        await _produce(broker.bootstrap, 50)
        async with Consumer(broker.bootstrap) as consumer:
            consumer.assign([TP])
            consumer.seek_to_end()
            assert await consumer.position(TP) == 50
            assert await consumer.poll(timeout_ms=100) == []
            await _produce(broker.bootstrap, 10, start=50)
            records = await _poll_until(consumer, 10)
            assert [r.offset for r in records] == list(range(50, 60))
            consumer.seek_to_beginning(TP)
            assert await consumer.position(TP) == 0
            assert (await consumer.beginning_offsets([TP]), await consumer.end_offsets([TP])) == ({TP: 0}, {TP: 60})

    asyncio.run(run())


@pytest.mark.parametrize(("reset", "expected_first"), [("earliest", 0), ("latest", 30)])
def test_out_of_range_offsets_are_reset(broker, reset: str, expected_first: int) -> None:
    async def run() -> None:
        await _produce(broker.bootstrap, 30)
        async with Consumer(broker.bootstrap, auto_offset_reset=reset) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, 1_000)
            if reset == "latest":
                assert await consumer.poll(timeout_ms=300) == []
                assert await consumer.position(TP) == 30
                await _produce(broker.bootstrap, 5, start=30)
            records = await _poll_until(consumer, 5)
            assert records[0].offset == expected_first

    asyncio.run(run())


def test_out_of_range_without_reset_raises_until_seek(broker) -> None:
    async def run() -> None:
        await _produce(broker.bootstrap, 10)
        async with Consumer(broker.bootstrap, auto_offset_reset="none") as consumer:
            consumer.assign([TP])
            with pytest.raises(NoOffsetForPartitionError):
                await consumer.poll(timeout_ms=1_000)
            consumer.seek(TP, 500)
            with pytest.raises(OffsetOutOfRangeError) as info:
                for _ in range(20):
                    await consumer.poll(timeout_ms=500)
            assert info.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
            with pytest.raises(OffsetOutOfRangeError):
                await consumer.poll(timeout_ms=10)  # still, until a seek
            consumer.seek(TP, 8)
            assert [r.offset for r in await _poll_until(consumer, 2)] == [8, 9]

    asyncio.run(run())


# --- batch decoding, without a broker --------------------------------------------------------------

def _batch(base_offset: int, values: list[bytes], **kwargs: object) -> bytearray:
    batch = bytearray(build_batch([(None, v, 1_000 + i, None) for i, v in enumerate(values)], **kwargs))
    set_base_offset(batch, base_offset)
    return batch


def _state(position: int) -> _PartitionState:
    state = _PartitionState()
    state.seek(position)
    return state


def test_control_batches_are_skipped_and_the_position_moves_past_them() -> None:
    data = bytes(_batch(0, [b"a", b"b"], compression=CODEC_LZ4) + _batch(2, [b"\x00\x00\x00\x01"], is_control=True,
                                                                           producer_id=7, base_sequence=0)
                 + _batch(3, [b"c"]))
    state = _state(1)
    records, exhausted = _CompletedFetch(TP, state.generation, data).take(10, state, check_crcs=True)
    assert [(r.offset, r.value) for r in records] == [(1, b"b"), (3, b"c")]
    assert exhausted and state.position == 4


def test_a_control_batch_at_the_end_still_moves_the_position() -> None:
    data = bytes(_batch(0, [b"a"]) + _batch(1, [b"\x00\x00\x00\x00"], is_control=True, producer_id=7, base_sequence=0))
    state = _state(0)
    records, _ = _CompletedFetch(TP, state.generation, data).take(10, state, check_crcs=True)
    assert [r.offset for r in records] == [0] and state.position == 2


def test_compaction_gaps_are_skipped() -> None:
    batch = bytearray(build_batch([(b"k1", b"a", 1, None), (b"k2", b"b", 1, None)], offset_deltas=[0, 3],
                                  last_offset_delta=5))
    set_base_offset(batch, 10)
    state = _state(10)
    records, _ = _CompletedFetch(TP, state.generation, bytes(batch)).take(10, state, check_crcs=True)
    assert [r.offset for r in records] == [10, 13] and state.position == 16


def test_crc_mismatch_raises_unless_checks_are_off() -> None:
    batch = _batch(0, [b"value-1", b"value-2"])
    batch[-2] ^= 0xFF  # a bit flip in the last value byte (the last byte is the header count)
    state = _state(0)
    with pytest.raises(CorruptRecordError):
        _CompletedFetch(TP, state.generation, bytes(batch)).take(10, state, check_crcs=True)
    assert state.position == 0
    records, _ = _CompletedFetch(TP, state.generation, bytes(batch)).take(10, state, check_crcs=False)
    assert [r.value for r in records] == [b"value-1", b"value-\xcd"]


def test_a_partial_batch_at_the_end_is_left_for_the_next_fetch() -> None:
    data = bytes(_batch(0, [b"a"]) + _batch(1, [b"b" * 100])[:-10])
    state = _state(0)
    records, exhausted = _CompletedFetch(TP, state.generation, data).take(10, state, check_crcs=True)
    assert [r.offset for r in records] == [0] and exhausted and state.position == 1


# --- faults from the scripted broker -----------------------------------------------------------------

def test_corrupt_batch_from_the_broker_is_refetched_and_raised() -> None:
    async def run() -> None:
        fake = await FakeBroker({"c": 1}).start()
        try:
            async with Producer(fake.bootstrap, linger_ms=1) as producer:
                await producer.send_and_wait("c", b"good")
            good = fake.logs[TP][0]
            corrupt = bytearray(good)
            corrupt[-1] ^= 1
            fake.logs[TP][0] = bytes(corrupt)
            async with Consumer(fake.bootstrap, fetch_max_wait_ms=50) as consumer:
                consumer.assign([TP])
                consumer.seek(TP, 0)
                with pytest.raises(CorruptRecordError):
                    for _ in range(50):
                        await consumer.poll(timeout_ms=200)
                fake.logs[TP][0] = good  # the broker serves it right again: the consumer refetches
                records = await _poll_until(consumer, 1)
                assert [r.value for r in records] == [b"good"]
        finally:
            await fake.stop()

    asyncio.run(run())


def test_fenced_leader_epoch_refreshes_metadata_and_resumes() -> None:
    async def run() -> None:
        fake = await FakeBroker({"c": 1}).start()
        try:
            async with Producer(fake.bootstrap, linger_ms=1) as producer:
                await producer.send_and_wait("c", b"one")
            async with Consumer(fake.bootstrap, fetch_max_wait_ms=50, retry_backoff_ms=10) as consumer:
                consumer.assign([TP])
                consumer.seek(TP, 0)
                assert [r.value for r in await _poll_until(consumer, 1)] == [b"one"]
                metadata_before = fake.count(3)
                fake.leader_epoch = 3  # a new leader epoch: the consumer's Fetch carries 0, so it is fenced
                fake._append(TP, bytes(_batch(0, [b"two"])))
                assert [r.value for r in await _poll_until(consumer, 1)] == [b"two"]
                assert fake.count(3) > metadata_before
                assert consumer.cluster.metadata.leader_epoch(TP) == 3
        finally:
            await fake.stop()

    asyncio.run(run())


@pytest.mark.parametrize("code", [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                  ErrorCode.UNKNOWN_LEADER_EPOCH])
def test_retriable_fetch_errors_are_retried(code: ErrorCode) -> None:
    async def run() -> None:
        fake = await FakeBroker({"c": 1}).start()
        try:
            async with Producer(fake.bootstrap, linger_ms=1) as producer:
                await producer.send_and_wait("c", b"one")
            fake.fetch_errors.extend([code, code])
            async with Consumer(fake.bootstrap, fetch_max_wait_ms=50, retry_backoff_ms=10) as consumer:
                consumer.assign([TP])
                consumer.seek(TP, 0)
                assert [r.value for r in await _poll_until(consumer, 1)] == [b"one"]
                assert not fake.fetch_errors
        finally:
            await fake.stop()

    asyncio.run(run())


def test_the_next_fetch_is_in_flight_while_poll_decodes_the_previous_response() -> None:
    async def run() -> None:
        fake = await FakeBroker({"c": 1}).start()
        try:
            for i in range(3):
                fake._append(TP, bytes(_batch(0, [b"r%d" % i])))
            async with Consumer(fake.bootstrap, fetch_max_wait_ms=50, max_poll_records=1) as consumer:
                consumer.assign([TP])
                consumer.seek(TP, 0)
                assert [r.value for r in await _poll_until(consumer, 1)] == [b"r0"]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while fake.count(1) < 2:  # the second Fetch went out while r1 and r2 are still undecoded
                    assert loop.time() < deadline
                    await asyncio.sleep(0.005)  # poll interval of a condition wait with a deadline
                assert [r.value for r in await _poll_until(consumer, 2)] == [b"r1", b"r2"]
        finally:
            await fake.stop()

    asyncio.run(run())
