"""Compression of a record batch's records section (attribute bits 0-2), with bounded inflation.

Codec ids (Kafka's CompressionType): 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd; 5-7 are unassigned.

Supported here:
- none.
- lz4: the standard LZ4 *frame* format (magic 0x184D2204 little-endian), no Kafka framing
  [KAFKA_PROTOCOL.md §3.4]. We write FLG 0x60 (version 1, independent blocks, no checksums, no
  content size) and BD 0x40 (64 KiB blocks), as Java and librdkafka do. We read what Java's
  KafkaLZ4BlockInputStream reads: version 1, independent blocks, reserved bits zero, optional
  content size, optional block and content checksums (verified by liblz4). A frame with dependent
  blocks, a dictionary id or trailing bytes after the end mark is corrupt: a Java consumer could
  not read it.
- gzip: RFC 1952 via zlib (Java's GZIPOutputStream/GZIPInputStream); concatenated members are
  read like Java does.
- snappy (xerial framing) and zstd need a library this project does not depend on; both raise
  UnsupportedCodecError, as do the unassigned ids 5-7.

Every decompression is bounded: output beyond `max_uncompressed_bytes` (default
limits.BATCH_UNCOMPRESSED_BYTES_MAX) raises UncompressedSizeExceededError without producing it.
Output is produced in chunks (the declared lz4 content size, else DECOMPRESS_CHUNK_BYTES, then
doubling), so the bound costs no up-front allocation.

Errors: UnsupportedCodecError (UNSUPPORTED_COMPRESSION_TYPE 76), CorruptRecordError
(CORRUPT_MESSAGE 2) for undecodable bytes, UncompressedSizeExceededError (INVALID_RECORD 87).
"""

from __future__ import annotations

import struct
import zlib

import lz4.frame as _lz4_frame

from client.wire.errors import CorruptRecordError, UncompressedSizeExceededError, UnsupportedCodecError
from client.wire.limits import BATCH_UNCOMPRESSED_BYTES_MAX, DECOMPRESS_CHUNK_BYTES

CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_SNAPPY = 2
CODEC_LZ4 = 3
CODEC_ZSTD = 4
CODEC_NAMES = {CODEC_NONE: "none", CODEC_GZIP: "gzip", CODEC_SNAPPY: "snappy", CODEC_LZ4: "lz4",
               CODEC_ZSTD: "zstd"}
SUPPORTED_CODECS = frozenset({CODEC_NONE, CODEC_GZIP, CODEC_LZ4})

GZIP_LEVEL = 6  # Java's Deflater.DEFAULT_COMPRESSION, what GZIPOutputStream uses
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer

# LZ4 frame descriptor [lz4 frame format spec; Java KafkaLZ4BlockOutputStream.FLG/BD].
LZ4_FRAME_MAGIC = 0x184D2204
_LZ4_MAGIC_BYTES = struct.pack("<I", LZ4_FRAME_MAGIC)
_LZ4_FLG_VERSION_MASK = 0xC0
_LZ4_FLG_VERSION_1 = 0x40
_LZ4_FLG_BLOCK_INDEPENDENCE = 0x20
_LZ4_FLG_CONTENT_SIZE = 0x08
_LZ4_FLG_RESERVED = 0x03  # bit 1 reserved, bit 0 dictionary id: Java rejects both
_LZ4_BD_RESERVED = 0x8F
_LZ4_BD_BLOCK_SIZES = frozenset({4, 5, 6, 7})  # 64 KiB, 256 KiB, 1 MiB, 4 MiB
_LZ4_HEADER_BYTES_MIN = 7  # magic 4, FLG 1, BD 1, header checksum 1


def codec_name(codec: int) -> str:
    return CODEC_NAMES.get(codec, f"unknown({codec})")


def check_codec(codec: int) -> None:
    """Raise UnsupportedCodecError unless this build reads and writes `codec`."""
    if codec in SUPPORTED_CODECS:
        return
    if codec in CODEC_NAMES:
        raise UnsupportedCodecError(
            f"compression codec {codec} ({codec_name(codec)}) is not supported: no library for it "
            "is bundled (supported: none, gzip, lz4)")
    raise UnsupportedCodecError(f"unknown compression codec id {codec} (attributes bits 0-2)")


def compress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """The compressed form of a records section."""
    if codec == CODEC_LZ4:
        return _lz4_frame.compress(
            data, block_size=_lz4_frame.BLOCKSIZE_MAX64KB, block_linked=False,
            content_checksum=False, block_checksum=False, store_size=False)
    if codec == CODEC_NONE:
        return bytes(data)
    if codec == CODEC_GZIP:
        deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        return deflater.compress(data) + deflater.flush()
    check_codec(codec)
    raise AssertionError(f"codec {codec} is listed as supported but has no compressor")


