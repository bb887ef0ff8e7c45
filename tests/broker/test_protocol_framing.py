"""Connection-level behaviour: malformed and oversized frames, pipelining order, acks=0.

Kafka's network model (broker/server.py docstring; kafka.apache.org/protocol.html "Network"):
requests of one connection are answered in order; bad input closes that connection only.
"""

from __future__ import annotations

import os
import select
import struct
import time

import pytest
import test_protocol_helpers as helpers
from test_protocol_helpers import (
    API_API_VERSIONS,
    API_FETCH,
    API_LIST_OFFSETS,
    API_METADATA,
    API_PRODUCE,
    FETCH_V,
    LIST_OFFSETS_V,
    METADATA_V,
    PRODUCE_V,
    KafkaConnection,
    batch,
    create_topic,
    fetch_body,
    fetch_partitions,
    list_offsets,
    produce_body,
    unique_topic,
)

from client.wire.protocol import encode_request

shared_broker = helpers.shared_broker
conn = helpers.conn

LATEST = -1


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _broker_serves(bootstrap: str) -> bool:
    with KafkaConnection(bootstrap) as other:
        return other.request(API_API_VERSIONS, 0, {})["error_code"] == 0


def _rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty-frame"),
    pytest.param(b"\x00\x03\x00\x08", id="header-cut-short"),
    pytest.param(struct.pack(">hhih", API_METADATA, METADATA_V, 1, 40) + b"abc", id="client-id-overruns"),
    pytest.param(struct.pack(">hhih", API_METADATA, METADATA_V, 1, -7), id="negative-client-id-length"),
    pytest.param(struct.pack(">hhih", API_METADATA, METADATA_V, 1, -1) + struct.pack(">i", 5), id="array-overruns"),
    pytest.param(struct.pack(">hhih", API_METADATA, METADATA_V, 1, -1) + struct.pack(">i", 0x7FFFFFFF),
                 id="huge-array-count"),
    pytest.param(struct.pack(">hhih", API_PRODUCE, PRODUCE_V, 1, -1) + struct.pack(">hhi", -1, 1, 100)
                 + struct.pack(">i", 1) + struct.pack(">h", 3) + b"abc" + struct.pack(">i", 1)
                 + struct.pack(">ii", 0, 1 << 30), id="records-length-overruns"),
])
def test_a_malformed_frame_closes_the_connection_and_the_broker_keeps_serving(
        shared_broker, payload: bytes) -> None:
    with KafkaConnection(shared_broker.bootstrap) as bystander, KafkaConnection(shared_broker.bootstrap) as bad:
        assert bystander.request(API_API_VERSIONS, 0, {})["error_code"] == 0
        bad.send_raw(_frame(payload))
        assert bad.wait_closed(), "the broker kept a connection that sent garbage"
        # a connection opened before and one opened after are both still served
        assert bystander.request(API_METADATA, METADATA_V, {"topics": []})["brokers"]
        assert _broker_serves(shared_broker.bootstrap)


def test_a_2_gib_length_prefix_closes_at_once_without_allocating(shared_broker) -> None:
    pid = shared_broker.pid
    peak_before = _rss_kib(pid, "VmHWM")
    with KafkaConnection(shared_broker.bootstrap) as bad:
        started = time.monotonic()
        bad.send_raw(struct.pack(">i", 0x7FFFFFFF))  # 2 GiB - 1: only the prefix is sent
        assert bad.wait_closed(timeout_s=5), "the broker waited for 2 GiB instead of closing"
        assert time.monotonic() - started < 2
    with KafkaConnection(shared_broker.bootstrap) as bad:
        bad.send_raw(struct.pack(">i", 104_857_601) + b"\x00" * 1000)  # socket.request.max.bytes + 1
        assert bad.wait_closed(timeout_s=5)
    assert _broker_serves(shared_broker.bootstrap)
    grown = _rss_kib(pid, "VmHWM") - peak_before
    assert grown < 64 * 1024, f"peak RSS grew by {grown} KiB"


def test_a_frame_split_into_single_bytes_is_reassembled(conn: KafkaConnection) -> None:
    data = encode_request(API_API_VERSIONS, 0, 77, "slow-writer", {}, framed=True)
    for i in range(len(data)):
        conn.send_raw(data[i:i + 1])
    assert conn.recv(API_API_VERSIONS, 0, 77)["error_code"] == 0


