"""Which partition a produced record goes to: Java's default (KAFKA_PROTOCOL.md §4).

- A key: `to_positive(murmur2(key)) % partition_count`, over *all* partitions (Java's
  BuiltInPartitioner.partitionForKey; kafka-python's DefaultPartitioner gives the same placement).
- No key: a sticky partition per topic, chosen at random among partitions with a leader, kept
  until the accumulator closes a batch for it (KIP-480), then another one is drawn. That batches
  keyless records well without skewing one partition.

`murmur2` is Kafka's Utils.murmur2: MurmurHash2 (32-bit), seed 0x9747b28c, m 0x5bd1e995, r 24,
4-byte little-endian blocks, arithmetic mod 2^32, result a *signed* int32 as Java returns it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

__all__ = ["DefaultPartitioner", "murmur2", "to_positive"]

# Keys repeat (user ids, order ids...): their partition hashes are cached, up to this many keys (the
# cache is cleared when full; a bound, not an LRU).
KEY_HASHES_CACHED_MAX = 65_536

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """Kafka's murmur2 of `data` as a signed int32 (test vectors in tests/client/test_partitioner.py)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    blocks = length & ~3
    ints = memoryview(data).cast("B")
    from_bytes = int.from_bytes
    for i in range(0, blocks, 4):
        k = from_bytes(ints[i:i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= ints[blocks + 2] << 16
        if extra >= 2:
            h ^= ints[blocks + 1] << 8
        h ^= ints[blocks]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(value: int) -> int:
    """Java's Utils.toPositive: clear the sign bit (not abs: MIN_VALUE maps to 0)."""
    return value & 0x7FFFFFFF


class DefaultPartitioner:
    """Keyed: murmur2 placement. Keyless: sticky per topic until `next_sticky` is called.

    `available_partitions(topic)` lists the partitions with a known leader (the metadata cache's
    method); it is only consulted when a new sticky partition is drawn.
    """

    __slots__ = ("_available", "_hashes", "_random", "_sticky")

    def __init__(self, available_partitions: Callable[[str], Sequence[int]] | None = None,
                 seed: int | None = None) -> None:
        self._available = available_partitions
        self._random = random.Random(seed)
        self._sticky: dict[str, int] = {}
        self._hashes: dict[bytes, int] = {}

    def __call__(self, topic: str, key: bytes | None, partition_count: int) -> int:
        """The partition for a record of `topic` with `key` (None: keyless)."""
        if key is not None:
            positive = self._hashes.get(key)
            if positive is None:
                if len(self._hashes) >= KEY_HASHES_CACHED_MAX:
                    self._hashes.clear()
                positive = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
            return positive % partition_count
        sticky = self._sticky.get(topic)
        if sticky is None or sticky >= partition_count:
            sticky = self._draw(topic, partition_count, None)
        return sticky

    def next_sticky(self, topic: str, previous: int, partition_count: int) -> None:
        """A batch for `previous` was closed: move keyless records of `topic` elsewhere (KIP-480)."""
        if self._sticky.get(topic) == previous:
            self._draw(topic, partition_count, previous)

    def _draw(self, topic: str, partition_count: int, avoid: int | None) -> int:
        available = [p for p in self._available(topic) if p < partition_count] if self._available else []
        choices: Sequence[int] = available or range(partition_count)
        if len(choices) > 1 and avoid is not None:
            choices = [p for p in choices if p != avoid]
        chosen = choices[self._random.randrange(len(choices))]
        self._sticky[topic] = chosen
        return chosen
