"""ControllerService: the metadata state machine on one controller, and the active controller's writer.

Every controller (leader or not) runs one. It is attached to its `RaftNode` (node.attach):

* `apply_callback(index, data)`: every committed entry is a batch of records (records.encode_batch);
  the committed image becomes `image.apply_batch(decode_batch(data), index)`. NOOP entries are not
  applied (the node skips them), so `image.offset` is the index of the last entry with records.
* `snapshot_callback` / `snapshot_source`: the Raft snapshot is `image.snapshot()`.
* the ControllerRequest handler (API key 1001) on the controller listener (controller_rpc.py):
  non-leaders answer NOT_CONTROLLER with the leader they know.

The active controller (docs/controller.md):

* **Activation.** When its node leads term T and has applied every entry of its log (its own NOOP
  of term T included, so every entry inherited from earlier terms is committed), it becomes
  active for T: every registered broker gets a new session deadline, `max(U + broker_lease_ms +
  margin, now + failover_rejoin_ms)` where U is when this node last observed its (pre-term) log
  as a follower, or `now + broker_session_ms` when that observation does not match its log
  (session.py "Lease barriers": every lease an earlier controller granted has ended by U +
  broker_lease_ms). A live broker gets at least failover_rejoin_ms to find us; a dead one is
  fenced about broker_lease_ms after the old controller died. Leadership lost or a new term:
  deactivated, sessions dropped.
* **Lease barriers.** `p` is the clock before the proposal of this term's latest committed write;
  a heartbeat read at r gets `lease_ms = broker_lease_ms - max(0, r - p)`. When p is older than
  lease_barrier_interval_ms (or there is none yet in this term), the heartbeat first commits a
  NoOpRecord (KIP-835 writes one every 500 ms when idle, for similar reasons). A one-voter quorum
  (no other controller can ever exist) grants whole leases and writes no barriers.
* **Automatic preferred-leader election** every leader_imbalance_check_interval_ms (2 s): the
  partitions whose preferred replica (replicas[0]) is active, in the ISR and not leader get it back
  as leader (`builder.elect_preferred_leaders`, leader epoch + 1). The ISR readmits a returning
  broker only once it caught up (KIP-903; AlterPartition from the leader), so leadership returns
  only to a caught-up replica. Kafka checks every 300 s and only above a 10 % imbalance per broker;
  here leader moves are cheap (no controller-to-broker RPCs, brokers follow the log) and tests and
  small clusters want balance back within seconds, so every imbalanced partition moves on the next
  check.
  If the image has no cluster id yet (the first quorum to form), it then appends a `cluster_id`
  record with a new one (builder.ensure_cluster_id); later controllers inherit it from the log.
* **Writes, one at a time** (an asyncio lock): build records from the *pending* image with the
  `MetadataBuilder`, propose them, await the commit, answer the builder's response. Because a write
  waits until every entry of its own log is applied before building (a proposal that timed out may
  still be in flight), the pending image — committed image + this controller's uncommitted
  entries, as metadata.py's contract requires — is exactly the committed image at that moment;
  it is rebuilt from the committed image after every leadership change by construction. The cost
  is one commit round trip per write (~2-5 ms here); pipelining writes would need the proposal
  index before commit from RaftNode.
* **Fencing timer** every fence_check_interval_ms: `builder.fence_expired_brokers(now, deadlines)`,
  one fence record per expired broker; a broker whose controller connection dropped has its
  deadline cut to now + connection_grace_ms (SessionTracker.connection_dropped), so a dead broker
  process is fenced within ~300 ms and a live one re-heartbeats on a new connection in time.

Errors: `NotControllerError(leader_id)` (not active, or leadership lost while writing: retry at
the leader), `ControllerTimeoutError` (the outcome is unknown: retry; register/heartbeat are
idempotent, a retried create may answer TOPIC_ALREADY_EXISTS). A MetadataInvariantError while
applying is a bug and stops the node (RaftNode callback failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from client.wire.codec import DecodeLimits
from client.wire.errors import ErrorCode
from controller import limits
from controller.controller_rpc import CONTROLLER_API_KEY, PAYLOAD_BYTES_MAX, decode_request, encode_response
from controller.metadata import (
    AlterPartitionItem,
    AlterPartitionResult,
    ConfigValidator,
    ControllerResult,
    CreateTopic,
    CreateTopicResult,
    MetadataBuilder,
    MetadataImage,
    PartitionResult,
    ProducerIdsResult,
    RegistrationResult,
    TopicResult,
)
from controller.node import (
    NodeStoppedError,
    ProposalOutcomeUnknownError,
    ProposalTimeoutError,
    ProposalTooLargeError,
    RaftNode,
)
from controller.raft import NotLeaderError, ProposalDroppedError
from controller.records import Listener, NoOpRecord, Record, decode_batch, encode_batch, encode_record
from controller.session import ControllerTimings, SessionTracker

_logger = logging.getLogger(__name__)

T = TypeVar("T")
ENTRY_BYTES_TARGET = 1 << 20          # records of one write are grouped into entries of about this size
WRITE_WAIT_APPLIED_S = 2.0            # a write waits this long for its own in-flight entries to apply
DEFAULT_LISTENER_NAME = "PLAINTEXT"


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class NotControllerError(Exception):
    """This controller is not (or no longer) the active controller; `leader_id` is the one it knows."""

    def __init__(self, leader_id: int | None) -> None:
        super().__init__(f"not the active controller (leader {leader_id})")
        self.leader_id = leader_id


class ControllerTimeoutError(Exception):
    """The write was not committed in time; it may still commit (retry, the operations are idempotent)."""


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    error: ErrorCode
    is_caught_up: bool = False
    is_fenced: bool = True
    should_shut_down: bool = False
    lease_ms: int = 0       # the broker may lead until (send time of this heartbeat) + lease_ms; 0: no lease


class ControllerService:
    """See the module docstring. `clock()` returns monotonic milliseconds."""

    api_key = CONTROLLER_API_KEY

    def __init__(self, node: RaftNode, builder: MetadataBuilder, clock: Callable[[], int] = monotonic_ms,
                 timings: ControllerTimings | None = None, *, validate_config: ConfigValidator | None = None,
                 lease_barriers: bool | None = None) -> None:
        self.timings = timings or ControllerTimings()
        node_election_ms = node.config.tick_ms * node.config.election_timeout_ticks
        assert 2 * node_election_ms <= self.timings.controller_fetch_timeout_ms, \
            "the node's election timeout must fit the controller fetch timeout (session.py)"
        if validate_config is not None:
            builder.validate_config = validate_config
        self.node = node
        # a one-voter quorum never has another controller, so no lease needs a failover bound
        self.lease_barriers = len(node.voters) > 1 if lease_barriers is None else lease_barriers
        self.builder = builder
        self.clock = clock
        self.image = MetadataImage()
        self.sessions = SessionTracker(self.timings)
        self.activations = 0
        self.fenced_by_timer: list[int] = []
        self.preferred_elections = 0                 # partitions moved back by the imbalance check
        self.barriers = 0                            # NoOpRecord lease barriers committed
        self.last_activation_at: int | None = None
        self.last_activation_deadline: int | None = None   # the session deadline given on activation
        self._active_term: int | None = None
        self._barrier_at: int | None = None          # clock before proposing this term's latest committed write
        self._log_seen: tuple[int, int, int] | None = None  # (log end offset, last term, first seen) as follower
        self._next_rebalance_at = 0
        self._local_broker: int | None = None
        self._local_broker_id: int | None = None
        self._lock = asyncio.Lock()
        self._broker_connections: dict[int, object] = {}
        self._task: asyncio.Task[None] | None = None
        self._ending = False
        self._limits = DecodeLimits(bytes_max=PAYLOAD_BYTES_MAX + 4096)
        node.attach(apply_callback=self._apply, snapshot_callback=self._restore,
                    snapshot_source=self.image_snapshot, request_handler=self)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> ControllerService:
        if self.node.state == "new":
            await self.node.start()
        self._ending = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"controller-{self.node.node_id}")
        return self

    async def stop(self) -> None:
        await self._end()
        await self.node.stop()

    async def kill(self) -> None:
        await self._end()
        await self.node.kill()

    async def _end(self) -> None:
        # Python 3.11's asyncio.wait_for can swallow a cancellation that races with the inner wait
        # completing (gh-86296); the flag makes _run exit (instead of re-activating) even then.
        self._ending = True
        self._deactivate()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def is_active(self) -> bool:
        node = self.node
        return self._active_term is not None and node.is_leader and node.term == self._active_term

    # -- the state machine (driver task) ---------------------------------------------------------------

    def _apply(self, index: int, data: bytes) -> None:
        self.image = self.image.apply_batch(decode_batch(data), index)

    def _restore(self, index: int, data: bytes) -> None:
        self.image = MetadataImage.from_snapshot(data)
        assert self.image.offset <= index, f"snapshot image offset {self.image.offset} above its index {index}"

    def image_snapshot(self) -> bytes:
        return self.image.snapshot()

    # -- activation and the fencing timer -----------------------------------------------------------------

    async def _run(self) -> None:
        interval_s = self.timings.fence_check_interval_ms / 1000
        while self.node.running and not self._ending:
            changed = self.node.changed
            if not self.node.is_leader:
                self._observe_log()
            self._update_role()
            local = self._local_broker_id
            if self.is_active and self.image.cluster_id is None:
                await self._ensure_cluster_id()
            if self.is_active and local is not None and self._local_broker is None and local in self.image.brokers:
                self.sessions.touch(local, self.clock())
            if self.is_active and self._any_expired():
                await self._fence_expired()
            if self.is_active and self.clock() >= self._next_rebalance_at:
                self._next_rebalance_at = self.clock() + self.timings.leader_imbalance_check_interval_ms
                await self._rebalance()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), interval_s)
        self._deactivate()

    def _update_role(self) -> None:
        node = self.node
        if node.is_leader:
            if self._active_term != node.term:
                self._deactivate()
                if node.applied_index >= node.last_index:
                    self._activate(node.term)
        elif self._active_term is not None:
            self._deactivate()

    def _activate(self, term: int) -> None:
        self._active_term = term
        self.activations += 1
        self._broker_connections.clear()
        self._barrier_at = None
        now = self.clock()
        self._next_rebalance_at = now + self.timings.leader_imbalance_check_interval_ms
        leases_end_by = self._leases_end_by(term)
        self.sessions.start_fresh(self.image.brokers, now, leases_end_by)
        self.last_activation_at = now
        self.last_activation_deadline = (max(self.sessions.deadlines.values())
                                         if self.sessions.deadlines else None)
        if self._local_broker is not None:
            self.sessions.forget(self._local_broker)
        _logger.info("controller %d active in term %d (image offset %d, %d brokers get sessions until +%s ms%s)",
                     self.node.node_id, term, self.image.offset, len(self.image.brokers),
                     None if self.last_activation_deadline is None else self.last_activation_deadline - now,
                     "" if leases_end_by is not None else ", earlier leases unknown: whole sessions")

    def _observe_log(self) -> None:
        """As a non-leader: note the first time the log is seen in each (end offset, last term) state."""
        storage = self.node.storage
        if storage is None:
            return
        log = storage.log
        state = (log.log_end_offset, log.latest_epoch)
        if self._log_seen is None or self._log_seen[:2] != state:
            self._log_seen = (state[0], state[1], self.clock())

    def _leases_end_by(self, term: int) -> int | None:
        """U + broker_lease_ms if this node's entries of terms < `term` are exactly the log it observed
        as a follower at U (same last offset and term: Log Matching), else None (session.py)."""
        seen, storage = self._log_seen, self.node.storage
        if seen is None or storage is None:
            return None
        end, last_term, seen_at = seen
        log = storage.log
        if end <= 0 or last_term >= term or all(e != last_term for e, _ in log.epochs.entries):
            return None
        if log.end_offset_for_epoch(term - 1) != (last_term, end):
            return None
        return seen_at + self.timings.broker_lease_ms

    def expect_local_broker(self, broker_id: int) -> None:
        """Combined mode: the broker of this process has id `broker_id` and has not registered yet.
        A session this controller would start for it on activation belongs to a dead process (the
        data directory lock rules out a live one), so it does not block the new incarnation's
        registration. Once registered, its session on this controller never expires: it lives as
        long as this process (a stalled loop would otherwise fence the broker on its own controller
        before its own heartbeat runs)."""
        self._local_broker = broker_id
        self._local_broker_id = broker_id

    def _deactivate(self) -> None:
        if self._active_term is not None:
            _logger.info("controller %d no longer active (term %d)", self.node.node_id, self._active_term)
        self._active_term = None
        self._barrier_at = None
        self.sessions.clear()
        self._broker_connections.clear()

    def _any_expired(self) -> bool:
        now = self.clock()
        brokers = self.image.brokers
        return any(deadline <= now and b in brokers and not brokers[b].fenced
                   for b, deadline in self.sessions.deadlines.items())

    async def _ensure_cluster_id(self) -> None:
        """The first active controller of a new cluster appends its cluster id (the first quorum to form)."""
        with contextlib.suppress(NotControllerError, ControllerTimeoutError):
            cluster_id = await self._write(self.builder.ensure_cluster_id)
            _logger.info("controller %d: cluster id %s", self.node.node_id, cluster_id)

    def imbalanced_partitions(self) -> list[tuple[bytes, int]]:
        """Partitions whose preferred replica (replicas[0]) is active, in the ISR and not the leader."""
        image = self.image
        return [(topic.topic_id, index) for topic, index, part in image.iter_partitions()
                if part.leader != part.replicas[0] and part.replicas[0] in part.isr
                and image.is_active(part.replicas[0])]

    async def _rebalance(self) -> None:
        """Automatic preferred-leader election (the module docstring); the builder re-checks each
        partition on the image it builds from."""
        chosen = self.imbalanced_partitions()
        if not chosen:
            return
        with contextlib.suppress(NotControllerError, ControllerTimeoutError):
            results = await self._write(lambda image: self.builder.elect_preferred_leaders(image, chosen))
            moved = [r for r in results if r.error is ErrorCode.NONE]
            self.preferred_elections += len(moved)
            if moved:
                _logger.info("controller %d: %d partitions back to their preferred leader", self.node.node_id,
                             len(moved))

    def _barrier_stale(self, now_ms: int) -> bool:
        return self._barrier_at is None or now_ms - self._barrier_at >= self.timings.lease_barrier_interval_ms

    async def _commit_barrier(self) -> None:
        """Commit a NoOpRecord unless a write of this term newer than the barrier interval committed."""
        def build(image: MetadataImage) -> ControllerResult[None]:
            if not self._barrier_stale(self.clock()):
                return ControllerResult((), None)
            self.barriers += 1
            return ControllerResult((NoOpRecord(),), None)
        await self._write(build)

    async def _fence_expired(self) -> None:
        with contextlib.suppress(NotControllerError, ControllerTimeoutError):
            result = await self._write(lambda image: self.builder.fence_expired_brokers(
                image, self.clock(), self.sessions.deadlines))
            if result:
                _logger.info("controller %d fenced brokers %s (session expired)", self.node.node_id, result)
                self.fenced_by_timer.extend(result)

    def connection_closed(self, connection: object) -> None:
        """The listener lost a connection: brokers that heartbeated on it get the short grace."""
        if not self.is_active:
            return
        now = self.clock()
        for broker_id, conn in list(self._broker_connections.items()):
            if conn is connection:
                del self._broker_connections[broker_id]
                self.sessions.connection_dropped(broker_id, now)

    # -- the write path --------------------------------------------------------------------------------

    def _require_active(self) -> int:
        if not self.is_active:
            node = self.node
            raise NotControllerError(node.leader_id if node.running else None)
        assert self._active_term is not None
        return self._active_term

    async def _write(self, build: Callable[[MetadataImage], ControllerResult[T]],
                     on_built: Callable[[ControllerResult[T]], None] | None = None) -> T:
        self._require_active()
        async with self._lock:
            term = self._require_active()
            node = self.node
            if node.applied_index < node.last_index:  # an entry of ours is still in flight (a timed-out write)
                try:
                    await node.wait_for(lambda: node.applied_index >= node.last_index or node.term != term
                                        or not node.is_leader, WRITE_WAIT_APPLIED_S)
                except TimeoutError:
                    raise ControllerTimeoutError("own entries not applied in time") from None
                self._require_active()
            result = build(self.image)   # the pending image: nothing of ours is uncommitted now
            if on_built is not None:
                on_built(result)
            proposed_at = self.clock()   # before the append: a lower bound of its time (lease barrier)
            for data in _entries(result.records):
                await self._propose(data)
            if result.records and self._active_term == term:
                self._barrier_at = max(self._barrier_at or proposed_at, proposed_at)
            return result.response

    async def _propose(self, data: bytes) -> None:
        try:
            await self.node.propose(data)
        except NotLeaderError as exc:
            raise NotControllerError(exc.leader_id) from exc
        except (ProposalDroppedError, NodeStoppedError) as exc:
            raise NotControllerError(self.node.leader_id if self.node.running else None) from exc
        except (ProposalTimeoutError, ProposalOutcomeUnknownError) as exc:
            raise ControllerTimeoutError(str(exc)) from exc
        except ProposalTooLargeError as exc:  # _entries keeps entries below the frame; a record cannot exceed it
            raise AssertionError(f"entry too large: {exc}") from exc

    # -- operations --------------------------------------------------------------------------------------

    async def create_topics(self, topics: Sequence[CreateTopic],
                            validate_only: bool = False) -> list[CreateTopicResult]:
        return await self._write(lambda image: self.builder.create_topics(image, topics, validate_only))

    async def delete_topics(self, names: Sequence[str] = (), topic_ids: Sequence[bytes] = ()) -> list[TopicResult]:
        return await self._write(lambda image: self.builder.delete_topics(image, names, topic_ids))

    async def alter_configs(self, changes: Mapping[str, Mapping[str, str | None]],
                            validate_only: bool = False) -> list[TopicResult]:
        return await self._write(lambda image: self.builder.alter_configs(image, changes, validate_only))

    async def register_broker(self, broker_id: int, incarnation_id: bytes, host: str, port: int,
                              rack: str | None = None, *, listeners: Sequence[Listener] | None = None,
                              connection: object | None = None) -> RegistrationResult:
        listeners = tuple(listeners) if listeners is not None else (Listener(DEFAULT_LISTENER_NAME, host, port),)
        now = self.clock()

        def built(result: ControllerResult[RegistrationResult]) -> None:
            if result.response.error is ErrorCode.NONE:
                self._touch(broker_id, now, connection)
                if broker_id == self._local_broker:
                    self._local_broker = None

        return await self._write(lambda image: self.builder.register_broker(
            image, broker_id, incarnation_id, listeners, rack,
            previous_session_alive=self.sessions.alive(broker_id, now)), built)

    async def heartbeat(self, broker_id: int, broker_epoch: int, metadata_offset: int, want_fence: bool = False,
                        want_shutdown: bool = False, *, connection: object | None = None) -> HeartbeatReply:
        now = self.clock()   # at or after receipt, so at or after the broker sent it

        def built(result: ControllerResult[Any]) -> None:
            if result.response.error is ErrorCode.NONE:
                self._touch(broker_id, now, connection)

        term = self._require_active()
        if self.lease_barriers and self._barrier_stale(now):
            await self._commit_barrier()
        r = await self._write(lambda image: self.builder.heartbeat(
            image, broker_id, broker_epoch, metadata_offset, want_fence, want_shutdown), built)
        lease_ms = 0
        if r.error is ErrorCode.NONE and not r.is_fenced and self._active_term == term:
            lease_ms = (self.sessions.granted_lease_ms(now, self._barrier_at) if self.lease_barriers
                        else self.timings.broker_lease_ms)
        return HeartbeatReply(r.error, r.is_caught_up, r.is_fenced, r.should_shut_down, lease_ms)

    async def alter_partition(self, broker_id: int, broker_epoch: int,
                              items: Sequence[AlterPartitionItem]) -> AlterPartitionResult:
        return await self._write(lambda image: self.builder.alter_partition(image, broker_id, broker_epoch, items))

    async def allocate_producer_ids(self, broker_id: int, broker_epoch: int) -> ProducerIdsResult:
        return await self._write(lambda image: self.builder.allocate_producer_ids(image, broker_id, broker_epoch))

    async def elect_preferred_leaders(self, partitions: Iterable[tuple[bytes, int]] | None = None
                                      ) -> list[PartitionResult]:
        chosen = None if partitions is None else list(partitions)
        return await self._write(lambda image: self.builder.elect_preferred_leaders(image, chosen))

    def describe_quorum(self) -> dict[str, Any]:
        """The active controller's view (DescribeQuorum-like): leader, epoch, each voter's log end offset
        and lag behind the leader's, and every registered broker with its address and leaderships.
        For DescribeQuorum (API 55, broker/handlers/describe_quorum.py) also: each voter's and
        observer's last fetch and last caught-up wall-clock ms (-1 unknown), and the voters'
        controller listeners (`voter_endpoints`)."""
        self._require_active()
        status = self.node.status()
        leader_end = status["log_end_offset"]
        voters = {v["replica_id"]: v["log_end_offset"] for v in status["voters"]}
        wall_ms = int(time.time() * 1000)
        seen = {r["replica_id"]: (wall_ms - r["last_fetch_ms_ago"], wall_ms - r["last_caught_up_ms_ago"])
                for r in (*status["voters"], *status["observers"])}
        image = self.image
        counts = image.leader_counts()
        brokers = []
        for broker_id in sorted(image.brokers):
            reg = image.brokers[broker_id]
            listener = reg.listeners[0] if reg.listeners else None
            brokers.append({"id": broker_id, "host": listener.host if listener else None,
                            "port": listener.port if listener else None, "fenced": reg.fenced,
                            "leaders": counts.get(broker_id, 0)})
        return {"leader": self.node.node_id, "epoch": status["leader_epoch"],
                "high_watermark": status["high_watermark"],
                "voters": [{"id": v, "log_end_offset": voters.get(v, -1),
                            "lag": leader_end - voters[v] if v in voters else None,
                            "last_fetch_timestamp": seen.get(v, (-1, -1))[0],
                            "last_caught_up_timestamp": seen.get(v, (-1, -1))[1]} for v in sorted(self.node.voters)],
                "observers": [{"id": r["replica_id"], "log_end_offset": r["log_end_offset"],
                               "last_fetch_timestamp": seen[r["replica_id"]][0],
                               "last_caught_up_timestamp": seen[r["replica_id"]][1]}
                              for r in sorted(status["observers"], key=lambda r: r["replica_id"])],
                "voter_endpoints": [{"id": v, "host": host, "port": port}
                                    for v, (host, port) in sorted(self.node.voters.items())],
                "brokers": brokers}

    def _touch(self, broker_id: int, now_ms: int, connection: object | None) -> None:
        self.sessions.touch(broker_id, now_ms)
        if connection is not None:
            self._broker_connections[broker_id] = connection

    # -- RPC (ControllerRequest, API key 1001) -------------------------------------------------------------

    async def handle_request(self, frame: bytes, connection: object) -> bytes:
        """One ControllerRequest frame -> its response frame. A malformed frame raises ProtocolError
        (the listener closes the connection); malformed arguments get INVALID_REQUEST."""
        header, op, payload = decode_request(frame, self._limits)
        cid = header.correlation_id
        handler = _OPS.get(op)
        if handler is None or not isinstance(payload, dict):
            return encode_response(cid, ErrorCode.INVALID_REQUEST, None, {"message": f"unknown op {op!r}"})
        try:
            call = handler(self, payload, connection)
        except (ValueError, TypeError, KeyError) as exc:
            return encode_response(cid, ErrorCode.INVALID_REQUEST, None, {"message": str(exc)})
        try:
            result = await call
        except NotControllerError as exc:
            return encode_response(cid, ErrorCode.NOT_CONTROLLER, exc.leader_id)
        except ControllerTimeoutError as exc:
            return encode_response(cid, ErrorCode.REQUEST_TIMED_OUT, None, {"message": str(exc)})
        return encode_response(cid, ErrorCode.NONE, self.node.node_id, result)


# --- argument parsing and result encoding for the RPC (payload shapes: docs/controller.md) ------------

_MISSING = object()


def _int(p: Mapping[str, Any], name: str, lo: int = -limits.INT64_MAX - 1, hi: int = limits.INT64_MAX,
         default: Any = _MISSING) -> int:
    value = p.get(name, default)
    if value is _MISSING:
        raise KeyError(f"missing {name}")
    if type(value) is not int or not lo <= value <= hi:
        raise ValueError(f"{name}: {value!r} is not an integer in [{lo}, {hi}]")
    return value


def _bool(p: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = p.get(name, default)
    if type(value) is not bool:
        raise ValueError(f"{name}: not a boolean")
    return value


def _str(p: Mapping[str, Any], name: str, nullable: bool = False, default: Any = _MISSING) -> Any:
    value = p.get(name, default)
    if value is _MISSING:
        raise KeyError(f"missing {name}")
    if (value is None and nullable) or isinstance(value, str):
        return value
    raise ValueError(f"{name}: not a string")


def _list(p: Mapping[str, Any], name: str, bound: int, default: Any = _MISSING) -> list[Any]:
    value = p.get(name, default)
    if value is _MISSING:
        raise KeyError(f"missing {name}")
    if not isinstance(value, list) or len(value) > bound:
        raise ValueError(f"{name}: not a list of at most {bound}")
    return value


def _uuid(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 32:
        raise ValueError(f"not a 32-digit hex uuid: {value!r}")
    return bytes.fromhex(value)


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _configs(raw: Any, nullable: bool) -> dict[str, str | None]:
    if not isinstance(raw, dict) or len(raw) > limits.TOPIC_CONFIGS_MAX:
        raise ValueError("configs: not an object of at most TOPIC_CONFIGS_MAX entries")
    for v in raw.values():
        if not (isinstance(v, str) or (nullable and v is None)):
            raise ValueError("configs: values must be strings")
    return raw


def _partition_result(r: PartitionResult) -> dict[str, Any]:
    return {"topic_id": r.topic_id.hex(), "partition": r.partition, "error_code": int(r.error), "leader": r.leader,
            "leader_epoch": r.leader_epoch, "isr": list(r.isr), "partition_epoch": r.partition_epoch}


def _topic_result(r: TopicResult) -> dict[str, Any]:
    return {"name": r.name, "topic_id": _hex(r.topic_id), "error_code": int(r.error), "message": r.message}


def _op_register_call(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    broker_id = _int(p, "broker_id", 0, limits.BROKER_ID_MAX)
    incarnation = _uuid(p.get("incarnation_id"))
    listeners = [Listener(_str(x, "name"), _str(x, "host"), _int(x, "port", 0, 65535))
                 for x in _list(p, "listeners", 16)]
    rack = _str(p, "rack", nullable=True, default=None)
    if not listeners:
        raise ValueError("at least one listener")

    async def call() -> dict[str, Any]:
        r = await s.register_broker(broker_id, incarnation, listeners[0].host, listeners[0].port, rack,
                                    listeners=listeners, connection=conn)
        return {"error_code": int(r.error), "broker_epoch": r.broker_epoch, "message": r.message}
    return call()


def _op_heartbeat(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    args = (_int(p, "broker_id", 0, limits.BROKER_ID_MAX), _int(p, "broker_epoch", -1),
            _int(p, "metadata_offset", -1), _bool(p, "want_fence"), _bool(p, "want_shutdown"))

    async def call() -> dict[str, Any]:
        r = await s.heartbeat(*args, connection=conn)
        return {"error_code": int(r.error), "is_caught_up": r.is_caught_up, "is_fenced": r.is_fenced,
                "should_shut_down": r.should_shut_down, "lease_ms": r.lease_ms}
    return call()


def _op_create_topics(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    topics = [CreateTopic(_str(t, "name"), _int(t, "num_partitions", -1, limits.PARTITIONS_PER_TOPIC_MAX, -1),
                          _int(t, "replication_factor", -1, limits.REPLICATION_FACTOR_MAX, -1),
                          _configs(t.get("configs", {}), nullable=False))  # type: ignore[arg-type]
              for t in _list(p, "topics", limits.TOPICS_MAX)]
    validate_only = _bool(p, "validate_only")

    async def call() -> dict[str, Any]:
        results = await s.create_topics(topics, validate_only)
        return {"topics": [{"name": r.name, "error_code": int(r.error), "message": r.message,
                            "topic_id": _hex(r.topic_id), "num_partitions": r.num_partitions,
                            "replication_factor": r.replication_factor, "configs": dict(r.configs)}
                           for r in results]}
    return call()


def _op_delete_topics(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    names = [_str({"name": n}, "name") for n in _list(p, "names", limits.TOPICS_MAX, [])]
    ids = [_uuid(t) for t in _list(p, "topic_ids", limits.TOPICS_MAX, [])]

    async def call() -> dict[str, Any]:
        return {"topics": [_topic_result(r) for r in await s.delete_topics(names, ids)]}
    return call()


def _op_alter_configs(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    raw = p.get("changes")
    if not isinstance(raw, dict) or len(raw) > limits.TOPICS_MAX:
        raise ValueError("changes: not an object {topic: {config: value or null}}")
    changes = {name: _configs(c, nullable=True) for name, c in raw.items()}
    validate_only = _bool(p, "validate_only")

    async def call() -> dict[str, Any]:
        return {"topics": [_topic_result(r) for r in await s.alter_configs(changes, validate_only)]}
    return call()


def _op_alter_partition(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    broker_id, broker_epoch = _int(p, "broker_id", 0, limits.BROKER_ID_MAX), _int(p, "broker_epoch", -1)
    items = []
    for x in _list(p, "partitions", limits.PARTITIONS_MAX):
        isr = tuple((_int({"b": m[0]}, "b", 0, limits.BROKER_ID_MAX), _int({"e": m[1]}, "e", -1))
                    for m in _list(x, "new_isr", limits.REPLICATION_FACTOR_MAX))
        items.append(AlterPartitionItem(_uuid(x.get("topic_id")), _int(x, "partition", 0),
                                        _int(x, "leader_epoch", -1), _int(x, "partition_epoch", -1), isr))

    async def call() -> dict[str, Any]:
        r = await s.alter_partition(broker_id, broker_epoch, items)
        return {"error_code": int(r.error), "partitions": [_partition_result(x) for x in r.partitions]}
    return call()


def _op_allocate_producer_ids(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    args = (_int(p, "broker_id", 0, limits.BROKER_ID_MAX), _int(p, "broker_epoch", -1))

    async def call() -> dict[str, Any]:
        r = await s.allocate_producer_ids(*args)
        return {"error_code": int(r.error), "first_producer_id": r.first_producer_id, "size": r.size}
    return call()


def _op_elect_preferred(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    raw = p.get("partitions")
    chosen = None if raw is None else [(_uuid(t), _int({"i": i}, "i", 0)) for t, i in
                                       _list(p, "partitions", limits.PARTITIONS_MAX)]

    async def call() -> dict[str, Any]:
        return {"partitions": [_partition_result(r) for r in await s.elect_preferred_leaders(chosen)]}
    return call()


def _op_describe_quorum(s: ControllerService, p: Mapping[str, Any], conn: object) -> Awaitable[dict[str, Any]]:
    async def call() -> dict[str, Any]:
        return s.describe_quorum()
    return call()


_OPS: dict[str, Callable[[ControllerService, Mapping[str, Any], object], Awaitable[dict[str, Any]]]] = {
    "register_broker": _op_register_call,
    "heartbeat": _op_heartbeat,
    "create_topics": _op_create_topics,
    "delete_topics": _op_delete_topics,
    "alter_configs": _op_alter_configs,
    "alter_partition": _op_alter_partition,
    "allocate_producer_ids": _op_allocate_producer_ids,
    "elect_preferred_leaders": _op_elect_preferred,
    "describe_quorum": _op_describe_quorum,
}


def _entries(records: Sequence[Record]) -> list[bytes]:
    """The records of one write as Raft entry data: consecutive records grouped up to
    ENTRY_BYTES_TARGET and RECORDS_PER_BATCH_MAX (a single record is at most RECORD_BYTES_MAX)."""
    out: list[bytes] = []
    group: list[Record] = []
    size = 0
    for record in records:
        n = len(encode_record(record))
        if group and (size + n > ENTRY_BYTES_TARGET or len(group) >= limits.RECORDS_PER_BATCH_MAX):
            out.append(encode_batch(group))
            group, size = [], 0
        group.append(record)
        size += n
    if group:
        out.append(encode_batch(group))
    return out
