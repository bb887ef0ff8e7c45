"""`__consumer_offsets` record layouts (broker/groups/records.py) against hand-built Kafka bytes."""

from __future__ import annotations

import struct

import pytest

from broker.groups.records import (
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    OffsetValue,
    RecordFormatError,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_group_key,
    encode_group_value,
    encode_offset_key,
    encode_offset_value,
)


def s(text: str | None) -> bytes:
    return struct.pack(">h", -1) if text is None else struct.pack(">h", len(text.encode())) + text.encode()


def test_offset_commit_key_v1_and_value_v3_bytes() -> None:
    key = encode_offset_key(OffsetKey("grp", "topic", 7))
    assert key == struct.pack(">h", 1) + s("grp") + s("topic") + struct.pack(">i", 7)
    assert decode_key(key) == OffsetKey("grp", "topic", 7)
    value = encode_offset_value(OffsetValue(42, 3, "meta", 1_700_000_000_000))
    assert value == struct.pack(">hqi", 3, 42, 3) + s("meta") + struct.pack(">q", 1_700_000_000_000)
    assert decode_offset_value(value) == OffsetValue(42, 3, "meta", 1_700_000_000_000)


def test_older_offset_values_decode() -> None:
    v0 = struct.pack(">hq", 0, 5) + s("") + struct.pack(">q", 9)
    v1 = struct.pack(">hq", 1, 5) + s("m") + struct.pack(">qq", 9, 99)
    assert decode_offset_value(v0) == OffsetValue(5, -1, "", 9)
    assert decode_offset_value(v1) == OffsetValue(5, -1, "m", 9)
    assert decode_key(struct.pack(">h", 0) + s("g") + s("t") + struct.pack(">i", 1)) == OffsetKey("g", "t", 1)


def test_group_metadata_key_v2_and_value_v3_bytes() -> None:
    key = encode_group_key(GroupKey("grp"))
    assert key == struct.pack(">h", 2) + s("grp")
    assert decode_key(key) == GroupKey("grp")
    member = MemberValue("m-1", None, "cid", "/127.0.0.1", 300_000, 45_000, b"sub", b"assign")
    value = GroupValue("consumer", 4, "range", "m-1", 1234, (member,))
    raw = encode_group_value(value)
    expected = (struct.pack(">h", 3) + s("consumer") + struct.pack(">i", 4) + s("range") + s("m-1")
                + struct.pack(">q", 1234) + struct.pack(">i", 1) + s("m-1") + s(None) + s("cid") + s("/127.0.0.1")
                + struct.pack(">ii", 300_000, 45_000) + struct.pack(">i", 3) + b"sub" + struct.pack(">i", 6)
                + b"assign")
    assert raw == expected
    assert decode_group_value(raw) == value


def test_empty_group_value_has_null_protocol_and_leader() -> None:
    value = GroupValue("consumer", 9, None, None, -1, ())
    assert decode_group_value(encode_group_value(value)) == value


@pytest.mark.parametrize("raw", [b"", struct.pack(">h", 3), struct.pack(">h", 7) + s("g"),
                                 struct.pack(">h", 2) + s("g") + b"x", struct.pack(">h", 2) + struct.pack(">h", 50)])
def test_malformed_keys_are_errors(raw: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_key(raw)


def test_malformed_values_are_errors() -> None:
    with pytest.raises(RecordFormatError):
        decode_offset_value(struct.pack(">hq", 4, 1))
    with pytest.raises(RecordFormatError):
        decode_group_value(struct.pack(">h", 3) + s("consumer") + struct.pack(">i", 1) + s(None) + s(None)
                           + struct.pack(">qi", 0, 1 << 30))
