"""Kafka record batch v2 (magic 2): layout, CRC-32C, header access, records builder and reader.

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

Each record inside the (decompressed) records section, as Kafka's DefaultRecord defines it; every
integer is a zigzag varint (varint.py), timestampDelta a varlong::

    length            varint   bytes after this field
    attributes        int8     unused, written 0
    timestampDelta    varlong  timestamp - baseTimestamp
    offsetDelta       varint   offset - baseOffset
    keyLength         varint   -1 = null key
    key               bytes
    valueLength       varint   -1 = null value
    value             bytes
    headerCount       varint   >= 0
    headers           headerCount x (keyLength varint >= 0, UTF-8 key, valueLength varint (-1 = null), value)

The first section holds the header-level primitives that storage and the broker use on the hot
path (no record decoding): parsing a header, checking a CRC, stamping baseOffset and
partitionLeaderEpoch in place (both outside the CRC, so no re-checksum), and walking a buffer of
concatenated batches.

The second section works on records:
- `build_batch` writes a batch (the producer's bulk path, the broker's control and rewritten
  batches);
- `decode_records` reads every record of one batch into `Record` tuples;
- `filter_batch` rewrites a batch keeping some records (the log cleaner);
- `validate_client_batch` checks a produced batch and returns a Kafka error code, never raising.

Invariants of every batch `build_batch` writes (checked again by the reader):
- recordsCount is the number of records and the records exactly fill the records section;
- offsetDeltas strictly increase from >= 0 and lastOffsetDelta >= the last one. A producer batch
  has deltas 0..n-1 and lastOffsetDelta = n-1; a compacted batch keeps its original baseOffset and
  lastOffsetDelta with gaps between (KIP-98: the last sequence must survive cleaning);
- baseTimestamp is the first record's timestamp, or the delete horizon when bit 6 is set
  (KIP-534), or -1 (NO_TIMESTAMP) for an empty batch; maxTimestamp is the largest record timestamp
  (CreateTime) or the broker's append time (LogAppendTime);
- an empty batch (recordsCount 0) is uncompressed, with baseTimestamp -1 and the maxTimestamp it
  had before it emptied, as Kafka's DefaultRecordBatch.writeEmptyHeader writes it.

Reading follows Java's DefaultRecord.readFrom: under LogAppendTime every record's timestamp is the
batch maxTimestamp; a negative key or value length means null (-1 is what writers use); a negative
header count or header key length is invalid. Header keys are decoded from UTF-8 with
"surrogateescape", so rewriting a batch keeps even invalid key bytes unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import NamedTuple

import crc32c as _crc32c

from client.wire.compression import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NAMES,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    SUPPORTED_CODECS,
    check_codec,
    compress,
    decompress,
)
from client.wire.errors import CorruptRecordError, ErrorCode, InvalidRecordError, KafkaError
from client.wire.limits import (
    BATCH_BYTES_MAX,
    BATCH_UNCOMPRESSED_BYTES_MAX,
    RECORD_BYTES_MIN,
    VARINT_BYTES_MAX,
    VARLONG_BYTES_MAX,
)
from client.wire.varint import (
    INT64_MAX,
    INT64_MIN,
    LENGTH_CACHE_SIZE,
    LENGTH_VARINT,
    UVARINT_BYTES,
    VARINT_CACHE_SIZE,
    decode_uvarint,
    encode_uvarint,
    encode_varint,
)

__all__ = [
    "ATTRIBUTES_POS", "BASE_OFFSET_POS", "BASE_TIMESTAMP_POS", "BATCH_LENGTH_POS", "CODEC_GZIP", "CODEC_LZ4",
    "CODEC_NAMES", "CODEC_NONE", "CODEC_SNAPPY", "CODEC_ZSTD", "COMPRESSION_MASK", "CONTROL_BIT", "CRC_POS",
    "CRC_START_POS", "DELETE_HORIZON_BIT", "HEADER_SIZE", "HEADER_STRUCT", "LAST_OFFSET_DELTA_POS",
    "LEADER_EPOCH_POS", "LOG_OVERHEAD", "MAGIC_POS", "MAGIC_V2", "MAX_TIMESTAMP_POS", "NO_PARTITION_LEADER_EPOCH",
    "NO_PRODUCER_EPOCH", "NO_PRODUCER_ID", "NO_SEQUENCE", "NO_TIMESTAMP", "PRODUCER_ID_POS", "RECORDS_COUNT_POS",
    "TIMESTAMP_CREATE_TIME", "TIMESTAMP_LOG_APPEND_TIME", "TIMESTAMP_TYPE_BIT", "TRANSACTIONAL_BIT",
    "BatchHeader", "Header", "Record", "RecordInput",
    "batch_size_at", "build_batch", "compute_crc", "crc_is_valid", "decode_records", "filter_batch",
    "iter_batch_headers", "read_header", "set_base_offset", "set_leader_epoch", "set_log_append_time",
    "validate_client_batch",
]

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

# Compression codecs (attribute bits 0-2) live in compression.py and are re-exported here.

TIMESTAMP_CREATE_TIME = 0
TIMESTAMP_LOG_APPEND_TIME = 1

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1
NO_PARTITION_LEADER_EPOCH = -1
INT32_MAX = (1 << 31) - 1

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


# ------------------------------------------------------------------------------------------------
# Records: builder, reader, cleaner filter, client-batch validation.

Header = tuple[str, bytes | None]
# What build_batch takes per record: (key, value, timestamp_ms, headers). headers may be () or None.
RecordInput = tuple[bytes | None, bytes | None, int, Sequence[Header] | None]


class Record(NamedTuple):
    """One decoded record. `offset` is absolute (baseOffset + offsetDelta)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


