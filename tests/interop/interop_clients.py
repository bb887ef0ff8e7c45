"""Adapters that drive real Kafka clients against a replog broker, for the interop tests.

Every client gets the same two operations:

* `produce(bootstrap, topic, messages) -> list[Message]`: write `messages` (acks=all, lz4) and
  return them as expected on read (for kcat, with the timestamp window its clock produced);
* `consume(bootstrap, topic, partitions) -> list[Consumed]`: read every partition from offset 0 to
  the end, keys, values, headers and timestamps included.

Clients: `kcat` (Debian's kcat 1.7.1 / librdkafka 2.0.2, a subprocess), `confluent` (confluent-kafka /
librdkafka 2.16), `kafka_python` (kafka-python 3.x) and `replog` (this project's own client,
`client/`, always available). Settings follow the issue: confluent's producer is idempotent
(enable.idempotence=True), kafka-python's and replog's are idempotent by default, kcat's is not;
consumers use assign() with explicit offsets (confluent with a group.id and no auto commit,
kafka-python and replog with no group).

`require(client)` skips the calling test when the client is not installed, or fails it when the
environment variable REPLOG_REQUIRE_INTEROP=1 is set (CI: .ci/run sets it).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

REQUIRE_ENV = "REPLOG_REQUIRE_INTEROP"
CLIENT_TIMEOUT_S = 30.0
LINGER_MS = 50  # long enough that each producer's messages for one partition form one batch

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Message:
    """One record as a producer sends it. `timestamp` None: the producer's clock sets it, within
    [ts_min, ts_max] (filled in by the adapter)."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp: int | None = None
    ts_min: int = 0
    ts_max: int = 0

    @property
    def ident(self) -> bytes:
        """What identifies the record across clients (no test message has both key and value null)."""
        return self.key if self.value is None else self.value  # type: ignore[return-value]


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int

    @property
    def ident(self) -> bytes:
        return self.key if self.value is None else self.value  # type: ignore[return-value]


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------ availability

def _kcat_missing() -> str | None:
    return None if shutil.which("kcat") else "kcat is not on PATH (apt-get install kcat)"


def _module_missing(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # not installed, or installed without its native library
            return f"Python module {module} is not importable ({exc})"
        return None
    return check


AVAILABLE: dict[str, Callable[[], str | None]] = {
    "kcat": _kcat_missing,
    "confluent": _module_missing("confluent_kafka"),
    "kafka_python": _module_missing("kafka"),
    "replog": lambda: None,  # the project's own client
}


def interop_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing(client: str) -> str | None:
    """Why `client` cannot run here, or None."""
    return AVAILABLE[client]()


def require(client: str) -> None:
    """Skip (or, with REPLOG_REQUIRE_INTEROP=1, fail) the calling test if `client` is missing."""
    reason = missing(client)
    if reason is None:
        return
    if interop_required():
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires every interop client")
    pytest.skip(reason)


# ------------------------------------------------------------------------------------ kcat

KCAT_FIELD, KCAT_END = b"\x1f", b"\x1e"
# partition, offset, timestamp, key length, value length, headers, then key and value bytes raw
KCAT_FORMAT = r"%p\x1f%o\x1f%T\x1f%K\x1f%S\x1f%h\x1f%k%s\x1e"


def _run(cmd: Sequence[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(cmd), input=stdin, capture_output=True, timeout=CLIENT_TIMEOUT_S)
    assert result.returncode == 0, f"{cmd[0]} exited {result.returncode}: {result.stderr.decode(errors='replace')}"
    return result


def _kcat_produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> list[Message]:
    """kcat -P: one line per message, `key:value`, an empty value sent as null (-Z). Headers come
    from -H and are the same for every message: the first message's headers."""
    headers = messages[0].headers
    assert all(m.headers == headers for m in messages), "kcat sends one header set for all messages"
    assert all(m.timestamp is None for m in messages), "kcat cannot set timestamps"
    lines = []
    for m in messages:
        assert m.key is not None and b":" not in m.key and b"\n" not in (m.value or b"")
        lines.append(m.key + b":" + (m.value or b""))
    cmd = ["kcat", "-b", bootstrap, "-P", "-t", topic, "-z", "lz4", "-X", "acks=all", "-K", ":", "-Z",
           "-X", f"linger.ms={LINGER_MS}"]
    for name, value in headers:
        cmd += ["-H", f"{name}={value.decode()}"]
    before = now_ms()
    result = _run(cmd, b"\n".join(lines) + b"\n")
    after = now_ms()
    assert b"fail" not in result.stderr.lower(), result.stderr.decode(errors="replace")
    return [Message(m.key, m.value, headers, None, before, after) for m in messages]


def _parse_kcat_headers(text: bytes) -> Headers:
    if not text:
        return ()
    out = []
    for item in text.split(b","):
        name, _, value = item.partition(b"=")
        out.append((name.decode(), value))
    return tuple(out)


def _parse_kcat_output(out: bytes) -> list[Consumed]:
    records = []
    pos = 0
    while pos < len(out):
        fields = []
        for _ in range(6):
            end = out.index(KCAT_FIELD, pos)
            fields.append(out[pos:end])
            pos = end + 1
        partition, offset, timestamp, key_len, value_len = (int(f) for f in fields[:5])
        key = None if key_len < 0 else out[pos:pos + key_len]
        pos += max(key_len, 0)
        value = None if value_len < 0 else out[pos:pos + value_len]
        pos += max(value_len, 0)
        assert out[pos:pos + 1] == KCAT_END, f"kcat output out of step at byte {pos}"
        pos += 1
        records.append(Consumed(partition, offset, key, value, _parse_kcat_headers(fields[5]), timestamp))
    return records


def _kcat_consume(bootstrap: str, topic: str, partitions: int) -> list[Consumed]:
    result = _run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-X", "check.crcs=true",
                   "-f", KCAT_FORMAT])
    return _parse_kcat_output(result.stdout)


