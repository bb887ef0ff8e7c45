"""DurableRaftStorage, the entry and snapshot codecs and quorum-state, on real temp files.

Crash steps use storage.files.FaultyFileSystem: `crash()` returns every file to its last fsync
(a torn tail may survive), `fail_next("fsync")` makes a persist fail half way.
"""

from __future__ import annotations

import os

import pytest

from controller.quorum_state import QuorumStateError, QuorumStateStore, decode_quorum_state, encode_quorum_state
from controller.raft.core import Ready
from controller.raft.storage import Entry, EntryType, HardState, Snapshot
from controller.raft_log import (
    METADATA_LOG_DIR,
    DurableRaftStorage,
    EntryDecodeError,
    RaftStorageError,
    decode_entries,
    decode_snapshot_file,
    encode_entries,
    encode_snapshot_file,
    snapshot_file_name,
)
from storage.errors import StorageError
from storage.files import FaultyFileSystem, FileSystem


def ready(entries=(), hard_state=None, snapshot=None, apply_snapshot=False) -> Ready:
    must_sync = bool(entries) or apply_snapshot or hard_state is not None
    return Ready(messages=(), entries=tuple(entries), committed_entries=(), hard_state=hard_state,
                 snapshot=snapshot, apply_snapshot=apply_snapshot, must_sync=must_sync, soft_state=None)


def ents(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(term, i, b"data-%d" % i) for i in range(first, last + 1)]


def reopen(store: DurableRaftStorage, fs=None, **kw) -> DurableRaftStorage:
    store.close()
    return DurableRaftStorage.open(os.path.dirname(store.directory), store.node_id, fs=fs or store.fs, **kw)


# --- codecs ------------------------------------------------------------------------------------


def test_entries_round_trip_as_batches_with_the_term_as_leader_epoch() -> None:
    entries = [Entry(1, 1, b"", EntryType.NOOP), Entry(1, 2, b"a"), Entry(1, 3, b""), Entry(2, 4, b"", EntryType.NOOP),
               Entry(2, 5, b"x" * 5000), Entry(3, 6, b"z")]
    data = encode_entries(entries, now_ms=1)
    assert decode_entries(data, first_index=1) == entries
    from client.wire.records import iter_batch_headers
    headers = [h for _, h in iter_batch_headers(data)]
    # one batch per entry; offset = index - 1; partitionLeaderEpoch = term; NOOP = a control batch
    assert [(h.base_offset, h.last_offset, h.leader_epoch, h.is_control) for h in headers] == [
        (0, 0, 1, True), (1, 1, 1, False), (2, 2, 1, False), (3, 3, 2, True), (4, 4, 2, False), (5, 5, 3, False)]
    from client.wire.records import build_batch
    several = build_batch([(None, b"a", 1, None), (None, b"b", 1, None)], base_offset=6, partition_leader_epoch=3)
    assert decode_entries(data + several)[-2:] == [Entry(3, 7, b"a"), Entry(3, 8, b"b")]  # any batching reads


@pytest.mark.parametrize("damage", ["crc", "gap", "partial", "term_down", "first_index"])
def test_decode_entries_rejects_damaged_batches(damage: str) -> None:
    data = bytearray(encode_entries(ents(1, 3, 2) + ents(4, 4, 3), now_ms=1))
    first = None
    if damage == "crc":
        data[-1] ^= 0xFF
    elif damage == "gap":
        data = bytearray(encode_entries(ents(1, 2, 2), now_ms=1) + encode_entries(ents(4, 4, 2), now_ms=1))
        first = 1
    elif damage == "partial":
        del data[-3:]
    elif damage == "term_down":
        data = bytearray(encode_entries(ents(1, 2, 3), now_ms=1) + encode_entries(ents(3, 3, 2), now_ms=1))
    else:
        first = 2
    with pytest.raises(EntryDecodeError):
        decode_entries(bytes(data), first_index=first)


