"""The sans-IO state of one classic-protocol group member: requests out, responses in, reactions.

No sockets, no clocks, no asyncio: the driver (coordinator.py) passes responses and `now_ms` in
and does what the returned `Reaction` says. The protocol is Kafka's classic group protocol
[S: ak clients/.../consumer/internals/AbstractCoordinator.java; kafka.apache.org/protocol;
KIP-394 (MEMBER_ID_REQUIRED), KIP-345 (static membership)]:

    UNJOINED --JoinGroup--> (MEMBER_ID_REQUIRED: take the id, JoinGroup again at once)
             --JoinGroup ok--> SYNCING (generation, protocol, leader known; the leader assigns)
             --SyncGroup ok--> STABLE (assignment known; heartbeats every heartbeat_interval_ms)
    STABLE --Heartbeat REBALANCE_IN_PROGRESS / need_rejoin--> UNJOINED (JoinGroup with our member id)

Reactions to error codes (every group response and OffsetCommit):

- NONE: carry on.
- COORDINATOR_LOAD_IN_PROGRESS: RETRY the same step after the backoff.
- COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, a lost or timed-out connection: REDISCOVER
  (FindCoordinator, then redo the step; a heartbeat just continues).
- REBALANCE_IN_PROGRESS: REJOIN now, member id and generation kept (the generation stays valid
  for the commit before revoking; JoinGroup sends the member id). In a JoinGroup answer: RETRY.
- ILLEGAL_GENERATION: generation reset, REJOIN; the partitions are *lost* (no commit on revoke).
- UNKNOWN_MEMBER_ID: member id and generation reset, REJOIN; partitions lost.
- MEMBER_ID_REQUIRED (JoinGroup v4+): take the member id from the response, JoinGroup again now.
- FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL, INVALID_SESSION_TIMEOUT, INVALID_GROUP_ID,
  GROUP_AUTHORIZATION_FAILED, GROUP_MAX_SIZE_REACHED, any other non-retriable code: FATAL (raised
  to the application from poll).
- any other retriable code: RETRY.

Invariants: `generation_id >= 0` exactly when the member has joined a generation (SYNCING or
STABLE); the assignment belongs to `generation_id`; `member_id` is "" only before the first join
or after UNKNOWN_MEMBER_ID.

Timers (all in ms of the driver's clock): a heartbeat is due `heartbeat_interval_ms` after the
last one was sent; the session is considered lost locally when no heartbeat succeeded for
`session_timeout_ms` (then the member rejoins, as the coordinator has evicted it by then).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from client.group.protocol import CONSUMER_PROTOCOL_TYPE
from client.wire.errors import ErrorCode, error_code_for

__all__ = ["Action", "MemberState", "Membership", "Reaction", "reaction_for"]


class MemberState(enum.Enum):
    UNJOINED = "unjoined"
    SYNCING = "syncing"
    STABLE = "stable"


class Action(enum.Enum):
    NONE = "none"
    RETRY = "retry"
    REDISCOVER = "rediscover"
    REJOIN = "rejoin"
    FATAL = "fatal"


@dataclass(frozen=True)
class Reaction:
    action: Action
    code: ErrorCode = ErrorCode.NONE
    lost: bool = False  # the member's partitions are no longer its own: revoke without committing


_FATAL = frozenset({
    ErrorCode.FENCED_INSTANCE_ID, ErrorCode.INCONSISTENT_GROUP_PROTOCOL, ErrorCode.INVALID_SESSION_TIMEOUT,
    ErrorCode.INVALID_GROUP_ID, ErrorCode.GROUP_AUTHORIZATION_FAILED, ErrorCode.GROUP_MAX_SIZE_REACHED,
})
_REDISCOVER = frozenset({ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NOT_COORDINATOR})


def reaction_for(code: int) -> Reaction:
    """The reaction to `code` in a JoinGroup/SyncGroup/Heartbeat/OffsetCommit answer (module table)."""
    error = error_code_for(code)
    if error == ErrorCode.NONE:
        return Reaction(Action.NONE)
    if error == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS:
        return Reaction(Action.RETRY, error)
    if error in _REDISCOVER:
        return Reaction(Action.REDISCOVER, error)
    if error in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.MEMBER_ID_REQUIRED):
        return Reaction(Action.REJOIN, error)
    if error in (ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID):
        return Reaction(Action.REJOIN, error, lost=True)
    if error in _FATAL or not error.retriable:
        return Reaction(Action.FATAL, error)
    return Reaction(Action.RETRY, error)


class Membership:
    """One member's group state (module docstring). `protocols` are (name, metadata bytes) in preference order."""

    def __init__(self, group_id: str, *, session_timeout_ms: int, rebalance_timeout_ms: int,
                 heartbeat_interval_ms: int, group_instance_id: str | None = None) -> None:
        if not group_id:
            raise ValueError("group_id must not be empty")
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.member_id = ""
        self.generation_id = -1
        self.protocol_name: str | None = None
        self.leader_id = ""
        self.members: list[dict[str, Any]] = []  # JoinGroup's member list (the leader's only)
        self.state = MemberState.UNJOINED
        self.last_heartbeat_sent_ms = 0
        self.last_heartbeat_ok_ms = 0

    # ------------------------------------------------------------------ queries
    @property
    def is_leader(self) -> bool:
        return self.state != MemberState.UNJOINED and self.member_id == self.leader_id

    def heartbeat_due_in_ms(self, now_ms: int) -> int:
        return max(self.last_heartbeat_sent_ms + self.heartbeat_interval_ms - now_ms, 0)

    def session_expired(self, now_ms: int) -> bool:
        return self.state == MemberState.STABLE and now_ms - self.last_heartbeat_ok_ms >= self.session_timeout_ms

    # ------------------------------------------------------------------ transitions
    def reset_generation(self, *, forget_member_id: bool) -> None:
        self.generation_id = -1
        self.protocol_name = None
        self.leader_id = ""
        self.members = []
        self.state = MemberState.UNJOINED
        if forget_member_id:
            self.member_id = ""

    def _apply_rejoin(self, reaction: Reaction) -> Reaction:
        # REBALANCE_IN_PROGRESS keeps the generation: it stays valid until the member rejoins, so
        # the commit before revoking (Java's onPartitionsRevoked commit) is still accepted.
        if reaction.action == Action.REJOIN and reaction.lost:
            self.reset_generation(forget_member_id=reaction.code == ErrorCode.UNKNOWN_MEMBER_ID)
        return reaction

    # ------------------------------------------------------------------ JoinGroup
    def join_request(self, protocols: Sequence[tuple[str, bytes]], reason: str | None = None) -> dict[str, Any]:
        self.state = MemberState.UNJOINED
        return {"group_id": self.group_id, "session_timeout_ms": self.session_timeout_ms,
                "rebalance_timeout_ms": self.rebalance_timeout_ms, "member_id": self.member_id,
                "group_instance_id": self.group_instance_id, "protocol_type": CONSUMER_PROTOCOL_TYPE,
                "protocols": [{"name": n, "metadata": m} for n, m in protocols], "reason": reason}

    def on_join_response(self, response: Mapping[str, Any], now_ms: int) -> Reaction:
        code = error_code_for(response["error_code"])
        if code == ErrorCode.MEMBER_ID_REQUIRED:
            self.member_id = response["member_id"]
            return Reaction(Action.REJOIN, code)
        reaction = reaction_for(code)
        if reaction.action != Action.NONE:
            # a rejected JoinGroup leaves the member unjoined whatever the code; REBALANCE_IN_PROGRESS
            # here is retried after the backoff (Java's JoinGroupResponseHandler)
            self.reset_generation(forget_member_id=code == ErrorCode.UNKNOWN_MEMBER_ID)
            return Reaction(Action.RETRY, code) if code == ErrorCode.REBALANCE_IN_PROGRESS else reaction
        self.member_id = response["member_id"]
        self.generation_id = response["generation_id"]
        self.protocol_name = response["protocol_name"]
        self.leader_id = response["leader"]
        self.members = list(response["members"]) if self.member_id == self.leader_id else []
        self.state = MemberState.SYNCING
        self.last_heartbeat_sent_ms = self.last_heartbeat_ok_ms = now_ms
        return reaction

    # ------------------------------------------------------------------ SyncGroup
    def sync_request(self, assignments: Mapping[str, bytes]) -> dict[str, Any]:
        assert self.state == MemberState.SYNCING, self.state
        return {"group_id": self.group_id, "generation_id": self.generation_id, "member_id": self.member_id,
                "group_instance_id": self.group_instance_id, "protocol_type": CONSUMER_PROTOCOL_TYPE,
                "protocol_name": self.protocol_name,
                "assignments": [{"member_id": m, "assignment": a} for m, a in assignments.items()]}

    def on_sync_response(self, response: Mapping[str, Any], now_ms: int) -> Reaction:
        code = error_code_for(response["error_code"])
        reaction = reaction_for(code)
        if reaction.action == Action.NONE:
            self.state = MemberState.STABLE
            self.members = []
            self.last_heartbeat_ok_ms = now_ms
            return reaction
        # any failed sync means joining again (after rediscovery or a backoff where that applies)
        self.reset_generation(forget_member_id=code == ErrorCode.UNKNOWN_MEMBER_ID)
        return reaction

    # ------------------------------------------------------------------ Heartbeat
    def heartbeat_request(self, now_ms: int) -> dict[str, Any]:
        self.last_heartbeat_sent_ms = now_ms
        return {"group_id": self.group_id, "generation_id": self.generation_id, "member_id": self.member_id,
                "group_instance_id": self.group_instance_id}

    def on_heartbeat_response(self, code: int, now_ms: int) -> Reaction:
        reaction = reaction_for(code)
        if reaction.action == Action.NONE:
            self.last_heartbeat_ok_ms = now_ms
        return self._apply_rejoin(reaction)

    def on_commit_error(self, code: int) -> Reaction:
        """An OffsetCommit partition error: generation problems end the member's generation too."""
        return self._apply_rejoin(reaction_for(code))

    # ------------------------------------------------------------------ LeaveGroup
    def leave_request(self, version: int, reason: str = "the consumer is closing") -> dict[str, Any]:
        body: dict[str, Any] = {"group_id": self.group_id, "member_id": self.member_id}
        if version >= 3:
            body["members"] = [{"member_id": self.member_id, "group_instance_id": self.group_instance_id,
                                "reason": reason}]
        return body

    def left(self) -> None:
        self.reset_generation(forget_member_id=True)