_NO_HEADERS: tuple[Header, ...] = ()
_TIMESTAMP_OF = itemgetter(2)
_NULL = b"\x01"  # zigzag varint of -1: a null key, value or header value
_ZERO = b"\x00"  # zigzag varint of 0; also the unused record attributes byte

# Precomputed record fragments for the builder's fast loop (indexes past the end raise IndexError,
# which sends that record down the general path).
_ATTRS_AND_TIMESTAMP_DELTA = tuple(_ZERO + raw for raw in UVARINT_BYTES)  # by zigzag(timestampDelta)
_ATTRS_AND_TIMESTAMP_DELTA_ZERO = _ATTRS_AND_TIMESTAMP_DELTA[0]
_NULL_KEY_AND_VALUE_LENGTH = tuple(_NULL + raw for raw in LENGTH_VARINT)  # by len(value)
assert len(_ATTRS_AND_TIMESTAMP_DELTA) == VARINT_CACHE_SIZE


# --- building ------------------------------------------------------------------------------------

def build_batch(records: Sequence[RecordInput], *, base_offset: int = 0, compression: int = CODEC_NONE,
                producer_id: int = NO_PRODUCER_ID, producer_epoch: int = NO_PRODUCER_EPOCH,
                base_sequence: int = NO_SEQUENCE, partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
                is_transactional: bool = False, is_control: bool = False,
                timestamp_type: int = TIMESTAMP_CREATE_TIME, base_timestamp: int | None = None,
                max_timestamp: int | None = None, offset_deltas: Sequence[int] | None = None,
                last_offset_delta: int | None = None, delete_horizon_ms: int | None = None) -> bytes:
    """Encode one v2 batch from (key, value, timestamp_ms, headers) tuples, all at once.

    - `offset_deltas`: explicit, strictly increasing deltas >= 0 (a compacted batch with gaps);
      default 0..n-1.
    - `last_offset_delta`: default the last record's delta; may be larger (records removed from
      the end by compaction). Required for an empty batch, which is written as Kafka writes one:
      uncompressed, baseTimestamp -1 (unless given), maxTimestamp as given (default -1).
    - `base_timestamp`: default the first record's timestamp, or `delete_horizon_ms` when given
      (which also sets attribute bit 6). `max_timestamp`: default the largest record timestamp;
      pass the append time for a LogAppendTime batch.
    Raises ValueError for inconsistent arguments, TypeError for a non-bytes key or value.
    """
    count = len(records)
    if count > INT32_MAX:
        raise ValueError(f"{count} records do not fit one batch")
    if offset_deltas is None:
        last_delta = count - 1
        encoded_deltas: Sequence[bytes] = (LENGTH_VARINT[:count] if count <= LENGTH_CACHE_SIZE
                                           else [encode_uvarint(delta << 1) for delta in range(count)])
    else:
        encoded_deltas = _encode_offset_deltas(offset_deltas, count)
        last_delta = offset_deltas[-1] if count else -1
    if last_offset_delta is None:
        if not count:
            raise ValueError("an empty batch needs an explicit last_offset_delta")
        last_offset_delta = last_delta
    elif not last_delta <= last_offset_delta <= INT32_MAX:
        raise ValueError(f"last_offset_delta {last_offset_delta} is outside [{last_delta}, {INT32_MAX}]")
    if delete_horizon_ms is not None:
        if base_timestamp is not None and base_timestamp != delete_horizon_ms:
            raise ValueError("base_timestamp and delete_horizon_ms differ; bit 6 makes them one field")
        base_timestamp = delete_horizon_ms
    attributes = _attributes(compression if count else CODEC_NONE, timestamp_type, is_transactional,
                             is_control, delete_horizon_ms is not None)
    if count:
        lowest = min(map(_TIMESTAMP_OF, records))
        highest = max(map(_TIMESTAMP_OF, records))
        if base_timestamp is None:
            base_timestamp = records[0][2]
        if max_timestamp is None:
            max_timestamp = highest
        if lowest - base_timestamp < INT64_MIN or highest - base_timestamp > INT64_MAX:
            raise ValueError("a record timestamp is too far from base_timestamp for an int64 delta")
        section = b"".join(_encode_records(records, encoded_deltas, base_timestamp))
        if compression != CODEC_NONE:
            section = compress(compression, section)
    else:
        section = b""
        base_timestamp = NO_TIMESTAMP if base_timestamp is None else base_timestamp
        max_timestamp = NO_TIMESTAMP if max_timestamp is None else max_timestamp
    if len(section) > INT32_MAX - HEADER_SIZE:
        raise ValueError(f"records section of {len(section)} bytes does not fit a batch")
    fields = [base_offset, HEADER_SIZE - LOG_OVERHEAD + len(section), partition_leader_epoch, MAGIC_V2, 0,
              attributes, last_offset_delta, base_timestamp, max_timestamp, producer_id, producer_epoch,
              base_sequence, count]
    header = HEADER_STRUCT.pack(*fields)
    fields[4] = _crc32c.crc32c(section, _crc32c.crc32c(header[CRC_START_POS:]))
    return HEADER_STRUCT.pack(*fields) + section


