"""Replica placement and leader choice: pure functions over broker ids, no image, no I/O, no clock.

Placement is a **least-loaded greedy**, chosen over Kafka's round-robin with a random start
because it balances across topics, not only within one: Kafka's per-topic random start can put
the single partition of ten one-partition topics on the same broker, this cannot. For every new
partition, position by position:

* position 0 (the preferred leader): the broker with the fewest preferred leaderships, then the
  fewest replicas;
* position i ≥ 1: a broker not yet in this partition, preferring (in this order) a rack not yet
  used by the partition (rack-aware; a broker without a rack counts as its own rack), the fewest
  replicas, then for i = 1 the smallest "preferred leaderships + partitions where it is already
  second behind this partition's preferred leader" (position 1 is who takes over when the leader
  fails: this keeps the leader counts level after a failover, instead of moving all of a failed
  broker's partitions to one broker), then the fewest occurrences at position i;
* remaining ties go to the broker that comes first in the id order rotated by a per-topic seeded
  start (`seed`), so equal clusters do not always favour the lowest id.

The counts (`PlacementLoad`) include every existing partition of the cluster, so successive topics
keep the totals level. Invariant: if the eligible brokers do not change, preferred leaderships per
broker differ by at most one (each new one goes to a broker with the minimum count).

Leader choice (KRaft's PartitionChangeBuilder): the current leader stays if it is still in the ISR
and acceptable; otherwise the first replica **in assignment order** that is in the ISR and
acceptable (registered, unfenced, not in controlled shutdown), or `NO_LEADER` (-1): unclean
election (a leader from outside the ISR) is never done.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

NO_LEADER = -1


class PlacementError(ValueError):
    """The request cannot be placed (e.g. replication factor above the number of eligible brokers)."""


@dataclass(frozen=True, slots=True)
class PlacementBroker:
    broker_id: int
    rack: str | None = None


@dataclass
class PlacementLoad:
    """Per-broker counts that placement balances: replicas, preferred leaderships, positions, followers."""

    replicas: Counter[int] = field(default_factory=Counter)
    leaders: Counter[int] = field(default_factory=Counter)
    positions: defaultdict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    followers: defaultdict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    @classmethod
    def from_assignments(cls, assignments: Iterable[Sequence[int]]) -> PlacementLoad:
        load = cls()
        for replicas in assignments:
            load.add(replicas)
        return load

    def add(self, replicas: Sequence[int]) -> None:
        for position, broker_id in enumerate(replicas):
            self.replicas[broker_id] += 1
            self.positions[position][broker_id] += 1
        if replicas:
            self.leaders[replicas[0]] += 1
        if len(replicas) > 1:
            self.followers[replicas[0]][replicas[1]] += 1


def place_replicas(brokers: Sequence[PlacementBroker], partitions: int, replication_factor: int,
                   load: PlacementLoad | None = None, seed: int = 0) -> list[tuple[int, ...]]:
    """Replica lists (assignment order, [0] = preferred leader) for `partitions` new partitions.

    `brokers` are the eligible ones (unfenced, not shutting down). `load` is updated in place with
    the new partitions, so a caller placing several topics passes the same one.
    """
    ids = [b.broker_id for b in brokers]
    if len(set(ids)) != len(ids):
        raise PlacementError(f"duplicate broker ids in {ids}")
    if partitions < 1:
        raise PlacementError(f"partitions must be at least 1, got {partitions}")
    if not 1 <= replication_factor <= len(ids):
        raise PlacementError(f"replication factor {replication_factor} is outside [1, {len(ids)}] "
                             f"(the number of eligible brokers)")
    load = load if load is not None else PlacementLoad()
    ordered = sorted(ids)
    start = seed % len(ordered)
    rank = {b: (i - start) % len(ordered) for i, b in enumerate(ordered)}
    rack = {b.broker_id: b.rack if b.rack is not None else f"\0{b.broker_id}" for b in brokers}
    out = []
    for _ in range(partitions):
        replicas = _place_one(ordered, rank, rack, replication_factor, load)
        load.add(replicas)
        out.append(replicas)
    return out


def _place_one(ordered: list[int], rank: dict[int, int], rack: dict[int, str], replication_factor: int,
               load: PlacementLoad) -> tuple[int, ...]:
    leader = min(ordered, key=lambda b: (load.leaders[b], load.replicas[b], rank[b]))
    chosen = [leader]
    for position in range(1, replication_factor):
        used_racks = {rack[b] for b in chosen}
        candidates = [b for b in ordered if b not in chosen]
        chosen.append(min(candidates, key=_follower_key(position, leader, used_racks, rack, rank, load)))
    return tuple(chosen)


def _follower_key(position: int, leader: int, used_racks: set[str], rack: dict[int, str], rank: dict[int, int],
                  load: PlacementLoad) -> Callable[[int], tuple[int, ...]]:
    follows = load.followers[leader]
    at_position = load.positions[position]

    def key(b: int) -> tuple[int, ...]:
        takeover = load.leaders[b] + follows[b] if position == 1 else 0
        return (rack[b] in used_racks, load.replicas[b], takeover, at_position[b], rank[b])

    return key


# --- leader choice ---------------------------------------------------------------------------


def first_acceptable(replicas: Sequence[int], isr: Sequence[int], acceptable: Callable[[int], bool]) -> int:
    """The first replica in assignment order that is in the ISR and acceptable, or NO_LEADER."""
    for broker_id in replicas:
        if broker_id in isr and acceptable(broker_id):
            return broker_id
    return NO_LEADER


def choose_leader(replicas: Sequence[int], isr: Sequence[int], current_leader: int,
                  acceptable: Callable[[int], bool]) -> int:
    """Keep the current leader if it is still valid, else the first acceptable ISR replica (no unclean election)."""
    if current_leader != NO_LEADER and current_leader in isr and acceptable(current_leader):
        return current_leader
    return first_acceptable(replicas, isr, acceptable)


def preferred_leader(replicas: Sequence[int], isr: Sequence[int], acceptable: Callable[[int], bool]) -> int:
    """replicas[0] if it is in the ISR and acceptable (preferred leader election), else NO_LEADER."""
    if replicas and replicas[0] in isr and acceptable(replicas[0]):
        return replicas[0]
    return NO_LEADER


def spread(counts: Counter[int], broker_ids: Iterable[int]) -> int:
    """max - min of `counts` over `broker_ids` (missing brokers count 0): the balance measure."""
    values = [counts[b] for b in broker_ids]
    return max(values) - min(values) if values else 0
