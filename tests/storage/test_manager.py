"""LogManager: many logs in one data dir, checkpoints, clean-shutdown marker, deletion, offline logs."""

from __future__ import annotations

import errno
import os

from kafka.record.default_records import DefaultRecordBatchBuilder

from storage import FaultyFileSystem, LogConfig
from storage.manager import (
    CLEAN_SHUTDOWN_MARKER,
    RECOVERY_POINT_CHECKPOINT,
    LogManager,
    parse_log_dir_name,
)
from storage.segment import LogSegment


def batch(n: int = 3, ts: int = 1_000) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(n):
        builder.append(i, timestamp=ts + i, key=b"k%d" % i, value=b"v" * 50, headers=[])
    return bytes(builder.build())


def test_parse_log_dir_name() -> None:
    assert parse_log_dir_name("orders-0") == ("orders", 0)
    assert parse_log_dir_name("my-topic-12") == ("my-topic", 12)
    assert parse_log_dir_name("orders") is None
    assert parse_log_dir_name("orders-x") is None
    assert parse_log_dir_name("-3") is None


def test_logs_survive_clean_close_and_reopen_without_scanning(tmp_path, monkeypatch) -> None:
    manager = LogManager.open(str(tmp_path))
    for p in range(3):
        log = manager.get_or_create(("orders", p))
        for _ in range(5 + p):
            log.append(batch(), leader_epoch=1)
    manager.checkpoint_high_watermarks({("orders", 0): 15})
    manager.close()
    assert os.path.exists(tmp_path / CLEAN_SHUTDOWN_MARKER)

    scans = []
    original = LogSegment.recover
    monkeypatch.setattr(LogSegment, "recover", lambda self, m: scans.append(self) or original(self, m))
    manager = LogManager.open(str(tmp_path))
    assert manager.clean_shutdown_on_open
    assert not os.path.exists(tmp_path / CLEAN_SHUTDOWN_MARKER)  # a later crash must be recognised
    assert scans == []
    assert {tp: log.log_end_offset for tp, log in manager.logs.items()} == {
        ("orders", 0): 15, ("orders", 1): 18, ("orders", 2): 21}
    assert manager.high_watermarks == {("orders", 0): 15}
    manager.close()


def test_crash_reopen_scans_from_the_recovery_point(tmp_path, monkeypatch) -> None:
    fs = FaultyFileSystem(seed=7)
    manager = LogManager.open(str(tmp_path), LogConfig(segment_bytes=2_000), fs=fs)
    log = manager.get_or_create(("t", 0))
    for _ in range(30):
        log.append(batch(), leader_epoch=1)
    log.flush()
    manager.checkpoint_recovery_points()
    flushed = log.log_end_offset
    for _ in range(5):
        log.append(batch(), leader_epoch=2)
    fs.crash(torn=True)

    scans = []
    original = LogSegment.recover
    monkeypatch.setattr(LogSegment, "recover", lambda self, m: scans.append(self.base_offset) or original(self, m))
    manager = LogManager.open(str(tmp_path), LogConfig(segment_bytes=2_000), fs=fs)
    assert not manager.clean_shutdown_on_open
    log = manager.get(("t", 0))
    assert log is not None
    assert flushed <= log.log_end_offset <= flushed + 15
    assert len(scans) < len(log.segments) + 1 and scans  # only segments past the recovery point
    assert min(scans) >= log.segments[0].base_offset
    assert sum(1 for _ in log.batches()) >= 10
    manager.close()


def test_delete_is_crash_safe_and_finished_on_open(tmp_path) -> None:
    manager = LogManager.open(str(tmp_path))
    manager.get_or_create(("a", 0)).append(batch(), leader_epoch=0)
    manager.get_or_create(("b", 0)).append(batch(), leader_epoch=0)
    manager.delete(("a", 0))
    assert not os.path.exists(tmp_path / "a-0")
    manager.close()
    # a deletion interrupted after the rename is finished by the next open
    os.rename(tmp_path / "b-0", tmp_path / "b-0.abc-delete")
    manager = LogManager.open(str(tmp_path))
    assert manager.logs == {}
    assert [n for n in os.listdir(tmp_path) if n.endswith("-delete")] == []
    manager.close()


def test_a_failing_log_goes_offline_and_the_others_keep_working(tmp_path) -> None:
    fs = FaultyFileSystem(seed=1)
    manager = LogManager.open(str(tmp_path), fs=fs)
    good = manager.get_or_create(("good", 0))
    bad = manager.get_or_create(("bad", 0))
    fs.fail_next("write", errno.ENOSPC, path_contains="bad-0")
    try:
        bad.append(batch(), leader_epoch=0)
        raise AssertionError("append should fail")
    except Exception as exc:  # asserting on the type below
        assert getattr(exc, "error_code", None) == 56
    good.append(batch(), leader_epoch=0)
    assert manager.flush_due(now_ms=10**13) == 0
    assert list(dict(manager.online_logs())) == [("good", 0)]
    assert ("bad", 0) in manager.offline
    manager.close()
    assert not os.path.exists(tmp_path / CLEAN_SHUTDOWN_MARKER)  # not a clean shutdown


def test_corrupt_checkpoint_is_ignored_not_trusted(tmp_path) -> None:
    manager = LogManager.open(str(tmp_path))
    manager.get_or_create(("t", 0)).append(batch(), leader_epoch=0)
    manager.close()
    (tmp_path / RECOVERY_POINT_CHECKPOINT).write_text("0\n5\ngarbage\n")
    manager = LogManager.open(str(tmp_path))
    log = manager.get(("t", 0))
    assert log is not None and log.log_end_offset == 3
    manager.close()


def test_retention_is_bounded_by_the_high_watermark(tmp_path) -> None:
    manager = LogManager.open(str(tmp_path), LogConfig(segment_bytes=500, retention_ms=1_000))
    log = manager.get_or_create(("t", 0))
    for _ in range(10):
        log.append(batch(ts=1_000), leader_epoch=0)
    segments = len(log.segments)
    assert segments > 3
    # nothing committed: nothing deleted even though every segment is past retention
    assert manager.apply_retention(now_ms=10**9, upper_bounds={("t", 0): 0}) == 0
    assert manager.apply_retention(now_ms=10**9, upper_bounds={("t", 0): log.log_end_offset}) == segments - 1
    assert log.log_start_offset == log.segments[0].base_offset
    manager.close()
