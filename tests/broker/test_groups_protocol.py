"""Consumer groups over the wire: raw requests (tests/broker/groups_helpers.py) against a brokerd process.

The module's broker runs with `group.initial.rebalance.delay.ms=0` (a first generation without
waiting) and `group.min.session.timeout.ms=500` (session expiry within a test's time budget).
Each test uses its own group and topic names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from brokerproc import BrokerProcess, free_port
from groups_helpers import (
    API_DELETE_GROUPS,
    API_DESCRIBE_GROUPS,
    API_JOIN_GROUP,
    API_LIST_GROUPS,
    JOIN_V,
    commit,
    committed,
    fetch_offsets,
    find_coordinator,
    heartbeat,
    join,
    join_body,
    leave,
    retry,
    stable_pair,
    sync,
)
from test_protocol_helpers import (
    API_METADATA,
    METADATA_V,
    KafkaConnection,
    assert_clean_log,
    create_topic,
    unique_topic,
)

from client.wire.errors import ErrorCode

GROUP_SETTINGS = ["--set", "group.initial.rebalance.delay.ms=0", "--set", "group.min.session.timeout.ms=500"]
SESSION_SHORT_MS = 600
EVICTION_DEADLINE_S = 10.0
HEARTBEAT_INTERVAL_S = 0.05  # member A's heartbeat pace while it waits for B's eviction


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("groups-broker")
    proc = BrokerProcess(str(base / "data"), free_port(), list(GROUP_SETTINGS))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_clean_log(proc)


@pytest.fixture
def conns(group_broker: BrokerProcess) -> Iterator[tuple[KafkaConnection, KafkaConnection]]:
    with KafkaConnection(group_broker.bootstrap) as a, KafkaConnection(group_broker.bootstrap) as b:
        yield a, b


def _group() -> str:
    return unique_topic("group")


def _ready(conn: KafkaConnection, group: str) -> None:
    body = find_coordinator(conn, group)
    assert body["error_code"] == 0, body


def test_find_coordinator_creates_the_internal_topic(group_broker: BrokerProcess,
                                                     conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    conn, _ = conns
    body = find_coordinator(conn, _group())
    assert body["error_code"] == 0 and body["node_id"] == 1 and body["port"] == group_broker.port
    meta = conn.request(API_METADATA, METADATA_V, {"topics": [{"name": "__consumer_offsets"}],
                                                   "allow_auto_topic_creation": False,
                                                   "include_cluster_authorized_operations": False,
                                                   "include_topic_authorized_operations": False})
    (topic,) = meta["topics"]
    assert topic["error_code"] == 0 and topic["is_internal"] is True and len(topic["partitions"]) == 10
    assert conn.request(10, 2, {"key": "", "key_type": 0})["error_code"] == ErrorCode.INVALID_REQUEST


def test_full_join_and_sync_round_with_two_members(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, b = conns
    group = _group()
    _ready(a, group)
    member_a, member_b, generation = stable_pair(a, b, group)
    assert heartbeat(a, group, member_a, generation) == 0
    assert heartbeat(b, group, member_b, generation) == 0
    described = a.request(API_DESCRIBE_GROUPS, 4, {"groups": [group], "include_authorized_operations": False})
    (g,) = described["groups"]
    assert g["error_code"] == 0 and g["group_state"] == "Stable" and g["protocol_type"] == "consumer"
    assert g["protocol_data"] == "range"
    assert {m["member_id"]: m["member_assignment"] for m in g["members"]} == {member_a: b"assign-a",
                                                                            member_b: b"assign-b"}
    assert all(m["member_metadata"] == b"\x00\x01sub" and m["client_host"] == "/127.0.0.1" for m in g["members"])


def test_stale_generation_and_unknown_member(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, b = conns
    group = _group()
    topic = unique_topic()
    create_topic(a, topic, 2)
    _ready(a, group)
    member_a, member_b, generation = stable_pair(a, b, group)
    # ILLEGAL_GENERATION for a stale generation
    assert heartbeat(a, group, member_a, generation - 1) == ErrorCode.ILLEGAL_GENERATION
    assert commit(a, group, member_a, generation - 1, {(topic, 0): 5}) == {(topic, 0): ErrorCode.ILLEGAL_GENERATION}
    assert sync(a, group, member_a, generation + 1)["error_code"] == ErrorCode.ILLEGAL_GENERATION
    # UNKNOWN_MEMBER_ID for a member the group does not have
    assert heartbeat(a, group, "stranger", generation) == ErrorCode.UNKNOWN_MEMBER_ID
    assert commit(a, group, "stranger", generation, {(topic, 0): 5}) == {(topic, 0): ErrorCode.UNKNOWN_MEMBER_ID}
    assert sync(a, group, "stranger", generation)["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert join(a, group, "stranger")["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert heartbeat(a, unique_topic("no-such-group"), "m", 1) == ErrorCode.UNKNOWN_MEMBER_ID
    left = leave(a, group, "stranger")
    assert left["error_code"] == 0 and left["members"][0]["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    # nothing above disturbed the group
    assert heartbeat(b, group, member_b, generation) == 0


def test_commit_and_fetch_offsets(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, b = conns
    group = _group()
    topic = unique_topic()
    create_topic(a, topic, 3)
    _ready(a, group)
    member_a, _member_b, generation = stable_pair(a, b, group)
    errors = commit(a, group, member_a, generation, {(topic, 0): 10, (topic, 1): 20}, metadata="m")
    assert errors == {(topic, 0): 0, (topic, 1): 0}
    assert commit(a, group, member_a, generation, {(topic, 1): 21}, version=2) == {(topic, 1): 0}
    body = fetch_offsets(a, group, {topic: [0, 1, 2]})
    assert body["error_code"] == 0
    assert committed(body) == {(topic, 0): 10, (topic, 1): 21, (topic, 2): -1}
    assert {p["partition_index"]: p["metadata"] for p in body["topics"][0]["partitions"]}[0] == "m"
    assert committed(fetch_offsets(a, group, None)) == {(topic, 0): 10, (topic, 1): 21}  # all (v2+)
    assert committed(fetch_offsets(a, group, {topic: [0]}, version=1)) == {(topic, 0): 10}
    # bad input per partition
    missing = unique_topic("missing")
    unknown = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert commit(a, group, member_a, generation, {(missing, 0): 1}) == {(missing, 0): unknown}
    assert commit(a, group, member_a, generation, {(topic, 7): 1}) == {(topic, 7): unknown}
    assert commit(a, group, member_a, generation, {(topic, 2): 1}, metadata="x" * 5000) == {
        (topic, 2): ErrorCode.OFFSET_METADATA_TOO_LARGE}
    # an unknown group has no offsets, and no error
    assert committed(fetch_offsets(a, unique_topic("nobody"), {topic: [0]})) == {(topic, 0): -1}


def test_standalone_commit_without_membership(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, _ = conns
    group = _group()
    topic = unique_topic()
    create_topic(a, topic, 1)
    _ready(a, group)
    assert retry(lambda: {"error_code": commit(a, group, "", -1, {(topic, 0): 7})[(topic, 0)]})["error_code"] == 0
    assert committed(fetch_offsets(a, group, {topic: [0]})) == {(topic, 0): 7}
    listed = a.request(API_LIST_GROUPS, 2, {})
    assert {(g["group_id"], g["protocol_type"]) for g in listed["groups"]} >= {(group, "")}


def test_list_describe_and_delete(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, b = conns
    group = _group()
    topic = unique_topic()
    create_topic(a, topic, 1)
    _ready(a, group)
    member_a, member_b, generation = stable_pair(a, b, group)
    assert commit(a, group, member_a, generation, {(topic, 0): 3}) == {(topic, 0): 0}
    listed = a.request(API_LIST_GROUPS, 2, {})
    assert listed["error_code"] == 0
    assert {(g["group_id"], g["protocol_type"]) for g in listed["groups"]} >= {(group, "consumer")}
    deleted = a.request(API_DELETE_GROUPS, 1, {"groups_names": [group]})
    assert deleted["results"] == [{"group_id": group, "error_code": ErrorCode.NON_EMPTY_GROUP}]
    assert leave(a, group, member_a, member_b)["members"][1]["error_code"] == 0
    (g,) = a.request(API_DESCRIBE_GROUPS, 4, {"groups": [group], "include_authorized_operations": False})["groups"]
    assert g["group_state"] == "Empty" and g["members"] == []
    deleted = a.request(API_DELETE_GROUPS, 1, {"groups_names": [group, unique_topic("none")]})
    assert [r["error_code"] for r in deleted["results"]] == [0, ErrorCode.GROUP_ID_NOT_FOUND]
    (g,) = a.request(API_DESCRIBE_GROUPS, 0, {"groups": [group]})["groups"]
    assert g["error_code"] == 0 and g["group_state"] == "Dead"
    assert committed(fetch_offsets(a, group, {topic: [0]})) == {(topic, 0): -1}
    assert group not in {x["group_id"] for x in a.request(API_LIST_GROUPS, 2, {})["groups"]}


def test_join_group_v0_and_static_members(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, _ = conns
    group = _group()
    _ready(a, group)
    body = retry(lambda: a.request(API_JOIN_GROUP, 0, join_body(group)))  # v0: an id at once, no rebalance timeout
    assert body["error_code"] == 0 and body["member_id"] and body["generation_id"] == 1
    group = _group()
    _ready(a, group)
    first = retry(lambda: join(a, group, instance_id="instance-1"))  # static: no MEMBER_ID_REQUIRED
    assert first["error_code"] == 0 and first["members"][0]["group_instance_id"] == "instance-1"
    again = join(a, group, instance_id="instance-1")  # the same instance restarted: the old id is fenced
    assert again["error_code"] == 0 and again["member_id"] != first["member_id"]
    assert again["generation_id"] == first["generation_id"] + 1
    assert a.request(12, 3, {"group_id": group, "generation_id": again["generation_id"],
                             "member_id": first["member_id"],
                             "group_instance_id": "instance-1"})["error_code"] == ErrorCode.FENCED_INSTANCE_ID


def test_bad_join_requests(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, _ = conns
    group = _group()
    _ready(a, group)
    assert retry(lambda: join(a, group, session_ms=100))["error_code"] == ErrorCode.INVALID_SESSION_TIMEOUT
    assert join(a, group, protocols=[])["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    huge = [{"name": "range", "metadata": b"x" * (65 << 10)}]
    assert join(a, group, protocols=huge)["error_code"] == ErrorCode.INVALID_REQUEST
    assert join(a, "")["error_code"] == ErrorCode.INVALID_GROUP_ID


def test_a_silent_member_is_evicted_and_the_group_rebalances(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, b = conns
    group = _group()
    _ready(a, group)
    member_a, member_b, generation = stable_pair(a, b, group, session_ms=SESSION_SHORT_MS)
    started = time.monotonic()
    while heartbeat(a, group, member_a, generation) != ErrorCode.REBALANCE_IN_PROGRESS:  # B stays silent
        assert time.monotonic() - started < EVICTION_DEADLINE_S, "the silent member was never evicted"
        time.sleep(HEARTBEAT_INTERVAL_S)
    assert time.monotonic() - started >= SESSION_SHORT_MS / 1000 * 0.5
    again = join(a, group, member_a, session_ms=SESSION_SHORT_MS)
    assert again["generation_id"] == generation + 1
    assert [m["member_id"] for m in again["members"]] == [member_a]
    assert heartbeat(b, group, member_b, generation) == ErrorCode.UNKNOWN_MEMBER_ID


def test_committed_offsets_and_generation_survive_a_restart(start_broker) -> None:
    data_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), unique_topic("restart"))
    proc = start_broker(*GROUP_SETTINGS, data_dir=data_dir)
    group = _group()
    topic = unique_topic()
    with KafkaConnection(proc.bootstrap) as a, KafkaConnection(proc.bootstrap) as b:
        create_topic(a, topic, 2)
        _ready(a, group)
        member_a, member_b, generation = stable_pair(a, b, group)
        assert commit(a, group, member_a, generation, {(topic, 0): 11, (topic, 1): 22}) == {(topic, 0): 0,
                                                                                         (topic, 1): 0}
    proc.restart()
    with KafkaConnection(proc.bootstrap) as a:
        _ready(a, group)
        body = retry(lambda: fetch_offsets(a, group, {topic: [0, 1]}))
        assert committed(body) == {(topic, 0): 11, (topic, 1): 22}
        assert heartbeat(a, group, member_b, generation) == 0  # the Stable generation was reloaded
        assert leave(a, group, member_b)["members"][0]["error_code"] == 0
        rejoined = join(a, group, member_a)  # B left: A alone in a new, higher generation
        assert rejoined["error_code"] == 0 and rejoined["generation_id"] > generation
    assert_clean_log(proc)


def test_join_waiting_for_a_rebalance_is_answered_on_leave(conns: tuple[KafkaConnection, KafkaConnection]) -> None:
    a, b = conns
    group = _group()
    _ready(a, group)
    member_a, member_b, generation = stable_pair(a, b, group)
    cid = a.send(API_JOIN_GROUP, JOIN_V, join_body(group, member_a))  # leader rejoins: waits for B
    assert leave(b, group, member_b)["members"][0]["error_code"] == 0  # B leaves: A's join completes
    body = a.recv(API_JOIN_GROUP, JOIN_V, cid)
    assert body["error_code"] == 0 and body["generation_id"] == generation + 1
    assert [m["member_id"] for m in body["members"]] == [member_a]
