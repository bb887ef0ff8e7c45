"""storage.log.Log: appends, reads, offsets by time and epoch, truncation, rolling, flushing.

Batches come from kafka-python's encoder (tests/storage/conftest.py), so what Log stores is checked
against an independent implementation of the record batch format.
"""

from __future__ import annotations

import os
import struct

import crc32c
import pytest
from kafka.record.default_records import DefaultRecordBatch

from client.wire import records as wire_records
from storage import (
    CorruptRecordError,
    InvalidRecordError,
    Log,
    LogConfig,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)

T0 = 1_700_000_000_000
needs_decode_records = pytest.mark.skipif(not hasattr(wire_records, "decode_records"),
                                          reason="client.wire.records.decode_records not landed yet")


def open_log(tmp_path, **config) -> Log:
    return Log.open(str(tmp_path / "log"), LogConfig(**config))


# --- append ------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", [0, 3])
def test_append_stamps_offset_and_epoch_only(tmp_path, kit, codec) -> None:
    log = open_log(tmp_path)
    stored = []
    for i, n in enumerate([1, 5, 3]):
        batch = kit.simple_batch(n, ts=T0 + i, codec=codec, value_bytes=200, base_offset=777, leader_epoch=-1)
        base, last = log.append(batch, 4, now_ms=T0)
        assert (base, last) == (sum([1, 5, 3][:i]), sum([1, 5, 3][:i + 1]) - 1)
        stored.append(batch)
        got = kit.read_all(log, base)[0]
        assert got[16:] == batch[16:], "the batch body (from magic on) is stored untouched"
        h = kit.header(got)
        assert (h.base_offset, h.leader_epoch) == (base, 4)
        assert kit.crc_ok(got)
        assert [r[0] for r in kit.decode(got)] == list(range(base, last + 1))
    if codec:
        assert kit.header(stored[1]).attributes & 7 == 3  # really compressed
    assert log.log_end_offset == 9
    assert log.epochs.entries == [(4, 0)]


def test_append_does_not_modify_the_callers_buffer(tmp_path, kit) -> None:
    log = open_log(tmp_path, message_timestamp_type="LogAppendTime")
    batch = bytearray(kit.simple_batch(3))
    before = bytes(batch)
    log.append(batch, 1, now_ms=T0 + 5)
    assert bytes(batch) == before


@pytest.mark.parametrize("change", ["longer", "shorter", "tiny", "magic", "negative_delta"])
def test_append_rejects_malformed_batches(tmp_path, kit, change) -> None:
    log = open_log(tmp_path)
    batch = kit.simple_batch(3)
    if change == "longer":
        bad = batch + b"\x00" * 7                  # more bytes than batchLength says
    elif change == "shorter":
        bad = batch[:-4]                           # fewer bytes than batchLength says
    elif change == "tiny":
        bad = batch[:60]
    elif change == "magic":
        bad = batch[:16] + b"\x01" + batch[17:]
    else:
        bad = batch[:23] + struct.pack(">i", -1) + batch[27:]
    with pytest.raises(CorruptRecordError):
        log.append(bad, 1)
    assert log.log_end_offset == 0 and log.size_bytes == 0 and not log.offline
    log.append(batch, 1)
    assert log.log_end_offset == 3


def test_append_rejects_too_large(tmp_path, kit) -> None:
    log = open_log(tmp_path, max_message_bytes=500)
    with pytest.raises(RecordTooLargeError) as info:
        log.append(kit.simple_batch(5, value_bytes=200), 1)
    assert info.value.error_code == 10
    assert log.size_bytes == 0


