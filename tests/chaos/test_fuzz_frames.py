"""Structure-aware fuzzing of the broker's request path with >= 10,000 frames, several connections.

Frames (seeded, `REPLOG_SEED` overrides the fixed default; the seed is printed):

* structured (most): for every API key and version the broker advertises (read from its own
  ApiVersions answer), a valid request header and a body generated from the request schema
  (client/wire/messages) with plausible values (topic names from a pool, small partition numbers,
  real record batches: none/lz4/gzip, keyed, with headers), then mutated: bit flips, truncation,
  random values in string/bytes/array length fields (int16/int32 or uvarint, including
  overlong and 5-byte varints), huge array counts, extreme integers, inserted/deleted bytes,
  record batches altered inside with their CRC recomputed (so the batch validator goes past the
  CRC), a decompression bomb, unknown tagged fields; some frames also get a bad header (unknown
  API key, unadvertised version, bad client_id length or UTF-8, garbage header tags); some
  frames are written in 2-4 pieces (cut anywhere, size prefix included) a few ms apart;
* random payloads of random length; absurd length prefixes (2 GiB, -2^31, -1, 0, 1 GiB, max+1)
  that must close the connection; several frames pipelined in one write.

After each frame (except the absurd ones) a probe (ApiVersions v0) is sent on the same
connection: requests are answered in order, so the probe's answer proves the frame was dealt
with even when it legitimately gets no answer (Produce acks=0). Latency per frame = time from
writing it to the probe's answer or the connection closing (an upper bound on its own answer;
for a pipelined write, on each of its frames); the maximum must be <= 1 s. Two kinds of
legitimate slowness are clamped, not excluded: a frame that still decodes as a Fetch with
max_wait_ms > 100 is re-encoded with max_wait_ms <= 100 (a long poll waits by design), and a
CreateTopics asking for more than 8 partitions is re-encoded with at most 4 (creating a
partition takes ~3 ms on the event loop and holds 3 file descriptors: one request for a few
thousand stalls every client for seconds and can exhaust the fd limit). Both are counted.

After fuzzing: the broker is alive; its RSS (VmRSS) grew < 50 MB; `brokerctl log dump --json
--records` of a topic written before fuzzing is byte-identical; kafka-python's KafkaProducer and
KafkaConsumer (assign()) still work; every answer to an unmutated header decodes with the
response schema and echoes the correlation id; the broker log has no "Traceback".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from brokerproc import BrokerProcess, free_port
from rawclient import RawConnection, create_topic, produce_body

from client.wire.codec import ProtocolError
from client.wire.compression import CODEC_GZIP, CODEC_LZ4, CODEC_NONE
from client.wire.errors import ErrorCode
from client.wire.messages import REQUESTS
from client.wire.protocol import decode_request, decode_response, encode_request
from client.wire.records import CRC_POS, CRC_START_POS, HEADER_SIZE, build_batch, compute_crc
from client.wire.schema import Field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SEED = 20261126
FRAMES = int(os.environ.get("REPLOG_FUZZ_FRAMES", "20000"))
WORKERS = 8
LATENCY_MAX_S = 1.0
HANG_S = 3.0  # stop waiting for a frame's fate after this (counted as a violation)
RSS_GROWTH_MAX_BYTES = 50 << 20
FRAME_MAX = 104_857_600  # socket.request.max.bytes default
FETCH_WAIT_CLAMP_MS = 100
CREATE_PARTITIONS_CLAMP = 8
SPLIT_PAUSE_S = 0.002
PROBE_CID = 0x5EED0001
PROBE = encode_request(18, 0, PROBE_CID, "probe", {}, framed=True)
KEEP_TOPIC = "fz-keep"  # written before fuzzing; never named by the fuzzer
DATA_TOPIC = "fz-data"  # has data; the fuzzer reads, writes, reconfigures and deletes it
TOPIC_POOL = [DATA_TOPIC, "fz-a", "fz-b", "fz-c", "", ".", "..", "../fz-evil", "fz/../x", "x" * 200, "y" * 300,
              "ü-topic", "__consumer_offsets", "fz a", "n" * 32767]  # the longest string the protocol allows
CONFIG_NAMES = ["cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes", "segment.ms",
                "max.message.bytes", "message.timestamp.type", "flush.messages", "flush.ms",
                "min.insync.replicas", "compression.type", "min.cleanable.dirty.ratio", "delete.retention.ms",
                "unknown.key", ""]
CONFIG_VALUES = ["1", "0", "-1", "1024", "1048588", "compact", "delete", "compact,delete", "LogAppendTime",
                 "CreateTime", "abc", "", "99999999999999999999", "0.5", "NaN", "v" * 32767]

_INT_RANGES = {"int8": (-(1 << 7), (1 << 7) - 1), "int16": (-(1 << 15), (1 << 15) - 1),
               "int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
               "uint16": (0, (1 << 16) - 1), "uint32": (0, (1 << 32) - 1)}
_FORMATS = {"int8": ">b", "int16": ">h", "int32": ">i", "int64": ">q", "uint16": ">H", "uint32": ">I",
            "float64": ">d", "bool": ">?"}


def seed_from_env() -> int:
    raw = os.environ.get("REPLOG_SEED")
    return int(raw) if raw else DEFAULT_SEED


def uvarint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# --- structure-aware body generation -------------------------------------------------------------

@dataclass(frozen=True)
class Mark:
    """Where a mutable field sits in a body: kind is len16/len32/uvarint (a length or count),
    or an integer type name; `count` marks array lengths."""

    kind: str
    pos: int
    width: int
    count: bool = False


@dataclass
class BodyWriter:
    buf: bytearray = field(default_factory=bytearray)
    marks: list[Mark] = field(default_factory=list)

    def put(self, data: bytes, kind: str | None = None, count: bool = False) -> None:
        if kind is not None:
            self.marks.append(Mark(kind, len(self.buf), len(data), count))
        self.buf += data

    def embed(self, other: BodyWriter) -> None:
        base = len(self.buf)
        self.marks += [Mark(m.kind, m.pos + base, m.width, m.count) for m in other.marks]
        self.buf += other.buf


class BodyGenerator:
    """Bodies for one (api_key, version) from the request schema, with plausible field values."""

    def __init__(self, rng: random.Random, bomb: bytes) -> None:
        self.rng = rng
        self.bomb = bomb

    def body(self, api_key: int, version: int) -> BodyWriter:
        message = REQUESTS[api_key]
        writer = BodyWriter()
        self._struct(writer, message.fields, version, message.is_flexible(version), ())
        return writer

    # structure
    def _struct(self, w: BodyWriter, fields: tuple[Field, ...], v: int, flexible: bool, path: tuple[str, ...]) -> None:
        tagged = []
        for f in fields:
            if not f.versions.has(v):
                continue
            if f.tagged_in(v):
                tagged.append(f)
                continue
            self._field(w, f, v, flexible, path)
        if flexible:
            self._tags(w, tagged, v, path)

    def _tags(self, w: BodyWriter, tagged: list[Field], v: int, path: tuple[str, ...]) -> None:
        entries: list[tuple[int, BodyWriter]] = []
        for f in tagged:
            if self.rng.random() < 0.3:
                sub = BodyWriter()
                self._field(sub, f, v, True, path)
                entries.append((f.tag or 0, sub))
        if self.rng.random() < 0.05:  # an unknown tag: must be skipped
            sub = BodyWriter()
            sub.put(self.rng.randbytes(self.rng.randint(0, 12)))
            entries.append((self.rng.randint(10, 200), sub))
        entries.sort(key=lambda e: e[0])
        w.put(uvarint(len(entries)), "uvarint", count=True)
        for tag, sub in entries:
            w.put(uvarint(tag), "uvarint")
            w.put(uvarint(len(sub.buf)), "uvarint")
            w.embed(sub)

    def _length(self, w: BodyWriter, n: int | None, flexible: bool, wide: bool, count: bool = False) -> None:
        if flexible:
            w.put(uvarint(0 if n is None else n + 1), "uvarint", count)
        elif wide:
            w.put(struct.pack(">i", -1 if n is None else n), "len32", count)
        else:
            w.put(struct.pack(">h", -1 if n is None else n), "len16", count)

    def _field(self, w: BodyWriter, f: Field, v: int, flexible: bool, path: tuple[str, ...]) -> None:
        nullable = f.nullable_versions.has(v)
        here = (*path, f.name)
        if f.is_array:
            n = None if nullable and self.rng.random() < 0.1 else self._array_len(f)
            self._length(w, n, flexible, wide=True, count=True)
            for _ in range(n or 0):
                if f.is_struct:
                    self._struct(w, f.fields, v, flexible, here)
                else:
                    self._primitive(w, f.item_type, False, v, flexible, here)
        elif f.is_struct:
            self._struct(w, f.fields, v, flexible, here)
        else:
            self._primitive(w, f.type, nullable, v, flexible, here)

    def _array_len(self, f: Field) -> int:
        return self.rng.choice((0, 1, 1, 1, 2, 2, 3))

    def _primitive(self, w: BodyWriter, type_: str, nullable: bool, v: int, flexible: bool,
                   path: tuple[str, ...]) -> None:
        rng = self.rng
        if type_ in _INT_RANGES:
            w.put(struct.pack(_FORMATS[type_], self._int(type_, path)), type_)
        elif type_ == "float64":
            w.put(struct.pack(">d", rng.choice((0.0, 0.5, -1.0, float("nan"), float("inf"), rng.random()))))
        elif type_ == "bool":
            w.put(struct.pack(">?", rng.random() < 0.5))
        elif type_ == "uuid":
            w.put(bytes(16) if rng.random() < 0.5 else uuid.UUID(int=rng.getrandbits(128)).bytes)
        elif type_ == "string":
            text = None if nullable and rng.random() < 0.15 else self._string(path)
            data = None if text is None else text.encode()
            self._length(w, None if data is None else len(data), flexible, wide=False)
            w.put(data or b"")
        else:  # bytes, records
            data = self._records() if type_ == "records" else rng.randbytes(rng.randint(0, 16))
            if data is None and not nullable:
                data = b""
            self._length(w, None if data is None else len(data), flexible, wide=True)
            w.put(data or b"")

    def _int(self, type_: str, path: tuple[str, ...]) -> int:
        rng = self.rng
        low, high = _INT_RANGES[type_]
        name = path[-1]
        if name == "max_wait_ms":
            value = rng.randint(0, FETCH_WAIT_CLAMP_MS)
        elif name == "acks":
            value = rng.choice((-1, -1, -1, 1, 1, 0, 2))
        elif name == "num_partitions":
            value = rng.choice((1, 1, 2, 3, -1, 0, -7, 10_001, high))
        elif name == "replication_factor":
            value = rng.choice((1, 1, -1, 0, 3))
        elif name in ("timeout_ms", "throttle_time_ms"):
            value = rng.choice((0, 100, 5000, -1))
        elif name in ("resource_type",):
            value = rng.choice((2, 2, 4, 0, 1, 99))
        elif name in ("config_operation",):
            value = rng.choice((0, 0, 1, 2, 3, -1))
        elif name in ("key_type", "isolation_level"):
            value = rng.choice((0, 0, 1, 2))
        elif name in ("partition", "index", "partition_index", "partitions", "partition_indexes") or "broker" in name:
            value = rng.choice((0, 0, 0, 0, 0, 0, 1, 2, -1, 7, high))
        elif "offset" in name or name == "timestamp":
            value = rng.choice((0, 0, 1, 5, -1, -2, rng.randint(0, 1000), high, low))
        elif "epoch" in name:
            value = rng.choice((-1, -1, 0, 0, 1, 99))
        elif "bytes" in name:
            value = rng.choice((0, 1, 100, 1 << 20, high, -1))
        elif name in ("session_id", "replica_id", "producer_id", "session_epoch"):
            value = rng.choice((0, -1, 1))
        else:
            value = rng.choice((0, 1, -1, high, low, rng.randint(low, high), rng.randint(0, 100)))
        return max(low, min(high, value))

    def _string(self, path: tuple[str, ...]) -> str:
        rng = self.rng
        name = path[-1]
        if "configs" in path or name == "configuration_keys":
            if name in ("name", "configuration_keys"):
                return rng.choice(CONFIG_NAMES)
            return rng.choice(CONFIG_VALUES)
        if name in ("name", "topic", "resource_name", "topic_names"):
            roll = rng.random()
            if name == "topic_names":  # DeleteTopics: rarely the data topic, so that it mostly exists
                roll = roll * 0.53 + 0.47
            return DATA_TOPIC if roll < 0.5 else rng.choice(TOPIC_POOL) if roll < 0.97 else f"fz-{rng.randint(0, 9)}"
        choice = rng.random()
        if choice < 0.6:
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz-._0123456789") for _ in range(rng.randint(0, 12)))
        if choice < 0.8:
            return ""
        if choice < 0.9:
            return "ünïcødé-☃"
        return "z" * rng.choice((rng.randint(100, 2000), 32767))

    def _records(self) -> bytes | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return None
        if roll < 0.08:
            return b""
        if roll < 0.13:
            return rng.randbytes(rng.randint(1, 200))
        if roll < 0.14:
            return self.bomb
        batch = self._batch()
        if roll < 0.55:
            return batch
        if roll < 0.62:
            return batch + self._batch()
        return tweak_batch(rng, batch)

    def _batch(self) -> bytes:
        rng = self.rng
        now = int(time.time() * 1000)
        records = []
        for i in range(rng.randint(1, 5)):
            key = None if rng.random() < 0.5 else f"k{rng.randint(0, 3)}".encode()
            value = None if rng.random() < 0.05 else f"fuzz-{i}-{rng.getrandbits(32)}".encode() * rng.randint(1, 4)
            headers = [("h", b"x"), ("n", None)] if rng.random() < 0.2 else None
            records.append((key, value, now + rng.choice((0, 0, 1, -(1 << 40), 1 << 40)), headers))
        codec = rng.choice((CODEC_NONE, CODEC_NONE, CODEC_LZ4, CODEC_GZIP))
        kwargs: dict[str, Any] = {}
        if rng.random() < 0.1:
            kwargs = {"producer_id": rng.choice((0, 1, 5)), "producer_epoch": 0,
                      "base_sequence": rng.choice((0, -1, 7))}
        return build_batch(records, compression=codec, **kwargs)


def tweak_batch(rng: random.Random, batch: bytes) -> bytes:
    """Alter a valid batch inside, then recompute its CRC so the validator looks further."""
    buf = bytearray(batch)
    what = rng.randrange(7)
    if what == 0:  # recordsCount
        struct.pack_into(">i", buf, 57, rng.choice((0, -1, 2, 1000, (1 << 31) - 1)))
    elif what == 1:  # lastOffsetDelta
        struct.pack_into(">i", buf, 23, rng.choice((-1, 0, 5, (1 << 31) - 1)))
    elif what == 2:  # attributes: codec 2/4-7, LogAppendTime, transactional, control
        struct.pack_into(">h", buf, 21, rng.choice((2, 4, 5, 7, 0x08, 0x10, 0x20, 0x40, -1)))
    elif what == 3:  # magic (outside the CRC)
        buf[16] = rng.choice((0, 1, 3, 255))
    elif what == 4:  # baseOffset (outside the CRC)
        struct.pack_into(">q", buf, 0, rng.choice((1, -1, 1 << 40)))
    elif what == 5 and len(buf) > HEADER_SIZE:  # the records section
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(HEADER_SIZE, len(buf))] ^= 1 << rng.randrange(8)
    else:  # cut the records section short and fix batchLength
        cut = rng.randint(HEADER_SIZE, len(buf))
        del buf[cut:]
        struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">I", buf, CRC_POS, compute_crc(buf, 0, len(buf)) if len(buf) > CRC_START_POS else 0)
    return bytes(buf)


# --- mutation --------------------------------------------------------------------------------------

def _absurd_length(rng: random.Random, mark: Mark, actual: int | None = None) -> int:
    if mark.kind == "len16":
        return rng.choice((-1, -2, 0, 0x7FFF, -0x8000, rng.randint(-0x8000, 0x7FFF)))
    if mark.count:
        return rng.choice((-1, -2, 0, 1 << 20, (1 << 20) + 1, 0xFFFF, (1 << 31) - 1, -(1 << 31)))
    return rng.choice((-1, -2, 0, 1, (1 << 31) - 1, -(1 << 31), 1 << 24, 100 << 20,
                       rng.randint(-(1 << 31), (1 << 31) - 1)))


def mutate(rng: random.Random, body: BodyWriter) -> tuple[bytes, list[str]]:
    """1-3 mutations of the body; returns the bytes and the mutation names (for the report).

    40% of bodies only get integer fields replaced by extreme values (they still decode, so the
    handlers see them); the rest get structural damage (bit flips, cuts, lengths, counts, varints).
    """
    buf = bytearray(body.buf)
    marks = list(body.marks)
    names = []
    semantic = rng.random() < 0.4  # only integer values change: the frame still decodes, handlers see it
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = "int" if semantic else rng.choices(("bitflip", "truncate", "length", "count", "int", "splice", "varint"),
                                                   weights=(25, 12, 20, 10, 8, 10, 8))[0]
        lengths = [m for m in marks if m.kind in ("len16", "len32", "uvarint") and m.pos + m.width <= len(buf)]
        counts = [m for m in lengths if m.count]
        ints = [m for m in marks if m.kind in _INT_RANGES and m.pos + m.width <= len(buf)]
        if kind == "bitflip" and buf:
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif kind == "truncate" and buf:
            del buf[rng.randrange(len(buf)):]
        elif kind in ("length", "count", "varint") and (counts if kind == "count" else lengths):
            mark = rng.choice(counts if kind == "count" else lengths)
            if mark.kind == "len16":
                buf[mark.pos:mark.pos + 2] = struct.pack(">h", _absurd_length(rng, mark))
            elif mark.kind == "len32":
                buf[mark.pos:mark.pos + 4] = struct.pack(">i", _absurd_length(rng, mark))
            else:
                if kind == "varint":  # malformed or overlong encodings
                    new = rng.choice((b"\x80" * 6, b"\xff\xff\xff\xff\x0f", b"\xff\xff\xff\xff\x7f",
                                      b"\x80\x80\x80\x80\x80\x01", b"\x81\x00", b"\x80"))
                else:
                    new = uvarint(_absurd_length(rng, mark) + 1)
                buf[mark.pos:mark.pos + mark.width] = new
                marks = []  # positions after this one moved; stop using marks
        elif kind == "int" and ints:
            mark = rng.choice(ints)
            low, high = _INT_RANGES[mark.kind]
            value = rng.choice((low, high, -1, 0, 1, low + 1, high - 1, rng.randint(low, high)))
            buf[mark.pos:mark.pos + mark.width] = struct.pack(_FORMATS[mark.kind], value)
        elif kind == "splice":
            at = rng.randint(0, len(buf))
            if rng.random() < 0.5:
                buf[at:at] = rng.randbytes(rng.randint(1, 16))
            else:
                del buf[at:at + rng.randint(1, 16)]
            marks = []
        else:
            continue
        names.append(kind)
    return bytes(buf), names or ["none"]


# --- frames ------------------------------------------------------------------------------------------

@dataclass
class Frame:
    kind: str                  # structured / bad_header / random / absurd / pipelined
    data: bytes                # what is written (size prefixes included)
    probe: bool = True         # a probe follows (the frame is complete)
    api_key: int = -1
    version: int = -1
    correlation_id: int = -1
    check_response: bool = False  # the header is intact: its answer must decode
    mutations: tuple[str, ...] = ()
    clamped: str = ""
    count: int = 1
    cuts: tuple[int, ...] = ()  # written in pieces cut here, a few ms apart (frames cut across reads)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _header(rng: random.Random, api_key: int, version: int, cid: int, flexible: bool) -> tuple[bytes, str | None]:
    client_id = rng.choice(("fuzz", "fuzz", None, "", "ç" * 20, "c" * 300))
    data = struct.pack(">hhi", api_key, version, cid)
    if client_id is None:
        data += struct.pack(">h", -1)
    else:
        data += struct.pack(">h", len(client_id.encode())) + client_id.encode()
    if flexible:
        data += b"\x00"
    return data, client_id


class FrameFactory:
    def __init__(self, rng: random.Random, advertised: dict[int, tuple[int, int]], bomb: bytes) -> None:
        self.rng = rng
        self.advertised = advertised
        self.targets = [(k, v) for k, (lo, hi) in sorted(advertised.items()) for v in range(lo, hi + 1)]
        self.gen = BodyGenerator(rng, bomb)
        self.clamps: Counter[str] = Counter()

    def _cid(self) -> int:
        cid = self.rng.randint(-(1 << 31), (1 << 31) - 1)
        return cid if cid != PROBE_CID else 0

    def structured(self, mutate_body: bool = True) -> Frame:
        rng = self.rng
        api_key, version = rng.choice(self.targets)
        cid = self._cid()
        header, client_id = _header(rng, api_key, version, cid, REQUESTS[api_key].is_flexible(version))
        body = self.gen.body(api_key, version)
        data, names = mutate(rng, body) if mutate_body and rng.random() < 0.92 else (bytes(body.buf), ["none"])
        payload, clamped = self._clamp(header + data, api_key, version, cid, client_id)
        return Frame("structured", _frame(payload), True, api_key, version, cid, True, tuple(names), clamped)

    def _clamp(self, payload: bytes, api_key: int, version: int, cid: int, client_id: str | None) -> tuple[bytes, str]:
        """Re-encode the two legitimately slow requests (see the module docstring) with bounded values."""
        if api_key not in (1, 19):
            return payload, ""
        try:
            _, body = decode_request(payload, supported=self.advertised)
        except ProtocolError:
            return payload, ""
        if api_key == 1 and body["max_wait_ms"] > FETCH_WAIT_CLAMP_MS:
            body["max_wait_ms"] = self.rng.randint(0, FETCH_WAIT_CLAMP_MS)
            what = "fetch_max_wait"
        elif api_key == 19 and any(t["num_partitions"] > CREATE_PARTITIONS_CLAMP
                                   or len(t["assignments"]) > CREATE_PARTITIONS_CLAMP for t in body["topics"]):
            for topic in body["topics"]:
                if topic["num_partitions"] > CREATE_PARTITIONS_CLAMP:
                    topic["num_partitions"] = self.rng.randint(1, 4)
                topic["assignments"] = topic["assignments"][:4]
            what = "create_partitions"
        else:
            return payload, ""
        self.clamps[what] += 1
        return encode_request(api_key, version, cid, client_id, body), what

    def bad_header(self) -> Frame:
        rng = self.rng
        cid = self._cid()
        api_key, version = rng.choice(self.targets)
        body = bytes(self.gen.body(api_key, version).buf)
        flavour = rng.randrange(6)
        if flavour == 0:  # an API with a schema that is not advertised, or no API at all
            api_key = rng.choice([k for k in REQUESTS if k not in self.advertised] + [7, 99, -1, 0x7FFF])
        elif flavour == 1:  # a version outside the advertised range
            lo, hi = self.advertised[api_key]
            version = rng.choice((hi + 1, lo - 1, -1, 0x7FFF))
        flexible = api_key in REQUESTS and REQUESTS[api_key].is_flexible(version)
        header, _ = _header(rng, api_key, version, cid, flexible)
        if flavour == 2:  # client_id length beyond the frame, or below -1
            header = struct.pack(">hhih", api_key, version, cid, rng.choice((0x7FFF, 5000, -2, -0x8000)))
        elif flavour == 3:  # client_id not UTF-8
            header = struct.pack(">hhih", api_key, version, cid, 3) + b"\xff\xfe\xfd" + (b"\x00" if flexible else b"")
        elif flavour == 4:  # cut inside the header
            header = header[:rng.randint(0, len(header))]
            body = b""
        elif flavour == 5:  # a flexible header's tagged fields: unknown tags, bad sizes, bad varints
            api_key, version = rng.choice([t for t in self.targets if REQUESTS[t[0]].is_flexible(t[1])])
            body = bytes(self.gen.body(api_key, version).buf)
            tags = rng.choice((b"\x01\x05\x02ab", b"\x02\x00\x00\x01\x00", b"\x01\x00\x7f",
                               b"\x7f", b"\xff\xff\xff\xff\x0f", b"\x01\x00\x05", rng.randbytes(6)))
            header = struct.pack(">hhih", api_key, version, cid, 4) + b"fuzz" + tags
        return Frame("bad_header", _frame(header + body), True, api_key, version, cid, False, (f"header{flavour}",))

    def random_payload(self) -> Frame:
        return Frame("random", _frame(self.rng.randbytes(self.rng.choice((0, 1, 4, 9, 10, 64, 512)))))

    def absurd(self) -> Frame:
        size = self.rng.choice(((1 << 31) - 1, -(1 << 31), -1, 0, 1 << 30, FRAME_MAX + 1, -2))
        tail = self.rng.randbytes(self.rng.randint(0, 32))
        # a 0-size frame is complete (an empty request: a protocol error); the others never are
        return Frame("absurd", struct.pack(">i", size) + tail, False, mutations=(f"size={size}",))

    def pipelined(self) -> Frame:
        parts = [self.structured() for _ in range(self.rng.randint(2, 5))]
        return Frame("pipelined", b"".join(p.data for p in parts), True, count=len(parts),
                     mutations=tuple(m for p in parts for m in p.mutations))

    def next(self) -> Frame:
        roll = self.rng.random()
        if roll < 0.77:
            return self.structured()
        if roll < 0.80:
            frame = self.structured()
            frame.kind = "split"
            frame.cuts = tuple(sorted(self.rng.sample(range(1, len(frame.data)), self.rng.randint(1, 3))))
            return frame
        if roll < 0.86:
            return self.bad_header()
        if roll < 0.91:
            return self.random_payload()
        if roll < 0.95:
            return self.absurd()
        return self.pipelined()


# --- sending -----------------------------------------------------------------------------------------

@dataclass
class Outcome:
    fate: str       # answered / closed / hang
    latency_s: float
    responses: list[bytes]


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frame: Frame) -> Outcome:
    """Write the frame (and the probe); latency = until the probe's answer or the connection's close,
    an upper bound on the frame's own answer time (every frame of a pipelined write included)."""
    started = time.monotonic()
    deadline = started + HANG_S
    responses: list[bytes] = []
    try:
        data = frame.data + (PROBE if frame.probe else b"")
        for start, end in zip([0, *frame.cuts], [*frame.cuts, len(data)]):
            if start:
                await asyncio.sleep(SPLIT_PAUSE_S)  # traffic shaping: the pieces arrive in separate reads
            writer.write(data[start:end])
            await asyncio.wait_for(writer.drain(), HANG_S)
        while True:
            head = await asyncio.wait_for(reader.readexactly(4), max(deadline - time.monotonic(), 0.001))
            size = struct.unpack(">i", head)[0]
            if not 4 <= size <= FRAME_MAX:
                raise AssertionError(f"the broker sent a response frame of size {size}")
            payload = await asyncio.wait_for(reader.readexactly(size), max(deadline - time.monotonic(), 0.001))
            if frame.probe and struct.unpack_from(">i", payload)[0] == PROBE_CID:
                return Outcome("answered", time.monotonic() - started, responses)
            responses.append(payload)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return Outcome("closed", time.monotonic() - started, responses)
    except TimeoutError:
        return Outcome("hang", time.monotonic() - started, responses)


