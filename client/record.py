"""The record types the client hands back: what a send produced, and what a poll returned."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ConsumerRecord", "Header", "RecordMetadata", "TopicPartition"]

TopicPartition = tuple[str, int]
Header = tuple[str, bytes | None]


class RecordMetadata(NamedTuple):
    """Where a produced record landed. `offset` is -1 with acks=0 (no answer is awaited).

    `timestamp` is the record's CreateTime, or the broker's append time on a LogAppendTime topic.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple):
    """One fetched record. `headers` is a tuple of (str key, bytes-or-None value)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
