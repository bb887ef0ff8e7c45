"""Scenario tests for the classic Raft traps, on the simulator with a quiet network.

Each scenario scripts a history with crashes, partitions and message filters (the simulator's
invariant checker runs after every event throughout). Only a designated node may campaign
(`Script.campaigner`), so random election timeouts cannot reorder the story.
"""

from __future__ import annotations

import pytest
from sim_cluster import SimCluster, SimParams, Violation

from controller.raft import FetchStatus, Message, MessageType, Role

T = 10  # election timeout, ticks
ELECTION = (MessageType.PRE_VOTE, MessageType.VOTE)


def quiet(**changes: object) -> SimParams:
    """No loss, duplication or disk latency; every message takes exactly one time unit."""
    base = SimParams(delay_min_units=1, delay_max_units=1, loss=0.0, duplicate=0.0, disk_latency_max_units=0,
                     propose_every_ticks=0, election_timeout_ticks=T)
    return base.with_(**changes)


class Script:
    """A cluster plus the two filters scenarios use: who may campaign, and extra drops."""

    def __init__(self, seed: int, params: SimParams) -> None:
        self.cluster = SimCluster(seed, params)
        self.campaigner: int | None = None  # None: anybody
        self.extra_drop = lambda m: False
        self.cluster.drop_filter = self._drop

    def _drop(self, m: Message) -> bool:
        if self.campaigner is not None and m.type in ELECTION and m.src != self.campaigner:
            return True
        return self.extra_drop(m)

    def core(self, nid: int):
        return self.cluster.nodes[nid].core

    def elect(self, nid: int, max_ticks: int = 8 * T) -> int:
        """Let only `nid` campaign until it leads; returns its term."""
        self.campaigner = nid
        node = self.cluster.nodes[nid]

        def leads() -> bool:
            if node.core.role is Role.LEADER:
                return True
            if node.core.role is Role.FOLLOWER:
                node.call(lambda core: core.campaign())
            return False

        self.cluster.run_until(leads, max_ticks)
        return node.core.term

    def committed_data(self) -> set[bytes]:
        return {e.data for e in self.cluster.checker.committed[1:] if e is not None}

    def propose_and_commit(self, leader: int, data: bytes, nodes: tuple[int, ...], max_ticks: int = 5 * T) -> int:
        """Propose `data` (retrying while the leader is busy) until `nodes` have applied it; its index."""
        c = self.cluster
        c.run_until(lambda: c.propose(leader, data) is not None, T)
        index = self.core(leader).last_index
        assert self.core(leader).log.slice(index, index + 1, 1, 1)[0].data == data
        c.run_until(lambda: all(c.nodes[n].app.index >= index for n in nodes), max_ticks)
        assert c.checker.committed[index].data == data
        return index


def _figure8(unsafe: bool) -> Script:
    """Raft paper figure 8 with terms shifted by one (our first leader's term is 1)."""
    s = Script(8, quiet(voters=5, fetch_max_entries=1, unsafe_commit_old_terms=unsafe))
    c = s.cluster
    s.elect(1)
    c.run_until(lambda: all(n.core.commit_index >= 1 for n in c.nodes.values()), 2 * T)
    # (a) node 1 leads term 1 and replicates X (index 2) to node 2 only, then crashes.
    cut = c.partition([1, 2])
    assert c.propose(1, b"X") == (1, 2)
    c.run_until(lambda: s.core(2).log.term(2) == 1, T)
    c.crash(1)
    # (b) node 5 is elected in term 2 by 3, 4, 5 and appends its no-op at index 2; nobody gets it.
    s.extra_drop = lambda m: m.src == 5 and m.type is MessageType.FETCH_RESP
    assert s.elect(5) == 2
    assert s.core(5).log.term(2) == 2
    c.crash(5)
    # (c) node 1 restarts, is elected in term 3 and replicates X (term 1) to 3 and 4, one entry per
    # fetch, while its own no-op (index 3, term 3) is dropped on the way: X is on a majority.
    c.unblock(cut)
    c.restart(1)
    s.extra_drop = lambda m: m.src == 1 and m.type is MessageType.FETCH_RESP and any(e.term >= 3 for e in m.entries)
    assert s.elect(1) == 3
    c.run_until(lambda: all(s.core(n).log.term(2) == 1 for n in (2, 3, 4)), 3 * T)
    c.run_ticks(2)  # the fetches that prove those matches reach node 1
    return s


def test_figure8_an_earlier_term_entry_on_a_majority_is_not_committed_and_may_be_overwritten() -> None:
    s = _figure8(unsafe=False)
    c = s.cluster
    leader = s.core(1)
    matched = [r.match_index for r in leader.status().replicas]
    assert matched.count(2) >= 2, "X (term 1) is stored by node 1 and at least two others: a majority"
    assert leader.commit_index == 1, "but it is of an earlier term: not committed by counting (§5.4.2)"
    # (d) node 1 crashes before its no-op spreads; node 5 (last entry term 2) wins term 4 and
    # overwrites X everywhere. That is allowed: X was never committed.
    c.crash(1)
    s.extra_drop = lambda m: False
    c.restart(5)
    assert s.elect(5) == 4
    s.propose_and_commit(5, b"after", (2, 3, 4, 5))
    assert b"X" not in s.committed_data()
    assert all(s.core(n).log.term(2) == 2 for n in (2, 3, 4, 5))


