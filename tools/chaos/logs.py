"""Final logs: what every replica holds after the run, read offline.

`parse_dump(lines)` turns the JSON Lines of `brokerctl log dump PATH --json --records`
(docs/log-dump-format.md, a stable interface) into `Batch`es; `read_hw_checkpoint(text)` parses a
data dir's `replication-offset-checkpoint` (Kafka checkpoint format: version, count, then
`topic partition offset` lines). A `ReplicaLog` is one replica of one partition: its batches, its
log start (first batch's base offset, or 0) and its high watermark as checkpointed at clean
shutdown (None when absent).

Pure functions; `cluster.dump_replicas` runs the commands.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Batch:
    base_offset: int
    last_offset: int
    leader_epoch: int
    crc: int
    crc_valid: bool
    values: tuple[str | None, ...] = ()  # decoded record values (utf-8), one per offset
    offsets: tuple[int, ...] = ()

    @property
    def key(self) -> tuple[int, int, int, int]:
        """What replicas must agree on (RELIABILITY.md check 6)."""
        return (self.base_offset, self.last_offset, self.leader_epoch, self.crc)


@dataclass
class ReplicaLog:
    node: int
    partition: int
    batches: list[Batch] = field(default_factory=list)
    high_watermark: int | None = None
    torn_tails: int = 0
    bad_lengths: int = 0
    exit_code: int = 0

    @property
    def log_start(self) -> int:
        return self.batches[0].base_offset if self.batches else 0

    @property
    def log_end(self) -> int:
        return self.batches[-1].last_offset + 1 if self.batches else 0

    def committed_end(self) -> int:
        """Below this offset the replica's records count as committed (HW, else its log end)."""
        return self.log_end if self.high_watermark is None else min(self.high_watermark, self.log_end)

    def records(self, below: int | None = None) -> dict[int, str | None]:
        """offset -> value over CRC-valid batches (below `below` when given)."""
        out: dict[int, str | None] = {}
        for b in self.batches:
            if not b.crc_valid:
                continue
            for offset, value in zip(b.offsets, b.values, strict=False):
                if below is None or offset < below:
                    out[offset] = value
        return out


def _text(obj: dict[str, str] | None) -> str | None:
    if obj is None:
        return None
    raw = obj["utf8"].encode() if "utf8" in obj else base64.b64decode(obj["base64"])
    return raw.decode(errors="replace")


def parse_dump(lines: Iterable[str], node: int, partition: int, exit_code: int = 0) -> ReplicaLog:
    replica = ReplicaLog(node, partition, exit_code=exit_code)
    for line in lines:
        if not line.strip():
            continue
        entry: dict[str, Any] = json.loads(line)
        kind = entry.get("type")
        if kind == "batch":
            records = entry.get("records") or []
            replica.batches.append(Batch(
                entry["base_offset"], entry["last_offset"], entry["leader_epoch"], entry["crc"], entry["crc_valid"],
                tuple(_text(r["value"]) for r in records), tuple(r["offset"] for r in records)))
        elif kind == "torn_tail":
            replica.torn_tails += 1
        elif kind == "bad_length":
            replica.bad_lengths += 1
    return replica


def read_hw_checkpoint(text: str) -> dict[tuple[str, int], int]:
    """`replication-offset-checkpoint` -> {(topic, partition): high watermark}; {} if unreadable."""
    lines = text.split("\n")
    if len(lines) < 2 or not text.endswith("\n"):
        return {}
    out: dict[tuple[str, int], int] = {}
    for line in lines[2:]:
        parts = line.split(" ")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].lstrip("-").isdigit():
            out[(parts[0], int(parts[1]))] = int(parts[2])
    return out
