"""Replication across a leader failover, on three combined `brokerd --quorum` processes (tests/clusterproc.py).

Topics are RF=3 with the topic config min.insync.replicas=2 unless a test says otherwise.

(a) `test_kill9_of_a_leader_under_acks_all_load_loses_nothing`: replog's Producer (idempotent, acks=all)
    writes unique values to every partition while the leader of partition 0 gets `kill -9`. Every
    acknowledged value is read back (Consumer from offset 0 to the high watermark) exactly once, at the
    offset it was acknowledged with; no value at all is stored twice. The killed broker restarts and
    rejoins the ISR of every partition (Metadata isr_nodes); after the cluster stops, every replica's
    batches below the smallest checkpointed high watermark are identical: (base offset, last offset,
    leader epoch, crc) from `brokerctl log dump --json` of each node's data dir (docs/log-dump-format.md).
(b) `test_min_insync_replicas_3_refuses_acks_all_once_the_isr_shrank`: with one broker killed, Produce
    acks=all gets NOT_ENOUGH_REPLICAS once the ISR shrank; acks=1 still works.
(c) Failover time, kill -9 of a partition leader -> first acknowledged acks=all write on that partition
    (replog's Producer, default retry settings), victim not the active controller and victim the active
    controller. A fresh topic per trial (6 partitions, leaders spread), the victim restarted and back in
    the cluster before the next. Trials: 3 / 2 by default, 20 with `REPLOG_TRIALS=20` (any number) or
    `-m slow`. Bounds asserted are loose (CI); the median / max are printed (`-s`) against issue 5's
    targets (<= 1 s median, <= 3 s max; controller victim <= 3 s median, <= 5 s max).

Real processes on 127.0.0.1 with free ports; every wait polls a condition with a deadline; the fixture
stops every process it started.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "broker"))

from clusterproc import Cluster, metadata, wait_until
from test_protocol_helpers import (
    API_CREATE_TOPICS,
    API_PRODUCE,
    CREATE_TOPICS_V,
    PRODUCE_V,
    KafkaConnection,
    batch,
    produce_body,
    unique_topic,
)

from client import Consumer, Producer, RecordMetadata
from client.wire.errors import ErrorCode

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLL_S = 0.02  # poll interval of every condition wait (each has a deadline)
REJOIN_TIMEOUT_S = 20.0
LOAD_INTERVAL_S = 0.002  # the load generator's pacing: a few hundred records/s per partition
LOAD_OUTSTANDING_MAX = 2000
ACKED_MIN = 500
FAILOVER_BOUND_S = 5.0  # loose CI bound, victim not the controller (target: 1 s median, 3 s max)
FAILOVER_CONTROLLER_BOUND_S = 8.0  # loose CI bound, victim the active controller (target: 3 s median, 5 s max)
FAILOVER_WAIT_S = 30.0
DEFAULT_TRIALS = 3
DEFAULT_CONTROLLER_TRIALS = 2
SLOW_TRIALS = 20


# ------------------------------------------------------------------------------------------- helpers

@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(str(tmp_path), nodes=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()






@dataclass(frozen=True)
class PartitionView:
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def partitions_of(cluster: Cluster, topic: str, via: int | None = None) -> dict[int, PartitionView]:
    """Metadata of `topic` as one live broker (`via`, or the first that answers) sees it."""
    for node_id in [via] if via is not None else cluster.alive():
        try:
            (t,) = metadata(cluster.bootstrap(node_id), [topic])["topics"]
        except OSError:
            continue
        if t["error_code"] != 0:
            return {}
        return {p["partition_index"]: PartitionView(p["leader_id"], p["leader_epoch"], tuple(p["replica_nodes"]),
                                                    tuple(p["isr_nodes"])) for p in t["partitions"]}
    raise OSError("no live broker answered Metadata")


def controller_of(cluster: Cluster) -> int:
    for node_id in cluster.alive():
        controller = metadata(cluster.bootstrap(node_id))["controller_id"]
        if controller in cluster.alive():
            return int(controller)
    raise AssertionError("no controller known")


def create_topic(cluster: Cluster, name: str, partitions: int, rf: int = 3, min_isr: int = 2) -> None:
    """Create through the active controller and wait until every live broker sees every partition
    with a leader and a full ISR."""
    via = cluster.bootstrap(controller_of(cluster))
    with KafkaConnection(via, timeout_s=15) as conn:
        body = conn.request(API_CREATE_TOPICS, CREATE_TOPICS_V, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": rf, "assignments": [],
            "configs": [{"name": "min.insync.replicas", "value": str(min_isr)}]}],
            "timeout_ms": 10_000, "validate_only": False})
    assert body["topics"][0]["error_code"] == 0, body
    for node_id in cluster.alive():
        def ready(node_id: int = node_id) -> bool:
            view = partitions_of(cluster, name, node_id)
            return len(view) == partitions and all(p.leader >= 0 and len(p.isr) == rf for p in view.values())
        wait_until(ready, 10, f"topic {name} on broker {node_id}")


def bootstrap_all(cluster: Cluster) -> list[str]:
    return [cluster.bootstrap(i) for i in cluster.nodes]


# --------------------------------------------------------------------------- (a) zero loss, convergence

@dataclass
class Load:
    """A paced acks=all load on a topic: unique values, their outcomes and acknowledgement times."""

    producer: Producer
    topic: str
    partitions: list[int]
    acked: dict[bytes, tuple[int, int]] = field(default_factory=dict)   # value -> (partition, offset)
    failed: dict[bytes, str] = field(default_factory=dict)               # value -> error
    # (monotonic send time, monotonic acknowledgement time, partition)
    ack_times: list[tuple[float, float, int]] = field(default_factory=list)
    outstanding: set[asyncio.Future[RecordMetadata]] = field(default_factory=set)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def _done(self, value: bytes, sent_at: float, future: asyncio.Future[RecordMetadata]) -> None:
        self.outstanding.discard(future)
        if future.cancelled():
            self.failed[value] = "cancelled"
        elif future.exception() is not None:
            self.failed[value] = repr(future.exception())
        else:
            meta = future.result()
            self.acked[value] = (meta.partition, meta.offset)
            self.ack_times.append((sent_at, time.monotonic(), meta.partition))

    def send_one(self, partition: int) -> None:
        value = f"{self.topic}-{next(self._seq)}".encode()
        future = self.producer.send(self.topic, value, partition=partition)
        self.outstanding.add(future)
        sent_at = time.monotonic()
        future.add_done_callback(lambda f, value=value: self._done(value, sent_at, f))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if len(self.outstanding) < LOAD_OUTSTANDING_MAX:
                for p in self.partitions:
                    self.send_one(p)
            await asyncio.sleep(LOAD_INTERVAL_S)  # pacing of the load, not a synchronisation
        await self.producer.flush()

    def first_ack_after(self, when: float, partition: int) -> float | None:
        """Seconds from `when` to the first acknowledgement of a record of `partition` sent after it
        (acknowledgements the old leader sent before it died do not count)."""
        times = [acked for sent, acked, p in self.ack_times if p == partition and sent >= when]
        return min(times) - when if times else None


async def read_all(bootstraps: list[str], topic: str, partitions: int) -> list[tuple[int, int, bytes | None]]:
    """Every record of `topic` from offset 0 to the high watermark: (partition, offset, value)."""
    out: list[tuple[int, int, bytes | None]] = []
    async with Consumer(bootstraps, auto_offset_reset="none") as consumer:
        tps = [(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, "consumer did not reach the high watermarks"
            for r in await consumer.poll(timeout_ms=500):
                out.append((r.partition, r.offset, r.value))
    return out


async def wait_async(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(POLL_S)  # poll interval of a condition wait with a deadline
    return time.monotonic() - start


def full_isr(cluster: Cluster, topic: str, node: int) -> bool:
    view = partitions_of(cluster, topic)
    return bool(view) and all(node in p.isr and p.leader >= 0 for p in view.values())


def read_high_watermarks(data_dir: str) -> dict[tuple[str, int], int]:
    """The node's replication-offset-checkpoint (Kafka checkpoint format: version, count, entries)."""
    path = os.path.join(data_dir, "replication-offset-checkpoint")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = {}
    for line in lines[2:]:
        if line.strip():
            topic, partition, offset = line.rsplit(" ", 2)
            out[(topic, int(partition))] = int(offset)
    return out


