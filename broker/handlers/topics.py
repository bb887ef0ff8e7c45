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
from broker.handlers.metadata import INTERNAL
from broker.server import Handler
from broker.topic_store import PARTITIONS_MAX, TopicError, validate_topic_name
from client.wire.errors import ErrorCode

if TYPE_CHECKING:
    from broker.broker import Broker


def _create_one(broker: Broker, topic: dict[str, Any], validate_only: bool,
                forward: list[dict[str, Any]] | None = None) -> tuple[int, str | None]:
    """Validate one topic and create it; in quorum mode (`forward` given) append it to `forward`
    for the controller instead."""
    name = topic["name"]
    brokers = [broker.node_id] if broker.quorum is None else broker.quorum.image.active_broker_ids()
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
            if broker.quorum is None and any(set(a["broker_ids"]) != {broker.node_id} for a in assignments):
                return ErrorCode.INVALID_REPLICA_ASSIGNMENT, "replicas must be on this broker"
            if any(not a["broker_ids"] or len(set(a["broker_ids"])) != len(a["broker_ids"])
                   or len(a["broker_ids"]) != replication or not set(a["broker_ids"]) <= set(brokers)
                   for a in assignments):
                return ErrorCode.INVALID_REPLICA_ASSIGNMENT, "replicas must be on live brokers"
        partitions = broker.config.num_partitions if partitions == -1 else partitions
        replication = broker.config.default_replication_factor if replication == -1 else replication
        if not 1 <= partitions <= PARTITIONS_MAX:
            return ErrorCode.INVALID_PARTITIONS, f"partitions must be in 1..{PARTITIONS_MAX}"
        if not 1 <= replication <= len(brokers):
            available = f"the {len(brokers)} available broker" + ("s" if len(brokers) != 1 else "")
            return ErrorCode.INVALID_REPLICATION_FACTOR, (
                f"replication factor {replication} is larger than {available}")
        configs = {}
        for entry in topic.get("configs") or []:
            if entry["value"] is None:
                continue
            configs[entry["name"]] = validate_topic_config(entry["name"], entry["value"])
        if forward is not None:
            if not validate_only:
                broker.check_fd_budget(partitions)
            forward.append({"name": name, "num_partitions": partitions, "replication_factor": replication,
                            "configs": configs})
        elif not validate_only:
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
        validate_only = body.get("validate_only", False)
        forward: list[dict[str, Any]] | None = None if broker.quorum is None else []
        for topic in body["topics"]:
            if topic["name"] in duplicates:  # Kafka: every entry of a repeated name, none created
                error, message = ErrorCode.INVALID_REQUEST, "Duplicate topic name."
            else:
                error, message = _create_one(broker, topic, validate_only, forward)
            results.append({"name": topic["name"], "error_code": error, "error_message": clip_message(message)})
        if forward and broker.quorum is not None:
            by_name = {r["name"]: r for r in results}
            for r in await broker.quorum.create_topics(forward, validate_only):
                if r["error_code"]:
                    by_name[r["name"]]["error_code"] = r["error_code"]
                    by_name[r["name"]]["error_message"] = clip_message(r.get("message") or None)
        return {"throttle_time_ms": 0, "topics": results}
    return handle


def delete_topics_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        duplicates = _duplicates(body["topic_names"])
        quorum = broker.quorum
        forward: list[str] = []
        for name in body["topic_names"]:
            if name in duplicates:  # Kafka: every entry of a repeated name, none deleted
                results.append({"name": name, "error_code": ErrorCode.INVALID_REQUEST})
                continue
            if name in INTERNAL:  # deleting it would lose every group's committed offsets
                results.append({"name": name, "error_code": ErrorCode.INVALID_TOPIC_EXCEPTION})
                continue
            if quorum is not None:
                known = quorum.image.topic(name) is not None
                results.append({"name": name, "error_code": 0 if known else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION})
                if known:
                    forward.append(name)
                continue
            try:
                broker.delete_topic(name)
                results.append({"name": name, "error_code": 0})
            except TopicError as exc:
                results.append({"name": name, "error_code": exc.error_code})
        if forward and quorum is not None:
            by_name = {r["name"]: r for r in results}
            for r in await quorum.delete_topics(forward):
                if r["error_code"] and r.get("name") in by_name:
                    by_name[r["name"]]["error_code"] = r["error_code"]
        return {"throttle_time_ms": 0, "responses": results}
    return handle
