"""RaftNode: the asyncio driver of one controller's Raft core (docs/raft.md "The asyncio driver").

One task (the driver) owns the `RaftCore` and is the only code that calls it. Everything else —
the tick timer, the controller listener, `propose()`, `compact()`, `stop()` — only queues an input
and wakes the driver. The driver loop::

    wait for inputs -> feed them to the core (messages, control calls, ticks, proposals; at most
    inputs_per_ready_max per round) -> while core.has_ready(): rd = core.ready()
        1. persist rd (DurableRaftStorage.persist: snapshot file, log append + fsync, quorum-state)
           inline or in a worker thread (`persist_in_thread`); inputs arriving meanwhile queue up,
           since the core forbids any call between ready() and advance()
        2. send rd.messages (transport queues; never blocks)
        3. restore the application from rd.snapshot if rd.apply_snapshot; apply rd.committed_entries
           (NORMAL entries only) and resolve the proposals they answer
        4. core.advance(rd); maybe compact (snapshot_interval_entries)

so nothing is sent before what it depends on is on stable storage (§5.1 "respond to RPCs only
after updating stable storage"), and many proposals that arrive while a Ready is being persisted
share one fsync (group commit).

Time: the timer calls `core.tick()` every `tick_ms`; ticks missed while the loop was busy are
delivered together (at most `pending_ticks_max`). Defaults (RaftNodeConfig):

| setting                      | default | meaning                                                     |
|------------------------------|---------|-------------------------------------------------------------|
| tick_ms                      | 50      | one core tick                                               |
| election_timeout_ticks       | 10      | T = 500 ms; each election timeout is drawn from [T, 2T)     |
| fetch_max_wait_ticks         | 3       | 150 ms: the leader holds an up-to-date fetch (long poll)    |
| fetch_timeout_ticks          | 6       | 300 ms: an unanswered fetch is re-sent                      |
| vote_retry_ticks             | 3       | 150 ms: (pre-)votes re-sent to silent voters                |
| begin_quorum_resend_ticks    | 3       | 150 ms: leader re-announces itself to silent voters         |
| propose_timeout_ms           | 5000    | `propose()` gives up (the entry may still commit)           |
| proposals_queued_max         | 4096    | proposals waiting for the driver; more are refused          |
| entry_bytes_max              | 16 MiB  | one proposal's data (ProposalTooLargeError beyond)          |
| inbox_messages_max           | 4096    | received messages waiting for the driver; oldest dropped    |
| inputs_per_ready_max         | 1024    | inputs fed to the core before it is asked for a Ready       |
| transfer_timeout_ms          | 1000    | `stop()` waits this long for a successor to take over       |
| stop_flush_timeout_ms        | 250     | `stop()` waits this long for queued messages to go out      |
| persist_in_thread            | False   | fsync inline (measured equal here; True for slow disks)     |
| snapshot_interval_entries    | 0       | compact after this many applied entries (0: never; needs `snapshot_source`) |

The transport's bounds are in controller/transport.py (TransportConfig).

Callbacks (called from the driver task, in log order, never concurrently):

* `apply_callback(index, data)` for every committed NORMAL entry (NOOPs are skipped). After a
  restart, entries committed after the snapshot are applied again: the application is rebuilt
  from `snapshot_callback` + replay, it keeps no state of its own across restarts.
* `snapshot_callback(index, data)`: replace the application state by a snapshot (at start when
  one is on disk, and when the leader sends one because this node is too far behind).
* `snapshot_source()` (optional): the application's serialized state right after the last applied
  entry, used for automatic compaction; or call `compact(index, data)` yourself.

An exception from a callback, or a failed write/fsync, is fatal for this node (it stops at once
without sending anything that depended on the failed step; `failure` holds the reason).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.raft import (
    Entry,
    EntryType,
    HardState,
    Message,
    NotLeaderError,
    ProposalDroppedError,
    RaftConfig,
    RaftCore,
    RaftError,
    Ready,
    Role,
    Snapshot,
)
from controller.raft_log import METADATA_SEGMENT_BYTES, DurableRaftStorage
from controller.transport import ControllerRequestHandler, RaftTransport, TransportConfig
from storage.files import FileSystem

_logger = logging.getLogger(__name__)

DEFAULT_CONTROLLER_LISTENER = ("127.0.0.1", 9093)
PERSIST_SAMPLES_MAX = 4096  # persist durations kept for status() (a ring)

ApplyCallback = Callable[[int, bytes], None]
SnapshotCallback = Callable[[int, bytes], None]
SnapshotSource = Callable[[], bytes]

__all__ = [
    "DEFAULT_CONTROLLER_LISTENER", "NodeStoppedError", "NotLeaderError", "ProposalDroppedError",
    "ProposalOutcomeUnknownError", "ProposalTimeoutError", "ProposalTooLargeError", "RaftNode", "RaftNodeConfig",
]


class NodeStoppedError(RaftError):
    """The node is not running (not started, stopped, crashed or failed)."""


class ProposalTimeoutError(RaftError, TimeoutError):
    """Not committed within the timeout; the entry may still commit later."""


class ProposalTooLargeError(RaftError):
    """The entry is larger than `entry_bytes_max` (it must fit one fetch response frame)."""


class ProposalOutcomeUnknownError(RaftError):
    """A snapshot from the leader covered the proposal's index: whether it committed is unknown."""


