"""DescribeQuorum (55) v0-2 on the Kafka listener of a single-node quorum broker (one voter), with
raw requests, and through kafka-python's KafkaAdminClient.describe_metadata_quorum (an independent
client). The three-node case (a follower forwarding to the active controller, observers) is in
tests/cluster/test_cluster_failover.py.
"""

from __future__ import annotations

import os
import time

import pytest
import test_protocol_helpers as helpers
from test_protocol_helpers import API_API_VERSIONS, KafkaConnection

from client.wire.errors import ErrorCode

shared_broker = helpers.shared_broker
conn = helpers.conn

pytestmark = pytest.mark.skipif(os.environ.get("REPLOG_TEST_QUORUM") == "0",
                                reason="DescribeQuorum: quorum mode only (REPLOG_TEST_QUORUM=0 runs --no-quorum)")

API_DESCRIBE_QUORUM = 55


def describe(conn: KafkaConnection, version: int, partitions: list[tuple[str, int]]) -> dict:
    topics: dict[str, list[int]] = {}
    for name, index in partitions:
        topics.setdefault(name, []).append(index)
    body = {"topics": [{"topic_name": n, "partitions": [{"partition_index": i} for i in ps]}
                       for n, ps in topics.items()]}
    return conn.request(API_DESCRIBE_QUORUM, version, body)


def test_describe_quorum_is_advertised(conn: KafkaConnection) -> None:
    body = conn.request(API_API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
    table = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
    assert table[API_DESCRIBE_QUORUM] == (0, 2)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_describe_quorum_of_a_one_voter_quorum(conn: KafkaConnection, shared_broker, version: int) -> None:
    before = int(time.time() * 1000)
    body = describe(conn, version, [("__cluster_metadata", 0)])
    assert body["error_code"] == 0
    (topic,) = body["topics"]
    assert topic["topic_name"] == "__cluster_metadata"
    (part,) = topic["partitions"]
    assert part["partition_index"] == 0 and part["error_code"] == 0
    assert part["leader_id"] == 1 and part["leader_epoch"] >= 1
    (voter,) = part["current_voters"]
    assert voter["replica_id"] == 1
    assert voter["log_end_offset"] >= part["high_watermark"] >= 1
    assert part["observers"] == []
    if version >= 1:
        assert voter["last_fetch_timestamp"] >= before - 1000 and voter["last_caught_up_timestamp"] >= before - 1000
    if version >= 2:
        (node,) = body["nodes"]
        assert node["node_id"] == 1
        (listener,) = node["listeners"]
        assert listener["host"] == "127.0.0.1" and listener["port"] == shared_broker.controller_port


def test_other_partitions_are_unknown(conn: KafkaConnection) -> None:
    body = describe(conn, 2, [("__cluster_metadata", 1), ("orders", 0), ("__cluster_metadata", 0)])
    assert body["error_code"] == 0
    got = {(t["topic_name"], p["partition_index"]): p["error_code"] for t in body["topics"] for p in t["partitions"]}
    assert got == {("__cluster_metadata", 1): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                   ("orders", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ("__cluster_metadata", 0): 0}


def test_kafka_python_admin_describes_the_quorum(shared_broker) -> None:
    admin_mod = pytest.importorskip("kafka.admin")
    admin = admin_mod.KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=10_000)
    try:
        result = admin.describe_metadata_quorum()
    finally:
        admin.close()
    (topic,) = result["topics"]
    (part,) = topic["partitions"]
    assert topic["topic_name"] == "__cluster_metadata" and part["leader_id"] == 1, result
    assert [v["replica_id"] for v in part["current_voters"]] == [1]
    assert result["nodes"][0]["listeners"][0]["port"] == shared_broker.controller_port
