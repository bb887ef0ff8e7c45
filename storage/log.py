"""A partition log: a directory of segments, the leader epoch cache, offsets and recovery.

Directory layout (Kafka's)::

    00000000000000000000.log / .index / .timeindex     one segment per base offset
    leader-epoch-checkpoint                            epoch -> start offset (atomic rewrite)

Named offsets, with the asserted order
``log_start_offset <= recovery_point <= log_end_offset`` (recovery_point: everything below is
fsynced). The high watermark is not the log's business: callers pass it as `max_offset` to reads
and as `upper_bound_offset` to retention and compaction.

Contract of the write path:
* `append` (leader) stamps baseOffset and partitionLeaderEpoch in the 61-byte header only (both
  outside the CRC) and writes header + untouched body with one pwritev: records are never
  re-encoded; under LogAppendTime the CRC is recomputed because the timestamp is inside it.
* bytes reach the kernel before `append` returns (no Python-level buffer): `kill -9` loses nothing
  that was appended; power loss loses what is past the recovery point unless flushed.
* fsync happens on `flush()`, on segment roll, on close, and per `flush_messages`/`flush_ms`.
* any OSError from the file layer takes the log offline (`LogOfflineError`, KAFKA_STORAGE_ERROR):
  a failed write or fsync is never retried as if it had worked.

Recovery (`Log.open`): after a clean shutdown (the caller says so) indexes are trusted and no data
is scanned. Otherwise every segment from the one holding the recovery point on is scanned, CRCs
verified, the log truncated at the first torn or corrupt batch (later segments deleted) and
indexes rebuilt. Leftovers of an interrupted compaction swap are completed or rolled back
(storage/recovery.py).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from client.wire.records import (
    HEADER_SIZE,
    MAGIC_V2,
    BatchHeader,
    crc_is_valid,
    iter_batch_headers,
    read_header,
    set_base_offset,
    set_leader_epoch,
    set_log_append_time,
)
from storage.checkpoint import CheckpointError, read_int_checkpoint, write_checkpoint
from storage.epoch_cache import LeaderEpochCache
from storage.errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogOfflineError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from storage.files import File, FileSystem
from storage.producer_state import (
    ProducerStateConfig,
    ProducerStateError,
    ProducerStateManager,
    delete_all_snapshots,
    on_log_start_moved,
    rebuild,
    take_snapshot,
)
from storage.producer_state import load as load_producer_state
from storage.segment import LogSegment

_logger = logging.getLogger(__name__)

LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
RELATIVE_OFFSET_MAX = 2**31 - 1
SEGMENT_BYTES_MAX = 2**31 - 1  # index positions are int32: a segment never grows past this
STORED_BATCH_BYTES_MAX = 256 << 20  # recovery refuses a stored batch larger than this
OFFSET_INDEX_ENTRY_BYTES = 8
TIME_INDEX_ENTRY_BYTES = 12


@dataclass(frozen=True)
class LogConfig:
    """Per-log settings; Kafka topic config names in comments, units last in names."""

    segment_bytes: int = 1 << 30                  # segment.bytes
    segment_ms: int = 7 * 24 * 3600 * 1000        # segment.ms
    segment_index_bytes: int = 10 << 20           # segment.index.bytes
    index_interval_bytes: int = 4096              # index.interval.bytes
    flush_messages: int | None = None             # flush.messages (None: never by count)
    flush_ms: int | None = None                   # flush.ms (None: never by time)
    retention_ms: int = 7 * 24 * 3600 * 1000      # retention.ms (-1: unlimited)
    retention_bytes: int = -1                     # retention.bytes (-1: unlimited)
    cleanup_policy: str = "delete"                # cleanup.policy: delete | compact | compact,delete
    delete_retention_ms: int = 24 * 3600 * 1000   # delete.retention.ms (tombstones)
    min_cleanable_dirty_ratio: float = 0.5        # min.cleanable.dirty.ratio
    min_compaction_lag_ms: int = 0                # min.compaction.lag.ms
    max_message_bytes: int = 1048588              # max.message.bytes
    message_timestamp_type: str = "CreateTime"    # message.timestamp.type: CreateTime | LogAppendTime
    producer_id_expiration_ms: int = 24 * 3600 * 1000  # producer.id.expiration.ms (a broker setting)

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    def with_overrides(self, **changes: object) -> LogConfig:
        return replace(self, **changes)


@dataclass
class LogChunk:
    """Whole batches read from one segment: bytes(chunk), or (file, position, length) for sendfile."""

    file: File | None
    position: int
    length: int
    first_offset: int = -1
    next_offset: int = -1  # where the reader continues: after the last batch in the chunk
    _data: bytes | None = field(default=None, repr=False)

    def __bytes__(self) -> bytes:
        if self._data is None:
            self._data = b"" if self.length == 0 or self.file is None else \
                self.file.pread(self.position, self.length)
        return self._data

    def __len__(self) -> int:
        return self.length


EMPTY_CHUNK = LogChunk(None, 0, 0)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Log:
    """One partition's log. Not thread-safe: one owner (an event loop) at a time."""

    def __init__(self, path: str, config: LogConfig, fs: FileSystem) -> None:
        self.path = path
        self.config = config
        self.fs = fs
        self.segments: list[LogSegment] = []
        self._bases: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.recovery_point = 0
        self.epochs = LeaderEpochCache()
        self.producer_state_config = ProducerStateConfig(producer_id_expiration_ms=config.producer_id_expiration_ms)
        self.producer_state = ProducerStateManager(0, self.producer_state_config)
        self.offline = False
        self.defer_roll_flush = False  # True: rolled segments are fsynced by the owner, off its event loop
        self._roll_flush_pending: list[LogSegment] = []
        self._roll_flush_offset = 0
        self._unflushed_messages = 0
        self._last_flush_ms = _now_ms()
        self.truncated_bytes_on_open = 0

    # ------------------------------------------------------------------ open / recovery
    @classmethod
    def open(cls, path: str, config: LogConfig | None = None, *, fs: FileSystem | None = None,
             recovery_point: int = 0, log_start_offset: int = 0, clean_shutdown: bool = False) -> Log:
        """Create or recover the log at `path`.

        recovery_point / log_start_offset come from the caller's checkpoints (LogManager); a bare
        open with the defaults scans every segment, which is always safe.
        """
        from storage.recovery import complete_interrupted_swaps

        log = cls(path, config or LogConfig(), fs or FileSystem())
        log.fs.makedirs(path)
        complete_interrupted_swaps(log.fs, path)
        bases = sorted(int(name[:-4]) for name in log.fs.listdir(path)
                       if name.endswith(".log") and name[:-4].isdigit())
        for base in bases:
            log._attach(log._new_segment(base))
        log._drop_orphan_indexes(set(bases))
        log._recover(recovery_point, clean_shutdown)
        if log.segments and log.segments[-1].next_offset < log_start_offset:
            # A crash lost unflushed data up to past the log start: start empty at the log start
            # (Kafka's LogLoader does the same), so offsets below it are never handed out again.
            for segment in list(log.segments):
                log._detach(segment)
                segment.delete()
            epochs_path = os.path.join(path, LEADER_EPOCH_CHECKPOINT)
            if log.fs.exists(epochs_path):
                log.fs.remove(epochs_path)
            log.fs.fsync_dir(path)
        if not log.segments:
            log._attach(log._new_segment(max(log_start_offset, 0)))
        log.log_end_offset = log.segments[-1].next_offset
        log.log_start_offset = max(log.segments[0].base_offset, min(log_start_offset, log.log_end_offset))
        log.recovery_point = min(max(recovery_point, log.log_start_offset), log.log_end_offset) \
            if clean_shutdown else min(max(log.recovery_point, log.log_start_offset), log.log_end_offset)
        log._load_epochs()
        log._load_producer_state()
        return log

    def _new_segment(self, base_offset: int, suffix: str = "") -> LogSegment:
        return LogSegment(self.fs, self.path, base_offset,
                          index_interval_bytes=self.config.index_interval_bytes,
                          index_entries_max=max(1, self.config.segment_index_bytes // TIME_INDEX_ENTRY_BYTES),
                          suffix=suffix)

    def _attach(self, segment: LogSegment) -> None:
        i = bisect.bisect_left(self._bases, segment.base_offset)
        assert i == len(self._bases) or self._bases[i] != segment.base_offset, "duplicate segment"
        self._bases.insert(i, segment.base_offset)
        self.segments.insert(i, segment)

    def _detach(self, segment: LogSegment) -> None:
        i = self.segments.index(segment)
        del self.segments[i]
        del self._bases[i]

    def _drop_orphan_indexes(self, bases: set[int]) -> None:
        for name in self.fs.listdir(self.path):
            stem, ext = os.path.splitext(name)
            if ext in (".index", ".timeindex") and stem.isdigit() and int(stem) not in bases:
                self.fs.remove(os.path.join(self.path, name))

    def _recover(self, recovery_point: int, clean_shutdown: bool) -> None:
        """Load or rebuild each segment; truncate the log at the first bad batch after a crash."""
        first_unsafe = len(self.segments)
        if not clean_shutdown:
            first_unsafe = max(0, bisect.bisect_right(self._bases, recovery_point) - 1)
        for i, segment in enumerate(list(self.segments)):
            if i < first_unsafe and segment.load_indexes():
                continue
            truncated = segment.recover(max(STORED_BATCH_BYTES_MAX, self.config.max_message_bytes))
            self.truncated_bytes_on_open += truncated
            if truncated and i < first_unsafe:
                # a flushed segment whose index had to be rebuilt held a bad batch: it loses its
                # tail (as in Kafka); later flushed segments are intact and stay
                _logger.error("%s: truncated %d bytes of corrupt data in flushed segment %d",
                              self.path, truncated, segment.base_offset)
            elif truncated:
                for later in self.segments[i + 1:]:  # everything after a torn batch is suspect
                    self.truncated_bytes_on_open += later.size_bytes
                    later.delete()
                    self._detach(later)
                break
        self.recovery_point = self.segments[first_unsafe].base_offset \
            if first_unsafe < len(self.segments) else (self.segments[-1].next_offset if self.segments else 0)
        for segment in self.segments[:-1]:  # empty non-active segments carry nothing
            if segment.is_empty:
                segment.delete()
                self._detach(segment)

    def _load_epochs(self) -> None:
        path = os.path.join(self.path, LEADER_EPOCH_CHECKPOINT)
        try:
            entries = read_int_checkpoint(self.fs, path)
        except CheckpointError:
            entries = None
        rebuilt = entries is None  # missing or corrupt: rebuilt, and rewritten so it is not rebuilt again
        if entries is None:
            entries = self._scan_epochs()
        self.epochs = LeaderEpochCache(entries)
        changed = self.epochs.entries != entries  # entries that broke the cache's ordering were dropped
        changed |= self.epochs.truncate_from_end(self.log_end_offset)
        changed |= self.epochs.truncate_from_start(self.log_start_offset)
        if changed or rebuilt:
            self._write_epochs()

    def _load_producer_state(self) -> None:
        """Latest valid snapshot <= log end (stale and corrupt ones are deleted), then replay."""
        self.producer_state = load_producer_state(self.fs, self.path, self.log_start_offset,
                                                  self.log_end_offset, self.producer_state_config)
        rebuild(self.producer_state, self._batch_headers_from(self.producer_state.map_end_offset))

    def _batch_headers_from(self, offset: int) -> Iterator[BatchHeader]:
        """Headers of the stored batches whose last offset >= offset, in offset order."""
        first = self._segment_index_for(offset)
        for i, segment in enumerate(self.segments[first:]):
            position = 0
            if i == 0:
                found = segment.find_batch(offset)
                if found is None:
                    continue
                position = found[0]
            for _, header in segment.scan_headers(position):
                yield header

    def _scan_epochs(self) -> list[tuple[int, int]]:
        """Rebuild the epoch cache from the batches' partitionLeaderEpoch (headers only)."""
        cache = LeaderEpochCache()
        for segment in self.segments:
            for _, header in segment.scan_headers():
                if header.leader_epoch > cache.latest_epoch:
                    cache.assign(header.leader_epoch, header.base_offset)
        return cache.entries

    def _write_epochs(self) -> None:
        write_checkpoint(self.fs, os.path.join(self.path, LEADER_EPOCH_CHECKPOINT), self.epochs.entries)

    # ------------------------------------------------------------------ fault handling
    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """Every mutation runs inside this: an OSError takes the log offline for good."""
        if self.offline:
            raise LogOfflineError(f"log {self.path} is offline after an I/O error")
        try:
            yield
        except OSError as exc:
            self.offline = True
            raise LogOfflineError(f"log {self.path} went offline: {exc}") from exc

    # ------------------------------------------------------------------ properties
    @property
    def active_segment(self) -> LogSegment:
        return self.segments[-1]

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self.segments)

    @property
    def latest_epoch(self) -> int:
        return self.epochs.latest_epoch

    # ------------------------------------------------------------------ appends
    def append(self, batch: bytes | bytearray | memoryview, leader_epoch: int,
               now_ms: int | None = None, *, keys_checked: bool = False) -> tuple[int, int]:
        """Append one client batch as leader; returns (base_offset, last_offset).

        The batch was validated by the caller (client.wire.records.validate_client_batch); here
        only the layout needed to store it is checked, and on a compacted topic that every record
        has a key, unless `keys_checked` says the caller's validation already did (the broker's
        Produce path: validate_client_batch(require_keys=True) walks every record once; decoding
        them all again here cost twice as much as the walk itself).
        """
        view = memoryview(batch)
        size = len(view)
        if size < HEADER_SIZE:
            raise CorruptRecordError("batch shorter than its header")
        header = read_header(view)
        if header.magic != MAGIC_V2 or header.total_size != size or header.last_offset_delta < 0:
            raise CorruptRecordError("batch length or magic does not match")
        if size > self.config.max_message_bytes:
            raise RecordTooLargeError(f"batch of {size} bytes > max.message.bytes")
        if self.config.compact and not keys_checked:
            self._check_keys(view)
        if self.offline:
            raise LogOfflineError(f"log {self.path} is offline after an I/O error")
        try:  # self._io() inlined: this is the hot path (a context manager costs ~1 us per append)
            now_ms = _now_ms() if now_ms is None else now_ms
            error, duplicate = self.producer_state.check_append(header, now_ms)
            if error:
                raise ProducerStateError(error, f"{self.path}: {error.name} for producer {header.producer_id}"
                                                f" epoch {header.producer_epoch} sequence {header.base_sequence}")
            if duplicate is not None:  # a retry: answer with the first write's offsets, append nothing
                return duplicate.base_offset, duplicate.last_offset
            base = self.log_end_offset
            head = bytearray(view[:HEADER_SIZE])
            set_base_offset(head, base)
            set_leader_epoch(head, leader_epoch)
            parts: list[bytes | bytearray | memoryview] = [head, view[HEADER_SIZE:]]
            max_timestamp = header.max_timestamp
            if self.config.log_append_time:
                whole = head + view[HEADER_SIZE:]
                set_log_append_time(whole, now_ms)
                parts, max_timestamp = [whole], now_ms
            last = base + header.last_offset_delta
            self._maybe_roll(size, last, max_timestamp, now_ms)
            if leader_epoch > self.epochs.latest_epoch and self.epochs.assign(leader_epoch, base):
                self._write_epochs()
            self.active_segment.append(parts, size, last, max_timestamp)
            self.log_end_offset = last + 1
            self.producer_state.update(header, base, last, max_timestamp)
            self._after_append(header.records_count, now_ms)
        except OSError as exc:
            self.offline = True
            raise LogOfflineError(f"log {self.path} went offline: {exc}") from exc
        return base, last

    def _check_keys(self, view: memoryview) -> None:
        from client.wire.errors import KafkaError
        from client.wire.records import decode_records

        try:
            records = decode_records(view)
        except (KafkaError, ValueError) as exc:
            raise CorruptRecordError(f"unreadable batch: {exc}") from exc
        if any(record.key is None for record in records):
            raise InvalidRecordError("compacted topic: every record needs a key")

    def append_replicated(self, batches: bytes | bytearray | memoryview,
                          now_ms: int | None = None) -> int:
        """Append batches fetched from the leader (offsets and epochs already set).

        Each batch's CRC is verified; the first batch must start at or after the log end (gaps
        allowed: compacted leaders send them). Returns the new log end offset. A partial trailing
        batch is ignored (the fetcher asks again from the new log end).
        """
        view = memoryview(batches)
        with self._io():
            now_ms = _now_ms() if now_ms is None else now_ms
            count = 0
            for position, header in iter_batch_headers(view):
                size = header.total_size
                if header.magic != MAGIC_V2 or not crc_is_valid(view, position, size):
                    raise CorruptRecordError(f"replicated batch at offset {header.base_offset} is corrupt")
                if header.base_offset < self.log_end_offset:
                    raise InvalidRecordError(
                        f"replicated batch at offset {header.base_offset} < log end {self.log_end_offset}")
                last = header.base_offset + header.last_offset_delta
                self._maybe_roll(size, last, header.max_timestamp, now_ms, base_offset=header.base_offset)
                if header.leader_epoch > self.epochs.latest_epoch and \
                        self.epochs.assign(header.leader_epoch, header.base_offset):
                    self._write_epochs()
                self.active_segment.append([view[position:position + size]], size, last, header.max_timestamp)
                self.log_end_offset = last + 1
                self.producer_state.update_replicated(header)
                count += header.records_count
            if count:
                self._after_append(count, now_ms)
        return self.log_end_offset

    def _after_append(self, records: int, now_ms: int) -> None:
        self._unflushed_messages += records
        if self.config.flush_messages is not None and self._unflushed_messages >= self.config.flush_messages:
            self._flush_all(now_ms)

    def _maybe_roll(self, size: int, last_offset: int, max_timestamp: int, now_ms: int,
                    base_offset: int | None = None) -> None:
        segment = self.active_segment
        if segment.is_empty:
            if last_offset - segment.base_offset > RELATIVE_OFFSET_MAX:
                # a replicated batch far past an empty active segment (an offset gap of a compacted
                # leader): its offsets do not fit this segment's int32 index, so start it at the batch
                self._detach(segment)
                segment.delete()
                self._attach(self._new_segment(self.log_end_offset if base_offset is None else base_offset))
                self.fs.fsync_dir(self.path)
            return
        first_ts = segment.first_batch_timestamp
        if (segment.size_bytes + size > min(self.config.segment_bytes, SEGMENT_BYTES_MAX)
                or segment.index_full
                or last_offset - segment.base_offset > RELATIVE_OFFSET_MAX
                or (first_ts is not None and first_ts >= 0 and max_timestamp - first_ts > self.config.segment_ms)):
            self._roll(self.log_end_offset if base_offset is None else base_offset, now_ms)

    def roll(self, now_ms: int | None = None) -> None:
        """Start a new active segment at the log end (no-op if the active one is empty)."""
        with self._io():
            if not self.active_segment.is_empty:
                self._roll(self.log_end_offset, _now_ms() if now_ms is None else now_ms)

    def _roll(self, base_offset: int, now_ms: int) -> None:
        if self.defer_roll_flush:  # the owner fsyncs it off its event loop (pending_roll_flush)
            first = max(0, bisect.bisect_right(self._bases, self.recovery_point) - 1)
            self._roll_flush_pending = [s for s in self.segments[first:] if s.flushed_size != s.size_bytes]
            self._roll_flush_offset = base_offset
        else:
            self._flush_all(now_ms)  # fsync the segment being closed: the recovery point moves past it
        take_snapshot(self.fs, self.path, self.producer_state)  # replay on open starts here at worst
        self._attach(self._new_segment(base_offset))
        self.fs.fsync_dir(self.path)

    def should_roll_for_time(self, now_ms: int) -> bool:
        """segment.ms measured against the wall clock for an idle active segment (caller's timer)."""
        segment = self.active_segment
        first_ts = segment.first_batch_timestamp
        return not segment.is_empty and first_ts is not None and now_ms - first_ts > self.config.segment_ms

    # ------------------------------------------------------------------ flush
    def flush(self, now_ms: int | None = None) -> int:
        """fsync everything up to the log end; returns the new recovery point."""
        with self._io():
            self._flush_all(_now_ms() if now_ms is None else now_ms)
        return self.recovery_point

    def flush_if_due(self, now_ms: int) -> bool:
        """Apply flush.ms: fsync when the oldest unflushed append is older than flush_ms."""
        if self.config.flush_ms is None or self.recovery_point == self.log_end_offset:
            return False
        if now_ms - self._last_flush_ms >= self.config.flush_ms:
            self.flush(now_ms)
            return True
        return False

    def pending_roll_flush(self) -> tuple[list[File], int] | None:
        """(files of rolled segments still to fsync, the offset that becomes the recovery point once
        they are durable), or None. With `defer_roll_flush` the broker fsyncs them in a worker thread
        (a 1 GiB segment's fsync can take hundreds of ms) and then calls `complete_roll_flush`, as
        Kafka schedules the flush of a rolled segment instead of doing it in the append path."""
        if not self._roll_flush_pending or self.offline:
            return None
        files = [f for s in self._roll_flush_pending
                 for f in (s.log, s.offset_index._file, s.time_index._file) if not f.closed]
        return files, self._roll_flush_offset

    def complete_roll_flush(self, offset: int) -> None:
        """The files from `pending_roll_flush` are fsynced: everything below `offset` is durable."""
        if self.offline or offset != self._roll_flush_offset:
            return
        for segment in self._roll_flush_pending:
            segment.flushed_size = segment.size_bytes  # rolled segments no longer grow
        self._roll_flush_pending = []
        self.recovery_point = max(self.recovery_point, min(offset, self.log_end_offset))

    def _flush_all(self, now_ms: int) -> None:
        self._roll_flush_pending = []
        first = max(0, bisect.bisect_right(self._bases, self.recovery_point) - 1)
        for segment in self.segments[first:]:
            segment.flush()
        self.recovery_point = self.log_end_offset
        self._unflushed_messages = 0
        self._last_flush_ms = now_ms

    # ------------------------------------------------------------------ reads
    def _segment_index_for(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._bases, offset) - 1)

    def read(self, start_offset: int, max_bytes: int, max_offset: int | None = None) -> LogChunk:
        """Whole batches from the first one whose last offset >= start_offset, all below max_offset.

        At least one whole batch even when it is larger than max_bytes (KIP-74). The chunk comes
        from a single segment; the caller reads on from chunk's end for more. An empty chunk means
        nothing (yet) at or past start_offset below max_offset.
        """
        if self.offline:
            raise LogOfflineError(f"log {self.path} is offline")
        if start_offset < self.log_start_offset or start_offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {start_offset} outside [{self.log_start_offset}, {self.log_end_offset}]")
        if max_offset is not None and start_offset >= max_offset:
            return EMPTY_CHUNK
        i = self._segment_index_for(start_offset)
        while i < len(self.segments):
            segment = self.segments[i]
            try:
                found = segment.read_range(start_offset, max_bytes, max_offset)
            except OSError as exc:  # a failing disk: the log goes offline, the process keeps serving
                self.offline = True
                raise LogOfflineError(f"log {self.path} went offline on a read: {exc}") from exc
            if found.length:
                return LogChunk(segment.log, found.position, found.length, found.first_offset, found.next_offset)
            if segment.next_offset > start_offset:  # a batch is there but at/above max_offset
                return EMPTY_CHUNK
            i += 1
        return EMPTY_CHUNK

    def read_verified(self, start_offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """`read` plus a CRC check of every batch (CorruptRecordError): corrupt data is never served."""
        data = bytes(self.read(start_offset, max_bytes, max_offset))
        end = 0
        for position, header in iter_batch_headers(data):
            if header.magic != MAGIC_V2 or not crc_is_valid(data, position, header.total_size):
                raise CorruptRecordError(f"{self.path}: stored batch at offset {header.base_offset} is corrupt")
            end = position + header.total_size
        if end != len(data):
            raise CorruptRecordError(f"{self.path}: stored data does not end on a batch boundary")
        return data

    def batches(self, start_offset: int = 0, max_offset: int | None = None) -> Iterator[tuple[BatchHeader, bytes]]:
        """Every stored batch from start_offset (header, verified bytes); for tools and tests."""
        offset = max(start_offset, self.log_start_offset)
        while offset < self.log_end_offset:
            data = self.read_verified(offset, 1 << 20, max_offset)
            if not data:
                return
            for position, header in iter_batch_headers(data):
                yield header, data[position:position + header.total_size]
                offset = header.base_offset + header.last_offset_delta + 1

    # ------------------------------------------------------------------ offsets by time and epoch
    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= timestamp_ms, or None."""
        from client.wire.records import decode_records

        for segment in self.segments:
            if segment.max_timestamp < timestamp_ms:
                continue
            start = max(segment.time_index.lookup(timestamp_ms), self.log_start_offset)
            found = segment.find_batch(start)
            if found is None:
                continue
            for position, header in segment.scan_headers(found[0]):
                if header.max_timestamp < timestamp_ms:
                    continue
                batch = segment.read_bytes(position, header.total_size)
                if not crc_is_valid(batch):
                    raise CorruptRecordError(f"{self.path}: stored batch at {header.base_offset} is corrupt")
                for record in decode_records(batch):
                    if record.offset >= self.log_start_offset and record.timestamp >= timestamp_ms:
                        return record.offset, record.timestamp
        return None

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest known epoch <= epoch, its end offset): KIP-101 / OffsetForLeaderEpoch."""
        return self.epochs.end_offset_for(epoch, self.log_end_offset)

    def assign_epoch(self, leader_epoch: int) -> None:
        """A new leader records (its epoch, the log end) before it accepts any append."""
        with self._io():
            if leader_epoch > self.epochs.latest_epoch and self.epochs.assign(leader_epoch, self.log_end_offset):
                self._write_epochs()

    # ------------------------------------------------------------------ truncation and deletion
    def truncate_to(self, offset: int) -> None:
        """Drop every batch at or above `offset` (a batch holding `offset` goes whole), epochs too."""
        with self._io():
            if offset >= self.log_end_offset:
                # nothing to cut, but an epoch that starts at the log end holds no batch: drop it
                # (Kafka's truncateTo: "a conflicting epoch entry at the end of the log")
                if self.epochs.truncate_from_end(self.log_end_offset):
                    self._write_epochs()
                return
            offset = max(offset, self.log_start_offset)
            while len(self.segments) > 1 and self.active_segment.base_offset >= offset:
                segment = self.active_segment
                self._detach(segment)
                segment.delete()
            segment = self.active_segment
            segment.truncate_to(offset)
            self.log_end_offset = segment.next_offset
            self.recovery_point = min(self.recovery_point, self.log_end_offset)
            if self.log_start_offset > self.log_end_offset:
                self.log_start_offset = self.log_end_offset
            if self.epochs.truncate_from_end(self.log_end_offset):
                self._write_epochs()
            self._load_producer_state()  # drops snapshots above the new end, replays from the last one
            self.fs.fsync_dir(self.path)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete everything and restart empty at `offset` (a follower below the leader's log start)."""
        with self._io():
            for segment in self.segments:
                segment.delete()
            self.segments, self._bases = [], []
            self._attach(self._new_segment(offset))
            self.log_start_offset = self.log_end_offset = self.recovery_point = offset
            self.epochs = LeaderEpochCache()
            self._write_epochs()
            delete_all_snapshots(self.fs, self.path)
            self.producer_state.reset(offset)
            self.fs.fsync_dir(self.path)

    def delete_before(self, offset: int) -> int:
        """Advance the log start offset to `offset` and delete segments wholly below it.

        Returns the number of segments deleted. The caller bounds `offset` by the high watermark.
        """
        with self._io():
            offset = min(offset, self.log_end_offset)
            if offset > self.log_start_offset:
                self.log_start_offset = offset
                if offset == self.log_end_offset and self.active_segment.next_offset <= offset \
                        and not self.active_segment.is_empty:
                    self._roll(offset, _now_ms())
            # also when the start does not move: truncate_to may have left whole segments below it
            deleted = 0
            while len(self.segments) > 1 and self.segments[1].base_offset <= offset:
                self._delete_segment(self.segments[0])
                deleted += 1
            # keep log_start_offset <= recovery_point (as Kafka's updateLogStartOffset does): what
            # lies below the log start is never recovered or served
            self.recovery_point = max(self.recovery_point, self.log_start_offset)
            if self.epochs.truncate_from_start(self.log_start_offset):
                self._write_epochs()
            on_log_start_moved(self.fs, self.path, self.producer_state, self.log_start_offset)
            return deleted

    def _delete_segment(self, segment: LogSegment) -> None:
        self._detach(segment)
        segment.delete()

    def delete_oldest_segments(self, count: int) -> int:
        """Delete the `count` oldest segments (never the active one); advances log_start_offset."""
        count = min(count, len(self.segments) - 1)
        if count <= 0:
            return 0
        return self.delete_before(self.segments[count].base_offset)

    # ------------------------------------------------------------------ retention
    def apply_retention(self, now_ms: int, upper_bound_offset: int) -> int:
        """Delete segments per retention.ms / retention.bytes, never at/above upper_bound_offset."""
        from storage.retention import SegmentInfo, segments_to_delete

        if not self.config.delete:
            return 0
        infos = [SegmentInfo(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp) for s in self.segments]
        count = segments_to_delete(infos, retention_ms=self.config.retention_ms,
                                   retention_bytes=self.config.retention_bytes, now_ms=now_ms,
                                   upper_bound_offset=upper_bound_offset)
        return self.delete_oldest_segments(count)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """fsync everything and close the files. The log is unusable afterwards."""
        try:
            if not self.offline:
                self.flush()
                with self._io():
                    take_snapshot(self.fs, self.path, self.producer_state)
        finally:
            for segment in self.segments:
                segment.close()

    def delete(self) -> None:
        """Remove the log directory and everything in it."""
        for segment in self.segments:
            segment.close()
        self.fs.rmtree(self.path)

    def segment_for(self, offset: int) -> LogSegment:
        return self.segments[self._segment_index_for(offset)]

    def replace_segments(self, new: LogSegment, old: list[LogSegment]) -> None:
        """Swap compacted `new` in for `old` in memory (the cleaner does the file dance)."""
        for segment in old:
            self._detach(segment)
        self._attach(new)

    def describe(self) -> dict[str, object]:
        return {"log_start_offset": self.log_start_offset, "log_end_offset": self.log_end_offset,
                "recovery_point": self.recovery_point, "segments": len(self.segments),
                "size_bytes": self.size_bytes, "latest_epoch": self.epochs.latest_epoch}

