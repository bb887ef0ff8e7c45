"""One partition replica hosted by this broker: its log, role, leader epoch, ISR, high watermark.

Roles (from the metadata image, broker/cluster.py; single-node mode is a leader whose ISR is itself):

* **Leader** (`make_leader`): records (epoch, log end) in the epoch cache before any append
  (KIP-101), keeps a `LeaderState` (broker/replica_state.py) fed by follower fetches
  (`on_follower_fetch`), and advances the high watermark to min(log end) over the maximal ISR.
* **Follower** (`make_follower`): a replica fetcher (broker/replica_fetcher.py) appends the
  leader's batches (`append_replicated`), truncates divergent tails (`truncate_to`), and moves its
  high watermark to min(leader's high watermark, own log end).

Invariants: the high watermark never exceeds the log end; on a leader it never decreases within
an epoch. A role or epoch change wakes every waiter (delayed produces re-check that this broker
still leads in the epoch they appended in, and fail with NOT_LEADER_OR_FOLLOWER otherwise).

Waiting: `hw_changed()` resolves when the high watermark moves or the role/epoch changes
(consumer fetches, delayed produces); `end_changed()` when the log end moves (followers' long
polls on the leader). No polling anywhere.
"""

from __future__ import annotations

import asyncio

from broker import bugs
from broker.replica_state import IsrChange, LeaderState
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
    def __init__(self, topic: str, index: int, log: Log, leader_epoch: int = 0, *, local_id: int = 0,
                 high_watermark: int | None = None, leader: bool = True, now_ms: int = 0) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.local_id = local_id
        self.leader_epoch = -1
        self.partition_epoch = 0
        self.leader_id = -1
        self.replicas: tuple[int, ...] = (local_id,)
        self.isr: tuple[int, ...] = (local_id,)
        self.leader_state: LeaderState | None = None
        # a restart resumes from the checkpointed high watermark (never above the log end); without
        # a checkpoint a single-replica leader has committed all it holds
        hw = log.log_end_offset if high_watermark is None else high_watermark
        self.high_watermark = max(min(hw, log.log_end_offset), log.log_start_offset)
        self._hw_waiters: list[asyncio.Future[None]] = []
        self._end_waiters: list[asyncio.Future[None]] = []
        if leader:
            self.make_leader(leader_epoch, 0, (local_id,), (local_id,), now_ms)
        else:
            self.leader_epoch = leader_epoch

    # -- views ----------------------------------------------------------------------------------------------

    @property
    def tp(self) -> tuple[str, int]:
        return self.topic, self.index

    @property
    def is_leader(self) -> bool:
        return self.leader_state is not None

    def committed_isr_size(self) -> int:
        return len(self.isr)

    # -- waiting --------------------------------------------------------------------------------------------

    def hw_changed(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hw_waiters.append(future)
        return future

    def end_changed(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._end_waiters.append(future)
        return future

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _notify_hw(self) -> None:
        waiters, self._hw_waiters = self._hw_waiters, []
        self._wake(waiters)

    def _notify_end(self) -> None:
        waiters, self._end_waiters = self._end_waiters, []
        self._wake(waiters)

    def fail_waiters(self) -> None:
        """The partition changed role or is going away: wake every waiter (they re-check)."""
        self._notify_hw()
        self._notify_end()

    # -- roles ----------------------------------------------------------------------------------------------

    def make_leader(self, leader_epoch: int, partition_epoch: int, replicas: tuple[int, ...],
                    isr: tuple[int, ...], now_ms: int) -> bool:
        """Lead in `leader_epoch` (idempotent for the same epoch: then only the ISR is refreshed)."""
        if self.leader_state is not None and self.leader_epoch == leader_epoch:
            if replicas != self.replicas:  # a reassignment without a leader change
                self.replicas = replicas
                self.leader_state.set_replicas(replicas, now_ms)
            self.update_isr(isr, partition_epoch)
            return False
        if self.log.latest_epoch < leader_epoch:
            self.log.assign_epoch(leader_epoch)   # (epoch, log end) before any append
        self.leader_epoch = leader_epoch
        self.partition_epoch = partition_epoch
        self.leader_id = self.local_id
        self.replicas = replicas
        self.isr = isr
        self.leader_state = LeaderState(self.local_id, replicas, isr, leader_epoch, partition_epoch,
                                        epoch_start_offset=self.log.log_end_offset, became_leader_ms=now_ms)
        self._maybe_advance_hw()
        self.fail_waiters()
        return True

    def make_follower(self, leader_id: int, leader_epoch: int, partition_epoch: int,
                      replicas: tuple[int, ...], isr: tuple[int, ...]) -> bool:
        """Follow `leader_id` (-1: no leader now). True if the role, leader or epoch changed."""
        changed = self.leader_state is not None or self.leader_epoch != leader_epoch or self.leader_id != leader_id
        self.leader_state = None
        self.leader_id = leader_id
        self.leader_epoch = max(self.leader_epoch, leader_epoch)
        self.partition_epoch = partition_epoch
        self.replicas = replicas
        self.isr = isr
        if changed:
            self.fail_waiters()
        return changed

    def update_isr(self, isr: tuple[int, ...], partition_epoch: int) -> None:
        """A committed ISR (image or AlterPartition answer) for the current leader epoch."""
        if partition_epoch < self.partition_epoch:
            return
        self.isr = isr
        self.partition_epoch = partition_epoch
        if self.leader_state is not None:
            self.leader_state.on_committed(isr, partition_epoch)
            self._maybe_advance_hw()

    def check_leader_epoch(self, current_leader_epoch: int) -> int:
        """KIP-320: a request's epoch older than ours is fenced, newer means we are behind."""
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return ErrorCode.NONE
        if current_leader_epoch < self.leader_epoch:
            return ErrorCode.FENCED_LEADER_EPOCH
        return ErrorCode.UNKNOWN_LEADER_EPOCH

    # -- leader ---------------------------------------------------------------------------------------------

    def _maybe_advance_hw(self) -> bool:
        state = self.leader_state
        if state is None:
            return False
        hw = min(state.high_watermark(self.log.log_end_offset, self.high_watermark), self.log.log_end_offset)
        if bugs.HW_FROM_LEO:
            hw = self.log.log_end_offset
        if hw > self.high_watermark:
            self.high_watermark = hw
            self._notify_hw()
            return True
        return False

    def append_as_leader(self, batch: memoryview | bytes, now_ms: int, *, keys_checked: bool = False) -> AppendResult:
        """Append one validated client batch. Idempotence (sequence/epoch checks, duplicates of the
        last five batches answered with their original offsets) is the log's producer state.
        `keys_checked`: the validation already required keys if the topic is compacted (Log.append)."""
        if self.leader_state is None:
            return AppendResult(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        try:
            base, last = self.log.append(batch, self.leader_epoch, now_ms, keys_checked=keys_checked)
        except StorageError as exc:
            return AppendResult(exc.error_code, log_start_offset=self.log.log_start_offset, message=str(exc))
        append_time = now_ms if self.log.config.log_append_time else -1
        self._notify_end()
        self._maybe_advance_hw()
        return AppendResult(0, base, last, append_time, self.log.log_start_offset)

    def on_follower_fetch(self, follower_id: int, fetch_offset: int, now_ms: int) -> bool:
        """A follower's fetch reports its log end. True if `follower_id` is a replica of this partition."""
        state = self.leader_state
        if state is None:
            return False
        if not state.on_follower_fetch(follower_id, fetch_offset, self.log.log_end_offset, now_ms):
            return False
        self._maybe_advance_hw()
        return True

    def propose_isr_change(self, now_ms: int, lag_max_ms: int, eligible: frozenset[int] | None) -> IsrChange | None:
        state = self.leader_state
        if state is None:
            return None
        return state.propose(now_ms, self.log.log_end_offset, self.high_watermark, lag_max_ms, eligible)

    def isr_change_failed(self) -> None:
        if self.leader_state is not None:
            self.leader_state.on_change_failed()

    # -- follower -------------------------------------------------------------------------------------------

    def append_replicated(self, records: bytes | memoryview, leader_high_watermark: int, now_ms: int,
                          leader_log_start_offset: int = -1) -> None:
        """Append batches fetched from the leader, then follow its high watermark and log start
        (retention or DeleteRecords on the leader; only below the committed high watermark)."""
        if len(records):
            self.log.append_replicated(records, now_ms)
            self._notify_end()
        self.follow_high_watermark(leader_high_watermark)
        if self.log.log_start_offset < leader_log_start_offset <= self.high_watermark:
            self.log.delete_before(leader_log_start_offset)

    def follow_high_watermark(self, leader_high_watermark: int) -> None:
        hw = min(leader_high_watermark, self.log.log_end_offset)
        if hw > self.high_watermark:
            self.high_watermark = hw
            self._notify_hw()

    def truncate_to(self, offset: int) -> None:
        """Drop a divergent tail (never called on a leader). The high watermark follows down only if
        it was above the new end (it then was a follower's estimate, never a leader's promise).
        `offset` at the log end drops only a trailing epoch entry that holds no batch."""
        assert self.leader_state is None, "a leader never truncates its log"
        self.log.truncate_to(offset)
        if self.high_watermark > self.log.log_end_offset:
            self.high_watermark = self.log.log_end_offset
        self._notify_end()

    def truncate_fully_and_start_at(self, offset: int) -> None:
        assert self.leader_state is None, "a leader never truncates its log"
        self.log.truncate_fully_and_start_at(offset)
        self.high_watermark = offset
        self._notify_end()
