"""Shared helpers for the storage tests, handed to tests through the `kit` fixture.

Batches are built and decoded with kafka-python's DefaultRecordBatchBuilder / DefaultRecordBatch,
an implementation of the v2 batch format independent of `client.wire.records`, so the storage code
is checked against a second reading of the format. Header fields storage stamps (baseOffset,
partitionLeaderEpoch, LogAppendTime) are written here with plain struct + crc32c.

The helpers are reached through a fixture (not `from conftest import ...`) so that several
`conftest.py` files in the test tree cannot shadow each other.
"""

from __future__ import annotations

import os
import random
import struct
import types
from collections.abc import Iterator
from typing import Any

import crc32c
import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from client.wire import records as wire_records

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
CODEC_NONE = 0
CODEC_LZ4 = 3
BASE_TS = 1_700_000_000_000
HAS_DECODE_RECORDS = hasattr(wire_records, "decode_records")

RecordSpec = tuple[bytes | None, bytes | None, int]  # key, value, timestamp_ms


class Hdr(types.SimpleNamespace):
    """A decoded 61-byte batch header (field names as in the Kafka layout)."""

    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    records_count: int

    @property
    def total_size(self) -> int:
        return 12 + self.batch_length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta


def header(batch: bytes | bytearray | memoryview, pos: int = 0) -> Hdr:
    (base, length, epoch, magic, crc, attributes, delta, base_ts, max_ts, _pid, _pepoch, _bseq,
     count) = HEADER.unpack_from(batch, pos)
    return Hdr(base_offset=base, batch_length=length, leader_epoch=epoch, magic=magic, crc=crc,
               attributes=attributes, last_offset_delta=delta, base_timestamp=base_ts,
               max_timestamp=max_ts, records_count=count)


def make_batch(records: list[RecordSpec], *, codec: int = CODEC_NONE, base_offset: int = 0,
               leader_epoch: int = -1) -> bytes:
    """One v2 batch (kafka-python's encoder). lz4 is only kept when it makes the batch smaller."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 30)
    for i, (key, value, ts) in enumerate(records):
        assert builder.append(i, timestamp=ts, key=key, value=value, headers=[]) is not None
    return stamp(bytes(builder.build()), base_offset, leader_epoch)


def simple_batch(count: int = 3, *, ts: int = BASE_TS, value_bytes: int = 20, base_offset: int = 0,
                 leader_epoch: int = -1, codec: int = CODEC_NONE, key: bytes | None = b"k") -> bytes:
    records = [(key, bytes([65 + i % 26]) * value_bytes, ts + i) for i in range(count)]
    return make_batch(records, codec=codec, base_offset=base_offset, leader_epoch=leader_epoch)


def stamp(batch: bytes, base_offset: int, leader_epoch: int) -> bytes:
    """Set baseOffset and partitionLeaderEpoch (both outside the CRC)."""
    buf = bytearray(batch)
    struct.pack_into(">q", buf, 0, base_offset)
    struct.pack_into(">i", buf, 12, leader_epoch)
    return bytes(buf)


def stamp_log_append_time(batch: bytes, now_ms: int) -> bytes:
    """What a LogAppendTime broker stores: attribute bit 3, maxTimestamp = now, CRC recomputed."""
    buf = bytearray(batch)
    attributes = struct.unpack_from(">h", buf, 21)[0]
    struct.pack_into(">h", buf, 21, attributes | 0x08)
    struct.pack_into(">q", buf, 35, now_ms)
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)


def crc_ok(batch: bytes) -> bool:
    return header(batch).crc == crc32c.crc32c(batch[21:])


def decode(batch: bytes) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(offset, timestamp, key, value) of every record, decoded by kafka-python."""
    rb = DefaultRecordBatch(bytes(batch))
    assert rb.validate_crc(), "batch fails its CRC"
    return [(r.offset, r.timestamp, r.key, r.value) for r in rb]


def split_batches(data: bytes) -> list[bytes]:
    """Cut concatenated batches into whole batches; fails on a partial one."""
    out = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= HEADER_SIZE, f"partial header at {pos} of {len(data)}"
        size = header(data, pos).total_size
        assert size >= HEADER_SIZE and pos + size <= len(data), f"partial batch at {pos} of {len(data)}"
        out.append(data[pos:pos + size])
        pos += size
    return out


def read_all(log: Any, start: int | None = None, max_bytes: int = 1 << 20) -> list[bytes]:
    """Every batch from `start` (default the log start) to the log end, through `Log.read`."""
    offset = log.log_start_offset if start is None else start
    out: list[bytes] = []
    while offset < log.log_end_offset:
        chunk = log.read(offset, max_bytes)
        data = bytes(chunk)
        if not data:
            break
        batches = split_batches(data)
        assert header(batches[0]).base_offset == chunk.first_offset
        out.extend(batches)
        offset = header(batches[-1]).last_offset + 1
    return out


def random_records(rng: random.Random, count: int, ts: int, *, null_keys: bool = True,
                   compressible: bool = False) -> list[RecordSpec]:
    out = []
    for _ in range(count):
        key = None if null_keys and rng.random() < 0.2 else b"key-%d" % rng.randrange(20)
        size = rng.randrange(0, 60)
        value = bytes([rng.randrange(65, 70)]) * size if compressible else rng.randbytes(size)
        if rng.random() < 0.05:
            value = None
        out.append((key, value, ts + rng.randrange(-200, 400)))
    return out


def dir_snapshot(path: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


class DirSnapshot:
    """The files of a directory, put back by `restore()` (only the files whose size or mtime moved)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.files = dir_snapshot(path)
        self._stats = {name: self._stat(name) for name in self.files}

    def _stat(self, name: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(os.path.join(self.path, name))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def restore(self) -> None:
        for name in os.listdir(self.path):
            if name not in self.files:
                os.remove(os.path.join(self.path, name))
        for name, data in self.files.items():
            if self._stat(name) != self._stats[name]:
                with open(os.path.join(self.path, name), "wb") as f:
                    f.write(data)
                self._stats[name] = self._stat(name)


def dir_restore(path: str, snapshot: dict[str, bytes]) -> None:
    for name in os.listdir(path):
        if name not in snapshot:
            os.remove(os.path.join(path, name))
    for name, data in snapshot.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)


def segment_names(path: str, ext: str = ".log") -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(ext) and n[:-len(ext)].isdigit())


def flip_bit(path: str, position: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ (1 << bit)]))


class _ShimRecord(types.SimpleNamespace):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def _decode_records_shim(batch: bytes | bytearray | memoryview, pos: int = 0, **_: object) -> list[_ShimRecord]:
    size = header(batch, pos).total_size
    rb = DefaultRecordBatch(bytes(memoryview(batch)[pos:pos + size]))
    return [_ShimRecord(offset=r.offset, timestamp=r.timestamp, key=r.key, value=r.value) for r in rb]


@pytest.fixture
def decode_records_available(monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Make `client.wire.records.decode_records` importable: the real one once it has landed,
    a kafka-python based stand-in until then (only Log code that imports it lazily needs it)."""
    if not HAS_DECODE_RECORDS:
        monkeypatch.setattr(wire_records, "decode_records", _decode_records_shim, raising=False)
    yield HAS_DECODE_RECORDS


@pytest.fixture(scope="session")
def kit() -> types.ModuleType:
    import sys

    return sys.modules[__name__]
