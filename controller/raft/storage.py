"""Persistent-state records and the in-memory mirror of stable storage (Raft paper §5, §7).

Records (immutable NamedTuples, what a driver writes to disk and reads back on restart):

* `Entry(term, index, data, type)` — one log entry. `index` starts at 1; index 0 is the empty
  prefix with term 0. `EntryType.NOOP` is the entry a new leader appends in its term (§5.4.2,
  §8): the application skips it. In KRaft the term is a batch's partitionLeaderEpoch and the index
  is offset + 1.
* `HardState(term, vote, commit)` — what must survive a crash: the current term and the vote cast
  in it (§5.1, §5.2, figure 2 "persistent state"); `commit` is persisted too (as etcd does) so a
  restarted node can re-apply without waiting for a leader, but a stale commit is harmless.
* `Snapshot(index, term, data)` — the application's state after applying every entry up to
  `index` (§7). `data` is opaque to Raft.

`MemoryStorage` is the core's view of what the driver has persisted: snapshot, the contiguous
entries after it, and the hard state. Only `RaftLog` writes it, and only in `RaftCore.advance()`,
i.e. after the driver has persisted the corresponding `Ready`. A driver restarting a node builds
one from its files: `MemoryStorage(hard_state, snapshot, entries)`. Nothing here does I/O.

Invariants (asserted): entries are contiguous and start at `snapshot.index + 1`; terms never
decrease along the log.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import NamedTuple


class EntryType(enum.IntEnum):
    NORMAL = 0
    NOOP = 1  # appended by every new leader; commits the entries of earlier terms (§5.4.2)


class Entry(NamedTuple):
    term: int
    index: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL


class HardState(NamedTuple):
    term: int = 0
    vote: int | None = None
    commit: int = 0


class Snapshot(NamedTuple):
    index: int
    term: int
    data: bytes = b""


EMPTY_SNAPSHOT = Snapshot(0, 0, b"")
EMPTY_HARD_STATE = HardState()


class MemoryStorage:
    """Stable entries, snapshot and hard state, as last persisted by the driver."""

    __slots__ = ("_entries", "_snapshot", "hard_state")

    def __init__(self, hard_state: HardState = EMPTY_HARD_STATE, snapshot: Snapshot = EMPTY_SNAPSHOT,
                 entries: Iterable[Entry] = ()) -> None:
        self.hard_state = hard_state
        self._snapshot = snapshot
        self._entries: list[Entry] = list(entries)
        expected = snapshot.index + 1
        prev_term = snapshot.term
        for entry in self._entries:
            assert entry.index == expected, f"entries not contiguous: {entry.index} != {expected}"
            assert entry.term >= prev_term, f"term decreases at index {entry.index}"
            expected += 1
            prev_term = entry.term

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return self._snapshot.index + len(self._entries)

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`, the snapshot's term at its index, None if unavailable."""
        base = self._snapshot.index
        if index == base:
            return self._snapshot.term
        k = index - base - 1
        if 0 <= k < len(self._entries):
            return self._entries[k].term
        return None

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with `lo <= index < hi`; the range must be available."""
        base = self._snapshot.index
        assert base < lo <= hi <= self.last_index() + 1, f"entries [{lo}, {hi}) out of ({base}, {self.last_index()}]"
        return self._entries[lo - base - 1:hi - base - 1]

    def all_entries(self) -> list[Entry]:
        return list(self._entries)

    def append(self, entries: Sequence[Entry]) -> None:
        """Truncate everything from `entries[0].index` on, then append `entries`."""
        if not entries:
            return
        base = self._snapshot.index
        first = entries[0].index
        assert base < first <= self.last_index() + 1, f"append at {first} outside ({base}, {self.last_index() + 1}]"
        del self._entries[first - base - 1:]
        self._entries.extend(entries)

    def compact(self, snapshot: Snapshot) -> None:
        """Replace the entries up to `snapshot.index` (which must be present) by the snapshot."""
        base = self._snapshot.index
        if snapshot.index <= base:
            return
        assert self.term(snapshot.index) == snapshot.term, f"compaction at {snapshot.index} does not match the log"
        del self._entries[:snapshot.index - base]
        self._snapshot = snapshot

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by `snapshot` (a follower installing the leader's state)."""
        assert snapshot.index >= self._snapshot.index, "snapshots never go backwards"
        self._snapshot = snapshot
        self._entries = []
