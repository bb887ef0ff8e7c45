"""storage.checkpoint: Kafka-format checkpoint files, written atomically, never trusted when damaged."""

from __future__ import annotations

import errno
import os

import pytest

from storage.checkpoint import (
    CheckpointError,
    read_checkpoint,
    read_int_checkpoint,
    write_atomic,
    write_checkpoint,
)
from storage.files import FaultyFileSystem, FileSystem

ENTRIES = [(0, 0), (3, 120), (7, 4500), (12, 10_000_000_000)]


def test_round_trip_and_kafka_format(tmp_path) -> None:
    fs = FileSystem()
    path = str(tmp_path / "leader-epoch-checkpoint")
    write_checkpoint(fs, path, ENTRIES)
    with open(path, "rb") as f:
        assert f.read() == b"0\n4\n0 0\n3 120\n7 4500\n12 10000000000\n"
    assert read_int_checkpoint(fs, path) == ENTRIES
    write_checkpoint(fs, path, [])
    assert read_int_checkpoint(fs, path) == []
    write_checkpoint(fs, path, [("topic-a", 0, 17), ("b", 3, 0)])
    assert read_checkpoint(fs, path, 3) == [["topic-a", "0", "17"], ["b", "3", "0"]]
    assert not os.path.exists(path + ".tmp")


def test_missing_file_reads_as_none(tmp_path) -> None:
    assert read_int_checkpoint(FileSystem(), str(tmp_path / "nothing")) is None


@pytest.mark.parametrize("content", [
    b"",                               # empty
    b"0\n",                            # no count
    b"1\n1\n0 0\n",                    # unknown version
    b"0\nx\n",                         # count not a number
    b"0\n-1\n",                        # negative count
    b"0\n2\n0 0\n",                    # fewer entries than the count
    b"0\n1\n0 0\n1 5\n",               # more entries than the count
    b"0\n1\n0 0 0\n",                  # wrong number of fields
    b"0\n1\n0\n",
    b"0\n1\nzero 0\n",                 # not an int
    b"\xff\xfe\x00garbage",            # not ascii
    b"0\n1\n3 7",                      # no final newline: a torn write
])
def test_damaged_files_raise(tmp_path, content) -> None:
    path = str(tmp_path / "cp")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(CheckpointError):
        read_int_checkpoint(FileSystem(), path)


def test_every_truncation_is_detected(tmp_path) -> None:
    """A checkpoint cut at any byte (a torn copy, a bad disk) never parses as something else."""
    fs = FileSystem()
    path = str(tmp_path / "cp")
    write_checkpoint(fs, path, ENTRIES)
    with open(path, "rb") as f:
        whole = f.read()
    for cut in range(len(whole)):
        with open(path, "wb") as f:
            f.write(whole[:cut])
        with pytest.raises(CheckpointError):
            read_int_checkpoint(fs, path)


@pytest.mark.parametrize(("op", "partial"), [("open", False), ("write", False), ("write", True), ("fsync", False),
                                             ("rename", False)])
@pytest.mark.parametrize("crash", [False, True])
def test_failed_rewrite_leaves_the_old_file(tmp_path, op, partial, crash) -> None:
    """Temp file, fsync, rename, directory fsync: a failure at any step, with or without a power
    loss after it, leaves the previous checkpoint whole."""
    fs = FaultyFileSystem(seed=3)
    path = str(tmp_path / "cp")
    write_checkpoint(fs, path, ENTRIES[:2])
    fs.fail_next(op, errno.EIO, partial=partial)
    with pytest.raises(OSError):
        write_checkpoint(fs, path, ENTRIES)
    if crash:
        fs.crash(torn=True)
    assert read_int_checkpoint(fs, path) == ENTRIES[:2]


def test_power_loss_after_a_rewrite_keeps_the_new_file(tmp_path) -> None:
    fs = FaultyFileSystem(seed=4)
    path = str(tmp_path / "cp")
    write_checkpoint(fs, path, ENTRIES[:2])
    write_checkpoint(fs, path, ENTRIES)
    fs.crash(torn=True)
    assert read_int_checkpoint(fs, path) == ENTRIES


def test_write_atomic_replaces_a_longer_stale_temp_file(tmp_path) -> None:
    fs = FileSystem()
    path = str(tmp_path / "cp")
    with open(path + ".tmp", "wb") as f:
        f.write(b"x" * 1000)
    write_atomic(fs, path, b"0\n0\n")
    with open(path, "rb") as f:
        assert f.read() == b"0\n0\n"
