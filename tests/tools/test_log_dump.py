"""`brokerctl log dump` against segment files built by hand (struct + crc32c + lz4.frame).

The batches are encoded here independently of `client.wire` (zigzag varints, record layout of
KAFKA_PROTOCOL.md §3.3, lz4 frame for codec 3), so the dump is checked against a second
implementation of the format, not against itself. Layout of the partition directory:

    00000000000000000000.log  A offsets 0..2 epoch 1 (none)   B 3..4 epoch 1 (lz4)   C 5 epoch 2 (txn)
    00000000000000000006.log  D 6..7 epoch 2   E 8 epoch 2 (CRC broken)   F 9..10 epoch 3   torn tail
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import crc32c
import lz4.frame
import pytest
from click.testing import CliRunner

import tools.brokerctl as brokerctl
from broker.main import main as brokerd_main
from client.wire import records as wire_records
from tools.brokerctl import main

REPO_ROOT = Path(__file__).resolve().parents[2]
HAS_DECODE_RECORDS = hasattr(wire_records, "decode_records")
needs_decode_records = pytest.mark.skipif(not HAS_DECODE_RECORDS,
                                          reason="client.wire.records.decode_records not landed yet")

BASE_TS = 1_700_000_000_000
HEADER = struct.Struct(">qiibIhiqqqhii")
TORN_TAIL_BYTES = 30


# --- a small independent batch writer -----------------------------------------------------------


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _bytes_field(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def _record(offset_delta: int, timestamp_delta: int, key: bytes | None, value: bytes | None,
            headers: list[tuple[str, bytes | None]]) -> bytes:
    body = bytearray(b"\x00")  # record attributes, unused
    body += _varint(timestamp_delta) + _varint(offset_delta) + _bytes_field(key) + _bytes_field(value)
    body += _varint(len(headers))
    for name, header_value in headers:
        body += _bytes_field(name.encode()) + _bytes_field(header_value)
    return _varint(len(body)) + bytes(body)


def make_batch(base_offset: int, leader_epoch: int, records: list[tuple], codec: int = 0,
               attributes_extra: int = 0, producer_id: int = -1, producer_epoch: int = -1,
               base_sequence: int = -1) -> bytes:
    """records: (key, value, headers) tuples; timestamps are BASE_TS + 10 * offset delta."""
    encoded = b"".join(_record(i, 10 * i, key, value, headers) for i, (key, value, headers) in enumerate(records))
    if codec == 3:
        encoded = lz4.frame.compress(encoded, store_size=False)
    attributes = codec | attributes_extra
    header = bytearray(HEADER.pack(base_offset, 0, leader_epoch, 2, 0, attributes, len(records) - 1, BASE_TS,
                                   BASE_TS + 10 * (len(records) - 1), producer_id, producer_epoch,
                                   base_sequence, len(records)))
    batch = header + encoded
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


BATCH_A = make_batch(0, 1, [(b"k0", b"v0", [("h", b"x")]), (None, b"v1", []), (b"k2", None, [("n", None)])])
BATCH_B = make_batch(3, 1, [(b"k3", b"hello " * 20, []), (b"k4", b"\xff\xfe\x00", [])], codec=3)
BATCH_C = make_batch(5, 2, [(b"k5", b"v5", [])], attributes_extra=0x10, producer_id=7, producer_epoch=1,
                     base_sequence=0)
BATCH_D = make_batch(6, 2, [(b"k6", b"v6", []), (b"k7", b"v7", [])])
BATCH_E_GOOD = make_batch(8, 2, [(b"k8", b"v8", [])])
BATCH_E = BATCH_E_GOOD[:-1] + bytes([BATCH_E_GOOD[-1] ^ 0x01])  # one bit flipped in the value
BATCH_F = make_batch(9, 3, [(b"k9", b"v9", []), (b"k10", b"v10", [])])
TORN = make_batch(11, 3, [(b"k11", b"v11", [])])[:TORN_TAIL_BYTES]

SEGMENT_0 = "00000000000000000000.log"
SEGMENT_1 = "00000000000000000006.log"


@pytest.fixture
def partition_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "topic-0"
    directory.mkdir()
    # Written out of name order on purpose; the dump must sort by base offset.
    (directory / SEGMENT_1).write_bytes(BATCH_D + BATCH_E + BATCH_F + TORN)
    (directory / SEGMENT_0).write_bytes(BATCH_A + BATCH_B + BATCH_C)
    for name in ("00000000000000000000.index", "00000000000000000000.timeindex", "leader-epoch-checkpoint"):
        (directory / name).write_bytes(b"\x00" * 8)
    return directory


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["log", "dump", *args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.stdout, result.stderr


def entries(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# --- JSON -----------------------------------------------------------------------------------------


def test_json_dump_of_partition_directory(partition_dir: Path) -> None:
    code, stdout, stderr = run(str(partition_dir), "--json")
    assert code == 1, stderr  # batch E has a bad CRC
    dumped = entries(stdout)
    assert [e["type"] for e in dumped] == ["segment", "batch", "batch", "batch",
                                           "segment", "batch", "batch", "batch", "torn_tail", "summary"]
    assert dumped[0] == {"type": "segment", "segment": SEGMENT_0, "base_offset": 0,
                         "size_bytes": len(BATCH_A) + len(BATCH_B) + len(BATCH_C)}
    assert dumped[1] == {
        "type": "batch", "segment": SEGMENT_0, "position": 0, "base_offset": 0, "last_offset": 2,
        "leader_epoch": 1, "magic": 2, "count": 3, "codec": "none", "attributes": 0,
        "timestamp_type": "create_time", "transactional": False, "control": False, "producer_id": -1,
        "producer_epoch": -1, "base_sequence": -1, "base_timestamp": BASE_TS, "max_timestamp": BASE_TS + 20,
        "size_bytes": len(BATCH_A), "crc": struct.unpack_from(">I", BATCH_A, 17)[0],
        "crc_computed": struct.unpack_from(">I", BATCH_A, 17)[0], "crc_valid": True,
    }
    batches = [e for e in dumped if e["type"] == "batch"]
    assert [(b["base_offset"], b["last_offset"], b["leader_epoch"]) for b in batches] == [
        (0, 2, 1), (3, 4, 1), (5, 5, 2), (6, 7, 2), (8, 8, 2), (9, 10, 3)]
    assert [b["position"] for b in batches[3:]] == [0, len(BATCH_D), len(BATCH_D) + len(BATCH_E)]
    assert batches[1]["codec"] == "lz4" and batches[1]["attributes"] == 3
    assert batches[2]["transactional"] and not batches[2]["control"]
    assert (batches[2]["producer_id"], batches[2]["producer_epoch"], batches[2]["base_sequence"]) == (7, 1, 0)
    assert [b["crc_valid"] for b in batches] == [True, True, True, True, False, True]
    bad = batches[4]
    assert bad["crc"] == struct.unpack_from(">I", BATCH_E_GOOD, 17)[0] != bad["crc_computed"]
    assert "records" not in bad
    assert dumped[-2] == {"type": "torn_tail", "segment": SEGMENT_1,
                          "position": len(BATCH_D) + len(BATCH_E) + len(BATCH_F),
                          "size_bytes": TORN_TAIL_BYTES, "expected_size_bytes": len(make_batch(
                              11, 3, [(b"k11", b"v11", [])]))}
    assert dumped[-1] == {"type": "summary", "segments": 2, "batches": 6, "records": 11, "invalid_batches": 1,
                          "torn_tails": 1, "bad_lengths": 0}


def test_torn_tail_alone_exits_zero(tmp_path: Path) -> None:
    segment = tmp_path / SEGMENT_1
    segment.write_bytes(BATCH_D + BATCH_F + TORN)
    code, stdout, _ = run(str(segment), "--json")
    assert code == 0
    dumped = entries(stdout)
    assert [e["type"] for e in dumped] == ["segment", "batch", "batch", "torn_tail", "summary"]
    assert dumped[3]["position"] == len(BATCH_D) + len(BATCH_F)


def test_tail_shorter_than_length_field(tmp_path: Path) -> None:
    segment = tmp_path / SEGMENT_0
    segment.write_bytes(BATCH_A + BATCH_B[:5])
    code, stdout, _ = run(str(segment), "--json")
    assert code == 0
    assert entries(stdout)[-2] == {"type": "torn_tail", "segment": SEGMENT_0, "position": len(BATCH_A),
                                   "size_bytes": 5, "expected_size_bytes": None}


@pytest.mark.parametrize("batch_length", [0, 48, -5, 2**31 - 1])
def test_impossible_length_stops_segment_and_exits_one(tmp_path: Path, batch_length: int) -> None:
    broken = bytearray(BATCH_B)
    struct.pack_into(">i", broken, 8, batch_length)
    (tmp_path / SEGMENT_0).write_bytes(BATCH_A + bytes(broken) + BATCH_C)
    (tmp_path / SEGMENT_1).write_bytes(BATCH_D)
    code, stdout, _ = run(str(tmp_path), "--json")
    assert code == 1
    dumped = entries(stdout)
    assert [e["type"] for e in dumped] == ["segment", "batch", "bad_length", "segment", "batch", "summary"]
    assert dumped[2] == {"type": "bad_length", "segment": SEGMENT_0, "position": len(BATCH_A),
                         "size_bytes": len(BATCH_B) + len(BATCH_C), "batch_length": batch_length}
    assert dumped[-1]["bad_lengths"] == 1


def test_max_batch_bytes_option(tmp_path: Path) -> None:
    (tmp_path / SEGMENT_0).write_bytes(BATCH_A + BATCH_B)
    code, stdout, _ = run(str(tmp_path), "--json", "--max-batch-bytes", str(len(BATCH_A)))
    assert code == 1
    assert [e["type"] for e in entries(stdout)] == ["segment", "batch", "bad_length", "summary"]


def test_wrong_magic_is_corrupt(tmp_path: Path) -> None:
    broken = bytearray(BATCH_A)
    broken[16] = 1  # magic is outside the CRC: the CRC still matches
    (tmp_path / SEGMENT_0).write_bytes(bytes(broken) + BATCH_B)
    code, stdout, _ = run(str(tmp_path), "--json")
    assert code == 1
    first = entries(stdout)[1]
    assert (first["magic"], first["crc_valid"]) == (1, True)
    assert entries(stdout)[-1]["invalid_batches"] == 1


def test_reads_are_bounded_by_one_batch(partition_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[int] = []
    real_pread = os.pread

    def recording_pread(fd: int, length: int, position: int) -> bytes:
        lengths.append(length)
        return real_pread(fd, length, position)

    monkeypatch.setattr(brokerctl.os, "pread", recording_pread)
    run(str(partition_dir), "--json")
    assert lengths and max(lengths) == max(len(b) for b in (BATCH_A, BATCH_B, BATCH_C, BATCH_D, BATCH_F))


def test_empty_segment_and_empty_directory(tmp_path: Path) -> None:
    code, stdout, _ = run(str(tmp_path), "--json")
    assert (code, entries(stdout)[-1]["segments"]) == (0, 0)
    (tmp_path / SEGMENT_0).write_bytes(b"")
    code, stdout, _ = run(str(tmp_path), "--json")
    assert code == 0
    assert [e["type"] for e in entries(stdout)] == ["segment", "summary"]


# --- records --------------------------------------------------------------------------------------


@needs_decode_records
def test_records_nested_in_batches(partition_dir: Path) -> None:
    code, stdout, _ = run(str(partition_dir), "--json", "--records")
    assert code == 1
    batches = [e for e in entries(stdout) if e["type"] == "batch"]
    assert batches[0]["records"] == [
        {"offset": 0, "timestamp": BASE_TS, "key": {"utf8": "k0"}, "value": {"utf8": "v0"},
         "headers": [{"key": "h", "value": {"utf8": "x"}}]},
        {"offset": 1, "timestamp": BASE_TS + 10, "key": None, "value": {"utf8": "v1"}, "headers": []},
        {"offset": 2, "timestamp": BASE_TS + 20, "key": {"utf8": "k2"}, "value": None,
         "headers": [{"key": "n", "value": None}]},
    ]
    lz4_records = batches[1]["records"]
    assert [r["offset"] for r in lz4_records] == [3, 4]
    assert lz4_records[0]["value"] == {"utf8": "hello " * 20}
    assert lz4_records[1]["value"] == {"base64": "//4A"}  # b"\xff\xfe\x00" is not UTF-8
    assert [len(b["records"]) for b in batches if b["crc_valid"]] == [3, 2, 1, 2, 2]


@needs_decode_records
def test_records_of_a_project_built_lz4_batch(tmp_path: Path) -> None:
    """Cross-check with client.wire's own builder: lz4, a non-ASCII and a non-UTF-8 header key."""
    build_batch = wire_records.build_batch
    batch = build_batch([(b"key", "caf\u00e9".encode(), BASE_TS, [("caf\u00e9", b"\x00\x80"), ("\udcff", b"")]),
                         (None, None, BASE_TS + 5, None)],
                        base_offset=42, compression=wire_records.CODEC_LZ4, partition_leader_epoch=4)
    (tmp_path / "00000000000000000042.log").write_bytes(batch)
    code, stdout, _ = run(str(tmp_path), "--json", "--records")
    assert code == 0
    assert '"caf\\u00e9"' in stdout  # ASCII-only output
    entry = entries(stdout)[1]
    assert (entry["codec"], entry["leader_epoch"], entry["base_offset"], entry["last_offset"]) == ("lz4", 4, 42, 43)
    assert entry["records"] == [
        {"offset": 42, "timestamp": BASE_TS, "key": {"utf8": "key"}, "value": {"utf8": "caf\u00e9"},
         "headers": [{"key": "caf\u00e9", "value": {"base64": "AIA="}},
                     {"key": "\udcff", "value": {"utf8": ""}}]},  # invalid UTF-8 key byte 0xff: surrogateescape
        {"offset": 43, "timestamp": BASE_TS + 5, "key": None, "value": None, "headers": []},
    ]


