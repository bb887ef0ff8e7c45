"""`brokerctl topics describe --under-replicated / --unavailable` on a real 3-node cluster
(tests/clusterproc.py): after kill -9 of a broker, the controller fences it, drops it from the ISR
of the partitions it shared (RF=3: under-replicated) and leaves the partitions it alone held
(RF=1) without a leader (unavailable)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result
from clusterproc import Cluster

from tools.brokerctl import main

FENCE_TIMEOUT_S = 20.0  # broker_session_ms is 1.5 s; a controller failover adds a few seconds


def cli(bootstrap: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["-b", bootstrap, *args], catch_exceptions=False)


def describe(bootstrap: str, *flags: str) -> list[dict[str, Any]]:
    result = cli(bootstrap, "topics", "describe", "--json", *flags)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)  # poll interval of a condition wait with a deadline


def partitions(topics: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(t["name"], p["partition"]): p for t in topics for p in t["partitions"]}


def test_describe_filters_after_a_broker_dies(tmp_path) -> None:
    cluster = Cluster(str(tmp_path), nodes=3).start()
    try:
        b = cluster.bootstrap(1)
        for name, count, rf in (("single", 3, "1"), ("triple", 1, "3")):
            result = cli(b, "topics", "create", name, "--partitions", str(count), "--replication-factor", rf)
            assert result.exit_code == 0, result.stderr
        wait_for(lambda: all(p["leader"] >= 0 for p in partitions(describe(b)).values()), FENCE_TIMEOUT_S,
                 "every partition led")
        before = partitions(describe(b))
        assert sorted(before[("triple", 0)]["replicas"]) == [1, 2, 3] == sorted(before[("triple", 0)]["isr"])
        assert describe(b, "--under-replicated") == [] and describe(b, "--unavailable") == []

        # kill a broker other than the one we ask, holding a single-replica partition
        victim = next(p["leader"] for (name, _), p in sorted(before.items()) if name == "single" and p["leader"] != 1)
        orphans = {tp for tp, p in before.items() if tp[0] == "single" and p["replicas"] == [victim]}
        cluster.kill(victim)

        wait_for(lambda: set(partitions(describe(b, "--unavailable"))) == orphans
                 and set(partitions(describe(b, "--under-replicated"))) == {("triple", 0)},
                 FENCE_TIMEOUT_S, f"broker {victim} fenced")
        for tp, p in partitions(describe(b, "--unavailable")).items():
            assert (p["leader"], p["log_start_offset"], p["high_watermark"]) == (-1, None, None), tp
            assert p["isr"] == [victim]  # the last ISR member stays (no unclean election)
        triple = partitions(describe(b, "--under-replicated"))[("triple", 0)]
        assert victim not in triple["isr"] and len(triple["isr"]) == 2 and triple["leader"] in triple["isr"]
        assert triple["leader_epoch"] >= before[("triple", 0)]["leader_epoch"]
        # both filters: either selects
        assert set(partitions(describe(b, "--under-replicated", "--unavailable"))) == orphans | {("triple", 0)}
    finally:
        cluster.stop()
