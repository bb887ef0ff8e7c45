"""The history a run records (RELIABILITY.md, "The history a test records").

Every produced record is one `Op`: `invoke` when handed to the producer, then exactly one outcome:
`ok` (acknowledged with acks=all at `offset`), `fail` (definitely not appended: the client raised
`NotAppendedError`) or `info` (unknown: `UnknownOutcomeError`, or anything else, or no outcome
when the run ended). Values are unique: `"{producer}-{seq}"`. Every record a consumer polled is
one `Read`; a `Seek` marks an explicit repositioning of a consumer (after which the checker does not
compare with the previous read). Times are `time.monotonic()` seconds of the harness process.

`History.to_jsonl()` writes one JSON object per line (`invoke`/`ok`/`fail`/`info`/`read`/`seek`),
in time order, so a failing run can be inspected and re-checked (`History.from_jsonl`).

Invariants: an op's outcome is set once (a second outcome is a harness bug: AssertionError);
`ok` has `offset >= 0`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

OUTCOMES = ("invoke", "ok", "fail", "info")


@dataclass
class Op:
    """One produced record: its value, partition and outcome."""

    producer: str
    seq: int
    partition: int
    invoke_t: float
    outcome: str = "invoke"
    complete_t: float = -1.0
    offset: int = -1
    error: str = ""

    @property
    def value(self) -> str:
        return f"{self.producer}-{self.seq}"


@dataclass(frozen=True)
class Read:
    """One record a consumer polled."""

    consumer: str
    partition: int
    offset: int
    value: str | None
    t: float


@dataclass(frozen=True)
class Seek:
    """An explicit repositioning of a consumer on a partition."""

    consumer: str
    partition: int
    offset: int
    t: float


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    seeks: list[Seek] = field(default_factory=list)

    # --- recording --------------------------------------------------------------------------
    def invoke(self, producer: str, seq: int, partition: int, t: float) -> Op:
        op = Op(producer, seq, partition, t)
        self.ops.append(op)
        return op

    def complete(self, op: Op, outcome: str, t: float, offset: int = -1, error: str = "") -> None:
        assert op.outcome == "invoke", f"{op.value}: second outcome {outcome} after {op.outcome}"
        assert outcome in ("ok", "fail", "info"), outcome
        assert outcome != "ok" or offset >= 0, f"{op.value}: ok without an offset"
        op.outcome, op.complete_t, op.offset, op.error = outcome, t, offset, error

    def read(self, consumer: str, partition: int, offset: int, value: str | None, t: float) -> None:
        self.reads.append(Read(consumer, partition, offset, value, t))

    def seek(self, consumer: str, partition: int, offset: int, t: float) -> None:
        self.seeks.append(Seek(consumer, partition, offset, t))

    def close_pending(self, t: float) -> int:
        """Ops still without an outcome at the end of a run become `info`; returns how many."""
        pending = [op for op in self.ops if op.outcome == "invoke"]
        for op in pending:
            self.complete(op, "info", t, error="no outcome when the run ended")
        return len(pending)

    # --- queries ----------------------------------------------------------------------------
    def by_outcome(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for op in self.ops:
            counts[op.outcome] += 1
        return counts

    def acknowledged(self) -> int:
        return sum(1 for op in self.ops if op.outcome == "ok")

    def in_flight_at(self, t: float) -> int:
        return sum(1 for op in self.ops if op.invoke_t <= t and (op.outcome == "invoke" or op.complete_t > t))

    # --- serialisation ----------------------------------------------------------------------
    def events(self) -> Iterator[dict[str, object]]:
        rows: list[tuple[float, int, dict[str, object]]] = []
        for op in self.ops:
            rows.append((op.invoke_t, 0, {"type": "invoke", "t": op.invoke_t, "producer": op.producer,
                                          "seq": op.seq, "partition": op.partition}))
            if op.outcome != "invoke":
                rows.append((op.complete_t, 1, {"type": op.outcome, "t": op.complete_t, "producer": op.producer,
                                                "seq": op.seq, "partition": op.partition, "offset": op.offset,
                                                "error": op.error}))
        for r in self.reads:
            rows.append((r.t, 2, {"type": "read", "t": r.t, "consumer": r.consumer, "partition": r.partition,
                                  "offset": r.offset, "value": r.value}))
        for s in self.seeks:
            rows.append((s.t, 2, {"type": "seek", "t": s.t, "consumer": s.consumer, "partition": s.partition,
                                  "offset": s.offset}))
        rows.sort(key=lambda row: (row[0], row[1]))
        for _, _, event in rows:
            yield event

    def to_jsonl(self) -> str:
        return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self.events())

    @classmethod
    def from_jsonl(cls, lines: Iterable[str]) -> History:
        history = cls()
        open_ops: dict[tuple[str, int], Op] = {}
        for line in lines:
            if not line.strip():
                continue
            e = json.loads(line)
            kind = e["type"]
            if kind == "invoke":
                open_ops[(e["producer"], e["seq"])] = history.invoke(e["producer"], e["seq"], e["partition"], e["t"])
            elif kind in ("ok", "fail", "info"):
                history.complete(open_ops[(e["producer"], e["seq"])], kind, e["t"], e["offset"], e["error"])
            elif kind == "read":
                history.read(e["consumer"], e["partition"], e["offset"], e["value"], e["t"])
            elif kind == "seek":
                history.seek(e["consumer"], e["partition"], e["offset"], e["t"])
        return history