@needs_decode_records
def test_undecodable_records_are_reported_not_fatal(tmp_path: Path) -> None:
    lying = bytearray(BATCH_D)
    struct.pack_into(">i", lying, 57, 5)  # recordsCount says 5, the section holds 2
    struct.pack_into(">I", lying, 17, crc32c.crc32c(bytes(lying[21:])))  # CRC-valid nonetheless
    (tmp_path / SEGMENT_0).write_bytes(bytes(lying) + BATCH_F)
    code, stdout, _ = run(str(tmp_path), "--json", "--records")
    assert code == 0  # the bytes are as written; only the decoder objects
    first, second = entries(stdout)[1:3]
    assert first["crc_valid"] and first["records"] is None
    assert first["records_error"].startswith("InvalidRecordError: ")
    assert len(second["records"]) == 2 and "records_error" not in second


# --- text mode ------------------------------------------------------------------------------------


def test_text_mode_one_line_per_batch(partition_dir: Path) -> None:
    code, stdout, _ = run(str(partition_dir))
    assert code == 1
    lines = stdout.splitlines()
    batch_lines = [line for line in lines if line.startswith("0000") and " base_offset=" in line]
    assert len(batch_lines) == 6
    assert batch_lines[0].startswith(f"{SEGMENT_0} position=0 base_offset=0 last_offset=2 leader_epoch=1 count=3 "
                                     "codec=none")
    assert "crc_valid=true" in batch_lines[0]
    assert "codec=lz4" in batch_lines[1]
    assert "[create_time,transactional]" in batch_lines[2]
    assert "crc_valid=FALSE(computed=0x" in batch_lines[4]
    assert "TORN TAIL" in lines[-2]
    assert lines[-1].startswith("summary segments=2 batches=6")


