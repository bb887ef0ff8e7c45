"""Raw group-protocol requests for the group tests (tests/broker/test_groups_*.py, tests/cluster/test_groups_*.py).

Every helper speaks the versions real clients use against this broker (the highest advertised
non-flexible ones: JoinGroup 5, SyncGroup 3, Heartbeat 3, LeaveGroup 3, OffsetCommit 7,
OffsetFetch 5, FindCoordinator 2). `retry` repeats a request while the answer is a retriable
coordinator error (the coordinator is loading or moving), with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from test_protocol_helpers import KafkaConnection

from client.wire.errors import ErrorCode

API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_JOIN_GROUP = 11
API_HEARTBEAT = 12
API_LEAVE_GROUP = 13
API_SYNC_GROUP = 14
API_DESCRIBE_GROUPS = 15
API_LIST_GROUPS = 16
API_DELETE_GROUPS = 42

JOIN_V = 5
SYNC_V = 3
HEARTBEAT_V = 3
LEAVE_V = 3
COMMIT_V = 7
FETCH_V = 5
FIND_V = 2

RETRIABLE = (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NOT_COORDINATOR)
RETRY_DEADLINE_S = 20.0
RETRY_PAUSE_S = 0.05  # the pause between two attempts of a retried request (a client's retry backoff)
PROTOCOLS = [{"name": "range", "metadata": b"\x00\x01sub"}, {"name": "roundrobin", "metadata": b"rr"}]


def retry(call: Callable[[], dict[str, Any]], error_of: Callable[[dict[str, Any]], int] = lambda b: b["error_code"],
          deadline_s: float = RETRY_DEADLINE_S) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        body = call()
        if error_of(body) not in RETRIABLE or time.monotonic() > deadline:
            return body
        time.sleep(RETRY_PAUSE_S)


def find_coordinator(conn: KafkaConnection, group: str) -> dict[str, Any]:
    return retry(lambda: conn.request(API_FIND_COORDINATOR, FIND_V, {"key": group, "key_type": 0}))


def join_body(group: str, member_id: str = "", *, session_ms: int = 10_000, rebalance_ms: int = 10_000,
              instance_id: str | None = None, protocols: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"group_id": group, "session_timeout_ms": session_ms, "rebalance_timeout_ms": rebalance_ms,
            "member_id": member_id, "group_instance_id": instance_id, "protocol_type": "consumer",
            "protocols": PROTOCOLS if protocols is None else protocols}


def join(conn: KafkaConnection, group: str, member_id: str = "", **kwargs: Any) -> dict[str, Any]:
    return conn.request(API_JOIN_GROUP, JOIN_V, join_body(group, member_id, **kwargs))


def join_new(conn: KafkaConnection, group: str, **kwargs: Any) -> dict[str, Any]:
    """JoinGroup with the MEMBER_ID_REQUIRED round trip (returns the second answer)."""
    first = retry(lambda: join(conn, group, **kwargs))
    assert first["error_code"] == ErrorCode.MEMBER_ID_REQUIRED, first
    assert first["member_id"]
    return join(conn, group, first["member_id"], **kwargs)


def sync(conn: KafkaConnection, group: str, member_id: str, generation: int,
         assignments: dict[str, bytes] | None = None) -> dict[str, Any]:
    return conn.request(API_SYNC_GROUP, SYNC_V, sync_body(group, member_id, generation, assignments))


def sync_body(group: str, member_id: str, generation: int,
              assignments: dict[str, bytes] | None = None) -> dict[str, Any]:
    return {"group_id": group, "generation_id": generation, "member_id": member_id, "group_instance_id": None,
            "assignments": [{"member_id": m, "assignment": a} for m, a in (assignments or {}).items()]}


def heartbeat(conn: KafkaConnection, group: str, member_id: str, generation: int) -> int:
    body = conn.request(API_HEARTBEAT, HEARTBEAT_V, {"group_id": group, "generation_id": generation,
                                                     "member_id": member_id, "group_instance_id": None})
    return int(body["error_code"])


def leave(conn: KafkaConnection, group: str, *member_ids: str) -> dict[str, Any]:
    return conn.request(API_LEAVE_GROUP, LEAVE_V, {"group_id": group, "members": [
        {"member_id": m, "group_instance_id": None} for m in member_ids]})


def commit(conn: KafkaConnection, group: str, member_id: str, generation: int, offsets: dict[tuple[str, int], int],
           metadata: str | None = "", version: int = COMMIT_V) -> dict[tuple[str, int], int]:
    topics: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), offset in offsets.items():
        topics.setdefault(topic, []).append({"partition_index": partition, "committed_offset": offset,
                                             "committed_leader_epoch": -1, "committed_metadata": metadata})
    body = conn.request(API_OFFSET_COMMIT, version, {
        "group_id": group, "generation_id_or_member_epoch": generation, "member_id": member_id,
        "group_instance_id": None, "retention_time_ms": -1,
        "topics": [{"name": t, "partitions": parts} for t, parts in topics.items()]})
    return {(t["name"], p["partition_index"]): p["error_code"] for t in body["topics"] for p in t["partitions"]}


def fetch_offsets(conn: KafkaConnection, group: str, wanted: dict[str, list[int]] | None,
                  version: int = FETCH_V) -> dict[str, Any]:
    topics = None if wanted is None else [{"name": t, "partition_indexes": ps} for t, ps in wanted.items()]
    return conn.request(API_OFFSET_FETCH, version, {"group_id": group, "topics": topics, "require_stable": False})


def committed(body: dict[str, Any]) -> dict[tuple[str, int], int]:
    return {(t["name"], p["partition_index"]): p["committed_offset"] for t in body["topics"] for p in t["partitions"]}


def stable_pair(conn_a: KafkaConnection, conn_b: KafkaConnection, group: str,
                **kwargs: Any) -> tuple[str, str, int]:
    """Two members in one Stable generation (A leads): the full join and sync round over the wire."""
    a = join_new(conn_a, group, **kwargs)
    assert a["error_code"] == 0 and a["leader"] == a["member_id"], a
    member_a = a["member_id"]
    first_b = join(conn_b, group, **kwargs)
    assert first_b["error_code"] == ErrorCode.MEMBER_ID_REQUIRED, first_b
    member_b = first_b["member_id"]
    cid_b = conn_b.send(API_JOIN_GROUP, JOIN_V, join_body(group, member_b, **kwargs))  # waits for the rebalance
    deadline = time.monotonic() + RETRY_DEADLINE_S
    while heartbeat(conn_a, group, member_a, a["generation_id"]) != ErrorCode.REBALANCE_IN_PROGRESS:
        # B's second JoinGroup is on its way (another connection); each heartbeat is a round trip
        assert time.monotonic() < deadline, "B's JoinGroup never started a rebalance"
    ja = join(conn_a, group, member_a, **kwargs)
    jb = conn_b.recv(API_JOIN_GROUP, JOIN_V, cid_b)
    assert ja["error_code"] == jb["error_code"] == 0, (ja, jb)
    generation = ja["generation_id"]
    assert jb["generation_id"] == generation == a["generation_id"] + 1
    assert ja["leader"] == jb["leader"] == member_a
    assert {m["member_id"] for m in ja["members"]} == {member_a, member_b} and jb["members"] == []
    cid_sb = conn_b.send(API_SYNC_GROUP, SYNC_V, sync_body(group, member_b, generation))
    sa = sync(conn_a, group, member_a, generation, {member_a: b"assign-a", member_b: b"assign-b"})
    sb = conn_b.recv(API_SYNC_GROUP, SYNC_V, cid_sb)
    assert sa["error_code"] == 0 and sa["assignment"] == b"assign-a", sa
    assert sb["error_code"] == 0 and sb["assignment"] == b"assign-b", sb
    return member_a, member_b, generation