# ------------------------------------------------------------------------------------ confluent-kafka

def _confluent_produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> list[Message]:
    from confluent_kafka import Producer

    errors: list[str] = []
    delivered: list[int] = []
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "acks": "all",
                         "enable.idempotence": True, "linger.ms": LINGER_MS, "client.id": "replog-interop"})

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append(msg.offset())

    for m in messages:
        producer.produce(topic, key=m.key, value=m.value, headers=list(m.headers), timestamp=m.timestamp or 0,
                         on_delivery=on_delivery)
    left = producer.flush(CLIENT_TIMEOUT_S)
    assert left == 0, f"{left} messages not delivered"
    assert not errors, errors
    assert len(delivered) == len(messages)
    return list(messages)


def _confluent_consume(bootstrap: str, topic: str, partitions: int) -> list[Consumed]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"replog-interop-{os.getpid()}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "check.crcs": True,
                         "auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        records: list[Consumed] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"confluent consumer: only partitions {at_end} reached their end"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            at_end.discard(msg.partition())
            headers = tuple((k, v if v is not None else b"") for k, v in (msg.headers() or []))
            records.append(Consumed(msg.partition(), msg.offset(), msg.key(), msg.value(), headers,
                                    msg.timestamp()[1]))
        for p in range(partitions):  # the ends agree with the broker's (ListOffsets)
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert (low, high) == (0, sum(1 for r in records if r.partition == p))
        return records
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------ kafka-python

def _kafka_python_produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> list[Message]:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="lz4", acks="all", linger_ms=LINGER_MS,
                             client_id="replog-interop")
    try:
        assert producer.config["enable_idempotence"], "kafka-python is expected to be idempotent by default"
        futures = [producer.send(topic, key=m.key, value=m.value, headers=list(m.headers), timestamp_ms=m.timestamp)
                   for m in messages]
        producer.flush(CLIENT_TIMEOUT_S)
        for f in futures:
            f.get(timeout=CLIENT_TIMEOUT_S)  # raises the delivery error, if any
    finally:
        producer.close(timeout=CLIENT_TIMEOUT_S)
    return list(messages)


def _kafka_python_consume(bootstrap: str, topic: str, partitions: int) -> list[Consumed]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             check_crcs=True, client_id="replog-interop")
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        ends = consumer.end_offsets(tps)
        records: list[Consumed] = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "kafka-python consumer did not reach the end offsets"
            for tp, batch in consumer.poll(timeout_ms=500).items():
                for r in batch:
                    records.append(Consumed(tp.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp))
        return records
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------ replog's own client

async def _replog_produce_async(bootstrap: str, topic: str, messages: Sequence[Message]) -> list[Message]:
    from client import Producer

    async with Producer(bootstrap, acks="all", compression="lz4", linger_ms=LINGER_MS,
                        client_id="replog-interop") as producer:
        assert producer.idempotent, "replog's producer is expected to be idempotent by default"
        futures = [producer.send(topic, m.value, m.key, headers=list(m.headers), timestamp_ms=m.timestamp)
                   for m in messages]
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            await asyncio.gather(*futures)  # raises the delivery error, if any
    return list(messages)


def _replog_produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> list[Message]:
    return asyncio.run(_replog_produce_async(bootstrap, topic, messages))


async def _replog_consume_async(bootstrap: str, topic: str, partitions: int) -> list[Consumed]:
    from client import Consumer

    async with Consumer(bootstrap, auto_offset_reset="none", client_id="replog-interop") as consumer:
        tps = [(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        ends = await consumer.end_offsets(tps)
        records: list[Consumed] = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, "replog consumer did not reach the end offsets"
            for r in await consumer.poll(timeout_ms=500):
                headers = tuple((k, v if v is not None else b"") for k, v in r.headers)
                records.append(Consumed(r.partition, r.offset, r.key, r.value, headers, r.timestamp))
        return records


def _replog_consume(bootstrap: str, topic: str, partitions: int) -> list[Consumed]:
    return asyncio.run(_replog_consume_async(bootstrap, topic, partitions))


PRODUCERS: dict[str, Callable[[str, str, Sequence[Message]], list[Message]]] = {
    "kcat": _kcat_produce,
    "confluent": _confluent_produce,
    "kafka_python": _kafka_python_produce,
    "replog": _replog_produce,
}
CONSUMERS: dict[str, Callable[[str, str, int], list[Consumed]]] = {
    "kcat": _kcat_consume,
    "confluent": _confluent_consume,
    "kafka_python": _kafka_python_consume,
    "replog": _replog_consume,
}
