"""storage.epoch_cache.LeaderEpochCache against Kafka's LeaderEpochFileCache semantics (KIP-101, KIP-279).

Cases follow Kafka's LeaderEpochFileCacheTest; the persisted side (leader-epoch-checkpoint) is
covered through Log in test_log_crash.py and test_log_basic.py.
"""

from __future__ import annotations

import pytest

from storage.epoch_cache import UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET, LeaderEpochCache

UNDEFINED = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)


def cache(*entries: tuple[int, int]) -> LeaderEpochCache:
    c = LeaderEpochCache()
    for epoch, start in entries:
        c.assign(epoch, start)
    return c


# --- assign ------------------------------------------------------------------------------------
def test_assign_records_epoch_and_start() -> None:
    c = LeaderEpochCache()
    assert c.latest_epoch == UNDEFINED_EPOCH
    assert c.assign(2, 10)
    assert c.entries == [(2, 10)]
    assert c.latest_epoch == 2
    assert c.end_offset_for(2, 11) == (2, 11)


def test_repeated_assign_is_a_noop() -> None:
    c = cache((2, 6))
    assert not c.assign(2, 6)
    assert not c.assign(2, 7)  # a later offset of the latest epoch changes nothing
    assert c.entries == [(2, 6)]


def test_latest_epoch_with_an_earlier_start_replaces_it() -> None:
    c = cache((1, 11))
    assert c.assign(1, 10)
    assert c.entries == [(1, 10)]


def test_epochs_need_not_start_at_zero_and_may_skip() -> None:
    c = cache((5, 0), (9, 40))
    assert c.entries == [(5, 0), (9, 40)]
    assert c.end_offset_for(7, 50) == (5, 40)


def test_assign_removes_conflicting_entries() -> None:
    """Entries with epoch >= or start offset >= the new one go (the cache stays monotonic)."""
    c = cache((1, 5), (2, 6), (3, 9))
    assert c.assign(4, 7)  # a higher epoch starting below existing starts
    assert c.entries == [(1, 5), (2, 6), (4, 7)]
    c = cache((1, 5), (2, 6))
    assert c.assign(1, 7)  # an epoch in the past: later epochs go
    assert c.latest_epoch == 1
    assert c.end_offset_for(2, 20) == UNDEFINED
    assert c.end_offset_for(1, 20) == (1, 20)


def test_negative_epoch_is_ignored() -> None:
    c = cache((1, 0))
    assert not c.assign(-1, 5)
    assert c.entries == [(1, 0)]


def test_constructor_applies_assign_rules() -> None:
    assert LeaderEpochCache([(1, 0), (2, 5), (3, 9)]).entries == [(1, 0), (2, 5), (3, 9)]
    assert LeaderEpochCache([(1, 0), (3, 9), (2, 5)]).entries == [(1, 0), (2, 5)]


# --- end_offset_for (OffsetForLeaderEpoch) -------------------------------------------------------
def test_end_offset_for_undefined_or_empty() -> None:
    assert LeaderEpochCache().end_offset_for(0, 100) == UNDEFINED
    assert LeaderEpochCache().end_offset_for(UNDEFINED_EPOCH, 100) == UNDEFINED
    assert cache((1, 0)).end_offset_for(UNDEFINED_EPOCH, 100) == UNDEFINED


def test_end_offset_for_latest_epoch_is_the_log_end() -> None:
    c = cache((2, 6), (3, 8))
    assert c.end_offset_for(3, 42) == (3, 42)


def test_end_offset_for_an_earlier_epoch_is_the_next_epochs_start() -> None:
    c = cache((1, 5), (2, 8), (4, 11))
    assert c.end_offset_for(1, 20) == (1, 8)
    assert c.end_offset_for(2, 20) == (2, 11)


def test_end_offset_for_a_missing_epoch_uses_the_floor_epoch() -> None:
    c = cache((0, 10), (2, 13), (4, 17))
    assert c.end_offset_for(1, 30) == (0, 13)
    assert c.end_offset_for(3, 30) == (2, 17)


def test_end_offset_for_an_epoch_below_the_first() -> None:
    c = cache((5, 11))
    assert c.end_offset_for(4, 30) == (4, 11)
    assert c.end_offset_for(0, 30) == (0, 11)


def test_end_offset_for_an_epoch_above_the_latest() -> None:
    assert cache((2, 100)).end_offset_for(3, 200) == UNDEFINED


# --- truncate_from_end (the log was truncated) --------------------------------------------------
@pytest.mark.parametrize(("end", "expected"), [
    (12, [(2, 6), (3, 8), (4, 11)]),
    (11, [(2, 6), (3, 8)]),       # an epoch starting exactly at the end goes
    (9, [(2, 6), (3, 8)]),
    (8, [(2, 6)]),
    (6, []),
    (0, []),
])
def test_truncate_from_end(end: int, expected: list[tuple[int, int]]) -> None:
    c = cache((2, 6), (3, 8), (4, 11))
    changed = c.truncate_from_end(end)
    assert c.entries == expected
    assert changed == (expected != [(2, 6), (3, 8), (4, 11)])


def test_truncate_from_end_with_undefined_offset_keeps_everything() -> None:
    c = cache((2, 6), (3, 8))
    assert not c.truncate_from_end(UNDEFINED_EPOCH_OFFSET)
    assert c.entries == [(2, 6), (3, 8)]


def test_truncate_empty_cache() -> None:
    c = LeaderEpochCache()
    assert not c.truncate_from_end(5)
    assert not c.truncate_from_start(5)
    assert c.entries == []


# --- truncate_from_start (the log start moved) ---------------------------------------------------
@pytest.mark.parametrize(("start", "expected"), [
    (0, [(2, 6), (3, 8), (4, 11)]),    # before the first epoch: nothing to do
    (6, [(2, 6), (3, 8), (4, 11)]),
    (7, [(2, 7), (3, 8), (4, 11)]),    # inside an epoch: it now starts at the log start
    (8, [(3, 8), (4, 11)]),
    (9, [(3, 9), (4, 11)]),
    (11, [(4, 11)]),
    (15, [(4, 15)]),                   # past the last start: the latest epoch is kept
])
def test_truncate_from_start(start: int, expected: list[tuple[int, int]]) -> None:
    c = cache((2, 6), (3, 8), (4, 11))
    changed = c.truncate_from_start(start)
    assert c.entries == expected
    assert changed == (expected != [(2, 6), (3, 8), (4, 11)])


def test_truncate_from_start_with_undefined_offset_keeps_everything() -> None:
    c = cache((2, 6), (3, 8))
    assert not c.truncate_from_start(UNDEFINED_EPOCH_OFFSET)
    assert c.entries == [(2, 6), (3, 8)]


def test_end_offsets_after_truncations() -> None:
    c = cache((1, 0), (2, 10), (3, 20))
    c.truncate_from_start(15)
    assert c.end_offset_for(1, 30) == (1, 15)  # below the earliest now
    assert c.end_offset_for(2, 30) == (2, 20)
    c.truncate_from_end(20)
    assert c.end_offset_for(2, 30) == (2, 30)  # epoch 2 is the latest now
    assert c.end_offset_for(3, 30) == UNDEFINED


def test_epoch_for_offset() -> None:
    c = cache((1, 0), (3, 10), (4, 20))
    assert [c.epoch_for_offset(o) for o in (0, 9, 10, 19, 20, 99)] == [1, 1, 3, 3, 4, 4]
    assert cache((2, 5)).epoch_for_offset(4) == UNDEFINED_EPOCH
