"""The asyncio admin client: topics, configs, cluster description.

    async with Admin("127.0.0.1:9092") as admin:
        await admin.create_topic("orders", partitions=3, replication_factor=1, configs={"retention.ms": "3600000"})
        description = await admin.describe_topics(["orders"])
        await admin.alter_configs("orders", {"retention.ms": "60000", "cleanup.policy": None})  # None: DELETE

Errors: a broker error code raises the BrokerResponseError subclass for it (client/errors.py:
TopicAlreadyExistsError, InvalidReplicationFactorError, UnknownTopicOrPartitionError, ...) with
the code and the broker's message. For the plural calls, all results are collected first and the
first failing item (in request order) is raised, with `errors` ({name: error}) attached.

Consumer groups (client/group/): `list_groups`, `describe_groups`, `delete_groups`,
`list_consumer_group_offsets`, `alter_consumer_group_offsets`. Group requests go to the group's
coordinator (FindCoordinator first; NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE /
COORDINATOR_LOAD_IN_PROGRESS are retried like any retriable error); ListGroups goes to every
broker and the answers are merged. Altering offsets is Kafka's admin commit (generation -1, no
member id), which a coordinator accepts only for a group without members (else
UNKNOWN_MEMBER_ID); DeleteGroups likewise (NON_EMPTY_GROUP).

Routing: CreateTopics and DeleteTopics go to the controller named in the metadata
(NOT_CONTROLLER refreshes it and retries); config calls for topics go to any broker, for a broker
resource to that broker; ListOffsets to each partition's leader. Retriable failures (connection
loss, NOT_CONTROLLER, ...) are retried after `retry_backoff_ms` (doubling to
`retry_backoff_max_ms`) until `default_api_timeout_ms` passes (then KafkaTimeoutError).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from client.cluster import CLIENT_API_VERSIONS, Cluster
from client.errors import BrokerResponseError, IncompatibleBrokerError, KafkaError, KafkaTimeoutError, broker_error
from client.group import DELETE_GROUPS_API_KEY
from client.group.coordinator import find_coordinator, offset_fetch_body, parse_offset_fetch
from client.group.protocol import CONSUMER_PROTOCOL_TYPE, ConsumerProtocolError, decode_assignment
from client.metadata import BrokerMetadata
from client.offsets import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, OffsetAndTimestamp, list_offsets
from client.record import TopicPartition
from client.wire.errors import ErrorCode, error_code_for
from client.wire.messages import ApiKey

__all__ = ["Admin", "ClusterDescription", "ConfigEntry", "GroupDescription", "GroupListing", "MemberDescription",
           "NewTopic", "PartitionDescription", "TopicDescription"]

RESOURCE_TYPES = {"topic": 2, "broker": 4}
CONFIG_SOURCES = {-1: "unknown", 1: "dynamic_topic", 2: "dynamic_broker", 3: "dynamic_default_broker",
                  4: "static_broker", 5: "default", 6: "dynamic_broker_logger"}
OP_SET, OP_DELETE = 0, 1
DESCRIBE_OFFSETS_ATTEMPT_MS = 2_000  # describe_topics: re-check which partitions still have a leader this often
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
    """One partition as Metadata (v7+: leader_epoch) and ListOffsets describe it.

    `leader` is -1 when the partition has no leader (offline: no live ISR member); `error` is the
    partition's Metadata error code (LEADER_NOT_AVAILABLE for an offline partition, NONE otherwise).
    `log_start_offset` / `high_watermark` are None when no leader could answer ListOffsets.
    """

    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...]
    log_start_offset: int | None
    high_watermark: int | None
    error: ErrorCode = ErrorCode.NONE


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


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str | None  # ListGroups v4+ (None from older brokers)


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    assignment: tuple[tuple[str, int], ...]  # decoded when the protocol type is "consumer"


@dataclass(frozen=True)
class GroupDescription:
    """DescribeGroups: state is Kafka's (Empty, PreparingRebalance, CompletingRebalance, Stable, Dead)."""

    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: tuple[MemberDescription, ...]
    coordinator: int


