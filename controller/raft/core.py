"""Sans-IO Raft core: messages, ticks and proposals in; a `Ready` out (etcd-io/raft's contract).

`RaftCore` is a pure state machine. It reads no clock (time is `tick()`), draws randomness only
from the `random.Random` it is given, and does no I/O: everything it wants done comes out of
`ready()`, which the driver must carry out in this order before calling `advance()`:

1. persist: `snapshot` (durably, before dropping the entries it covers; if `apply_snapshot` the
   whole log is replaced by it), then `entries` (truncate the stable log at `entries[0].index`,
   append), then `hard_state`; fsync if `must_sync` (§5.1: term and vote, and entries a replica
   acknowledges, must be on stable storage before any message that depends on them is sent);
2. send `messages` (any order, may be lost, duplicated or reordered: the protocol tolerates it);
3. if `apply_snapshot`, load the application state from `snapshot.data`; apply
   `committed_entries` in order (skip `EntryType.NOOP`);
4. call `advance(ready)`.

No other call may happen between `ready()` and `advance()` (asserted). A node restarts by building
a `MemoryStorage` from what it persisted (hard state, snapshot, entries) and a new `RaftCore`; the
application restores itself from that snapshot, and committed entries after it are handed out
again.

What the core implements (paper = Ongaro & Ousterhout 2014, thesis = Ongaro 2014):

* Elections (§5.2) with timeouts drawn from [T, 2T) ticks; pre-vote (thesis §9.6, KIP-996): a
  node first asks whether it could win in term+1 without changing any term, so a rejoining
  partitioned node cannot depose a healthy leader; leader stickiness (thesis §4.2.3): a voter
  that heard from its leader within T ticks ignores (pre-)votes unless they come from a
  leadership transfer; check-quorum (thesis §6.2): a leader that has not been fetched from by a
  majority of voters within T ticks steps down.
* Election restriction (§5.4.1) and the current-term commit rule (§5.4.2, figure 8): a new leader
  appends a NOOP entry and only entries of its own term are committed by counting replicas.
* Pull replication (KRaft): followers and observers FETCH with their anchor (prevLogIndex,
  prevLogTerm); the leader validates it with the log-matching check (§5.3) and answers with
  entries and its commit index, a divergence hint (etcd's fast backtracking / KRaft's
  DivergingEpoch), the snapshot when the anchor is below its log start (§7), or holds the fetch
  up to `fetch_max_wait_ticks` when there is nothing new (long poll). The follower treats a
  response exactly like an AppendEntries (§5.3 receiver rules), so stale, duplicated and
  reordered responses are harmless.
* Leadership transfer (thesis §3.10): the leader stops accepting proposals, waits until the
  target has fetched its whole log and sends TIMEOUT_NOW; the target campaigns at once.
* Observers: nodes outside `voters` fetch like followers, never vote or campaign, never count
  for commit or check-quorum, and apply only committed entries.
* Snapshots (§7): `compact(index, data)` replaces the applied prefix of the log by the
  application's state; lagging replicas receive it whole (no chunking).

Bugs are assertions (a second leader in one term, truncating a committed entry, calling the API
out of order). Operational refusals raise `NotLeaderError` / `ProposalDroppedError`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from . import quorum
from .config import RaftConfig
from .log import RaftLog
from .messages import FetchStatus, Message, MessageType
from .progress import Progress, ProgressTracker
from .storage import Entry, EntryType, HardState, MemoryStorage, Snapshot

_MT = MessageType


class Role(enum.Enum):
    FOLLOWER = "follower"            # voters following a leader (or none known), and all observers
    PRE_CANDIDATE = "pre_candidate"  # KRaft's "prospective": polling without bumping the term
    CANDIDATE = "candidate"
    LEADER = "leader"


class SoftState(NamedTuple):
    role: Role
    leader_id: int | None


class EntryId(NamedTuple):
    """Identity of a proposed entry: it is committed iff the committed entry at `index` has `term`."""

    term: int
    index: int


class ReplicaStatus(NamedTuple):
    replica_id: int
    is_voter: bool
    match_index: int
    last_fetch_tick: int
    last_caught_up_tick: int


class QuorumStatus(NamedTuple):
    """DescribeQuorum-style snapshot of the leader's view (replicas empty on non-leaders)."""

    node_id: int
    role: Role
    term: int
    leader_id: int | None
    commit_index: int
    last_index: int
    replicas: tuple[ReplicaStatus, ...]


