"""The error contract of brokerctl's online commands (tools/brokerctl_common.py): whatever fails is one
stderr line and a non-zero exit code, never a traceback -- an unreachable broker (refused, or
accepting and never answering), a bad bootstrap address, a bug -- through CliRunner and through
real `python -m tools.brokerctl` processes."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokerproc import free_port
from click.testing import CliRunner, Result

import tools.brokerctl_common as brokerctl_common
from client import Admin
from tools.brokerctl import main

REPO_ROOT = Path(__file__).resolve().parents[2]

ONLINE_COMMANDS = [
    ["topics", "create", "t", "--partitions", "1"],
    ["topics", "list"],
    ["topics", "describe", "t", "--json"],
    ["topics", "alter", "t", "--config", "retention.ms=1"],
    ["topics", "delete", "t"],
    ["produce", "t"],
    ["consume", "t", "--timeout-ms", "100"],
    ["cluster", "describe"],
]
COMMAND_IDS = ["-".join(c[:2]) for c in ONLINE_COMMANDS]


def cli(bootstrap: str, *args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["-b", bootstrap, *args], input=input, catch_exceptions=False)


def run_process(*args: str, input: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tools.brokerctl", *args], input=input.decode(), capture_output=True,
                          text=True, cwd=REPO_ROOT, env=full_env, timeout=60)


def assert_one_line(stderr: str, *fragments: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("brokerctl: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


@pytest.mark.parametrize("args", ONLINE_COMMANDS, ids=COMMAND_IDS)
def test_refused_connection(args: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = cli(address, *args, input=b"x\n")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1 and result.stdout == ""
    assert_one_line(result.stderr, f"cannot reach {address}")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listener that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("args", [ONLINE_COMMANDS[1], ONLINE_COMMANDS[5], ONLINE_COMMANDS[6]],
                         ids=["topics-list", "produce", "consume"])
def test_broker_that_never_answers(silent_server: str, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(brokerctl_common, "REQUEST_TIMEOUT_MS", 600)  # 15 s in real use (> fetch wait 500)
    started = time.monotonic()
    result = cli(silent_server, *args, input=b"x\n")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert_one_line(result.stderr, f"cannot reach {silent_server}", "REQUEST_TIMED_OUT")


@pytest.mark.parametrize("address", ["nohostport", "127.0.0.1:http", ":9092", ""])
def test_bad_bootstrap_address_is_a_usage_error(address: str) -> None:
    result = cli(address, "topics", "list")
    assert result.exit_code == 2
    assert_one_line(result.stderr, "--bootstrap-server")


def test_bad_bootstrap_does_not_affect_log_dump(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["-b", "nohostport", "log", "dump", "--json", str(tmp_path)])
    assert result.exit_code == 0 and '"type":"summary"' in result.stdout


def test_a_bug_is_one_line_unless_verbose(broker, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Admin, *, include_internal: bool = False) -> list[str]:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Admin, "list_topics", broken)
    result = cli(broker.bootstrap, "topics", "list")
    assert result.exit_code == 1
    assert_one_line(result.stderr, "internal error: RuntimeError: simulated bug", "--verbose")
    result = CliRunner().invoke(main, ["-b", broker.bootstrap, "-v", "topics", "list"])
    assert isinstance(result.exception, RuntimeError)  # --verbose: the traceback is not hidden


def test_real_process_errors(broker) -> None:
    proc = run_process("-b", broker.bootstrap, "topics", "describe", "ghost")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert_one_line(proc.stderr, "UNKNOWN_TOPIC_OR_PARTITION")

    proc = run_process("topics", "create", "made", env={"REPLOG_BOOTSTRAP": broker.bootstrap})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Created topic made.\n", "")
    proc = run_process("-b", broker.bootstrap, "topics", "create", "made")
    assert proc.returncode == 1
    assert_one_line(proc.stderr, "TOPIC_ALREADY_EXISTS")

    proc = run_process("-b", broker.bootstrap, "produce", "made", "--acks", "2")
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "--acks")

    proc = run_process("-b", f"127.0.0.1:{free_port()}", "consume", "made")
    assert proc.returncode == 1
    assert_one_line(proc.stderr, "cannot reach")

    proc = run_process("-b", broker.bootstrap, "cluster", "describe")
    assert proc.returncode == 0 and proc.stdout.startswith("ClusterId: ") and proc.stderr == ""


def test_a_group_without_a_command_shows_its_help() -> None:
    result = CliRunner().invoke(main, ["topics"])
    assert result.exit_code == 2 and "Usage: " in result.stderr and "describe" in result.stderr
    assert "Traceback" not in result.stderr


def test_logging_is_restored_after_a_command(broker) -> None:
    before = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
              for name in brokerctl_common.LOGGERS}
    assert cli(broker.bootstrap, "-v", "topics", "list").exit_code == 0
    assert cli(broker.bootstrap, "topics", "list").exit_code == 0
    after = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
             for name in brokerctl_common.LOGGERS}
    assert after == before
