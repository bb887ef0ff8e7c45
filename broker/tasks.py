"""Background task helpers shared by the broker's long-lived components."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel every task, wait for each to finish (its errors were logged by the task), empty the list."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()
