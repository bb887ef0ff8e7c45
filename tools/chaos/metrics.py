"""Figures of a run, from the history and the fault records (RELIABILITY.md, "Numbers a run reports").

- `failover_s(ops, partition, t)`: fault time -> the first `ok` on the partition that was invoked at
  or after the fault (a write the cluster accepted after the fault, not one it had already
  committed); None when there was none.
- `longest_gap_s(times, start, end)`: the longest interval with no successful write that overlaps
  [start, end], counting the run's load window edges.
- `availability(ok_times, load_start, load_end, threshold_s)`: per partition, uptime / total, where
  downtime is the sum of gaps between successive successful writes longer than `threshold_s`.

Pure functions over monotonic seconds.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable

from tools.chaos.history import Op


def ok_times_by_partition(ops: Iterable[Op]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = defaultdict(list)
    for op in ops:
        if op.outcome == "ok":
            out[op.partition].append(op.complete_t)
    for times in out.values():
        times.sort()
    return out


def failover_s(ops: Iterable[Op], partition: int, t: float) -> float | None:
    done = [op.complete_t for op in ops if op.outcome == "ok" and op.partition == partition and op.invoke_t >= t]
    return min(done) - t if done else None


def longest_gap_s(times: list[float], start: float, end: float, load_start: float, load_end: float) -> float:
    """Longest gap between successive ok completions (with the load edges) that overlaps [start, end]."""
    points = [load_start, *times, load_end]
    i = max(bisect.bisect_left(points, start) - 1, 0)
    best = 0.0
    while i + 1 < len(points) and points[i] <= end:
        best = max(best, points[i + 1] - points[i])
        i += 1
    return best


def availability(times: list[float], load_start: float, load_end: float, threshold_s: float) -> float:
    if load_end <= load_start:
        return 1.0
    points = [load_start, *[t for t in times if load_start <= t <= load_end], load_end]
    down = sum(b - a for a, b in itertools.pairwise(points) if b - a > threshold_s)
    return 1.0 - down / (load_end - load_start)