def test_log_append_time(tmp_path, kit, decode_records_available) -> None:
    log = open_log(tmp_path, message_timestamp_type="LogAppendTime")
    now = T0 + 123_456
    batch = kit.simple_batch(4, ts=T0)
    base, _ = log.append(batch, 1, now_ms=now)
    stored = kit.read_all(log)[0]
    assert stored == kit.stamp_log_append_time(kit.stamp(batch, base, 1), now)
    h = kit.header(stored)
    assert h.max_timestamp == now and h.attributes & 0x08
    assert h.crc == crc32c.crc32c(stored[21:]), "CRC recomputed over the stamped header"
    rb = DefaultRecordBatch(stored)
    assert rb.validate_crc() and rb.timestamp_type == 1
    assert [r.timestamp for r in rb] == [now] * 4
    assert log.segments[0].max_timestamp == now
    assert log.offset_for_timestamp(now) == (0, now)
    assert log.offset_for_timestamp(now + 1) is None


@needs_decode_records
def test_compacted_log_requires_keys(tmp_path, kit) -> None:
    log = open_log(tmp_path, cleanup_policy="compact")
    with pytest.raises(InvalidRecordError) as info:
        log.append(kit.make_batch([(b"k", b"v", T0), (None, b"v", T0)]), 1)
    assert info.value.error_code == 87
    assert log.log_end_offset == 0
    log.append(kit.make_batch([(b"k", b"v", T0), (b"k2", None, T0)]), 1)  # tombstones are fine
    assert log.log_end_offset == 2
    open_log(tmp_path / "d", cleanup_policy="delete").append(kit.make_batch([(None, b"v", T0)]), 1)


# --- append_replicated -------------------------------------------------------------------------
def test_append_replicated_keeps_offsets_epochs_and_gaps(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_bytes=1 << 20)
    batches = [kit.simple_batch(2, base_offset=0, leader_epoch=1), kit.simple_batch(3, base_offset=2, leader_epoch=1),
               kit.simple_batch(1, base_offset=9, leader_epoch=3), kit.simple_batch(2, base_offset=10, leader_epoch=4)]
    partial = kit.simple_batch(1, base_offset=12, leader_epoch=4)[:30]
    assert log.append_replicated(b"".join(batches) + partial) == 12
    assert kit.read_all(log) == batches
    assert log.epochs.entries == [(1, 0), (3, 9), (4, 10)]
    assert log.end_offset_for_epoch(1) == (1, 9)
    assert log.end_offset_for_epoch(2) == (1, 9)
    assert kit.read_all(log, 6)[0] == batches[2]  # an offset in the gap reads the next batch
    assert log.append_replicated(b"") == 12


def test_append_replicated_rejects_corrupt_or_overlapping(tmp_path, kit) -> None:
    log = open_log(tmp_path)
    log.append_replicated(kit.simple_batch(3, base_offset=0, leader_epoch=1))
    corrupt = bytearray(kit.simple_batch(2, base_offset=3, leader_epoch=1))
    corrupt[-1] ^= 1
    with pytest.raises(CorruptRecordError):
        log.append_replicated(bytes(corrupt))
    with pytest.raises(InvalidRecordError):
        log.append_replicated(kit.simple_batch(2, base_offset=2, leader_epoch=1))
    assert log.log_end_offset == 3 and not log.offline


def test_replicated_batch_far_past_an_empty_segment(tmp_path, kit) -> None:
    """An offset gap wider than a segment's int32 relative offsets starts a segment at the batch."""
    log = open_log(tmp_path)
    far = 2**31 + 5
    batch = kit.simple_batch(2, base_offset=far, leader_epoch=1)
    assert log.append_replicated(batch) == far + 2
    assert [s.base_offset for s in log.segments] == [far]
    assert kit.read_all(log, far) == [batch]
    log.close()
    log = Log.open(str(tmp_path / "log"), LogConfig())
    assert log.log_end_offset == far + 2 and kit.read_all(log, far) == [batch]


