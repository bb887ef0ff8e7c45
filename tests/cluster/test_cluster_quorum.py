"""Three combined brokerd processes (`--quorum --voters 1@..,2@..,3@..`) on free ports: controller
election, topics created through any node and seen by all, failover of the active controller,
leader movement when a broker dies, and a paused leader that lost its lease.

Real processes; the fixture always stops them. Figures are printed (`-s`) over a few trials.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "broker"))

from clusterproc import Cluster, metadata, wait_until
from test_protocol_helpers import (
    API_CREATE_TOPICS,
    API_PRODUCE,
    PRODUCE_V,
    KafkaConnection,
    batch,
    produce,
    produce_body,
    unique_topic,
)

from client.wire.errors import ErrorCode

CREATE_TOPICS_V = 4
FAILOVER_TRIALS = 3


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(str(tmp_path), nodes=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()




def create(bootstrap: str, name: str, partitions: int = 1, rf: int = 1) -> int:
    with KafkaConnection(bootstrap, timeout_s=15) as conn:
        body = conn.request(API_CREATE_TOPICS, CREATE_TOPICS_V, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": rf, "assignments": [],
            "configs": []}], "timeout_ms": 10_000, "validate_only": False})
    return body["topics"][0]["error_code"]




def controller_of(cluster: Cluster) -> int:
    for node_id in cluster.alive():
        controller = metadata(cluster.bootstrap(node_id))["controller_id"]
        if controller in cluster.alive():
            return int(controller)
    raise AssertionError("no controller known")


def leaders(bootstrap: str, topic: str) -> list[int]:
    (t,) = metadata(bootstrap, [topic])["topics"]
    assert t["error_code"] == 0, t
    return [p["leader_id"] for p in sorted(t["partitions"], key=lambda p: p["partition_index"])]


def test_a_cluster_elects_a_controller_and_every_broker_sees_every_topic(cluster: Cluster) -> None:
    body = metadata(cluster.bootstrap(1))
    assert body["controller_id"] in (1, 2, 3)
    assert sorted(b["node_id"] for b in body["brokers"]) == [1, 2, 3]
    assert {(b["host"], b["port"]) for b in body["brokers"]} == {
        ("127.0.0.1", n.port) for n in cluster.nodes.values()}
    names = [unique_topic("k") for _ in range(6)]
    for i, name in enumerate(names):
        assert create(cluster.bootstrap(i % 3 + 1), name, partitions=3, rf=1 + i % 3) == 0
    for node_id in (1, 2, 3):
        def visible(node_id: int = node_id) -> bool:
            got = {t["name"]: t for t in metadata(cluster.bootstrap(node_id))["topics"]}
            return all(n in got and len(got[n]["partitions"]) == 3 for n in names)
        wait_until(visible, 5, f"all topics on broker {node_id}")
    # every topic takes writes on whichever broker leads it, and only there
    rf1, rf3 = names[0], names[2]
    for index, leader in enumerate(leaders(cluster.bootstrap(1), rf1)):
        with KafkaConnection(cluster.bootstrap(leader)) as conn:
            assert produce(conn, rf1, batch(2), index)["error_code"] == 0
        other = next(i for i in (1, 2, 3) if i != leader)
        with KafkaConnection(cluster.bootstrap(other)) as conn:
            assert produce(conn, rf1, batch(2), index)["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
    leader = leaders(cluster.bootstrap(1), rf3)[0]
    with KafkaConnection(cluster.bootstrap(leader)) as conn:
        assert produce(conn, rf3, batch(1), 0)["error_code"] == 0


def test_kill_the_active_controller_then_create_through_another_node(cluster: Cluster) -> None:
    figures = []
    for _ in range(FAILOVER_TRIALS):
        victim = controller_of(cluster)
        via = next(i for i in cluster.alive() if i != victim)
        cluster.kill(victim)
        start = time.monotonic()
        name = unique_topic("failover")
        while create(cluster.bootstrap(via), name) != 0:
            assert time.monotonic() - start < 10, "no topic creation within 10 s"
        figures.append(time.monotonic() - start)
        for node_id in cluster.alive():
            wait_until(lambda node_id=node_id, name=name: leaders(cluster.bootstrap(node_id), name) != [],
                       5, f"topic on broker {node_id}")
        cluster.restart(victim)
        wait_until(lambda victim=victim: len(metadata(cluster.bootstrap(victim))["brokers"]) == 3, 5,
                   "3 live brokers again")
    print(f"\ncontroller kill -> topic created via another node: "
          f"{', '.join(f'{f * 1000:.0f}' for f in figures)} ms (median {statistics.median(figures) * 1000:.0f})")
    assert max(figures) <= 5


def test_kill_a_leading_broker_moves_its_leaderships(cluster: Cluster) -> None:
    figures = []
    for _ in range(FAILOVER_TRIALS):
        controller = controller_of(cluster)
        topic = unique_topic("rf3")
        assert create(cluster.bootstrap(controller), topic, partitions=6, rf=3) == 0
        before = leaders(cluster.bootstrap(controller), topic)
        victim = next(i for i in before if i != controller)
        cluster.kill(victim)
        def moved(topic: str = topic, victim: int = victim, via: str = cluster.bootstrap(controller)) -> bool:
            now = leaders(via, topic)
            return victim not in now and -1 not in now
        took = wait_until(moved, 10, "new leaders")
        figures.append(took)
        cluster.restart(victim)
    print(f"\nkill -9 of a leading broker -> new leaders in Metadata: "
          f"{', '.join(f'{f * 1000:.0f}' for f in figures)} ms")
    assert max(figures) <= 3


def test_a_paused_leader_past_its_lease_refuses_produce_on_resume(cluster: Cluster) -> None:
    controller = controller_of(cluster)
    topic = unique_topic("lease")
    assert create(cluster.bootstrap(controller), topic, partitions=6, rf=1) == 0
    owned = leaders(cluster.bootstrap(controller), topic)
    victim = next(i for i in owned if i != controller)
    index = owned.index(victim)
    with KafkaConnection(cluster.bootstrap(victim), timeout_s=15) as conn:
        assert produce(conn, topic, batch(1), index)["error_code"] == 0
        cluster.pause(victim)
        try:
            time.sleep(2.5)  # past the lease (1 s) and the controller's session (1.5 s)
            conn.send(API_PRODUCE, PRODUCE_V, produce_body(topic, {index: batch(1)}))  # queued in the socket
        finally:
            cluster.resume(victim)
        body = conn.recv(API_PRODUCE, PRODUCE_V)
    (part,) = body["responses"][0]["partition_responses"]
    assert part["error_code"] in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), part


def test_kill_the_controller_that_also_leads_partitions(cluster: Cluster) -> None:
    """The victim is the active controller too: a new controller is elected first, then gives every
    registered broker (the dead one included) a fresh session of 1.5 s before fencing it."""
    figures = []
    for _ in range(2):
        controller = controller_of(cluster)
        via = next(i for i in cluster.alive() if i != controller)
        topic, address = unique_topic("rf3c"), cluster.bootstrap(via)
        assert create(address, topic, partitions=6, rf=3) == 0
        wait_until(lambda topic=topic, c=controller, b=address: c in leaders(b, topic), 5, "led by it")
        cluster.kill(controller)

        def moved(topic: str = topic, victim: int = controller, b: str = address) -> bool:
            now = leaders(b, topic)
            return victim not in now and -1 not in now
        figures.append(wait_until(moved, 10, "new leaders"))
        cluster.restart(controller)
    print(f"\nkill -9 of the active controller leading partitions -> new leaders: "
          f"{', '.join(f'{f * 1000:.0f}' for f in figures)} ms")
    assert max(figures) <= 5


def meta_properties(cluster: Cluster, node_id: int) -> dict[str, str]:
    with open(os.path.join(cluster.nodes[node_id].data_dir, "meta.properties"), encoding="utf-8") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


def test_every_broker_reports_the_quorums_cluster_id_and_stores_it(cluster: Cluster) -> None:
    ids = {node_id: metadata(cluster.bootstrap(node_id))["cluster_id"] for node_id in cluster.nodes}
    assert len(set(ids.values())) == 1, ids
    cluster_id = ids[1]
    assert cluster_id and len(cluster_id) == 22
    for node_id in cluster.nodes:
        props = meta_properties(cluster, node_id)
        assert props["cluster.id"] == cluster_id and props["cluster.id.confirmed"] == "true", props
        assert props["node.id"] == str(node_id)


def test_a_data_dir_of_another_cluster_is_refused(cluster: Cluster) -> None:
    cluster_id = metadata(cluster.bootstrap(1))["cluster_id"]
    node = cluster.nodes[3]
    path = os.path.join(node.data_dir, "meta.properties")
    other = "AAAAAAAAAAAAAAAAAAAAAA"
    # a provisional (never confirmed) id, as written before the quorum had cluster ids: replaced
    node.stop()
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"version=1\nnode.id=3\ncluster.id={other}\n")
    node.start()
    assert meta_properties(cluster, 3)["cluster.id"] == cluster_id
    assert metadata(node.bootstrap)["cluster_id"] == cluster_id
    # a confirmed id of another cluster: one clear error line, exit 2, nothing served
    node.stop()
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"version=1\nnode.id=3\ncluster.id={other}\ncluster.id.confirmed=true\n")
    node.launch()
    assert node.proc is not None
    assert node.proc.wait(30) == 2
    text = node.log_text()
    assert f"brokerd: error: data directory {node.data_dir} belongs to cluster {other}, not {cluster_id}" in text
    assert "Traceback" not in text
    assert meta_properties(cluster, 3)["cluster.id"] == other
