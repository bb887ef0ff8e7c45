"""storage.retention.segments_to_delete (pure policy) and Log.apply_retention on real segments."""

from __future__ import annotations

import random

import pytest

from storage import Log, LogConfig
from storage.retention import SegmentInfo, segments_to_delete

NOW = 1_000_000
HOUR = 3_600_000


def infos(*specs: tuple[int, int, int]) -> list[SegmentInfo]:
    """(records, size, age_ms) per segment, offsets contiguous from 0; last one is the active."""
    out, base = [], 0
    for records, size, age in specs:
        out.append(SegmentInfo(base, base + records, size, NOW - age))
        base += records
    return out


def delete(segments, *, ms=-1, size=-1, upper=10**9, now=NOW) -> int:
    return segments_to_delete(segments, retention_ms=ms, retention_bytes=size, now_ms=now, upper_bound_offset=upper)


OLD_THEN_NEW = infos((10, 100, 5 * HOUR), (10, 100, 4 * HOUR), (10, 100, 1 * HOUR), (10, 100, 0))


def test_time_retention_deletes_old_segments() -> None:
    assert delete(OLD_THEN_NEW, ms=2 * HOUR) == 2
    assert delete(OLD_THEN_NEW, ms=4 * HOUR) == 1            # exactly retention_ms old stays
    assert delete(OLD_THEN_NEW, ms=4 * HOUR - 1) == 2
    assert delete(OLD_THEN_NEW, ms=6 * HOUR) == 0


def test_time_retention_stops_at_the_first_young_segment() -> None:
    segments = infos((10, 100, 5 * HOUR), (10, 100, 0), (10, 100, 5 * HOUR), (10, 100, 0))
    assert delete(segments, ms=HOUR) == 1  # deletion is a prefix


def test_size_retention_keeps_at_least_retention_bytes() -> None:
    assert delete(OLD_THEN_NEW, size=400) == 0
    assert delete(OLD_THEN_NEW, size=300) == 1
    assert delete(OLD_THEN_NEW, size=250) == 1   # deleting a second would leave 200 < 250
    assert delete(OLD_THEN_NEW, size=200) == 2
    assert delete(OLD_THEN_NEW, size=0) == 3     # never the active segment


def test_unlimited_is_minus_one() -> None:
    assert delete(OLD_THEN_NEW) == 0
    assert delete(OLD_THEN_NEW, ms=-1, size=-1, now=NOW * 1000) == 0


def test_time_and_size_combine_as_the_larger() -> None:
    assert delete(OLD_THEN_NEW, ms=4 * HOUR - 1, size=300) == 2
    assert delete(OLD_THEN_NEW, ms=6 * HOUR, size=200) == 2


def test_never_the_active_segment() -> None:
    single = infos((10, 1000, 10 * HOUR))
    assert delete(single, ms=0, size=0) == 0
    all_old = infos((10, 100, 9 * HOUR), (10, 100, 9 * HOUR))
    assert delete(all_old, ms=HOUR) == 1
    assert delete([], ms=0, size=0) == 0


def test_never_at_or_above_the_upper_bound() -> None:
    # segments hold [0, 10), [10, 20), [20, 30), [30, 40)
    for upper, expected in [(0, 0), (9, 0), (10, 1), (19, 1), (20, 2), (29, 2), (30, 3), (40, 3)]:
        assert delete(OLD_THEN_NEW, size=0, upper=upper) == expected, upper
        assert delete(OLD_THEN_NEW, ms=0, upper=upper) == expected, upper


def test_empty_and_timestampless_segments() -> None:
    segments = [SegmentInfo(0, 0, 0, -1), SegmentInfo(0, 10, 100, -1), SegmentInfo(10, 10, 0, -1)]
    assert delete(segments, ms=HOUR, now=2 * HOUR) == 2  # no timestamp (-1): as old as can be


def _kafka_passes(segments, ms, size, upper) -> int:
    """Kafka's deleteOldSegments: a time pass, then a size pass on what is left, each deleting the
    oldest segments while its predicate holds and the segment lies below the upper bound."""
    remaining = list(segments)
    active = remaining.pop()
    deleted = 0
    while ms >= 0 and remaining and NOW - remaining[0].max_timestamp_ms > ms and remaining[0].next_offset <= upper:
        remaining.pop(0)
        deleted += 1
    excess = sum(s.size_bytes for s in remaining) + active.size_bytes - size
    while size >= 0 and remaining and excess - remaining[0].size_bytes >= 0 and remaining[0].next_offset <= upper:
        excess -= remaining.pop(0).size_bytes
        deleted += 1
    return deleted


def test_random_policies_against_kafkas_two_passes() -> None:
    rng = random.Random(9)
    for _ in range(3000):
        segments = infos(*[(rng.randrange(0, 20), rng.randrange(0, 500), rng.randrange(0, 10 * HOUR))
                           for _ in range(rng.randrange(1, 8))])
        ms = rng.choice([-1, 0, HOUR, 5 * HOUR])
        size = rng.choice([-1, 0, 300, 1000])
        upper = rng.randrange(0, 120)
        assert delete(segments, ms=ms, size=size, upper=upper) == _kafka_passes(segments, ms, size, upper), \
            (segments, ms, size, upper)


@pytest.mark.parametrize("policy", ["delete", "compact"])
def test_log_apply_retention(tmp_path, kit, policy) -> None:
    config = LogConfig(segment_bytes=500, retention_ms=HOUR, retention_bytes=-1, cleanup_policy=policy)
    log = Log.open(str(tmp_path / "log"), config)
    t0 = kit.BASE_TS
    for i in range(12):  # ~ 3 batches per segment, timestamps i hours after t0
        log.append(kit.simple_batch(2, ts=t0 + i * HOUR, value_bytes=40), 1, now_ms=t0)
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 4
    now = t0 + 12 * HOUR
    deleted = log.apply_retention(now, upper_bound_offset=log.log_end_offset)
    if policy == "compact":
        assert deleted == 0 and log.log_start_offset == 0
        return
    assert deleted == len(bases) - 1   # everything but the active segment is older than an hour
    assert log.log_start_offset == bases[-1]
    assert [s.base_offset for s in log.segments] == bases[-1:]
    assert kit.header(kit.read_all(log)[0]).base_offset == bases[-1]
    log.close()


def test_log_apply_retention_respects_the_high_watermark(tmp_path, kit) -> None:
    config = LogConfig(segment_bytes=500, retention_ms=0)
    log = Log.open(str(tmp_path / "log"), config)
    for _ in range(12):
        log.append(kit.simple_batch(2, ts=kit.BASE_TS, value_bytes=40), 1, now_ms=kit.BASE_TS)
    segments = list(log.segments)
    high_watermark = segments[2].base_offset + 1  # inside the third segment
    assert log.apply_retention(kit.BASE_TS + HOUR, high_watermark) == 2
    assert log.log_start_offset == segments[2].base_offset
    assert log.apply_retention(kit.BASE_TS + HOUR, high_watermark) == 0
    log.close()
