"""The asyncio admin client: topics, configs, cluster description.

    async with Admin("127.0.0.1:9092") as admin:
        await admin.create_topic("orders", partitions=3, replication_factor=1, configs={"retention.ms": "3600000"})
        description = await admin.describe_topics(["orders"])
        await admin.alter_configs("orders", {"retention.ms": "60000", "cleanup.policy": None})  # None: DELETE

Errors: a broker error code raises the BrokerResponseError subclass for it (client/errors.py:
TopicAlreadyExistsError, InvalidReplicationFactorError, UnknownTopicOrPartitionError, ...) with
the code and the broker's message. For the plural calls, all results are collected first and the
first failing item (in request order) is raised, with `errors` ({name: error}) attached.

Routing: CreateTopics and DeleteTopics go to the controller named in the metadata
(NOT_CONTROLLER refreshes it and retries); config calls for topics go to any broker, for a broker
resource to that broker; ListOffsets to each partition's leader. Retriable failures (connection
loss, NOT_CONTROLLER, ...) are retried after `retry_backoff_ms` (doubling to
`retry_backoff_max_ms`) until `default_api_timeout_ms` passes (then KafkaTimeoutError).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from client.cluster import Cluster
from client.errors import BrokerResponseError, KafkaError, KafkaTimeoutError, broker_error
from client.metadata import BrokerMetadata
from client.offsets import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, list_offsets
from client.wire.errors import ErrorCode, error_code_for
from client.wire.messages import ApiKey

__all__ = ["Admin", "ClusterDescription", "ConfigEntry", "NewTopic", "PartitionDescription", "TopicDescription"]

RESOURCE_TYPES = {"topic": 2, "broker": 4}
CONFIG_SOURCES = {-1: "unknown", 1: "dynamic_topic", 2: "dynamic_broker", 3: "dynamic_default_broker",
                  4: "static_broker", 5: "default", 6: "dynamic_broker_logger"}
OP_SET, OP_DELETE = 0, 1
_client_ids = itertools.count(1)
T = TypeVar("T")


class _Retry(Exception):
    """Raised inside an admin attempt: retry after the backoff (carries the retriable cause)."""


@dataclass(frozen=True)
class NewTopic:
    name: str
    partitions: int = -1  # -1: the broker's num.partitions
    replication_factor: int = -1  # -1: the broker's default.replication.factor
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...]
    log_start_offset: int
    high_watermark: int


@dataclass(frozen=True)
class TopicDescription:
    name: str
    is_internal: bool
    partitions: list[PartitionDescription]


@dataclass(frozen=True)
class ClusterDescription:
    cluster_id: str | None
    controller_id: int
    brokers: list[BrokerMetadata]


@dataclass(frozen=True)
class ConfigEntry:
    name: str
    value: str | None
    source: str
    read_only: bool
    is_default: bool
    is_sensitive: bool


def _config_entry(c: dict[str, Any]) -> ConfigEntry:
    source = c.get("config_source", -1)
    return ConfigEntry(c["name"], c["value"], CONFIG_SOURCES.get(source, "unknown"), bool(c.get("read_only")),
                       source == 5 or bool(c.get("is_default")), bool(c.get("is_sensitive")))


def _raise_first(errors: dict[str, BrokerResponseError]) -> None:
    if errors:
        first = next(iter(errors.values()))
        first.errors = errors  # type: ignore[attr-defined]
        raise first


class Admin:
    """See the module docstring and docs/client.md."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092", *, client_id: str | None = None,
                 request_timeout_ms: int = 30_000, default_api_timeout_ms: int = 60_000,
                 retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1_000,
                 connect_timeout_ms: int = 10_000, metadata_max_age_ms: int = 300_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id or f"replog-admin-{next(_client_ids)}"
        self.request_timeout_ms = request_timeout_ms
        self.default_api_timeout_ms = default_api_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self.cluster = Cluster.for_client(self)
        try:
            await self.cluster.start()
        except BaseException:
            await self.cluster.close()
            raise
        self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.cluster.close()

    async def __aenter__(self) -> Admin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ retry frame
    async def _with_retries(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        deadline = self._loop.time() + self.default_api_timeout_ms / 1000
        failures = 0
        while True:
            try:
                return await attempt()
            except (_Retry, KafkaError) as exc:
                cause = exc.__cause__ if isinstance(exc, _Retry) else exc
                if isinstance(exc, KafkaError) and not exc.retriable:
                    raise
                failures += 1
                left = deadline - self._loop.time()
                if left <= 0:
                    raise KafkaTimeoutError(f"{what}: no success within {self.default_api_timeout_ms} ms: "
                                            f"{cause}") from cause
                backoff = min(self.retry_backoff_ms << min(failures - 1, 20), self.retry_backoff_max_ms) / 1000
                version = self.cluster.metadata.version
                self.cluster.request_update()
                await self.cluster.wait_for_update(version, int(min(backoff, left) * 1000))

    def _controller(self) -> int | None:
        controller = self.cluster.metadata.controller_id
        return controller if controller in self.cluster.metadata.brokers else None

    # ------------------------------------------------------------------ topics
    async def create_topic(self, name: str, partitions: int = -1, replication_factor: int = -1,
                           configs: Mapping[str, str] | None = None, *, validate_only: bool = False) -> None:
        """Create one topic; raises TopicAlreadyExistsError, InvalidReplicationFactorError, ... on refusal."""
        await self.create_topics([NewTopic(name, partitions, replication_factor, dict(configs or {}))],
                                 validate_only=validate_only)

    async def create_topics(self, topics: Iterable[NewTopic], *, validate_only: bool = False) -> None:
        specs = list(topics)
        body = {"topics": [{"name": t.name, "num_partitions": t.partitions, "replication_factor": t.replication_factor,
                            "assignments": [], "configs": [{"name": k, "value": v} for k, v in t.configs.items()]}
                           for t in specs],
                "timeout_ms": self.request_timeout_ms, "validate_only": validate_only}
        pending = {t.name for t in specs}
        errors: dict[str, BrokerResponseError] = {}

        async def attempt() -> None:
            body["topics"] = [t for t in body["topics"] if t["name"] in pending]
            response, _ = await self.cluster.request(ApiKey.CREATE_TOPICS, body, node_id=self._controller())
            retry = None
            for result in response["topics"]:
                code = error_code_for(result["error_code"])
                if code == ErrorCode.NONE:
                    pending.discard(result["name"])
                elif code.retriable:
                    retry = broker_error(code, result.get("error_message"), context=f"create topic {result['name']}")
                else:
                    pending.discard(result["name"])
                    errors[result["name"]] = broker_error(code, result.get("error_message"),
                                                          context=f"create topic {result['name']}")
            if retry is not None and pending:
                raise _Retry() from retry

        await self._with_retries(attempt, "CreateTopics")
        _raise_first({t.name: errors[t.name] for t in specs if t.name in errors})
        self.cluster.request_update()

    async def delete_topic(self, name: str) -> None:
        await self.delete_topics([name])

    async def delete_topics(self, names: Iterable[str]) -> None:
        order = list(names)
        pending = set(order)
        errors: dict[str, BrokerResponseError] = {}

        async def attempt() -> None:
            body = {"topic_names": [n for n in order if n in pending], "timeout_ms": self.request_timeout_ms}
            response, _ = await self.cluster.request(ApiKey.DELETE_TOPICS, body, node_id=self._controller())
            retry = None
            for result in response["responses"]:
                code = error_code_for(result["error_code"])
                name = result["name"]
                if code == ErrorCode.NONE:
                    pending.discard(name)
                elif code.retriable and code != ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                    retry = broker_error(code, result.get("error_message"), context=f"delete topic {name}")
                else:
                    pending.discard(name)
                    errors[name] = broker_error(code, result.get("error_message"), context=f"delete topic {name}")
            if retry is not None and pending:
                raise _Retry() from retry

        await self._with_retries(attempt, "DeleteTopics")
        _raise_first({n: errors[n] for n in order if n in errors})
        self.cluster.request_update()

    async def list_topics(self, *, include_internal: bool = False) -> list[str]:
        response = await self._with_retries(lambda: self.cluster.fetch_metadata(None), "Metadata")
        return sorted(t["name"] for t in response["topics"]
                      if t["error_code"] == 0 and (include_internal or not t.get("is_internal")))

    async def describe_topics(self, names: Iterable[str] | None = None) -> dict[str, TopicDescription]:
        """Partitions with leader, leader epoch, replicas, ISR, log start offset and high watermark.

        Raises UnknownTopicOrPartitionError (or the topic's error) for a topic that cannot be described.
        """
        wanted = None if names is None else list(names)
        response = await self._with_retries(lambda: self.cluster.fetch_metadata(wanted), "Metadata")
        errors: dict[str, BrokerResponseError] = {}
        topics: dict[str, dict[str, Any]] = {}
        for topic in response["topics"]:
            code = error_code_for(topic["error_code"])
            if code != ErrorCode.NONE:
                errors[topic["name"]] = broker_error(code, context=f"describe topic {topic['name']}")
            else:
                topics[topic["name"]] = topic
        _raise_first(errors)
        tps = [(name, p["partition_index"]) for name, t in topics.items() for p in t["partitions"]]
        earliest = await list_offsets(self.cluster, dict.fromkeys(tps, EARLIEST_TIMESTAMP),
                                      timeout_ms=self.default_api_timeout_ms)
        latest = await list_offsets(self.cluster, dict.fromkeys(tps, LATEST_TIMESTAMP),
                                    timeout_ms=self.default_api_timeout_ms)
        out = {}
        for name in (wanted or sorted(topics)):
            topic = topics[name]
            partitions = [PartitionDescription(
                p["partition_index"], p["leader_id"], p.get("leader_epoch", -1), tuple(p["replica_nodes"]),
                tuple(p["isr_nodes"]), tuple(p.get("offline_replicas") or ()),
                earliest[(name, p["partition_index"])].offset, latest[(name, p["partition_index"])].offset)
                for p in sorted(topic["partitions"], key=lambda p: p["partition_index"])]
            out[name] = TopicDescription(name, bool(topic.get("is_internal")), partitions)
        return out

    async def describe_cluster(self) -> ClusterDescription:
        response = await self._with_retries(lambda: self.cluster.fetch_metadata([]), "Metadata")
        brokers = [BrokerMetadata(b["node_id"], b["host"], b["port"], b.get("rack")) for b in response["brokers"]]
        return ClusterDescription(response.get("cluster_id"), response.get("controller_id", -1),
                                  sorted(brokers, key=lambda b: b.node_id))

    # ------------------------------------------------------------------ configs
    def _resource(self, resource: str) -> int:
        if resource not in RESOURCE_TYPES:
            raise ValueError(f"resource must be one of {sorted(RESOURCE_TYPES)}, not {resource!r}")
        return RESOURCE_TYPES[resource]

    async def describe_configs(self, name: str, *, resource: str = "topic",
                               keys: Iterable[str] | None = None) -> dict[str, ConfigEntry]:
        """{config name: ConfigEntry} of a topic (or resource="broker", name=str(node id))."""
        resource_type = self._resource(resource)
        node = int(name) if resource == "broker" and name.isdigit() else None
        body = {"resources": [{"resource_type": resource_type, "resource_name": name,
                               "configuration_keys": None if keys is None else list(keys)}],
                "include_synonyms": False, "include_documentation": False}

        async def attempt() -> dict[str, Any]:
            response, _ = await self.cluster.request(ApiKey.DESCRIBE_CONFIGS, body, node_id=node)
            return response["results"][0]

        result = await self._with_retries(attempt, "DescribeConfigs")
        if result["error_code"]:
            raise broker_error(result["error_code"], result.get("error_message"), context=f"describe configs {name}")
        return {c["name"]: _config_entry(c) for c in result["configs"]}

    async def alter_configs(self, name: str, changes: Mapping[str, str | None], *, resource: str = "topic",
                            validate_only: bool = False) -> None:
        """IncrementalAlterConfigs: each value is SET; a None value DELETEs the key (back to its default)."""
        resource_type = self._resource(resource)
        node = int(name) if resource == "broker" and name.isdigit() else None
        body = {"resources": [{"resource_type": resource_type, "resource_name": name,
                               "configs": [{"name": k, "config_operation": OP_DELETE if v is None else OP_SET,
                                            "value": v} for k, v in changes.items()]}],
                "validate_only": validate_only}

        async def attempt() -> dict[str, Any]:
            response, _ = await self.cluster.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, body, node_id=node)
            return response["responses"][0]

        result = await self._with_retries(attempt, "IncrementalAlterConfigs")
        if result["error_code"]:
            raise broker_error(result["error_code"], result.get("error_message"), context=f"alter configs {name}")
