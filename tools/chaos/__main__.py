"""`python3 -m tools.chaos`: one seeded consistency run (run.py), printed; exit 0 PASS, 1 FAIL
(anomalies), 3 INVALID (too few acknowledged writes, or faults without writes in flight), 2 usage."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from dataclasses import asdict

import click

from tools.chaos.faults import KINDS
from tools.chaos.run import RunConfig, format_report, run


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seed", type=int, default=None, help="Seed of the schedule and choices (default: random, printed).")
@click.option("--duration", "duration_s", type=float, default=30.0, show_default=True, help="Seconds of faulted load.")
@click.option("--faults", default="kill,kill-leader,kill-controller,stop", show_default=True,
              help=f"Comma-separated, from: {', '.join(KINDS)}; 'none' for a fault-free run.")
@click.option("--fault-count", type=int, default=0, help="Faults to inject (default: one per 6 s, >= one per kind).")
@click.option("--rf", type=int, default=3, show_default=True, help="Replication factor of the topic.")
@click.option("--min-insync", type=int, default=2, show_default=True, help="min.insync.replicas (capped at --rf).")
@click.option("--partitions", type=int, default=3, show_default=True)
@click.option("--producers", type=int, default=3, show_default=True)
@click.option("--consumers", type=int, default=2, show_default=True)
@click.option("--rate", type=float, default=200.0, show_default=True, help="Records/s per producer.")
@click.option("--down-s", default="1.0,3.0", show_default=True, help="MIN,MAX seconds a killed node stays down.")
@click.option("--stop-s", type=float, default=2.5, show_default=True, help="SIGSTOP / isolation length.")
@click.option("--request-timeout-ms", type=int, default=3000, show_default=True,
              help="Producers' request timeout (and Produce timeout_ms).")
@click.option("--bug", default="", help="REPLOG_BUG for every broker (a deliberately broken variant).")
@click.option("--acked-min", type=int, default=1000, show_default=True, help="Acknowledged writes for a valid run.")
@click.option("--dir", "base_dir", default="", help="Run directory (default: a temp dir, removed on PASS).")
@click.option("--keep", is_flag=True, help="Keep the run directory even on PASS.")
@click.option("--broker-set", "broker_sets", multiple=True, metavar="KEY=VALUE", help="brokerd --set, repeatable.")
@click.option("--json", "json_path", default="", help="Also write the report as JSON to this file.")
def main(seed: int | None, duration_s: float, faults: str, fault_count: int, rf: int, min_insync: int, partitions: int,
         producers: int, consumers: int, rate: float, down_s: str, stop_s: float, request_timeout_ms: int, bug: str,
         acked_min: int, base_dir: str, keep: bool, broker_sets: tuple[str, ...], json_path: str) -> None:
    """Run producers and consumers against a 3-node cluster under faults, then check the history."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    kinds = [] if faults.strip() in ("", "none") else [k.strip() for k in faults.split(",")]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(KINDS)}", param_hint="'--faults'")
    try:
        low, high = (float(x) for x in down_s.split(","))
    except ValueError:
        raise click.BadParameter("expected MIN,MAX", param_hint="'--down-s'") from None
    broker_args = [arg for item in broker_sets for arg in ("--set", item)]
    config = RunConfig(seed=seed, duration_s=duration_s, faults=kinds, fault_count=fault_count, rf=rf,
                       min_insync=min_insync, partitions=partitions, producers=producers, consumers=consumers,
                       rate=rate, down_s=(low, high), stop_s=stop_s, request_timeout_ms=request_timeout_ms, bug=bug,
                       acked_min=acked_min,
                       base_dir=base_dir, keep=keep,
                       broker_args=broker_args)
    click.echo(f"seed {seed}", err=True)
    report = asyncio.run(run(config))
    click.echo(format_report(report))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(asdict(report), f, indent=1, default=str)
    sys.exit(report.exit_code())


if __name__ == "__main__":
    main()
