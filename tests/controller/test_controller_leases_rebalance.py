"""Lease barriers, the failover fencing bound (session.py "Lease barriers") and automatic
preferred-leader election (service.py), on real RaftNodes over 127.0.0.1.

The rebalancing test drives a single-voter controller with a fake clock (the service's `clock`
argument): the imbalance check fires only when the test moves the clock. The failover test runs
three in-process controllers (tests/controller/test_controller_service_cluster.py's harness) on
the real monotonic clock, which the service, the brokers' ControllerClients and the test share, so
"the broker's lease had ended before it was fenced" is checked directly.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from test_controller_service_cluster import Broker, cluster_with_brokers, run, wait_until
from test_controller_service_ops import free_port

from client.wire.errors import ErrorCode
from controller.controller_client import ControllerClient
from controller.metadata import AlterPartitionItem, BuilderConfig, CreateTopic, MetadataBuilder
from controller.node import RaftNode
from controller.service import ControllerService
from controller.session import ControllerTimings, SessionTracker


class FakeClock:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


# --- pure: the lease arithmetic -----------------------------------------------------------------------

def test_granted_lease_is_cut_by_the_barrier_age() -> None:
    t = ControllerTimings()
    s = SessionTracker(t)
    assert s.granted_lease_ms(5000, None) == 0, "no committed entry of this term yet: no lease"
    assert s.granted_lease_ms(5000, 5000) == t.broker_lease_ms
    assert s.granted_lease_ms(5000, 5010) == t.broker_lease_ms, "a barrier proposed after receipt: whole lease"
    assert s.granted_lease_ms(5000, 4800) == t.broker_lease_ms - 200
    assert s.granted_lease_ms(5000, 3000) == 0
    # the broker's lease (sent at s <= r) then ends by barrier + lease, whatever the receipt time
    for received in range(4800, 5800, 37):
        assert received + s.granted_lease_ms(received, 4800) <= 4800 + t.broker_lease_ms


def test_activation_deadlines_with_and_without_the_failover_bound() -> None:
    t = ControllerTimings()
    s = SessionTracker(t)
    s.start_fresh([1, 2], 10_000)
    assert dict(s.deadlines) == {1: 10_000 + t.broker_session_ms, 2: 10_000 + t.broker_session_ms}
    # earlier leases ended by 9_400 + lease: a live broker still gets failover_rejoin_ms from now
    s.start_fresh([1], 10_000, leases_end_by_ms=9_400 + t.broker_lease_ms)
    assert s.deadlines[1] == max(9_400 + t.broker_lease_ms + t.failover_lease_margin_ms, 10_000 + t.failover_rejoin_ms)
    s.start_fresh([1], 10_000, leases_end_by_ms=9_900 + t.broker_lease_ms)
    assert s.deadlines[1] == 9_900 + t.broker_lease_ms + t.failover_lease_margin_ms


def test_new_timings_inequalities_are_asserted() -> None:
    with pytest.raises(AssertionError):
        ControllerTimings(lease_barrier_interval_ms=500)   # lease - barrier < 3 heartbeats
    with pytest.raises(AssertionError):
        ControllerTimings(failover_rejoin_ms=400)          # < 3 heartbeats
    with pytest.raises(AssertionError):
        ControllerTimings(failover_rejoin_ms=2000)         # > session


# --- single voter, fake clock: barriers and the imbalance check -----------------------------------------

async def single_with_fake_clock(tmp_path: Any, clock: FakeClock, lease_barriers: bool = True) -> ControllerService:
    voters = {1: ("127.0.0.1", free_port())}
    node = RaftNode(1, voters, str(tmp_path / "c1"), listen=voters[1], rng_seed=3)
    service = ControllerService(node, MetadataBuilder(config=BuilderConfig(), rng=random.Random(3)), clock=clock,
                                lease_barriers=lease_barriers)
    await service.start()
    await wait_until(lambda: service.is_active, 5, "activation")
    return service


def test_heartbeat_leases_come_from_committed_barriers(tmp_path: Any) -> None:
    async def main() -> None:
        clock = FakeClock()
        service = await single_with_fake_clock(tmp_path, clock)
        try:
            epoch = (await service.register_broker(1, uuid.uuid4().bytes, "h", 1)).broker_epoch
            hb = await service.heartbeat(1, epoch, service.image.offset)       # unfence record: a write
            assert not hb.is_fenced and hb.lease_ms == 1000
            barriers = service.barriers
            clock.now_ms += 100
            hb = await service.heartbeat(1, epoch, service.image.offset)       # barrier 100 ms old: cut
            assert hb.lease_ms == 900 and service.barriers == barriers
            clock.now_ms += 200                                                # 300 ms > interval: new barrier
            offset = service.image.offset
            hb = await service.heartbeat(1, epoch, service.image.offset)
            assert hb.lease_ms == 1000 and service.barriers == barriers + 1
            assert service.image.offset > offset, "the barrier is a committed NoOpRecord"
        finally:
            await service.stop()

    run(main())


def test_a_one_voter_quorum_grants_whole_leases_without_barriers(tmp_path: Any) -> None:
    async def main() -> None:
        clock = FakeClock()
        service = await single_with_fake_clock(tmp_path, clock, lease_barriers=None)  # the default
        try:
            assert not service.lease_barriers
            epoch = (await service.register_broker(1, uuid.uuid4().bytes, "h", 1)).broker_epoch
            await service.heartbeat(1, epoch, service.image.offset)
            offset = service.image.offset
            clock.now_ms += 600
            assert (await service.heartbeat(1, epoch, service.image.offset)).lease_ms == 1000
            assert service.barriers == 0 and service.image.offset == offset
        finally:
            await service.stop()

    run(main())


def test_imbalance_check_returns_leadership_to_a_preferred_replica_in_the_isr(tmp_path: Any) -> None:
    async def main() -> None:
        clock = FakeClock()
        service = await single_with_fake_clock(tmp_path, clock)
        interval = service.timings.leader_imbalance_check_interval_ms
        try:
            epochs = {}
            for b in (1, 2, 3):
                epochs[b] = (await service.register_broker(b, uuid.uuid4().bytes, "h", 9000 + b)).broker_epoch
                assert not (await service.heartbeat(b, epochs[b], service.image.offset)).is_fenced
            (created,) = await service.create_topics([CreateTopic("t", 6, 3, {})])
            assert created.error is ErrorCode.NONE
            topic_id = service.image.topic("t").topic_id  # type: ignore[union-attr]

            def parts() -> list[Any]:
                return [service.image.partition(topic_id, i) for i in range(6)]

            async def advance(ms: int) -> None:
                """Move the clock in steps shorter than a session, every broker heartbeating after each."""
                for _ in range(ms // 1000):
                    clock.now_ms += 1000
                    for b in (1, 2, 3):
                        await service.heartbeat(b, epochs[b], service.image.offset)
            assert all(p.leader == p.replicas[0] for p in parts())
            preferred_by_1 = [i for i, p in enumerate(parts()) if p.replicas[0] == 1]
            assert preferred_by_1

            # broker 1 fenced: its leaderships move, it leaves every ISR
            await service.heartbeat(1, epochs[1], service.image.offset, want_fence=True)
            assert all(parts()[i].leader != 1 and 1 not in parts()[i].isr for i in preferred_by_1)
            # back (unfenced) but not in any ISR: the check leaves leadership where it is
            assert not (await service.heartbeat(1, epochs[1], service.image.offset)).is_fenced
            assert service.imbalanced_partitions() == []
            await advance(interval)
            await wait_until(lambda: service._next_rebalance_at > clock.now_ms, 5, "one imbalance check")
            assert service.preferred_elections == 0

            # the leaders readmit broker 1 to their ISRs (it caught up): imbalanced now
            for i in preferred_by_1:
                p = parts()[i]
                r = await service.alter_partition(p.leader, epochs[p.leader], [AlterPartitionItem(
                    topic_id, i, p.leader_epoch, p.partition_epoch,
                    tuple((b, epochs[b]) for b in sorted({*p.isr, 1})))])
                assert r.error is ErrorCode.NONE and r.partitions[0].error is ErrorCode.NONE, r
            assert sorted(i for _t, i in service.imbalanced_partitions()) == preferred_by_1
            assert service.preferred_elections == 0, "not before the interval passed"
            epochs_before = {i: parts()[i].leader_epoch for i in preferred_by_1}
            await advance(interval)
            await wait_until(lambda: service.preferred_elections == len(preferred_by_1), 5, "preferred elections")
            assert all(p.leader == p.replicas[0] for p in parts())
            assert service.fenced_by_timer == []
            assert all(parts()[i].leader_epoch == epochs_before[i] + 1 for i in preferred_by_1)
            assert service.imbalanced_partitions() == []
        finally:
            await service.stop()

    run(main())


# --- three controllers: the failover bound --------------------------------------------------------------

def test_failover_fences_a_silent_broker_after_its_lease_not_a_whole_session(tmp_path: Any) -> None:
    """The active controller dies together with one broker (combined mode): the new controller
    fences that broker about broker_lease_ms after the last log entry it saw from the old one —
    after the broker's lease certainly ended, well before a whole fresh session — and fences no
    live broker."""
    async def main() -> None:
        cluster, brokers = await cluster_with_brokers(tmp_path, [1, 2, 3])
        loop = asyncio.get_running_loop()
        admin = ControllerClient(cluster.voters, rng=random.Random(97))
        session_ms = ControllerTimings().broker_session_ms
        try:
            reply = await admin.create_topics([{"name": "t", "num_partitions": 6, "replication_factor": 3}])
            assert reply["topics"][0]["error_code"] == 0
            figures = []
            for trial in range(3):
                old = cluster.active()
                assert old is not None
                victim = brokers[trial]
                # both die at once: the victim's last acknowledged heartbeat went to the old controller
                await victim.stop_heartbeating(close_connection=True)
                killed_at = loop.time()
                await old.kill()
                await wait_until(lambda v=victim.broker_id: (a := cluster.active()) is not None
                                 and a.image.brokers[v].fenced, 5, f"broker {victim.broker_id} fenced")
                took = loop.time() - killed_at
                new = cluster.active()
                assert new is not None and new.node.node_id != old.node.node_id
                assert loop.time() > victim.client.lease_deadline, "fenced only after the victim's lease ended"
                assert new.last_activation_at is not None and new.last_activation_deadline is not None
                assert new.last_activation_deadline - new.last_activation_at < session_ms, "the bound was used"
                await wait_until(lambda n=new, v=victim.broker_id: n.fenced_by_timer == [v], 2,
                                 "the timer's bookkeeping (the record applies before its write returns)")
                assert all(new.image.is_active(b.broker_id) for b in brokers if b is not victim), "live ones stay"
                figures.append(took)
                # the victim comes back as a new incarnation, the dead controller restarts from disk
                await cluster.start(old.node.node_id)
                again = Broker(victim.broker_id, cluster)
                brokers[trial] = again
                await again.register()
                await wait_until(lambda b=again.broker_id: (a := cluster.active()) is not None
                                 and a.image.is_active(b), 5, "the victim unfenced again")
            print(f"\nkill of the active controller + one broker -> that broker fenced: "
                  f"{', '.join(f'{f * 1000:.0f}' for f in figures)} ms (lease 1000 ms, session 1500 ms)")
            assert max(figures) < 3.0
        finally:
            await admin.close()
            for b in brokers:
                await b.stop_heartbeating(close_connection=True)
            await cluster.stop()

    run(main())


def test_a_controller_that_never_followed_gives_whole_sessions(tmp_path: Any) -> None:
    """A one-voter quorum leads from its first tick: it never observed its log as a follower, so it
    cannot bound earlier leases and gives every broker a whole session (the fallback)."""
    async def main() -> None:
        clock = FakeClock()
        voters = {1: ("127.0.0.1", free_port())}
        node = RaftNode(1, voters, str(tmp_path / "c1"), listen=voters[1], rng_seed=5)
        service = ControllerService(node, MetadataBuilder(rng=random.Random(5)), clock=clock)
        await service.start()
        await wait_until(lambda: service.is_active, 5, "activation")
        epoch = (await service.register_broker(1, uuid.uuid4().bytes, "h", 1)).broker_epoch
        await service.heartbeat(1, epoch, service.image.offset)
        await service.stop()
        node = RaftNode(1, voters, str(tmp_path / "c1"), listen=voters[1], rng_seed=6)
        again = ControllerService(node, MetadataBuilder(rng=random.Random(6)), clock=clock)
        await again.start()
        try:
            await wait_until(lambda: again.is_active, 5, "activation after restart")
            assert again.last_activation_at is not None
            assert again.last_activation_deadline == again.last_activation_at + again.timings.broker_session_ms \
                or again._leases_end_by(again.node.term) is not None
        finally:
            await again.stop()

    run(main())
