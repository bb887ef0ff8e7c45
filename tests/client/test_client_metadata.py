"""client.metadata (the cache), client.cluster.negotiate (version choice) and client.errors (outcomes)."""

from __future__ import annotations

import pytest

from client.cluster import CLIENT_API_VERSIONS, negotiate, parse_bootstrap
from client.errors import (
    InvalidReplicationFactorError,
    NotAppendedError,
    TopicAlreadyExistsError,
    UnknownOutcomeError,
    attempt_maybe_appended,
    broker_error,
)
from client.metadata import MetadataCache
from client.wire.errors import ErrorCode


def _response(epoch: int, leader: int = 1, topics: tuple[str, ...] = ("t",)) -> dict:
    return {"brokers": [{"node_id": 1, "host": "h1", "port": 1}, {"node_id": 2, "host": "h2", "port": 2}],
            "cluster_id": "c", "controller_id": 2,
            "topics": [{"error_code": 0, "name": name, "is_internal": False, "partitions": [
                {"error_code": 0, "partition_index": 0, "leader_id": leader, "leader_epoch": epoch,
                 "replica_nodes": [1, 2], "isr_nodes": [1, 2], "offline_replicas": []}]} for name in topics]}


def test_the_cache_keeps_leaders_and_epochs_and_ignores_stale_epochs() -> None:
    cache = MetadataCache()
    cache.update(_response(epoch=5, leader=1), now_ms=1)
    assert cache.leader(("t", 0)) == 1 and cache.leader_epoch(("t", 0)) == 5
    assert cache.controller_id == 2 and cache.cluster_id == "c" and cache.partition_count("t") == 1
    cache.update(_response(epoch=4, leader=2), now_ms=2)  # a stale broker's view
    assert cache.leader(("t", 0)) == 1 and cache.leader_epoch(("t", 0)) == 5
    cache.update(_response(epoch=6, leader=2), now_ms=3)
    assert cache.leader(("t", 0)) == 2 and cache.leader_epoch(("t", 0)) == 6
    cache.forget_leader(("t", 0))
    assert cache.leader(("t", 0)) == -1
    assert cache.leader(("other", 0)) == -1 and cache.partition_count("other") is None


def test_topic_errors_are_remembered() -> None:
    cache = MetadataCache()
    body = _response(epoch=0)
    body["topics"].append({"error_code": 3, "name": "missing", "partitions": []})
    cache.update(body, now_ms=1)
    assert cache.topic_error("missing") == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert cache.topic_error("t") == ErrorCode.NONE
    assert cache.topic_error("never-asked") is None
    assert cache.partition_count("missing") is None


def test_negotiation_picks_the_highest_common_version() -> None:
    broker = [{"api_key": 0, "min_version": 0, "max_version": 8}, {"api_key": 1, "min_version": 4, "max_version": 16},
              {"api_key": 3, "min_version": 0, "max_version": 3}, {"api_key": 999, "min_version": 0, "max_version": 1}]
    chosen = negotiate(broker)
    assert chosen[0] == 8                               # broker's max below ours
    assert chosen[1] == CLIENT_API_VERSIONS[1][1] == 12  # ours below the broker's (no topic ids)
    assert 3 not in chosen                              # Metadata 0-3 does not overlap our 4+
    assert 999 not in chosen


def test_bootstrap_parsing() -> None:
    assert parse_bootstrap("a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_bootstrap(["[::1]:9092"]) == [("::1", 9092)]
    with pytest.raises(ValueError):
        parse_bootstrap("nohost")


def test_attempt_outcomes_follow_the_contract() -> None:
    # after-append or unknown: the safe side
    for code in (ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, ErrorCode.REQUEST_TIMED_OUT,
                 ErrorCode.UNKNOWN_SERVER_ERROR, ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.UNKNOWN_MEMBER_ID):
        assert attempt_maybe_appended(code, acks=-1) and attempt_maybe_appended(code, acks=1), code
    # refused before append
    for code in (ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.INVALID_RECORD,
                 ErrorCode.CORRUPT_MESSAGE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                 ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER):
        assert not attempt_maybe_appended(code, acks=-1), code
    # a demoted leader completes a waiting acks=all produce with NOT_LEADER_OR_FOLLOWER after appending
    assert attempt_maybe_appended(ErrorCode.NOT_LEADER_OR_FOLLOWER, acks=-1)
    assert not attempt_maybe_appended(ErrorCode.NOT_LEADER_OR_FOLLOWER, acks=1)


def test_errors_carry_code_and_message_and_say_the_outcome() -> None:
    error = broker_error(36, "Topic 'x' already exists.", context="create topic x")
    assert isinstance(error, TopicAlreadyExistsError) and error.code == ErrorCode.TOPIC_ALREADY_EXISTS
    assert "already exists" in str(error) and "create topic x" in str(error)
    assert isinstance(broker_error(38), InvalidReplicationFactorError)
    assert broker_error(12345).code == ErrorCode.UNKNOWN_SERVER_ERROR
    assert NotAppendedError("x", 19).definitely_not_appended is True
    assert UnknownOutcomeError("x", 20).definitely_not_appended is False
