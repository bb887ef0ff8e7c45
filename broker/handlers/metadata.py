"""Metadata (3), v4-8: this broker, and every requested topic with its partitions led here.

Unknown topics are auto-created when the request allows it and `auto.create.topics.enable` is on
(Kafka's behaviour), with `num.partitions` partitions; an invalid name gets INVALID_TOPIC_EXCEPTION.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.server import Handler
from broker.topic_store import TopicError, TopicInfo
from client.wire.errors import ErrorCode

if TYPE_CHECKING:
    from broker.broker import Broker

AUTHORIZED_OPERATIONS_OMITTED = -2147483648


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
    return {"error_code": 0, "name": info.name, "is_internal": False, "partitions": partitions,
            "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}


def handler(broker: Broker) -> Handler:
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
                if info is None and allow_create:
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
