"""Group coordinator failover on three combined `brokerd --quorum` processes (tests/clusterproc.py).

`kill -9` of the broker that coordinates a group (the leader of the group's `__consumer_offsets`
partition, RF 3 = min(3, voters)): FindCoordinator on a survivor names the new leader of that
partition; the group's committed offsets are all there (they were acknowledged only once below
the high watermark of an RF-3 partition); the Stable generation is reloaded (the surviving
member's heartbeat with it is accepted), and the next rebalance gives a higher generation; new
commits are acknowledged by the new coordinator.

Raw requests (tests/broker/groups_helpers.py); every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "broker"))

from clusterproc import Cluster
from groups_helpers import (
    RETRIABLE,
    commit,
    committed,
    fetch_offsets,
    find_coordinator,
    heartbeat,
    join,
    retry,
    stable_pair,
    sync,
    sync_body,
)
from test_protocol_helpers import API_CREATE_TOPICS, CREATE_TOPICS_V, KafkaConnection, unique_topic

from client.wire.errors import ErrorCode

MOVE_DEADLINE_S = 30.0
POLL_S = 0.05


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(str(tmp_path), nodes=3, extra_args=["--set", "group.initial.rebalance.delay.ms=0"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _create(conn: KafkaConnection, topic: str) -> None:
    body = conn.request(API_CREATE_TOPICS, CREATE_TOPICS_V, {"topics": [{
        "name": topic, "num_partitions": 3, "replication_factor": 3, "configs": []}], "timeout_ms": 10_000})
    assert body["topics"][0]["error_code"] == 0, body


def _coordinator(cluster: Cluster, group: str, not_node: int | None = None) -> int:
    """The coordinator a live broker names for `group` (polled until it is not `not_node`)."""
    deadline = time.monotonic() + MOVE_DEADLINE_S
    while True:
        for node_id in cluster.alive():
            try:
                with KafkaConnection(cluster.bootstrap(node_id), timeout_s=5) as conn:
                    body = find_coordinator(conn, group)
            except OSError:
                continue
            if body["error_code"] == 0 and body["node_id"] != not_node and body["node_id"] in cluster.alive():
                return int(body["node_id"])
        assert time.monotonic() < deadline, f"no coordinator other than {not_node} for {group}"
        time.sleep(POLL_S)


def test_kill9_of_the_coordinator_moves_the_group_and_keeps_its_offsets(cluster: Cluster) -> None:
    group, topic = unique_topic("group"), unique_topic()
    with KafkaConnection(cluster.bootstrap(1)) as conn:
        _create(conn, topic)
    old = _coordinator(cluster, group)
    offsets = {(topic, p): 100 + p for p in range(3)}
    with KafkaConnection(cluster.bootstrap(old)) as a, KafkaConnection(cluster.bootstrap(old)) as b:
        member_a, member_b, generation = stable_pair(a, b, group)
        errors = retry(lambda: {"error_code": max(commit(a, group, member_a, generation, offsets).values())})
        assert errors["error_code"] == 0
        assert heartbeat(b, group, member_b, generation) == 0
    cluster.kill(old)

    new = _coordinator(cluster, group, not_node=old)
    with KafkaConnection(cluster.bootstrap(new)) as a, KafkaConnection(cluster.bootstrap(new)) as b:
        body = retry(lambda: fetch_offsets(a, group, {topic: [0, 1, 2]}), deadline_s=MOVE_DEADLINE_S)
        assert body["error_code"] == 0, body
        assert committed(body) == offsets  # nothing committed is lost
        # the Stable generation came along: members keep heartbeating with it
        assert retry(lambda: {"error_code": heartbeat(b, group, member_b, generation)})["error_code"] == 0
        # the leader rejoins: a rebalance, and the generation keeps increasing
        cid = a.send(11, 5, {"group_id": group, "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000,
                             "member_id": member_a, "group_instance_id": None, "protocol_type": "consumer",
                             "protocols": [{"name": "range", "metadata": b"\x00\x01sub"},
                                           {"name": "roundrobin", "metadata": b"rr"}]})
        deadline = time.monotonic() + MOVE_DEADLINE_S
        while heartbeat(b, group, member_b, generation) != ErrorCode.REBALANCE_IN_PROGRESS:
            assert time.monotonic() < deadline, "the leader's JoinGroup did not start a rebalance"
        jb = join(b, group, member_b)
        ja = a.recv(11, 5, cid, timeout_s=MOVE_DEADLINE_S)
        assert ja["error_code"] == jb["error_code"] == 0, (ja, jb)
        assert ja["generation_id"] == jb["generation_id"] > generation
        new_generation = ja["generation_id"]
        cid = b.send(14, 3, sync_body(group, member_b, new_generation))
        assert sync(a, group, member_a, new_generation, {member_a: b"a", member_b: b"b"})["error_code"] == 0
        assert b.recv(14, 3, cid, timeout_s=MOVE_DEADLINE_S)["assignment"] == b"b"
        # commits in the new generation are acknowledged by the new coordinator (RF 3, one replica down)
        more = {(topic, 0): 200}
        deadline = time.monotonic() + MOVE_DEADLINE_S
        while (error := commit(a, group, member_a, new_generation, more)[(topic, 0)]) in RETRIABLE:
            assert time.monotonic() < deadline, ErrorCode(error).name
            time.sleep(POLL_S)
        assert error == 0
        assert committed(fetch_offsets(a, group, {topic: [0, 1, 2]})) == {**offsets, **more}
    for node_id in cluster.alive():
        text = cluster.nodes[node_id].log_text()
        assert "Traceback" not in text, text[-4000:]
        assert "__consumer_offsets" in text
