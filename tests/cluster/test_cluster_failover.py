"""Failover measurements on three combined brokerd processes (`--quorum --voters 1@..,2@..,3@..`) and a
broker-only observer, on 127.0.0.1 with free ports (issue 4's acceptance):

(a) kill -9 of the active controller: seconds until a new active controller serves a topic creation
    (through another node); then every topic is on every broker, every voter is at the same log end
    offset with lag 0 (DescribeQuorum), the killed node restarts and catches up; at the end the
    voters' Raft logs, read offline from the stopped nodes' data dirs, are identical below the
    commit index;
(b) kill -9 of a broker that leads partitions and is not the active controller: seconds until
    Metadata shows new leaders for all of its partitions;
(c) the same when the victim is the active controller (combined mode);
(d) a broker-only node (`--roles broker`, an observer of the metadata log) joins and serves Metadata
    and DescribeQuorum.

Trials: DEFAULT_TRIALS in the default run, asserted with loose CI bounds; `REPLOG_TRIALS=N` or
`-m slow` runs SLOW_TRIALS (>= 10) for the figures (print with -s), e.g.

    REPLOG_TRIALS=10 python3 -m pytest -q -s tests/cluster/test_cluster_failover.py

One cluster serves the whole module (its start costs more than a trial); (a) runs last because it
stops the cluster to read the logs. Every process is stopped by the fixture (by PID); every wait
polls a condition with a deadline.
"""

from __future__ import annotations

import glob
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "broker"))

from brokerproc import BrokerProcess, free_port
from clusterproc import Cluster, metadata, wait_until
from test_protocol_helpers import API_CREATE_TOPICS, KafkaConnection, unique_topic

from broker.cluster import METADATA_DIR
from controller.raft import EntryType
from controller.raft_log import METADATA_LOG_DIR, decode_entries

CREATE_TOPICS_V = 4
DESCRIBE_QUORUM = 55
DESCRIBE_QUORUM_V = 2
DEFAULT_TRIALS = 3
SLOW_TRIALS = 10
CI_BOUND_S = 5.0            # loose bound asserted on every trial (targets: docs/controller.md)
TOPICS_K = 5


# --- helpers (also used by test_cluster_placement.py) ----------------------------------------------

def trials(request: pytest.FixtureRequest, default: int = DEFAULT_TRIALS) -> int:
    raw = os.environ.get("REPLOG_TRIALS")
    if raw:
        return int(raw)
    return SLOW_TRIALS if "slow" in (request.config.getoption("markexpr") or "") else default






def create(bootstrap: str, name: str, partitions: int = 1, rf: int = 1) -> int:
    with KafkaConnection(bootstrap, timeout_s=15) as conn:
        body = conn.request(API_CREATE_TOPICS, CREATE_TOPICS_V, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": rf, "assignments": [],
            "configs": []}], "timeout_ms": 10_000, "validate_only": False})
    return int(body["topics"][0]["error_code"])


