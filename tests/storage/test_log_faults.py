"""I/O failures take a log offline (KAFKA_STORAGE_ERROR, 56), never half-work, never leak OSError.

Failures come from FaultyFileSystem.fail_next (ENOSPC / EIO on the next write, with or without a
partial write first; on the next fsync; on open, rename, truncate). After the failure the log
refuses every operation; other logs on the same file system go on; a reopen (after a power loss
or not) finds a valid prefix of what was appended, with whole batches only and everything flushed.
"""

from __future__ import annotations

import errno
import os

import pytest

from storage import (
    CorruptRecordError,
    FaultyFileSystem,
    Log,
    LogConfig,
    LogOfflineError,
    OffsetOutOfRangeError,
)

CONFIG = LogConfig(segment_bytes=1200, index_interval_bytes=100)


class Scenario:
    """Log A (which fails) and log B (which must not care) on one FaultyFileSystem."""

    def __init__(self, tmp_path, kit, config: LogConfig = CONFIG, seed: int = 1) -> None:
        self.kit = kit
        self.fs = FaultyFileSystem(seed)
        self.config = config
        self.path_a = str(tmp_path / "a-0")
        self.path_b = str(tmp_path / "b-0")
        self.a = Log.open(self.path_a, config, fs=self.fs)
        self.b = Log.open(self.path_b, config, fs=self.fs)
        self.appended: list[bytes] = []  # stored batches of A
        self.now = kit.BASE_TS

    def batch(self, n: int = 3) -> bytes:
        self.now += 10
        return self.kit.simple_batch(n, ts=self.now, value_bytes=30)

    def append_a(self, count: int, epoch: int = 1) -> None:
        for _ in range(count):
            batch = self.batch()
            base, _ = self.a.append(batch, epoch, now_ms=self.now)
            self.appended.append(self.kit.stamp(batch, base, epoch))

    def attempt(self, epoch: int = 1) -> bytes:
        """The stored form of the next batch A is asked to append (it may or may not survive)."""
        batch = self.batch()
        return batch, self.kit.stamp(batch, self.a.log_end_offset, epoch)

    def assert_offline(self) -> None:
        a = self.a
        assert a.offline
        for call in (lambda: a.append(self.batch(), 1, now_ms=self.now), lambda: a.read(a.log_start_offset, 100),
                     a.flush, lambda: a.roll(now_ms=self.now), lambda: a.truncate_to(0), lambda: a.delete_before(1),
                     lambda: a.append_replicated(self.kit.simple_batch(1, base_offset=a.log_end_offset)),
                     lambda: a.assign_epoch(99), lambda: a.truncate_fully_and_start_at(1000)):
            with pytest.raises(LogOfflineError) as info:
                call()
            assert info.value.error_code == 56
            assert not isinstance(info.value, OSError)

    def assert_b_works(self) -> None:
        kit = self.kit
        b = self.b
        base, _ = b.append(self.batch(), 3, now_ms=self.now)
        b.roll(now_ms=self.now)
        b.append(self.batch(), 3, now_ms=self.now)
        assert b.flush() == b.log_end_offset
        assert kit.header(kit.read_all(b, base)[0]).base_offset == base

    def reopen_a(self, crash: bool, maybe: list[bytes]) -> Log:
        rp, lso = self.a.recovery_point, self.a.log_start_offset
        flushed = [x for x in self.appended if self.kit.header(x).last_offset < rp]
        if crash:
            self.fs.crash(torn=True)
        else:
            self.a.close()  # offline: no flush, files closed, no exception
        self.a = Log.open(self.path_a, self.config, fs=self.fs, recovery_point=rp, log_start_offset=lso)
        got = self.kit.read_all(self.a)
        candidates = self.appended + maybe
        assert got == candidates[:len(got)], "not a prefix of what was appended"
        assert len(got) >= len(flushed), "lost flushed data"
        if not crash:  # without a power loss everything that reached the kernel is still there
            assert len(got) >= len(self.appended)
        self.appended = got
        return self.a


WRITE_FAILURES = [(err, partial) for err in (errno.ENOSPC, errno.EIO) for partial in (False, True)]


@pytest.mark.parametrize("crash", [False, True])
@pytest.mark.parametrize(("err", "partial"), WRITE_FAILURES)
def test_failed_write_of_a_batch(tmp_path, kit, err, partial, crash) -> None:
    s = Scenario(tmp_path, kit)
    s.append_a(5)
    s.a.flush()
    s.append_a(3)
    rp = s.a.recovery_point
    leo = s.a.log_end_offset
    s.fs.fail_next("write", err, partial=partial, path_contains=os.path.join(s.path_a, ""))
    raw, stored = s.attempt()
    with pytest.raises(LogOfflineError) as info:
        s.a.append(raw, 1, now_ms=s.now)
    assert info.value.error_code == 56
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == err
    assert (s.a.log_end_offset, s.a.recovery_point) == (leo, rp), "a failed append moved the log"
    s.assert_offline()
    s.assert_b_works()
    log = s.reopen_a(crash, [stored])
    if partial and not crash:
        assert s.appended[-1] != stored  # the half-written batch was cut off
    base, _ = log.append(s.batch(), 2, now_ms=s.now)  # the reopened log works
    assert base == log.log_end_offset - 3


