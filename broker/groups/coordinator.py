"""The group coordinator: the asyncio driver of broker/groups/state.py on every broker.

Placement (Kafka's): the coordinator of group G is the leader of partition
`java_abs(java_string_hashcode(G)) % offsets.topic.num.partitions` of `__consumer_offsets`. The
topic is created on the first FindCoordinator (through the controller in quorum mode), compacted,
with RF `offsets.topic.replication.factor` (-1: min(3, configured voters), a static figure, never
the live broker count, so a topic created while brokers are down is not under-replicated for ever:
creation waits until enough brokers are up, and clients see COORDINATOR_NOT_AVAILABLE meanwhile).

Shards: one `Shard` per `__consumer_offsets` partition this broker leads, keyed by partition
index. `broker.role_listeners` tells us when leadership starts or stops:

* start (or a new leader epoch): the shard is LOADING (group requests get
  COORDINATOR_LOAD_IN_PROGRESS) while a task replays the partition's log from its start to its
  end, in slices that yield to the event loop; then LOADED. The last record per key wins: group
  metadata (members, generation, assignment) and committed offsets; tombstones delete.
* stop: the shard is dropped at once; every JoinGroup/SyncGroup waiting in it is answered
  NOT_COORDINATOR, and every write in flight fails NOT_COORDINATOR as well (its wait sees the
  role change: `Partition.hw_changed` wakes on every role or epoch change).

Persistence: state changes that must survive a failover (each completed join phase, each
assignment, each offset commit, deletions) are appended to the shard's partition *synchronously*
in the order the state machine made them, then answered only once the high watermark passes the
record (the acks=all rule, bounded by `offsets.commit.timeout.ms`; below `min.insync.replicas`
nothing is appended). Store errors map as Kafka maps them: NOT_LEADER → NOT_COORDINATOR;
NOT_ENOUGH_REPLICAS(_AFTER_APPEND) or a timeout → COORDINATOR_NOT_AVAILABLE; a record too large →
INVALID_COMMIT_OFFSET_SIZE for commits. Committed offsets enter memory only after the high
watermark passes them, and a later record always wins over an earlier one that completes late.

Timers: one task sleeps until the earliest group deadline (session expiry, rebalance timeout,
initial delay, pending member id) in a heap, or until woken because an earlier deadline appeared.
The offsets retention pass (`offsets.retention.check.interval.ms`) deletes the offsets of groups
that have been Empty for `offsets.retention.minutes`, and Empty groups without offsets.

Bounds: groups per coordinator (`group.coordinator.groups.max`), members per group
(`group.max.size`), protocol metadata and assignment sizes (state.GroupLimits), offset metadata
(`offset.metadata.max.bytes`), committed partitions per group (OFFSETS_PER_GROUP_MAX).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.groups import records as rec
from broker.groups.state import (
    EMPTY,
    CommittedOffset,
    Group,
    GroupLimits,
    GroupOffsets,
    JoinRequest,
    Persist,
    Reply,
    join_body,
    sync_body,
)
from broker.partition import Partition
from broker.tasks import cancel_and_wait
from broker.topic_store import TopicError
from client.wire.errors import ErrorCode
from client.wire.records import build_batch, decode_records

if TYPE_CHECKING:
    from broker.broker import Broker

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PER_GROUP_MAX = 100_000
LOAD_YIELD_EVERY_BATCHES = 32
MEMBER_ID_CLIENT_ID_CHARS_MAX = 64


def java_string_hashcode(text: str) -> int:
    """Java's String.hashCode over UTF-16 code units, as a signed int32."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group_id: str, partitions: int) -> int:
    """Kafka's Utils.abs(groupId.hashCode) % partitions (abs(MIN_VALUE) is 0 there)."""
    h = java_string_hashcode(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def now_ms() -> int:
    return int(time.time() * 1000)


def _store_error(error: int, commit: bool) -> int:
    if error in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.NOT_COORDINATOR):
        return ErrorCode.NOT_COORDINATOR
    if error in (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_ENOUGH_REPLICAS,
                 ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, ErrorCode.REQUEST_TIMED_OUT,
                 ErrorCode.COORDINATOR_NOT_AVAILABLE):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if error in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE, ErrorCode.INVALID_COMMIT_OFFSET_SIZE):
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE if commit else ErrorCode.UNKNOWN_SERVER_ERROR
    return error


