"""The sans-IO group pieces: the embedded consumer protocol against kafka-python's codec (every
version both ways), the range and roundrobin assignors against kafka-python's, bounded decoding, and
the membership state machine's reaction to each group error code."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment as KpAssignment
from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription as KpSubscription

from client.group.assignors import GroupMember, RangeAssignor, RoundRobinAssignor
from client.group.membership import Action, Membership, MemberState, reaction_for
from client.group.protocol import (
    Assignment,
    ConsumerProtocolError,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.wire.errors import ErrorCode


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_subscription_matches_kafka_python_both_ways(version: int) -> None:
    ours = Subscription(("orders", "payments"), b"\x01\x02", (("orders", (0, 3)),) if version else (),
                        7 if version >= 2 else -1, "rack-a" if version >= 3 else None, version)
    theirs = KpSubscription(version=version, topics=["orders", "payments"], user_data=b"\x01\x02",
                            owned_partitions=[("orders", [0, 3])] if version else [],
                            generation_id=7 if version >= 2 else -1, rack_id="rack-a" if version >= 3 else None)
    assert encode_subscription(ours) == theirs.encode()
    decoded = KpSubscription.decode(encode_subscription(ours))
    assert decoded.version == version and list(decoded.topics) == ["orders", "payments"]
    assert decode_subscription(theirs.encode()) == ours


@pytest.mark.parametrize("version", [0, 1, 2, 3])
@pytest.mark.parametrize("user_data", [None, b"", b"abc"])
def test_assignment_matches_kafka_python_both_ways(version: int, user_data: bytes | None) -> None:
    ours = Assignment((("a", (0, 2)), ("b", (1,))), user_data, version)
    theirs = KpAssignment(version=version, assigned_partitions=[("a", [0, 2]), ("b", [1])], user_data=user_data)
    assert encode_assignment(ours) == theirs.encode()
    assert decode_assignment(theirs.encode()) == ours
    assert sorted(KpAssignment.decode(encode_assignment(ours)).partitions()) == [("a", 0), ("a", 2), ("b", 1)]


def test_future_versions_and_empty_assignment() -> None:
    v3 = encode_subscription(Subscription(("t",), None, (), 1, None, 3))
    future = b"\x00\x07" + v3[2:] + b"trailing fields of v7"
    assert decode_subscription(future).topics == ("t",)
    assert decode_assignment(b"") == Assignment()
    assert encode_assignment({"b": [2, 1], "a": [0]}) == encode_assignment(Assignment((("a", (0,)), ("b", (1, 2)))))


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x00\x7f\xff\xff\xff", b"\x00\x00\x00\x00\x00\x01\x00\x09ab",
                                  b"\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x01\x00\x02\xff\xfe"])
def test_hostile_bytes_raise_consumer_protocol_error(data: bytes) -> None:
    with pytest.raises(ConsumerProtocolError):
        decode_subscription(data)
    if len(data) > 2:
        with pytest.raises(ConsumerProtocolError):
            decode_assignment(data[:2] + b"\x7f\xff\xff\xff")


def _kp_assign(assignor: type, counts: dict[str, int], members: list[GroupMember]) -> dict[str, list[tuple[str, int]]]:
    cluster = SimpleNamespace(partitions_for_topic=lambda t: set(range(counts[t])) if t in counts else None)
    kp_members = [SimpleNamespace(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                  metadata=SimpleNamespace(topics=list(m.subscription.topics))) for m in members]
    result = assignor.assign(cluster, kp_members)
    return {mid: sorted((t, p) for t, ps in a.assigned_partitions for p in ps) for mid, a in result.items()}


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("ours, theirs", [(RangeAssignor, RangePartitionAssignor),
                                          (RoundRobinAssignor, RoundRobinPartitionAssignor)])
def test_assignors_agree_with_kafka_python_and_cover_every_partition(seed: int, ours: type, theirs: type) -> None:
    rng = random.Random(seed)
    counts = {f"t{i}": rng.randint(1, 9) for i in range(rng.randint(1, 4))}
    topics = sorted(counts)
    members = []
    for i in range(rng.randint(1, 6)):
        subscribed = tuple(sorted(rng.sample(topics, rng.randint(1, len(topics)))))
        if ours is RoundRobinAssignor:
            subscribed = tuple(topics)  # kp deals differently when subscriptions differ; Java and we skip
        members.append(GroupMember(f"m-{rng.randint(0, 10**6):07d}-{i}", None, Subscription(subscribed)))
    result = ours().assign(counts, members)
    flat = {mid: sorted(a.topic_partitions()) for mid, a in result.items()}
    assert flat == _kp_assign(theirs, counts, members)
    owners: dict[tuple[str, int], str] = {}
    for mid, tps in flat.items():
        member = next(m for m in members if m.member_id == mid)
        for tp in tps:
            assert tp not in owners and tp[0] in member.subscription.topics
            owners[tp] = mid
    subscribed_topics = {t for m in members for t in m.subscription.topics}
    assert set(owners) == {(t, p) for t in subscribed_topics for p in range(counts[t])}


def test_range_example_from_the_javadoc_and_static_members_first() -> None:
    members = [GroupMember("c1", None, Subscription(("t0", "t1"))), GroupMember("c0", None, Subscription(("t0", "t1")))]
    result = RangeAssignor().assign({"t0": 3, "t1": 3}, members)
    assert result["c0"].topic_partitions() == [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]
    assert result["c1"].topic_partitions() == [("t0", 2), ("t1", 2)]
    static = [GroupMember("a", None, Subscription(("t",))), GroupMember("z", "instance-1", Subscription(("t",)))]
    assert RoundRobinAssignor().assign({"t": 2}, static)["z"].topic_partitions() == [("t", 0)]
    assert RangeAssignor().assign({"unknown": 0}, static)["a"].topic_partitions() == []


@pytest.mark.parametrize("code, action, lost", [
    (ErrorCode.NONE, Action.NONE, False),
    (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, Action.RETRY, False),
    (ErrorCode.COORDINATOR_NOT_AVAILABLE, Action.REDISCOVER, False),
    (ErrorCode.NOT_COORDINATOR, Action.REDISCOVER, False),
    (ErrorCode.REBALANCE_IN_PROGRESS, Action.REJOIN, False),
    (ErrorCode.ILLEGAL_GENERATION, Action.REJOIN, True),
    (ErrorCode.UNKNOWN_MEMBER_ID, Action.REJOIN, True),
    (ErrorCode.FENCED_INSTANCE_ID, Action.FATAL, False),
    (ErrorCode.INCONSISTENT_GROUP_PROTOCOL, Action.FATAL, False),
    (ErrorCode.GROUP_AUTHORIZATION_FAILED, Action.FATAL, False),
    (ErrorCode.REQUEST_TIMED_OUT, Action.RETRY, False),
])
def test_reaction_table(code: ErrorCode, action: Action, lost: bool) -> None:
    reaction = reaction_for(code)
    assert (reaction.action, reaction.lost) == (action, lost)


def _joined(now_ms: int = 0) -> Membership:
    m = Membership("g", session_timeout_ms=10_000, rebalance_timeout_ms=30_000, heartbeat_interval_ms=1_000)
    m.join_request([("range", b"")])
    assert m.on_join_response({"error_code": ErrorCode.MEMBER_ID_REQUIRED, "member_id": "m-1"}, now_ms).action \
        == Action.REJOIN
    assert m.member_id == "m-1" and m.join_request([("range", b"")])["member_id"] == "m-1"
    ok = {"error_code": 0, "member_id": "m-1", "generation_id": 4, "protocol_name": "range", "leader": "m-1",
          "members": [{"member_id": "m-1", "metadata": b""}]}
    assert m.on_join_response(ok, now_ms).action == Action.NONE
    assert m.is_leader and m.state == MemberState.SYNCING
    assert m.on_sync_response({"error_code": 0, "assignment": b""}, now_ms).action == Action.NONE
    return m


def test_membership_join_sync_heartbeat_timers_and_resets() -> None:
    m = _joined()
    assert m.state == MemberState.STABLE and m.generation_id == 4
    assert m.heartbeat_due_in_ms(400) == 600
    assert m.heartbeat_request(1_000) == {"group_id": "g", "generation_id": 4, "member_id": "m-1",
                                          "group_instance_id": None}
    assert m.on_heartbeat_response(0, 1_010).action == Action.NONE
    assert not m.session_expired(11_000) and m.session_expired(11_010)
    assert m.on_heartbeat_response(ErrorCode.REBALANCE_IN_PROGRESS, 1_100).action == Action.REJOIN
    assert m.generation_id == 4, "the generation stays valid for the commit before revoking"
    assert m.on_heartbeat_response(ErrorCode.ILLEGAL_GENERATION, 1_200).lost
    assert (m.generation_id, m.member_id, m.state) == (-1, "m-1", MemberState.UNJOINED)
    m = _joined()
    assert m.on_commit_error(ErrorCode.UNKNOWN_MEMBER_ID).lost
    assert (m.generation_id, m.member_id) == (-1, "")
    m = _joined()
    assert m.leave_request(3)["members"] == [{"member_id": "m-1", "group_instance_id": None,
                                             "reason": "the consumer is closing"}]
    m.left()
    assert m.member_id == "" and m.state == MemberState.UNJOINED


def test_membership_join_errors() -> None:
    m = Membership("g", session_timeout_ms=10_000, rebalance_timeout_ms=30_000, heartbeat_interval_ms=1_000)
    m.member_id = "stale"
    assert m.on_join_response({"error_code": ErrorCode.UNKNOWN_MEMBER_ID, "member_id": ""}, 0).action == Action.REJOIN
    assert m.member_id == ""
    assert m.on_join_response({"error_code": ErrorCode.REBALANCE_IN_PROGRESS}, 0).action == Action.RETRY
    assert m.on_join_response({"error_code": ErrorCode.INCONSISTENT_GROUP_PROTOCOL}, 0).action == Action.FATAL
    with pytest.raises(ValueError):
        Membership("g", session_timeout_ms=1_000, rebalance_timeout_ms=1, heartbeat_interval_ms=1_000)