def _member(m: dict[str, Any], protocol_type: str) -> MemberDescription:
    tps: tuple[tuple[str, int], ...] = ()
    if protocol_type == CONSUMER_PROTOCOL_TYPE and m["member_assignment"]:
        try:
            tps = tuple(decode_assignment(m["member_assignment"]).topic_partitions())
        except ConsumerProtocolError:
            tps = ()  # another client's bytes we cannot read: shown without an assignment
    return MemberDescription(m["member_id"], m.get("group_instance_id"), m["client_id"], m["client_host"], tps)


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
        """Partitions with leader, leader epoch, replicas, ISR, offline replicas, log start offset and
        high watermark (PartitionDescription); `names` None: every topic, sorted by name.

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
        earliest = await self._led_offsets(tps, EARLIEST_TIMESTAMP)
        latest = await self._led_offsets(tps, LATEST_TIMESTAMP)
        out = {}
        for name in (wanted or sorted(topics)):
            topic = topics[name]
            partitions = []
            for p in sorted(topic["partitions"], key=lambda p: p["partition_index"]):
                tp = (name, p["partition_index"])
                start, end = earliest.get(tp), latest.get(tp)
                partitions.append(PartitionDescription(
                    tp[1], p["leader_id"], p.get("leader_epoch", -1), tuple(p["replica_nodes"]),
                    tuple(p["isr_nodes"]), tuple(p.get("offline_replicas") or ()),
                    None if start is None else start.offset, None if end is None else end.offset,
                    error_code_for(p["error_code"])))
            out[name] = TopicDescription(name, bool(topic.get("is_internal")), partitions)
        return out

    async def _led_offsets(self, tps: Sequence[TopicPartition], timestamp: int) -> dict[TopicPartition,
                                                                                       OffsetAndTimestamp]:
        """ListOffsets of those of `tps` that have a leader. An offline partition (no leader, or one
        the metadata does not list as a live broker) cannot answer: it is left out rather than
        waited for, also when it goes offline meanwhile (its leader died and was fenced): each
        attempt is bounded by DESCRIBE_OFFSETS_ATTEMPT_MS, then the metadata is refreshed and the
        partitions still led are asked again, all within `default_api_timeout_ms`."""
        deadline = self._loop.time() + self.default_api_timeout_ms / 1000
        leader = self.cluster.metadata.leader
        while True:
            led = [tp for tp in tps if leader(tp) >= 0]
            if not led:
                return {}
            left_ms = int((deadline - self._loop.time()) * 1000)
            try:
                return await list_offsets(self.cluster, dict.fromkeys(led, timestamp),
                                          timeout_ms=max(min(left_ms, DESCRIBE_OFFSETS_ATTEMPT_MS), 1))
            except KafkaTimeoutError:
                if self._loop.time() >= deadline:
                    raise
            with contextlib.suppress(KafkaError):  # a failed refresh: the next attempt retries it
                await self.cluster.refresh_metadata()

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

    # ------------------------------------------------------------------ consumer groups
    async def _coordinator_request(self, group_id: str, api_key: int, body: Mapping[str, Any] | Callable[[int], Any],
                                   check: Callable[[dict[str, Any]], int]) -> tuple[dict[str, Any], int]:
        """One request to `group_id`'s coordinator with retries; `check` returns the answer's error code."""
        async def attempt() -> tuple[dict[str, Any], int]:
            coordinator = await find_coordinator(self.cluster, group_id)
            response, _ = await self.cluster.request(api_key, body, node_id=coordinator.node_id)
            code = error_code_for(check(response))
            if code != ErrorCode.NONE:
                error = broker_error(code, context=f"group {group_id}")
                if code.retriable:
                    raise _Retry() from error
                raise error
            return response, coordinator.node_id

        return await self._with_retries(attempt, f"group {group_id}")

    async def list_groups(self) -> list[GroupListing]:
        """Every group of every broker (ListGroups to each), sorted by id."""
        response = await self._with_retries(lambda: self.cluster.fetch_metadata([]), "Metadata")
        found: dict[str, GroupListing] = {}
        for broker in response["brokers"]:
            node = broker["node_id"]

            async def attempt(node: int = node) -> dict[str, Any]:
                answer, _ = await self.cluster.request(ApiKey.LIST_GROUPS, {"states_filter": [], "types_filter": []},
                                                       node_id=node)
                code = error_code_for(answer["error_code"])
                if code.retriable and code != ErrorCode.NONE:
                    raise _Retry() from broker_error(code, context="ListGroups")
                if code != ErrorCode.NONE:
                    raise broker_error(code, context="ListGroups")
                return answer

            answer = await self._with_retries(attempt, "ListGroups")
            for g in answer["groups"]:
                found[g["group_id"]] = GroupListing(g["group_id"], g["protocol_type"], g.get("group_state"))
        return [found[k] for k in sorted(found)]

    async def describe_groups(self, group_ids: Iterable[str]) -> dict[str, GroupDescription]:
        """State, protocol and members (with decoded assignments) of each group; an unknown group is Dead."""
        out = {}
        for group_id in group_ids:
            body = {"groups": [group_id], "include_authorized_operations": False}
            response, node = await self._coordinator_request(
                group_id, ApiKey.DESCRIBE_GROUPS, body,
                lambda r: 0 if r["groups"][0]["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
                else r["groups"][0]["error_code"])
            g = response["groups"][0]
            state = g["group_state"]
            if g["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND:
                state = "Dead"
            out[group_id] = GroupDescription(group_id, state, g["protocol_type"], g["protocol_data"],
                                             tuple(_member(m, g["protocol_type"]) for m in g["members"]), node)
        return out

    async def delete_groups(self, group_ids: Iterable[str]) -> None:
        """DeleteGroups: a group with members raises NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND."""
        if DELETE_GROUPS_API_KEY not in CLIENT_API_VERSIONS:
            raise IncompatibleBrokerError("this client has no DeleteGroups schema (client/wire/messages)")
        for group_id in group_ids:
            await self._coordinator_request(group_id, DELETE_GROUPS_API_KEY, {"groups_names": [group_id]},
                                            lambda r: r["results"][0]["error_code"])

    async def list_consumer_group_offsets(self, group_id: str, partitions: Iterable[tuple[str, int]] | None = None
                                          ) -> dict[tuple[str, int], int]:
        """{tp: committed offset} of a group (every committed partition, or those asked for that have one)."""
        wanted = None if partitions is None else list(partitions)
        response, _ = await self._coordinator_request(group_id, ApiKey.OFFSET_FETCH,
                                                      offset_fetch_body(group_id, wanted),
                                                      lambda r: r.get("error_code", 0))
        found = parse_offset_fetch(response, group_id)
        return {tp: o for tp, o in sorted(found.items()) if o is not None}

    async def alter_consumer_group_offsets(self, group_id: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit `offsets` for a group without members (Kafka refuses it for an active group)."""
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, partition), offset in sorted(offsets.items()):
            if offset < 0:
                raise ValueError("offsets must be >= 0")
            by_topic.setdefault(topic, []).append({"partition_index": partition, "committed_offset": offset,
                                                   "committed_leader_epoch": -1, "committed_metadata": ""})
        body = {"group_id": group_id, "generation_id_or_member_epoch": -1, "member_id": "",
                "group_instance_id": None, "retention_time_ms": -1,
                "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}

        def first_error(response: dict[str, Any]) -> int:
            return next((p["error_code"] for t in response["topics"] for p in t["partitions"] if p["error_code"]), 0)

        await self._coordinator_request(group_id, ApiKey.OFFSET_COMMIT, body, first_error)
