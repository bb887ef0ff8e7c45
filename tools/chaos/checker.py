"""The checker: pure functions from a history and the final logs to anomalies (RELIABILITY.md,
"What the checker proves"). Every count must be zero.

Inputs:
- `history` (history.py): every produced record (invoke + ok/fail/info) and every polled record;
- `final`: partition -> {offset: value}, the final log of each partition read through the consumer
  API after the drain (from offset 0 to the high watermark);
- `replicas`: every replica's log dumped offline after a clean stop (logs.py); each counts as
  committed below its checkpointed high watermark (`ReplicaLog.committed_end`);
- `server_logs`: name -> text of each broker's log.

Anomaly kinds (`KINDS`), each with human-readable examples:
1. `lost_write`: an `ok` (p, offset, value) missing from the final log, or another value there;
   also checked against each replica's committed range.
2. `offset_reused`: one (p, offset) with two values across ok sends, polls, final log and replicas.
3. `duplicate`: one value at two offsets (final log, a replica, or polls).
4. `uncommitted_read`: a polled (p, offset) absent from the final log;
   `aborted_read`: a `fail` value seen anywhere (polls, final log, any replica, even above its HW).
5. `order_producer`: per producer and partition, `ok` offsets not increasing with the sequence;
   `order_consumer`: a consumer's next offset on a partition is not previous + 1 (skip or back)
   without a `Seek` in between (offsets are contiguous: no transactions, no compaction here).
6. `replica_divergence`: per partition, the (base_offset, last_offset, leader_epoch, crc) sequences
   of the replicas differ over [largest log start, smallest committed end);
   `corrupt_batch`: a CRC-invalid batch, bad length or torn tail in a dump taken after a clean stop.
7. `server_assertion`: a line with Traceback / AssertionError / "invariant" in a broker log.

No I/O, no clocks: the tests (tests/chaos/test_checker.py) feed hand-made histories.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tools.chaos.history import History, Op, Read, Seek
from tools.chaos.logs import ReplicaLog

KINDS = ("lost_write", "offset_reused", "duplicate", "uncommitted_read", "aborted_read", "order_producer",
         "order_consumer", "replica_divergence", "corrupt_batch", "server_assertion")
SERVER_ASSERTION_RE = re.compile(r"Traceback|AssertionError|invariant", re.IGNORECASE)
FinalLogs = Mapping[int, Mapping[int, str | None]]
_MISSING = object()


@dataclass
class CheckResult:
    anomalies: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.anomalies.items()}

    def found(self) -> set[str]:
        return {k for k, v in self.anomalies.items() if v}

    @property
    def ok(self) -> bool:
        return not self.found()

    def examples(self, per_kind: int = 3) -> dict[str, list[str]]:
        return {k: v[:per_kind] for k, v in self.anomalies.items() if v}


def check(history: History, final: FinalLogs, replicas: Iterable[ReplicaLog] = (),
          server_logs: Mapping[str, str] | None = None) -> CheckResult:
    replicas = list(replicas)
    committed = {(r.node, r.partition): r.records(r.committed_end()) for r in replicas}
    result = CheckResult()
    a = result.anomalies
    a["lost_write"] = lost_writes(history.ops, final, replicas, committed)
    a["offset_reused"] = offsets_reused(history, final, committed)
    a["duplicate"] = duplicates(history.reads, final, committed)
    a["uncommitted_read"] = uncommitted_reads(history.reads, final)
    a["aborted_read"] = aborted_reads(history, final, replicas)
    a["order_producer"] = producer_order(history.ops)
    a["order_consumer"] = consumer_order(history.reads, history.seeks)
    a["replica_divergence"] = replica_divergence(replicas)
    a["corrupt_batch"] = corrupt_batches(replicas)
    a["server_assertion"] = server_assertions(server_logs or {})
    return result


def lost_writes(ops: Iterable[Op], final: FinalLogs, replicas: list[ReplicaLog],
                committed: Mapping[tuple[int, int], Mapping[int, str | None]]) -> list[str]:
    out = []
    by_partition: dict[int, list[ReplicaLog]] = defaultdict(list)
    for r in replicas:
        by_partition[r.partition].append(r)
    for op in ops:
        if op.outcome != "ok":
            continue
        got = final.get(op.partition, {}).get(op.offset, _MISSING)
        if got != op.value:
            out.append(f"{op.value} ok at p{op.partition}@{op.offset}: final log has "
                       f"{'nothing' if got is _MISSING else repr(got)} there")
        for r in by_partition[op.partition]:
            if r.log_start <= op.offset < r.committed_end():
                held = committed[(r.node, r.partition)].get(op.offset, _MISSING)
                if held != op.value:
                    out.append(f"{op.value} ok at p{op.partition}@{op.offset}: replica on node {r.node} "
                               f"(committed below {r.committed_end()}) has "
                               f"{'nothing' if held is _MISSING else repr(held)} there")
    return out


def offsets_reused(history: History, final: FinalLogs,
                   committed: Mapping[tuple[int, int], Mapping[int, str | None]]) -> list[str]:
    seen: dict[tuple[int, int], dict[str | None, str]] = defaultdict(dict)  # (p, offset) -> value -> first source
    for op in history.ops:
        if op.outcome == "ok":
            seen[(op.partition, op.offset)].setdefault(op.value, f"ok {op.producer}")
    for r in history.reads:
        seen[(r.partition, r.offset)].setdefault(r.value, f"poll {r.consumer}")
    for p, records in final.items():
        for offset, value in records.items():
            seen[(p, offset)].setdefault(value, "final log")
    for (node, p), records in committed.items():
        for offset, value in records.items():
            seen[(p, offset)].setdefault(value, f"replica {node}")
    return [f"p{p}@{offset} holds {len(values)} values: " + ", ".join(f"{v!r} ({src})" for v, src in values.items())
            for (p, offset), values in sorted(seen.items()) if len(values) > 1]


def duplicates(reads: Iterable[Read], final: FinalLogs,
               committed: Mapping[tuple[int, int], Mapping[int, str | None]]) -> list[str]:
    out = []
    views: list[tuple[str, list[tuple[int, int, str | None]]]] = [
        ("final log", [(p, o, v) for p, records in final.items() for o, v in records.items()])]
    for (node, p), records in committed.items():
        views.append((f"replica {node}", [(p, o, v) for o, v in records.items()]))
    views.append(("polls", [(r.partition, r.offset, r.value) for r in reads]))
    for name, records in views:
        where: dict[str, tuple[int, int]] = {}
        for p, offset, value in records:
            if value is None:
                continue
            first = where.setdefault(value, (p, offset))
            if first != (p, offset):
                out.append(f"{value!r} at p{first[0]}@{first[1]} and p{p}@{offset} ({name})")
    return out


def uncommitted_reads(reads: Iterable[Read], final: FinalLogs) -> list[str]:
    return [f"{r.consumer} polled {r.value!r} at p{r.partition}@{r.offset}, absent from the final log"
            for r in reads if r.offset not in final.get(r.partition, {})]


def aborted_reads(history: History, final: FinalLogs, replicas: Iterable[ReplicaLog]) -> list[str]:
    failed = {op.value: op for op in history.ops if op.outcome == "fail"}
    if not failed:
        return []
    out = []
    for r in history.reads:
        if r.value in failed:
            out.append(f"{r.value} failed ({failed[r.value].error}) but {r.consumer} polled it at "
                       f"p{r.partition}@{r.offset}")
    for p, records in final.items():
        for offset, value in records.items():
            if value in failed:
                out.append(f"{value} failed ({failed[value].error}) but the final log has it at p{p}@{offset}")
    for replica in replicas:
        for offset, value in replica.records().items():
            if value in failed:
                out.append(f"{value} failed ({failed[value].error}) but replica {replica.node} has it at "
                           f"p{replica.partition}@{offset}")
    return out


def producer_order(ops: Iterable[Op]) -> list[str]:
    last: dict[tuple[str, int], Op] = {}
    out = []
    for op in sorted((o for o in ops if o.outcome == "ok"), key=lambda o: (o.producer, o.partition, o.seq)):
        before = last.get((op.producer, op.partition))
        if before is not None and op.offset <= before.offset:
            out.append(f"{op.producer} p{op.partition}: {before.value} at {before.offset}, the later {op.value} "
                       f"at {op.offset}")
        last[(op.producer, op.partition)] = op
    return out


def consumer_order(reads: Iterable[Read], seeks: Iterable[Seek]) -> list[str]:
    """Reads are in poll order; a seek at time t resets the expectation for reads after t."""
    seeks_by: dict[tuple[str, int], list[Seek]] = defaultdict(list)
    for s in seeks:
        seeks_by[(s.consumer, s.partition)].append(s)
    for lst in seeks_by.values():
        lst.sort(key=lambda s: s.t)
    expected: dict[tuple[str, int], int] = {}
    cursor: dict[tuple[str, int], int] = defaultdict(int)
    out = []
    for r in reads:
        key = (r.consumer, r.partition)
        pending = seeks_by.get(key, [])
        while cursor[key] < len(pending) and pending[cursor[key]].t <= r.t:
            expected[key] = pending[cursor[key]].offset
            cursor[key] += 1
        want = expected.get(key)
        if want is not None and r.offset != want:
            what = "went back" if r.offset < want else "skipped"
            out.append(f"{r.consumer} p{r.partition} {what}: expected offset {want}, polled {r.offset}")
        expected[key] = r.offset + 1
    return out


def replica_divergence(replicas: Iterable[ReplicaLog]) -> list[str]:
    by_partition: dict[int, list[ReplicaLog]] = defaultdict(list)
    for r in replicas:
        by_partition[r.partition].append(r)
    out = []
    for p, group in sorted(by_partition.items()):
        if len(group) < 2:
            continue
        lower = max(r.log_start for r in group)
        upper = min(r.committed_end() for r in group)
        seqs = {r.node: [b.key for b in r.batches if b.crc_valid and b.base_offset >= lower and b.last_offset < upper]
                for r in group}
        nodes = sorted(seqs)
        reference = seqs[nodes[0]]
        for node in nodes[1:]:
            other = seqs[node]
            if other == reference:
                continue
            index = next((i for i, (x, y) in enumerate(zip(reference, other, strict=False)) if x != y),
                         min(len(reference), len(other)))
            mine = reference[index] if index < len(reference) else None
            theirs = other[index] if index < len(other) else None
            out.append(f"p{p} over [{lower}, {upper}): node {nodes[0]} and node {node} differ at batch #{index}: "
                       f"(base, last, epoch, crc) {mine} vs {theirs}")
    return out


def corrupt_batches(replicas: Iterable[ReplicaLog]) -> list[str]:
    out = []
    for r in replicas:
        bad = [b.base_offset for b in r.batches if not b.crc_valid]
        if bad or r.bad_lengths or r.torn_tails or r.exit_code not in (0,):
            out.append(f"node {r.node} p{r.partition}: CRC-invalid batches at {bad[:5]}, {r.bad_lengths} bad lengths, "
                       f"{r.torn_tails} torn tails, dump exit code {r.exit_code}")
    return out


def server_assertions(server_logs: Mapping[str, str]) -> list[str]:
    out = []
    for name, text in sorted(server_logs.items()):
        for number, line in enumerate(text.splitlines(), 1):
            if SERVER_ASSERTION_RE.search(line):
                out.append(f"{name}:{number}: {line.strip()[:300]}")
    return out
