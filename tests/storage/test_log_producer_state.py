"""Scratch integration of storage/producer_state.py with a Log patched with the proposed hooks."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from client.wire.errors import ErrorCode
from client.wire.records import read_header
from storage import FaultyFileSystem, FileSystem, Log, LogConfig
from storage.producer_state import (
    ProducerStateError,
    ProducerStateManager,
    encode_snapshot,
    list_snapshot_offsets,
    rebuild,
)

NOW = 1_700_000_000_000


def batch(pid: int, epoch: int, seq: int, n: int = 2, ts: int = NOW) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=pid,
                                  producer_epoch=epoch, base_sequence=seq, batch_size=1 << 20)
    for i in range(n):
        b.append(i, timestamp=ts + i, key=b"k", value=b"v" * 100, headers=[])
    return bytes(b.build())


def full_rebuild(log: Log) -> ProducerStateManager:
    return rebuild(ProducerStateManager(log.log_start_offset), (h for h, _ in log.batches(log.log_start_offset)))


def same(a: ProducerStateManager, b: ProducerStateManager) -> bool:
    return a.map_end_offset == b.map_end_offset and encode_snapshot(a) == encode_snapshot(b)


def test_leader_path(tmp_path) -> None:
    log = Log.open(str(tmp_path), LogConfig(segment_bytes=2000))
    seq = {1: 0, 2: 0}
    for i in range(30):
        pid = 1 + i % 2
        log.append(batch(pid, 0, seq[pid]), leader_epoch=1, now_ms=NOW)
        seq[pid] += 2
    end = log.log_end_offset
    # retry of pid 1 (pid 2 wrote last)
    assert log.append(batch(1, 0, seq[1] - 2), leader_epoch=1, now_ms=NOW) == (end - 4, end - 3)
    assert log.log_end_offset == end
    with pytest.raises(ProducerStateError) as info:
        log.append(batch(1, 0, seq[1] + 1), leader_epoch=1, now_ms=NOW)
    assert info.value.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    log.append(batch(2, 1, 0), leader_epoch=1, now_ms=NOW)
    with pytest.raises(ProducerStateError) as info:
        log.append(batch(2, 0, seq[2]), leader_epoch=1, now_ms=NOW)
    assert info.value.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    assert len(list_snapshot_offsets(log.fs, log.path)) == 3  # rolled many times, 3 kept
    state = log.producer_state
    assert same(state, full_rebuild(log))
    log.close()
    assert list_snapshot_offsets(FileSystem(), str(tmp_path))[-1] == state.map_end_offset
    reopened = Log.open(str(tmp_path), LogConfig(segment_bytes=2000), clean_shutdown=True)
    assert same(reopened.producer_state, state)
    # truncation keeps only the surviving batches' state
    reopened.truncate_to(17)
    assert same(reopened.producer_state, full_rebuild(reopened))
    assert all(o <= reopened.log_end_offset for o in list_snapshot_offsets(reopened.fs, reopened.path))
    # retention: producers stay, and survive a restart
    before = set(reopened.producer_state.producers)
    reopened.delete_before(reopened.log_end_offset - 1)
    assert set(reopened.producer_state.producers) == before
    reopened.close()
    again = Log.open(str(tmp_path), LogConfig(segment_bytes=2000), clean_shutdown=True,
                     log_start_offset=reopened.log_start_offset)
    assert set(again.producer_state.producers) == before
    again.close()


def test_follower_state_matches_leader_and_crash_recovery(tmp_path) -> None:
    leader = Log.open(str(tmp_path / "leader"), LogConfig(segment_bytes=3000))
    fs = FaultyFileSystem(seed=5)
    follower = Log.open(str(tmp_path / "follower"), LogConfig(segment_bytes=3000), fs=fs)
    seq = {pid: 0 for pid in (7, 8, 9)}
    for i in range(40):
        pid = (7, 8, 9)[i % 3]
        leader.append(batch(pid, 0, seq[pid], n=1 + i % 3), leader_epoch=1, now_ms=NOW)
        seq[pid] += 1 + i % 3
        if i % 5 == 4:
            chunk = leader.read(follower.log_end_offset, 1 << 20)
            follower.append_replicated(bytes(chunk), now_ms=NOW)
    while follower.log_end_offset < leader.log_end_offset:
        follower.append_replicated(bytes(leader.read(follower.log_end_offset, 1 << 20)), now_ms=NOW)
    assert same(follower.producer_state, leader.producer_state)
    fs.crash()  # power loss: unflushed tail may go, snapshots above the new end must be dropped
    recovered = Log.open(str(tmp_path / "follower"), LogConfig(segment_bytes=3000), fs=fs)
    assert same(recovered.producer_state, full_rebuild(recovered))
    assert all(o <= recovered.log_end_offset for o in list_snapshot_offsets(fs, recovered.path))


def test_log_append_time_duplicate_keeps_the_stamped_time(tmp_path) -> None:
    log = Log.open(str(tmp_path), LogConfig(message_timestamp_type="LogAppendTime"))
    log.append(batch(3, 0, 0, ts=5), leader_epoch=0, now_ms=NOW)
    _, duplicate = log.producer_state.check_append(read_header(batch(3, 0, 0, ts=5)), NOW)
    assert duplicate is not None and duplicate.max_timestamp == NOW
