"""FindCoordinator (10) v0-2 and InitProducerId (22) v0-1.

FindCoordinator (librdkafka compresses only when this API is advertised): for a group, the leader
of its `__consumer_offsets` partition, `abs(java_string_hashcode(group)) % partitions` (Kafka's
rule; broker/groups/coordinator.py), creating the topic on first use (COORDINATOR_NOT_AVAILABLE
until it exists and the partition has a live leader); COORDINATOR_NOT_AVAILABLE for transaction
coordinators (no transactions).
InitProducerId hands out a fresh producer id (never reissued, see broker/producer_ids.py) with
epoch 0 to idempotent producers; a transactional id is refused (no transactions yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.server import Handler
from client.wire.errors import ErrorCode
from controller.controller_client import ControllerError, ControllerUnavailableError

if TYPE_CHECKING:
    from broker.broker import Broker

KEY_TYPE_GROUP = 0


def find_coordinator_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("key_type", KEY_TYPE_GROUP) != KEY_TYPE_GROUP:
            return {"throttle_time_ms": 0, "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE,
                    "error_message": "transactions are not supported", "node_id": -1, "host": "", "port": -1}
        error, node_id, host, port = await broker.groups.find_coordinator(body["key"])
        return {"throttle_time_ms": 0, "error_code": error,
                "error_message": ErrorCode(error).name if error else None, "node_id": node_id, "host": host,
                "port": port}
    return handle


def init_producer_id_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("transactional_id") is not None:
            return {"throttle_time_ms": 0, "error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    "producer_id": -1, "producer_epoch": -1}
        if broker.quorum is not None:  # blocks allocated by the controller (KIP-730)
            try:
                producer_id = await broker.quorum.allocate_producer_id()
            except (ControllerError, ControllerUnavailableError):
                return {"throttle_time_ms": 0, "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE,
                        "producer_id": -1, "producer_epoch": -1}
        else:
            producer_id = broker.producer_ids.allocate()
        return {"throttle_time_ms": 0, "error_code": 0, "producer_id": producer_id, "producer_epoch": 0}
    return handle