@pytest.mark.parametrize("crash", [False, True])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("target", [".index", ".timeindex"])
def test_failed_index_write(tmp_path, kit, err, target, crash) -> None:
    s = Scenario(tmp_path, kit, LogConfig(segment_bytes=1 << 20, index_interval_bytes=1))
    s.append_a(4)
    s.fs.fail_next("write", err, partial=True, path_contains=target)
    raw, stored = s.attempt()
    with pytest.raises(LogOfflineError):
        s.a.append(raw, 1, now_ms=s.now)
    s.assert_offline()
    s.assert_b_works()
    s.reopen_a(crash, [stored])  # the batch itself was written: it may survive, whole


@pytest.mark.parametrize("crash", [False, True])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("where", ["flush", "roll", "append_rolls", "flush_messages", "close"])
def test_failed_fsync(tmp_path, kit, err, where, crash) -> None:
    config = CONFIG.with_overrides(flush_messages=7) if where == "flush_messages" else CONFIG
    s = Scenario(tmp_path, kit, config)
    s.append_a(2)
    if where != "flush_messages":
        s.a.flush()
    s.append_a(1)
    rp = s.a.recovery_point
    s.fs.fail_next("fsync", err, path_contains=os.path.join(s.path_a, ""))
    maybe = []
    with pytest.raises(LogOfflineError) as info:
        if where == "flush":
            s.a.flush()
        elif where == "roll":
            s.a.roll(now_ms=s.now)
        elif where == "close":
            s.a.close()
        else:  # an append that rolls the segment (segment_bytes) or reaches flush.messages
            for _ in range(40):
                raw, stored = s.attempt()
                maybe = [stored]
                s.a.append(raw, 1, now_ms=s.now)
                s.appended.append(stored)
                maybe = []
            raise AssertionError("no fsync happened")
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == err
    assert s.a.recovery_point == rp, "a failed fsync moved the recovery point"
    if where == "close":
        assert s.a.offline
    else:
        s.assert_offline()
    s.assert_b_works()
    s.reopen_a(crash, maybe)


def test_failed_epoch_checkpoint_write(tmp_path, kit) -> None:
    """A new leader epoch rewrites leader-epoch-checkpoint before the batch: a failure there stops
    the append before any byte of the batch is written, and the old checkpoint stays intact."""
    s = Scenario(tmp_path, kit)
    s.append_a(3)
    s.a.flush()
    for op in ("write", "fsync", "rename"):
        s.fs.fail_next(op, errno.EIO, path_contains="leader-epoch")
        raw, _stored = s.attempt(epoch=2)
        with pytest.raises(LogOfflineError):
            s.a.append(raw, 2, now_ms=s.now)
        s.assert_offline()
        log = s.reopen_a(crash=op != "write", maybe=[])
        assert log.epochs.entries == [(1, 0)]
        assert not any(name.endswith(".tmp") for name in os.listdir(s.path_a))


@pytest.mark.parametrize("op", ["open", "truncate", "rename"])
def test_other_failures_take_the_log_offline_too(tmp_path, kit, op) -> None:
    s = Scenario(tmp_path, kit)
    s.append_a(6)
    s.a.flush()
    s.fs.fail_next(op, errno.EIO, path_contains=os.path.join(s.path_a, ""))
    with pytest.raises(LogOfflineError):
        if op == "open":  # a roll opens the new segment's files
            s.a.roll(now_ms=s.now)
        elif op == "truncate":
            s.a.truncate_to(s.a.log_end_offset - 2)
        else:  # the checkpoint of a truncation that drops an epoch
            s.a.assign_epoch(5)
    s.assert_offline()
    s.assert_b_works()
    s.reopen_a(crash=True, maybe=[])


def test_caller_errors_do_not_take_the_log_offline(tmp_path, kit) -> None:
    s = Scenario(tmp_path, kit)
    s.append_a(2)
    batch = s.batch()
    with pytest.raises(CorruptRecordError):
        s.a.append(batch[:-1], 1)
    with pytest.raises(OffsetOutOfRangeError):
        s.a.read(s.a.log_end_offset + 1, 100)
    assert not s.a.offline
    s.append_a(1)
    assert s.kit.read_all(s.a) == s.appended