def test_snapshot_file_round_trip_and_crc() -> None:
    snap = Snapshot(120, 3, b"state" * 100)
    data = encode_snapshot_file(snap)
    assert decode_snapshot_file(data) == snap
    assert snapshot_file_name(120, 3) == "00000000000000000120-0000000003.checkpoint"
    bad = bytearray(data)
    bad[40] ^= 1
    with pytest.raises(RaftStorageError):
        decode_snapshot_file(bytes(bad))


def test_quorum_state_is_strict() -> None:
    hs = HardState(7, 2, 41)
    assert decode_quorum_state(encode_quorum_state(1, hs), 1) == hs
    assert decode_quorum_state(encode_quorum_state(1, HardState(3, None, 0)), 1) == HardState(3, None, 0)
    with pytest.raises(QuorumStateError, match="node 1"):
        decode_quorum_state(encode_quorum_state(1, hs), 2)
    for bad in (b"{}\n", b"not json\n", encode_quorum_state(1, hs)[:-1],
                b'{"data_version":0,"node_id":1,"term":-1,"vote":null,"commit":0}\n'):
        with pytest.raises(QuorumStateError):
            decode_quorum_state(bad, 1)


def test_a_corrupt_quorum_state_refuses_to_start(tmp_path) -> None:
    store = DurableRaftStorage.open(str(tmp_path), 1)
    store.persist(ready(hard_state=HardState(3, 1, 0)))
    store.close()
    path = os.path.join(str(tmp_path), METADATA_LOG_DIR, "quorum-state")
    with open(path, "wb") as f:
        f.write(b'{"term": 3')
    with pytest.raises(QuorumStateError):  # never "missing": a forgotten vote could be cast twice
        DurableRaftStorage.open(str(tmp_path), 1)


# --- persist and reopen ------------------------------------------------------------------------


def test_entries_hard_state_survive_reopen(tmp_path) -> None:
    store = DurableRaftStorage.open(str(tmp_path), 1)
    store.persist(ready(ents(1, 5, 1), HardState(1, 1, 0)))
    store.persist(ready(ents(6, 8, 2), HardState(2, None, 5)))
    writes = store.quorum_state.writes
    store.persist(ready(hard_state=HardState(2, None, 8)))
    assert store.quorum_state.writes == writes  # a commit-only change is not written (a stale one is harmless)
    store = reopen(store)
    mem = store.memory_storage()
    assert mem.hard_state == HardState(2, None, 5)
    assert mem.all_entries() == ents(1, 5, 1) + ents(6, 8, 2)
    assert store.log.log_end_offset == 8  # offset = index - 1: the log end offset is the last index
    store.close(HardState(2, None, 8))  # a graceful close writes the final commit
    store = DurableRaftStorage.open(str(tmp_path), 1)
    assert store.memory_storage().hard_state == HardState(2, None, 8)
    store.close()


def test_conflicting_suffix_is_truncated_before_append(tmp_path) -> None:
    store = DurableRaftStorage.open(str(tmp_path), 1)
    store.persist(ready(ents(1, 6, 1), HardState(1, None, 0)))
    store.persist(ready(ents(4, 5, 2), HardState(2, None, 0)))  # §5.3: entries 4.. conflict
    store = reopen(store)
    assert store.memory_storage().all_entries() == ents(1, 3, 1) + ents(4, 5, 2)
    assert store.log.end_offset_for_epoch(1) == (1, 3)  # the epoch cache is truncated with the log
    store.close()


def test_compaction_writes_the_snapshot_then_drops_old_snapshots_and_segments(tmp_path) -> None:
    store = DurableRaftStorage.open(str(tmp_path), 1, segment_bytes=1024)
    for k in range(10):
        store.persist(ready(ents(10 * k + 1, 10 * k + 10, 1)))
    segments_before = len(store.log.segments)
    assert segments_before > 3
    store.persist(ready(snapshot=Snapshot(50, 1, b"s50")))
    store.persist(ready(snapshot=Snapshot(80, 1, b"s80")))
    assert store.snapshot_files() == [snapshot_file_name(80, 1)]
    assert len(store.log.segments) < segments_before
    assert store.log.log_start_offset == 80
    store = reopen(store, segment_bytes=1024)
    mem = store.memory_storage()
    assert mem.snapshot == Snapshot(80, 1, b"s80")
    assert mem.all_entries() == ents(81, 100, 1)
    store.close()


