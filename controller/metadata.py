"""The replicated metadata state machine (`MetadataImage`) and the active controller's writer (`MetadataBuilder`).

Who calls what:

* Every node (controller or broker) keeps a `MetadataImage` and replaces it by
  `image.apply(record, offset)` / `image.apply_batch(records, offset)` for each committed Raft entry
  (offset = the entry's index, strictly increasing). Images are immutable values: `apply` returns a
  new image sharing the unchanged parts (copy-on-write per batch), so a reader may hold one
  while the next is built, and equal logs give equal images (`==`). `snapshot()` is the Raft
  snapshot's data; `MetadataImage.from_snapshot(data) == image` and re-encoding gives the same
  bytes. An empty entry (a Raft NOOP) is `apply_batch((), offset)`.
* The active controller keeps a *pending* image: the committed image plus every record it has
  appended but not yet seen committed (after winning an election: every entry in its log). It
  asks `MetadataBuilder` what to append for a request; the builder returns the records and the
  response and changes nothing. The controller appends the records, applies them to its pending
  image, and answers once they commit. On losing leadership it drops the pending image.

Invariants asserted by `apply` (a violation is a bug, `MetadataInvariantError`, ARCHITECTURE.md
§3 rule 2), for every partition after every record:

* ISR non-empty; ISR ⊆ replicas; replicas and ISR without duplicates; leader ∈ ISR or leader = -1;
* the leader is an active broker (registered, unfenced, not in controlled shutdown); a broker
  joining an ISR is active; an inactive broker stays in an ISR only as its last member;
* partition epoch strictly increases with every change; leader epoch never decreases and
  increases whenever the leader changes;
* topic ids and names unique; replicas of a new topic are registered brokers;
* broker epochs increase per broker; records about a broker carry its current epoch;
* producer-id blocks are contiguous from `next_producer_id` (never reissued);
* the cluster id is set once (`cluster_id` record) and never changes.

Time never enters the image or the builder except as arguments (`now_ms`, session deadlines).
"""

from __future__ import annotations

import base64
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import orjson

from client.wire.errors import ErrorCode
from controller import limits
from controller.placement import (
    NO_LEADER,
    PlacementBroker,
    PlacementLoad,
    choose_leader,
    first_acceptable,
    place_replicas,
)
from controller.records import (
    CLUSTER_ID_PATTERN,
    ZERO_UUID,
    ClusterIdRecord,
    ControlledShutdownRecord,
    FenceBrokerRecord,
    Listener,
    NoOpRecord,
    PartitionAssignment,
    PartitionChange,
    PartitionChangeRecord,
    ProducerIdsRecord,
    Record,
    RecordDecodeError,
    RecordEncodeError,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicConfigRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    _Configs,
    _decode_fields,
    _Int,
    _List,
    _Optional,
    _Str,
    _Struct,
    _Uuid,
    record_to_dict,
)


class MetadataInvariantError(AssertionError):
    """A record that breaks an invariant of the image: a bug in whoever wrote it (never operational)."""


