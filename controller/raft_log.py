"""Durable Raft storage: the Raft log as a Kafka log, snapshots as files, the hard state (KRaft's layout).

Directory `<data_dir>/__cluster_metadata-0/` (KRaft's metadata partition)::

    00000000000000000000.log/.index/.timeindex   Raft entries as record batches (storage.Log)
    leader-epoch-checkpoint                      term -> first offset (storage.Log's epoch cache)
    quorum-state                                 term, vote, commit (controller.quorum_state)
    00000000000000000120-0000000003.checkpoint   snapshot at index 120, term 3 (KRaft's snapshot
                                                 id: end offset 120 = index, epoch 3)

**Entries as batches.** Entry `index` is stored at offset `index - 1` (Raft indexes start at 1,
Kafka offsets at 0), so a log end offset equals the last index and KRaft's high watermark equals
the commit index. Each entry is **one batch** whose partitionLeaderEpoch is the entry's term: a
NORMAL entry is one record whose value is the entry data (key null); a NOOP entry (a new leader's
first entry, §5.4.2) is a control batch (attribute bit 5) holding one record whose key is a Kafka
control key (version 0, type 2 = LEADER_CHANGE, the control record KRaft writes in the same place)
and whose value is empty. Why not several entries per batch: `Log.truncate_to` drops whole
batches, and the core may truncate a conflicting suffix at any index (§5.3) — unlike KRaft, whose
followers copy the leader's batches verbatim so divergence always falls on a batch boundary, here
replicas receive entries in fetch-sized slices. Cutting a multi-entry batch would mean dropping
entries before the cut and re-appending them: a crash in between loses acknowledged, possibly
committed entries. (Cost: 61 header bytes and one CRC per entry; measured in docs/raft.md.) The
same bytes carry entries on the wire (controller.rpc); `decode_entries` accepts any batching and
checks everything: CRCs, magic, contiguous offsets, terms never decreasing, the control key.

**Snapshot file** (`<index:020d>-<term:010d>.checkpoint`, written with `write_atomic`), big-endian::

    0   8  magic      b"RLSNAP\\x00\\x01"
    8   8  index      int64, last entry covered
    16  4  term       int32, term of that entry
    20  8  size       int64, bytes of data
    28  4  crc        uint32, CRC-32C of bytes 8..28 and of the data
    32  .. data       the application's state (opaque to Raft)

(KRaft's snapshots are record batches; one opaque blob with a CRC is enough while snapshots are
sent whole, see docs/raft.md.)

**Persisting a Ready** (`persist`, the order the core's contract asks for):

1. `snapshot`: the file is written and fsynced first; then, if it came from the leader
   (`apply_snapshot`), the whole log is replaced (`Log.truncate_fully_and_start_at(index)`),
   otherwise (local compaction) the log prefix is dropped (`Log.delete_before(index)`, whole
   segments only); older snapshot files are deleted last.
2. `entries`: the log is truncated at `entries[0].index` (offset `index - 1`), the batches are
   appended and the log is **flushed** (fsync) — entries are always durable before `persist`
   returns, hence before any message of the Ready is sent.
3. `hard_state`: `quorum-state` is rewritten (fsynced) when term or vote changed; a change of the
   commit index alone is not written (see quorum_state.py).

Everything `Ready.must_sync` covers is therefore on stable storage when `persist` returns. An
error (OSError, `LogOfflineError`) leaves this object failed: the caller must stop the node and
reopen it; nothing of that Ready may be sent.

**Opening** (`DurableRaftStorage.open`): `Log.open` recovers the log (a torn or corrupt tail is
truncated at the first bad batch; `*.tmp` leftovers are removed); the log, quorum-state and the
directory are fsynced (what a process crash left unsynced in the page cache reads back like
durable data; the node must not acknowledge it until it is); the newest snapshot file is
read (older ones are leftovers of an interrupted compaction and are deleted; a corrupt newest
snapshot raises `RaftStorageError`); the log is kept after the snapshot only if it continues it —
it holds the snapshot's (index, term) or starts right after it — otherwise it is a log a crash
left behind while a leader's snapshot replaced it, and it is dropped. The result is a
`MemoryStorage(hard_state, snapshot, entries after the snapshot)` for a new `RaftCore`.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
from collections.abc import Iterable, Sequence

import crc32c

from client.wire.errors import KafkaError
from client.wire.records import (
    MAGIC_V2,
    build_batch,
    crc_is_valid,
    decode_records,
    iter_batch_headers,
)
from controller.quorum_state import QuorumStateStore
from controller.raft.core import Ready
from controller.raft.storage import EMPTY_SNAPSHOT, Entry, EntryType, HardState, MemoryStorage, Snapshot
from storage.checkpoint import write_atomic
from storage.errors import StorageError
from storage.files import FileSystem
from storage.log import Log, LogConfig

_logger = logging.getLogger(__name__)

METADATA_LOG_DIR = "__cluster_metadata-0"
SNAPSHOT_SUFFIX = ".checkpoint"
SNAPSHOT_NAME = re.compile(r"^(\d{20})-(\d{10})\.checkpoint$")
SNAPSHOT_MAGIC = b"RLSNAP\x00\x01"
SNAPSHOT_HEADER = struct.Struct(">8sqiqI")
SNAPSHOT_BYTES_MAX = 1 << 30            # a snapshot file larger than this is refused on read

METADATA_SEGMENT_BYTES = 8 << 20        # segment size of the metadata log (compaction frees whole segments)
TERM_MAX = 2**31 - 1                    # terms are int32 on disk (partitionLeaderEpoch) and on the wire
# A control record key: version int16 0, type int16 2 (LEADER_CHANGE, what KRaft's new leader writes).
NOOP_CONTROL_KEY = struct.pack(">hh", 0, 2)


class RaftStorageError(Exception):
    """Persisted Raft state that cannot be trusted (corrupt snapshot, gap, terms going backwards)."""


class EntryDecodeError(ValueError):
    """Batches that do not hold a well-formed run of Raft entries."""


# --- entries <-> record batches ----------------------------------------------------------------------


def encode_entries(entries: Sequence[Entry], now_ms: int | None = None) -> bytes:
    """Contiguous entries as concatenated record batches, one per entry (see the module docstring)."""
    if not entries:
        return b""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[bytes] = []
    expected = entries[0].index
    for entry in entries:
        assert 0 < entry.term <= TERM_MAX and entry.index == expected, f"{entry} (expected index {expected})"
        expected += 1
        if entry.type is EntryType.NOOP:
            out.append(build_batch([(NOOP_CONTROL_KEY, b"", now_ms, None)], base_offset=entry.index - 1,
                                   partition_leader_epoch=entry.term, is_control=True))
        else:
            out.append(build_batch([(None, entry.data, now_ms, None)], base_offset=entry.index - 1,
                                   partition_leader_epoch=entry.term))
    return b"".join(out)


def decode_entries(data: bytes | bytearray | memoryview, first_index: int | None = None) -> list[Entry]:
    """Every entry of the whole batches in `data`, checked; `first_index` if the caller knows it.

    Raises EntryDecodeError for a partial batch, a bad CRC or magic, a gap or overlap in offsets,
    a term going backwards or out of range, or a control batch that is not a NOOP.
    """
    view = memoryview(data)
    entries: list[Entry] = []
    end = 0
    expected = first_index
    for position, header in iter_batch_headers(view):
        size = header.total_size
        if header.magic != MAGIC_V2 or not crc_is_valid(view, position, size):
            raise EntryDecodeError(f"batch at offset {header.base_offset}: bad magic or CRC")
        term = header.leader_epoch
        if not 0 < term <= TERM_MAX or (entries and term < entries[-1].term):
            raise EntryDecodeError(f"batch at offset {header.base_offset}: term {term} out of order")
        try:
            records = decode_records(view, position)
        except (KafkaError, ValueError) as exc:
            raise EntryDecodeError(f"batch at offset {header.base_offset}: {exc}") from exc
        if not records or len(records) != header.last_offset_delta + 1:
            raise EntryDecodeError(f"batch at offset {header.base_offset}: offsets with gaps")
        if header.is_control and (len(records) != 1 or records[0].key != NOOP_CONTROL_KEY):
            raise EntryDecodeError(f"batch at offset {header.base_offset}: unknown control record")
        for record in records:
            index = record.offset + 1
            if expected is not None and index != expected:
                raise EntryDecodeError(f"entry {index} where {expected} was expected")
            expected = index + 1
            if header.is_control:
                entries.append(Entry(term, index, b"", EntryType.NOOP))
            else:
                entries.append(Entry(term, index, record.value or b"", EntryType.NORMAL))
        end = position + size
    if end != len(view):
        raise EntryDecodeError(f"{len(view) - end} bytes after the last whole batch")
    return entries


# --- snapshot files ----------------------------------------------------------------------------------


def snapshot_file_name(index: int, term: int) -> str:
    return f"{index:020d}-{term:010d}{SNAPSHOT_SUFFIX}"


def encode_snapshot_file(snapshot: Snapshot) -> bytes:
    assert snapshot.index > 0 and 0 < snapshot.term <= TERM_MAX, snapshot
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, snapshot.index, snapshot.term, len(snapshot.data), 0)
    crc = crc32c.crc32c(snapshot.data, crc32c.crc32c(head[8:28]))
    return SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, snapshot.index, snapshot.term, len(snapshot.data), crc) + \
        snapshot.data


def decode_snapshot_file(data: bytes, where: str = "snapshot") -> Snapshot:
    if len(data) < SNAPSHOT_HEADER.size:
        raise RaftStorageError(f"{where}: shorter than its header")
    magic, index, term, size, crc = SNAPSHOT_HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC or size != len(data) - SNAPSHOT_HEADER.size or index <= 0 or term <= 0:
        raise RaftStorageError(f"{where}: bad magic, size or id")
    body = data[SNAPSHOT_HEADER.size:]
    if crc32c.crc32c(body, crc32c.crc32c(data[8:28])) != crc:
        raise RaftStorageError(f"{where}: CRC mismatch")
    return Snapshot(index, term, body)


# --- the store ---------------------------------------------------------------------------------------


class DurableRaftStorage:
    """One node's Raft log, snapshots and hard state on disk; see the module docstring.

    Not thread-safe; one caller at a time (the driver may call `persist` from a worker thread
    while the event loop does not touch this object).
    """

    def __init__(self, directory: str, node_id: int, fs: FileSystem, log: Log, quorum_state: QuorumStateStore,
                 hard_state: HardState, snapshot: Snapshot, entries: list[Entry]) -> None:
        self.directory = directory
        self.node_id = node_id
        self.fs = fs
        self.log = log
        self.quorum_state = quorum_state
        self.hard_state = hard_state      # as last written to quorum-state
        self.snapshot = snapshot          # newest durable snapshot
        self._loaded_entries: list[Entry] | None = entries
        self.failed: BaseException | None = None
        self.closed = False
        self.fsyncs = 0                   # log flushes + quorum-state writes + snapshot writes

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str, node_id: int, *, fs: FileSystem | None = None,
             segment_bytes: int = METADATA_SEGMENT_BYTES) -> DurableRaftStorage:
        fs = fs or FileSystem()
        directory = os.path.join(data_dir, METADATA_LOG_DIR)
        fs.makedirs(directory)
        log = Log.open(directory, LogConfig(segment_bytes=segment_bytes, segment_index_bytes=1 << 20,
                                            max_message_bytes=256 << 20), fs=fs)
        try:
            if log.truncated_bytes_on_open:
                _logger.warning("%s: truncated %d bytes of torn or corrupt log tail", directory,
                                log.truncated_bytes_on_open)
            quorum_state = QuorumStateStore(fs, directory, node_id)
            hard_state = quorum_state.read()
            snapshot = _load_newest_snapshot(fs, directory)
            entries = _load_entries(log, snapshot, directory)
            _sync_what_was_read(fs, log, quorum_state, directory)
        except BaseException:
            log.close()
            raise
        last_index = entries[-1].index if entries else snapshot.index
        if hard_state.commit > last_index:  # cannot happen with this writer; never trust it beyond the log
            _logger.warning("%s: persisted commit %d beyond the log end %d", directory, hard_state.commit, last_index)
            hard_state = hard_state._replace(commit=last_index)
        return cls(directory, node_id, fs, log, quorum_state, hard_state, snapshot, entries)

    def memory_storage(self) -> MemoryStorage:
        """The core's view of what is persisted (once, right after open)."""
        entries, self._loaded_entries = self._loaded_entries, None
        assert entries is not None, "memory_storage() is called once per open"
        return MemoryStorage(self.hard_state, self.snapshot, entries)

    # -- persisting a Ready --------------------------------------------------------------------------

    def persist(self, rd: Ready, now_ms: int | None = None) -> None:
        """Make `rd`'s snapshot, entries and term/vote durable (see the module docstring)."""
        assert self.failed is None and not self.closed, "persist() on a failed or closed store"
        try:
            if rd.snapshot is not None:
                self._persist_snapshot(rd.snapshot, rd.apply_snapshot)
            if rd.entries:
                self._append(rd.entries, now_ms)
            hs = rd.hard_state
            if hs is not None and (hs.term != self.hard_state.term or hs.vote != self.hard_state.vote):
                self.write_hard_state(hs)
        except BaseException as exc:
            self.failed = exc
            raise

    def needs_io(self, rd: Ready) -> bool:
        """Would `persist(rd)` touch the disk? (Readies that only send or apply do not.)"""
        hs = rd.hard_state
        return bool(rd.snapshot is not None or rd.entries or (
            hs is not None and (hs.term != self.hard_state.term or hs.vote != self.hard_state.vote)))

    def write_hard_state(self, hs: HardState) -> None:
        self.quorum_state.write(hs)
        self.hard_state = hs
        self.fsyncs += 1

    def _append(self, entries: Sequence[Entry], now_ms: int | None) -> None:
        log = self.log
        first_offset = entries[0].index - 1
        if first_offset < log.log_end_offset:
            log.truncate_to(first_offset)  # the core decided this suffix conflicts (§5.3)
        assert log.log_end_offset == first_offset, (
            f"append at offset {first_offset} but the log ends at {log.log_end_offset}")
        log.append_replicated(encode_entries(entries, now_ms), now_ms)
        log.flush(now_ms)
        self.fsyncs += 1

    def _persist_snapshot(self, snapshot: Snapshot, replace_log: bool) -> None:
        if snapshot.index <= self.snapshot.index and not replace_log:
            return
        fs = self.fs
        write_atomic(fs, os.path.join(self.directory, snapshot_file_name(snapshot.index, snapshot.term)),
                     encode_snapshot_file(snapshot))
        self.fsyncs += 1
        if replace_log:
            self.log.truncate_fully_and_start_at(snapshot.index)
        else:
            self.log.delete_before(snapshot.index)
        self.snapshot = snapshot
        _delete_snapshots(fs, self.directory, keep=snapshot)

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self, hard_state: HardState | None = None) -> None:
        """Flush and close; `hard_state` (e.g. with the final commit index) is written first."""
        if self.closed:
            return
        try:
            if hard_state is not None and self.failed is None and hard_state != self.hard_state:
                self.write_hard_state(hard_state)
        finally:
            self.closed = True
            if self.failed is None:
                self.log.close()
            else:
                self.abandon()

    def abandon(self) -> None:
        """Close the files without flushing anything (a crash, for tests; or after a failure)."""
        self.closed = True
        for segment in self.log.segments:
            segment.close()

    def snapshot_files(self) -> list[str]:
        return [name for name in self.fs.listdir(self.directory) if SNAPSHOT_NAME.match(name)]