# --- read ----------------------------------------------------------------------------------------
def test_read_returns_at_least_one_whole_batch(tmp_path, kit) -> None:
    log = open_log(tmp_path)
    big = kit.simple_batch(4, value_bytes=2000)
    small = kit.simple_batch(1)
    log.append(big, 1)
    log.append(small, 1)
    for start in range(4):  # KIP-74: larger than max_bytes, still returned whole
        chunk = log.read(start, 10)
        assert bytes(chunk) == kit.stamp(big, 0, 1)
        assert (chunk.first_offset, chunk.next_offset) == (0, 4)
    assert bytes(log.read(0, len(big) + len(small))) == kit.stamp(big, 0, 1) + kit.stamp(small, 4, 1)
    assert bytes(log.read(0, len(big) + len(small) - 1)) == kit.stamp(big, 0, 1)
    chunk = log.read(4, 1 << 20)
    assert os.pread(chunk.file.fileno(), chunk.length, chunk.position) == bytes(chunk)  # sendfile view


def test_read_bounds(tmp_path, kit) -> None:
    log = open_log(tmp_path)
    for _ in range(3):
        log.append(kit.simple_batch(3), 1)
    assert bytes(log.read(9, 100)) == b""                       # at the log end: nothing yet
    with pytest.raises(OffsetOutOfRangeError) as info:
        log.read(10, 100)
    assert info.value.error_code == 1
    assert bytes(log.read(0, 1 << 20, max_offset=6)) == b"".join(kit.read_all(log)[:2])
    assert bytes(log.read(0, 1 << 20, max_offset=5)) == kit.read_all(log)[0]  # batch 3..5 holds 5
    assert bytes(log.read(1, 1 << 20, max_offset=2)) == b""     # the batch holding 1 reaches 2
    assert bytes(log.read(4, 1 << 20, max_offset=4)) == b""
    log.delete_before(4)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    assert kit.header(bytes(log.read(4, 100))).base_offset == 3  # the batch holding the log start


# --- offsets by time -----------------------------------------------------------------------------
def test_offset_for_timestamp(tmp_path, kit, decode_records_available) -> None:
    log = open_log(tmp_path, segment_bytes=400, index_interval_bytes=150)
    # timestamps go up and down inside and across batches
    plan = [[5, 1, 9], [3], [20, 15, 30, 2], [10], [40, 41], [35], [50, 49, 60]]
    stored = []
    for stamps in plan:
        batch = kit.make_batch([(b"k", b"v" * 50, T0 + s) for s in stamps])
        base, _ = log.append(batch, 1, now_ms=T0)
        stored.append(kit.stamp(batch, base, 1))
    assert len(log.segments) >= 3
    records = [(o, ts) for b in stored for o, ts, _k, _v in kit.decode(b)]

    def expected(target, start=0):
        return next(((o, ts) for o, ts in records if o >= start and ts >= target), None)

    targets = [*sorted({ts + d for _o, ts in records for d in (-1, 0, 1)}), T0 - 10**6]
    for target in targets:
        assert log.offset_for_timestamp(target) == expected(target), target
    assert log.offset_for_timestamp(T0 + 61) is None  # past every timestamp
    log.close()
    log = Log.open(str(tmp_path / "log"), log.config, recovery_point=log.recovery_point, clean_shutdown=True)
    for target in targets:  # from loaded (not rebuilt) time indexes
        assert log.offset_for_timestamp(target) == expected(target), target
    log.delete_before(7)  # inside the batch holding offsets 4..7
    for target in targets:
        assert log.offset_for_timestamp(target) == expected(target, 7), target


