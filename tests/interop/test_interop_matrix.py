"""The interop matrix: kcat, confluent-kafka, kafka-python and replog's own client each produce to one
topic of a fresh brokerd (acks=all, lz4), then each of them consumes every record of every producer back, keys,
null keys and values, headers (repeated names included) and timestamps included. Finally the broker
is stopped and its data directory read offline with `brokerctl log dump --json`: every stored
batch must be lz4 with a valid CRC, and the idempotent producers' batches must carry producer ids.

Module layout: the `matrix` fixture (module scope) starts the broker and runs the producers;
`test_producer[...]` reports each producer, `test_consumer_reads_every_record[...]` runs each
consumer, `test_consumers_agree` compares them, `test_stored_batches` (last: it stops the broker)
checks the disk. A missing client skips its tests (fails them with REPLOG_REQUIRE_INTEROP=1);
the others still cover everything they can. The clients are adapted in interop_clients.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from brokerproc import BrokerProcess, free_port
from interop_clients import CONSUMERS, PRODUCERS, Consumed, Message, missing, now_ms, require

from client.wire.protocol import encode_request

TOPIC = "interop-matrix"
PARTITIONS = 3
PER_PRODUCER = 30
HOUR_MS = 3_600_000
# ~450 bytes of text per value: librdkafka compresses a batch only when that makes it smaller
FILLER = b" lorem ipsum dolor sit amet, consectetur adipiscing elit" * 8
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EXPECTED_PRODUCER_ID = {  # producer -> is every batch it wrote idempotent (producer id >= 0)?
    "kcat": False,          # librdkafka: enable.idempotence defaults to false
    "confluent": True,      # enable.idempotence=True
    "kafka_python": True,   # idempotent by default
    "replog": True,         # idempotent by default (acks=all)
}


def messages_for(producer: str) -> list[Message]:
    """What `producer` sends: PER_PRODUCER keyed records, one null-key record and one tombstone."""
    if producer == "kcat":  # kcat: one header set for all, its own clock for timestamps, text lines only
        headers = (("src", b"kcat"), ("run", b"matrix"))
        out = [Message(f"kcat-{i:03d}".encode(), f"kcat value {i:03d}".encode() + FILLER, headers)
               for i in range(PER_PRODUCER)]
        return [*out, Message(b"kcat-tombstone", None, headers)]
    hours_back = {"confluent": 2, "kafka_python": 1, "replog": 3}[producer]
    base = now_ms() - hours_back * HOUR_MS  # producer-chosen CreateTime, distinct per producer
    out = []
    for i in range(PER_PRODUCER):
        headers = (("src", producer.encode()), ("idx", str(i).encode()), ("dup", b"first"), ("dup", b"second"))
        value = f"{producer} value {i:03d}".encode() + FILLER + (b"\xff\x00\xfe" if i % 7 == 0 else b"")
        out.append(Message(f"{producer}-{i:03d}".encode(), value, headers, base + i * 10))
    out.append(Message(None, f"{producer} null key".encode() + FILLER, (("src", producer.encode()),), base + 1000))
    out.append(Message(f"{producer}-tombstone".encode(), None, (("src", producer.encode()),), base + 1001))
    return out


@dataclass
class Matrix:
    broker: BrokerProcess
    sent: dict[str, list[Message]] = field(default_factory=dict)      # producer -> what it wrote
    failed: dict[str, str] = field(default_factory=dict)              # producer -> why it did not
    views: dict[str, list[Consumed]] = field(default_factory=dict)    # consumer -> what it read

    @property
    def expected(self) -> dict[bytes, tuple[str, Message]]:
        return {m.ident: (p, m) for p, msgs in self.sent.items() for m in msgs}

    def running(self) -> BrokerProcess:
        if self.broker.proc is None or self.broker.proc.poll() is not None:
            self.broker.start()
        return self.broker


def _create_topic(bootstrap: str) -> None:
    """CreateTopics v4 over a raw socket: no interop client is needed to set the stage."""
    import socket
    import struct

    from client.wire.protocol import decode_response

    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(encode_request(19, 4, 1, "interop-setup", {"topics": [
            {"name": TOPIC, "num_partitions": PARTITIONS, "replication_factor": 1}], "timeout_ms": 5000},
            framed=True))
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
            chunk = sock.recv(65536)
            assert chunk, "broker closed the connection"
            data += chunk
    _, body = decode_response(data[4:], 19, 4)
    assert body["topics"][0]["error_code"] == 0, body


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    base = tmp_path_factory.mktemp("interop-matrix")
    broker = BrokerProcess(str(base / "data"), free_port())
    broker.start()
    m = Matrix(broker)
    try:
        _create_topic(broker.bootstrap)
        for producer, produce in PRODUCERS.items():
            reason = missing(producer)
            if reason is not None:
                m.failed[producer] = f"skipped: {reason}"
                continue
            try:
                m.sent[producer] = produce(broker.bootstrap, TOPIC, messages_for(producer))
            except Exception as exc:  # reported by test_producer; the other producers still run
                m.failed[producer] = f"{type(exc).__name__}: {exc}"
        yield m
    finally:
        broker.stop()


@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_producer(matrix: Matrix, producer: str) -> None:
    require(producer)
    assert producer not in matrix.failed, matrix.failed.get(producer)
    assert len(matrix.sent[producer]) == PER_PRODUCER + (1 if producer == "kcat" else 2)


def _check_record(got: Consumed, producer: str, sent: Message, consumer: str) -> None:
    where = f"{consumer} reading {producer}'s record {sent.ident[:24]!r} at {got.partition}/{got.offset}"
    assert (got.key, got.value) == (sent.key, sent.value), where
    assert got.headers == sent.headers, where
    if sent.timestamp is not None:
        assert got.timestamp == sent.timestamp, where
    else:  # stamped by the producer's clock while it ran
        assert sent.ts_min - 1000 <= got.timestamp <= sent.ts_max + 1000, where


@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_consumer_reads_every_record(matrix: Matrix, consumer: str) -> None:
    require(consumer)
    if not matrix.sent:
        pytest.fail(f"no producer wrote anything: {matrix.failed}")
    records = CONSUMERS[consumer](matrix.running().bootstrap, TOPIC, PARTITIONS)
    matrix.views[consumer] = records
    expected = matrix.expected
    seen = Counter(r.ident for r in records)
    duplicates = [ident[:30] for ident, n in seen.items() if n > 1]
    assert not duplicates, f"{consumer} read these more than once: {duplicates}"
    missed = Counter(p for ident, (p, _) in expected.items() if ident not in seen)
    assert not missed, f"{consumer} missed records of: {dict(missed)}"
    extra = [ident[:30] for ident in seen if ident not in expected]
    assert not extra, f"{consumer} read records nobody sent: {extra}"
    for r in records:
        producer, sent = expected[r.ident]
        _check_record(r, producer, sent, consumer)
    for p in range(PARTITIONS):  # each partition's offsets are 0..n-1, in order
        offsets = [r.offset for r in records if r.partition == p]
        assert offsets == list(range(len(offsets))), f"{consumer}: partition {p} offsets {offsets}"


def test_consumers_agree(matrix: Matrix) -> None:
    """Every consumer saw each record at the same partition and offset with the same timestamp."""
    if len(matrix.views) < 2:
        pytest.skip(f"needs two consumer views, have {sorted(matrix.views)}")
    views = {c: sorted(v, key=lambda r: (r.partition, r.offset)) for c, v in matrix.views.items()}
    first_name, first = next(iter(views.items()))
    for name, view in views.items():
        assert view == first, f"{name} and {first_name} disagree"


def _bytes(obj: dict | None) -> bytes | None:
    if obj is None:
        return None
    return obj["utf8"].encode() if "utf8" in obj else base64.b64decode(obj["base64"])


def _dump(partition_dir: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "tools.brokerctl", "log", "dump", "--json", "--records",
                             partition_dir], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, f"log dump exited {result.returncode}: {result.stderr}"
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_stored_batches(matrix: Matrix) -> None:
    """Offline, after a clean stop: every batch lz4 with a valid CRC; idempotent producers' batches
    carry a producer id, kcat's do not; every record stored exactly once."""
    if not matrix.sent:
        pytest.fail(f"no producer wrote anything: {matrix.failed}")
    assert matrix.broker.stop() == 0
    expected = matrix.expected
    stored: Counter[bytes] = Counter()
    producer_ids: dict[str, set[int]] = {}
    for p in range(PARTITIONS):
        entries = _dump(os.path.join(matrix.broker.data_dir, f"{TOPIC}-{p}"))
        summary = entries[-1]
        assert summary["type"] == "summary" and summary["invalid_batches"] == 0, summary
        for batch in (e for e in entries if e["type"] == "batch"):
            where = f"partition {p} batch at offset {batch['base_offset']}"
            assert batch["crc_valid"] and batch["magic"] == 2, where
            assert batch["codec"] == "lz4", f"{where} is {batch['codec']}"
            assert not batch["transactional"] and not batch["control"], where
            idents = [(_bytes(r["value"]) if r["value"] is not None else _bytes(r["key"])) for r in batch["records"]]
            owners = {expected[i][0] for i in idents}
            assert len(owners) == 1, f"{where} mixes records of {owners}"
            (owner,) = owners
            if EXPECTED_PRODUCER_ID[owner]:
                assert batch["producer_id"] >= 0 and batch["producer_epoch"] >= 0, f"{where} ({owner})"
                assert batch["base_sequence"] >= 0, f"{where} ({owner})"
            else:
                assert (batch["producer_id"], batch["base_sequence"]) == (-1, -1), f"{where} ({owner})"
            producer_ids.setdefault(owner, set()).add(batch["producer_id"])
            for record, ident in zip(batch["records"], idents, strict=True):
                stored[ident] += 1
                sent = expected[ident][1]
                assert (_bytes(record["key"]), _bytes(record["value"])) == (sent.key, sent.value), where
                assert [(h["key"], _bytes(h["value"])) for h in record["headers"]] == list(sent.headers), where
    assert stored == Counter(expected.keys()), "stored records differ from the records sent"
    idempotent = [ids for owner, ids in producer_ids.items() if EXPECTED_PRODUCER_ID[owner]]
    assert all(not a & b for i, a in enumerate(idempotent) for b in idempotent[i + 1:]), producer_ids
