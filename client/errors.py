"""Client exceptions, and the delivery-outcome contract of a failed send.

Three families (ARCHITECTURE.md §3 rule 2):

- `KafkaError` (from client.wire.errors) carries a Kafka error code. `BrokerResponseError` and its
  per-code subclasses are codes a broker answered with (`broker_error(code, message)` picks the
  class); `KafkaConnectionError` (NETWORK_EXCEPTION) and `KafkaTimeoutError` (REQUEST_TIMED_OUT)
  are the client's own view of a connection or deadline failure; `IncompatibleBrokerError`
  (UNSUPPORTED_VERSION) means no API version both sides implement.
- `DeliveryError` is how a produced record fails. It answers the question RELIABILITY.md asks of
  every failed send ("The history a test records"):

  * `NotAppendedError` (`definitely_not_appended` True): no attempt of this record can have been
    appended. It was never written to a connection, or every attempt was refused by a broker
    *before* appending (a validation error, not the leader for acks=0/1, NOT_ENOUGH_REPLICAS...).
  * `UnknownOutcomeError` (`definitely_not_appended` False): some attempt may have been appended:
    the connection was lost or the request timed out after the request was written, the broker
    answered NOT_ENOUGH_REPLICAS_AFTER_APPEND or REQUEST_TIMED_OUT, or the delivery timeout
    expired while a request was in flight. Once an attempt's fate is unknown, every later failure
    of the same record is unknown too.

  `code` is the Kafka error of the last attempt (NETWORK_EXCEPTION / REQUEST_TIMED_OUT for
  client-side failures), `__cause__` the underlying exception.
- `ClientError`: local misuse or state, no Kafka code: `BufferFullError` (backpressure),
  `ClientClosedError`.
"""

from __future__ import annotations

from client.wire.errors import ErrorCode, KafkaError, error_code_for

__all__ = [
    "BrokerResponseError", "BufferFullError", "ClientClosedError", "ClientError", "CorruptRecordError",
    "DeliveryError", "ErrorCode", "IncompatibleBrokerError", "InvalidConfigError", "InvalidPartitionsError",
    "InvalidReplicationFactorError", "KafkaConnectionError", "KafkaError", "KafkaTimeoutError",
    "MessageTooLargeError", "NoBrokersAvailableError", "NoOffsetForPartitionError", "NotAppendedError",
    "NotControllerError", "NotLeaderOrFollowerError", "OffsetOutOfRangeError", "TopicAlreadyExistsError",
    "UnknownOutcomeError", "UnknownTopicOrPartitionError", "attempt_maybe_appended", "broker_error",
]


class BrokerResponseError(KafkaError):
    """A broker answered with this error code (and maybe a message)."""


class UnknownTopicOrPartitionError(BrokerResponseError):
    default_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class OffsetOutOfRangeError(BrokerResponseError):
    """A fetch position outside [log start, log end] with auto_offset_reset="none"."""

    default_code = ErrorCode.OFFSET_OUT_OF_RANGE


class CorruptRecordError(BrokerResponseError):
    """A fetched batch failed its CRC-32C or could not be decoded."""

    default_code = ErrorCode.CORRUPT_MESSAGE


class MessageTooLargeError(BrokerResponseError):
    default_code = ErrorCode.MESSAGE_TOO_LARGE


class NotLeaderOrFollowerError(BrokerResponseError):
    default_code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class NotControllerError(BrokerResponseError):
    default_code = ErrorCode.NOT_CONTROLLER


class TopicAlreadyExistsError(BrokerResponseError):
    default_code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(BrokerResponseError):
    default_code = ErrorCode.INVALID_PARTITIONS


class InvalidReplicationFactorError(BrokerResponseError):
    default_code = ErrorCode.INVALID_REPLICATION_FACTOR


class InvalidConfigError(BrokerResponseError):
    default_code = ErrorCode.INVALID_CONFIG


_BY_CODE: dict[ErrorCode, type[BrokerResponseError]] = {
    cls.default_code: cls for cls in (
        UnknownTopicOrPartitionError, OffsetOutOfRangeError, CorruptRecordError, MessageTooLargeError,
        NotLeaderOrFollowerError, NotControllerError, TopicAlreadyExistsError, InvalidPartitionsError,
        InvalidReplicationFactorError, InvalidConfigError)
}


def broker_error(code: int, message: str | None = None, *, context: str = "") -> BrokerResponseError:
    """The exception for a broker's error code: a per-code subclass where one exists."""
    error = error_code_for(code)
    text = message or error.name
    if context:
        text = f"{context}: {text}"
    cls = _BY_CODE.get(error, BrokerResponseError)
    return cls(text, code=error)