def _attributes(codec: int, timestamp_type: int, is_transactional: bool, is_control: bool,
                has_delete_horizon: bool) -> int:
    check_codec(codec)
    if timestamp_type not in (TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME):
        raise ValueError(f"timestamp_type {timestamp_type} is neither CreateTime (0) nor LogAppendTime (1)")
    return (codec | (TIMESTAMP_TYPE_BIT if timestamp_type else 0) | (TRANSACTIONAL_BIT if is_transactional else 0)
            | (CONTROL_BIT if is_control else 0) | (DELETE_HORIZON_BIT if has_delete_horizon else 0))


def _encode_offset_deltas(offset_deltas: Sequence[int], count: int) -> list[bytes]:
    if len(offset_deltas) != count:
        raise ValueError(f"{len(offset_deltas)} offset deltas for {count} records")
    previous = -1
    for delta in offset_deltas:
        if not previous < delta <= INT32_MAX:
            raise ValueError(f"offset deltas must strictly increase from >= 0 within int32: {delta} after {previous}")
        previous = delta
    return [encode_uvarint(delta << 1) for delta in offset_deltas]


def _encode_records(records: Sequence[RecordInput], encoded_deltas: Sequence[bytes], base_timestamp: int) -> list:
    """The records section as a list of byte pieces to join.

    Hot path: one loop, every varint from a table, record fragments concatenated only where
    that saves join pieces. A record whose lengths or timestamp delta fall outside the tables
    (IndexError) takes the general path. Keys and values must be bytes-like with 1-byte items.
    """
    pieces: list = []
    extend = pieces.extend
    length_varint = LENGTH_VARINT
    attrs_and_delta = _ATTRS_AND_TIMESTAMP_DELTA
    null_key_and_value_length = _NULL_KEY_AND_VALUE_LENGTH
    for record, offset_delta in zip(records, encoded_deltas):
        key, value, timestamp, headers = record
        try:
            if timestamp == base_timestamp:
                head = _ATTRS_AND_TIMESTAMP_DELTA_ZERO
            else:
                delta = timestamp - base_timestamp
                head = attrs_and_delta[(delta << 1) ^ (delta >> 63)]
            if key is None:
                if value is None:
                    key_and_value_length = _NULL + _NULL
                    value = b""
                    value_length = 0
                else:
                    value_length = len(value)
                    key_and_value_length = null_key_and_value_length[value_length]
            else:
                key_length = len(key)
                if value is None:
                    key_and_value_length = length_varint[key_length] + key + _NULL
                    value = b""
                    value_length = 0
                else:
                    value_length = len(value)
                    key_and_value_length = length_varint[key_length] + key + length_varint[value_length]
            tail = _encode_headers(headers) if headers else _ZERO
            body_length = len(head) + len(offset_delta) + len(key_and_value_length) + value_length + len(tail)
            extend((length_varint[body_length], head, offset_delta, key_and_value_length, value, tail))
        except IndexError:
            extend(_encode_record_general(record, offset_delta, base_timestamp))
    return pieces