def test_pipelined_requests_are_answered_in_order(conn: KafkaConnection) -> None:
    """Twenty requests of several APIs written at once, one of them a long poll that must hold back
    everything behind it: the responses come back in request order."""
    topic = unique_topic("pipeline")
    create_topic(conn, topic)
    sent: list[tuple[int, int, int, int]] = []  # (correlation id, api key, version, log end offset after it)
    wire = b""
    cid = 1000
    end = 0
    for i in range(20):
        cid += 1
        kind = i % 5
        if kind == 0:
            end += 1 + i
            key, version, body = API_PRODUCE, PRODUCE_V, produce_body(topic, {0: batch(1 + i)})
        elif kind == 1:
            key, version, body = API_METADATA, METADATA_V, {"topics": [{"name": topic}]}
        elif kind == 2:
            key, version, body = API_API_VERSIONS, 0, {}
        elif kind == 3:  # a long poll at the log end: it holds back the produce behind it for 300 ms
            key, version, body = API_FETCH, FETCH_V, fetch_body(topic, {0: end}, max_wait_ms=300)
        else:
            key, version, body = API_LIST_OFFSETS, LIST_OFFSETS_V, {"replica_id": -1, "topics": [
                {"name": topic, "partitions": [{"partition_index": 0, "timestamp": LATEST}]}]}
        wire += encode_request(key, version, cid, "pipeliner", body, framed=True)
        sent.append((cid, key, version, end))
    conn.send_raw(wire)
    previous_end = 0
    for expected_cid, key, version, end in sent:
        body = conn.recv(key, version, expected_cid)  # asserts the correlation id
        if key == API_PRODUCE:  # each produce lands right after the previous one
            part = body["responses"][0]["partition_responses"][0]
            assert (part["error_code"], part["base_offset"]) == (0, previous_end)
        elif key == API_LIST_OFFSETS:  # sees exactly the produces sent before it
            assert body["topics"][0]["partitions"][0]["offset"] == end
        elif key == API_FETCH:  # the long poll timed out empty: later produces were not handled yet
            part = fetch_partitions(body)[0]
            assert (part["error_code"], part["high_watermark"], len(part["records"])) == (0, end, 0)
        previous_end = end


def test_acks_0_gets_no_response_and_the_next_response_matches_its_request(conn: KafkaConnection) -> None:
    topic = unique_topic("acks0")
    create_topic(conn, topic)
    conn.send(API_PRODUCE, PRODUCE_V, produce_body(topic, {0: batch(3)}, acks=0), correlation_id=500)
    cid = conn.send(API_METADATA, METADATA_V, {"topics": [{"name": topic}]}, correlation_id=501)
    frame = conn.recv_frame()
    assert helpers.correlation_of(frame) == cid == 501
    # the acks=0 data was written (the Metadata answer came after it, requests are handled in order)
    assert list_offsets(conn, topic, LATEST)["offset"] == 3
    # and nothing else is pending on the connection
    assert not select.select([conn.sock], [], [], 0.2)[0]


def test_fetch_from_a_closed_connection_is_dropped_quietly(shared_broker, conn: KafkaConnection) -> None:
    """A client that disconnects during a long poll must not break the broker."""
    topic = unique_topic("gone")
    create_topic(conn, topic)
    conn.send(API_FETCH, FETCH_V, fetch_body(topic, {0: 0}, max_wait_ms=5000))
    conn.close()
    with KafkaConnection(shared_broker.bootstrap) as other:
        assert fetch_partitions(other.request(API_FETCH, FETCH_V, fetch_body(topic, {0: 0})))[0]["error_code"] == 0
    assert os.path.exists(f"/proc/{shared_broker.pid}")


def test_a_clean_shutdown_with_connected_clients_logs_no_traceback(start_broker) -> None:
    """Clients are always connected when an operator stops a broker: idle ones, and ones in a long
    poll. Stopping must close them quietly (exit 0, no traceback in the log)."""
    broker = start_broker()
    idle = KafkaConnection(broker.bootstrap)
    polling = KafkaConnection(broker.bootstrap)
    try:
        assert idle.request(API_API_VERSIONS, 0, {})["error_code"] == 0
        topic = unique_topic("shutdown")
        create_topic(polling, topic)
        polling.send(API_FETCH, FETCH_V, fetch_body(topic, {0: 0}, max_wait_ms=20_000))
        assert not select.select([polling.sock], [], [], 0.1)[0]
        started = time.monotonic()
        assert broker.stop() == 0
        assert time.monotonic() - started < 5, "a long poll held up the shutdown"
        assert idle.wait_closed(timeout_s=2) and polling.wait_closed(timeout_s=2)
    finally:
        idle.close()
        polling.close()
    assert "stopped cleanly" in broker.log_text()
    helpers.assert_clean_log(broker)
