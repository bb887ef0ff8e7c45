"""The sans-IO group state machine (broker/groups/state.py): deterministic, time as an argument.

A `Harness` plays the driver: it hands out tokens, collects Reply actions (each token must be
answered exactly once), treats every Persist as written at once (its replies are delivered then),
and checks the state machine's invariants after every step. Scenario tests follow Kafka's
classic protocol; a seeded random walk checks the invariants and that generations never go
backwards over thousands of steps.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from broker.groups.records import decode_group_value, encode_group_value
from broker.groups.state import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    Group,
    GroupLimits,
    JoinRequest,
    Persist,
    Reply,
)
from client.wire.errors import ErrorCode

LIMITS = GroupLimits(min_session_timeout_ms=1_000, max_session_timeout_ms=60_000, initial_rebalance_delay_ms=0,
                     members_max=5)
SESSION_MS = 10_000
REBALANCE_MS = 20_000
PROTOCOLS = (("range", b"r-meta"), ("roundrobin", b"rr-meta"))


class Harness:
    def __init__(self, limits: GroupLimits = LIMITS) -> None:
        self.group = Group("g", limits)
        self.replies: dict[int, dict[str, Any]] = {}
        self.persisted: list[Persist] = []
        self._tokens = itertools.count(1)
        self._ids = itertools.count(1)
        self.issued: set[int] = set()
        self.generations: list[int] = [0]

    def run(self, actions: list[Reply | Persist]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                self._answer(action)
            else:
                assert action.generation_id >= self.generations[-1]
                self.persisted.append(action)
                for reply in action.replies:
                    self._answer(reply)
        self.group.check_invariants()
        assert self.group.generation_id >= self.generations[-1]
        self.generations.append(self.group.generation_id)

    def _answer(self, reply: Reply) -> None:
        assert reply.token in self.issued, reply
        assert reply.token not in self.replies, f"token {reply.token} answered twice"
        self.replies[reply.token] = reply.body

    def token(self) -> int:
        t = next(self._tokens)
        self.issued.add(t)
        return t

    def join(self, now: int, member_id: str = "", *, protocols: tuple[tuple[str, bytes], ...] = PROTOCOLS,
             session: int = SESSION_MS, rebalance: int = REBALANCE_MS, require_known: bool = True,
             instance: str | None = None, protocol_type: str = "consumer") -> int:
        t = self.token()
        req = JoinRequest(member_id, instance, "client", "/127.0.0.1", session, rebalance, protocol_type, protocols,
                          require_known, f"m{next(self._ids)}")
        self.run(self.group.join(now, t, req))
        return t

    def join_new(self, now: int, **kwargs: Any) -> int:
        """The MEMBER_ID_REQUIRED round trip: returns the second JoinGroup's token."""
        first = self.join(now, **kwargs)
        body = self.replies[first]
        assert body["error_code"] == ErrorCode.MEMBER_ID_REQUIRED, body
        return self.join(now, body["member_id"], **kwargs)

    def sync(self, now: int, member_id: str, generation: int, assignments: list[tuple[str, bytes]] = ()) -> int:
        t = self.token()
        self.run(self.group.sync(now, t, member_id, None, generation, None, None, list(assignments)))
        return t

    def heartbeat(self, now: int, member_id: str, generation: int) -> int:
        error = self.group.heartbeat(now, member_id, None, generation)
        self.group.check_invariants()
        return error

    def tick(self, now: int) -> None:
        self.run(self.group.tick(now))

    def leave(self, now: int, *member_ids: str) -> list[int]:
        errors, actions = self.group.leave(now, [(m, None) for m in member_ids])
        self.run(actions)
        return errors

    def stable_pair(self) -> tuple[str, str, int]:
        """Two members A (leader) and B in a Stable generation; returns (A, B, generation)."""
        a_tok = self.join_new(0)
        a = self.replies[a_tok]["member_id"]
        assert self.replies[a_tok]["generation_id"] == 1
        b_tok = self.join_new(10)
        assert b_tok not in self.replies and self.group.state == PREPARING_REBALANCE
        b = self.group.members[next(m for m in self.group.members if m != a)].member_id
        assert self.heartbeat(20, a, 1) == ErrorCode.REBALANCE_IN_PROGRESS
        a_tok = self.join(30, a)
        gen = self.replies[a_tok]["generation_id"]
        assert gen == 2 and self.replies[b_tok]["generation_id"] == 2
        s_b = self.sync(40, b, gen)
        s_a = self.sync(40, a, gen, [(a, b"for-a"), (b, b"for-b")])
        assert self.replies[s_a]["assignment"] == b"for-a" and self.replies[s_b]["assignment"] == b"for-b"
        assert self.group.state == STABLE
        return a, b, gen


