"""The embedded "consumer" protocol: ConsumerProtocolSubscription and ConsumerProtocolAssignment.

These are the opaque bytes a consumer puts in JoinGroup's `protocols[].metadata` (its
subscription) and the group leader puts in SyncGroup's `assignments[].assignment`; the broker
never parses them (it only stores and forwards them, and shows them in DescribeGroups). Every
member of a group must read every other member's bytes, so the layout is Kafka's, exactly
[S: ak clients/src/main/resources/common/message/ConsumerProtocolSubscription.json,
ConsumerProtocolAssignment.json; kp kafka/protocol/schemas/resources/ (same files)]. Both are
non-flexible "data" messages prefixed by an int16 version, big-endian:

    Subscription v0   version int16, topics [int32 n][string]..., user_data nullable bytes (int32 len, -1 null)
                 v1+  + owned_partitions [int32 n]{topic string, partitions [int32 n][int32]}
                 v2+  + generation_id int32 (default -1)
                 v3+  + rack_id nullable string (int16 len, -1 null)
    Assignment   v0-3 version int16, assigned_partitions [int32 n]{topic string, partitions [int32 n][int32]},
                      user_data nullable bytes

Strings are int16-length UTF-8. Kafka's rule for a version above the newest known (3): parse it
with the newest format and ignore what follows ("future versions will not break
compatibility"), which `decode_*` do. An empty assignment buffer (what a leader sends a member
that gets nothing, or what a broker answers before any sync) decodes as an empty assignment, as
Java's ConsumerProtocol does.

Decoding is bounded: counts are checked against the bytes left (and ENTRIES_MAX), so a hostile
peer's bytes raise `ConsumerProtocolError` (a ValueError), never allocate unboundedly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ASSIGNMENT_VERSION_MAX", "Assignment", "CONSUMER_PROTOCOL_TYPE", "ConsumerProtocolError",
    "SUBSCRIPTION_VERSION_MAX", "Subscription", "decode_assignment", "decode_subscription", "encode_assignment",
    "encode_subscription",
]

CONSUMER_PROTOCOL_TYPE = "consumer"
SUBSCRIPTION_VERSION_MAX = 3
ASSIGNMENT_VERSION_MAX = 3
ENTRIES_MAX = 1_000_000  # topics, partitions per topic: far above any real group

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class ConsumerProtocolError(ValueError):
    """Bytes that are not a valid consumer-protocol subscription or assignment."""


@dataclass(frozen=True)
class Subscription:
    """What a member asks for: topics (in order), opaque user data, and (v1+) what it owns now."""

    topics: tuple[str, ...]
    user_data: bytes | None = None
    owned_partitions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    generation_id: int = -1
    rack_id: str | None = None
    version: int = 0


@dataclass(frozen=True)
class Assignment:
    """What the leader gives a member: (topic, partitions) pairs and opaque user data."""

    partitions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    user_data: bytes | None = None
    version: int = 0

    def topic_partitions(self) -> list[tuple[str, int]]:
        """[(topic, partition)] in the encoded order."""
        return [(topic, p) for topic, parts in self.partitions for p in parts]


def group_by_topic(tps: Iterable[tuple[str, int]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """[(topic, partition)] -> ((topic, (sorted partitions)), ...) sorted by topic (Kafka's order)."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in tps:
        by_topic.setdefault(topic, []).append(partition)
    return tuple((t, tuple(sorted(ps))) for t, ps in sorted(by_topic.items()))


# --- encoding ----------------------------------------------------------------------------------

def _string(out: bytearray, value: str | None, nullable: bool = False) -> None:
    if value is None:
        if not nullable:
            raise ConsumerProtocolError("a non-nullable string is None")
        out += _I16.pack(-1)
        return
    data = value.encode("utf-8")
    if len(data) > 0x7FFF:
        raise ConsumerProtocolError("string longer than 32767 bytes")
    out += _I16.pack(len(data))
    out += data


def _bytes(out: bytearray, value: bytes | None) -> None:
    if value is None:
        out += _I32.pack(-1)
    else:
        out += _I32.pack(len(value))
        out += value


def _topic_partitions(out: bytearray, entries: Iterable[tuple[str, Iterable[int]]]) -> None:
    items = list(entries)
    out += _I32.pack(len(items))
    for topic, partitions in items:
        _string(out, topic)
        parts = list(partitions)
        out += _I32.pack(len(parts))
        for p in parts:
            out += _I32.pack(p)


def encode_subscription(subscription: Subscription) -> bytes:
    version = subscription.version
    if not 0 <= version <= SUBSCRIPTION_VERSION_MAX:
        raise ConsumerProtocolError(f"subscription version {version} is not in 0-{SUBSCRIPTION_VERSION_MAX}")
    out = bytearray(_I16.pack(version))
    out += _I32.pack(len(subscription.topics))
    for topic in subscription.topics:
        _string(out, topic)
    _bytes(out, subscription.user_data)
    if version >= 1:
        _topic_partitions(out, subscription.owned_partitions)
    if version >= 2:
        out += _I32.pack(subscription.generation_id)
    if version >= 3:
        _string(out, subscription.rack_id, nullable=True)
    return bytes(out)


def encode_assignment(assignment: Assignment | Mapping[str, Iterable[int]]) -> bytes:
    """An Assignment, or {topic: partitions} (encoded as version 0, topics sorted)."""
    if not isinstance(assignment, Assignment):
        assignment = Assignment(tuple((t, tuple(sorted(ps))) for t, ps in sorted(assignment.items())))
    if not 0 <= assignment.version <= ASSIGNMENT_VERSION_MAX:
        raise ConsumerProtocolError(f"assignment version {assignment.version} is not in 0-{ASSIGNMENT_VERSION_MAX}")
    out = bytearray(_I16.pack(assignment.version))
    _topic_partitions(out, assignment.partitions)
    _bytes(out, assignment.user_data)
    return bytes(out)


# --- decoding ----------------------------------------------------------------------------------

class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ConsumerProtocolError(f"truncated: {n} bytes wanted at {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return int(_I16.unpack(self._take(2))[0])

    def int32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def count(self, min_entry_bytes: int) -> int:
        n = self.int32()
        if n < 0 or n > ENTRIES_MAX or n * min_entry_bytes > len(self.data) - self.pos:
            raise ConsumerProtocolError(f"impossible array length {n}")
        return n

    def string(self, nullable: bool = False) -> str | None:
        n = self.int16()
        if n == -1 and nullable:
            return None
        if n < 0:
            raise ConsumerProtocolError(f"bad string length {n}")
        try:
            return bytes(self._take(n)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConsumerProtocolError(f"string is not UTF-8: {exc}") from exc

    def nullable_bytes(self) -> bytes | None:
        n = self.int32()
        if n == -1:
            return None
        return bytes(self._take(n))

    def topic_partitions(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        out = []
        for _ in range(self.count(6)):
            topic = self.string()
            assert topic is not None
            n = self.count(4)
            out.append((topic, tuple(self.int32() for _ in range(n))))
        return tuple(out)


def decode_subscription(data: bytes) -> Subscription:
    """The subscription in `data` (versions above 3 are read as 3; trailing bytes are ignored)."""
    reader = _Reader(data)
    version = reader.int16()
    if version < 0:
        raise ConsumerProtocolError(f"negative subscription version {version}")
    topics = []
    for _ in range(reader.count(2)):
        topic = reader.string()
        assert topic is not None
        topics.append(topic)
    user_data = reader.nullable_bytes()
    owned: tuple[tuple[str, tuple[int, ...]], ...] = ()
    generation_id = -1
    rack_id = None
    if version >= 1:
        owned = reader.topic_partitions()
    if version >= 2:
        generation_id = reader.int32()
    if version >= 3:
        rack_id = reader.string(nullable=True)
    return Subscription(tuple(topics), user_data, owned, generation_id, rack_id, version)


def decode_assignment(data: bytes) -> Assignment:
    """The assignment in `data`; empty bytes are an empty assignment."""
    if not data:
        return Assignment()
    reader = _Reader(data)
    version = reader.int16()
    if version < 0:
        raise ConsumerProtocolError(f"negative assignment version {version}")
    partitions = reader.topic_partitions()
    user_data = reader.nullable_bytes()
    return Assignment(partitions, user_data, version)
