"""Metadata log record types: what the controller appends to the Raft log and every node applies.

Byte layout: one record is one orjson object, `{"type": <name>, "v": <version>, <fields>...}`,
at most `limits.RECORD_BYTES_MAX` bytes. A batch (`encode_batch`) is a JSON array of such objects
(at most `limits.RECORDS_PER_BATCH_MAX`). Topic and incarnation ids (16-byte UUIDs) are 32 lower-
case hex digits; lists of broker ids are JSON arrays; config maps are JSON objects.

Decoding is strict: an unknown type or version, a missing or extra field, a value of the wrong
JSON type, out of range (int32/int64, ids ≥ 0, ports ≤ 65535...) or longer than its named bound is
a `RecordDecodeError` naming the record type and field path. Decoding checks the shape of one
record only; the rules that relate records to the image (leader ∈ ISR ⊆ replicas, epochs
monotonic, ids unique) are asserted by `MetadataImage.apply`. `encode_record` runs the same
checks on what it writes (paired assertions at write and read), so a record that encodes decodes.

Every record is self-contained and atomic: a change that must happen at once (a broker fenced and
removed from every ISR; a topic with all its partitions and configs) is ONE record, so the Raft
driver may batch records into entries freely. Version 1 of every type:

| type | fields |
|---|---|
| register_broker | broker_id, incarnation_id, broker_epoch, listeners[{name, host, port}], rack, partitions[change] |
| fence_broker | broker_id, broker_epoch, partitions[change] |
| unfence_broker | broker_id, broker_epoch, partitions[change] |
| controlled_shutdown | broker_id, broker_epoch, partitions[change] |
| topic | name, topic_id, configs{k: v}, partitions[{replicas, isr, leader}] (epochs start at 0) |
| remove_topic | name, topic_id |
| topic_config | topic_id, configs{k: v or null (null removes the override)} |
| partition_change | partitions[change] |
| producer_ids | broker_id, broker_epoch, first_producer_id, size |
| noop | (none) |
| cluster_id | cluster_id (22 characters of url-safe base64, Kafka's format) |

where a partition change is `{topic_id, partition, leader, isr, leader_epoch, partition_epoch}`:
the partition's full new leader/ISR state and the epochs it moves to (KRaft's
PartitionChangeRecord carries only what changed and lets the applier bump the epochs; here the
record states them so that `apply` can assert monotonicity instead of computing it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import orjson

from controller import limits

NO_LEADER = -1


class RecordDecodeError(ValueError):
    """Bytes that are not a valid metadata record (corrupt entry, unknown type, bad field)."""


class RecordEncodeError(ValueError):
    """A record object that breaks its own schema (a bug in the code that built it)."""


# --- field codecs: encode(value) -> JSON value; decode(JSON value, path) -> value -------------


class _Int:
    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, raw: Any, path: str) -> int:
        if type(raw) is not int:  # bool is an int subclass: refuse it too
            raise RecordDecodeError(f"{path}: expected an integer, got {_kind(raw)}")
        if not self.lo <= raw <= self.hi:
            raise RecordDecodeError(f"{path}: {raw} is outside [{self.lo}, {self.hi}]")
        return raw


class _Str:
    def __init__(self, max_length: int, pattern: str | None = None, min_length: int = 0) -> None:
        self.max_length, self.min_length = max_length, min_length
        self.pattern = re.compile(pattern) if pattern else None

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, raw: Any, path: str) -> str:
        if type(raw) is not str:
            raise RecordDecodeError(f"{path}: expected a string, got {_kind(raw)}")
        if not self.min_length <= len(raw) <= self.max_length:
            raise RecordDecodeError(f"{path}: length {len(raw)} outside [{self.min_length}, {self.max_length}]")
        if self.pattern is not None and not self.pattern.fullmatch(raw):
            raise RecordDecodeError(f"{path}: {raw[:80]!r} does not match {self.pattern.pattern}")
        return raw


class _Optional:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def decode(self, raw: Any, path: str) -> Any:
        return None if raw is None else self.inner.decode(raw, path)


class _Uuid:
    """16 bytes as 32 lower-case hex digits. The all-zero UUID is Kafka's "no id": refused."""

    def encode(self, value: Any) -> Any:
        if not isinstance(value, bytes) or len(value) != 16:
            raise RecordEncodeError(f"a UUID must be 16 bytes, got {value!r}")
        return value.hex()

    def decode(self, raw: Any, path: str) -> bytes:
        if type(raw) is not str or not _HEX.fullmatch(raw):
            raise RecordDecodeError(f"{path}: expected 32 lower-case hex digits, got {str(raw)[:40]!r}")
        value = bytes.fromhex(raw)
        if value == ZERO_UUID:
            raise RecordDecodeError(f"{path}: the zero UUID is not an id")
        return value