def _encode_record_general(record: RecordInput, offset_delta: bytes, base_timestamp: int) -> tuple[bytes, bytes]:
    key, value, timestamp, headers = record
    body = b"".join((_ZERO, encode_varint(timestamp - base_timestamp), offset_delta, _encode_bytes(key),
                     _encode_bytes(value), _encode_headers(headers) if headers else _ZERO))
    return encode_uvarint(len(body) << 1), body


def _encode_bytes(data: bytes | None) -> bytes:
    if data is None:
        return _NULL
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"record keys and values are bytes or None, not {type(data).__name__}")
    return encode_uvarint(len(data) << 1) + data


def _encode_headers(headers: Sequence[Header]) -> bytes:
    """headerCount and the headers; lengths from the table, the general encoder past it."""
    count = len(headers)
    length_varint = LENGTH_VARINT
    pieces = [length_varint[count] if count < LENGTH_CACHE_SIZE else encode_uvarint(count << 1)]
    append = pieces.append
    for header_key, header_value in headers:
        if not isinstance(header_key, str):
            raise TypeError(f"header keys are str, not {type(header_key).__name__}")
        raw_key = header_key.encode("utf-8", "surrogateescape")
        length = len(raw_key)
        append(length_varint[length] if length < LENGTH_CACHE_SIZE else encode_uvarint(length << 1))
        append(raw_key)
        if header_value is None:
            append(_NULL)
        else:
            if not isinstance(header_value, bytes | bytearray | memoryview):
                raise TypeError(f"header values are bytes or None, not {type(header_value).__name__}")
            length = len(header_value)
            append(length_varint[length] if length < LENGTH_CACHE_SIZE else encode_uvarint(length << 1))
            append(header_value)
    return b"".join(pieces)


# --- reading -------------------------------------------------------------------------------------

def decode_records(batch: bytes | bytearray | memoryview, pos: int = 0, *,
                   max_uncompressed_bytes: int = BATCH_UNCOMPRESSED_BYTES_MAX,
                   verify_crc: bool = True) -> list[Record]:
    """Every record of the batch at `pos`, each field materialised (bytes keys/values, str header keys).

    Raises CorruptRecordError (CRC, magic, length, undecodable compression), InvalidRecordError
    (malformed records, or inflation beyond `max_uncompressed_bytes`), UnsupportedCodecError.
    """
    header, section = _open_batch(batch, pos, max_uncompressed_bytes, verify_crc)
    append_time = header.max_timestamp if header.attributes & TIMESTAMP_TYPE_BIT else None
    return _decode_section(section, header.records_count, header.base_offset, header.base_timestamp, append_time)


def _open_batch(batch: bytes | bytearray | memoryview, pos: int, max_uncompressed_bytes: int,
                verify_crc: bool) -> tuple[BatchHeader, bytes]:
    """(header, uncompressed records section) of the batch at `pos`, after the batch-level checks."""
    if len(batch) - pos < HEADER_SIZE:
        raise CorruptRecordError(f"{len(batch) - pos} bytes cannot hold a {HEADER_SIZE}-byte batch header")
    header = read_header(batch, pos)
    if header.magic != MAGIC_V2:
        raise CorruptRecordError(f"batch magic is {header.magic}, only {MAGIC_V2} is supported")
    size = header.total_size
    if size < HEADER_SIZE or pos + size > len(batch):
        raise CorruptRecordError(f"batch length {header.batch_length} does not fit the {len(batch) - pos} bytes given")
    if verify_crc and not crc_is_valid(batch, pos, size):
        raise CorruptRecordError(f"batch at offset {header.base_offset} fails its CRC-32C")
    if header.records_count < 0:
        raise InvalidRecordError(f"negative records count {header.records_count}")
    if header.records_count == 0:
        return header, b""  # Java ignores the records section of an empty batch
    raw = memoryview(batch)[pos + HEADER_SIZE:pos + size]
    codec = header.attributes & COMPRESSION_MASK
    if codec == CODEC_NONE:
        return header, bytes(raw)
    return header, decompress(codec, raw, max_uncompressed_bytes=max_uncompressed_bytes)


