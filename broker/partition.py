"""One partition replica hosted by this broker: its log, leader epoch, high watermark, producer state.

Single-node form (issue 3): this broker leads every partition with ISR = {itself}, so the high
watermark is the log end offset after each append. The replication issue turns this into the
full leader/follower state (ISR, follower log end offsets, maximal ISR) without changing callers:
they append through `append_as_leader`, read through `read`, and wait on `hw_changed()`.

Waiting: `hw_changed()` returns a future resolved the next time the high watermark (or the log
end, for followers' fetches) moves, so delayed fetches complete without polling.
"""

from __future__ import annotations

import asyncio

from client.wire.errors import ErrorCode
from storage import Log
from storage.errors import StorageError


class AppendResult:
    __slots__ = ("base_offset", "error", "last_offset", "log_append_time_ms", "log_start_offset", "message")

    def __init__(self, error: int = 0, base_offset: int = -1, last_offset: int = -1,
                 log_append_time_ms: int = -1, log_start_offset: int = -1, message: str | None = None) -> None:
        self.error = error
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.log_append_time_ms = log_append_time_ms
        self.log_start_offset = log_start_offset
        self.message = message


class Partition:
    def __init__(self, topic: str, index: int, log: Log, leader_epoch: int = 0) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self.high_watermark = log.log_end_offset
        self._waiters: list[asyncio.Future[None]] = []
        if log.latest_epoch < leader_epoch:
            log.assign_epoch(leader_epoch)

    @property
    def tp(self) -> tuple[str, int]:
        return self.topic, self.index

    def hw_changed(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def fail_waiters(self) -> None:
        """The partition is going away: wake every waiter (they re-check and find it gone)."""
        self._notify()

    def check_leader_epoch(self, current_leader_epoch: int) -> int:
        """KIP-320: a request's epoch older than ours is fenced, newer means we are behind."""
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return ErrorCode.NONE
        if current_leader_epoch < self.leader_epoch:
            return ErrorCode.FENCED_LEADER_EPOCH
        return ErrorCode.UNKNOWN_LEADER_EPOCH

    def append_as_leader(self, batch: memoryview | bytes, now_ms: int, *, keys_checked: bool = False) -> AppendResult:
        """Append one validated client batch. Idempotence (sequence/epoch checks, duplicates of the
        last five batches answered with their original offsets) is the log's producer state.
        `keys_checked`: the validation already required keys if the topic is compacted (Log.append)."""
        try:
            base, last = self.log.append(batch, self.leader_epoch, now_ms, keys_checked=keys_checked)
        except StorageError as exc:
            return AppendResult(exc.error_code, log_start_offset=self.log.log_start_offset, message=str(exc))
        append_time = now_ms if self.log.config.log_append_time else -1
        if self.log.log_end_offset > self.high_watermark:
            self.high_watermark = self.log.log_end_offset  # ISR = {this broker}
            self._notify()
        return AppendResult(0, base, last, append_time, self.log.log_start_offset)
