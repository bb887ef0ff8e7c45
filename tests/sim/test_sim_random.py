"""Randomized deterministic simulation of the Raft core: many seeds, random fault mixes.

Every seed runs `CHAOS_TICKS` ticks of faults (crashes with torn/unsynced writes, partitions,
leader isolation, one-way partitions, transfers, loss/duplication/reordering) with a client
proposing throughout, then heals and checks liveness; the invariants of sim_cluster.py are
checked after every event. Environment knobs: REPLOG_SIM_SEEDS (how many, default 400),
REPLOG_SIM_FIRST (first seed), REPLOG_SIM_SEED (+ REPLOG_SIM_VARIANT) for `-k replay`.
"""

from __future__ import annotations

import os
import statistics

import pytest
from sim_faults import CHAOS_TICKS, VARIANTS, SeedResult, run_seed

SEEDS = int(os.environ.get("REPLOG_SIM_SEEDS", "400"))
FIRST = int(os.environ.get("REPLOG_SIM_FIRST", "0"))
CHUNK = 50
MIN_ELECTIONS_PER_SEED = 3
MIN_CRASHES_PER_SEED = 2

_results: dict[int, SeedResult] = {}


def _summary(results: list[SeedResult]) -> str:
    elections = [r.elections for r in results]
    crashes = [r.crashes for r in results]
    return (f"raft sim: {len(results)} seeds x {CHAOS_TICKS} chaos ticks, {sum(not r.ok for r in results)} failed; "
            f"elections/seed min {min(elections)} mean {statistics.mean(elections):.1f}; "
            f"crashes/seed min {min(crashes)} mean {statistics.mean(crashes):.1f}; "
            f"committed/seed mean {statistics.mean(r.committed for r in results):.0f}; "
            f"liveness after heal max {max(r.liveness_ticks for r in results)} ticks; "
            f"{sum(r.seconds for r in results):.1f}s")


@pytest.mark.parametrize("first", range(FIRST, FIRST + SEEDS, CHUNK), ids=lambda f: f"seeds{f}")
def test_random_fault_mixes_keep_every_invariant(first: int) -> None:
    results = [run_seed(seed) for seed in range(first, min(first + CHUNK, FIRST + SEEDS))]
    for r in results:
        _results[r.seed] = r
    failed = [r for r in results if not r.ok]
    assert not failed, "\n\n".join(r.report for r in failed[:2])
    thin = [r for r in results if r.elections < MIN_ELECTIONS_PER_SEED or r.crashes < MIN_CRASHES_PER_SEED]
    assert not thin, f"seeds too quiet: {[(r.seed, r.elections, r.crashes) for r in thin]}; {_summary(results)}"


def test_random_summary(capsys: pytest.CaptureFixture[str]) -> None:
    results = [_results[s] for s in range(FIRST, FIRST + SEEDS) if s in _results]
    if len(results) < SEEDS:
        pytest.skip("the seed chunks did not all run in this session")
    with capsys.disabled():
        print("\n" + _summary(results))
    assert min(r.elections for r in results) >= MIN_ELECTIONS_PER_SEED, _summary(results)
    assert min(r.crashes for r in results) >= MIN_CRASHES_PER_SEED, _summary(results)


def test_a_seed_is_deterministic() -> None:
    a, b = run_seed(12345), run_seed(12345)
    assert (a.ok, a.events, a.messages, a.committed, a.elections, a.crashes, a.liveness_ticks) == (
        b.ok, b.events, b.messages, b.committed, b.elections, b.crashes, b.liveness_ticks)


@pytest.mark.skipif("REPLOG_SIM_SEED" not in os.environ, reason="set REPLOG_SIM_SEED=<seed> to replay one seed")
def test_replay(capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ["REPLOG_SIM_SEED"])
    variant = os.environ.get("REPLOG_SIM_VARIANT", "correct")
    assert variant in VARIANTS, f"REPLOG_SIM_VARIANT must be one of {sorted(VARIANTS)}"
    r = run_seed(seed, variant, int(os.environ.get("REPLOG_SIM_CHAOS_TICKS", CHAOS_TICKS)))
    with capsys.disabled():
        print(f"\nseed {seed} ({variant}): {'ok' if r.ok else 'FAILED'}, elections {r.elections}, crashes {r.crashes}, "
              f"committed {r.committed}, liveness {r.liveness_ticks} ticks, {r.events} events")
        if r.report:
            print(r.report)
    assert r.ok, r.report
