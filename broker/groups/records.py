"""`__consumer_offsets` records in Kafka's own byte layouts, so the data is Kafka-shaped.

Every record has a key; the key's leading int16 version says what the record is. A null value
is a tombstone (compaction drops the key after `delete.retention.ms`). All integers big-endian;
`string` = int16 length + UTF-8 bytes (-1 = null, only where marked nullable); `bytes` = int32
length + raw bytes. [S: ak group-coordinator/src/main/resources/common/message/OffsetCommitKey.json,
OffsetCommitValue.json, GroupMetadataKey.json, GroupMetadataValue.json]

Offset commit key, version 1 (0 reads the same)::

    int16 version=1 | string group | string topic | int32 partition

Offset commit value, version 3 (written); 0-2 are read too::

    int16 version=3 | int64 offset | int32 leader_epoch | string metadata | int64 commit_timestamp
    (v0: offset, metadata, commit_timestamp; v1: + int64 expire_timestamp; v2 = v0)

Group metadata key, version 2::

    int16 version=2 | string group

Group metadata value, version 3 (written); 0-2 are read too::

    int16 version=3 | string protocol_type | int32 generation | nullable string protocol
    | nullable string leader | int64 current_state_timestamp (v2+)
    | int32 member count, each: string member_id | nullable string group_instance_id (v3+)
      | string client_id | string client_host | int32 rebalance_timeout (v1+)
      | int32 session_timeout | bytes subscription | bytes assignment

Decoding is bounded by the record itself (every length is checked against what is left) and
raises `RecordFormatError` for anything malformed or of an unknown version; the flexible
versions (offset value v4, group value v4) are not written by replog and not read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

OFFSET_KEY_VERSION = 1
OFFSET_VALUE_VERSION = 3
GROUP_KEY_VERSION = 2
GROUP_VALUE_VERSION = 3

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class RecordFormatError(ValueError):
    """A `__consumer_offsets` key or value that does not decode."""


@dataclass(frozen=True)
class OffsetKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupKey:
    group_id: str


@dataclass(frozen=True)
class OffsetValue:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp_ms: int = -1


@dataclass(frozen=True)
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True)
class GroupValue:
    protocol_type: str
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    current_state_timestamp_ms: int = -1
    members: tuple[MemberValue, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------ writing

def _string(value: str | None) -> bytes:
    if value is None:
        return _I16.pack(-1)
    raw = value.encode()
    if len(raw) > 0x7FFF:
        raise ValueError(f"string of {len(raw)} bytes does not fit an int16 length")
    return _I16.pack(len(raw)) + raw


def _bytes(value: bytes) -> bytes:
    return _I32.pack(len(value)) + value


def encode_offset_key(key: OffsetKey) -> bytes:
    return _I16.pack(OFFSET_KEY_VERSION) + _string(key.group_id) + _string(key.topic) + _I32.pack(key.partition)


def encode_group_key(key: GroupKey) -> bytes:
    return _I16.pack(GROUP_KEY_VERSION) + _string(key.group_id)


def encode_offset_value(value: OffsetValue) -> bytes:
    return b"".join((_I16.pack(OFFSET_VALUE_VERSION), _I64.pack(value.offset), _I32.pack(value.leader_epoch),
                     _string(value.metadata), _I64.pack(value.commit_timestamp_ms)))


def encode_group_value(value: GroupValue) -> bytes:
    parts = [_I16.pack(GROUP_VALUE_VERSION), _string(value.protocol_type), _I32.pack(value.generation_id),
             _string(value.protocol_name), _string(value.leader_id), _I64.pack(value.current_state_timestamp_ms),
             _I32.pack(len(value.members))]
    for m in value.members:
        parts += [_string(m.member_id), _string(m.group_instance_id), _string(m.client_id), _string(m.client_host),
                  _I32.pack(m.rebalance_timeout_ms), _I32.pack(m.session_timeout_ms), _bytes(m.subscription),
                  _bytes(m.assignment)]
    return b"".join(parts)


# ------------------------------------------------------------------------------------ reading

class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RecordFormatError(f"record ends early: need {n} bytes at {self.pos} of {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def i16(self) -> int:
        return int(_I16.unpack(self._take(2))[0])

    def i32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def string(self, nullable: bool = False) -> str | None:
        n = self.i16()
        if n == -1 and nullable:
            return None
        if n < 0:
            raise RecordFormatError(f"negative string length {n}")
        try:
            return self._take(n).decode()
        except UnicodeDecodeError as exc:
            raise RecordFormatError(f"string is not UTF-8: {exc}") from None

    def text(self) -> str:
        value = self.string()
        assert value is not None
        return value

    def raw(self) -> bytes:
        n = self.i32()
        if n == -1:
            return b""
        return bytes(self._take(n))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise RecordFormatError(f"{len(self.data) - self.pos} trailing bytes")


def decode_key(data: bytes) -> OffsetKey | GroupKey:
    r = _Reader(bytes(data))
    version = r.i16()
    if version in (0, 1):
        key: OffsetKey | GroupKey = OffsetKey(r.text(), r.text(), r.i32())
    elif version == 2:
        key = GroupKey(r.text())
    else:
        raise RecordFormatError(f"unknown __consumer_offsets key version {version}")
    r.done()
    return key


def decode_offset_value(data: bytes) -> OffsetValue:
    r = _Reader(bytes(data))
    version = r.i16()
    if version not in (0, 1, 2, 3):
        raise RecordFormatError(f"unknown offset commit value version {version}")
    offset = r.i64()
    leader_epoch = r.i32() if version >= 3 else -1
    metadata = r.text()
    commit_timestamp = r.i64()
    if version == 1:
        r.i64()  # expire timestamp (KIP-211 removed it)
    r.done()
    return OffsetValue(offset, leader_epoch, metadata, commit_timestamp)


def decode_group_value(data: bytes) -> GroupValue:
    r = _Reader(bytes(data))
    version = r.i16()
    if version not in (0, 1, 2, 3):
        raise RecordFormatError(f"unknown group metadata value version {version}")
    protocol_type = r.text()
    generation = r.i32()
    protocol = r.string(nullable=True)
    leader = r.string(nullable=True)
    timestamp = r.i64() if version >= 2 else -1
    count = r.i32()
    if count < 0 or count > len(data):  # every member takes more than one byte: a cheap bound
        raise RecordFormatError(f"implausible member count {count}")
    members = []
    for _ in range(count):
        member_id = r.text()
        instance_id = r.string(nullable=True) if version >= 3 else None
        client_id = r.text()
        client_host = r.text()
        rebalance_timeout = r.i32() if version >= 1 else -1
        session_timeout = r.i32()
        if rebalance_timeout < 0:
            rebalance_timeout = session_timeout
        members.append(MemberValue(member_id, instance_id, client_id, client_host, rebalance_timeout,
                                   session_timeout, r.raw(), r.raw()))
    r.done()
    return GroupValue(protocol_type, generation, protocol, leader, timestamp, tuple(members))
