"""Recovery never trusts damaged files and never raises on them.

* torn tails: the last segment cut at every byte of its last batch and at random bytes across its
  last batches: reopening keeps exactly the whole batches before the cut, rebuilds the indexes;
* bit flips: recovery truncates before a flipped batch; for data below the recovery point (not
  scanned) `Log.read_verified` refuses it, so a reader never gets corrupt bytes;
* a missing, torn, garbage or lying `.index` / `.timeindex` is rebuilt on clean and unclean opens;
* a missing or corrupt `leader-epoch-checkpoint` is rebuilt from the batch headers.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from storage import CorruptRecordError, FileSystem, Log, LogConfig
from storage.segment import LogSegment

CONFIG = LogConfig(segment_bytes=1600, index_interval_bytes=250)
TORN_CONFIG = LogConfig(segment_bytes=4000, index_interval_bytes=250)  # many batches in the last segment
BATCHES = 36
OFFSET_ENTRY = struct.Struct(">ii")
TIME_ENTRY = struct.Struct(">qi")
RANDOM_CUTS = 400


# --------------------------------------------------------------------------- building and checking
def build_log(path: str, kit, *, batches: int = BATCHES, seed: int = 5, config: LogConfig = CONFIG,
              big_last: bool = False) -> list[bytes]:
    """A closed multi-segment log; returns the stored batches (offsets and epochs stamped)."""
    rng = random.Random(seed)
    log = Log.open(path, config, fs=FS)
    stored = []
    epoch = 1
    for i in range(batches):
        if i % 10 == 9:
            epoch += rng.choice([1, 2])
        last = big_last and i == batches - 1  # the torn-tail test cuts it at every byte
        compressible = i % 3 == 0 and not last
        records = kit.random_records(rng, 12 if last else rng.choice([1, 2, 4, 7]), kit.BASE_TS + 1000 * i,
                                     compressible=compressible)
        batch = kit.make_batch(records, codec=kit.CODEC_LZ4 if compressible else kit.CODEC_NONE)
        base, _ = log.append(batch, epoch, now_ms=kit.BASE_TS + 1000 * i)
        stored.append(kit.stamp(batch, base, epoch))
    assert len(log.segments) >= (2 if big_last else 4)
    log.close()
    return stored


def expected_epochs(kit, batches: list[bytes]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for b in batches:
        h = kit.header(b)
        if not out or h.leader_epoch > out[-1][0]:
            out.append((h.leader_epoch, h.base_offset))
    return out


def segment_layout(path: str, kit) -> dict[int, list[tuple[int, bytes]]]:
    """base offset -> [(position, batch bytes)] as stored in each .log file."""
    out = {}
    for name in kit.segment_names(path):
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        batches, pos = [], 0
        for b in kit.split_batches(data):
            batches.append((pos, b))
            pos += len(b)
        out[int(name[:-4])] = batches
    return out


def assert_indexes_valid(path: str, kit) -> None:
    """Every index entry says something true about its segment (checked from the .log bytes)."""
    for base, batches in segment_layout(path, kit).items():
        with open(os.path.join(path, f"{base:020d}.index"), "rb") as f:
            index = f.read()
        with open(os.path.join(path, f"{base:020d}.timeindex"), "rb") as f:
            time_index = f.read()
        assert len(index) % 8 == 0 and len(time_index) % 12 == 0
        by_position = {pos: kit.header(b) for pos, b in batches}
        entries = list(OFFSET_ENTRY.iter_unpack(index))
        assert (not batches) == (not entries)
        if entries:
            assert entries[0][1] == 0, "the first batch is always indexed"
        for rel, pos in entries:
            assert pos in by_position, f"index entry points inside a batch ({base}: {pos})"
            assert by_position[pos].last_offset == base + rel
        assert entries == sorted(set(entries))
        running_max, max_by_last = -1, {}
        for _, b in batches:
            h = kit.header(b)
            running_max = max(running_max, h.max_timestamp)
            max_by_last[h.last_offset] = running_max
        times = list(TIME_ENTRY.iter_unpack(time_index))
        assert (not batches) == (not times)
        for ts, rel in times:
            assert max_by_last.get(base + rel) == ts, f"time index entry ({ts}, {rel}) of {base} is wrong"
        assert times == sorted(set(times))


class NoSyncFileSystem(FileSystem):
    """Real files, fsync skipped: these tests reopen logs over and over but never simulate power
    loss (what was written stays readable, as after a process crash)."""

    def _fsync(self, f) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


FS = NoSyncFileSystem()


def reopen(path: str, config: LogConfig = CONFIG, **kw) -> Log:
    return Log.open(path, config, fs=FS, **kw)


# --------------------------------------------------------------------------- torn tails
def test_torn_tail_at_every_byte_and_random_cuts(tmp_path, kit) -> None:
    path = str(tmp_path / "log")
    stored = build_log(path, kit, config=TORN_CONFIG, big_last=True)
    snapshot = kit.DirSnapshot(path)
    layout = segment_layout(path, kit)
    last_base = max(layout)
    last_name = f"{last_base:020d}.log"
    last_batches = layout[last_base]
    before = [b for base in sorted(layout) if base != last_base for _, b in layout[base]]
    size = sum(len(b) for _, b in last_batches)
    last_start = last_batches[-1][0]
    assert len(last_batches) >= 10 and len(last_batches[-1][1]) >= 400
    rng = random.Random(7)
    cuts = list(range(last_start, size))  # every byte inside the last batch
    cuts += [rng.randrange(0, size) for _ in range(RANDOM_CUTS)]  # anywhere in the last segment
    reference: dict[int, tuple[bytes, bytes]] = {}  # kept batches -> indexes built by appending them

    for i, cut in enumerate(cuts):
        snapshot.restore()
        os.truncate(os.path.join(path, last_name), cut)
        recovery_point = rng.choice([0, last_base, stored and kit.header(stored[-1]).last_offset + 1])
        log = reopen(path, recovery_point=recovery_point, config=TORN_CONFIG)
        kept = [b for pos, b in last_batches if pos + len(b) <= cut]
        valid_end = sum(len(b) for b in kept)
        message = f"cut at {cut} (batch ends {[p + len(b) for p, b in last_batches]}), rp {recovery_point}"
        assert kit.read_all(log) == before + kept, message
        expected_end = kit.header(kept[-1]).last_offset + 1 if kept else last_base
        assert log.log_end_offset == expected_end, message
        assert log.truncated_bytes_on_open == cut - valid_end, message
        assert os.path.getsize(os.path.join(path, last_name)) == valid_end, message
        assert log.epochs.entries == expected_epochs(kit, before + kept), message
        for batch in kept[-2:]:
            offset = kit.header(batch).base_offset
            assert log.read_verified(offset, 1 << 20).startswith(batch)
        if len(kept) not in reference:
            reference[len(kept)] = _reference_indexes(tmp_path / f"ref-{len(kept)}", kit, before + kept,
                                                      last_base)
        last_stem = os.path.join(path, f"{last_base:020d}")
        with open(last_stem + ".index", "rb") as f, open(last_stem + ".timeindex", "rb") as g:
            assert (f.read(), g.read()) == reference[len(kept)], f"rebuilt indexes differ; {message}"
        if i % 50 == 0:  # the log goes on: append, read back, reopen clean
            base, _ = log.append(kit.simple_batch(2), 9, now_ms=kit.BASE_TS)
            assert base == expected_end
            assert kit.header(kit.read_all(log, base)[0]).base_offset == base
            log.close()
            log = reopen(path, recovery_point=base + 2, clean_shutdown=True, config=TORN_CONFIG)
            assert log.log_end_offset == base + 2
            log.truncate_to(base)
            assert kit.read_all(log) == before + kept
            assert_indexes_valid(path, kit)
        log.close()


def _reference_indexes(ref_dir, kit, batches: list[bytes], last_base: int) -> tuple[bytes, bytes]:
    """The last segment's indexes as the append path writes them for `batches`."""
    if all(kit.header(b).base_offset < last_base for b in batches):
        return b"", b""  # the last segment has no batch: empty indexes
    log = Log.open(str(ref_dir), TORN_CONFIG, fs=FS)
    for b in batches:
        h = kit.header(b)
        log.append(b, h.leader_epoch, now_ms=kit.BASE_TS)
    log.close()
    stem = os.path.join(str(ref_dir), f"{last_base:020d}")
    with open(stem + ".index", "rb") as f, open(stem + ".timeindex", "rb") as g:
        return f.read(), g.read()