def _decode_section(data: bytes, count: int, base_offset: int, base_timestamp: int,
                    append_time: int | None) -> list[Record]:
    """Decode `count` records filling `data` exactly.

    Hot path: the common 1- and 2-byte varints are decoded inline; longer ones go through
    decode_uvarint. Slices past the end are caught by the per-record length check (positions only
    move forward, so an overrun can never land back on the record's end).
    """
    if count > len(data) // RECORD_BYTES_MIN:
        raise InvalidRecordError(f"records count {count} cannot fit {len(data)} bytes")
    records: list[Record] = []
    append = records.append
    new_record = tuple.__new__
    no_headers = _NO_HEADERS
    p = 0
    try:
        for _ in range(count):
            b = data[p]  # length; bit 0 of a varint's first byte is its zigzag sign
            if b & 1:
                raise InvalidRecordError(f"record {len(records)} has a negative length")
            if b < 0x80:
                p += 1
                end = p + (b >> 1)
            else:
                c = data[p + 1]
                if c < 0x80:
                    p += 2
                    end = p + ((b & 0x7F) >> 1 | c << 6)
                else:
                    b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
                    end = p + (b >> 1)
            b = data[p + 1]  # attributes at p (unused), then timestampDelta
            if b < 0x80:
                p += 2
            else:
                c = data[p + 2]
                if c < 0x80:
                    b = (b & 0x7F) | (c << 7)
                    p += 3
                else:
                    b, p = decode_uvarint(data, p + 1, VARLONG_BYTES_MAX)
            timestamp = base_timestamp + ((b >> 1) ^ -(b & 1)) if append_time is None else append_time
            b = data[p]  # offsetDelta
            if b < 0x80:
                p += 1
            else:
                c = data[p + 1]
                if c < 0x80:
                    b = (b & 0x7F) | (c << 7)
                    p += 2
                else:
                    b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
            offset = base_offset + ((b >> 1) ^ -(b & 1))
            b = data[p]  # keyLength
            if b & 1:
                key = None
                p = p + 1 if b < 0x80 else decode_uvarint(data, p, VARINT_BYTES_MAX)[1]
            else:
                if b < 0x80:
                    p += 1
                    b >>= 1
                else:
                    b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
                    b >>= 1
                key = data[p:p + b]
                p += b
            b = data[p]  # valueLength
            if b & 1:
                value = None
                p = p + 1 if b < 0x80 else decode_uvarint(data, p, VARINT_BYTES_MAX)[1]
            else:
                if b < 0x80:
                    p += 1
                    b >>= 1
                else:
                    c = data[p + 1]
                    if c < 0x80:
                        p += 2
                        b = (b & 0x7F) >> 1 | c << 6
                    else:
                        b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
                        b >>= 1
                value = data[p:p + b]
                p += b
            if data[p]:  # headerCount
                headers, p = _decode_headers(data, p)
            else:
                headers = no_headers
                p += 1
            if p != end:
                raise InvalidRecordError(f"record {len(records)} does not fill its length field")
            append(new_record(Record, (offset, timestamp, key, value, headers)))
    except (IndexError, ValueError) as exc:
        raise InvalidRecordError(f"record {len(records)} is cut short or malformed: {exc}") from exc
    if p != len(data):
        raise InvalidRecordError(f"{len(data) - p} bytes remain after the {count} records of the batch")
    return records


