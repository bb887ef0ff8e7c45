"""Fault injection: a seeded schedule, and injectors that act on `cluster.Node`s by PID.

Kinds (`KINDS`):
- `kill`: SIGKILL a random live broker, restart it on the same data dir after `down_s`;
- `kill-leader`: the same for the leader of the busiest partition (most records in flight);
- `kill-controller`: the same for the active controller;
- `stop`: SIGSTOP the leader of the busiest partition for `stop_s` (longer than the broker lease,
  1 s by default), then SIGCONT (the zombie-leader case);
- `isolate`: cut the busiest partition's leader off from the controller quorum (every Raft link and
  its registration/heartbeats, both directions) and from its followers (their fetches from it, its
  fetches from them) for `stop_s`, while clients still reach it, then heal. Needs the proxies
  (proxy.py) the runner starts when an isolation kind is asked for;
- `isolate-follower`: cut one follower of the busiest partition off from that partition's leader
  (its fetches to the leader only) for `stop_s`, then heal;
- `double`: two failovers in a row: kill the leader of the busiest partition, restart it, and as soon
  as it is ready kill the partition's new leader, and restart that one too.

`plan(rng, kinds, duration_s, count)` spreads `count` faults over the run (kinds cycled in a
seeded order, times jittered); the plan only depends on the seed, the targets are resolved when the
fault fires (they depend on the cluster's state) and are recorded in `FaultRecord`.

Before acting, an injector waits (with a deadline, `IN_FLIGHT_WAIT_S`) for writes in flight, and
records how many there were. Blocking process calls run in threads: the load keeps running.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client import Admin
from client.errors import ClientError, KafkaError
from tools.chaos.cluster import Cluster
from tools.chaos.proxy import LinkProxy

KINDS = ("kill", "kill-leader", "kill-controller", "stop", "isolate", "isolate-follower", "double")
PROXIED_KINDS = frozenset({"isolate", "isolate-follower"})
IN_FLIGHT_WAIT_S = 2.0
IN_FLIGHT_POLL_S = 0.002
METADATA_DEADLINE_S = 10.0
METADATA_RETRY_S = 0.1


@dataclass(frozen=True)
class PlannedFault:
    at_s: float       # since the load started
    kind: str
    down_s: float     # kill: time down before the restart; stop/isolate: how long


@dataclass
class FaultRecord:
    index: int
    kind: str
    planned_at_s: float
    targets: list[int] = field(default_factory=list)
    start_t: float = 0.0      # monotonic: the signal / the cut
    heal_t: float = 0.0       # monotonic: restart launched / SIGCONT / heal (last one for `double`)
    end_t: float = 0.0        # monotonic: every target serving again
    affected: list[int] = field(default_factory=list)  # partitions the first target led
    in_flight: int = 0
    notes: str = ""

    def as_dict(self, t0: float) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "planned_at_s": round(self.planned_at_s, 3),
                "at_s": round(self.start_t - t0, 3), "targets": self.targets, "affected_partitions": self.affected,
                "in_flight": self.in_flight, "fault_s": round(self.heal_t - self.start_t, 3),
                "back_s": round(self.end_t - self.start_t, 3), "notes": self.notes}


def plan(rng: random.Random, kinds: list[str], duration_s: float, count: int, down_s: tuple[float, float],
         stop_s: float, warmup_s: float = 1.0) -> list[PlannedFault]:
    order = list(kinds)
    rng.shuffle(order)
    slot = max(duration_s - warmup_s, 0.1) / max(count, 1)
    out = []
    for i in range(count):
        kind = order[i % len(order)]
        at = warmup_s + slot * i + rng.uniform(0, slot * 0.3)
        length = stop_s if kind in ("stop", "isolate", "isolate-follower") else rng.uniform(*down_s)
        out.append(PlannedFault(round(at, 3), kind, round(length, 3)))
    return out


@dataclass
class ClusterView:
    """Leaders (partition -> node), controller id; from one Metadata request."""

    leaders: dict[int, int]
    epochs: dict[int, int]
    replicas: dict[int, list[int]]
    isr: dict[int, list[int]]
    controller: int


async def describe(admin: Admin, topic: str, deadline_s: float = METADATA_DEADLINE_S) -> ClusterView:
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = await admin.cluster.fetch_metadata([topic])
            (t,) = [t for t in response["topics"] if t["name"] == topic]
            if t["error_code"] == 0:
                parts = t["partitions"]
                return ClusterView({p["partition_index"]: p["leader_id"] for p in parts},
                                   {p["partition_index"]: p.get("leader_epoch", -1) for p in parts},
                                   {p["partition_index"]: list(p["replica_nodes"]) for p in parts},
                                   {p["partition_index"]: list(p["isr_nodes"]) for p in parts},
                                   response.get("controller_id", -1))
            last = RuntimeError(f"topic error {t['error_code']}")
        except (KafkaError, ClientError, OSError, ValueError) as exc:
            last = exc
        await asyncio.sleep(METADATA_RETRY_S)  # retry interval of a wait with a deadline
    raise TimeoutError(f"no metadata for {topic} within {deadline_s} s: {last}")


class Injector:
    def __init__(self, cluster: Cluster, admin: Admin, topic: str, rng: random.Random,
                 in_flight: Callable[[int | None], int], proxies: dict[tuple[int, int], LinkProxy],
                 data_proxies: dict[int, LinkProxy] | None = None) -> None:
        self.cluster = cluster
        self.admin = admin
        self.topic = topic
        self.rng = rng
        self.in_flight = in_flight  # partition (None: all) -> records awaiting an outcome
        self.proxies = proxies
        self.data_proxies = data_proxies or {}

    async def inject(self, index: int, fault: PlannedFault) -> FaultRecord:
        record = FaultRecord(index, fault.kind, fault.at_s)
        view = await describe(self.admin, self.topic)
        busy = max(view.leaders, key=lambda p: (self.in_flight(p), -p))
        alive = self.cluster.alive()
        if fault.kind == "kill":
            target = self.rng.choice(alive)
        elif fault.kind == "kill-controller":
            target = view.controller if view.controller in alive else self.rng.choice(alive)
            if view.controller not in alive:
                record.notes = f"controller {view.controller} unknown or down; random broker instead"
        else:
            target = view.leaders[busy] if view.leaders[busy] in alive else self.rng.choice(alive)
            if view.leaders[busy] not in alive:
                record.notes = f"p{busy} has no live leader ({view.leaders[busy]}); random broker instead"
        record.targets.append(target)
        record.affected = sorted(p for p, leader in view.leaders.items() if leader == target)
        record.in_flight = await self._wait_in_flight()
        if fault.kind in ("kill", "kill-leader", "kill-controller"):
            await self._kill_restart(target, fault.down_s, record)
        elif fault.kind == "stop":
            await self._pause(target, fault.down_s, record)
        elif fault.kind == "isolate":
            await self._isolate(target, fault.down_s, record)
        elif fault.kind == "isolate-follower":
            followers = [n for n in view.replicas[busy] if n != target]
            if not followers:
                record.notes = f"p{busy} has no follower: nothing cut"
            follower = self.rng.choice(followers) if followers else target
            record.targets.append(follower)
            record.affected = [busy]
            await self._cut_follower(target, follower, fault.down_s, record)
        elif fault.kind == "double":
            await self._kill_restart(target, fault.down_s, record)
            second = (await describe(self.admin, self.topic)).leaders.get(busy, -1)
            if second in self.cluster.alive() and second != target:
                record.targets.append(second)
                await self._kill_restart(second, fault.down_s, record, first=False)
            else:
                record.notes = f"no second failover: p{busy} leader is {second} after the first"
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        return record

    async def _wait_in_flight(self) -> int:
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        while self.in_flight(None) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(IN_FLIGHT_POLL_S)  # poll, with a deadline, for writes in flight
        return self.in_flight(None)

    async def _kill_restart(self, target: int, down_s: float, record: FaultRecord, first: bool = True) -> None:
        node = self.cluster.nodes[target]
        t = time.monotonic()
        await asyncio.to_thread(node.kill)
        if first:
            record.start_t = t
        await asyncio.sleep(down_s)  # the fault's duration (schedule), not a synchronisation
        record.heal_t = time.monotonic()
        node.launch()
        await asyncio.to_thread(node.wait_ready)
        record.end_t = time.monotonic()

    async def _pause(self, target: int, stop_s: float, record: FaultRecord) -> None:
        node = self.cluster.nodes[target]
        record.start_t = time.monotonic()
        node.pause()
        try:
            await asyncio.sleep(stop_s)  # the fault's duration
        finally:
            node.resume()
        record.heal_t = record.end_t = time.monotonic()

    async def _isolate(self, target: int, hold_s: float, record: FaultRecord) -> None:
        links = [p for (i, j), p in self.proxies.items() if target in (i, j)]
        if not links or not self.data_proxies:
            record.notes = "no proxies (cluster not started with isolation): nothing cut"
        others = {n for n in self.cluster.nodes if n != target}
        cuts: list[tuple[LinkProxy, set[int] | None]] = [(p, None) for p in links]
        if target in self.data_proxies:
            cuts.append((self.data_proxies[target], others))  # followers fetching from it
        cuts += [(self.data_proxies[n], {target}) for n in others if n in self.data_proxies]  # its own fetches
        await self._hold_cuts(cuts, hold_s, record)

    async def _cut_follower(self, leader: int, follower: int, hold_s: float, record: FaultRecord) -> None:
        cuts: list[tuple[LinkProxy, set[int] | None]] = []
        if leader in self.data_proxies and follower != leader:
            cuts.append((self.data_proxies[leader], {follower}))
        elif not record.notes:
            record.notes = "no data proxies (cluster not started with isolation): nothing cut"
        await self._hold_cuts(cuts, hold_s, record)

    async def _hold_cuts(self, cuts: list[tuple[LinkProxy, set[int] | None]], hold_s: float,
                         record: FaultRecord) -> None:
        record.start_t = time.monotonic()
        for proxy, sources in cuts:
            proxy.cut(sources)
        try:
            await asyncio.sleep(hold_s)  # the fault's duration
        finally:
            for proxy, _ in cuts:
                proxy.heal()
        record.heal_t = record.end_t = time.monotonic()

    async def heal_all(self) -> list[int]:
        """Resume, heal every link, restart every dead node; returns the restarted node ids."""
        restarted = []
        for proxy in [*self.proxies.values(), *self.data_proxies.values()]:
            proxy.heal()
        for node_id, node in self.cluster.nodes.items():
            node.resume()
            if not node.alive():
                node.launch()
                restarted.append(node_id)
        for node_id in restarted:
            await asyncio.to_thread(self.cluster.nodes[node_id].wait_ready)
        return restarted
