"""Consumer-group consistency (issue 6 acceptance, RELIABILITY.md style) on a real 3-node cluster.

"With commits after processing, across member crashes and a coordinator failover, every
acknowledged record is processed at least once and none is skipped."

Set-up: three combined `brokerd --quorum` processes (tests/clusterproc.py), a 5-partition RF-3 topic
with min.insync.replicas=2, an idempotent acks=all producer (tools.chaos.workload.ProducerWorker,
unique values, the history records which sends were acknowledged at which (partition, offset)),
and group members as *subprocesses* (`python3 -m tools.chaos.groups member`: poll, append the
batch to the member's own file, flush, then commit()).

Faults while the producer writes and the group consumes, in this order: SIGKILL of a member (a
replacement starts at once), kill -9 of the group's coordinator (found with FindCoordinator; the
broker is restarted once the group commits again), a member leaving cleanly (SIGTERM: LeaveGroup).
`REPLOG_GROUP_CHAOS_S=N` (seconds) then keeps injecting seeded random faults of the three kinds
for N seconds (`REPLOG_GROUP_CHAOS_SEED` to replay). Then the producer stops, the group drains
until its committed offsets reach every partition's end, and `tools.chaos.groups.check_group`
checks the member logs against the history: nothing acknowledged unprocessed, no offset skipped
(by the group, or within one member's assignment, or at the start of an assignment), duplicates
counted and printed, with rebalances and the time from each fault to the group committing again.

Every wait polls a condition with a deadline; every process started here is stopped by PID.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "broker"))

from clusterproc import Cluster
from groups_helpers import find_coordinator
from test_protocol_helpers import KafkaConnection, unique_topic

from client import Admin
from tools.chaos.groups import (
    MemberProcess,
    check_group,
    committed_partitions_after,
    first_event_after,
    read_member_log,
)
from tools.chaos.history import History
from tools.chaos.workload import ProducerWorker

PARTITIONS = 5
MEMBERS = 3
SESSION_MS = 6_000  # the broker's group.min.session.timeout.ms
HEARTBEAT_MS = 500
PRODUCE_RATE = 400  # records/s
PROCESS_MS = 20  # a member's processing time per batch, between writing it and committing
KILL_WINDOW_DEADLINE_S = 5.0
ACKED_MIN = 1_000
RECOVER_DEADLINE_S = 30.0
DRAIN_DEADLINE_S = 60.0
POLL_S = 0.05
CHAOS_S = float(os.environ.get("REPLOG_GROUP_CHAOS_S", "0"))
SEED = int(os.environ.get("REPLOG_GROUP_CHAOS_SEED", str(random.randrange(1 << 30))))


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `condition` until true; returns the seconds waited."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(POLL_S)  # polling a condition with a deadline
    return time.monotonic() - start


class ProducerThread:
    """ProducerWorker (acks=all, idempotent) on its own event loop in a thread."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.history = History()
        self.worker = ProducerWorker("p0", bootstrap, topic, PARTITIONS, self.history, rate=PRODUCE_RATE)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        assert self._started.wait(30)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self.worker.run(self._stop)
        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._started.set()

    def acknowledged(self) -> int:
        return sum(1 for op in list(self.history.ops) if op.outcome == "ok")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the producer did not stop"
        assert self.error is None, self.error


class Group:
    """The member subprocesses of one group and their logs."""

    def __init__(self, base: str, bootstrap: str, group: str, topic: str) -> None:
        self.base, self.bootstrap, self.group, self.topic = base, bootstrap, group, topic
        self.members: dict[str, MemberProcess] = {}
        self.count = 0

    def start_member(self) -> MemberProcess:
        name = f"m{self.count}"
        self.count += 1
        member = MemberProcess(self.bootstrap, self.group, self.topic, os.path.join(self.base, f"{name}.jsonl"), name,
                               session_ms=SESSION_MS, heartbeat_ms=HEARTBEAT_MS, max_poll_interval_ms=10_000,
                               process_ms=PROCESS_MS)
        self.members[name] = member
        return member

    def live(self) -> list[MemberProcess]:
        return [m for m in self.members.values() if m.alive()]

    def logs(self) -> dict[str, list[dict]]:
        return {name: read_member_log(m.logfile) for name, m in self.members.items() if os.path.exists(m.logfile)}

    def assignments(self) -> dict[str, list[int]]:
        """The latest assignment each live member logged (revoked / lost: none)."""
        out = {}
        logs = self.logs()
        for member in self.live():
            parts: list[int] = []
            for e in logs.get(member.name, []):
                if e["k"] == "assigned":
                    parts = e["parts"]
                elif e["k"] in ("revoked", "lost"):
                    parts = []
            out[member.name] = parts
        return out

    def progressing_since(self, t: float) -> bool:
        """Every partition has a commit acknowledged after `t` (time.time())."""
        return committed_partitions_after(self.logs(), t) == set(range(PARTITIONS))

    def stop(self) -> None:
        for member in self.members.values():
            if member.alive():
                member.leave()
            else:
                member.wait()


