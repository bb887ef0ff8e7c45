"""Version negotiation on the wire: ApiVersions v0-v3, the error-35 fallback for newer ApiVersions,
Produce v0-2 answered with UNSUPPORTED_VERSION, and any other unsupported version closing the
connection (KAFKA_PROTOCOL.md §1.1, §2.2, §6 UNSUPPORTED_VERSION; broker/server.py).
"""

from __future__ import annotations

import struct

import pytest
import test_protocol_helpers as helpers
from test_protocol_helpers import (
    API_API_VERSIONS,
    API_FETCH,
    API_METADATA,
    API_PRODUCE,
    KafkaConnection,
    batch,
    create_topic,
    fetch_body,
    produce_body,
    unique_topic,
)

from client.wire.errors import ErrorCode
from client.wire.protocol import decode_response, encode_request

shared_broker = helpers.shared_broker  # fixtures: one brokerd for this module, a connection per test
conn = helpers.conn

# What the broker must advertise for the three real clients (KAFKA_PROTOCOL.md §1.4, §7):
# api_key -> (min, max).
EXPECTED_TABLE = {
    0: (0, 8),    # Produce: min 0 so that kcat (librdkafka 2.0.2) compresses; v0-2 answered with error 35
    1: (4, 12),   # Fetch: >= 4 for librdkafka's MsgVer2; <= 12 (no topic ids)
    2: (1, 5),    # ListOffsets
    3: (4, 9),    # Metadata: v4 is kafka-python's marker for magic v2; librdkafka trusts leader epochs from v9
    8: (2, 7),    # OffsetCommit (consumer groups: broker/handlers/groups.py, highest non-flexible versions)
    9: (1, 5),    # OffsetFetch
    10: (0, 2),   # FindCoordinator: librdkafka gates lz4 on it
    11: (0, 5),   # JoinGroup (v4+: MEMBER_ID_REQUIRED)
    12: (0, 3),   # Heartbeat
    13: (0, 3),   # LeaveGroup
    14: (0, 3),   # SyncGroup
    15: (0, 4),   # DescribeGroups
    16: (0, 2),   # ListGroups
    18: (0, 3),   # ApiVersions
    19: (2, 4),   # CreateTopics
    20: (1, 3),   # DeleteTopics
    22: (0, 1),   # InitProducerId: kafka-python's producer needs it by default
    23: (2, 3),   # OffsetForLeaderEpoch
    32: (1, 3),   # DescribeConfigs
    42: (0, 1),   # DeleteGroups
    44: (0, 0),   # IncrementalAlterConfigs
    55: (0, 2),   # DescribeQuorum (the metadata quorum, KIP-595)
}


def _api_versions_v3_body() -> dict[str, str]:
    return {"client_software_name": "replog-tests", "client_software_version": "1.0"}


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_lists_the_advertised_table(conn: KafkaConnection, version: int) -> None:
    body = conn.request(API_API_VERSIONS, version, _api_versions_v3_body() if version >= 3 else {})
    assert body["error_code"] == 0
    table = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
    assert table == EXPECTED_TABLE
    keys = [k["api_key"] for k in body["api_keys"]]
    assert keys == sorted(keys)


def test_api_versions_v3_answers_with_response_header_v0(conn: KafkaConnection) -> None:
    """KIP-511: ApiVersions responses always use header v0, even for the flexible v3 (a header v1
    made librdkafka and kafka-python fail to bootstrap, KAFKA_PROTOCOL.md §2.2)."""
    cid = conn.send(API_API_VERSIONS, 3, _api_versions_v3_body())
    frame = conn.recv_frame()
    assert struct.unpack_from(">i", frame, 0)[0] == cid
    # header v0: the body's int16 error_code follows the correlation id directly; with a header v1
    # an empty tag section (0x00) would come first and byte 6 would be the error code's second byte
    assert frame[4:6] == b"\x00\x00"
    assert frame[6] == len(EXPECTED_TABLE) + 1  # compact array length (n + 1) of api_keys
    _, body = decode_response(frame, API_API_VERSIONS, 3)
    assert body["error_code"] == 0 and len(body["api_keys"]) == len(EXPECTED_TABLE)


def _raw_api_versions_request(version: int, correlation_id: int) -> bytes:
    """A flexible ApiVersions request of any version, by hand (header v2, v3-style body), for
    versions the codec has no schema for."""
    client_id = b"future-client"
    header = struct.pack(">hhih", API_API_VERSIONS, version, correlation_id, len(client_id)) + client_id + b"\x00"
    name, ver = b"future", b"9.9"
    body = bytes([len(name) + 1]) + name + bytes([len(ver) + 1]) + ver + b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _expect_error_35_fallback(frame: bytes, correlation_id: int) -> None:
    # response header v0 (correlation id only), then an ApiVersions v0 body:
    # error_code int16, api_keys int32 count, (api_key, min, max) int16 each
    assert len(frame) == 4 + 2 + 4 + 6, frame.hex()
    cid, error, count, key, low, high = struct.unpack(">ihihhh", frame)
    assert cid == correlation_id
    assert error == ErrorCode.UNSUPPORTED_VERSION
    assert (count, key, low, high) == (1, API_API_VERSIONS, *EXPECTED_TABLE[API_API_VERSIONS])


