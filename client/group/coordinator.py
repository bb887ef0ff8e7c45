"""The asyncio driver of one consumer-group member: coordinator discovery, join/sync, heartbeats, commits.

Who calls it: `client.consumer.Consumer` owns one `GroupCoordinator` when it has a `group_id`;
`client.admin.Admin` uses the module functions (`find_coordinator`, `fetch_committed`).

The member task (`_run`, one per consumer) does everything that changes membership, in order:

1. FindCoordinator (any broker) until a coordinator is known; then a *dedicated* connection to it
   (as Kafka's clients do), so a JoinGroup that the coordinator holds for up to the rebalance
   timeout never queues behind a Fetch long-poll, nor a Fetch behind it. That connection's request
   timeout is max(request_timeout_ms, rebalance_timeout_ms + 5 s) (Java's join timeout); every
   other group request is bounded by request_timeout_ms on its own.
2. Rebalance (eager protocol): commit the positions snapshot (auto commit, unless the partitions
   are *lost*: ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID / session lost), call
   `on_partitions_revoked` (or `on_partitions_lost`), drop the assignment, JoinGroup (with the
   MEMBER_ID_REQUIRED round trip), the leader computes the assignment with the protocol the
   coordinator picked, SyncGroup, take the assignment (new partitions wait for their committed
   offsets: no fetch, no auto_offset_reset), call `on_partitions_assigned`, then OffsetFetch the
   committed offsets of partitions the callback did not seek (no committed offset: the
   consumer's auto_offset_reset).
3. Stable: Heartbeat every heartbeat_interval_ms; auto commit every auto_commit_interval_ms; a
   pattern subscription re-reads the topic list every metadata_max_age_ms; the leader watches
   the partition counts it assigned. Any change, a REBALANCE_IN_PROGRESS heartbeat, or a local
   session expiry (no successful heartbeat for session_timeout_ms) starts step 2.
4. max_poll_interval_ms without a `poll()`: the member leaves the group (LeaveGroup) as Java's
   does, and rejoins at the next poll.

Error reactions are membership.py's table. Retries back off from retry_backoff_ms, doubling to
retry_backoff_max_ms. What the positions snapshot is: the consumer's positions at the start of
the latest `poll()` (records returned before it are taken as processed, Kafka's auto-commit
contract), so neither an auto commit nor a commit on revoke ever covers a record the
application has not had a chance to process (at-least-once).

Deviations from Java, documented in docs/client.md: the member task runs in the background, so
rebalance callbacks run there, not inside `poll()` (they may be plain functions or coroutines
and must not block the loop); heartbeats pause while a callback runs, so a callback must finish
within session_timeout_ms.

Bounds: `GROUP_MEMBERS_MAX` members in a JoinGroup answer, `ASSIGNMENT_PARTITIONS_MAX` (the
consumer's) partitions per assignment, every request has a deadline, every retry loop a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from client.cluster import CLIENT_API_VERSIONS, CLIENT_SOFTWARE_NAME, CLIENT_SOFTWARE_VERSION, Cluster, negotiate
from client.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, broker_error
from client.group.assignors import Assignor, GroupMember, assignor_for
from client.group.errors import CommitFailedError, GroupFatalError
from client.group.membership import Action, Membership, MemberState, Reaction, reaction_for
from client.group.protocol import (
    ConsumerProtocolError,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.record import TopicPartition
from client.transport import BrokerConnection
from client.wire.errors import ErrorCode, error_code_for
from client.wire.messages import ApiKey

__all__ = ["Callback", "Coordinator", "GroupCoordinator", "GroupHost", "fetch_committed", "find_coordinator"]

log = logging.getLogger(__name__)

GROUP_MEMBERS_MAX = 10_000
JOIN_TIMEOUT_EXTRA_MS = 5_000  # Java: the JoinGroup request timeout is rebalance timeout + 5 s
KEY_TYPE_GROUP = 0
NO_OFFSET = -1

Callback = Callable[[list[TopicPartition]], Awaitable[None] | None]


class GroupHost(Protocol):
    """What the coordinator needs from the consumer (implemented by client.consumer.Consumer)."""

    def _group_assign(self, partitions: list[TopicPartition]) -> None: ...
    def _group_awaiting(self) -> list[TopicPartition]: ...
    def _group_seek_committed(self, offsets: Mapping[TopicPartition, int | None]) -> None: ...
    def _group_positions(self) -> dict[TopicPartition, int]: ...
    def _group_notify(self) -> None: ...


class _Rediscover(Exception):
    """The coordinator is gone (NOT_COORDINATOR, connection lost or timed out): find it again."""


class _Retry(Exception):
    """Back off, then retry the step."""


# --- coordinator discovery and offset fetch (shared with Admin) -----------------------------------

class Coordinator:
    """Where a group's coordinator is."""

    __slots__ = ("host", "node_id", "port")

    def __init__(self, node_id: int, host: str, port: int) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"Coordinator(node {self.node_id} at {self.host}:{self.port})"


