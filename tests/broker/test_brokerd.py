"""brokerd as a process: readiness line, clean shutdown, and one clear error for each bad start."""

from __future__ import annotations

import os
import subprocess
import sys

from brokerproc import BrokerProcess, free_port


def run_brokerd(*args: str, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker.main", *args], capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)


def test_starts_and_stops_cleanly(broker) -> None:
    assert f"listening on 127.0.0.1:{broker.port}" in broker.log_text()
    assert broker.stop() == 0
    assert "stopped cleanly" in broker.log_text()
    assert os.path.exists(os.path.join(broker.data_dir, ".clean-shutdown"))


def test_a_locked_data_dir_is_refused(broker) -> None:
    result = run_brokerd("--data-dir", broker.data_dir, "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "locked by another process" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_refused(broker, tmp_path) -> None:
    result = run_brokerd("--data-dir", str(tmp_path / "other"), "--listen", f"127.0.0.1:{broker.port}")
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_another_nodes_data_dir_is_refused(tmp_path) -> None:
    first = BrokerProcess(str(tmp_path / "d"), free_port(), node_id=1).start()
    first.stop()
    result = run_brokerd("--node-id", "2", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "belongs to node 1" in result.stderr


def test_bad_configuration_is_one_clear_line(tmp_path) -> None:
    for args, needle in ((["--set", "no.such.key=1"], "unknown config"),
                         (["--set", "log.segment.bytes=abc"], "invalid value"),
                         (["--listen", "nonsense"], "HOST:PORT"),
                         (["--config", str(tmp_path / "missing.toml")], "cannot read config file")):
        result = run_brokerd("--data-dir", str(tmp_path / "x"), *args)
        assert result.returncode != 0, args
        assert needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
