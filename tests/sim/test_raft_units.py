"""Unit tests of controller/raft: quorum math, storage, log, progress and the core's contract.

`Net` is a minimal synchronous driver (instant delivery, persistence = advance) for transcripts
in the style of etcd-io/raft's tests; the simulator covers time, faults and crashes.
"""

from __future__ import annotations

import random

import pytest

from controller.raft import (
    Entry,
    EntryType,
    FetchStatus,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RaftConfig,
    RaftCore,
    RaftLog,
    Ready,
    Role,
    Snapshot,
    quorum,
)
from controller.raft.progress import ProgressState, ProgressTracker

MT = MessageType


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(t, start + k, b"%d" % (start + k)) for k, t in enumerate(terms)]


# -- quorum ------------------------------------------------------------------------------------


def test_majority_and_committed_index() -> None:
    assert [quorum.majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert quorum.committed_index([5]) == 5
    assert quorum.committed_index([7, 3, 5]) == 5
    assert quorum.committed_index([9, 9, 1, 1, 4]) == 4
    assert quorum.committed_index([2, 8, 8, 2]) == 2


def test_vote_result() -> None:
    voters = {1, 2, 3, 4, 5}
    assert quorum.vote_result(voters, {1: True}) is quorum.VoteResult.PENDING
    assert quorum.vote_result(voters, {1: True, 2: True, 3: True}) is quorum.VoteResult.WON
    assert quorum.vote_result(voters, {1: True, 2: False, 3: False, 4: False}) is quorum.VoteResult.LOST
    assert quorum.vote_result(voters, {1: True, 9: True, 8: True}) is quorum.VoteResult.PENDING, "non-voters ignored"
    assert quorum.vote_result({1}, {1: True}) is quorum.VoteResult.WON


def test_has_quorum() -> None:
    assert quorum.has_quorum({1, 2, 3}, [1, 3])
    assert not quorum.has_quorum({1, 2, 3}, [1, 1, 4])


# -- storage and log ---------------------------------------------------------------------------


def test_memory_storage_append_truncate_compact() -> None:
    s = MemoryStorage(entries=entries(1, 1, 2, 2))
    assert (s.first_index(), s.last_index(), s.term(0), s.term(3), s.term(5)) == (1, 4, 0, 2, None)
    s.append(entries(3, 3, start=3))
    assert [e.term for e in s.all_entries()] == [1, 1, 3, 3]
    s.compact(Snapshot(2, 1, b"state"))
    assert (s.first_index(), s.term(1), s.term(2), s.term(3)) == (3, None, 1, 3)
    assert s.entries(3, 5) == entries(3, 3, start=3)
    s.apply_snapshot(Snapshot(9, 4, b"x"))
    assert (s.first_index(), s.last_index(), s.term(9)) == (10, 9, 4)
    with pytest.raises(AssertionError):
        s.append(entries(4, start=12))  # a gap


def test_raft_log_follower_append_truncates_only_the_conflicting_suffix() -> None:
    log = RaftLog(MemoryStorage(entries=entries(1, 1, 2, 2, 2)), apply_max_entries=100)
    log.commit_to(2)
    assert log.maybe_append(1, 9, entries(1)) is None, "log-matching check (§5.3)"
    assert log.maybe_append(2, 1, entries(2, 3, start=3)) == 4
    assert [log.term(i) for i in range(1, 6)] == [1, 1, 2, 3, None]
    assert log.unstable_entries() == tuple(entries(3, start=4)), "the driver truncates at index 4"
    log.stable_to(4)
    assert log.storage.last_index() == 4
    with pytest.raises(AssertionError, match="conflicts with committed"):
        log.maybe_append(1, 1, entries(5, start=2))


def test_raft_log_slice_limits_and_find_conflict_by_term() -> None:
    log = RaftLog(MemoryStorage(entries=entries(1, 1, 3, 3, 3, 5)), apply_max_entries=2)
    log.append([Entry(5, 7, b"x" * 100), Entry(5, 8, b"y")])
    assert [e.index for e in log.slice(2, 9, 3, 1000)] == [2, 3, 4]
    assert [e.index for e in log.slice(7, 9, 10, 50)] == [7], "at least one entry even over max_bytes"
    assert [e.index for e in log.slice(5, 9, 10, 102)] == [5, 6, 7]
    assert log.find_conflict_by_term(8, 4) == (5, 3)
    assert log.find_conflict_by_term(8, 2) == (2, 1)
    assert log.find_conflict_by_term(8, 0) == (0, 0)
    log.commit_to(6)
    assert [e.index for e in log.next_committed_entries()] == [1, 2]


def test_raft_log_is_up_to_date() -> None:
    log = RaftLog(MemoryStorage(entries=entries(1, 2, 2)), apply_max_entries=10)
    assert log.is_up_to_date(3, 2) and log.is_up_to_date(1, 3) and log.is_up_to_date(9, 2)
    assert not log.is_up_to_date(2, 2) and not log.is_up_to_date(9, 1)


def test_raft_log_restore_supersedes_the_stable_log() -> None:
    log = RaftLog(MemoryStorage(entries=entries(1, 1, 1)), apply_max_entries=10)
    log.restore(Snapshot(10, 2, b"s"))
    assert (log.first_index(), log.last_index(), log.committed, log.term(10), log.term(3)) == (11, 10, 10, 2, None)
    log.stable_snapshot(Snapshot(10, 2, b"s"))
    assert log.storage.snapshot.index == 10 and log.storage.last_index() == 10


# -- progress --------------------------------------------------------------------------------------


def test_progress_tracker_commit_index_and_check_quorum() -> None:
    tracker = ProgressTracker(1, frozenset({1, 2, 3, 4, 5}), observers_max=1, now_tick=0, next_index=5)
    tracker.self_match_index = 9
    assert tracker.committed_index() == 0
    assert tracker.progress[2].on_match(7, 1, 9) and tracker.progress[3].on_match(4, 1, 9)
    assert not tracker.progress[3].on_match(2, 2, 9), "a stale fetch never lowers the match"
    assert tracker.committed_index() == 4 and tracker.progress[2].state is ProgressState.REPLICATE
    assert tracker.quorum_active(5, 10)
    tracker.progress[2].on_fetch(12, 7)
    tracker.progress[3].on_fetch(12, 4)
    assert tracker.quorum_active(15, 10), "leader + 2 and 3 fetched within 10 ticks"
    assert not tracker.quorum_active(30, 10)
    observer = tracker.get(9, 3, 1)
    assert observer is not None and not observer.is_voter
    tracker.get(8, 4, 1)
    assert 9 not in tracker.progress and 8 in tracker.progress, "observers_max=1 evicts the least recent"
    observer.on_match(100, 5, 100)
    assert tracker.committed_index() == 4, "observers never count"


# -- the core ----------------------------------------------------------------------------------------


def config(node_id: int, voters: tuple[int, ...] = (1, 2, 3), **kw: object) -> RaftConfig:
    return RaftConfig(node_id=node_id, voters=frozenset(voters), **kw)


class Net:
    """Cores with instant delivery; each Ready is 'persisted' by advancing it."""

    def __init__(self, voters: tuple[int, ...] = (1, 2, 3), observers: tuple[int, ...] = (), **kw: object) -> None:
        self.cores = {n: RaftCore(config(n, voters, **kw), MemoryStorage(), random.Random(n))
                      for n in voters + observers}
        self.dropped: set[int] = set()
        self.sent: list[Message] = []
        self.applied: dict[int, list[Entry]] = {n: [] for n in self.cores}

    def flush(self) -> None:
        queue: list[Message] = []
        while True:
            for n, core in self.cores.items():
                while core.has_ready():
                    rd = core.ready()
                    queue.extend(rd.messages)
                    self.applied[n].extend(rd.committed_entries)
                    core.advance(rd)
            if not queue:
                return
            m = queue.pop(0)
            self.sent.append(m)
            if m.src not in self.dropped and m.dst not in self.dropped:
                self.cores[m.dst].step(m)

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            for n, core in self.cores.items():
                if n not in self.dropped:
                    core.tick()
            self.flush()

    def elect(self, nid: int) -> None:
        self.cores[nid].campaign()
        self.flush()
        assert self.cores[nid].role is Role.LEADER


def drain(core: RaftCore) -> Ready:
    rd = core.ready()
    core.advance(rd)
    return rd


def test_single_voter_elects_itself_and_commits() -> None:
    net = Net(voters=(1,))
    net.tick(25)
    core = net.cores[1]
    assert core.role is Role.LEADER and core.term == 1 and core.commit_index == 1
    assert core.propose(b"a") == (1, 2)
    net.flush()
    assert [e.data for e in net.applied[1]] == [b"", b"a"] and net.applied[1][0].type is EntryType.NOOP


def test_the_vote_is_in_a_must_sync_ready_with_the_response() -> None:
    core = RaftCore(config(2), MemoryStorage(), random.Random(0))
    core.step(Message(MT.VOTE, 1, 3, 2, index=0, log_term=0))
    rd = core.ready()
    assert rd.hard_state == HardState(1, 3, 0) and rd.must_sync
    assert [(m.type, m.reject) for m in rd.messages] == [(MT.VOTE_RESP, False)]
    with pytest.raises(AssertionError, match="advance"):
        core.step(Message(MT.VOTE, 1, 1, 2))
    core.advance(rd)
    core.step(Message(MT.VOTE, 1, 1, 2, index=5, log_term=1))
    rd = drain(core)
    assert rd.hard_state is None and not rd.must_sync and rd.messages[0].reject, "one vote per term"


def test_pre_vote_changes_no_term_and_no_vote() -> None:
    core = RaftCore(config(2), MemoryStorage(), random.Random(0))
    core.step(Message(MT.PRE_VOTE, 5, 3, 2))
    rd = drain(core)
    assert (core.term, core.vote, rd.hard_state) == (0, None, None)
    assert rd.messages[0] == Message(MT.PRE_VOTE_RESP, 5, 2, 3)


def test_a_voter_in_lease_ignores_votes_unless_they_come_from_a_transfer() -> None:
    net = Net()
    net.elect(1)
    follower = net.cores[2]
    follower.step(Message(MT.VOTE, 5, 3, 2, index=9, log_term=9))
    assert follower.term == 1 and not drain(follower).messages, "ignored: not even the term is adopted"
    follower.step(Message(MT.VOTE, 5, 3, 2, index=9, log_term=9, transfer=True))
    assert follower.term == 5 and follower.vote == 3


def test_stale_term_fetch_is_answered_with_the_current_term_and_leader() -> None:
    net = Net()
    net.elect(1)
    leader = net.cores[1]
    leader.step(Message(MT.FETCH, 0, 3, 1, fetch_id=7))
    [resp] = drain(leader).messages
    assert (resp.type, resp.status, resp.term, resp.leader_hint, resp.fetch_id) == (
        MT.FETCH_RESP, FetchStatus.NOT_LEADER, 1, 1, 7)


def test_stale_and_duplicated_fetch_responses_are_harmless() -> None:
    net = Net()
    net.elect(1)
    for k in range(3):
        net.cores[1].propose(b"%d" % k)
    net.flush()
    net.tick(4)
    follower = net.cores[2]
    before = (follower.term, follower.commit_index, follower.last_index)
    responses = [m for m in net.sent if m.type is MT.FETCH_RESP and m.dst == 2 and m.entries]
    for m in responses + responses[::-1]:
        follower.step(m)
        drain(follower)
    follower.step(responses[0]._replace(term=0))  # from an older term: ignored
    drain(follower)
    assert (follower.term, follower.commit_index, follower.last_index) == before


def test_a_candidate_receiving_the_leaders_fetch_response_of_its_term_steps_down() -> None:
    core = RaftCore(config(2, pre_vote=False), MemoryStorage(), random.Random(0))
    core.campaign()
    drain(core)
    assert core.role is Role.CANDIDATE and core.term == 1
    core.step(Message(MT.FETCH_RESP, 1, 3, 2, index=0, log_term=0, entries=(Entry(1, 1, b"", EntryType.NOOP),),
                      commit=0))
    assert core.role is Role.FOLLOWER and core.leader_id == 3 and core.last_index == 1


def test_proposals_are_refused_by_followers_and_beyond_the_uncommitted_limit() -> None:
    net = Net(uncommitted_entries_max=2)
    net.elect(1)
    with pytest.raises(NotLeaderError) as info:
        net.cores[2].propose(b"x")
    assert info.value.leader_id == 1
    net.dropped = {2, 3}
    net.cores[1].propose(b"a")
    net.cores[1].propose(b"b")
    with pytest.raises(ProposalDroppedError):
        net.cores[1].propose(b"c")


def test_timeout_now_makes_the_target_campaign_at_once() -> None:
    net = Net()
    net.elect(1)
    net.tick(2)
    assert net.cores[1].transfer_leadership(3) == 3
    net.flush()
    assert net.cores[3].role is Role.LEADER and net.cores[3].term == 2
    assert net.cores[1].role is Role.FOLLOWER and net.cores[1].leader_id == 3


def test_an_observer_replicates_but_never_campaigns() -> None:
    net = Net(observers=(4,))
    net.elect(1)
    net.cores[1].propose(b"a")
    net.flush()
    net.tick(40)
    observer = net.cores[4]
    assert observer.role is Role.FOLLOWER and observer.term == 1 and observer.commit_index == 2
    assert [e.data for e in net.applied[4]] == [b"", b"a"]
    assert not any(m.src == 4 and m.type in (MT.PRE_VOTE, MT.VOTE) for m in net.sent)
    with pytest.raises(AssertionError):
        observer.campaign()


def test_restart_from_persisted_state_reapplies_after_the_snapshot() -> None:
    net = Net()
    net.elect(1)
    for k in range(5):
        net.cores[1].propose(b"%d" % k)
    net.flush()
    net.tick(4)
    old = net.cores[2]
    old.compact(3, b"state@3")
    drain(old)
    storage = old.log.storage
    restarted = RaftCore(config(2), MemoryStorage(storage.hard_state, storage.snapshot, storage.all_entries()),
                         random.Random(9))
    assert (restarted.term, restarted.vote, restarted.commit_index) == (old.term, old.vote, old.commit_index)
    assert restarted.snapshot_index == 3 and restarted.applied_index == 3
    rd = restarted.ready()
    assert [e.index for e in rd.committed_entries] == list(range(4, old.commit_index + 1))


def test_a_torn_write_leaving_a_newer_term_entry_raises_the_term() -> None:
    storage = MemoryStorage(HardState(2, 1, 1), entries=entries(1, 3))
    core = RaftCore(config(2), storage, random.Random(0))
    assert (core.term, core.vote) == (3, None)


def test_a_follower_fenced_by_the_leader_adopts_its_term_and_keeps_fetching_from_it() -> None:
    core = RaftCore(config(2), MemoryStorage(), random.Random(0))
    core.step(Message(MT.BEGIN_QUORUM_EPOCH, 1, 1, 2))
    fetch = next(m for m in drain(core).messages if m.type is MT.FETCH)
    core.step(Message(MT.FETCH_RESP, 3, 3, 2, status=FetchStatus.NOT_LEADER, leader_hint=3, fetch_id=fetch.fetch_id))
    rd = drain(core)
    assert (core.term, core.leader_id, core.role) == (3, 3, Role.FOLLOWER)
    assert [(m.type, m.dst, m.term) for m in rd.messages] == [(MT.FETCH, 3, 3)]
