"""A cluster of combined (broker + controller) `brokerd --quorum` processes on free ports, for tests.

`Cluster(base_dir, nodes=3).start()` launches every node at once (a node is ready only once a quorum
elects a controller and registers it) and waits for each "listening on" line; `stop()` always
SIGTERMs (then SIGKILLs) every process, `kill(i)` is kill -9, `pause(i)` / `resume(i)` SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import os
import signal

from brokerproc import READY_TIMEOUT_S, BrokerProcess, free_port


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