class SnapshotDecodeError(ValueError):
    """Bytes that are not a valid metadata image snapshot."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise MetadataInvariantError(message)


# --- the image -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    broker_id: int
    incarnation_id: bytes
    broker_epoch: int
    listeners: tuple[Listener, ...]
    rack: str | None
    fenced: bool
    in_controlled_shutdown: bool
    registered_offset: int  # offset of its registration record: it is caught up once its metadata offset reaches it

    @property
    def active(self) -> bool:
        """May lead and join ISRs: unfenced and not shutting down."""
        return not self.fenced and not self.in_controlled_shutdown


@dataclass(frozen=True, slots=True)
class PartitionRegistration:
    replicas: tuple[int, ...]   # assignment order; replicas[0] is the preferred leader
    isr: tuple[int, ...]
    leader: int                 # NO_LEADER (-1): offline
    leader_epoch: int
    partition_epoch: int

    @property
    def offline(self) -> bool:
        return self.leader == NO_LEADER


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: bytes
    partitions: tuple[PartitionRegistration, ...]   # index = partition number
    configs: Mapping[str, str]                      # overrides only (read-only mapping)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas)


_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class MetadataImage:
    """Brokers, topics, partitions, producer-id watermark, cluster id (None until the first quorum
    forms), and the offset of the last applied entry (-1: none)."""

    __slots__ = ("_brokers", "_names", "_topics", "cluster_id", "next_producer_id", "offset")

    def __init__(self, offset: int = -1, brokers: Mapping[int, BrokerRegistration] | None = None,
                 topics: Mapping[bytes, TopicImage] | None = None, next_producer_id: int = 0,
                 cluster_id: str | None = None) -> None:
        self.offset = offset
        self.cluster_id = cluster_id
        self._brokers: dict[int, BrokerRegistration] = dict(brokers or {})
        self._topics: dict[bytes, TopicImage] = dict(topics or {})
        self._names: dict[str, bytes] = {t.name: t.topic_id for t in self._topics.values()}
        self.next_producer_id = next_producer_id

    # read side

    @property
    def brokers(self) -> Mapping[int, BrokerRegistration]:
        return MappingProxyType(self._brokers)

    @property
    def topics(self) -> Mapping[bytes, TopicImage]:
        """Topics by topic id."""
        return MappingProxyType(self._topics)

    @property
    def topic_ids(self) -> Mapping[str, bytes]:
        """Topic ids by name."""
        return MappingProxyType(self._names)

    def topic(self, name: str) -> TopicImage | None:
        topic_id = self._names.get(name)
        return None if topic_id is None else self._topics[topic_id]

    def topic_by_id(self, topic_id: bytes) -> TopicImage | None:
        return self._topics.get(topic_id)

    def partition(self, topic_id: bytes, partition: int) -> PartitionRegistration | None:
        topic = self._topics.get(topic_id)
        if topic is None or not 0 <= partition < len(topic.partitions):
            return None
        return topic.partitions[partition]

    def is_active(self, broker_id: int) -> bool:
        reg = self._brokers.get(broker_id)
        return reg is not None and reg.active

    def active_broker_ids(self) -> list[int]:
        return sorted(b for b, reg in self._brokers.items() if reg.active)

    def iter_partitions(self) -> Iterator[tuple[TopicImage, int, PartitionRegistration]]:
        """Every partition, topics in name order."""
        for name in sorted(self._names):
            topic = self._topics[self._names[name]]
            for index, part in enumerate(topic.partitions):
                yield topic, index, part

    def partition_total(self) -> int:
        return sum(len(t.partitions) for t in self._topics.values())

    def leader_counts(self) -> Counter[int]:
        """Partitions led per broker (offline partitions not counted)."""
        return Counter(p.leader for t in self._topics.values() for p in t.partitions if p.leader != NO_LEADER)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetadataImage):
            return NotImplemented
        return (self.offset == other.offset and self.next_producer_id == other.next_producer_id
                and self.cluster_id == other.cluster_id
                and self._brokers == other._brokers and self._topics == other._topics)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"MetadataImage(offset={self.offset}, brokers={len(self._brokers)}, topics={len(self._topics)}, "
                f"partitions={self.partition_total()}, next_producer_id={self.next_producer_id}, "
                f"cluster_id={self.cluster_id!r})")

    # write side: records in, a new image out

    def apply(self, record: Record, offset: int) -> MetadataImage:
        """The image after one committed record at `offset` (> self.offset)."""
        return self.apply_batch((record,), offset)

    def apply_batch(self, records: Iterable[Record], offset: int) -> MetadataImage:
        """The image after the records of one committed entry at `offset`, applied in order."""
        _check(type(offset) is int and offset > self.offset,
               f"offset {offset} does not follow the last applied offset {self.offset}")
        return self._apply(records, offset)

    def _apply(self, records: Iterable[Record], offset: int) -> MetadataImage:
        delta = _Delta(self, offset)
        for record in records:
            apply_fn = _APPLY.get(type(record))
            _check(apply_fn is not None, f"not a metadata record: {record!r}")
            apply_fn(delta, record)
        return delta.finish()

    # snapshots

    def snapshot(self) -> bytes:
        """The whole image as bytes (the Raft snapshot's data); canonical: equal images give equal bytes."""
        body = {
            "format": SNAPSHOT_FORMAT, "v": 2, "offset": self.offset, "next_producer_id": self.next_producer_id,
            "cluster_id": self.cluster_id,
            "brokers": [_BROKER_CODEC.encode(self._brokers[b]) for b in sorted(self._brokers)],
            "topics": [_TOPIC_CODEC.encode(self._topics[self._names[n]]) for n in sorted(self._names)],
        }
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_snapshot(cls, data: bytes) -> MetadataImage:
        """Decode and fully validate a snapshot (SnapshotDecodeError if malformed or if it breaks an invariant)."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > limits.SNAPSHOT_BYTES_MAX:
            raise SnapshotDecodeError(f"a snapshot is at most {limits.SNAPSHOT_BYTES_MAX} bytes")
        try:
            raw = orjson.loads(data)
            if type(raw) is not dict or raw.get("format") != SNAPSHOT_FORMAT:
                raise RecordDecodeError("not a replog metadata snapshot")
            schema = _SNAPSHOT_FIELDS_V1 if raw.get("v") == 1 else _SNAPSHOT_FIELDS  # v1: before cluster ids
            body = _decode_fields(schema, raw, "snapshot")
        except orjson.JSONDecodeError as exc:
            raise SnapshotDecodeError(f"not JSON: {exc}") from None
        except RecordDecodeError as exc:
            raise SnapshotDecodeError(str(exc)) from None
        brokers = {b.broker_id: b for b in body["brokers"]}
        topics = {t.topic_id: t for t in body["topics"]}
        if len(brokers) != len(body["brokers"]) or len(topics) != len(body["topics"]):
            raise SnapshotDecodeError("duplicate broker or topic id")
        image = cls(body["offset"], brokers, topics, body["next_producer_id"], body.get("cluster_id"))
        try:
            _check_image(image)
        except MetadataInvariantError as exc:
            raise SnapshotDecodeError(f"snapshot breaks an invariant: {exc}") from None
        return image


SNAPSHOT_FORMAT = "replog-metadata-image"


class _Delta:
    """Copy-on-write changes to one image while a batch of records is applied; `finish()` freezes them."""

    def __init__(self, base: MetadataImage, offset: int) -> None:
        self.base, self.offset = base, offset
        self.brokers: dict[int, BrokerRegistration] | None = None
        self.topics: dict[bytes, TopicImage] | None = None
        self.names: dict[str, bytes] | None = None
        self.parts: dict[bytes, list[PartitionRegistration]] = {}
        self.next_producer_id = base.next_producer_id
        self.cluster_id = base.cluster_id

    def broker(self, broker_id: int) -> BrokerRegistration | None:
        return (self.brokers if self.brokers is not None else self.base._brokers).get(broker_id)

    def all_brokers(self) -> dict[int, BrokerRegistration]:
        return self.brokers if self.brokers is not None else self.base._brokers

    def set_broker(self, reg: BrokerRegistration) -> None:
        if self.brokers is None:
            self.brokers = dict(self.base._brokers)
        self.brokers[reg.broker_id] = reg

    def all_topics(self) -> dict[bytes, TopicImage]:
        return self.topics if self.topics is not None else self.base._topics

    def topic_names(self) -> dict[str, bytes]:
        return self.names if self.names is not None else self.base._names

    def write_names(self) -> dict[str, bytes]:
        if self.names is None:
            self.names = dict(self.base._names)
        return self.names

    def write_topics(self) -> dict[bytes, TopicImage]:
        if self.topics is None:
            self.topics = dict(self.base._topics)
        return self.topics

    def partitions(self, topic_id: bytes) -> list[PartitionRegistration]:
        parts = self.parts.get(topic_id)
        if parts is None:
            topic = self.all_topics().get(topic_id)
            _check(topic is not None, f"unknown topic id {topic_id.hex()}")
            parts = self.parts[topic_id] = list(topic.partitions)
        return parts

    def is_active(self, broker_id: int) -> bool:
        reg = self.broker(broker_id)
        return reg is not None and reg.active

    def finish(self) -> MetadataImage:
        topics = self.all_topics()
        if self.parts:
            topics = self.write_topics()
            for topic_id, parts in self.parts.items():
                if topic_id in topics:
                    topics[topic_id] = replace(topics[topic_id], partitions=tuple(parts))
        image = MetadataImage.__new__(MetadataImage)
        image.offset = self.offset
        image._brokers = self.all_brokers()
        image._topics = topics
        image._names = self.topic_names()
        image.next_producer_id = self.next_producer_id
        image.cluster_id = self.cluster_id
        return image


# --- apply, one function per record type ------------------------------------------------------


def _apply_register(delta: _Delta, record: RegisterBrokerRecord) -> None:
    existing = delta.broker(record.broker_id)
    if existing is None:
        _check(len(delta.all_brokers()) < limits.BROKERS_MAX, f"more than {limits.BROKERS_MAX} brokers")
        _check(not record.partitions, f"first registration of broker {record.broker_id} changes partitions")
    else:
        _check(record.broker_epoch > existing.broker_epoch,
               f"broker {record.broker_id} epoch {record.broker_epoch} after {existing.broker_epoch}")
    delta.set_broker(BrokerRegistration(record.broker_id, record.incarnation_id, record.broker_epoch,
                                        record.listeners, record.rack, fenced=True, in_controlled_shutdown=False,
                                        registered_offset=delta.offset))
    _apply_changes(delta, record.partitions)
    if existing is not None:
        _check_inactive_broker_placement(delta, record.broker_id)


def _current_broker(delta: _Delta, broker_id: int, broker_epoch: int) -> BrokerRegistration:
    reg = delta.broker(broker_id)
    _check(reg is not None, f"broker {broker_id} is not registered")
    assert reg is not None
    _check(reg.broker_epoch == broker_epoch, f"broker {broker_id} epoch {broker_epoch} is not {reg.broker_epoch}")
    return reg


def _apply_fence(delta: _Delta, record: FenceBrokerRecord) -> None:
    reg = _current_broker(delta, record.broker_id, record.broker_epoch)
    _check(not reg.fenced, f"broker {record.broker_id} is already fenced")
    delta.set_broker(replace(reg, fenced=True))
    _apply_changes(delta, record.partitions)
    _check_inactive_broker_placement(delta, record.broker_id)


def _apply_unfence(delta: _Delta, record: UnfenceBrokerRecord) -> None:
    reg = _current_broker(delta, record.broker_id, record.broker_epoch)
    _check(reg.fenced and not reg.in_controlled_shutdown, f"broker {record.broker_id} cannot be unfenced")
    delta.set_broker(replace(reg, fenced=False))
    _apply_changes(delta, record.partitions)


def _apply_shutdown(delta: _Delta, record: ControlledShutdownRecord) -> None:
    reg = _current_broker(delta, record.broker_id, record.broker_epoch)
    _check(reg.active, f"broker {record.broker_id} is fenced or already shutting down")
    delta.set_broker(replace(reg, in_controlled_shutdown=True))
    _apply_changes(delta, record.partitions)
    _check_inactive_broker_placement(delta, record.broker_id)


def _apply_topic(delta: _Delta, record: TopicRecord) -> None:
    topics = delta.all_topics()
    _check(record.topic_id not in topics, f"topic id {record.topic_id.hex()} already exists")
    _check(record.name not in delta.topic_names(), f"topic {record.name!r} already exists")
    _check(len(topics) < limits.TOPICS_MAX, f"more than {limits.TOPICS_MAX} topics")
    parts = []
    for index, spec in enumerate(record.partitions):
        where = f"{record.name}-{index}"
        _check(len(spec.replicas) == len(record.partitions[0].replicas), f"{where}: replication factor differs")
        for broker_id in spec.replicas:
            _check(delta.broker(broker_id) is not None, f"{where}: replica {broker_id} is not a registered broker")
        part = PartitionRegistration(spec.replicas, spec.isr, spec.leader, 0, 0)
        _check_partition(delta, where, part)
        for broker_id in spec.isr:
            _check(delta.is_active(broker_id), f"{where}: ISR member {broker_id} is not active")
        parts.append(part)
    topic = TopicImage(record.name, record.topic_id, tuple(parts), MappingProxyType(dict(record.configs)))
    delta.write_topics()[record.topic_id] = topic
    delta.write_names()[record.name] = record.topic_id


def _apply_remove_topic(delta: _Delta, record: RemoveTopicRecord) -> None:
    topic = delta.all_topics().get(record.topic_id)
    _check(topic is not None and topic.name == record.name,
           f"remove_topic {record.name!r} {record.topic_id.hex()}: no such topic")
    del delta.write_topics()[record.topic_id]
    del delta.write_names()[record.name]
    delta.parts.pop(record.topic_id, None)


def _apply_topic_config(delta: _Delta, record: TopicConfigRecord) -> None:
    topic = delta.all_topics().get(record.topic_id)
    _check(topic is not None, f"topic_config: unknown topic id {record.topic_id.hex()}")
    assert topic is not None
    configs = dict(topic.configs)
    for name, value in record.configs:
        if value is None:
            configs.pop(name, None)
        else:
            configs[name] = value
    _check(len(configs) <= limits.TOPIC_CONFIGS_MAX,
           f"topic {topic.name!r}: more than {limits.TOPIC_CONFIGS_MAX} configs")
    topics = delta.write_topics()
    current = topics[record.topic_id]
    topics[record.topic_id] = replace(current, configs=MappingProxyType(configs))


def _apply_partition_change(delta: _Delta, record: PartitionChangeRecord) -> None:
    _apply_changes(delta, record.partitions)


def _apply_producer_ids(delta: _Delta, record: ProducerIdsRecord) -> None:
    _current_broker(delta, record.broker_id, record.broker_epoch)
    _check(record.first_producer_id == delta.next_producer_id,
           f"producer id block starts at {record.first_producer_id}, expected {delta.next_producer_id}")
    end = record.first_producer_id + record.size
    _check(end - 1 <= limits.PRODUCER_ID_MAX, "producer ids exhausted")
    delta.next_producer_id = end


def _apply_noop(delta: _Delta, record: NoOpRecord) -> None:
    pass


def _apply_cluster_id(delta: _Delta, record: ClusterIdRecord) -> None:
    _check(delta.cluster_id is None or delta.cluster_id == record.cluster_id,
           f"cluster id {record.cluster_id!r} would replace {delta.cluster_id!r}")
    delta.cluster_id = record.cluster_id


_APPLY: dict[type, Callable[[_Delta, Any], None]] = {
    RegisterBrokerRecord: _apply_register,
    FenceBrokerRecord: _apply_fence,
    UnfenceBrokerRecord: _apply_unfence,
    ControlledShutdownRecord: _apply_shutdown,
    TopicRecord: _apply_topic,
    RemoveTopicRecord: _apply_remove_topic,
    TopicConfigRecord: _apply_topic_config,
    PartitionChangeRecord: _apply_partition_change,
    ProducerIdsRecord: _apply_producer_ids,
    NoOpRecord: _apply_noop,
    ClusterIdRecord: _apply_cluster_id,
}


def _apply_changes(delta: _Delta, changes: Sequence[PartitionChange]) -> None:
    for change in changes:
        parts = delta.partitions(change.topic_id)
        where = f"{change.topic_id.hex()}-{change.partition}"
        _check(0 <= change.partition < len(parts), f"{where}: no such partition")
        old = parts[change.partition]
        new = PartitionRegistration(old.replicas, change.isr, change.leader, change.leader_epoch,
                                    change.partition_epoch)
        _check(new.partition_epoch > old.partition_epoch,
               f"{where}: partition epoch {new.partition_epoch} does not follow {old.partition_epoch}")
        _check(new.leader_epoch >= old.leader_epoch,
               f"{where}: leader epoch {new.leader_epoch} goes back from {old.leader_epoch}")
        _check(new.leader == old.leader or new.leader_epoch > old.leader_epoch,
               f"{where}: leader {old.leader} -> {new.leader} without a leader epoch bump")
        _check_partition(delta, where, new)
        for broker_id in set(new.isr) - set(old.isr):
            _check(delta.is_active(broker_id), f"{where}: broker {broker_id} joins the ISR but is not active")
        parts[change.partition] = new


def _check_partition(delta: _Delta | None, where: str, part: PartitionRegistration) -> None:
    _check(len(part.replicas) > 0 and len(set(part.replicas)) == len(part.replicas),
           f"{where}: bad replicas {part.replicas}")
    _check(len(part.isr) > 0, f"{where}: empty ISR")
    _check(len(set(part.isr)) == len(part.isr), f"{where}: duplicate ISR members {part.isr}")
    _check(set(part.isr) <= set(part.replicas), f"{where}: ISR {part.isr} not within replicas {part.replicas}")
    _check(part.leader == NO_LEADER or part.leader in part.isr, f"{where}: leader {part.leader} not in ISR {part.isr}")
    if delta is not None:
        _check(part.leader == NO_LEADER or delta.is_active(part.leader),
               f"{where}: leader {part.leader} is not an active broker")


def _check_inactive_broker_placement(delta: _Delta, broker_id: int) -> None:
    """An inactive broker leads nothing and is in an ISR only as its last member (full scan: rare records)."""
    topics = delta.all_topics()
    for topic_id, topic in topics.items():
        parts = delta.parts.get(topic_id, topic.partitions)
        for index, part in enumerate(parts):
            _check(part.leader != broker_id, f"{topic.name}-{index}: inactive broker {broker_id} still leads")
            _check(broker_id not in part.isr or len(part.isr) == 1,
                   f"{topic.name}-{index}: inactive broker {broker_id} left in ISR {part.isr}")


def _check_image(image: MetadataImage) -> None:
    """Every invariant over a whole image (snapshot load)."""
    _check(image.offset >= -1, "negative offset")
    names = set()
    for broker_id, reg in image._brokers.items():
        _check(broker_id == reg.broker_id, f"broker {broker_id} keyed wrongly")
        _check(reg.registered_offset <= image.offset, f"broker {broker_id} registered after the image offset")
    for topic in image._topics.values():
        _check(topic.name not in names, f"topic {topic.name!r} twice")
        names.add(topic.name)
        for index, part in enumerate(topic.partitions):
            where = f"{topic.name}-{index}"
            _check(len(part.replicas) == topic.replication_factor, f"{where}: replication factor differs")
            _check(all(b in image._brokers for b in part.replicas), f"{where}: unregistered replica")
            _check_partition(None, where, part)
            _check(part.leader == NO_LEADER or image.is_active(part.leader), f"{where}: inactive leader")
            _check(len(part.isr) == 1 or all(image.is_active(b) for b in part.isr), f"{where}: inactive ISR member")


# --- snapshot schema (reuses the record field codecs) ------------------------------------------


@dataclass(frozen=True, slots=True)
class _SnapshotTopic:
    name: str
    topic_id: bytes
    configs: tuple[tuple[str, str], ...]
    partitions: tuple[PartitionRegistration, ...]


_BROKER_ID = _Int(0, limits.BROKER_ID_MAX)
_BROKER_LIST = _List(_BROKER_ID, limits.REPLICATION_FACTOR_MAX, min_length=1, unique=True)


class _Bool:
    def encode(self, value: Any) -> Any:
        return value

    def decode(self, raw: Any, path: str) -> bool:
        if type(raw) is not bool:
            raise RecordDecodeError(f"{path}: expected a boolean")
        return raw


BrokerRegistration.FIELDS = (  # type: ignore[attr-defined]
    ("broker_id", _BROKER_ID),
    ("incarnation_id", _Uuid()),
    ("broker_epoch", _Int(0, limits.INT64_MAX)),
    ("listeners", _List(_Struct(Listener), limits.LISTENERS_MAX, min_length=1)),
    ("rack", _Optional(_Str(limits.RACK_LENGTH_MAX, min_length=1))),
    ("fenced", _Bool()),
    ("in_controlled_shutdown", _Bool()),
    ("registered_offset", _Int(0, limits.INT64_MAX)),
)
PartitionRegistration.FIELDS = (  # type: ignore[attr-defined]
    ("replicas", _BROKER_LIST),
    ("isr", _BROKER_LIST),
    ("leader", _Int(NO_LEADER, limits.BROKER_ID_MAX)),
    ("leader_epoch", _Int(0, limits.INT32_MAX)),
    ("partition_epoch", _Int(0, limits.INT32_MAX)),
)


class _TopicCodec:
    inner = _Struct(_SnapshotTopic)

    def encode(self, topic: TopicImage) -> Any:
        return self.inner.encode(_SnapshotTopic(topic.name, topic.topic_id, tuple(sorted(topic.configs.items())),
                                                topic.partitions))

    def decode(self, raw: Any, path: str) -> TopicImage:
        t = self.inner.decode(raw, path)
        return TopicImage(t.name, t.topic_id, t.partitions, MappingProxyType(dict(t.configs)))


_SnapshotTopic.FIELDS = (  # type: ignore[attr-defined]
    ("name", _Str(limits.TOPIC_NAME_LENGTH_MAX, limits.TOPIC_NAME_PATTERN, min_length=1)),
    ("topic_id", _Uuid()),
    ("configs", _Configs(allow_null=False)),
    ("partitions", _List(_Struct(PartitionRegistration), limits.PARTITIONS_PER_TOPIC_MAX, min_length=1)),
)
_BROKER_CODEC = _Struct(BrokerRegistration)
_TOPIC_CODEC = _TopicCodec()
_SNAPSHOT_FIELDS_V1 = (
    ("format", _Str(64)),
    ("v", _Int(1, 1)),
    ("offset", _Int(-1, limits.INT64_MAX)),
    ("next_producer_id", _Int(0, limits.INT64_MAX)),
    ("brokers", _List(_BROKER_CODEC, limits.BROKERS_MAX)),
    ("topics", _List(_TOPIC_CODEC, limits.TOPICS_MAX)),
)
_SNAPSHOT_FIELDS = (  # v2: + cluster_id (null until the first quorum formed)
    ("format", _Str(64)),
    ("v", _Int(2, 2)),
    ("offset", _Int(-1, limits.INT64_MAX)),
    ("next_producer_id", _Int(0, limits.INT64_MAX)),
    ("cluster_id", _Optional(_Str(22, CLUSTER_ID_PATTERN, min_length=22))),
    ("brokers", _List(_BROKER_CODEC, limits.BROKERS_MAX)),
    ("topics", _List(_TOPIC_CODEC, limits.TOPICS_MAX)),
)


# --- the active controller's builder ---------------------------------------------------------

T = TypeVar("T")
ConfigValidator = Callable[[str, str], str]
"""(name, value) -> normalized value; raises ValueError (e.g. broker.config.ConfigError) when invalid."""

_TOPIC_NAME_RE = re.compile(limits.TOPIC_NAME_PATTERN)


def accept_any_config(name: str, value: str) -> str:
    return value


@dataclass(frozen=True, slots=True)
class ControllerResult(Generic[T]):
    """What the active controller must append (in order) and what to answer once they are committed."""

    records: tuple[Record, ...]
    response: T


@dataclass(frozen=True, slots=True)
class CreateTopic:
    name: str
    num_partitions: int = -1          # -1: BuilderConfig.default_partitions (CreateTopics v4+)
    replication_factor: int = -1      # -1: BuilderConfig.default_replication_factor
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateTopicResult:
    name: str
    error: ErrorCode
    message: str = ""
    topic_id: bytes | None = None
    num_partitions: int = -1
    replication_factor: int = -1
    configs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class TopicResult:
    """Result of a delete or an alter-configs for one topic."""

    name: str | None
    topic_id: bytes | None
    error: ErrorCode
    message: str = ""


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    error: ErrorCode
    broker_epoch: int = -1
    message: str = ""


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    error: ErrorCode
    is_caught_up: bool = False
    is_fenced: bool = True
    should_shut_down: bool = False


@dataclass(frozen=True, slots=True)
class AlterPartitionItem:
    """One partition of an AlterPartition request (v3: the new ISR with each member's broker epoch, KIP-903)."""

    topic_id: bytes
    partition: int
    leader_epoch: int
    partition_epoch: int
    new_isr: tuple[tuple[int, int], ...]   # (broker_id, broker_epoch); epoch -1 skips the epoch check


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """Per-partition answer of AlterPartition and ElectLeaders, with the partition's resulting state."""

    topic_id: bytes
    partition: int
    error: ErrorCode
    leader: int = NO_LEADER
    leader_epoch: int = -1
    isr: tuple[int, ...] = ()
    partition_epoch: int = -1


@dataclass(frozen=True, slots=True)
class AlterPartitionResult:
    error: ErrorCode                      # request level: STALE_BROKER_EPOCH, else NONE
    partitions: tuple[PartitionResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ProducerIdsResult:
    error: ErrorCode
    first_producer_id: int = -1
    size: int = 0


@dataclass(frozen=True, slots=True)
class BuilderConfig:
    default_partitions: int = 1
    default_replication_factor: int = 1
    producer_id_block_size: int = limits.PRODUCER_ID_BLOCK_SIZE

    def __post_init__(self) -> None:
        assert self.default_partitions >= 1 and self.default_replication_factor >= 1
        assert 1 <= self.producer_id_block_size <= limits.PRODUCER_ID_BLOCK_SIZE_MAX


class MetadataBuilder:
    """Turns controller requests into metadata records, given the active controller's pending image.

    Pure: it never mutates an image; randomness only from `rng` (placement start) and `new_uuid`
    (topic ids); time only from arguments. Each method returns a `ControllerResult`; when a
    method produces several records, each was computed on the image with the previous ones
    applied, so they must be appended in order.
    """

    def __init__(self, validate_config: ConfigValidator = accept_any_config, config: BuilderConfig | None = None,
                 rng: random.Random | None = None, new_uuid: Callable[[], bytes] | None = None) -> None:
        self.validate_config = validate_config
        self.config = config or BuilderConfig()
        self.rng = rng or random.Random()
        self.new_uuid = new_uuid or (lambda: uuid.uuid4().bytes)

    # topics

    def create_topics(self, image: MetadataImage, requests: Sequence[CreateTopic],
                      validate_only: bool = False) -> ControllerResult[list[CreateTopicResult]]:
        counts = Counter(r.name for r in requests)
        load = PlacementLoad.from_assignments(p.replicas for _t, _i, p in image.iter_partitions())
        partition_total = image.partition_total()
        records: list[Record] = []
        results = []
        for request in requests:
            if counts[request.name] > 1:
                results.append(CreateTopicResult(request.name, ErrorCode.INVALID_REQUEST, "topic named twice"))
                continue
            result, record = self._create_topic(image, request, load, partition_total)
            results.append(result)
            if record is not None:
                partition_total += len(record.partitions)
                image = _scratch_apply(image, record)
                records.append(record)
        return ControllerResult(() if validate_only else tuple(records), results)

    def _create_topic(self, image: MetadataImage, request: CreateTopic, load: PlacementLoad,
                      partition_total: int) -> tuple[CreateTopicResult, TopicRecord | None]:
        name = request.name

        def fail(code: ErrorCode, message: str) -> tuple[CreateTopicResult, None]:
            return CreateTopicResult(name, code, message), None

        if not isinstance(name, str) or not _TOPIC_NAME_RE.fullmatch(name):
            return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, f"invalid topic name {name!r}: 1-249 of [a-zA-Z0-9._-]")
        if image.topic(name) is not None:
            return fail(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        collides = next((n for n in image.topic_ids if n.replace(".", "_") == name.replace(".", "_")), None)
        if collides is not None:
            return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, f"topic {name!r} collides with {collides!r} ('.' vs '_')")
        partitions = self.config.default_partitions if request.num_partitions == -1 else request.num_partitions
        if not 1 <= partitions <= limits.PARTITIONS_PER_TOPIC_MAX:
            return fail(ErrorCode.INVALID_PARTITIONS, f"partitions must be in 1..{limits.PARTITIONS_PER_TOPIC_MAX}")
        rf = self.config.default_replication_factor if request.replication_factor == -1 else request.replication_factor
        eligible = [PlacementBroker(b, image.brokers[b].rack) for b in image.active_broker_ids()]
        if not 1 <= rf <= min(len(eligible), limits.REPLICATION_FACTOR_MAX):
            return fail(ErrorCode.INVALID_REPLICATION_FACTOR,
                        f"replication factor {rf} must be in 1..{len(eligible)} (unfenced brokers)")
        try:
            configs = self._validate_configs(dict(request.configs))
        except ValueError as exc:
            return fail(ErrorCode.INVALID_CONFIG, str(exc))
        if len(image.topics) >= limits.TOPICS_MAX:
            return fail(ErrorCode.POLICY_VIOLATION, f"at most {limits.TOPICS_MAX} topics")
        if partition_total + partitions > limits.PARTITIONS_MAX:
            return fail(ErrorCode.POLICY_VIOLATION, f"at most {limits.PARTITIONS_MAX} partitions in the cluster")
        assignment = place_replicas(eligible, partitions, rf, load, seed=self.rng.randrange(1 << 30))
        record = TopicRecord(name, self._new_topic_id(image), configs,
                             tuple(PartitionAssignment(r, r, r[0]) for r in assignment))
        return CreateTopicResult(name, ErrorCode.NONE, "", record.topic_id, partitions, rf,
                                 MappingProxyType(dict(configs))), record

    def _validate_configs(self, configs: dict[str, str | None]) -> dict[str, str]:
        if len(configs) > limits.TOPIC_CONFIGS_MAX:
            raise ValueError(f"at most {limits.TOPIC_CONFIGS_MAX} config overrides per topic")
        out = {}
        for name, value in configs.items():
            if not isinstance(name, str) or not 1 <= len(name) <= limits.CONFIG_NAME_LENGTH_MAX:
                raise ValueError(f"invalid config name {name!r}")
            if value is None:
                raise ValueError(f"config {name} has no value")
            normal = self.validate_config(name, str(value))
            if len(normal) > limits.CONFIG_VALUE_LENGTH_MAX:
                raise ValueError(f"config {name}: value longer than {limits.CONFIG_VALUE_LENGTH_MAX}")
            out[name] = normal
        return out

    def _new_topic_id(self, image: MetadataImage) -> bytes:
        for _ in range(100):
            topic_id = self.new_uuid()
            if topic_id != ZERO_UUID and topic_id not in image.topics:
                return topic_id
        raise AssertionError("new_uuid keeps returning ids in use")

    def delete_topics(self, image: MetadataImage, names: Sequence[str] = (),
                      topic_ids: Sequence[bytes] = ()) -> ControllerResult[list[TopicResult]]:
        records: list[Record] = []
        results = []
        for key in [*names, *topic_ids]:
            by_name = isinstance(key, str)
            topic = image.topic(key) if by_name else image.topic_by_id(key)
            if topic is None:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if by_name else ErrorCode.UNKNOWN_TOPIC_ID
                results.append(TopicResult(key if by_name else None, None if by_name else key, code, "unknown topic"))
                continue
            record = RemoveTopicRecord(topic.name, topic.topic_id)
            image = _scratch_apply(image, record)
            records.append(record)
            results.append(TopicResult(topic.name, topic.topic_id, ErrorCode.NONE))
        return ControllerResult(tuple(records), results)

    def alter_configs(self, image: MetadataImage, changes: Mapping[str, Mapping[str, str | None]],
                      validate_only: bool = False) -> ControllerResult[list[TopicResult]]:
        """Incremental: per topic name, (config, value) sets an override and (config, None) removes it."""
        records: list[Record] = []
        results = []
        for name, topic_changes in changes.items():
            topic = image.topic(name)
            if topic is None:
                results.append(TopicResult(name, None, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "unknown topic"))
                continue
            try:
                sets = self._validate_configs({k: v for k, v in topic_changes.items() if v is not None})
                merged = {**topic.configs, **sets}
                for k, v in topic_changes.items():
                    if v is None:
                        merged.pop(k, None)
                if len(merged) > limits.TOPIC_CONFIGS_MAX:
                    raise ValueError(f"at most {limits.TOPIC_CONFIGS_MAX} config overrides per topic")
            except ValueError as exc:
                results.append(TopicResult(name, topic.topic_id, ErrorCode.INVALID_CONFIG, str(exc)))
                continue
            results.append(TopicResult(name, topic.topic_id, ErrorCode.NONE))
            if topic_changes:
                record = TopicConfigRecord(topic.topic_id, {**{k: None for k in topic_changes}, **sets})
                records.append(record)
        return ControllerResult(() if validate_only else tuple(records), results)

    # the cluster id

    def ensure_cluster_id(self, image: MetadataImage) -> ControllerResult[str]:
        """On activation: a new cluster id if the image has none yet (the first quorum to form), else nothing."""
        if image.cluster_id is not None:
            return ControllerResult((), image.cluster_id)
        cluster_id = new_cluster_id()
        return ControllerResult((ClusterIdRecord(cluster_id),), cluster_id)

    # brokers

    def register_broker(self, image: MetadataImage, broker_id: int, incarnation_id: bytes,
                        listeners: Sequence[Listener], rack: str | None = None, *,
                        previous_session_alive: bool) -> ControllerResult[RegistrationResult]:
        """BrokerRegistration. `previous_session_alive`: the caller's session tracker still has a live
        lease for this broker id. Then another incarnation is refused (DUPLICATE_BROKER_REGISTRATION,
        as KRaft: two processes configured with the same id). The same incarnation with the same
        details is idempotent (a retry after a lost response gets the same epoch, no record).
        """
        existing = image.brokers.get(broker_id)
        if existing is not None and existing.incarnation_id == incarnation_id:
            if existing.listeners == tuple(listeners) and existing.rack == rack:
                return ControllerResult((), RegistrationResult(ErrorCode.NONE, existing.broker_epoch))
            if previous_session_alive:
                return ControllerResult((), RegistrationResult(
                    ErrorCode.INVALID_REGISTRATION, -1, "same incarnation re-registered with other details"))
        elif existing is not None and previous_session_alive:
            return ControllerResult((), RegistrationResult(
                ErrorCode.DUPLICATE_BROKER_REGISTRATION, -1, f"broker {broker_id} has a live session "
                "with another incarnation"))
        if existing is None and len(image.brokers) >= limits.BROKERS_MAX:
            return ControllerResult((), RegistrationResult(ErrorCode.INVALID_REGISTRATION, -1,
                                                           f"at most {limits.BROKERS_MAX} brokers"))
        epoch = max(existing.broker_epoch if existing else 0, image.offset) + 1
        changes = () if existing is None else _remove_broker_changes(image, broker_id)
        record = RegisterBrokerRecord(broker_id, incarnation_id, epoch, tuple(listeners), rack, changes)
        try:
            record_to_dict(record)
        except RecordEncodeError as exc:
            return ControllerResult((), RegistrationResult(ErrorCode.INVALID_REQUEST, -1, str(exc)))
        return ControllerResult((record,), RegistrationResult(ErrorCode.NONE, epoch))

    def heartbeat(self, image: MetadataImage, broker_id: int, broker_epoch: int, metadata_offset: int,
                  want_fence: bool = False, want_shutdown: bool = False) -> ControllerResult[HeartbeatResult]:
        """BrokerHeartbeat decisions (the session deadline itself is the caller's: see fence_expired_brokers).

        Unfenced once its metadata offset reaches its registration record's offset (KRaft's
        BrokerHeartbeatManager); want_fence fences; want_shutdown starts a controlled shutdown
        (leaderships move away, it leaves ISRs) and then says should_shut_down.
        """
        reg = image.brokers.get(broker_id)
        if reg is None:
            return ControllerResult((), HeartbeatResult(ErrorCode.BROKER_ID_NOT_REGISTERED))
        if reg.broker_epoch != broker_epoch:
            return ControllerResult((), HeartbeatResult(ErrorCode.STALE_BROKER_EPOCH))
        caught_up = metadata_offset >= reg.registered_offset
        record: Record | None = None
        if want_shutdown:
            if reg.active:
                record = ControlledShutdownRecord(broker_id, broker_epoch, _remove_broker_changes(image, broker_id))
        elif want_fence:
            if not reg.fenced:
                record = FenceBrokerRecord(broker_id, broker_epoch, _remove_broker_changes(image, broker_id))
        elif reg.fenced and caught_up and not reg.in_controlled_shutdown:
            record = UnfenceBrokerRecord(broker_id, broker_epoch, _unfence_changes(image, broker_id))
        after_reg = reg if record is None else _scratch_apply(image, record).brokers[broker_id]
        should_shut_down = want_shutdown and (after_reg.fenced or after_reg.in_controlled_shutdown)
        return ControllerResult(() if record is None else (record,),
                                HeartbeatResult(ErrorCode.NONE, caught_up, after_reg.fenced, should_shut_down))

    def fence_broker(self, image: MetadataImage, broker_id: int) -> ControllerResult[ErrorCode]:
        """Fence now (e.g. its controller connection dropped and did not come back within the grace)."""
        reg = image.brokers.get(broker_id)
        if reg is None:
            return ControllerResult((), ErrorCode.BROKER_ID_NOT_REGISTERED)
        if reg.fenced:
            return ControllerResult((), ErrorCode.NONE)
        record = FenceBrokerRecord(broker_id, reg.broker_epoch, _remove_broker_changes(image, broker_id))
        return ControllerResult((record,), ErrorCode.NONE)

    def fence_expired_brokers(self, image: MetadataImage, now_ms: int,
                              session_deadlines_ms: Mapping[int, int]) -> ControllerResult[list[int]]:
        """Fence every unfenced broker whose session deadline is ≤ now_ms (one record each, in order).

        Brokers missing from `session_deadlines_ms` are left alone: a new active controller must
        start a fresh session for every registered broker (as KRaft does on failover).
        """
        records: list[Record] = []
        fenced = []
        for broker_id in sorted(session_deadlines_ms):
            reg = image.brokers.get(broker_id)
            if reg is None or reg.fenced or session_deadlines_ms[broker_id] > now_ms:
                continue
            record = FenceBrokerRecord(broker_id, reg.broker_epoch, _remove_broker_changes(image, broker_id))
            image = _scratch_apply(image, record)
            records.append(record)
            fenced.append(broker_id)
        return ControllerResult(tuple(records), fenced)

    # partitions

    def alter_partition(self, image: MetadataImage, broker_id: int, broker_epoch: int,
                        items: Sequence[AlterPartitionItem]) -> ControllerResult[AlterPartitionResult]:
        """AlterPartition from a partition leader: ISR changes, validated as KRaft's ReplicationControlManager."""
        reg = image.brokers.get(broker_id)
        if reg is None or reg.broker_epoch != broker_epoch:
            return ControllerResult((), AlterPartitionResult(ErrorCode.STALE_BROKER_EPOCH))
        keys = Counter((item.topic_id, item.partition) for item in items)
        changes = []
        results = []
        for item in items:
            if keys[(item.topic_id, item.partition)] > 1:
                results.append(PartitionResult(item.topic_id, item.partition, ErrorCode.INVALID_REQUEST))
                continue
            result, change = _alter_one(image, broker_id, item)
            results.append(result)
            if change is not None:
                changes.append(change)
        records = (PartitionChangeRecord(tuple(changes)),) if changes else ()
        return ControllerResult(records, AlterPartitionResult(ErrorCode.NONE, tuple(results)))

    def elect_preferred_leaders(self, image: MetadataImage,
                                partitions: Iterable[tuple[bytes, int]] | None = None
                                ) -> ControllerResult[list[PartitionResult]]:
        """Move leadership back to replicas[0] where it is in the ISR and active (all partitions if None)."""
        if partitions is None:
            partitions = [(t.topic_id, i) for t, i, _p in image.iter_partitions()]
        seen = set()
        changes = []
        results = []
        for topic_id, index in partitions:
            part = image.partition(topic_id, index)
            if part is None or (topic_id, index) in seen:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if part is None else ErrorCode.INVALID_REQUEST
                results.append(PartitionResult(topic_id, index, code))
                continue
            seen.add((topic_id, index))
            preferred = part.replicas[0]
            if part.leader == preferred:
                code = ErrorCode.ELECTION_NOT_NEEDED
            elif preferred in part.isr and image.is_active(preferred):
                change = PartitionChange(topic_id, index, preferred, part.isr, part.leader_epoch + 1,
                                         part.partition_epoch + 1)
                changes.append(change)
                results.append(_result(change, part.replicas))
                continue
            else:
                code = ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE
            results.append(PartitionResult(topic_id, index, code, part.leader, part.leader_epoch, part.isr,
                                           part.partition_epoch))
        records = (PartitionChangeRecord(tuple(changes)),) if changes else ()
        return ControllerResult(records, results)

    # producer ids

    def allocate_producer_ids(self, image: MetadataImage, broker_id: int,
                              broker_epoch: int) -> ControllerResult[ProducerIdsResult]:
        """AllocateProducerIds: the next block of `producer_id_block_size` ids, never issued before."""
        reg = image.brokers.get(broker_id)
        if reg is None or reg.broker_epoch != broker_epoch:
            return ControllerResult((), ProducerIdsResult(ErrorCode.STALE_BROKER_EPOCH))
        first = image.next_producer_id
        size = self.config.producer_id_block_size
        if first + size - 1 > limits.PRODUCER_ID_MAX:
            return ControllerResult((), ProducerIdsResult(ErrorCode.UNKNOWN_SERVER_ERROR))
        return ControllerResult((ProducerIdsRecord(broker_id, broker_epoch, first, size),),
                                ProducerIdsResult(ErrorCode.NONE, first, size))


def new_cluster_id() -> str:
    """Kafka-style cluster id: 22 characters of url-safe base64 of a random UUID."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _scratch_apply(image: MetadataImage, record: Record) -> MetadataImage:
    """The image with `record` applied at the same offset: the builder's view of what it just produced."""
    return image._apply((record,), image.offset)


def _remove_broker_changes(image: MetadataImage, broker_id: int) -> tuple[PartitionChange, ...]:
    """The broker becomes inactive: it leaves every ISR it is in (but the last member stays, the
    partition offline) and every partition it led gets the first acceptable ISR replica in assignment
    order, leader epoch + 1. Unclean election stays off."""

    def acceptable(b: int) -> bool:
        return b != broker_id and image.is_active(b)

    changes = []
    for topic, index, part in image.iter_partitions():
        if broker_id not in part.isr:
            continue
        isr = tuple(b for b in part.isr if b != broker_id) or part.isr
        leader = choose_leader(part.replicas, isr, part.leader, acceptable)
        if isr == part.isr and leader == part.leader:
            continue
        leader_epoch = part.leader_epoch + (leader != part.leader)
        changes.append(PartitionChange(topic.topic_id, index, leader, isr, leader_epoch, part.partition_epoch + 1))
    return tuple(changes)


def _unfence_changes(image: MetadataImage, broker_id: int) -> tuple[PartitionChange, ...]:
    """The broker becomes active: offline partitions whose ISR holds it get a leader again."""

    def acceptable(b: int) -> bool:
        return b == broker_id or image.is_active(b)

    changes = []
    for topic, index, part in image.iter_partitions():
        if part.leader != NO_LEADER or broker_id not in part.isr:
            continue
        leader = first_acceptable(part.replicas, part.isr, acceptable)
        changes.append(PartitionChange(topic.topic_id, index, leader, part.isr, part.leader_epoch + 1,
                                       part.partition_epoch + 1))
    return tuple(changes)


def _alter_one(image: MetadataImage, broker_id: int,
               item: AlterPartitionItem) -> tuple[PartitionResult, PartitionChange | None]:
    topic = image.topic_by_id(item.topic_id)
    if topic is None:
        return PartitionResult(item.topic_id, item.partition, ErrorCode.UNKNOWN_TOPIC_ID), None
    part = image.partition(item.topic_id, item.partition)
    if part is None:
        return PartitionResult(item.topic_id, item.partition, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), None

    def fail(code: ErrorCode) -> tuple[PartitionResult, None]:
        return PartitionResult(item.topic_id, item.partition, code), None

    # Order as KRaft's validateAlterPartitionData. An epoch above ours means this controller is behind.
    if item.leader_epoch > part.leader_epoch or item.partition_epoch > part.partition_epoch:
        return fail(ErrorCode.NOT_CONTROLLER)
    if item.leader_epoch < part.leader_epoch:
        return fail(ErrorCode.FENCED_LEADER_EPOCH)
    if broker_id != part.leader:
        return fail(ErrorCode.INVALID_REQUEST)
    if item.partition_epoch < part.partition_epoch:
        return fail(ErrorCode.INVALID_UPDATE_VERSION)
    new_isr = tuple(b for b, _epoch in item.new_isr)
    if not new_isr or len(set(new_isr)) != len(new_isr) or not set(new_isr) <= set(part.replicas):
        return fail(ErrorCode.INVALID_REQUEST)
    if part.leader not in new_isr:
        return fail(ErrorCode.INVALID_REQUEST)
    for member, member_epoch in item.new_isr:
        reg = image.brokers.get(member)
        if reg is None or not reg.active or (member_epoch != -1 and member_epoch != reg.broker_epoch):
            return fail(ErrorCode.INELIGIBLE_REPLICA)   # KIP-903: a stale incarnation cannot rejoin
    if set(new_isr) == set(part.isr):
        return PartitionResult(item.topic_id, item.partition, ErrorCode.NONE, part.leader, part.leader_epoch,
                               part.isr, part.partition_epoch), None
    ordered = tuple(b for b in part.replicas if b in new_isr)   # canonical: assignment order
    change = PartitionChange(item.topic_id, item.partition, part.leader, ordered, part.leader_epoch,
                             part.partition_epoch + 1)
    return _result(change, part.replicas), change


def _result(change: PartitionChange, replicas: tuple[int, ...]) -> PartitionResult:
    return PartitionResult(change.topic_id, change.partition, ErrorCode.NONE, change.leader, change.leader_epoch,
                           change.isr, change.partition_epoch)