@dataclass(frozen=True, slots=True)
class RaftNodeConfig:
    tick_ms: int = 50
    election_timeout_ticks: int = 10
    fetch_max_wait_ticks: int = 3
    fetch_timeout_ticks: int = 6
    vote_retry_ticks: int = 3
    begin_quorum_resend_ticks: int = 3
    fetch_max_entries: int = 64
    fetch_max_bytes: int = 1 << 20
    uncommitted_entries_max: int = 4096
    apply_max_entries: int = 1024
    observers_max: int = 64
    propose_timeout_ms: int = 5000
    proposals_queued_max: int = 4096
    entry_bytes_max: int = 16 << 20          # one proposal's data (controller.limits.RECORD_BYTES_MAX)
    inbox_messages_max: int = 4096
    inputs_per_ready_max: int = 1024
    transfer_timeout_ms: int = 1000
    stop_flush_timeout_ms: int = 250
    stop_driver_timeout_ms: int = 5000
    persist_in_thread: bool = False
    snapshot_interval_entries: int = 0
    log_segment_bytes: int = METADATA_SEGMENT_BYTES
    transport: TransportConfig = field(default_factory=TransportConfig)

    def __post_init__(self) -> None:
        assert self.tick_ms > 0 and self.propose_timeout_ms > 0
        assert self.proposals_queued_max > 0 and self.inbox_messages_max > 0 and self.inputs_per_ready_max > 0
        assert self.snapshot_interval_entries >= 0
        assert 0 < self.entry_bytes_max < self.transport.max_frame_bytes, "an entry must fit one frame"

    @property
    def pending_ticks_max(self) -> int:
        return 2 * self.election_timeout_ticks

    def raft_config(self, node_id: int, voters: frozenset[int]) -> RaftConfig:
        return RaftConfig(node_id=node_id, voters=voters, election_timeout_ticks=self.election_timeout_ticks,
                          fetch_max_wait_ticks=self.fetch_max_wait_ticks, fetch_timeout_ticks=self.fetch_timeout_ticks,
                          vote_retry_ticks=self.vote_retry_ticks,
                          begin_quorum_resend_ticks=self.begin_quorum_resend_ticks,
                          fetch_max_entries=self.fetch_max_entries, fetch_max_bytes=self.fetch_max_bytes,
                          uncommitted_entries_max=self.uncommitted_entries_max,
                          apply_max_entries=self.apply_max_entries, observers_max=self.observers_max)


