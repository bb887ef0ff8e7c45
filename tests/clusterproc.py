"""A cluster of combined (broker + controller) `brokerd --quorum` processes on free ports, for tests.

`Cluster(base_dir, nodes=3).start()` launches every node at once (a node is ready only once a quorum
elects a controller and registers it) and waits for each "listening on" line; `stop()` always
SIGTERMs (then SIGKILLs) every process, `kill(i)` is kill -9, `pause(i)` / `resume(i)` SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from brokerproc import READY_TIMEOUT_S, BrokerProcess, free_port

CONDITION_POLL_S = 0.02   # poll interval of every condition wait below (each has a deadline)
METADATA_V = 8


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> float:
    """Seconds until predicate() holds (OSError, a node going away, counts as not yet); AssertionError
    at the deadline."""
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(CONDITION_POLL_S)


def metadata(bootstrap: str, topics: list[str] | None = None) -> dict[str, Any]:
    """A Metadata (v8) answer from one node; `topics` None asks for all."""
    from test_protocol_helpers import API_METADATA, KafkaConnection  # tests/broker, on the callers' path

    with KafkaConnection(bootstrap, timeout_s=10) as conn:
        return conn.request(API_METADATA, METADATA_V, {
            "topics": None if topics is None else [{"name": t} for t in topics],
            "allow_auto_topic_creation": False, "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False})


class Cluster:
    def __init__(self, base_dir: str, nodes: int = 3, extra_args: list[str] | None = None) -> None:
        ids = list(range(1, nodes + 1))
        controller_ports = {i: free_port() for i in ids}
        self.voters = ",".join(f"{i}@127.0.0.1:{controller_ports[i]}" for i in ids)
        self.nodes: dict[int, BrokerProcess] = {
            i: BrokerProcess(os.path.join(base_dir, f"node-{i}", "data"), free_port(),
                             ["--quorum", "--voters", self.voters, *(extra_args or [])], node_id=i,
                             controller_port=controller_ports[i])
            for i in ids}

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> Cluster:
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_ready(timeout_s)
        return self

    def bootstrap(self, node_id: int) -> str:
        return self.nodes[node_id].bootstrap

    def alive(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.proc is not None and n.proc.poll() is None]

    def kill(self, node_id: int) -> None:
        self.nodes[node_id].kill()

    def restart(self, node_id: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.nodes[node_id].stop()
        self.nodes[node_id].start(timeout_s)

    def pause(self, node_id: int) -> None:
        proc = self.nodes[node_id].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        proc = self.nodes[node_id].proc
        assert proc is not None
        proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        for node in self.nodes.values():
            node.stop()
