"""Run the Raft simulator over many seeds: `python tests/sim/run_sim.py --seeds 5000`.

Replay one seed verbosely: `python tests/sim/run_sim.py --seed 123 [--variant vote_not_synced] -v`.
Exit status 1 if any seed fails; the first failures are printed with their seed, fault schedule
and the last events before the violation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from sim_faults import CHAOS_TICKS, VARIANTS, SeedResult, run_seed


def summarize(results: list[SeedResult]) -> str:
    elections = [r.elections for r in results]
    crashes = [r.crashes for r in results]
    liveness = [r.liveness_ticks for r in results if r.liveness_ticks >= 0]
    return (f"{len(results)} seeds, {sum(not r.ok for r in results)} failed; "
            f"elections/seed min {min(elections)} mean {statistics.mean(elections):.1f}; "
            f"crashes/seed min {min(crashes)} mean {statistics.mean(crashes):.1f}; "
            f"committed/seed mean {statistics.mean(r.committed for r in results):.0f}; "
            f"liveness ticks max {max(liveness, default=-1)}; "
            f"seconds/seed mean {statistics.mean(r.seconds for r in results):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300, help="number of seeds to run")
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--seed", type=int, help="run only this seed")
    parser.add_argument("--variant", default="correct", choices=sorted(VARIANTS))
    parser.add_argument("--chaos-ticks", type=int, default=CHAOS_TICKS)
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every seed (and full reports)")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.perf_counter()
    results: list[SeedResult] = []
    shown = 0
    for seed in seeds:
        result = run_seed(seed, args.variant, args.chaos_ticks)
        results.append(result)
        if args.verbose:
            print(f"seed {seed}: {'ok' if result.ok else 'FAIL'} elections={result.elections} "
                  f"crashes={result.crashes} committed={result.committed} liveness={result.liveness_ticks} "
                  f"events={result.events} {result.seconds:.2f}s", flush=True)
        if not result.ok and (args.verbose or shown < 3):
            shown += 1
            print(result.report, flush=True)
        if not result.ok and args.stop_on_failure:
            break
    print(summarize(results) + f"; total {time.perf_counter() - started:.1f}s")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