def decompress(codec: int, data: bytes | bytearray | memoryview, *,
               max_uncompressed_bytes: int = BATCH_UNCOMPRESSED_BYTES_MAX) -> bytes:
    """The uncompressed records section; at most `max_uncompressed_bytes` bytes or an error."""
    if codec == CODEC_LZ4:
        return _lz4_decompress(data, max_uncompressed_bytes)
    if codec == CODEC_NONE:
        if len(data) > max_uncompressed_bytes:
            raise UncompressedSizeExceededError(
                f"records section of {len(data)} bytes exceeds {max_uncompressed_bytes}")
        return bytes(data)
    if codec == CODEC_GZIP:
        return _gzip_decompress(data, max_uncompressed_bytes)
    check_codec(codec)
    raise AssertionError(f"codec {codec} is listed as supported but has no decompressor")


def _first_chunk_bytes(compressed_bytes: int, limit: int) -> int:
    return min(limit + 1, max(DECOMPRESS_CHUNK_BYTES, 4 * compressed_bytes))


def _next_chunk_bytes(produced_bytes: int, limit: int) -> int:
    return min(limit + 1 - produced_bytes, max(DECOMPRESS_CHUNK_BYTES, produced_bytes))


def _too_large(limit: int) -> UncompressedSizeExceededError:
    return UncompressedSizeExceededError(f"records section inflates beyond {limit} bytes")


def lz4_content_size(data: bytes | bytearray | memoryview) -> int | None:
    """Check an lz4 frame header as Java's reader does; return its declared content size, if any."""
    if len(data) < _LZ4_HEADER_BYTES_MIN or bytes(data[0:4]) != _LZ4_MAGIC_BYTES:
        raise CorruptRecordError("lz4 records section does not start with an LZ4 frame magic number")
    flg = data[4]
    bd = data[5]
    if flg & _LZ4_FLG_VERSION_MASK != _LZ4_FLG_VERSION_1:
        raise CorruptRecordError(f"lz4 frame version bits unsupported (FLG {flg:#04x})")
    if not flg & _LZ4_FLG_BLOCK_INDEPENDENCE:
        raise CorruptRecordError(f"lz4 frame uses dependent blocks (FLG {flg:#04x})")
    if flg & _LZ4_FLG_RESERVED:
        raise CorruptRecordError(f"lz4 frame has reserved or dictionary bits set (FLG {flg:#04x})")
    if bd & _LZ4_BD_RESERVED or (bd >> 4) not in _LZ4_BD_BLOCK_SIZES:
        raise CorruptRecordError(f"lz4 frame has an invalid block descriptor (BD {bd:#04x})")
    if not flg & _LZ4_FLG_CONTENT_SIZE:
        return None
    if len(data) < _LZ4_HEADER_BYTES_MIN + 8:
        raise CorruptRecordError("lz4 frame header cut inside its content size")
    return struct.unpack_from("<Q", data, 6)[0]


def _lz4_decompress(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    content_bytes = lz4_content_size(data)
    if content_bytes is not None and content_bytes > limit:
        raise _too_large(limit)
    want = _first_chunk_bytes(len(data), limit) if content_bytes is None else content_bytes + 1
    decompressor = _lz4_frame.LZ4FrameDecompressor()
    try:
        out = decompressor.decompress(data, max_length=want)
        produced = len(out)
        if decompressor.eof and produced <= limit:
            if decompressor.unused_data:
                raise CorruptRecordError("bytes follow the end of the lz4 frame")
            return out
        chunks = [out]
        while not decompressor.eof:
            if produced > limit:
                raise _too_large(limit)
            if decompressor.needs_input:
                raise CorruptRecordError("lz4 frame is truncated")
            out = decompressor.decompress(b"", max_length=_next_chunk_bytes(produced, limit))
            chunks.append(out)
            produced += len(out)
    except RuntimeError as exc:  # liblz4 reports malformed input as RuntimeError
        raise CorruptRecordError(f"lz4 frame does not decompress: {exc}") from exc
    if produced > limit:
        raise _too_large(limit)
    if decompressor.unused_data:
        raise CorruptRecordError("bytes follow the end of the lz4 frame")
    return b"".join(chunks)


def _gzip_decompress(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    chunks: list[bytes] = []
    produced = 0
    pending: bytes | bytearray | memoryview = data
    inflater = zlib.decompressobj(_GZIP_WBITS)
    want = _first_chunk_bytes(len(data), limit)
    try:
        while True:
            out = inflater.decompress(pending, want)
            chunks.append(out)
            produced += len(out)
            if produced > limit:
                raise _too_large(limit)
            if inflater.eof:
                pending = inflater.unused_data
                if not pending:
                    break
                inflater = zlib.decompressobj(_GZIP_WBITS)  # next gzip member
            else:
                pending = inflater.unconsumed_tail
                if not pending and len(out) < want:
                    raise CorruptRecordError("gzip stream is truncated")
            want = _next_chunk_bytes(produced, limit)
    except zlib.error as exc:
        raise CorruptRecordError(f"gzip stream does not decompress: {exc}") from exc
    return b"".join(chunks)
