"""The producer against a real brokerd: round trips, acks, idempotent batches on disk, backpressure,
MESSAGE_TOO_LARGE, unknown topics, and the outcome of every send when the broker is killed."""

from __future__ import annotations

import asyncio
import time

import pytest
from client_helpers import consume, log_dump

from client import Admin, BufferFullError, ClientClosedError, DeliveryError, NotAppendedError, Producer
from client.errors import UnknownOutcomeError
from client.wire.errors import ErrorCode

TS = 1_700_000_000_000


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_round_trip_keys_null_keys_headers_timestamps(broker, compression: str) -> None:
    sends = [
        dict(value=b"v0", key=b"k0"),
        dict(value=b"v1", key=None),
        dict(value=None, key=b"tombstone-key"),
        dict(value=b"v3", key=b"k3", headers=[("h", b"v"), ("empty", b""), ("null", None), ("\u00e9", b"\xff")]),
        dict(value=b"v4", key=b"k4", timestamp_ms=TS + 4),
        dict(value=b"x" * 10_000, key=b"big"),
        *[dict(value=f"bulk-{i}".encode(), key=f"k{i % 10}".encode()) for i in range(300)],
    ]

    async def run() -> None:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("rt", partitions=3)
        async with Producer(broker.bootstrap, compression=compression, linger_ms=2) as producer:
            futures = [producer.send("rt", **s) for s in sends]
            metas = await asyncio.gather(*futures)
            last = await producer.send_and_wait("rt", b"last")
        assert last.offset >= 0
        records = await consume(broker.bootstrap, [("rt", p) for p in range(3)], len(sends) + 1)
        by_place = {(r.partition, r.offset): r for r in records}
        assert len(by_place) == len(sends) + 1
        for send, meta in zip(sends, metas):
            record = by_place[(meta.partition, meta.offset)]
            assert (record.topic, record.key, record.value) == ("rt", send["key"], send["value"])
            assert record.headers == tuple(send.get("headers") or ())
            assert record.timestamp == meta.timestamp
            if "timestamp_ms" in send:
                assert record.timestamp == TS + 4
        # per partition: offsets in send order
        for partition in range(3):
            offsets = [m.offset for m in metas if m.partition == partition]
            assert offsets == sorted(offsets)

    asyncio.run(run())


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks(broker, acks: int | str) -> None:
    async def run() -> None:
        async with Producer(broker.bootstrap, acks=acks, linger_ms=1) as producer:
            metas = await asyncio.gather(*(producer.send("acks", f"{i}".encode()) for i in range(50)))
            assert producer.idempotent == (acks == "all")
        if acks == 0:
            assert {m.offset for m in metas} == {-1}
        else:
            assert [m.offset for m in metas] == list(range(50))
        records = await consume(broker.bootstrap, [("acks", 0)], 50)
        assert [r.value for r in records] == [f"{i}".encode() for i in range(50)]

    asyncio.run(run())


def test_log_append_time_topics_report_the_broker_time(broker) -> None:
    async def run() -> None:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("lat", partitions=1, configs={"message.timestamp.type": "LogAppendTime"})
        async with Producer(broker.bootstrap) as producer:
            meta = await producer.send_and_wait("lat", b"v", timestamp_ms=TS)
        assert meta.timestamp > TS + 10_000_000
        [record] = await consume(broker.bootstrap, [("lat", 0)], 1)
        assert record.timestamp == meta.timestamp

    asyncio.run(run())


def test_idempotent_batches_carry_producer_id_and_contiguous_sequences(broker) -> None:
    async def run() -> tuple[int, int]:
        async with Producer(broker.bootstrap, batch_size=2_000, linger_ms=1, compression="lz4") as idempotent:
            await asyncio.gather(*(idempotent.send("idem", b"x" * 100) for i in range(500)))
            producer_id = idempotent.producer_id
        async with Producer(broker.bootstrap, acks=1) as plain:
            await plain.send_and_wait("plain", b"y")
        return producer_id, 500

    producer_id, count = asyncio.run(run())
    assert producer_id >= 0
    broker.stop()
    batches = log_dump(broker.data_dir, "idem")
    assert len(batches) > 5  # several batches, so sequences are checked across batches
    assert {(b["producer_id"], b["producer_epoch"]) for b in batches} == {(producer_id, 0)}
    expected = 0
    for batch in batches:
        assert batch["base_sequence"] == expected == batch["base_offset"]
        expected += batch["count"]
    assert expected == count
    [plain] = log_dump(broker.data_dir, "plain")
    assert (plain["producer_id"], plain["base_sequence"]) == (-1, -1)


def test_send_raises_buffer_full_and_send_when_ready_waits(broker) -> None:
    async def run() -> None:
        async with Producer(broker.bootstrap, buffer_memory=32_768, batch_size=4_096, linger_ms=1) as producer:
            await producer.send_and_wait("bp", b"warm-up")  # metadata known: send is the pure enqueue path
            futures = []
            with pytest.raises(BufferFullError):
                for i in range(10_000):  # never yields: the sender cannot free anything
                    futures.append(producer.send("bp", b"%06d" % i + b"x" * 94))
            full_at = len(futures)
            assert 100 < full_at < 400  # ~32 KiB of ~120-byte records
            for i in range(full_at, 3_000):
                futures.append(await producer.send_when_ready("bp", b"%06d" % i + b"x" * 94))
            metas = await asyncio.gather(*futures)
        assert [m.offset for m in metas] == list(range(1, 3_001))

    asyncio.run(run())