def test_figure8_committing_by_counting_replicas_is_caught() -> None:
    with pytest.raises(Violation, match="could still win an election"):
        _figure8(unsafe=True)


def _isolate_leader(check_quorum: bool) -> tuple[Script, int]:
    s = Script(2, quiet(voters=5, check_quorum=check_quorum))
    c = s.cluster
    s.elect(1)
    s.propose_and_commit(1, b"before", (1, 2, 3, 4, 5))
    s.campaigner = None
    c.partition([1, 2])  # the leader keeps only a minority
    for k in range(3):
        assert c.propose(1, b"lost-%d" % k) is not None
    return s, c.tick


def test_isolated_leader_steps_down_and_its_uncommitted_entries_are_discarded() -> None:
    s, cut_tick = _isolate_leader(check_quorum=True)
    c = s.cluster
    c.run_until(lambda: s.core(1).role is not Role.LEADER, 2 * T)
    assert c.tick - cut_tick <= T + 1, "check-quorum: no fetch from a majority for T ticks"
    c.run_until(lambda: c.leader() in (3, 4, 5), 6 * T)
    new_leader = c.leader()
    s.propose_and_commit(new_leader, b"kept", (3, 4, 5))
    assert s.core(1).last_index >= 5, "the old leader still holds its uncommitted entries"
    c.heal()
    s.propose_and_commit(new_leader, b"after-heal", (1, 2, 3, 4, 5))
    assert not any(d.startswith(b"lost") for d in s.committed_data())
    new_term = s.core(new_leader).term
    assert s.core(1).log.term(3) == new_term == s.core(new_leader).log.term(3)


def test_without_check_quorum_an_isolated_leader_stays_a_zombie_and_is_caught() -> None:
    s, _ = _isolate_leader(check_quorum=False)
    with pytest.raises(Violation, match="stale leader: node 1 is still leader of term 1"):
        s.cluster.run_ticks(10 * T)


def _lost_vote(sync_hard_state: bool, check_restart_state: bool) -> Script:
    """Node 3 votes for 2 in term 2, crashes losing its unsynced writes, then node 1 asks."""
    s = Script(3, quiet(voters=3, sync_hard_state=sync_hard_state))
    c = s.cluster
    c.checker.check_restart_state = check_restart_state
    s.elect(1)
    s.propose_and_commit(1, b"a", (1, 2, 3))
    c.crash(1)
    # Node 3 hears nothing from 2 but its election messages: no entries, so nothing else syncs.
    s.extra_drop = lambda m: m.src == 2 and m.dst == 3 and m.type not in ELECTION
    assert s.elect(2) == 2
    assert c.checker.granted[(3, 2)] == 2
    c.crash(3, keep_unsynced=False)
    c.restart(3)
    c.restart(1)
    s.extra_drop = lambda m: (m.src == 2 and m.type not in ELECTION) or {m.src, m.dst} == {1, 2}
    s.elect(1)
    return s


def test_a_synced_vote_survives_the_crash_so_no_second_leader_in_the_same_term() -> None:
    s = _lost_vote(sync_hard_state=True, check_restart_state=True)
    assert s.core(3).vote == 1 and s.core(1).term == 3, "node 3 refused node 1 in term 2; 1 won term 3"
    assert s.cluster.checker.leader_of_term == {1: 1, 2: 2, 3: 1}


def test_the_driver_contract_broken_a_lost_vote_becomes_a_double_vote() -> None:
    with pytest.raises(Violation, match="double vote: node 3 granted its term-2 vote to 2 and to 1"):
        _lost_vote(sync_hard_state=False, check_restart_state=False)


def test_the_driver_contract_broken_is_caught_at_restart() -> None:
    with pytest.raises(Violation, match="restarted in term 1 but had sent messages in term 2"):
        _lost_vote(sync_hard_state=False, check_restart_state=True)


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_rejoining_partitioned_node_does_not_bump_the_term_with_pre_vote(pre_vote: bool) -> None:
    s = Script(4, quiet(voters=3, pre_vote=pre_vote))
    c = s.cluster
    term = s.elect(1)
    s.campaigner = None
    s.propose_and_commit(1, b"a", (1, 2, 3))
    cut = c.partition([3])
    c.run_ticks(10 * T)
    c.unblock(cut)
    c.run_ticks(5 * T)
    if pre_vote:
        assert s.core(3).term == term, "pre-vote never changes the term of the isolated node"
        assert c.leaders() == [1] and all(s.core(n).term == term for n in (1, 2, 3))
        assert s.core(3).leader_id == 1
        s.propose_and_commit(1, b"b", (1, 2, 3))
    else:
        # Without pre-vote the isolated node's term ran ahead; on rejoining it deposes the leader.
        assert all(s.core(n).term > term for n in (1, 2, 3))


