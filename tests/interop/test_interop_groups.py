"""Consumer groups against brokerd's group coordinator: replog's group consumer with kafka-python's.

1. A mixed group (replog's consumer + kafka-python's KafkaConsumer, both offering range and
   roundrobin) splits a 4-partition topic without overlap: the assignments are disjoint and cover
   the topic, and records produced afterwards are each consumed by exactly one member.
2. Commit and resume: replog's consumer consumes and commits; a new member (kafka-python's, then
   replog's again) starts exactly after the committed offsets.
3. Three replog members as subprocesses; SIGKILL one: its partitions move to the other two within
   session.timeout.ms + heartbeat.interval.ms + 2 s.
4. (`-m bench`) group consume throughput of replog's consumer with 1 and 3 members on an
   8-partition topic vs kafka-python's group consumer in the same run (issue target: >= 2x),
   measured from the first record to the last (the join, dominated by the coordinator's
   group.initial.rebalance.delay.ms of 3 s for both clients, is printed separately), best of 3.

They skip while brokerd advertises no JoinGroup (the coordinator is built separately); with it,
kafka-python missing is a skip or, with REPLOG_REQUIRE_INTEROP=1, a failure (interop_clients.require).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from interop_clients import CLIENT_TIMEOUT_S, require

from client import Admin, Consumer, Producer
from client.cluster import Cluster
from client.wire.messages import ApiKey

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SESSION_TIMEOUT_MS = 6_000  # Kafka's group.min.session.timeout.ms
HEARTBEAT_INTERVAL_MS = 500
FAST = {"session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
        "auto_offset_reset": "earliest", "retry_backoff_max_ms": 500}


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        time.sleep(0.02)  # polling a condition with a deadline


def _broker_with_groups(start_broker: Callable[..., Any]) -> Any:
    broker = start_broker()

    async def probe() -> bool:
        cluster = Cluster(broker.bootstrap, client_id="probe")
        try:
            await cluster.start()
            connection = await cluster.any_connection()
            return ApiKey.JOIN_GROUP in connection.api_versions
        finally:
            await cluster.close()

    if not asyncio.run(probe()):
        pytest.skip("brokerd advertises no JoinGroup yet (its group coordinator has not landed)")
    return broker


def _setup(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    async def run() -> None:
        async with Admin(bootstrap) as admin:
            await admin.create_topic(topic, partitions=partitions, replication_factor=1)
        await _produce(bootstrap, topic, partitions, per_partition, 0)
    asyncio.run(run())


async def _produce(bootstrap: str, topic: str, partitions: int, per_partition: int, start: int,
                   size: int | None = None) -> None:
    async with Producer(bootstrap, linger_ms=5, compression="lz4") as producer:
        futures = [producer.send(topic, (b"%d-%d" % (p, i)) if size is None else b"%08d" % i + b"x" * (size - 8),
                                 partition=p) for i in range(start, start + per_partition) for p in range(partitions)]
        await producer.flush()
        await asyncio.gather(*futures)


class ReplogMember:
    """replog's group consumer on an event loop in a thread."""

    def __init__(self, bootstrap: str, group: str, topic: str, **config: Any) -> None:
        self.records: list[tuple[int, int]] = []
        self.assignment: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(bootstrap, group, topic, config)),
                                        daemon=True)
        self._thread.start()

    async def _main(self, bootstrap: str, group: str, topic: str, config: dict[str, Any]) -> None:
        try:
            async with Consumer(bootstrap, group_id=group, client_id="replog-member", **{**FAST, **config}) as c:
                c.subscribe([topic])
                while not self._stop.is_set():
                    for r in await c.poll(timeout_ms=100):
                        self.records.append((r.partition, r.offset))
                    self.assignment = c.assignment()
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(CLIENT_TIMEOUT_S)
        assert not self._thread.is_alive() and self.error is None, self.error


class KafkaPythonMember:
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        self.records: list[tuple[int, int]] = []
        self.assignment: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      auto_offset_reset="earliest", client_id="kafka-python-member",
                                      session_timeout_ms=SESSION_TIMEOUT_MS,
                                      heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                                      partition_assignment_strategy=[RangePartitionAssignor,
                                                                     RoundRobinPartitionAssignor])
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while not self._stop.is_set():
            for tp, batch in self.consumer.poll(timeout_ms=100).items():
                self.records.extend((tp.partition, r.offset) for r in batch)
            self.assignment = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        self.consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(CLIENT_TIMEOUT_S)