async def find_coordinator(cluster: Cluster, group_id: str) -> Coordinator:
    """One FindCoordinator (key type group) to any broker; raises the broker's error (retriable or not)."""
    def body(version: int) -> dict[str, Any]:
        return {"key": group_id, "key_type": KEY_TYPE_GROUP, "coordinator_keys": [group_id]}

    response, version = await cluster.request(ApiKey.FIND_COORDINATOR, body)
    if version >= 4:
        entry = next((c for c in response["coordinators"] if c["key"] == group_id), None)
        if entry is None:
            raise broker_error(ErrorCode.COORDINATOR_NOT_AVAILABLE, context=f"FindCoordinator {group_id}")
        response = entry
    if response["error_code"]:
        raise broker_error(response["error_code"], response.get("error_message"),
                           context=f"FindCoordinator {group_id}")
    return Coordinator(response["node_id"], response["host"], response["port"])


def offset_fetch_body(group_id: str, partitions: Sequence[TopicPartition] | None) -> dict[str, Any]:
    """OffsetFetch v1-7 body; `partitions` None asks for every committed offset of the group (v2+)."""
    topics: list[dict[str, Any]] | None = None
    if partitions is not None:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        topics = [{"name": t, "partition_indexes": sorted(ps)} for t, ps in sorted(by_topic.items())]
    return {"group_id": group_id, "topics": topics, "require_stable": True}


def parse_offset_fetch(response: Mapping[str, Any], group_id: str) -> dict[TopicPartition, int | None]:
    """{tp: committed offset or None}; raises the first (top-level, then partition) error."""
    if response.get("error_code"):
        raise broker_error(response["error_code"], context=f"OffsetFetch {group_id}")
    out: dict[TopicPartition, int | None] = {}
    for topic in response["topics"]:
        for part in topic["partitions"]:
            if part["error_code"]:
                raise broker_error(part["error_code"],
                                   context=f"OffsetFetch {group_id} {topic['name']}-{part['partition_index']}")
            offset = part["committed_offset"]
            out[(topic["name"], part["partition_index"])] = offset if offset >= 0 else None
    return out


async def fetch_committed(connection: BrokerConnection, group_id: str,
                          partitions: Sequence[TopicPartition] | None) -> dict[TopicPartition, int | None]:
    """One OffsetFetch on `connection` (the group's coordinator)."""
    version = Cluster.version(connection, ApiKey.OFFSET_FETCH)
    if partitions is None and version < 2:
        raise KafkaError("OffsetFetch of all partitions needs v2+", code=ErrorCode.UNSUPPORTED_VERSION)
    response = await connection.request(ApiKey.OFFSET_FETCH, version, offset_fetch_body(group_id, partitions))
    return parse_offset_fetch(response, group_id)


async def open_coordinator_connection(cluster: Cluster, coordinator: Coordinator, *,
                                      request_timeout_ms: int) -> BrokerConnection:
    """A new connection to the coordinator, with versions negotiated as Cluster's connections are."""
    connection = BrokerConnection(coordinator.host, coordinator.port, node_id=coordinator.node_id,
                                  client_id=cluster.client_id, max_in_flight_requests=cluster.max_in_flight_requests,
                                  request_timeout_ms=request_timeout_ms)
    await connection.open(cluster.connect_timeout_ms)
    try:
        version = CLIENT_API_VERSIONS[ApiKey.API_VERSIONS][1]
        body = {"client_software_name": CLIENT_SOFTWARE_NAME, "client_software_version": CLIENT_SOFTWARE_VERSION}
        response = await connection.request(ApiKey.API_VERSIONS, version, body)
        if response["error_code"] == ErrorCode.UNSUPPORTED_VERSION:
            broker_max = next((k["max_version"] for k in response["api_keys"]
                               if k["api_key"] == ApiKey.API_VERSIONS), 0)
            response = await connection.request(ApiKey.API_VERSIONS, min(version, broker_max), body)
        if response["error_code"]:
            raise broker_error(response["error_code"], context=f"ApiVersions from {connection.name}")
        connection.api_versions = negotiate(response["api_keys"])
    except BaseException:
        connection.close()
        raise
    return connection