def test_message_too_large_fails_only_the_large_record(start_broker) -> None:
    broker = start_broker()

    async def run() -> None:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("small", partitions=1, configs={"max.message.bytes": "1500"})
        async with Producer(broker.bootstrap, linger_ms=50, compression="none") as producer:
            small = [producer.send("small", b"%03d" % i + b"s" * 97) for i in range(40)]  # one ~5 KB batch: split
            big = producer.send("small", b"b" * 5_000)
            metas = await asyncio.gather(*small)
            with pytest.raises(NotAppendedError) as info:
                await big
        assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE and info.value.definitely_not_appended
        assert [m.offset for m in metas] == list(range(40))
        records = await consume(broker.bootstrap, [("small", 0)], 40)
        assert [r.value[:3] for r in records] == [b"%03d" % i for i in range(40)]

    asyncio.run(run())


def test_unknown_topic_and_partition_fail_as_not_appended(start_broker) -> None:
    broker = start_broker("--set", "auto.create.topics.enable=false")

    async def run() -> None:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("known", partitions=2)
        async with Producer(broker.bootstrap, max_block_ms=300) as producer:
            started = time.monotonic()
            with pytest.raises(NotAppendedError) as info:
                await producer.send("unknown-topic", b"v")
            assert time.monotonic() - started < 5
            assert "not in metadata" in str(info.value)
            await producer.send_and_wait("known", b"v")
            with pytest.raises(NotAppendedError) as info:
                await producer.send("known", b"v", partition=2)
            assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    asyncio.run(run())


def test_a_closed_producer_refuses_sends(broker) -> None:
    async def run() -> None:
        producer = Producer(broker.bootstrap)
        with pytest.raises(ClientClosedError):
            producer.send("t", b"v")
        await producer.start()
        await producer.close()
        with pytest.raises(ClientClosedError):
            producer.send("t", b"v")

    asyncio.run(run())


def test_broker_killed_mid_send_every_send_is_ok_or_says_its_outcome(broker) -> None:
    """SIGKILL while sending: every future resolves within delivery_timeout_ms; failures say
    NotAppended (and are then absent from the log) or UnknownOutcome; acknowledged records survive."""
    delivery_timeout_ms = 2_500

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("kill", partitions=2)
        producer = Producer(broker.bootstrap, linger_ms=5, batch_size=4_096, request_timeout_ms=1_000,
                            delivery_timeout_ms=delivery_timeout_ms, retry_backoff_ms=50, retry_backoff_max_ms=200,
                            connect_timeout_ms=300)
        await producer.start()
        sent: list[tuple[bytes, float, asyncio.Future]] = []
        resolved: dict[bytes, float] = {}

        async def send(i: int) -> None:
            value = b"v-%06d" % i
            future = await producer.send_when_ready("kill", value, key=value)
            future.add_done_callback(lambda _f, v=value: resolved.__setitem__(v, loop.time()))
            sent.append((value, loop.time(), future))

        for i in range(3_000):
            await send(i)
        await sent[1_000][2]  # a condition, not a sleep: a good part is acknowledged
        broker.kill()
        for i in range(3_000, 3_500):  # sent while the broker is gone: fail or info (the first may be written
            await send(i)              # to the dead socket before the client sees it close), never ok
        _, pending = await asyncio.wait([f for _, _, f in sent], timeout=delivery_timeout_ms / 1000 + 5)
        assert not pending, f"{len(pending)} sends still unresolved past delivery_timeout_ms"
        for value, sent_at, _future in sent:
            assert resolved[value] - sent_at <= delivery_timeout_ms / 1000 + 1.0, value
        outcomes: dict[str, list[tuple[bytes, object]]] = {"ok": [], "fail": [], "info": []}
        for value, _, future in sent:
            error = future.exception()
            if error is None:
                outcomes["ok"].append((value, future.result()))
            else:
                assert isinstance(error, DeliveryError), repr(error)
                key = "fail" if error.definitely_not_appended else "info"
                assert isinstance(error, NotAppendedError if key == "fail" else UnknownOutcomeError)
                outcomes[key].append((value, error))
        assert len(outcomes["ok"]) > 1_000 and len(outcomes["fail"]) > 100
        assert not any(value >= b"v-003000" for value, _ in outcomes["ok"])
        broker.start()
        meta = await producer.send_and_wait("kill", b"after-restart")  # the same producer reconnects
        assert meta.offset >= 0
        await producer.close()
        expected = len(outcomes["ok"]) + 1
        records = await consume(broker.bootstrap, [("kill", 0), ("kill", 1)], expected, timeout_s=20)
        by_place = {(r.partition, r.offset): r.value for r in records}
        values = set(by_place.values())
        for value, meta in outcomes["ok"]:
            assert by_place.get((meta.partition, meta.offset)) == value  # acknowledged: kept, at its offset
        for value, _ in outcomes["fail"]:
            assert value not in values  # "definitely not appended" is true

    asyncio.run(run())


def test_broker_restarted_mid_send_pending_sends_succeed(broker) -> None:
    async def run() -> None:
        async with Producer(broker.bootstrap, linger_ms=5, batch_size=4_096, request_timeout_ms=2_000,
                            delivery_timeout_ms=30_000, retry_backoff_ms=50, retry_backoff_max_ms=200,
                            connect_timeout_ms=500) as producer:
            futures = [await producer.send_when_ready("restart", b"r-%05d" % i) for i in range(2_000)]
            await futures[500]
            broker.kill()
            futures += [producer.send("restart", b"r-%05d" % i) for i in range(2_000, 2_200)]
            broker.start()
            metas = await asyncio.gather(*futures)  # nothing fails: all within delivery_timeout_ms
        records = await consume(broker.bootstrap, [("restart", 0)], len(metas))
        by_offset = {r.offset: r.value for r in records}
        for i, meta in enumerate(metas):
            assert by_offset[meta.offset] == b"r-%05d" % i

    asyncio.run(run())
