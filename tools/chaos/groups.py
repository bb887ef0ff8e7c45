"""Consumer-group consistency: member processes, their processing logs, and a checker.

The promise checked (issue 6, RELIABILITY.md style): with commits *after* processing, across member
crashes, clean leaves and a coordinator failover, every acknowledged record is processed at least
once by the group and no offset is skipped; reprocessing (duplicates) is allowed and counted.

Pieces (imports only `tools` and `client`, as every tool):

* `python3 -m tools.chaos.groups member BOOTSTRAP GROUP TOPIC LOGFILE [--session-ms N ...]` runs one
  group member (replog's `Consumer`, `enable_auto_commit=False`): poll, append the batch to LOGFILE
  as one JSON line and flush it, then `commit()` (the positions). SIGTERM (or SIGINT) makes it
  leave cleanly (close: LeaveGroup); SIGKILL is a crash. Every line of the log is one event:
  `{"k": "start"}`, `{"k": "assigned", "parts": [...]}`, `{"k": "revoked"|"lost", "parts": [...]}`,
  `{"k": "batch", "recs": [[partition, offset, value], ...]}` (written and flushed *before* the
  commit), `{"k": "commit", "offsets": {partition: next offset}}` (after the coordinator acknowledged
  it), `{"k": "commit_failed", "err": ...}`, `{"k": "poll_error", "err": ...}`, `{"k": "exit"}`; each
  with `t` (time.time(), one clock for every process of the machine) and `m` (the member's name). A
  line cut short by a SIGKILL is ignored (its batch was never committed).
* `MemberProcess`: start / kill (SIGKILL) / leave (SIGTERM) one member subprocess, by PID.
* `read_member_log`, `check_group`: the pure checker over the member logs and the producer
  history (`tools.chaos.history.History`), returning a `GroupCheck` (anomalies + figures).

What `check_group` flags (each must be zero):
- `lost`: an acknowledged (`ok`) send (p, offset, value) that no member processed.
- `wrong_value`: a processed (p, offset) whose value differs from the acknowledged one, or two
  values processed for one (p, offset).
- `uncovered`: an offset below the final end of a partition that no member processed (offsets of
  this topic are dense: no compaction, no transactions), so the group skipped it.
- `skip_in_run`: within one assignment of one member (between two `assigned` events), successive
  processed offsets of a partition that are not consecutive; `rewind_in_run`: one that goes back.
- `gap_after_rebalance`: an assignment whose first processed offset S of a partition is above the
  log start (0) and S - 1 had not been processed by any member *before* (by time) that batch: the
  member started past what the group had processed, i.e. from a position nobody had earned.
Figures: records processed, duplicates (processed more than once, allowed), rebalances (assigned
events), commits and failed commits per member.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.chaos.history import History

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXIT_TIMEOUT_S = 30.0
POLL_TIMEOUT_MS = 200


# ----------------------------------------------------------------------------------- the member

async def _member(args: argparse.Namespace) -> None:
    from client import Consumer
    from client.errors import ClientError, KafkaError
    from client.group.errors import CommitFailedError

    out = open(args.logfile, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
    name = args.name or os.path.basename(args.logfile)

    def event(kind: str, **fields: Any) -> None:
        out.write(json.dumps({"k": kind, "t": time.time(), "m": name, **fields}, separators=(",", ":")) + "\n")
        out.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    event("start", pid=os.getpid())
    consumer = Consumer(args.bootstrap, group_id=args.group, client_id=name, auto_offset_reset="earliest",
                        enable_auto_commit=False, session_timeout_ms=args.session_ms,
                        heartbeat_interval_ms=args.heartbeat_ms, max_poll_interval_ms=args.max_poll_interval_ms,
                        request_timeout_ms=args.request_timeout_ms, retry_backoff_ms=50, retry_backoff_max_ms=500,
                        fetch_max_wait_ms=POLL_TIMEOUT_MS, default_api_timeout_ms=args.request_timeout_ms * 3)
    try:
        await consumer.start()
        consumer.subscribe([args.topic],
                           on_partitions_assigned=lambda ps: event("assigned", parts=sorted(p for _, p in ps),
                                                                   generation=_generation(consumer)),
                           on_partitions_revoked=lambda ps: event("revoked", parts=sorted(p for _, p in ps)),
                           on_partitions_lost=lambda ps: event("lost", parts=sorted(p for _, p in ps)))
        while not stop.is_set():
            try:
                records = await consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
            except (KafkaError, ClientError) as exc:
                event("poll_error", err=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)  # back off a failing poll
                continue
            if not records:
                continue
            # process = append to the log, flushed, before the commit
            recs = [[r.partition, r.offset, r.value.decode(errors="replace") if r.value is not None else None]
                    for r in records]
            event("batch", recs=recs)
            if args.process_ms:
                await asyncio.sleep(args.process_ms / 1000)  # the processing time, between the write and the commit
            offsets: dict[int, int] = {}
            for p, o, _ in recs:
                offsets[p] = max(offsets.get(p, 0), o + 1)
            try:
                await consumer.commit()
                event("commit", offsets=offsets)
            except CommitFailedError as exc:
                event("commit_failed", err=str(exc))
            except (KafkaError, ClientError) as exc:
                event("commit_failed", err=f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await consumer.close()  # LeaveGroup (dynamic member); no commit (auto commit is off)
        event("exit")
        out.close()


def _generation(consumer: Any) -> int:
    """The member's generation (for the report only; -1 when the client hides it)."""
    group = getattr(consumer, "_group", None)
    return int(getattr(getattr(group, "membership", None), "generation_id", -1))


