"""Sparse time index of one segment: `<base>.timeindex`.

File layout: 12-byte entries, big-endian ``timestamp int64, relative_offset int32``: "the batches
up to and including relative_offset hold records with timestamps up to `timestamp`" — i.e. the
max timestamp seen so far in the segment and the offset of the batch where it was seen. An entry
is written (as Kafka does) when an offset-index entry is written and the max timestamp has grown
since the last time-index entry. Timestamps and offsets strictly increase.

Lookup for "first offset with timestamp >= ts": the greatest entry with timestamp < ts gives an
offset from which to scan forward; a rebuildable cache like the offset index.
"""

from __future__ import annotations

import bisect
import struct

from storage.files import File, FileSystem
from storage.offset_index import IndexCorruptError

TIME_ENTRY = struct.Struct(">qi")
TIME_ENTRY_SIZE = TIME_ENTRY.size


class TimeIndex:
    def __init__(self, fs: FileSystem, path: str, base_offset: int, entries_max: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.entries_max = entries_max
        self._file: File = fs.open(path)
        self.timestamps: list[int] = []
        self.relative_offsets: list[int] = []

    def load(self) -> None:
        size = self._file.size
        if size % TIME_ENTRY_SIZE:
            raise IndexCorruptError(f"{self.path}: size {size} is not a multiple of {TIME_ENTRY_SIZE}")
        ts: list[int] = []
        rel: list[int] = []
        for t, r in TIME_ENTRY.iter_unpack(self._file.pread(0, size)):
            ts.append(t)
            rel.append(r)
        if any(ts[i] >= ts[i + 1] or rel[i] > rel[i + 1] for i in range(len(ts) - 1)):
            raise IndexCorruptError(f"{self.path}: entries not increasing")
        self.timestamps, self.relative_offsets = ts, rel

    def reset(self) -> None:
        self._file.truncate(0)
        self.timestamps, self.relative_offsets = [], []

    @property
    def is_full(self) -> bool:
        return len(self.timestamps) >= self.entries_max

    @property
    def last_timestamp(self) -> int:
        return self.timestamps[-1] if self.timestamps else -1

    def maybe_append(self, timestamp: int, offset: int) -> None:
        rel = offset - self.base_offset
        if self.timestamps and (timestamp <= self.timestamps[-1] or rel < self.relative_offsets[-1]):
            return
        self._file.append(TIME_ENTRY.pack(timestamp, rel))
        self.timestamps.append(timestamp)
        self.relative_offsets.append(rel)

    def truncate_to_offset(self, offset: int) -> None:
        """Remove entries whose offset >= offset."""
        keep = bisect.bisect_left(self.relative_offsets, offset - self.base_offset)
        if keep < len(self.timestamps):
            del self.timestamps[keep:]
            del self.relative_offsets[keep:]
            self._file.truncate(keep * TIME_ENTRY_SIZE)

    def lookup(self, timestamp: int) -> int:
        """An offset at or before the first batch holding a timestamp >= `timestamp`.

        The greatest entry with entry.timestamp < timestamp says all batches up to its offset
        have max timestamp < timestamp, so scanning may start after that batch; we return the
        entry's offset (scan starts at the batch holding it, harmlessly one batch early).
        """
        i = bisect.bisect_left(self.timestamps, timestamp) - 1
        if i < 0:
            return self.base_offset
        return self.base_offset + self.relative_offsets[i]

    def fsync(self) -> None:
        self._file.fsync()

    def close(self) -> None:
        self._file.close()
