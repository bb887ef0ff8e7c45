"""storage.offset_index.OffsetIndex and storage.time_index.TimeIndex on real files."""

from __future__ import annotations

import struct

import pytest

from storage.files import FileSystem
from storage.offset_index import IndexCorruptError, OffsetIndex
from storage.time_index import TimeIndex

BASE = 1000


@pytest.fixture
def offset_index(tmp_path):
    index = OffsetIndex(FileSystem(), str(tmp_path / "00000000000000001000.index"), BASE, entries_max=5)
    yield index
    index.close()


@pytest.fixture
def time_index(tmp_path):
    index = TimeIndex(FileSystem(), str(tmp_path / "00000000000000001000.timeindex"), BASE, entries_max=4)
    yield index
    index.close()


def _file(index) -> bytes:
    with open(index.path, "rb") as f:
        return f.read()


def _write(index, data: bytes) -> None:
    with open(index.path, "wb") as f:
        f.write(data)
    index._file.size = len(data)


# --- offset index --------------------------------------------------------------------------------
def fill(index: OffsetIndex) -> None:
    for offset, position in [(1000, 0), (1004, 300), (1010, 700), (1011, 900)]:
        index.append(offset, position)


def test_offset_index_file_layout(offset_index) -> None:
    fill(offset_index)
    assert _file(offset_index) == b"".join(struct.pack(">ii", r, p) for r, p in [(0, 0), (4, 300), (10, 700),
                                                                                  (11, 900)])
    assert offset_index.size_bytes == 32


@pytest.mark.parametrize(("offset", "expected"), [
    (999, (999, 0)),      # before the first entry: scan from the segment start
    (1000, (1000, 0)),
    (1003, (1000, 0)),
    (1004, (1004, 300)),
    (1009, (1004, 300)),
    (1010, (1010, 700)),
    (1011, (1011, 900)),
    (5000, (1011, 900)),
])
def test_offset_index_lookup(offset_index, offset, expected) -> None:
    fill(offset_index)
    assert offset_index.lookup(offset) == expected


def test_offset_index_lookup_empty(offset_index) -> None:
    assert offset_index.lookup(1234) == (BASE - 1, 0)
    assert offset_index.lookup_position(77) == 0
    assert offset_index.last_position == 0


def test_offset_index_lookup_position(offset_index) -> None:
    fill(offset_index)
    assert [offset_index.lookup_position(p) for p in (0, 299, 300, 699, 700, 901, 10**6)] == \
        [0, 0, 300, 300, 700, 900, 900]


def test_offset_index_skips_entries_that_do_not_increase(offset_index) -> None:
    fill(offset_index)
    offset_index.append(1011, 1000)  # same offset
    offset_index.append(1012, 900)   # same position
    offset_index.append(1005, 2000)  # offset backwards
    assert offset_index.relative_offsets == [0, 4, 10, 11]
    assert len(_file(offset_index)) == 32


def test_offset_index_is_full(offset_index) -> None:
    fill(offset_index)
    assert not offset_index.is_full
    offset_index.append(1020, 1000)
    assert offset_index.is_full


def test_offset_index_truncate(offset_index) -> None:
    fill(offset_index)
    offset_index.truncate_to_offset(1010)  # entries for batches whose last offset >= 1010 go
    assert offset_index.relative_offsets == [0, 4]
    assert len(_file(offset_index)) == 16
    offset_index.truncate_to_offset(2000)
    assert offset_index.relative_offsets == [0, 4]
    offset_index.truncate_to_position(300)
    assert offset_index.positions == [0]
    offset_index.truncate_to_position(0)
    assert offset_index.positions == [] and _file(offset_index) == b""


def test_offset_index_reload(tmp_path, offset_index) -> None:
    fill(offset_index)
    again = OffsetIndex(FileSystem(), offset_index.path, BASE, entries_max=5)
    again.load(log_size_bytes=1000)
    assert (again.relative_offsets, again.positions) == ([0, 4, 10, 11], [0, 300, 700, 900])
    again.close()