# ------------------------------------------------------------------------------------ joining

def test_member_id_required_round_trip_then_a_generation_of_one() -> None:
    h = Harness()
    first = h.join(0)
    body = h.replies[first]
    assert body["error_code"] == ErrorCode.MEMBER_ID_REQUIRED and body["member_id"] == "m1"
    assert h.group.state == EMPTY and "m1" in h.group.pending_members
    second = h.join(5, "m1")
    body = h.replies[second]
    assert body["error_code"] == 0 and body["generation_id"] == 1 and body["leader"] == "m1"
    assert body["protocol_name"] == "range" and body["protocol_type"] == "consumer"
    assert body["members"] == [{"member_id": "m1", "group_instance_id": None, "metadata": b"r-meta"}]
    assert h.group.state == COMPLETING_REBALANCE
    # the generation is persisted before anyone learns it (the reply rides on the Persist)
    assert h.persisted[-1].generation_id == 1 and h.persisted[-1].replies[0].token == second


def test_join_v0_to_v3_gets_an_id_at_once() -> None:
    h = Harness()
    t = h.join(0, require_known=False)
    assert h.replies[t]["error_code"] == 0 and h.replies[t]["member_id"] == "m1"


def test_two_members_full_join_and_sync_round() -> None:
    h = Harness()
    a, b, gen = h.stable_pair()
    leader_view = h.persisted[-2].replies  # the join-phase persist of generation 2
    by_token = {r.token: r.body for r in leader_view}
    leader_body = next(body for body in by_token.values() if body["member_id"] == a)
    follower_body = next(body for body in by_token.values() if body["member_id"] == b)
    assert {m["member_id"] for m in leader_body["members"]} == {a, b}
    assert follower_body["members"] == [] and follower_body["leader"] == a
    value = h.persisted[-1].value
    assert value is not None and value.generation_id == gen
    assert {m.member_id: m.assignment for m in value.members} == {a: b"for-a", b: b"for-b"}
    assert h.heartbeat(50, a, gen) == 0 and h.heartbeat(50, b, gen) == 0


def test_a_follower_sync_waits_for_the_leader() -> None:
    h = Harness()
    a_tok = h.join_new(0)
    a = h.replies[a_tok]["member_id"]
    h.join_new(1)
    a_tok = h.join(2, a)
    b = next(m for m in h.group.members if m != a)
    s_b = h.sync(3, b, 2)
    assert s_b not in h.replies
    assert h.heartbeat(4, b, 2) == 0  # between join and sync: heartbeats are fine
    h.sync(5, a, 2, [(a, b"x")])
    assert h.replies[s_b] == {"error_code": 0, "assignment": b"", "protocol_type": "consumer",
                              "protocol_name": "range"}


def test_stable_follower_rejoin_with_same_metadata_does_not_rebalance() -> None:
    h = Harness()
    _a, b, gen = h.stable_pair()
    t = h.join(100, b)
    assert h.replies[t]["generation_id"] == gen and h.group.state == STABLE


def test_leader_rejoin_rebalances_and_bumps_the_generation() -> None:
    h = Harness()
    a, b, gen = h.stable_pair()
    t_a = h.join(100, a)
    assert t_a not in h.replies and h.group.state == PREPARING_REBALANCE
    assert h.heartbeat(110, b, gen) == ErrorCode.REBALANCE_IN_PROGRESS
    t_b = h.join(120, b)
    assert h.replies[t_a]["generation_id"] == h.replies[t_b]["generation_id"] == gen + 1


