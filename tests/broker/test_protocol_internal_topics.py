"""__consumer_offsets belongs to the group coordinator: clients cannot produce to it, delete it, or
auto-create it with the wrong configs (Kafka: INVALID_TOPIC_EXCEPTION for writes to internal topics)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from brokerproc import BrokerProcess, free_port
from groups_helpers import find_coordinator
from test_protocol_helpers import API_DELETE_TOPICS, API_METADATA, KafkaConnection, batch, produce

from client.wire.errors import ErrorCode

OFFSETS_TOPIC = "__consumer_offsets"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(str(tmp_path_factory.mktemp("internal") / "data"), free_port(), [])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _metadata(conn: KafkaConnection, name: str) -> dict:
    body = conn.request(API_METADATA, 8, {"topics": [{"name": name}], "allow_auto_topic_creation": True,
                                          "include_cluster_authorized_operations": False,
                                          "include_topic_authorized_operations": False})
    return body["topics"][0]


def test_metadata_does_not_auto_create_the_offsets_topic(broker: BrokerProcess) -> None:
    with KafkaConnection(broker.bootstrap) as conn:
        topic = _metadata(conn, OFFSETS_TOPIC)
        if topic["error_code"] == 0:  # another test created it through FindCoordinator
            assert topic["is_internal"] is True
        else:
            assert topic["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_produce_and_delete_of_the_offsets_topic_are_refused(broker: BrokerProcess) -> None:
    with KafkaConnection(broker.bootstrap) as conn:
        assert find_coordinator(conn, "internal-g")["error_code"] == 0  # creates __consumer_offsets
        topic = _metadata(conn, OFFSETS_TOPIC)
        assert topic["error_code"] == 0 and topic["is_internal"] is True
        assert produce(conn, OFFSETS_TOPIC, batch(1), 0)["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        body = conn.request(API_DELETE_TOPICS, 3, {"topic_names": [OFFSETS_TOPIC], "timeout_ms": 5000})
        assert body["responses"][0]["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert _metadata(conn, OFFSETS_TOPIC)["error_code"] == 0
