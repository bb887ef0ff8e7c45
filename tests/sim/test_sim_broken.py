"""The simulator catches deliberately broken variants (it would be worthless otherwise).

Each variant changes one thing (sim_faults.VARIANTS) and runs the same random fault mixes as
test_sim_random.py; the invariant checker must flag it within `VARIANT_SEEDS` seeds, with a
violation of the kind the bug produces:

* vote_not_synced — the driver skips the fsync of a Ready that only changes term/vote, so a crash
  loses the vote it already sent: flagged as a node restarting in a term below one it put on a
  message, or without the vote it granted (then double votes / two leaders in one term, see
  test_sim_scenarios.py for the end-to-end story);
* commit_old_terms — the leader commits entries of earlier terms by counting replicas (figure 8):
  flagged as a committed entry missing from a voter log that could still win an election (or,
  later, leader completeness / state machine safety);
* no_check_quorum — an isolated leader never steps down: flagged as a stale (zombie) leader
  still leading after a newer leader's election plus the check-quorum bound.
"""

from __future__ import annotations

import os
import statistics

import pytest
from sim_faults import run_seed

VARIANT_SEEDS = int(os.environ.get("REPLOG_SIM_VARIANT_SEEDS", "100"))

EXPECTED = {
    "vote_not_synced": ("unsynced", "double vote", "both leaders of term"),
    "commit_old_terms": ("could still win an election", "leader completeness", "state machine safety"),
    "no_check_quorum": ("stale leader",),
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_broken_variant_is_caught(variant: str, capsys: pytest.CaptureFixture[str]) -> None:
    results = [run_seed(seed, variant) for seed in range(VARIANT_SEEDS)]
    caught = [r for r in results if not r.ok]
    summary = (f"{variant}: caught in {len(caught)}/{len(results)} seeds"
               + (f", first at seed {caught[0].seed}, detection at tick {min(r.ticks for r in caught)}.."
                  f"{max(r.ticks for r in caught)} (mean {statistics.mean(r.ticks for r in caught):.0f})"
                  if caught else ""))
    with capsys.disabled():
        print(f"\n{summary}")
    assert caught, f"the simulator did not catch {variant} in {VARIANT_SEEDS} seeds"
    unexpected = [r for r in caught if not any(k in r.error for k in EXPECTED[variant])]
    assert not unexpected, f"{summary}; unexpected kinds of violation:\n" + "\n".join(r.error for r in unexpected)
