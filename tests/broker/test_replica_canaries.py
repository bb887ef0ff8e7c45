"""Deterministic twins of the consistency checker's broken-broker canaries (broker/bugs.py).

The chaos runs of each variant (tests/chaos/test_consistency.py, `-m slow`) need a fault to land in a
narrow window; these run the same broken code paths on real logs in the default run and show the
violation the checker flags: an acknowledgement of a write that the surviving replicas do not hold
(a lost write), and a follower that keeps a divergent tail (a replica divergence; the twin for that
one is in tests/broker/test_replica_divergence.py). Each also runs without the bug and passes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_replica_produce_acks import FOLLOWER, NOW, REPLICAS, batch, leader, parked, result_for

from broker import bugs
from broker.handlers.produce import _complete_delayed
from client.wire.errors import ErrorCode


@pytest.mark.parametrize("broken", [False, True])
def test_hw_from_leo_acknowledges_a_write_no_follower_holds(tmp_path: Path, monkeypatch: Any,
                                                           broken: bool) -> None:
    monkeypatch.setattr(bugs, "HW_FROM_LEO", broken)
    p = leader(tmp_path)
    p.append_as_leader(batch(2), NOW)          # the follower has fetched nothing
    # an acks=all write is acknowledged once the high watermark passes it: with the bug at once,
    # while the only copy is the leader's (its kill -9 then loses an acknowledged write)
    assert (p.high_watermark == 2) is broken
    assert (p.high_watermark == 0) is not broken


@pytest.mark.parametrize("broken", [False, True])
def test_ack_after_demotion_acknowledges_a_truncated_write(tmp_path: Path, monkeypatch: Any, broken: bool) -> None:
    monkeypatch.setattr(bugs, "ACK_AFTER_DEMOTION", broken)

    async def run() -> dict[str, Any]:
        p = leader(tmp_path)
        p.append_as_leader(batch(2), NOW)                       # offsets 0-1, never replicated
        results = [result_for(0)]
        task = asyncio.create_task(_complete_delayed([(results, [(0, p, 1, 2, 2)])], 30_000))
        await parked([p], task)
        p.make_follower(FOLLOWER, 2, 2, REPLICAS, REPLICAS)     # demoted: the new leader wrote other data
        p.truncate_to(0)                                        # the divergent tail goes
        p.append_replicated(batch(3), 3, NOW)                   # the new leader's records, HW 3
        await asyncio.wait_for(task, 5)
        return results[0]

    result = asyncio.run(run())
    if broken:
        assert result["error_code"] == ErrorCode.NONE             # acknowledged, but offsets 0-1 hold
        # another write now: the checker's lost-write check (ok send missing from the final log)
    else:
        assert result["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
