"""`brokerctl cluster up / describe --dir / down`: a local 3-node quorum cluster driven by brokerctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

BROKERCTL = [sys.executable, "-m", "tools.brokerctl"]


def brokerctl(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BROKERCTL, *args], capture_output=True, text=True, timeout=timeout_s, check=False)


def test_cluster_up_describe_down(tmp_path) -> None:
    directory = str(tmp_path / "c")
    up = brokerctl("cluster", "up", "--nodes", "3", "--dir", directory)
    try:
        assert up.returncode == 0, up.stderr
        with open(os.path.join(directory, "cluster.json"), encoding="utf-8") as f:
            nodes = json.load(f)["nodes"]
        described = brokerctl("cluster", "describe", "--dir", directory, "--json")
        assert described.returncode == 0, described.stderr
        doc = json.loads(described.stdout)
        assert set(doc) == {"cluster_id", "controller", "brokers"}
        assert doc["controller"]["leader"] in (1, 2, 3) and doc["controller"]["epoch"] >= 1
        assert [v["id"] for v in doc["controller"]["voters"]] == [1, 2, 3]
        assert all(v["lag"] is not None and v["lag"] >= 0 for v in doc["controller"]["voters"])
        assert [(b["id"], b["host"], b["port"], b["fenced"]) for b in doc["brokers"]] == [
            (n["id"], "127.0.0.1", int(n["listen"].rsplit(":", 1)[1]), False) for n in nodes]
        assert all(b["leaders"] == 0 for b in doc["brokers"])
    finally:
        down = brokerctl("cluster", "down", "--dir", directory)
    assert down.returncode == 0, down.stderr
    assert not os.path.exists(os.path.join(directory, "cluster.json"))
    for n in nodes:
        assert not _is_brokerd(int(n["pid"]))


def _is_brokerd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"broker.main" in f.read()
    except OSError:
        return False
