"""RaftNode clusters on real sockets (127.0.0.1, free ports) and real temp dirs, in one event loop.

Every wait is for a condition with a deadline (`Cluster.wait`, woken by the nodes' `changed`
events), never a sleep. Crashes are `RaftNode.kill()` (tasks cancelled, sockets reset, nothing
flushed), optionally followed by `FaultyFileSystem.crash()` (unsynced bytes lost or torn).
Measurements (election time after a leader crash, commit latency) print their figures; run with
`-s` to see them.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pytest

from controller.node import NodeStoppedError, ProposalTooLargeError, RaftNode, RaftNodeConfig
from controller.raft import NotLeaderError, ProposalDroppedError, RaftError
from controller.raft_log import METADATA_LOG_DIR
from storage.files import FaultyFileSystem

TEST_TIMEOUT_S = 45.0
LEADER_TIMEOUT_S = 5.0


def run(coro: Coroutine[Any, Any, Any], timeout_s: float = TEST_TIMEOUT_S) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class App:
    """The replicated state machine of a test: the applied (index, data) sequence."""

    def __init__(self, on_apply: Callable[[int], None] | None = None) -> None:
        self.items: list[tuple[int, bytes]] = []
        self.restores = 0
        self._base = 0
        self._on_apply = on_apply

    @property
    def index(self) -> int:
        return self.items[-1][0] if self.items else self._base

    def apply(self, index: int, data: bytes) -> None:
        assert index > self.index, f"applied {index} after {self.index}"
        if self._on_apply is not None:
            self._on_apply(index)
        self.items.append((index, data))

    def restore(self, index: int, data: bytes) -> None:
        self.items = [(i, bytes.fromhex(d)) for i, d in orjson.loads(data)]
        self._base = index
        self.restores += 1

    def snapshot(self) -> bytes:
        return orjson.dumps([[i, d.hex()] for i, d in self.items])

    def datas(self) -> list[bytes]:
        return [d for _, d in self.items]


class Cluster:
    def __init__(self, root: str, voters: int = 3, observers: int = 0, config: RaftNodeConfig | None = None,
                 faulty: bool = False, snapshots: bool = False) -> None:
        self.root = root
        ids = list(range(1, voters + observers + 1))
        self.addresses = dict(zip(ids, (("127.0.0.1", p) for p in free_ports(len(ids))), strict=True))
        self.voter_ids = ids[:voters]
        self.voter_map = {i: self.addresses[i] for i in self.voter_ids}
        self.config = config or RaftNodeConfig()
        self.fs = {i: (FaultyFileSystem(seed=i) if faulty else None) for i in ids}
        self.snapshots = snapshots
        self.apps: dict[int, App] = {}
        self.nodes: dict[int, RaftNode] = {}
        self.incarnations = dict.fromkeys(ids, 0)
        self.on_apply: dict[int, Callable[[int], None]] = {}

    def make(self, i: int) -> RaftNode:
        app = self.apps[i] = App(self.on_apply.get(i))
        self.incarnations[i] += 1
        node = RaftNode(i, self.voter_map, f"{self.root}/n{i}", self.addresses[i], app.apply, app.restore,
                        self.config, fs=self.fs[i], rng_seed=1000 * self.incarnations[i] + i,
                        snapshot_source=app.snapshot if self.snapshots else None)
        self.nodes[i] = node
        return node

    async def start(self, *ids: int) -> None:
        for i in ids or self.addresses:
            await self.make(i).start()

    async def kill(self, i: int, crash_disk: bool = False) -> None:
        await self.nodes[i].kill()
        fs = self.fs[i]
        if crash_disk and fs is not None:
            fs.crash(torn=True)

    async def restart(self, i: int) -> RaftNode:
        node = self.make(i)
        await node.start()
        return node

    def running(self) -> list[RaftNode]:
        return [n for n in self.nodes.values() if n.running]

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.running() if n.is_leader]
        terms = [n.term for n in leaders]
        assert len(terms) == len(set(terms)), f"two leaders in one term: {[(n.node_id, n.term) for n in leaders]}"
        return max(leaders, key=lambda n: n.term) if leaders else None

    async def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {self.describe()}")
            await self.next_change(remaining)

    async def wait_leader(self, timeout_s: float = LEADER_TIMEOUT_S, exclude: tuple[int, ...] = (),
                          above_term: int = 0) -> RaftNode:
        def found() -> bool:
            lead = self.leader()
            return lead is not None and lead.node_id not in exclude and lead.term > above_term

        await self.wait(found, timeout_s, "a leader")
        lead = self.leader()
        assert lead is not None
        return lead

    async def propose(self, data: bytes, timeout_s: float = 10.0) -> int:
        """Propose through whichever node leads, retrying leader changes (bounded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lead = await self.wait_leader(max(0.1, deadline - time.monotonic()))
            try:
                return await lead.propose(data)
            except (NotLeaderError, ProposalDroppedError, NodeStoppedError):
                if time.monotonic() > deadline:
                    raise
                await self.next_change(1.0)

    async def next_change(self, timeout_s: float) -> None:
        """Until any node handles a Ready (or the timeout)."""
        waits = [asyncio.ensure_future(n.changed.wait()) for n in self.nodes.values()]
        _done, pending = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()

    async def wait_applied(self, ids: list[int], index: int, timeout_s: float = 10.0) -> None:
        await self.wait(lambda: all(self.nodes[i].applied_index >= index for i in ids), timeout_s,
                        f"nodes {ids} to apply {index}")

    def describe(self) -> str:
        return "; ".join(f"{i}:{n.state}/{n.role.value}/t{n.term}/leader={n.leader_id}/c{n.commit_index}"
                         f"/a{n.applied_index}" for i, n in self.nodes.items())

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.kill()


async def with_cluster(tmp_path, scenario: Callable[[Cluster], Coroutine[Any, Any, Any]], **kw: Any) -> Any:
    cluster = Cluster(str(tmp_path), **kw)
    try:
        return await scenario(cluster)
    finally:
        await cluster.close()


def same_prefix(apps: list[App]) -> list[bytes]:
    longest = max((a.datas() for a in apps), key=len)
    for app in apps:
        assert app.datas() == longest[:len(app.datas())], "applied sequences diverge"
    return longest


# --- behaviour ---------------------------------------------------------------------------------


def test_three_nodes_elect_a_leader_and_apply_the_same_entries_in_order(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        lead = await c.wait_leader()
        assert all(n.leader_id in (None, lead.node_id) for n in c.running())
        for k in range(30):
            await lead.propose(b"seq-%d" % k)
        indexes = await asyncio.gather(*(lead.propose(b"burst-%d" % k) for k in range(300)))
        assert len(set(indexes)) == 300
        await c.wait_applied(c.voter_ids, max(indexes))
        seq = same_prefix(list(c.apps.values()))
        assert seq[:30] == [b"seq-%d" % k for k in range(30)]
        assert sorted(seq[30:]) == sorted(b"burst-%d" % k for k in range(300))
        for app in c.apps.values():
            assert [i for i, _ in app.items] == sorted(i for i, _ in app.items)
        st = lead.status()
        assert st["role"] == "leader" and st["high_watermark"] >= max(indexes)
        assert sorted(v["replica_id"] for v in st["voters"]) == [1, 2, 3]
        follower = next(n for n in c.running() if n is not lead)
        with pytest.raises(NotLeaderError) as info:
            await follower.propose(b"nope")
        assert info.value.leader_id == lead.node_id

    run(with_cluster(tmp_path, scenario))


def test_a_crashed_leader_is_replaced_and_catches_up_from_its_disk(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        old = await c.wait_leader()
        for k in range(20):
            await old.propose(b"before-%d" % k)
        await c.wait_applied(c.voter_ids, old.commit_index)
        old_id, old_term = old.node_id, old.term
        t0 = time.monotonic()
        await c.kill(old_id, crash_disk=True)  # kill -9 + power loss: unsynced bytes gone or torn
        new = await c.wait_leader(above_term=old_term)
        elapsed = time.monotonic() - t0
        print(f"\nnew leader {new.node_id} {elapsed * 1000:.0f} ms after the leader crashed")
        assert elapsed < 3.0
        for k in range(20):
            await new.propose(b"after-%d" % k)
        back = await c.restart(old_id)
        await c.wait_applied(c.voter_ids, new.commit_index)
        seq = same_prefix(list(c.apps.values()))
        assert seq == [b"before-%d" % k for k in range(20)] + [b"after-%d" % k for k in range(20)]
        assert c.apps[old_id].datas() == seq  # rebuilt by replaying its own log, then fetched the rest
        assert back.term >= new.term and back.leader_id == new.node_id

    run(with_cluster(tmp_path, scenario, faulty=True))


def test_a_failed_fsync_stops_the_leader_before_it_sends_and_it_recovers(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        lead = await c.wait_leader()
        for k in range(10):
            await lead.propose(b"ok-%d" % k)
        fs = c.fs[lead.node_id]
        assert fs is not None
        fs.fail_next("fsync", path_contains=".log")
        with pytest.raises(NodeStoppedError):
            await lead.propose(b"never-acknowledged")
        assert lead.state == "failed" and isinstance(lead.failure, Exception)
        new = await c.wait_leader(exclude=(lead.node_id,))
        await c.kill(lead.node_id, crash_disk=True)
        await new.propose(b"after")
        await c.restart(lead.node_id)
        await c.wait_applied(c.voter_ids, new.commit_index)
        seq = same_prefix(list(c.apps.values()))
        assert seq[:10] == [b"ok-%d" % k for k in range(10)] and seq[-1] == b"after"
        # the failed entry was never sent, so no other node can have committed it
        assert b"never-acknowledged" not in seq

    run(with_cluster(tmp_path, scenario, faulty=True))


def test_graceful_stop_hands_leadership_over_faster_than_an_election_timeout(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        old = await c.wait_leader()
        for k in range(10):
            await old.propose(b"x-%d" % k)
        old_term = old.term
        t0 = time.monotonic()
        stopping = asyncio.ensure_future(old.stop())
        new = await c.wait_leader(exclude=(old.node_id,), above_term=old_term)
        handover = time.monotonic() - t0
        await stopping
        timeout_s = c.config.election_timeout_ticks * c.config.tick_ms / 1000
        print(f"\nleadership handed from {old.node_id} to {new.node_id} in {handover * 1000:.0f} ms "
              f"(election timeout {timeout_s * 1000:.0f}-{2 * timeout_s * 1000:.0f} ms)")
        assert handover < timeout_s
        assert new.term == old_term + 1  # no pre-vote round, no split vote
        await new.propose(b"after-handover")
        back = await c.restart(old.node_id)
        await c.wait_applied(c.voter_ids, new.commit_index)
        assert c.apps[old.node_id].datas() == same_prefix(list(c.apps.values()))
        assert back.applied_index == new.commit_index

    run(with_cluster(tmp_path, scenario))


def test_an_observer_applies_only_committed_entries(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        voters = c.voter_ids
        violations: list[str] = []

        def check(index: int) -> None:  # the observer applies an index only once a voter majority has it
            committed = max((c.nodes[v].commit_index for v in voters if v in c.nodes), default=0)
            if index > committed:
                violations.append(f"observer applied {index} > commit {committed}")

        c.on_apply[4] = check
        await c.start()
        observer = c.nodes[4]
        assert not observer.is_voter
        lead = await c.wait_leader()
        for k in range(20):
            await lead.propose(b"o-%d" % k)
        await c.wait_applied([4], lead.commit_index)
        assert c.apps[4].datas() == c.apps[lead.node_id].datas()
        assert [o["replica_id"] for o in lead.status()["observers"]] == [4]
        # the leader alone: it appends (and the observer may fetch) but nothing commits
        others = [v for v in voters if v != lead.node_id]
        for v in others:
            await c.kill(v)
        committed = lead.commit_index
        pending = [asyncio.ensure_future(lead.propose(b"u-%d" % k, timeout_s=30)) for k in range(5)]
        await c.wait(lambda: lead.last_index >= committed + 5 or not lead.is_leader, 5.0, "uncommitted appends")
        await c.wait(lambda: observer.last_index > committed or not lead.is_leader, 5.0, "the observer to fetch")
        assert observer.applied_index <= committed
        for v in others:
            await c.restart(v)
        results = await asyncio.gather(*pending, return_exceptions=True)
        lead2 = await c.wait_leader()
        final = await c.propose(b"final")
        await c.wait_applied([4, *voters], final)
        assert c.apps[4].datas() == c.apps[lead2.node_id].datas()
        assert not violations, violations
        print(f"\nuncommitted proposals while alone: {[type(r).__name__ for r in results]}")

    run(with_cluster(tmp_path, scenario, observers=1))


def test_snapshot_truncates_the_log_and_a_far_behind_follower_catches_up_from_it(tmp_path) -> None:
    config = RaftNodeConfig(snapshot_interval_entries=25, log_segment_bytes=2048)

    async def scenario(c: Cluster) -> None:
        await c.start()
        lead = await c.wait_leader()
        lagging = next(v for v in c.voter_ids if v != lead.node_id)
        await c.kill(lagging)
        for k in range(150):
            await lead.propose(b"s-%03d" % k)
        live = [v for v in c.voter_ids if v != lagging]
        await c.wait_applied(live, lead.commit_index)
        await c.wait(lambda: lead.snapshot_index >= 100, 5.0, "compaction")
        storage = lead.storage
        assert storage is not None
        assert len(storage.snapshot_files()) == 1
        assert storage.log.log_start_offset == lead.snapshot_index
        first_segment = min(s.base_offset for s in storage.log.segments)
        assert first_segment > 0  # the segments below the snapshot are gone
        back = await c.restart(lagging)
        await c.wait_applied([lagging], lead.commit_index)
        assert c.apps[lagging].restores == 1  # installed the leader's snapshot instead of 150 entries
        assert c.apps[lagging].datas() == c.apps[lead.node_id].datas()
        assert back.snapshot_index >= 100
        import os
        names = os.listdir(os.path.join(c.root, f"n{lagging}", METADATA_LOG_DIR))
        assert any(name.endswith(".checkpoint") for name in names)

    run(with_cluster(tmp_path, scenario, config=config, snapshots=True))


def test_a_single_voter_quorum_elects_itself_at_once_and_survives_restart(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        t0 = time.monotonic()
        await c.start()
        node = await c.wait_leader(timeout_s=1.0)
        assert time.monotonic() - t0 < 0.5  # no election timeout to wait for
        indexes = [await node.propose(b"one-%d" % k) for k in range(20)]
        assert indexes == sorted(indexes)
        await node.stop()
        assert node.state == "stopped"
        with pytest.raises(NodeStoppedError):
            await node.propose(b"late")
        again = await c.restart(1)
        await c.wait(lambda: again.applied_index >= indexes[-1], 2.0, "replay after restart")
        assert c.apps[1].datas() == [b"one-%d" % k for k in range(20)]
        assert await again.propose(b"more") > indexes[-1]

    run(with_cluster(tmp_path, scenario, voters=1))


def test_proposals_fail_fast_when_not_leader_or_stopped(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        node = c.make(1)
        with pytest.raises(NodeStoppedError):
            await node.propose(b"x")
        await node.start()
        with pytest.raises(RaftError):  # no leader yet: NotLeaderError(None, 0)
            await node.propose(b"x")
        with pytest.raises(ProposalTooLargeError):
            await node.propose(b"x" * (node.config.entry_bytes_max + 1))
        await node.kill()
        assert node.state == "killed"

    run(with_cluster(tmp_path, scenario))


# --- measurements --------------------------------------------------------------------------------


def test_measure_election_time_after_leader_crash(tmp_path) -> None:
    trials = 10

    async def scenario(c: Cluster) -> list[float]:
        await c.start()
        times: list[float] = []
        for trial in range(trials):
            lead = await c.wait_leader()
            index = await lead.propose(b"trial-%d" % trial)
            await c.wait_applied(c.voter_ids, index)
            t0 = time.monotonic()
            await c.kill(lead.node_id)
            await c.wait_leader(exclude=(lead.node_id,), above_term=lead.term)
            times.append(time.monotonic() - t0)
            await c.restart(lead.node_id)
        lead = await c.wait_leader()
        final = await lead.propose(b"final")
        await c.wait_applied(c.voter_ids, final)
        assert c.apps[1].datas() == c.apps[2].datas() == c.apps[3].datas()
        return times

    times = run(with_cluster(tmp_path, scenario))
    ms = sorted(t * 1000 for t in times)
    print(f"\nelection after leader crash over {trials} trials (election timeout 500-1000 ms): "
          f"median {statistics.median(ms):.0f} ms, min {ms[0]:.0f}, max {ms[-1]:.0f}; all {[round(t) for t in ms]}")
    assert statistics.median(ms) <= 5000


@pytest.mark.parametrize("persist_in_thread", [False, True], ids=["inline", "thread"])
def test_measure_commit_latency_on_three_nodes(tmp_path, persist_in_thread: bool) -> None:
    config = RaftNodeConfig(persist_in_thread=persist_in_thread)

    async def scenario(c: Cluster) -> tuple[list[float], float]:
        await c.start()
        lead = await c.wait_leader()
        for k in range(20):  # warm up
            await lead.propose(b"w-%d" % k)
        latencies = []
        for k in range(300):
            t0 = time.perf_counter()
            await lead.propose(b"m-%d" % k)
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(lead.propose(b"c-%d" % k) for k in range(2000)))
        burst_s = time.perf_counter() - t0
        return latencies, burst_s

    latencies, burst_s = run(with_cluster(tmp_path, scenario, config=config))
    ms = sorted(t * 1000 for t in latencies)
    p50, p99 = ms[len(ms) // 2], ms[int(len(ms) * 0.99)]
    mode = "thread" if persist_in_thread else "inline"
    print(f"\ncommit latency, 3 nodes, fsync {mode}: p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
          f"2000 concurrent proposals in {burst_s * 1000:.0f} ms ({2000 / burst_s:.0f}/s)")
    assert p99 < 1000