def test_installing_a_leader_snapshot_replaces_the_whole_log(tmp_path) -> None:
    store = DurableRaftStorage.open(str(tmp_path), 1)
    store.persist(ready(ents(1, 10, 1), HardState(1, None, 0)))
    snap = Snapshot(30, 2, b"leader state")
    store.persist(ready([Entry(2, 31, b"after")], HardState(2, None, 30), snapshot=snap, apply_snapshot=True))
    store = reopen(store)
    mem = store.memory_storage()
    assert mem.snapshot == snap and mem.all_entries() == [Entry(2, 31, b"after")]
    store.close()


def test_crash_between_snapshot_install_and_log_replacement(tmp_path) -> None:
    """The snapshot file is durable first; a log that does not continue it is dropped on open."""
    fs = FaultyFileSystem(seed=1)
    store = DurableRaftStorage.open(str(tmp_path), 1, fs=fs)
    store.persist(ready(ents(1, 10, 1), HardState(1, None, 0)))
    snap = Snapshot(30, 2, b"leader state")
    # the crash point: the snapshot file is durable, the log not yet replaced
    from storage.checkpoint import write_atomic
    write_atomic(fs, os.path.join(store.directory, snapshot_file_name(30, 2)), encode_snapshot_file(snap))
    store.abandon()
    fs.crash()
    store = DurableRaftStorage.open(str(tmp_path), 1, fs=fs)
    mem = store.memory_storage()
    assert mem.snapshot == snap and mem.all_entries() == []
    assert store.log.log_start_offset == store.log.log_end_offset == 30
    store.close()


def test_crash_between_compaction_steps_keeps_a_consistent_log(tmp_path) -> None:
    fs = FaultyFileSystem(seed=2)
    store = DurableRaftStorage.open(str(tmp_path), 1, fs=fs, segment_bytes=512)
    for k in range(6):
        store.persist(ready(ents(5 * k + 1, 5 * k + 5, 1)))
    old = Snapshot(10, 1, b"s10")
    store.persist(ready(snapshot=old))
    from storage.checkpoint import write_atomic
    new = Snapshot(25, 1, b"s25")  # written, but the log prefix and the old snapshot not yet deleted
    write_atomic(fs, os.path.join(store.directory, snapshot_file_name(25, 1)), encode_snapshot_file(new))
    store.abandon()
    fs.crash()
    store = DurableRaftStorage.open(str(tmp_path), 1, fs=fs, segment_bytes=512)
    mem = store.memory_storage()
    assert mem.snapshot == new and mem.all_entries() == ents(26, 30, 1)
    assert store.snapshot_files() == [snapshot_file_name(25, 1)]
    store.close()


def test_a_torn_log_tail_is_truncated(tmp_path) -> None:
    store = DurableRaftStorage.open(str(tmp_path), 1)
    store.persist(ready(ents(1, 4, 1), HardState(1, None, 0)))
    store.close()
    segment = os.path.join(str(tmp_path), METADATA_LOG_DIR, "00000000000000000000.log")
    whole = encode_entries(ents(5, 6, 1), now_ms=1)
    torn = encode_entries(ents(7, 7, 1), now_ms=1)
    with open(segment, "ab") as f:
        f.write(whole + torn[: len(torn) - 7])  # the last batch cut short by a crash
    store = DurableRaftStorage.open(str(tmp_path), 1)
    assert store.log.truncated_bytes_on_open == len(torn) - 7
    assert store.memory_storage().all_entries() == ents(1, 6, 1)
    store.persist(ready(ents(7, 8, 1)))  # and the log continues from there
    store = reopen(store)
    assert store.memory_storage().all_entries() == ents(1, 8, 1)
    store.close()