@pytest.mark.parametrize("replog_first", [True, False], ids=["replog-leads", "kafka-python-leads"])
def test_mixed_group_splits_the_partitions_without_overlap(start_broker, replog_first: bool) -> None:
    require("kafka_python")
    broker = _broker_with_groups(start_broker)
    _setup(broker.bootstrap, "mixed", 4, 5)
    # the first member to join becomes the leader and computes the assignment from both subscriptions
    if replog_first:
        ours = ReplogMember(broker.bootstrap, "mixed-g", "mixed")
        _wait(lambda: bool(ours.assignment), 30, "replog's member alone")
        theirs = KafkaPythonMember(broker.bootstrap, "mixed-g", "mixed")
    else:
        theirs = KafkaPythonMember(broker.bootstrap, "mixed-g", "mixed")
        _wait(lambda: bool(theirs.assignment), 30, "kafka-python's member alone")
        ours = ReplogMember(broker.bootstrap, "mixed-g", "mixed")
    try:
        everything = {("mixed", p) for p in range(4)}
        _wait(lambda: ours.assignment and theirs.assignment and ours.assignment | theirs.assignment == everything
              and not ours.assignment & theirs.assignment, 30, "a disjoint split of the 4 partitions")
        before = len(ours.records), len(theirs.records)
        asyncio.run(_produce(broker.bootstrap, "mixed", 4, 5, 5))
        new = {(p, o) for p in range(4) for o in range(5, 10)}
        _wait(lambda: new <= set(ours.records[before[0]:]) | set(theirs.records[before[1]:]), 30, "the new records")
        got = [r for r in ours.records[before[0]:] + theirs.records[before[1]:] if r in new]
        assert sorted(got) == sorted(new), "each new record consumed by exactly one member"
        assert {p for p, _ in ours.records[before[0]:] if (p, 5) in new} <= {p for _, p in ours.assignment}
    finally:
        ours.close()
        theirs.close()


def test_a_new_member_resumes_after_the_committed_offsets(start_broker) -> None:
    require("kafka_python")
    broker = _broker_with_groups(start_broker)
    _setup(broker.bootstrap, "resume", 4, 5)

    async def first() -> None:
        async with Consumer(broker.bootstrap, group_id="resume-g", enable_auto_commit=False, **FAST) as c:
            c.subscribe(["resume"])
            got: list[Any] = []
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                while len(got) < 20:
                    got += await c.poll(timeout_ms=200)
            await c.commit({("resume", p): 3 for p in range(4)})  # processed only up to offset 2
            assert await c.committed(("resume", 1)) == 3

    asyncio.run(first())
    theirs = KafkaPythonMember(broker.bootstrap, "resume-g", "resume")
    try:
        _wait(lambda: len(theirs.records) >= 8, 30, "kafka-python's 8 records")
        assert sorted(theirs.records) == [(p, o) for p in range(4) for o in (3, 4)]
    finally:
        theirs.close()  # kafka-python commits its positions (5) on close
    asyncio.run(_produce(broker.bootstrap, "resume", 4, 2, 5))
    ours = ReplogMember(broker.bootstrap, "resume-g", "resume")
    try:
        _wait(lambda: len(ours.records) >= 8, 30, "replog's 8 records")
        assert sorted(ours.records) == [(p, o) for p in range(4) for o in (5, 6)]
    finally:
        ours.close()


