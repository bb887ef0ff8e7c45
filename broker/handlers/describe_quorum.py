"""DescribeQuorum (55) v0-2: the metadata quorum as the active controller sees it.

Only the metadata log partition `__cluster_metadata`-0 exists; any other requested partition
gets UNKNOWN_TOPIC_OR_PARTITION. Every broker serves it (Kafka brokers forward it to the active
controller): the answer comes from the local ControllerService when this node is the active
controller, else from the active controller over the controller RPC (`describe_quorum` op, a
short-lived ControllerClient bounded by FORWARD_DEADLINE_S). If no active controller answers in
time, the partition gets NOT_LEADER_OR_FOLLOWER with the leader id and epoch this node knows,
as Kafka's non-leaders answer. Registered only in quorum mode (broker.quorum is not None).

Offsets are Raft indexes (a log end offset is the last index, the high watermark the commit
index: docs/raft.md); timestamps are the active controller's wall clock in ms, -1 unknown.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from broker.server import Handler
from client.wire.errors import ErrorCode
from controller.controller_client import ControllerClient, ControllerError, ControllerUnavailableError
from controller.service import ControllerTimeoutError, NotControllerError

if TYPE_CHECKING:
    from broker.broker import Broker

METADATA_TOPIC = "__cluster_metadata"
FORWARD_DEADLINE_S = 5.0
CONTROLLER_LISTENER_NAME = "CONTROLLER"


def _replicas(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"replica_id": r["id"], "log_end_offset": r["log_end_offset"],
             "last_fetch_timestamp": r.get("last_fetch_timestamp", -1),
             "last_caught_up_timestamp": r.get("last_caught_up_timestamp", -1)} for r in items]


async def _view(broker: Broker) -> dict[str, Any] | None:
    quorum = broker.quorum
    assert quorum is not None
    if quorum.service.is_active:
        with contextlib.suppress(NotControllerError, ControllerTimeoutError):
            return quorum.service.describe_quorum()
    client = ControllerClient(quorum.client.voters, client_id=f"broker-{broker.node_id}-describe-quorum")
    try:
        return await client.describe_quorum(deadline_s=FORWARD_DEADLINE_S)
    except (ControllerUnavailableError, ControllerError, OSError):
        return None
    finally:
        await client.close()


def handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        quorum = broker.quorum
        assert quorum is not None
        wanted = [(t["topic_name"], p["partition_index"]) for t in body.get("topics") or []
                  for p in t.get("partitions") or []]
        view = await _view(broker) if (METADATA_TOPIC, 0) in wanted else None
        topics: dict[str, list[dict[str, Any]]] = {}
        for name, index in wanted:
            part: dict[str, Any] = {"partition_index": index, "error_code": ErrorCode.NONE, "error_message": None,
                                    "leader_id": -1, "leader_epoch": -1, "high_watermark": -1,
                                    "current_voters": [], "observers": []}
            if (name, index) != (METADATA_TOPIC, 0):
                part["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif view is None:
                node = quorum.node
                part.update(error_code=ErrorCode.NOT_LEADER_OR_FOLLOWER, leader_id=node.leader_id or -1,
                            leader_epoch=node.term, error_message="no active controller answered")
            else:
                part.update(leader_id=view["leader"], leader_epoch=view["epoch"],
                            high_watermark=view["high_watermark"], current_voters=_replicas(view["voters"]),
                            observers=_replicas(view.get("observers", [])))
            topics.setdefault(name, []).append(part)
        nodes = [] if view is None else [
            {"node_id": v["id"],
             "listeners": [{"name": CONTROLLER_LISTENER_NAME, "host": v["host"], "port": v["port"]}]}
            for v in view.get("voter_endpoints", [])]
        return {"error_code": ErrorCode.NONE, "error_message": None,
                "topics": [{"topic_name": n, "partitions": ps} for n, ps in topics.items()], "nodes": nodes}
    return handle