async def _call(callback: Callback | None, partitions: list[TopicPartition]) -> None:
    if callback is None:
        return
    result = callback(partitions)
    if inspect.isawaitable(result):
        await result


# --- the member ---------------------------------------------------------------------------------

class GroupCoordinator:
    """One consumer's group membership (module docstring)."""

    def __init__(self, host: GroupHost, cluster: Cluster, *, group_id: str, group_instance_id: str | None,
                 session_timeout_ms: int, heartbeat_interval_ms: int, max_poll_interval_ms: int,
                 assignors: Sequence[str], enable_auto_commit: bool, auto_commit_interval_ms: int,
                 request_timeout_ms: int, default_api_timeout_ms: int, retry_backoff_ms: int,
                 retry_backoff_max_ms: int, metadata_max_age_ms: int) -> None:
        if not assignors:
            raise ValueError("partition_assignment_strategy must name at least one assignor")
        self.host = host
        self.cluster = cluster
        self.group_id = group_id
        self.membership = Membership(group_id, session_timeout_ms=session_timeout_ms,
                                     rebalance_timeout_ms=max_poll_interval_ms,
                                     heartbeat_interval_ms=heartbeat_interval_ms, group_instance_id=group_instance_id)
        self.assignors: list[Assignor] = [assignor_for(name) for name in assignors]
        self.max_poll_interval_ms = max_poll_interval_ms
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.request_timeout_ms = request_timeout_ms
        self.default_api_timeout_ms = default_api_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self.topics: set[str] = set()  # explicit subscription
        self.pattern: re.Pattern[str] | None = None
        self.subscribed_topics: set[str] = set()  # what the last JoinGroup asked for
        self.on_revoked: Callback | None = None
        self.on_assigned: Callback | None = None
        self.on_lost: Callback | None = None
        self.assigned: list[TopicPartition] = []
        self.need_rejoin = True
        self.lost = False
        self.fatal: BaseException | None = None
        self.coordinator: Coordinator | None = None
        self._connection: BrokerConnection | None = None
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_poll_ms = self._now_ms()
        self._poll_expired = False
        self._commit_snapshot: dict[TopicPartition, int] = {}
        self._committed_snapshot: dict[TopicPartition, int] = {}
        self._next_auto_commit_ms = self._now_ms() + auto_commit_interval_ms
        self._next_pattern_check_ms = 0
        self._assigned_counts: dict[str, int] = {}  # the leader's partition counts at assignment time
        self._failures = 0
        self._pattern_refresh: asyncio.Task[None] | None = None
        self.generation_changes = 0  # assignments taken (tests and metrics)

    def _now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    # ------------------------------------------------------------------ the consumer's calls
    def subscribe(self, topics: Iterable[str] | None, pattern: re.Pattern[str] | None, *,
                  on_revoked: Callback | None, on_assigned: Callback | None, on_lost: Callback | None) -> None:
        self.topics = set(topics or ())
        self.pattern = pattern
        self.on_revoked, self.on_assigned, self.on_lost = on_revoked, on_assigned, on_lost
        self._next_pattern_check_ms = 0
        self.request_rejoin()

    def unsubscribe(self) -> None:
        self.topics, self.pattern = set(), None
        self.request_rejoin()

    @property
    def subscribed(self) -> bool:
        return bool(self.topics) or self.pattern is not None

    def request_rejoin(self) -> None:
        self.need_rejoin = True
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name=f"group-{self.group_id}")
            self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: surface it from poll rather than stall silently
            log.error("group %s: member task crashed", self.group_id, exc_info=exc)
            self.fatal = exc
            self.host._group_notify()

    def on_poll(self, positions: Mapping[TopicPartition, int]) -> None:
        """Called at the start of every poll: liveness for max_poll_interval_ms and the commit snapshot."""
        if self.fatal is not None:
            raise self.fatal
        self._last_poll_ms = self._now_ms()
        self._commit_snapshot = dict(positions)
        if self._poll_expired:
            self._poll_expired = False
            self.request_rejoin()
        if self.subscribed:
            self.start()

    @property
    def stable(self) -> bool:
        return self.membership.state == MemberState.STABLE and not self.need_rejoin

    # ------------------------------------------------------------------ member task
    def _backoff_s(self) -> float:
        self._failures += 1
        return min(self.retry_backoff_ms << min(self._failures - 1, 20), self.retry_backoff_max_ms) / 1000

    async def _run(self) -> None:
        while not self._closing:
            if not self.subscribed:  # unsubscribe(): give everything up; subscribe() starts a new task
                await self._revoke()
                await self._leave("the consumer unsubscribed")
                return
            try:
                await self._ensure_coordinator()
                if self.need_rejoin or self.membership.state != MemberState.STABLE:
                    await self._rebalance()
                else:
                    await self._stable_step()
                self._failures = 0
            except _Rediscover as exc:
                log.info("group %s: coordinator %s lost (%s); finding it again", self.group_id, self.coordinator,
                         exc.__cause__ or exc)
                self._drop_coordinator()
                await self._sleep(self._backoff_s())
            except _Rejoin as exc:
                log.info("group %s: rejoining (%s)", self.group_id, exc)
            except _Retry as exc:
                log.debug("group %s: retrying after %s", self.group_id, exc.__cause__ or exc)
                await self._sleep(self._backoff_s())
            except GroupFatalError as exc:
                log.error("group %s: %s", self.group_id, exc)
                self.fatal = exc
                self.host._group_notify()
                return

    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0)):
                await self._wakeup.wait()

    def _drop_coordinator(self) -> None:
        self.coordinator = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _ensure_coordinator(self) -> BrokerConnection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        self._connection = None
        try:
            self.coordinator = await find_coordinator(self.cluster, self.group_id)
            self._connection = await open_coordinator_connection(
                self.cluster, self.coordinator,
                request_timeout_ms=max(self.request_timeout_ms, self.membership.rebalance_timeout_ms
                                       + JOIN_TIMEOUT_EXTRA_MS))
        except KafkaError as exc:
            if not exc.retriable:
                raise GroupFatalError(f"group {self.group_id}: {exc}", code=exc.code) from exc
            raise _Retry() from exc
        log.debug("group %s: coordinator is %s", self.group_id, self.coordinator)
        return self._connection

    async def _request(self, api_key: int, body: Callable[[int], dict[str, Any]],
                       timeout_ms: int | None = None) -> tuple[dict[str, Any], int]:
        """One request to the coordinator; a lost or silent coordinator raises _Rediscover."""
        connection = await self._ensure_coordinator()
        version = Cluster.version(connection, api_key)
        try:
            async with asyncio.timeout((timeout_ms or self.request_timeout_ms) / 1000):
                return await connection.request(api_key, version, body(version)), version
        except TimeoutError as exc:
            raise _Rediscover(f"no answer to api {api_key} within {timeout_ms or self.request_timeout_ms} ms") from exc
        except (KafkaConnectionError, KafkaTimeoutError) as exc:
            raise _Rediscover(str(exc)) from exc

    def _react(self, reaction: Reaction, what: str) -> None:
        """Raise what `reaction` asks the member task to do next (NONE returns)."""
        action = reaction.action
        if action == Action.NONE:
            return
        if reaction.lost:
            self.lost = True
        if action == Action.REDISCOVER:
            raise _Rediscover(f"{what}: {reaction.code.name}")
        if action == Action.RETRY:
            raise _Retry(f"{what}: {reaction.code.name}")
        if action == Action.REJOIN:
            self.need_rejoin = True
            raise _Rejoin(f"{what}: {reaction.code.name}")
        raise GroupFatalError(f"group {self.group_id}: {what}: {reaction.code.name}", code=reaction.code)

    # ------------------------------------------------------------------ stable
    async def _stable_step(self) -> None:
        now = self._now_ms()
        m = self.membership
        if now - self._last_poll_ms > self.max_poll_interval_ms:
            log.warning("group %s: no poll() for %d ms (max_poll_interval_ms %d): leaving the group",
                        self.group_id, now - self._last_poll_ms, self.max_poll_interval_ms)
            await self._revoke()
            await self._leave("max_poll_interval_ms exceeded")
            self._poll_expired = True
            self.need_rejoin = True
            while self._poll_expired and not self._closing:
                await self._sleep(self.retry_backoff_max_ms / 1000)
            return
        if m.session_expired(now):
            log.warning("group %s: no successful heartbeat for %d ms: rejoining", self.group_id, m.session_timeout_ms)
            self.lost = True
            self.need_rejoin = True
            return
        if self._subscription_changed(now):
            self.need_rejoin = True
            return
        if self.host._group_awaiting():  # committed offsets not fetched yet (the lookup after the sync failed)
            await self._resolve_committed()
        if m.heartbeat_due_in_ms(now) == 0:
            await self._heartbeat()
        if self.enable_auto_commit and now >= self._next_auto_commit_ms:
            self._next_auto_commit_ms = now + self.auto_commit_interval_ms
            await self._auto_commit()
        if self.need_rejoin:
            return
        now = self._now_ms()
        wait_ms = m.heartbeat_due_in_ms(now)
        if self.enable_auto_commit:
            wait_ms = min(wait_ms, max(self._next_auto_commit_ms - now, 0))
        if self.pattern is not None:
            wait_ms = min(wait_ms, max(self._next_pattern_check_ms - now, 0))
        await self._sleep(wait_ms / 1000)

    async def _heartbeat(self) -> None:
        m = self.membership
        now = self._now_ms()
        response, _ = await self._request(ApiKey.HEARTBEAT, lambda v: m.heartbeat_request(now))
        reaction = m.on_heartbeat_response(response["error_code"], self._now_ms())
        if reaction.action == Action.RETRY:
            return  # the next heartbeat is the retry
        self._react(reaction, "Heartbeat")

    def _current_topics(self) -> set[str]:
        if self.pattern is None:
            return set(self.topics)
        topics = self.cluster.metadata.topics
        return {name for name, t in topics.items() if not t.is_internal and self.pattern.fullmatch(name)}

    def _subscription_changed(self, now_ms: int) -> bool:
        if self.pattern is not None and now_ms >= self._next_pattern_check_ms and (
                self._pattern_refresh is None or self._pattern_refresh.done()):
            self._next_pattern_check_ms = now_ms + self.metadata_max_age_ms
            self._pattern_refresh = self._loop.create_task(self._refresh_all_topics())
            self._pattern_refresh.add_done_callback(_retrieve)
        if self._current_topics() != self.subscribed_topics:
            log.info("group %s: subscribed topics changed: rejoining", self.group_id)
            return True
        if self.membership.is_leader:
            for topic, count in self._assigned_counts.items():
                now_count = self.cluster.metadata.partition_count(topic)
                if now_count is not None and now_count != count:
                    log.info("group %s: %s has %d partitions (was %d): rejoining", self.group_id, topic,
                             now_count, count)
                    return True
        return False

    async def _refresh_all_topics(self) -> None:
        with contextlib.suppress(KafkaError):
            await self.cluster.fetch_metadata(None)
            self._wakeup.set()

    # ------------------------------------------------------------------ rebalance
    async def _revoke(self) -> None:
        partitions, lost = list(self.assigned), self.lost
        if not partitions:
            self.lost = False
            return
        if not lost and self.enable_auto_commit:
            try:
                await self._commit(self._commit_snapshot_for(partitions), self.default_api_timeout_ms)
            except (KafkaError, _Rediscover, _Retry) as exc:
                log.warning("group %s: commit before revoke failed: %s", self.group_id, exc)
        callback = self.on_lost if lost and self.on_lost is not None else self.on_revoked
        self.assigned = []
        # positions of this generation must never be committed in a later one (another member may
        # have committed further meanwhile): the next poll takes a fresh snapshot
        self._commit_snapshot = {}
        self._committed_snapshot = {}
        if self.subscribed:  # after unsubscribe() the consumer already dropped them (and may assign() others)
            self.host._group_assign([])
        self.lost = False
        try:
            await _call(callback, partitions)
        except Exception:
            log.exception("group %s: the partitions-%s callback failed", self.group_id, "lost" if lost else "revoked")

    def _commit_snapshot_for(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._commit_snapshot[tp] for tp in partitions if tp in self._commit_snapshot}

    async def _rebalance(self) -> None:
        await self._revoke()
        m = self.membership
        if self.pattern is not None and self._next_pattern_check_ms == 0:
            try:  # the first join of a pattern subscription: know every topic first
                async with asyncio.timeout(self.request_timeout_ms / 1000):
                    await self.cluster.fetch_metadata(None)
            except (KafkaError, TimeoutError) as exc:
                raise _Retry() from exc
            self._next_pattern_check_ms = self._now_ms() + self.metadata_max_age_ms
        self.need_rejoin = False
        topics = self._current_topics()
        self.subscribed_topics = topics
        if topics:
            self.cluster.add_topics(topics)
        protocols = [(a.name, encode_subscription(a.subscription(sorted(topics)))) for a in self.assignors]
        join_timeout = m.rebalance_timeout_ms + JOIN_TIMEOUT_EXTRA_MS
        while True:
            response, _ = await self._request(ApiKey.JOIN_GROUP, lambda v: m.join_request(protocols), join_timeout)
            reaction = m.on_join_response(response, self._now_ms())
            if reaction.code == ErrorCode.MEMBER_ID_REQUIRED:
                continue  # KIP-394: join again at once with the id the coordinator gave us
            if reaction.action != Action.NONE:
                self.need_rejoin = True
                self._react(reaction, "JoinGroup")
            break
        if len(response["members"]) > GROUP_MEMBERS_MAX:
            raise GroupFatalError(f"group {self.group_id}: {len(response['members'])} members "
                                  f"(more than {GROUP_MEMBERS_MAX})")
        assignments = await self._assign_as_leader() if m.is_leader else {}
        response, _ = await self._request(ApiKey.SYNC_GROUP, lambda v: m.sync_request(assignments))
        reaction = m.on_sync_response(response, self._now_ms())
        if reaction.action != Action.NONE:
            self.need_rejoin = True
            self._react(reaction, "SyncGroup")
        try:
            assignment = decode_assignment(response["assignment"])
        except ConsumerProtocolError as exc:
            raise GroupFatalError(f"group {self.group_id}: unreadable assignment: {exc}") from exc
        await self._take_assignment(assignment.topic_partitions())

    async def _assign_as_leader(self) -> dict[str, bytes]:
        m = self.membership
        assignor = next((a for a in self.assignors if a.name == m.protocol_name), None)
        if assignor is None:
            raise GroupFatalError(f"group {self.group_id}: the coordinator chose protocol {m.protocol_name!r}, "
                                  f"which this member did not offer")
        members = []
        for entry in m.members:
            try:
                subscription = decode_subscription(entry["metadata"])
            except ConsumerProtocolError as exc:
                raise GroupFatalError(f"group {self.group_id}: member {entry['member_id']} sent an unreadable "
                                      f"subscription: {exc}") from exc
            members.append(GroupMember(entry["member_id"], entry.get("group_instance_id"), subscription))
        topics = sorted({t for member in members for t in member.subscription.topics})
        counts: dict[str, int] = {}
        if topics:
            try:
                await self.cluster.fetch_metadata(topics)
            except KafkaError as exc:
                raise _Retry() from exc
            for topic in topics:
                count = self.cluster.metadata.partition_count(topic)
                if count:
                    counts[topic] = count
        self._assigned_counts = counts
        result = assignor.assign(counts, members)
        log.info("group %s generation %d: leader assigned with %s: %s", self.group_id, m.generation_id,
                 assignor.name, {k: v.topic_partitions() for k, v in result.items()})
        return {member_id: encode_assignment(a) for member_id, a in result.items()}

    async def _take_assignment(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions
        self._commit_snapshot = {}
        self._committed_snapshot = {}
        self.generation_changes += 1
        self.host._group_assign(partitions)
        if partitions:
            self.cluster.add_topics({tp[0] for tp in partitions})
        try:
            await _call(self.on_assigned, list(partitions))
        except Exception:
            log.exception("group %s: the partitions-assigned callback failed", self.group_id)
        await self._resolve_committed()
        self.host._group_notify()

    async def _resolve_committed(self) -> None:
        """OffsetFetch for the partitions waiting for their committed offset. Retries for at most a
        heartbeat interval, then leaves it to the next stable step, so heartbeats go on meanwhile."""
        deadline = self._now_ms() + self.membership.heartbeat_interval_ms
        while True:
            waiting = self.host._group_awaiting()
            if not waiting or self.need_rejoin:
                return
            try:
                connection = await self._ensure_coordinator()  # raises _Retry: the member task backs off
                async with asyncio.timeout(self.request_timeout_ms / 1000):
                    offsets = await fetch_committed(connection, self.group_id, waiting)
                self.host._group_seek_committed({tp: offsets.get(tp) for tp in waiting})
                return
            except (KafkaError, TimeoutError) as exc:
                code = exc.code if isinstance(exc, KafkaError) else ErrorCode.REQUEST_TIMED_OUT
                reaction = reaction_for(code)
                if reaction.action == Action.FATAL:
                    raise GroupFatalError(f"group {self.group_id}: OffsetFetch: {exc}", code=code) from exc
                if reaction.action == Action.REDISCOVER or isinstance(exc, KafkaConnectionError | TimeoutError):
                    self._drop_coordinator()
                if self._now_ms() >= deadline:
                    raise _Retry() from exc
                await self._sleep(self._backoff_s())

    # ------------------------------------------------------------------ commits
    async def _auto_commit(self) -> None:
        offsets = self._commit_snapshot_for(self.assigned)
        offsets = {tp: o for tp, o in offsets.items() if self._committed_snapshot.get(tp) != o}
        if not offsets:
            return
        try:
            await self._commit(offsets, self.request_timeout_ms)
        except CommitFailedError as exc:
            log.info("group %s: auto commit failed: %s", self.group_id, exc)
        except KafkaError as exc:
            log.warning("group %s: auto commit failed: %s", self.group_id, exc)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None, timeout_ms: int | None = None) -> None:
        """Commit `offsets` (default: every assigned partition's position) and wait for the answer."""
        if offsets is None:
            offsets = {tp: o for tp, o in self.host._group_positions().items()}
        if not offsets:
            return
        await self._commit(dict(offsets), timeout_ms or self.default_api_timeout_ms)

    async def _commit(self, offsets: dict[TopicPartition, int], timeout_ms: int) -> None:
        """OffsetCommit with retries (module docstring); raises CommitFailedError when the generation ended."""
        m = self.membership
        deadline = self._now_ms() + timeout_ms
        pending = dict(offsets)
        failures = 0
        while pending:
            if self.subscribed and m.state != MemberState.STABLE:
                raise CommitFailedError(f"group {self.group_id}: a rebalance is in progress; the commit is not "
                                        "possible until the member has joined again",
                                        code=ErrorCode.REBALANCE_IN_PROGRESS)
            # a member commits in its generation; a consumer that never joined (assign() with a
            # group_id) commits as Kafka's "simple" group: generation -1, no member id
            joined = m.state == MemberState.STABLE
            generation, member_id = (m.generation_id, m.member_id) if joined else (-1, "")
            body = _commit_body(self.group_id, generation, member_id, m.group_instance_id if joined else None,
                                pending)
            error: KafkaError | None = None
            try:
                response, _ = await self._request(ApiKey.OFFSET_COMMIT, lambda v, body=body: body)
                error = self._commit_result(response, pending, offsets)
            except _Rediscover as exc:
                self._drop_coordinator()
                error = KafkaConnectionError(str(exc))
            except _Retry as exc:
                cause = exc.__cause__
                error = cause if isinstance(cause, KafkaError) else KafkaTimeoutError(str(exc))
            if not pending:
                return
            assert error is not None
            failures += 1
            if self._now_ms() >= deadline:
                raise KafkaTimeoutError(f"group {self.group_id}: commit not done within {timeout_ms} ms: {error}")
            await asyncio.sleep(min(self.retry_backoff_ms << min(failures - 1, 20), self.retry_backoff_max_ms) / 1000)

    def _commit_result(self, response: Mapping[str, Any], pending: dict[TopicPartition, int],
                       offsets: Mapping[TopicPartition, int]) -> KafkaError | None:
        """Drops the committed partitions from `pending`; returns a retriable error or raises a final one."""
        retry: KafkaError | None = None
        for topic in response["topics"]:
            for part in topic["partitions"]:
                tp = (topic["name"], part["partition_index"])
                if tp not in pending:
                    continue
                code = error_code_for(part["error_code"])
                if code == ErrorCode.NONE:
                    self._committed_snapshot[tp] = pending.pop(tp)
                    continue
                joined = self.membership.state == MemberState.STABLE
                reaction = self.membership.on_commit_error(code) if joined else reaction_for(code)
                if reaction.action == Action.REJOIN:
                    self.lost = self.lost or reaction.lost
                    self.request_rejoin()
                    raise CommitFailedError(f"group {self.group_id}: commit refused ({code.name}): the member's "
                                            "generation ended; its partitions may be reassigned", code=code)
                if reaction.action == Action.REDISCOVER:
                    self._drop_coordinator()
                if reaction.action == Action.FATAL:
                    raise broker_error(code, context=f"OffsetCommit {tp[0]}-{tp[1]}")
                retry = broker_error(code, context=f"OffsetCommit {tp[0]}-{tp[1]}")
        if pending and retry is None:
            retry = KafkaError("OffsetCommit: partitions missing from the answer", code=ErrorCode.UNKNOWN_SERVER_ERROR)
        return retry

    async def committed(self, partitions: Sequence[TopicPartition], timeout_ms: int | None = None
                        ) -> dict[TopicPartition, int | None]:
        deadline = self._now_ms() + (timeout_ms or self.default_api_timeout_ms)
        failures = 0
        while True:
            try:
                connection = await self._ensure_coordinator()
                async with asyncio.timeout(self.request_timeout_ms / 1000):
                    return await fetch_committed(connection, self.group_id, list(partitions))
            except (KafkaError, TimeoutError, _Retry) as exc:
                code = exc.code if isinstance(exc, KafkaError) else ErrorCode.REQUEST_TIMED_OUT
                if not code.retriable and not isinstance(exc, _Retry):
                    raise
                if code in (ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE) or isinstance(
                        exc, KafkaConnectionError | TimeoutError):
                    self._drop_coordinator()
                failures += 1
                if self._now_ms() >= deadline:
                    raise KafkaTimeoutError(f"group {self.group_id}: committed offsets not fetched: {exc}") from exc
                await asyncio.sleep(min(self.retry_backoff_ms << min(failures - 1, 20),
                                        self.retry_backoff_max_ms) / 1000)

    # ------------------------------------------------------------------ leave and close
    async def _leave(self, reason: str) -> None:
        m = self.membership
        if m.member_id and m.group_instance_id is None and self._connection is not None:
            try:
                await self._request(ApiKey.LEAVE_GROUP, lambda v: m.leave_request(v, reason))
            except (_Rediscover, _Retry, KafkaError) as exc:
                log.info("group %s: LeaveGroup failed (the session timeout evicts us): %s", self.group_id, exc)
        m.left()

    async def close(self, *, commit_offsets: Mapping[TopicPartition, int] | None) -> None:
        """Commit `commit_offsets` (auto commit), revoke, LeaveGroup, close the coordinator connection."""
        self._closing = True
        self._wakeup.set()
        if self._pattern_refresh is not None:
            self._pattern_refresh.cancel()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        try:
            if commit_offsets and self.stable and self.assigned:
                try:
                    await self._commit({tp: o for tp, o in commit_offsets.items() if tp in self.assigned},
                                       self.default_api_timeout_ms)
                except KafkaError as exc:
                    log.warning("group %s: commit on close failed: %s", self.group_id, exc)
            self._commit_snapshot = {}
            self.enable_auto_commit = False  # committed above (or not wanted)
            await self._revoke()
            await self._leave("the consumer is closing")
        finally:
            self._drop_coordinator()


class _Rejoin(_Retry):
    """Join again now (no backoff)."""


def _commit_body(group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
                 offsets: Mapping[TopicPartition, int]) -> dict[str, Any]:
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append({"partition_index": partition, "committed_offset": offset,
                                               "committed_leader_epoch": -1, "committed_metadata": ""})
    return {"group_id": group_id, "generation_id_or_member_epoch": generation_id, "member_id": member_id,
            "group_instance_id": group_instance_id, "retention_time_ms": -1,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()

