"""The sans-IO classic consumer-group state machine (one `Group` per group id).

No clocks, sockets or files: every call takes `now_ms` and returns actions for the driver
(broker/groups/coordinator.py), in the order it must carry them out:

* `Reply(token, body)`: answer the JoinGroup or SyncGroup request that was given `token`.
  `body` holds the response fields (the handler fills the version-specific rest).
* `Persist(group_id, value, replies)`: append the group metadata record `value` (None: a
  tombstone) to the group's `__consumer_offsets` partition *now* (so the log order is the state
  order), and send `replies` only once the record is below the high watermark. On failure the
  driver sends each reply with its error code replaced and calls `persist_failed`.

States and transitions (Kafka's GroupCoordinator, classic protocol, KIP-345 static members
tolerated, KIP-394 MEMBER_ID_REQUIRED):

    Empty ──join──▶ PreparingRebalance ──all joined / rebalance timeout──▶ CompletingRebalance
      ▲                 ▲   │ (no members left: generation+1, Empty)          │ leader's SyncGroup
      │                 │   └───────────────────────────────────────────┐     ▼
      └── last member leaves/expires ◀── member join/leave/expiry ◀── Stable
    any state ──DeleteGroups (Empty only)──▶ Dead

Invariants (checked by `check_invariants`, called by the unit tests after every step):

* `generation_id` never decreases; it increases by exactly one each time a join phase
  completes, and every completed join phase is persisted before any member learns the new
  generation (so a coordinator failover can never hand out a generation twice).
* Empty ⇔ no members; a leader is set iff the state is CompletingRebalance or Stable (or
  PreparingRebalance with an old leader still a member), and it is a member.
* A member has a pending JoinGroup only in PreparingRebalance, a pending SyncGroup only in
  CompletingRebalance; every token is answered exactly once (by a Reply action).
* Members ≤ `limits.members_max`; pending (MEMBER_ID_REQUIRED) ids ≤ `limits.members_max`.

Session timeouts: a member that sends nothing (heartbeat, commit, join, sync) for its session
timeout is removed and the group rebalances; members with a JoinGroup or SyncGroup in flight
are kept alive (the rebalance timeout bounds those). A member id handed out with
MEMBER_ID_REQUIRED and not used within the session timeout is forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.groups.records import GroupValue, MemberValue
from client.wire.errors import ErrorCode

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"
STATES = (EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE, STABLE, DEAD)

PROTOCOLS_PER_MEMBER_MAX = 32
REBALANCE_TIMEOUT_MAX_MS = 1_800_000
MEMBER_RECORD_OVERHEAD_BYTES = 1024  # ids, client id and host, timeouts of one member in the group record


@dataclass(frozen=True)
class GroupLimits:
    """The group settings and bounds (broker config `group.*`)."""

    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 3_000
    members_max: int = 1_000                        # group.max.size (Kafka: unbounded)
    member_metadata_bytes_max: int = 64 << 10       # one member's protocol metadata, summed
    assignment_bytes_max: int = 64 << 10            # one member's assignment
    group_metadata_bytes_max: int = 900 << 10       # the whole group record (below message.max.bytes)


@dataclass(frozen=True)
class Reply:
    token: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Persist:
    group_id: str
    value: GroupValue | None
    replies: tuple[Reply, ...] = ()
    generation_id: int = -1


Action = Reply | Persist


@dataclass(frozen=True)
class JoinRequest:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    require_known_member_id: bool
    generated_member_id: str  # the id a new member gets (the driver makes it unique)


@dataclass
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""
    join_token: int | None = None
    sync_token: int | None = None
    heartbeat_deadline_ms: int = 0

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""


def join_body(error: int, member_id: str = "", generation_id: int = -1, protocol_type: str | None = None,
              protocol_name: str | None = None, leader: str = "",
              members: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"error_code": error, "generation_id": generation_id, "protocol_type": protocol_type,
            "protocol_name": protocol_name, "leader": leader, "member_id": member_id, "members": list(members),
            "skip_assignment": False}


def sync_body(error: int, assignment: bytes = b"", protocol_type: str | None = None,
              protocol_name: str | None = None) -> dict[str, Any]:
    return {"error_code": error, "assignment": assignment, "protocol_type": protocol_type,
            "protocol_name": protocol_name}


class Group:
    def __init__(self, group_id: str, limits: GroupLimits) -> None:
        self.group_id = group_id
        self.limits = limits
        self.state = EMPTY
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}                 # in join order
        self.pending_members: dict[str, int] = {}            # MEMBER_ID_REQUIRED ids -> expiry
        self.static_members: dict[str, str] = {}             # group.instance.id -> member id
        self.rebalance_deadline_ms = 0
        self.initial_delay_until_ms = 0
        self.rebalance_started_ms = 0
        self.state_timestamp_ms = -1

    # ------------------------------------------------------------------ views
    @property
    def is_empty(self) -> bool:
        return self.state == EMPTY

    def candidate_protocols(self) -> list[str]:
        """Protocols every member supports, in the first member's order of preference."""
        members = list(self.members.values())
        if not members:
            return []
        common = set.intersection(*({name for name, _ in m.protocols} for m in members))
        return [name for name, _ in members[0].protocols if name in common]

    def select_protocol(self) -> str:
        """Each member votes for its most preferred candidate; most votes wins (ties: first candidate)."""
        candidates = self.candidate_protocols()
        assert candidates, "members without a common protocol were refused at join"
        votes = dict.fromkeys(candidates, 0)
        for m in self.members.values():
            vote = next(name for name, _ in m.protocols if name in votes)
            votes[vote] += 1
        return max(candidates, key=lambda name: votes[name])  # max keeps the first of equals

    def next_deadline_ms(self) -> int | None:
        deadlines = list(self.pending_members.values())
        for m in self.members.values():
            if m.join_token is None and m.sync_token is None:
                deadlines.append(m.heartbeat_deadline_ms)
        if self.state == PREPARING_REBALANCE:
            deadlines.append(self.rebalance_deadline_ms)
            if self.initial_delay_until_ms > 0:
                deadlines.append(self.initial_delay_until_ms)
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------------ JoinGroup
    def join(self, now_ms: int, token: int, req: JoinRequest) -> list[Action]:
        error = self._check_join(req)
        if error:
            return [Reply(token, join_body(error, req.member_id))]
        if req.member_id == "":
            if req.group_instance_id is not None:
                return self._join_static_new_id(now_ms, token, req)
            if len(self.members) + len(self.pending_members) >= self.limits.members_max:
                return [Reply(token, join_body(ErrorCode.GROUP_MAX_SIZE_REACHED))]
            if req.require_known_member_id:  # KIP-394: the id comes back, the member joins again with it
                self.pending_members[req.generated_member_id] = now_ms + req.session_timeout_ms
                return [Reply(token, join_body(ErrorCode.MEMBER_ID_REQUIRED, req.generated_member_id))]
            return self._add_member_and_rebalance(now_ms, token, req, req.generated_member_id)
        if req.member_id in self.pending_members:
            del self.pending_members[req.member_id]
            return self._add_member_and_rebalance(now_ms, token, req, req.member_id)
        error = self._check_member(req.member_id, req.group_instance_id)
        if error:
            return [Reply(token, join_body(error, req.member_id))]
        return self._join_known(now_ms, token, req, self.members[req.member_id])

    def _check_join(self, req: JoinRequest) -> int:
        if self.state == DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        limits = self.limits
        if not limits.min_session_timeout_ms <= req.session_timeout_ms <= limits.max_session_timeout_ms:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        if not req.protocol_type or not req.protocols:
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if (len(req.protocols) > PROTOCOLS_PER_MEMBER_MAX
                or sum(len(m) for _, m in req.protocols) > limits.member_metadata_bytes_max
                or len({name for name, _ in req.protocols}) != len(req.protocols)):
            return ErrorCode.INVALID_REQUEST
        if self.state != EMPTY:
            if req.protocol_type != self.protocol_type:
                return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            others = [m for m in self.members.values() if m.member_id != req.member_id]
            names = {name for name, _ in req.protocols}
            if others and not names & set.intersection(*({n for n, _ in m.protocols} for m in others)):
                return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return ErrorCode.NONE

    def _check_member(self, member_id: str, instance_id: str | None) -> int:
        """UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID for a request naming `member_id`."""
        if instance_id is not None:
            known = self.static_members.get(instance_id)
            if known is not None and known != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    def _join_static_new_id(self, now_ms: int, token: int, req: JoinRequest) -> list[Action]:
        """A static member (re)starting: it takes a new member id and fences the old one (KIP-345).
        Simplification: this always rebalances (Kafka skips the rebalance for an unchanged follower)."""
        assert req.group_instance_id is not None
        out: list[Action] = []
        old_id = self.static_members.get(req.group_instance_id)
        if old_id is not None and old_id in self.members:
            old = self.members.pop(old_id)
            out += self._answer_pending(old, ErrorCode.FENCED_INSTANCE_ID)
            if self.leader_id == old_id:
                self.leader_id = None
        elif len(self.members) + len(self.pending_members) >= self.limits.members_max:
            return [Reply(token, join_body(ErrorCode.GROUP_MAX_SIZE_REACHED))]
        return out + self._add_member_and_rebalance(now_ms, token, req, req.generated_member_id)

    def _add_member_and_rebalance(self, now_ms: int, token: int, req: JoinRequest, member_id: str) -> list[Action]:
        member_bytes = max(len(m) for _, m in req.protocols) + MEMBER_RECORD_OVERHEAD_BYTES
        if self.value_size() + member_bytes > self.limits.group_metadata_bytes_max:
            return [Reply(token, join_body(ErrorCode.GROUP_MAX_SIZE_REACHED, member_id))]
        if not self.members:
            self.protocol_type = req.protocol_type
        member = Member(member_id, req.group_instance_id, req.client_id, req.client_host, req.session_timeout_ms,
                        self._rebalance_timeout(req), req.protocols, join_token=token,
                        heartbeat_deadline_ms=now_ms + req.session_timeout_ms)
        self.members[member_id] = member
        if req.group_instance_id is not None:
            self.static_members[req.group_instance_id] = member_id
        if self.state == PREPARING_REBALANCE and now_ms < self.initial_delay_until_ms:
            # a new member during the initial delay extends it, within the rebalance timeout
            self.initial_delay_until_ms = min(now_ms + self.limits.initial_rebalance_delay_ms,
                                              self.rebalance_deadline_ms)
        return self._prepare_rebalance(now_ms) + self._maybe_complete_join(now_ms)

    @staticmethod
    def _rebalance_timeout(req: JoinRequest) -> int:
        timeout = req.rebalance_timeout_ms if req.rebalance_timeout_ms > 0 else req.session_timeout_ms
        return min(timeout, REBALANCE_TIMEOUT_MAX_MS)

    def _join_known(self, now_ms: int, token: int, req: JoinRequest, member: Member) -> list[Action]:
        if self.state == PREPARING_REBALANCE:
            out = self._update_member(member, req, token)
            return out + self._maybe_complete_join(now_ms)
        if self.state == COMPLETING_REBALANCE:
            if req.protocols == member.protocols:  # a retried JoinGroup: the same answer again
                member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
                return [Reply(token, self._join_result(member))]
            return [*self._update_member(member, req, token), *self._rebalance(now_ms)]
        if self.state == STABLE:
            if member.member_id == self.leader_id or req.protocols != member.protocols:
                return [*self._update_member(member, req, token), *self._rebalance(now_ms)]
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            return [Reply(token, self._join_result(member))]
        return [Reply(token, join_body(ErrorCode.UNKNOWN_MEMBER_ID, req.member_id))]

    def _update_member(self, member: Member, req: JoinRequest, token: int) -> list[Action]:
        out: list[Action] = []
        if member.join_token is not None:  # a second JoinGroup while one waits: the older one gives way
            out.append(Reply(member.join_token, join_body(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id)))
        member.protocols = req.protocols
        member.session_timeout_ms = req.session_timeout_ms
        member.rebalance_timeout_ms = self._rebalance_timeout(req)
        member.client_id = req.client_id
        member.client_host = req.client_host
        member.join_token = token
        return out

    def _join_result(self, member: Member) -> dict[str, Any]:
        members = []
        if member.member_id == self.leader_id:
            members = [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                        "metadata": m.metadata_for(self.protocol_name)} for m in self.members.values()]
        return join_body(ErrorCode.NONE, member.member_id, self.generation_id, self.protocol_type,
                         self.protocol_name, self.leader_id or "", members)

    # ------------------------------------------------------------------ rebalance
    def _prepare_rebalance(self, now_ms: int) -> list[Action]:
        out: list[Action] = []
        if self.state == PREPARING_REBALANCE:
            return out
        if self.state == COMPLETING_REBALANCE:
            for m in self.members.values():
                if m.sync_token is not None:
                    out.append(Reply(m.sync_token, sync_body(ErrorCode.REBALANCE_IN_PROGRESS)))
                    m.sync_token = None
        timeout = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self.rebalance_started_ms = now_ms
        self.rebalance_deadline_ms = now_ms + timeout
        self.initial_delay_until_ms = 0
        if self.state == EMPTY and self.limits.initial_rebalance_delay_ms > 0:
            # Kafka's InitialDelayedJoin: give the other members of a starting group a moment
            self.initial_delay_until_ms = min(now_ms + self.limits.initial_rebalance_delay_ms,
                                              self.rebalance_deadline_ms)
        self._transition(PREPARING_REBALANCE, now_ms)
        return out

    def _rebalance(self, now_ms: int) -> list[Action]:
        return self._prepare_rebalance(now_ms) + self._maybe_complete_join(now_ms)

    def _maybe_complete_join(self, now_ms: int) -> list[Action]:
        if self.state != PREPARING_REBALANCE:
            return []
        all_joined = not self.pending_members and all(m.join_token is not None for m in self.members.values())
        delayed = now_ms < self.initial_delay_until_ms
        if not self.members or (all_joined and not delayed) or now_ms >= self.rebalance_deadline_ms:
            return self._complete_join(now_ms)
        return []

    def _complete_join(self, now_ms: int) -> list[Action]:
        out: list[Action] = []
        for m in list(self.members.values()):
            # members that did not rejoin in time are dropped; static ones keep their place (KIP-345)
            if m.join_token is None and m.group_instance_id is None:
                out += self._remove(m)
        self.generation_id += 1
        self.initial_delay_until_ms = 0
        if not self.members:
            self.protocol_name = None
            self.leader_id = None
            self._transition(EMPTY, now_ms)
            return [*out, Persist(self.group_id, self.to_value(), (), self.generation_id)]
        self.protocol_name = self.select_protocol()
        if self.leader_id not in self.members:
            joined = [m.member_id for m in self.members.values() if m.join_token is not None]
            self.leader_id = joined[0] if joined else next(iter(self.members))
        self._transition(COMPLETING_REBALANCE, now_ms)
        replies = []
        for m in self.members.values():
            m.assignment = b""
            m.heartbeat_deadline_ms = now_ms + m.session_timeout_ms
            if m.join_token is not None:
                replies.append(Reply(m.join_token, self._join_result(m)))
                m.join_token = None
        return [*out, Persist(self.group_id, self.to_value(), tuple(replies), self.generation_id)]

    def _transition(self, state: str, now_ms: int) -> None:
        self.state = state
        self.state_timestamp_ms = now_ms

    def persist_failed(self, now_ms: int, generation_id: int) -> list[Action]:
        """The record of `generation_id` could not be written: its members must rejoin."""
        if generation_id != self.generation_id or self.state not in (COMPLETING_REBALANCE, STABLE):
            return []
        for m in self.members.values():
            m.assignment = b""
        return self._prepare_rebalance(now_ms) + self._maybe_complete_join(now_ms)

    # ------------------------------------------------------------------ SyncGroup
    def sync(self, now_ms: int, token: int, member_id: str, instance_id: str | None, generation_id: int,
             protocol_type: str | None, protocol_name: str | None,
             assignments: Sequence[tuple[str, bytes]]) -> list[Action]:
        error = self._check_generation(member_id, instance_id, generation_id)
        if not error and ((protocol_type is not None and protocol_type != self.protocol_type)
                          or (protocol_name is not None and protocol_name != self.protocol_name)):
            error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if not error and self.state == PREPARING_REBALANCE:
            error = ErrorCode.REBALANCE_IN_PROGRESS
        if error:
            return [Reply(token, sync_body(error))]
        member = self.members[member_id]
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if self.state == STABLE:
            return [Reply(token, self._sync_result(member))]
        assert self.state == COMPLETING_REBALANCE, self.state
        out: list[Action] = []
        if member.sync_token is not None:
            out.append(Reply(member.sync_token, sync_body(ErrorCode.REBALANCE_IN_PROGRESS)))
        member.sync_token = token
        if member_id != self.leader_id:
            return out
        given = dict(assignments)
        if any(len(a) > self.limits.assignment_bytes_max for a in given.values()):
            member.sync_token = None
            return [*out, Reply(token, sync_body(ErrorCode.INVALID_REQUEST))]
        for m in self.members.values():
            m.assignment = given.get(m.member_id, b"")
        self._transition(STABLE, now_ms)
        replies = []
        for m in self.members.values():
            if m.sync_token is not None:
                replies.append(Reply(m.sync_token, self._sync_result(m)))
                m.sync_token = None
        return [*out, Persist(self.group_id, self.to_value(), tuple(replies), self.generation_id)]

    def _sync_result(self, member: Member) -> dict[str, Any]:
        return sync_body(ErrorCode.NONE, member.assignment, self.protocol_type, self.protocol_name)

    def _check_generation(self, member_id: str, instance_id: str | None, generation_id: int) -> int:
        """Kafka's order: Dead, fenced static member, unknown member, generation, then Empty."""
        if self.state == DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = self._check_member(member_id, instance_id)
        if error:
            return error
        if generation_id != self.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if self.state == EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    # ------------------------------------------------------------------ Heartbeat, OffsetCommit checks
    def heartbeat(self, now_ms: int, member_id: str, instance_id: str | None, generation_id: int) -> int:
        error = self._check_generation(member_id, instance_id, generation_id)
        if error:
            return error
        member = self.members[member_id]
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if self.state == PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE  # Stable, or CompletingRebalance (a member between join and sync)

    def check_commit(self, now_ms: int, member_id: str, instance_id: str | None, generation_id: int) -> int:
        """May this OffsetCommit be written? Generation -1 on an Empty group: a standalone consumer
        (assign(), no group membership) that only stores offsets here."""
        if self.state == DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if instance_id is not None and self.static_members.get(instance_id, member_id) != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
        if generation_id < 0 and self.state == EMPTY:
            return ErrorCode.NONE
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation_id != self.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if self.state == COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        member = self.members[member_id]
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        return ErrorCode.NONE  # Stable or PreparingRebalance (commit before rejoining, as Kafka allows)

    # ------------------------------------------------------------------ LeaveGroup
    def leave(self, now_ms: int, leaving: Sequence[tuple[str, str | None]]) -> tuple[list[int], list[Action]]:
        """Per (member id, group instance id): its error; then the actions of the removals."""
        errors: list[int] = []
        out: list[Action] = []
        removed = False
        for member_id, instance_id in leaving:
            if self.state == DEAD:
                errors.append(ErrorCode.COORDINATOR_NOT_AVAILABLE)
                continue
            if instance_id is not None:
                known = self.static_members.get(instance_id)
                if known is None:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                    continue
                if member_id and known != member_id:
                    errors.append(ErrorCode.FENCED_INSTANCE_ID)
                    continue
                member_id = known
            if member_id in self.pending_members:
                del self.pending_members[member_id]
                errors.append(ErrorCode.NONE)
                removed = True
                continue
            member = self.members.get(member_id)
            if member is None:
                errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                continue
            out += self._remove(member)
            errors.append(ErrorCode.NONE)
            removed = True
        if removed:
            out += self._after_removal(now_ms)
        return errors, out

    def _remove(self, member: Member) -> list[Action]:
        out = self._answer_pending(member, ErrorCode.UNKNOWN_MEMBER_ID)
        del self.members[member.member_id]
        instance_id = member.group_instance_id
        if instance_id is not None and self.static_members.get(instance_id) == member.member_id:
            del self.static_members[instance_id]
        if self.leader_id == member.member_id:
            self.leader_id = next(iter(self.members), None)
        return out

    @staticmethod
    def _answer_pending(member: Member, error: int) -> list[Action]:
        out: list[Action] = []
        if member.join_token is not None:
            out.append(Reply(member.join_token, join_body(error, member.member_id)))
            member.join_token = None
        if member.sync_token is not None:
            out.append(Reply(member.sync_token, sync_body(error)))
            member.sync_token = None
        return out

    def _after_removal(self, now_ms: int) -> list[Action]:
        if self.state in (STABLE, COMPLETING_REBALANCE):
            return self._prepare_rebalance(now_ms) + self._maybe_complete_join(now_ms)
        return self._maybe_complete_join(now_ms)

    # ------------------------------------------------------------------ time
    def tick(self, now_ms: int) -> list[Action]:
        """Expire pending member ids and silent members; finish a join phase whose time is up."""
        out: list[Action] = []
        changed = False
        for member_id, expiry in list(self.pending_members.items()):
            if expiry <= now_ms:
                del self.pending_members[member_id]
                changed = True
        for m in list(self.members.values()):
            if m.join_token is None and m.sync_token is None and m.heartbeat_deadline_ms <= now_ms:
                out += self._remove(m)
                changed = True
        if changed:
            out += self._after_removal(now_ms)
        return out + self._maybe_complete_join(now_ms)

    # ------------------------------------------------------------------ deletion, records
    def mark_dead(self, now_ms: int) -> None:
        assert self.state == EMPTY, "only an Empty group is deleted"
        self._transition(DEAD, now_ms)

    def to_value(self) -> GroupValue:
        members = tuple(MemberValue(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                                    m.rebalance_timeout_ms, m.session_timeout_ms, m.metadata_for(self.protocol_name),
                                    m.assignment) for m in self.members.values())
        return GroupValue(self.protocol_type or "", self.generation_id, self.protocol_name, self.leader_id,
                          self.state_timestamp_ms, members)

    def value_size(self) -> int:
        """An upper estimate of the group record's size (bounded by limits.group_metadata_bytes_max)."""
        return sum(max((len(p) for _, p in m.protocols), default=0) + len(m.assignment) + MEMBER_RECORD_OVERHEAD_BYTES
                   for m in self.members.values())

    @classmethod
    def from_value(cls, group_id: str, value: GroupValue, limits: GroupLimits, now_ms: int) -> Group:
        """A group rebuilt from its last record by a new coordinator. With members it is Stable if
        the record carries the leader's assignment; a record written when a join phase completed
        (no assignment yet) is loaded as PreparingRebalance, so the members rejoin and get a new,
        higher generation instead of an empty assignment."""
        group = cls(group_id, limits)
        group.generation_id = value.generation_id
        group.protocol_type = value.protocol_type or None
        group.protocol_name = value.protocol_name
        group.leader_id = value.leader_id
        for mv in value.members:
            protocols = ((value.protocol_name, mv.subscription),) if value.protocol_name is not None else ()
            group.members[mv.member_id] = Member(
                mv.member_id, mv.group_instance_id, mv.client_id, mv.client_host, mv.session_timeout_ms,
                mv.rebalance_timeout_ms, protocols, mv.assignment,
                heartbeat_deadline_ms=now_ms + mv.session_timeout_ms)
            if mv.group_instance_id is not None:
                group.static_members[mv.group_instance_id] = mv.member_id
        if not group.members or value.protocol_name is None:
            group.members.clear()
            group.static_members.clear()
            group.leader_id = None
            group.protocol_name = None
            group._transition(EMPTY, now_ms)
        elif any(m.assignment for m in group.members.values()):
            group._transition(STABLE, now_ms)
        else:
            group._transition(COMPLETING_REBALANCE, now_ms)
            group._prepare_rebalance(now_ms)
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members), None)
        return group

    # ------------------------------------------------------------------ invariants (tests)
    def check_invariants(self) -> None:
        assert self.state in STATES
        assert (self.state in (EMPTY, DEAD)) == (not self.members), (self.state, list(self.members))
        if self.state in (COMPLETING_REBALANCE, STABLE):
            assert self.leader_id in self.members, (self.leader_id, list(self.members))
            assert self.protocol_name is not None
        assert len(self.members) <= self.limits.members_max
        assert len(self.pending_members) <= self.limits.members_max
        for m in self.members.values():
            if m.join_token is not None:
                assert self.state == PREPARING_REBALANCE, (m.member_id, self.state)
            if m.sync_token is not None:
                assert self.state == COMPLETING_REBALANCE, (m.member_id, self.state)
        for instance, member_id in self.static_members.items():
            assert self.members[member_id].group_instance_id == instance


@dataclass
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int
    record_offset: int  # where its record is in __consumer_offsets: a later record wins


@dataclass
class GroupOffsets:
    """The committed offsets of one group: (topic, partition) -> CommittedOffset."""

    offsets: dict[tuple[str, int], CommittedOffset] = field(default_factory=dict)

    def apply(self, tp: tuple[str, int], committed: CommittedOffset | None, record_offset: int) -> None:
        current = self.offsets.get(tp)
        if current is not None and current.record_offset > record_offset:
            return  # an older commit completing after a newer one
        if committed is None:
            self.offsets.pop(tp, None)
        else:
            self.offsets[tp] = committed