class RaftError(Exception):
    """An operational refusal: retriable by the caller, never a bug."""


class NotLeaderError(RaftError):
    def __init__(self, leader_id: int | None, term: int) -> None:
        super().__init__(f"not the leader (leader {leader_id}, term {term})")
        self.leader_id = leader_id
        self.term = term


class ProposalDroppedError(RaftError):
    pass


@dataclass(frozen=True, slots=True)
class Ready:
    """Work for the driver; see the module docstring for the order it must be carried out in."""

    messages: tuple[Message, ...]
    entries: tuple[Entry, ...]            # truncate the stable log at entries[0].index, then append
    committed_entries: tuple[Entry, ...]  # apply after persisting, in order
    hard_state: HardState | None          # None: unchanged
    snapshot: Snapshot | None             # persist; drop the entries it covers
    apply_snapshot: bool                  # True: received from the leader, load it into the application
    must_sync: bool                       # fsync before sending `messages`
    soft_state: SoftState | None          # None: role and leader unchanged


class RaftCore:
    """One Raft node's protocol state. See the module docstring for the driver contract."""

    def __init__(self, config: RaftConfig, storage: MemoryStorage, rng: random.Random) -> None:
        self.config = config
        self.id = config.node_id
        self._voters = config.voters
        self._sorted_voters = sorted(config.voters)
        self._is_voter = config.node_id in config.voters
        self._rng = rng
        self._log = RaftLog(storage, config.apply_max_entries, config.apply_max_bytes)
        hs = storage.hard_state
        # Entries are written before the hard state of the same Ready: a torn write can leave an
        # entry of a newer term than the persisted term. Such a node was in that term.
        self.term = max(hs.term, self._log.last_term())
        self.vote: int | None = hs.vote if hs.term == self.term else None
        commit = max(hs.commit, storage.snapshot.index)
        assert commit <= self._log.last_index(), f"persisted commit {commit} beyond the log ({self._log.last_index()})"
        self._log.committed = commit
        self._prev_hard_state = hs
        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        self._prev_soft_state = SoftState(Role.FOLLOWER, None)
        self._ticks = 0
        self._election_elapsed_ticks = 0
        self._election_timeout_ticks = self._draw_election_timeout()
        self._leader_contact_tick: int | None = None
        self._leader_since_tick = 0
        self._msgs: list[Message] = []
        self._votes: dict[int, bool] = {}
        self._transfer_campaign = False
        self._tracker: ProgressTracker | None = None
        self._transfer_target: int | None = None
        self._transfer_elapsed_ticks = 0
        self._compaction: Snapshot | None = None
        self._ready_outstanding = False
        # Fetcher state (followers and observers).
        self._fetch_anchor = self._log.last_index()
        self._fetch_id = 0
        self._fetch_in_flight = False
        self._fetch_sent_tick = 0
        self._fetch_rotation = 0
        self._handlers: dict[MessageType, Callable[[Message], None]] = {
            _MT.PRE_VOTE: self._on_vote_request, _MT.VOTE: self._on_vote_request,
            _MT.PRE_VOTE_RESP: self._on_vote_response, _MT.VOTE_RESP: self._on_vote_response,
            _MT.BEGIN_QUORUM_EPOCH: self._on_begin_quorum_epoch,
            _MT.BEGIN_QUORUM_EPOCH_RESP: self._on_begin_quorum_epoch_response,
            _MT.FETCH: self._on_fetch, _MT.FETCH_RESP: self._on_fetch_response,
            _MT.TIMEOUT_NOW: self._on_timeout_now,
        }

    # -- introspection -----------------------------------------------------------------------

    @property
    def log(self) -> RaftLog:
        return self._log

    @property
    def is_voter(self) -> bool:
        return self._is_voter

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def snapshot_index(self) -> int:
        return self._log.snapshot_index()

    @property
    def ticks(self) -> int:
        return self._ticks

    @property
    def transfer_target(self) -> int | None:
        return self._transfer_target

    def status(self) -> QuorumStatus:
        replicas: tuple[ReplicaStatus, ...] = ()
        if self._tracker is not None:
            replicas = tuple(ReplicaStatus(r, p.is_voter, p.match_index, p.last_fetch_tick, p.last_caught_up_tick)
                             for r, p in sorted(self._tracker.progress.items()))
        return QuorumStatus(self.id, self.role, self.term, self.leader_id, self._log.committed,
                            self._log.last_index(), replicas)

    # -- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._check_no_outstanding_ready()
        self._ticks += 1
        self._election_elapsed_ticks += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_non_leader()

    def step(self, m: Message) -> None:
        """Process one received message (§5.1: a higher term converts us to follower first)."""
        self._check_no_outstanding_ready()
        assert m.dst == self.id, f"message for {m.dst} stepped into {self.id}"
        if m.term > self.term:
            if m.type in (_MT.PRE_VOTE, _MT.VOTE) and self._in_lease() and not m.transfer:
                return  # leader stickiness (thesis §4.2.3): do not even adopt the term
            if m.type is _MT.PRE_VOTE or (m.type is _MT.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote changes nobody's term (thesis §9.6)
            else:
                self._become_follower(m.term, self._leader_named_by(m))
        elif m.term < self.term:
            self._on_stale_message(m)
            return
        self._handlers[m.type](m)

    def propose(self, data: bytes) -> EntryId:
        """Append `data` as a new entry of the current term (leader only)."""
        self._check_no_outstanding_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id, self.term)
        if self._transfer_target is not None:
            raise ProposalDroppedError(f"leadership transfer to {self._transfer_target} in progress")
        log = self._log
        if log.last_index() - log.committed >= self.config.uncommitted_entries_max:
            raise ProposalDroppedError(f"{self.config.uncommitted_entries_max} entries are uncommitted")
        entry = Entry(self.term, log.last_index() + 1, data)
        log.append((entry,))
        self._answer_pending_fetches()
        return EntryId(entry.term, entry.index)

    def campaign(self) -> None:
        """Start an election now (bootstrap, tests): pre-vote first when configured."""
        self._check_no_outstanding_ready()
        assert self._is_voter, "observers never campaign"
        if self.role is not Role.LEADER:
            self._campaign(transfer=False)

    def transfer_leadership(self, target: int | None = None) -> int:
        """Hand leadership to `target` (default: the most caught-up voter); returns the target.

        Proposals are refused until the transfer completes or is abandoned after an election
        timeout. The target gets TIMEOUT_NOW once it has fetched the leader's whole log.
        """
        self._check_no_outstanding_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id, self.term)
        assert self._tracker is not None
        others = [v for v in self._sorted_voters if v != self.id]
        if not others:
            raise ProposalDroppedError("no other voter to transfer leadership to")
        progress = self._tracker.progress
        if target is None:
            target = max(others, key=lambda v: (progress[v].match_index, progress[v].last_fetch_tick))
        assert target in others, f"{target} is not another voter"
        self._transfer_target = target
        self._transfer_elapsed_ticks = 0
        if progress[target].match_index >= self._log.last_index():
            self._send(Message(_MT.TIMEOUT_NOW, self.term, self.id, target))
        return target

    def compact(self, index: int, snapshot_data: bytes) -> None:
        """Replace the log up to `index` (applied) by `snapshot_data`, the application's state there."""
        self._check_no_outstanding_ready()
        log = self._log
        if index <= log.snapshot_index():
            return
        assert index <= log.applied, f"compact({index}) beyond applied index {log.applied}"
        term = log.term(index)
        assert term is not None
        self._compaction = Snapshot(index, term, snapshot_data)

    # -- outputs -----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        log = self._log
        prev = self._prev_hard_state
        soft = self._prev_soft_state
        return bool(self._msgs or log.has_unstable() or self._compaction is not None or log.has_next_committed()
                    or self.term != prev.term or self.vote != prev.vote or log.committed != prev.commit
                    or self.role is not soft.role or self.leader_id != soft.leader_id)

    def ready(self) -> Ready:
        self._check_no_outstanding_ready()
        log = self._log
        prev = self._prev_hard_state
        hs = HardState(self.term, self.vote, log.committed)
        snapshot = log.unstable_snapshot
        apply_snapshot = snapshot is not None
        if snapshot is None:
            snapshot = self._compaction
        entries = log.unstable_entries()
        soft = SoftState(self.role, self.leader_id)
        rd = Ready(
            messages=tuple(self._msgs),
            entries=entries,
            committed_entries=log.next_committed_entries(),
            hard_state=hs if hs != prev else None,
            snapshot=snapshot,
            apply_snapshot=apply_snapshot,
            must_sync=bool(entries) or apply_snapshot or hs.term != prev.term or hs.vote != prev.vote,
            soft_state=soft if soft != self._prev_soft_state else None,
        )
        self._msgs = []
        self._ready_outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied `rd`."""
        assert self._ready_outstanding, "advance() without ready()"
        self._ready_outstanding = False
        log = self._log
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
            log.storage.hard_state = rd.hard_state
        if rd.snapshot is not None:
            if rd.apply_snapshot:
                log.stable_snapshot(rd.snapshot)
                log.applied_to(rd.snapshot.index)
            else:
                log.storage.compact(rd.snapshot)
            if self._compaction is not None and self._compaction.index <= rd.snapshot.index:
                self._compaction = None
        if rd.entries:
            log.stable_to(rd.entries[-1].index)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        if rd.soft_state is not None:
            self._prev_soft_state = rd.soft_state
        if self.role is Role.LEADER:
            assert self._tracker is not None
            self._tracker.self_match_index = log.stable_last_index()
            self._maybe_commit()

    # -- time --------------------------------------------------------------------------------

    def _tick_leader(self) -> None:
        cfg = self.config
        tracker = self._tracker
        assert tracker is not None
        now = self._ticks
        if cfg.check_quorum and not tracker.quorum_active(now, cfg.election_timeout_ticks):
            self._become_follower(self.term, None)  # no zombie leader (thesis §6.2)
            return
        if self._transfer_target is not None:
            self._transfer_elapsed_ticks += 1
            if self._transfer_elapsed_ticks >= cfg.election_timeout_ticks:
                self._transfer_target = None  # abandoned: accept proposals again
        announce = self._election_elapsed_ticks % cfg.begin_quorum_resend_ticks == 0
        for replica_id, pr in tracker.progress.items():
            if pr.pending_fetch is not None and now - pr.pending_since_tick >= cfg.fetch_max_wait_ticks:
                self._answer_fetch(pr, pr.pending_fetch)
            if (announce and pr.is_voter and pr.pending_fetch is None
                    and now - pr.last_fetch_tick >= cfg.fetch_timeout_ticks):
                self._send(Message(_MT.BEGIN_QUORUM_EPOCH, self.term, self.id, replica_id))

    def _tick_non_leader(self) -> None:
        cfg = self.config
        if self._is_voter and self._election_elapsed_ticks >= self._election_timeout_ticks:
            self._campaign(transfer=False)
            return
        if self.role is not Role.FOLLOWER:
            if self._election_elapsed_ticks % cfg.vote_retry_ticks == 0:
                self._request_votes(only_silent=True)
            return
        if self._fetch_in_flight:
            if self._ticks - self._fetch_sent_tick < cfg.fetch_timeout_ticks:
                return
            self._fetch_in_flight = False
            if not self._is_voter:  # an observer tries the next voter when its leader is silent
                self.leader_id = None
                self._fetch_rotation += 1
        self._maybe_send_fetch()

    def _draw_election_timeout(self) -> int:
        t = self.config.election_timeout_ticks
        return self._rng.randrange(t, 2 * t)

    def _in_lease(self) -> bool:
        """Heard from a live leader within the election timeout (only meaningful with check-quorum)."""
        if not self.config.check_quorum or self.leader_id is None:
            return False
        if self.role is Role.LEADER:
            return True
        contact = self._leader_contact_tick
        return contact is not None and self._ticks - contact < self.config.election_timeout_ticks

    # -- role changes ------------------------------------------------------------------------

    def _reset(self) -> None:
        self._election_elapsed_ticks = 0
        self._election_timeout_ticks = self._draw_election_timeout()
        self._votes = {}
        self._tracker = None
        self._transfer_target = None
        self._transfer_campaign = False

    def _become_follower(self, term: int, leader_id: int | None) -> None:
        assert term >= self.term
        if term > self.term:
            self.term = term
            self.vote = None
        if leader_id != self.leader_id or self.role is not Role.FOLLOWER:
            self._fetch_anchor = self._log.last_index()
            self._fetch_in_flight = False
        self._reset()
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self._leader_contact_tick = None

    def _become_pre_candidate(self) -> None:
        self._reset()
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._leader_contact_tick = None

    def _become_candidate(self) -> None:
        self._reset()
        self.term += 1
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.leader_id = None
        self._leader_contact_tick = None

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE
        self._reset()
        self.role = Role.LEADER
        self.leader_id = self.id
        self._leader_since_tick = self._ticks
        log = self._log
        last = log.last_index()
        self._tracker = ProgressTracker(self.id, self._voters, self.config.observers_max, self._ticks, last + 1)
        self._tracker.self_match_index = log.stable_last_index()
        # §5.4.2 / §8: commit the previous terms' entries through an entry of this term.
        log.append((Entry(self.term, last + 1, b"", EntryType.NOOP),))
        for voter in self._sorted_voters:
            if voter != self.id:
                self._send(Message(_MT.BEGIN_QUORUM_EPOCH, self.term, self.id, voter))
        self._maybe_commit()  # a single-voter cluster

    # -- elections ---------------------------------------------------------------------------

    def _campaign(self, transfer: bool) -> None:
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate()
        self._transfer_campaign = transfer
        self._start_poll()

    def _start_poll(self) -> None:
        self._votes = {self.id: True}
        if self._tally() is quorum.VoteResult.PENDING:
            self._request_votes(only_silent=False)

    def _request_votes(self, only_silent: bool) -> None:
        pre = self.role is Role.PRE_CANDIDATE
        mtype = _MT.PRE_VOTE if pre else _MT.VOTE
        term = self.term + 1 if pre else self.term
        last_index = self._log.last_index()
        last_term = self._log.last_term()
        for voter in self._sorted_voters:
            if voter == self.id or (only_silent and voter in self._votes):
                continue
            self._send(Message(mtype, term, self.id, voter, index=last_index, log_term=last_term,
                               transfer=self._transfer_campaign))

    def _tally(self) -> quorum.VoteResult:
        result = quorum.vote_result(self._voters, self._votes)
        if result is quorum.VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._become_candidate()
                self._start_poll()
            else:
                self._become_leader()
        elif result is quorum.VoteResult.LOST:
            self._become_follower(self.term, None)
        return result

    def _on_vote_request(self, m: Message) -> None:
        pre = m.type is _MT.PRE_VOTE
        resp = _MT.PRE_VOTE_RESP if pre else _MT.VOTE_RESP
        # §5.2: one vote per term; a pre-vote for a future term is only a prediction.
        can_vote = self._is_voter and (self.vote == m.src or (self.vote is None and self.leader_id is None)
                                       or (pre and m.term > self.term))
        if can_vote and self._log.is_up_to_date(m.index, m.log_term):
            if not pre:
                self.vote = m.src  # in the Ready's hard state: persisted before this response is sent
                self._election_elapsed_ticks = 0
            self._send(Message(resp, m.term, self.id, m.src))
        else:
            self._send(Message(resp, self.term, self.id, m.src, reject=True))

    def _on_vote_response(self, m: Message) -> None:
        if m.type is _MT.PRE_VOTE_RESP:
            if self.role is not Role.PRE_CANDIDATE or (not m.reject and m.term != self.term + 1):
                return
        elif self.role is not Role.CANDIDATE:
            return
        self._votes[m.src] = not m.reject
        self._tally()

    def _on_timeout_now(self, m: Message) -> None:
        if self._is_voter and self.role is Role.FOLLOWER and self.leader_id in (None, m.src):
            self._campaign(transfer=True)

    # -- leader announcements ----------------------------------------------------------------

    def _on_begin_quorum_epoch(self, m: Message) -> None:
        assert self.role is not Role.LEADER, f"two leaders in term {self.term}: {self.id} and {m.src}"
        if self.role is not Role.FOLLOWER or self.leader_id != m.src:
            self._become_follower(self.term, m.src)
        self._on_leader_contact()
        if not self._fetch_in_flight:
            self._maybe_send_fetch()

    def _on_begin_quorum_epoch_response(self, m: Message) -> None:
        pass  # only a higher term matters, and step() has adopted it

    def _on_leader_contact(self) -> None:
        self._leader_contact_tick = self._ticks
        self._election_elapsed_ticks = 0

    @staticmethod
    def _leader_named_by(m: Message) -> int | None:
        """The leader of `m.term` that a message of a higher term reveals, if any."""
        if m.type in (_MT.BEGIN_QUORUM_EPOCH, _MT.TIMEOUT_NOW):
            return m.src
        if m.type is _MT.FETCH_RESP:
            return m.src if m.status is not FetchStatus.NOT_LEADER else m.leader_hint
        if m.type is _MT.BEGIN_QUORUM_EPOCH_RESP:
            return m.leader_hint
        return None

    def _on_stale_message(self, m: Message) -> None:
        """A message from an older term: answer requests with our term so the sender catches up."""
        if m.type is _MT.PRE_VOTE or m.type is _MT.VOTE:
            resp = _MT.PRE_VOTE_RESP if m.type is _MT.PRE_VOTE else _MT.VOTE_RESP
            self._send(Message(resp, self.term, self.id, m.src, reject=True))
        elif m.type is _MT.FETCH:
            self._send(Message(_MT.FETCH_RESP, self.term, self.id, m.src, status=FetchStatus.NOT_LEADER,
                               leader_hint=self.leader_id, fetch_id=m.fetch_id))
        elif m.type is _MT.BEGIN_QUORUM_EPOCH:
            # A deposed leader that missed the election (it would otherwise rely on check-quorum).
            self._send(Message(_MT.BEGIN_QUORUM_EPOCH_RESP, self.term, self.id, m.src, leader_hint=self.leader_id))

    # -- replication: leader side ------------------------------------------------------------

    def _on_fetch(self, m: Message) -> None:
        if self.role is not Role.LEADER:
            self._send(Message(_MT.FETCH_RESP, self.term, self.id, m.src, status=FetchStatus.NOT_LEADER,
                               leader_hint=self.leader_id, fetch_id=m.fetch_id))
            return
        assert self._tracker is not None and m.src != self.id
        log = self._log
        now = self._ticks
        pr = self._tracker.get(m.src, now, m.index + 1)
        if pr is None:
            return  # observers disabled (observers_max == 0)
        pr.on_fetch(now, m.index)
        pr.pending_fetch = None
        anchor = m.index
        if anchor >= log.snapshot_index() and not log.match_term(anchor, m.log_term):
            pr.on_diverging()
            hint_index, hint_term = log.find_conflict_by_term(anchor, m.log_term)
            self._send(Message(_MT.FETCH_RESP, self.term, self.id, m.src, index=anchor, log_term=m.log_term,
                               status=FetchStatus.DIVERGING, hint_index=hint_index, hint_term=hint_term,
                               commit=log.committed, fetch_id=m.fetch_id))
            return
        if anchor >= log.snapshot_index():
            # Log Matching (§5.3): the fetcher's log equals ours up to the anchor.
            if pr.on_match(anchor, now, log.last_index()) and pr.is_voter:
                self._maybe_commit()
            if self._transfer_target == m.src and anchor >= log.last_index():
                self._send(Message(_MT.TIMEOUT_NOW, self.term, self.id, m.src))
            if anchor >= log.last_index() and m.commit >= log.committed:
                pr.hold(m, now)  # nothing new: long poll
                return
        self._answer_fetch(pr, m)

    def _answer_fetch(self, pr: Progress, m: Message) -> None:
        """Entries after the (validated) anchor, or the snapshot if they were compacted away."""
        log = self._log
        pr.pending_fetch = None
        anchor = m.index
        if anchor < log.snapshot_index():
            pr.on_snapshot_sent()
            self._send(Message(_MT.FETCH_RESP, self.term, self.id, m.src, status=FetchStatus.SNAPSHOT,
                               snapshot=log.storage.snapshot, commit=log.committed, fetch_id=m.fetch_id))
            return
        last = log.last_index()
        entries: tuple[Entry, ...] = ()
        if anchor < last:
            entries = tuple(log.slice(anchor + 1, last + 1, self.config.fetch_max_entries,
                                      self.config.fetch_max_bytes))
        self._send(Message(_MT.FETCH_RESP, self.term, self.id, m.src, index=anchor, log_term=m.log_term,
                           entries=entries, commit=log.committed, fetch_id=m.fetch_id))

    def _answer_pending_fetches(self) -> None:
        if self._tracker is None:
            return
        last = self._log.last_index()
        committed = self._log.committed
        for pr in self._tracker.progress.values():
            held = pr.pending_fetch
            if held is not None and (held.index < last or held.commit < committed):
                self._answer_fetch(pr, held)

    def _maybe_commit(self) -> None:
        assert self._tracker is not None
        log = self._log
        index = self._tracker.committed_index()
        if index <= log.committed:
            return
        if not self.config.unsafe_commit_old_terms and log.term(index) != self.term:
            return  # §5.4.2, figure 8: never commit an earlier term's entry by counting replicas
        log.commit_to(index)
        self._answer_pending_fetches()

    # -- replication: fetcher side -----------------------------------------------------------

    def _maybe_send_fetch(self) -> None:
        target = self.leader_id
        if target is None and not self._is_voter:
            target = self._sorted_voters[self._fetch_rotation % len(self._sorted_voters)]
        if target is None or target == self.id:
            return
        log = self._log
        anchor = min(max(self._fetch_anchor, log.committed), log.last_index())
        self._fetch_anchor = anchor
        anchor_term = log.term(anchor)
        assert anchor_term is not None
        self._fetch_id += 1
        self._send(Message(_MT.FETCH, self.term, self.id, target, index=anchor, log_term=anchor_term,
                           commit=log.committed, fetch_id=self._fetch_id))
        self._fetch_in_flight = True
        self._fetch_sent_tick = self._ticks

    def _on_fetch_response(self, m: Message) -> None:
        if m.fetch_id == self._fetch_id:
            self._fetch_in_flight = False
        if m.status is FetchStatus.NOT_LEADER:
            self._on_not_leader(m)
            return
        # Only the leader of m.term answers with data (§5.2: at most one per term).
        assert self.role is not Role.LEADER, f"two leaders in term {self.term}: {self.id} and {m.src}"
        if self.role is not Role.FOLLOWER or self.leader_id != m.src:
            self._become_follower(self.term, m.src)
        self._on_leader_contact()
        if m.status is FetchStatus.OK:
            self._append_fetched(m)
        elif m.status is FetchStatus.DIVERGING:
            self._on_diverging(m)
        else:
            self._install_snapshot(m)
        if not self._fetch_in_flight:
            self._maybe_send_fetch()

    def _append_fetched(self, m: Message) -> None:
        """§5.3 AppendEntries receiver: log-matching check, truncate conflicts, append, commit."""
        log = self._log
        anchor, anchor_term, entries = m.index, m.log_term, m.entries
        committed = log.committed
        if anchor < committed:  # a stale response overlapping what we already committed
            skip = committed - anchor
            if skip >= len(entries):
                return
            anchor, anchor_term, entries = committed, entries[skip - 1].term, entries[skip:]
        last_new = log.maybe_append(anchor, anchor_term, entries)
        if last_new is None:
            return  # our log changed since this fetch; the next fetch re-anchors
        self._fetch_anchor = min(max(self._fetch_anchor, last_new), log.last_index())
        log.commit_to(min(m.commit, last_new))

    def _on_diverging(self, m: Message) -> None:
        log = self._log
        anchor = self._fetch_anchor
        if m.index != anchor or log.term(anchor) != m.log_term:
            return  # the answer to an older probe
        j, _ = log.find_conflict_by_term(min(m.hint_index, anchor - 1), m.hint_term)
        self._fetch_anchor = max(j, log.committed)

    def _install_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        log = self._log
        if snap.index <= log.committed:
            return
        if log.match_term(snap.index, snap.term):
            log.commit_to(snap.index)  # we hold the entries: just commit them (§7, step 6)
        else:
            log.restore(snap)
            self._compaction = None
        self._fetch_anchor = snap.index

    def _on_not_leader(self, m: Message) -> None:
        if self.role is not Role.FOLLOWER or self.leader_id not in (None, m.src):
            return
        hint = m.leader_hint
        if hint == m.src:
            # The leader itself, fencing a fetch of an older term; step() adopted its term and it.
            self.leader_id = m.src
            self._on_leader_contact()
        elif hint is not None and hint != self.id:
            self.leader_id = hint  # a hint, not contact: the lease is not renewed
        else:
            self.leader_id = None  # wait for BEGIN_QUORUM_EPOCH or the election timeout
            if not self._is_voter:
                self._fetch_rotation += 1  # an observer asks the next voter at the next tick
            return
        if not self._fetch_in_flight:
            self._maybe_send_fetch()

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _check_no_outstanding_ready(self) -> None:
        assert not self._ready_outstanding, "advance() the outstanding Ready first"