def test_protocol_selection_by_votes_among_common_protocols() -> None:
    h = Harness()
    h.join(0, require_known=False, protocols=(("range", b"1"), ("roundrobin", b"2"), ("sticky", b"3")))
    g = h.group
    a = next(iter(g.members))
    h.join(1, require_known=False, protocols=(("roundrobin", b"4"), ("range", b"5")))
    h.join(2, require_known=False, protocols=(("roundrobin", b"6"), ("range", b"7")))
    h.join(3, a, protocols=(("range", b"1"), ("roundrobin", b"2"), ("sticky", b"3")))
    assert g.protocol_name == "roundrobin"  # 2 votes to 1; sticky is not common


def test_inconsistent_protocols_are_refused() -> None:
    h = Harness()
    h.join(0, require_known=False)
    t = h.join(1, require_known=False, protocol_type="connect")
    assert h.replies[t]["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    t = h.join(2, require_known=False, protocols=(("sticky", b""),))
    assert h.replies[t]["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    t = h.join(3, require_known=False, protocols=())
    assert h.replies[t]["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


@pytest.mark.parametrize("session", [999, 60_001])
def test_session_timeout_outside_the_bounds(session: int) -> None:
    h = Harness()
    t = h.join(0, session=session)
    assert h.replies[t]["error_code"] == ErrorCode.INVALID_SESSION_TIMEOUT


def test_group_max_size() -> None:
    h = Harness()
    for i in range(LIMITS.members_max):
        h.join(i, require_known=False)
    t = h.join(10, require_known=False)
    assert h.replies[t]["error_code"] == ErrorCode.GROUP_MAX_SIZE_REACHED
    t = h.join(11)
    assert h.replies[t]["error_code"] == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert len(h.group.members) == LIMITS.members_max


def test_oversized_member_metadata_is_refused() -> None:
    h = Harness()
    t = h.join(0, protocols=(("range", b"x" * (LIMITS.member_metadata_bytes_max + 1)),))
    assert h.replies[t]["error_code"] == ErrorCode.INVALID_REQUEST
    t = h.join(0, protocols=tuple((f"p{i}", b"") for i in range(33)))
    assert h.replies[t]["error_code"] == ErrorCode.INVALID_REQUEST


def test_initial_rebalance_delay_waits_for_more_members() -> None:
    h = Harness(GroupLimits(min_session_timeout_ms=1_000, initial_rebalance_delay_ms=3_000))
    t_a = h.join(0, require_known=False)
    assert t_a not in h.replies
    t_b = h.join(1_000, require_known=False)  # extends the delay to 4000
    h.tick(3_000)
    assert t_a not in h.replies
    assert h.group.next_deadline_ms() == 4_000
    h.tick(4_000)
    assert h.replies[t_a]["generation_id"] == h.replies[t_b]["generation_id"] == 1
    assert len(h.replies[t_a]["members"]) == 2


# ------------------------------------------------------------------------------------ errors

def test_unknown_member_id() -> None:
    h = Harness()
    _a, _b, gen = h.stable_pair()
    assert h.heartbeat(100, "nobody", gen) == ErrorCode.UNKNOWN_MEMBER_ID
    t = h.sync(100, "nobody", gen)
    assert h.replies[t]["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    t = h.join(100, "nobody")
    assert h.replies[t]["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.group.check_commit(100, "nobody", None, gen) == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.leave(100, "nobody") == [ErrorCode.UNKNOWN_MEMBER_ID]
    assert h.group.state == STABLE


def test_stale_generation_is_illegal() -> None:
    h = Harness()
    a, _b, gen = h.stable_pair()
    assert h.heartbeat(100, a, gen - 1) == ErrorCode.ILLEGAL_GENERATION
    assert h.group.check_commit(100, a, None, gen - 1) == ErrorCode.ILLEGAL_GENERATION
    t = h.sync(100, a, gen + 1)
    assert h.replies[t]["error_code"] == ErrorCode.ILLEGAL_GENERATION


def test_commit_checks_by_state() -> None:
    h = Harness()
    assert h.group.check_commit(0, "", None, -1) == 0  # a standalone consumer on an Empty group
    t = h.join_new(0)
    a = h.replies[t]["member_id"]
    assert h.group.check_commit(1, a, None, 1) == ErrorCode.REBALANCE_IN_PROGRESS  # CompletingRebalance
    assert h.group.check_commit(1, "", None, -1) == ErrorCode.UNKNOWN_MEMBER_ID  # the group is in use
    h.sync(2, a, 1, [(a, b"x")])
    assert h.group.check_commit(3, a, None, 1) == 0
    h.join_new(4)  # a new member: PreparingRebalance; the old generation may still commit
    assert h.group.check_commit(5, a, None, 1) == 0


def test_sync_during_rebalance_and_a_rebalance_cancelling_a_pending_sync() -> None:
    h = Harness()
    a_tok = h.join_new(0)
    a = h.replies[a_tok]["member_id"]
    h.join_new(1)  # B
    b = next(m for m in h.group.members if m != a)
    t = h.sync(2, a, 1)
    assert h.replies[t]["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS
    h.join(3, a)
    t_b = h.sync(4, b, 2)  # waits for the leader
    h.join_new(5)  # a third member: the pending sync is told to rejoin
    assert h.replies[t_b]["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS


# ------------------------------------------------------------------------------------ time

def test_a_silent_member_is_evicted_after_its_session_timeout() -> None:
    h = Harness()
    a, b, gen = h.stable_pair()
    for now in range(1_000, SESSION_MS + 1_000, 1_000):
        assert h.heartbeat(now, a, gen) == 0
        h.tick(now)
    assert b in h.group.members
    h.tick(40 + SESSION_MS)  # b's last contact was its SyncGroup at 40
    assert b not in h.group.members and h.group.state == PREPARING_REBALANCE
    assert h.heartbeat(SESSION_MS + 100, a, gen) == ErrorCode.REBALANCE_IN_PROGRESS
    t = h.join(SESSION_MS + 200, a)
    assert h.replies[t]["generation_id"] == gen + 1 and [m["member_id"] for m in h.replies[t]["members"]] == [a]
    assert h.heartbeat(SESSION_MS + 300, b, gen + 1) == ErrorCode.UNKNOWN_MEMBER_ID


def test_members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped() -> None:
    h = Harness()
    a_tok = h.join_new(0, session=30_000, rebalance=5_000)
    a = h.replies[a_tok]["member_id"]
    h.join_new(1, session=30_000, rebalance=5_000)
    h.join(2, a, session=30_000, rebalance=5_000)
    b = next(m for m in h.group.members if m != a)
    h.sync(3, b, 2)
    h.sync(3, a, 2, [(a, b"1"), (b, b"2")])
    t = h.join(100, a, session=30_000, rebalance=5_000)  # the leader rejoins; b never does
    h.tick(5_099)
    assert t not in h.replies
    h.tick(5_100)
    assert h.replies[t]["generation_id"] == 3 and list(h.group.members) == [a]


def test_an_unused_member_id_expires() -> None:
    h = Harness()
    t = h.join(0)
    member_id = h.replies[t]["member_id"]
    assert h.group.next_deadline_ms() == SESSION_MS
    h.tick(SESSION_MS)
    assert not h.group.pending_members
    t = h.join(SESSION_MS + 1, member_id)
    assert h.replies[t]["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID


def test_leaving() -> None:
    h = Harness()
    a, b, gen = h.stable_pair()
    assert h.leave(100, a) == [0]
    assert h.group.state == PREPARING_REBALANCE and h.group.leader_id == b
    t = h.join(110, b)
    assert h.replies[t]["generation_id"] == gen + 1 and h.replies[t]["leader"] == b
    assert h.leave(120, b) == [0]
    assert h.group.state == EMPTY and h.group.generation_id == gen + 2
    assert h.persisted[-1].value is not None and h.persisted[-1].value.members == ()


def test_static_member_restart_fences_its_old_id() -> None:
    h = Harness()
    t1 = h.join(0, instance="i-1")  # static members skip MEMBER_ID_REQUIRED
    old = h.replies[t1]["member_id"]
    h.sync(1, old, 1, [(old, b"a")])
    t2 = h.join(2, instance="i-1")
    new = h.replies[t2]["member_id"]
    assert new != old and h.replies[t2]["generation_id"] == 2
    assert h.group.heartbeat(3, old, "i-1", 2) == ErrorCode.FENCED_INSTANCE_ID
    assert h.group.heartbeat(3, new, "i-1", 2) == 0


# ------------------------------------------------------------------------------------ records

def test_group_record_round_trip_and_reload_of_a_stable_group() -> None:
    h = Harness()
    a, b, gen = h.stable_pair()
    value = decode_group_value(encode_group_value(h.group.to_value()))
    loaded = Group.from_value("g", value, LIMITS, 1_000)
    loaded.check_invariants()
    assert loaded.state == STABLE and loaded.generation_id == gen and loaded.leader_id == a
    assert loaded.heartbeat(1_001, b, None, gen) == 0
    t = 99
    actions = loaded.sync(1_002, t, b, None, gen, None, None, [])
    assert actions == [Reply(t, {"error_code": 0, "assignment": b"for-b", "protocol_type": "consumer",
                                 "protocol_name": "range"})]


def test_a_join_phase_record_reloads_as_a_rebalance_with_a_higher_generation() -> None:
    h = Harness()
    a_tok = h.join_new(0)
    a = h.replies[a_tok]["member_id"]
    join_record = h.persisted[-1].value
    assert join_record is not None and join_record.generation_id == 1
    loaded = Group.from_value("g", join_record, LIMITS, 1_000)
    assert loaded.state == PREPARING_REBALANCE
    assert loaded.heartbeat(1_001, a, None, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    out = loaded.join(1_002, 7, JoinRequest(a, None, "c", "h", SESSION_MS, REBALANCE_MS, "consumer", PROTOCOLS,
                                            True, "unused"))
    persist = next(x for x in out if isinstance(x, Persist))
    assert persist.generation_id == 2 and persist.replies[0].body["generation_id"] == 2


def test_an_empty_group_record_reloads_empty() -> None:
    h = Harness()
    t = h.join_new(0)
    h.leave(1, h.replies[t]["member_id"])
    loaded = Group.from_value("g", h.persisted[-1].value, LIMITS, 5)  # type: ignore[arg-type]
    assert loaded.state == EMPTY and loaded.generation_id == 2


# ------------------------------------------------------------------------------------ random walk

@pytest.mark.parametrize("seed", range(8))
def test_random_walk_keeps_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    h = Harness(GroupLimits(min_session_timeout_ms=1_000, initial_rebalance_delay_ms=rng.choice([0, 500]),
                            members_max=4))
    now = 0
    known: dict[str, int] = {}  # member id -> generation it last saw
    open_tokens: list[int] = []
    for _ in range(1_500):
        now += rng.choice([0, 1, 10, 100, 1_000, 4_000])
        op = rng.random()
        member = rng.choice(sorted(known)) if known and rng.random() < 0.9 else "ghost"
        gen = known.get(member, 0) + rng.choice([0, 0, 0, -1, 1])
        if op < 0.25:
            t = h.join(now, "" if rng.random() < 0.3 else member, session=rng.choice([2_000, 5_000]),
                       rebalance=rng.choice([1_000, 3_000]), require_known=rng.random() < 0.7)
            open_tokens.append(t)
        elif op < 0.45:
            open_tokens.append(h.sync(now, member, gen, [(m, b"a") for m in known]))
        elif op < 0.7:
            h.heartbeat(now, member, gen)
        elif op < 0.75:
            h.leave(now, member)
        else:
            h.tick(now)
        for body in h.replies.values():
            if "generation_id" in body and body["error_code"] == 0:
                known[body["member_id"]] = body["generation_id"]
            elif body["error_code"] == ErrorCode.MEMBER_ID_REQUIRED:
                known.setdefault(body["member_id"], 0)
    # everyone leaves: every request still waiting gets its answer
    h.leave(now, *h.group.members)
    h.tick(now + 100_000)
    assert all(t in h.replies for t in open_tokens), [t for t in open_tokens if t not in h.replies]
    assert h.group.state == EMPTY
    assert h.generations == sorted(h.generations)
    assert [p.generation_id for p in h.persisted] == sorted(p.generation_id for p in h.persisted)
