"""Event-loop lag probe: how late the broker's event loop runs a timer, logged every window.

A background task sleeps `interval` with `asyncio.sleep` and records the oversleep (the time the
loop took beyond the asked interval, measured with the loop's monotonic clock). That is the delay
any ready callback in the loop (a request, a delayed fetch, a heartbeat) suffers at that moment,
so it measures work that blocks the loop: a large Produce batch being validated, a cleaner slice,
an fsync.

Every `window` it logs one INFO line and starts a new window::

    event-loop lag p50=0.21ms p99=3.40ms max=5.12ms samples=100 busy=37% window=10.0s

`busy` is the share of samples taken while `busy()` was true (the broker passes "the log cleaner
has a pass in progress"), so lag with and without that work can be told apart.

Bounds: one sample per interval, at most SAMPLES_PER_WINDOW_MAX per window (further samples only
update max); intervals clamped to [INTERVAL_MS_MIN, INTERVAL_MS_MAX] and windows to
[WINDOW_MS_MIN, WINDOW_MS_MAX]. Defaults: 100 ms samples, 10 s windows; the environment variables
REPLOG_LOOP_LAG_INTERVAL_MS / REPLOG_LOOP_LAG_WINDOW_MS override them (benchmarks use short ones).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL_MS_DEFAULT = 100
WINDOW_MS_DEFAULT = 10_000
INTERVAL_MS_MIN, INTERVAL_MS_MAX = 1, 10_000
WINDOW_MS_MIN, WINDOW_MS_MAX = 100, 3_600_000
SAMPLES_PER_WINDOW_MAX = 10_000


def _env_ms(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        value = default
    return min(max(value, low), high)


def percentile(sorted_samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (0.0 when empty)."""
    if not sorted_samples:
        return 0.0
    rank = max(1, -(-len(sorted_samples) * fraction // 1))  # ceil(n * fraction), at least 1
    return sorted_samples[min(int(rank), len(sorted_samples)) - 1]


def format_window(samples: list[float], peak: float, busy: int, taken: int, window_s: float) -> str:
    ordered = sorted(samples)
    return (f"event-loop lag p50={percentile(ordered, 0.5) * 1e3:.2f}ms "
            f"p99={percentile(ordered, 0.99) * 1e3:.2f}ms max={peak * 1e3:.2f}ms samples={taken} "
            f"busy={100 * busy // max(taken, 1)}% window={window_s:.1f}s")


async def run(busy: Callable[[], bool] = lambda: False, *, interval_ms: int | None = None,
              window_ms: int | None = None) -> None:
    """The probe task: runs until cancelled."""
    interval_ms = interval_ms or _env_ms("REPLOG_LOOP_LAG_INTERVAL_MS", INTERVAL_MS_DEFAULT,
                                         INTERVAL_MS_MIN, INTERVAL_MS_MAX)
    window_ms = window_ms or _env_ms("REPLOG_LOOP_LAG_WINDOW_MS", WINDOW_MS_DEFAULT, WINDOW_MS_MIN, WINDOW_MS_MAX)
    interval = interval_ms / 1000
    loop = asyncio.get_running_loop()
    while True:
        samples: list[float] = []
        peak = 0.0
        busy_count = taken = 0
        started = loop.time()
        window_end = started + window_ms / 1000
        while loop.time() < window_end:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = max(loop.time() - before - interval, 0.0)
            taken += 1
            busy_count += bool(busy())
            peak = max(peak, lag)
            if len(samples) < SAMPLES_PER_WINDOW_MAX:
                samples.append(lag)
        log.info("%s", format_window(samples, peak, busy_count, taken, loop.time() - started))


def start(busy: Callable[[], bool] = lambda: False) -> asyncio.Task[None]:
    return asyncio.create_task(run(busy), name="loop_lag")
