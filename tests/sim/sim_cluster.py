"""A deterministic simulator for controller/raft: network, disks, crashes, clients and invariants.

Everything is driven by one seed (see sim_faults.py for the fault schedule): simulated time is an
integer of `tick_units` per tick; events (message deliveries, disk syncs) sit in a heap ordered
by (time, sequence number), so a run is exactly reproducible.

* Network (`SimCluster.send`): each message is dropped if its direction is blocked (symmetric and
  one-way partitions, counted so overlapping partitions heal independently) or with probability
  `loss`, duplicated with probability `duplicate`, and every copy is delayed uniformly in
  [delay_min_units, delay_max_units] (so messages are reordered).
* Disk (`SimDisk`): writes go to a pending list; `sync()` makes them durable. A crash keeps a
  random prefix of the pending writes, and may keep only part of the first lost entry batch
  (a torn write: the last unsynced entries are lost).
* Driver (`SimNode`): the etcd contract — `ready()`, write, sync if `must_sync` (taking
  0..disk_latency_max_units during which the node queues its inputs), send, apply, `advance()`.
  `sync_hard_state=False` is the deliberately broken driver that skips the fsync when a Ready
  only changes term/vote ("nothing to append, why sync?").
* `InvariantChecker` runs after every event; a violation raises `Violation`.

Invariants (and why each is precise):
1. Election Safety: at most one leader per term, ever (a table term -> leader over the run).
2. Terms are monotonic per node: within an incarnation the in-memory term never decreases; a
   node restarts with a term >= every term it put on a message (pre-vote messages excluded: they
   carry a term the sender has not entered), and with the vote it granted in that term.
3. One vote per voter per term, observed on the wire: two granted VOTE_RESPs from the same voter
   in the same term for different candidates.
4. State Machine Safety / Log Matching of committed entries: every entry any node applies is
   recorded per index; a different entry at an index, a gap, or a snapshot whose state differs
   from the committed prefix is a violation. Applied is reported only after persistence.
5. Leader Completeness: when a node becomes leader of term T, its log (or snapshot) holds every
   entry committed in a term < T; when an entry is first committed in term C, every current
   leader of a term > C holds it, and so does every voter log that could win an election, i.e.
   is at least as up-to-date (§5.4.1) as a majority of voters' logs (crashed voters count with
   their disk). The latter follows from Log Matching + Leader Completeness for any correct Raft
   and is exactly what figure 8 shows to break when earlier-term entries are committed by
   counting replicas: it flags the commit itself, not the later overwrite.
6. No stale leader (check-quorum): when node B became leader of term Tb at tick e, no node may
   still be leader of a term < Tb at tick e + bound, bound = election timeout + max network
   delay + max disk latency + 2 ticks. Proof sketch: B's voters (a majority) stopped fetching
   from the old leader before voting; their last fetches arrive within the network delay; the
   old leader then counts less than a majority within its election timeout and steps down.
   Without check-quorum an isolated leader stays leader forever, so this is the zombie-leader
   detector (docs/raft.md).
7. Liveness (checked by the caller after healing): a proposal commits on a majority of voters
   within a bounded number of ticks.
"""

from __future__ import annotations

import heapq
import random
import struct
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from controller.raft import (
    EMPTY_SNAPSHOT,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RaftConfig,
    RaftCore,
    Ready,
    Role,
    Snapshot,
)

TRACE_EVENTS_MAX = 400


class Violation(AssertionError):
    """An invariant of the simulation was broken."""


