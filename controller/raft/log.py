"""The Raft log: stable storage plus an unstable tail, commit and apply positions (§5.3, §7).

Layout of indexes::

    storage.snapshot.index < storage entries ...... < unstable_offset <= unstable entries ......
                           ^ first_index()                                      last_index() ^
    applied <= committed <= last_index()

* Stable entries live in `MemoryStorage` (persisted by the driver). The unstable tail holds
  entries appended since the last `Ready` was persisted; a follower that truncates a conflicting
  suffix moves `unstable_offset` below the stable end, which means "the driver must truncate the
  stable log at `entries[0].index` before appending" (the `Ready.entries` contract).
* `unstable_snapshot` is a snapshot received from the leader and not yet persisted; while it is
  pending the whole stable log is superseded (nothing below it is readable).
* `committed` only grows. An entry at or below `committed` is never truncated: that would break
  State Machine Safety (§5.4.3), so `maybe_append` asserts it.

Who calls it: only `RaftCore`. `stable_to`/`stable_snapshot` are called from `RaftCore.advance`
after the driver has persisted the matching `Ready`; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from .storage import Entry, MemoryStorage, Snapshot


class RaftLog:
    __slots__ = ("_unstable", "_unstable_offset", "applied", "apply_max_bytes", "apply_max_entries", "committed",
                 "storage", "unstable_snapshot")

    def __init__(self, storage: MemoryStorage, apply_max_entries: int, apply_max_bytes: int = 16 << 20) -> None:
        assert apply_max_entries > 0 and apply_max_bytes > 0
        self.storage = storage
        self.apply_max_entries = apply_max_entries
        self.apply_max_bytes = apply_max_bytes
        self._unstable: list[Entry] = []
        self._unstable_offset = storage.last_index() + 1
        self.unstable_snapshot: Snapshot | None = None
        self.committed = storage.snapshot.index
        self.applied = storage.snapshot.index

    # -- positions ---------------------------------------------------------------------------

    def first_index(self) -> int:
        snap = self.unstable_snapshot
        return snap.index + 1 if snap is not None else self.storage.first_index()

    def snapshot_index(self) -> int:
        """Index covered by the latest snapshot (pending or stable); entries below are gone."""
        return self.first_index() - 1

    def last_index(self) -> int:
        if self._unstable:
            return self._unstable[-1].index
        snap = self.unstable_snapshot
        if snap is not None:
            return snap.index
        return self.storage.last_index()

    def stable_last_index(self) -> int:
        """Last index known to be persisted (what a leader may count as its own match)."""
        assert self.unstable_snapshot is None, "a pending snapshot supersedes the stable log"
        return min(self.storage.last_index(), self._unstable_offset - 1)

    def term(self, index: int) -> int | None:
        """Term at `index` (snapshot term at the snapshot index); None if compacted or beyond the end."""
        off = self._unstable_offset
        if index >= off:
            k = index - off
            return self._unstable[k].term if k < len(self._unstable) else None
        snap = self.unstable_snapshot
        if snap is not None:
            return snap.term if index == snap.index else None
        return self.storage.term(index)

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None
        return term

    def match_term(self, index: int, term: int) -> bool:
        found = self.term(index)
        return found is not None and found == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction (§5.4.1): is a log ending at (last_index, last_term) at least as new?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    # -- reading -----------------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries in [lo, hi), at most `max_count` and `max_bytes` of data but at least one."""
        assert lo >= self.first_index(), f"slice from {lo} below first index {self.first_index()}"
        hi = min(hi, self.last_index() + 1, lo + max_count)
        if hi <= lo:
            return []
        off = self._unstable_offset
        out: list[Entry] = self.storage.entries(lo, min(hi, off)) if lo < off else []
        if hi > off:
            out.extend(self._unstable[max(lo, off) - off:hi - off])
        total = 0
        for k, entry in enumerate(out):
            total += len(entry.data)
            if total > max_bytes and k > 0:
                return out[:k]
        return out

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, term(i)) with i <= index and term(i) <= term, not below the snapshot index.

        The fast-backtracking hint of etcd (and KRaft's DivergingEpoch end offset): every entry of
        this log between the returned index and `index` has a term above `term`.
        """
        low = self.snapshot_index()
        i = min(index, self.last_index())
        while i > low:
            found = self.term(i)
            assert found is not None
            if found <= term:
                return i, found
            i -= 1
        low_term = self.term(low)
        assert low_term is not None
        return low, low_term

    def unstable_entries(self) -> tuple[Entry, ...]:
        return tuple(self._unstable)

    def has_unstable(self) -> bool:
        return bool(self._unstable) or self.unstable_snapshot is not None

    def next_committed_entries(self) -> tuple[Entry, ...]:
        """Committed entries not yet applied, at most `apply_max_entries` / `apply_max_bytes`."""
        start = max(self.applied + 1, self.first_index())
        if self.committed < start:
            return ()
        return tuple(self.slice(start, self.committed + 1, self.apply_max_entries, self.apply_max_bytes))

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applied, self.snapshot_index())

    # -- writing -----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Leader append: `entries` continue the log."""
        assert entries and entries[0].index == self.last_index() + 1, "leader appends must continue the log"
        self._truncate_and_append(entries)

    def maybe_append(self, prev_index: int, prev_term: int, entries: Sequence[Entry]) -> int | None:
        """Follower append (§5.3 AppendEntries receiver steps 2-4).

        Returns the last index now known to match the leader (prev_index + len(entries)), or None
        when this log has no entry (prev_index, prev_term) — the log-matching check failed.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                assert entry.index > self.committed, (
                    f"entry {entry.index} (term {entry.term}) conflicts with committed index {self.committed}")
                self._truncate_and_append(entries[entry.index - entries[0].index:])
                break
        return prev_index + len(entries)

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        off = self._unstable_offset
        if first == off + len(self._unstable):
            self._unstable.extend(entries)
        elif first <= off:
            # The stable suffix from `first` on is superseded; the driver truncates it (Ready.entries).
            assert first > self.snapshot_index(), f"append at {first} below snapshot {self.snapshot_index()}"
            self._unstable_offset = first
            self._unstable = list(entries)
        else:
            del self._unstable[first - off:]
            self._unstable.extend(entries)

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond last index {self.last_index()}"
            self.committed = index

    def restore(self, snapshot: Snapshot) -> None:
        """Install a leader's snapshot: the whole log is replaced by it (§7, InstallSnapshot step 7)."""
        assert snapshot.index > self.committed, "never restore over committed entries"
        self.unstable_snapshot = snapshot
        self._unstable = []
        self._unstable_offset = snapshot.index + 1
        self.committed = snapshot.index

    # -- after the driver persisted a Ready ----------------------------------------------------

    def stable_to(self, last_index: int) -> None:
        assert self._unstable and self._unstable[-1].index == last_index, "Ready entries changed before advance()"
        self.storage.append(self._unstable)
        self._unstable_offset = last_index + 1
        self._unstable = []

    def stable_snapshot(self, snapshot: Snapshot) -> None:
        assert self.unstable_snapshot == snapshot, "Ready snapshot changed before advance()"
        self.storage.apply_snapshot(snapshot)
        self.unstable_snapshot = None

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, f"applied {index} outside [{self.applied}, {self.committed}]"
        self.applied = index
