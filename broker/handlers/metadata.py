"""Metadata (3), v4-8: this broker, and every requested topic with its partitions led here.

Unknown topics are auto-created when the request allows it and `auto.create.topics.enable` is on
(Kafka's behaviour), with `num.partitions` partitions; an invalid name gets INVALID_TOPIC_EXCEPTION.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.server import Handler
from broker.topic_store import TopicError, TopicInfo, validate_topic_name
from client.wire.errors import ErrorCode

if TYPE_CHECKING:
    from broker.broker import Broker

AUTHORIZED_OPERATIONS_OMITTED = -2147483648
INTERNAL = frozenset({"__consumer_offsets"})  # written by the group coordinator only


def topic_metadata(broker: Broker, info: TopicInfo) -> dict[str, Any]:
    node = broker.node_id
    partitions = []
    for index in range(info.partitions):
        partition = broker.partitions.get((info.name, index))
        if partition is not None and partition.log.offline:  # its log dir failed: KAFKA_STORAGE_ERROR
            partitions.append({"error_code": ErrorCode.KAFKA_STORAGE_ERROR, "partition_index": index,
                               "leader_id": -1, "leader_epoch": partition.leader_epoch, "replica_nodes": [node],
                               "isr_nodes": [node], "offline_replicas": [node]})
            continue
        partitions.append({
            "error_code": 0 if partition is not None else ErrorCode.LEADER_NOT_AVAILABLE,
            "partition_index": index, "leader_id": node if partition is not None else -1,
            "leader_epoch": partition.leader_epoch if partition is not None else -1,
            "replica_nodes": [node], "isr_nodes": [node], "offline_replicas": []})
    return {"error_code": 0, "name": info.name, "is_internal": info.name == "__consumer_offsets",
            "partitions": partitions,
            "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}


def quorum_topic_metadata(broker: Broker, name: str) -> dict[str, Any]:
    """A topic as the committed image has it: leaders, replicas and ISRs placed by the controller."""
    assert broker.quorum is not None
    image = broker.quorum.image
    topic = image.topic(name)
    assert topic is not None
    partitions = []
    for index, part in enumerate(topic.partitions):
        offline = [r for r in part.replicas if not image.is_active(r)]
        leader = part.leader
        if leader >= 0 and leader != broker.node_id and broker.replication.leader_unreachable(leader):
            leader = -1  # our fetcher lost it: the controller will move the partition (fast refresh)
        elif leader == broker.node_id and not broker.may_lead():
            leader = -1  # our lease ended (cut off from the controller): our image may be stale
        error = 0 if leader >= 0 else ErrorCode.LEADER_NOT_AVAILABLE
        if part.leader == broker.node_id:
            local = broker.partitions.get((name, index))
            if local is not None and local.log.offline:  # its log dir failed here
                error = ErrorCode.KAFKA_STORAGE_ERROR
                offline = sorted({*offline, broker.node_id})
        partitions.append({"error_code": error, "partition_index": index,
                           "leader_id": leader if error != ErrorCode.KAFKA_STORAGE_ERROR else -1,
                           "leader_epoch": part.leader_epoch, "replica_nodes": list(part.replicas),
                           "isr_nodes": list(part.isr), "offline_replicas": offline})
    return {"error_code": 0, "name": name, "is_internal": name == "__consumer_offsets", "partitions": partitions,
            "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}


def quorum_handler(broker: Broker) -> Handler:
    quorum = broker.quorum
    assert quorum is not None

    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        requested = body.get("topics")
        topics: list[dict[str, Any]] = []
        if requested is None:
            topics = [quorum_topic_metadata(broker, name) for name in sorted(quorum.image.topic_ids)]
        else:
            allow_create = body.get("allow_auto_topic_creation", True) and broker.config.auto_create_topics_enable
            names = [item.get("name") for item in requested]
            # an internal topic is created by its owner with its own configs, never by auto-creation
            missing = [n for n in dict.fromkeys(names) if n and quorum.image.topic(n) is None and n not in INTERNAL]
            errors: dict[str, int] = {}
            if missing and allow_create:
                for name in missing:
                    try:
                        validate_topic_name(name)
                    except TopicError as exc:
                        errors[name] = exc.error_code
                valid = [n for n in missing if n not in errors]
                if valid:
                    results = await quorum.create_topics(
                        [{"name": n, "num_partitions": broker.config.num_partitions,
                          "replication_factor": broker.config.default_replication_factor} for n in valid])
                    for r in results:
                        if r["error_code"] not in (0, ErrorCode.TOPIC_ALREADY_EXISTS):
                            errors[r["name"]] = r["error_code"]
            for name in names:
                if name in errors:
                    topics.append({"error_code": errors[name], "name": name, "partitions": []})
                elif name and quorum.image.topic(name) is not None:
                    topics.append(quorum_topic_metadata(broker, name))
                else:
                    unknown = not allow_create or name in INTERNAL
                    topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if unknown
                                   else ErrorCode.LEADER_NOT_AVAILABLE if name else
                                   ErrorCode.INVALID_TOPIC_EXCEPTION, "name": name, "partitions": []})
        image = quorum.image
        brokers = []
        for broker_id in image.active_broker_ids():
            listener = image.brokers[broker_id].listeners[0]
            brokers.append({"node_id": broker_id, "host": listener.host, "port": listener.port, "rack": None})
        controller_id = quorum.node.leader_id
        return {"throttle_time_ms": 0, "brokers": brokers, "cluster_id": image.cluster_id or broker.cluster_id,
                "controller_id": controller_id if controller_id is not None else -1, "topics": topics,
                "cluster_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}
    return handle


def handler(broker: Broker) -> Handler:
    if broker.quorum is not None:
        return quorum_handler(broker)

    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        requested = body.get("topics")
        topics: list[dict[str, Any]] = []
        if requested is None:
            topics = [topic_metadata(broker, info) for info in broker.topics.all()]
        else:
            allow_create = body.get("allow_auto_topic_creation", True) and broker.config.auto_create_topics_enable
            for item in requested:
                name = item.get("name")
                info = broker.topics.get(name) if name else None
                if info is None and allow_create and name not in INTERNAL:
                    try:
                        info = broker.create_topic(name, broker.config.num_partitions, 1, {})
                    except TopicError as exc:
                        topics.append({"error_code": exc.error_code, "name": name, "partitions": []})
                        continue
                if info is None:
                    topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "name": name,
                                   "partitions": []})
                else:
                    topics.append(topic_metadata(broker, info))
        host, port = broker.advertised_host_port
        return {"throttle_time_ms": 0, "brokers": [{"node_id": broker.node_id, "host": host, "port": port,
                                                    "rack": None}],
                "cluster_id": broker.cluster_id, "controller_id": broker.node_id, "topics": topics,
                "cluster_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}
    return handle
