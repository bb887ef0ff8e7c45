"""Majority-quorum math for a fixed voter set (Raft paper §5.2, §5.3, §5.4.2).

Pure functions over plain collections; the core and the progress tracker call them. Voter sets are
static (membership changes are out of scope, see docs/raft.md), so a quorum is always a simple
majority of the voters given.

Contracts:
* `majority(n)` is the smallest number of voters that intersects every other majority of `n`.
* `committed_index(matches)` is the largest log index that at least a majority of voters have
  matched (are known to store durably). It does NOT apply the current-term rule of §5.4.2
  (figure 8); the caller must check that the entry at that index is of its own term.
* `vote_result(voters, votes)` is WON once a majority granted, LOST once a majority can no longer
  be reached, PENDING otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voter_count: int) -> int:
    """Smallest majority of `voter_count` voters."""
    assert voter_count > 0, "a quorum needs at least one voter"
    return voter_count // 2 + 1


def committed_index(match_indexes: Collection[int]) -> int:
    """Largest index that a majority of `match_indexes` (one per voter) has reached."""
    ordered = sorted(match_indexes, reverse=True)
    return ordered[majority(len(ordered)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Tally of `votes` (voter id -> granted) among `voters`; votes of non-voters are ignored."""
    granted = rejected = 0
    for voter in voters:
        vote = votes.get(voter)
        if vote is True:
            granted += 1
        elif vote is False:
            rejected += 1
    needed = majority(len(voters))
    if granted >= needed:
        return VoteResult.WON
    if len(voters) - rejected < needed:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[int], members: Iterable[int]) -> bool:
    """True when `members` contains a majority of `voters` (check-quorum, §6.2 of the thesis)."""
    voter_set = voters if isinstance(voters, (set, frozenset)) else set(voters)
    return sum(1 for m in set(members) if m in voter_set) >= majority(len(voter_set))
