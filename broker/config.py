"""Broker configuration: Kafka's config names, typed, with defaults that make `brokerd` work alone.

One table, `BROKER_SETTINGS`, maps each Kafka name (`log.segment.bytes`) to its Python attribute
(`log_segment_bytes`), type and default; `TOPIC_SETTINGS` does the same for per-topic configs
(`retention.ms`) and the broker-level default each one falls back to. Sources, later ones win:
defaults < TOML file (`--config`, keys are Kafka names, nested tables joined with dots) < flags
(`--node-id`, `--data-dir`, `--listen`, `--advertised`) < `--set key=value`.

Unknown keys, values that do not parse, and values outside their range are a `ConfigError` with
one clear message; `brokerd` prints it and exits non-zero.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage import LogConfig


class ConfigError(ValueError):
    """A configuration problem, phrased for the operator."""


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _int(text: str | int) -> int:
    if isinstance(text, bool):
        raise ValueError("not an integer")
    return int(text)


def _str(text: Any) -> str:
    return str(text)


def _policy(text: Any) -> str:
    parts = sorted(p.strip() for p in str(text).split(",") if p.strip())
    if not parts or any(p not in ("delete", "compact") for p in parts):
        raise ValueError("cleanup.policy must be delete, compact or compact,delete")
    return ",".join(parts)


def _timestamp_type(text: Any) -> str:
    if str(text) not in ("CreateTime", "LogAppendTime"):
        raise ValueError("must be CreateTime or LogAppendTime")
    return str(text)


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def parse(text: Any) -> int:
        value = _int(text)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value
    return parse


def _ratio(text: Any) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be in [0, 1]")
    return value


COMPRESSION_TYPES = ("producer", "uncompressed", "none", "gzip", "snappy", "lz4", "zstd")


def _compression_type(text: Any) -> str:
    if str(text) not in COMPRESSION_TYPES:
        raise ValueError(f"must be one of {', '.join(COMPRESSION_TYPES)}")
    return str(text)


def _host_port(text: Any) -> str:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return f"{host}:{int(port)}"


ROLES = ("broker", "controller")


def _roles(text: Any) -> str:
    roles = [r.strip() for r in str(text).split(",") if r.strip()]
    if not roles or any(r not in ROLES for r in roles) or len(set(roles)) != len(roles):
        raise ValueError(f"expected a comma-separated subset of broker,controller, got {text!r}")
    return ",".join(r for r in ROLES if r in roles)


def parse_voters(text: Any) -> dict[int, tuple[str, int]]:
    """'1@host:port,2@host:port' -> {1: (host, port), ...}; ValueError naming the bad entry."""
    voters: dict[int, tuple[str, int]] = {}
    for item in str(text).split(","):
        item = item.strip()
        node, sep, address = item.partition("@")
        if not sep or not node.strip().isdigit():
            raise ValueError(f"expected ID@HOST:PORT, got {item!r}")
        host, port = _host_port(address).rsplit(":", 1)
        if int(port) == 0:
            raise ValueError(f"voter {item!r} needs a real port, not 0")
        if int(node) in voters:
            raise ValueError(f"voter id {int(node)} given twice")
        voters[int(node)] = (host, int(port))
    return voters


def _voters(text: Any) -> str:
    if str(text).strip() == "":
        return ""
    parse_voters(text)
    return ",".join(x.strip() for x in str(text).split(","))


@dataclass(frozen=True)
class Setting:
    kafka_name: str
    python_name: str
    parse: Callable[[Any], Any]
    default: Any
    minimum: int | None = None
    doc: str = ""


DAY_MS = 24 * 3600 * 1000

BROKER_SETTINGS: tuple[Setting, ...] = (
    Setting("node.id", "node_id", _int, 1, 0, "this node's id"),
    Setting("log.dirs", "data_dir", _str, "./replog-data", None, "data directory"),
    Setting("listeners", "listen", _host_port, "127.0.0.1:9092", None, "client listener HOST:PORT"),
    Setting("advertised.listeners", "advertised", _str, "", None, "HOST:PORT given to clients (default: listen)"),
    Setting("process.roles", "roles", _roles, "broker,controller", None,
            "broker, controller, or both (combined mode)"),
    Setting("controller.listeners", "controller_listen", _host_port, "127.0.0.1:9093", None,
            "controller (Raft) listener HOST:PORT"),
    Setting("controller.quorum.voters", "voters", _voters, "", None,
            "ID@HOST:PORT,... (default: a one-voter quorum, node.id@controller.listeners)"),
    Setting("metadata.quorum.enable", "metadata_quorum", _bool, True, None,
            "metadata from the Raft quorum (false: the single-node topics.json store)"),
    Setting("num.partitions", "num_partitions", _int, 1, 1, "partitions of auto-created topics"),
    Setting("default.replication.factor", "default_replication_factor", _int, 1, 1, ""),
    Setting("auto.create.topics.enable", "auto_create_topics_enable", _bool, True, None, ""),
    Setting("message.max.bytes", "message_max_bytes", _int, 1048588, 1, "largest batch accepted"),
    Setting("socket.request.max.bytes", "socket_request_max_bytes", _int, 104857600, 1, "largest request frame"),
    Setting("queued.max.requests", "queued_max_requests", _int, 500, 1, "requests in flight per connection"),
    Setting("max.connections", "max_connections", _int, 1000, 1, ""),
    Setting("connections.max.idle.ms", "connections_max_idle_ms", _int, 600000, 1, ""),
    Setting("min.insync.replicas", "min_insync_replicas", _int, 1, 1, ""),
    Setting("replica.lag.time.max.ms", "replica_lag_time_max_ms", _int, 2000, 100,
            "an ISR member not caught up within this leaves the ISR (Kafka: 30000)"),
    Setting("producer.id.expiration.ms", "producer_id_expiration_ms", _int, DAY_MS, 1, ""),
    Setting("log.segment.bytes", "log_segment_bytes", _int, 1 << 30, 1024, ""),
    Setting("log.roll.ms", "log_roll_ms", _int, 7 * DAY_MS, 1, ""),
    Setting("log.index.size.max.bytes", "log_index_size_max_bytes", _int, 10 << 20, 12, ""),
    Setting("log.index.interval.bytes", "log_index_interval_bytes", _int, 4096, 0, ""),
    Setting("log.retention.ms", "log_retention_ms", _int, 7 * DAY_MS, -1, ""),
    Setting("log.retention.bytes", "log_retention_bytes", _int, -1, -1, ""),
    Setting("log.retention.check.interval.ms", "log_retention_check_interval_ms", _int, 300000, 1, ""),
    Setting("log.cleanup.policy", "log_cleanup_policy", _policy, "delete", None, ""),
    Setting("log.cleaner.delete.retention.ms", "log_cleaner_delete_retention_ms", _int, DAY_MS, 0, ""),
    Setting("log.cleaner.min.cleanable.ratio", "log_cleaner_min_cleanable_ratio", float, 0.5, None, ""),
    Setting("log.cleaner.min.compaction.lag.ms", "log_cleaner_min_compaction_lag_ms", _int, 0, 0, ""),
    Setting("log.flush.interval.messages", "log_flush_interval_messages", _int, 2**63 - 1, 1, ""),
    Setting("log.flush.interval.ms", "log_flush_interval_ms", _int, 2**63 - 1, 0, ""),
    Setting("log.message.timestamp.type", "log_message_timestamp_type", _timestamp_type, "CreateTime", None, ""),
    # consumer groups (broker/groups/, docs/groups.md)
    Setting("offsets.topic.num.partitions", "offsets_topic_num_partitions", _int, 10, 1,
            "partitions of __consumer_offsets, fixed at its creation (Kafka: 50)"),
    Setting("offsets.topic.replication.factor", "offsets_topic_replication_factor", _int, -1, -1,
            "RF of __consumer_offsets; -1: min(3, number of controller.quorum.voters)"),
    Setting("offsets.topic.segment.bytes", "offsets_topic_segment_bytes", _int, 104857600, 1024, ""),
    Setting("offsets.commit.timeout.ms", "offsets_commit_timeout_ms", _int, 5000, 1,
            "an offset commit or group write waits this long for the high watermark"),
    Setting("offsets.retention.minutes", "offsets_retention_minutes", _int, 10080, 1,
            "offsets of a group Empty this long are deleted"),
    Setting("offsets.retention.check.interval.ms", "offsets_retention_check_interval_ms", _int, 600000, 1, ""),
    Setting("offset.metadata.max.bytes", "offset_metadata_max_bytes", _int, 4096, 0, ""),
    Setting("group.min.session.timeout.ms", "group_min_session_timeout_ms", _int, 6000, 1, ""),
    Setting("group.max.session.timeout.ms", "group_max_session_timeout_ms", _int, 1800000, 1, ""),
    Setting("group.initial.rebalance.delay.ms", "group_initial_rebalance_delay_ms", _int, 3000, 0,
            "a new group waits this long for more members before its first generation"),
    Setting("group.max.size", "group_max_size", _int, 1000, 1, "members per group (Kafka: unbounded)"),
    Setting("group.coordinator.groups.max", "group_coordinator_groups_max", _int, 10000, 1,
            "groups one coordinator (broker) holds; new groups beyond get COORDINATOR_NOT_AVAILABLE"),
)

# topic config name -> (LogConfig field, parser, broker setting it defaults to)
TOPIC_SETTINGS: dict[str, tuple[str, Callable[[Any], Any], str]] = {
    "segment.bytes": ("segment_bytes", _int_at_least(1024), "log_segment_bytes"),
    "segment.ms": ("segment_ms", _int_at_least(1), "log_roll_ms"),
    "segment.index.bytes": ("segment_index_bytes", _int_at_least(12), "log_index_size_max_bytes"),
    "index.interval.bytes": ("index_interval_bytes", _int_at_least(0), "log_index_interval_bytes"),
    "retention.ms": ("retention_ms", _int_at_least(-1), "log_retention_ms"),
    "retention.bytes": ("retention_bytes", _int_at_least(-1), "log_retention_bytes"),
    "cleanup.policy": ("cleanup_policy", _policy, "log_cleanup_policy"),
    "delete.retention.ms": ("delete_retention_ms", _int_at_least(0), "log_cleaner_delete_retention_ms"),
    "min.cleanable.dirty.ratio": ("min_cleanable_dirty_ratio", _ratio, "log_cleaner_min_cleanable_ratio"),
    "min.compaction.lag.ms": ("min_compaction_lag_ms", _int_at_least(0), "log_cleaner_min_compaction_lag_ms"),
    "max.message.bytes": ("max_message_bytes", _int_at_least(0), "message_max_bytes"),
    "message.timestamp.type": ("message_timestamp_type", _timestamp_type, "log_message_timestamp_type"),
    "flush.messages": ("flush_messages", _int_at_least(1), "log_flush_interval_messages"),
    "flush.ms": ("flush_ms", _int_at_least(0), "log_flush_interval_ms"),
}
# topic configs that are not LogConfig fields but are served and validated. compression.type:
# batches are stored as the producer sent them (Kafka's "producer"); other values are accepted
# and reported but do not recompress.
TOPIC_EXTRA_SETTINGS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "min.insync.replicas": (_int_at_least(1), "min_insync_replicas"),
    "compression.type": (_compression_type, ""),
}

_BY_KAFKA = {s.kafka_name: s for s in BROKER_SETTINGS}


@dataclass(frozen=True)
class BrokerConfig:
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def voter_map(self) -> dict[int, tuple[str, int]]:
        """controller.quorum.voters, or the one-voter quorum node.id@controller.listeners."""
        if self.values["voters"]:
            return parse_voters(self.values["voters"])
        host, port = self.values["controller_listen"].rsplit(":", 1)
        return {self.values["node_id"]: (host, int(port))}

    @property
    def advertised_address(self) -> str:
        return self.values["advertised"] or self.values["listen"]

    def log_config(self, topic_overrides: Mapping[str, str] | None = None) -> LogConfig:
        """The LogConfig of a topic: broker defaults, then the topic's own configs."""
        fields: dict[str, Any] = {}
        for name, (attr, _parse, broker_attr) in TOPIC_SETTINGS.items():
            value = self.values[broker_attr]
            if name in ("flush.messages", "flush.ms") and value >= 2**63 - 1:
                value = None
            fields[attr] = value
        for name, raw in (topic_overrides or {}).items():
            if name in TOPIC_SETTINGS:
                attr, parse, _ = TOPIC_SETTINGS[name]
                value = parse(raw)
                if name in ("flush.messages", "flush.ms") and value >= 2**63 - 1:
                    value = None
                fields[attr] = value
        fields["producer_id_expiration_ms"] = self.values["producer_id_expiration_ms"]
        return LogConfig(**fields)

    def topic_config_defaults(self) -> dict[str, str]:
        """Every served topic config with its broker default, as DescribeConfigs shows them."""
        out = {name: _format(self.values[broker_attr]) for name, (_a, _p, broker_attr) in TOPIC_SETTINGS.items()}
        out["min.insync.replicas"] = str(self.values["min_insync_replicas"])
        out["compression.type"] = "producer"
        return out


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate_topic_config(name: str, value: str) -> str:
    """Parse one topic config; ConfigError naming it if unknown or invalid. Returns the normal form."""
    if name in TOPIC_SETTINGS:
        parse = TOPIC_SETTINGS[name][1]
    elif name in TOPIC_EXTRA_SETTINGS:
        parse = TOPIC_EXTRA_SETTINGS[name][0]
    else:
        raise ConfigError(f"unknown topic config {name!r}")
    try:
        return _format(parse(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value {value!r} for topic config {name}: {exc}") from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_config(config_file: str | None = None, overrides: Mapping[str, Any] | None = None) -> BrokerConfig:
    """Defaults < TOML file < overrides (Kafka names). ConfigError on any problem."""
    raw: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as f:
                raw.update(_flatten(tomllib.load(f)))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    raw.update(overrides or {})
    values = {s.python_name: s.default for s in BROKER_SETTINGS}
    for name, value in raw.items():
        setting = _BY_KAFKA.get(name)
        if setting is None:
            raise ConfigError(f"unknown config {name!r}")
        try:
            parsed = setting.parse(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid value {value!r} for {name}: {exc}") from None
        if setting.minimum is not None and isinstance(parsed, int) and parsed < setting.minimum:
            raise ConfigError(f"{name} must be >= {setting.minimum}, got {parsed}")
        values[setting.python_name] = parsed
    if values["advertised"]:
        try:
            values["advertised"] = _host_port(values["advertised"])
        except ValueError as exc:
            raise ConfigError(f"invalid advertised.listeners: {exc}") from None
    _check_quorum(values)
    return BrokerConfig(values)


def _check_quorum(values: dict[str, Any]) -> None:
    voters = parse_voters(values["voters"]) if values["voters"] else {}
    node_id = values["node_id"]
    roles = values["roles"].split(",")
    if not voters:
        if "controller" not in roles:
            raise ConfigError("process.roles=broker needs controller.quorum.voters (--voters)")
        return
    if "controller" in roles and node_id not in voters:
        raise ConfigError(f"node {node_id} has the controller role but is not in controller.quorum.voters")
    if "controller" not in roles and node_id in voters:
        raise ConfigError(f"node {node_id} is in controller.quorum.voters but lacks the controller role")
