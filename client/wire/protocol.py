"""Request/response headers, the header version rules, and whole-message encode/decode.

Layouts (after the frame's size prefix, framing.py) [S: ak RequestHeader.json, ResponseHeader.json]::

    request header v1    api_key int16, api_version int16, correlation_id int32,
                         client_id nullable string with an **int16** length
    request header v2    v1 + tagged-field section. client_id keeps its int16 length (it is
                         declared "flexibleVersions": "none"), so any broker can read the header
                         of any ApiVersions request
    request header v0    v1 without client_id; only ControlledShutdown v0 used it, which replog
                         does not implement, so it is never produced or expected here
    response header v0   correlation_id int32
    response header v1   correlation_id int32 + tagged-field section

Which header a message uses [S: ak generator/.../ApiMessageTypeGenerator.java
generateHeaderVersion; KAFKA_PROTOCOL.md §2.2]:
- request header v2 <=> the request version is flexible, else v1;
- response header v1 <=> the response version is flexible, else v0;
- **exception: ApiVersions responses always use response header v0** (KIP-511), because a client
  must be able to read the answer before it knows what the broker supports. kcat, confluent-kafka
  and kafka-python all fail on a v1 header there (measured, KAFKA_PROTOCOL.md §2.2).
Flexibility is read from the schema's open-ended range ("3+"), so the header of a version above
the highest we define (ApiVersions v5 from a future client) is still parsed correctly.

ApiVersions negotiation (KAFKA_PROTOCOL.md §1.1): when a client sends an ApiVersions version the
broker does not serve, the broker answers anyway, with UNSUPPORTED_VERSION (35) in a **v0-format
body** that lists the broker's ApiVersions range, and response header v0
(`encode_api_versions_fallback`). Kafka does not parse the body of such a request
[S: ak RequestContext.java parseRequest]. librdkafka then retries with v0, kafka-python with
min(4, the broker's max). For any other API an unsupported version is a protocol violation and
Kafka closes the connection [S:issue ak PR #18727].

Server use::

    try:
        header, body = decode_request(frame, supported=advertised)
    except UnsupportedVersionError as e:       # catch before ProtocolError (it is a subclass)
        if e.header is not None and e.header.api_key == ApiKey.API_VERSIONS:
            send(encode_api_versions_fallback(e.header.correlation_id, *advertised[18], framed=True))
        else:
            close()
    except ProtocolError:
        close()
    ...
    send(encode_response(header, header.api_key, header.api_version, response_body, framed=True))
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from client.wire.codec import (
    DEFAULT_LIMITS,
    DecodeLimits,
    ProtocolError,
    buffer_size,
    encode_nullable_string,
    skip_tagged_fields,
)
from client.wire.errors import ErrorCode
from client.wire.messages import API_NAMES, REQUESTS, RESPONSES, ApiKey

__all__ = [
    "RequestHeader", "UnsupportedVersionError",
    "decode_request", "decode_request_header", "decode_response", "encode_api_versions_fallback",
    "encode_request", "encode_request_chunks", "encode_response", "encode_response_chunks",
    "peek_correlation_id", "request_header_version", "response_header_version", "supported_versions",
]

_HEADER_FIXED = struct.Struct(">hhi")  # api_key, api_version, correlation_id
_HEADER_PREFIX = struct.Struct(">hhih")  # ... + the int16 length of client_id
_CORRELATION_ID = struct.Struct(">i")
_SIZE = struct.Struct(">i")
_NO_TAGS = b"\x00"
_FALLBACK_BODY = struct.Struct(">hihhh")  # error_code, api_keys count, (api_key, min, max)
_SIZE_PLACEHOLDER = b"\x00\x00\x00\x00"


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header_version: int = 1


class UnsupportedVersionError(ProtocolError):
    """An api_key/api_version with no schema here, or outside the versions the broker serves.

    `header` is the parsed request header, so the server can answer ApiVersions with error 35
    (encode_api_versions_fallback) and close the connection on others.
    """

    error_code = ErrorCode.UNSUPPORTED_VERSION

    def __init__(self, message: str, header: RequestHeader) -> None:
        super().__init__(message)
        self.header = header


# --- header versions -----------------------------------------------------------------------------

def request_header_version(api_key: int, api_version: int) -> int:
    """2 for flexible request versions, else 1 (unknown API keys: 1)."""
    message = REQUESTS.get(api_key)
    return 2 if message is not None and message.is_flexible(api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    """1 for flexible response versions, else 0; ApiVersions always 0."""
    if api_key == ApiKey.API_VERSIONS:
        return 0
    message = RESPONSES.get(api_key)
    return 1 if message is not None and message.is_flexible(api_version) else 0


def supported_versions() -> dict[int, tuple[int, int]]:
    """{api_key: (min_version, max_version)} of every schema defined here (not what is advertised)."""
    return {key: (m.min_version, m.max_version) for key, m in REQUESTS.items()}


# --- per (api_key, version) plans: one dict lookup on the hot path ----------------------------------

# (api_key, api_version) -> (body decoder, request header is v2)
_REQUEST_DECODE_PLANS: dict[tuple[int, int], tuple[Callable[..., tuple[dict[str, Any], int]], bool]] = {}
# (api_key, api_version) -> (body encoder, bytes after the correlation_id in the response header)
_RESPONSE_ENCODE_PLANS: dict[tuple[int, int], tuple[Callable[..., None], bytes]] = {}


def _request_decode_plan(api_key: int, api_version: int) -> tuple[Callable[..., Any], bool] | None:
    plan = _REQUEST_DECODE_PLANS.get((api_key, api_version))
    if plan is None:
        message = REQUESTS.get(api_key)
        if message is None or not message.has_version(api_version):
            return None
        plan = _REQUEST_DECODE_PLANS[(api_key, api_version)] = (
            message.decoder(api_version), message.is_flexible(api_version))
    return plan


def _response_encode_plan(api_key: int, api_version: int) -> tuple[Callable[..., None], bytes]:
    plan = _RESPONSE_ENCODE_PLANS.get((api_key, api_version))
    if plan is None:
        message = RESPONSES.get(api_key)
        if message is None or not message.has_version(api_version):
            raise KeyError(f"no response schema for api_key {api_key} v{api_version}")
        tail = _NO_TAGS if response_header_version(api_key, api_version) == 1 else b""
        plan = _RESPONSE_ENCODE_PLANS[(api_key, api_version)] = (message.encoder(api_version), tail)
    return plan


# --- server side ---------------------------------------------------------------------------------

def _parse_request_header(buf: memoryview, limits: DecodeLimits) -> tuple[
        RequestHeader, int, tuple[Callable[..., Any], bool] | None]:
    """(header, body offset, decode plan or None when the api_key/version has no schema)."""
    if len(buf) < 10:
        raise ProtocolError(f"request header truncated: {len(buf)} bytes")
    api_key, api_version, correlation_id, length = _HEADER_PREFIX.unpack_from(buf, 0)
    if length >= 0:
        pos = 10 + length
        if length > limits.string_bytes_max or pos > len(buf):
            raise ProtocolError(f"bad client_id length {length}")
        try:
            client_id: str | None = str(buf[10:pos], "utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"client_id is not UTF-8: {e}") from e
    elif length == -1:
        client_id, pos = None, 10
    else:
        raise ProtocolError(f"negative client_id length {length}")
    plan = _REQUEST_DECODE_PLANS.get((api_key, api_version)) or _request_decode_plan(api_key, api_version)
    flexible = plan[1] if plan is not None else request_header_version(api_key, api_version) == 2
    if flexible:
        if pos < len(buf) and buf[pos] == 0:
            pos += 1
        else:
            pos = skip_tagged_fields(buf, pos, limits.tagged_fields_max)
    return RequestHeader(api_key, api_version, correlation_id, client_id, 2 if flexible else 1), pos, plan


def decode_request_header(frame: bytes | bytearray | memoryview,
                          limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[RequestHeader, int]:
    """Parse the request header; returns (header, offset of the body in `frame`)."""
    header, pos, _plan = _parse_request_header(frame if frame.__class__ is memoryview else memoryview(frame),
                                               limits)
    return header, pos


def decode_request(frame: bytes | bytearray | memoryview, *,
                   supported: Mapping[int, tuple[int, int]] | None = None,
                   limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[RequestHeader, dict[str, Any]]:
    """Decode one request frame (without its size prefix) into (header, body).

    `supported` ({api_key: (min, max)}, normally the advertised table) narrows what is accepted.
    Raises UnsupportedVersionError (with the header) for an API or version that has no schema or
    is outside `supported`, ProtocolError for a malformed header or body. `records` fields of the
    body are memoryviews of `frame`. Bytes after the body are ignored, as Kafka does.
    """
    buf = frame if frame.__class__ is memoryview else memoryview(frame)
    header, pos, plan = _parse_request_header(buf, limits)
    if plan is None:
        name = API_NAMES.get(header.api_key)
        what = f"{name} v{header.api_version} is not defined" if name else f"unknown api_key {header.api_key}"
        raise UnsupportedVersionError(what, header)
    if supported is not None:
        span = supported.get(header.api_key)
        if span is None or not span[0] <= header.api_version <= span[1]:
            raise UnsupportedVersionError(
                f"{API_NAMES[header.api_key]} v{header.api_version} is not supported", header)
    body, _end = plan[0](buf, pos, limits)
    return header, body


def _encode_response_parts(header: RequestHeader | int, api_key: int, api_version: int,
                           body: Mapping[str, Any], framed: bool, chunks: list[Any] | None) -> list[Any]:
    encoder, tail = _RESPONSE_ENCODE_PLANS.get((api_key, api_version)) or _response_encode_plan(
        api_key, api_version)
    correlation_id = header if header.__class__ is int else header.correlation_id  # type: ignore[union-attr]
    out: list[Any] = [_SIZE_PLACEHOLDER] if framed else []
    out.append(_CORRELATION_ID.pack(correlation_id) + tail)
    encoder(body, out, chunks)
    return out


def _join(out: list[Any], framed: bool) -> bytes:
    if framed:  # len() is the byte size of every piece: the encoder casts memoryviews to bytes format
        out[0] = _SIZE.pack(sum(map(len, out)) - 4)
    return b"".join(out)


def _finish_chunks(chunks: list[Any], out: list[Any], framed: bool) -> list[Any]:
    """chunks + the joined rest of out; `framed` writes the size over the placeholder."""
    if out:
        chunks.append(b"".join(out))
    if framed:  # the first chunk is joined bytes that start with the 4-byte placeholder
        size = 0
        for piece in chunks:
            cls = piece.__class__
            size += len(piece) if cls is bytes else piece.nbytes if cls is memoryview else buffer_size(piece)
        chunks[0] = _SIZE.pack(size - 4) + chunks[0][4:]
    return chunks


def encode_response(header: RequestHeader | int, api_key: int, api_version: int, body: Mapping[str, Any],
                    *, framed: bool = False) -> bytes:
    """Response header + body as one bytes object; `framed` prepends the int32 size.

    `header` is the request's header (or just its correlation_id). Records values are copied
    into the result, so they must be bytes-like here; encode_response_chunks takes any.
    """
    return _join(_encode_response_parts(header, api_key, api_version, body, framed, None), framed)


def encode_response_chunks(header: RequestHeader | int, api_key: int, api_version: int,
                           body: Mapping[str, Any], *, framed: bool = False) -> list[Any]:
    """As encode_response, as a list for writelines(): everything between records values is
    joined; records values (bytes, memoryviews, file-region objects, lists of them) are passed
    through as they were given, uncopied."""
    chunks: list[Any] = []
    out = _encode_response_parts(header, api_key, api_version, body, framed, chunks)
    return _finish_chunks(chunks, out, framed)


def encode_api_versions_fallback(correlation_id: int, min_version: int = 0, max_version: int = 0,
                                 *, framed: bool = False) -> bytes:
    """The answer to an ApiVersions request of a version the broker does not serve.

    Response header v0, then an ApiVersions **v0** body: error_code 35, one api_keys entry
    (18, min_version, max_version) — the broker's own ApiVersions range, as Kafka's
    ApiVersionsRequest.getErrorResponse builds it.
    """
    payload = _CORRELATION_ID.pack(correlation_id) + _FALLBACK_BODY.pack(
        ErrorCode.UNSUPPORTED_VERSION, 1, ApiKey.API_VERSIONS, min_version, max_version)
    return _SIZE.pack(len(payload)) + payload if framed else payload


# --- client side ---------------------------------------------------------------------------------

def _encode_request_parts(api_key: int, api_version: int, correlation_id: int, client_id: str | None,
                          body: Mapping[str, Any], framed: bool, chunks: list[Any] | None) -> list[Any]:
    message = REQUESTS.get(api_key)
    if message is None or not message.has_version(api_version):
        raise KeyError(f"no request schema for api_key {api_key} v{api_version}")
    out: list[Any] = [_SIZE_PLACEHOLDER] if framed else []
    out += (_HEADER_FIXED.pack(api_key, api_version, correlation_id), encode_nullable_string(client_id))
    if message.is_flexible(api_version):
        out.append(_NO_TAGS)
    message.encoder(api_version)(body, out, chunks)
    return out


def encode_request(api_key: int, api_version: int, correlation_id: int, client_id: str | None,
                   body: Mapping[str, Any], *, framed: bool = False) -> bytes:
    """Request header (v1 or v2 as the version requires) + body; `framed` prepends the size."""
    return _join(_encode_request_parts(api_key, api_version, correlation_id, client_id, body, framed, None), framed)


def encode_request_chunks(api_key: int, api_version: int, correlation_id: int, client_id: str | None,
                          body: Mapping[str, Any], *, framed: bool = False) -> list[Any]:
    """As encode_request, as chunks that leave records values uncopied (Produce)."""
    chunks: list[Any] = []
    out = _encode_request_parts(api_key, api_version, correlation_id, client_id, body, framed, chunks)
    return _finish_chunks(chunks, out, framed)


def peek_correlation_id(frame: bytes | bytearray | memoryview) -> int:
    """The correlation_id of a response frame (to find which request it answers)."""
    if len(frame) < 4:
        raise ProtocolError("response header truncated")
    return _CORRELATION_ID.unpack_from(frame, 0)[0]


def decode_response(frame: bytes | bytearray | memoryview, api_key: int, api_version: int, *,
                    limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[int, dict[str, Any]]:
    """Decode a response frame to (correlation_id, body) for the request's api_key and version.

    ApiVersions: a body whose error_code is UNSUPPORTED_VERSION is decoded as v0, the format a
    broker uses to say which ApiVersions versions it serves (Kafka's ApiVersionsResponse.parse
    falls back the same way).
    """
    buf = frame if frame.__class__ is memoryview else memoryview(frame)
    message = RESPONSES.get(api_key)
    if message is None or not message.has_version(api_version):
        raise KeyError(f"no response schema for api_key {api_key} v{api_version}")
    correlation_id = peek_correlation_id(buf)
    pos = 4
    if response_header_version(api_key, api_version) == 1:
        pos = skip_tagged_fields(buf, pos, limits.tagged_fields_max)
    if (api_key == ApiKey.API_VERSIONS and api_version > 0 and len(buf) >= pos + 2
            and struct.unpack_from(">h", buf, pos)[0] == ErrorCode.UNSUPPORTED_VERSION):
        api_version = 0
    body, _end = message.decoder(api_version)(buf, pos, limits)
    return correlation_id, body
