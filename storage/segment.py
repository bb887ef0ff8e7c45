"""One log segment: `<base>.log` plus its `.index` and `.timeindex`.

The `.log` file holds Kafka record batches v2 back to back, exactly as on the wire, with strictly
increasing offsets (gaps allowed after compaction). `base_offset` (in the file name) is <= the
first batch's base offset. In memory a segment knows its `next_offset` (last offset + 1 of its
last batch, or base_offset when empty), its size and its max timestamp.

Index entries are appended every `index_interval_bytes` of appended data (see OffsetIndex and
TimeIndex for their layouts). A segment after `recover()` holds only whole, CRC-valid batches.
Suffixes: a segment being written by the cleaner lives under `.log.cleaned`, then `.log.swap`
(see storage/compaction.py); `suffix` names those files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

from client.wire.records import (
    HEADER_SIZE,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    MAGIC_V2,
    BatchHeader,
    crc_is_valid,
)
from storage.files import FileSystem
from storage.offset_index import IndexCorruptError, OffsetIndex
from storage.time_index import TimeIndex

SCAN_BLOCK_BYTES = 8 << 10  # read this much at a time when walking batch headers (few are needed)
RECOVERY_BLOCK_BYTES = 4 << 20


def segment_file_name(base_offset: int, extension: str) -> str:
    return f"{base_offset:020d}{extension}"


class ReadRange(NamedTuple):
    position: int
    length: int
    first_offset: int  # base offset of the first batch (-1 when none)
    next_offset: int   # offset to continue reading from


class CorruptBatchError(Exception):
    """A stored batch failed its CRC or layout check at read time."""


class LogSegment:
    def __init__(self, fs: FileSystem, directory: str, base_offset: int, *, index_interval_bytes: int,
                 index_entries_max: int, suffix: str = "") -> None:
        self.fs = fs
        self.directory = directory
        self.base_offset = base_offset
        self.suffix = suffix
        self.index_interval_bytes = index_interval_bytes
        self.log = fs.open(self._path(".log"))
        self.offset_index = OffsetIndex(fs, self._path(".index"), base_offset, index_entries_max)
        self.time_index = TimeIndex(fs, self._path(".timeindex"), base_offset, index_entries_max)
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.first_batch_timestamp: int | None = None
        self._bytes_since_index = 0
        self.flushed_size = 0  # bytes of the .log known durable

    def _path(self, extension: str) -> str:
        return os.path.join(self.directory, segment_file_name(self.base_offset, extension) + self.suffix)

    @property
    def size_bytes(self) -> int:
        return self.log.size

    @property
    def is_empty(self) -> bool:
        return self.log.size == 0

    @property
    def index_full(self) -> bool:
        return self.offset_index.is_full or self.time_index.is_full

    # --- appending -------------------------------------------------------------------------------
    def append(self, parts: list[bytes | bytearray | memoryview], size: int, last_offset: int,
               max_timestamp: int) -> int:
        """Append one batch given as byte parts; returns its position. Indexes follow."""
        position = self.log.append_parts(parts, size) if len(parts) > 1 else self.log.append(parts[0])
        self._after_append(position, size, last_offset, max_timestamp)
        return position

    def _after_append(self, position: int, size: int, last_offset: int, max_timestamp: int) -> None:
        if self.first_batch_timestamp is None:
            self.first_batch_timestamp = max_timestamp
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
            self.offset_of_max_timestamp = last_offset
        if self._bytes_since_index >= self.index_interval_bytes or position == 0:
            self.offset_index.append(last_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self._bytes_since_index = 0
        self._bytes_since_index += size
        self.next_offset = last_offset + 1

    # --- scanning ------------------------------------------------------------------------------
    def scan_headers(self, position: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
        """Yield (position, header) of batches from `position` (a batch boundary) to `end`.

        Reads in blocks; stops silently at a torn tail or an impossible length.
        """
        end = self.log.size if end is None else end
        unpack = HEADER_STRUCT.unpack_from
        make = BatchHeader._make
        while end - position >= HEADER_SIZE:
            block = self.log.pread(position, min(SCAN_BLOCK_BYTES, end - position))
            at = 0
            limit = len(block)
            while limit - at >= HEADER_SIZE:
                header = make(unpack(block, at))
                size = LOG_OVERHEAD + header.batch_length
                if size < HEADER_SIZE or position + at + size > end:
                    return
                yield position + at, header
                at += size
            if at == 0:
                return
            position += at

    def find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """The first batch whose last offset >= offset, or None."""
        if offset >= self.next_offset:
            return None
        _, start = self.offset_index.lookup(offset)
        for position, header in self.scan_headers(start):
            if header.base_offset + header.last_offset_delta >= offset:
                return position, header
        return None

    def first_header(self) -> BatchHeader | None:
        if self.log.size >= HEADER_SIZE:
            return BatchHeader._make(HEADER_STRUCT.unpack_from(self.log.pread(0, HEADER_SIZE)))
        return None

    # --- reading ---------------------------------------------------------------------------------
    def read_range(self, start_offset: int, max_bytes: int, max_offset: int | None) -> ReadRange:
        """Whole batches from the one holding start_offset, all with last offset < max_offset, at
        most max_bytes but at least one batch (KIP-74); length 0 if none.

        `next_offset` is where a reader continues: the offset after the last batch returned.
        """
        found = self.find_batch(start_offset)
        if found is None:
            return ReadRange(0, 0, -1, start_offset)
        start_pos, first = found
        first_size = first.total_size
        if max_offset is not None and first.base_offset + first.last_offset_delta >= max_offset:
            return ReadRange(start_pos, 0, first.base_offset, start_offset)
        end_pos, end_offset = self.log.size, self.next_offset
        if max_offset is not None and max_offset < self.next_offset:
            bound = self.find_batch(max_offset)
            if bound is not None:
                end_pos, end_offset = bound[0], bound[1].base_offset
        if end_pos - start_pos <= max_bytes:
            return ReadRange(start_pos, end_pos - start_pos, first.base_offset, end_offset)
        if first_size >= max_bytes:
            return ReadRange(start_pos, first_size, first.base_offset, first.next_offset)
        limit = start_pos + max_bytes
        # an indexed batch start <= limit is a boundary we may end at; scan on from there
        boundary = start_pos + first_size
        next_offset = first.next_offset
        indexed = self.offset_index.lookup_position(limit)
        if indexed > boundary:
            boundary = indexed
            next_offset = -1
        for position, header in self.scan_headers(boundary, end_pos):
            if position + header.total_size > limit:
                if next_offset < 0:
                    next_offset = header.base_offset
                break
            boundary = position + header.total_size
            next_offset = header.base_offset + header.last_offset_delta + 1
        return ReadRange(start_pos, boundary - start_pos, first.base_offset, next_offset)

    def read_bytes(self, position: int, length: int) -> bytes:
        return self.log.pread(position, length)

    # --- recovery --------------------------------------------------------------------------------
    def load_indexes(self) -> bool:
        """Load both indexes and the tail state (clean open). False if an index must be rebuilt."""
        try:
            self.offset_index.load(self.log.size)
            self.time_index.load()
        except IndexCorruptError:
            return False
        if self.log.size and not (self.offset_index.positions and self.time_index.timestamps):
            return False  # the first batch of a segment is always indexed in both
        if self.offset_index.positions and not self._last_index_entry_is_true():
            return False
        self._load_tail_state()
        rel = self.time_index.relative_offsets
        if rel and (rel[0] < 0 or rel[-1] > self.next_offset - 1 - self.base_offset):
            return False  # the time index names offsets the segment does not hold
        self.flushed_size = self.log.size
        return True

    def _last_index_entry_is_true(self) -> bool:
        """The first entry is the first batch; the last entry names a whole batch with that last
        offset (cheap: one header read). The tail scan starts there, so it must be a boundary."""
        position = self.offset_index.last_position
        if self.offset_index.positions[0] != 0 or self.log.size - position < HEADER_SIZE:
            return False
        header = BatchHeader._make(HEADER_STRUCT.unpack_from(self.log.pread(position, HEADER_SIZE)))
        return (header.magic == MAGIC_V2 and HEADER_SIZE <= header.total_size <= self.log.size - position
                and header.base_offset + header.last_offset_delta
                == self.base_offset + self.offset_index.relative_offsets[-1])

    def _load_tail_state(self) -> None:
        """Recompute next_offset / max timestamp from the last index entries and the tail."""
        self.next_offset = self.base_offset
        self.max_timestamp = self.time_index.last_timestamp
        self.offset_of_max_timestamp = (self.base_offset + self.time_index.relative_offsets[-1]
                                        if self.time_index.relative_offsets else self.base_offset)
        self._bytes_since_index = 0
        start = self.offset_index.last_position
        for position, header in self.scan_headers(start):
            self.next_offset = header.base_offset + header.last_offset_delta + 1
            if header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self.offset_of_max_timestamp = self.next_offset - 1
            self._bytes_since_index = position + header.total_size - start
        first = self.first_header() if self.log.size else None
        self.first_batch_timestamp = first.max_timestamp if first else None

    def recover(self, batch_bytes_max: int) -> int:
        """Scan every batch, check layout and CRC, rebuild indexes, truncate at the first bad one.

        Returns the number of bytes truncated (0 when the segment was whole).
        """
        self.offset_index.reset()
        self.time_index.reset()
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = self.base_offset
        self.first_batch_timestamp = None
        self._bytes_since_index = 0
        size = self.log.size
        position = 0
        unpack = HEADER_STRUCT.unpack_from
        valid_end = 0
        bad = False
        while not bad and size - position >= HEADER_SIZE:
            block = self.log.pread(position, min(RECOVERY_BLOCK_BYTES, size - position))
            at = 0
            while len(block) - at >= HEADER_SIZE:
                (base, length, _epoch, magic, _crc, _attr, delta, _bts, max_ts, *_rest) = unpack(block, at)
                total = LOG_OVERHEAD + length
                if magic != MAGIC_V2 or total < HEADER_SIZE or total > batch_bytes_max \
                        or delta < 0 or base < self.next_offset:
                    bad = True
                    break
                if len(block) - at < total:
                    if at == 0:  # a batch larger than the block: read it whole
                        block = self.log.pread(position, total)
                        if len(block) < total:
                            bad = True
                            break
                        continue
                    break
                if not crc_is_valid(block, at, total):
                    bad = True
                    break
                self._after_append(position + at, total, base + delta, max_ts)
                at += total
                valid_end = position + at
            if at == 0:
                break
            position += at
        truncated = size - valid_end
        if truncated:
            self.log.truncate(valid_end)
        self.flushed_size = 0
        return truncated

    def verify_batch(self, data: bytes | memoryview, position: int = 0) -> None:
        if not crc_is_valid(data, position):
            raise CorruptBatchError(f"{self.log.path}: CRC mismatch in a stored batch")

    # --- truncation ------------------------------------------------------------------------------
    def truncate_to(self, offset: int) -> int:
        """Drop every batch whose last offset >= offset (a batch holding `offset` goes whole).

        Returns the number of bytes removed.
        """
        found = self.find_batch(offset)
        if found is None:
            return 0
        position = found[0]
        removed = self.log.size - position
        self.log.truncate(position)
        self.offset_index.truncate_to_position(position)
        self.time_index.truncate_to_offset(found[1].base_offset)
        # A truncation must be durable before anyone relies on it (the epoch cache is rewritten
        # right after): otherwise a crash brings the dropped batches back from the last fsync.
        self.log.fsync()
        self.offset_index.fsync()
        self.time_index.fsync()
        self.flushed_size = position
        self._load_tail_state()
        return removed

    # --- lifecycle -------------------------------------------------------------------------------
    def flush(self) -> None:
        if self.flushed_size != self.log.size:
            self.log.fsync()
            self.offset_index.fsync()
            self.time_index.fsync()
            self.flushed_size = self.log.size

    def close(self) -> None:
        self.log.close()
        self.offset_index.close()
        self.time_index.close()

    def file_paths(self) -> list[str]:
        return [self._path(ext) for ext in (".log", ".index", ".timeindex")]

    def delete(self) -> None:
        self.close()
        for path in self.file_paths():
            if self.fs.exists(path):
                self.fs.remove(path)

    def rename_suffix(self, new_suffix: str) -> None:
        """Rename the three files to carry `new_suffix` (handles stay valid: same inodes)."""
        old = self.file_paths()
        self.suffix = new_suffix
        for src, dst in zip(old, self.file_paths()):
            if self.fs.exists(src):
                self.fs.rename(src, dst)
        self.log.path, self.offset_index._file.path, self.time_index._file.path = self.file_paths()
        self.offset_index.path, self.time_index.path = self.file_paths()[1:]