MEMBER_SCRIPT = r"""
import asyncio, json, sys
from client import Consumer

async def main(bootstrap, session_ms, heartbeat_ms):
    async with Consumer(bootstrap, group_id="kill-g", auto_offset_reset="earliest", session_timeout_ms=session_ms,
                        heartbeat_interval_ms=heartbeat_ms, retry_backoff_max_ms=500) as consumer:
        last = None
        consumer.subscribe(["kill"])
        while True:
            await consumer.poll(timeout_ms=100)
            now = sorted(p for _, p in consumer.assignment())
            if now != last:
                print(json.dumps(now), flush=True)
                last = now

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


class MemberProcess:
    def __init__(self, bootstrap: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, bootstrap, str(SESSION_TIMEOUT_MS),
                                      str(HEARTBEAT_INTERVAL_MS)], stdout=subprocess.PIPE, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": ROOT})
        self.assignment: list[int] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.assignment = json.loads(line)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(CLIENT_TIMEOUT_S)


def test_sigkill_of_a_member_moves_its_partitions_within_the_session_timeout(start_broker) -> None:
    broker = _broker_with_groups(start_broker)
    _setup(broker.bootstrap, "kill", 4, 1)
    members = [MemberProcess(broker.bootstrap) for _ in range(3)]
    try:
        def split() -> bool:
            owned = [p for m in members for p in m.assignment]
            return sorted(owned) == [0, 1, 2, 3] and all(m.assignment for m in members)
        _wait(split, 40, "three members sharing 4 partitions")
        victim = members[0]
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        survivors = members[1:]
        _wait(lambda: sorted(p for m in survivors for p in m.assignment) == [0, 1, 2, 3], 30,
              "the survivors own every partition")
        moved_s = time.monotonic() - killed_at
        bound_s = (SESSION_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS) / 1000 + 2
        print(f"partitions moved {moved_s:.2f} s after SIGKILL (bound {bound_s:.1f} s)")
        assert moved_s <= bound_s
    finally:
        for m in members:
            m.stop()


# ------------------------------------------------------------------------------------------- bench

BENCH_PARTITIONS = 8
BENCH_PER_PARTITION = 25_000
BENCH_RECORD_BYTES = 100


def _replog_group_consume(bootstrap: str, topic: str, group: str, members: int, total: int) -> tuple[float, float]:
    """(seconds from the first record to the last, seconds from subscribe to the first record)."""
    async def run() -> tuple[float, float]:
        consumers = [Consumer(bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                              **{k: v for k, v in FAST.items() if k != "auto_offset_reset"})
                     for _ in range(members)]
        for c in consumers:
            await c.start()
            c.subscribe([topic])
        subscribed = time.perf_counter()
        first: list[float] = []
        counts = [0] * members

        last: list[float] = []

        async def drain(i: int) -> None:
            while sum(counts) < total:
                got = len(await consumers[i].poll(timeout_ms=100))
                if got and not first:
                    first.append(time.perf_counter())
                counts[i] += got
                if sum(counts) >= total and not last:
                    last.append(time.perf_counter())  # the last record, not the other members' idle polls

        async with asyncio.timeout(120):
            await asyncio.gather(*(drain(i) for i in range(members)))
        ended = last[0]
        for c in consumers:
            await c.close()
        return ended - first[0], first[0] - subscribed
    return asyncio.run(run())


def _kafka_python_group_consume(bootstrap: str, topic: str, group: str, members: int,
                                total: int) -> tuple[float, float]:
    from kafka import KafkaConsumer

    consumers = [KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                               enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
                               heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS) for _ in range(members)]
    counts = [0] * members
    subscribed = time.perf_counter()
    first: list[float] = []
    deadline = time.monotonic() + 300

    last: list[float] = []

    def drain(i: int) -> None:
        while sum(counts) < total and time.monotonic() < deadline:
            got = sum(len(b) for b in consumers[i].poll(timeout_ms=100).values())
            if got and not first:
                first.append(time.perf_counter())
            counts[i] += got
            if sum(counts) >= total and not last:
                last.append(time.perf_counter())

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(members)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in consumers:
        c.close()
    assert sum(counts) >= total, f"kafka-python consumed {sum(counts)} of {total}"
    ended = last[0]
    return ended - first[0], first[0] - subscribed


@pytest.mark.bench
def test_bench_group_consume_vs_kafka_python(start_broker, request) -> None:
    if "bench" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("benchmark: run with -m bench")
    require("kafka_python")
    broker = _broker_with_groups(start_broker)
    total = BENCH_PARTITIONS * BENCH_PER_PARTITION
    asyncio.run(_setup_bench(broker.bootstrap))
    lines = []
    for members in (1, 3):
        ours, our_join = min(_replog_group_consume(broker.bootstrap, "bench", f"r{members}-{i}", members, total)
                             for i in range(3))
        theirs, their_join = min(_kafka_python_group_consume(broker.bootstrap, "bench", f"k{members}-{i}", members,
                                                             total) for i in range(3))
        ratio = theirs / ours
        lines.append(f"{members} member(s): replog {total / ours:,.0f} rec/s, kafka-python {total / theirs:,.0f} "
                     f"rec/s, ratio {ratio:.2f} (target >= 2); subscribe to first record {our_join:.2f} s / "
                     f"{their_join:.2f} s")
        assert ratio >= 1.0, lines[-1]
    load = os.getloadavg()[0]
    print(f"\ngroup consume, {total} records of {BENCH_RECORD_BYTES} B, {BENCH_PARTITIONS} partitions, "
          f"load {load:.1f}:\n  " + "\n  ".join(lines))


async def _setup_bench(bootstrap: str) -> None:
    async with Admin(bootstrap) as admin:
        await admin.create_topic("bench", partitions=BENCH_PARTITIONS, replication_factor=1)
    await _produce(bootstrap, "bench", BENCH_PARTITIONS, BENCH_PER_PARTITION, 0, size=BENCH_RECORD_BYTES)