def test_torn_tail_with_zeroes_or_garbage_after_the_last_batch(tmp_path, kit) -> None:
    """Preallocated zeroes or random garbage past the last whole batch are cut off, not parsed."""
    path = str(tmp_path / "log")
    stored = build_log(path, kit)
    snapshot = kit.dir_snapshot(path)
    last_name = kit.segment_names(path)[-1]
    rng = random.Random(3)
    for tail in [b"\x00" * 4096, rng.randbytes(61), rng.randbytes(3000), b"\xff" * 100]:
        kit.dir_restore(path, snapshot)
        with open(os.path.join(path, last_name), "ab") as f:
            f.write(tail)
        log = reopen(path)
        assert kit.read_all(log) == stored
        assert log.truncated_bytes_on_open == len(tail)
        log.close()


# --------------------------------------------------------------------------- bit flips
def _flat(layout: dict[int, list[tuple[int, bytes]]]) -> list[tuple[int, int, bytes]]:
    return [(base, pos, b) for base in sorted(layout) for pos, b in layout[base]]


def test_bit_flip_is_cut_off_by_recovery(tmp_path, kit) -> None:
    """A flip anywhere CRC, magic or length cover, in a scanned segment: the log ends before it."""
    path = str(tmp_path / "log")
    stored = build_log(path, kit)
    snapshot = kit.dir_snapshot(path)
    flat = _flat(segment_layout(path, kit))
    rng = random.Random(11)
    for _ in range(150):
        kit.dir_restore(path, snapshot)
        i = rng.randrange(len(flat))
        base, pos, batch = flat[i]
        # baseOffset (0..7) and partitionLeaderEpoch (12..15) are outside the CRC by design
        byte = rng.choice([b for b in range(8, len(batch)) if not 12 <= b < 16])
        kit.flip_bit(os.path.join(path, f"{base:020d}.log"), pos + byte, rng.randrange(8))
        recovery_point = rng.choice([0, base])
        log = reopen(path, recovery_point=recovery_point)
        message = f"flip at byte {byte} of batch #{i} (segment {base}), rp {recovery_point}"
        assert kit.read_all(log) == stored[:i], message
        assert log.log_end_offset == kit.header(batch).base_offset, message
        assert all(s.base_offset <= kit.header(batch).base_offset for s in log.segments), message
        assert log.epochs.entries == expected_epochs(kit, stored[:i]), message
        assert len(list(log.batches())) == i  # CRC-verified reads of every batch left
        log.close()
        assert_indexes_valid(path, kit)