def test_api_versions_v4_gets_error_35_listing_our_range(conn: KafkaConnection) -> None:
    """kafka-python opens with v4: the answer must be error 35 in a v0 body listing ApiVersions 0-3,
    after which the client retries with a version we serve, on the same connection."""
    cid = conn.send(API_API_VERSIONS, 4, _api_versions_v3_body())
    frame = conn.recv_frame()
    _expect_error_35_fallback(frame, cid)
    # the client's decoder (decode_response) reads such a body as v0 whatever version it sent
    _, body = decode_response(frame, API_API_VERSIONS, 4)
    assert body["error_code"] == ErrorCode.UNSUPPORTED_VERSION
    assert [(k["api_key"], k["min_version"], k["max_version"]) for k in body["api_keys"]] == [(18, 0, 3)]
    # the connection stays usable: the retry with v3 works
    retry = conn.request(API_API_VERSIONS, 3, _api_versions_v3_body())
    assert retry["error_code"] == 0


def test_api_versions_v5_beyond_any_schema_gets_error_35(conn: KafkaConnection) -> None:
    conn.send_raw(_raw_api_versions_request(5, 4242))
    _expect_error_35_fallback(conn.recv_frame(), 4242)
    assert conn.request(API_API_VERSIONS, 0, {})["error_code"] == 0


@pytest.mark.parametrize("version", [0, 1, 2])
def test_produce_v0_to_v2_get_unsupported_version_per_partition(conn: KafkaConnection, version: int) -> None:
    topic = unique_topic("old-produce")
    create_topic(conn, topic, partitions=2)
    body = conn.request(API_PRODUCE, version, produce_body(topic, {0: batch(1), 1: batch(2)}))
    (t,) = body["responses"]
    assert t["name"] == topic
    assert sorted((p["index"], p["error_code"]) for p in t["partition_responses"]) == [
        (0, ErrorCode.UNSUPPORTED_VERSION), (1, ErrorCode.UNSUPPORTED_VERSION)]
    assert all(p["base_offset"] == -1 for p in t["partition_responses"])
    # nothing was written
    fetched = conn.request(API_FETCH, 11, fetch_body(topic, {0: 0, 1: 0}))
    assert all(len(p["records"]) == 0 for p in fetched["responses"][0]["partitions"])


@pytest.mark.parametrize(("api_key", "version", "body"), [
    pytest.param(API_FETCH, 3, {"max_wait_ms": 0, "min_bytes": 1, "topics": []}, id="fetch-v3-below-min"),
    pytest.param(API_FETCH, 13, {"max_wait_ms": 0, "min_bytes": 1, "topics": []}, id="fetch-v13-above-max"),
    pytest.param(API_METADATA, 10, {"topics": []}, id="metadata-v10-topic-ids"),
    pytest.param(API_METADATA, 0, {"topics": []}, id="metadata-v0"),
    pytest.param(API_PRODUCE, 9, {"acks": 1, "timeout_ms": 100, "topic_data": []}, id="produce-v9"),
    pytest.param(8, 8, {"group_id": "g", "topics": []}, id="offset-commit-v8-above-max"),
])
def test_an_unsupported_version_of_another_api_closes_the_connection(
        shared_broker, conn: KafkaConnection, api_key: int, version: int, body: dict) -> None:
    conn.send(api_key, version, body)
    assert conn.wait_closed(), "the broker kept the connection open"
    with KafkaConnection(shared_broker.bootstrap) as other:  # the broker itself is fine
        assert other.request(API_API_VERSIONS, 0, {})["error_code"] == 0


def test_an_unknown_api_key_closes_the_connection(conn: KafkaConnection) -> None:
    payload = struct.pack(">hhih", 999, 0, 1, 1) + b"x" + b"\x00" * 8
    conn.send_raw(struct.pack(">i", len(payload)) + payload)
    assert conn.wait_closed()


def test_requests_sent_before_the_bad_one_are_answered(conn: KafkaConnection) -> None:
    """Closing on an unsupported version happens in order: earlier requests still get answers."""
    first = conn.send(API_API_VERSIONS, 0, {})
    conn.sock.sendall(encode_request(API_FETCH, 3, 99, "x", {"max_wait_ms": 0, "min_bytes": 1, "topics": []},
                                     framed=True))
    assert conn.recv(API_API_VERSIONS, 0, first)["error_code"] == 0
    assert conn.wait_closed()
