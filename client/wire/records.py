"""Kafka record batch v2 (magic 2): layout, CRC-32C, header access.

Byte layout of one batch (big-endian), as Kafka's DefaultRecordBatch defines it::

    offset size field
    0      8    baseOffset            int64   broker-assigned; outside the CRC
    8      4    batchLength           int32   bytes after this field (total = 12 + batchLength)
    12     4    partitionLeaderEpoch  int32   broker-assigned; outside the CRC
    16     1    magic                 int8    = 2
    17     4    crc                   uint32  CRC-32C over bytes 21..end
    21     2    attributes            int16   bits 0-2 codec, 3 timestamp type, 4 transactional,
                                              5 control, 6 delete horizon set
    23     4    lastOffsetDelta       int32
    27     8    baseTimestamp         int64
    35     8    maxTimestamp          int64
    43     8    producerId            int64
    51     2    producerEpoch         int16
    53     4    baseSequence          int32
    57     4    recordsCount          int32   never compressed
    61     ...  records               (one compressed blob when codec != 0)

This module section holds the header-level primitives that storage and the broker use on the hot
path (no record decoding): parsing a header, checking a CRC, stamping baseOffset and
partitionLeaderEpoch in place (both outside the CRC, so no re-checksum), and walking a buffer of
concatenated batches.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import crc32c as _crc32c

MAGIC_V2 = 2
HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the part of a batch not counted in batchLength
HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")
assert HEADER_STRUCT.size == HEADER_SIZE

# Field offsets inside a batch.
BASE_OFFSET_POS = 0
BATCH_LENGTH_POS = 8
LEADER_EPOCH_POS = 12
MAGIC_POS = 16
CRC_POS = 17
ATTRIBUTES_POS = 21
LAST_OFFSET_DELTA_POS = 23
BASE_TIMESTAMP_POS = 27
MAX_TIMESTAMP_POS = 35
PRODUCER_ID_POS = 43
RECORDS_COUNT_POS = 57
CRC_START_POS = ATTRIBUTES_POS

# Attribute bits.
COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20
DELETE_HORIZON_BIT = 0x40

# Compression codecs (attribute bits 0-2).
CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_SNAPPY = 2
CODEC_LZ4 = 3
CODEC_ZSTD = 4
CODEC_NAMES = {CODEC_NONE: "none", CODEC_GZIP: "gzip", CODEC_SNAPPY: "snappy", CODEC_LZ4: "lz4",
               CODEC_ZSTD: "zstd"}

TIMESTAMP_CREATE_TIME = 0
TIMESTAMP_LOG_APPEND_TIME = 1

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1

_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")


class BatchHeader(NamedTuple):
    """The 61-byte header of a v2 batch, decoded. `total_size` = 12 + batch_length."""

    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def total_size(self) -> int:
        return LOG_OVERHEAD + self.batch_length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return (self.attributes & TIMESTAMP_TYPE_BIT) >> 3

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Decode the header at `pos`. The caller guarantees HEADER_SIZE bytes are there."""
    return BatchHeader._make(HEADER_STRUCT.unpack_from(buf, pos))


def batch_size_at(buf: bytes | bytearray | memoryview, pos: int) -> int:
    """Total size of the batch starting at `pos` (12 + batchLength); -1 if the length field is cut."""
    if len(buf) - pos < LOG_OVERHEAD:
        return -1
    return LOG_OVERHEAD + _INT32.unpack_from(buf, pos + BATCH_LENGTH_POS)[0]


def compute_crc(buf: bytes | bytearray | memoryview, pos: int = 0, total_size: int | None = None) -> int:
    """CRC-32C over attributes..end of the batch at `pos`."""
    if total_size is None:
        total_size = batch_size_at(buf, pos)
    view = memoryview(buf)[pos + CRC_START_POS: pos + total_size]
    return _crc32c.crc32c(view)


def crc_is_valid(buf: bytes | bytearray | memoryview, pos: int = 0, total_size: int | None = None) -> bool:
    """True when the stored CRC matches the bytes. The batch must be whole in `buf`."""
    if total_size is None:
        total_size = batch_size_at(buf, pos)
    if total_size < HEADER_SIZE or pos + total_size > len(buf):
        return False
    return _UINT32.unpack_from(buf, pos + CRC_POS)[0] == compute_crc(buf, pos, total_size)


def set_base_offset(buf: bytearray | memoryview, base_offset: int, pos: int = 0) -> None:
    """Stamp baseOffset in place. Outside the CRC: no re-checksum needed."""
    _INT64.pack_into(buf, pos + BASE_OFFSET_POS, base_offset)


def set_leader_epoch(buf: bytearray | memoryview, leader_epoch: int, pos: int = 0) -> None:
    """Stamp partitionLeaderEpoch in place. Outside the CRC: no re-checksum needed."""
    _INT32.pack_into(buf, pos + LEADER_EPOCH_POS, leader_epoch)


def set_log_append_time(buf: bytearray | memoryview, now_ms: int, pos: int = 0) -> None:
    """Mark the batch LogAppendTime with maxTimestamp = now_ms and recompute the CRC (both inside it)."""
    attributes = _INT16.unpack_from(buf, pos + ATTRIBUTES_POS)[0]
    _INT16.pack_into(buf, pos + ATTRIBUTES_POS, attributes | TIMESTAMP_TYPE_BIT)
    _INT64.pack_into(buf, pos + MAX_TIMESTAMP_POS, now_ms)
    _UINT32.pack_into(buf, pos + CRC_POS, compute_crc(buf, pos))


def iter_batch_headers(buf: bytes | bytearray | memoryview, pos: int = 0):
    """Yield (position, header) for each whole batch in `buf`; stops at a partial tail.

    Does not verify CRCs or magic: callers that need that check `crc_is_valid`/`header.magic`.
    Yields nothing past a batch whose length field is impossible (< HEADER_SIZE - 12).
    """
    end = len(buf)
    while end - pos >= HEADER_SIZE:
        header = BatchHeader._make(HEADER_STRUCT.unpack_from(buf, pos))
        size = LOG_OVERHEAD + header.batch_length
        if size < HEADER_SIZE or pos + size > end:
            return
        yield pos, header
        pos += size
