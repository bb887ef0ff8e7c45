"""The asyncio consumer: manual assignment, seek, position, pipelined fetching, poll.

    async with Consumer("127.0.0.1:9092") as consumer:
        consumer.assign([("orders", 0)])
        consumer.seek(("orders", 0), 0)
        records = await consumer.poll(timeout_ms=1000)     # [ConsumerRecord, ...]

Positions. Each assigned partition has a *position* (the offset of the next record `poll`
returns; what `position()` reports) and a *fetch offset* (where the next Fetch starts, ahead of
the position by whatever is fetched but not yet returned). `seek`, `seek_to_beginning`,
`seek_to_end` and an offset reset bump the partition's *generation*; fetched data of an older
generation is dropped, so a seek is never followed by stale records. seek_to_* and a missing
position are resolved lazily (ListOffsets) by the next poll or position call, as in Kafka.

Fetching (one task per leader broker, fetcher loop below): a Fetch for every fetchable
partition the broker leads, with `current_leader_epoch` from the metadata (KIP-320). When the
response arrives it is queued *undecoded* and the next Fetch (from the advanced fetch offsets) is
sent at once, so one fetch is in flight per broker while `poll` decodes the previous response.
Bounded: at most FETCH_RESPONSES_BUFFERED_MAX undecoded responses per broker (each at most
`fetch_max_bytes`); the fetcher waits for poll to consume before sending more.

Decoding (in poll, per batch, lazily up to `max_poll_records`): the CRC-32C is checked
(`check_crcs`, default on; a mismatch raises CorruptRecordError and the partition is refetched
from its position), control batches are skipped, records below the position are dropped (a
fetch offset inside a compacted or compressed batch returns the whole batch), and the position
moves past each consumed batch's last offset (compaction gaps are skipped).

Errors per partition: OFFSET_OUT_OF_RANGE resets by `auto_offset_reset` ("earliest",
"latest"; "none" raises OffsetOutOfRangeError from poll until the next seek);
NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH and
other retriable errors refresh the metadata and retry the partition after `retry_backoff_ms`
(doubling to `retry_backoff_max_ms`); any other error is raised from poll once.

Consumer groups (`group_id`; client/group/coordinator.py has the member's contract):

    async with Consumer(bootstrap, group_id="billing", auto_offset_reset="earliest") as consumer:
        consumer.subscribe(["orders"], on_partitions_assigned=..., on_partitions_revoked=...)
        # or consumer.subscribe(pattern=r"orders-.*")
        records = await consumer.poll(timeout_ms=1000)
        await consumer.commit()                      # positions of every assigned partition
        await consumer.commit({("orders", 0): 42})   # explicit offsets (the next record to read)
        await consumer.committed(("orders", 0))      # 42, or None

`subscribe` and `assign` exclude each other (as Java's consumer). The assignment comes from the
group; a newly assigned partition starts at its committed offset, else by auto_offset_reset (it
is neither fetched nor reset until its committed offset is known). With `enable_auto_commit`
(default when a group is set) the positions at the start of each poll are committed every
`auto_commit_interval_ms`, before partitions are revoked, and on close. `close()` then sends
LeaveGroup (a static member, with `group_instance_id`, does not: KIP-345). A `group_id` with
`assign()` commits as a "simple" group (generation -1), as Kafka allows for an empty group.
Defaults are Kafka's: session_timeout_ms 45000, heartbeat_interval_ms 3000,
max_poll_interval_ms 300000 (also the rebalance timeout), auto_commit_interval_ms 5000,
partition_assignment_strategy ("range", "roundrobin").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from client.cluster import Cluster
from client.errors import (
    ClientClosedError,
    ClientError,
    CorruptRecordError,
    KafkaError,
    KafkaTimeoutError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    broker_error,
)
from client.group.coordinator import Callback, GroupCoordinator
from client.offsets import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, list_offsets
from client.record import ConsumerRecord, TopicPartition
from client.wakeup import Wakeup
from client.wire.errors import ErrorCode, error_code_for
from client.wire.errors import KafkaError as WireKafkaError
from client.wire.messages import ApiKey
from client.wire.records import HEADER_SIZE, HEADER_STRUCT, LOG_OVERHEAD, crc_is_valid, decode_records

__all__ = ["Consumer"]

log = logging.getLogger(__name__)

FETCH_RESPONSES_BUFFERED_MAX = 2  # undecoded Fetch responses per broker (each <= fetch_max_bytes)
ASSIGNMENT_PARTITIONS_MAX = 100_000
ISOLATION_LEVELS = {"read_uncommitted": 0, "read_committed": 1}
OFFSET_RESETS = ("earliest", "latest", "none")
_client_ids = itertools.count(1)
_new = tuple.__new__
_unpack_header = HEADER_STRUCT.unpack_from
_CONTROL_BIT = 0x20


class _PartitionState:
    """Per assigned partition (see the module docstring)."""

    __slots__ = ("awaiting_committed", "error", "failures", "fetch_offset", "generation", "high_watermark",
                 "log_start_offset", "position", "reset", "retry_at")

    def __init__(self) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.generation = 0
        self.reset: str | None = None  # "earliest"/"latest" pending, resolved by ListOffsets
        self.high_watermark = -1
        self.log_start_offset = -1
        self.retry_at = 0.0  # loop time before which the partition is not fetched
        self.failures = 0
        self.error: BaseException | None = None
        self.awaiting_committed = False  # a group assignment: neither fetched nor reset until its commit is known

    def fetchable(self, now: float) -> bool:
        return self.fetch_offset is not None and self.reset is None and self.error is None and now >= self.retry_at

    def seek(self, offset: int) -> None:
        self.position = self.fetch_offset = offset
        self.reset = None
        self.awaiting_committed = False
        self.error = None
        self.generation += 1


class _CompletedFetch:
    """One partition's records from one Fetch response, consumed lazily by poll."""

    __slots__ = ("data", "generation", "pending", "pending_end_offset", "pending_index", "pos", "topic", "tp")

    def __init__(self, tp: TopicPartition, generation: int, data: Any) -> None:
        self.tp = tp
        self.topic = tp[0]
        self.generation = generation
        self.data = data
        self.pos = 0
        self.pending: list[ConsumerRecord] = []
        self.pending_index = 0
        self.pending_end_offset = -1  # next offset after the batch `pending` came from

    def take(self, count: int, state: _PartitionState, check_crcs: bool) -> tuple[list[ConsumerRecord], bool]:
        """Up to `count` records at or after the position; (records, exhausted). Moves the position."""
        out: list[ConsumerRecord] = []
        data = self.data
        end = len(data)
        partition = self.tp[1]
        topic = self.topic
        while len(out) < count:
            if self.pending_index < len(self.pending):
                take = self.pending[self.pending_index:self.pending_index + count - len(out)]
                self.pending_index += len(take)
                out.extend(take)
                state.position = take[-1].offset + 1
                if self.pending_index >= len(self.pending) and state.position < self.pending_end_offset:
                    state.position = self.pending_end_offset
                continue
            pos = self.pos
            if end - pos < HEADER_SIZE:
                return out, True
            header = _unpack_header(data, pos)
            size = LOG_OVERHEAD + header[1]
            if size < HEADER_SIZE or pos + size > end:
                return out, True  # a partial batch at the end of the response (fetch size limit)
            base_offset = header[0]
            next_offset = base_offset + header[6] + 1
            if check_crcs and not crc_is_valid(data, pos, size):
                raise CorruptRecordError(f"{topic}-{partition}: the batch at offset {base_offset} fails its CRC-32C")
            self.pos = pos + size
            position = state.position
            assert position is not None
            if header[5] & _CONTROL_BIT or next_offset <= position:
                if next_offset > position:
                    state.position = next_offset
                continue
            try:
                records = decode_records(data, pos, verify_crc=False)
            except WireKafkaError as exc:
                raise CorruptRecordError(f"{topic}-{partition}: the batch at offset {base_offset} is unreadable: "
                                         f"{exc}") from exc
            prefix = (topic, partition)
            if base_offset >= position:
                self.pending = [_new(ConsumerRecord, prefix + record) for record in records]
            else:
                self.pending = [_new(ConsumerRecord, prefix + record) for record in records if record[0] >= position]
            self.pending_index = 0
            self.pending_end_offset = next_offset
            if not self.pending:
                state.position = next_offset
        return out, False


