"""Sparse offset index of one segment: `<base>.index`.

File layout: a sequence of 8-byte entries, big-endian ``relative_offset int32, position int32``,
where relative_offset = (last offset of an indexed batch) - segment base offset and position is
the byte position of that batch in the `.log` file. Entries are appended at most once every
`index_interval_bytes` of log data (Kafka's `index.interval.bytes`).

Invariants: relative offsets and positions strictly increase; every position is the start of a
whole batch below the segment's size. The index is a cache: it is rebuilt from the log whenever it
is missing, torn (size not a multiple of 8) or inconsistent, and never trusted after a crash past
the recovery point. It lives in memory as two lists (bisect lookups); the file is appended with
raw writes, never buffered in Python.
"""

from __future__ import annotations

import bisect
import struct

from storage.files import File, FileSystem

OFFSET_ENTRY = struct.Struct(">ii")
OFFSET_ENTRY_SIZE = OFFSET_ENTRY.size


class IndexCorruptError(ValueError):
    """The index file does not hold a well-formed index for this segment."""


class OffsetIndex:
    def __init__(self, fs: FileSystem, path: str, base_offset: int, entries_max: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.entries_max = entries_max
        self._fs = fs
        self._file: File = fs.open(path)
        self.relative_offsets: list[int] = []
        self.positions: list[int] = []

    # --- loading ---------------------------------------------------------------------------------
    def load(self, log_size_bytes: int) -> None:
        """Read the file into memory; IndexCorruptError if it is not consistent with the log size."""
        size = self._file.size
        if size % OFFSET_ENTRY_SIZE:
            raise IndexCorruptError(f"{self.path}: size {size} is not a multiple of {OFFSET_ENTRY_SIZE}")
        data = self._file.pread(0, size)
        rel: list[int] = []
        pos: list[int] = []
        for r, p in OFFSET_ENTRY.iter_unpack(data):
            rel.append(r)
            pos.append(p)
        if rel and (pos[-1] >= log_size_bytes or rel[0] < 0 or pos[0] < 0):
            raise IndexCorruptError(f"{self.path}: last entry points past the log")
        if any(rel[i] >= rel[i + 1] or pos[i] >= pos[i + 1] for i in range(len(rel) - 1)):
            raise IndexCorruptError(f"{self.path}: entries not increasing")
        self.relative_offsets, self.positions = rel, pos

    def reset(self) -> None:
        """Drop every entry (before a rebuild)."""
        self._file.truncate(0)
        self.relative_offsets, self.positions = [], []

    # --- writing -----------------------------------------------------------------------------------
    @property
    def is_full(self) -> bool:
        return len(self.relative_offsets) >= self.entries_max

    def append(self, offset: int, position: int) -> None:
        rel = offset - self.base_offset
        if self.relative_offsets and (rel <= self.relative_offsets[-1] or position <= self.positions[-1]):
            return  # not increasing (e.g. a replicated batch with an offset gap backwards): skip
        self._file.append(OFFSET_ENTRY.pack(rel, position))
        self.relative_offsets.append(rel)
        self.positions.append(position)

    def truncate_to_offset(self, offset: int) -> None:
        """Remove entries for batches whose last offset >= offset."""
        keep = bisect.bisect_left(self.relative_offsets, offset - self.base_offset)
        self._truncate_entries(keep)

    def truncate_to_position(self, position: int) -> None:
        """Remove entries pointing at or after `position`."""
        self._truncate_entries(bisect.bisect_left(self.positions, position))

    def _truncate_entries(self, keep: int) -> None:
        if keep < len(self.relative_offsets):
            del self.relative_offsets[keep:]
            del self.positions[keep:]
            self._file.truncate(keep * OFFSET_ENTRY_SIZE)

    # --- lookups -----------------------------------------------------------------------------------
    def lookup(self, offset: int) -> tuple[int, int]:
        """(indexed last offset, position) of the greatest entry whose offset is <= offset.

        Returns (base_offset - 1, 0) when there is none: scan from the segment start.
        """
        i = bisect.bisect_right(self.relative_offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset - 1, 0
        return self.base_offset + self.relative_offsets[i], self.positions[i]

    def lookup_position(self, position: int) -> int:
        """Greatest indexed batch position <= position (0 if none): a batch boundary to scan from."""
        i = bisect.bisect_right(self.positions, position) - 1
        return self.positions[i] if i >= 0 else 0

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0

    @property
    def size_bytes(self) -> int:
        return len(self.positions) * OFFSET_ENTRY_SIZE

    def fsync(self) -> None:
        self._file.fsync()

    def close(self) -> None:
        self._file.close()