class _List:
    def __init__(self, inner: Any, max_length: int, min_length: int = 0, unique: bool = False) -> None:
        self.inner, self.max_length, self.min_length, self.unique = inner, max_length, min_length, unique

    def encode(self, value: Any) -> Any:
        return [self.inner.encode(v) for v in value]

    def decode(self, raw: Any, path: str) -> tuple[Any, ...]:
        if type(raw) is not list:
            raise RecordDecodeError(f"{path}: expected a list, got {_kind(raw)}")
        if not self.min_length <= len(raw) <= self.max_length:
            raise RecordDecodeError(f"{path}: {len(raw)} items, outside [{self.min_length}, {self.max_length}]")
        out = tuple(self.inner.decode(v, f"{path}[{i}]") for i, v in enumerate(raw))
        if self.unique and len(set(out)) != len(out):
            raise RecordDecodeError(f"{path}: duplicate items in {list(out)[:20]}")
        return out


class _Configs:
    """A config map as a JSON object; in Python a tuple of (name, value) pairs sorted by name."""

    def __init__(self, allow_null: bool) -> None:
        self.allow_null = allow_null
        self.name = _Str(limits.CONFIG_NAME_LENGTH_MAX, min_length=1)
        self.value = _Str(limits.CONFIG_VALUE_LENGTH_MAX)

    def encode(self, value: Any) -> Any:
        return dict(value)

    def decode(self, raw: Any, path: str) -> tuple[tuple[str, str | None], ...]:
        if type(raw) is not dict:
            raise RecordDecodeError(f"{path}: expected an object, got {_kind(raw)}")
        if len(raw) > limits.TOPIC_CONFIGS_MAX:
            raise RecordDecodeError(f"{path}: {len(raw)} configs, at most {limits.TOPIC_CONFIGS_MAX}")
        out = []
        for name, value in raw.items():
            self.name.decode(name, f"{path} key")
            if value is None and self.allow_null:
                out.append((name, None))
            else:
                out.append((name, self.value.decode(value, f"{path}.{name}")))
        return tuple(sorted(out))


