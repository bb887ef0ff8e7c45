"""Deferred fsync of rolled segments: the append path does not fsync; the owner does it later and
only then does the recovery point move. A crash before that recovers by scanning, losing nothing
that was synced."""

from __future__ import annotations

from kafka.record.default_records import DefaultRecordBatchBuilder

from storage import FaultyFileSystem, Log, LogConfig


def batch(n: int = 5) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(n):
        builder.append(i, timestamp=1_000 + i, key=b"k", value=b"v" * 40, headers=[])
    return bytes(builder.build())


def test_roll_defers_the_fsync_until_the_owner_completes_it(tmp_path) -> None:
    fs = FaultyFileSystem(seed=1)
    log = Log.open(str(tmp_path), LogConfig(segment_bytes=1_000), fs=fs)
    log.defer_roll_flush = True
    log.append(batch(), leader_epoch=0)
    syncs = fs.fsync_count
    while len(log.segments) < 3:
        log.append(batch(), leader_epoch=0)
    assert log.recovery_point == 0
    data_syncs = fs.fsync_count - syncs  # only small state files (producer snapshots), no segment data
    pending = log.pending_roll_flush()
    assert pending is not None
    files, offset = pending
    assert offset == log.active_segment.base_offset
    assert {f.path for f in files} >= {s.log.path for s in log.segments[:-1]}
    for f in files:
        f.fsync()
    log.complete_roll_flush(offset)
    assert log.recovery_point == offset
    assert log.pending_roll_flush() is None
    assert fs.fsync_count - syncs > data_syncs
    log.close()


def test_a_crash_before_the_deferred_fsync_recovers_a_valid_prefix(tmp_path) -> None:
    fs = FaultyFileSystem(seed=2)
    log = Log.open(str(tmp_path), LogConfig(segment_bytes=1_000), fs=fs)
    log.defer_roll_flush = True
    log.append(batch(), leader_epoch=0)
    log.flush()
    durable = log.log_end_offset
    while len(log.segments) < 3:
        log.append(batch(), leader_epoch=0)
    fs.crash(torn=True)
    reopened = Log.open(str(tmp_path), LogConfig(segment_bytes=1_000), fs=fs)
    assert reopened.log_end_offset >= durable
    assert sum(1 for _ in reopened.batches()) * 5 == reopened.log_end_offset  # whole batches, no gaps
    reopened.close()


def test_an_explicit_flush_covers_pending_rolled_segments(tmp_path) -> None:
    log = Log.open(str(tmp_path), LogConfig(segment_bytes=1_000))
    log.defer_roll_flush = True
    while len(log.segments) < 3:
        log.append(batch(), leader_epoch=0)
    log.flush()
    assert log.pending_roll_flush() is None
    assert log.recovery_point == log.log_end_offset
    log.close()
