"""The load: idempotent acks=all producers and from-the-start consumers, recording the history.

`Producers` runs `count` client `Producer`s (acks="all", enable_idempotence=True). Each sends
values `"{name}-{seq}"` at a paced `rate` (records/s per producer), choosing partitions round-robin
among those with fewer than `in_flight_per_partition_max` records awaiting an outcome, so one
unavailable partition does not stall the others. Every record is `invoke`d in the history before
`send`; its future's outcome becomes `ok` (offset), `fail` (`NotAppendedError`, or not enqueued
at all) or `info` (anything else: `UnknownOutcomeError`, an acknowledged duplicate without an
offset, cancellation).

`Consumers` runs `count` client `Consumer`s, each assigned every partition and positioned at 0
(a `Seek` in the history), recording every polled record, until `drain(targets)` is reached
(each position >= its partition's target) or the deadline passes. Poll errors are counted, not
raised: a consumer that goes back or skips shows up in the checker.

Timeouts are short on purpose (`CLIENT_REQUEST_TIMEOUT_MS`): a paused leader must turn into
retries, not a 30 s stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from client import Consumer, Producer
from client.errors import BufferFullError, ClientError, DeliveryError, KafkaError
from tools.chaos.history import History, Op

log = logging.getLogger(__name__)

CLIENT_REQUEST_TIMEOUT_MS = 3_000
DELIVERY_TIMEOUT_MS = 30_000
RETRY_BACKOFF_MS = 50
RETRY_BACKOFF_MAX_MS = 500
PRODUCER_CLOSE_TIMEOUT_MS = 40_000
POLL_TIMEOUT_MS = 200
ROOM_WAIT_S = 0.1  # re-check the stop flag at least this often while every partition is full


def now() -> float:
    return time.monotonic()


@dataclass
class ProducerWorker:
    name: str
    bootstrap: str
    topic: str
    partitions: int
    history: History
    rate: float
    in_flight_per_partition_max: int = 20
    request_timeout_ms: int = CLIENT_REQUEST_TIMEOUT_MS
    idempotence: bool = True   # False only for canaries: a producer that never waits on a sequence gap
    in_flight: list[int] = field(default_factory=list)
    errors: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.in_flight = [0] * self.partitions
        room = asyncio.Event()
        producer = Producer(self.bootstrap, client_id=f"chaos-{self.name}", acks="all",
                            enable_idempotence=self.idempotence, linger_ms=2,
                            # without idempotence (canaries): hung requests on a demoted leader must
                            # not saturate the connection, so later batches reach the new leader
                            max_in_flight_requests_per_connection=5 if self.idempotence else 100,
                            request_timeout_ms=self.request_timeout_ms,
                            delivery_timeout_ms=DELIVERY_TIMEOUT_MS, retry_backoff_ms=RETRY_BACKOFF_MS,
                            retry_backoff_max_ms=RETRY_BACKOFF_MAX_MS, max_block_ms=DELIVERY_TIMEOUT_MS)
        await producer.start()
        try:
            await self._loop(producer, stop, room)
        finally:
            with contextlib.suppress(KafkaError, ClientError):
                await producer.close(PRODUCER_CLOSE_TIMEOUT_MS)

    async def _loop(self, producer: Producer, stop: asyncio.Event, room: asyncio.Event) -> None:
        interval = 1.0 / self.rate
        next_send = now()
        seq = 0
        turn = 0
        while not stop.is_set():
            bound = self.in_flight_per_partition_max
            open_partitions = [p for p in range(self.partitions) if self.in_flight[p] < bound]
            if not open_partitions:
                room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(room.wait(), ROOM_WAIT_S)
                continue
            partition = open_partitions[turn % len(open_partitions)]
            turn += 1
            op = self.history.invoke(self.name, seq, partition, now())
            seq += 1
            try:
                future = producer.send(self.topic, op.value.encode(), partition=partition)
            except BufferFullError as exc:
                self.history.complete(op, "fail", now(), error=f"not enqueued: {exc}")
                continue
            self.in_flight[partition] += 1
            future.add_done_callback(lambda f, op=op: self._done(op, f, room))
            next_send += interval
            delay = next_send - now()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing of the load, not a synchronisation
            else:
                next_send = now()  # behind schedule: do not burst to catch up
                await asyncio.sleep(0)

    def _done(self, op: Op, future: asyncio.Future[object], room: asyncio.Event) -> None:
        t = now()
        self.in_flight[op.partition] -= 1
        room.set()
        if future.cancelled():
            self.history.complete(op, "info", t, error="cancelled")
            return
        exc = future.exception()
        if exc is None:
            offset = getattr(future.result(), "offset", -1)
            if offset >= 0:
                self.history.complete(op, "ok", t, offset=offset)
            else:
                self.history.complete(op, "info", t, error="acknowledged without an offset (duplicate)")
        elif isinstance(exc, DeliveryError) and exc.definitely_not_appended:
            self.history.complete(op, "fail", t, error=f"{exc.code.name}")
        else:
            self.errors += 1
            code = getattr(exc, "code", None)
            self.history.complete(op, "info", t, error=f"{type(exc).__name__} {getattr(code, 'name', '')}".strip())


@dataclass
class ConsumerWorker:
    name: str
    bootstrap: str
    topic: str
    partitions: int
    history: History
    positions: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, targets: dict[int, int], deadline: list[float]) -> None:
        """Poll until `stop` is set and every position reached `targets` (filled in by the drain),
        or `deadline[0]` (monotonic) passes after `stop`."""
        consumer = Consumer(self.bootstrap, client_id=f"chaos-{self.name}", auto_offset_reset="earliest",
                            fetch_max_wait_ms=POLL_TIMEOUT_MS, request_timeout_ms=CLIENT_REQUEST_TIMEOUT_MS,
                            retry_backoff_ms=RETRY_BACKOFF_MS, retry_backoff_max_ms=RETRY_BACKOFF_MAX_MS)
        await consumer.start()
        try:
            consumer.assign([(self.topic, p) for p in range(self.partitions)])
            for p in range(self.partitions):
                consumer.seek((self.topic, p), 0)
                self.history.seek(self.name, p, 0, now())
                self.positions[p] = 0
            while True:
                reached = bool(targets) and all(self.positions.get(p, 0) >= t for p, t in targets.items())
                if stop.is_set() and (reached or now() > deadline[0]):
                    return
                try:
                    records = await consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                except KafkaError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(RETRY_BACKOFF_MS / 1000)  # back off a failing poll
                    continue
                t = now()
                for r in records:
                    value = r.value.decode(errors="replace") if r.value is not None else None
                    self.history.read(self.name, r.partition, r.offset, value, t)
                    self.positions[r.partition] = r.offset + 1
        finally:
            with contextlib.suppress(KafkaError, ClientError):
                await consumer.close()


async def read_final_logs(bootstrap: str, topic: str, partitions: int, timeout_s: float
                          ) -> tuple[dict[int, dict[int, str | None]], dict[int, int]]:
    """The final log of every partition through the consumer API: [0, high watermark)."""
    final: dict[int, dict[int, str | None]] = {p: {} for p in range(partitions)}
    consumer = Consumer(bootstrap, client_id="chaos-final-reader", auto_offset_reset="earliest",
                        fetch_max_wait_ms=POLL_TIMEOUT_MS, request_timeout_ms=CLIENT_REQUEST_TIMEOUT_MS,
                        default_api_timeout_ms=int(timeout_s * 1000))
    await consumer.start()
    try:
        tps = [(topic, p) for p in range(partitions)]
        ends = {tp[1]: off for tp, off in (await consumer.end_offsets(tps)).items()}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = now() + timeout_s
        positions = dict.fromkeys(range(partitions), 0)
        while any(positions[p] < ends[p] for p in range(partitions)):
            if now() > deadline:
                raise TimeoutError(f"final read: positions {positions}, ends {ends} after {timeout_s} s")
            for r in await consumer.poll(timeout_ms=POLL_TIMEOUT_MS):
                if r.offset < ends[r.partition]:
                    final[r.partition][r.offset] = r.value.decode(errors="replace") if r.value is not None else None
                positions[r.partition] = max(positions[r.partition], r.offset + 1)
        return final, ends
    finally:
        with contextlib.suppress(KafkaError, ClientError):
            await consumer.close()
