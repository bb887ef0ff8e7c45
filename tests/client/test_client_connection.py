"""client.connection: the sans-IO request/response bookkeeping, driven by hand (no sockets)."""

from __future__ import annotations

import pytest

from client.connection import Connection, ConnectionProtocolError
from client.wire.framing import FrameDecoder
from client.wire.messages import ApiKey
from client.wire.protocol import decode_request, encode_response

METADATA_V8 = 8


def _requests(chunks: list) -> list:
    data = b"".join(bytes(c) for c in chunks)
    return [decode_request(frame) for frame in FrameDecoder().feed(data)]


def _metadata_response(correlation_id: int) -> bytes:
    body = {"brokers": [{"node_id": 1, "host": "h", "port": 1}], "cluster_id": "c", "controller_id": 1, "topics": []}
    return encode_response(correlation_id, ApiKey.METADATA, METADATA_V8, body, framed=True)


def test_correlation_ids_count_up_and_responses_are_matched_in_order() -> None:
    conn = Connection(client_id="me", max_in_flight_requests=3)
    sent = [conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=10 * i, context=f"ctx{i}")
            for i in range(3)]
    headers = [_requests(chunks)[0][0] for chunks in sent]
    assert [h.correlation_id for h in headers] == [1, 2, 3]
    assert {h.client_id for h in headers} == {"me"}
    assert not conn.can_send and conn.in_flight_count == 3
    # two responses in one read, the third split across reads
    data = _metadata_response(1) + _metadata_response(2) + _metadata_response(3)
    done = conn.receive_data(data[:-5])
    assert [request.context for request, _ in done] == ["ctx0", "ctx1"]
    assert done[0][1]["cluster_id"] == "c"
    assert conn.can_send
    done = conn.receive_data(data[-5:])
    assert [request.context for request, _ in done] == ["ctx2"]
    assert conn.in_flight_count == 0


def test_requests_without_response_are_not_in_flight() -> None:
    conn = Connection(client_id=None, max_in_flight_requests=1)
    body = {"acks": 0, "timeout_ms": 1000, "topic_data": []}
    conn.send_request(ApiKey.PRODUCE, 8, body, now_ms=0, expect_response=False)
    assert conn.in_flight_count == 0 and conn.can_send
    chunks = conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=0)
    assert _requests(chunks)[0][0].correlation_id == 2  # the id is consumed anyway


def test_in_flight_bound_is_an_assertion() -> None:
    conn = Connection(client_id=None, max_in_flight_requests=1)
    conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=0)
    with pytest.raises(AssertionError):
        conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=0)


@pytest.mark.parametrize("data", [
    _metadata_response(7),                       # wrong correlation id
    b"\x7f\xff\xff\xff",                          # frame larger than the bound
    b"\x00\x00\x00\x05\x00\x00\x00\x01\x00",     # right id, body cut short
])
def test_protocol_violations_raise_and_close_returns_every_in_flight_request(data: bytes) -> None:
    conn = Connection(client_id=None, max_in_flight_requests=5, max_frame_bytes=1 << 20)
    for i in range(2):
        conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=0, context=i)
    with pytest.raises(ConnectionProtocolError):
        conn.receive_data(data)
    failed = conn.close()
    assert [request.context for request in failed] == [0, 1]  # their outcome is unknown
    assert conn.closed and not conn.can_send and conn.in_flight_count == 0
    assert conn.receive_data(_metadata_response(1)) == []


def test_a_response_with_nothing_in_flight_is_a_violation() -> None:
    conn = Connection(client_id=None, max_in_flight_requests=1)
    with pytest.raises(ConnectionProtocolError):
        conn.receive_data(_metadata_response(1))


def test_expiry_reports_the_oldest_request_past_its_timeout() -> None:
    conn = Connection(client_id=None, max_in_flight_requests=5)
    conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=100, context="old")
    conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=900, context="new")
    assert conn.oldest_sent_at_ms() == 100
    assert conn.expired(1099, request_timeout_ms=1000) is None
    expired = conn.expired(1100, request_timeout_ms=1000)
    assert expired is not None and expired.context == "old"


def test_correlation_ids_wrap_to_zero() -> None:
    conn = Connection(client_id=None, max_in_flight_requests=1)
    conn._next_correlation_id = 0x7FFFFFFF
    first = conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=0, expect_response=False)
    second = conn.send_request(ApiKey.METADATA, METADATA_V8, {"topics": []}, now_ms=0, expect_response=False)
    assert [_requests(c)[0][0].correlation_id for c in (first, second)] == [0x7FFFFFFF, 0]