def _snapshot_ids(fs: FileSystem, directory: str) -> list[tuple[int, int, str]]:
    found = []
    for name in fs.listdir(directory):
        match = SNAPSHOT_NAME.match(name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), name))
    return sorted(found)


def _delete_snapshots(fs: FileSystem, directory: str, keep: Snapshot) -> None:
    removed = False
    for index, term, name in _snapshot_ids(fs, directory):
        if (index, term) != (keep.index, keep.term):
            fs.remove(os.path.join(directory, name))
            removed = True
    if removed:
        fs.fsync_dir(directory)


def _load_newest_snapshot(fs: FileSystem, directory: str) -> Snapshot:
    ids = _snapshot_ids(fs, directory)
    if not ids:
        return EMPTY_SNAPSHOT
    index, term, name = ids[-1]
    path = os.path.join(directory, name)
    if fs.file_size(path) > SNAPSHOT_BYTES_MAX:
        raise RaftStorageError(f"{path}: larger than {SNAPSHOT_BYTES_MAX} bytes")
    snapshot = decode_snapshot_file(fs.read_file(path), path)
    if (snapshot.index, snapshot.term) != (index, term):
        raise RaftStorageError(f"{path}: holds snapshot {snapshot.index}/{snapshot.term}")
    _delete_snapshots(fs, directory, keep=snapshot)  # leftovers of an interrupted compaction
    return snapshot