# --- epochs --------------------------------------------------------------------------------------
def test_epochs_from_appends_and_assign_epoch(tmp_path, kit) -> None:
    log = open_log(tmp_path)
    log.append(kit.simple_batch(3), 1)
    log.assign_epoch(2)   # a new leader records its epoch before any append
    log.assign_epoch(2)
    log.append(kit.simple_batch(2), 2)
    log.append(kit.simple_batch(2), 5)
    log.append(kit.simple_batch(2), 4)  # an older epoch adds no entry
    assert log.epochs.entries == [(1, 0), (2, 3), (5, 5)]
    assert log.end_offset_for_epoch(1) == (1, 3)
    assert log.end_offset_for_epoch(3) == (2, 5)
    assert log.end_offset_for_epoch(5) == (5, 9)
    assert log.end_offset_for_epoch(6) == (-1, -1)
    path = os.path.join(log.path, "leader-epoch-checkpoint")
    with open(path, "rb") as f:
        assert f.read() == b"0\n3\n1 0\n2 3\n5 5\n"
    log.close()
    log = Log.open(log.path, log.config, recovery_point=9, clean_shutdown=True)
    assert log.epochs.entries == [(1, 0), (2, 3), (5, 5)]


# --- truncation ----------------------------------------------------------------------------------
def test_truncate_to_drops_whole_batches_and_epochs(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_bytes=400)
    for epoch in (1, 1, 2, 2, 3, 3):
        log.append(kit.simple_batch(3, value_bytes=30), epoch)
    assert len(log.segments) >= 3
    log.flush()
    log.truncate_to(10)  # 10 is inside the batch 9..11: it goes whole
    assert log.log_end_offset == 9
    assert log.recovery_point == 9
    assert log.epochs.entries == [(1, 0), (2, 6)]
    assert kit.header(kit.read_all(log)[-1]).last_offset == 8
    assert all(s.base_offset < 9 for s in log.segments)
    log.truncate_to(100)  # past the end: nothing
    assert log.log_end_offset == 9
    log.truncate_to(6)
    assert log.epochs.entries == [(1, 0)]
    base, _ = log.append(kit.simple_batch(1), 7)
    assert base == 6 and log.epochs.entries == [(1, 0), (7, 6)]


def test_truncate_fully_and_start_at(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_bytes=400)
    for _ in range(8):
        log.append(kit.simple_batch(3, value_bytes=30), 2)
    log.truncate_fully_and_start_at(500)
    assert (log.log_start_offset, log.log_end_offset, log.recovery_point) == (500, 500, 500)
    assert log.epochs.entries == []
    assert kit.segment_names(log.path) == [f"{500:020d}.log"]
    with pytest.raises(OffsetOutOfRangeError):
        log.read(499, 100)
    assert bytes(log.read(500, 100)) == b""
    assert log.append(kit.simple_batch(2), 3) == (500, 501)
    assert log.epochs.entries == [(3, 500)]
    log.close()
    for clean in (True, False):
        log = Log.open(log.path, log.config, recovery_point=502, log_start_offset=500, clean_shutdown=clean)
        assert (log.log_start_offset, log.log_end_offset) == (500, 502)
        assert log.epochs.entries == [(3, 500)]
        log.close()


