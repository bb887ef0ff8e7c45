"""broker.partition.Partition with real storage Logs in tmp dirs: leader / follower roles, the epoch
cache at leadership start (KIP-101), waiters, follower appends and high watermark, truncation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from broker.partition import Partition
from client.wire.errors import ErrorCode
from client.wire.records import build_batch, read_header
from storage import Log
from storage.checkpoint import read_int_checkpoint
from storage.files import FileSystem
from storage.log import LEADER_EPOCH_CHECKPOINT

NOW = 1_700_000_000_000
LOCAL = 1
FOLLOWER = 2


def batch(n: int = 2, tag: str = "v") -> bytes:
    return build_batch([(b"k", f"{tag}{i}".encode(), NOW + i, ()) for i in range(n)])


def open_log(tmp_path: Path, name: str = "t-0") -> Log:
    return Log.open(str(tmp_path / name))


def leader(tmp_path: Path, *, isr: tuple[int, ...] = (LOCAL, FOLLOWER), epoch: int = 0) -> Partition:
    p = Partition("t", 0, open_log(tmp_path), epoch, local_id=LOCAL, leader=False)
    p.make_leader(epoch, 0, (LOCAL, FOLLOWER), isr, NOW)
    return p


def epochs_on_disk(log: Log) -> list[tuple[int, int]]:
    entries = read_int_checkpoint(FileSystem(), os.path.join(log.path, LEADER_EPOCH_CHECKPOINT))
    assert entries is not None
    return entries


# --- leader ---------------------------------------------------------------------------------------------

def test_make_leader_records_epoch_at_log_end_before_any_append(tmp_path: Path) -> None:
    p = leader(tmp_path, epoch=0)
    p.append_as_leader(batch(3), NOW)
    p.make_follower(FOLLOWER, 1, 1, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER))
    assert p.log.epochs.entries == [(0, 0)]
    assert p.make_leader(4, 2, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER), NOW)
    # (4, 3) is in the cache and on disk before anything was appended in epoch 4
    assert p.log.epochs.entries == [(0, 0), (4, 3)]
    assert epochs_on_disk(p.log) == [(0, 0), (4, 3)]
    assert p.log.end_offset_for_epoch(0) == (0, 3)
    result = p.append_as_leader(batch(2), NOW)
    assert (result.error, result.base_offset, result.last_offset) == (0, 3, 4)
    stored = [header for header, _ in p.log.batches()]
    assert [(h.base_offset, h.leader_epoch) for h in stored] == [(0, 0), (3, 4)]


def test_make_leader_same_epoch_is_idempotent_and_keeps_follower_state(tmp_path: Path) -> None:
    p = leader(tmp_path)
    p.append_as_leader(batch(2), NOW)
    assert p.on_follower_fetch(FOLLOWER, 1, NOW)
    state = p.leader_state
    assert not p.make_leader(0, 1, (LOCAL, FOLLOWER), (LOCAL,), NOW + 1)
    assert p.leader_state is state
    assert state is not None and state.followers[FOLLOWER].log_end_offset == 1
    assert p.isr == (LOCAL,) and p.partition_epoch == 1
    assert p.high_watermark == 2  # the committed shrink let the high watermark reach the log end


def test_append_on_a_follower_is_refused(tmp_path: Path) -> None:
    p = Partition("t", 0, open_log(tmp_path), 3, local_id=LOCAL, leader=False)
    result = p.append_as_leader(batch(), NOW)
    assert result.error == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert p.log.log_end_offset == 0
    assert not p.is_leader
    assert not p.on_follower_fetch(FOLLOWER, 0, NOW)


def test_demoted_leader_refuses_appends(tmp_path: Path) -> None:
    p = leader(tmp_path)
    assert p.append_as_leader(batch(), NOW).error == 0
    assert p.make_follower(FOLLOWER, 1, 1, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER))
    assert p.append_as_leader(batch(), NOW).error == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert p.log.log_end_offset == 2


def test_leader_high_watermark_waits_for_isr_followers(tmp_path: Path) -> None:
    p = leader(tmp_path)
    p.append_as_leader(batch(3), NOW)
    assert p.high_watermark == 0  # the follower's log end is unknown
    p.on_follower_fetch(FOLLOWER, 2, NOW)
    assert p.high_watermark == 2
    p.on_follower_fetch(FOLLOWER, 3, NOW)
    assert p.high_watermark == 3


def test_single_replica_leader_commits_at_append(tmp_path: Path) -> None:
    p = Partition("t", 0, open_log(tmp_path), 0, local_id=LOCAL)
    p.append_as_leader(batch(4), NOW)
    assert p.high_watermark == p.log.log_end_offset == 4


def test_new_leader_keeps_its_follower_high_watermark(tmp_path: Path) -> None:
    p = Partition("t", 0, open_log(tmp_path), 0, local_id=LOCAL, leader=False)
    p.make_follower(FOLLOWER, 0, 0, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER))
    leader_log = Log.open(str(tmp_path / "leader"))
    leader_log.append(batch(5), 0, NOW)
    p.append_replicated(bytes(leader_log.read(0, 1 << 20)), 2, NOW)
    assert (p.log.log_end_offset, p.high_watermark) == (5, 2)
    p.make_leader(1, 1, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER), NOW)
    assert p.high_watermark == 2  # not the log end: the old leader's promise is only 2
    p.on_follower_fetch(FOLLOWER, 5, NOW)
    assert p.high_watermark == 5


def test_restart_high_watermark_is_clamped_to_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(batch(3), 0, NOW)
    assert Partition("t", 0, log, 0, local_id=LOCAL, high_watermark=99, leader=False).high_watermark == 3
    assert Partition("t", 0, log, 0, local_id=LOCAL, high_watermark=1, leader=False).high_watermark == 1
    assert Partition("t", 0, log, 0, local_id=LOCAL, leader=False).high_watermark == 3


def test_update_isr_ignores_stale_partition_epochs(tmp_path: Path) -> None:
    p = leader(tmp_path)
    p.update_isr((LOCAL, FOLLOWER), 5)
    p.update_isr((LOCAL,), 4)
    assert p.isr == (LOCAL, FOLLOWER) and p.partition_epoch == 5
    assert p.leader_state is not None and p.leader_state.isr == (LOCAL, FOLLOWER)


def test_check_leader_epoch(tmp_path: Path) -> None:
    p = leader(tmp_path, epoch=4)
    assert p.check_leader_epoch(-1) == ErrorCode.NONE
    assert p.check_leader_epoch(4) == ErrorCode.NONE
    assert p.check_leader_epoch(3) == ErrorCode.FENCED_LEADER_EPOCH
    assert p.check_leader_epoch(5) == ErrorCode.UNKNOWN_LEADER_EPOCH


def test_make_follower_never_lowers_the_leader_epoch(tmp_path: Path) -> None:
    p = leader(tmp_path, epoch=4)
    p.make_follower(FOLLOWER, 3, 1, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER))
    assert p.leader_epoch == 4 and not p.is_leader


# --- waiters ----------------------------------------------------------------------------------------------

def test_hw_waiters_wake_when_the_high_watermark_moves(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        hw_waiter = p.hw_changed()
        end_waiter = p.end_changed()
        p.append_as_leader(batch(2), NOW)
        assert end_waiter.done()
        assert not hw_waiter.done()  # the append alone commits nothing
        p.on_follower_fetch(FOLLOWER, 1, NOW)  # the follower's fetch moves the HW to 1
        assert hw_waiter.done() and p.high_watermark == 1
        again = p.hw_changed()
        p.on_follower_fetch(FOLLOWER, 1, NOW)
        assert not again.done()  # no move, no wake-up
        p.on_follower_fetch(FOLLOWER, 2, NOW)
        assert again.done()
    asyncio.run(run())


def test_waiters_wake_on_role_change(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        hw_waiter, end_waiter = p.hw_changed(), p.end_changed()
        p.make_follower(FOLLOWER, 1, 1, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER))
        assert hw_waiter.done() and end_waiter.done()
        hw_waiter = p.hw_changed()
        p.make_follower(FOLLOWER, 1, 1, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER))  # nothing changed
        assert not hw_waiter.done()
        p.make_leader(2, 2, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER), NOW)
        assert hw_waiter.done()
    asyncio.run(run())


def test_cancelled_waiter_does_not_break_wakeups(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path, isr=(LOCAL,))
        cancelled, live = p.hw_changed(), p.hw_changed()
        cancelled.cancel()
        p.append_as_leader(batch(1), NOW)
        assert live.done() and live.result() is None
    asyncio.run(run())


# --- follower ---------------------------------------------------------------------------------------------

def follower_with_leader(tmp_path: Path) -> tuple[Partition, Log]:
    leader_log = Log.open(str(tmp_path / "leader"))
    leader_log.assign_epoch(2)
    for i in range(3):
        leader_log.append(batch(2, tag=f"b{i}"), 2, NOW)
    p = Partition("t", 0, open_log(tmp_path, "follower"), 2, local_id=FOLLOWER, leader=False)
    p.make_follower(LOCAL, 2, 0, (LOCAL, FOLLOWER), (LOCAL, FOLLOWER))
    return p, leader_log


def test_follower_high_watermark_never_exceeds_its_log_end(tmp_path: Path) -> None:
    async def run() -> None:
        p, leader_log = follower_with_leader(tmp_path)
        end_waiter, hw_waiter = p.end_changed(), p.hw_changed()
        chunk = leader_log.read(0, 1 << 20)
        first_batch = read_header(bytes(chunk)).total_size
        p.append_replicated(bytes(chunk)[:first_batch], 6, NOW)
        assert end_waiter.done() and hw_waiter.done()
        assert (p.log.log_end_offset, p.high_watermark) == (2, 2)  # min(leader HW 6, own end 2)
        p.append_replicated(bytes(leader_log.read(2, 1 << 20)), 4, NOW)
        assert (p.log.log_end_offset, p.high_watermark) == (6, 4)
        p.follow_high_watermark(3)  # an older answer never moves it back
        assert p.high_watermark == 4
        p.append_replicated(b"", 6, NOW)
        assert p.high_watermark == 6
        # the follower's copy is the leader's, byte for byte, epochs included
        assert bytes(p.log.read(0, 1 << 20)) == bytes(leader_log.read(0, 1 << 20))
        assert p.log.epochs.entries == [(2, 0)]
    asyncio.run(run())


def test_truncate_to_on_a_leader_asserts(tmp_path: Path) -> None:
    p = leader(tmp_path)
    p.append_as_leader(batch(3), NOW)
    with pytest.raises(AssertionError):
        p.truncate_to(1)
    with pytest.raises(AssertionError):
        p.truncate_fully_and_start_at(10)
    assert p.log.log_end_offset == 3


def test_follower_truncate_lowers_high_watermark_only_above_new_end(tmp_path: Path) -> None:
    async def run() -> None:
        p, leader_log = follower_with_leader(tmp_path)
        p.append_replicated(bytes(leader_log.read(0, 1 << 20)), 2, NOW)
        end_waiter = p.end_changed()
        p.truncate_to(4)
        assert end_waiter.done()
        assert (p.log.log_end_offset, p.high_watermark) == (4, 2)
        p.truncate_to(0)
        assert (p.log.log_end_offset, p.high_watermark) == (0, 0)
        assert p.log.epochs.entries == []
    asyncio.run(run())


def test_follower_start_over_at_leader_log_start(tmp_path: Path) -> None:
    p, leader_log = follower_with_leader(tmp_path)
    p.append_replicated(bytes(leader_log.read(0, 1 << 20)), 2, NOW)
    p.truncate_fully_and_start_at(100)
    assert (p.log.log_start_offset, p.log.log_end_offset, p.high_watermark) == (100, 100, 100)
    assert p.log.epochs.entries == []
