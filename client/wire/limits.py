"""Named bounds for client.wire (ARCHITECTURE.md §3 rule 4: every buffer has a named bound).

Each limit is a default; functions that enforce one take it as a keyword argument so the broker
can pass its configured value.
"""

from __future__ import annotations

# Decompressing one batch's records section may produce at most this many bytes. Kafka has no
# such bound (a hostile lz4 batch of 1 MiB can inflate ~250x); 64 MiB is far above any batch a
# real producer sends (batch.size defaults to 16 KiB, message.max.bytes to ~1 MiB).
BATCH_UNCOMPRESSED_BYTES_MAX = 64 * 1024 * 1024

# Kafka's message.max.bytes default (1 MiB + LOG_OVERHEAD): the largest client batch accepted.
BATCH_BYTES_MAX = 1024 * 1024 + 12

# First output chunk when decompressing without a declared content size; later chunks double.
# Small enough that a typical batch costs one allocation, large enough that few chunks follow.
DECOMPRESS_CHUNK_BYTES = 1024 * 1024

# Varint widths as Kafka's ByteUtils reads them: int32 varints take at most 5 bytes, int64
# varlongs at most 10. Longer encodings are malformed.
VARINT_BYTES_MAX = 5
VARLONG_BYTES_MAX = 10

# The smallest encoded record: length, attributes, timestampDelta, offsetDelta, keyLength,
# valueLength, headerCount, one byte each. A records count above records_bytes / this is a lie.
RECORD_BYTES_MIN = 7
