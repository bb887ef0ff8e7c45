"""The asyncio producer: `send` enqueues, a sender task batches, sends, retries and reports outcomes.

    async with Producer("127.0.0.1:9092", acks="all", compression="lz4", linger_ms=5) as producer:
        future = producer.send("orders", b"value", key=b"k", headers=[("h", b"v")])
        meta = await future                       # RecordMetadata(topic, partition, offset, timestamp)
        meta = await producer.send_and_wait("orders", b"v2")
        await producer.flush()

`send` is a plain method: it checks the record, picks the partition (partitioner.py), reserves
buffer memory and appends to the accumulator, then returns an asyncio future; it never waits.
When `buffer_memory` is full it raises BufferFullError; `await send_when_ready(...)` instead waits
(up to `max_block_ms`) for room and then enqueues. `send_and_wait` is send_when_ready + await.

The sender task (one per producer):
1. fails batches past `delivery_timeout_ms` (never-sent batches: NotAppendedError; sent ones:
   UnknownOutcomeError), places records that waited for their topic's metadata (bounded by
   `max_block_ms`);
2. with idempotence, obtains a producer id (InitProducerId) before sending anything;
3. drains ready batches (accumulator.py) grouped by partition leader, one batch per partition
   per Produce request, requests up to `max_request_size`, at most
   `max_in_flight_requests_per_connection` requests per connection;
4. handles each response: success completes every record's future; a retriable error (and a
   connection lost with the request) requeues the batch (same records, same producer id, epoch
   and sequence numbers) after `retry_backoff_ms` doubling up to `retry_backoff_max_ms`, and
   asks for a metadata refresh; NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH and
   LEADER_NOT_AVAILABLE also drop the cached leader, so nothing more goes to that broker until
   the refresh names one. A waiting retry goes at once when the metadata shows its partition
   under a newer leader epoch than it was sent under (KIP-951: the backoff was for the old
   leader). Anything else, running out of retries (`retries`, resends after a written attempt)
   or of delivery time (`delivery_timeout_ms`, the bound on a record's whole life), fails the
   batch with the outcome contract of client/errors.py.

Leader failover (the path a retry takes): the old leader answers NOT_LEADER_OR_FOLLOWER (or the
connection drops, or acks=all times out), the batch is requeued with its sequence numbers, the
refreshed metadata names the new leader with a bumped epoch, and the retry goes there; the new
leader, whose producer state was replicated with the log, deduplicates a batch the old leader had
already appended (it answers with the original offset, or DUPLICATE_SEQUENCE_NUMBER). None of these
errors resets the sequence numbers: only OUT_OF_ORDER_SEQUENCE_NUMBER / UNKNOWN_PRODUCER_ID
handling below does (KIP-360's cases).

Idempotence (KIP-98; on by default, needs acks=all and at most 5 requests in flight): batches
carry the producer id, epoch and per-partition base sequence, assigned when a batch is first
drained and kept across retries, so a broker with producer state deduplicates a retried batch.
At most 5 batches per partition are in flight; a retried batch is resent only after every earlier
request for its partition has been answered, so sequences reach the broker in order.
- OUT_OF_ORDER_SEQUENCE_NUMBER for a batch that is not the next expected one (an earlier batch of
  the partition failed and is being retried) is retried; for the next expected one the broker
  disagrees with us, and the batch fails (NotAppendedError unless an earlier attempt was unknown).
- UNKNOWN_PRODUCER_ID (the broker lost our state, e.g. retention) and any batch that fails after
  being given a sequence number (a gap the broker would refuse) reset the producer id: once the
  requests in flight are answered, a new InitProducerId, sequences from 0 (pre-KIP-360 Java
  behaviour; the broker's InitProducerId v0-1 cannot bump an epoch).
- INVALID_PRODUCER_EPOCH / PRODUCER_FENCED fail the batch (not retriable).

MESSAGE_TOO_LARGE for a batch of several records splits it in two and retries (the halves keep
consecutive sequence numbers); a single record that is too large fails with NotAppendedError.
acks=0: a batch counts as delivered once written to the connection (offset -1).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from client.accumulator import BATCH_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES, ProducerBatch, RecordAccumulator
from client.cluster import Cluster
from client.errors import (
    BufferFullError,
    ClientClosedError,
    DeliveryError,
    IncompatibleBrokerError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NotAppendedError,
    UnknownOutcomeError,
    attempt_maybe_appended,
    broker_error,
)
from client.partitioner import DefaultPartitioner
from client.record import Header, RecordMetadata, TopicPartition
from client.transport import BrokerConnection
from client.wakeup import Wakeup
from client.wire.compression import CODEC_GZIP, CODEC_LZ4, CODEC_NONE
from client.wire.errors import ErrorCode, error_code_for
from client.wire.messages import ApiKey
from client.wire.records import build_batch

__all__ = ["Producer"]

log = logging.getLogger(__name__)

ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}
COMPRESSION = {None: CODEC_NONE, "none": CODEC_NONE, "lz4": CODEC_LZ4, "gzip": CODEC_GZIP}
IDEMPOTENT_IN_FLIGHT_PER_PARTITION_MAX = 5  # Kafka: the broker keeps the last 5 batches per producer
IDEMPOTENT_TRANSACTION_TIMEOUT_MS = 0x7FFFFFFF  # Java's value for a non-transactional InitProducerId
SEQUENCE_MAX = 0x7FFFFFFF  # sequences wrap to 0 after Integer.MAX_VALUE (Kafka DefaultRecordBatch)
SENDER_IDLE_WAKE_MS = 500  # the sender re-checks deadlines at least this often
RETRIES_DEFAULT = 0x7FFFFFFF  # Kafka's retries default (Integer.MAX_VALUE): delivery_timeout_ms bounds them
BACKOFF_DOUBLINGS_MAX = 20  # caps the shift of the exponential backoff (retry_backoff_max_ms caps the value)
# Errors after which the answering broker is known not to lead the partition: its cached leader is
# dropped, so nothing more is sent to it before the refreshed metadata names a leader.
_NOT_THE_LEADER = frozenset({ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH,
                             ErrorCode.LEADER_NOT_AVAILABLE})
_client_ids = itertools.count(1)
_time_ns = time.time_ns
_new = tuple.__new__


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"record {what} must be bytes or None, not {type(data).__name__}")


def _check_headers(headers: Iterable[Header]) -> tuple[list[Header], int]:
    checked = []
    size = 1
    for header_key, header_value in headers:
        if not isinstance(header_key, str):
            raise TypeError(f"header keys are str, not {type(header_key).__name__}")
        if header_value is not None and header_value.__class__ is not bytes:
            header_value = _as_bytes(header_value, "header value")
        checked.append((header_key, header_value))
        size += 10 + len(header_key.encode("utf-8", "surrogateescape")) + (len(header_value) if header_value else 0)
    return checked, size


class Producer:
    """An idempotent, batching, asyncio Kafka producer (see the module docstring and docs/client.md)."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092", *,
                 client_id: str | None = None, acks: int | str = "all", compression: str | None = "none",
                 batch_size: int = 16_384, linger_ms: int = 5, buffer_memory: int = 32 * 1024 * 1024,
                 max_block_ms: int = 60_000, max_request_size: int = 1_048_576,
                 request_timeout_ms: int = 30_000, delivery_timeout_ms: int = 120_000,
                 retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1_000, retries: int = RETRIES_DEFAULT,
                 max_in_flight_requests_per_connection: int = 5, enable_idempotence: bool | None = None,
                 partitioner: Callable[[str, bytes | None, int], int] | None = None,
                 metadata_max_age_ms: int = 300_000, connect_timeout_ms: int = 10_000) -> None:
        if acks not in ACKS:
            raise ValueError(f"acks must be 'all', -1, 0 or 1, not {acks!r}")
        if compression not in COMPRESSION:
            choices = sorted(k for k in COMPRESSION if k)
            raise ValueError(f"compression must be one of {choices}, not {compression!r}")
        self.acks = ACKS[acks]
        self.codec = COMPRESSION[compression]
        self._idempotence_explicit = enable_idempotence is not None
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        if enable_idempotence is None:  # Java 3.0+: on unless the other settings conflict
            enable_idempotence = self.acks == -1 and max_in_flight_requests_per_connection <= 5 and retries > 0
        elif enable_idempotence and (self.acks != -1 or max_in_flight_requests_per_connection > 5 or retries == 0):
            raise ValueError("enable_idempotence needs acks='all', max_in_flight_requests_per_connection <= 5 "
                             "and retries > 0")
        if delivery_timeout_ms < linger_ms + request_timeout_ms:
            raise ValueError("delivery_timeout_ms must be >= linger_ms + request_timeout_ms (Kafka's rule)")
        if not 1 <= batch_size <= buffer_memory or max_request_size < 1 or max_in_flight_requests_per_connection < 1:
            raise ValueError("need 1 <= batch_size <= buffer_memory, max_request_size >= 1, max in flight >= 1")
        self.idempotent = enable_idempotence
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id or f"replog-producer-{next(_client_ids)}"
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.buffer_memory = buffer_memory
        self.max_block_ms = max_block_ms
        self.max_request_size = max_request_size
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.retries = retries
        self.max_in_flight_requests_per_connection = max_in_flight_requests_per_connection
        self.metadata_max_age_ms = metadata_max_age_ms
        self.connect_timeout_ms = connect_timeout_ms
        self._custom_partitioner = partitioner
        self._started = False
        self._closing = False
        self._accepting = False  # started, not closing, no fatal error: the one check send() makes
        self._closed = False
        self._fatal: BaseException | None = None
        # idempotence state
        self.producer_id = -1
        self.producer_epoch = -1
        self._next_sequence: dict[TopicPartition, int] = {}
        self._last_acked_sequence: dict[TopicPartition, int] = {}
        self._pid_reset_pending = False
        self._pid_task: asyncio.Task[None] | None = None
        # sender state
        self._in_flight: dict[TopicPartition, list[ProducerBatch]] = {}
        self._in_flight_total = 0
        self._unpartitioned: dict[str, list[tuple[int | None, tuple[Any, ...], asyncio.Future[Any], int, int]]] = {}
        self._flushing = 0
        self._sender: asyncio.Task[None] | None = None
        self._partition_counts: dict[str, int] = {}
        self._sticky_batches: dict[str, ProducerBatch] = {}
        self._record_bytes_max = max_request_size - BATCH_OVERHEAD_BYTES
        self._batches_started = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._create_future = self._loop.create_future
        self._wakeup = Wakeup(self._loop)
        self.cluster = Cluster.for_client(self, max_in_flight_requests=self.max_in_flight_requests_per_connection,
                                          allow_auto_topic_creation=True)
        self._metadata = self.cluster.metadata
        self._accumulator = RecordAccumulator(batch_size=self.batch_size, linger_ms=self.linger_ms,
                                              buffer_memory=self.buffer_memory,
                                              delivery_timeout_ms=self.delivery_timeout_ms)
        self._default_partitioner = DefaultPartitioner(self._metadata.available_partitions)
        self._partitioner = self._custom_partitioner or self._default_partitioner
        try:
            await self.cluster.start()
        except BaseException:
            await self.cluster.close()
            raise
        self.cluster.add_listener(self._on_metadata)
        self._on_metadata()
        self._sender = self._loop.create_task(self._run(), name=f"{self.client_id}-sender")
        self._started = True
        self._accepting = True

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, timeout_ms: int | None = None) -> None:
        """Deliver what is buffered (bounded by delivery_timeout_ms, or `timeout_ms`), then close."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closing = True
        self._accepting = False
        self._wakeup.set()
        try:
            with contextlib.suppress(KafkaTimeoutError):
                await self.flush(timeout_ms)
        finally:
            self._closed = True
            if self._sender is not None:
                self._sender.cancel()
                with contextlib.suppress(BaseException):
                    await self._sender
            if self._pid_task is not None:
                self._pid_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._pid_task
            self._abort_all(ClientClosedError("the producer was closed"))
            await self.cluster.close()

    # ------------------------------------------------------------------ sending
    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
             partition: int | None = None, headers: Iterable[Header] | None = None,
             timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Enqueue one record; returns a future of its RecordMetadata. Raises BufferFullError when full."""
        if not self._accepting:
            self._refuse()
        if value is not None and value.__class__ is not bytes:
            value = _as_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = _as_bytes(key, "key")
        size = RECORD_OVERHEAD_BYTES + (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
        checked: list[Header] | None = None
        if headers:
            checked, header_bytes = _check_headers(headers)
            size += header_bytes
        accumulator = self._accumulator
        if accumulator.buffered_bytes + size > self.buffer_memory:
            raise BufferFullError(f"buffer_memory ({self.buffer_memory} bytes) is full: "
                                  f"{accumulator.buffered_bytes} bytes await delivery")
        future: asyncio.Future[RecordMetadata] = self._create_future()
        if size > self._record_bytes_max:
            future.set_exception(NotAppendedError(
                f"the record is {size} bytes, more than max_request_size {self.max_request_size}",
                ErrorCode.MESSAGE_TOO_LARGE, topic=topic, partition=-1 if partition is None else partition))
            return future
        record = (key, value, _time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms, checked)
        # The hot paths: append to an open batch. Keyless records go to the topic's sticky batch;
        # keyed ones to their partition's last batch.
        if key is None and partition is None:
            batch = self._sticky_batches.get(topic)
        else:
            batch = None
            count = self._partition_counts.get(topic)
            if count is not None:
                chosen = self._partitioner(topic, key, count) if partition is None else partition
                if 0 <= chosen < count:
                    queue = accumulator.queues.get((topic, chosen))
                    if queue:
                        batch = queue[-1]
        if batch is not None and not batch.closed and batch.size_bytes + size <= self.batch_size:
            batch.records.append(record)
            batch.futures.append(future)
            batch.size_bytes += size
            accumulator.buffered_bytes += size
            return future
        self._enqueue(topic, partition, record, future, size)
        return future

    def _refuse(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        raise ClientClosedError("the producer is closed" if self._closing or self._closed else
                                "the producer is not started")

    def _enqueue(self, topic: str, partition: int | None, record: tuple[Any, ...], future: asyncio.Future[Any],
                 size: int) -> None:
        """The general path of send: metadata wait, partition checks, sticky switch, new batch."""
        count = self._partition_counts.get(topic)
        if count is None or topic in self._unpartitioned:  # behind earlier records of the topic: keep order
            self._await_metadata(topic, partition, record, future, size)
            return
        sticky = partition is None and record[0] is None and self._partitioner is self._default_partitioner
        if partition is None:
            key = record[0]
            partition = self._partitioner(topic, key, count)
            if key is None and self._partitioner is self._default_partitioner and not self._fits(
                    (topic, partition), size):
                self._default_partitioner.next_sticky(topic, partition, count)  # KIP-480
                partition = self._partitioner(topic, None, count)
        elif not 0 <= partition < count:
            future.set_exception(NotAppendedError(f"{topic} has {count} partitions, not {partition + 1}",
                                                  ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, topic=topic,
                                                  partition=partition))
            return
        tp = (topic, partition)
        if self._accumulator.append(tp, record, future, size, int(self._loop.time() * 1000)):
            self._batches_started += 1
            self._wakeup.set()
        if sticky:
            # keyless: the batch this record joined is the topic's sticky batch (send()'s hot path)
            self._sticky_batches[topic] = self._accumulator.queues[tp][-1]

    def _on_metadata(self) -> None:
        """Cluster listener: refresh the partition counts send() reads, and wake the sender."""
        metadata = self._metadata
        self._partition_counts = {name: len(topic.partitions) for name, topic in metadata.topics.items()
                                  if topic.error == ErrorCode.NONE and topic.partitions}
        self._sticky_batches.clear()
        now_ms = int(self._loop.time() * 1000)
        self._retry_on_new_leaders(now_ms)
        if self._unpartitioned:  # place them now, before any later send of the same topic
            self._place_unpartitioned(now_ms)
        self._wakeup.set()

    def _retry_on_new_leaders(self, now_ms: int) -> None:
        """Retries waiting out a backoff go at once when their partition got a newer leader epoch
        than the one they were sent under: the backoff was for the old leader (KIP-951; Java's
        RecordAccumulator skips it the same way)."""
        leader_epoch = self._metadata.leader_epoch
        for tp, queue in self._accumulator.queues.items():
            if not queue or not queue[0].closed or queue[0].retry_at_ms <= now_ms:
                continue
            epoch = leader_epoch(tp)
            for batch in queue:
                if batch.closed and batch.retry_at_ms > now_ms and 0 <= batch.leader_epoch < epoch:
                    batch.retry_at_ms = now_ms

    def _fits(self, tp: TopicPartition, size: int) -> bool:
        queue = self._accumulator.queues.get(tp)
        if not queue:
            return True
        batch = queue[-1]
        return batch.closed or batch.size_bytes + size <= self.batch_size

    def _await_metadata(self, topic: str, partition: int | None, record: tuple[Any, ...],
                        future: asyncio.Future[Any], size: int) -> None:
        """Hold a record until its topic's partitions are known (bounded by max_block_ms)."""
        now_ms = int(self._loop.time() * 1000)
        self._unpartitioned.setdefault(topic, []).append((partition, record, future, size, now_ms + self.max_block_ms))
        self._accumulator.buffered_bytes += size
        if topic not in self.cluster.topics:
            self.cluster.add_topics([topic])
        else:
            self.cluster.request_update()
        self._wakeup.set()

    def _record_size(self, value: Any, key: Any, headers: Any) -> int:
        size = RECORD_OVERHEAD_BYTES + (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
        if headers:
            size += _check_headers(headers)[1]
        return size

    async def send_when_ready(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                              partition: int | None = None, headers: Iterable[Header] | None = None,
                              timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """As send, but waits up to max_block_ms for buffer room (then BufferFullError)."""
        headers = list(headers) if headers else None
        deadline = self._loop.time() + self.max_block_ms / 1000 if self._started else 0.0
        while True:
            started = self._batches_started
            try:
                future = self.send(topic, value, key, partition=partition, headers=headers, timestamp_ms=timestamp_ms)
                if started != self._batches_started:
                    await asyncio.sleep(0)  # a batch was started: let the sender run (a tight loop never yields)
                return future
            except BufferFullError:
                size = self._record_size(value, key, headers)
                if not await self._accumulator.wait_for_room(size, deadline):
                    raise BufferFullError(f"no room in buffer_memory ({self.buffer_memory} bytes) "
                                          f"within max_block_ms {self.max_block_ms}") from None

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                            partition: int | None = None, headers: Iterable[Header] | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        """Enqueue (waiting for room) and wait for the outcome; raises DeliveryError on failure."""
        future = await self.send_when_ready(topic, value, key, partition=partition, headers=headers,
                                            timestamp_ms=timestamp_ms)
        return await future

    async def flush(self, timeout_ms: int | None = None) -> None:
        """Send everything buffered now and wait until each record has an outcome.

        Raises KafkaTimeoutError if `timeout_ms` passes first. Record failures are not raised here:
        they are on the records' futures.
        """
        if not self._started:
            return
        waits = [b.done_future for b in self._accumulator.batches()]
        waits += [b.done_future for batches in self._in_flight.values() for b in batches]
        waits += [item[2] for pending in self._unpartitioned.values() for item in pending]
        waits = [w for w in waits if not w.done()]
        if not waits:
            return
        self._flushing += 1
        self._wakeup.set()
        try:
            _, pending = await asyncio.wait(waits, timeout=None if timeout_ms is None else timeout_ms / 1000)
        finally:
            self._flushing -= 1
        if pending:
            raise KafkaTimeoutError(f"flush: {len(pending)} batches still pending after {timeout_ms} ms")

    async def partitions_for(self, topic: str) -> list[int]:
        """The partitions of `topic` (waits for its metadata, up to max_block_ms)."""
        self.cluster.add_topics([topic])
        deadline = self._loop.time() + self.max_block_ms / 1000
        while self._partition_counts.get(topic) is None:
            error = self._metadata.topic_error(topic)
            if error is not None and error != ErrorCode.NONE and not error.retriable:
                raise broker_error(error, context=f"metadata for {topic}")
            left_ms = int((deadline - self._loop.time()) * 1000)
            if left_ms <= 0:
                raise KafkaTimeoutError(f"topic {topic} not in metadata after {self.max_block_ms} ms")
            await self.cluster.wait_for_update(self._metadata.version, min(left_ms, self.retry_backoff_max_ms))
        return sorted(self._metadata.topics[topic].partitions)

    # ------------------------------------------------------------------ the sender task
    async def _run(self) -> None:
        wakeup = self._wakeup
        try:
            while True:
                now_ms = int(self._loop.time() * 1000)
                delay_ms = self._run_once(now_ms)
                await wakeup.wait(max(delay_ms, 0) / 1000)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: fail loudly, and fail every pending record with it
            log.exception("producer sender crashed")
            self._fatal = exc
            self._accepting = False
            self._abort_all(exc)
            raise

    def _run_once(self, now_ms: int) -> int:
        """One pass of the sender; returns ms until it needs to run again (if nothing wakes it)."""
        next_ms = now_ms + SENDER_IDLE_WAKE_MS
        next_ms = min(next_ms, self._expire(now_ms))
        if self._unpartitioned:
            next_ms = min(next_ms, self._place_unpartitioned(now_ms))
        self.cluster.maybe_refresh()
        if self.idempotent:
            if self._pid_reset_pending and self._in_flight_total == 0:
                self._pid_reset_pending = False
                self.producer_id = -1
            if self.producer_id < 0:
                self._ensure_producer_id()
                return next_ms - now_ms
            if self._pid_reset_pending:
                return next_ms - now_ms  # let in-flight requests finish before a new producer id
        flushing = self._flushing > 0 or self._closing
        accumulator = self._accumulator
        leader = self._metadata.leader
        by_node: dict[int, list[TopicPartition]] = {}
        for tp, queue in accumulator.queues.items():
            if not queue:
                continue
            ready, at_ms = accumulator.is_ready(queue, now_ms, flushing)
            if not ready:
                next_ms = min(next_ms, at_ms)
                continue
            if self._partition_blocked(tp, queue[0]):
                continue  # a response will wake us
            node = leader(tp)
            if node < 0:
                self.cluster.request_update()  # the listener wakes us after the refresh
                continue
            by_node.setdefault(node, []).append(tp)
        for node, tps in by_node.items():
            connection = self.cluster.ready_connection(node)
            if connection is None:
                continue  # connecting; the listener wakes us
            while connection.can_send:
                batches = self._drain(tps, now_ms, flushing)
                if not batches:
                    break
                self._send_produce(connection, batches, now_ms)
        if len(accumulator.queues) > 1024:
            accumulator.drop_empty_queues()
        return next_ms - now_ms

    def _partition_blocked(self, tp: TopicPartition, head: ProducerBatch) -> bool:
        in_flight = self._in_flight.get(tp)
        if not in_flight:
            return False
        if head.closed:  # a retry goes only after every earlier request of the partition is answered
            return True
        return self.idempotent and len(in_flight) >= IDEMPOTENT_IN_FLIGHT_PER_PARTITION_MAX

    def _drain(self, tps: list[TopicPartition], now_ms: int, flushing: bool) -> list[ProducerBatch]:
        """At most one ready batch per partition, up to max_request_size bytes in all."""
        accumulator = self._accumulator
        batches: list[ProducerBatch] = []
        request_bytes = 0
        for tp in tps:
            queue = accumulator.queues.get(tp)
            if not queue:
                continue
            if not accumulator.is_ready(queue, now_ms, flushing)[0] or self._partition_blocked(tp, queue[0]):
                continue
            head = queue[0]
            if batches and request_bytes + head.size_bytes > self.max_request_size:
                break
            queue.popleft()
            if not self._prepare(head):
                continue
            batches.append(head)
            request_bytes += len(head.encoded or b"")
        if batches:  # rotate so partitions at the end of a full request go first next time
            first = batches[0].tp
            if first in tps:
                tps.remove(first)
                tps.append(first)
        return batches

    def _prepare(self, batch: ProducerBatch) -> bool:
        """Close the batch, give it a producer id and sequence (once), encode it (once per identity)."""
        batch.closed = True
        if self.idempotent and (batch.producer_id != self.producer_id or batch.base_sequence < 0):
            tp = batch.tp
            sequence = self._next_sequence.get(tp, 0)
            self._next_sequence[tp] = (sequence + len(batch.records)) & SEQUENCE_MAX
            batch.producer_id, batch.producer_epoch = self.producer_id, self.producer_epoch
            batch.base_sequence = sequence
            batch.encoded = None
        if batch.encoded is None:
            try:
                batch.encoded = build_batch(batch.records, compression=self.codec, producer_id=batch.producer_id,
                                            producer_epoch=batch.producer_epoch, base_sequence=batch.base_sequence)
            except (ValueError, TypeError, KafkaError) as exc:
                self._fail(batch, exc, ErrorCode.INVALID_RECORD)
                return False
        return True

    def _send_produce(self, connection: BrokerConnection, batches: list[ProducerBatch], now_ms: int) -> None:
        topic_data: dict[str, list[dict[str, Any]]] = {}
        for batch in batches:
            topic_data.setdefault(batch.topic, []).append({"index": batch.partition, "records": batch.encoded})
        body = {"transactional_id": None, "acks": self.acks, "timeout_ms": self.request_timeout_ms,
                "topic_data": [{"name": name, "partition_data": parts} for name, parts in topic_data.items()]}
        try:
            version = self.cluster.version(connection, ApiKey.PRODUCE)
            future = connection.send(ApiKey.PRODUCE, version, body, expect_response=self.acks != 0)
        except KafkaError as exc:  # not written: this attempt certainly did not append
            for batch in batches:
                self._attempt_failed(batch, exc.code, exc, False, now_ms, exc.retriable)
            return
        leader_epoch = self._metadata.leader_epoch
        for batch in batches:
            batch.attempts += 1
            batch.leader_epoch = leader_epoch(batch.tp)
        if future is None:  # acks=0: written is all we will know
            for batch in batches:
                self._complete(batch, -1, -1)
            return
        for batch in batches:
            self._in_flight.setdefault(batch.tp, []).append(batch)
        self._in_flight_total += len(batches)
        future.add_done_callback(lambda f: self._on_produce_response(f, batches))

    # ------------------------------------------------------------------ responses
    def _on_produce_response(self, future: asyncio.Future[dict[str, Any]], batches: list[ProducerBatch]) -> None:
        for batch in batches:
            in_flight = self._in_flight.get(batch.tp)
            if in_flight is not None:
                with contextlib.suppress(ValueError):
                    in_flight.remove(batch)
                if not in_flight:
                    del self._in_flight[batch.tp]
        self._in_flight_total -= len(batches)
        self._wakeup.set()
        if self._closed:
            return
        now_ms = int(self._loop.time() * 1000)
        exc = future.exception() if not future.cancelled() else ClientClosedError("request cancelled")
        if exc is not None:  # connection lost or request timed out after the request was written
            code = exc.code if isinstance(exc, KafkaError) else ErrorCode.NETWORK_EXCEPTION
            for batch in batches:
                self._attempt_failed(batch, code, exc, True, now_ms, True)
            self.cluster.request_update()
            return
        body = future.result()
        answers = {(t["name"], p["index"]): p for t in body["responses"] for p in t["partition_responses"]}
        for batch in batches:
            answer = answers.get(batch.tp)
            if answer is None:
                missing = KafkaConnectionError(f"no answer for {batch.topic}-{batch.partition} in the Produce response")
                self._attempt_failed(batch, ErrorCode.UNKNOWN_SERVER_ERROR, missing, True, now_ms, True)
                continue
            code = answer["error_code"]
            if code == 0:
                self._complete(batch, answer["base_offset"], answer.get("log_append_time_ms", -1))
            elif code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:  # the broker has it (Kafka: success, offset unknown)
                self._complete(batch, -1, answer.get("log_append_time_ms", -1))
            else:
                self._on_partition_error(batch, error_code_for(code), answer.get("error_message"), now_ms)

    def _on_partition_error(self, batch: ProducerBatch, code: ErrorCode, message: str | None, now_ms: int) -> None:
        exc = broker_error(code, message, context=f"Produce to {batch.topic}-{batch.partition}")
        maybe_appended = attempt_maybe_appended(code, self.acks)
        retriable = code.retriable
        if retriable:
            # Any retriable error may mean a leader change under way (NOT_ENOUGH_REPLICAS while the
            # ISR shrinks, REQUEST_TIMED_OUT from a leader cut off from its followers): refresh the
            # metadata (single flight, rate-limited by retry_backoff_ms) so the retry finds the new leader.
            if code in _NOT_THE_LEADER:
                self._metadata.forget_leader(batch.tp)
            self.cluster.request_update()
        if code == ErrorCode.MESSAGE_TOO_LARGE and len(batch.records) > 1 and not batch.done:
            self._split(batch, now_ms)
            return
        if self.idempotent and batch.producer_id == self.producer_id:
            if code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER:
                expected = (self._last_acked_sequence.get(batch.tp, -1) + 1) & SEQUENCE_MAX
                retriable = batch.base_sequence != expected  # an earlier batch failed and is being retried
            elif code == ErrorCode.UNKNOWN_PRODUCER_ID:
                self._request_pid_reset()
                retriable = True
        self._attempt_failed(batch, code, exc, maybe_appended, now_ms, retriable)

    def _attempt_failed(self, batch: ProducerBatch, code: ErrorCode, exc: BaseException, maybe_appended: bool,
                        now_ms: int, retriable: bool) -> None:
        if batch.done:
            return
        if maybe_appended:
            batch.maybe_appended = True
        batch.last_error = exc
        backoff_ms = min(self.retry_backoff_ms << min(max(batch.attempts - 1, 0), BACKOFF_DOUBLINGS_MAX),
                         self.retry_backoff_max_ms)
        if 0 <= batch.leader_epoch < self._metadata.leader_epoch(batch.tp):
            backoff_ms = 0  # the partition has a newer leader already (see _retry_on_new_leaders)
        if (retriable and not self._closing and batch.attempts <= self.retries
                and now_ms + backoff_ms < batch.deadline_ms):
            batch.retry_at_ms = now_ms + backoff_ms
            batch.closed = True
            self._accumulator.requeue(batch)
            self._wakeup.set()
        else:
            self._fail(batch, exc, code)

    def _split(self, batch: ProducerBatch, now_ms: int) -> None:
        """Replace a too-large batch by its two halves (consecutive sequences), retried at once."""
        half = len(batch.records) // 2
        parent_done = batch.done_future
        self._accumulator.release(batch)  # the halves reserve their own memory below
        remaining = [2]

        def half_done(_: asyncio.Future[None]) -> None:
            remaining[0] -= 1
            if remaining[0] == 0 and not parent_done.done():
                parent_done.set_result(None)

        for start, stop in ((0, half), (half, len(batch.records))):
            part = ProducerBatch(batch.tp, batch.created_ms, batch.deadline_ms, self._loop.create_future())
            part.records = batch.records[start:stop]
            part.futures = batch.futures[start:stop]
            part.size_bytes = BATCH_OVERHEAD_BYTES + sum(
                RECORD_OVERHEAD_BYTES + len(r[0] or b"") + len(r[1] or b"") for r in part.records)
            part.closed, part.attempts, part.maybe_appended = True, batch.attempts, batch.maybe_appended
            part.producer_id, part.producer_epoch = batch.producer_id, batch.producer_epoch
            part.leader_epoch = batch.leader_epoch
            part.base_sequence = (batch.base_sequence + start) & SEQUENCE_MAX if batch.base_sequence >= 0 else -1
            part.retry_at_ms = now_ms
            part.done_future.add_done_callback(half_done)
            self._accumulator.buffered_bytes += part.size_bytes
            self._accumulator.requeue(part)
        self._wakeup.set()

    def _complete(self, batch: ProducerBatch, base_offset: int, log_append_time_ms: int) -> None:
        if batch.done:
            return
        topic, partition = batch.tp
        records = batch.records
        offset = base_offset
        for record, future in zip(records, batch.futures):
            try:  # noqa: SIM105 - per record on the hot path: a zero-cost try, not a context manager
                future.set_result(_new(RecordMetadata, (
                    topic, partition, offset, log_append_time_ms if log_append_time_ms >= 0 else record[2])))
            except asyncio.InvalidStateError:
                pass  # the caller cancelled this record's future
            if offset >= 0:
                offset += 1
        if self.idempotent and batch.base_sequence >= 0 and batch.producer_id == self.producer_id:
            last = (batch.base_sequence + len(records) - 1) & SEQUENCE_MAX
            self._last_acked_sequence[batch.tp] = last
        batch.done_future.set_result(None)
        self._accumulator.release(batch)

    def _fail(self, batch: ProducerBatch, exc: BaseException, code: ErrorCode | int) -> None:
        if batch.done:
            return
        cls: type[DeliveryError] = UnknownOutcomeError if batch.maybe_appended else NotAppendedError
        error = cls(f"delivery to {batch.topic}-{batch.partition} failed after {batch.attempts} attempt(s): {exc}",
                    code, topic=batch.topic, partition=batch.partition, attempts=batch.attempts)
        error.__cause__ = exc
        for future in batch.futures:
            if not future.done():
                future.set_exception(error)
        batch.done_future.set_result(None)
        self._accumulator.release(batch)
        if self.idempotent and batch.base_sequence >= 0 and batch.producer_id == self.producer_id:
            self._request_pid_reset()  # its sequence range is a gap the broker would refuse

    def _request_pid_reset(self) -> None:
        if not self._pid_reset_pending and self.producer_id >= 0:
            log.info("producer id %d: resetting (sequence gap or unknown producer id)", self.producer_id)
            self._pid_reset_pending = True

    # ------------------------------------------------------------------ expiry and metadata waits
    def _expire(self, now_ms: int) -> int:
        """Fail batches past delivery_timeout_ms; returns the next deadline (ms)."""
        next_ms = now_ms + SENDER_IDLE_WAKE_MS
        for queue in self._accumulator.queues.values():
            while queue and queue[0].deadline_ms <= now_ms:
                batch = queue.popleft()
                self._fail(batch, KafkaTimeoutError(
                    f"delivery_timeout_ms {self.delivery_timeout_ms} expired"), ErrorCode.REQUEST_TIMED_OUT)
            if queue:
                next_ms = min(next_ms, queue[0].deadline_ms)
        for batches in self._in_flight.values():
            for batch in batches:
                if batch.done:
                    continue
                if batch.deadline_ms <= now_ms:  # written, no answer yet: fate unknown
                    batch.maybe_appended = True
                    self._fail(batch, KafkaTimeoutError(
                        f"delivery_timeout_ms {self.delivery_timeout_ms} expired while the request was in flight"),
                        ErrorCode.REQUEST_TIMED_OUT)
                else:
                    next_ms = min(next_ms, batch.deadline_ms)
        return next_ms

    def _place_unpartitioned(self, now_ms: int) -> int:
        """Move records whose topic metadata arrived into the accumulator; fail expired ones."""
        next_ms = now_ms + SENDER_IDLE_WAKE_MS
        for topic in list(self._unpartitioned):
            pending = self._unpartitioned.pop(topic)
            count = self._partition_counts.get(topic)
            error = self._metadata.topic_error(topic)
            fatal = error is not None and error != ErrorCode.NONE and not error.retriable
            keep = []
            for item in pending:
                partition, record, future, size, deadline_ms = item
                if count is not None or fatal or deadline_ms <= now_ms or future.done():
                    self._accumulator.buffered_bytes -= size
                    if future.done():
                        continue
                    if count is not None:
                        self._enqueue(topic, partition, record, future, size)
                    else:
                        cause = (broker_error(error, context=f"metadata for {topic}") if fatal else
                                 KafkaTimeoutError(f"topic {topic} not in metadata after {self.max_block_ms} ms"))
                        failure = NotAppendedError(str(cause), cause.code, topic=topic,
                                                   partition=-1 if partition is None else partition)
                        failure.__cause__ = cause
                        future.set_exception(failure)
                else:
                    keep.append(item)
                    next_ms = min(next_ms, deadline_ms)
            if keep:
                self._unpartitioned[topic] = keep
        if self._unpartitioned:
            self.cluster.request_update()
        return next_ms

    # ------------------------------------------------------------------ producer id
    def _ensure_producer_id(self) -> None:
        if self._pid_task is None or self._pid_task.done():
            self._pid_task = self._loop.create_task(self._init_producer_id())

    async def _init_producer_id(self) -> None:
        body = {"transactional_id": None, "transaction_timeout_ms": IDEMPOTENT_TRANSACTION_TIMEOUT_MS}
        failures = 0
        while not self._closed:
            try:
                response, _ = await self.cluster.request(ApiKey.INIT_PRODUCER_ID, body)
                code = error_code_for(response["error_code"])
                if code == ErrorCode.NONE:
                    self.producer_id, self.producer_epoch = response["producer_id"], response["producer_epoch"]
                    self._next_sequence.clear()
                    self._last_acked_sequence.clear()
                    log.debug("producer id %d epoch %d", self.producer_id, self.producer_epoch)
                    break
                error = broker_error(code, context="InitProducerId")
                if not code.retriable:
                    raise error
            except IncompatibleBrokerError as exc:
                if self._idempotence_explicit:
                    self._set_fatal(exc)
                else:
                    log.warning("the broker does not support InitProducerId; idempotence is off: %s", exc)
                    self.idempotent = False
                break
            except (KafkaConnectionError, KafkaTimeoutError):
                pass
            except KafkaError as exc:
                if not exc.retriable:
                    self._set_fatal(exc)
                    break
            failures += 1
            await asyncio.sleep(min(self.retry_backoff_ms << min(failures - 1, BACKOFF_DOUBLINGS_MAX),
                                    self.retry_backoff_max_ms) / 1000)
        self._wakeup.set()

    def _set_fatal(self, exc: BaseException) -> None:
        log.error("producer failed: %s", exc)
        self._fatal = exc
        self._accepting = False
        self._abort_all(exc)

    def _abort_all(self, exc: BaseException) -> None:
        """Fail every record without an outcome (close, or a fatal error)."""
        for queue in self._accumulator.queues.values():
            while queue:
                self._fail(queue.popleft(), exc, getattr(exc, "code", ErrorCode.UNKNOWN_SERVER_ERROR))
        for batches in self._in_flight.values():
            for batch in batches:
                batch.maybe_appended = True
                self._fail(batch, exc, getattr(exc, "code", ErrorCode.UNKNOWN_SERVER_ERROR))
        for topic, pending in list(self._unpartitioned.items()):
            for partition, _record, future, size, _deadline in pending:
                self._accumulator.buffered_bytes -= size
                if not future.done():
                    failure = NotAppendedError(str(exc), getattr(exc, "code", ErrorCode.UNKNOWN_SERVER_ERROR),
                                               topic=topic, partition=-1 if partition is None else partition)
                    failure.__cause__ = exc
                    future.set_exception(failure)
        self._unpartitioned.clear()
