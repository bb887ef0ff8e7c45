"""Key compaction (`cleanup.policy` = compact or compact,delete): Kafka's LogCleaner, in slices.

One cleaning pass over one log (Kafka's `LogCleaner.doClean`) runs as a `CleaningTask`, a state
machine whose `step(now_ms)` does a bounded slice of work (at most `slice_bytes_max` bytes and
`slice_batches_max` batches read, or `scan_headers_max` headers / `scan_bytes_max` bytes walked,
or one fsync of a cleaned segment, or one swap) so the event loop that owns the log never stalls
(the bound is on work, not on a clock: this module reads no clock); `clean_log` runs a pass to
completion, `LogCleaner` picks the dirtiest of many logs. The policy (what is cleanable, the
offset map, the keep decision, grouping) is plain functions at the top of this module.

A pass:

1. plan -- `first_dirty_offset` = this log's cleaner checkpoint ("cleaned up to"), at least
   log_start_offset; `first_uncleanable_offset` = min(active segment base, `upper_bound_offset`
   (the caller's high watermark), base of the first segment younger than min.compaction.lag.ms).
   The log is cleaned when dirty bytes / (clean + dirty) bytes >= min.cleanable.dirty.ratio
   (segment granularity: a segment is dirty when it holds an offset >= first_dirty_offset and its
   base is below first_uncleanable_offset), or when the checkpointed earliest tombstone delete
   horizon has passed.
2. producers -- the headers of every segment (the active one included) give, per producerId >= 0,
   the batch with the highest last offset. That batch is never dropped, at worst emptied (records
   count 0, same base/last offset, producer id/epoch/baseSequence), so idempotence state (KIP-98)
   survives cleaning.
3. offset map -- key digest -> latest offset, from the dirty section's batches in offset order,
   each batch whole and only batches whose last offset < first_uncleanable_offset. It holds at
   most `offset_map_entries_max` entries (Kafka's log.cleaner.dedupe.buffer.size); when the next
   batch does not fit, mapping stops there (a single batch is always mapped, so the bound can be
   exceeded by one batch's records). `clean_end_offset` = next offset of the last batch mapped.
4. clean -- every non-active segment with base < clean_end_offset, from the first, in groups that
   stay under segment.bytes (sizes before cleaning), a 2^31-1 relative offset span and the index
   entry limit; each group is rewritten into one segment named after the group's first base.
5. swap -- per group, the crash-safe protocol of storage/recovery.py (see `_swap_group`); then
   the in-memory `Log.replace_segments`. Finally the checkpoint is rewritten.

Keep rules, for a record at offset o with key k (Kafka's `shouldRetainRecord`):
* o >= clean_end_offset: kept (never judged; in particular nothing at or above the high
  watermark is removed, nor used to remove anything);
* k is null: kept (Kafka drops it; we never drop what we cannot reason about);
* the map holds a newer offset for k (so below the bound): removed;
* a tombstone (null value) whose batch carries a delete horizon (KIP-534, attribute bit 6) that
  has passed (now_ms >= horizon): removed;
* otherwise kept. A batch that keeps a tombstone and has no horizon yet gets one,
  now_ms + delete.retention.ms, when it is first cleaned -- that is, in the pass that removed the
  older values of its key -- so a consumer that starts reading before that pass and finishes within
  delete.retention.ms sees the tombstone (Kafka 3.x `deleteHorizonMs`).
* control and transactional batches are kept byte for byte and never enter the map (no
  transactions yet: we cannot tell aborted data from committed data).
* a batch that loses no record is copied byte for byte; one that loses all is dropped unless it
  is a producer's last batch or the group's last batch, then kept empty. The group's last batch
  is kept so the cleaned segment ends at the same offset as the group: recovery replaces every
  segment whose base is in [swap base, swap next offset), and the segment after the group must
  not be in that range while the group's own last segment must be.
Offsets never change (gaps appear); log start and end offsets are unchanged; `Log.read` from an
offset that was removed returns the next surviving batch.

Checkpoint: `cleaner-offset-checkpoint` in the log directory, storage/checkpoint.py format with
one entry "first_dirty_offset next_delete_horizon_ms" (-1: no tombstone waits for a horizon).
Written after a completed pass only; an unreadable one is treated as missing (start from the
log start: safe, only slower). It is clamped to [log_start_offset, log_end_offset] on read.

Between slices the log's owner may append, roll, flush, apply retention or truncate. The task
only ever rewrites segments that were non-active when it planned; before writing a group it
checks that every segment of the group is still attached, still non-active and of the same size,
and aborts the pass otherwise (its `.cleaned` files deleted, no checkpoint written). Any OSError
goes through `Log._io()`: the log goes offline and the in-memory segment list is untouched
(segments are swapped in memory only after every file step succeeded); recovery at the next open
finishes or rolls back the file swap. Stored data that fails its CRC or does not decode raises
storage.errors.CorruptRecordError (the pass is abandoned; the caller may mark the log
uncleanable).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from client.wire.errors import KafkaError
from client.wire.records import (
    DELETE_HORIZON_BIT,
    HEADER_SIZE,
    BatchHeader,
    Record,
    crc_is_valid,
    decode_records,
    filter_batch,
    iter_batch_headers,
    read_header,
)
from storage.checkpoint import CheckpointError, read_int_checkpoint, write_checkpoint
from storage.errors import CorruptRecordError
from storage.log import RELATIVE_OFFSET_MAX, Log
from storage.segment import LogSegment, segment_file_name

CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
NO_HORIZON = -1

# Named bounds (ARCHITECTURE.md §3 rule 4).
OFFSET_MAP_ENTRIES_MAX = 1 << 20     # log.cleaner.dedupe.buffer.size: ~130 B per entry in CPython, ~136 MB
OFFSET_MAP_KEY_DIGEST_BYTES = 16     # keys are mapped by a 128-bit digest, as Kafka's SkimpyOffsetMap (MD5)
SLICE_BYTES_MAX = 64 << 10           # batch bytes read per slice (decode + filter + write)
SLICE_BATCHES_MAX = 32               # batches per slice
SCAN_HEADERS_MAX = 1024              # headers per slice when only headers are needed (producer scan)
SCAN_BYTES_MAX = 4 << 20             # bytes walked per slice by the producer scan
SCAN_WINDOW_BYTES = 256 << 10        # bytes read at once when walking headers


@dataclass(frozen=True)
class CleanerConfig:
    """Cleaner-wide bounds (the per-log knobs live in LogConfig)."""

    offset_map_entries_max: int = OFFSET_MAP_ENTRIES_MAX
    slice_bytes_max: int = SLICE_BYTES_MAX
    slice_batches_max: int = SLICE_BATCHES_MAX
    scan_headers_max: int = SCAN_HEADERS_MAX
    scan_bytes_max: int = SCAN_BYTES_MAX

    def __post_init__(self) -> None:
        assert self.offset_map_entries_max >= 1 and self.slice_bytes_max >= 1
        assert self.slice_batches_max >= 1 and self.scan_headers_max >= 1 and self.scan_bytes_max >= 1


# ================================================================================== pure policy

class SegmentStats(NamedTuple):
    """What the policy needs to know about one segment."""

    base_offset: int
    next_offset: int
    size_bytes: int
    max_timestamp_ms: int
    index_entries: int  # max(offset index entries, time index entries)


class CleanerCheckpoint(NamedTuple):
    first_dirty_offset: int
    next_delete_horizon_ms: int = NO_HORIZON  # earliest horizon of a batch still holding a tombstone


class CleaningPlan(NamedTuple):
    first_dirty_offset: int
    first_uncleanable_offset: int
    dirty_ratio: float
    tombstones_due: bool


def segment_stats(segment: LogSegment) -> SegmentStats:
    entries = max(len(segment.offset_index.positions), len(segment.time_index.timestamps))
    return SegmentStats(segment.base_offset, segment.next_offset, segment.size_bytes,
                        segment.max_timestamp, entries)


def first_uncleanable_offset(segments: Sequence[SegmentStats], *, upper_bound_offset: int, now_ms: int,
                             min_compaction_lag_ms: int) -> int:
    """min(active base, upper bound, base of the first segment younger than the compaction lag)."""
    end = min(segments[-1].base_offset, upper_bound_offset)
    if min_compaction_lag_ms > 0:
        for s in segments[:-1]:
            if s.max_timestamp_ms > now_ms - min_compaction_lag_ms:
                return min(end, s.base_offset)
    return end


def dirty_ratio(segments: Sequence[SegmentStats], first_dirty_offset: int, first_uncleanable: int) -> float:
    """Kafka's cleanableRatio: dirty bytes / (clean + dirty) bytes, whole segments."""
    if first_dirty_offset >= first_uncleanable:
        return 0.0
    clean = sum(s.size_bytes for s in segments if s.next_offset <= first_dirty_offset)
    dirty = sum(s.size_bytes for s in segments
                if s.next_offset > first_dirty_offset and s.base_offset < first_uncleanable)
    return dirty / (clean + dirty) if dirty else 0.0


