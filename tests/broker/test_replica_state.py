"""broker.replica_state.LeaderState: the leader's pure ISR / high watermark bookkeeping.

Rules from the module docstring (Kafka's Partition / Replica, KIP-497, KRaft AlterPartition):
the high watermark is min(log end) over the *maximal* ISR (committed ISR plus a pending
expansion), held while a member's log end is unknown, never decreasing; lastCaughtUpTimeMs as in
Kafka's Replica.updateFetchState; a shrink counts only once committed.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.replica_state import UNKNOWN, IsrChange, LeaderState

LEADER = 1
LAG_MS = 1_000


def state(isr: tuple[int, ...] = (1, 2, 3), replicas: tuple[int, ...] = (1, 2, 3), *, epoch_start: int = 0,
          now_ms: int = 0, leader_epoch: int = 5, partition_epoch: int = 10) -> LeaderState:
    return LeaderState(LEADER, replicas, isr, leader_epoch, partition_epoch, epoch_start_offset=epoch_start,
                       became_leader_ms=now_ms)


# --- high watermark ------------------------------------------------------------------------------------

def test_high_watermark_is_min_log_end_over_the_isr() -> None:
    s = state()
    s.on_follower_fetch(2, 7, 10, now_ms=1)
    s.on_follower_fetch(3, 9, 10, now_ms=1)
    assert s.high_watermark(10, current=0) == 7
    s.on_follower_fetch(2, 10, 10, now_ms=2)
    assert s.high_watermark(10, current=7) == 9
    s.on_follower_fetch(3, 10, 10, now_ms=2)
    assert s.high_watermark(10, current=9) == 10


def test_high_watermark_is_bounded_by_the_leader_log_end() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(2, 8, 8, now_ms=1)
    assert s.high_watermark(8, current=0) == 8  # a follower never reports more than the leader has


def test_single_member_isr_high_watermark_is_the_leader_log_end() -> None:
    s = state(isr=(1,))
    assert s.high_watermark(42, current=3) == 42


def test_unknown_follower_log_end_holds_the_high_watermark() -> None:
    s = state()
    s.on_follower_fetch(2, 10, 10, now_ms=1)  # 3 has not fetched since this broker became leader
    assert s.followers[3].log_end_offset == UNKNOWN
    assert s.high_watermark(10, current=4) == 4
    s.on_follower_fetch(3, 6, 10, now_ms=2)
    assert s.high_watermark(10, current=4) == 6


def test_high_watermark_never_decreases() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(2, 3, 10, now_ms=1)  # e.g. a follower that truncated and fetches again
    assert s.high_watermark(10, current=8) == 8


def test_non_isr_followers_do_not_hold_the_high_watermark() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(2, 10, 10, now_ms=1)
    s.on_follower_fetch(3, 0, 10, now_ms=1)
    assert s.high_watermark(10, current=0) == 10


def test_pending_expansion_counts_at_once() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(2, 10, 10, now_ms=1)
    s.on_follower_fetch(3, 6, 10, now_ms=1)
    assert s.high_watermark(10, current=6) == 10
    change = s.propose(now_ms=1, leader_end_offset=10, high_watermark=6, lag_max_ms=LAG_MS)
    assert change == IsrChange((1, 2, 3), 10, 5)
    assert s.maximal_isr == (1, 2, 3)
    assert s.isr == (1, 2)  # not committed yet
    assert s.isr_size() == 2  # min.insync.replicas counts committed members only
    # 3 has only 6 while the expansion is in flight: the high watermark must wait for it
    assert s.high_watermark(12, current=6) == 6


def test_pending_shrink_counts_only_once_committed() -> None:
    s = state(isr=(1, 2, 3), now_ms=0)
    s.on_follower_fetch(2, 10, 10, now_ms=5_000)
    s.on_follower_fetch(3, 4, 10, now_ms=100)  # 3 stays behind: last caught up at 0
    change = s.propose(now_ms=5_000, leader_end_offset=10, high_watermark=4, lag_max_ms=LAG_MS)
    assert change is not None and change.new_isr == (1, 2)
    assert s.maximal_isr == (1, 2, 3)
    assert s.high_watermark(10, current=4) == 4  # the leaving member still counts
    s.on_committed((1, 2), 11)
    assert s.pending is None
    assert s.maximal_isr == (1, 2)
    assert s.high_watermark(10, current=4) == 10


# --- lastCaughtUpTimeMs / out of sync --------------------------------------------------------------------

def test_new_leadership_gives_every_follower_a_lag_allowance() -> None:
    s = state(now_ms=1_000)
    assert all(f.last_caught_up_ms == 1_000 for f in s.followers.values())
    assert LEADER not in s.followers
    assert s.out_of_sync(now_ms=1_000 + LAG_MS, leader_end_offset=10, lag_max_ms=LAG_MS) == []
    assert s.out_of_sync(now_ms=1_001 + LAG_MS, leader_end_offset=10, lag_max_ms=LAG_MS) == [2, 3]


def test_fetch_reaching_leader_end_is_caught_up_now() -> None:
    s = state()
    assert s.on_follower_fetch(2, 10, 10, now_ms=500)
    assert s.followers[2].last_caught_up_ms == 500


def test_fetch_reaching_previous_leader_end_is_credited_with_previous_fetch_time() -> None:
    s = state()
    s.on_follower_fetch(2, 5, 10, now_ms=100)     # leader end was 10 at this fetch
    assert s.followers[2].last_caught_up_ms == 0
    s.on_follower_fetch(2, 10, 15, now_ms=200)    # reached 10 (leader end as of the previous fetch)
    assert s.followers[2].last_caught_up_ms == 100
    s.on_follower_fetch(2, 12, 20, now_ms=300)    # short of 15: no credit
    assert s.followers[2].last_caught_up_ms == 100


def test_last_caught_up_never_goes_back() -> None:
    s = state()
    s.on_follower_fetch(2, 10, 10, now_ms=500)
    s.on_follower_fetch(2, 10, 12, now_ms=400)  # a late fetch with an older timestamp
    assert s.followers[2].last_caught_up_ms == 500


def test_out_of_sync_after_lag_unless_at_leader_end() -> None:
    s = state(now_ms=0)
    s.on_follower_fetch(2, 10, 10, now_ms=100)
    s.on_follower_fetch(3, 8, 10, now_ms=100)
    now = 100 + LAG_MS + 1
    assert s.out_of_sync(now, leader_end_offset=10, lag_max_ms=LAG_MS) == [3]
    # 2 is at the leader's end: in sync however long ago it last fetched
    assert s.out_of_sync(now + 10_000, leader_end_offset=10, lag_max_ms=LAG_MS) == [3]
    assert s.out_of_sync(now + 10_000, leader_end_offset=11, lag_max_ms=LAG_MS) == [2, 3]


def test_non_replica_fetch_is_refused() -> None:
    s = state()
    assert not s.on_follower_fetch(9, 10, 10, now_ms=1)
    assert not s.on_follower_fetch(LEADER, 10, 10, now_ms=1)
    assert 9 not in s.followers


# --- caught up (ISR expansion) ----------------------------------------------------------------------------

def test_caught_up_requires_high_watermark_and_epoch_start() -> None:
    s = state(isr=(1, 2), epoch_start=20)
    s.on_follower_fetch(3, 15, 30, now_ms=1)
    assert s.caught_up(high_watermark=10) == []   # below this leadership's start offset
    s.on_follower_fetch(3, 20, 30, now_ms=2)
    assert s.caught_up(high_watermark=25) == []   # below the high watermark
    assert s.caught_up(high_watermark=20) == [3]


def test_caught_up_ignores_members_and_unknown_followers() -> None:
    s = state(isr=(1, 2))
    assert s.caught_up(high_watermark=0) == []  # 3 never fetched
    s.on_follower_fetch(2, 10, 10, now_ms=1)
    s.on_follower_fetch(3, 10, 10, now_ms=1)
    assert s.caught_up(high_watermark=10) == [3]


# --- proposals -------------------------------------------------------------------------------------------

def test_propose_nothing_when_in_sync() -> None:
    s = state()
    s.on_follower_fetch(2, 10, 10, now_ms=1)
    s.on_follower_fetch(3, 10, 10, now_ms=1)
    assert s.propose(now_ms=1, leader_end_offset=10, high_watermark=10, lag_max_ms=LAG_MS) is None
    assert s.pending is None


def test_propose_returns_pending_again_while_unresolved() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(2, 10, 10, now_ms=1)
    s.on_follower_fetch(3, 10, 10, now_ms=1)
    first = s.propose(now_ms=1, leader_end_offset=10, high_watermark=10, lag_max_ms=LAG_MS)
    assert first is not None
    # even though 2 has since fallen out of sync, the same change is sent again (unknown outcome)
    again = s.propose(now_ms=1 + 10 * LAG_MS, leader_end_offset=30, high_watermark=10, lag_max_ms=LAG_MS)
    assert again is first
    assert s.pending_sent_ms == 1


def test_propose_keeps_replica_order_and_the_leader() -> None:
    s = state(isr=(1, 3), replicas=(3, 1, 2))
    s.on_follower_fetch(2, 0, 0, now_ms=1)
    s.on_follower_fetch(3, 0, 0, now_ms=1)
    change = s.propose(now_ms=1, leader_end_offset=0, high_watermark=0, lag_max_ms=LAG_MS)
    assert change is not None and change.new_isr == (3, 1, 2)


def test_propose_shrink_and_expand_together() -> None:
    s = state(isr=(1, 2), now_ms=0)
    s.on_follower_fetch(3, 10, 10, now_ms=5_000)
    change = s.propose(now_ms=5_000, leader_end_offset=10, high_watermark=10, lag_max_ms=LAG_MS)
    assert change is not None and change.new_isr == (1, 3)
    assert change.partition_epoch == 10 and change.leader_epoch == 5


def test_eligibility_filters_expansion_only() -> None:
    s = state(isr=(1, 2), now_ms=0)
    s.on_follower_fetch(3, 10, 10, now_ms=1)
    assert s.propose(now_ms=1, leader_end_offset=10, high_watermark=10, lag_max_ms=LAG_MS,
                     eligible=frozenset({1, 2})) is None
    change = s.propose(now_ms=1, leader_end_offset=10, high_watermark=10, lag_max_ms=LAG_MS,
                       eligible=frozenset({1, 2, 3}))
    assert change is not None and change.new_isr == (1, 2, 3)


def test_ineligible_member_is_still_shrunk_by_lag() -> None:
    s = state(isr=(1, 2, 3), now_ms=0)
    s.on_follower_fetch(3, 10, 10, now_ms=5_000)
    change = s.propose(now_ms=5_000, leader_end_offset=10, high_watermark=0, lag_max_ms=LAG_MS,
                       eligible=frozenset({1}))
    assert change is not None and change.new_isr == (1, 3)


def test_on_committed_matching_isr_clears_pending() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(3, 0, 0, now_ms=1)
    assert s.propose(now_ms=1, leader_end_offset=0, high_watermark=0, lag_max_ms=LAG_MS) is not None
    s.on_committed((1, 2, 3), 10)  # same partition epoch, same set (e.g. replayed image): resolved
    assert s.pending is None and s.isr == (1, 2, 3)


def test_on_committed_newer_epoch_clears_a_different_pending() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(3, 0, 0, now_ms=1)
    assert s.propose(now_ms=1, leader_end_offset=0, high_watermark=0, lag_max_ms=LAG_MS) is not None
    s.on_committed((1,), 11)  # someone else's change committed: our proposal is stale
    assert s.pending is None
    assert s.isr == (1,) and s.partition_epoch == 11


def test_on_committed_same_epoch_other_isr_keeps_pending() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(3, 0, 0, now_ms=1)
    change = s.propose(now_ms=1, leader_end_offset=0, high_watermark=0, lag_max_ms=LAG_MS)
    s.on_committed((1, 2), 10)
    assert s.pending is change
    assert s.maximal_isr == (1, 2, 3)


def test_on_committed_stale_epoch_is_ignored() -> None:
    s = state(isr=(1, 2, 3), partition_epoch=10)
    s.on_committed((1,), 9)
    assert s.isr == (1, 2, 3) and s.partition_epoch == 10


def test_change_failed_drops_the_pending_expansion_from_the_maximal_isr() -> None:
    s = state(isr=(1, 2))
    s.on_follower_fetch(3, 0, 0, now_ms=1)
    s.propose(now_ms=1, leader_end_offset=0, high_watermark=0, lag_max_ms=LAG_MS)
    s.on_change_failed()
    assert s.pending is None and s.maximal_isr == (1, 2)


# --- property: the high watermark is safe over random histories ----------------------------------------

FOLLOWERS = (2, 3, 4)
op = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 5)),
    st.tuples(st.just("fetch"), st.sampled_from(FOLLOWERS), st.integers(0, 6)),
    st.tuples(st.just("tick"), st.integers(1, 700)),
    st.tuples(st.just("propose"), st.just(0)),
    st.tuples(st.just("commit"), st.just(0)),
    st.tuples(st.just("fail"), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=60), st.sets(st.sampled_from(FOLLOWERS)))
def test_high_watermark_is_safe_over_random_fetch_histories(ops: list[tuple], initial: set[int]) -> None:
    """Followers' log ends only grow (no truncation within one leadership) and never pass the
    leader's; the controller commits exactly what the leader proposed. Then after every step the
    high watermark never exceeds a maximal-ISR member's log end, never the leader's, never
    decreases, and the leader stays in the ISR."""
    isr = (LEADER, *sorted(initial))
    s = LeaderState(LEADER, (LEADER, *FOLLOWERS), isr, 3, 0, epoch_start_offset=0, became_leader_ms=0)
    leader_end = 0
    follower_end = dict.fromkeys(FOLLOWERS, 0)
    hw = 0
    now = 0
    partition_epoch = 0
    for step in ops:
        kind = step[0]
        if kind == "append":
            leader_end += step[1]
        elif kind == "fetch":
            follower = step[1]
            follower_end[follower] = min(leader_end, follower_end[follower] + step[2])
            assert s.on_follower_fetch(follower, follower_end[follower], leader_end, now)
        elif kind == "tick":
            now += step[1]
        elif kind == "propose":
            s.propose(now, leader_end, hw, LAG_MS)
        elif kind == "commit" and s.pending is not None:
            partition_epoch += 1
            s.on_committed(s.pending.new_isr, partition_epoch)
        elif kind == "fail":
            s.on_change_failed()
        new_hw = s.high_watermark(leader_end, hw)
        assert new_hw >= hw, "high watermark went down"
        assert new_hw <= leader_end
        for member in s.maximal_isr:
            if member != LEADER and s.followers[member].log_end_offset != UNKNOWN:
                assert new_hw <= follower_end[member], (member, new_hw, follower_end)
        assert LEADER in s.isr
        hw = new_hw
