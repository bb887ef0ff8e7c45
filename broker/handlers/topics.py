"""CreateTopics (19) v2-4 and DeleteTopics (20) v1-3.

Single node: a replication factor above 1 is INVALID_REPLICATION_FACTOR; -1 means the broker
default (`default.replication.factor`, `num.partitions`). Explicit replica assignments must name
this broker only. Topic configs are validated by name and value (INVALID_CONFIG) before anything
is created; `validate_only` checks without creating.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from broker.config import ConfigError, validate_topic_config
from broker.handlers import clip_message
from broker.server import Handler
from broker.topic_store import PARTITIONS_MAX, TopicError, validate_topic_name
from client.wire.errors import ErrorCode

if TYPE_CHECKING:
    from broker.broker import Broker


def _create_one(broker: Broker, topic: dict[str, Any], validate_only: bool) -> tuple[int, str | None]:
    name = topic["name"]
    try:
        validate_topic_name(name)
        if broker.topics.get(name) is not None:
            return ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists."
        partitions = topic["num_partitions"]
        replication = topic["replication_factor"]
        if topic.get("assignments"):
            if partitions != -1 or replication != -1:
                return ErrorCode.INVALID_REQUEST, "both assignments and partitions/replication factor given"
            assignments = topic["assignments"]
            if [a["partition_index"] for a in assignments] != list(range(len(assignments))):
                return ErrorCode.INVALID_REPLICA_ASSIGNMENT, "partition indexes must be 0, 1, ... in order"
            partitions = len(assignments)
            replication = len(assignments[0]["broker_ids"])
            if any(set(a["broker_ids"]) != {broker.node_id} for a in assignments):
                return ErrorCode.INVALID_REPLICA_ASSIGNMENT, "replicas must be on this broker"
        partitions = broker.config.num_partitions if partitions == -1 else partitions
        replication = broker.config.default_replication_factor if replication == -1 else replication
        if not 1 <= partitions <= PARTITIONS_MAX:
            return ErrorCode.INVALID_PARTITIONS, f"partitions must be in 1..{PARTITIONS_MAX}"
        if replication != 1:
            return ErrorCode.INVALID_REPLICATION_FACTOR, (
                f"replication factor {replication} is larger than the 1 available broker")
        configs = {}
        for entry in topic.get("configs") or []:
            if entry["value"] is None:
                continue
            configs[entry["name"]] = validate_topic_config(entry["name"], entry["value"])
        if not validate_only:
            broker.create_topic(name, partitions, replication, configs)
    except TopicError as exc:
        return exc.error_code, str(exc)
    except ConfigError as exc:
        return ErrorCode.INVALID_CONFIG, str(exc)
    return 0, None


def _duplicates(names: list[str]) -> set[str]:
    return {name for name, count in Counter(names).items() if count > 1}


def create_topics_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        duplicates = _duplicates([t["name"] for t in body["topics"]])
        for topic in body["topics"]:
            if topic["name"] in duplicates:  # Kafka: every entry of a repeated name, none created
                error, message = ErrorCode.INVALID_REQUEST, "Duplicate topic name."
            else:
                error, message = _create_one(broker, topic, body.get("validate_only", False))
            results.append({"name": topic["name"], "error_code": error, "error_message": clip_message(message)})
        return {"throttle_time_ms": 0, "topics": results}
    return handle


def delete_topics_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        duplicates = _duplicates(body["topic_names"])
        for name in body["topic_names"]:
            if name in duplicates:  # Kafka: every entry of a repeated name, none deleted
                results.append({"name": name, "error_code": ErrorCode.INVALID_REQUEST})
                continue
            try:
                broker.delete_topic(name)
                results.append({"name": name, "error_code": 0})
            except TopicError as exc:
                results.append({"name": name, "error_code": exc.error_code})
        return {"throttle_time_ms": 0, "responses": results}
    return handle
