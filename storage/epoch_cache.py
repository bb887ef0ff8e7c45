"""Leader epoch cache of one partition log: epoch -> start offset (KIP-101, KIP-279).

Entries are (epoch, start_offset) with epochs and start offsets strictly increasing: epoch E's
batches occupy [start(E), start(next epoch)). Persisted as the Kafka-format checkpoint
`leader-epoch-checkpoint` beside the segments, rewritten atomically on every change (changes
happen only at leader changes, truncation and retention: rare).

The class itself is pure (no I/O): `Log` persists `entries` after each method that returns True.
"""

from __future__ import annotations

import bisect

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class LeaderEpochCache:
    def __init__(self, entries: list[tuple[int, int]] | None = None) -> None:
        self.entries: list[tuple[int, int]] = []
        for epoch, start in entries or []:
            self.assign(epoch, start)

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` starts at `start_offset`. Returns True if the cache changed.

        A repeated assign of the latest epoch is a no-op. Entries that conflict with the new one
        (epoch >= epoch, or start offset >= start_offset) are removed first, as Kafka does.
        """
        if epoch < 0:
            return False
        if self.entries and self.entries[-1][0] == epoch and self.entries[-1][1] <= start_offset:
            return False
        self.entries = [(e, s) for e, s in self.entries if e < epoch and s < start_offset]
        self.entries.append((epoch, start_offset))
        return True

    def truncate_from_end(self, end_offset: int) -> bool:
        """Drop entries starting at or after `end_offset` (the log was truncated there)."""
        if end_offset < 0:  # undefined (as Kafka's truncateFromEnd): not a truncation to empty
            return False
        keep = [(e, s) for e, s in self.entries if s < end_offset]
        changed = len(keep) != len(self.entries)
        self.entries = keep
        return changed

    def truncate_from_start(self, start_offset: int) -> bool:
        """The log now starts at `start_offset`: drop earlier entries, keeping the epoch in force."""
        i = bisect.bisect_right([s for _, s in self.entries], start_offset) - 1
        if i < 0:
            return False
        epoch, start = self.entries[i]
        new = [(epoch, max(start, start_offset)), *self.entries[i + 1:]]
        changed = new != self.entries
        self.entries = new
        return changed

    def epoch_for_offset(self, offset: int) -> int:
        i = bisect.bisect_right([s for _, s in self.entries], offset) - 1
        return self.entries[i][0] if i >= 0 else UNDEFINED_EPOCH

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest known epoch <= requested, end offset of that epoch), as Kafka's endOffsetFor.

        - requested is the latest epoch: (latest, log_end_offset);
        - requested is above the latest, or undefined: (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        - requested is below the earliest: (requested, start offset of the earliest epoch);
        - otherwise: (floor epoch, start offset of the first epoch above requested).
        """
        if requested_epoch == UNDEFINED_EPOCH or not self.entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if requested_epoch == self.entries[-1][0]:
            return requested_epoch, log_end_offset
        epochs = [e for e, _ in self.entries]
        higher = bisect.bisect_right(epochs, requested_epoch)
        if higher == len(epochs):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if higher == 0:
            return requested_epoch, self.entries[0][1]
        return self.entries[higher - 1][0], self.entries[higher][1]