@pytest.mark.parametrize(("data", "log_size"), [
    (struct.pack(">ii", 0, 0) + b"\x00\x01", 100),                    # torn entry
    (struct.pack(">ii", 0, 0) + struct.pack(">ii", 5, 500), 400),     # points past the log
    (struct.pack(">ii", 0, 0) + struct.pack(">ii", 5, 400), 400),     # points at the log end
    (struct.pack(">ii", 3, 0) + struct.pack(">ii", 2, 40), 400),      # offsets decrease
    (struct.pack(">ii", 3, 50) + struct.pack(">ii", 4, 40), 400),     # positions decrease
    (struct.pack(">ii", 3, 50) + struct.pack(">ii", 3, 60), 400),     # offsets repeat
    (struct.pack(">ii", -1, 0), 400),                                  # below the base offset
    (struct.pack(">ii", 0, -8), 400),                                  # negative position
])
def test_offset_index_load_rejects_inconsistent_files(offset_index, data, log_size) -> None:
    _write(offset_index, data)
    with pytest.raises(IndexCorruptError):
        offset_index.load(log_size)


def test_offset_index_reset(offset_index) -> None:
    fill(offset_index)
    offset_index.reset()
    assert offset_index.positions == [] and _file(offset_index) == b""


# --- time index ----------------------------------------------------------------------------------
def fill_time(index: TimeIndex) -> None:
    for ts, offset in [(100, 1000), (250, 1004), (400, 1010)]:
        index.maybe_append(ts, offset)


def test_time_index_file_layout(time_index) -> None:
    fill_time(time_index)
    assert _file(time_index) == b"".join(struct.pack(">qi", t, r) for t, r in [(100, 0), (250, 4), (400, 10)])
    assert time_index.last_timestamp == 400


def test_time_index_only_appends_a_growing_max(time_index) -> None:
    fill_time(time_index)
    time_index.maybe_append(400, 1011)   # max did not grow
    time_index.maybe_append(300, 1012)   # lower
    time_index.maybe_append(500, 1009)   # offset backwards
    assert time_index.timestamps == [100, 250, 400]
    time_index.maybe_append(401, 1010)   # same offset, larger max: allowed
    assert time_index.timestamps == [100, 250, 400, 401]
    assert time_index.is_full


@pytest.mark.parametrize(("timestamp", "expected"), [
    (0, 1000),      # nothing older: scan from the segment base
    (100, 1000),    # an entry equal to the target does not let us skip past it
    (101, 1000),    # batches up to 1000 are all < 101: scan from there (harmlessly one batch early)
    (250, 1000),
    (251, 1004),
    (400, 1004),
    (401, 1010),
    (10**15, 1010),
])
def test_time_index_lookup(time_index, timestamp, expected) -> None:
    fill_time(time_index)
    assert time_index.lookup(timestamp) == expected


def test_time_index_lookup_empty(time_index) -> None:
    assert time_index.lookup(123) == BASE
    assert time_index.last_timestamp == -1


def test_time_index_truncate_and_reload(time_index) -> None:
    fill_time(time_index)
    time_index.truncate_to_offset(1004)
    assert time_index.timestamps == [100]
    again = TimeIndex(FileSystem(), time_index.path, BASE, entries_max=4)
    again.load()
    assert (again.timestamps, again.relative_offsets) == ([100], [0])
    again.close()


@pytest.mark.parametrize("data", [
    struct.pack(">qi", 1, 0) + b"\x00" * 5,                          # torn
    struct.pack(">qi", 100, 0) + struct.pack(">qi", 100, 3),         # timestamps repeat
    struct.pack(">qi", 100, 5) + struct.pack(">qi", 200, 3),         # offsets decrease
])
def test_time_index_load_rejects_inconsistent_files(time_index, data) -> None:
    _write(time_index, data)
    with pytest.raises(IndexCorruptError):
        time_index.load()