BatchKey = tuple[int, int, int, int]  # (base offset, last offset, leader epoch, crc)


def dump_batches(data_dir: str, topic: str, partition: int) -> list[BatchKey]:
    path = os.path.join(data_dir, f"{topic}-{partition}")
    result = subprocess.run([sys.executable, "-m", "tools.brokerctl", "log", "dump", path, "--json"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"log dump {path}: exit {result.returncode}\n{result.stderr}"
    out = []
    for line in result.stdout.splitlines():
        entry = json.loads(line)
        if entry["type"] == "batch":
            assert entry["crc_valid"], entry
            out.append((entry["base_offset"], entry["last_offset"], entry["leader_epoch"], entry["crc"]))
    return out


def check_replicas_identical(cluster: Cluster, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """After stop: each partition's batches below the smallest checkpointed high watermark are equal on
    every replica (RELIABILITY.md check 6), and so are the batches in the range every replica holds.
    Returns partition -> (that high watermark, that common log end)."""
    hws = {i: read_high_watermarks(n.data_dir) for i, n in cluster.nodes.items()}
    compared = {}
    for p in range(partitions):
        hw = min(h.get((topic, p), 0) for h in hws.values())
        logs = {node_id: dump_batches(node.data_dir, topic, p) for node_id, node in cluster.nodes.items()}
        common_end = min(batches[-1][1] + 1 if batches else 0 for batches in logs.values())
        for bound, what in ((hw, "the smallest high watermark"), (common_end, "the common log end")):
            views = {}
            for node_id, batches in logs.items():
                below = [b for b in batches if b[0] < bound]
                assert all(b[1] < bound for b in below), f"p{p} node {node_id}: a batch straddles {what} {bound}"
                contiguous = [b[0] for b in below[1:]] == [b[1] + 1 for b in below[:-1]]
                assert contiguous and (not below or (below[0][0] == 0 and below[-1][1] == bound - 1)), \
                    f"p{p} node {node_id}: batches do not cover [0, {bound})"
                views[node_id] = below
            for node_id, below in views.items():
                assert below == views[1], f"p{p}: replica {node_id} differs from replica 1 below {what} {bound}"
        compared[p] = (hw, common_end)
    return compared


def test_kill9_of_a_leader_under_acks_all_load_loses_nothing(cluster: Cluster) -> None:
    partitions = 3
    topic = unique_topic("repl")
    create_topic(cluster, topic, partitions)
    victim = partitions_of(cluster, topic)[0].leader

    async def scenario() -> tuple[Load, float | None]:
        async with Producer(bootstrap_all(cluster), acks="all", enable_idempotence=True, linger_ms=2,
                            compression="lz4") as producer:
            load = Load(producer, topic, list(range(partitions)))
            stop = asyncio.Event()
            runner = asyncio.create_task(load.run(stop))
            await wait_async(lambda: len(load.acked) >= 300, 20, "300 acks before the kill")
            cluster.kill(victim)
            killed_at = time.monotonic()
            acked_at_kill = len(load.acked)
            await wait_async(lambda: load.first_ack_after(killed_at, 0) is not None, FAILOVER_WAIT_S,
                             "an acknowledged write on partition 0 after the kill")
            await wait_async(lambda: len(load.acked) >= acked_at_kill + 300, 20, "300 acks after the kill")
            await asyncio.to_thread(cluster.restart, victim)
            await asyncio.to_thread(wait_until, lambda: full_isr(cluster, topic, victim), REJOIN_TIMEOUT_S,
                                    f"broker {victim} back in every ISR")
            rejoined = len(load.acked)
            await wait_async(lambda: len(load.acked) >= rejoined + 300, 20, "300 acks after the rejoin")
            stop.set()
            async with asyncio.timeout(60):
                await runner
            return load, load.first_ack_after(killed_at, 0)

    load, failover = asyncio.run(scenario())
    stored = asyncio.run(read_all(bootstrap_all(cluster), topic, partitions))
    print(f"\nacked {len(load.acked)}, failed {len(load.failed)}, stored {len(stored)}, "
          f"kill -9 of broker {victim} -> first ack on p0 {failover:.3f} s")
    assert len(load.acked) >= ACKED_MIN
    assert not load.failed, list(load.failed.items())[:5]
    # every stored value once (idempotence: no duplicate even of a retried batch)
    counts = Counter(v for _, _, v in stored)
    duplicates = {v: n for v, n in counts.items() if n > 1}
    assert not duplicates, list(duplicates.items())[:5]
    at = {v: (p, o) for p, o, v in stored}
    lost = [v for v in load.acked if v not in at]
    assert not lost, f"{len(lost)} acknowledged values lost, e.g. {lost[:5]}"
    moved = {v: (load.acked[v], at[v]) for v in load.acked if at[v] != load.acked[v]}
    assert not moved, f"{len(moved)} values not at their acknowledged offset, e.g. {list(moved.items())[:5]}"
    # the killed broker rejoined; the replicas converge once stopped
    assert all(victim in p.isr for p in partitions_of(cluster, topic).values())
    ends = {p: 1 + max(o for q, o, _ in stored if q == p) for p in range(partitions)}
    cluster.stop()
    compared = check_replicas_identical(cluster, topic, partitions)
    print(f"replicas identical: partition -> (smallest checkpointed hw, common log end) {compared}; "
          f"ends read {ends}")
    assert all(compared[p][1] >= ends[p] for p in range(partitions)), (compared, ends)


# ----------------------------------------------------------------------- (b) min.insync.replicas=3

def produce_code(bootstrap: str, topic: str, partition: int, acks: int, timeout_ms: int = 2000) -> int:
    with KafkaConnection(bootstrap, timeout_s=15) as conn:
        body = conn.request(API_PRODUCE, PRODUCE_V, produce_body(topic, {partition: batch(1)}, acks, timeout_ms))
    (part,) = body["responses"][0]["partition_responses"]
    return int(part["error_code"])


def test_min_insync_replicas_3_refuses_acks_all_once_the_isr_shrank(cluster: Cluster) -> None:
    topic = unique_topic("minisr3")
    create_topic(cluster, topic, 1, min_isr=3)
    view = partitions_of(cluster, topic)[0]
    leader = view.leader
    assert produce_code(cluster.bootstrap(leader), topic, 0, -1) == ErrorCode.NONE
    controller = controller_of(cluster)
    victim = next(b for b in view.replicas if b not in (leader, controller))
    cluster.kill(victim)
    codes: list[int] = []

    def refused() -> bool:
        leader_now = partitions_of(cluster, topic)[0].leader
        codes.append(produce_code(cluster.bootstrap(leader_now), topic, 0, -1))
        return codes[-1] == ErrorCode.NOT_ENOUGH_REPLICAS
    took = wait_until(refused, 15, "NOT_ENOUGH_REPLICAS for acks=all")
    seen = {ErrorCode(c).name for c in codes}
    print(f"\nacks=all answers after the kill of follower {victim} (took {took:.2f} s): {sorted(seen)}")
    # before the shrink is committed, acks=all may wait and fail after the append, never succeed
    assert seen <= {"NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "REQUEST_TIMED_OUT"}, seen
    assert victim not in partitions_of(cluster, topic)[0].isr
    leader_now = partitions_of(cluster, topic)[0].leader
    assert produce_code(cluster.bootstrap(leader_now), topic, 0, 1) == ErrorCode.NONE
    assert produce_code(cluster.bootstrap(leader_now), topic, 0, -1) == ErrorCode.NOT_ENOUGH_REPLICAS


# ------------------------------------------------------------------------------------ (c) failover time

def trials(request: pytest.FixtureRequest, default: int) -> int:
    raw = os.environ.get("REPLOG_TRIALS")
    if raw:
        return int(raw)
    return SLOW_TRIALS if "slow" in (request.config.getoption("markexpr") or "") else default


async def failover_trial(cluster: Cluster, topic: str, partition: int, victim: int) -> tuple[float, float]:
    """kill -9 `victim` (the leader of `partition`) under a paced acks=all load on that partition;
    (seconds from the kill to the first acknowledgement the producer receives for a record sent after
    it, seconds from the kill to Metadata naming a new leader: the broker's share of the former)."""
    async with Producer(bootstrap_all(cluster), acks="all", linger_ms=1) as producer:
        load = Load(producer, topic, [partition])
        stop = asyncio.Event()
        runner = asyncio.create_task(load.run(stop))
        try:
            await wait_async(lambda: len(load.acked) >= 20, 10, "acks before the kill")
            cluster.kill(victim)
            killed_at = time.monotonic()

            def moved() -> bool:
                leader = partitions_of(cluster, topic)[partition].leader
                return leader not in (victim, -1)
            elected = asyncio.create_task(asyncio.to_thread(wait_until, moved, FAILOVER_WAIT_S, "a new leader"))
            await wait_async(lambda: load.first_ack_after(killed_at, partition) is not None, FAILOVER_WAIT_S,
                             f"an acknowledged write on partition {partition} after the kill of {victim}")
            took = load.first_ack_after(killed_at, partition)
            assert took is not None
            new_leader_s = await elected
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await runner
        assert not load.failed, list(load.failed.items())[:3]
        return took, new_leader_s


def run_failover_trials(cluster: Cluster, count: int, controller_victim: bool) -> tuple[list[float], list[float]]:
    figures, elections = [], []
    for _ in range(count):
        controller = controller_of(cluster)
        topic = unique_topic("fo")
        create_topic(cluster, topic, 6)
        view = partitions_of(cluster, topic)
        if controller_victim:
            victim = controller
            candidates = [p for p, v in view.items() if v.leader == victim]
        else:
            candidates = [p for p, v in view.items() if v.leader != controller]
            victim = view[candidates[0]].leader if candidates else -1
        assert candidates, f"no partition led by a {'controller' if controller_victim else 'non-controller'}: {view}"
        took, elected = asyncio.run(failover_trial(cluster, topic, candidates[0], victim))
        figures.append(took)
        elections.append(elected)
        cluster.restart(victim)
        wait_until(lambda topic=topic, victim=victim: len(metadata(cluster.bootstrap(controller_of(cluster)))[
            "brokers"]) == 3 and full_isr(cluster, topic, victim), REJOIN_TIMEOUT_S, f"broker {victim} back")
    return figures, elections


def report(what: str, figures: list[float], elections: list[float]) -> str:
    return (f"{what}: {len(figures)} trials, median {statistics.median(figures) * 1000:.0f} ms, "
            f"max {max(figures) * 1000:.0f} ms ({', '.join(f'{f * 1000:.0f}' for f in figures)}); "
            f"kill -> new leader in Metadata (polled every {POLL_S * 1000:.0f} ms): median "
            f"{statistics.median(elections) * 1000:.0f} ms, max {max(elections) * 1000:.0f} ms")


@pytest.mark.slow  # selected by `-m slow` (then SLOW_TRIALS); runs in the default run with DEFAULT_TRIALS
def test_failover_time_leader_not_the_controller(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    figures, elections = run_failover_trials(cluster, trials(request, DEFAULT_TRIALS), controller_victim=False)
    print("\n" + report("kill -9 of a leader (not the controller) -> first acks=all ack, replog Producer", figures,
                        elections))
    assert max(figures) <= FAILOVER_BOUND_S


@pytest.mark.slow  # as above
def test_failover_time_leader_is_the_controller(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    figures, elections = run_failover_trials(cluster, trials(request, DEFAULT_CONTROLLER_TRIALS),
                                             controller_victim=True)
    print("\n" + report("kill -9 of the active controller leading it -> first acks=all ack, replog Producer",
                        figures, elections))
    assert max(figures) <= FAILOVER_CONTROLLER_BOUND_S
