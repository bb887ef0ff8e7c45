"""Per-partition batching of produced records, bounded by `buffer_memory`.

Who calls it: `Producer.send` appends (the hot path: a few dict lookups and list appends per
record, no encoding); the producer's sender drains whole batches and encodes each one once with
client.wire.records.build_batch.

Contract and bounds:
- One queue of `ProducerBatch` per partition, oldest first. Records go into the last batch while
  it is open and the batch's estimated size stays within `batch_size` bytes; a record larger than
  `batch_size` gets a batch of its own. A batch is *closed* (no more appends) once drained, so a
  retried batch is resent with exactly the records (and sequence numbers) it had.
- A batch is ready to send when it is full (another batch follows it, or it reached
  `batch_size`), when it has waited `linger_ms`, when a flush or close is in progress, or when it
  is a retry whose backoff has passed.
- Memory: every record's estimated size (plus BATCH_OVERHEAD_BYTES per batch) is reserved in
  `buffered_bytes` on append and released when its batch completes (acknowledged or failed).
  `has_room(size)` is the backpressure check: `buffered_bytes + size <= buffer_memory`;
  `wait_for_room` waits for releases, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import Any

from client.record import TopicPartition
from client.wire.records import HEADER_SIZE, NO_SEQUENCE

__all__ = ["BATCH_OVERHEAD_BYTES", "RECORD_OVERHEAD_BYTES", "ProducerBatch", "RecordAccumulator"]

# Upper bound of a record's framing inside a batch (length, attributes, timestamp/offset deltas,
# key/value lengths, header count: varints of at most 5 or 10 bytes); keeps the size estimate an
# overestimate, so an uncompressed batch never exceeds batch_size + BATCH_OVERHEAD_BYTES.
RECORD_OVERHEAD_BYTES = 21
BATCH_OVERHEAD_BYTES = HEADER_SIZE


class ProducerBatch:
    """Records of one partition sent (and retried) together. `records` is build_batch's input."""

    __slots__ = ("attempts", "base_sequence", "closed", "created_ms", "deadline_ms", "done_future", "encoded",
                 "futures", "last_error", "leader_epoch", "maybe_appended", "partition", "producer_epoch",
                 "producer_id", "records", "retry_at_ms", "size_bytes", "topic", "tp")

    def __init__(self, tp: TopicPartition, created_ms: int, deadline_ms: int,
                 done_future: asyncio.Future[None]) -> None:
        self.tp = tp
        self.topic, self.partition = tp
        self.records: list[tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.size_bytes = BATCH_OVERHEAD_BYTES
        self.created_ms = created_ms
        self.deadline_ms = deadline_ms
        self.done_future = done_future
        self.closed = False
        self.attempts = 0
        self.retry_at_ms = 0
        # The partition's leader epoch (from the metadata) when the batch was last sent, -1 before:
        # a retry waiting out its backoff goes at once when the metadata shows a newer epoch.
        self.leader_epoch = -1
        # True once any attempt may have been appended (written and then lost, or answered with an
        # after-append error): from then on a failure is UnknownOutcomeError.
        self.maybe_appended = False
        self.last_error: BaseException | None = None
        self.encoded: bytes | None = None
        self.producer_id = -1
        self.producer_epoch = -1
        self.base_sequence = NO_SEQUENCE

    @property
    def record_count(self) -> int:
        return len(self.records)

    @property
    def done(self) -> bool:
        return self.done_future.done()

    def __repr__(self) -> str:
        return (f"ProducerBatch({self.topic}-{self.partition}, {len(self.records)} records, {self.size_bytes} B, "
                f"attempts={self.attempts}, seq={self.base_sequence})")


class RecordAccumulator:
    """See the module docstring."""

    def __init__(self, *, batch_size: int, linger_ms: int, buffer_memory: int, delivery_timeout_ms: int) -> None:
        if batch_size < 1 or buffer_memory < batch_size:
            raise ValueError("need 1 <= batch_size <= buffer_memory")
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.buffer_memory = buffer_memory
        self.delivery_timeout_ms = delivery_timeout_ms
        self.queues: dict[TopicPartition, deque[ProducerBatch]] = {}
        self.buffered_bytes = 0
        self._loop = asyncio.get_running_loop()
        self._room_waiters: deque[asyncio.Future[None]] = deque()

    # ------------------------------------------------------------------ appending (hot path)
    def append(self, tp: TopicPartition, record: tuple[Any, ...], future: asyncio.Future[Any], size: int,
               now_ms: int) -> bool:
        """Add one record (size already checked against memory). True when a new batch was started."""
        queue = self.queues.get(tp)
        if queue:
            batch = queue[-1]
            if not batch.closed and batch.size_bytes + size <= self.batch_size:
                batch.records.append(record)
                batch.futures.append(future)
                batch.size_bytes += size
                self.buffered_bytes += size
                return False
        else:
            queue = self.queues[tp] = deque()
        batch = ProducerBatch(tp, now_ms, now_ms + self.delivery_timeout_ms, self._loop.create_future())
        batch.records.append(record)
        batch.futures.append(future)
        batch.size_bytes += size
        self.buffered_bytes += size + BATCH_OVERHEAD_BYTES
        queue.append(batch)
        return True

    def has_room(self, size: int) -> bool:
        return self.buffered_bytes + size <= self.buffer_memory

    async def wait_for_room(self, size: int, deadline: float) -> bool:
        """Wait until `size` bytes fit or the loop time passes `deadline`; returns whether they fit."""
        while not self.has_room(size):
            left = deadline - self._loop.time()
            if left <= 0:
                return False
            waiter = self._loop.create_future()
            self._room_waiters.append(waiter)
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                return self.has_room(size)
        return True

    def release(self, batch: ProducerBatch) -> None:
        """Give back a completed batch's memory and wake senders waiting for room."""
        self.buffered_bytes -= batch.size_bytes
        assert self.buffered_bytes >= 0, "buffer accounting went negative"
        waiters = self._room_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ draining (sender)
    def is_ready(self, queue: deque[ProducerBatch], now_ms: int, flushing: bool) -> tuple[bool, int]:
        """(head batch sendable now, loop time in ms when it will be if not)."""
        head = queue[0]
        if head.closed:  # a retry
            return head.retry_at_ms <= now_ms, head.retry_at_ms
        if flushing or len(queue) > 1 or head.size_bytes >= self.batch_size:
            return True, now_ms
        ready_at = head.created_ms + self.linger_ms
        return ready_at <= now_ms, ready_at

    def requeue(self, batch: ProducerBatch) -> None:
        """Put a retried batch back before every batch that has not been sent (sequence order kept)."""
        queue = self.queues.get(batch.tp)
        if queue is None:
            queue = self.queues[batch.tp] = deque()
        index = 0
        for index, queued in enumerate(queue):  # noqa: B007 - the position is the result
            if not queued.closed or (batch.base_sequence >= 0 and queued.base_sequence > batch.base_sequence):
                break
        else:
            index = len(queue)
        queue.insert(index, batch)

    def batches(self) -> Iterator[ProducerBatch]:
        for queue in self.queues.values():
            yield from queue

    def drop_empty_queues(self) -> None:
        for tp in [tp for tp, queue in self.queues.items() if not queue]:
            del self.queues[tp]
