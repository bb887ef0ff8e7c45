"""Sample bodies for every schema version, shared by the wire tests (not a test module).

`populated(message, version)` sets every field the version carries (tagged ones included) to a
non-default value, arrays to two items; `nulls(message, version)` sets every nullable field to
None and every other array to empty. `expected(message, version, body)` is what decoding the
encoded body must give back: every schema field, with defaults for fields the version lacks and
records as bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from client.wire.schema import Field, Message

_INT_SAMPLES = {
    "int8": 20, "int16": 300, "int32": 70_000, "int64": 1 << 40, "uint16": 65_000, "uint32": 4_000_000_000,
}


def _scalar(f: Field, type_: str, index: int) -> Any:
    if type_ in _INT_SAMPLES:
        value = _INT_SAMPLES[type_] + (index % 100)
        return -value if type_.startswith("int") and index % 2 else value
    if type_ == "float64":
        return 1.5 + index
    if type_ == "bool":
        return f.default is not True
    if type_ == "uuid":
        return uuid.UUID(int=(index + 1) * 0x1234567890ABCDEF)
    if type_ == "string":
        return f"{f.name}-{index}-ü"
    if type_ == "bytes":
        return bytes([index % 256, 0, 255]) + f.name.encode()
    if type_ == "records":
        return bytes((index + j) % 256 for j in range(40))
    raise AssertionError(type_)


def _populated_fields(fields: Sequence[Field], version: int, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, f in enumerate(fields):
        if not f.versions.has(version):
            continue
        k = index * 7 + i
        if f.is_array and f.is_struct:
            out[f.name] = [_populated_fields(f.fields, version, k + j) for j in range(2)]
        elif f.is_array:
            out[f.name] = [_scalar(f, f.item_type, k + j) for j in range(3)]
        elif f.is_struct:
            out[f.name] = _populated_fields(f.fields, version, k)
        else:
            out[f.name] = _scalar(f, f.type, k)
    return out


def populated(message: Message, version: int) -> dict[str, Any]:
    return _populated_fields(message.fields, version, 1)


def _null_fields(fields: Sequence[Field], version: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if not f.versions.has(version):
            continue
        if f.nullable_versions.has(version):
            out[f.name] = None
        elif f.is_array:
            out[f.name] = []
        elif f.is_struct:
            out[f.name] = _null_fields(f.fields, version)
        else:
            out[f.name] = _scalar(f, f.type, 0)
    return out


def nulls(message: Message, version: int) -> dict[str, Any]:
    return _null_fields(message.fields, version)


def _expected_fields(fields: Sequence[Field], version: int, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if not f.versions.has(version) or f.name not in body:
            out[f.name] = f.default_value()
            continue
        value = body[f.name]
        if value is None:
            out[f.name] = None
        elif f.is_array and f.is_struct:
            out[f.name] = [_expected_fields(f.fields, version, item) for item in value]
        elif f.is_struct:
            out[f.name] = _expected_fields(f.fields, version, value)
        elif f.type == "records":
            out[f.name] = bytes(value)
        else:
            out[f.name] = value
    return out


def expected(message: Message, version: int, body: dict[str, Any]) -> dict[str, Any]:
    return _expected_fields(message.fields, version, body)


def normalized(value: Any) -> Any:
    """Decoded body with memoryviews turned into bytes (for == comparisons)."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, memoryview):
        return value.tobytes()
    return value


def all_versions(table: dict[int, Message]) -> list[tuple[int, int]]:
    return [(key, v) for key, m in sorted(table.items()) for v in range(m.min_version, m.max_version + 1)]