def _next_fetch_offset(data: Any, fetch_offset: int) -> int:
    """The offset after the last whole batch in `data` (fetch_offset if there is none)."""
    pos = 0
    end = len(data)
    last = fetch_offset
    while end - pos >= HEADER_SIZE:
        header = _unpack_header(data, pos)
        size = LOG_OVERHEAD + header[1]
        if size < HEADER_SIZE or pos + size > end:
            break
        last = max(last, header[0] + header[6] + 1)
        pos += size
    return last


class Consumer:
    """A manually assigned asyncio Kafka consumer (see the module docstring and docs/client.md)."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092", *, client_id: str | None = None,
                 group_id: str | None = None, auto_offset_reset: str = "latest", fetch_min_bytes: int = 1,
                 fetch_max_wait_ms: int = 500, fetch_max_bytes: int = 52_428_800,
                 max_partition_fetch_bytes: int = 1_048_576, max_poll_records: int = 500, check_crcs: bool = True,
                 isolation_level: str = "read_uncommitted", request_timeout_ms: int = 30_000,
                 retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1_000,
                 metadata_max_age_ms: int = 300_000, connect_timeout_ms: int = 10_000,
                 default_api_timeout_ms: int = 60_000, group_instance_id: str | None = None,
                 enable_auto_commit: bool | None = None, auto_commit_interval_ms: int = 5_000,
                 session_timeout_ms: int = 45_000, heartbeat_interval_ms: int = 3_000,
                 max_poll_interval_ms: int = 300_000,
                 partition_assignment_strategy: Sequence[str] = ("range", "roundrobin")) -> None:
        if group_id is not None and not group_id:
            raise ValueError("group_id must not be empty")
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if auto_commit_interval_ms < 1 or max_poll_interval_ms < 1:
            raise ValueError("auto_commit_interval_ms and max_poll_interval_ms must be >= 1")
        if auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(f"auto_offset_reset must be one of {OFFSET_RESETS}, not {auto_offset_reset!r}")
        if isolation_level not in ISOLATION_LEVELS:
            raise ValueError(f"isolation_level must be one of {sorted(ISOLATION_LEVELS)}")
        if fetch_max_wait_ms >= request_timeout_ms:
            raise ValueError("fetch_max_wait_ms must be below request_timeout_ms")
        if max_poll_records < 1 or fetch_max_bytes < 1 or max_partition_fetch_bytes < 1:
            raise ValueError("max_poll_records, fetch_max_bytes and max_partition_fetch_bytes must be >= 1")
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id or f"replog-consumer-{next(_client_ids)}"
        self.auto_offset_reset = auto_offset_reset
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.max_poll_records = max_poll_records
        self.check_crcs = check_crcs
        self.isolation_level = ISOLATION_LEVELS[isolation_level]
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.default_api_timeout_ms = default_api_timeout_ms
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.enable_auto_commit = group_id is not None if enable_auto_commit is None else enable_auto_commit
        if self.enable_auto_commit and group_id is None:
            raise ValueError("enable_auto_commit needs a group_id")
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.partition_assignment_strategy = tuple(partition_assignment_strategy)
        self._group: GroupCoordinator | None = None
        self._subscription: tuple[list[str], re.Pattern[str] | None, dict[str, Callback | None]] | None = None
        self._assigned: dict[TopicPartition, _PartitionState] = {}
        self._completed: deque[tuple[int, _CompletedFetch]] = deque()  # (node, fetch)
        self._buffered_per_node: dict[int, int] = {}
        self._fetchers: dict[int, asyncio.Task[None]] = {}
        self._reset_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._fatal: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._data = Wakeup(self._loop)  # poll waits on it: new data, errors, resets
        self._space: dict[int, Wakeup] = {}  # per node: the fetcher waits on it for buffer room
        self.cluster = Cluster.for_client(self)
        try:
            await self.cluster.start()
        except BaseException:
            await self.cluster.close()
            raise
        self.cluster.add_listener(self._on_cluster_change)
        self._started = True
        if self.group_id is not None:
            self._group = GroupCoordinator(
                self, self.cluster, group_id=self.group_id, group_instance_id=self.group_instance_id,
                session_timeout_ms=self.session_timeout_ms, heartbeat_interval_ms=self.heartbeat_interval_ms,
                max_poll_interval_ms=self.max_poll_interval_ms, assignors=self.partition_assignment_strategy,
                enable_auto_commit=self.enable_auto_commit, auto_commit_interval_ms=self.auto_commit_interval_ms,
                request_timeout_ms=self.request_timeout_ms, default_api_timeout_ms=self.default_api_timeout_ms,
                retry_backoff_ms=self.retry_backoff_ms, retry_backoff_max_ms=self.retry_backoff_max_ms,
                metadata_max_age_ms=self.metadata_max_age_ms)
            if self._subscription is not None:
                topics, pattern, callbacks = self._subscription
                self._group.subscribe(topics, pattern, on_revoked=callbacks["revoked"],
                                      on_assigned=callbacks["assigned"], on_lost=callbacks["lost"])
                self._group.start()
        if self._assigned:
            self.cluster.add_topics({tp[0] for tp in self._assigned})

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        if self._group is not None:
            positions = self._group_positions() if self.enable_auto_commit else None
            try:
                await self._group.close(commit_offsets=positions)
            except Exception:  # close must go on (connections, tasks) whatever the group did
                log.exception("group %s: close failed", self.group_id)
        self._closed = True
        tasks = [*self._fetchers.values(), *([self._reset_task] if self._reset_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._fetchers.clear()
        self._completed.clear()
        await self.cluster.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")

    # ------------------------------------------------------------------ assignment and positions
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment. Positions of partitions that stay assigned are kept."""
        self._check_open()
        if self._subscription is not None:
            raise ClientError("assign() and subscribe() exclude each other: unsubscribe() first")
        self._assign(partitions)

    def _assign(self, partitions: Iterable[TopicPartition]) -> None:
        wanted = [(str(t), int(p)) for t, p in partitions]
        if len(wanted) > ASSIGNMENT_PARTITIONS_MAX:
            raise ValueError(f"more than {ASSIGNMENT_PARTITIONS_MAX} partitions")
        old = self._assigned
        self._assigned = {tp: old.get(tp) or _PartitionState() for tp in wanted}
        for tp, state in old.items():
            if tp not in self._assigned:
                state.generation += 1  # drop its buffered data
        if self._started:
            self.cluster.add_topics({tp[0] for tp in wanted})
            self._data.set()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    # ------------------------------------------------------------------ groups
    def subscribe(self, topics: Iterable[str] | None = None, *, pattern: str | re.Pattern[str] | None = None,
                  on_partitions_revoked: Callback | None = None, on_partitions_assigned: Callback | None = None,
                  on_partitions_lost: Callback | None = None) -> None:
        """Join the group for `topics`, or for every topic whose whole name matches `pattern`.

        Callbacks take the list of partitions (plain functions or coroutine functions). Revoked is
        called before a rebalance gives the partitions up (after the auto commit), lost instead of it
        when they were taken away (generation ended; default: the revoked callback), assigned after
        a new assignment and before the committed offsets are looked up (a seek there wins).
        """
        self._check_open()
        if self.group_id is None:
            raise ClientError("subscribe() needs a group_id")
        if (topics is None) == (pattern is None):
            raise ValueError("give topics or pattern, not both and not neither")
        if self._subscription is None and self._assigned:
            raise ClientError("assign() and subscribe() exclude each other: assign([]) first")
        names = sorted({str(t) for t in topics or ()})
        if topics is not None and not names:
            self.unsubscribe()
            return
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        callbacks = {"revoked": on_partitions_revoked, "assigned": on_partitions_assigned, "lost": on_partitions_lost}
        self._subscription = (names, compiled, callbacks)
        if self._group is not None:
            self._group.subscribe(names, compiled, on_revoked=on_partitions_revoked,
                                  on_assigned=on_partitions_assigned, on_lost=on_partitions_lost)
            self._group.start()

    def unsubscribe(self) -> None:
        """Drop the subscription and the assignment now; in the background the revoke callback runs
        (after the auto commit) and the member leaves the group."""
        self._subscription = None
        if self._group is not None:
            self._group.unsubscribe()
            self._assign([])

    def subscription(self) -> set[str]:
        """The subscribed topics (for a pattern: the topics it matched at the last join)."""
        if self._subscription is None:
            return set()
        if self._subscription[1] is not None and self._group is not None:
            return set(self._group.subscribed_topics)
        return set(self._subscription[0])

    def _require_group(self) -> GroupCoordinator:
        self._check_open()
        if self.group_id is None:
            raise ClientError("commit() and committed() need a group_id")
        if self._group is None:
            raise ClientClosedError("the consumer is not started")
        return self._group

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit `offsets` ({tp: offset of the next record to read}), default every assigned position.

        Waits for the coordinator's answer (retrying retriable errors up to default_api_timeout_ms).
        Raises CommitFailedError when the member's generation ended (a rebalance took the partitions).
        """
        group = self._require_group()
        if offsets is not None:
            offsets = {(str(tp[0]), int(tp[1])): int(o) for tp, o in offsets.items()}
            if any(o < 0 for o in offsets.values()):
                raise ValueError("offsets must be >= 0")
        await group.commit(offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for `tp`, or None."""
        group = self._require_group()
        tp = (str(tp[0]), int(tp[1]))
        return (await group.committed([tp])).get(tp)

    # the GroupHost interface (client/group/coordinator.py)
    def _group_assign(self, partitions: list[TopicPartition]) -> None:
        self._assign(partitions)
        for state in self._assigned.values():
            if state.position is None and state.reset is None:
                state.awaiting_committed = True
        self._data.set()

    def _group_awaiting(self) -> list[TopicPartition]:
        return [tp for tp, state in self._assigned.items() if state.awaiting_committed]

    def _group_seek_committed(self, offsets: Mapping[TopicPartition, int | None]) -> None:
        for tp, offset in offsets.items():
            state = self._assigned.get(tp)
            if state is None or not state.awaiting_committed:
                continue
            if offset is not None:
                state.seek(offset)
            else:
                state.awaiting_committed = False  # the next poll resets it by auto_offset_reset
        self._wake_fetchers()
        self._data.set()

    def _group_positions(self) -> dict[TopicPartition, int]:
        return {tp: state.position for tp, state in self._assigned.items()
                if state.position is not None and not state.awaiting_committed}

    def _group_notify(self) -> None:
        self._data.set()

    def _state(self, tp: TopicPartition) -> _PartitionState:
        state = self._assigned.get((tp[0], tp[1]))
        if state is None:
            raise ValueError(f"partition {tp} is not assigned")
        return state

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """The next poll returns records from `offset` on (after an out-of-range answer: auto_offset_reset)."""
        self._check_open()
        if offset < 0:
            raise ValueError("offset must be >= 0")
        self._state(tp).seek(offset)
        self._wake_fetchers()

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move to the log start offset (evaluated at the next poll/position). No arguments: all assigned."""
        self._seek_to("earliest", partitions)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Move to the high watermark (evaluated at the next poll/position). No arguments: all assigned."""
        self._seek_to("latest", partitions)

    def _seek_to(self, where: str, partitions: Sequence[TopicPartition]) -> None:
        self._check_open()
        for tp in partitions or list(self._assigned):
            state = self._state(tp)
            state.reset = where
            state.position = state.fetch_offset = None
            state.error = None
            state.generation += 1
        self._wake_fetchers()

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record poll returns for `tp` (resolving a pending reset first)."""
        self._check_open()
        state = self._state(tp)
        deadline = self._loop.time() + self.default_api_timeout_ms / 1000
        while state.position is None or state.reset is not None:
            self._raise_errors()
            self._start_resets()
            task = self._reset_task
            if task is not None:
                with contextlib.suppress(KafkaError):
                    async with asyncio.timeout(max(deadline - self._loop.time(), 0.001)):
                        await asyncio.shield(task)
            if self._loop.time() >= deadline:
                raise KafkaTimeoutError(f"position of {tp} not resolved in {self.default_api_timeout_ms} ms")
            state = self._state(tp)
        return state.position

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's high watermark from the last fetch response, or None."""
        hw = self._state(tp).high_watermark
        return hw if hw >= 0 else None

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await list_offsets(self.cluster, dict.fromkeys(partitions, EARLIEST_TIMESTAMP),
                                   isolation_level=self.isolation_level, timeout_ms=self.default_api_timeout_ms)
        return {tp: v.offset for tp, v in found.items()}

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await list_offsets(self.cluster, dict.fromkeys(partitions, LATEST_TIMESTAMP),
                                   isolation_level=self.isolation_level, timeout_ms=self.default_api_timeout_ms)
        return {tp: v.offset for tp, v in found.items()}

    # ------------------------------------------------------------------ poll
    async def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records fetched for the assigned partitions, up to max_records (default max_poll_records).

        Waits up to `timeout_ms` for the first records; returns [] if none arrive. Raises
        OffsetOutOfRangeError / NoOffsetForPartitionError / CorruptRecordError / other KafkaErrors
        for partition problems (module docstring).
        """
        self._check_open()
        if not self._started:
            raise ClientClosedError("the consumer is not started")
        limit = self.max_poll_records if max_records is None else max_records
        deadline = self._loop.time() + max(timeout_ms, 0) / 1000
        if self._group is not None:
            self._group.on_poll(self._group_positions())
        while True:
            if self._group is not None and self._group.fatal is not None:
                raise self._group.fatal
            self._raise_errors()
            records = self._drain(limit)
            if records:
                return records
            self._start_resets()
            self._ensure_fetchers()
            left = deadline - self._loop.time()
            if left <= 0:
                return []
            await self._data.wait(left)

    def _raise_errors(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        for state in self._assigned.values():
            error = state.error
            if error is None:
                continue
            if not isinstance(error, OffsetOutOfRangeError | NoOffsetForPartitionError):
                state.error = None  # raised once; the partition is fetched again
                self._wake_fetchers()
            raise error

    def _drain(self, limit: int) -> list[ConsumerRecord]:
        out: list[ConsumerRecord] = []
        completed = self._completed
        while completed and len(out) < limit:
            node, fetch = completed[0]
            state = self._assigned.get(fetch.tp)
            if state is None or state.generation != fetch.generation or state.position is None:
                self._consumed(node)
                continue
            try:
                records, exhausted = fetch.take(limit - len(out), state, self.check_crcs)
            except CorruptRecordError as exc:
                self._consumed(node)
                state.fetch_offset = state.position  # refetch from the position
                state.generation += 1
                if out:  # return what is good first; the error comes with the next poll
                    state.error = exc
                    return out
                raise
            out.extend(records)
            if exhausted:
                self._consumed(node)
        return out

    def _consumed(self, node: int) -> None:
        self._completed.popleft()
        self._buffered_per_node[node] -= 1
        space = self._space.get(node)
        if space is not None:
            space.set()

    # ------------------------------------------------------------------ offset resets
    def _start_resets(self) -> None:
        if self._reset_task is not None and not self._reset_task.done():
            return
        needed = {}
        for tp, state in self._assigned.items():
            if state.awaiting_committed:
                continue
            if state.reset is not None:
                needed[tp] = state.reset
            elif state.position is None and state.error is None:
                if self.auto_offset_reset == "none":
                    state.error = NoOffsetForPartitionError(f"{tp[0]}-{tp[1]} has no position and "
                                                            "auto_offset_reset is 'none'")
                    continue
                needed[tp] = state.reset = self.auto_offset_reset
        if needed:
            self._reset_task = self._loop.create_task(self._reset(needed))

    async def _reset(self, needed: dict[TopicPartition, str]) -> None:
        generations = {tp: self._assigned[tp].generation for tp in needed if tp in self._assigned}
        timestamps = {tp: EARLIEST_TIMESTAMP if where == "earliest" else LATEST_TIMESTAMP
                      for tp, where in needed.items()}
        try:
            found = await list_offsets(self.cluster, timestamps, isolation_level=self.isolation_level,
                                       timeout_ms=self.default_api_timeout_ms)
        except KafkaError as exc:
            for tp in needed:
                state = self._assigned.get(tp)
                if state is not None and state.generation == generations.get(tp):
                    state.error = exc
                    state.reset = None
            self._data.set()
            return
        for tp, answer in found.items():
            state = self._assigned.get(tp)
            if state is not None and state.generation == generations.get(tp):
                state.seek(answer.offset)
        self._data.set()
        self._wake_fetchers()

    # ------------------------------------------------------------------ fetching
    def _on_cluster_change(self) -> None:
        self._wake_fetchers()

    def _wake_fetchers(self) -> None:
        if not self._started or self._closed:
            return
        self._ensure_fetchers()
        for space in self._space.values():
            space.set()

    def _ensure_fetchers(self) -> None:
        if self._closed:
            return
        self.cluster.maybe_refresh()
        leader = self.cluster.metadata.leader
        nodes = set()
        for tp, state in self._assigned.items():
            if state.fetch_offset is None:
                continue
            node = leader(tp)
            if node < 0:
                self.cluster.request_update()
                continue
            nodes.add(node)
        for node in nodes:
            task = self._fetchers.get(node)
            if task is None or task.done():
                if node not in self._space:
                    self._space[node] = Wakeup(self._loop)
                task = self._loop.create_task(self._fetch_loop(node), name=f"{self.client_id}-fetch-{node}")
                task.add_done_callback(self._fetcher_done)
                self._fetchers[node] = task

    def _fetcher_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: surface it from poll rather than stall silently
            log.error("fetcher %s crashed", task.get_name(), exc_info=exc)
            self._fatal = exc
            self._data.set()

    async def _fetch_loop(self, node: int) -> None:
        """Fetch from one broker while it leads fetchable assigned partitions (module docstring)."""
        space = self._space[node]
        failures = 0
        order = 0
        while not self._closed:
            if self._buffered_per_node.get(node, 0) >= FETCH_RESPONSES_BUFFERED_MAX:
                await space.wait(self.fetch_max_wait_ms / 1000)
                continue
            now = self._loop.time()
            leader = self.cluster.metadata.leader
            tps = [tp for tp, state in self._assigned.items() if leader(tp) == node and state.fetchable(now)]
            if not tps:
                waiting = [s.retry_at for tp, s in self._assigned.items() if leader(tp) == node and s.retry_at > now]
                if not waiting:
                    return  # nothing for this broker; _ensure_fetchers starts a new task when needed
                await space.wait(min(waiting) - now)
                continue
            order = (order + 1) % len(tps)
            tps = tps[order:] + tps[:order]  # rotate so no partition is always last under fetch_max_bytes
            try:
                connection = await self.cluster.connection(node)
                version = self.cluster.version(connection, ApiKey.FETCH)
                sent = {tp: (self._assigned[tp].generation, self._assigned[tp].fetch_offset) for tp in tps}
                response = await connection.request(ApiKey.FETCH, version, self._fetch_body(sent))
            except KafkaError as exc:
                failures += 1
                self.cluster.request_update()
                log.debug("fetch from node %d failed: %s", node, exc)
                if not exc.retriable:
                    for tp in tps:
                        if tp in self._assigned:
                            self._assigned[tp].error = exc
                    self._data.set()
                await space.wait(min(self.retry_backoff_ms << min(failures - 1, 20), self.retry_backoff_max_ms) / 1000)
                continue
            failures = 0
            if response.get("error_code"):
                code = error_code_for(response["error_code"])
                log.debug("fetch from node %d: %s", node, code.name)
                await space.wait(self.retry_backoff_ms / 1000)
                continue
            self._handle_fetch(node, response, sent)

    def _fetch_body(self, sent: dict[TopicPartition, tuple[int, int | None]]) -> dict[str, Any]:
        topics: dict[str, list[dict[str, Any]]] = {}
        epoch = self.cluster.metadata.leader_epoch
        for tp, (_generation, offset) in sent.items():
            topics.setdefault(tp[0], []).append({
                "partition": tp[1], "current_leader_epoch": epoch(tp), "fetch_offset": offset,
                "last_fetched_epoch": -1, "log_start_offset": -1,
                "partition_max_bytes": self.max_partition_fetch_bytes})
        return {"replica_id": -1, "max_wait_ms": self.fetch_max_wait_ms, "min_bytes": self.fetch_min_bytes,
                "max_bytes": self.fetch_max_bytes, "isolation_level": self.isolation_level, "session_id": 0,
                "session_epoch": -1, "topics": [{"topic": t, "partitions": p} for t, p in topics.items()],
                "forgotten_topics_data": [], "rack_id": ""}

    def _handle_fetch(self, node: int, response: dict[str, Any],
                      sent: dict[TopicPartition, tuple[int, int | None]]) -> None:
        now = self._loop.time()
        got_data = False
        for topic in response["responses"]:
            name = topic["topic"]
            for part in topic["partitions"]:
                tp = (name, part["partition_index"])
                state = self._assigned.get(tp)
                asked = sent.get(tp)
                if state is None or asked is None or state.generation != asked[0] or state.fetch_offset != asked[1]:
                    continue  # sought, reset or unassigned meanwhile
                code = part["error_code"]
                if code:
                    self._partition_error(tp, state, error_code_for(code), asked[1], now)
                    got_data = True
                    continue
                state.failures = 0
                state.high_watermark = part["high_watermark"]
                state.log_start_offset = part.get("log_start_offset", -1)
                records = part["records"]
                if records is None or not len(records):
                    continue
                next_offset = _next_fetch_offset(records, asked[1] or 0)
                if next_offset == asked[1]:
                    continue  # only a partial batch: ask again (the broker returns one whole batch first)
                state.fetch_offset = next_offset
                self._completed.append((node, _CompletedFetch(tp, state.generation, records)))
                self._buffered_per_node[node] = self._buffered_per_node.get(node, 0) + 1
                got_data = True
        if got_data:
            self._data.set()

    def _partition_error(self, tp: TopicPartition, state: _PartitionState, code: ErrorCode, offset: int | None,
                         now: float) -> None:
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            if self.auto_offset_reset == "none":
                state.error = OffsetOutOfRangeError(f"{tp[0]}-{tp[1]}: fetch offset {offset} is out of range",
                                                    code=code)
                state.generation += 1
            else:
                log.info("%s-%d: offset %s out of range, resetting to %s", tp[0], tp[1], offset, self.auto_offset_reset)
                state.reset = self.auto_offset_reset
                state.position = state.fetch_offset = None
                state.generation += 1
                self._start_resets()
            return
        if code.retriable:
            if code.refresh_metadata or code == ErrorCode.UNKNOWN_LEADER_EPOCH:
                if code != ErrorCode.UNKNOWN_LEADER_EPOCH:
                    self.cluster.metadata.forget_leader(tp)
                self.cluster.request_update()
            state.failures += 1
            state.retry_at = now + min(self.retry_backoff_ms << min(state.failures - 1, 20),
                                       self.retry_backoff_max_ms) / 1000
            return
        state.error = broker_error(code, context=f"Fetch {tp[0]}-{tp[1]}")
