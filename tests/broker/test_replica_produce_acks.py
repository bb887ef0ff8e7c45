"""acks=all delayed produce (broker/handlers/produce.py) on a real Partition whose ISR includes a fake
follower (broker 7) fed through `on_follower_fetch`, as the Fetch handler would. Covers
`_delayed_outcome`, `_complete_delayed` and the handler itself with a minimal broker object."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from broker.handlers import produce as produce_handler
from broker.handlers.produce import _complete_delayed, _delayed_outcome
from broker.partition import Partition
from client.wire.errors import ErrorCode
from client.wire.records import build_batch
from storage import Log

NOW = 1_700_000_000_000
ME = 1
FOLLOWER = 7
REPLICAS = (ME, FOLLOWER)


def batch(n: int = 2) -> bytes:
    return build_batch([(b"k", b"v%d" % i, NOW + i, ()) for i in range(n)])


def leader(tmp_path: Path, isr: tuple[int, ...] = REPLICAS, name: str = "t-0", index: int = 0) -> Partition:
    p = Partition("t", index, Log.open(str(tmp_path / name)), 0, local_id=ME, leader=False)
    p.make_leader(1, 1, REPLICAS, isr, NOW)
    return p


def result_for(base_offset: int) -> dict[str, Any]:
    return {"index": 0, "error_code": 0, "base_offset": base_offset, "log_append_time_ms": -1,
            "log_start_offset": 0, "error_message": None}


async def parked(partitions: list[Partition], task: asyncio.Task[Any]) -> None:
    """Yield until the task waits on every partition's hw waiters (bounded; no timing)."""
    for _ in range(100):
        if task.done() or all(p._hw_waiters for p in partitions):
            return
        await asyncio.sleep(0)
    raise AssertionError("the delayed produce never parked")


# --- _delayed_outcome ----------------------------------------------------------------------------------------

def test_delayed_outcome_rules(tmp_path: Path) -> None:
    p = leader(tmp_path)
    p.append_as_leader(batch(2), NOW)
    assert _delayed_outcome(p, 1, 2, 2) is None                       # HW 0 < 2: wait
    p.on_follower_fetch(FOLLOWER, 2, NOW)
    assert _delayed_outcome(p, 1, 2, 2) == ErrorCode.NONE
    assert _delayed_outcome(p, 0, 2, 2) == ErrorCode.NOT_LEADER_OR_FOLLOWER   # appended in another epoch
    assert _delayed_outcome(p, 1, 2, 3) == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    p.make_follower(FOLLOWER, 2, 2, REPLICAS, REPLICAS)
    assert _delayed_outcome(p, 1, 2, 2) == ErrorCode.NOT_LEADER_OR_FOLLOWER


# --- _complete_delayed ---------------------------------------------------------------------------------------