def test_delete_before(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_bytes=400)
    for i in range(8):
        log.append(kit.simple_batch(3, value_bytes=30), 1 + i // 3)
    bases = [s.base_offset for s in log.segments]
    assert log.delete_before(bases[1] + 1) == 1
    assert log.log_start_offset == bases[1] + 1
    assert log.epochs.entries[0][1] == bases[1] + 1
    assert log.delete_before(2) == 0 and log.log_start_offset == bases[1] + 1  # never backwards
    end = log.log_end_offset
    log.delete_before(end)  # everything: the active segment is rolled so it can go
    assert (log.log_start_offset, log.log_end_offset) == (end, end)
    assert [s.base_offset for s in log.segments] == [end]
    assert log.recovery_point == end
    assert log.epochs.entries == [(3, end)]


# --- rolling -------------------------------------------------------------------------------------
def test_roll_by_segment_bytes(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_bytes=1000)
    for i in range(20):
        log.append(kit.simple_batch(2, value_bytes=40 + 10 * (i % 5)), 1)
    log.append(kit.simple_batch(4, value_bytes=600), 1)  # alone larger than a segment
    log.append(kit.simple_batch(1), 1)
    assert len(log.segments) >= 5
    for segment in log.segments:
        batches = kit.split_batches(segment.read_bytes(0, segment.size_bytes))
        assert segment.size_bytes <= 1000 or len(batches) == 1
        assert kit.header(batches[0]).base_offset == segment.base_offset
    for s, n in zip(log.segments, log.segments[1:]):
        assert s.size_bytes + kit.header(n.read_bytes(0, 61)).total_size > 1000, "rolled too early"
    assert log.recovery_point == log.segments[-1].base_offset  # a roll fsyncs what it closes


def test_roll_by_index_fullness(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_index_bytes=12 * 3, index_interval_bytes=1)
    for _ in range(10):
        log.append(kit.simple_batch(2), 1)
    assert [s.base_offset for s in log.segments] == [0, 6, 12, 18]
    assert [len(s.offset_index.positions) for s in log.segments] == [3, 3, 3, 1]


def test_roll_by_segment_ms(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_ms=1000)
    log.append(kit.simple_batch(1, ts=T0), 1, now_ms=T0)
    log.append(kit.simple_batch(1, ts=T0 + 1000), 1, now_ms=T0)  # exactly segment.ms: no roll
    assert len(log.segments) == 1
    log.append(kit.simple_batch(1, ts=T0 + 1001), 1, now_ms=T0)
    assert [s.base_offset for s in log.segments] == [0, 2]
    assert not log.should_roll_for_time(T0 + 2001)
    assert log.should_roll_for_time(T0 + 2002)  # an idle active segment, by the caller's clock
    log.roll(now_ms=T0 + 2002)
    assert [s.base_offset for s in log.segments] == [0, 2, 3]
    assert not log.should_roll_for_time(T0 + 10**9)  # empty active segment
    log.roll()
    assert len(log.segments) == 3  # rolling an empty segment is a no-op


# --- flushing and reopening ----------------------------------------------------------------------
def test_flush_messages_and_flush_ms(tmp_path, kit) -> None:
    log = open_log(tmp_path, flush_messages=5)
    log.append(kit.simple_batch(3), 1, now_ms=T0)
    assert log.recovery_point == 0
    log.append(kit.simple_batch(3), 1, now_ms=T0)
    assert log.recovery_point == 6
    log = open_log(tmp_path / "ms", flush_ms=1000)
    log.flush(now_ms=T0)
    log.append(kit.simple_batch(3), 1, now_ms=T0 + 10)
    assert not log.flush_if_due(T0 + 999)
    assert log.flush_if_due(T0 + 1000)
    assert log.recovery_point == 3
    assert not log.flush_if_due(T0 + 5000)  # nothing new


def test_close_and_reopen_keeps_everything(tmp_path, kit) -> None:
    log = open_log(tmp_path, segment_bytes=500, index_interval_bytes=100)
    stored = []
    for i in range(30):
        batch = kit.simple_batch(1 + i % 4, ts=T0 + i)
        base, _ = log.append(batch, 1 + i // 10, now_ms=T0)
        stored.append(kit.stamp(batch, base, 1 + i // 10))
    log.delete_before(5)
    state = (log.log_start_offset, log.log_end_offset, log.epochs.entries,
             [(s.base_offset, s.next_offset, s.max_timestamp, s.size_bytes) for s in log.segments])
    log.close()
    for clean in (True, False):
        log = Log.open(log.path, log.config, recovery_point=state[1], log_start_offset=5, clean_shutdown=clean)
        assert (log.log_start_offset, log.log_end_offset, log.epochs.entries,
                [(s.base_offset, s.next_offset, s.max_timestamp, s.size_bytes) for s in log.segments]) == state
        assert kit.read_all(log) == [b for b in stored if kit.header(b).last_offset >= 5]
        # unclean: the segment holding the recovery point was scanned again and counts as unflushed
        assert log.recovery_point == state[1] if clean else log.recovery_point == log.segments[-1].base_offset
        log.close()