def member_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m tools.chaos.groups member")
    parser.add_argument("bootstrap")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("logfile")
    parser.add_argument("--name", default="")
    parser.add_argument("--session-ms", type=int, default=6_000)
    parser.add_argument("--heartbeat-ms", type=int, default=500)
    parser.add_argument("--max-poll-interval-ms", type=int, default=10_000)
    parser.add_argument("--request-timeout-ms", type=int, default=5_000)
    parser.add_argument("--process-ms", type=int, default=0, help="time between writing a batch and committing")
    asyncio.run(_member(parser.parse_args(argv)))


class MemberProcess:
    """One member subprocess, signalled only by its PID."""

    def __init__(self, bootstrap: str, group: str, topic: str, logfile: str, name: str, **options: int) -> None:
        self.name, self.logfile = name, logfile
        cmd = [sys.executable, "-m", "tools.chaos.groups", "member", bootstrap, group, topic, logfile, "--name", name]
        for key, value in options.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        self._stderr = open(logfile + ".stderr", "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": REPO_ROOT})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.wait()

    def last_event(self) -> str | None:
        """The kind of the last complete line of the member's log."""
        with open(self.logfile, "rb") as f:
            f.seek(max(0, os.path.getsize(self.logfile) - 65536))
            lines = f.read().split(b"\n")
        complete = [line for line in lines[:-1] if line]
        if not complete:
            return None
        try:
            return str(json.loads(complete[-1])["k"])
        except (ValueError, KeyError):
            return None

    def leave(self, timeout_s: float = EXIT_TIMEOUT_S) -> int | None:
        """SIGTERM: the member closes (LeaveGroup); SIGKILL if it has not exited within timeout_s."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = EXIT_TIMEOUT_S) -> int | None:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout_s)
        self._stderr.close()
        return self.proc.returncode


# ---------------------------------------------------------------------------------- the checker

def read_member_log(path: str) -> list[dict[str, Any]]:
    """The events of one member log; a line cut short (SIGKILL mid-write) is dropped."""
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return events


@dataclass
class GroupCheck:
    anomalies: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    figures: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.anomalies.items() if v}

    @property
    def ok(self) -> bool:
        return not self.counts()

    def summary(self, per_kind: int = 5) -> str:
        lines = [f"{k}: {v}" for k, v in self.figures.items()]
        for kind, found in self.anomalies.items():
            if found:
                lines.append(f"ANOMALY {kind}: {len(found)}, e.g. {found[:per_kind]}")
        return "\n".join(lines)


def check_group(history: History, logs: Mapping[str, list[dict[str, Any]]], ends: Mapping[int, int],
                log_start: Mapping[int, int] | None = None) -> GroupCheck:
    """Member logs ({member: events}) + producer history + final ends ({partition: end}) -> GroupCheck."""
    result = GroupCheck()
    bad = result.anomalies
    starts = dict(log_start or {})
    first_seen: dict[tuple[int, int], float] = {}  # (p, o) -> earliest time a member processed it
    values: dict[tuple[int, int], set[str | None]] = defaultdict(set)
    times_processed: dict[tuple[int, int], int] = defaultdict(int)
    for events in logs.values():
        for e in events:
            if e["k"] == "batch":
                for p, o, v in e["recs"]:
                    key = (p, o)
                    first_seen[key] = min(first_seen.get(key, e["t"]), e["t"])
                    values[key].add(v)
                    times_processed[key] += 1
    # 1. every acknowledged record processed, with its value
    acknowledged = [op for op in history.ops if op.outcome == "ok"]
    for op in acknowledged:
        key = (op.partition, op.offset)
        if key not in values:
            bad["lost"].append(f"{op.value} at p{op.partition}@{op.offset}")
        elif values[key] != {op.value}:
            bad["wrong_value"].append(f"p{op.partition}@{op.offset}: acknowledged {op.value}, processed "
                                      f"{sorted(map(str, values[key]))}")
    for key, vs in values.items():
        if len(vs) > 1:
            bad["wrong_value"].append(f"p{key[0]}@{key[1]}: processed {sorted(map(str, vs))}")
    # 2. coverage: no offset of the final log skipped by the whole group
    for p, end in ends.items():
        missing = [o for o in range(starts.get(p, 0), end) if (p, o) not in values]
        if missing:
            bad["uncovered"].append(f"p{p}: {len(missing)} offsets never processed, first {missing[:5]}")
    # 3. per member and assignment: contiguous runs, each starting where the group had got to
    rebalances = commits = failed_commits = poll_errors = 0
    generations = {e.get("generation", -1) for events in logs.values() for e in events if e["k"] == "assigned"}
    for member, events in logs.items():
        last: dict[int, int] = {}  # partition -> last offset processed in the current assignment
        for e in events:
            kind = e["k"]
            if kind == "assigned":
                rebalances += 1
                last = {}
            elif kind == "commit":
                commits += 1
            elif kind == "commit_failed":
                failed_commits += 1
            elif kind == "poll_error":
                poll_errors += 1
            elif kind == "batch":
                for p, o, _ in e["recs"]:
                    prev = last.get(p)
                    if prev is None:
                        before = first_seen.get((p, o - 1))
                        if o > starts.get(p, 0) and (before is None or before > e["t"]):
                            bad["gap_after_rebalance"].append(
                                f"{member} started p{p} at {o}, but {o - 1} had not been processed before")
                    elif o > prev + 1:
                        bad["skip_in_run"].append(f"{member} p{p}: {prev} -> {o}")
                    elif o <= prev:
                        bad["rewind_in_run"].append(f"{member} p{p}: {prev} -> {o}")
                    last[p] = o
    total = sum(times_processed.values())
    result.figures.update({
        "acknowledged": len(acknowledged),
        "sends": history.by_outcome(),
        "final_records": sum(end - starts.get(p, 0) for p, end in ends.items()),
        "processed": total,
        "distinct_processed": len(times_processed),
        "duplicates": total - len(times_processed),
        "assignments_received": rebalances,
        "generations": len(generations - {-1}),
        "generation_max": max(generations, default=-1),
        "commits": commits,
        "failed_commits": failed_commits,
        "poll_errors": poll_errors,
    })
    return result


def first_event_after(logs: Mapping[str, Iterable[dict[str, Any]]], kind: str, t: float) -> float | None:
    """The earliest time (time.time()) of an event `kind` after `t` in any member log."""
    found = [e["t"] for events in logs.values() for e in events if e["k"] == kind and e["t"] > t]
    return min(found) if found else None


def committed_partitions_after(logs: Mapping[str, Iterable[dict[str, Any]]], t: float) -> set[int]:
    """Partitions with an acknowledged commit after `t` (the group makes progress on them)."""
    return {int(p) for events in logs.values() for e in events if e["k"] == "commit" and e["t"] > t
            for p in e["offsets"]}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "member":
        member_main(sys.argv[2:])
    else:
        sys.exit("usage: python3 -m tools.chaos.groups member BOOTSTRAP GROUP TOPIC LOGFILE [options]")
