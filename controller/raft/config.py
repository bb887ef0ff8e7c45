"""RaftConfig: identity, voter set and every limit of the core, in ticks and counts.

Time is ticks: the driver calls `RaftCore.tick()` every `tick_ms` (e.g. 100 ms, making the
defaults KRaft's: election timeout 1 s, fetch long-poll 300 ms). The relations the core relies
on, asserted in `__post_init__`:

* `fetch_max_wait_ticks < fetch_timeout_ticks < election_timeout_ticks`: a healthy follower hears
  from its leader (a fetch response) at least every `fetch_max_wait_ticks` plus a round trip,
  well within the election timeout, and re-sends a lost fetch before its lease runs out.
* Election timeouts are drawn uniformly from [T, 2T) with T = `election_timeout_ticks` (§5.2).
* check-quorum: a leader steps down when fewer than a majority of voters (itself included)
  fetched within the last T ticks (thesis §6.2); a voter that heard from its leader within the
  last T ticks ignores (pre-)votes unless they come from a leadership transfer (thesis §4.2.3).

`unsafe_*` flags deliberately break the algorithm; they exist only so the simulator can show that
it catches the bug (tests/sim/test_sim_broken.py) and must never be set in production.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: int
    voters: frozenset[int]
    election_timeout_ticks: int = 10
    fetch_max_wait_ticks: int = 3          # leader holds an up-to-date fetch this long (long poll)
    fetch_timeout_ticks: int = 6           # a fetch without response is re-sent after this long
    vote_retry_ticks: int = 3              # candidates re-send (pre-)votes to silent voters (KRaft)
    begin_quorum_resend_ticks: int = 3     # period of re-announcing the leader to voters silent for
                                           # fetch_timeout_ticks (restarted or lost their leader)
    fetch_max_entries: int = 64            # entries per fetch response
    fetch_max_bytes: int = 1 << 20         # data bytes per fetch response (at least one entry)
    uncommitted_entries_max: int = 4096    # proposals beyond this many uncommitted entries are dropped
    apply_max_entries: int = 1024          # committed entries handed out per Ready
    apply_max_bytes: int = 16 << 20        # ... and their data bytes (at least one entry)
    observers_max: int = 64                # observers the leader tracks (least recently seen evicted)
    pre_vote: bool = True
    check_quorum: bool = True
    unsafe_commit_old_terms: bool = False  # BROKEN on purpose: count replicas of earlier-term entries

    def __post_init__(self) -> None:
        assert self.voters, "at least one voter"
        assert self.election_timeout_ticks >= 2
        assert 0 < self.fetch_max_wait_ticks < self.fetch_timeout_ticks < self.election_timeout_ticks, (
            "need fetch_max_wait_ticks < fetch_timeout_ticks < election_timeout_ticks")
        assert self.vote_retry_ticks > 0 and self.begin_quorum_resend_ticks > 0
        assert self.fetch_max_entries > 0 and self.fetch_max_bytes > 0
        assert self.uncommitted_entries_max > 0 and self.apply_max_entries > 0 and self.apply_max_bytes > 0
        assert self.observers_max >= 0

    @property
    def is_voter(self) -> bool:
        return self.node_id in self.voters
