"""Key compaction (storage/compaction.py) on real files: keep rules, bounds, crash-safe swap, slices.

Content of a log is compared as the list of (offset, key, value) of every stored record, read back
with decode_records from `log.batches()`. "pre" is that list before a pass, "post" after it.
"""

from __future__ import annotations

import errno
import os
import random
import time

import pytest

from client.wire.records import (
    CODEC_LZ4,
    DELETE_HORIZON_BIT,
    build_batch,
    decode_records,
    read_header,
)
from storage import CorruptRecordError, FaultyFileSystem, FileSystem, Log, LogConfig, LogOfflineError
from storage.compaction import (
    CLEANER_OFFSET_CHECKPOINT,
    NO_HORIZON,
    CleanerCheckpoint,
    CleanerConfig,
    CleaningTask,
    LogCleaner,
    OffsetMap,
    SegmentStats,
    clean_log,
    decide_batch,
    dirty_ratio,
    group_segments,
    keep_record,
    plan_cleaning,
    read_cleaner_checkpoint,
)

T0 = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000
LEFTOVER_SUFFIXES = (".cleaned", ".swap", ".deleted", ".tmp")


# --- helpers ---------------------------------------------------------------------------------------

def kv(key: str, value: str | None) -> tuple[bytes, bytes | None]:
    return key.encode(), None if value is None else value.encode()


def batch(*records: tuple[bytes, bytes | None], ts: int = T0, **kwargs) -> bytes:
    return build_batch([(k, v, ts, ()) for k, v in records], **kwargs)


def open_log(path, fs=None, *, recovery_point: int = 0, clean_shutdown: bool = False, **overrides) -> Log:
    config = LogConfig(cleanup_policy="compact", min_cleanable_dirty_ratio=0.0).with_overrides(**overrides)
    return Log.open(str(path), config, fs=fs or FileSystem(), recovery_point=recovery_point,
                    clean_shutdown=clean_shutdown)


def append(log: Log, *records: tuple[bytes, bytes | None], ts: int = T0, **kwargs) -> tuple[int, int]:
    return log.append(batch(*records, ts=ts, **kwargs), leader_epoch=1, now_ms=ts)


def content(log: Log) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(r.offset, r.key, r.value) for _, data in log.batches() for r in decode_records(data)]


def latest_per_key(records, clean_end: int) -> list[tuple[int, bytes | None, bytes | None]]:
    """The model: below clean_end only each key's latest record survives; above, everything."""
    latest = {key: offset for offset, key, _ in records if offset < clean_end}
    return [r for r in records if r[0] >= clean_end or latest[r[1]] == r[0]]


def leftovers(path) -> list[str]:
    return [n for n in os.listdir(path) if n.endswith(LEFTOVER_SUFFIXES)]


def fill(log: Log, rng: random.Random, batches: int, keys: int, per_batch: int = 3, roll_every: int = 4,
         tombstone_rate: float = 0.0) -> None:
    for i in range(batches):
        records = [kv(f"k{rng.randrange(keys)}", None if rng.random() < tombstone_rate else f"v{i}.{j}")
                   for j in range(per_batch)]
        append(log, *records)
        if i % roll_every == roll_every - 1:
            log.roll(T0)
    log.roll(T0)
    log.flush(T0)


# --- keep rules ------------------------------------------------------------------------------------