def test_leadership_transfer_goes_to_the_most_caught_up_voter_without_an_election_timeout() -> None:
    s = Script(5, quiet(voters=5))
    c = s.cluster
    term = s.elect(1)
    s.campaigner = None
    s.propose_and_commit(1, b"a", (1, 2, 3, 4, 5))
    target = c.nodes[1].call(lambda core: core.transfer_leadership())
    assert target in (2, 3, 4, 5)
    assert c.propose(1, b"refused") is None, "no proposals while transferring"
    used = c.run_until(lambda: c.leader() == target, T)
    assert used <= 3, "TIMEOUT_NOW: the target campaigns at once, voters ignore their lease"
    assert s.core(target).term == term + 1 and s.core(1).role is Role.FOLLOWER
    s.propose_and_commit(target, b"b", (1, 2, 3, 4, 5))


def test_leadership_transfer_to_a_lagging_voter_waits_until_it_caught_up() -> None:
    s = Script(6, quiet(voters=5, fetch_max_entries=1))
    c = s.cluster
    s.elect(1)
    s.campaigner = None
    cut = c.partition([5])
    for k in range(6):
        s.propose_and_commit(1, b"a%d" % k, (1, 2, 3, 4))
    c.unblock(cut)
    assert c.nodes[1].call(lambda core: core.transfer_leadership(5)) == 5
    c.run_until(lambda: c.leader() == 5, T)
    assert s.core(5).log.term(s.core(1).commit_index) is not None
    s.propose_and_commit(5, b"b", (1, 2, 3, 4, 5))


def test_a_lagging_follower_gets_the_snapshot() -> None:
    s = Script(7, quiet(voters=3, compact_every_entries=5))
    c = s.cluster
    s.elect(1)
    s.campaigner = None
    c.crash(3)
    for k in range(8):
        c.propose_batch(1, [b"e%d-%d" % (k, j) for j in range(4)])
        c.run_ticks(2)
    c.run_until(lambda: s.core(1).snapshot_index >= 25, 5 * T)
    sent: list[Message] = []
    s.extra_drop = lambda m: sent.append(m) and False
    c.restart(3)
    s.propose_and_commit(1, b"last", (1, 2, 3))
    assert any(m.dst == 3 and m.status is FetchStatus.SNAPSHOT for m in sent if m.type is MessageType.FETCH_RESP)
    assert c.checker.restores[3] >= 1
    assert s.core(3).snapshot_index >= 25 and c.nodes[3].app.chain == c.checker.chain[c.nodes[3].app.index]


def test_an_observer_applies_only_committed_entries_and_never_votes() -> None:
    s = Script(9, quiet(voters=3, observers=1))
    c = s.cluster
    s.elect(1)
    s.campaigner = None
    s.propose_and_commit(1, b"a", (1, 2, 3, 4))
    observer = s.core(4)
    assert not observer.is_voter and observer.leader_id == 1
    c.partition([1, 4])  # the leader and the observer, without a majority
    for k in range(3):
        c.propose(1, b"uncommitted-%d" % k)
    c.run_until(lambda: observer.last_index >= 5, 2 * T)
    assert observer.applied_index == observer.commit_index == 2, "held but not applied"
    c.run_until(lambda: c.leader() in (2, 3), 6 * T)
    new_leader = c.leader()
    s.propose_and_commit(new_leader, b"b", (2, 3))
    c.heal()
    s.propose_and_commit(new_leader, b"c", (1, 2, 3, 4))
    assert not any(d.startswith(b"uncommitted") for d in s.committed_data())
    assert observer.log.term(3) == s.core(new_leader).term
    assert all(voter != 4 for voter, _ in c.checker.granted) and 4 not in c.checker.leader_of_term.values()


def test_the_whole_cluster_crashes_and_restarts_from_what_it_persisted() -> None:
    s = Script(10, quiet(voters=3, disk_latency_max_units=8, compact_every_entries=7))
    c = s.cluster
    s.elect(1)
    s.campaigner = None
    for k in range(10):
        c.propose_batch(1, [b"x%d-%d" % (k, j) for j in range(3)])
        c.run_ticks(1)
    applied = len(c.checker.committed) - 1
    for nid in (1, 2, 3):
        c.crash(nid)  # random prefixes of the unsynced writes survive, maybe torn
    for nid in (1, 2, 3):
        c.restart(nid)
    c.run_until(lambda: c.leader() is not None, 10 * T)
    s.propose_and_commit(c.leader(), b"after", (1, 2, 3))
    assert len(c.checker.committed) - 1 > applied
