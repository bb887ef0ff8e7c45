"""Leader-side view of every replica that fetches from it (§5.3 nextIndex/matchIndex, pull style).

Replication is pulled (docs/raft.md), so the leader does not push batches: a replica's FETCH
carries its anchor (index, term); if the leader's log has that entry, the replica's log equals
the leader's up to it (Log Matching, §5.3) and `match_index` may advance to it. `ProgressTracker`
turns voters' matches into the commit index (quorum.committed_index) and their fetch times into
the check-quorum verdict (thesis §6.2).

States (etcd's names, meaning adapted to pull):
* PROBE — the last fetch diverged (or none yet); the replica is searching for the match point.
* REPLICATE — the last fetch matched; the replica is streaming.
* SNAPSHOT — the replica was sent the snapshot because its anchor was below the log start.

In-flight bound: a replica has at most ONE fetch held by the leader (`pending_fetch`, a long
poll; a newer fetch from the same replica replaces it) and every response carries at most
`fetch_max_entries` entries / `fetch_max_bytes` bytes (RaftConfig). Observers are tracked too,
at most `observers_max` of them (the least recently seen is evicted); they never count towards
commit or check-quorum.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from . import quorum
from .messages import Message


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = ("is_voter", "last_caught_up_tick", "last_fetch_tick", "match_index", "next_index",
                 "pending_fetch", "pending_since_tick", "state")

    def __init__(self, is_voter: bool, now_tick: int, next_index: int) -> None:
        self.is_voter = is_voter
        self.match_index = 0
        self.next_index = next_index       # index right after the replica's last anchor
        self.state = ProgressState.PROBE
        # A new leader grants every voter one full check-quorum window (as if just heard from).
        self.last_fetch_tick = now_tick
        self.last_caught_up_tick = -1      # last fetch at the leader's end (DescribeQuorum)
        self.pending_fetch: Message | None = None
        self.pending_since_tick = 0

    def on_fetch(self, now_tick: int, anchor_index: int) -> None:
        self.last_fetch_tick = now_tick
        self.next_index = anchor_index + 1

    def on_match(self, anchor_index: int, now_tick: int, leader_last_index: int) -> bool:
        """The replica stores the leader's log up to `anchor_index`. Returns True if match grew."""
        self.state = ProgressState.REPLICATE
        if anchor_index >= leader_last_index:
            self.last_caught_up_tick = now_tick
        if anchor_index > self.match_index:
            self.match_index = anchor_index
            return True
        return False

    def on_diverging(self) -> None:
        self.state = ProgressState.PROBE

    def on_snapshot_sent(self) -> None:
        self.state = ProgressState.SNAPSHOT

    def hold(self, fetch: Message, now_tick: int) -> None:
        self.pending_fetch = fetch
        self.pending_since_tick = now_tick

    def __repr__(self) -> str:
        return f"Progress(match={self.match_index}, next={self.next_index}, {self.state.value})"


class ProgressTracker:
    """Progress of the voters (other than the leader) and of up to `observers_max` observers."""

    __slots__ = ("_leader_id", "_observers_max", "progress", "self_match_index", "voters")

    def __init__(self, leader_id: int, voters: frozenset[int], observers_max: int, now_tick: int,
                 next_index: int) -> None:
        assert observers_max >= 0
        self._leader_id = leader_id
        self._observers_max = observers_max
        self.voters = voters
        self.self_match_index = 0  # the leader's own persisted last index
        self.progress: dict[int, Progress] = {
            v: Progress(True, now_tick, next_index) for v in voters if v != leader_id}

    def get(self, replica_id: int, now_tick: int, next_index: int) -> Progress | None:
        """The replica's progress, creating observers on first sight (None: over the bound of 0)."""
        pr = self.progress.get(replica_id)
        if pr is not None:
            return pr
        if self._observers_max == 0:
            return None
        observers = [r for r, p in self.progress.items() if not p.is_voter]
        if len(observers) >= self._observers_max:
            oldest = min(observers, key=lambda r: self.progress[r].last_fetch_tick)
            del self.progress[oldest]
        pr = self.progress[replica_id] = Progress(False, now_tick, next_index)
        return pr

    def committed_index(self) -> int:
        """Largest index stored by a majority of voters (the current-term check is the caller's)."""
        matches = [self.self_match_index if v == self._leader_id else self.progress[v].match_index
                   for v in self.voters]
        return quorum.committed_index(matches)

    def quorum_active(self, now_tick: int, window_ticks: int) -> bool:
        """Did a majority of voters (the leader counts) fetch within the last `window_ticks`?"""
        active = [self._leader_id]
        active.extend(v for v, p in self.progress.items()
                      if p.is_voter and now_tick - p.last_fetch_tick < window_ticks)
        return quorum.has_quorum(self.voters, active)

    def pending(self) -> Iterator[tuple[int, Progress]]:
        return ((r, p) for r, p in self.progress.items() if p.pending_fetch is not None)