def _decode_headers(data: bytes, p: int) -> tuple[tuple[Header, ...], int]:
    """headerCount and the headers at `p`; 1-byte varints inline. Overruns are left to the caller's
    end-of-record check, as in _decode_section."""
    b = data[p]
    if b < 0x80:
        p += 1
    else:
        b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
    if b & 1:
        raise InvalidRecordError("negative header count")
    count = b >> 1
    if 2 * count > len(data) - p:  # every header takes at least 2 bytes
        raise InvalidRecordError(f"header count {count} cannot fit the record")
    headers = []
    append = headers.append
    for _ in range(count):
        b = data[p]  # keyLength
        if b < 0x80:
            p += 1
        else:
            b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
        if b & 1:
            raise InvalidRecordError("negative header key length")
        b >>= 1
        header_key = data[p:p + b].decode("utf-8", "surrogateescape")
        p += b
        b = data[p]  # valueLength
        if b < 0x80:
            p += 1
        else:
            b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
        if b & 1:
            append((header_key, None))
        else:
            b >>= 1
            append((header_key, data[p:p + b]))
            p += b
    return tuple(headers), p


# --- compaction ----------------------------------------------------------------------------------

def filter_batch(batch: bytes | bytearray | memoryview, keep: Callable[[Record], bool], *,
                 max_uncompressed_bytes: int = BATCH_UNCOMPRESSED_BYTES_MAX,
                 delete_horizon_ms: int | None = None) -> bytes:
    """The batch rewritten with only the records `keep` accepts (the log cleaner; Kafka's filterTo).

    `batch` holds exactly one batch; its CRC is verified first (a rewrite must never launder
    corruption into a fresh CRC). The result keeps baseOffset, lastOffsetDelta,
    partitionLeaderEpoch, producer id/epoch, baseSequence, timestamp type, transactional and
    control bits and the codec; kept records keep their offsets (gaps appear) and their bytes.
    maxTimestamp is recomputed over the kept records (kept as is under LogAppendTime).
    - Nothing removed and no new delete horizon: the original bytes come back.
    - Nothing kept: an empty batch (count 0) with the same identity, written as Kafka's
      writeEmptyHeader does (uncompressed, baseTimestamp -1, original maxTimestamp). Whether to
      retain it (a producer's last batch) or drop it is the caller's policy.
    - `delete_horizon_ms` sets attribute bit 6 and baseTimestamp = the horizon (KIP-534) unless the
      batch already has one, which is kept.
    """
    if batch_size_at(batch, 0) != len(batch):
        raise InvalidRecordError(f"filter_batch takes exactly one batch; got {len(batch)} bytes")
    header, section = _open_batch(batch, 0, max_uncompressed_bytes, verify_crc=True)
    attributes = header.attributes
    log_append_time = bool(attributes & TIMESTAMP_TYPE_BIT)
    records = _decode_section(section, header.records_count, header.base_offset, header.base_timestamp,
                              header.max_timestamp if log_append_time else None)
    kept = [record for record in records if keep(record)]
    has_horizon = bool(attributes & DELETE_HORIZON_BIT)
    if has_horizon:
        delete_horizon_ms = header.base_timestamp
    if len(kept) == len(records) and (has_horizon or delete_horizon_ms is None):
        return bytes(batch)
    identity = {
        "base_offset": header.base_offset, "last_offset_delta": header.last_offset_delta,
        "partition_leader_epoch": header.leader_epoch, "producer_id": header.producer_id,
        "producer_epoch": header.producer_epoch, "base_sequence": header.base_sequence,
        "is_transactional": bool(attributes & TRANSACTIONAL_BIT), "is_control": bool(attributes & CONTROL_BIT),
        "timestamp_type": TIMESTAMP_LOG_APPEND_TIME if log_append_time else TIMESTAMP_CREATE_TIME,
    }
    if not kept:
        return build_batch([], max_timestamp=header.max_timestamp, **identity)
    return build_batch(
        [(record.key, record.value, record.timestamp, record.headers) for record in kept],
        offset_deltas=[record.offset - header.base_offset for record in kept],
        compression=attributes & COMPRESSION_MASK, delete_horizon_ms=delete_horizon_ms,
        max_timestamp=header.max_timestamp if log_append_time else max(record.timestamp for record in kept),
        **identity)


# --- validation of produced batches --------------------------------------------------------------

