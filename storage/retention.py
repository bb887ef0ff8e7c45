"""Retention policy: which of a log's oldest segments to delete. Pure: no I/O, time is an argument.

Rules (Kafka's `deleteRetentionMsBreachedSegments` / `deleteRetentionSizeBreachedSegments`):
* time: a segment whose largest timestamp is older than `now_ms - retention_ms` may go;
* size: while the log is larger than `retention_bytes`, the oldest segments may go, as long as
  what remains is still >= retention_bytes after removing each one;
* `-1` means unlimited for both;
* deletion is a prefix (oldest first) and stops at the first segment that may not go;
* the active (last) segment is never deleted, nor any segment holding an offset at or above
  `upper_bound_offset` (the high watermark: uncommitted data is never retention's to drop).
"""

from __future__ import annotations

from typing import NamedTuple


class SegmentInfo(NamedTuple):
    base_offset: int
    next_offset: int        # last offset + 1 of the segment's last batch (base_offset if empty)
    size_bytes: int
    max_timestamp_ms: int   # -1 if unknown / empty


def segments_to_delete(segments: list[SegmentInfo], *, retention_ms: int, retention_bytes: int,
                       now_ms: int, upper_bound_offset: int) -> int:
    """How many of the oldest segments retention deletes now (0 .. len(segments) - 1)."""
    candidates = len(segments) - 1  # never the active segment
    by_time = 0
    if retention_ms >= 0:
        while by_time < candidates and now_ms - segments[by_time].max_timestamp_ms > retention_ms:
            by_time += 1
    by_size = 0
    if retention_bytes >= 0:
        excess = sum(s.size_bytes for s in segments) - retention_bytes
        while by_size < candidates and excess - segments[by_size].size_bytes >= 0:
            excess -= segments[by_size].size_bytes
            by_size += 1
    count = max(by_time, by_size)
    bounded = 0
    while bounded < count and segments[bounded].next_offset <= upper_bound_offset:
        bounded += 1
    return bounded