def test_latest_value_per_key_survives_with_offsets_and_gaps_unchanged(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    fill(log, random.Random(1), batches=60, keys=10)
    pre = content(log)
    end, start = log.log_end_offset, log.log_start_offset

    result = clean_log(log, T0, upper_bound_offset=end)

    assert result.cleaned and result.records_removed > 0
    post = content(log)
    assert post == latest_per_key(pre, end)
    assert len({key for _, key, _ in post}) == 10
    assert (log.log_start_offset, log.log_end_offset) == (start, end)
    offsets = [o for o, _, _ in post]
    assert offsets != list(range(offsets[0], offsets[0] + len(offsets)))  # gaps
    for offset in range(start, end):  # any offset reads on from the next surviving record
        want = next((r for r in post if r[0] >= offset), None)
        got = next((r for _, data in log.batches(offset) for r in decode_records(data) if r.offset >= offset), None)
        assert (got and (got.offset, got.key, got.value)) == want
        chunk = log.read(offset, 1 << 20)
        assert len(chunk) and read_header(bytes(chunk)).last_offset >= offset
    assert read_cleaner_checkpoint(log) == CleanerCheckpoint(end, NO_HORIZON)

    log.close()
    for clean_shutdown in (True, False):  # trusted indexes and rebuilt ones agree
        log = open_log(tmp_path / "t-0", recovery_point=end, clean_shutdown=clean_shutdown)
        assert content(log) == post and log.log_end_offset == end
        assert not leftovers(tmp_path / "t-0")
        log.close()


def test_upper_bound_protects_the_committed_value(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, kv("a", "committed"))      # 0
    append(log, kv("b", "x"))              # 1
    log.roll(T0)
    append(log, kv("a", "uncommitted"))    # 2: at the high watermark
    append(log, kv("b", "y"))              # 3
    log.roll(T0)
    append(log, kv("c", "z"))              # 4 (active)
    log.flush(T0)

    result = clean_log(log, T0, upper_bound_offset=2)

    assert result.clean_end_offset == 2
    assert (0, b"a", b"committed") in content(log)
    log.truncate_to(2)  # the new leader never had offset 2
    assert content(log) == [(0, b"a", b"committed"), (1, b"b", b"x")]


def test_upper_bound_inside_a_segment_cleans_only_below_it(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    for value in ("1", "2", "3", "4"):
        append(log, kv("a", value), kv("b", value))  # offsets 0-1, 2-3, 4-5, 6-7
    log.roll(T0)
    append(log, kv("c", "z"))
    pre = content(log)

    clean_log(log, T0, upper_bound_offset=5)  # the batch 4-5 straddles the bound: not mapped

    assert content(log) == latest_per_key(pre, 4)
    assert read_cleaner_checkpoint(log).first_dirty_offset == 4
    clean_log(log, T0, upper_bound_offset=log.log_end_offset)
    assert content(log) == latest_per_key(pre, 8)


def test_tombstone_kept_until_delete_retention_passed_after_first_cleaning(tmp_path) -> None:
    log = open_log(tmp_path / "t-0", delete_retention_ms=DAY_MS)
    append(log, kv("a", "1"))
    append(log, kv("b", "1"))
    append(log, kv("a", None))            # 2: tombstone
    log.roll(T0)
    append(log, kv("c", "1"))
    log.flush(T0)

    first = clean_log(log, T0 + 5, upper_bound_offset=log.log_end_offset)
    assert content(log) == [(1, b"b", b"1"), (2, b"a", None), (3, b"c", b"1")]
    horizon = T0 + 5 + DAY_MS
    assert first.checkpoint == CleanerCheckpoint(3, horizon)
    header = next(h for h, _ in log.batches(2))
    assert header.attributes & DELETE_HORIZON_BIT and header.base_timestamp == horizon
    assert decode_records(next(d for _, d in log.batches(2)))[0].timestamp == T0  # record time kept

    early = clean_log(log, horizon - 1, upper_bound_offset=log.log_end_offset)
    assert early.reason == "nothing to clean"
    assert (2, b"a", None) in content(log)

    late = clean_log(log, horizon, upper_bound_offset=log.log_end_offset)
    assert late.cleaned and late.checkpoint == CleanerCheckpoint(3, NO_HORIZON)
    assert content(log) == [(1, b"b", b"1"), (3, b"c", b"1")]
    assert log.log_end_offset == 4


def test_producer_last_batch_survives_empty(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, kv("a", "p0"), producer_id=7, producer_epoch=3, base_sequence=0)                   # 0
    append(log, kv("b", "p1"), kv("c", "p1"), producer_id=7, producer_epoch=3, base_sequence=1)    # 1-2
    append(log, kv("a", "x"), kv("b", "x"), kv("c", "x"))                                          # 3-5
    log.roll(T0)
    append(log, kv("d", "x"))
    log.flush(T0)

    result = clean_log(log, T0, upper_bound_offset=log.log_end_offset)

    headers = [h for h, _ in log.batches()]
    assert [(h.base_offset, h.last_offset, h.records_count) for h in headers] == [(1, 2, 0), (3, 5, 3), (6, 6, 1)]
    empty = headers[0]
    assert (empty.producer_id, empty.producer_epoch, empty.base_sequence, empty.last_sequence) == (7, 3, 1, 2)
    assert result.batches_emptied == 1
    log.close()
    log = open_log(tmp_path / "t-0")  # recovery accepts the empty batch
    assert [(h.base_offset, h.records_count) for h, _ in log.batches()] == [(1, 0), (3, 3), (6, 1)]


def test_producer_whose_last_batch_is_in_the_active_segment_loses_older_batches(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, kv("a", "p"), producer_id=9, producer_epoch=0, base_sequence=0)    # 0
    append(log, kv("a", "x"))                                                      # 1
    log.roll(T0)
    append(log, kv("b", "p"), producer_id=9, producer_epoch=0, base_sequence=1)    # 2 (active)
    clean_log(log, T0, upper_bound_offset=log.log_end_offset)
    assert [h.base_offset for h, _ in log.batches()] == [1, 2]


def test_control_and_transactional_batches_are_kept_and_not_mapped(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, kv("a", "1"))                                                          # 0
    append(log, kv("a", "txn"), is_transactional=True, producer_id=5, producer_epoch=0, base_sequence=0)  # 1
    append(log, kv("b", "1"))                                                          # 2
    log.roll(T0)
    append(log, kv("c", "1"))
    clean_log(log, T0, upper_bound_offset=log.log_end_offset)
    assert [o for o, _, _ in content(log)] == [0, 1, 2, 3]  # the transactional write removed nothing


def test_compressed_batch_is_filtered_and_keeps_its_codec(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, *[kv(f"k{i}", "old" * 20) for i in range(20)], compression=CODEC_LZ4)  # 0-19
    append(log, *[kv(f"k{i}", "new") for i in range(0, 20, 2)])                        # 20-29
    log.roll(T0)
    pre = content(log)
    clean_log(log, T0, upper_bound_offset=log.log_end_offset)
    assert content(log) == latest_per_key(pre, 30)
    first = next(h for h, _ in log.batches())
    assert (first.base_offset, first.last_offset, first.records_count, first.compression) == (0, 19, 10, CODEC_LZ4)


def test_min_compaction_lag_leaves_young_segments_alone(tmp_path) -> None:
    log = open_log(tmp_path / "t-0", min_compaction_lag_ms=60_000)
    append(log, kv("a", "1"), ts=T0)
    log.roll(T0)
    append(log, kv("a", "2"), ts=T0 + 50_000)
    log.roll(T0)
    append(log, kv("x", "active"), ts=T0 + 50_000)
    pre = content(log)
    assert clean_log(log, T0 + 60_000, log.log_end_offset).clean_end_offset == 1  # only segment 0 is old
    assert content(log) == pre
    assert clean_log(log, T0 + 120_000, log.log_end_offset).cleaned
    assert content(log) == latest_per_key(pre, 2)


# --- merging, checkpoint, bounds ---------------------------------------------------------------------

def test_small_segments_are_merged(tmp_path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=4096)
    fill(log, random.Random(2), batches=40, keys=5, roll_every=1)  # one batch per segment
    before = len(log.segments)
    pre = content(log)
    result = clean_log(log, T0, upper_bound_offset=log.log_end_offset)
    assert content(log) == latest_per_key(pre, log.log_end_offset)
    assert len(log.segments) < before / 5
    assert result.groups_swapped == len(log.segments) - 1
    assert all(s.size_bytes <= 4096 for s in log.segments)
    names = sorted(n for n in os.listdir(tmp_path / "t-0") if n.endswith(".log"))
    assert names == [f"{s.base_offset:020d}.log" for s in log.segments]


def test_a_segment_cleaning_leaves_unchanged_is_not_rewritten(tmp_path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=100)  # one batch per segment, one segment per group
    append(log, kv("a", "1"))
    append(log, kv("c", "1"))
    append(log, kv("c", "2"))
    log.roll(T0)
    first, second, third = log.segments[:3]
    result = clean_log(log, T0, log.log_end_offset)
    assert result.groups_swapped == 1
    assert log.segments[0] is first and log.segments[2] is third and log.segments[1] is not second
    assert [(h.base_offset, h.records_count) for h, _ in log.batches()] == [(0, 1), (1, 0), (2, 1)]


def test_corrupt_stored_batch_stops_the_pass_without_taking_the_log_offline(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    fill(log, random.Random(11), batches=8, keys=3)
    segment = log.segments[1]
    path = segment.log.path
    with open(path, "r+b") as f:  # flip a byte in the records of the segment's first batch
        f.seek(70)
        byte = f.read(1)
        f.seek(70)
        f.write(bytes([byte[0] ^ 0xFF]))
    cleaner = LogCleaner()
    with pytest.raises(CorruptRecordError):
        for _ in range(1000):
            cleaner.step([(log, log.log_end_offset)], T0)
    assert not log.offline and log.path in cleaner.uncleanable and not leftovers(tmp_path / "t-0")
    assert cleaner.step([(log, log.log_end_offset)], T0) is None and cleaner.task is None


def test_group_segments_respects_size_offset_span_and_index_limits() -> None:
    def seg(base: int, next_offset: int, size: int, entries: int = 1) -> SegmentStats:
        return SegmentStats(base, next_offset, size, T0, entries)

    segments = [seg(0, 10, 400), seg(10, 20, 400), seg(20, 30, 400), seg(30, 40, 2000), seg(40, 50, 10)]
    assert group_segments(segments, segment_bytes_max=1000, index_entries_max=100) == [
        range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert group_segments(segments, segment_bytes_max=10**9, index_entries_max=2) == [
        range(0, 2), range(2, 4), range(4, 5)]
    wide = [seg(0, 10, 1), seg(2**31 - 5, 2**31 + 5, 1)]
    assert group_segments(wide, segment_bytes_max=10**9, index_entries_max=100) == [range(0, 1), range(1, 2)]


def test_checkpoint_makes_the_next_pass_start_at_the_first_dirty_offset(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    fill(log, random.Random(3), batches=12, keys=4)
    end = log.log_end_offset
    clean_log(log, T0, upper_bound_offset=end)
    assert os.path.exists(tmp_path / "t-0" / CLEANER_OFFSET_CHECKPOINT)
    assert clean_log(log, T0, upper_bound_offset=end).reason == "nothing to clean"
    log.close()
    log = open_log(tmp_path / "t-0")  # Log.open ignores the checkpoint file
    assert read_cleaner_checkpoint(log).first_dirty_offset == end
    fill(log, random.Random(4), batches=8, keys=4)
    pre = content(log)
    result = clean_log(log, T0, upper_bound_offset=log.log_end_offset)
    assert result.first_dirty_offset == end and result.clean_end_offset == log.log_end_offset
    assert content(log) == latest_per_key(pre, log.log_end_offset)


def test_full_offset_map_cleans_only_what_it_covers(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    fill(log, random.Random(5), batches=20, keys=30, per_batch=2)
    pre, end = content(log), log.log_end_offset
    config = CleanerConfig(offset_map_entries_max=8)
    first = clean_log(log, T0, end, config)
    covered = first.clean_end_offset
    assert 0 < covered < end
    assert content(log) == latest_per_key(pre, covered)  # nothing at or above the map's end removed
    passes = 1
    while read_cleaner_checkpoint(log).first_dirty_offset < end:
        assert clean_log(log, T0, end, config).cleaned
        passes += 1
        assert passes < 50
    assert content(log) == latest_per_key(pre, end)


def test_offset_map_bound_and_pure_keep_rule() -> None:
    offset_map = OffsetMap(entries_max=2)
    assert offset_map.has_room_for(5)  # an empty map takes any one batch
    offset_map.put(b"a", 10)
    assert offset_map.has_room_for(1) and not offset_map.has_room_for(2)

    def keep(offset: int, key: bytes | None, value: bytes | None, horizon: int | None = None, now: int = 0) -> bool:
        from client.wire.records import Record
        return keep_record(Record(offset, T0, key, value), offset_map, clean_end_offset=20,
                           delete_horizon_ms=horizon, now_ms=now)

    assert not keep(5, b"a", b"old")            # superseded below the bound
    assert keep(10, b"a", b"latest")
    assert keep(25, b"a", b"beyond")             # at/above the clean end: never judged
    assert keep(3, None, b"no key")
    assert keep(10, b"a", None, horizon=None)    # tombstone never cleaned yet
    assert keep(10, b"a", None, horizon=100, now=99)
    assert not keep(10, b"a", None, horizon=100, now=100)
    from client.wire.records import Record
    decision = decide_batch([Record(1, T0, b"a", b"x"), Record(10, T0, b"a", None)],
                            lambda r: keep_record(r, offset_map, clean_end_offset=20, delete_horizon_ms=None, now_ms=0))
    assert decision == (frozenset({10}), 1, True)


def test_plan_cleaning_dirty_ratio_and_horizon() -> None:
    segments = [SegmentStats(0, 100, 600, T0, 1), SegmentStats(100, 200, 300, T0, 1),
                SegmentStats(200, 250, 100, T0, 1), SegmentStats(250, 250, 0, -1, 0)]
    assert dirty_ratio(segments, 100, 250) == pytest.approx(400 / 1000)
    assert dirty_ratio(segments, 100, 150) == pytest.approx(300 / 900)
    kwargs = dict(log_start_offset=0, now_ms=T0, min_compaction_lag_ms=0)
    assert plan_cleaning(segments, CleanerCheckpoint(100), upper_bound_offset=250, min_cleanable_dirty_ratio=0.5,
                         **kwargs) is None
    plan = plan_cleaning(segments, CleanerCheckpoint(100), upper_bound_offset=250, min_cleanable_dirty_ratio=0.4,
                         **kwargs)
    assert plan is not None and (plan.first_dirty_offset, plan.first_uncleanable_offset) == (100, 250)
    plan = plan_cleaning(segments, CleanerCheckpoint(100), upper_bound_offset=120, min_cleanable_dirty_ratio=0.1,
                         **kwargs)
    assert plan is not None and plan.first_uncleanable_offset == 120
    assert plan_cleaning(segments, CleanerCheckpoint(250, T0), upper_bound_offset=250, min_cleanable_dirty_ratio=0.5,
                         **kwargs).tombstones_due
    assert plan_cleaning(segments, CleanerCheckpoint(250, T0 + 1), upper_bound_offset=250,
                         min_cleanable_dirty_ratio=0.5, **kwargs) is None


def test_log_cleaner_picks_the_dirtiest_log_and_runs_in_slices(tmp_path) -> None:
    logs = []
    for i, batches in enumerate((6, 30)):
        log = open_log(tmp_path / f"t-{i}", min_cleanable_dirty_ratio=0.5)
        fill(log, random.Random(i), batches=batches, keys=3)
        logs.append(log)
    logs[0].config = logs[0].config.with_overrides(cleanup_policy="delete")
    cleaner = LogCleaner(CleanerConfig(slice_batches_max=2))
    results = []
    for _ in range(1000):
        result = cleaner.step([(log, log.log_end_offset) for log in logs], T0)
        if result is not None:
            results.append(result)
        elif cleaner.task is None:
            break
    assert [r.path for r in results] == [logs[1].path] and results[0].slices > 5
    assert not os.path.exists(tmp_path / "t-0" / CLEANER_OFFSET_CHECKPOINT)


# --- concurrency with the log's owner, errors ---------------------------------------------------------

def test_retention_deleting_a_segment_between_any_two_slices_is_safe(tmp_path) -> None:
    def build(path) -> Log:
        log = open_log(path)
        fill(log, random.Random(6), batches=16, keys=4)
        return log

    config = CleanerConfig(slice_batches_max=2, scan_headers_max=2)
    log = build(tmp_path / "ref")
    pre, end = content(log), log.log_end_offset
    slices = CleaningTask(log, end, config).run(T0).slices
    reasons = set()
    for k in range(slices):
        path = tmp_path / f"k{k}"
        log = build(path)
        task = CleaningTask(log, end, config)
        for _ in range(k):
            task.step(T0)
        log.delete_oldest_segments(1)
        reasons.add(task.run(T0).reason.split(":")[0])
        assert not leftovers(path)
        assert set(content(log)) <= set(pre)
        assert clean_log(log, T0, end).reason in ("done", "nothing to clean")
        assert content(log) == latest_per_key([r for r in pre if r[0] >= log.log_start_offset], end)
    assert "aborted" in reasons and "done" in reasons


def test_appends_and_rolls_between_slices_are_safe(tmp_path) -> None:
    log = open_log(tmp_path / "t-0")
    fill(log, random.Random(7), batches=16, keys=4)
    end = log.log_end_offset
    pre_cleanable = content(log)
    task = CleaningTask(log, end, CleanerConfig(slice_batches_max=1))
    n = 0
    while not task.step(T0):
        append(log, kv("k1", f"late{n}"))
        if n % 5 == 0:
            log.roll(T0)
        n += 1
    assert task.result.cleaned
    post = content(log)
    assert [r for r in post if r[0] < end] == latest_per_key(pre_cleanable, end)
    assert len([r for r in post if r[0] >= end]) == n


def test_write_error_takes_the_log_offline_without_touching_memory(tmp_path) -> None:
    fs = FaultyFileSystem(seed=1)
    log = open_log(tmp_path / "t-0", fs=fs)
    fill(log, random.Random(8), batches=12, keys=3)
    pre, segments = content(log), list(log.segments)
    fs.fail_next("write", errno.ENOSPC, partial=True, path_contains=".log.cleaned")
    with pytest.raises(LogOfflineError):
        clean_log(log, T0, log.log_end_offset)
    assert log.offline and log.segments == segments
    log.close()
    log = open_log(tmp_path / "t-0", fs=fs)
    assert content(log) == pre and not leftovers(tmp_path / "t-0")


# --- crash safety ------------------------------------------------------------------------------------

class CrashAt(FaultyFileSystem):
    """Counts mutating file operations and fails the `fail_at`-th one (then behaves)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(seed=fail_at or 0)
        self.fail_at = fail_at
        self.ops: list[tuple[str, str]] = []
        self.counting = False

    def _op(self, name: str, path: str) -> None:
        if not self.counting:
            return
        self.ops.append((name, os.path.basename(path)))
        if self.fail_at is not None and len(self.ops) - 1 == self.fail_at:
            self.counting = False
            raise OSError(errno.EIO, f"injected at op {self.fail_at}: {name} {path}")

    def open(self, path: str, create: bool = True):
        self._op("open", path)
        return super().open(path, create)

    def rename(self, src: str, dst: str) -> None:
        self._op("rename", src + " -> " + os.path.basename(dst))
        super().rename(src, dst)

    def remove(self, path: str) -> None:
        self._op("remove", path)
        super().remove(path)

    def fsync_dir(self, path: str) -> None:
        self._op("fsync_dir", path)
        super().fsync_dir(path)

    def _write(self, f, data, position: int) -> None:
        self._op("write", f.path)
        super()._write(f, data, position)

    def _truncate(self, f, size: int) -> None:
        self._op("truncate", f.path)
        super()._truncate(f, size)

    def _fsync(self, f) -> None:
        self._op("fsync", f.path)
        super()._fsync(f)


def build_crash_log(path, fs: FileSystem, segment_bytes: int) -> Log:
    log = open_log(path, fs=fs, segment_bytes=segment_bytes)
    fill(log, random.Random(9), batches=12, keys=4, roll_every=3, tombstone_rate=0.2)
    return log


def crash_at_every_operation(tmp_path, build, clean, allowed_states) -> int:
    """Run `clean` once to record its file operations, then once per operation: fail it, lose power, reopen.

    `build(path, fs)` makes the log, `clean(log)` runs the pass, `allowed_states(pre, log, fs, clean)`
    runs the reference pass and returns, per operation, the contents a recovered log may have.
    Returns the number of operations.
    """
    reference = CrashAt()
    log = build(tmp_path / "ref", reference)
    pre = content(log)
    allowed_by_op = allowed_states(pre, log, reference, clean)
    for fail_at, (op, allowed) in enumerate(allowed_by_op):
        fs = CrashAt(fail_at)
        path = tmp_path / f"crash{fail_at}"
        log = build(path, fs)
        config = log.config
        fs.counting = True
        with pytest.raises(LogOfflineError):
            clean(log)
        assert log.offline
        fs.crash()  # the data was flushed before the pass: a recovery point at the end trusts the indexes
        reopened = Log.open(str(path), config, fs=fs, recovery_point=1 << 40)
        got = content(reopened)
        assert got in allowed, f"crash at op {fail_at} {op} left neither pre nor post"
        assert not leftovers(path)
        reopened.close()
    return len(allowed_by_op)


def run_reference(pre, log, fs, clean):
    """(post, ops, result) of the pass without faults."""
    fs.counting = True
    result = clean(log)
    fs.counting = False
    return content(log), fs.ops, result


def pre_until_commit_then_post(pre, log, fs, clean):
    post, ops, result = run_reference(pre, log, fs, clean)
    assert result.groups_swapped == 1 and post != pre
    commit = next(i for i, op in enumerate(ops) if op[0] == "rename" and ".log.cleaned" in op[1])
    return [(op, [pre] if i <= commit else [post]) for i, op in enumerate(ops)]


def test_crash_at_every_file_operation_leaves_pre_or_post(tmp_path) -> None:
    def build(path, fs):
        log = open_log(path, fs=fs)
        fill(log, random.Random(9), batches=12, keys=4, roll_every=3, tombstone_rate=0.2)
        return log

    ops = crash_at_every_operation(tmp_path, build, lambda log: clean_log(log, T0, log.log_end_offset),
                                   pre_until_commit_then_post)
    assert ops > 40


def test_crash_at_every_file_operation_with_several_groups(tmp_path) -> None:
    def build(path, fs):
        log = open_log(path, fs=fs, segment_bytes=700)
        fill(log, random.Random(9), batches=12, keys=4, roll_every=3, tombstone_rate=0.2)
        return log

    def some_groups_cleaned(pre, log, fs, clean):
        bases = [s.base_offset for s in log.segments]
        post, ops, result = run_reference(pre, log, fs, clean)
        assert result.groups_swapped >= 2
        mixes = [[r for r in post if r[0] < b] + [r for r in pre if r[0] >= b] for b in bases]
        return [(op, [pre, post, *mixes]) for op in ops]

    crash_at_every_operation(tmp_path, build, lambda log: clean_log(log, T0, log.log_end_offset),
                             some_groups_cleaned)


def test_crash_when_expired_tombstones_empty_the_end_of_a_group(tmp_path) -> None:
    """The group's last batch is kept (empty) so the swap ends where the group ended: recovery then
    replaces the whole group, not just the part below the last surviving record."""
    def build(path, fs):
        log = open_log(path, fs=fs, segment_bytes=100)  # one batch per segment
        for key in ("a", "x"):
            append(log, kv(key, "1"))
            append(log, kv(key, None))
        log.roll(T0)
        log.flush(T0)
        assert clean_log(log, T0, log.log_end_offset).cleaned  # tombstones get their horizon
        assert content(log) == [(1, b"a", None), (3, b"x", None)]
        log.config = log.config.with_overrides(segment_bytes=1 << 20)  # now the segments merge
        return log

    horizon = T0 + LogConfig().delete_retention_ms
    ops = crash_at_every_operation(tmp_path, build, lambda log: clean_log(log, horizon, log.log_end_offset),
                                   pre_until_commit_then_post)
    assert ops > 10
    log = build(tmp_path / "check", FileSystem())
    clean_log(log, horizon, log.log_end_offset)
    assert [(h.base_offset, h.records_count) for h, _ in log.batches()] == [(3, 0)]


def test_swap_follows_the_recovery_protocol_order(tmp_path) -> None:
    fs = CrashAt()
    log = build_crash_log(tmp_path / "t-0", fs, 1 << 20)
    fs.counting = True
    clean_log(log, T0, log.log_end_offset)
    names = [f"{op} {name}" for op, name in fs.ops if op != "write"]

    def at(fragment: str) -> int:
        return next(i for i, n in enumerate(names) if fragment in n)

    fsync_cleaned = max(i for i, n in enumerate(names) if n.startswith("fsync ") and ".cleaned" in n)
    index_swap = at(".index.cleaned -> ")
    log_swap = at(".log.cleaned -> ")
    first_delete = at(".deleted")
    final = at(".log.swap -> ")
    assert fsync_cleaned < index_swap < at(".timeindex.cleaned -> ") < log_swap
    assert names[log_swap + 1].startswith("fsync_dir")                          # commit durable first
    assert log_swap < first_delete < final
    assert names[final - 1].startswith("fsync_dir")                             # deletions durable first
    old_base = f"{0:020d}"
    assert at(f"rename {old_base}.index -> ") < at(f"rename {old_base}.log -> ")  # old index never outlives its log
    assert names[final + 3].startswith("fsync_dir") and at("cleaner-offset-checkpoint.tmp -> ") > final + 3


def test_crash_between_slices_leaves_pre_or_post(tmp_path) -> None:
    reference_fs = FaultyFileSystem()
    log = build_crash_log(tmp_path / "ref", reference_fs, 1 << 20)
    pre = content(log)
    task = CleaningTask(log, log.log_end_offset, CleanerConfig(slice_batches_max=2, scan_headers_max=2))
    slices = 1
    while not task.step(T0):
        slices += 1
    post = content(log)
    for crash_after in range(slices):
        fs = FaultyFileSystem(seed=crash_after)
        path = tmp_path / f"c{crash_after}"
        log = build_crash_log(path, fs, 1 << 20)
        task = CleaningTask(log, log.log_end_offset, CleanerConfig(slice_batches_max=2, scan_headers_max=2))
        for _ in range(crash_after + 1):
            task.step(T0)
        fs.crash()
        reopened = open_log(path, fs=fs)
        assert content(reopened) in (pre, post)
        assert not leftovers(path)
        reopened.close()


# --- slices ----------------------------------------------------------------------------------------

SLICE_MS_MAX = 10.0


def slice_times_ms(path) -> tuple[list[float], list[float]]:
    """(wall, thread CPU) milliseconds of every slice of one pass over ~16 KiB batches, worst case:
    every batch loses one record, so each is decoded and re-encoded (a third are lz4)."""
    rng = random.Random(10)
    log = open_log(path, segment_bytes=2 << 20)
    for i in range(240):  # record 0 of batch i supersedes record 1 of batch i-1
        records = [kv(f"key-{i}-{j}" if j else f"key-{i - 1}-1", rng.randbytes(70).hex()) for j in range(100)]
        append(log, *records, compression=CODEC_LZ4 if i % 3 == 0 else 0)
    log.roll(T0)
    log.flush(T0)
    sizes = [h.total_size for h, _ in log.batches()]
    assert min(sizes) > 14_000 and max(sizes) < 17_000
    task = CleaningTask(log, log.log_end_offset)
    wall, cpu = [], []
    done = False
    while not done:
        started, started_cpu = time.perf_counter(), time.thread_time()
        done = task.step(T0)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    assert task.result.cleaned and task.result.records_removed == 239 and len(wall) > 50
    log.close()
    return wall, cpu


def test_one_slice_stays_under_ten_milliseconds_with_16k_batches(tmp_path) -> None:
    """CPU time of every slice is bounded on every run; wall time (which a busy machine's scheduler
    inflates at random) must be bounded for every slice of at least one of three runs."""
    worst_walls = []
    for attempt in range(3):
        wall, cpu = slice_times_ms(tmp_path / f"t-{attempt}")
        assert max(cpu) <= SLICE_MS_MAX, f"slice CPU time {max(cpu):.1f} ms"
        worst_walls.append(max(wall))
        if max(wall) <= SLICE_MS_MAX:
            break
    assert min(worst_walls) <= SLICE_MS_MAX, f"slowest slice per run: {worst_walls} ms"