@dataclass(frozen=True)
class SimParams:
    voters: int = 3
    observers: int = 0
    tick_units: int = 10
    delay_min_units: int = 1
    delay_max_units: int = 10
    loss: float = 0.0
    duplicate: float = 0.0
    disk_latency_max_units: int = 3
    torn_writes: bool = True
    sync_hard_state: bool = True            # False: the broken driver (vote not fsynced)
    compact_every_entries: int = 0          # 0: never compact
    propose_every_ticks: int = 2            # 0: no background client
    election_timeout_ticks: int = 10
    fetch_max_entries: int = 64
    uncommitted_entries_max: int = 32       # leader backpressure (proposals beyond are dropped)
    proposal_burst_max: int = 3             # the client proposes 1..this many entries at a time
    check_quorum: bool = True
    pre_vote: bool = True
    unsafe_commit_old_terms: bool = False

    def raft_config(self, node_id: int) -> RaftConfig:
        return RaftConfig(node_id=node_id, voters=frozenset(self.voter_ids),
                          election_timeout_ticks=self.election_timeout_ticks,
                          fetch_max_entries=self.fetch_max_entries, check_quorum=self.check_quorum,
                          uncommitted_entries_max=self.uncommitted_entries_max,
                          pre_vote=self.pre_vote, unsafe_commit_old_terms=self.unsafe_commit_old_terms)

    @property
    def voter_ids(self) -> tuple[int, ...]:
        return tuple(range(1, self.voters + 1))

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(range(1, self.voters + self.observers + 1))

    @property
    def stale_leader_bound_ticks(self) -> int:
        up = -(-self.delay_max_units // self.tick_units) + -(-self.disk_latency_max_units // self.tick_units)
        return self.election_timeout_ticks + up + 2

    def with_(self, **changes: object) -> SimParams:
        return replace(self, **changes)


# -- disk ---------------------------------------------------------------------------------------


class SimDisk:
    """Durable state plus pending (unsynced) writes, in write order."""

    __slots__ = ("entries", "hard_state", "pending", "snapshot")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot = EMPTY_SNAPSHOT
        self.entries: list[Entry] = []
        self.pending: list[tuple] = []

    def write(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.pending.append(("snap", rd.snapshot, rd.apply_snapshot))
        if rd.entries:
            self.pending.append(("ents", rd.entries))
        if rd.hard_state is not None:
            self.pending.append(("hs", rd.hard_state))

    def sync(self) -> None:
        for op in self.pending:
            self._apply(op)
        self.pending.clear()

    def crash(self, rng: random.Random, torn_writes: bool, keep_unsynced: bool | None = None) -> str:
        """Lose unsynced writes: keep a random prefix (or all / none), maybe tear the first lost batch."""
        pending, self.pending = self.pending, []
        keep = rng.randint(0, len(pending)) if keep_unsynced is None else len(pending) * keep_unsynced
        for op in pending[:keep]:
            self._apply(op)
        note = f"kept {keep}/{len(pending)} unsynced writes"
        lost = pending[keep] if keep < len(pending) else None
        if torn_writes and keep_unsynced is None and lost is not None and lost[0] == "ents" and len(lost[1]) > 1:
            part = lost[1][:rng.randint(1, len(lost[1]) - 1)]
            self._apply(("ents", part))
            note += f", torn batch kept {len(part)}/{len(lost[1])} entries"
        return note

    def _apply(self, op: tuple) -> None:
        kind = op[0]
        if kind == "hs":
            self.hard_state = op[1]
        elif kind == "ents":
            ents = op[1]
            base = self.snapshot.index
            cut = ents[0].index - base - 1
            assert 0 <= cut <= len(self.entries), f"non-contiguous write at {ents[0].index}"
            del self.entries[cut:]
            self.entries.extend(ents)
        else:
            snap, replace_all = op[1], op[2]
            if replace_all:
                self.snapshot, self.entries = snap, []
            elif snap.index > self.snapshot.index:
                self.entries = self.entries[snap.index - self.snapshot.index:]
                self.snapshot = snap

    def load(self) -> MemoryStorage:
        return MemoryStorage(self.hard_state, self.snapshot, self.entries)


# -- application ------------------------------------------------------------------------------------


def chain_step(chain: int, entry: Entry) -> int:
    return zlib.crc32(entry.data, zlib.crc32(b"%d/%d/%d:" % (entry.term, entry.index, entry.type), chain))


class SimApp:
    """The replicated state machine: a hash chain over every applied entry."""

    __slots__ = ("chain", "index")

    def __init__(self, index: int = 0, chain: int = 0) -> None:
        self.index = index
        self.chain = chain

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> SimApp:
        if snap.index == 0:
            return cls()
        index, chain = struct.unpack(">QI", snap.data)
        assert index == snap.index
        return cls(index, chain)

    def snapshot_data(self) -> bytes:
        return struct.pack(">QI", self.index, self.chain)

    def apply(self, entry: Entry) -> None:
        self.index = entry.index
        self.chain = chain_step(self.chain, entry)


# -- nodes ------------------------------------------------------------------------------------------

_TICK, _MSG = 0, 1


class SimNode:
    """The driver of one RaftCore: persist (maybe slowly) -> send -> apply -> advance."""

    def __init__(self, cluster: SimCluster, node_id: int, rng_seed: int) -> None:
        self.cluster = cluster
        self.id = node_id
        self.config = cluster.params.raft_config(node_id)
        self.is_voter = node_id in cluster.params.voter_ids
        self._rng = random.Random(rng_seed)
        self.disk = SimDisk()
        self.incarnation = 0
        self.busy = False
        self.inbox: deque[tuple[int, Message | None]] = deque()
        self.alive = True
        self.app = SimApp()
        self.core = self._boot()

    def _boot(self) -> RaftCore:
        storage = self.disk.load()
        self.app = SimApp.from_snapshot(storage.snapshot)
        return RaftCore(self.config, storage, random.Random(self._rng.getrandbits(64)))

    # inputs ------------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.busy:
            self.inbox.append((_TICK, None))
            return
        self.core.tick()
        self._drain()

    def deliver(self, m: Message) -> None:
        if self.busy:
            self.inbox.append((_MSG, m))
            return
        self.core.step(m)
        self._drain()

    def call(self, fn: Callable[[RaftCore], object]) -> object:
        """Run an API call on the core now (None if it is busy persisting or down)."""
        if self.busy or not self.alive:
            return None
        try:
            result = fn(self.core)
        except (NotLeaderError, ProposalDroppedError):
            return None
        self._drain()
        return result

    def _drain(self) -> None:
        core = self.core
        while not self.busy:
            if core.has_ready():
                self._handle_ready(core.ready())
                continue
            if not self.inbox:
                break
            kind, m = self.inbox.popleft()
            if kind == _TICK:
                core.tick()
            else:
                core.step(m)
        self.cluster.checker.observe(self)

    def _handle_ready(self, rd: Ready) -> None:
        self.disk.write(rd)
        sync = rd.must_sync and (self.cluster.params.sync_hard_state or bool(rd.entries) or rd.snapshot is not None)
        if sync:
            latency = self.cluster.disk_latency_units()
            if latency > 0:
                self.busy = True
                self.cluster.schedule(latency, self._sync_done, (self.incarnation, rd))
                return
            self.disk.sync()
        self._finish(rd)

    def _sync_done(self, arg: tuple[int, Ready]) -> None:
        incarnation, rd = arg
        if incarnation != self.incarnation:
            return  # crashed meanwhile: the write may be lost, nothing was sent
        self.disk.sync()
        self.busy = False
        self._finish(rd)
        self._drain()

    def _finish(self, rd: Ready) -> None:
        cluster = self.cluster
        for m in rd.messages:
            cluster.send(m)
        checker = cluster.checker
        if rd.apply_snapshot:
            assert rd.snapshot is not None
            self.app = SimApp.from_snapshot(rd.snapshot)
            checker.on_restore(self, rd.snapshot)
        for entry in rd.committed_entries:
            checker.on_apply(self, entry)
        self.core.advance(rd)
        every = cluster.params.compact_every_entries
        core = self.core
        if every and core.applied_index - core.snapshot_index >= every:
            assert self.app.index == core.applied_index
            core.compact(core.applied_index, self.app.snapshot_data())

    # faults ------------------------------------------------------------------------------------

    def crash(self, keep_unsynced: bool | None = None) -> str:
        assert self.alive
        self.alive = False
        self.busy = False
        self.inbox.clear()
        self.incarnation += 1
        return self.disk.crash(self._rng, self.cluster.params.torn_writes, keep_unsynced)

    def restart(self) -> None:
        assert not self.alive
        self.alive = True
        self.core = self._boot()
        self.cluster.checker.on_restart(self)
        self._drain()


# -- invariants --------------------------------------------------------------------------------------


class InvariantChecker:
    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.committed: list[Entry | None] = [None]
        self.chain: list[int] = [0]
        self.commit_term: list[int] = [0]
        self.leader_of_term: dict[int, int] = {}
        self.leaders: dict[int, tuple[int, int]] = {}  # node -> (term, tick elected)
        self.last_term: dict[int, int] = {}
        self.max_sent_term: dict[int, int] = {}
        self.granted: dict[tuple[int, int], int] = {}  # (voter, term) -> candidate
        self.elections = 0
        self.crashes = 0
        self.restores: Counter[int] = Counter()  # snapshots installed from a leader, per node
        self.check_restart_state = True  # scenario tests may switch it off to see what follows
        self.applied_by: dict[bytes, set[int]] = {}
        self.watch: set[bytes] = set()
        self.on_elected_hooks: list[Callable[[int, int], None]] = []

    def fail(self, what: str) -> None:
        raise Violation(what)

    # per event ---------------------------------------------------------------------------------

    def observe(self, node: SimNode) -> None:
        core = node.core
        nid = node.id
        term = core.term
        if term < self.last_term.get(nid, 0):
            self.fail(f"term went backwards on node {nid}: {self.last_term[nid]} -> {term}")
        self.last_term[nid] = term
        was = self.leaders.get(nid)
        if core.role is Role.LEADER:
            if was is None or was[0] != term:
                self._on_elected(node, term)
        elif was is not None:
            del self.leaders[nid]

    def _on_elected(self, node: SimNode, term: int) -> None:
        nid = node.id
        other = self.leader_of_term.get(term)
        if other is not None and other != nid:
            self.fail(f"election safety: nodes {other} and {nid} are both leaders of term {term}")
        self.leader_of_term[term] = nid
        self.leaders[nid] = (term, self.cluster.tick)
        self.elections += 1
        log = node.core.log
        snap_index = log.snapshot_index()
        if 0 < snap_index < len(self.chain):
            app = SimApp.from_snapshot(log.storage.snapshot if log.unstable_snapshot is None else log.unstable_snapshot)
            if app.chain != self.chain[snap_index]:
                self.fail(f"leader completeness: leader {nid} (term {term}) has a snapshot at {snap_index} "
                          "that differs from the committed prefix")
        for i in range(max(1, snap_index + 1), len(self.committed)):
            if self.commit_term[i] < term:
                entry = self.committed[i]
                assert entry is not None
                if log.term(i) != entry.term:
                    self.fail(f"leader completeness: node {nid} became leader of term {term} without entry "
                              f"{i} (term {entry.term}, committed in term {self.commit_term[i]}); "
                              f"its log has term {log.term(i)} there")
        for hook in self.on_elected_hooks:
            hook(nid, term)

    def on_send(self, m: Message) -> None:
        t = m.type
        if t is MessageType.PRE_VOTE or t is MessageType.PRE_VOTE_RESP:
            return
        if m.term > self.max_sent_term.get(m.src, 0):
            self.max_sent_term[m.src] = m.term
        if t is MessageType.VOTE_RESP and not m.reject:
            key = (m.src, m.term)
            prev = self.granted.get(key)
            if prev is not None and prev != m.dst:
                self.fail(f"double vote: node {m.src} granted its term-{m.term} vote to {prev} and to {m.dst}")
            self.granted[key] = m.dst

    def on_apply(self, node: SimNode, entry: Entry) -> None:
        app = node.app
        i = entry.index
        if i != app.index + 1:
            self.fail(f"node {node.id} applied index {i} after {app.index}")
        app.apply(entry)
        if i < len(self.committed):
            known = self.committed[i]
            if known != entry:
                self.fail(f"state machine safety: node {node.id} applied {entry[:2]} {entry.data!r} at index {i}, "
                          f"but {known[:2] if known else None} {known.data if known else None!r} was committed there")
        elif i == len(self.committed):
            self.committed.append(entry)
            self.chain.append(app.chain)
            commit_term = node.core.term
            self.commit_term.append(commit_term)
            for nid, (term, _) in self.leaders.items():
                if term > commit_term and self.cluster.nodes[nid].core.log.term(i) not in (entry.term, None):
                    self.fail(f"leader completeness: leader {nid} of term {term} lacks entry {i} committed in "
                              f"term {commit_term}")
            self._check_electable_logs_hold(entry)
        else:
            self.fail(f"node {node.id} applied index {i} beyond every committed index ({len(self.committed) - 1})")
        if entry.data in self.watch:
            self.applied_by.setdefault(entry.data, set()).add(node.id)

    def _check_electable_logs_hold(self, entry: Entry) -> None:
        """A newly committed entry is in every voter log that could win an election (figure 8).

        A log is electable if it is at least as up-to-date (§5.4.1) as a majority of voters' logs
        (a crashed voter counts with what its disk holds). Log Matching and Leader Completeness
        imply that such a log holds every committed entry; counting replicas of an earlier term's
        entry breaks exactly this (figure 8 (c)-(d)).
        """
        nodes = self.cluster.nodes
        voters = self.cluster.params.voter_ids
        views = {v: _LogView(nodes[v]) for v in voters}
        lasts = {v: view.last() for v, view in views.items()}
        needed = len(voters) // 2 + 1
        for v, view in views.items():
            mine = lasts[v]
            if sum(1 for other in lasts.values() if mine >= other) < needed:
                continue
            if view.covers(entry.index):
                continue
            held = view.term(entry.index)
            if held != entry.term:
                self.fail(f"committed entry {entry.index} (term {entry.term}) is missing from voter {v}, whose log "
                          f"(last term {mine[0]}, index {mine[1]}) could still win an election: it would overwrite "
                          f"the entry (its term there: {held})")

    def on_restore(self, node: SimNode, snap: Snapshot) -> None:
        self.restores[node.id] += 1
        if snap.index >= len(self.chain):
            self.fail(f"node {node.id} installed a snapshot at {snap.index} beyond every applied index")
        if node.app.chain != self.chain[snap.index] or node.app.index != snap.index:
            self.fail(f"node {node.id} installed a snapshot at {snap.index} that differs from the committed prefix")

    def on_crash(self, node_id: int) -> None:
        self.crashes += 1
        self.leaders.pop(node_id, None)

    def on_restart(self, node: SimNode) -> None:
        core = node.core
        self.last_term[node.id] = core.term
        if not self.check_restart_state:
            return
        sent = self.max_sent_term.get(node.id, 0)
        if core.term < sent:
            self.fail(f"node {node.id} restarted in term {core.term} but had sent messages in term {sent} "
                      "(an unsynced hard state was lost)")
        granted = self.granted.get((node.id, core.term))
        if granted is not None and core.vote != granted:
            self.fail(f"node {node.id} restarted in term {core.term} with vote {core.vote}, but it had granted "
                      f"its vote to {granted} (an unsynced vote was lost)")

    def on_tick(self) -> None:
        if len(self.leaders) < 2:
            return
        newest_node, (newest_term, since) = max(self.leaders.items(), key=lambda kv: kv[1][0])
        bound = self.cluster.params.stale_leader_bound_ticks
        if self.cluster.tick - since <= bound:
            return
        for nid, (term, _) in self.leaders.items():
            if term < newest_term:
                self.fail(f"stale leader: node {nid} is still leader of term {term} although node {newest_node} "
                          f"became leader of term {newest_term} at tick {since} (> {bound} ticks ago)")


class _LogView:
    """(last term, last index) and terms of a voter's log: in memory if it is up, else on its disk."""

    __slots__ = ("_disk", "_log")

    def __init__(self, node: SimNode) -> None:
        self._log = node.core.log if node.alive else None
        self._disk = node.disk

    def last(self) -> tuple[int, int]:
        if self._log is not None:
            return self._log.last_term(), self._log.last_index()
        disk = self._disk
        if disk.entries:
            return disk.entries[-1].term, disk.entries[-1].index
        return disk.snapshot.term, disk.snapshot.index

    def covers(self, index: int) -> bool:
        snap_index = self._log.snapshot_index() if self._log is not None else self._disk.snapshot.index
        return index <= snap_index

    def term(self, index: int) -> int | None:
        if self._log is not None:
            return self._log.term(index)
        disk = self._disk
        k = index - disk.snapshot.index - 1
        return disk.entries[k].term if 0 <= k < len(disk.entries) else None


# -- the cluster -------------------------------------------------------------------------------------


@dataclass
class SimStats:
    messages_sent: int = 0
    messages_dropped: int = 0
    proposals: int = 0
    events: int = 0
    actions: list[str] = field(default_factory=list)


class SimCluster:
    def __init__(self, seed: int, params: SimParams) -> None:
        self.seed = seed
        self.params = params
        root = random.Random(seed)
        self.net_rng = random.Random(root.getrandbits(64))
        self.disk_rng = random.Random(root.getrandbits(64))
        self.client_rng = random.Random(root.getrandbits(64))
        self.fault_rng = random.Random(root.getrandbits(64))
        self.now_units = 0
        self.tick = 0
        self._heap: list[tuple[int, int, Callable, object]] = []
        self._seq = 0
        self.blocked: Counter[tuple[int, int]] = Counter()
        self.loss = params.loss
        self.duplicate = params.duplicate
        self.drop_filter: Callable[[Message], bool] | None = None  # scenario tests: True drops
        self.trace: deque[tuple[int, str, object]] = deque(maxlen=TRACE_EVENTS_MAX)
        self.stats = SimStats()
        self.tick_hooks: list[Callable[[], None]] = []
        self.checker = InvariantChecker(self)
        self.nodes: dict[int, SimNode] = {}
        for nid in params.node_ids:
            self.nodes[nid] = SimNode(self, nid, root.getrandbits(64))

    # scheduling -------------------------------------------------------------------------------

    def schedule(self, delay_units: int, fn: Callable, arg: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now_units + delay_units, self._seq, fn, arg))

    def disk_latency_units(self) -> int:
        top = self.params.disk_latency_max_units
        return self.disk_rng.randint(0, top) if top else 0

    def send(self, m: Message) -> None:
        self.checker.on_send(m)
        self.stats.messages_sent += 1
        blocked = self.blocked and self.blocked[(m.src, m.dst)] > 0
        if blocked or (self.drop_filter is not None and self.drop_filter(m)):
            self.stats.messages_dropped += 1
            return
        rng = self.net_rng
        if self.loss and rng.random() < self.loss:
            self.stats.messages_dropped += 1
            return
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        p = self.params
        for _ in range(copies):
            self.schedule(rng.randint(p.delay_min_units, p.delay_max_units), self._deliver, m)

    def _deliver(self, m: Message) -> None:
        node = self.nodes[m.dst]
        if node.alive:
            self.trace.append((self.now_units, "recv", m))
            node.deliver(m)

    # running ------------------------------------------------------------------------------------

    def run_ticks(self, count: int) -> None:
        for _ in range(count):
            self._advance_one_tick()

    def run_until(self, predicate: Callable[[], bool], max_ticks: int) -> int:
        """Run until `predicate()` holds (checked after each tick); returns ticks used or raises."""
        for used in range(max_ticks + 1):
            if predicate():
                return used
            self._advance_one_tick()
        raise Violation(f"condition not reached within {max_ticks} ticks")

    def _advance_one_tick(self) -> None:
        boundary = (self.tick + 1) * self.params.tick_units
        heap = self._heap
        stats = self.stats
        while heap and heap[0][0] <= boundary:
            when, _, fn, arg = heapq.heappop(heap)
            self.now_units = when
            stats.events += 1
            fn(arg)
        self.now_units = boundary
        self.tick += 1
        for hook in self.tick_hooks:
            hook()
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if node.alive:
                node.tick()
        self.checker.on_tick()

    # faults and clients ------------------------------------------------------------------------

    def log_action(self, text: str) -> None:
        self.stats.actions.append(f"tick {self.tick}: {text}")
        self.trace.append((self.now_units, "action", text))

    def crash(self, nid: int, keep_unsynced: bool | None = None) -> None:
        """Crash `nid`; its unsynced writes survive as a random prefix (None), all (True) or none (False)."""
        node = self.nodes[nid]
        if not node.alive:
            return
        note = node.crash(keep_unsynced)
        self.checker.on_crash(nid)
        self.log_action(f"crash {nid} ({note})")

    def restart(self, nid: int) -> None:
        node = self.nodes[nid]
        if node.alive:
            return
        node.restart()
        self.log_action(f"restart {nid} (term {node.core.term}, commit {node.core.commit_index}, "
                        f"last {node.core.last_index})")

    def block(self, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        pairs = [p for p in pairs if p[0] != p[1]]
        self.blocked.update(pairs)
        return pairs

    def unblock(self, pairs: Iterable[tuple[int, int]]) -> None:
        self.blocked.subtract(pairs)
        self.blocked = +self.blocked

    def partition(self, group: Iterable[int]) -> list[tuple[int, int]]:
        """Cut `group` off from every other node, both ways; returns the handle for unblock()."""
        inside = set(group)
        outside = [n for n in self.nodes if n not in inside]
        pairs = [(a, b) for a in inside for b in outside] + [(b, a) for a in inside for b in outside]
        self.log_action(f"partition {sorted(inside)} | {sorted(outside)}")
        return self.block(pairs)

    def heal(self) -> None:
        self.blocked.clear()
        self.log_action("heal all partitions")

    def leaders(self) -> list[int]:
        return [n for n, node in self.nodes.items() if node.alive and node.core.role is Role.LEADER]

    def leader(self) -> int | None:
        """The alive leader with the highest term, if any."""
        best = None
        for nid in self.leaders():
            if best is None or self.nodes[nid].core.term > self.nodes[best].core.term:
                best = nid
        return best

    def propose(self, nid: int, data: bytes) -> object:
        self.stats.proposals += 1
        return self.nodes[nid].call(lambda core: core.propose(data))

    def propose_batch(self, nid: int, batch: list[bytes]) -> None:
        """Propose several entries before the node's next Ready (one multi-entry disk write)."""
        self.stats.proposals += len(batch)

        def propose_all(core: RaftCore) -> None:
            for data in batch:
                core.propose(data)

        self.nodes[nid].call(propose_all)

    def voters_applied(self, data: bytes) -> int:
        voters = set(self.params.voter_ids)
        return len(self.checker.applied_by.get(data, set()) & voters)

    def state_line(self) -> str:
        parts = []
        for nid, node in sorted(self.nodes.items()):
            if not node.alive:
                parts.append(f"{nid}:down")
                continue
            c = node.core
            parts.append(f"{nid}:{c.role.value}/t{c.term}/v{c.vote}/L{c.leader_id}/c{c.commit_index}/"
                         f"a{c.applied_index}/last{c.last_index}/snap{c.snapshot_index}"
                         f"{'/busy' if node.busy else ''}")
        return " ".join(parts)

    def format_trace(self, last: int = 80) -> str:
        lines = []
        for when, kind, obj in list(self.trace)[-last:]:
            lines.append(f"  {when // self.params.tick_units:>5}.{when % self.params.tick_units:<2} {kind} {obj!r}")
        return "\n".join(lines)


def noop_free(entries: Iterable[Entry]) -> list[Entry]:
    return [e for e in entries if e.type is not EntryType.NOOP]