@pytest.mark.parametrize("clean", [True, False])
def test_bit_flip_below_the_recovery_point_is_refused_at_read_time(tmp_path, kit, clean) -> None:
    """Recovery does not scan below the recovery point; `read_verified` is what protects readers."""
    path = str(tmp_path / "log")
    stored = build_log(path, kit)
    snapshot = kit.dir_snapshot(path)
    layout = segment_layout(path, kit)
    last_base = max(layout)
    flat = [(base, pos, b) for base, pos, b in _flat(layout) if base != last_base]
    end = kit.header(stored[-1]).last_offset + 1
    originals = set(stored)
    rng = random.Random(13 + clean)
    for n in range(60):
        kit.dir_restore(path, snapshot)
        i = rng.randrange(len(flat))
        base, pos, batch = flat[i]
        # records, CRC and magic: the bytes that do not steer navigation
        byte = rng.choice([16, 17, 18, 19, 20, *range(61, len(batch))])
        if n % 3 == 0:  # anywhere the CRC covers, header fields included
            byte = rng.randrange(16, len(batch))
        kit.flip_bit(os.path.join(path, f"{base:020d}.log"), pos + byte, rng.randrange(8))
        log = reopen(path, recovery_point=end, clean_shutdown=clean)
        message = f"flip at byte {byte} of batch #{i} (segment {base}), clean={clean}"
        assert log.log_end_offset == end, message
        corrupt_offset = kit.header(batch).base_offset
        if byte < 21 or byte >= 61:
            with pytest.raises(CorruptRecordError):
                log.read_verified(corrupt_offset, 1 << 20)
            with pytest.raises(CorruptRecordError):
                list(log.batches())
        # whatever is asked, a verified read is either refused or exactly original batches
        for offset in range(log.log_start_offset, end, 3):
            for max_bytes in (1, 700, 1 << 20):
                try:
                    data = log.read_verified(offset, max_bytes)
                except CorruptRecordError:
                    continue
                assert all(b in originals for b in kit.split_batches(data)), message
        log.close()