def plan_cleaning(segments: Sequence[SegmentStats], checkpoint: CleanerCheckpoint, *, log_start_offset: int,
                  upper_bound_offset: int, now_ms: int, min_cleanable_dirty_ratio: float,
                  min_compaction_lag_ms: int) -> CleaningPlan | None:
    """The dirty section if this log is due for cleaning now, else None."""
    first_dirty = max(checkpoint.first_dirty_offset, log_start_offset)
    end = first_uncleanable_offset(segments, upper_bound_offset=upper_bound_offset, now_ms=now_ms,
                                   min_compaction_lag_ms=min_compaction_lag_ms)
    ratio = dirty_ratio(segments, first_dirty, end)
    due = checkpoint.next_delete_horizon_ms != NO_HORIZON and checkpoint.next_delete_horizon_ms <= now_ms
    if (ratio > 0.0 and ratio >= min_cleanable_dirty_ratio) or due:
        return CleaningPlan(first_dirty, max(end, first_dirty), ratio, due)
    return None


def group_segments(segments: Sequence[SegmentStats], *, segment_bytes_max: int,
                   index_entries_max: int) -> list[range]:
    """Consecutive index ranges whose merged segment stays under every per-segment limit.

    A group's total size (before cleaning: an upper bound of after) is <= segment_bytes_max, its
    last offset - first base <= 2^31-1, its index entries <= index_entries_max; a segment that
    alone breaks a limit is a group of its own (Kafka's groupSegmentsBySize).
    """
    groups: list[range] = []
    start = 0
    while start < len(segments):
        stop = start + 1
        size, entries = segments[start].size_bytes, segments[start].index_entries
        while stop < len(segments):
            s = segments[stop]
            if (size + s.size_bytes > segment_bytes_max or entries + s.index_entries > index_entries_max
                    or s.next_offset - 1 - segments[start].base_offset > RELATIVE_OFFSET_MAX):
                break
            size += s.size_bytes
            entries += s.index_entries
            stop += 1
        groups.append(range(start, stop))
        start = stop
    return groups