@dataclass
class Stats:
    frames: int = 0
    writes: int = 0
    latencies: list[float] = field(default_factory=list)
    fates: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    apis: Counter[str] = field(default_factory=Counter)
    answered_apis: Counter[int] = field(default_factory=Counter)
    produce_errors: Counter[str] = field(default_factory=Counter)
    slow: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    absurd_answered: list[str] = field(default_factory=list)
    last_frame_by_port: dict[int, str] = field(default_factory=dict)
    connections: int = 0


async def fuzz_worker(index: int, seed: int, frames: int, port: int, advertised: dict[int, tuple[int, int]],
                      bomb: bytes, stats: Stats, clamps: Counter[str]) -> None:
    rng = random.Random(f"{seed}-{index}")
    factory = FrameFactory(rng, advertised, bomb)
    reader = writer = None
    local_port = 0
    sent = 0
    try:
        while sent < frames:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                local_port = writer.get_extra_info("sockname")[1]
                stats.connections += 1
            frame = factory.next()
            sent += frame.count
            assert reader is not None
            outcome = await exchange(reader, writer, frame)
            stats.frames += frame.count
            stats.writes += 1
            stats.latencies.append(outcome.latency_s)
            stats.fates[outcome.fate] += 1
            stats.kinds[frame.kind] += frame.count
            stats.mutations.update(frame.mutations)
            if frame.api_key >= 0 and frame.kind == "structured":
                stats.apis[f"{frame.api_key}v{frame.version}"] += 1
            where = (f"worker {index} write {stats.writes}: {frame.kind} api {frame.api_key} v{frame.version} "
                     f"mutations {frame.mutations} clamped {frame.clamped or '-'}")
            stats.last_frame_by_port[local_port] = f"{where} frame {frame.data[:300].hex()}"
            if outcome.fate == "hang" or outcome.latency_s > LATENCY_MAX_S:
                stats.slow.append(f"{where}: {outcome.fate} after {outcome.latency_s:.3f}s; "
                                  f"frame {frame.data[:300].hex()}")
            if frame.kind == "absurd" and outcome.responses:
                stats.absurd_answered.append(f"{where}: answered {outcome.responses[0][:40].hex()}")
            if frame.check_response and outcome.responses:
                try:
                    cid, answer = decode_response(outcome.responses[0], frame.api_key, frame.version)
                    if cid != frame.correlation_id:
                        raise ProtocolError(f"correlation id {cid}, sent {frame.correlation_id}")
                    stats.answered_apis[frame.api_key] += 1
                    if frame.api_key == 0:
                        stats.produce_errors.update(ErrorCode(p["error_code"]).name for t in answer["responses"]
                                                    for p in t["partition_responses"])
                except (ProtocolError, KeyError) as exc:
                    stats.bad_responses.append(f"{where}: {exc}; frame {frame.data[:300].hex()}")
            if outcome.fate != "answered":
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()
        clamps.update(factory.clamps)


