"""Producer and consumer throughput against one brokerd, as ratios to kafka-python in the same run.

Workload: 100-byte records (hex text), no key, lz4, acks=all, linger 5 ms, default batch sizes, one
partition. Targets (issue): produce >= 3x kafka-python, consume >= 2x kafka-python and >= 0.3 M
records/s. The machine is shared, so the asserted bounds are looser than the targets; the printed
figures are the measurement.

Run: python -m pytest -m bench tests/client/test_client_throughput.py -q -s
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from client import Consumer, Producer

pytestmark = pytest.mark.bench
RECORDS = 200_000
KP_RECORDS = 60_000
VALUE = os.urandom(50).hex().encode()


@pytest.fixture(autouse=True)
def _only_when_selected(request) -> None:
    if "bench" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("throughput benchmark: run with -m bench")


async def _ours_produce(bootstrap: str, topic: str) -> float:
    async with Producer(bootstrap, acks="all", compression="lz4", linger_ms=5) as producer:
        await producer.send_and_wait(topic, VALUE)
        started = time.perf_counter()
        for _ in range(RECORDS):
            await producer.send_when_ready(topic, VALUE)
        await producer.flush()
        return RECORDS / (time.perf_counter() - started)


async def _ours_consume(bootstrap: str, topic: str, count: int) -> float:
    async with Consumer(bootstrap, max_poll_records=10_000) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek((topic, 0), 0)
        got = 0
        started = time.perf_counter()
        while got < count:
            got += len(await consumer.poll(timeout_ms=1_000))
        return got / (time.perf_counter() - started)


def _kp_produce(bootstrap: str, topic: str) -> float:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="lz4", linger_ms=5)
    producer.send(topic, VALUE).get(timeout=30)
    started = time.perf_counter()
    for _ in range(KP_RECORDS):
        producer.send(topic, VALUE)
    producer.flush()
    rate = KP_RECORDS / (time.perf_counter() - started)
    producer.close()
    return rate


def _kp_consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    got = 0
    started = time.perf_counter()
    while got < count:
        got += sum(len(records) for records in consumer.poll(timeout_ms=1_000, max_records=10_000).values())
    rate = got / (time.perf_counter() - started)
    consumer.close()
    return rate


def test_throughput_against_kafka_python(broker) -> None:
    kp_produce = _kp_produce(broker.bootstrap, "kp")
    ours_produce = asyncio.run(_ours_produce(broker.bootstrap, "ours"))
    kp_consume = _kp_consume(broker.bootstrap, "ours", RECORDS)
    ours_consume = asyncio.run(_ours_consume(broker.bootstrap, "ours", RECORDS))
    print(f"\nproduce: ours {ours_produce:,.0f} rec/s, kafka-python {kp_produce:,.0f} rec/s "
          f"({ours_produce / kp_produce:.1f}x)")
    print(f"consume: ours {ours_consume:,.0f} rec/s, kafka-python {kp_consume:,.0f} rec/s "
          f"({ours_consume / kp_consume:.1f}x)")
    assert ours_produce >= 2 * kp_produce
    assert ours_consume >= 1.5 * kp_consume
