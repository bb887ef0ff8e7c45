"""Message schemas (schema.py, messages/) and headers (protocol.py): round trips, bounds, fuzzing."""

from __future__ import annotations

import contextlib
import struct
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_samples import all_versions, expected, normalized, nulls, populated

from client.wire import codec
from client.wire.codec import DecodeLimits, ProtocolError
from client.wire.errors import ErrorCode
from client.wire.framing import FrameDecoder
from client.wire.messages import API_NAMES, REQUESTS, RESPONSES, ApiKey, compile_all
from client.wire.protocol import (
    RequestHeader,
    UnsupportedVersionError,
    decode_request,
    decode_request_header,
    decode_response,
    encode_api_versions_fallback,
    encode_request,
    encode_request_chunks,
    encode_response,
    encode_response_chunks,
    peek_correlation_id,
    request_header_version,
    response_header_version,
    supported_versions,
)
from client.wire.schema import EncodeError, F, Message

REQUEST_VERSIONS = all_versions(REQUESTS)
RESPONSE_VERSIONS = all_versions(RESPONSES)
BOTH = [("request", k, v) for k, v in REQUEST_VERSIONS] + [("response", k, v) for k, v in RESPONSE_VERSIONS]


def table(kind: str) -> dict[int, Message]:
    return REQUESTS if kind == "request" else RESPONSES


def ids(case: tuple[str, int, int]) -> str:
    kind, key, version = case
    return f"{API_NAMES[key]}{kind.title()}-v{version}"


# --- coverage of the brief ---------------------------------------------------------------------

EXPECTED_RANGES = {  # at least these (the brief); we define the union with Kafka 4.x
    18: (0, 4), 3: (0, 13), 0: (0, 13), 1: (4, 17), 2: (0, 10), 23: (0, 4), 19: (0, 7), 20: (0, 6), 32: (0, 4),
    44: (0, 1), 22: (0, 5), 10: (0, 6), 60: (0, 1), 11: (0, 9), 14: (0, 5), 12: (0, 4), 13: (0, 5), 8: (0, 9),
    9: (0, 9), 16: (0, 4), 15: (0, 5), 21: (0, 2),
}


def test_every_required_api_and_version_is_defined() -> None:
    ranges = supported_versions()
    for key, (low, high) in EXPECTED_RANGES.items():
        assert ranges[key][0] <= low and ranges[key][1] >= high, API_NAMES[key]
        assert RESPONSES[key].valid_versions == REQUESTS[key].valid_versions


def test_compile_all() -> None:
    compile_all()


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", BOTH, ids=ids)
@pytest.mark.parametrize("maker", [populated, nulls], ids=["populated", "nulls"])
def test_round_trip(case: tuple[str, int, int], maker: Any) -> None:
    kind, key, version = case
    message = table(kind)[key]
    body = maker(message, version)
    wire = message.encode(body, version)
    decoded, end = message.decode(wire, version)
    assert end == len(wire)
    assert normalized(decoded) == expected(message, version, body)
    assert list(decoded) == [f.name for f in message.fields]  # every field, schema order
    assert message.encode(decoded, version) == wire


@pytest.mark.parametrize("case", BOTH, ids=ids)
def test_empty_body_encodes_defaults(case: tuple[str, int, int]) -> None:
    kind, key, version = case
    message = table(kind)[key]
    wire = message.encode({}, version)
    decoded, end = message.decode(wire, version)
    assert end == len(wire)
    assert normalized(decoded) == normalized(message.default())


@pytest.mark.parametrize("case", BOTH, ids=ids)
def test_every_truncation_is_a_protocol_error(case: tuple[str, int, int]) -> None:
    kind, key, version = case
    message = table(kind)[key]
    wire = message.encode(populated(message, version), version)
    for cut in range(len(wire)):
        with pytest.raises(ProtocolError):
            message.decode(wire[:cut], version)


# --- headers -----------------------------------------------------------------------------------

