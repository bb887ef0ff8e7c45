"""The consumer-group APIs, classic protocol (issue 6): request/response shaping only; the logic is
broker/groups/ (state machine + coordinator driver).

Advertised versions: the highest *non-flexible* version of each, as for every other API of this
broker (KAFKA_PROTOCOL.md §1.4 "nonflex", measured with all three clients): JoinGroup 0-5 (v4+ is
the MEMBER_ID_REQUIRED round trip, v5 group.instance.id), SyncGroup 0-3, Heartbeat 0-3,
LeaveGroup 0-3 (v3+ batches members), OffsetCommit 2-7, OffsetFetch 1-5, ListGroups 0-2,
DescribeGroups 0-4, DeleteGroups 0-1. What the clients then send: kcat/librdkafka 2.0.2 and
confluent-kafka (librdkafka 2.16) JoinGroup 5, SyncGroup 3, Heartbeat 3, LeaveGroup 1,
OffsetCommit 7, OffsetFetch 5; kafka-python 3.0 JoinGroup 5, SyncGroup 3, Heartbeat 3,
LeaveGroup 3, OffsetCommit 7, OffsetFetch 5.

| API | key | versions |
|---|---|---|
| OffsetCommit | 8 | 2-7 |
| OffsetFetch | 9 | 1-5 |
| JoinGroup | 11 | 0-5 |
| Heartbeat | 12 | 0-3 |
| LeaveGroup | 13 | 0-3 |
| SyncGroup | 14 | 0-3 |
| DescribeGroups | 15 | 0-4 |
| ListGroups | 16 | 0-2 |
| DeleteGroups | 42 | 0-1 |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.groups.coordinator import OffsetCommitEntry
from broker.groups.state import DEAD, STABLE, JoinRequest
from broker.server import ApiSpec, Handler
from client.wire.errors import ErrorCode

if TYPE_CHECKING:
    from broker.broker import Broker

AUTHORIZED_OPERATIONS_OMITTED = -2147483648
OFFSET_COMMIT_PARTITIONS_MAX = 100_000  # per request; a bigger request is answered with an error per partition


def register(broker: Broker, apis: dict[int, ApiSpec]) -> None:
    apis[8] = ApiSpec(2, 7, offset_commit_handler(broker))
    apis[9] = ApiSpec(1, 5, offset_fetch_handler(broker))
    apis[11] = ApiSpec(0, 5, join_group_handler(broker))
    apis[12] = ApiSpec(0, 3, heartbeat_handler(broker))
    apis[13] = ApiSpec(0, 3, leave_group_handler(broker))
    apis[14] = ApiSpec(0, 3, sync_group_handler(broker))
    apis[15] = ApiSpec(0, 4, describe_groups_handler(broker))
    apis[16] = ApiSpec(0, 2, list_groups_handler(broker))
    apis[42] = ApiSpec(0, 1, delete_groups_handler(broker))


def _client_host(conn: Any) -> str:
    peer = getattr(conn, "peer", "")
    return "/" + peer.rsplit(":", 1)[0] if peer else ""


def join_group_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        version = header.api_version
        client_id = header.client_id or ""
        instance_id = body.get("group_instance_id")
        req = JoinRequest(
            member_id=body["member_id"], group_instance_id=instance_id, client_id=client_id,
            client_host=_client_host(conn), session_timeout_ms=body["session_timeout_ms"],
            rebalance_timeout_ms=body.get("rebalance_timeout_ms", -1) if version >= 1 else -1,
            protocol_type=body["protocol_type"],
            protocols=tuple((p["name"], bytes(p["metadata"])) for p in body["protocols"]),
            require_known_member_id=version >= 4,
            generated_member_id=broker.groups.new_member_id(client_id, instance_id))
        result = await broker.groups.join(body["group_id"], req)
        result["throttle_time_ms"] = 0
        if result["protocol_name"] is None:  # nullable only from v7
            result["protocol_name"] = ""
        return result
    return handle


def sync_group_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        assignments = [(a["member_id"], bytes(a["assignment"])) for a in body["assignments"]]
        result = await broker.groups.sync(body["group_id"], body["member_id"], body.get("group_instance_id"),
                                          body["generation_id"], body.get("protocol_type"),
                                          body.get("protocol_name"), assignments)
        result["throttle_time_ms"] = 0
        return result
    return handle


def heartbeat_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        error = broker.groups.heartbeat(body["group_id"], body["member_id"], body.get("group_instance_id"),
                                        body["generation_id"])
        return {"throttle_time_ms": 0, "error_code": error}
    return handle


def leave_group_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        version = header.api_version
        if version < 3:
            leaving = [(body["member_id"], None)]
        else:
            leaving = [(m["member_id"], m.get("group_instance_id")) for m in body["members"]]
        error, errors = broker.groups.leave(body["group_id"], leaving)
        if version < 3:
            return {"throttle_time_ms": 0, "error_code": error or errors[0], "members": []}
        members = [{"member_id": member_id, "group_instance_id": instance_id, "error_code": e}
                   for (member_id, instance_id), e in zip(leaving, errors)]
        return {"throttle_time_ms": 0, "error_code": error, "members": members}
    return handle


def _partition_exists(broker: Broker, topic: str, index: int) -> bool:
    info = broker.topics.get(topic)
    return info is not None and 0 <= index < info.partitions


def offset_commit_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        entries: list[OffsetCommitEntry] = []
        slots: list[dict[str, Any]] = []
        total = sum(len(t["partitions"]) for t in body["topics"])
        for topic in body["topics"]:
            parts = []
            for p in topic["partitions"]:
                index = p["partition_index"]
                row = {"partition_index": index, "error_code": ErrorCode.NONE}
                parts.append(row)
                if total > OFFSET_COMMIT_PARTITIONS_MAX:
                    row["error_code"] = ErrorCode.INVALID_COMMIT_OFFSET_SIZE
                elif not _partition_exists(broker, topic["name"], index):
                    row["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                else:
                    entries.append(OffsetCommitEntry(topic["name"], index, p["committed_offset"],
                                                     p.get("committed_leader_epoch", -1), p["committed_metadata"]))
                    slots.append(row)
            results.append({"name": topic["name"], "partitions": parts})
        if entries:
            errors = await broker.groups.commit(body["group_id"], body["member_id"], body.get("group_instance_id"),
                                                body["generation_id_or_member_epoch"], entries)
            for row, error in zip(slots, errors):
                row["error_code"] = error
        return {"throttle_time_ms": 0, "topics": results}
    return handle


def offset_fetch_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        requested = body.get("topics")
        wanted = None if requested is None else [(t["name"], list(t["partition_indexes"])) for t in requested]
        error, rows = broker.groups.fetch_offsets(body["group_id"], wanted)
        if error:  # v1 has no top-level error: it goes on every partition too
            rows = [(name, [(i, -1, -1, "") for i in indexes]) for name, indexes in (wanted or [])]
        topics = [{"name": name, "partitions": [
            {"partition_index": index, "committed_offset": offset, "committed_leader_epoch": epoch,
             "metadata": metadata, "error_code": error} for index, offset, epoch, metadata in parts]}
            for name, parts in rows]
        return {"throttle_time_ms": 0, "topics": topics, "error_code": error}
    return handle


def list_groups_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        error, groups = broker.groups.list_groups()
        return {"throttle_time_ms": 0, "error_code": error, "groups": [
            {"group_id": g.group_id, "protocol_type": g.protocol_type or "", "group_state": g.state,
             "group_type": "classic"} for g in groups]}
    return handle


def _described(group_id: str, error: int, group: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"error_code": error, "error_message": None, "group_id": group_id, "group_state": "",
                           "protocol_type": "", "protocol_data": "", "members": [],
                           "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}
    if error:
        return out
    if group is None:
        out["group_state"] = DEAD
        return out
    stable = group.state == STABLE
    out["group_state"] = group.state
    out["protocol_type"] = group.protocol_type or ""
    out["protocol_data"] = (group.protocol_name or "") if stable else ""
    out["members"] = [{
        "member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
        "client_host": m.client_host,
        # Kafka's GroupMetadata.summary: metadata and assignments only while Stable
        "member_metadata": m.metadata_for(group.protocol_name) if stable else b"",
        "member_assignment": m.assignment if stable else b""} for m in group.members.values()]
    return out


def describe_groups_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        described = []
        for group_id in body["groups"]:
            error, group = broker.groups.describe(group_id)
            described.append(_described(group_id, error, group))
        return {"throttle_time_ms": 0, "groups": described}
    return handle


def delete_groups_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        for group_id in body["groups_names"]:
            results.append({"group_id": group_id, "error_code": await broker.groups.delete(group_id)})
        return {"throttle_time_ms": 0, "results": results}
    return handle