def _coordinator(cluster: Cluster, group: str, not_node: int | None = None) -> int:
    deadline = time.monotonic() + RECOVER_DEADLINE_S
    while True:
        for node_id in cluster.alive():
            try:
                with KafkaConnection(cluster.bootstrap(node_id), timeout_s=5) as conn:
                    body = find_coordinator(conn, group)
            except (OSError, AssertionError):
                continue
            if body["error_code"] == 0 and body["node_id"] != not_node and body["node_id"] in cluster.alive():
                return int(body["node_id"])
        assert time.monotonic() < deadline, f"no coordinator other than {not_node} for {group}"
        time.sleep(POLL_S)


async def _admin(bootstrap: str, call: Callable[[Admin], object]) -> object:
    async with Admin(bootstrap, request_timeout_ms=5_000, default_api_timeout_ms=20_000) as admin:
        return await call(admin)  # type: ignore[misc]


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(str(tmp_path), nodes=3, extra_args=["--set", "group.initial.rebalance.delay.ms=0"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_group_processes_every_acknowledged_record_across_crashes_and_coordinator_failover(
        cluster: Cluster, tmp_path) -> None:
    t_begin = time.monotonic()
    rng = random.Random(SEED)
    topic, group_id = unique_topic("gc"), unique_topic("gcg")
    bootstrap = ",".join(cluster.bootstrap(i) for i in cluster.nodes)
    asyncio.run(_admin(bootstrap, lambda a: a.create_topic(topic, partitions=PARTITIONS, replication_factor=3,
                                                           configs={"min.insync.replicas": "2"})))
    group = Group(str(tmp_path), bootstrap, group_id, topic)
    producer: ProducerThread | None = None
    faults: list[str] = []
    killed_in_window: list[bool] = []
    try:
        producer = ProducerThread(bootstrap, topic)
        for _ in range(MEMBERS):
            group.start_member()
        t0 = time.time()
        joined_s = _wait(lambda: len([p for p in group.assignments().values() if p]) == MEMBERS
                         and group.progressing_since(t0), RECOVER_DEADLINE_S, "three members consuming")
        faults.append(f"start: {MEMBERS} members consuming after {joined_s:.2f} s")

        def kill_member() -> None:
            victim = rng.choice(group.live())
            # SIGKILL between processing and commit (the batch is in its log, not committed): its
            # records must be processed again by the member that takes the partitions over
            deadline = time.monotonic() + KILL_WINDOW_DEADLINE_S
            while victim.last_event() != "batch" and time.monotonic() < deadline:
                time.sleep(0.002)  # polling the victim's log for the window, with a deadline
            in_window = victim.last_event() == "batch"
            t = time.time()
            victim.kill()
            killed_in_window.append(in_window)
            group.start_member()
            waited = _wait(lambda: group.progressing_since(t), RECOVER_DEADLINE_S,
                           f"the group committing on every partition after SIGKILL of {victim.name}")
            faults.append(f"SIGKILL {victim.name} ({'processed, not committed' if in_window else 'idle'}; "
                          f"replacement started): every partition committed again "
                          f"after {waited:.2f} s")

        def kill_coordinator() -> None:
            node = _coordinator(cluster, group_id)
            t = time.time()
            cluster.kill(node)
            waited = _wait(lambda: group.progressing_since(t), RECOVER_DEADLINE_S,
                           f"the group committing on every partition after kill -9 of coordinator {node}")
            first = first_event_after(group.logs(), "commit", t)
            new = _coordinator(cluster, group_id, not_node=node)
            faults.append(f"kill -9 coordinator {node} -> {new}: first commit after {first - t:.2f} s, "
                          f"every partition committed after {waited:.2f} s")
            cluster.nodes[node].start()  # same data dir and ports

        def leave() -> None:
            leaver = rng.choice(group.live())
            rc = leaver.leave()
            assert rc == 0, f"{leaver.name} exited with {rc}"
            t = time.time()  # after the LeaveGroup: the others take its partitions over
            if len(group.live()) < 2:
                group.start_member()
            waited = _wait(lambda: group.progressing_since(t), RECOVER_DEADLINE_S,
                           f"the group committing on every partition after {leaver.name} left")
            faults.append(f"{leaver.name} left cleanly: every partition committed again after {waited:.2f} s")

        kill_member()
        kill_coordinator()
        leave()
        chaos_end = time.monotonic() + CHAOS_S
        while time.monotonic() < chaos_end:
            rng.choice([kill_member, kill_coordinator, leave])()
            if len(group.live()) < MEMBERS:
                group.start_member()
        _wait(lambda: producer.acknowledged() >= ACKED_MIN, RECOVER_DEADLINE_S, f"{ACKED_MIN} acknowledged sends")
        producer.stop()

        # drain: the group's committed offsets reach every partition's end
        async def ends() -> dict[int, int]:
            described = await _admin(bootstrap, lambda a: a.describe_topics([topic]))
            return {p.partition: p.high_watermark for p in described[topic].partitions}  # type: ignore[index]
        final_ends = asyncio.run(ends())
        assert all(v is not None for v in final_ends.values()), final_ends
        drained_at = time.monotonic()
        last: dict = {}

        def drained() -> bool:
            nonlocal last
            last = asyncio.run(_admin(bootstrap, lambda a: a.list_consumer_group_offsets(group_id)))  # type: ignore
            return all(last.get((topic, p)) == end for p, end in final_ends.items())
        _wait(drained, DRAIN_DEADLINE_S, "the group's commits reaching the end of every partition")
        drain_s = time.monotonic() - drained_at
        group.stop()

        result = check_group(producer.history, group.logs(), final_ends)
        tracebacks = {i: n.log_text().count("Traceback") for i, n in cluster.nodes.items()}
        print(f"\ngroup consistency, seed {SEED}, {time.monotonic() - t_begin:.1f} s, {PARTITIONS} partitions RF 3, "
              f"members started {group.count}:")
        for line in faults:
            print("  fault: " + line)
        print(f"  drain {drain_s:.2f} s; committed {last}")
        print("  " + result.summary().replace("\n", "\n  "))
        print(f"  broker tracebacks: {tracebacks}")
        assert result.figures["acknowledged"] >= ACKED_MIN
        if any(killed_in_window):  # the crash path was exercised: the uncommitted batch came back
            assert result.figures["duplicates"] > 0, "a batch processed but not committed was not processed again"
        assert result.ok, result.summary()
        for node_id, node in cluster.nodes.items():
            text = node.log_text()
            assert "AssertionError" not in text, f"node {node_id}: {text[-4000:]}"
    finally:
        if producer is not None:
            with_error = None
            try:
                producer.stop()
            except AssertionError as exc:
                with_error = exc
            if with_error is not None and sys.exc_info()[0] is None:
                raise with_error
        group.stop()


# ------------------------------------------------------------------------------ the checker's own tests
# hand-made member logs with each anomaly: check_group must flag every one (a checker that never
# caught a bug proves nothing)

def _history(records: dict[int, int]) -> History:
    """records {partition: count}: acknowledged sends p0-<seq> at offsets 0..count-1."""
    h = History()
    seq = 0
    for p, count in records.items():
        for o in range(count):
            op = h.invoke("p0", seq, p, 0.0)
            h.complete(op, "ok", 0.0, offset=o)
            seq += 1
    return h


def _batch(t: float, recs: list[tuple[int, int]], h: History) -> dict:
    value = {(op.partition, op.offset): op.value for op in h.ops}
    return {"k": "batch", "t": t, "recs": [[p, o, value.get((p, o), "x")] for p, o in recs]}


def test_checker_accepts_a_clean_handover_with_duplicates() -> None:
    h = _history({0: 6})
    logs = {"a": [{"k": "assigned", "t": 1, "parts": [0]}, _batch(2, [(0, 0), (0, 1), (0, 2)], h),
                  {"k": "commit", "t": 3, "offsets": {"0": 2}}],  # crashed before committing 2
            "b": [{"k": "assigned", "t": 4, "parts": [0]}, _batch(5, [(0, 2), (0, 3), (0, 4), (0, 5)], h)]}
    result = check_group(h, logs, {0: 6})
    assert result.ok, result.summary()
    assert result.figures["duplicates"] == 1 and result.figures["assignments_received"] == 2


@pytest.mark.parametrize("kind", ["lost", "uncovered", "skip_in_run", "rewind_in_run", "gap_after_rebalance",
                                  "wrong_value"])
def test_checker_flags(kind: str) -> None:
    h = _history({0: 6})
    a = [{"k": "assigned", "t": 1, "parts": [0]}, _batch(2, [(0, 0), (0, 1), (0, 2)], h)]
    b = [{"k": "assigned", "t": 4, "parts": [0]}, _batch(5, [(0, 3), (0, 4), (0, 5)], h)]
    if kind in ("lost", "uncovered", "gap_after_rebalance"):  # b starts after an offset nobody processed
        a[1] = _batch(2, [(0, 0), (0, 1)], h)
    elif kind == "skip_in_run":
        a[1] = _batch(2, [(0, 0), (0, 2)], h)
        a.append(_batch(3, [(0, 1)], h))  # processed elsewhere in time, but the run jumped
    elif kind == "rewind_in_run":
        b.append(_batch(6, [(0, 4)], h))
    elif kind == "wrong_value":
        b[1]["recs"][0][2] = "other"
    result = check_group(h, {"a": a, "b": b}, {0: 6})
    assert result.counts().get(kind), result.summary()
