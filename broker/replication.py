"""The replica manager: replica fetchers per leader, and the leader's ISR changes through the controller.

* `follow(partition, leader_id, address)` puts a follower partition on the fetcher for its
  leader (one fetcher per source broker, created on demand, stopped by `prune()` once empty).
* ISR changes (KRaft's AlterPartition): every ISR_CHECK_INTERVAL_MS, and at once when a follower
  outside the ISR fetched (`isr_check_soon`), each led partition's `LeaderState` proposes at most
  one change (shrink: ISR members not caught up within replica.lag.time.max.ms; expand: followers
  at the high watermark). All proposals go to the active controller in one request, with the
  partition epoch they were computed from (a stale one is refused) and each member's broker epoch
  (KIP-903: an old incarnation cannot rejoin). The answer (or, failing that, the next metadata
  image) commits or clears each proposal; the high watermark rules in broker/replica_state.py
  make a shrink count only once committed.
* Only while the lease is valid: a broker that may not lead proposes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from broker.partition import Partition
from broker.replica_fetcher import ReplicaFetcher
from broker.tasks import cancel_and_wait
from client.wire.errors import ErrorCode

if TYPE_CHECKING:
    from broker.broker import Broker

log = logging.getLogger(__name__)

ISR_CHECK_INTERVAL_MS = 250
ALTER_PARTITION_DEADLINE_S = 3.0


class ReplicaManager:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._isr_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.isr_shrinks = 0
        self.isr_expands = 0

    def start(self) -> None:
        if self.broker.quorum is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._isr_loop(), name="isr-updater"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        for fetcher in list(self.fetchers.values()):
            await fetcher.stop()
        self.fetchers.clear()

    # -- followers ----------------------------------------------------------------------------------------

    def follow(self, partition: Partition, leader_id: int, address: tuple[str, int] | None) -> None:
        tp = partition.tp
        for fetcher_leader, fetcher in self.fetchers.items():
            if fetcher_leader != leader_id:
                fetcher.remove(tp)
        if leader_id < 0 or address is None:
            return
        fetcher = self.fetchers.get(leader_id)
        if fetcher is None:
            fetcher = ReplicaFetcher(self.broker.node_id, leader_id, address, on_error=self._on_fetch_error)
            self.fetchers[leader_id] = fetcher
            fetcher.start()
        fetcher.set_address(address)
        fetcher.add(partition)

    def leader_unreachable(self, leader_id: int) -> bool:
        """This broker's fetcher cannot reach `leader_id` (refused or dropped connection, no answer since).

        Metadata then shows that broker's partitions without a leader (LEADER_NOT_AVAILABLE) until
        the controller moves them: clients that learn of a dead leader from us refresh at their
        fast interval instead of waiting for their periodic one, which takes seconds (librdkafka's
        1 s topic scan). Metadata is advisory, so this changes no guarantee."""
        fetcher = self.fetchers.get(leader_id)
        return fetcher is not None and fetcher.unreachable_since is not None

    def unfollow(self, tp: tuple[str, int]) -> None:
        for fetcher in self.fetchers.values():
            fetcher.remove(tp)

    async def prune(self) -> None:
        for leader_id, fetcher in list(self.fetchers.items()):
            if not fetcher.partitions:
                del self.fetchers[leader_id]
                await fetcher.stop()

    def _on_fetch_error(self, tp: tuple[str, int], message: str) -> None:
        logs = self.broker.logs
        partition = self.broker.partitions.get(tp)
        if logs is not None and partition is not None and partition.log.offline:
            logs.mark_offline(tp, message)

    # -- ISR changes --------------------------------------------------------------------------------------

    def isr_check_soon(self) -> None:
        self._isr_wakeup.set()

    async def _isr_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._isr_wakeup.wait(), ISR_CHECK_INTERVAL_MS / 1000)
            self._isr_wakeup.clear()
            try:
                await self.update_isrs()
            except Exception:
                log.exception("ISR update failed")

    async def update_isrs(self) -> None:
        broker = self.broker
        quorum = broker.quorum
        if quorum is None or not broker.may_lead():
            return
        image = quorum.image
        eligible = frozenset(b for b in image.brokers if image.is_active(b))
        now = int(time.time() * 1000)
        lag_ms = broker.config.replica_lag_time_max_ms
        items: list[dict[str, Any]] = []
        proposed: dict[tuple[str, int], Partition] = {}
        for tp, partition in broker.partitions.items():
            if not partition.is_leader:
                continue
            topic = image.topic(tp[0])
            if topic is None:
                continue
            resend = partition.leader_state is not None and partition.leader_state.pending is not None
            change = partition.propose_isr_change(now, lag_ms, eligible)
            if change is None:
                continue
            new_isr = [[b, image.brokers[b].broker_epoch if b in image.brokers else -1] for b in change.new_isr]
            items.append({"topic_id": topic.topic_id.hex(), "partition": tp[1], "leader_epoch": change.leader_epoch,
                          "partition_epoch": change.partition_epoch, "new_isr": new_isr})
            proposed[(topic.topic_id.hex(), tp[1])] = partition
            if not resend:
                log.info("%s-%d: proposing ISR %s (was %s)", tp[0], tp[1], list(change.new_isr), list(partition.isr))
        if not items:
            return
        try:
            reply = await quorum.client.alter_partition(broker.node_id, quorum.broker_epoch, items,
                                                        deadline_s=ALTER_PARTITION_DEADLINE_S)
        except Exception as exc:  # outcome unknown: the proposals stay pending and are sent again
            log.info("AlterPartition failed: %s", exc)
            return
        if reply.get("error_code"):
            log.info("AlterPartition refused: %s", ErrorCode(reply["error_code"]).name)
            for partition in proposed.values():
                partition.isr_change_failed()
            return
        for result in reply.get("partitions", []):
            partition = proposed.pop((result["topic_id"], result["partition"]), None)
            if partition is None:
                continue
            if result["error_code"] == ErrorCode.NONE and result["leader_epoch"] == partition.leader_epoch \
                    and partition.is_leader:
                before = len(partition.isr)
                partition.update_isr(tuple(result["isr"]), result["partition_epoch"])
                if len(partition.isr) < before:
                    self.isr_shrinks += 1
                elif len(partition.isr) > before:
                    self.isr_expands += 1
            else:
                log.info("%s-%d: ISR change refused: %s", partition.topic, partition.index,
                         ErrorCode(result["error_code"]).name)
                partition.isr_change_failed()
        for partition in proposed.values():
            partition.isr_change_failed()
