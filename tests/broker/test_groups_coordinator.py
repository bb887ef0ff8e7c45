"""The group coordinator's driver (broker/groups/coordinator.py) on an in-process broker: role changes
of a `__consumer_offsets` partition (unload: waiting requests answered NOT_COORDINATOR; load under a
new leader epoch: groups and offsets rebuilt from the log), offsets retention, placement.

The broker runs in single-node mode (`metadata.quorum.enable=false`), where nothing but the test
changes a partition's role; the requests go over a real socket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from groups_helpers import (
    API_JOIN_GROUP,
    API_LIST_GROUPS,
    API_OFFSET_COMMIT,
    COMMIT_V,
    JOIN_V,
    commit,
    committed,
    fetch_offsets,
    find_coordinator,
    heartbeat,
    join,
    join_body,
    retry,
    stable_pair,
)
from test_protocol_helpers import InProcessBroker, KafkaConnection, create_topic, unique_topic

from broker.groups.coordinator import OFFSETS_TOPIC, java_string_hashcode, partition_for
from client.wire.errors import ErrorCode

DAY_MS = 24 * 3600 * 1000
COMMIT_TIMEOUT_MS = 1_000
APPEND_DEADLINE_S = 10.0


@pytest.fixture
def node(tmp_path: Any) -> Iterator[InProcessBroker]:
    broker = InProcessBroker(str(tmp_path / "data"), **{"metadata.quorum.enable": "false",
                                                         "group.initial.rebalance.delay.ms": "0",
                                                         "offsets.commit.timeout.ms": str(COMMIT_TIMEOUT_MS)})
    try:
        yield broker
    finally:
        broker.stop()


def _partition_of(node: InProcessBroker, group: str) -> Any:
    return node.call(lambda b: b.partitions[(OFFSETS_TOPIC, b.groups.partition_for(group))])


def _demote(broker: Any, tp: tuple[str, int]) -> None:
    partition = broker.partitions[tp]
    partition.make_follower(-1, partition.leader_epoch, partition.partition_epoch, (1,), (1,))
    broker.role_changed(partition)


def _promote(broker: Any, tp: tuple[str, int]) -> None:
    partition = broker.partitions[tp]
    partition.make_leader(partition.leader_epoch + 1, partition.partition_epoch, (1,), (1,), int(time.time() * 1000))
    broker.role_changed(partition)


def test_java_hashcode_placement() -> None:
    # values of Java's String.hashCode
    assert java_string_hashcode("") == 0
    assert java_string_hashcode("hello") == 99162322
    assert java_string_hashcode("Hello World") == -862545276
    assert java_string_hashcode("polygenelubricants") == -(1 << 31)  # Integer.MIN_VALUE
    assert java_string_hashcode("ß€") == 223 * 31 + 8364  # UTF-16 code units
    assert java_string_hashcode("\U0001F600") == 0xD83D * 31 + 0xDE00  # a surrogate pair
    assert partition_for("Hello World", 50) == 862545276 % 50
    assert partition_for("polygenelubricants", 10) == 0  # Kafka's Utils.abs(MIN_VALUE) is 0


def test_leadership_moves_away_and_back(node: InProcessBroker) -> None:
    group, topic = unique_topic("group"), unique_topic()
    with KafkaConnection(node.bootstrap) as a, KafkaConnection(node.bootstrap) as b:
        create_topic(a, topic, 2)
        assert find_coordinator(a, group)["error_code"] == 0
        member_a, member_b, generation = stable_pair(a, b, group)
        offsets = {(topic, 0): 5, (topic, 1): 6}
        assert commit(a, group, member_a, generation, offsets) == {(topic, 0): 0, (topic, 1): 0}
        cid = a.send(API_JOIN_GROUP, JOIN_V, join_body(group, member_a))  # the leader rejoins: it waits for B
        assert heartbeat(b, group, member_b, generation) == ErrorCode.REBALANCE_IN_PROGRESS
        tp = _partition_of(node, group).tp
        node.call(_demote, tp)
        assert a.recv(API_JOIN_GROUP, JOIN_V, cid)["error_code"] == ErrorCode.NOT_COORDINATOR
        assert heartbeat(b, group, member_b, generation) == ErrorCode.NOT_COORDINATOR
        assert fetch_offsets(a, group, {topic: [0]})["error_code"] == ErrorCode.NOT_COORDINATOR
        node.call(_promote, tp)  # a new leader epoch: the groups are rebuilt from the log
        body = retry(lambda: fetch_offsets(a, group, {topic: [0, 1]}))
        assert body["error_code"] == 0 and committed(body) == {(topic, 0): 5, (topic, 1): 6}
        assert heartbeat(b, group, member_b, generation) == 0  # the Stable generation came back
        cid = a.send(API_JOIN_GROUP, JOIN_V, join_body(group, member_a))  # the leader rejoins: a rebalance
        deadline = time.monotonic() + 10
        while heartbeat(b, group, member_b, generation) != ErrorCode.REBALANCE_IN_PROGRESS:
            assert time.monotonic() < deadline
        joined = join(b, group, member_b)
        assert joined["error_code"] == 0 and joined["generation_id"] > generation
        assert a.recv(API_JOIN_GROUP, JOIN_V, cid)["generation_id"] == joined["generation_id"]


def test_offsets_retention_deletes_the_offsets_of_an_empty_group(node: InProcessBroker) -> None:
    group, topic = unique_topic("group"), unique_topic()
    with KafkaConnection(node.bootstrap) as a:
        create_topic(a, topic, 1)
        assert find_coordinator(a, group)["error_code"] == 0
        standalone = retry(lambda: {"error_code": commit(a, group, "", -1, {(topic, 0): 9})[(topic, 0)]})
        assert standalone["error_code"] == 0
        node.call(lambda b: b.groups.expire_offsets(int(time.time() * 1000) + DAY_MS))  # not yet due
        assert committed(fetch_offsets(a, group, {topic: [0]})) == {(topic, 0): 9}
        node.call(lambda b: b.groups.expire_offsets(int(time.time() * 1000) + 8 * DAY_MS))
        assert committed(fetch_offsets(a, group, {topic: [0]})) == {(topic, 0): -1}
        assert group not in {g["group_id"] for g in a.request(API_LIST_GROUPS, 2, {})["groups"]}
        tp = _partition_of(node, group).tp
        node.call(_demote, tp)
        node.call(_promote, tp)  # the tombstones are in the log: still gone after a reload
        body = retry(lambda: fetch_offsets(a, group, {topic: [0]}))
        assert body["error_code"] == 0 and committed(body) == {(topic, 0): -1}


def _with_a_lagging_follower(broker: Any, tp: tuple[str, int]) -> None:
    """Lead in a new epoch with an ISR that includes broker 2, which never fetches: the high
    watermark stays where it is, so every write waits for replication."""
    partition = broker.partitions[tp]
    partition.make_leader(partition.leader_epoch + 1, partition.partition_epoch, (1, 2), (1, 2),
                          int(time.time() * 1000))
    broker.role_changed(partition)


def _commit_request(group: str, topic: str, offset: int) -> dict[str, Any]:
    return {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "", "group_instance_id": None,
            "topics": [{"name": topic, "partitions": [{"partition_index": 0, "committed_offset": offset,
                                                        "committed_leader_epoch": -1, "committed_metadata": ""}]}]}


def _wait_appended(node: InProcessBroker, tp: tuple[str, int], end: int) -> None:
    deadline = time.monotonic() + APPEND_DEADLINE_S
    while node.call(lambda b: b.partitions[tp].log.log_end_offset) <= end:
        assert time.monotonic() < deadline, "the commit was never appended"


def test_commits_wait_for_the_high_watermark(node: InProcessBroker) -> None:
    group, topic = unique_topic("group"), unique_topic()
    with KafkaConnection(node.bootstrap) as a:
        create_topic(a, topic, 1)
        assert find_coordinator(a, group)["error_code"] == 0
        standalone = retry(lambda: {"error_code": commit(a, group, "", -1, {(topic, 0): 1})[(topic, 0)]})
        assert standalone["error_code"] == 0
        tp = _partition_of(node, group).tp
        node.call(_with_a_lagging_follower, tp)
        retry(lambda: fetch_offsets(a, group, {topic: [0]}))  # reloaded in the new epoch
        # not acknowledged within offsets.commit.timeout.ms: COORDINATOR_NOT_AVAILABLE, and not visible
        started = time.monotonic()
        assert commit(a, group, "", -1, {(topic, 0): 2}) == {(topic, 0): ErrorCode.COORDINATOR_NOT_AVAILABLE}
        assert time.monotonic() - started >= COMMIT_TIMEOUT_MS / 1000 * 0.9
        assert committed(fetch_offsets(a, group, {topic: [0]})) == {(topic, 0): 1}
        # a commit in flight when leadership goes: NOT_COORDINATOR
        end = node.call(lambda b: b.partitions[tp].log.log_end_offset)
        cid = a.send(API_OFFSET_COMMIT, COMMIT_V, _commit_request(group, topic, 3))
        _wait_appended(node, tp, end)
        node.call(_demote, tp)
        body = a.recv(API_OFFSET_COMMIT, COMMIT_V, cid)
        assert body["topics"][0]["partitions"][0]["error_code"] == ErrorCode.NOT_COORDINATOR
        # and a follower catching up acknowledges the waiting commit
        node.call(_promote, tp)
        retry(lambda: fetch_offsets(a, group, {topic: [0]}))
        node.call(_with_a_lagging_follower, tp)
        retry(lambda: fetch_offsets(a, group, {topic: [0]}))
        end = node.call(lambda b: b.partitions[tp].log.log_end_offset)
        cid = a.send(API_OFFSET_COMMIT, COMMIT_V, _commit_request(group, topic, 4))
        _wait_appended(node, tp, end)
        node.call(lambda b: b.partitions[tp].on_follower_fetch(2, b.partitions[tp].log.log_end_offset,
                                                                int(time.time() * 1000)))
        body = a.recv(API_OFFSET_COMMIT, COMMIT_V, cid)
        assert body["topics"][0]["partitions"][0]["error_code"] == 0
        assert committed(fetch_offsets(a, group, {topic: [0]})) == {(topic, 0): 4}