def _sync_what_was_read(fs: FileSystem, log: Log, quorum_state: QuorumStateStore, directory: str) -> None:
    """fsync everything this node is about to act on.

    After a process crash (not a power loss) the page cache still holds writes that were never
    fsynced, e.g. the tail of a persist whose fsync failed: the log reads them back, and the node
    would acknowledge entries (or keep a term and vote) that a later power loss takes away. So the
    log, quorum-state and the directory are synced before the state is handed to the core.
    """
    log.flush()
    if fs.exists(quorum_state.path):
        f = fs.open(quorum_state.path, create=False)
        try:
            f.fsync()
        finally:
            f.close()
    fs.fsync_dir(directory)


def _read_log(log: Log, start_offset: int) -> Iterable[Entry]:
    for _header, batch in log.batches(start_offset):
        yield from decode_entries(batch)


def _load_entries(log: Log, snapshot: Snapshot, directory: str) -> list[Entry]:
    """Entries after `snapshot` that continue it (see the module docstring); the log is fixed up."""
    base = snapshot.index
    start = max(log.log_start_offset, base - 1, 0)
    try:
        found = list(_read_log(log, start))
    except (EntryDecodeError, StorageError) as exc:
        raise RaftStorageError(f"{directory}: unreadable Raft log: {exc}") from exc
    at_base = next((e for e in found if e.index == base), None)
    continues = base == 0 or log.log_start_offset == base or (at_base is not None and at_base.term == snapshot.term)
    if base > 0 and not continues:
        _logger.warning("%s: the log does not continue snapshot %d/%d; dropping it", directory, base, snapshot.term)
        log.truncate_fully_and_start_at(base)
        return []
    if log.log_start_offset > base:
        raise RaftStorageError(f"{directory}: log starts at offset {log.log_start_offset}, after snapshot {base}")
    if log.log_start_offset < base:
        log.delete_before(base)
    entries = [e for e in found if e.index > base]
    expected, prev_term = base + 1, snapshot.term
    for entry in entries:
        if entry.index != expected or entry.term < prev_term:
            raise RaftStorageError(f"{directory}: entry {entry.index} term {entry.term} breaks the log")
        expected, prev_term = expected + 1, entry.term
    return entries
