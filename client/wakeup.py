"""`Wakeup`: a one-waiter asyncio event for a loop that sleeps until poked or a timeout passes.

Cheaper than asyncio.Event + wait_for (no task per wait): `set()` may be called from any callback
on the loop; `wait(timeout_s)` returns at once if set since the last wait, else when set or when
the timeout passes. The flag is cleared by every wait. One waiter at a time (the producer's sender,
the consumer's poll).
"""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup"]


class Wakeup:
    __slots__ = ("_flag", "_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._flag = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        if not self._flag:
            future = self._future = self._loop.create_future()
            handle = self._loop.call_later(timeout_s, _resolve, future)
            try:
                await future
            finally:
                handle.cancel()
                self._future = None
        self._flag = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