class _Struct:
    """A nested frozen dataclass encoded as a JSON object with exactly its fields."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def encode(self, value: Any) -> Any:
        if type(value) is not self.cls:
            raise RecordEncodeError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return {name: codec.encode(getattr(value, name)) for name, codec in self.cls.FIELDS}

    def decode(self, raw: Any, path: str) -> Any:
        if type(raw) is not dict:
            raise RecordDecodeError(f"{path}: expected an object, got {_kind(raw)}")
        return self.cls(**_decode_fields(self.cls.FIELDS, raw, path))


def _decode_fields(schema: Sequence[tuple[str, Any]], raw: dict[str, Any], path: str) -> dict[str, Any]:
    expected = {name for name, _ in schema}
    missing = expected - raw.keys()
    if missing:
        raise RecordDecodeError(f"{path}: missing field(s) {sorted(missing)}")
    extra = raw.keys() - expected
    if extra:
        raise RecordDecodeError(f"{path}: unknown field(s) {sorted(extra)[:10]}")
    return {name: codec.decode(raw[name], f"{path}.{name}") for name, codec in schema}


def _kind(raw: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(raw), type(raw).__name__)


_HEX = re.compile(r"[0-9a-f]{32}")
ZERO_UUID = bytes(16)

_BROKER_ID = _Int(0, limits.BROKER_ID_MAX)
_LEADER = _Int(NO_LEADER, limits.BROKER_ID_MAX)
_PARTITION = _Int(0, limits.PARTITIONS_PER_TOPIC_MAX - 1)
_EPOCH32 = _Int(0, limits.INT32_MAX)
_EPOCH64 = _Int(0, limits.INT64_MAX)
_BROKER_LIST = _List(_BROKER_ID, limits.REPLICATION_FACTOR_MAX, min_length=1, unique=True)
_TOPIC_NAME = _Str(limits.TOPIC_NAME_LENGTH_MAX, limits.TOPIC_NAME_PATTERN, min_length=1)


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else tuple(value)


def _config_pairs(value: Any) -> tuple[tuple[str, Any], ...]:
    items = value.items() if hasattr(value, "items") else value
    return tuple(sorted((k, v) for k, v in items))


# --- nested structs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    """One endpoint a broker serves: listener name (e.g. "PLAINTEXT"), host, port."""

    name: str
    host: str
    port: int

    FIELDS: ClassVar = (
        ("name", _Str(limits.LISTENER_NAME_LENGTH_MAX, min_length=1)),
        ("host", _Str(limits.HOST_LENGTH_MAX, min_length=1)),
        ("port", _Int(0, 65535)),
    )


@dataclass(frozen=True, slots=True)
class PartitionChange:
    """The new leader/ISR state of one partition and the epochs it moves to."""

    topic_id: bytes
    partition: int
    leader: int
    isr: tuple[int, ...]
    leader_epoch: int
    partition_epoch: int

    FIELDS: ClassVar = (
        ("topic_id", _Uuid()),
        ("partition", _PARTITION),
        ("leader", _LEADER),
        ("isr", _BROKER_LIST),
        ("leader_epoch", _EPOCH32),
        ("partition_epoch", _EPOCH32),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "isr", _tuple(self.isr))


@dataclass(frozen=True, slots=True)
class PartitionAssignment:
    """A new partition's replicas (assignment order; replicas[0] is the preferred leader), ISR and leader."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int

    FIELDS: ClassVar = (
        ("replicas", _BROKER_LIST),
        ("isr", _BROKER_LIST),
        ("leader", _LEADER),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicas", _tuple(self.replicas))
        object.__setattr__(self, "isr", _tuple(self.isr))


_CHANGES = _List(_Struct(PartitionChange), limits.PARTITIONS_MAX)


# --- records ---------------------------------------------------------------------------------


class Record:
    """Base of every metadata record: `TYPE` names it in the log, `VERSION` is the only version written."""

    __slots__ = ()
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    VERSIONS: ClassVar[frozenset[int]] = frozenset({1})
    FIELDS: ClassVar[tuple[tuple[str, Any], ...]]


@dataclass(frozen=True, slots=True)
class RegisterBrokerRecord(Record):
    """A broker (re-)registers: new incarnation or details → new broker epoch; it starts fenced.

    `partitions`: on re-registration, the broker leaves every ISR it is in (unless it is the last
    member) and every partition it led gets a new leader (KIP-903: the old incarnation's state
    must not vouch for the new one). Empty on a first registration.
    """

    broker_id: int
    incarnation_id: bytes
    broker_epoch: int
    listeners: tuple[Listener, ...]
    rack: str | None
    partitions: tuple[PartitionChange, ...] = ()

    TYPE: ClassVar = "register_broker"
    FIELDS: ClassVar = (
        ("broker_id", _BROKER_ID),
        ("incarnation_id", _Uuid()),
        ("broker_epoch", _EPOCH64),
        ("listeners", _List(_Struct(Listener), limits.LISTENERS_MAX, min_length=1)),
        ("rack", _Optional(_Str(limits.RACK_LENGTH_MAX, min_length=1))),
        ("partitions", _CHANGES),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "listeners", _tuple(self.listeners))
        object.__setattr__(self, "partitions", _tuple(self.partitions))


@dataclass(frozen=True, slots=True)
class FenceBrokerRecord(Record):
    """The broker is fenced (session expired or asked); `partitions` removes it from ISRs and moves its leaderships."""

    broker_id: int
    broker_epoch: int
    partitions: tuple[PartitionChange, ...] = ()

    TYPE: ClassVar = "fence_broker"
    FIELDS: ClassVar = (("broker_id", _BROKER_ID), ("broker_epoch", _EPOCH64), ("partitions", _CHANGES))

    def __post_init__(self) -> None:
        object.__setattr__(self, "partitions", _tuple(self.partitions))


@dataclass(frozen=True, slots=True)
class UnfenceBrokerRecord(Record):
    """The broker caught up and is unfenced; `partitions` gives it the offline partitions whose ISR it is in."""

    broker_id: int
    broker_epoch: int
    partitions: tuple[PartitionChange, ...] = ()

    TYPE: ClassVar = "unfence_broker"
    FIELDS: ClassVar = (("broker_id", _BROKER_ID), ("broker_epoch", _EPOCH64), ("partitions", _CHANGES))

    def __post_init__(self) -> None:
        object.__setattr__(self, "partitions", _tuple(self.partitions))


@dataclass(frozen=True, slots=True)
class ControlledShutdownRecord(Record):
    """The broker asked to shut down: it leads nothing and leaves every ISR (unless last member) from now on."""

    broker_id: int
    broker_epoch: int
    partitions: tuple[PartitionChange, ...] = ()

    TYPE: ClassVar = "controlled_shutdown"
    FIELDS: ClassVar = (("broker_id", _BROKER_ID), ("broker_epoch", _EPOCH64), ("partitions", _CHANGES))

    def __post_init__(self) -> None:
        object.__setattr__(self, "partitions", _tuple(self.partitions))


@dataclass(frozen=True, slots=True)
class TopicRecord(Record):
    """A new topic with its id, config overrides and every partition (leader and partition epochs 0)."""

    name: str
    topic_id: bytes
    configs: tuple[tuple[str, str], ...]
    partitions: tuple[PartitionAssignment, ...]

    TYPE: ClassVar = "topic"
    FIELDS: ClassVar = (
        ("name", _TOPIC_NAME),
        ("topic_id", _Uuid()),
        ("configs", _Configs(allow_null=False)),
        ("partitions", _List(_Struct(PartitionAssignment), limits.PARTITIONS_PER_TOPIC_MAX, min_length=1)),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", _config_pairs(self.configs))
        object.__setattr__(self, "partitions", _tuple(self.partitions))


@dataclass(frozen=True, slots=True)
class RemoveTopicRecord(Record):
    """The topic is deleted (its name is kept for log dumps; apply asserts it matches the id)."""

    name: str
    topic_id: bytes

    TYPE: ClassVar = "remove_topic"
    FIELDS: ClassVar = (("name", _TOPIC_NAME), ("topic_id", _Uuid()))


@dataclass(frozen=True, slots=True)
class TopicConfigRecord(Record):
    """Incremental config change of one topic: (name, value) sets an override, (name, None) removes it."""

    topic_id: bytes
    configs: tuple[tuple[str, str | None], ...]

    TYPE: ClassVar = "topic_config"
    FIELDS: ClassVar = (("topic_id", _Uuid()), ("configs", _Configs(allow_null=True)))

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", _config_pairs(self.configs))


@dataclass(frozen=True, slots=True)
class PartitionChangeRecord(Record):
    """Leader/ISR changes of partitions (AlterPartition, leader elections), each with its new epochs."""

    partitions: tuple[PartitionChange, ...]

    TYPE: ClassVar = "partition_change"
    FIELDS: ClassVar = (("partitions", _List(_Struct(PartitionChange), limits.PARTITIONS_MAX, min_length=1)),)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partitions", _tuple(self.partitions))


@dataclass(frozen=True, slots=True)
class ProducerIdsRecord(Record):
    """Producer ids [first_producer_id, first_producer_id + size) go to the broker; never issued again."""

    broker_id: int
    broker_epoch: int
    first_producer_id: int
    size: int

    TYPE: ClassVar = "producer_ids"
    FIELDS: ClassVar = (
        ("broker_id", _BROKER_ID),
        ("broker_epoch", _EPOCH64),
        ("first_producer_id", _Int(0, limits.PRODUCER_ID_MAX)),
        ("size", _Int(1, limits.PRODUCER_ID_BLOCK_SIZE_MAX)),
    )


@dataclass(frozen=True, slots=True)
class NoOpRecord(Record):
    """Appended when the log is idle so that observers can tell they are caught up (KRaft's NoOpRecord)."""

    TYPE: ClassVar = "noop"
    FIELDS: ClassVar = ()


CLUSTER_ID_PATTERN = r"[A-Za-z0-9_-]{22}"


@dataclass(frozen=True, slots=True)
class ClusterIdRecord(Record):
    """The cluster's id, appended once by the first active controller (the first quorum to form).

    Every node writes it into each data directory's meta.properties and refuses a data directory
    confirmed for another cluster. A second record with a different id breaks an image invariant.
    """

    cluster_id: str

    TYPE: ClassVar = "cluster_id"
    FIELDS: ClassVar = (("cluster_id", _Str(22, CLUSTER_ID_PATTERN, min_length=22)),)


RECORD_TYPES: dict[str, type[Record]] = {
    cls.TYPE: cls
    for cls in (RegisterBrokerRecord, FenceBrokerRecord, UnfenceBrokerRecord, ControlledShutdownRecord,
                TopicRecord, RemoveTopicRecord, TopicConfigRecord, PartitionChangeRecord, ProducerIdsRecord,
                NoOpRecord, ClusterIdRecord)
}

for _cls in RECORD_TYPES.values():  # the envelope keys are reserved; every dataclass field has a codec
    assert {f.name for f in fields(_cls)} == {name for name, _ in _cls.FIELDS}, _cls
    assert not {"type", "v"} & {name for name, _ in _cls.FIELDS}, _cls


# --- public codec ----------------------------------------------------------------------------


def record_to_dict(record: Record) -> dict[str, Any]:
    """The JSON object of a record, checked against its schema (RecordEncodeError if it breaks it)."""
    cls = type(record)
    if RECORD_TYPES.get(getattr(cls, "TYPE", None)) is not cls:
        raise RecordEncodeError(f"not a metadata record: {record!r}")
    body: dict[str, Any] = {"type": cls.TYPE, "v": cls.VERSION}
    try:
        for name, codec in cls.FIELDS:
            body[name] = codec.encode(getattr(record, name))
        record_from_dict(body)  # the read-side checks, at write time
    except (RecordDecodeError, TypeError, AttributeError) as exc:
        raise RecordEncodeError(f"cannot encode {cls.TYPE} record: {exc}") from None
    return body


def record_from_dict(raw: Any, path: str = "record") -> Record:
    if type(raw) is not dict:
        raise RecordDecodeError(f"{path}: expected an object, got {_kind(raw)}")
    type_name = raw.get("type")
    cls = RECORD_TYPES.get(type_name) if type(type_name) is str else None
    if cls is None:
        raise RecordDecodeError(f"{path}: unknown record type {str(type_name)[:60]!r}")
    version = raw.get("v")
    if type(version) is not int or version not in cls.VERSIONS:
        raise RecordDecodeError(f"{path}: {cls.TYPE} record version {version!r} is not supported "
                                f"(supported: {sorted(cls.VERSIONS)})")
    body = {k: v for k, v in raw.items() if k not in ("type", "v")}
    return cls(**_decode_fields(cls.FIELDS, body, f"{path}({cls.TYPE})"))


def encode_record(record: Record) -> bytes:
    data = orjson.dumps(record_to_dict(record))
    if len(data) > limits.RECORD_BYTES_MAX:
        raise RecordEncodeError(f"{record.TYPE} record is {len(data)} bytes, above {limits.RECORD_BYTES_MAX}")
    return data


def decode_record(data: bytes) -> Record:
    return record_from_dict(_loads(data, limits.RECORD_BYTES_MAX))


def encode_batch(records: Sequence[Record]) -> bytes:
    """Several records as one JSON array (e.g. the data of one Raft entry)."""
    if len(records) > limits.RECORDS_PER_BATCH_MAX:
        raise RecordEncodeError(f"{len(records)} records in a batch, at most {limits.RECORDS_PER_BATCH_MAX}")
    data = orjson.dumps([record_to_dict(r) for r in records])
    if len(data) > limits.RECORD_BYTES_MAX:
        raise RecordEncodeError(f"batch is {len(data)} bytes, above {limits.RECORD_BYTES_MAX}")
    return data


def decode_batch(data: bytes) -> list[Record]:
    raw = _loads(data, limits.RECORD_BYTES_MAX)
    if type(raw) is not list:
        raise RecordDecodeError(f"batch: expected a list, got {_kind(raw)}")
    if len(raw) > limits.RECORDS_PER_BATCH_MAX:
        raise RecordDecodeError(f"batch: {len(raw)} records, at most {limits.RECORDS_PER_BATCH_MAX}")
    return [record_from_dict(item, f"batch[{i}]") for i, item in enumerate(raw)]


def _loads(data: bytes, max_bytes: int) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RecordDecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise RecordDecodeError(f"{len(data)} bytes, above the bound of {max_bytes}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(f"not JSON: {exc}") from None
