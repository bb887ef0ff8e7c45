"""Helpers shared by the client tests (imported as a module: tests/client is on sys.path)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from client import Consumer, ConsumerRecord

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def consume(bootstrap: str, partitions: Iterable[tuple[str, int]], count: int, *, timeout_s: float = 10.0,
                  **config: Any) -> list[ConsumerRecord]:
    """Read `count` records from the start of `partitions` (fails the test past the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    out: list[ConsumerRecord] = []
    async with Consumer(bootstrap, auto_offset_reset="earliest", **config) as consumer:
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        while len(out) < count:
            left_ms = int((deadline - loop.time()) * 1000)
            assert left_ms > 0, f"only {len(out)} of {count} records within {timeout_s} s"
            out += await consumer.poll(timeout_ms=min(left_ms, 1000))
    return out


def log_dump(data_dir: str, topic: str, partition: int = 0) -> list[dict[str, Any]]:
    """The batches of a stopped broker's partition, read by the offline dump tool."""
    result = subprocess.run([sys.executable, "-m", "tools.brokerctl", "log", "dump", "--json",
                             os.path.join(data_dir, f"{topic}-{partition}")],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return [entry for entry in map(json.loads, result.stdout.splitlines()) if entry["type"] == "batch"]
