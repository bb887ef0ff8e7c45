"""brokerd processes for the harness: a cluster of combined (broker + controller) nodes on free
127.0.0.1 ports under one base directory, started as `python3 -m broker.main --quorum ...`.

Contract:
- Each `Node` owns one process; it is signalled only by its PID (`kill` = SIGKILL, `pause` =
  SIGSTOP, `resume` = SIGCONT, `stop` = SIGCONT + SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`).
  `Cluster.stop()` always leaves no process of ours running.
- Readiness: the node's log shows `listening on 127.0.0.1:PORT` after the launch (polled with a
  deadline). A restart reuses the data dir, ports and command line.
- `voters_for(node_id)` is the `--voters` string a node is started with: by default the real
  controller addresses; with `proxied=True` every link i -> j (i != j) goes through its own
  `proxy.LinkProxy` (the caller starts the proxies and passes the addresses in `links`); a node
  with `advertised_port` advertises that proxy (in front of its client listener) to clients and
  followers.
- `env` is added to every broker's environment (the `--bug` hooks: REPLOG_BUG=...).
- `dump_replicas()` (after stop) runs `python3 -m tools.brokerctl log dump DIR --json --records` on
  every partition directory of the topic on every node, and reads `replication-offset-checkpoint`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tools.chaos.logs import ReplicaLog, parse_dump, read_hw_checkpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
READY_POLL_S = 0.02
DUMP_TIMEOUT_S = 120.0
HW_CHECKPOINT = "replication-offset-checkpoint"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    node_id: int
    base_dir: str
    port: int
    controller_port: int
    voters: str = ""
    advertised_port: int = 0  # a proxy in front of the client listener (clients and followers), 0: none
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _ready_from: int = 0

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base_dir, f"node-{self.node_id}", "data")

    @property
    def log_path(self) -> str:
        return os.path.join(self.base_dir, f"node-{self.node_id}", "brokerd.log")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        assert not self.alive(), f"node {self.node_id} is already running"
        os.makedirs(self.data_dir, exist_ok=True)
        cmd = [sys.executable, "-m", "broker.main", "--quorum", "--node-id", str(self.node_id),
               "--data-dir", self.data_dir, "--listen", self.bootstrap,
               "--controller-listen", f"127.0.0.1:{self.controller_port}", "--voters", self.voters]
        if self.advertised_port:
            cmd += ["--advertised", f"127.0.0.1:{self.advertised_port}"]
        cmd += self.extra_args
        with open(self.log_path, "ab") as log_file:
            self._ready_from = log_file.tell()
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO_ROOT, env={**os.environ, **self.env})
        self.starts += 1

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds until `listening on` appears in this start's part of the log."""
        started = time.monotonic()
        deadline = started + timeout_s
        needle = f"listening on {self.bootstrap}"
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(self._ready_from)
                text = f.read().decode(errors="replace")
            if needle in text:
                return time.monotonic() - started
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited while starting:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.node_id} not ready within {timeout_s} s:\n{text[-3000:]}")
            time.sleep(READY_POLL_S)  # poll interval of a wait with a deadline

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)

    def pause(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> int | None:
        """SIGCONT + SIGTERM, wait, SIGKILL if it lingers. The exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class Cluster:
    """`nodes` combined nodes; `links[(i, j)]` = the port node i uses to reach node j's controller."""

    def __init__(self, base_dir: str, nodes: int = 3, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.base_dir = base_dir
        ids = list(range(1, nodes + 1))
        self.nodes: dict[int, Node] = {
            i: Node(i, base_dir, free_port(), free_port(), extra_args=list(extra_args or []), env=dict(env or {}))
            for i in ids}
        self.links: dict[tuple[int, int], int] = {}

    def voters_for(self, node_id: int) -> str:
        parts = []
        for j, node in sorted(self.nodes.items()):
            port = node.controller_port if j == node_id else self.links.get((node_id, j), node.controller_port)
            parts.append(f"{j}@127.0.0.1:{port}")
        return ",".join(parts)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        started = time.monotonic()
        for node in self.nodes.values():
            node.voters = self.voters_for(node.node_id)
            node.launch()
        for node in self.nodes.values():
            node.wait_ready(timeout_s)
        return time.monotonic() - started

    def alive(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.alive()]

    def stop(self) -> dict[int, int | None]:
        for node in self.nodes.values():
            node.resume()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            codes = list(pool.map(lambda n: n.stop(), self.nodes.values()))
        return dict(zip(self.nodes, codes, strict=True))

    def server_logs(self) -> dict[str, str]:
        return {f"node-{i}/brokerd.log": n.log_text() for i, n in self.nodes.items()}

    def dump_replicas(self, topic: str, partitions: int) -> list[ReplicaLog]:
        """Every replica of `topic` on every node's data dir (the cluster must be stopped)."""
        jobs = []
        for node in self.nodes.values():
            hws: dict[tuple[str, int], int] = {}
            try:
                with open(os.path.join(node.data_dir, HW_CHECKPOINT), encoding="ascii") as f:
                    hws = read_hw_checkpoint(f.read())
            except OSError:
                pass
            for p in range(partitions):
                path = os.path.join(node.data_dir, f"{topic}-{p}")
                if os.path.isdir(path):
                    jobs.append((node.node_id, p, path, hws.get((topic, p))))
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda job: _dump_one(*job), jobs))


def _dump_one(node_id: int, partition: int, path: str, high_watermark: int | None) -> ReplicaLog:
    result = subprocess.run([sys.executable, "-m", "tools.brokerctl", "log", "dump", path, "--json", "--records"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S)
    if result.returncode == 2:
        raise RuntimeError(f"log dump {path} failed: {result.stderr.strip()}")
    replica = parse_dump(result.stdout.splitlines(), node_id, partition, result.returncode)
    replica.high_watermark = high_watermark
    return replica
