"""Compression codecs with confluent-kafka (librdkafka 2.16, idempotent, acks=all) against brokerd:

* gzip batches are stored as gzip (checked offline with `brokerctl log dump`) and served: kafka-python
  and replog's own client read every record back, keys, values and headers included;
* snappy and zstd, which brokerd cannot decode (client/wire/compression.py), are refused per
  partition with UNSUPPORTED_COMPRESSION_TYPE (76): librdkafka reports that code for every record
  (not retried), and nothing is stored: the high watermark stays 0 and the log has no batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from interop_clients import CLIENT_TIMEOUT_S, CONSUMERS, Message, require

from client.sync import SyncAdmin

RECORDS = 40
PARTITIONS = 2
UNSUPPORTED_COMPRESSION_TYPE = 76
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# librdkafka keeps a batch uncompressed unless compressing makes it smaller: repetitive text
FILLER = b" the quick brown fox jumps over the lazy dog" * 10


def _messages(codec: str) -> list[Message]:
    return [Message(f"{codec}-{i:03d}".encode(), f"{codec} value {i:03d}".encode() + FILLER,
                    (("codec", codec.encode()), ("i", str(i).encode())), 1_700_000_000_000 + i)
            for i in range(RECORDS)]


def _confluent_produce(bootstrap: str, topic: str, codec: str, messages: list[Message]) -> list[object]:
    """Produce with compression.type=codec; each record's delivery report: its offset or its KafkaError."""
    from confluent_kafka import Producer

    reports: list[object] = []
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 50, "client.id": "replog-interop"})
    for m in messages:
        producer.produce(topic, key=m.key, value=m.value, headers=list(m.headers), timestamp=m.timestamp or 0,
                         on_delivery=lambda err, msg: reports.append(err if err is not None else msg.offset()))
    assert producer.flush(CLIENT_TIMEOUT_S) == 0, "librdkafka still holds records after the flush"
    assert len(reports) == len(messages)
    return reports


def _dump_batches(partition_dir: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "tools.brokerctl", "log", "dump", "--json", partition_dir],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return [e for e in map(json.loads, result.stdout.splitlines()) if e["type"] == "batch"]


def test_gzip_is_stored_and_served(start_broker) -> None:
    require("confluent")
    broker = start_broker()
    with SyncAdmin(broker.bootstrap) as admin:
        admin.create_topic("comp-gzip", PARTITIONS, 1)
    sent = _messages("gzip")
    reports = _confluent_produce(broker.bootstrap, "comp-gzip", "gzip", sent)
    assert all(isinstance(r, int) for r in reports), reports

    expected = {m.key: m for m in sent}
    for consumer in ("kafka_python", "replog"):
        require(consumer)
        records = CONSUMERS[consumer](broker.bootstrap, "comp-gzip", PARTITIONS)
        assert sorted(r.key for r in records) == sorted(expected), consumer
        for r in records:
            m = expected[r.key]
            assert (r.value, r.headers, r.timestamp) == (m.value, m.headers, m.timestamp), (consumer, r.key)

    assert broker.stop() == 0
    batches = [b for p in range(PARTITIONS) for b in _dump_batches(os.path.join(broker.data_dir, f"comp-gzip-{p}"))]
    assert batches and {b["codec"] for b in batches} == {"gzip"}
    assert all(b["crc_valid"] and b["producer_id"] >= 0 for b in batches)
    assert sum(b["count"] for b in batches) == RECORDS


@pytest.mark.parametrize("codec", ["snappy", "zstd"])
def test_unsupported_codec_is_refused_and_nothing_stored(start_broker, codec: str) -> None:
    require("confluent")
    from confluent_kafka import KafkaError

    broker = start_broker()
    topic = f"comp-{codec}"
    with SyncAdmin(broker.bootstrap) as admin:
        admin.create_topic(topic, PARTITIONS, 1)
    reports = _confluent_produce(broker.bootstrap, topic, codec, _messages(codec))
    assert all(isinstance(r, KafkaError) for r in reports), reports
    assert {r.code() for r in reports} == {KafkaError.UNSUPPORTED_COMPRESSION_TYPE}  # type: ignore[attr-defined]
    assert KafkaError.UNSUPPORTED_COMPRESSION_TYPE == UNSUPPORTED_COMPRESSION_TYPE

    with SyncAdmin(broker.bootstrap) as admin:
        partitions = admin.describe_topics([topic])[topic].partitions
    assert [p.high_watermark for p in partitions] == [0] * PARTITIONS
    assert broker.stop() == 0
    for p in range(PARTITIONS):
        assert _dump_batches(os.path.join(broker.data_dir, f"{topic}-{p}")) == []
