"""The runner: one seeded fault run against a fresh 3-node cluster, checked and reported.

    python3 -m tools.chaos --seed 7 --duration 30 --faults kill,kill-leader,stop --rf 3

Steps (each with a deadline): start `nodes` combined brokerd processes on free ports in a temp dir
(per-link controller proxies when `isolate` is among the faults); create the topic (`partitions`,
`rf`, `min.insync.replicas`); start producers and consumers (workload.py); wait for the first `ok`
on every partition (the load start); inject the planned faults (faults.py) while writes are in
flight; heal everything (resume, heal links, restart dead nodes); keep the load `tail_s` more;
stop the producers (their last outcomes arrive); wait until every partition has a leader and a full
ISR (convergence); read each partition's final log through the consumer API and let the
consumers catch up to it; stop the cluster cleanly; dump every replica offline; check
(checker.py); report.

The verdict (`RunReport.verdict`): "FAIL" on any anomaly; "INVALID" when the run does not count
(fewer than `acked_min` acknowledged writes, or a fault injected with no write in flight, or no
fault at all when some were asked for); else "PASS". The exit code of the command is 0 only for
PASS (1 FAIL, 3 INVALID). The run directory (history.jsonl, report.json, broker logs, data) is
kept on anything but PASS, or with `keep=True`.

`bug` sets REPLOG_BUG in every broker's environment: the deliberately broken broker variants the
checker must catch (docs/consistency.md lists the hooks the broker has to implement).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from client import Admin
from client.errors import ClientError, KafkaError
from tools.chaos import checker, metrics
from tools.chaos.cluster import Cluster
from tools.chaos.faults import KINDS, PROXIED_KINDS, FaultRecord, Injector, describe, plan
from tools.chaos.history import History
from tools.chaos.proxy import LinkProxy
from tools.chaos.workload import ConsumerWorker, ProducerWorker, read_final_logs

FIRST_OK_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 30.0
WORKERS_STOP_TIMEOUT_S = 60.0
UNAVAILABLE_THRESHOLD_S = 0.5  # a gap between successful writes longer than this counts as downtime
EXAMPLES = 3
# Figures counted in the broker logs (their wording is broker/cluster.py's and broker/replication.py's; a
# change there only changes these counts, never the verdict).
BROKER_EVENTS = {"became_leader": ": leader in epoch", "isr_change_proposed": "proposing ISR"}


@dataclass
class RunConfig:
    seed: int
    duration_s: float = 30.0
    faults: list[str] = field(default_factory=lambda: ["kill", "kill-leader", "kill-controller", "stop"])
    fault_count: int = 0               # 0: one per 6 s of duration, at least one per kind
    rf: int = 3
    min_insync: int = 2
    partitions: int = 3
    nodes: int = 3
    producers: int = 3
    consumers: int = 2
    rate: float = 200.0                # records/s per producer
    in_flight_per_partition: int = 20
    request_timeout_ms: int = 3000     # producers' (= Produce timeout_ms): short, a paused leader means retries
    down_s: tuple[float, float] = (1.0, 3.0)
    stop_s: float = 2.5                # SIGSTOP / isolation length: longer than the 1 s broker lease
    tail_s: float = 2.0
    bug: str = ""
    acked_min: int = 1000
    first_ok_timeout_s: float = FIRST_OK_TIMEOUT_S
    base_dir: str = ""
    keep: bool = False
    topic: str = "chaos"
    broker_args: list[str] = field(default_factory=list)
    # the ack_after_demotion canary: without idempotence a producer whose batch hangs on a demoted
    # leader keeps writing to the new one, so the new leader's log passes the hung batch's offset
    idempotence: bool = True


@dataclass
class RunReport:
    config: dict[str, Any]
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)
    run_dir: str = ""
    schedule: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    reads: int = 0
    info_errors: dict[str, int] = field(default_factory=dict)
    fail_errors: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    per_partition: dict[int, dict[str, Any]] = field(default_factory=dict)
    convergence_s: float | None = None
    final_high_watermarks: dict[int, int] = field(default_factory=dict)
    replicas: list[dict[str, Any]] = field(default_factory=list)
    consumer_errors: int = 0
    node_exit_codes: dict[int, int | None] = field(default_factory=dict)
    broker_events: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def exit_code(self) -> int:
        return {"PASS": 0, "FAIL": 1}.get(self.verdict, 3)


def _count(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class NoProgressError(TimeoutError):
    """Some partition acknowledged no write before the load start deadline (e.g. RF=3 on a broker that
    answers NOT_ENOUGH_REPLICAS until replication exists; the client retries those)."""


async def _wait_first_ok(history: History, partitions: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = {op.partition for op in history.ops if op.outcome == "ok"}
        if len(got) == partitions:
            return time.monotonic()
        await asyncio.sleep(0.05)  # poll, with a deadline
    got = {op.partition for op in history.ops if op.outcome == "ok"}
    errors = _count([op.error for op in history.ops if op.outcome in ("fail", "info")][:2000])
    raise NoProgressError(f"partitions {sorted(set(range(partitions)) - got)} acknowledged no write within "
                          f"{timeout_s} s; failed outcomes so far: {errors}")


async def _wait_converged(admin: Admin, topic: str, rf: int, timeout_s: float) -> float | None:
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        try:
            view = await describe(admin, topic, deadline_s=max(deadline - time.monotonic(), 0.5))
        except TimeoutError:
            return None
        if all(leader >= 0 for leader in view.leaders.values()) and \
                all(len(view.isr[p]) >= rf for p in view.leaders):
            return time.monotonic() - started
        await asyncio.sleep(0.1)  # poll, with a deadline
    return None


async def run(config: RunConfig) -> RunReport:
    kinds = [k.strip() for k in config.faults if k.strip()]
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose from {', '.join(KINDS)}")
    report = RunReport(config={**asdict(config), "down_s": list(config.down_s)})
    run_dir = config.base_dir or tempfile.mkdtemp(prefix=f"replog-chaos-{config.seed}-")
    os.makedirs(run_dir, exist_ok=True)
    report.run_dir = run_dir
    rng = random.Random(config.seed)
    count = config.fault_count or (max(len(kinds), int(config.duration_s // 6)) if kinds else 0)
    schedule = plan(rng, kinds, config.duration_s, count, config.down_s, config.stop_s) if kinds else []
    report.schedule = [asdict(f) for f in schedule]
    env = {"REPLOG_BUG": config.bug} if config.bug else {}
    cluster = Cluster(run_dir, config.nodes, extra_args=config.broker_args, env=env)
    proxies: dict[tuple[int, int], LinkProxy] = {}
    data_proxies: dict[int, LinkProxy] = {}
    history = History()
    final: dict[int, dict[int, str | None]] = {}
    t_begin = time.monotonic()
    try:
        if PROXIED_KINDS & set(kinds):
            for i in cluster.nodes:
                for j, node in cluster.nodes.items():
                    if i != j:
                        proxies[(i, j)] = await LinkProxy(f"{i}->{j}", node.controller_port).start()
                        cluster.links[(i, j)] = proxies[(i, j)].port
            for i, node in cluster.nodes.items():
                data_proxies[i] = await LinkProxy(f"data-{i}", node.port, classify=True).start()
                node.advertised_port = data_proxies[i].port
        report.timings_s["cluster_start"] = round(await asyncio.to_thread(cluster.start), 3)
        final = await _run_load(config, report, cluster, proxies, data_proxies, history, schedule, rng)
    finally:
        report.node_exit_codes = await asyncio.to_thread(cluster.stop)
        for proxy in [*proxies.values(), *data_proxies.values()]:
            await proxy.close()
    # --- offline: dumps and the check
    t = time.monotonic()
    replicas = await asyncio.to_thread(cluster.dump_replicas, config.topic, config.partitions)
    report.timings_s["dump"] = round(time.monotonic() - t, 3)
    report.replicas = [{"node": r.node, "partition": r.partition, "batches": len(r.batches), "log_end": r.log_end,
                        "high_watermark": r.high_watermark} for r in replicas]
    server_logs = cluster.server_logs()
    result = checker.check(history, final, replicas, server_logs)
    report.broker_events = {name: sum(text.count(needle) for text in server_logs.values())
                            for name, needle in BROKER_EVENTS.items()}
    report.anomalies = result.counts()
    report.examples = result.examples(EXAMPLES)
    report.timings_s["total"] = round(time.monotonic() - t_begin, 3)
    _verdict(config, report, result.ok, bool(kinds))
    with open(os.path.join(run_dir, "history.jsonl"), "w", encoding="utf-8") as f:
        f.write(history.to_jsonl())
    with open(os.path.join(run_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(asdict(report), f, indent=1, default=str)
    if report.verdict == "PASS" and not config.keep and not config.base_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
        report.run_dir = ""
    return report


async def _run_load(config: RunConfig, report: RunReport, cluster: Cluster, proxies: dict[tuple[int, int], LinkProxy],
                    data_proxies: dict[int, LinkProxy], history: History, schedule: list[Any],
                    rng: random.Random) -> dict[int, dict[int, str | None]]:
    bootstrap = cluster.bootstrap
    admin = Admin(bootstrap, client_id="chaos-admin", request_timeout_ms=3000, default_api_timeout_ms=30_000)
    await admin.start()
    stop_producers, stop_consumers = asyncio.Event(), asyncio.Event()
    producers = [ProducerWorker(f"p{i}", bootstrap, config.topic, config.partitions, history, config.rate,
                                config.in_flight_per_partition, config.request_timeout_ms,
                                idempotence=config.idempotence)
                 for i in range(config.producers)]
    consumers = [ConsumerWorker(f"c{i}", bootstrap, config.topic, config.partitions, history)
                 for i in range(config.consumers)]
    targets: dict[int, int] = {}
    consumer_deadline = [float("inf")]
    tasks: list[asyncio.Task[None]] = []
    try:
        min_insync = min(config.min_insync, config.rf)
        await admin.create_topic(config.topic, config.partitions, config.rf,
                                 configs={"min.insync.replicas": str(min_insync)})
        await describe(admin, config.topic, deadline_s=FIRST_OK_TIMEOUT_S)
        tasks += [asyncio.create_task(c.run(stop_consumers, targets, consumer_deadline), name=c.name)
                  for c in consumers]
        tasks += [asyncio.create_task(p.run(stop_producers), name=p.name) for p in producers]

        def in_flight(partition: int | None) -> int:
            return sum(sum(p.in_flight) if partition is None else p.in_flight[partition]
                       for p in producers if p.in_flight)

        load_start = await _wait_first_ok(history, config.partitions, config.first_ok_timeout_s)
        report.timings_s["first_ok_after_start"] = round(load_start - min(op.invoke_t for op in history.ops), 3)
        injector = Injector(cluster, admin, config.topic, random.Random(rng.getrandbits(64)), in_flight, proxies,
                            data_proxies)
        records: list[FaultRecord] = []
        for index, planned in enumerate(schedule):
            delay = load_start + planned.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the seeded schedule
            _raise_crashed(tasks)
            records.append(await injector.inject(index, planned))
        remaining = load_start + config.duration_s - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)  # the rest of the run's load
        healed = await injector.heal_all()
        if healed:
            report.reasons.append(f"healed at the end: restarted nodes {healed}")
        await asyncio.sleep(config.tail_s)  # load after the heal (part of the schedule)
        load_end = time.monotonic()
        stop_producers.set()
        await asyncio.wait_for(asyncio.gather(*tasks[len(consumers):]), WORKERS_STOP_TIMEOUT_S)
        history.close_pending(time.monotonic())
        report.convergence_s = await _wait_converged(admin, config.topic, config.rf, CONVERGE_TIMEOUT_S)
        final, ends = await read_final_logs(bootstrap, config.topic, config.partitions, DRAIN_TIMEOUT_S)
        report.final_high_watermarks = ends
        targets.update(ends)
        consumer_deadline[0] = time.monotonic() + DRAIN_TIMEOUT_S
        stop_consumers.set()
        await asyncio.wait_for(asyncio.gather(*tasks[:len(consumers)]), DRAIN_TIMEOUT_S + 10)
        _figures(report, history, records, load_start, load_end, config.partitions)
        report.consumer_errors = sum(len(c.errors) for c in consumers)
        return final
    finally:
        stop_producers.set()
        stop_consumers.set()
        consumer_deadline[0] = 0.0
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(KafkaError, ClientError):
            await admin.close()


def _raise_crashed(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"worker {task.get_name()} crashed") from task.exception()


def _figures(report: RunReport, history: History, records: list[FaultRecord], load_start: float, load_end: float,
             partitions: int) -> None:
    report.outcomes = history.by_outcome()
    report.acknowledged = history.acknowledged()
    report.reads = len(history.reads)
    report.info_errors = _count([op.error for op in history.ops if op.outcome == "info"])
    report.fail_errors = _count([op.error for op in history.ops if op.outcome == "fail"])
    ok_times = metrics.ok_times_by_partition(history.ops)
    for record in records:
        entry = record.as_dict(load_start)
        watched = record.affected or list(range(partitions))
        entry["failover_s"] = {}
        for p in watched:
            value = metrics.failover_s(history.ops, p, record.start_t)
            entry["failover_s"][p] = None if value is None else round(value, 3)
        entry["longest_no_write_s"] = round(max(
            metrics.longest_gap_s(ok_times.get(p, []), record.start_t, record.end_t, load_start, load_end)
            for p in watched), 3)
        report.faults.append(entry)
    for p in range(partitions):
        times = [t for t in ok_times.get(p, []) if load_start <= t <= load_end]
        gaps = [b - a for a, b in zip([load_start, *times], [*times, load_end], strict=True)]
        report.per_partition[p] = {
            "ok": len(ok_times.get(p, [])), "longest_no_write_s": round(max(gaps), 3),
            "availability": round(metrics.availability(times, load_start, load_end, UNAVAILABLE_THRESHOLD_S), 4)}
    report.timings_s["load"] = round(load_end - load_start, 3)


def _verdict(config: RunConfig, report: RunReport, clean: bool, faults_wanted: bool) -> None:
    invalid = []
    if report.acknowledged < config.acked_min:
        invalid.append(f"only {report.acknowledged} acknowledged writes (< {config.acked_min})")
    if faults_wanted and not report.faults:
        invalid.append("no fault was injected")
    quiet = [f["index"] for f in report.faults if f["in_flight"] == 0]
    if quiet:
        invalid.append(f"faults {quiet} were injected with no write in flight")
    if not clean:
        report.verdict = "FAIL"
    elif invalid:
        report.verdict = "INVALID"
    else:
        report.verdict = "PASS"
    report.reasons.extend(invalid)


def format_report(report: RunReport) -> str:
    cfg = report.config
    lines = [f"replog consistency run: seed {cfg['seed']}, {cfg['duration_s']} s, rf {cfg['rf']}, "
             f"min.insync {cfg['min_insync']}, {cfg['partitions']} partitions, faults {','.join(cfg['faults'])}"
             + (f", bug {cfg['bug']}" if cfg["bug"] else ""),
             f"replay: python3 -m tools.chaos --seed {cfg['seed']} --duration {cfg['duration_s']} "
             f"--faults {','.join(cfg['faults']) or 'none'} --fault-count {len(report.schedule)} --rf {cfg['rf']} "
             f"--min-insync {cfg['min_insync']} --partitions {cfg['partitions']} --producers {cfg['producers']} "
             f"--consumers {cfg['consumers']} --rate {cfg['rate']} --stop-s {cfg['stop_s']} "
             f"--down-s {cfg['down_s'][0]},{cfg['down_s'][1]} --request-timeout-ms {cfg['request_timeout_ms']}"
             + (f" --bug {cfg['bug']}" if cfg["bug"] else ""),
             "schedule: " + "; ".join(f"{f['at_s']}s {f['kind']} ({f['down_s']}s)" for f in report.schedule)]
    lines.append(f"operations: {report.outcomes}  acknowledged: {report.acknowledged}  polled records: {report.reads}")
    if report.info_errors:
        lines.append(f"info causes: {dict(list(report.info_errors.items())[:5])}")
    if report.fail_errors:
        lines.append(f"fail causes: {dict(list(report.fail_errors.items())[:5])}")
    lines.append("anomalies: " + ", ".join(f"{k}={v}" for k, v in report.anomalies.items()))
    for kind, examples in report.examples.items():
        for example in examples:
            lines.append(f"  {kind}: {example}")
    for f in report.faults:
        lines.append(f"fault #{f['index']} {f['kind']} at {f['at_s']}s targets {f['targets']} "
                     f"in flight {f['in_flight']} "
                     f"affected p{f['affected_partitions']} failover_s {f['failover_s']} "
                     f"longest_no_write_s {f['longest_no_write_s']} back_s {f['back_s']}"
                     + (f" ({f['notes']})" if f["notes"] else ""))
    failovers = [v for f in report.faults for v in f["failover_s"].values() if v is not None]
    if failovers:
        lines.append(f"failover_s: median {statistics.median(failovers):.3f} max {max(failovers):.3f} "
                     f"over {len(failovers)} partition failovers")
    lines.append("per partition: " + "; ".join(
        f"p{p} ok={v['ok']} longest_no_write_s={v['longest_no_write_s']} availability={v['availability']}"
        for p, v in report.per_partition.items()))
    lines.append(f"convergence_s: {report.convergence_s}  final high watermarks: {report.final_high_watermarks}  "
                 f"consumer poll errors: {report.consumer_errors}  node exit codes: {report.node_exit_codes}")
    lines.append(f"broker log events: {report.broker_events}  timings_s: {report.timings_s}")
    lines.append(f"verdict: {report.verdict}" + (f" ({'; '.join(report.reasons)})" if report.reasons else "")
                 + (f"  run dir: {report.run_dir}" if report.run_dir else ""))
    return "\n".join(lines)