def describe_quorum(bootstrap: str) -> dict[str, Any]:
    """DescribeQuorum v2 of __cluster_metadata-0 through one broker's Kafka listener: the partition."""
    with KafkaConnection(bootstrap, timeout_s=10) as conn:
        body = conn.request(DESCRIBE_QUORUM, DESCRIBE_QUORUM_V, {"topics": [{
            "topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]})
    assert body["error_code"] == 0, body
    (part,) = body["topics"][0]["partitions"]
    return dict(part)


def controller_of(cluster: Cluster) -> int:
    for node_id in cluster.alive():
        controller = metadata(cluster.bootstrap(node_id))["controller_id"]
        if controller in cluster.alive():
            return int(controller)
    raise AssertionError("no controller known")


def all_partitions(bootstrap: str) -> list[dict[str, Any]]:
    """Every partition of every topic as one broker sees it: {topic, index, leader, replicas, isr}."""
    out = []
    for t in metadata(bootstrap)["topics"]:
        for p in t["partitions"]:
            out.append({"topic": t["name"], "index": p["partition_index"], "leader": p["leader_id"],
                        "replicas": list(p["replica_nodes"]), "isr": list(p["isr_nodes"])})
    return out


def leaders_of(bootstrap: str, topic: str) -> list[int]:
    (t,) = metadata(bootstrap, [topic])["topics"]
    assert t["error_code"] == 0, t
    return [p["leader_id"] for p in sorted(t["partitions"], key=lambda p: p["partition_index"])]


def report(what: str, figures: list[float]) -> str:
    return (f"{what}, {len(figures)} trials: median {statistics.median(figures) * 1000:.0f} ms, "
            f"max {max(figures) * 1000:.0f} ms ({', '.join(f'{f * 1000:.0f}' for f in figures)})")


def raft_entries(data_dir: str) -> dict[int, tuple[int, EntryType, bytes]]:
    """The Raft log of a stopped node, read offline: index -> (term, type, data). Whole record
    batches only (a torn tail of a killed node is what recovery would cut)."""
    directory = os.path.join(data_dir, METADATA_DIR, METADATA_LOG_DIR)
    out: dict[int, tuple[int, EntryType, bytes]] = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.log"))):
        with open(path, "rb") as f:
            data = f.read()
        end = 0
        while end + 12 <= len(data):
            length = int.from_bytes(data[end + 8:end + 12], "big", signed=True)
            if length <= 0 or end + 12 + length > len(data):
                break
            end += 12 + length
        for entry in decode_entries(data[:end]):
            out[entry.index] = (entry.term, entry.type, entry.data)
    return out


# --- the cluster ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(str(tmp_path_factory.mktemp("failover")), nodes=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def restart_and_rejoin(cluster: Cluster, node_id: int) -> None:
    """Restart a killed node on its data dir; wait until Metadata lists all 3 brokers on it."""
    cluster.restart(node_id)
    wait_until(lambda: len(metadata(cluster.bootstrap(node_id))["brokers"]) >= 3, 15, f"node {node_id} rejoined")


def kill_leader_trial(cluster: Cluster, victim_is_controller: bool) -> float:
    controller = controller_of(cluster)
    via_id = next(i for i in cluster.alive() if i != controller)
    via = cluster.bootstrap(via_id)
    topic = unique_topic("rf3")
    assert create(via, topic, partitions=6, rf=3) == 0
    if victim_is_controller:
        victim = controller
    else:
        wait_until(lambda: any(x not in (-1, controller) for x in leaders_of(via, topic)), 10, "a leader")
        victim = next(x for x in leaders_of(via, topic) if x not in (-1, controller))
    wait_until(lambda: victim in leaders_of(via, topic), 10, f"broker {victim} leads a partition")
    observer = via if victim_is_controller or via_id != victim else cluster.bootstrap(controller)
    cluster.kill(victim)
    start = time.monotonic()

    def moved() -> bool:
        now = leaders_of(observer, topic)
        return victim not in now and -1 not in now
    wait_until(moved, 15, "new leaders in Metadata")
    took = time.monotonic() - start
    restart_and_rejoin(cluster, victim)
    return took


# --- (b), (c): kill -9 of a partition leader ----------------------------------------------------------

def test_kill_a_leader_that_is_not_the_controller(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    figures = [kill_leader_trial(cluster, victim_is_controller=False) for _ in range(trials(request))]
    print("\n" + report("kill -9 of a leading broker (not the controller) -> new leaders in Metadata", figures))
    assert max(figures) <= CI_BOUND_S, figures


def test_kill_a_leader_that_is_the_active_controller(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    figures = [kill_leader_trial(cluster, victim_is_controller=True) for _ in range(trials(request))]
    print("\n" + report("kill -9 of the active controller leading partitions -> new leaders in Metadata", figures))
    assert max(figures) <= CI_BOUND_S, figures


# --- (d): a broker-only node ------------------------------------------------------------------------

def test_a_broker_only_node_joins_as_an_observer_and_serves_metadata(cluster: Cluster, tmp_path: Any) -> None:
    topic = unique_topic("observed")
    assert create(cluster.bootstrap(controller_of(cluster)), topic, partitions=3, rf=3) == 0
    node = BrokerProcess(str(tmp_path / "node-4" / "data"), free_port(),
                         ["--quorum", "--voters", cluster.voters, "--roles", "broker"], node_id=4)
    try:
        node.start()
        body = metadata(node.bootstrap)
        assert sorted(b["node_id"] for b in body["brokers"]) == [1, 2, 3, 4]
        assert body["controller_id"] in (1, 2, 3)
        assert topic in {t["name"] for t in body["topics"]}
        # the same image as the voters' (leaders may still move: preferred-leader elections after earlier trials)
        wait_until(lambda: leaders_of(node.bootstrap, topic) == leaders_of(cluster.bootstrap(1), topic), 10,
                   "the observer's image agrees with a voter's")
        # a new topic with replicas on the observer broker: placed there, visible through it
        wide = unique_topic("wide")
        assert create(node.bootstrap, wide, partitions=8, rf=1) == 0
        assert 4 in leaders_of(node.bootstrap, wide)
        part = describe_quorum(node.bootstrap)
        assert sorted(v["replica_id"] for v in part["current_voters"]) == [1, 2, 3]
        wait_until(lambda: 4 in [o["replica_id"] for o in describe_quorum(node.bootstrap)["observers"]], 5,
                   "node 4 among the observers")
        assert part["leader_id"] == metadata(node.bootstrap)["controller_id"]
    finally:
        node.stop()


# --- (a): kill -9 of the active controller, then consistency ------------------------------------------

def voters_caught_up(bootstrap: str) -> dict[str, Any] | None:
    part = describe_quorum(bootstrap)
    voters = part["current_voters"]
    ends = {v["log_end_offset"] for v in voters}
    return part if len(voters) == 3 and ends == {part["high_watermark"]} else None


def test_kill_the_active_controller_a_new_one_serves_writes(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    names = [unique_topic("k") for _ in range(TOPICS_K)]
    for name in names:
        assert create(cluster.bootstrap(1), name, partitions=2, rf=1) == 0
    figures = []
    for _ in range(trials(request)):
        victim = controller_of(cluster)
        via = next(i for i in cluster.alive() if i != victim)
        cluster.kill(victim)
        start = time.monotonic()
        name = unique_topic("after-kill")
        while create(cluster.bootstrap(via), name) != 0:
            assert time.monotonic() - start < 15, "no topic creation within 15 s"
        figures.append(time.monotonic() - start)
        names.append(name)
        restart_and_rejoin(cluster, victim)
        for node_id in cluster.nodes:
            wait_until(lambda node_id=node_id: set(names) <= {t["name"] for t in metadata(
                cluster.bootstrap(node_id))["topics"]}, 10, f"all topics on broker {node_id}")
        wait_until(lambda victim=victim: voters_caught_up(cluster.bootstrap(victim)), 10, f"node {victim} caught up")
    print("\n" + report("kill -9 of the active controller -> topic created by the new one", figures))
    assert max(figures) <= CI_BOUND_S, figures

    # the same log end offset on every voter, all of it committed; every topic on every broker
    part = None

    def consistent() -> bool:
        nonlocal part
        part = voters_caught_up(cluster.bootstrap(1))
        return part is not None and all(set(names) <= {t["name"] for t in metadata(cluster.bootstrap(i))["topics"]}
                                        for i in cluster.nodes)
    wait_until(consistent, 10, "voters at one log end offset with every topic")
    assert part is not None
    commit = part["high_watermark"]
    # the voters' Raft logs, read offline once every node stopped: identical below the commit index
    cluster.stop()
    logs = {i: raft_entries(n.data_dir) for i, n in cluster.nodes.items()}
    for i, log in logs.items():
        assert all(index in log for index in range(1, commit + 1)), f"node {i} misses committed entries"
    first = logs[1]
    for i, log in logs.items():
        diverging = [index for index in range(1, commit + 1) if log[index] != first[index]]
        assert not diverging, f"node {i} differs from node 1 at {diverging[:5]} (commit {commit})"
    print(f"voters' logs identical up to the commit index {commit} "
          f"({sum(1 for e in first.values() if e[1] is EntryType.NORMAL)} normal entries)")