def note_producer_batches(last: dict[int, tuple[int, int]], headers: Iterable[BatchHeader]) -> None:
    """Update producerId -> (last offset, base offset) of its batch with the highest last offset."""
    for h in headers:
        if h.producer_id >= 0 and h.last_offset > last.get(h.producer_id, (-1, -1))[0]:
            last[h.producer_id] = (h.last_offset, h.base_offset)


class OffsetMap:
    """key digest -> latest offset, at most `entries_max` entries (when full, the caller stops)."""

    def __init__(self, entries_max: int) -> None:
        self.entries_max = entries_max
        self._latest: dict[bytes, int] = {}

    @staticmethod
    def digest(key: bytes) -> bytes:
        return hashlib.blake2b(key, digest_size=OFFSET_MAP_KEY_DIGEST_BYTES).digest()

    def __len__(self) -> int:
        return len(self._latest)

    def has_room_for(self, records: int) -> bool:
        """Whether `records` more entries surely fit; an empty map takes any one batch."""
        return not self._latest or len(self._latest) + records <= self.entries_max

    def put(self, key: bytes, offset: int) -> None:
        self._latest[self.digest(key)] = offset

    def latest(self, key: bytes) -> int | None:
        return self._latest.get(self.digest(key))

    def add_records(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.key is not None:
                self.put(record.key, record.offset)


def batch_is_compactable(header: BatchHeader) -> bool:
    """Control and transactional batches are kept as they are and never mapped (no transactions yet)."""
    return not (header.is_control or header.is_transactional)


def delete_horizon_of(header: BatchHeader) -> int | None:
    """The KIP-534 delete horizon a cleaned batch carries in baseTimestamp, or None."""
    return header.base_timestamp if header.attributes & DELETE_HORIZON_BIT else None


def keep_record(record: Record, offset_map: OffsetMap, *, clean_end_offset: int, delete_horizon_ms: int | None,
                now_ms: int) -> bool:
    """The keep rule of the module docstring for one record."""
    if record.offset >= clean_end_offset or record.key is None:
        return True
    latest = offset_map.latest(record.key)
    if latest is not None and latest > record.offset:
        return False
    return not (record.value is None and delete_horizon_ms is not None and now_ms >= delete_horizon_ms)


class BatchDecision(NamedTuple):
    keep_offsets: frozenset[int]   # offsets of the records kept
    removed: int                   # records removed
    keeps_tombstone: bool


def decide_batch(records: Sequence[Record], keep: Callable[[Record], bool]) -> BatchDecision:
    kept = [r for r in records if keep(r)]
    return BatchDecision(frozenset(r.offset for r in kept), len(records) - len(kept),
                         any(r.value is None for r in kept))


# ================================================================================== checkpoint

def checkpoint_path(log: Log) -> str:
    return os.path.join(log.path, CLEANER_OFFSET_CHECKPOINT)


def load_cleaner_checkpoint(log: Log) -> CleanerCheckpoint | None:
    """The checkpoint as stored; None when missing or unreadable (then: clean from the start)."""
    try:
        entries = read_int_checkpoint(log.fs, checkpoint_path(log))
    except CheckpointError:
        return None
    return CleanerCheckpoint(*entries[0]) if entries and len(entries) == 1 else None


def clamp_checkpoint(stored: CleanerCheckpoint | None, log_start_offset: int, log_end_offset: int) -> CleanerCheckpoint:
    """A stored checkpoint made consistent with the log as it is now."""
    if stored is None or stored.first_dirty_offset > log_end_offset:  # truncated below it: start over
        return CleanerCheckpoint(log_start_offset)
    return stored._replace(first_dirty_offset=max(stored.first_dirty_offset, log_start_offset))


def read_cleaner_checkpoint(log: Log) -> CleanerCheckpoint:
    return clamp_checkpoint(load_cleaner_checkpoint(log), log.log_start_offset, log.log_end_offset)


def write_cleaner_checkpoint(log: Log, checkpoint: CleanerCheckpoint) -> None:
    write_checkpoint(log.fs, checkpoint_path(log), [tuple(checkpoint)])


# ================================================================================== the task

@dataclass
class CleanResult:
    """What one pass did; `reason` says why it ended (done, nothing to clean, aborted: ...)."""

    path: str
    reason: str = ""
    first_dirty_offset: int = -1
    clean_end_offset: int = -1
    groups_swapped: int = 0
    segments_before: int = 0
    segments_after: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_removed: int = 0
    batches_emptied: int = 0
    slices: int = 0
    checkpoint: CleanerCheckpoint | None = None

    @property
    def cleaned(self) -> bool:
        return self.reason == "done"


class _Budget:
    def __init__(self, bytes_max: int, batches_max: int) -> None:
        self.bytes_left = bytes_max
        self.batches_left = batches_max

    def spend(self, size: int) -> None:
        self.bytes_left -= size
        self.batches_left -= 1

    @property
    def exhausted(self) -> bool:
        return self.bytes_left <= 0 or self.batches_left <= 0


def _read_batches(segment: LogSegment, position: int, window_bytes: int) -> list[tuple[int, BatchHeader, memoryview]]:
    """Whole batches from `position` within one read of ~window_bytes (at least one batch)."""
    end = segment.size_bytes
    if position >= end:
        return []
    block = memoryview(segment.read_bytes(position, min(max(window_bytes, HEADER_SIZE), end - position)))
    found = [(position + at, h, block[at:at + h.total_size]) for at, h in iter_batch_headers(block)]
    if found:
        return found
    header = read_header(block) if len(block) >= HEADER_SIZE else None
    if header is None or header.total_size < HEADER_SIZE or position + header.total_size > end:
        raise CorruptRecordError(f"{segment.log.path}: no whole batch at position {position}")
    return [(position, header, memoryview(segment.read_bytes(position, header.total_size)))]


class CleaningTask:
    """One pass over one log, run by `step(now_ms)` in bounded slices (see the module docstring)."""

    def __init__(self, log: Log, upper_bound_offset: int, config: CleanerConfig | None = None) -> None:
        self.log = log
        self.upper_bound_offset = upper_bound_offset
        self.config = config or CleanerConfig()
        self.result = CleanResult(log.path)
        self._phase: Callable[[], None] | None = self._plan
        self._now_ms = 0
        self._sizes: dict[int, int] = {}              # id(segment) -> size when planned
        self._scan: list[LogSegment] = []             # every segment, for the producer scan
        self._cleanable: list[LogSegment] = []        # non-active segments when planned
        self._cursor = (0, 0)                         # (segment index, byte position) of the phase
        self._producer_last: dict[int, tuple[int, int]] = {}
        self._retain: set[int] = set()                # base offsets of batches never dropped
        self._offset_map = OffsetMap(self.config.offset_map_entries_max)
        self._plan_result: CleaningPlan | None = None
        self._clean_end = 0
        self._groups: list[list[LogSegment]] = []
        self._group = 0
        self._group_next_offset = 0
        self._group_changed = False
        self._new: LogSegment | None = None
        self._next_horizon = NO_HORIZON

    @property
    def done(self) -> bool:
        return self._phase is None

    def step(self, now_ms: int) -> bool:
        """Run one slice; True when the pass is over (see `result`)."""
        if self._phase is None:
            return True
        self._now_ms = max(self._now_ms, now_ms)
        self.result.slices += 1
        try:
            with self.log._io():
                self._phase()
        except BaseException:
            self._phase = None
            self._discard_new()
            raise
        return self._phase is None

    def run(self, now_ms: int) -> CleanResult:
        while not self.step(now_ms):
            pass
        return self.result

    # ------------------------------------------------------------------ phases
    def _plan(self) -> None:
        log = self.log
        if not log.config.compact:
            return self._finish("not a compacted log")
        checkpoint = read_cleaner_checkpoint(log)
        plan = plan_cleaning([segment_stats(s) for s in log.segments], checkpoint,
                             log_start_offset=log.log_start_offset, upper_bound_offset=self.upper_bound_offset,
                             now_ms=self._now_ms, min_cleanable_dirty_ratio=log.config.min_cleanable_dirty_ratio,
                             min_compaction_lag_ms=log.config.min_compaction_lag_ms)
        if plan is None:
            return self._finish("nothing to clean")
        self._plan_result = plan
        self._clean_end = plan.first_dirty_offset
        self.result.first_dirty_offset = plan.first_dirty_offset
        self._scan = list(log.segments)
        self._cleanable = self._scan[:-1]
        self._sizes = {id(s): s.size_bytes for s in self._scan}
        self._cursor = (0, 0)
        self._phase = self._scan_producers

    def _scan_producers(self) -> None:
        """Headers of every planned segment (up to its size now): each producer's last batch."""
        i, position = self._cursor
        headers_left, bytes_left = self.config.scan_headers_max, self.config.scan_bytes_max
        while i < len(self._scan) and headers_left > 0 and bytes_left > 0:
            segment = self._scan[i]
            batches = _read_batches(segment, position, SCAN_WINDOW_BYTES) if self._attached(segment) else []
            if not batches:
                i, position = i + 1, 0
                continue
            batches = batches[:headers_left]
            note_producer_batches(self._producer_last, (header for _, header, _ in batches))
            position = batches[-1][0] + batches[-1][1].total_size
            headers_left -= len(batches)
            bytes_left -= position - batches[0][0]
        self._cursor = (i, position)
        if i >= len(self._scan):
            self._retain = {base for _, base in self._producer_last.values()}
            self._start_map()

    def _start_map(self) -> None:
        first_dirty = self._plan_result.first_dirty_offset
        bases = [s.base_offset for s in self._cleanable]
        i = max(0, bisect.bisect_right(bases, first_dirty) - 1)
        position = self._cleanable[i].offset_index.lookup(first_dirty)[1] if self._cleanable else 0
        self._cursor = (i, position)
        self._phase = self._build_map

    def _build_map(self) -> None:
        """Dirty batches into the offset map, each whole, all below first_uncleanable_offset."""
        first_dirty, end = self._plan_result.first_dirty_offset, self._plan_result.first_uncleanable_offset
        budget = _Budget(self.config.slice_bytes_max, self.config.slice_batches_max)
        i, position = self._cursor
        while not budget.exhausted:
            if i >= len(self._cleanable) or not self._attached(self._cleanable[i]):
                return self._start_cleaning()
            batches = _read_batches(self._cleanable[i], position, budget.bytes_left)
            if not batches:
                i, position = i + 1, 0
                continue
            for at, header, data in batches:
                if header.last_offset >= end:
                    return self._start_cleaning()
                if header.last_offset >= first_dirty and batch_is_compactable(header):
                    if not self._offset_map.has_room_for(header.records_count):
                        return self._start_cleaning()
                    self._offset_map.add_records(self._decode(header, data))
                if header.last_offset >= first_dirty:
                    self._clean_end = header.next_offset
                position = at + header.total_size
                budget.spend(header.total_size)
                self.result.bytes_read += header.total_size
                if budget.exhausted:
                    break
        self._cursor = (i, position)

    def _start_cleaning(self) -> None:
        self.result.clean_end_offset = self._clean_end
        if self._clean_end <= self._plan_result.first_dirty_offset and not self._plan_result.tombstones_due:
            return self._finish("nothing to clean")
        segments = [s for s in self._cleanable if s.base_offset < self._clean_end]
        config = self.log.config
        ranges = group_segments([segment_stats(s) for s in segments], segment_bytes_max=config.segment_bytes,
                                index_entries_max=segments[0].offset_index.entries_max if segments else 1)
        self._groups = [[segments[j] for j in r] for r in ranges if any(segments[j].size_bytes for j in r)]
        self.result.segments_before = len(self.log.segments)
        self._group = 0
        self._phase = self._clean_group if self._groups else self._write_checkpoint

    def _clean_group(self) -> None:
        group = self._groups[self._group]
        if not self._group_valid(group):  # every slice: retention or truncation may have closed one
            return self._abort("a segment changed under the cleaner")
        if self._new is None:
            self._new = self._create_cleaned(group[0].base_offset)
            self._group_next_offset = max(s.next_offset for s in group if s.size_bytes)
            self._group_changed = len(group) > 1
            self._cursor = (0, 0)
        budget = _Budget(self.config.slice_bytes_max, self.config.slice_batches_max)
        i, position = self._cursor
        while not budget.exhausted and i < len(group):
            batches = _read_batches(group[i], position, budget.bytes_left)
            if not batches:
                i, position = i + 1, 0
                continue
            for at, header, data in batches:
                self._copy_batch(header, data)
                position = at + header.total_size
                budget.spend(header.total_size)
                if budget.exhausted:
                    break
        self._cursor = (i, position)
        if i >= len(group):
            self._phase = self._flush_group

    def _flush_group(self) -> None:
        assert self._new is not None
        if not self._group_changed:  # a single segment that cleaning leaves as it is: no swap
            self._new.delete()
            self._new = None
            return self._next_group()
        self._new.flush()
        self._phase = self._swap_group

    def _swap_group(self) -> None:
        group, new = self._groups[self._group], self._new
        assert new is not None
        if not self._group_valid(group):
            return self._abort("a segment changed under the cleaner")
        self._new = None  # from here the files belong to the swap protocol: never discarded
        try:
            self._swap_files(new, group)
            self.log.replace_segments(new, group)
        except BaseException:
            self.log.offline = True  # half-swapped on disk: only recovery at the next open may go on
            new.close()
            raise
        for old in group:
            old.close()
        self.result.groups_swapped += 1
        self._next_group()

    def _next_group(self) -> None:
        self._group += 1
        self._phase = self._clean_group if self._group < len(self._groups) else self._write_checkpoint

    def _write_checkpoint(self) -> None:
        checkpoint = CleanerCheckpoint(max(self._clean_end, self._plan_result.first_dirty_offset), self._next_horizon)
        write_cleaner_checkpoint(self.log, checkpoint)
        self.result.checkpoint = checkpoint
        self.result.segments_after = len(self.log.segments)
        self._finish("done")

    def _finish(self, reason: str) -> None:
        self.result.reason = reason
        self._phase = None

    def _abort(self, reason: str) -> None:
        self._discard_new()
        self._finish("aborted: " + reason)

    # ------------------------------------------------------------------ helpers
    def _attached(self, segment: LogSegment) -> bool:
        return any(s is segment for s in self.log.segments)

    def _group_valid(self, group: list[LogSegment]) -> bool:
        segments = self.log.segments
        attached = {id(s) for s in segments[:-1]}
        return all(id(s) in attached and s.size_bytes == self._sizes[id(s)] for s in group)

    def _decode(self, header: BatchHeader, data: memoryview) -> list[Record]:
        try:
            return decode_records(data)
        except KafkaError as exc:
            raise CorruptRecordError(f"{self.log.path}: stored batch at {header.base_offset}: {exc}") from exc

    def _create_cleaned(self, base_offset: int) -> LogSegment:
        """An empty `.cleaned` segment (leftovers of an earlier abandoned attempt removed first)."""
        for ext in (".log", ".index", ".timeindex"):
            path = os.path.join(self.log.path, segment_file_name(base_offset, ext) + ".cleaned")
            if self.log.fs.exists(path):
                self.log.fs.remove(path)
        return self.log._new_segment(base_offset, suffix=".cleaned")

    def _copy_batch(self, header: BatchHeader, data: memoryview) -> None:
        """Write what the keep rules leave of one batch to the cleaned segment."""
        self.result.bytes_read += header.total_size
        if not batch_is_compactable(header) or header.base_offset >= self._clean_end:
            if not crc_is_valid(data):
                raise CorruptRecordError(f"{self.log.path}: stored batch at {header.base_offset} fails its CRC")
            return self._write(data)
        decision, new_horizon = self._judge(header, data)
        retain = header.base_offset in self._retain or header.next_offset == self._group_next_offset
        if not decision.keep_offsets and not retain:  # nothing left (or an empty batch no longer needed)
            self._group_changed = True
            return None
        if not decision.removed and new_horizon is None:
            return self._write(data)
        self._group_changed = True
        self.result.batches_emptied += not decision.keep_offsets
        try:
            out = filter_batch(data, lambda r: r.offset in decision.keep_offsets, delete_horizon_ms=new_horizon)
        except KafkaError as exc:
            raise CorruptRecordError(f"{self.log.path}: stored batch at {header.base_offset}: {exc}") from exc
        assert crc_is_valid(out) and read_header(out).last_offset == header.last_offset, "filter_batch broke a batch"
        return self._write(out)

    def _judge(self, header: BatchHeader, data: memoryview) -> tuple[BatchDecision, int | None]:
        """The keep decision for one batch and the delete horizon to stamp on it (None: none new)."""
        horizon = delete_horizon_of(header)
        decision = decide_batch(self._decode(header, data), lambda r: keep_record(
            r, self._offset_map, clean_end_offset=self._clean_end, delete_horizon_ms=horizon, now_ms=self._now_ms))
        self.result.records_removed += decision.removed
        if not decision.keeps_tombstone:
            return decision, None
        new_horizon = self._now_ms + self.log.config.delete_retention_ms if horizon is None else None
        self._note_horizon(horizon if new_horizon is None else new_horizon)
        return decision, new_horizon

    def _note_horizon(self, horizon: int) -> None:
        if self._next_horizon == NO_HORIZON or horizon < self._next_horizon:
            self._next_horizon = horizon

    def _write(self, data: bytes | memoryview) -> None:
        assert self._new is not None
        header = read_header(data)
        self._new.append([data], len(data), header.last_offset, header.max_timestamp)
        self.result.bytes_written += len(data)

    def _swap_files(self, new: LogSegment, old: list[LogSegment]) -> None:
        """storage/recovery.py's protocol; `B.log.swap` existing (durably) is the commit point."""
        fs, directory = self.log.fs, self.log.path
        for index in (new.offset_index, new.time_index):          # 2. indexes, then the log
            swap_path = index.path[: -len(".cleaned")] + ".swap"
            fs.rename(index.path, swap_path)
            index.path = swap_path
        new.rename_suffix(".swap")
        fs.fsync_dir(directory)                                   # committed
        for segment in old:                                       # 3. indexes first: an old index
            segment.close()                                       # never meets the new log
            for path in segment.file_paths()[1:] + segment.file_paths()[:1]:
                if fs.exists(path):
                    fs.rename(path, path + ".deleted")
                    fs.remove(path + ".deleted")
        fs.fsync_dir(directory)
        new.rename_suffix("")                                     # 4. into place
        new.offset_index.path, new.time_index.path = new.file_paths()[1:]
        fs.fsync_dir(directory)

    def _discard_new(self) -> None:
        """Drop an unfinished `.cleaned` segment: delete its files if the log is still online."""
        new, self._new = self._new, None
        if new is None:
            return
        if self.log.offline:
            new.close()
            return
        with self.log._io():
            new.delete()


def clean_log(log: Log, now_ms: int, upper_bound_offset: int, config: CleanerConfig | None = None) -> CleanResult:
    """Run one whole cleaning pass (all slices at once): for tools, tests and small logs."""
    return CleaningTask(log, upper_bound_offset, config).run(now_ms)


# ================================================================================== many logs

@dataclass
class LogCleaner:
    """Cleans one log at a time, the dirtiest first (Kafka's LogCleanerManager.grabFilthiestCompactedLog).

    The owner calls `step(candidates, now_ms)` from its event loop with (log, high watermark)
    pairs: each call runs at most one slice. While a pass runs, call it again soon; when it
    returns None with `task` None, nothing is due: back off (Kafka's log.cleaner.backoff.ms),
    since choosing looks at every candidate's segments. Checkpoints are cached per Log object.
    A log whose stored data is corrupt is set aside in `uncleanable` (by path) and the
    CorruptRecordError re-raised once.
    """

    config: CleanerConfig = field(default_factory=CleanerConfig)
    task: CleaningTask | None = None
    uncleanable: set[str] = field(default_factory=set)
    _checkpoints: weakref.WeakKeyDictionary[Log, CleanerCheckpoint | None] = field(
        default_factory=weakref.WeakKeyDictionary)

    def plan(self, log: Log, upper_bound_offset: int, now_ms: int) -> CleaningPlan | None:
        if log.offline or log.path in self.uncleanable or not log.config.compact:
            return None
        if log not in self._checkpoints:
            self._checkpoints[log] = load_cleaner_checkpoint(log)
        checkpoint = clamp_checkpoint(self._checkpoints[log], log.log_start_offset, log.log_end_offset)
        return plan_cleaning([segment_stats(s) for s in log.segments], checkpoint,
                             log_start_offset=log.log_start_offset, upper_bound_offset=upper_bound_offset,
                             now_ms=now_ms, min_cleanable_dirty_ratio=log.config.min_cleanable_dirty_ratio,
                             min_compaction_lag_ms=log.config.min_compaction_lag_ms)

    def choose(self, candidates: Iterable[tuple[Log, int]], now_ms: int) -> tuple[Log, int] | None:
        """The log with due tombstones or else the highest dirty ratio, among those due at all."""
        best: tuple[tuple[bool, float], Log, int] | None = None
        for log, upper_bound in candidates:
            plan = self.plan(log, upper_bound, now_ms)
            if plan is not None and (best is None or (plan.tombstones_due, plan.dirty_ratio) > best[0]):
                best = ((plan.tombstones_due, plan.dirty_ratio), log, upper_bound)
        return None if best is None else (best[1], best[2])

    def step(self, candidates: Iterable[tuple[Log, int]], now_ms: int) -> CleanResult | None:
        """One slice of the current pass (choosing a log first if idle); the result when a pass ends."""
        if self.task is None:
            chosen = self.choose(candidates, now_ms)
            if chosen is None:
                return None
            self.task = CleaningTask(chosen[0], chosen[1], self.config)
        task = self.task
        try:
            finished = task.step(now_ms)
        except BaseException as exc:
            self.task = None
            self._checkpoints.pop(task.log, None)
            if isinstance(exc, CorruptRecordError):
                self.uncleanable.add(task.log.path)
            raise
        if not finished:
            return None
        self.task = None
        self._checkpoints.pop(task.log, None)
        return task.result
