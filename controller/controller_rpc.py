"""ControllerRequest frames (API key 1001): broker/admin -> active controller, request/response.

Layout (client/wire/messages/controller_api.py has the schema)::

    request   size | api_key 1001 | api_version 0 | correlation_id | client_id (int16 string) | {op, payload}
    response  size | correlation_id | {error_code, leader_id, payload}

`payload` is one orjson object both ways. Unlike RaftMessage (one-way, acknowledged), this is
request/response on the requester's connection: the controller answers each request on the
connection it came from, in order. Decoding is bounded by the frame (FrameDecoder's max size)
and by `PAYLOAD_BYTES_MAX`; a frame that does not decode raises ProtocolError (the listener
closes that connection); a payload that decodes but has the wrong shape is answered with
INVALID_REQUEST by the service.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from client.wire.codec import DecodeLimits, ProtocolError, encode_nullable_string
from client.wire.messages import controller_api
from client.wire.protocol import RequestHeader, decode_request_header, peek_correlation_id

CONTROLLER_API_KEY = controller_api.API_KEY
CONTROLLER_API_VERSION = 0
PAYLOAD_BYTES_MAX = 16 << 20  # one request or response body (a create of many topics fits easily)
OP_BYTES_MAX = 64

_HEADER = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_CORRELATION_ID = struct.Struct(">i")
_API_KEY = struct.Struct(">h")


def peek_api_key(frame: bytes | memoryview) -> int:
    """The api_key of a request frame (the first two bytes), for routing on the controller listener."""
    if len(frame) < 2:
        raise ProtocolError("request header truncated")
    return _API_KEY.unpack_from(frame, 0)[0]


def encode_request(op: str, payload: dict[str, Any], correlation_id: int, client_id: str | None) -> bytes:
    out: list[Any] = [_HEADER.pack(CONTROLLER_API_KEY, CONTROLLER_API_VERSION, correlation_id),
                      encode_nullable_string(client_id)]
    controller_api.REQUEST.encode_into({"op": op, "payload": orjson.dumps(payload)}, CONTROLLER_API_VERSION, out)
    body = b"".join(bytes(p) if p.__class__ is memoryview else p for p in out)
    return _SIZE.pack(len(body)) + body


def decode_request(frame: bytes | memoryview, limits: DecodeLimits) -> tuple[RequestHeader, str, Any]:
    """(header, op, payload) of a request frame; ProtocolError if the frame or the JSON is malformed."""
    header, pos = decode_request_header(frame, limits)
    if header.api_key != CONTROLLER_API_KEY or header.api_version != CONTROLLER_API_VERSION:
        raise ProtocolError(f"not ControllerRequest v0: {header.api_key} v{header.api_version}")
    body, _end = controller_api.REQUEST.decode(frame, CONTROLLER_API_VERSION, pos, limits)
    op, raw = body["op"], body["payload"]
    if not 0 < len(op) <= OP_BYTES_MAX or len(raw) > PAYLOAD_BYTES_MAX:
        raise ProtocolError("ControllerRequest: op or payload size out of bounds")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"ControllerRequest: payload is not JSON: {exc}") from exc
    return header, op, payload


def encode_response(correlation_id: int, error_code: int, leader_id: int | None = None,
                    payload: dict[str, Any] | None = None) -> bytes:
    body = controller_api.RESPONSE.encode(
        {"error_code": error_code, "leader_id": -1 if leader_id is None else leader_id,
         "payload": orjson.dumps(payload) if payload is not None else b""}, CONTROLLER_API_VERSION)
    data = _CORRELATION_ID.pack(correlation_id) + bytes(body)
    return _SIZE.pack(len(data)) + data


def decode_response(frame: bytes | memoryview) -> tuple[int, int, int | None, dict[str, Any]]:
    """(correlation_id, error_code, leader_id or None, payload) of a response frame (without size prefix)."""
    correlation_id = peek_correlation_id(frame)
    body, _end = controller_api.RESPONSE.decode(frame, CONTROLLER_API_VERSION, 4)
    raw = body["payload"]
    if len(raw) > PAYLOAD_BYTES_MAX:
        raise ProtocolError("ControllerRequest response payload too large")
    try:
        payload = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"ControllerRequest response: payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ProtocolError("ControllerRequest response: payload is not an object")
    leader_id = body["leader_id"]
    return correlation_id, body["error_code"], None if leader_id < 0 else leader_id, payload