FSYNCS_PER_PERSIST_MAX = 10


class CountdownFaultyFileSystem(FaultyFileSystem):
    """FaultyFileSystem whose n-th fsync from `arm(n)` on fails (0 = the next one)."""

    countdown: int | None = None

    def arm(self, n: int) -> None:
        self.countdown = n

    def _fsync(self, f) -> None:
        if self.countdown is not None:
            if self.countdown == 0:
                self.countdown = None
                raise OSError(5, "injected fsync failure", f.path)
            self.countdown -= 1
        super()._fsync(f)


@pytest.mark.parametrize("fail_at", range(FSYNCS_PER_PERSIST_MAX))
def test_a_failed_fsync_loses_only_what_was_not_yet_durable(tmp_path, fail_at: int) -> None:
    """Fail the n-th fsync of one persist, crash (torn tails kept at random), reopen: the state is
    the old one or a prefix of the new one, and term/vote are new only if all entries are."""
    fs = CountdownFaultyFileSystem(seed=fail_at)
    store = DurableRaftStorage.open(str(tmp_path), 1, fs=fs)
    store.persist(ready(ents(1, 3, 1), HardState(1, 1, 0)))
    new_entries = [*ents(2, 3, 2), Entry(2, 4, b"", EntryType.NOOP), *ents(5, 9, 2)]  # replaces 2..3 of term 1
    fs.arm(fail_at)
    try:
        store.persist(ready(new_entries, HardState(2, 3, 0)))
        completed = True
    except (OSError, StorageError):  # storage.Log wraps OSError in LogOfflineError
        completed = False
    fs.countdown = None
    assert store.failed is None if completed else store.failed is not None
    store.abandon()
    fs.crash(torn=True)
    store = DurableRaftStorage.open(str(tmp_path), 1, fs=fs)
    mem = store.memory_storage()
    got, hs = mem.all_entries(), mem.hard_state
    old, new = ents(1, 3, 1), [*ents(1, 1, 1), *new_entries]
    if completed:
        assert got == new and hs == HardState(2, 3, 0)
    else:
        assert hs in (HardState(1, 1, 0), HardState(2, 3, 0))
        assert got == old or (len(got) >= 1 and got == new[:len(got)]), got
        if hs.term == 2:  # quorum-state is written last: everything before it is durable
            assert got == new
    store.close()


def test_the_fsync_failure_cases_cover_every_fsync_of_a_persist(tmp_path) -> None:
    fs = CountdownFaultyFileSystem()
    store = DurableRaftStorage.open(str(tmp_path), 1, fs=fs)
    store.persist(ready(ents(1, 3, 1), HardState(1, 1, 0)))
    before = fs.fsync_count
    store.persist(ready([*ents(2, 3, 2), *ents(4, 9, 2)], HardState(2, 3, 0)))
    assert 1 < fs.fsync_count - before < FSYNCS_PER_PERSIST_MAX  # each one fails once above, and none
    store.close()


def test_real_fs_reopen_after_many_persists(tmp_path) -> None:
    fs = FileSystem()
    store = DurableRaftStorage.open(str(tmp_path), 3, fs=fs)
    index = 0
    for term in range(1, 6):
        store.persist(ready([Entry(term, index + 1, b"", EntryType.NOOP)], HardState(term, 3, index)))
        index += 1
        store.persist(ready(ents(index + 1, index + 20, term)))
        index += 20
    store = reopen(store)
    mem = store.memory_storage()
    assert mem.last_index() == index == 105 and mem.hard_state.term == 5
    assert [e.type for e in mem.all_entries()].count(EntryType.NOOP) == 5
    assert QuorumStateStore(fs, store.directory, 3).read().vote == 3
    store.close()
