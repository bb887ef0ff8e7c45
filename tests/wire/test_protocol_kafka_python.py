"""Cross-checks against kafka-python's own protocol classes (an independent implementation).

For every API and version that both define (kafka-python 3.0.12 goes down to v0 of every
schema and up to the Kafka 4.x maxima):
- requests and responses built with kafka-python and encoded by it decode with ours to the
  same field values, and ours encoded decode with kafka-python to the same values;
- full request frames (header included) from kafka-python decode with decode_request, and our
  encode_response output decodes with kafka-python's header-aware decoder.

kafka-python differs from Kafka's names in a few spots, handled by walking both schemas by
field position: it renames Metadata/DescribeCluster `*_authorized_operations` to
`authorized_operations` and decodes those int32 bitfields to sets of bit numbers; its
ApiVersionsResponse decodes any non-zero error_code as v0 (Kafka does this only for 35).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
from wire_samples import all_versions, expected, nulls, populated

from client.wire.messages import API_NAMES, REQUESTS, RESPONSES
from client.wire.protocol import RequestHeader, decode_request, decode_response, encode_request, encode_response
from client.wire.schema import Field, Message

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from kafka.protocol.api_message import ApiMessage

_KP_MODULES = [
    "admin.cluster", "admin.configs", "admin.groups", "admin.topics", "consumer.fetch", "consumer.group",
    "consumer.offsets", "metadata.api_versions", "metadata.find_coordinator", "metadata.metadata",
    "producer.produce", "producer.transaction",
]


def _kp_classes() -> dict[tuple[int, str], type]:
    found: dict[tuple[int, str], type] = {}
    for name in _KP_MODULES:
        module = importlib.import_module("kafka.protocol." + name)
        for attr in vars(module).values():
            if isinstance(attr, type) and issubclass(attr, ApiMessage) and attr.__module__ == module.__name__:
                found[(attr.API_KEY, attr.type)] = attr
    return found


KP = _kp_classes()


def _cases(kind: str, table: dict[int, Message]) -> list[tuple[int, int]]:
    return [(key, v) for key, v in all_versions(table) if v <= KP[(key, kind)].max_version]


REQUEST_CASES = _cases("request", REQUESTS)
RESPONSE_CASES = _cases("response", RESPONSES)


def _ids(case: tuple[int, int]) -> str:
    return f"{API_NAMES[case[0]]}-v{case[1]}"


# --- walking both schemas side by side ---------------------------------------------------------

def _kp_fields(kp_field: Any) -> list[Any]:
    fields = kp_field.fields
    return list(fields.values()) if isinstance(fields, dict) else list(fields)


def _pairs(ours: Sequence[Field], theirs: Sequence[Any]) -> list[tuple[Field, Any]]:
    assert len(ours) == len(theirs), ([f.name for f in ours], [k.name for k in theirs])
    for a, b in zip(ours, theirs):
        assert a.name == b.name or b.name == "authorized_operations", (a.name, b.name)
    return list(zip(ours, theirs))


def _to_kp(ours: Sequence[Field], theirs: Sequence[Any], body: dict[str, Any], version: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for f, k in _pairs(ours, theirs):
        if not f.versions.has(version) or f.name not in body:
            continue
        value = body[f.name]
        if value is not None and k.is_struct_array():
            value = [k.data_class(**_to_kp(f.fields, _kp_fields(k), item, version)) for item in value]
        elif value is not None and k.is_struct():
            value = k.data_class(**_to_kp(f.fields, _kp_fields(k), value, version))
        elif k.type_str == "bitfield":
            value = {bit for bit in range(32) if (value & 0xFFFFFFFF) >> bit & 1}
        kwargs[k.name] = value
    return kwargs


def _from_kp(ours: Sequence[Field], theirs: Sequence[Any], obj: Any, version: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, k in _pairs(ours, theirs):
        if not f.versions.has(version):
            continue
        value = getattr(obj, k.name)
        if value is not None and k.is_struct_array():
            value = [_from_kp(f.fields, _kp_fields(k), item, version) for item in value]
        elif value is not None and k.is_struct():
            value = _from_kp(f.fields, _kp_fields(k), value, version)
        elif k.type_str == "bitfield":
            raw = sum(1 << bit for bit in value)
            value = raw - (1 << 32) if raw >= 1 << 31 else raw
        elif isinstance(value, bytearray | memoryview):
            value = bytes(value)
        out[f.name] = value
    return out


def _in_version(fields: Sequence[Field], body: dict[str, Any], version: int) -> dict[str, Any]:
    """Only the fields the version carries (kafka-python leaves the others unset)."""
    out: dict[str, Any] = {}
    for f in fields:
        if not f.versions.has(version):
            continue
        value = body[f.name]
        if value is not None and f.is_struct and f.is_array:
            value = [_in_version(f.fields, item, version) for item in value]
        elif value is not None and f.is_struct:
            value = _in_version(f.fields, value, version)
        elif isinstance(value, memoryview):
            value = value.tobytes()
        out[f.name] = value
    return out


def _samples(message: Message, version: int) -> list[dict[str, Any]]:
    bodies = [populated(message, version), nulls(message, version)]
    if message.name == "ApiVersionsResponse":
        for body in bodies:
            body["error_code"] = 0  # kafka-python reads any error as a v0 body
    return bodies


def _kp_message(kind: str, message: Message, body: dict[str, Any], version: int) -> Any:
    cls = KP[(message.api_key, kind)]
    return cls[version](**_to_kp(message.fields, list(cls._struct._fields), body, version))


# --- bodies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", REQUEST_CASES, ids=_ids)
def test_kafka_python_request_decodes_with_ours(case: tuple[int, int]) -> None:
    key, version = case
    message = REQUESTS[key]
    for body in _samples(message, version):
        wire = bytes(_kp_message("request", message, body, version).encode(version=version))
        decoded, end = message.decode(wire, version)
        assert end == len(wire)
        assert _in_version(message.fields, decoded, version) == _in_version(
            message.fields, expected(message, version, body), version)


@pytest.mark.parametrize("case", REQUEST_CASES, ids=_ids)
def test_our_request_decodes_with_kafka_python(case: tuple[int, int]) -> None:
    key, version = case
    message = REQUESTS[key]
    cls = KP[(key, "request")]
    for body in _samples(message, version):
        theirs = cls.decode(message.encode(body, version), version=version)
        assert _from_kp(message.fields, list(cls._struct._fields), theirs, version) == _in_version(
            message.fields, expected(message, version, body), version)


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=_ids)
def test_our_response_decodes_with_kafka_python(case: tuple[int, int]) -> None:
    key, version = case
    message = RESPONSES[key]
    cls = KP[(key, "response")]
    for body in _samples(message, version):
        theirs = cls.decode(message.encode(body, version), version=version)
        assert _from_kp(message.fields, list(cls._struct._fields), theirs, version) == _in_version(
            message.fields, expected(message, version, body), version)


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=_ids)
def test_kafka_python_response_decodes_with_ours(case: tuple[int, int]) -> None:
    key, version = case
    message = RESPONSES[key]
    for body in _samples(message, version):
        wire = bytes(_kp_message("response", message, body, version).encode(version=version))
        decoded, end = message.decode(wire, version)
        assert end == len(wire)
        assert _in_version(message.fields, decoded, version) == _in_version(
            message.fields, expected(message, version, body), version)


# --- headers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", REQUEST_CASES, ids=_ids)
def test_kafka_python_request_frames_with_headers(case: tuple[int, int]) -> None:
    key, version = case
    message = REQUESTS[key]
    body = populated(message, version)
    theirs = _kp_message("request", message, body, version)
    theirs.with_header(correlation_id=4242, client_id="kafka-python-3.0.12")
    frame = bytes(theirs.encode(version=version, header=True))
    header, decoded = decode_request(frame)
    assert header == RequestHeader(key, version, 4242, "kafka-python-3.0.12", 2 if message.is_flexible(version) else 1)
    assert _in_version(message.fields, decoded, version) == _in_version(
        message.fields, expected(message, version, body), version)
    # and our full request frame (header included) decodes with kafka-python
    ours = encode_request(key, version, 4242, "kafka-python-3.0.12", body)
    assert KP[(key, "request")].decode(ours, version=version, header=True).header.correlation_id == 4242


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=_ids)
def test_our_response_frames_decode_with_kafka_python_headers(case: tuple[int, int]) -> None:
    key, version = case
    message = RESPONSES[key]
    cls = KP[(key, "response")]
    body = _samples(message, version)[0]
    wire = encode_response(RequestHeader(key, version, 99, "c"), key, version, body)
    theirs = cls.decode(wire, version=version, header=True)
    assert theirs.header.correlation_id == 99
    assert _from_kp(message.fields, list(cls._struct._fields), theirs, version) == _in_version(
        message.fields, expected(message, version, body), version)
    # kafka-python's framed response with header decodes with ours
    kp_response = _kp_message("response", message, body, version)
    kp_response.with_header(correlation_id=77)
    frame = bytes(kp_response.encode(header=True))  # the version was fixed by cls[version]
    correlation_id, decoded = decode_response(frame, key, version)
    assert correlation_id == 77
    assert _in_version(message.fields, decoded, version) == _in_version(
        message.fields, expected(message, version, body), version)


def test_cross_check_covers_every_api() -> None:
    assert {key for key, _ in REQUEST_CASES} == set(REQUESTS)
    assert len(REQUEST_CASES) == len(all_versions(REQUESTS))  # kafka-python reaches every version we define