def test_completes_only_when_high_watermark_passes_the_batch(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        p.append_as_leader(batch(2), NOW)                 # offsets 0..1
        appended = p.append_as_leader(batch(3), NOW)      # offsets 2..4
        results = [result_for(appended.base_offset)]
        task = asyncio.create_task(_complete_delayed([(results, [(0, p, p.leader_epoch, 5, 2)])], 30_000))
        await parked([p], task)
        p.on_follower_fetch(FOLLOWER, 2, NOW)             # HW 2: the first batch only
        assert p.high_watermark == 2
        await parked([p], task)
        assert not task.done()
        p.on_follower_fetch(FOLLOWER, 4, NOW)             # HW 4: still inside the batch
        await parked([p], task)
        assert not task.done()
        p.on_follower_fetch(FOLLOWER, 5, NOW)
        await asyncio.wait_for(task, 5)
        assert results[0]["error_code"] == 0 and results[0]["base_offset"] == 2
    asyncio.run(run())


def test_demotion_while_waiting_fails_with_not_leader(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        p.append_as_leader(batch(2), NOW)
        results = [result_for(0)]
        task = asyncio.create_task(_complete_delayed([(results, [(0, p, 1, 2, 2)])], 30_000))
        await parked([p], task)
        p.make_follower(FOLLOWER, 2, 2, REPLICAS, REPLICAS)
        await asyncio.wait_for(task, 5)
        assert results[0]["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
        assert results[0]["base_offset"] == -1
    asyncio.run(run())


def test_demoted_then_leader_again_in_a_new_epoch_still_fails(tmp_path: Path) -> None:
    """The write was appended in epoch 1; a new leader (epoch 2) may have truncated it, so even a
    high watermark that now passes its offsets must not acknowledge it."""
    async def run() -> None:
        p = leader(tmp_path)
        p.append_as_leader(batch(2), NOW)
        results = [result_for(0)]
        task = asyncio.create_task(_complete_delayed([(results, [(0, p, 1, 2, 1)])], 30_000))
        await parked([p], task)
        # both changes happen before the waiting task runs again
        p.make_follower(FOLLOWER, 2, 2, REPLICAS, REPLICAS)
        p.make_leader(3, 3, REPLICAS, (ME,), NOW)
        assert p.high_watermark == 2 and p.is_leader
        await asyncio.wait_for(task, 5)
        assert results[0]["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
    asyncio.run(run())


def test_times_out_with_request_timed_out(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        p.append_as_leader(batch(2), NOW)
        results = [result_for(0)]
        await asyncio.wait_for(_complete_delayed([(results, [(0, p, 1, 2, 2)])], 30), 5)
        assert results[0]["error_code"] == ErrorCode.REQUEST_TIMED_OUT
        assert results[0]["base_offset"] == -1
        assert not p._hw_waiters or all(f.cancelled() or f.done() for f in p._hw_waiters)
    asyncio.run(run())


def test_isr_shrunk_below_min_before_hw_passed_is_not_enough_replicas_after_append(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        p.append_as_leader(batch(2), NOW)
        results = [result_for(0)]
        task = asyncio.create_task(_complete_delayed([(results, [(0, p, 1, 2, 2)])], 30_000))
        await parked([p], task)
        p.update_isr((ME,), 2)                  # the controller committed the shrink: HW -> log end
        assert p.high_watermark == 2
        await asyncio.wait_for(task, 5)
        assert results[0]["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        assert results[0]["base_offset"] == 0   # appended: the client must treat it as unknown
    asyncio.run(run())


def test_several_partitions_complete_independently(tmp_path: Path) -> None:
    async def run() -> None:
        p0 = leader(tmp_path, name="t-0", index=0)
        p1 = leader(tmp_path, name="t-1", index=1)
        p0.append_as_leader(batch(2), NOW)
        p1.append_as_leader(batch(2), NOW)
        results = [result_for(0), result_for(0)]
        task = asyncio.create_task(_complete_delayed([(results, [(0, p0, 1, 2, 2), (1, p1, 1, 2, 2)])], 30_000))
        await parked([p0, p1], task)
        p0.on_follower_fetch(FOLLOWER, 2, NOW)
        await parked([p1], task)
        assert not task.done()
        p1.make_follower(FOLLOWER, 2, 2, REPLICAS, REPLICAS)
        await asyncio.wait_for(task, 5)
        assert [r["error_code"] for r in results] == [0, ErrorCode.NOT_LEADER_OR_FOLLOWER]
    asyncio.run(run())


# --- the handler ---------------------------------------------------------------------------------------------

class FakeBroker:
    def __init__(self, partition: Partition, min_isr: int) -> None:
        self.partitions = {partition.tp: partition}
        self.min_isr = min_isr
        self.lease_end: float | None = None   # loop time the controller lease ends (None: no lease)

    def may_lead(self) -> bool:
        return True

    def lease_left_s(self) -> float | None:
        return None if self.lease_end is None else self.lease_end - asyncio.get_running_loop().time()

    def min_insync_replicas(self, topic: str) -> int:
        return self.min_isr

    def producer_id_was_issued(self, producer_id: int) -> bool:
        return True

    def not_leader_error(self, topic: str, index: int) -> int:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER


def produce_request(data: bytes, acks: int = -1, timeout_ms: int = 30_000) -> dict[str, Any]:
    return {"transactional_id": None, "acks": acks, "timeout_ms": timeout_ms,
            "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": data}]}]}


def part_of(reply: dict[str, Any]) -> dict[str, Any]:
    (topic,) = reply["responses"]
    (part,) = topic["partition_responses"]
    return part


def test_handler_not_enough_replicas_before_append(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path, isr=(ME,))
        handle = produce_handler.handler(FakeBroker(p, min_isr=2))  # type: ignore[arg-type]
        conn = SimpleNamespace(closed=False)
        reply = await handle(conn, SimpleNamespace(api_version=8), produce_request(batch()))
        assert part_of(reply)["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS
        assert p.log.log_end_offset == 0   # nothing appended
        # acks=1 does not care about min.insync.replicas
        reply = await handle(conn, SimpleNamespace(api_version=8), produce_request(batch(), acks=1))
        assert part_of(reply)["error_code"] == 0 and p.log.log_end_offset == 2
    asyncio.run(run())


def test_handler_pending_expansion_does_not_count_for_min_isr(tmp_path: Path) -> None:
    """min.insync.replicas counts the committed ISR: a proposed expansion is not enough."""
    async def run() -> None:
        p = leader(tmp_path, isr=(ME,))
        p.on_follower_fetch(FOLLOWER, 0, NOW)
        change = p.propose_isr_change(NOW, 10_000, None)
        assert change is not None and change.new_isr == REPLICAS
        handle = produce_handler.handler(FakeBroker(p, min_isr=2))  # type: ignore[arg-type]
        reply = await handle(SimpleNamespace(closed=False), SimpleNamespace(api_version=8), produce_request(batch()))
        assert part_of(reply)["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS
    asyncio.run(run())


def test_handler_acks_all_waits_for_the_follower(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        handle = produce_handler.handler(FakeBroker(p, min_isr=2))  # type: ignore[arg-type]
        task = asyncio.create_task(handle(SimpleNamespace(closed=False), SimpleNamespace(api_version=8),
                                          produce_request(batch(3))))
        await parked([p], task)
        assert p.log.log_end_offset == 3 and p.high_watermark == 0
        p.on_follower_fetch(FOLLOWER, 3, NOW)
        part = part_of(await asyncio.wait_for(task, 5))
        assert (part["error_code"], part["base_offset"]) == (0, 0)
    asyncio.run(run())


def test_handler_acks_all_times_out(tmp_path: Path) -> None:
    async def run() -> None:
        p = leader(tmp_path)
        handle = produce_handler.handler(FakeBroker(p, min_isr=1))  # type: ignore[arg-type]
        reply = await asyncio.wait_for(handle(SimpleNamespace(closed=False), SimpleNamespace(api_version=8),
                                              produce_request(batch(), timeout_ms=20)), 5)
        assert part_of(reply)["error_code"] == ErrorCode.REQUEST_TIMED_OUT
        assert p.log.log_end_offset == 2   # appended, but not acknowledged
    asyncio.run(run())


def test_handler_acks_all_fails_at_the_end_of_the_lease(tmp_path: Path) -> None:
    """An isolated leader (lease ended) answers its delayed produces at once, not after timeout_ms."""
    async def run() -> None:
        p = leader(tmp_path)
        broker = FakeBroker(p, min_isr=1)
        broker.lease_end = asyncio.get_running_loop().time() + 0.05
        handle = produce_handler.handler(broker)  # type: ignore[arg-type]
        started = asyncio.get_running_loop().time()
        reply = await asyncio.wait_for(handle(SimpleNamespace(closed=False), SimpleNamespace(api_version=8),
                                              produce_request(batch(), timeout_ms=30_000)), 5)
        assert part_of(reply)["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
        assert asyncio.get_running_loop().time() - started < 2   # the lease's end, not the 30 s timeout
        assert p.log.log_end_offset == 2   # appended: the outcome is unknown to the client
    asyncio.run(run())