KCAT_FIRST_FRAME = (bytes.fromhex("00000024 0012 0003 00000001 0007") + b"rdkafka" + b"\x00"
                    + b"\x0b" + b"librdkafka" + b"\x06" + b"2.0.2" + b"\x00")


def test_kcat_first_frame() -> None:
    frames = FrameDecoder(1 << 20).feed(KCAT_FIRST_FRAME)
    assert len(frames) == 1 and len(frames[0]) == 0x24
    header, body = decode_request(frames[0])
    assert header == RequestHeader(ApiKey.API_VERSIONS, 3, 1, "rdkafka", 2)
    assert body == {"client_software_name": "librdkafka", "client_software_version": "2.0.2"}
    assert encode_request(18, 3, 1, "rdkafka", body, framed=True) == KCAT_FIRST_FRAME


def test_header_versions() -> None:
    assert request_header_version(ApiKey.PRODUCE, 8) == 1
    assert request_header_version(ApiKey.PRODUCE, 9) == 2
    assert request_header_version(ApiKey.DESCRIBE_CLUSTER, 0) == 2
    assert request_header_version(ApiKey.API_VERSIONS, 3) == 2
    assert request_header_version(ApiKey.API_VERSIONS, 7) == 2  # future versions: open flexible range
    assert request_header_version(999, 0) == 1
    assert response_header_version(ApiKey.FETCH, 11) == 0
    assert response_header_version(ApiKey.FETCH, 12) == 1
    for version in range(5):
        assert response_header_version(ApiKey.API_VERSIONS, version) == 0  # KIP-511 exception


def test_request_header_v1_layout_and_null_client_id() -> None:
    wire = encode_request(ApiKey.HEARTBEAT, 3, 77, None, {"group_id": "g", "generation_id": 1, "member_id": "m"})
    assert wire[:10] == struct.pack(">hhi", 12, 3, 77) + b"\xff\xff"
    header, body = decode_request(wire)
    assert header == RequestHeader(12, 3, 77, None, 1)
    assert body["group_id"] == "g" and body["group_instance_id"] is None


def test_request_header_v2_keeps_int16_client_id_and_skips_header_tags() -> None:
    body = REQUESTS[ApiKey.HEARTBEAT].encode({"group_id": "g", "member_id": "m"}, 4)
    wire = struct.pack(">hhi", 12, 4, 5) + b"\x00\x03cid" + b"\x02\x00\x01x\x09\x00" + body
    header, pos = decode_request_header(wire)
    assert header == RequestHeader(12, 4, 5, "cid", 2) and wire[pos:] == body
    assert decode_request(wire)[1]["member_id"] == "m"


def test_response_headers() -> None:
    body = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": []}
    v11 = encode_response(9, ApiKey.FETCH, 11, body)
    v12 = encode_response(9, ApiKey.FETCH, 12, body)
    assert v11[:4] == v12[:4] == b"\x00\x00\x00\x09"
    assert v12[4] == 0 and v12[5:] == RESPONSES[ApiKey.FETCH].encode(body, 12)  # header v1: empty tags
    assert v11[4:] == RESPONSES[ApiKey.FETCH].encode(body, 11)
    api = encode_response(RequestHeader(18, 3, 9, "c"), ApiKey.API_VERSIONS, 3, {"api_keys": []})
    assert api[4:6] == b"\x00\x00"  # error_code right after the correlation id: header v0
    assert peek_correlation_id(api) == 9
    assert decode_response(api, ApiKey.API_VERSIONS, 3)[1]["api_keys"] == []


def test_framed_encodings() -> None:
    body = {"error_code": 0}
    plain = encode_response(3, ApiKey.HEARTBEAT, 0, body)
    assert encode_response(3, ApiKey.HEARTBEAT, 0, body, framed=True) == struct.pack(">i", len(plain)) + plain
    request = encode_request(ApiKey.HEARTBEAT, 0, 1, "c", {"group_id": "g"}, framed=True)
    assert FrameDecoder(1000).feed(request)[0] == request[4:]


