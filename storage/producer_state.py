"""Idempotent producer state of one partition (KIP-98), as Kafka's ProducerStateManager.

For every producer id the partition remembers its producer epoch and the metadata of its last
`BATCHES_RETAINED` (5) batches: first/last sequence, first/last offset, max timestamp. With that a
leader can (Kafka's ProducerAppendInfo.checkProducerEpoch / checkSequence, UnifiedLog
analyzeAndValidateProducerState):

* answer a retried batch with the offsets it was first written at, appending nothing;
* refuse a batch from a fenced (older) epoch, a sequence gap, or a new epoch not starting at 0.

Who calls what (the Log owns one `ProducerStateManager`; all calls on its single owner):

* leader append: `check_append(header, now_ms)` before writing; on `(NONE, None)` append, then
  `update(header, base_offset, last_offset, max_timestamp)`; on `(NONE, duplicate)` append nothing
  and answer with the duplicate's offsets; any other code is the Produce error.
* follower append and recovery replay: `update_replicated(header)` (no checks: the leader did them).
* every Log append advances `map_end_offset` (the offset after the last batch applied): after each
  Log hook ``map_end_offset <= log_end_offset`` with no stored batch in between (they differ only
  after a replication gap or when the log start moved past stored batches).
* `remove_expired(now_ms)` periodically (Kafka: every producer.id.expiration.check.interval.ms).

The core (`ProducerStateManager`, `encode_snapshot`, `decode_snapshot`, `rebuild`) does no I/O. The
thin part at the bottom (`take_snapshot`, `load`, `on_log_start_moved`, `delete_all_snapshots`)
reads and writes snapshot files through the FileSystem seam; writes are atomic
(storage.checkpoint.write_atomic: temp file, fsync, rename, directory fsync).

Kafka semantics chosen (see docs in the functions for the exact rules):

* Unknown producer id (no state, or state expired) with a non-zero sequence: accepted, as Kafka
  since KIP-360 (2.5) does (ProducerAppendInfo.checkSequence: "If there is no current producer
  epoch ... accept writes with any sequence number"). Pre-KIP-360 brokers answered
  UNKNOWN_PRODUCER_ID (59); `ProducerStateConfig.unknown_producer_id_error=True` restores that.
* A same-epoch batch that is neither in sequence nor an exact copy of one of the retained batches
  is OUT_OF_ORDER_SEQUENCE_NUMBER (45), also when it is an older duplicate (Kafka >= 1.1).
  DUPLICATE_SEQUENCE_NUMBER (46) is never returned: all three clients treat 46 as "delivered", so
  returning it for a batch the broker cannot prove it stored would lose data silently.
* State survives the log start moving (retention, DeleteRecords): producers leave only by expiry
  or by the bound, as in Kafka since KAFKA-7190 (2.4); before that, retention caused spurious
  UNKNOWN_PRODUCER_ID for idle producers.
* Expiry compares `now_ms` with the max timestamp of the producer's last batch (Kafka's
  lastTimestamp): a client-chosen CreateTime far in the past expires its producer early.

Invariants of the state (asserted by the snapshot encoder, checked again by the decoder):

* every entry holds 1..5 batches of one epoch, with contiguous sequences (int32 wraparound:
  INT32_MAX is followed by 0) and increasing offsets, all below `map_end_offset`;
* `producers` is ordered by the last offset of each entry's last batch, ascending: the first entry
  is the least recently used producer, the one evicted when `producer_ids_max` is reached. The order
  depends only on the log, so replicas and rebuilds agree.

Snapshot file `<20-digit map end offset>.snapshot` in the log directory, the state as of that
offset (every batch below it applied). Big-endian, version 1::

    0   int16   version = 1
    2   uint32  CRC-32C (Castagnoli) of bytes 6..end
    6   int64   map end offset (must equal the offset in the file name)
    14  int32   producer count N (<= PRODUCER_IDS_MAX)
    18  N entries, least recently used first:
          int64 producer_id, int16 producer_epoch, int32 coordinator_epoch (-1: none yet),
          int64 current_txn_first_offset (-1: none; transactions are not implemented yet),
          int8  batch count B (1..5), then B batches oldest first:
              int32 last_seq, int32 offset_delta (last - first, also the sequence delta),
              int64 last_offset, int64 max_timestamp

A snapshot that fails any check (size, version, CRC, bounds, invariants) is corrupt: `load` deletes
it and falls back to an older one or to an empty state at the log start; the caller then replays
batch headers from the state's `map_end_offset` to the log end (`rebuild`). Snapshots are taken on
segment roll and clean close; the `SNAPSHOTS_RETAINED` latest are kept.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import crc32c as _crc32c

from client.wire.errors import ErrorCode
from client.wire.records import NO_PRODUCER_ID, BatchHeader
from storage.checkpoint import write_atomic
from storage.errors import StorageError
from storage.files import FileSystem

_logger = logging.getLogger(__name__)

# Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN: the producer keeps at most 5 requests in flight
# per partition (max.in.flight.requests.per.connection <= 5 with idempotence), so 5 retained
# batches recognise every retry a conforming client can send.
BATCHES_RETAINED = 5
# Hard bound on producer ids per partition (Kafka has none; KIP-936 throttles at the coordinator).
# When full, a new producer id evicts the least recently used one (see module docstring).
PRODUCER_IDS_MAX = 100_000
PRODUCER_ID_EXPIRATION_MS = 86_400_000            # producer.id.expiration.ms (Kafka default: 1 day)
PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS = 600_000  # producer.id.expiration.check.interval.ms
SNAPSHOTS_RETAINED = 3
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1

SEQUENCE_MAX = 2**31 - 1          # int32 max; the next sequence after it is 0
NO_COORDINATOR_EPOCH = -1
NO_TXN_FIRST_OFFSET = -1

_HEADER = struct.Struct(">hIqi")  # version, crc, map end offset, producer count
_ENTRY = struct.Struct(">qhiqb")  # producer id, epoch, coordinator epoch, txn first offset, batch count
_BATCH = struct.Struct(">iiqq")   # last seq, offset delta, last offset, max timestamp
_CRC_START = 6                    # the CRC covers everything after the version and the CRC itself
SNAPSHOT_BYTES_MAX = _HEADER.size + PRODUCER_IDS_MAX * (_ENTRY.size + BATCHES_RETAINED * _BATCH.size)


class BatchMetadata(NamedTuple):
    """What is kept of one appended batch of a producer."""

    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    max_timestamp: int


class DuplicateBatch(NamedTuple):
    """Where a retried batch was first written: the Produce answer for the retry."""

    base_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(slots=True)
class ProducerStateEntry:
    """One producer id's state. `batches` is oldest first, 1..BATCHES_RETAINED long."""

    producer_id: int
    producer_epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=BATCHES_RETAINED))
    coordinator_epoch: int = NO_COORDINATOR_EPOCH         # placeholder until transaction markers exist
    current_txn_first_offset: int = NO_TXN_FIRST_OFFSET  # placeholder until transactions exist

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset

    @property
    def last_timestamp(self) -> int:
        return self.batches[-1].max_timestamp

    def find_batch(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        """The retained batch with exactly this sequence range (Kafka's batchWithSequenceRange)."""
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None


@dataclass(frozen=True)
class ProducerStateConfig:
    producer_ids_max: int = PRODUCER_IDS_MAX
    producer_id_expiration_ms: int = PRODUCER_ID_EXPIRATION_MS
    # True: a batch from an unknown producer id with a non-zero sequence gets UNKNOWN_PRODUCER_ID
    # (59), as Kafka < 2.5; False (default): it is accepted, as Kafka >= 2.5 (KIP-360).
    unknown_producer_id_error: bool = False

    def __post_init__(self) -> None:
        assert 1 <= self.producer_ids_max <= PRODUCER_IDS_MAX, "producer_ids_max out of range"
        assert self.producer_id_expiration_ms > 0, "producer_id_expiration_ms must be positive"


class ProducerStateError(StorageError):
    """An idempotence check refused a batch; `error_code` is the Kafka code (45, 47, 59, 87)."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class ProducerSnapshotError(ValueError):
    """A snapshot file is not well formed: treat it as missing and rebuild what it held."""


def in_sequence(last_seq: int, next_seq: int) -> bool:
    """`next_seq` directly follows `last_seq` (int32 wraparound: SEQUENCE_MAX is followed by 0)."""
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == SEQUENCE_MAX)


class ProducerStateManager:
    """Producer id -> state for one partition. Pure: no clock, no files. Not thread-safe."""

    def __init__(self, map_end_offset: int = 0, config: ProducerStateConfig | None = None) -> None:
        assert map_end_offset >= 0
        self.config = config or ProducerStateConfig()
        self.map_end_offset = map_end_offset
        self.producers: OrderedDict[int, ProducerStateEntry] = OrderedDict()
        self.evicted_producer_count = 0  # by the bound, since this object exists (for metrics)

    @property
    def producer_count(self) -> int:
        return len(self.producers)

    def entry(self, producer_id: int) -> ProducerStateEntry | None:
        return self.producers.get(producer_id)

    # ------------------------------------------------------------------ leader checks
    def check_append(self, header: BatchHeader, now_ms: int) -> tuple[ErrorCode, DuplicateBatch | None]:
        """Validate a client batch before a leader appends it; changes nothing.

        Returns (NONE, None): append it; (NONE, duplicate): a retry, append nothing and answer
        with the duplicate's offsets; (error, None): refuse the batch with that code. In order:

        1. producer id -1: not idempotent, always (NONE, None);
        2. producer id >= 0 with base sequence < 0: INVALID_RECORD (Kafka's LogValidator);
        3. unknown producer id (none, or expired at `now_ms`): accepted whatever the sequence,
           unless `unknown_producer_id_error` and the sequence is not 0: UNKNOWN_PRODUCER_ID;
        4. same epoch and the exact sequence range of a retained batch: the duplicate;
        5. epoch below the producer's: INVALID_PRODUCER_EPOCH;
        6. epoch above the producer's (bumped): sequence must be 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
        7. same epoch: sequence must follow the last one, else OUT_OF_ORDER_SEQUENCE_NUMBER.
        """
        producer_id = header.producer_id
        if producer_id == NO_PRODUCER_ID:
            return ErrorCode.NONE, None
        first_seq = header.base_sequence
        if first_seq < 0:
            return ErrorCode.INVALID_RECORD, None
        entry = self.producers.get(producer_id)
        if entry is not None and self._is_expired(entry, now_ms, self.config.producer_id_expiration_ms):
            entry = None  # exactly as if remove_expired had run: the answer does not depend on its timer
        if entry is None:
            if first_seq != 0 and self.config.unknown_producer_id_error:
                return ErrorCode.UNKNOWN_PRODUCER_ID, None
            return ErrorCode.NONE, None
        epoch = header.producer_epoch
        if epoch == entry.producer_epoch:
            found = entry.find_batch(first_seq, header.last_sequence)
            if found is not None:
                return ErrorCode.NONE, DuplicateBatch(found.first_offset, found.last_offset, found.max_timestamp)
        if epoch < entry.producer_epoch:
            return ErrorCode.INVALID_PRODUCER_EPOCH, None
        if epoch > entry.producer_epoch:
            return (ErrorCode.NONE if first_seq == 0 else ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER), None
        if not in_sequence(entry.last_seq, first_seq):
            return ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, None
        return ErrorCode.NONE, None

    # ------------------------------------------------------------------ state updates
    def update(self, header: BatchHeader, base_offset: int, last_offset: int,
               max_timestamp: int | None = None) -> None:
        """Record a batch the leader just appended at [base_offset, last_offset].

        `max_timestamp` is the one stored (the broker's time under LogAppendTime); default: the
        header's. Call it for every appended batch, idempotent or not (it moves map_end_offset).
        """
        self._apply(header, base_offset, last_offset,
                    header.max_timestamp if max_timestamp is None else max_timestamp)

    def update_replicated(self, header: BatchHeader) -> None:
        """Record a stored batch (follower append, recovery replay): offsets from the header."""
        self._apply(header, header.base_offset, header.last_offset, header.max_timestamp)

    def _apply(self, header: BatchHeader, first_offset: int, last_offset: int, max_timestamp: int) -> None:
        # A batch wholly below map_end_offset means a Log hook replays or appends twice: a bug.
        assert last_offset >= self.map_end_offset, \
            f"batch [{first_offset}, {last_offset}] below the producer state end {self.map_end_offset}"
        assert last_offset - first_offset == header.last_offset_delta, "offsets do not match the batch"
        self.map_end_offset = last_offset + 1
        producer_id = header.producer_id
        # Control batches (transaction markers) and sequence-less batches carry no idempotence
        # state until transactions are implemented.
        if producer_id == NO_PRODUCER_ID or header.is_control or header.base_sequence < 0:
            return
        batch = BatchMetadata(header.base_sequence, header.last_sequence, first_offset, last_offset, max_timestamp)
        entry = self.producers.pop(producer_id, None)
        if entry is None:
            if len(self.producers) >= self.config.producer_ids_max:
                self._evict_least_recently_used()
            entry = ProducerStateEntry(producer_id, header.producer_epoch)
        elif entry.producer_epoch != header.producer_epoch or not in_sequence(entry.last_seq, batch.first_seq):
            # A new epoch, or a batch accepted without continuing the run (unknown/expired producer
            # on the leader): retained batches always form one contiguous run of one epoch.
            entry.producer_epoch = header.producer_epoch
            entry.batches.clear()
        entry.batches.append(batch)
        self.producers[producer_id] = entry  # most recently used last

    def _evict_least_recently_used(self) -> None:
        evicted, _ = self.producers.popitem(last=False)
        self.evicted_producer_count += 1
        if self.evicted_producer_count == 1:  # once: under churn every new producer evicts one
            _logger.warning("producer state full (%d ids): evicting least recently used producers, first %d",
                            self.config.producer_ids_max, evicted)

    # ------------------------------------------------------------------ expiry, log start, reset
    @staticmethod
    def _is_expired(entry: ProducerStateEntry, now_ms: int, expiration_ms: int) -> bool:
        return now_ms - entry.last_timestamp >= expiration_ms  # Kafka's isProducerExpired

    def remove_expired(self, now_ms: int, producer_id_expiration_ms: int | None = None) -> int:
        """Forget producers whose last batch's max timestamp is `expiration_ms` or more before now.

        Returns how many were removed. Expiry is per replica (it depends on when it runs).
        """
        expiration_ms = self.config.producer_id_expiration_ms if producer_id_expiration_ms is None \
            else producer_id_expiration_ms
        expired = [pid for pid, entry in self.producers.items() if self._is_expired(entry, now_ms, expiration_ms)]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    def truncate_from_start(self, log_start_offset: int) -> None:
        """The log start moved to `log_start_offset`.

        Producers stay (they leave by expiry only, as Kafka since KAFKA-7190): a producer idle
        longer than retention must not get UNKNOWN_PRODUCER_ID. If the log start passed the map
        end (the log restarted empty there), the state restarts empty at it.
        """
        if log_start_offset > self.map_end_offset:
            self.reset(log_start_offset)

    def reset(self, map_end_offset: int) -> None:
        """Forget everything; the state now starts at `map_end_offset` (log truncated fully)."""
        assert map_end_offset >= 0
        self.producers.clear()
        self.map_end_offset = map_end_offset


def rebuild(state: ProducerStateManager, headers: Iterable[BatchHeader]) -> ProducerStateManager:
    """Replay stored batch headers (offset order) into `state`; returns it.

    Headers of batches wholly below `state.map_end_offset` are skipped (already in the state), so
    the caller may start at the batch holding that offset.
    """
    for header in headers:
        if header.last_offset >= state.map_end_offset:
            state.update_replicated(header)
    return state


# ---------------------------------------------------------------------- snapshot encoding (pure)
def encode_snapshot(state: ProducerStateManager) -> bytes:
    """The snapshot bytes of `state` (layout in the module docstring). Asserts the invariants."""
    parts: list[bytes] = [_HEADER.pack(SNAPSHOT_VERSION, 0, state.map_end_offset, len(state.producers))]
    previous_last_offset = -1
    for producer_id, entry in state.producers.items():
        assert producer_id == entry.producer_id >= 0
        assert 1 <= len(entry.batches) <= BATCHES_RETAINED
        assert previous_last_offset < entry.last_offset < state.map_end_offset, "producers out of LRU order"
        previous_last_offset = entry.last_offset
        parts.append(_ENTRY.pack(producer_id, entry.producer_epoch, entry.coordinator_epoch,
                                 entry.current_txn_first_offset, len(entry.batches)))
        previous: BatchMetadata | None = None
        for batch in entry.batches:
            delta = batch.last_offset - batch.first_offset
            assert 0 <= delta <= SEQUENCE_MAX and (batch.first_seq + delta) & SEQUENCE_MAX == batch.last_seq
            assert previous is None or (in_sequence(previous.last_seq, batch.first_seq)
                                        and previous.last_offset < batch.first_offset)
            parts.append(_BATCH.pack(batch.last_seq, delta, batch.last_offset, batch.max_timestamp))
            previous = batch
    data = bytearray(b"".join(parts))
    struct.pack_into(">I", data, 2, _crc32c.crc32c(memoryview(data)[_CRC_START:]))
    return bytes(data)


def decode_snapshot(data: bytes, config: ProducerStateConfig | None = None) -> ProducerStateManager:
    """The state held by snapshot bytes; ProducerSnapshotError if anything does not check out."""
    if len(data) < _HEADER.size or len(data) > SNAPSHOT_BYTES_MAX:
        raise ProducerSnapshotError(f"snapshot of {len(data)} bytes")
    version, crc, map_end_offset, count = _HEADER.unpack_from(data, 0)
    if version != SNAPSHOT_VERSION:
        raise ProducerSnapshotError(f"unknown snapshot version {version}")
    if crc != _crc32c.crc32c(memoryview(data)[_CRC_START:]):
        raise ProducerSnapshotError("snapshot CRC does not match")
    if map_end_offset < 0 or not 0 <= count <= PRODUCER_IDS_MAX:
        raise ProducerSnapshotError(f"bad map end offset {map_end_offset} or producer count {count}")
    state = ProducerStateManager(map_end_offset, config)
    position = _HEADER.size
    previous_last_offset = -1
    for _ in range(count):
        entry, position = _decode_entry(data, position, previous_last_offset, map_end_offset)
        if entry.producer_id in state.producers:
            raise ProducerSnapshotError(f"producer {entry.producer_id} twice")
        state.producers[entry.producer_id] = entry
        previous_last_offset = entry.last_offset
    if position != len(data):
        raise ProducerSnapshotError(f"{len(data) - position} trailing bytes")
    while len(state.producers) > state.config.producer_ids_max:  # the bound was lowered since
        state.producers.popitem(last=False)
    return state


def _decode_entry(data: bytes, position: int, previous_last_offset: int,
                  map_end_offset: int) -> tuple[ProducerStateEntry, int]:
    if len(data) - position < _ENTRY.size:
        raise ProducerSnapshotError("snapshot cut inside a producer entry")
    producer_id, epoch, coordinator_epoch, txn_first_offset, batch_count = _ENTRY.unpack_from(data, position)
    position += _ENTRY.size
    if producer_id < 0 or not 1 <= batch_count <= BATCHES_RETAINED:
        raise ProducerSnapshotError(f"bad producer id {producer_id} or batch count {batch_count}")
    if len(data) - position < batch_count * _BATCH.size:
        raise ProducerSnapshotError("snapshot cut inside a batch")
    entry = ProducerStateEntry(producer_id, epoch, coordinator_epoch=coordinator_epoch,
                               current_txn_first_offset=txn_first_offset)
    previous: BatchMetadata | None = None
    for _ in range(batch_count):
        last_seq, delta, last_offset, max_timestamp = _BATCH.unpack_from(data, position)
        position += _BATCH.size
        if not (0 <= last_seq <= SEQUENCE_MAX and 0 <= delta <= last_offset < map_end_offset):
            raise ProducerSnapshotError(f"producer {producer_id}: bad batch ({last_seq}, {delta}, {last_offset})")
        batch = BatchMetadata((last_seq - delta) & SEQUENCE_MAX, last_seq, last_offset - delta, last_offset,
                              max_timestamp)
        if previous is not None and not (in_sequence(previous.last_seq, batch.first_seq)
                                         and previous.last_offset < batch.first_offset):
            raise ProducerSnapshotError(f"producer {producer_id}: batches not contiguous")
        entry.batches.append(batch)
        previous = batch
    if entry.last_offset <= previous_last_offset:
        raise ProducerSnapshotError("producers out of least-recently-used order")
    return entry, position


# ---------------------------------------------------------------------- snapshot files (thin I/O)
def snapshot_file_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def list_snapshot_offsets(fs: FileSystem, log_dir: str) -> list[int]:
    """Offsets of the snapshot files in `log_dir`, ascending (temp files are not snapshots)."""
    offsets = []
    for name in fs.listdir(log_dir):
        stem = name[: -len(SNAPSHOT_SUFFIX)]
        if name.endswith(SNAPSHOT_SUFFIX) and len(stem) == 20 and stem.isdigit():
            offsets.append(int(stem))
    return sorted(offsets)


def _delete(fs: FileSystem, log_dir: str, offsets: Iterable[int]) -> bool:
    deleted = False
    for offset in offsets:
        fs.remove(os.path.join(log_dir, snapshot_file_name(offset)))
        deleted = True
    return deleted


def take_snapshot(fs: FileSystem, log_dir: str, state: ProducerStateManager, *,
                  snapshots_retained: int = SNAPSHOTS_RETAINED) -> bool:
    """Write the snapshot at `state.map_end_offset` (unless one is there) and prune older ones.

    Keeps the `snapshots_retained` latest; snapshots above the map end (left by a truncation that
    bypassed `load`) are stale and deleted. Returns True if a file was written. OSError propagates
    (the Log takes itself offline); the previous snapshots are intact then.
    """
    assert snapshots_retained >= 1
    offset = state.map_end_offset
    path = os.path.join(log_dir, snapshot_file_name(offset))
    written = False
    if not fs.exists(path):
        write_atomic(fs, path, encode_snapshot(state))
        written = True
    offsets = list_snapshot_offsets(fs, log_dir)
    stale = [o for o in offsets if o > offset]
    kept = [o for o in offsets if o <= offset]
    if _delete(fs, log_dir, stale):
        _logger.warning("%s: deleted producer snapshots above the map end %d: %s", log_dir, offset, stale)
        fs.fsync_dir(log_dir)
    _delete(fs, log_dir, kept[:-snapshots_retained])
    return written


def load(fs: FileSystem, log_dir: str, log_start_offset: int, log_end_offset: int,
         config: ProducerStateConfig | None = None) -> ProducerStateManager:
    """Producer state from the latest valid snapshot in [log_start_offset, log_end_offset].

    Used on open and after `Log.truncate_to` (then `log_end_offset` is the new end). Snapshots
    above the log end are stale (the log was truncated, or a crash lost its tail) and corrupt ones
    are useless: both are deleted. Without a usable snapshot the state is empty at the log start.
    The caller then replays the batch headers from `state.map_end_offset` to the log end
    (`rebuild`).
    """
    assert 0 <= log_start_offset <= log_end_offset
    offsets = list_snapshot_offsets(fs, log_dir)
    removed = _delete(fs, log_dir, [o for o in offsets if o > log_end_offset])
    state: ProducerStateManager | None = None
    for offset in reversed([o for o in offsets if log_start_offset <= o <= log_end_offset]):
        path = os.path.join(log_dir, snapshot_file_name(offset))
        try:
            state = _read_snapshot(fs, path, offset, config)
            break
        except ProducerSnapshotError as exc:
            _logger.warning("%s: ignoring corrupt producer snapshot: %s", path, exc)
            fs.remove(path)
            removed = True
    if removed:  # a stale snapshot must not come back after a crash and be trusted
        fs.fsync_dir(log_dir)
    return state if state is not None else ProducerStateManager(log_start_offset, config)


def _read_snapshot(fs: FileSystem, path: str, offset: int, config: ProducerStateConfig | None) -> ProducerStateManager:
    if fs.file_size(path) > SNAPSHOT_BYTES_MAX:
        raise ProducerSnapshotError(f"larger than {SNAPSHOT_BYTES_MAX} bytes")
    state = decode_snapshot(fs.read_file(path), config)
    if state.map_end_offset != offset:
        raise ProducerSnapshotError(f"holds offset {state.map_end_offset}, named {offset}")
    return state


def on_log_start_moved(fs: FileSystem, log_dir: str, state: ProducerStateManager, log_start_offset: int) -> None:
    """After the log start advanced: keep a snapshot at or above it, delete the ones below.

    A snapshot below the log start cannot be replayed from (its batches are gone); deleting it
    without a newer one would lose every producer whose batches all lie below the log start on the
    next restart, so a snapshot at the map end is written first when none is at or above it.
    """
    state.truncate_from_start(log_start_offset)
    offsets = list_snapshot_offsets(fs, log_dir)
    if not any(o >= log_start_offset for o in offsets):
        take_snapshot(fs, log_dir, state, snapshots_retained=len(offsets) + 1)
    _delete(fs, log_dir, [o for o in offsets if o < log_start_offset])


def delete_all_snapshots(fs: FileSystem, log_dir: str) -> None:
    """For `Log.truncate_fully_and_start_at`: nothing before the new start is valid any more."""
    if _delete(fs, log_dir, list_snapshot_offsets(fs, log_dir)):
        fs.fsync_dir(log_dir)