# --------------------------------------------------------------------------- damaged indexes
def _damage_offset_index(kind: str, path: str, rng: random.Random) -> None:
    with open(path, "rb") as f:
        data = f.read()
    log_size = os.path.getsize(path[: -len(".index")] + ".log")
    entries = list(OFFSET_ENTRY.iter_unpack(data))
    if kind == "missing":
        os.remove(path)
        return
    if kind == "empty":
        data = b""
    elif kind == "torn":
        data = data[:-3]
    elif kind == "garbage":
        data = rng.randbytes(len(data))
    elif kind == "garbage_odd":
        data = rng.randbytes(len(data) + 5)
    elif kind == "past_the_log":
        data += OFFSET_ENTRY.pack(entries[-1][0] + 1000, log_size + 100)
    elif kind == "inside_a_batch":
        rel, pos = entries[-1]
        data = data[:-8] + OFFSET_ENTRY.pack(rel, pos + 5)
    elif kind == "wrong_offset":
        rel, pos = entries[-1]
        data = data[:-8] + OFFSET_ENTRY.pack(rel + 3, pos)
    elif kind == "first_not_at_zero":
        data = b"".join(OFFSET_ENTRY.pack(rel, pos) for rel, pos in entries[1:])
    else:
        raise AssertionError(kind)
    with open(path, "wb") as f:
        f.write(data)


def _damage_time_index(kind: str, path: str, rng: random.Random) -> None:
    with open(path, "rb") as f:
        data = f.read()
    entries = list(TIME_ENTRY.iter_unpack(data))
    if kind == "missing":
        os.remove(path)
        return
    if kind == "empty":
        data = b""
    elif kind == "torn":
        data = data[:-5]
    elif kind == "garbage":
        data = rng.randbytes(len(data))
    elif kind == "past_the_segment":
        ts, rel = entries[-1]
        data += TIME_ENTRY.pack(ts + 1, rel + 10_000)
    else:
        raise AssertionError(kind)
    with open(path, "wb") as f:
        f.write(data)


OFFSET_INDEX_DAMAGE = ["missing", "empty", "torn", "garbage", "garbage_odd", "past_the_log", "inside_a_batch",
                       "wrong_offset", "first_not_at_zero"]
TIME_INDEX_DAMAGE = ["missing", "empty", "torn", "garbage", "past_the_segment"]


def _check_rebuilt(path: str, kit, stored: list[bytes], snapshot: dict[str, bytes], log: Log,
                   segment_maxima: list[tuple[int, int]]) -> None:
    assert kit.read_all(log) == stored
    for max_bytes in (1, 500, 3000):  # reads through the indexes land on the right batches
        for b in stored[::3]:
            data = log.read_verified(kit.header(b).base_offset, max_bytes)
            assert data.startswith(b)
    assert [(s.base_offset, s.max_timestamp) for s in log.segments] == segment_maxima
    targets = sorted({kit.header(b).max_timestamp for b in stored})
    for target in [*targets[::4], targets[-1] + 1]:
        expected = next(((o, ts) for b in stored for o, ts, _k, _v in kit.decode(b) if ts >= target), None)
        assert log.offset_for_timestamp(target) == expected
    log.close()
    current = kit.dir_snapshot(path)
    for name, data in snapshot.items():
        if name.endswith((".index", ".timeindex")):
            assert current[name] == data, f"{name} not rebuilt to what the append path wrote"


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("kind", OFFSET_INDEX_DAMAGE)
def test_damaged_offset_index_is_rebuilt(tmp_path, kit, decode_records_available, kind, clean) -> None:
    _damaged_index_case(tmp_path, kit, ".index", kind, clean, _damage_offset_index)


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("kind", TIME_INDEX_DAMAGE)
def test_damaged_time_index_is_rebuilt(tmp_path, kit, decode_records_available, kind, clean) -> None:
    _damaged_index_case(tmp_path, kit, ".timeindex", kind, clean, _damage_time_index)