def validate_client_batch(buf: bytes | bytearray | memoryview, *, max_batch_bytes: int = BATCH_BYTES_MAX,
                          require_keys: bool = False,
                          max_uncompressed_bytes: int = BATCH_UNCOMPRESSED_BYTES_MAX,
                          now_ms: int | None = None, timestamp_before_max_ms: int = INT64_MAX,
                          timestamp_after_max_ms: int = INT64_MAX) -> ErrorCode:
    """Check one partition's records from a Produce request; ErrorCode.NONE (0) or the Kafka error.

    Never raises on any content of `buf`. Only for client batches: stored and compacted batches
    have offset gaps on purpose. The checks and their codes, in Kafka's order [ProduceRequest.
    validateRecords, UnifiedLog.analyzeAndValidateRecords, LogValidator.validateBatch/validateRecord]:

    - not exactly one whole batch (none, a partial one, a second one, trailing bytes): INVALID_RECORD
    - magic != 2: INVALID_RECORD (Kafka's answer for Produce v3+; v0-2 are not served)
    - batchLength below the 61-byte header: CORRUPT_MESSAGE
    - baseOffset != 0: INVALID_RECORD
    - size > `max_batch_bytes`: MESSAGE_TOO_LARGE
    - CRC-32C mismatch: CORRUPT_MESSAGE
    - lastOffsetDelta < 0, count <= 0, count != lastOffsetDelta + 1: INVALID_RECORD
    - control batch; producerId >= 0 with baseSequence < 0: INVALID_RECORD
    - LogAppendTime set by the producer: INVALID_TIMESTAMP
    - codec unknown (5-7) or not available (snappy, zstd): UNSUPPORTED_COMPRESSION_TYPE
    - compressed bytes that do not decompress: CORRUPT_MESSAGE; inflating past
      `max_uncompressed_bytes`: INVALID_RECORD
    - a record cut short, overrunning or not filling its length, bytes after the last record,
      offsetDeltas other than 0..count-1, a null key when `require_keys` (compacted topic):
      INVALID_RECORD
    - `now_ms` given (CreateTime topics): a record timestamp (other than -1) more than
      `timestamp_before_max_ms` before or `timestamp_after_max_ms` after it: INVALID_TIMESTAMP
    """
    size = len(buf)
    if size < LOG_OVERHEAD:
        return ErrorCode.INVALID_RECORD
    if batch_size_at(buf, 0) != size:
        return ErrorCode.INVALID_RECORD
    if size > MAGIC_POS and buf[MAGIC_POS] != MAGIC_V2:
        return ErrorCode.INVALID_RECORD
    if size < HEADER_SIZE:
        return ErrorCode.CORRUPT_MESSAGE
    header = read_header(buf)
    if header.base_offset != 0:
        return ErrorCode.INVALID_RECORD
    if size > max_batch_bytes:
        return ErrorCode.MESSAGE_TOO_LARGE
    if not crc_is_valid(buf, 0, size):
        return ErrorCode.CORRUPT_MESSAGE
    count = header.records_count
    attributes = header.attributes
    if header.last_offset_delta < 0 or count <= 0 or count != header.last_offset_delta + 1:
        return ErrorCode.INVALID_RECORD
    if attributes & CONTROL_BIT or (header.producer_id >= 0 and header.base_sequence < 0):
        return ErrorCode.INVALID_RECORD
    if attributes & TIMESTAMP_TYPE_BIT:
        return ErrorCode.INVALID_TIMESTAMP
    codec = attributes & COMPRESSION_MASK
    if codec not in SUPPORTED_CODECS:
        return ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    if codec == CODEC_NONE:
        section = bytes(memoryview(buf)[HEADER_SIZE:])
    else:
        try:
            section = decompress(codec, memoryview(buf)[HEADER_SIZE:], max_uncompressed_bytes=max_uncompressed_bytes)
        except KafkaError as exc:
            return exc.code
    if count > len(section) // RECORD_BYTES_MIN:
        return ErrorCode.INVALID_RECORD
    error, timestamp_delta_raw_max = _walk_client_records(section, count, require_keys)
    if error:
        return error
    if now_ms is not None and not _timestamps_in_window(
            section, header, timestamp_delta_raw_max, now_ms, timestamp_before_max_ms, timestamp_after_max_ms):
        return ErrorCode.INVALID_TIMESTAMP
    return ErrorCode.NONE