class RaftNode:
    """A controller quorum member (or observer) on an asyncio loop; see the module docstring."""

    def __init__(self, node_id: int, voters: Mapping[int, tuple[str, int]], data_dir: str,
                 listen: tuple[str, int] = DEFAULT_CONTROLLER_LISTENER,
                 apply_callback: ApplyCallback | None = None, snapshot_callback: SnapshotCallback | None = None,
                 config: RaftNodeConfig | None = None, fs: FileSystem | None = None, rng_seed: int | None = None,
                 *, voter: bool | None = None, snapshot_source: SnapshotSource | None = None,
                 advertised_host: str | None = None) -> None:
        assert voters, "at least one voter"
        is_voter = node_id in voters
        assert voter is None or voter == is_voter, "a voter is a node listed in `voters` (static membership)"
        self.node_id = node_id
        self.voters = dict(voters)
        self.is_voter = is_voter
        self.data_dir = data_dir
        self.listen = listen
        self.advertised_host = advertised_host
        self.config = config or RaftNodeConfig()
        self.fs = fs
        self._rng = random.Random(rng_seed)
        self._apply_callback = apply_callback
        self._snapshot_callback = snapshot_callback
        self._snapshot_source = snapshot_source
        self._request_handler: ControllerRequestHandler | None = None
        self.address: tuple[str, int] | None = None
        self.failure: BaseException | None = None
        self._state = "new"  # new -> running -> stopping -> stopped | killed | failed
        self._core: RaftCore | None = None
        self._storage: DurableRaftStorage | None = None
        self._transport: RaftTransport | None = None
        self._inbox: collections.deque[Message] = collections.deque()
        self._controls: collections.deque[Callable[[RaftCore], None]] = collections.deque()
        self._proposals: collections.deque[tuple[bytes, asyncio.Future[int]]] = collections.deque()
        self._pending: dict[int, list[tuple[int, asyncio.Future[int]]]] = {}
        self._pending_ticks = 0
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._stop_driver = False
        self._driver: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._persisting: asyncio.Future[None] | None = None
        self._role = Role.FOLLOWER
        self._leader_id: int | None = None
        self._term = 0
        # counters, for status() and the measurements in tests
        self.inbox_dropped = 0
        self.readies = 0
        self.persist_s: collections.deque[float] = collections.deque(maxlen=PERSIST_SAMPLES_MAX)

    # -- introspection -----------------------------------------------------------------------------

    @property
    def leader_id(self) -> int | None:
        return self._leader_id

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> Role:
        return self._role

    @property
    def is_leader(self) -> bool:
        return self._role is Role.LEADER and self._state == "running"

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def state(self) -> str:
        return self._state

    @property
    def commit_index(self) -> int:
        return self._core.commit_index if self._core is not None else 0

    @property
    def applied_index(self) -> int:
        return self._core.applied_index if self._core is not None else 0

    @property
    def last_index(self) -> int:
        return self._core.last_index if self._core is not None else 0

    @property
    def snapshot_index(self) -> int:
        return self._core.snapshot_index if self._core is not None else 0

    @property
    def storage(self) -> DurableRaftStorage | None:
        return self._storage

    @property
    def transport(self) -> RaftTransport | None:
        return self._transport

    @property
    def changed(self) -> asyncio.Event:
        """Set after every handled Ready (then replaced): await it to wait for any state change."""
        return self._changed

    def status(self) -> dict[str, Any]:
        """DescribeQuorum (55)-style view. Offsets are Raft indexes (index i is offset i - 1, so a log
        end offset is the last index and the high watermark is the commit index)."""
        core = self._core
        assert core is not None, "status() before start()"
        st = core.status()
        tick_ms = self.config.tick_ms

        def replica(replica_id: int, log_end_offset: int, fetch_tick: int, caught_up_tick: int) -> dict[str, int]:
            return {"replica_id": replica_id, "log_end_offset": log_end_offset,
                    "last_fetch_ms_ago": (core.ticks - fetch_tick) * tick_ms,
                    "last_caught_up_ms_ago": (core.ticks - caught_up_tick) * tick_ms}

        voters: list[dict[str, int]] = []
        observers: list[dict[str, int]] = []
        if st.role is Role.LEADER:
            voters.append(replica(self.node_id, st.last_index, core.ticks, core.ticks))
        for r in st.replicas:
            (voters if r.is_voter else observers).append(
                replica(r.replica_id, r.match_index, r.last_fetch_tick, r.last_caught_up_tick))
        samples = sorted(self.persist_s)
        transport = self._transport
        return {
            "node_id": self.node_id, "state": self._state, "role": st.role.value, "leader_id": st.leader_id,
            "leader_epoch": st.term, "high_watermark": st.commit_index, "log_end_offset": st.last_index,
            "applied_index": core.applied_index, "snapshot_index": core.snapshot_index,
            "voters": voters, "observers": observers,
            "driver": {"readies": self.readies, "inbox_dropped": self.inbox_dropped,
                       "persist_count": len(samples),
                       "persist_p50_ms": samples[len(samples) // 2] * 1e3 if samples else 0.0,
                       "persist_p99_ms": samples[int(len(samples) * 0.99)] * 1e3 if samples else 0.0},
            "transport": {"dropped": transport.dropped() if transport else 0,
                          "unroutable": transport.unroutable if transport else 0},
        }

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Return once `predicate()` holds (re-checked after each Ready); TimeoutError at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"node {self.node_id}: condition not met within {timeout_s} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> RaftNode:
        assert self._state == "new", f"start() in state {self._state}"
        cfg = self.config
        storage = DurableRaftStorage.open(self.data_dir, self.node_id, fs=self.fs, segment_bytes=cfg.log_segment_bytes)
        try:
            memory = storage.memory_storage()
            if memory.snapshot.index > 0 and self._snapshot_callback is not None:
                self._snapshot_callback(memory.snapshot.index, memory.snapshot.data)
            core = RaftCore(cfg.raft_config(self.node_id, frozenset(self.voters)), memory,
                            random.Random(self._rng.getrandbits(64)))
            peers = {v: address for v, address in self.voters.items() if v != self.node_id}
            transport = RaftTransport(self.node_id, peers, self._deliver, cfg.transport,
                                      random.Random(self._rng.getrandbits(64)), self._request_handler)
            self.address = await transport.start(*self.listen, advertised_host=self.advertised_host)
        except BaseException:
            storage.close()
            raise
        self._storage, self._core, self._transport = storage, core, transport
        self._term = core.term
        self._state = "running"
        loop = asyncio.get_running_loop()
        self._driver = loop.create_task(self._drive(), name=f"raft-driver-{self.node_id}")
        self._ticker = loop.create_task(self._tick_loop(), name=f"raft-ticker-{self.node_id}")
        if set(self.voters) == {self.node_id}:
            self._controls.append(RaftCore.campaign)  # a single voter need not wait an election timeout
        self._wake.set()
        return self

    async def stop(self) -> None:
        """Graceful: hand leadership to the most caught-up voter first (bounded), then stop."""
        if self._state != "running":
            return
        cfg = self.config
        if self._role is Role.LEADER and len(self.voters) > 1:
            self._control(self._transfer_quietly)
            with contextlib.suppress(TimeoutError):
                await self.wait_for(lambda: self._leader_id not in (None, self.node_id) or self._state != "running",
                                    cfg.transfer_timeout_ms / 1000)
        if self._state != "running":
            return
        self._state = "stopping"
        self._cancel_ticker()
        self._stop_driver = True
        self._wake.set()
        driver = self._driver
        if driver is not None:
            done, _ = await asyncio.wait([driver], timeout=cfg.stop_driver_timeout_ms / 1000)
            if not done:
                driver.cancel()
                await self._await_persist()
        transport, storage, core = self._transport, self._storage, self._core
        assert transport is not None and storage is not None and core is not None
        await transport.flush(cfg.stop_flush_timeout_ms / 1000)
        await transport.close()
        if storage.failed is None and not storage.closed:
            # the final commit index, so a restart re-applies everything applied here without a leader
            commit = min(core.commit_index, storage.log.log_end_offset)
            storage.close(HardState(storage.hard_state.term, storage.hard_state.vote, max(commit, 0)))
        self._state = "stopped"
        self._fail_waiters(NodeStoppedError(f"node {self.node_id} stopped"))
        self._notify()

    async def kill(self) -> None:
        """A crash, for tests: no leadership transfer, no flush, connections reset, files left unsynced.

        Whatever the node had sent stays sent; whatever it had not (queued messages, a Ready being
        persisted) is lost. With a FaultyFileSystem, call `fs.crash()` afterwards to lose the
        unsynced bytes too."""
        if self._state in ("new", "stopped", "killed"):
            return
        self._state = "killed"
        if self._transport is not None:
            self._transport.abort()
        self._cancel_ticker()
        if self._driver is not None and not self._driver.done():
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        await self._await_persist()
        if self._storage is not None and not self._storage.closed:
            self._storage.abandon()
        self._fail_waiters(NodeStoppedError(f"node {self.node_id} crashed"))
        self._notify()

    async def __aenter__(self) -> RaftNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def attach(self, *, apply_callback: ApplyCallback, snapshot_callback: SnapshotCallback,
               snapshot_source: SnapshotSource | None = None,
               request_handler: ControllerRequestHandler | None = None) -> None:
        """Install the application (controller/service.py) before start(): its callbacks and the
        handler of ControllerRequest frames on this node's controller listener."""
        assert self._state == "new", "attach() before start()"
        self._apply_callback, self._snapshot_callback = apply_callback, snapshot_callback
        self._snapshot_source, self._request_handler = snapshot_source, request_handler

    # -- API -------------------------------------------------------------------------------------------

    async def propose(self, data: bytes, timeout_s: float | None = None) -> int:
        """Append `data` to the replicated log; returns its index once committed and applied here.

        Raises NotLeaderError(leader_id, term) on a non-leader, ProposalDroppedError (queue full,
        leadership transfer in progress, or the entry was lost in a leader change: retry),
        ProposalTimeoutError, ProposalOutcomeUnknownError, ProposalTooLargeError, NodeStoppedError.
        """
        self._check_running()
        cfg = self.config
        if len(data) > cfg.entry_bytes_max:
            raise ProposalTooLargeError(f"{len(data)} bytes > entry_bytes_max {cfg.entry_bytes_max}")
        if self._role is not Role.LEADER:
            raise NotLeaderError(self._leader_id, self._term)
        if len(self._proposals) >= cfg.proposals_queued_max:
            raise ProposalDroppedError(f"{cfg.proposals_queued_max} proposals are queued")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._proposals.append((bytes(data), future))
        self._wake.set()
        timeout = cfg.propose_timeout_ms / 1000 if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            future.cancel()  # the driver skips it; the entry itself may still commit
            raise ProposalTimeoutError(f"not committed within {timeout} s") from None

    def compact(self, index: int, data: bytes) -> None:
        """Hand the core the application state after applying `index`; the log prefix goes after the
        snapshot is durable."""
        self._check_running()
        self._control(lambda core: core.compact(index, data))

    def transfer_leadership(self, target: int | None = None) -> None:
        self._check_running()
        self._control(lambda core: self._transfer_quietly(core, target))

    def campaign(self) -> None:
        self._check_running()
        assert self.is_voter, "observers never campaign"
        self._control(RaftCore.campaign)

    # -- inputs ----------------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != "running":
            raise NodeStoppedError(f"node {self.node_id} is {self._state}")

    def _deliver(self, m: Message) -> None:
        if self._state != "running":
            return
        inbox = self._inbox
        if len(inbox) >= self.config.inbox_messages_max:
            inbox.popleft()  # Raft tolerates loss; the newest messages matter most
            self.inbox_dropped += 1
        inbox.append(m)
        self._wake.set()

    def _control(self, fn: Callable[[RaftCore], None]) -> None:
        self._controls.append(fn)
        self._wake.set()

    @staticmethod
    def _transfer_quietly(core: RaftCore, target: int | None = None) -> None:
        with contextlib.suppress(RaftError):
            core.transfer_leadership(target)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.tick_ms / 1000
        cap = self.config.pending_ticks_max
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            behind = loop.time() - next_at
            ticks = 1 + max(0, int(behind / interval))
            next_at += ticks * interval
            self._pending_ticks = min(self._pending_ticks + ticks, cap)
            self._wake.set()

    # -- the driver ------------------------------------------------------------------------------------

    async def _drive(self) -> None:
        try:
            while not self._stop_driver:
                await self._wake.wait()
                self._wake.clear()
                await self._drain()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, a callback error or a storage failure: this node is done
            self._fail(exc)

    async def _drain(self) -> None:
        core = self._core
        assert core is not None
        while True:
            if core.has_ready():
                await self._handle_ready(core.ready())
            elif self._stop_driver or not self._feed(core):
                return

    def _feed(self, core: RaftCore) -> bool:
        """Feed queued inputs to the core (bounded); False if there were none."""
        budget = self.config.inputs_per_ready_max
        fed = 0
        inbox = self._inbox
        while inbox and fed < budget:
            core.step(inbox.popleft())
            fed += 1
        controls = self._controls
        while controls:
            controls.popleft()(core)
            fed += 1
        ticks, self._pending_ticks = self._pending_ticks, 0
        for _ in range(ticks):
            core.tick()
        fed += ticks
        proposals = self._proposals
        while proposals and fed < budget:
            data, future = proposals.popleft()
            fed += 1
            if future.done():
                continue
            try:
                entry_id = core.propose(data)
            except RaftError as exc:
                future.set_exception(exc)
                continue
            self._pending.setdefault(entry_id.index, []).append((entry_id.term, future))
        return fed > 0

    async def _handle_ready(self, rd: Ready) -> None:
        storage, transport, core = self._storage, self._transport, self._core
        assert storage is not None and transport is not None and core is not None
        self.readies += 1
        if storage.needs_io(rd):
            started = time.perf_counter()
            if self.config.persist_in_thread:
                persisting = self._persisting = asyncio.ensure_future(asyncio.to_thread(storage.persist, rd))
                try:
                    await asyncio.shield(persisting)
                except asyncio.CancelledError:
                    raise  # kill(): the thread runs on; kill() waits for it through self._persisting
                except BaseException:
                    self._persisting = None
                    raise
                self._persisting = None
            else:
                storage.persist(rd)
            self.persist_s.append(time.perf_counter() - started)
        for m in rd.messages:
            transport.send(m)
        if rd.soft_state is not None:
            self._role, self._leader_id = rd.soft_state.role, rd.soft_state.leader_id
        if rd.hard_state is not None:
            self._term = rd.hard_state.term
        if rd.apply_snapshot:
            assert rd.snapshot is not None
            self._restore(rd.snapshot)
        for entry in rd.committed_entries:
            self._apply(entry)
        core.advance(rd)
        self._maybe_compact(core)
        self._notify()

    def _apply(self, entry: Entry) -> None:
        if entry.type is EntryType.NORMAL and self._apply_callback is not None:
            self._apply_callback(entry.index, entry.data)
        waiters = self._pending.pop(entry.index, None)
        for term, future in waiters or ():
            if future.done():
                continue
            if term == entry.term:
                future.set_result(entry.index)
            else:
                future.set_exception(ProposalDroppedError(
                    f"entry {entry.index} of term {term} was replaced by one of term {entry.term} (leader change)"))

    def _restore(self, snapshot: Snapshot) -> None:
        if self._snapshot_callback is not None:
            self._snapshot_callback(snapshot.index, snapshot.data)
        for index in [i for i in self._pending if i <= snapshot.index]:
            for _term, future in self._pending.pop(index):
                if not future.done():
                    future.set_exception(ProposalOutcomeUnknownError(
                        f"entry {index} is covered by a snapshot from the leader"))

    def _maybe_compact(self, core: RaftCore) -> None:
        every = self.config.snapshot_interval_entries
        if every and self._snapshot_source is not None and core.applied_index - core.snapshot_index >= every:
            core.compact(core.applied_index, self._snapshot_source())

    # -- endings ---------------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _cancel_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    async def _await_persist(self) -> None:
        """A worker thread cannot be cancelled: wait until it has finished touching the files."""
        if self._persisting is not None:
            await asyncio.wait([self._persisting])
            self._persisting = None

    def _fail(self, exc: BaseException) -> None:
        _logger.error("raft node %d failed; stopping it", self.node_id, exc_info=exc)
        self.failure = exc
        self._state = "failed"
        if self._transport is not None:
            self._transport.abort()
        self._cancel_ticker()
        if self._storage is not None and not self._storage.closed:
            self._storage.abandon()
        self._fail_waiters(NodeStoppedError(f"node {self.node_id} failed: {exc!r}"))
        self._notify()

    def _fail_waiters(self, exc: RaftError) -> None:
        for _data, future in self._proposals:
            if not future.done():
                future.set_exception(exc)
        self._proposals.clear()
        for waiters in self._pending.values():
            for _term, future in waiters:
                if not future.done():
                    future.set_exception(exc)
        self._pending.clear()
