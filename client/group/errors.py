"""Exceptions of the consumer-group client (KafkaError subclasses, so brokerctl's boundary reports them).

- `CommitFailedError`: an OffsetCommit was refused because the member's generation ended
  (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID): the partitions may now belong to
  another member, which resumes from the last successful commit (at-least-once). As Java's
  CommitFailedException / RebalanceInProgressException.
- `GroupFatalError`: the group refused this member for good (INCONSISTENT_GROUP_PROTOCOL,
  FENCED_INSTANCE_ID, INVALID_SESSION_TIMEOUT, ...); raised from every later poll.
"""

from __future__ import annotations

from client.wire.errors import ErrorCode, KafkaError

__all__ = ["CommitFailedError", "GroupFatalError"]


class CommitFailedError(KafkaError):
    default_code = ErrorCode.ILLEGAL_GENERATION


class GroupFatalError(KafkaError):
    default_code = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