# --- ApiVersions negotiation and unsupported versions ----------------------------------------------

def test_unsupported_api_versions_gets_the_v0_error_body() -> None:
    frame = KCAT_FIRST_FRAME[4:]
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(frame, supported={ApiKey.API_VERSIONS: (0, 2)})
    header = info.value.header
    assert header == RequestHeader(18, 3, 1, "rdkafka", 2)
    assert info.value.error_code == ErrorCode.UNSUPPORTED_VERSION
    answer = encode_api_versions_fallback(header.correlation_id, 0, 2, framed=True)
    assert answer == bytes.fromhex("00000010 00000001 0023 00000001 0012 0000 0002")
    # our client (like Kafka's) reads an error-35 answer as v0 whatever version it sent
    correlation_id, body = decode_response(answer[4:], ApiKey.API_VERSIONS, 3)
    assert correlation_id == 1
    assert body["error_code"] == 35 and body["api_keys"] == [{"api_key": 18, "min_version": 0, "max_version": 2}]


def test_future_api_versions_version_parses_its_flexible_header() -> None:
    wire = struct.pack(">hhi", 18, 9, 4) + b"\x00\x02kp" + b"\x00" + b"\x05hello\x00"
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(wire)
    assert info.value.header == RequestHeader(18, 9, 4, "kp", 2)


def test_unknown_api_key_and_unsupported_versions() -> None:
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(struct.pack(">hhi", 999, 0, 4) + b"\x00\x00")
    assert info.value.header.api_key == 999
    produce_v3 = encode_request(ApiKey.PRODUCE, 3, 1, "c", {"acks": -1})
    with pytest.raises(UnsupportedVersionError):
        decode_request(produce_v3, supported={ApiKey.PRODUCE: (4, 9)})
    with pytest.raises(UnsupportedVersionError):
        decode_request(produce_v3, supported={})
    assert decode_request(produce_v3, supported={ApiKey.PRODUCE: (0, 9)})[1]["acks"] == -1
    with pytest.raises(UnsupportedVersionError):
        decode_request(struct.pack(">hhi", ApiKey.FETCH, 99, 4) + b"\x00\x00\x00")


def test_unsupported_version_error_is_a_protocol_error() -> None:
    assert issubclass(UnsupportedVersionError, ProtocolError)
    assert issubclass(ProtocolError, ValueError)


