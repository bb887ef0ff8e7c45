"""Start and stop real `brokerd` processes for tests: free port on 127.0.0.1, temp data dir,
readiness by the "listening on" log line (with a deadline, no sleeps), cleanup by PID.

Used through the `broker` / `start_broker` fixtures in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

READY_TIMEOUT_S = 20.0
# REPLOG_TEST_QUORUM=0 runs every brokerd of the suite with the single-node topics.json store
# (--no-quorum), =1 with metadata from the Raft quorum (--quorum, the default)
QUORUM_ARGS = {"0": ["--no-quorum"], "1": ["--quorum"]}.get(os.environ.get("REPLOG_TEST_QUORUM", ""), [])
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BrokerProcess:
    data_dir: str
    port: int
    extra_args: list[str] = field(default_factory=list)
    node_id: int = 1
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    controller_port: int = 0
    nofile_soft_limit: int | None = None   # RLIMIT_NOFILE soft limit for brokerd only (not the test process)
    _ready_from: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> BrokerProcess:
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def launch(self) -> BrokerProcess:
        """Start the process without waiting (a cluster's nodes are ready only once a quorum runs)."""
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(os.path.dirname(self.data_dir.rstrip("/")) or ".",
                                     f"brokerd-{self.node_id}-{self.port}.log")
        if not self.controller_port:
            self.controller_port = free_port()
        cmd = [sys.executable, "-m", "broker.main", "--node-id", str(self.node_id), "--data-dir", self.data_dir,
               "--listen", f"127.0.0.1:{self.port}", "--controller-listen", f"127.0.0.1:{self.controller_port}",
               *QUORUM_ARGS, *self.extra_args]
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._ready_from = log_file.tell()
        limit = self.nofile_soft_limit

        def set_limits() -> None:  # runs in the child between fork and exec
            if limit is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=set_limits if limit is not None else None)
        log_file.close()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        start = self._ready_from
        while time.monotonic() < deadline:
            assert self.proc is not None
            with open(self.log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
            if f"listening on 127.0.0.1:{self.port}" in text:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"brokerd exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.02)  # poll interval of a condition wait with a deadline
        raise TimeoutError(f"brokerd not ready within {timeout_s}s; log:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: no flush, no clean-shutdown marker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        return self.proc.returncode

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()
