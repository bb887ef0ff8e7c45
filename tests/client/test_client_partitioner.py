"""client.partitioner: Java's murmur2 (KAFKA_PROTOCOL.md §4 vectors), placement equal to kafka-python's
DefaultPartitioner, sticky keyless placement, and the placement of real produced records."""

from __future__ import annotations

import asyncio
import random

import pytest
from kafka.partitioner.default import DefaultPartitioner as KafkaPythonPartitioner

from client import Admin, Producer
from client.partitioner import DefaultPartitioner, murmur2, to_positive

# [S: ak clients/src/test/.../utils/UtilsTest.java testMurmur2]
VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}
KEYS = [f"key-{i}".encode() for i in range(100)]


class _Cluster:
    """The slice of kafka-python's ClusterMetadata its DefaultPartitioner reads."""

    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


def kafka_python_partition(key: bytes, partitions: int) -> int:
    return KafkaPythonPartitioner().partition("t", key, key, b"v", b"v", _Cluster(partitions))


@pytest.mark.parametrize(("key", "expected"), VECTORS.items())
def test_murmur2_matches_java(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_to_positive_clears_the_sign_bit() -> None:
    assert to_positive(-973932308) == -973932308 & 0x7FFFFFFF
    assert to_positive(-(1 << 31)) == 0


@pytest.mark.parametrize("partitions", [1, 3, 7, 10, 64])
def test_placement_matches_kafka_python_for_100_keys(partitions: int) -> None:
    ours = DefaultPartitioner()
    for key in KEYS:
        assert ours("t", key, partitions) == kafka_python_partition(key, partitions)


def test_random_bytes_hash_like_kafka_python() -> None:
    from kafka.partitioner.default import murmur2 as kp_murmur2
    rng = random.Random(7)
    for length in range(64):
        data = rng.randbytes(length)
        assert murmur2(data) & 0x7FFFFFFF == kp_murmur2(data) & 0x7FFFFFFF


def test_keyless_records_stick_to_one_available_partition_until_switched() -> None:
    partitioner = DefaultPartitioner(lambda topic: [1, 3], seed=1)
    first = partitioner("t", None, 4)
    assert first in (1, 3)
    assert {partitioner("t", None, 4) for _ in range(20)} == {first}
    partitioner.next_sticky("t", first, 4)
    assert partitioner("t", None, 4) == ({1, 3} - {first}).pop()
    partitioner.next_sticky("t", 99, 4)  # not the sticky one: no change
    assert partitioner("t", None, 4) == ({1, 3} - {first}).pop()


def test_produced_keyed_records_land_where_kafka_python_puts_them(broker) -> None:
    async def run() -> dict[bytes, int]:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("placed", partitions=7)
        async with Producer(broker.bootstrap, linger_ms=1) as producer:
            futures = {key: producer.send("placed", b"v", key=key) for key in KEYS}
            return {key: (await future).partition for key, future in futures.items()}

    placed = asyncio.run(run())
    assert placed == {key: kafka_python_partition(key, 7) for key in KEYS}