# --- helpers around the run ----------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def dump(data_dir: str, topic: str) -> tuple[int, bytes]:
    result = subprocess.run([sys.executable, "-m", "tools.brokerctl", "log", "dump",
                             os.path.join(data_dir, f"{topic}-0"), "--json", "--records"],
                            cwd=REPO_ROOT, capture_output=True, timeout=60)
    return result.returncode, result.stdout


async def count_topics(port: int) -> tuple[int, int]:
    conn = await RawConnection.open("127.0.0.1", port)
    try:
        answer = await conn.request(3, 4, {"topics": None, "allow_auto_topic_creation": False})
        return len(answer["topics"]), sum(len(t["partitions"]) for t in answer["topics"])
    finally:
        await conn.close()


def lz4_bomb() -> bytes:
    """A valid lz4 batch (CRC right) whose one record inflates past the 64 MiB bound."""
    return build_batch([(None, bytes(80 << 20), int(time.time() * 1000), None)], compression=CODEC_LZ4)


async def prepare(broker: BrokerProcess) -> dict[int, tuple[int, int]]:
    """Advertised versions; KEEP_TOPIC and DATA_TOPIC created and written."""
    conn = await RawConnection.open("127.0.0.1", broker.port)
    try:
        versions = await conn.request(18, 3, {"client_software_name": "fuzz", "client_software_version": "1"})
        advertised = {k["api_key"]: (k["min_version"], k["max_version"]) for k in versions["api_keys"]}
        rng = random.Random(1)
        now = int(time.time() * 1000)
        for topic in (KEEP_TOPIC, DATA_TOPIC):
            body = {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": 1}], "timeout_ms": 5000}
            assert (await conn.request(19, 4, body))["topics"][0]["error_code"] == 0
            for i in range(30):
                batch = build_batch([(f"k{j}".encode(), f"{topic}-{i}-{j}".encode() * rng.randint(1, 20),
                                      now + i, None) for j in range(rng.randint(1, 10))],
                                    compression=(CODEC_NONE, CODEC_LZ4, CODEC_GZIP)[i % 3])
                answer = await conn.request(0, 8, produce_body(topic, {0: batch}))
                assert answer["responses"][0]["partition_responses"][0]["error_code"] == 0
        return advertised
    finally:
        await conn.close()


async def warm_up(port: int, advertised: dict[int, tuple[int, int]], seed: int, bomb: bytes) -> None:
    """Unmutated requests of every advertised version, so lazily compiled codecs are not counted as growth."""
    rng = random.Random(f"{seed}-warmup")
    factory = FrameFactory(rng, advertised, bomb)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for api_key, version in factory.targets * 4:
            cid = factory._cid()
            header, client_id = _header(rng, api_key, version, cid, REQUESTS[api_key].is_flexible(version))
            payload, _ = factory._clamp(header + bytes(factory.gen.body(api_key, version).buf), api_key, version, cid,
                                        client_id)
            outcome = await exchange(reader, writer, Frame("structured", _frame(payload)))
            if outcome.fate != "answered":
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


def check_generator(advertised: dict[int, tuple[int, int]], seed: int) -> None:
    """The generator's unmutated bodies are valid for the schema decoder (so mutations start from valid)."""
    rng = random.Random(f"{seed}-check")
    gen = BodyGenerator(rng, b"")
    for api_key, (lo, hi) in advertised.items():
        for version in range(lo, hi + 1):
            for _ in range(20):
                body = gen.body(api_key, version)
                decoded, end = REQUESTS[api_key].decode(bytes(body.buf), version)
                assert end == len(body.buf), f"api {api_key} v{version}: decoded {end} of {len(body.buf)} bytes"
                assert decoded is not None


def real_client_roundtrip(bootstrap: str, topic: str, count: int = 50) -> list[bytes]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=10_000)
    try:
        for i in range(count):
            producer.send(topic, key=b"k", value=f"after-fuzz-{i}".encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", fetch_max_wait_ms=100)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()


# --- the test ---------------------------------------------------------------------------------------

def test_fuzzed_frames_are_answered_or_closed_fast(start_broker) -> None:
    seed = seed_from_env()
    tag = f"[seed {seed}; rerun with REPLOG_SEED={seed}]"
    broker = start_broker()
    advertised = asyncio.run(prepare(broker))
    check_generator(advertised, seed)
    code, keep_before = dump(broker.data_dir, KEEP_TOPIC)
    assert code == 0 and keep_before, f"{tag} dump of {KEEP_TOPIC} failed"
    bomb = lz4_bomb()
    rss_start = rss_bytes(broker.pid)
    asyncio.run(warm_up(broker.port, advertised, seed, bomb))
    rss_before = rss_bytes(broker.pid)

    stats = Stats()
    clamps: Counter[str] = Counter()
    started = time.monotonic()

    rss_samples: list[int] = []

    async def run_all() -> None:
        per_worker = -(-FRAMES // WORKERS)
        workers = asyncio.gather(*(fuzz_worker(i, seed, per_worker, broker.port, advertised, bomb, stats, clamps)
                                   for i in range(WORKERS)))
        while not workers.done():  # sample the broker's RSS while the fuzzers run
            rss_samples.append(rss_bytes(broker.pid))
            await asyncio.wait([workers], timeout=0.5)
        await workers

    asyncio.run(run_all())
    elapsed = time.monotonic() - started
    assert broker.proc is not None and broker.proc.poll() is None, \
        f"{tag} the broker died:\n{broker.log_text()[-3000:]}"
    rss_after = rss_bytes(broker.pid)
    code, keep_after = dump(broker.data_dir, KEEP_TOPIC)
    topics, partitions = asyncio.run(count_topics(broker.port))
    values = real_client_roundtrip(broker.bootstrap, "fz-after")
    log = broker.log_text()

    latencies = sorted(stats.latencies)
    report = {
        "seed": seed, "frames": stats.frames, "writes": stats.writes, "connections": stats.connections,
        "seconds": round(elapsed, 1), "workers": WORKERS,
        "latency_s": {"max": round(latencies[-1], 4), "p99": round(latencies[int(len(latencies) * 0.99)], 4),
                      "median": round(statistics.median(latencies), 4)},
        "fates": dict(stats.fates), "kinds": dict(stats.kinds), "mutations": dict(stats.mutations.most_common()),
        "api_versions_fuzzed": len(stats.apis), "answered_by_api": dict(sorted(stats.answered_apis.items())),
        "produce_partition_results": dict(stats.produce_errors.most_common()), "clamped": dict(clamps),
        "rss_mb": {"start": round(rss_start / 2**20, 1), "after_warm_up": round(rss_before / 2**20, 1),
                   "after_fuzz": round(rss_after / 2**20, 1), "growth": round((rss_after - rss_before) / 2**20, 1),
                   "peak": round(max(rss_samples, default=0) / 2**20, 1)},
        "topics_after": topics, "partitions_after": partitions,
        "protocol_error_closes_logged": log.count("protocol error"),
        "handler_failures_logged": log.count("failed; closing"),
    }
    print(f"\nfuzz report: {json.dumps(report)}")

    tracebacks = [log[max(0, i - 300):i + 2500] for i in _find_all(log, "Traceback")][:3]
    culprits = [stats.last_frame_by_port[p] for p in _ports_in(log) if p in stats.last_frame_by_port][:3]
    assert not tracebacks, f"{tag} tracebacks in the broker log:\n" + "\n----\n".join(tracebacks) + \
        "\nlast frames on the connections named in the log:\n" + "\n".join(culprits)
    assert stats.frames >= FRAMES, f"{tag} {report}"
    assert not stats.slow, f"{tag} frames slower than {LATENCY_MAX_S}s:\n" + "\n".join(stats.slow[:5])
    assert latencies[-1] <= LATENCY_MAX_S, f"{tag} {report}"
    assert not stats.bad_responses, f"{tag} undecodable answers:\n" + "\n".join(stats.bad_responses[:5])
    assert not stats.absurd_answered, f"{tag} absurd frames answered:\n" + "\n".join(stats.absurd_answered[:5])
    assert set(stats.apis) >= {f"{k}v{v}" for k, (lo, hi) in advertised.items() for v in range(lo, hi + 1)}, \
        f"{tag} not every advertised version was fuzzed: {sorted(stats.apis)}"
    assert rss_after - rss_before < RSS_GROWTH_MAX_BYTES, f"{tag} RSS grew too much: {report}"
    assert code == 0 and keep_after == keep_before, f"{tag} the dump of {KEEP_TOPIC} changed during fuzzing"
    assert values == [f"after-fuzz-{i}".encode() for i in range(50)], f"{tag} kafka-python read back {values[:5]}..."


def _find_all(text: str, needle: str) -> list[int]:
    out, at = [], text.find(needle)
    while at >= 0:
        out.append(at)
        at = text.find(needle, at + 1)
    return out


def _ports_in(log: str) -> list[int]:
    ports = []
    for line in log.splitlines():
        if "failed; closing 127.0.0.1:" in line:
            with contextlib.suppress(ValueError):
                ports.append(int(line.rsplit(":", 1)[1]))
    return ports


def test_generator_bodies_match_the_schema_encoder() -> None:
    """An unmutated generated body re-encodes to the same bytes (no unknown tags, no defaults dropped)."""
    rng = random.Random(7)
    gen = BodyGenerator(rng, b"")
    compared = 0
    for api_key, message in REQUESTS.items():
        for version in range(message.min_version, min(message.max_version, 13) + 1):
            for _ in range(5):
                body = gen.body(api_key, version)
                decoded, end = message.decode(bytes(body.buf), version)
                assert end == len(body.buf)
                if message.is_flexible(version):
                    continue  # tagged fields equal to their default are not re-encoded
                assert message.encode(decoded, version) == bytes(body.buf), (api_key, version)
                compared += 1
    assert compared > 100


def test_a_topic_with_a_249_character_name_can_be_deleted(start_broker) -> None:
    broker = start_broker()
    name = "x" * 249  # Kafka's longest legal topic name

    async def create_and_delete() -> dict[str, Any]:
        conn = await RawConnection.open("127.0.0.1", broker.port)
        try:
            assert await create_topic(conn, name, 1) == 0
            return await conn.request(20, 1, {"topic_names": [name], "timeout_ms": 5000})
        finally:
            await conn.close()

    answer = asyncio.run(create_and_delete())
    assert answer["responses"][0]["error_code"] == 0
    broker.stop()
    broker.start()  # the broker must still start on this data dir


def test_a_create_topics_beyond_the_fd_limit_is_refused_and_the_broker_still_starts(tmp_path) -> None:
    # the limit applies to brokerd only: the test process may hold many descriptors by now
    broker = BrokerProcess(str(tmp_path / "data"), free_port(), nofile_soft_limit=256)
    try:
        broker.start()

        async def create() -> int:
            conn = await RawConnection.open("127.0.0.1", broker.port)
            try:
                return await create_topic(conn, "fz-many", 100)
            finally:
                await conn.close()

        try:
            error = asyncio.run(create())
        except ConnectionError as exc:
            raise AssertionError(f"CreateTopics was not answered: {exc}") from exc
        assert error != 0, "100 partitions cannot fit 256 file descriptors"
        broker.stop()
        broker.start()
    finally:
        broker.stop()