class KafkaConnectionError(KafkaError):
    """Could not connect, or the connection broke (NETWORK_EXCEPTION, retriable)."""

    default_code = ErrorCode.NETWORK_EXCEPTION


class NoBrokersAvailableError(KafkaConnectionError):
    """No bootstrap or known broker accepted a connection."""


class KafkaTimeoutError(KafkaError):
    """A client-side deadline passed (request, metadata, delivery or api timeout)."""

    default_code = ErrorCode.REQUEST_TIMED_OUT


class IncompatibleBrokerError(KafkaError):
    """The broker does not serve any version of an API this client implements."""

    default_code = ErrorCode.UNSUPPORTED_VERSION


class NoOffsetForPartitionError(KafkaError):
    """An assigned partition has no position and auto_offset_reset is "none"."""

    default_code = ErrorCode.OFFSET_OUT_OF_RANGE


class DeliveryError(KafkaError):
    """A produced record failed. `definitely_not_appended` is the outcome contract (module docstring)."""

    definitely_not_appended: bool = False

    def __init__(self, message: str, code: ErrorCode | int | None = None, *, topic: str = "",
                 partition: int = -1, attempts: int = 0) -> None:
        super().__init__(message, code)
        self.topic = topic
        self.partition = partition
        self.attempts = attempts

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.code.name}: {self}; topic={self.topic!r} partition={self.partition} "
                f"attempts={self.attempts})")


class NotAppendedError(DeliveryError):
    """The record was definitely not appended (never sent, or refused before append)."""

    definitely_not_appended = True


class UnknownOutcomeError(DeliveryError):
    """The record may or may not have been appended."""

    definitely_not_appended = False


class ClientError(Exception):
    """Local misuse or state of a client object (no Kafka error code)."""


class BufferFullError(ClientError):
    """`buffer_memory` is exhausted: the record was not enqueued (use send_when_ready to wait)."""


class ClientClosedError(ClientError):
    """The client was closed."""


# Produce partition errors that a broker may return *after* appending the batch locally, so the
# attempt's fate is unknown (RELIABILITY.md "info"):
# - REQUEST_TIMED_OUT: acks=all not satisfied in time; the batch is in the leader's log.
# - NOT_ENOUGH_REPLICAS_AFTER_APPEND: the ISR shrank after the append.
# - UNKNOWN_SERVER_ERROR / KAFKA_STORAGE_ERROR / NETWORK_EXCEPTION: a failure somewhere in or
#   after the write path; we cannot prove it happened before the append.
# - NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH with acks=all: Kafka's DelayedProduce completes a
#   waiting acks=all produce with NOT_LEADER_OR_FOLLOWER when the leader is demoted after the
#   append (ReplicaManager/Partition.checkEnoughReplicasReachOffset); the record is in the old
#   leader's log and may survive in the new leader's.
# Any code not known to be a pre-append refusal counts as unknown (the safe side).
_AFTER_APPEND_ALWAYS = frozenset({
    ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, ErrorCode.UNKNOWN_SERVER_ERROR,
    ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.NETWORK_EXCEPTION,
})
_AFTER_APPEND_WITH_ACKS_ALL = frozenset({ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH})
# Codes a broker returns for a partition before it appends anything [ak ReplicaManager.appendToLocalLog,
# LogValidator, UnifiedLog.analyzeAndValidateProducerState; broker/handlers/produce.py].
_BEFORE_APPEND = frozenset({
    ErrorCode.CORRUPT_MESSAGE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_LEADER_EPOCH,
    ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE, ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.INVALID_REQUIRED_ACKS, ErrorCode.TOPIC_AUTHORIZATION_FAILED, ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
    ErrorCode.INVALID_TIMESTAMP, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.INVALID_TOPIC_EXCEPTION,
    ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, ErrorCode.POLICY_VIOLATION, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
    ErrorCode.INVALID_PRODUCER_EPOCH, ErrorCode.UNKNOWN_PRODUCER_ID, ErrorCode.INVALID_RECORD,
    ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_ID_MAPPING,
    ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, ErrorCode.INVALID_TXN_STATE, ErrorCode.THROTTLING_QUOTA_EXCEEDED,
})


def attempt_maybe_appended(code: ErrorCode, acks: int) -> bool:
    """Whether a Produce attempt answered with `code` for a partition may have appended the batch."""
    if code in _AFTER_APPEND_ALWAYS:
        return True
    if acks == -1 and code in _AFTER_APPEND_WITH_ACKS_ALL:
        return True
    return code not in _BEFORE_APPEND