def _walk_client_records(data: bytes, count: int, require_keys: bool) -> tuple[ErrorCode, int]:
    """Walk `count` records that must exactly fill `data`, materialising nothing.

    Returns (error code, largest zigzag timestampDelta seen). Offset deltas are compared in their
    zigzag form (2 * i). The hot path of Produce: varints inline, key/value bytes skipped by
    arithmetic (an overrun shows up as an IndexError or as a position past the record's end).
    """
    p = 0
    # 1-byte timestampDeltas are not tracked: 0x7F bounds them all (a reach of 64 ms).
    delta_raw_max = 0x7F
    try:
        for expected in range(0, count << 1, 2):  # zigzag(offsetDelta) of record i is 2i
            b = data[p]  # length; bit 0 of a varint's first byte is its zigzag sign
            if b & 1:
                return ErrorCode.INVALID_RECORD, 0
            if b < 0x80:
                p += 1
                end = p + (b >> 1)
            else:
                c = data[p + 1]
                if c < 0x80:
                    p += 2
                    end = p + ((b & 0x7F) >> 1 | c << 6)
                else:
                    b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
                    end = p + (b >> 1)
            b = data[p + 1]  # attributes at p, then timestampDelta
            if b < 0x80:
                p += 2
            else:
                c = data[p + 2]
                if c < 0x80:
                    b = (b & 0x7F) | (c << 7)
                    p += 3
                else:
                    b, p = decode_uvarint(data, p + 1, VARLONG_BYTES_MAX)
                if b > delta_raw_max:
                    delta_raw_max = b
            b = data[p]  # offsetDelta
            if b < 0x80:
                p += 1
            else:
                c = data[p + 1]
                if c < 0x80:
                    b = (b & 0x7F) | (c << 7)
                    p += 2
                else:
                    b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
            if b != expected:
                return ErrorCode.INVALID_RECORD, 0
            b = data[p]  # keyLength
            if b & 1:
                if require_keys:
                    return ErrorCode.INVALID_RECORD, 0
                p = p + 1 if b < 0x80 else decode_uvarint(data, p, VARINT_BYTES_MAX)[1]
            elif b < 0x80:
                p += 1 + (b >> 1)
            else:
                b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
                p += b >> 1
            b = data[p]  # valueLength
            if b & 1:
                p = p + 1 if b < 0x80 else decode_uvarint(data, p, VARINT_BYTES_MAX)[1]
            elif b < 0x80:
                p += 1 + (b >> 1)
            else:
                c = data[p + 1]
                if c < 0x80:
                    p += 2 + ((b & 0x7F) >> 1 | c << 6)
                else:
                    b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
                    p += b >> 1
            if data[p]:  # headerCount
                p = _skip_headers(data, p)
            else:
                p += 1
            if p != end:
                return ErrorCode.INVALID_RECORD, 0
    except (IndexError, ValueError, InvalidRecordError):
        return ErrorCode.INVALID_RECORD, 0
    if p != len(data):
        return ErrorCode.INVALID_RECORD, 0
    return ErrorCode.NONE, delta_raw_max


def _skip_headers(data: bytes, p: int) -> int:
    """Position after the headerCount and headers at `p` (checks as _decode_headers, no slices)."""
    b = data[p]
    if b < 0x80:
        p += 1
    else:
        b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
    if b & 1:
        raise InvalidRecordError("negative header count")
    count = b >> 1
    if 2 * count > len(data) - p:
        raise InvalidRecordError(f"header count {count} cannot fit the record")
    for _ in range(count):
        b = data[p]  # keyLength
        if b < 0x80:
            p += 1
        else:
            b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
        if b & 1:
            raise InvalidRecordError("negative header key length")
        p += b >> 1
        b = data[p]  # valueLength
        if b < 0x80:
            p += 1
        else:
            b, p = decode_uvarint(data, p, VARINT_BYTES_MAX)
        if not b & 1:
            p += b >> 1
    return p


def _timestamps_in_window(section: bytes, header: BatchHeader, delta_raw_max: int, now_ms: int,
                          before_max_ms: int, after_max_ms: int) -> bool:
    """Kafka's CreateTime check (message.timestamp.{before,after}.max.ms, KIP-937).

    Every timestamp lies within baseTimestamp +- reach, reach bounded by the largest zigzag delta,
    so the common case needs no per-record work; only a batch near an edge is decoded.
    """
    reach = (delta_raw_max + 1) >> 1
    lowest_ms = now_ms - before_max_ms
    highest_ms = now_ms + after_max_ms
    if header.base_timestamp - reach >= lowest_ms and header.base_timestamp + reach <= highest_ms:
        return True
    # The walk accepted the section, so decoding it cannot fail.
    for record in _decode_section(section, header.records_count, 0, header.base_timestamp, None):
        timestamp = record.timestamp
        if timestamp != NO_TIMESTAMP and not lowest_ms <= timestamp <= highest_ms:
            return False
    return True
