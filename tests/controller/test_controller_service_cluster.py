"""Three in-process controllers (RaftNode + ControllerService) and simulated brokers on 127.0.0.1.

Brokers are ControllerClients that register and heartbeat every 200 ms, reporting as their
metadata offset the highest committed image offset of the running controllers (a caught-up
observer). Waits are conditions with deadlines; crashes are `RaftNode.kill()`. Run with `-s` to see
the failover figures.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from client.wire.errors import ErrorCode
from controller.controller_client import ControllerClient, ControllerClientConfig, ControllerUnavailableError
from controller.controller_rpc import decode_response, encode_request
from controller.metadata import MetadataBuilder, MetadataImage
from controller.node import RaftNode
from controller.service import ControllerService

TEST_TIMEOUT_S = 50.0
FAILOVER_TRIALS = 5
FAILOVER_ASSERT_S = 5.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        assert loop.time() - start < timeout_s, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.005)
    return loop.time() - start


class Cluster:
    def __init__(self, tmp_path: Any, n: int = 3) -> None:
        self.tmp_path = tmp_path
        self.voters = {i + 1: ("127.0.0.1", p) for i, p in enumerate(free_ports(n))}
        self.services: dict[int, ControllerService] = {}
        self.starts = 0

    async def start(self, node_id: int) -> ControllerService:
        self.starts += 1
        node = RaftNode(node_id, self.voters, str(self.tmp_path / f"c{node_id}"), listen=self.voters[node_id],
                        rng_seed=node_id * 100 + self.starts)
        service = ControllerService(node, MetadataBuilder(rng=random.Random(node_id)))
        self.services[node_id] = service
        return await service.start()

    async def start_all(self) -> None:
        for node_id in self.voters:
            await self.start(node_id)

    def running(self) -> list[ControllerService]:
        return [s for s in self.services.values() if s.node.running]

    def active(self) -> ControllerService | None:
        act = [s for s in self.running() if s.is_active]
        assert len(act) <= 1 or len({s.node.term for s in act}) == len(act)
        return max(act, key=lambda s: s.node.term) if act else None

    def committed_offset(self) -> int:
        return max((s.image.offset for s in self.running()), default=-1)

    def converged(self) -> bool:
        images = [s.image for s in self.running()]
        return len(images) == len(self.services) and all(i == images[0] for i in images)

    async def stop(self) -> None:
        for s in self.services.values():
            await s.stop()


class Broker:
    """A simulated broker: registration, then a heartbeat every 200 ms until stopped."""

    def __init__(self, broker_id: int, cluster: Cluster) -> None:
        self.broker_id = broker_id
        self.cluster = cluster
        self.client = ControllerClient(cluster.voters, ControllerClientConfig(deadline_ms=1000),
                                       rng=random.Random(broker_id))
        self.incarnation = uuid.uuid4().bytes
        self.epoch = -1
        self.heartbeats = 0
        self.last_acked_sent: float = 0.0
        self.task: asyncio.Task[None] | None = None

    async def register(self) -> None:
        reply = await self.client.register_broker(self.broker_id, self.incarnation, "127.0.0.1",
                                                  9092 + self.broker_id, deadline_s=5)
        assert reply["error_code"] == 0, reply
        self.epoch = reply["broker_epoch"]
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sent = loop.time()
            try:
                reply = await self.client.heartbeat(self.broker_id, self.epoch, self.cluster.committed_offset())
            except ControllerUnavailableError:
                continue
            assert reply["error_code"] == 0, reply
            self.heartbeats += 1
            self.last_acked_sent = sent
            await asyncio.sleep(0.2)  # broker_heartbeat_interval_ms

    async def stop_heartbeating(self, close_connection: bool) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if close_connection:
            await self.client.close()


async def cluster_with_brokers(tmp_path: Any, broker_ids: list[int]) -> tuple[Cluster, list[Broker]]:
    cluster = Cluster(tmp_path)
    await cluster.start_all()
    await wait_until(lambda: cluster.active() is not None, 5, "an active controller")
    brokers = [Broker(b, cluster) for b in broker_ids]
    for b in brokers:
        await b.register()
    await wait_until(lambda: (a := cluster.active()) is not None
                     and all(a.image.is_active(b) for b in broker_ids), 5, "brokers unfenced")
    return cluster, brokers


def fenced_ever(cluster: Cluster) -> list[int]:
    return [b for s in cluster.services.values() for b in s.fenced_by_timer]


def test_failover_keeps_images_equal_and_brokers_unfenced(tmp_path: Any) -> None:
    async def main() -> None:
        cluster, brokers = await cluster_with_brokers(tmp_path, [1, 2, 3])
        admin = ControllerClient(cluster.voters, rng=random.Random(99))
        try:
            reply = await admin.create_topics([{"name": f"topic-{i}", "num_partitions": 1 + i % 4,
                                                "replication_factor": 3} for i in range(10)])
            assert [t["error_code"] for t in reply["topics"]] == [0] * 10
            active = cluster.active()
            assert active is not None and len(active.image.topics) == 10
            await wait_until(cluster.converged, 5, "equal images")
            assert len({s.image.offset for s in cluster.running()}) == 1
            epochs = {b: active.image.brokers[b].broker_epoch for b in (1, 2, 3)}

            times = []
            loop = asyncio.get_running_loop()
            for trial in range(FAILOVER_TRIALS):
                old = cluster.active()
                assert old is not None
                old_id = old.node.node_id
                await old.kill()
                started = loop.time()
                reply = await admin.create_topics([{"name": f"after-failover-{trial}", "replication_factor": 3}],
                                                  deadline_s=10)
                times.append(loop.time() - started)
                # a retry of a create the dead controller committed answers TOPIC_ALREADY_EXISTS
                assert reply["topics"][0]["error_code"] in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS)
                new = cluster.active()
                assert new is not None and new.node.node_id != old_id
                assert new.image.topic(f"after-failover-{trial}") is not None
                await cluster.start(old_id)  # restart from disk and catch up
                await wait_until(cluster.converged, 5, f"the restarted controller {old_id} to catch up")

            print(f"\nfailover -> topic created by the new active controller, {FAILOVER_TRIALS} trials: "
                  f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms, "
                  f"min {min(times) * 1000:.0f} ms")
            assert max(times) <= FAILOVER_ASSERT_S

            # live brokers are never fenced by a new controller: heartbeat on for 2 sessions
            heartbeats = {b.broker_id: b.heartbeats for b in brokers}
            await wait_until(lambda: all(b.heartbeats >= heartbeats[b.broker_id] + 10 for b in brokers), 6,
                             "ten more heartbeats per broker (2 s, > one session)")
            active = cluster.active()
            assert active is not None
            assert fenced_ever(cluster) == []
            assert all(active.image.is_active(b) for b in (1, 2, 3))
            assert {b: active.image.brokers[b].broker_epoch for b in (1, 2, 3)} == epochs, "no re-registration"
            assert len(active.image.topics) == 10 + FAILOVER_TRIALS
            await wait_until(cluster.converged, 5, "final equal images")
        finally:
            await admin.close()
            for b in brokers:
                await b.stop_heartbeating(close_connection=True)
            await cluster.stop()

    run(main())


def test_silent_broker_is_fenced_after_its_session_and_loses_leaderships(tmp_path: Any) -> None:
    async def main() -> None:
        cluster, brokers = await cluster_with_brokers(tmp_path, [1, 2, 3])
        admin = ControllerClient(cluster.voters, rng=random.Random(98))
        loop = asyncio.get_running_loop()
        try:
            reply = await admin.create_topics([{"name": f"t{i}", "num_partitions": 3, "replication_factor": 3}
                                               for i in range(4)])
            assert all(t["error_code"] == 0 for t in reply["topics"])
            active = cluster.active()
            assert active is not None
            before: MetadataImage = active.image
            led = {(t.topic_id, i): p for t, i, p in before.iter_partitions() if p.leader == 2}
            assert led, "placement gives broker 2 some leaderships"

            # NOT_CONTROLLER redirect: a raw request to a follower names the active controller
            follower = next(s for s in cluster.running() if not s.is_active)
            reader, writer = await asyncio.open_connection(*cluster.voters[follower.node.node_id])
            writer.write(encode_request("heartbeat", {"broker_id": 1, "broker_epoch": 1, "metadata_offset": 0}, 1, "t"))
            size = int.from_bytes(await reader.readexactly(4), "big")
            _cid, code, leader_id, _ = decode_response(await reader.readexactly(size))
            assert (code, leader_id) == (ErrorCode.NOT_CONTROLLER, active.node.node_id)
            writer.close()
            redirected = ControllerClient(cluster.voters, rng=random.Random(5))
            redirected.target = follower.node.node_id
            again = await redirected.create_topics([{"name": "via-redirect", "replication_factor": 3}])
            assert again["topics"][0]["error_code"] == 0 and redirected.redirects >= 1
            await redirected.close()

            # broker 2 stops heartbeating but keeps its connection: the session (1.5 s) fences it
            silent = brokers[1]
            await silent.stop_heartbeating(close_connection=False)
            last_sent = silent.last_acked_sent
            await wait_until(lambda: (a := cluster.active()) is not None and a.image.brokers[2].fenced, 5,
                             "broker 2 fenced")
            elapsed = loop.time() - last_sent
            lease_end = last_sent + 1.0
            print(f"\nsilent broker fenced {elapsed * 1000:.0f} ms after the send time of its last acked heartbeat "
                  f"(lease 1000 ms, session 1500 ms)")
            assert 1.4 <= elapsed <= 3.0
            # the granted lease is cut by the age of the controller's last committed write (a lease
            # barrier at most lease_barrier_interval_ms old, plus a commit): session.py
            assert lease_end - 0.4 <= silent.client.lease_deadline <= lease_end + 0.05
            assert loop.time() > silent.client.lease_deadline, "the broker's lease ended before it was fenced"

            active = cluster.active()
            assert active is not None
            after = active.image
            for (topic_id, index), old in led.items():
                new = after.partition(topic_id, index)
                assert new is not None
                assert new.leader != 2 and new.leader in old.isr and new.leader in new.isr
                assert new.leader == next(r for r in old.replicas if r != 2 and r in old.isr), "first ISR replica"
                assert new.leader_epoch == old.leader_epoch + 1
                assert 2 not in new.isr
            # the fence record is applied (image) a moment before the timer's write returns (bookkeeping)
            await wait_until(lambda: fenced_ever(cluster) == [2], 2, "fenced by the session timer")

            # broker 3's process "dies": its connection drops, the grace (300 ms) fences it long before a session
            dead = brokers[2]
            await dead.stop_heartbeating(close_connection=False)
            dropped_at = loop.time()
            await dead.client.close()
            took = await wait_until(lambda: (a := cluster.active()) is not None and a.image.brokers[3].fenced, 3,
                                    "broker 3 fenced after its connection dropped")
            print(f"broker fenced {took * 1000:.0f} ms after its controller connection dropped (grace 300 ms)")
            assert took < 1.2 and loop.time() - dropped_at < 1.2
            assert cluster.active().image.is_active(1)  # type: ignore[union-attr]
            await wait_until(cluster.converged, 5, "equal images")
        finally:
            await admin.close()
            for b in brokers:
                await b.stop_heartbeating(close_connection=True)
            await cluster.stop()

    run(main())