@needs_decode_records
def test_text_mode_records(partition_dir: Path) -> None:
    code, stdout, _ = run(str(partition_dir / SEGMENT_0), "--records")
    assert code == 0
    record_lines = [line for line in stdout.splitlines() if line.startswith("  offset=")]
    assert len(record_lines) == 6
    assert record_lines[0] == f'  offset=0 timestamp={BASE_TS} key="k0" value="v0" headers=["h"="x"]'
    assert record_lines[4].endswith('key="k4" value=b64://4A headers=[]')


# --- errors ---------------------------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    code, stdout, stderr = run(str(tmp_path / "missing"), "--json")
    assert code == 2
    assert stdout == ""
    assert stderr.count("\n") == 1 and "no such file or directory" in stderr


def test_not_a_segment_file(partition_dir: Path) -> None:
    code, _, stderr = run(str(partition_dir / "leader-epoch-checkpoint"))
    assert code == 2
    assert "not a partition directory or a .log segment" in stderr and stderr.count("\n") == 1


def test_read_error_is_one_line(partition_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pread(fd: int, length: int, position: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(brokerctl.os, "pread", failing_pread)
    code, _, stderr = run(str(partition_dir), "--json")
    assert code == 2
    assert stderr.count("\n") == 1 and "cannot read" in stderr and "Input/output error" in stderr


def test_odd_log_name_in_directory_is_skipped_with_warning(partition_dir: Path) -> None:
    (partition_dir / "notes.log").write_bytes(b"garbage")
    code, stdout, stderr = run(str(partition_dir), "--json")
    assert code == 1
    assert "skipping" in stderr and "notes.log" in stderr
    assert entries(stdout)[-1]["segments"] == 2


def test_bootstrap_server_option_and_env() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "--bootstrap-server" in result.stdout and "REPLOG_BOOTSTRAP" in result.stdout
    assert "127.0.0.1:9092" in result.stdout


def test_brokerd_help() -> None:
    result = CliRunner().invoke(brokerd_main, ["--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout and "--data-dir" in result.stdout


# --- a real process -------------------------------------------------------------------------------


def _command() -> list[str]:
    installed = shutil.which("brokerctl")
    return [installed] if installed else [sys.executable, "-m", "tools.brokerctl"]


def test_real_process(partition_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([*_command(), "log", "dump", str(partition_dir), "--json"], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    dumped = entries(proc.stdout)
    assert dumped[-1]["batches"] == 6 and dumped[-2]["type"] == "torn_tail"
    assert proc.stderr == ""

    proc = subprocess.run([*_command(), "log", "dump", str(partition_dir / "nope")], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=env, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
