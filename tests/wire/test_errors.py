"""Kafka error codes: numbers, names and Java's retriability (KAFKA_PROTOCOL.md §6)."""

from __future__ import annotations

import pytest

from client.wire.errors import (
    CorruptRecordError,
    ErrorCode,
    InvalidRecordError,
    KafkaError,
    RecordTooLargeError,
    UncompressedSizeExceededError,
    UnsupportedCodecError,
    error_code_for,
)


@pytest.mark.parametrize("name, number, retriable, refresh", [
    ("UNKNOWN_SERVER_ERROR", -1, False, False),
    ("NONE", 0, False, False),
    ("OFFSET_OUT_OF_RANGE", 1, False, False),
    ("CORRUPT_MESSAGE", 2, True, False),  # retriable in Java, not in kafka-python
    ("UNKNOWN_TOPIC_OR_PARTITION", 3, True, True),
    ("LEADER_NOT_AVAILABLE", 5, True, True),
    ("NOT_LEADER_OR_FOLLOWER", 6, True, True),
    ("REQUEST_TIMED_OUT", 7, True, False),
    ("MESSAGE_TOO_LARGE", 10, False, False),
    ("COORDINATOR_LOAD_IN_PROGRESS", 14, True, False),
    ("COORDINATOR_NOT_AVAILABLE", 15, True, False),
    ("NOT_COORDINATOR", 16, True, False),
    ("NOT_ENOUGH_REPLICAS", 19, True, False),
    ("NOT_ENOUGH_REPLICAS_AFTER_APPEND", 20, True, False),
    ("ILLEGAL_GENERATION", 22, False, False),
    ("UNKNOWN_MEMBER_ID", 25, False, False),
    ("REBALANCE_IN_PROGRESS", 27, False, False),
    ("INVALID_TIMESTAMP", 32, False, False),
    ("UNSUPPORTED_VERSION", 35, False, False),
    ("TOPIC_ALREADY_EXISTS", 36, False, False),
    ("NOT_CONTROLLER", 41, True, False),
    ("INVALID_REQUEST", 42, False, False),
    ("OUT_OF_ORDER_SEQUENCE_NUMBER", 45, False, False),
    ("DUPLICATE_SEQUENCE_NUMBER", 46, False, False),
    ("INVALID_PRODUCER_EPOCH", 47, False, False),
    ("KAFKA_STORAGE_ERROR", 56, True, True),
    ("UNKNOWN_PRODUCER_ID", 59, False, False),
    ("FENCED_LEADER_EPOCH", 74, True, True),
    ("UNKNOWN_LEADER_EPOCH", 75, True, False),
    ("UNSUPPORTED_COMPRESSION_TYPE", 76, False, False),
    ("MEMBER_ID_REQUIRED", 79, False, False),
    ("INVALID_RECORD", 87, False, False),
    ("THROTTLING_QUOTA_EXCEEDED", 89, True, False),
    ("PRODUCER_FENCED", 90, False, False),
    ("UNKNOWN_TOPIC_ID", 100, True, True),
    ("FENCED_MEMBER_EPOCH", 110, False, False),
])
def test_numbers_names_and_flags(name: str, number: int, retriable: bool, refresh: bool) -> None:
    code = ErrorCode[name]
    assert int(code) == number and ErrorCode(number) is code
    assert code.retriable is retriable
    assert code.refresh_metadata is refresh


def test_table_is_dense_from_minus_one_to_120() -> None:
    assert sorted(int(c) for c in ErrorCode) == list(range(-1, 121))


def test_refresh_implies_retriable() -> None:
    assert all(code.retriable for code in ErrorCode if code.refresh_metadata)


def test_unknown_wire_values_map_to_unknown_server_error() -> None:
    assert error_code_for(87) is ErrorCode.INVALID_RECORD
    assert error_code_for(30_000) is ErrorCode.UNKNOWN_SERVER_ERROR


def test_kafka_error_carries_a_code() -> None:
    error = KafkaError("boom", code=6)
    assert error.code is ErrorCode.NOT_LEADER_OR_FOLLOWER and error.retriable
    assert str(error) == "boom" and "NOT_LEADER_OR_FOLLOWER" in repr(error)
    assert KafkaError("x").code is ErrorCode.UNKNOWN_SERVER_ERROR


@pytest.mark.parametrize("cls, code", [
    (CorruptRecordError, ErrorCode.CORRUPT_MESSAGE),
    (InvalidRecordError, ErrorCode.INVALID_RECORD),
    (UncompressedSizeExceededError, ErrorCode.INVALID_RECORD),
    (UnsupportedCodecError, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
    (RecordTooLargeError, ErrorCode.MESSAGE_TOO_LARGE),
])
def test_subclasses_fix_their_code(cls: type[KafkaError], code: ErrorCode) -> None:
    error = cls("why")
    assert isinstance(error, KafkaError) and error.code is code
    with pytest.raises(KafkaError):
        raise error
