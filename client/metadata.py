"""The client's view of the cluster: brokers, controller, topics, and per partition its leader and
leader epoch. Pure state (no I/O); cluster.py fetches Metadata responses and feeds them in.

- `update(body, now_ms)` applies one Metadata response: brokers, cluster id and controller are
  replaced; each topic in the response replaces that topic's entry (topics not in the response are
  kept, except on an all-topics response, which replaces the whole set).
- A topic answered with an error keeps no partitions; its error is remembered
  (`topic_error`), so a producer can tell "unknown topic" from "not asked yet".
- Leader epochs (Metadata v7+, KIP-320) are kept per partition; a response carrying an *older*
  epoch for a partition than the cache holds is ignored for that partition (a stale broker must
  not move a client back, as Java's Metadata.updateLatestMetadata).
- Bounded: the number of topics cached is at most TOPICS_CACHED_MAX (oldest interest dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from client.wire.errors import ErrorCode, error_code_for

__all__ = ["BrokerMetadata", "MetadataCache", "PartitionMetadata", "TopicMetadata", "TopicPartition"]

TopicPartition = tuple[str, int]
TOPICS_CACHED_MAX = 100_000
NO_LEADER = -1


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    topic: str
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...] = ()
    error: ErrorCode = ErrorCode.NONE


@dataclass(slots=True)
class TopicMetadata:
    name: str
    error: ErrorCode = ErrorCode.NONE
    is_internal: bool = False
    partitions: dict[int, PartitionMetadata] = field(default_factory=dict)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


class MetadataCache:
    """See the module docstring."""

    def __init__(self) -> None:
        self.brokers: dict[int, BrokerMetadata] = {}
        self.topics: dict[str, TopicMetadata] = {}
        self.controller_id: int = -1
        self.cluster_id: str | None = None
        self.updated_at_ms: int = -1
        self.version = 0  # bumped on every update, so waiters can tell "something changed"

    def update(self, body: dict[str, Any], now_ms: int, *, all_topics: bool = False) -> None:
        self.brokers = {b["node_id"]: BrokerMetadata(b["node_id"], b["host"], b["port"], b.get("rack"))
                        for b in body["brokers"]}
        self.cluster_id = body.get("cluster_id")
        self.controller_id = body.get("controller_id", -1)
        fresh: dict[str, TopicMetadata] = {}
        for topic in body["topics"]:
            name = topic["name"]
            if name is None:
                continue
            fresh[name] = self._topic(topic)
        if all_topics:
            self.topics = fresh
        else:
            self.topics.update(fresh)
            while len(self.topics) > TOPICS_CACHED_MAX:
                del self.topics[next(iter(self.topics))]
        self.updated_at_ms = now_ms
        self.version += 1

    def _topic(self, topic: dict[str, Any]) -> TopicMetadata:
        name = topic["name"]
        error = error_code_for(topic["error_code"])
        entry = TopicMetadata(name, error, topic.get("is_internal", False))
        if error != ErrorCode.NONE:
            return entry
        old = self.topics.get(name)
        for p in topic["partitions"]:
            index = p["partition_index"]
            epoch = p.get("leader_epoch", -1)
            previous = old.partitions.get(index) if old is not None else None
            if previous is not None and 0 <= epoch < previous.leader_epoch:
                entry.partitions[index] = previous  # stale answer for this partition
                continue
            entry.partitions[index] = PartitionMetadata(
                name, index, p["leader_id"], epoch, tuple(p["replica_nodes"]), tuple(p["isr_nodes"]),
                tuple(p.get("offline_replicas") or ()), error_code_for(p["error_code"]))
        return entry

    def topic_error(self, topic: str) -> ErrorCode | None:
        """None when the topic was never answered for; else its last error code (NONE if fine)."""
        entry = self.topics.get(topic)
        return None if entry is None else entry.error

    def partition_count(self, topic: str) -> int | None:
        entry = self.topics.get(topic)
        if entry is None or entry.error != ErrorCode.NONE or not entry.partitions:
            return None
        return entry.partition_count

    def available_partitions(self, topic: str) -> list[int]:
        """Partitions of `topic` with a known leader."""
        entry = self.topics.get(topic)
        if entry is None:
            return []
        return [p.partition for p in entry.partitions.values() if p.leader >= 0]

    def partition(self, tp: TopicPartition) -> PartitionMetadata | None:
        entry = self.topics.get(tp[0])
        return None if entry is None else entry.partitions.get(tp[1])

    def leader(self, tp: TopicPartition) -> int:
        """Leader node id, or NO_LEADER (-1) when unknown."""
        entry = self.topics.get(tp[0])
        if entry is None:
            return NO_LEADER
        part = entry.partitions.get(tp[1])
        return NO_LEADER if part is None or part.leader not in self.brokers else part.leader

    def leader_epoch(self, tp: TopicPartition) -> int:
        part = self.partition(tp)
        return -1 if part is None else part.leader_epoch

    def forget_leader(self, tp: TopicPartition) -> None:
        """A request said the cached leader is wrong: no sends to it until the next update."""
        entry = self.topics.get(tp[0])
        if entry is None:
            return
        part = entry.partitions.get(tp[1])
        if part is not None and part.leader != NO_LEADER:
            entry.partitions[tp[1]] = PartitionMetadata(part.topic, part.partition, NO_LEADER, part.leader_epoch,
                                                        part.replicas, part.isr, part.offline_replicas, part.error)
