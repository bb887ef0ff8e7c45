"""A failing disk takes only the affected partition offline: KAFKA_STORAGE_ERROR for it, service for the rest.

The broker runs in-process on a FaultyFileSystem (storage/files.py) so a write or fsync can be
made to fail for one partition's files; requests still go over a real socket.
"""

from __future__ import annotations

import errno

import pytest
from test_protocol_helpers import (
    API_FETCH,
    FETCH_V,
    InProcessBroker,
    KafkaConnection,
    batch,
    create_topic,
    fetch_body,
    fetch_partitions,
    produce,
)

from client.wire.errors import ErrorCode
from storage import FaultyFileSystem


@pytest.fixture
def faulty(tmp_path):
    fs = FaultyFileSystem(seed=3)
    broker = InProcessBroker(str(tmp_path / "data"), fs=fs)
    try:
        yield broker, fs
    finally:
        broker.stop()


@pytest.mark.parametrize("op,err", [("write", errno.ENOSPC), ("write", errno.EIO)])
def test_a_failed_write_takes_one_partition_offline(faulty, op, err) -> None:
    broker, fs = faulty
    with KafkaConnection(broker.bootstrap) as conn:
        create_topic(conn, "sick")
        create_topic(conn, "healthy")
        assert produce(conn, "sick", batch(3))["error_code"] == 0
        fs.fail_next(op, err, partial=True, path_contains="sick-0")
        assert produce(conn, "sick", batch(3))["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR
        # never retried as if it had worked: the partition stays offline
        assert produce(conn, "sick", batch(3))["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR
        fetched = fetch_partitions(conn.request(API_FETCH, FETCH_V, fetch_body("sick", {0: 0})))
        assert fetched[0]["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR
        assert bytes(fetched[0]["records"]) == b""
        metadata = conn.request(3, 8, {"topics": [{"name": "sick"}], "allow_auto_topic_creation": False})
        (part,) = metadata["topics"][0]["partitions"]
        assert part["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR and part["offline_replicas"] == [1]
        # the rest of the broker keeps serving
        for _ in range(3):
            assert produce(conn, "healthy", batch(2))["error_code"] == 0
        fetched = fetch_partitions(conn.request(API_FETCH, FETCH_V, fetch_body("healthy", {0: 0})))
        assert fetched[0]["error_code"] == 0 and fetched[0]["high_watermark"] == 6