def _damaged_index_case(tmp_path, kit, ext: str, kind: str, clean: bool, damage) -> None:
    path = str(tmp_path / "log")
    stored = build_log(path, kit)
    log = reopen(path, clean_shutdown=True)
    segment_maxima = [(s.base_offset, s.max_timestamp) for s in log.segments]
    end = log.log_end_offset
    log.close()
    snapshot = kit.dir_snapshot(path)
    names = kit.segment_names(path, ext)
    rng = random.Random(kind)
    for name in (names[0], names[len(names) // 2], names[-1]):  # first, middle, active segment
        kit.dir_restore(path, snapshot)
        damage(kind, os.path.join(path, name), rng)
        # recovery point at the log end: every segment is trusted, nothing would be scanned
        log = reopen(path, recovery_point=end, log_start_offset=0, clean_shutdown=clean)
        assert log.truncated_bytes_on_open == 0
        _check_rebuilt(path, kit, stored, snapshot, log, segment_maxima)


# --------------------------------------------------------------------------- the epoch checkpoint
@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("content", [None, b"", b"garbage\n", b"1\n1\n0 0\n", b"0\n3\n1 0\n2 9\n",
                                     b"0\n2\n1 0\nx 9\n", b"0\n1\n1 0 7\n", b"\xff\xfe\n"])
def test_missing_or_corrupt_epoch_checkpoint_is_rebuilt(tmp_path, kit, content, clean) -> None:
    path = str(tmp_path / "log")
    stored = build_log(path, kit)
    checkpoint = os.path.join(path, "leader-epoch-checkpoint")
    expected = expected_epochs(kit, stored)
    assert len(expected) >= 3
    if content is None:
        os.remove(checkpoint)
    else:
        with open(checkpoint, "wb") as f:
            f.write(content)
    end = kit.header(stored[-1]).last_offset + 1
    log = reopen(path, recovery_point=end, clean_shutdown=clean)
    assert log.epochs.entries == expected
    assert log.end_offset_for_epoch(expected[0][0]) == (expected[0][0], expected[1][1])
    log.close()
    with open(checkpoint, "rb") as f:
        lines = f.read().decode().split("\n")
    assert lines[:2] == ["0", str(len(expected))]
    assert [tuple(map(int, line.split())) for line in lines[2:-1]] == expected


# --------------------------------------------------------------------------- leftovers
def test_clean_open_scans_no_data(tmp_path, kit, monkeypatch) -> None:
    """After a clean close, a clean open loads indexes and reads only the tail after the last
    index entry of each segment: no CRC scan (`LogSegment.recover`), no epoch rebuild."""
    path = str(tmp_path / "log")
    config = LogConfig(segment_bytes=50_000, index_interval_bytes=4096)
    log = Log.open(path, config)
    rng = random.Random(1)
    for i in range(600):
        log.append(kit.make_batch(kit.random_records(rng, 5, kit.BASE_TS + i)), 1 + i // 100, now_ms=kit.BASE_TS)
    data_bytes = log.size_bytes
    segments = len(log.segments)
    assert segments >= 3
    log.close()

    recovers, scans, read_bytes = [], [], []
    real_recover, real_scan, real_pread = LogSegment.recover, Log._scan_epochs, FileSystem._pread
    monkeypatch.setattr(LogSegment, "recover", lambda self, *a: recovers.append(self) or real_recover(self, *a))
    monkeypatch.setattr(Log, "_scan_epochs", lambda self: scans.append(self) or real_scan(self))

    def counting_pread(self, f, position, length):
        if f.path.endswith(".log"):
            read_bytes.append(length)
        return real_pread(self, f, position, length)

    monkeypatch.setattr(FileSystem, "_pread", counting_pread)
    log = Log.open(path, config, recovery_point=log.recovery_point, clean_shutdown=True)
    assert (recovers, scans) == ([], [])
    # per segment: the first header and the batches after the last index entry (< interval + a batch)
    assert sum(read_bytes) <= segments * (61 + 4096 + 8192), f"{sum(read_bytes)} of {data_bytes} bytes read"
    assert log.log_end_offset == 600 * 5
    log.close()

    recovers.clear()
    log = Log.open(path, config)  # not clean: every segment from the recovery point (0) is scanned
    assert len(recovers) == segments
    log.close()