@dataclass
class Shard:
    """The groups of one __consumer_offsets partition this broker leads."""

    index: int
    partition: Partition
    leader_epoch: int
    loaded: bool = False
    groups: dict[str, Group] = field(default_factory=dict)
    offsets: dict[str, GroupOffsets] = field(default_factory=dict)
    load_task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class OffsetCommitEntry:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None


class GroupCoordinator:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        config = broker.config
        self.num_partitions: int = config.offsets_topic_num_partitions
        self.limits = GroupLimits(min_session_timeout_ms=config.group_min_session_timeout_ms,
                                  max_session_timeout_ms=config.group_max_session_timeout_ms,
                                  initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
                                  members_max=config.group_max_size)
        self.groups_max: int = config.group_coordinator_groups_max
        self.commit_timeout_ms: int = config.offsets_commit_timeout_ms
        self.retention_ms: int = config.offsets_retention_minutes * 60_000
        self.retention_check_interval_ms: int = config.offsets_retention_check_interval_ms
        self.offset_metadata_bytes_max: int = config.offset_metadata_max_bytes
        self.shards: dict[int, Shard] = {}
        self._waiting: dict[int, tuple[int, asyncio.Future[dict[str, Any]]]] = {}  # token -> (shard, reply)
        self._tokens = itertools.count(1)
        self._timers: list[tuple[int, int, str]] = []           # (deadline, shard index, group id)
        self._scheduled: dict[tuple[int, str], int] = {}        # earliest live heap entry per group
        self._wake = asyncio.Event()  # an earlier deadline appeared (no loop binding before first use)
        self._tasks: list[asyncio.Task[None]] = []
        self._persists: set[asyncio.Task[None]] = set()
        self._create_lock = asyncio.Lock()
        broker.role_listeners.append(self.on_role_change)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._load_led_partitions()
        self._tasks.append(asyncio.create_task(self._timer_loop(), name="group-timers"))

    async def stop(self) -> None:
        for index in list(self.shards):
            self._unload(index)
        await cancel_and_wait(self._tasks + list(self._persists))

    # ------------------------------------------------------------------ placement and topic
    def replication_factor(self) -> int:
        configured: int = self.broker.config.offsets_topic_replication_factor
        if configured > 0:
            return configured
        if self.broker.quorum is None:
            return 1
        return min(3, len(self.broker.config.voter_map))

    async def ensure_offsets_topic(self) -> int:
        """Create __consumer_offsets if missing; NONE once it exists here, else an error code."""
        broker = self.broker
        if broker.topics.get(OFFSETS_TOPIC) is not None:
            return ErrorCode.NONE
        async with self._create_lock:
            if broker.topics.get(OFFSETS_TOPIC) is not None:
                return ErrorCode.NONE
            configs = {"cleanup.policy": "compact",
                       "segment.bytes": str(broker.config.offsets_topic_segment_bytes)}
            rf = self.replication_factor()
            if broker.quorum is not None:
                results = await broker.quorum.create_topics([{
                    "name": OFFSETS_TOPIC, "num_partitions": self.num_partitions, "replication_factor": rf,
                    "configs": configs}])
                error = results[0]["error_code"]
                if error and error != ErrorCode.TOPIC_ALREADY_EXISTS:
                    log.warning("cannot create %s (RF %d): %s %s", OFFSETS_TOPIC, rf, ErrorCode(error).name,
                                results[0].get("message"))
            else:
                try:
                    broker.create_topic(OFFSETS_TOPIC, self.num_partitions, 1, configs)
                except TopicError as exc:
                    log.warning("cannot create %s: %s", OFFSETS_TOPIC, exc)
                self._load_led_partitions()
                await asyncio.gather(*(s.load_task for s in self.shards.values() if s.load_task is not None),
                                     return_exceptions=True)
        return ErrorCode.NONE if broker.topics.get(OFFSETS_TOPIC) is not None else ErrorCode.COORDINATOR_NOT_AVAILABLE

    def partition_count(self) -> int:
        """The existing topic's partition count wins over the setting (it cannot change after creation)."""
        info = self.broker.topics.get(OFFSETS_TOPIC)
        return info.partitions if info is not None else self.num_partitions

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.partition_count())

    async def find_coordinator(self, key: str) -> tuple[int, int, str, int]:
        """(error, node id, host, port) of the coordinator of group `key`."""
        if not key:
            return ErrorCode.INVALID_REQUEST, -1, "", -1
        error = await self.ensure_offsets_topic()
        if error:
            return error, -1, "", -1
        index = self.partition_for(key)
        broker = self.broker
        if broker.quorum is None:
            host, port = broker.advertised_host_port
            return ErrorCode.NONE, broker.node_id, host, port
        image = broker.quorum.image
        topic = image.topic(OFFSETS_TOPIC)
        if topic is None or index >= topic.partition_count:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, "", -1
        leader = topic.partitions[index].leader
        if leader == broker.node_id:
            host, port = broker.advertised_host_port
            return ErrorCode.NONE, leader, host, port
        reg = image.brokers.get(leader)
        if reg is None or reg.fenced or not reg.listeners:  # no leader now (-1), or one being fenced
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, "", -1
        return ErrorCode.NONE, leader, reg.listeners[0].host, reg.listeners[0].port

    # ------------------------------------------------------------------ loading and unloading
    def on_role_change(self, partition: Partition) -> None:
        if partition.topic != OFFSETS_TOPIC:
            return
        index = partition.index
        shard = self.shards.get(index)
        current = self.broker.partitions.get(partition.tp) is partition
        if current and partition.is_leader:
            if shard is not None and shard.partition is partition and shard.leader_epoch == partition.leader_epoch:
                return
            self._unload(index)
            self._start_load(partition)
        elif shard is not None and (shard.partition is partition or not current):
            self._unload(index)

    def _load_led_partitions(self) -> None:
        """Single-node mode has no role changes: partitions led since startup or creation load here."""
        if self.broker.quorum is not None:
            return
        for (topic, _index), partition in list(self.broker.partitions.items()):
            if topic == OFFSETS_TOPIC:
                self.on_role_change(partition)

    def _start_load(self, partition: Partition) -> Shard:
        shard = Shard(partition.index, partition, partition.leader_epoch)
        self.shards[partition.index] = shard
        shard.load_task = asyncio.get_running_loop().create_task(self._load(shard),
                                                                 name=f"load-{OFFSETS_TOPIC}-{partition.index}")
        return shard

    def _unload(self, index: int) -> None:
        shard = self.shards.pop(index, None)
        if shard is None:
            return
        if shard.load_task is not None and not shard.load_task.done():
            shard.load_task.cancel()
        for token, (shard_index, _future) in list(self._waiting.items()):
            if shard_index == index:
                self._resolve(token, {"error_code": ErrorCode.NOT_COORDINATOR})
        if shard.loaded:
            log.info("%s-%d: unloaded %d groups", OFFSETS_TOPIC, index, len(shard.groups))

    async def _load(self, shard: Shard) -> None:
        started = time.monotonic()
        try:
            values, offsets = await self._replay(shard)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. a corrupt batch: the next request for one of its groups tries again
            log.exception("%s-%d: loading groups failed", OFFSETS_TOPIC, shard.index)
            if self.shards.get(shard.index) is shard:
                del self.shards[shard.index]
            return
        if self.shards.get(shard.index) is not shard:
            return
        now = now_ms()
        for group_id in set(values) | set(offsets):
            value = values.get(group_id)
            group = (Group.from_value(group_id, value, self.limits, now) if value is not None
                     else Group(group_id, self.limits))
            shard.groups[group_id] = group
            shard.offsets[group_id] = offsets.get(group_id, GroupOffsets())
            self._schedule(shard, group)
        shard.loaded = True
        log.info("%s-%d: loaded %d groups in %.3f s (leader epoch %d)", OFFSETS_TOPIC, shard.index,
                 len(shard.groups), time.monotonic() - started, shard.leader_epoch)

    async def _replay(self, shard: Shard) -> tuple[dict[str, rec.GroupValue], dict[str, GroupOffsets]]:
        """The last record per key, from the log start to its end when loading began."""
        log_ = shard.partition.log
        end = log_.log_end_offset
        values: dict[str, rec.GroupValue] = {}
        offsets: dict[str, GroupOffsets] = {}
        for count, (header, data) in enumerate(log_.batches(log_.log_start_offset)):
            if header.base_offset >= end:
                break
            if count % LOAD_YIELD_EVERY_BATCHES == LOAD_YIELD_EVERY_BATCHES - 1:
                await asyncio.sleep(0)
            if header.is_control:
                continue
            for record in decode_records(data):
                if record.key is None:
                    continue
                try:
                    self._replay_record(record.key, record.value, record.offset, values, offsets)
                except rec.RecordFormatError as exc:
                    log.warning("%s-%d: skipping record at offset %d: %s", OFFSETS_TOPIC, shard.index,
                                record.offset, exc)
        return values, offsets

    @staticmethod
    def _replay_record(key_bytes: bytes, value_bytes: bytes | None, offset: int, values: dict[str, rec.GroupValue],
                       offsets: dict[str, GroupOffsets]) -> None:
        key = rec.decode_key(key_bytes)
        if isinstance(key, rec.GroupKey):
            if value_bytes is None:
                values.pop(key.group_id, None)
            else:
                values[key.group_id] = rec.decode_group_value(value_bytes)
            return
        group_offsets = offsets.setdefault(key.group_id, GroupOffsets())
        tp = (key.topic, key.partition)
        if value_bytes is None:
            group_offsets.apply(tp, None, offset)
            if not group_offsets.offsets:
                offsets.pop(key.group_id, None)
            return
        v = rec.decode_offset_value(value_bytes)
        group_offsets.apply(tp, CommittedOffset(v.offset, v.leader_epoch, v.metadata, v.commit_timestamp_ms, offset),
                            offset)

    def _shard(self, group_id: str) -> tuple[Shard | None, int]:
        """The loaded shard of `group_id`, or NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS."""
        if not group_id:
            return None, ErrorCode.INVALID_GROUP_ID
        if self.broker.topics.get(OFFSETS_TOPIC) is None:
            return None, ErrorCode.NOT_COORDINATOR
        index = self.partition_for(group_id)
        partition = self.broker.partitions.get((OFFSETS_TOPIC, index))
        if partition is None or not partition.is_leader or not self.broker.may_lead():
            return None, ErrorCode.NOT_COORDINATOR
        shard = self.shards.get(index)
        if shard is None or shard.partition is not partition or shard.leader_epoch != partition.leader_epoch:
            # single-node mode has no role changes: a partition led since startup loads on first use
            self._unload(index)
            self._start_load(partition)
            return None, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        if not shard.loaded:
            return None, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return shard, ErrorCode.NONE

    def _group_count(self) -> int:
        return sum(len(s.groups) for s in self.shards.values())

    def _get_or_create(self, shard: Shard, group_id: str) -> Group | None:
        group = shard.groups.get(group_id)
        if group is None:
            if self._group_count() >= self.groups_max:
                return None
            group = shard.groups[group_id] = Group(group_id, self.limits)
            group.state_timestamp_ms = now_ms()  # Empty since now (offsets retention counts from here)
            shard.offsets[group_id] = GroupOffsets()
        return group

    # ------------------------------------------------------------------ actions
    def _register(self, shard: Shard) -> tuple[int, asyncio.Future[dict[str, Any]]]:
        token = next(self._tokens)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (shard.index, future)
        return token, future

    def _resolve(self, token: int, body: dict[str, Any]) -> None:
        entry = self._waiting.pop(token, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(body)

    def _apply(self, shard: Shard, group: Group, actions: Sequence[Reply | Persist]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                self._resolve(action.token, action.body)
            else:
                self._persist(shard, action)
        self._schedule(shard, group)

    def _persist(self, shard: Shard, action: Persist) -> None:
        key = rec.encode_group_key(rec.GroupKey(action.group_id))
        value = None if action.value is None else rec.encode_group_value(action.value)
        error, end = self._append(shard, [(key, value)])
        if error:
            self._persist_done(shard, action, _store_error(error, commit=False))
            return
        task = asyncio.get_running_loop().create_task(self._await_persist(shard, action, end))
        self._persists.add(task)
        task.add_done_callback(self._persists.discard)

    async def _await_persist(self, shard: Shard, action: Persist, end: int) -> None:
        error = await self._committed(shard, end)
        self._persist_done(shard, action, _store_error(error, commit=False) if error else ErrorCode.NONE)

    def _persist_done(self, shard: Shard, action: Persist, error: int) -> None:
        for reply in action.replies:
            body = reply.body
            if error:
                body = dict(body, error_code=error)
                if "members" in body:
                    body.update(generation_id=-1, leader="", members=[], protocol_name=None)
                if "assignment" in body:
                    body["assignment"] = b""
            self._resolve(reply.token, body)
        if error:
            log.warning("group %s: storing generation %d failed: %s", action.group_id, action.generation_id,
                        ErrorCode(error).name)
            group = shard.groups.get(action.group_id)
            if group is not None and self.shards.get(shard.index) is shard:
                self._apply(shard, group, group.persist_failed(now_ms(), action.generation_id))

    def _append(self, shard: Shard, records: list[tuple[bytes, bytes | None]]) -> tuple[int, int]:
        """Append records to the shard's partition as its leader: (error, offset the HW must reach)."""
        broker = self.broker
        partition = shard.partition
        if (broker.partitions.get(partition.tp) is not partition or not partition.is_leader
                or partition.leader_epoch != shard.leader_epoch or not broker.may_lead()):
            return ErrorCode.NOT_COORDINATOR, -1
        if partition.committed_isr_size() < broker.min_insync_replicas(OFFSETS_TOPIC):
            return ErrorCode.NOT_ENOUGH_REPLICAS, -1
        now = now_ms()
        batch = build_batch([(k, v, now, ()) for k, v in records])
        if len(batch) > partition.log.config.max_message_bytes:
            return ErrorCode.MESSAGE_TOO_LARGE, -1
        result = partition.append_as_leader(batch, now, keys_checked=True)
        if result.error:
            return result.error, -1
        return ErrorCode.NONE, result.last_offset + 1

    async def _committed(self, shard: Shard, end: int) -> int:
        """Wait until the high watermark reaches `end` in the epoch the records were appended in."""
        partition = shard.partition
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.commit_timeout_ms / 1000
        while True:
            if (not partition.is_leader or partition.leader_epoch != shard.leader_epoch
                    or self.broker.partitions.get(partition.tp) is not partition):
                return ErrorCode.NOT_COORDINATOR
            if partition.high_watermark >= end:
                return ErrorCode.NONE
            left = deadline - loop.time()
            if left <= 0:
                return ErrorCode.REQUEST_TIMED_OUT
            future = partition.hw_changed()
            try:
                await asyncio.wait([future], timeout=left)
            finally:
                future.cancel()

    # ------------------------------------------------------------------ timers
    def _schedule(self, shard: Shard, group: Group) -> None:
        deadline = group.next_deadline_ms()
        if deadline is None:
            return
        key = (shard.index, group.group_id)
        scheduled = self._scheduled.get(key)
        if scheduled is not None and scheduled <= deadline:
            return
        self._scheduled[key] = deadline
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (deadline, shard.index, group.group_id))
        if earliest is None or deadline < earliest:
            self._wake.set()

    async def _timer_loop(self) -> None:
        next_retention = now_ms() + self.retention_check_interval_ms
        while True:
            now = now_ms()
            while self._timers and self._timers[0][0] <= now:
                deadline, index, group_id = heapq.heappop(self._timers)
                key = (index, group_id)
                if self._scheduled.get(key) != deadline:
                    continue  # superseded by an earlier entry that already ran
                del self._scheduled[key]
                shard = self.shards.get(index)
                group = shard.groups.get(group_id) if shard is not None and shard.loaded else None
                if shard is not None and group is not None:
                    self._apply(shard, group, group.tick(now))
            if now >= next_retention:
                next_retention = now + self.retention_check_interval_ms
                self.expire_offsets(now)
            wake_at = min(self._timers[0][0], next_retention) if self._timers else next_retention
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wake_at - now_ms(), 0) / 1000)

    def expire_offsets(self, now: int) -> None:
        """Offsets retention (KIP-211): an Empty group's offsets expire `offsets.retention.minutes`
        after the group became Empty (or after their commit, if later); an Empty group with no
        offsets left is deleted (once it has been Empty for a check interval: a group created by a
        standalone commit still in flight is not)."""
        for shard in list(self.shards.values()):
            if not shard.loaded:
                continue
            for group_id, group in list(shard.groups.items()):
                if group.state != EMPTY or group.pending_members:
                    continue
                offsets = shard.offsets.get(group_id, GroupOffsets())
                since = max(group.state_timestamp_ms, 0)
                expired = [tp for tp, c in offsets.offsets.items()
                           if max(since, c.commit_timestamp_ms) + self.retention_ms <= now]
                records = [(rec.encode_offset_key(rec.OffsetKey(group_id, t, p)), None) for t, p in expired]
                for tp in expired:
                    del offsets.offsets[tp]
                if not offsets.offsets and (records or since + self.retention_check_interval_ms <= now):
                    if group.generation_id > 0 or records:
                        records.append((rec.encode_group_key(rec.GroupKey(group_id)), None))
                    del shard.groups[group_id]
                    shard.offsets.pop(group_id, None)
                if records:
                    error, _end = self._append(shard, records)
                    if error:
                        log.warning("offsets expiry of group %s not written: %s", group_id, ErrorCode(error).name)

    # ------------------------------------------------------------------ the group APIs
    async def join(self, group_id: str, req: JoinRequest) -> dict[str, Any]:
        shard, error = self._shard(group_id)
        if shard is None:
            return join_body(error, req.member_id)
        group = shard.groups.get(group_id)
        if group is None:
            if req.member_id and req.group_instance_id is None:
                return join_body(ErrorCode.UNKNOWN_MEMBER_ID, req.member_id)
            group = self._get_or_create(shard, group_id)
            if group is None:
                return join_body(ErrorCode.COORDINATOR_NOT_AVAILABLE, req.member_id)
        token, future = self._register(shard)
        try:
            self._apply(shard, group, group.join(now_ms(), token, req))
            return {**join_body(ErrorCode.NONE, req.member_id), **(await future)}
        finally:
            self._waiting.pop(token, None)

    @staticmethod
    def new_member_id(client_id: str, instance_id: str | None) -> str:
        prefix = instance_id if instance_id is not None else client_id
        return f"{prefix[:MEMBER_ID_CLIENT_ID_CHARS_MAX]}-{uuid.uuid4()}"

    async def sync(self, group_id: str, member_id: str, instance_id: str | None, generation_id: int,
                   protocol_type: str | None, protocol_name: str | None,
                   assignments: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
        shard, error = self._shard(group_id)
        if shard is None:
            return sync_body(error)
        group = shard.groups.get(group_id)
        if group is None:
            return sync_body(ErrorCode.UNKNOWN_MEMBER_ID)
        token, future = self._register(shard)
        try:
            self._apply(shard, group, group.sync(now_ms(), token, member_id, instance_id, generation_id,
                                                 protocol_type, protocol_name, assignments))
            return {**sync_body(ErrorCode.NONE), **(await future)}
        finally:
            self._waiting.pop(token, None)

    def heartbeat(self, group_id: str, member_id: str, instance_id: str | None, generation_id: int) -> int:
        shard, error = self._shard(group_id)
        if shard is None:
            return error
        group = shard.groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        error = group.heartbeat(now_ms(), member_id, instance_id, generation_id)
        self._schedule(shard, group)
        return error

    def leave(self, group_id: str, leaving: Sequence[tuple[str, str | None]]) -> tuple[int, list[int]]:
        """(top-level error, per-member errors)."""
        shard, error = self._shard(group_id)
        if shard is None:
            return error, [error] * len(leaving)
        group = shard.groups.get(group_id)
        if group is None:
            return ErrorCode.NONE, [ErrorCode.UNKNOWN_MEMBER_ID] * len(leaving)
        errors, actions = group.leave(now_ms(), leaving)
        self._apply(shard, group, actions)
        return ErrorCode.NONE, errors

    async def commit(self, group_id: str, member_id: str, instance_id: str | None, generation_id: int,
                     entries: Sequence[OffsetCommitEntry]) -> list[int]:
        """One error code per entry. Answered once the commit's record is below the high watermark."""
        shard, error = self._shard(group_id)
        if shard is None:
            return [error] * len(entries)
        group = shard.groups.get(group_id)
        if group is None:
            if generation_id >= 0:  # a commit of a generation this coordinator never had
                return [ErrorCode.ILLEGAL_GENERATION] * len(entries)
            group = self._get_or_create(shard, group_id)
            if group is None:
                return [ErrorCode.COORDINATOR_NOT_AVAILABLE] * len(entries)
        now = now_ms()
        error = group.check_commit(now, member_id, instance_id, generation_id)
        self._schedule(shard, group)
        if error:
            return [error] * len(entries)
        offsets = shard.offsets.setdefault(group_id, GroupOffsets())
        errors = [ErrorCode.NONE] * len(entries)
        records: list[tuple[bytes, bytes | None]] = []
        positions: list[int] = []
        new_partitions = 0
        for i, e in enumerate(entries):
            metadata = e.metadata or ""
            if len(metadata.encode()) > self.offset_metadata_bytes_max:
                errors[i] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                continue
            if (e.topic, e.partition) not in offsets.offsets:
                new_partitions += 1
                if len(offsets.offsets) + new_partitions > OFFSETS_PER_GROUP_MAX:
                    errors[i] = ErrorCode.INVALID_COMMIT_OFFSET_SIZE
                    continue
            records.append((rec.encode_offset_key(rec.OffsetKey(group_id, e.topic, e.partition)),
                            rec.encode_offset_value(rec.OffsetValue(e.offset, e.leader_epoch, metadata, now))))
            positions.append(i)
        if not records:
            return errors
        error, end = self._append(shard, records)
        if not error:
            error = await self._committed(shard, end)
        if error:
            for i in positions:
                errors[i] = _store_error(error, commit=True)
            return errors
        if self.shards.get(shard.index) is shard:
            current = shard.offsets.get(group_id)
            if current is not None:
                first = end - len(records)
                for n, i in enumerate(positions):
                    e = entries[i]
                    committed = CommittedOffset(e.offset, e.leader_epoch, e.metadata or "", now, first + n)
                    current.apply((e.topic, e.partition), committed, first + n)
        return errors

    def fetch_offsets(self, group_id: str,
                      wanted: Sequence[tuple[str, Sequence[int]]] | None) -> tuple[int, list[tuple[str, list[Any]]]]:
        """(error, [(topic, [(partition, offset, leader epoch, metadata)])]); wanted None = all."""
        shard, error = self._shard(group_id)
        if shard is None:
            return error, []
        offsets = shard.offsets.get(group_id, GroupOffsets()).offsets
        if wanted is None:
            by_topic: dict[str, list[int]] = {}
            for topic, index in sorted(offsets):
                by_topic.setdefault(topic, []).append(index)
            wanted = list(by_topic.items())
        out: list[tuple[str, list[Any]]] = []
        for topic, partitions in wanted:
            rows = []
            for index in partitions:
                c = offsets.get((topic, index))
                rows.append((index, -1, -1, "") if c is None else (index, c.offset, c.leader_epoch, c.metadata))
            out.append((topic, rows))
        return ErrorCode.NONE, out

    def list_groups(self) -> tuple[int, list[Group]]:
        loading = any(not s.loaded for s in self.shards.values())
        groups = [g for s in self.shards.values() if s.loaded for g in s.groups.values()]
        return (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS if loading else ErrorCode.NONE), groups

    def describe(self, group_id: str) -> tuple[int, Group | None]:
        shard, error = self._shard(group_id)
        if shard is None:
            return error, None
        return ErrorCode.NONE, shard.groups.get(group_id)

    async def delete(self, group_id: str) -> int:
        shard, error = self._shard(group_id)
        if shard is None:
            return error
        group = shard.groups.get(group_id)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if group.state != EMPTY:
            return ErrorCode.NON_EMPTY_GROUP
        offsets = shard.offsets.pop(group_id, GroupOffsets())
        records: list[tuple[bytes, bytes | None]] = [
            (rec.encode_offset_key(rec.OffsetKey(group_id, t, p)), None) for t, p in sorted(offsets.offsets)]
        records.append((rec.encode_group_key(rec.GroupKey(group_id)), None))
        group.mark_dead(now_ms())
        del shard.groups[group_id]
        error, end = self._append(shard, records)
        if not error:
            error = await self._committed(shard, end)
        return _store_error(error, commit=False) if error else ErrorCode.NONE
