"""Seeded fault mixes and schedules for the Raft simulator, and `run_seed`, the one entry point.

A seed determines everything: the cluster shape and network/disk quality (`make_params`), the
fault schedule (`make_schedule`: crashes of random nodes and of leaders — including "crash the
next leader right after its election", which produces figure-8 histories — symmetric partitions,
leader isolation, one-way partitions, leadership transfers, loss/duplication changes), the
network's delays and drops and every node's randomness. Dynamic actions ("the current leader")
are resolved at run time and logged, so a failure report shows both the schedule and what
actually happened.

A run has two phases: `chaos_ticks` of faults with a client proposing throughout, then healing
(every node restarted, partitions removed, loss and duplication off) and a liveness check: a new
proposal must be applied by a majority of voters within `liveness_bound_ticks`.

Broken variants (VARIANTS) change one thing each: the driver skips the fsync of a Ready that only
changes term/vote; the core counts replicas of earlier-term entries; the core has check-quorum off.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from sim_cluster import SimCluster, SimParams, Violation

from controller.raft import quorum

VARIANTS: dict[str, dict[str, object]] = {
    "correct": {},
    "vote_not_synced": {"sync_hard_state": False},
    "commit_old_terms": {"unsafe_commit_old_terms": True},
    "no_check_quorum": {"check_quorum": False},
}

CHAOS_TICKS = 800
LIVENESS_BOUND_TICKS = 300
REPORT_TRACE_EVENTS = 60


def make_params(seed: int, variant: str = "correct") -> SimParams:
    rng = random.Random(f"params/{seed}")
    params = SimParams(
        voters=rng.choice((3, 5)),
        observers=rng.choice((0, 0, 1)),
        delay_max_units=rng.choice((3, 6, 10, 15)),
        loss=rng.choice((0.0, 0.0, 0.01, 0.05)),
        duplicate=rng.choice((0.0, 0.01, 0.05)),
        disk_latency_max_units=rng.choice((0, 2, 5, 15)),
        compact_every_entries=rng.choice((0, 6, 25)),
        propose_every_ticks=rng.choice((1, 2, 3)),
        fetch_max_entries=rng.choice((1, 2, 4, 64)),
    )
    return params.with_(**VARIANTS[variant])


@dataclass(frozen=True)
class FaultAction:
    tick: int
    kind: str
    args: tuple

    def __str__(self) -> str:
        return f"tick {self.tick}: {self.kind}{self.args}"


FAULT_WEIGHTS = (("crash", 2), ("crash_leader", 3), ("crash_new_leader", 2), ("partition", 2),
                 ("isolate_leader", 2), ("oneway", 1), ("oneway_leader", 1), ("transfer", 1), ("net", 1))


def make_schedule(seed: int, params: SimParams, chaos_ticks: int = CHAOS_TICKS) -> list[FaultAction]:
    rng = random.Random(f"schedule/{seed}")
    t_el = params.election_timeout_ticks
    nodes = params.node_ids
    kinds = [k for k, _ in FAULT_WEIGHTS]
    weights = [w for _, w in FAULT_WEIGHTS]
    actions: list[FaultAction] = []
    tick = rng.randint(t_el, 4 * t_el)
    while tick < chaos_ticks - t_el:
        kind = rng.choices(kinds, weights)[0]
        actions.append(FaultAction(tick, kind, _fault_args(rng, kind, nodes, t_el)))
        tick += rng.randint(t_el, 6 * t_el)
    while sum(a.kind == "crash_leader" for a in actions) < 2:  # at least two leader failures per seed
        tick = rng.randint(2 * t_el, chaos_ticks - 2 * t_el)
        actions.append(FaultAction(tick, "crash_leader", _fault_args(rng, "crash_leader", nodes, t_el)))
    return sorted(actions, key=lambda a: a.tick)


def _fault_args(rng: random.Random, kind: str, nodes: tuple[int, ...], t_el: int) -> tuple:
    down = rng.randint(t_el // 2, 8 * t_el)
    span = rng.randint(2 * t_el, 12 * t_el)
    if kind == "crash":
        return (rng.choice(nodes), down)
    if kind == "crash_leader":
        return (down,)
    if kind == "crash_new_leader":
        return (rng.randint(0, 3), down)
    if kind == "partition":
        return (tuple(sorted(rng.sample(nodes, rng.randint(1, len(nodes) // 2)))), span)
    if kind == "isolate_leader":
        return (span,)
    if kind == "oneway":
        src = rng.sample(nodes, rng.randint(1, len(nodes) - 1))
        rest = [n for n in nodes if n not in src]
        return (tuple(sorted(src)), tuple(sorted(rng.sample(rest, rng.randint(1, len(rest))))), span)
    if kind == "oneway_leader":
        return (rng.choice(("in", "out")), span)
    if kind == "net":
        return (rng.choice((0.0, 0.01, 0.05, 0.1, 0.2)), rng.choice((0.0, 0.02, 0.1)))
    return ()


class FaultDriver:
    """Executes a schedule on a cluster, runs the client, heals and checks liveness."""

    def __init__(self, cluster: SimCluster, schedule: list[FaultAction]) -> None:
        self.cluster = cluster
        self.by_tick: dict[int, list[FaultAction]] = defaultdict(list)
        for action in schedule:
            self.by_tick[action.tick].append(action)
        self.later: dict[int, list[Callable[[], None]]] = defaultdict(list)
        self.armed: list[tuple[int, int]] = []
        self.chaos = True
        self.proposal_counter = 0
        self.markers: list[bytes] = []
        self.marker_due_tick: int | None = None  # liveness phase: propose a marker at/after this tick
        cluster.tick_hooks.append(self.on_tick)
        cluster.checker.on_elected_hooks.append(self.on_elected)

    def at(self, tick: int, fn: Callable[[], None]) -> None:
        self.later[max(tick, self.cluster.tick + 1)].append(fn)

    def on_tick(self) -> None:
        cluster = self.cluster
        tick = cluster.tick
        for fn in self.later.pop(tick, ()):
            fn()
        if self.chaos:
            for action in self.by_tick.pop(tick, ()):
                self.execute(action)
        if self.marker_due_tick is not None and tick >= self.marker_due_tick:
            self._propose_marker()  # before the client, which would otherwise fill the backlog
        every = cluster.params.propose_every_ticks
        if every and tick % every == 0:
            leaders = cluster.leaders()
            if leaders:
                batch = []
                for _ in range(cluster.client_rng.randint(1, cluster.params.proposal_burst_max)):
                    self.proposal_counter += 1
                    batch.append(b"p%d" % self.proposal_counter)
                cluster.propose_batch(cluster.client_rng.choice(leaders), batch)

    def on_elected(self, nid: int, term: int) -> None:
        if self.chaos and self.armed:
            delay, down = self.armed.pop(0)
            cluster = self.cluster

            def crash_new_leader() -> None:
                cluster.log_action(f"crash the leader of term {term} ({nid}) {delay} ticks after its election")
                cluster.crash(nid)
                self.at(cluster.tick + down, lambda: cluster.restart(nid))

            self.at(cluster.tick + 1 + delay, crash_new_leader)

    def _target_leader(self) -> int:
        cluster = self.cluster
        leader = cluster.leader()
        return leader if leader is not None else cluster.fault_rng.choice(cluster.params.voter_ids)

    def execute(self, action: FaultAction) -> None:
        cluster = self.cluster
        tick = cluster.tick
        kind, args = action.kind, action.args
        if kind in ("crash", "crash_leader"):
            nid = args[0] if kind == "crash" else self._target_leader()
            down = args[-1]
            # At a random point inside the tick, so that crashes also hit unsynced disk writes.
            cluster.schedule(cluster.fault_rng.randrange(cluster.params.tick_units), lambda _: cluster.crash(nid), None)
            self.at(tick + down, lambda: cluster.restart(nid))
        elif kind == "crash_new_leader":
            self.armed.append(args)
            cluster.log_action(f"armed: crash the next leader {args[0]} ticks after its election")
        elif kind in ("partition", "isolate_leader"):
            group = args[0] if kind == "partition" else (self._target_leader(),)
            pairs = cluster.partition(group)
            self.at(tick + args[-1], lambda: self._unblock(pairs, f"heal partition of {list(group)}"))
        elif kind in ("oneway", "oneway_leader"):
            if kind == "oneway":
                src, dst = args[0], args[1]
            else:
                leader = self._target_leader()
                others = tuple(n for n in cluster.nodes if n != leader)
                src, dst = ((leader,), others) if args[0] == "out" else (others, (leader,))
            pairs = cluster.block((a, b) for a in src for b in dst)
            cluster.log_action(f"one-way partition: {list(src)} -> {list(dst)} blocked")
            self.at(tick + args[-1], lambda: self._unblock(pairs, f"heal one-way {list(src)} -> {list(dst)}"))
        elif kind == "transfer":
            leader = cluster.leader()
            if leader is not None:
                target = cluster.nodes[leader].call(lambda core: core.transfer_leadership())
                cluster.log_action(f"leader {leader} transfers leadership to {target}")
        elif kind == "net":
            cluster.loss, cluster.duplicate = args
            cluster.log_action(f"network loss={args[0]} duplicate={args[1]}")
        else:
            raise AssertionError(f"unknown fault {kind}")

    def _unblock(self, pairs: list[tuple[int, int]], text: str) -> None:
        self.cluster.unblock(pairs)
        self.cluster.log_action(text)

    def heal_all(self) -> None:
        cluster = self.cluster
        self.chaos = False
        self.armed.clear()
        cluster.heal()
        cluster.loss = cluster.duplicate = 0.0
        for nid, node in sorted(cluster.nodes.items()):
            if not node.alive:
                cluster.restart(nid)

    def _propose_marker(self) -> None:
        cluster = self.cluster
        leader = cluster.leader()
        if leader is None:
            return
        data = b"marker-%d" % len(self.markers)
        cluster.checker.watch.add(data)
        if cluster.propose(leader, data) is not None:  # else backpressure or busy: retry next tick
            self.markers.append(data)
            self.marker_due_tick = cluster.tick + 2 * cluster.params.election_timeout_ticks

    def await_liveness(self, bound_ticks: int) -> int:
        """Ticks until a fresh proposal is applied by a majority of voters (Violation after the bound).

        A marker is proposed to the leader as soon as there is one (retried every tick while
        refused, and again every two election timeouts in case it was lost with a leader).
        """
        cluster = self.cluster
        start = cluster.tick
        needed = quorum.majority(cluster.params.voters)
        self.marker_due_tick = start
        while cluster.tick - start <= bound_ticks:
            if any(cluster.voters_applied(m) >= needed for m in self.markers):
                self.marker_due_tick = None
                return cluster.tick - start
            cluster.run_ticks(1)
        raise Violation(f"liveness: no proposal was applied by {needed} voters within {bound_ticks} ticks "
                        f"of healing (markers proposed: {len(self.markers)})")


@dataclass
class SeedResult:
    seed: int
    variant: str
    ok: bool
    elections: int
    crashes: int
    ticks: int
    committed: int
    liveness_ticks: int
    events: int
    messages: int
    seconds: float
    error: str = ""
    report: str = ""


def run_seed(seed: int, variant: str = "correct", chaos_ticks: int = CHAOS_TICKS,
             liveness_bound_ticks: int = LIVENESS_BOUND_TICKS, check_liveness: bool = True) -> SeedResult:
    started = time.perf_counter()
    params = make_params(seed, variant)
    schedule = make_schedule(seed, params, chaos_ticks)
    cluster = SimCluster(seed, params)
    driver = FaultDriver(cluster, schedule)
    liveness = -1
    error = ""
    try:
        cluster.run_ticks(chaos_ticks)
        if check_liveness:
            driver.heal_all()
            liveness = driver.await_liveness(liveness_bound_ticks)
    except AssertionError as exc:  # Violation, or an assertion inside the core (a bug either way)
        kind = "violation" if isinstance(exc, Violation) else f"{type(exc).__name__} in the core"
        error = f"{kind}: {exc}"
    checker = cluster.checker
    result = SeedResult(seed, variant, not error, checker.elections, checker.crashes, cluster.tick,
                        len(checker.committed) - 1, liveness, cluster.stats.events, cluster.stats.messages_sent,
                        time.perf_counter() - started, error)
    if error:
        result.report = failure_report(result, params, schedule, cluster)
    return result


def failure_report(result: SeedResult, params: SimParams, schedule: list[FaultAction], cluster: SimCluster) -> str:
    lines = [
        f"SIMULATION FAILED: seed={result.seed} variant={result.variant} at tick {cluster.tick}",
        f"  {result.error}",
        f"replay: REPLOG_SIM_SEED={result.seed} REPLOG_SIM_VARIANT={result.variant} "
        "python -m pytest tests/sim -k replay",
        f"    or: python tests/sim/run_sim.py --seed {result.seed} --variant {result.variant} -v",
        f"params: {params}",
        "fault schedule:",
        *(f"  {a}" for a in schedule),
        "what happened (resolved actions):",
        *(f"  {a}" for a in cluster.stats.actions),
        f"nodes: {cluster.state_line()}",
        f"last {REPORT_TRACE_EVENTS} events:",
        cluster.format_trace(REPORT_TRACE_EVENTS),
    ]
    return "\n".join(lines)