def test_produce_v0_to_v2_layouts_parse() -> None:
    body = {"acks": 1, "timeout_ms": 100, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": b"legacy"}]}]}
    for version in (0, 1, 2):
        _header, decoded = decode_request(encode_request(ApiKey.PRODUCE, version, 1, "c", body))
        assert decoded["transactional_id"] is None and bytes(decoded["topic_data"][0]["partition_data"][0]["records"])


# --- records: zero copy in, no copy out ---------------------------------------------------------------

def produce_v9(records: Any) -> dict[str, Any]:
    return {"transactional_id": None, "acks": -1, "timeout_ms": 30000, "topic_data": [
        {"name": "orders", "partition_data": [{"index": 3, "records": records}]}]}


def test_produce_records_are_views_of_the_frame() -> None:
    records = bytes(range(256)) * 64
    frame = encode_request(ApiKey.PRODUCE, 9, 1, "c", produce_v9(records))
    _header, body = decode_request(frame)
    value = body["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(value, memoryview) and value.obj is frame and value == records


def test_produce_request_chunks_do_not_copy_records() -> None:
    records = memoryview(bytes(20_000))
    chunks = encode_request_chunks(ApiKey.PRODUCE, 9, 1, "c", produce_v9(records), framed=True)
    assert any(c is records for c in chunks)
    frame = FrameDecoder(1 << 20).feed(b"".join(chunks))[0]
    assert decode_request(frame)[1]["topic_data"][0]["partition_data"][0]["records"] == records


class Region:
    """A file region: the transport sendfile()s it; only its length is known here."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def fetch_response(records: list[Any]) -> dict[str, Any]:
    return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": "orders", "partitions": [
            {"partition_index": i, "error_code": 0, "high_watermark": 100, "last_stable_offset": 100,
             "log_start_offset": 0, "aborted_transactions": None, "preferred_read_replica": -1, "records": r}
            for i, r in enumerate(records)]}]}


def test_fetch_response_chunks_pass_records_and_regions_through() -> None:
    big = memoryview(b"R" * 50_000)
    region = Region(70_000)
    chunks = encode_response_chunks(7, ApiKey.FETCH, 12, fetch_response([big, b"", region, [big, big]]),
                                    framed=True)
    assert [c for c in chunks if c is big or c is region] == [big, region, big, big]
    size = struct.unpack(">i", chunks[0][:4])[0]
    assert size == sum(codec.buffer_size(c) for c in chunks) - 4


def test_message_encode_chunks_and_encode_into() -> None:
    big = memoryview(b"R" * 50_000)
    message = RESPONSES[ApiKey.FETCH]
    chunks = message.encode_chunks(fetch_response([big, b"x"]), 12)
    assert chunks[1] is big and len(chunks) == 3  # small records are joined with their neighbours
    assert b"".join(chunks) == message.encode(fetch_response([big, b"x"]), 12)
    writer = codec.Writer().int32(7)
    message.encode_into(fetch_response([big]), 12, writer.chunks)
    assert any(c is big for c in writer.chunks)
    assert writer.getvalue()[4:] == message.encode(fetch_response([big]), 12)


def test_non_byte_memoryview_records_are_sized_in_bytes() -> None:
    ints = memoryview(struct.pack(">4i", 1, 2, 3, 4)).cast("i")
    wire = encode_response(1, ApiKey.FETCH, 11, fetch_response([ints]), framed=True)
    assert struct.unpack(">i", wire[:4])[0] == len(wire) - 4
    body = decode_response(wire[4:], ApiKey.FETCH, 11)[1]
    assert body["responses"][0]["partitions"][0]["records"] == struct.pack(">4i", 1, 2, 3, 4)


def test_fetch_response_with_records_decodes() -> None:
    big = memoryview(b"R" * 50_000)
    wire = encode_response(7, ApiKey.FETCH, 12, fetch_response([big, b""]))
    correlation_id, body = decode_response(wire, ApiKey.FETCH, 12)
    parts = body["responses"][0]["partitions"]
    assert correlation_id == 7 and parts[0]["records"] == big and parts[1]["records"] == b""
    assert parts[0]["aborted_transactions"] is None


def test_records_default_to_empty_not_null() -> None:
    # librdkafka loops on null records in Fetch responses (KAFKA_PROTOCOL.md §2.2)
    wire = RESPONSES[ApiKey.FETCH].encode({"responses": [{"partitions": [{"error_code": 6}]}]}, 16)
    body, _ = RESPONSES[ApiKey.FETCH].decode(wire, 16)
    assert body["responses"][0]["partitions"][0]["records"] == b""


# --- tagged fields -----------------------------------------------------------------------------

def test_fetch_response_tagged_fields_written_only_when_set() -> None:
    message = RESPONSES[ApiKey.FETCH]
    partition: dict[str, Any] = {"partition_index": 0, "records": b""}
    plain = message.encode({"responses": [{"partitions": [partition]}]}, 12)
    partition["diverging_epoch"] = {"epoch": 4, "end_offset": 99}
    partition["snapshot_id"] = {"end_offset": 5, "epoch": 2}
    tagged = message.encode({"responses": [{"partitions": [partition]}]}, 12)
    assert len(tagged) > len(plain)
    decoded = message.decode(tagged, 12)[0]["responses"][0]["partitions"][0]
    assert decoded["diverging_epoch"] == {"epoch": 4, "end_offset": 99}
    assert decoded["snapshot_id"] == {"end_offset": 5, "epoch": 2}
    assert decoded["current_leader"] == {"leader_id": -1, "leader_epoch": -1}  # absent -> default
    # tags 0 and 2, ascending: count 2, tag 0 size 13 (int32 + int64 + empty tags), then tag 2
    assert b"\x02\x00\x0d\x00\x00\x00\x04" in tagged


def test_default_valued_tags_are_omitted() -> None:
    message = RESPONSES[ApiKey.FETCH]
    partition = {"records": b"", "diverging_epoch": {"epoch": -1, "end_offset": -1}, "current_leader": None}
    assert message.encode({"responses": [{"partitions": [partition]}]}, 12) == message.encode(
        {"responses": [{"partitions": [{}]}]}, 12)


def test_fetch_request_tagged_fields_and_unknown_tags() -> None:
    message = REQUESTS[ApiKey.FETCH]
    body = {"cluster_id": "c1", "replica_state": {"replica_id": 2, "replica_epoch": 9}, "max_wait_ms": 500,
            "topics": [{"topic_id": uuid.UUID(int=5), "partitions": [{"partition": 1, "high_watermark": 42}]}]}
    wire = message.encode(body, 18)
    decoded = message.decode(wire, 18)[0]
    assert decoded["cluster_id"] == "c1" and decoded["replica_state"] == {"replica_id": 2, "replica_epoch": 9}
    assert decoded["topics"][0]["partitions"][0]["high_watermark"] == 42
    assert decoded["topics"][0]["partitions"][0]["replica_directory_id"] == uuid.UUID(int=0)
    # an unknown top-level tag (7) is skipped
    plain = message.encode({"max_wait_ms": 1}, 12)
    assert plain[-1] == 0
    with_unknown = plain[:-1] + b"\x01\x07\x03abc"
    assert message.decode(with_unknown, 12)[0] == message.decode(plain, 12)[0]


def test_api_versions_response_features() -> None:
    message = RESPONSES[ApiKey.API_VERSIONS]
    body = {"api_keys": [{"api_key": 0, "min_version": 3, "max_version": 9}], "throttle_time_ms": 0,
            "supported_features": [{"name": "metadata.version", "min_version": 1, "max_version": 20}],
            "finalized_features_epoch": 7,
            "finalized_features": [{"name": "metadata.version", "max_version_level": 20, "min_version_level": 20}],
            "zk_migration_ready": True}
    decoded = message.decode(message.encode(body, 3), 3)[0]
    assert decoded == {"error_code": 0, **body}


def test_tagged_field_size_mismatch_is_a_protocol_error() -> None:
    message = RESPONSES[ApiKey.API_VERSIONS]
    good = message.encode({"finalized_features_epoch": 7}, 3)
    # the body ends with: count 1, tag 1, size 8, int64 7; claim size 9 with one extra byte
    assert good.endswith(b"\x01\x01\x08" + struct.pack(">q", 7))
    bad = good[:-9] + b"\x09" + struct.pack(">q", 7) + b"\x00"
    with pytest.raises(ProtocolError, match="size mismatch"):
        message.decode(bad, 3)


# --- bounds and errors -------------------------------------------------------------------------

def test_limits_can_be_overridden() -> None:
    frame = encode_request(ApiKey.PRODUCE, 9, 1, "c", produce_v9(bytes(16_384)))
    with pytest.raises(ProtocolError, match="limit"):
        decode_request(frame, limits=DecodeLimits(records_bytes_max=16_383))
    assert decode_request(frame, limits=DecodeLimits(records_bytes_max=16_384))
    many = encode_request(ApiKey.METADATA, 4, 1, "c", {"topics": [{"name": str(i)} for i in range(20)]})
    with pytest.raises(ProtocolError, match="limit"):
        decode_request(many, limits=DecodeLimits(array_length_max=19))


def test_absurd_array_count_is_refused_before_allocation() -> None:
    wire = struct.pack(">hhi", ApiKey.METADATA, 4, 1) + b"\xff\xff" + b"\x00\x0f\xff\xff" + b"\x01"
    with pytest.raises(ProtocolError, match="cannot fit"):
        decode_request(wire)


def test_null_where_not_nullable() -> None:
    null_topics = struct.pack(">hhi", ApiKey.METADATA, 0, 1) + b"\xff\xff" + b"\xff\xff\xff\xff"
    with pytest.raises(ProtocolError, match="non-nullable"):
        decode_request(null_topics)
    assert decode_request(null_topics[:2] + b"\x00\x01" + null_topics[4:] + b"\x00")[1]["topics"] is None
    with pytest.raises(EncodeError):
        REQUESTS[ApiKey.METADATA].encode({"topics": None}, 0)


def test_bad_utf8_is_a_protocol_error() -> None:
    wire = struct.pack(">hhi", ApiKey.HEARTBEAT, 0, 1) + b"\x00\x00" + b"\x00\x01\xff" + bytes(12)
    with pytest.raises(ProtocolError, match="malformed"):
        decode_request(wire)


def test_encode_errors_name_the_message() -> None:
    with pytest.raises(EncodeError, match="HeartbeatRequest v0"):
        REQUESTS[ApiKey.HEARTBEAT].encode({"generation_id": 1 << 40}, 0)
    with pytest.raises(EncodeError):
        REQUESTS[ApiKey.HEARTBEAT].encode({"group_id": None}, 0)
    with pytest.raises(KeyError):
        encode_response(1, ApiKey.HEARTBEAT, 99, {})


def test_schema_declaration_checks() -> None:
    with pytest.raises(ValueError, match="unknown type"):
        F("x", "int33")
    with pytest.raises(ValueError, match="needs fields"):
        F("x", "[]Thing")
    with pytest.raises(ValueError, match="tag 0"):
        Message("M", api_key=1, valid="0-1", flexible="0+", fields=[F("a", "int8", tag=0), F("b", "int8", tag=0)])
    with pytest.raises(ValueError, match="outside flexible"):
        Message("M", api_key=1, valid="0-3", flexible="2+", fields=[F("a", "int8", "0+", tag=0)])
    with pytest.raises(KeyError):
        REQUESTS[ApiKey.HEARTBEAT].decoder(5)


def test_generated_source_is_readable() -> None:
    source = REQUESTS[ApiKey.PRODUCE].source(9, "decode")
    assert source.startswith("def decode(buf, pos, limits):") and "_rcr(buf, pos, rmax)" in source


# --- fuzzing -----------------------------------------------------------------------------------

VALID_FRAMES = [
    encode_request(key, version, 1, "fuzz", populated(REQUESTS[key], version))
    for key, version in REQUEST_VERSIONS
]


def only_protocol_errors(frame: bytes) -> None:
    with contextlib.suppress(ProtocolError):  # UnsupportedVersionError included
        decode_request(frame)


@given(st.binary(max_size=400))
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_random_bytes(data: bytes) -> None:
    only_protocol_errors(data)


@given(st.binary(max_size=60), st.sampled_from(sorted({(k, v) for k, v in REQUEST_VERSIONS})))
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_random_bodies_behind_valid_headers(data: bytes, key_version: tuple[int, int]) -> None:
    key, version = key_version
    header = struct.pack(">hhi", key, version, 1) + b"\x00\x01c" + (b"\x00" if REQUESTS[key].is_flexible(version)
                                                                      else b"")
    only_protocol_errors(header + data)


@given(st.sampled_from(VALID_FRAMES), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       st.integers(0, 10_000))
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_valid_frames(frame: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(frame)
    for pos, value in flips:
        data[pos % len(data)] = value
    only_protocol_errors(bytes(data[: max(1, len(data) - cut % 8)]))
