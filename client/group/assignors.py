"""Partition assignors run by the group leader: "range" and "roundrobin" (Kafka's classic ones).

Pure functions of (member subscriptions, partition counts); no I/O. The group leader (the member
the coordinator names in JoinGroup) decodes every member's Subscription (protocol.py), asks
`assign` for {member_id: Assignment} and sends the encoded result in SyncGroup. The results match
Java's RangeAssignor / RoundRobinAssignor and kafka-python's, so a group mixing replog's consumer
with other clients gets the same assignment whoever leads [S: ak clients/.../consumer/RangeAssignor.java,
RoundRobinAssignor.java, AbstractPartitionAssignor.MemberInfo; kp kafka/coordinator/assignors/].

Member order (both assignors, KIP-345): static members (with a group.instance.id) first, sorted
by instance id, then dynamic members sorted by member id.

- range: per topic, partitions in numeric order are cut into consecutive ranges over the
  members subscribed to that topic; the first `partitions % members` members get one extra.
- roundrobin: all partitions of all subscribed topics, sorted by (topic, partition), dealt in
  turn to the members, skipping a member not subscribed to the partition's topic.

Topics without partition metadata (unknown to the cluster) are left out, as in Kafka. Every
member gets an Assignment, possibly empty. Invariant (checked by the tests): each partition of a
subscribed, known topic is assigned to exactly one member that subscribes to its topic.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from client.group.protocol import Assignment, Subscription, group_by_topic

__all__ = ["ASSIGNORS", "Assignor", "GroupMember", "RangeAssignor", "RoundRobinAssignor", "assignor_for"]


@dataclass(frozen=True)
class GroupMember:
    """One JoinGroup member as the leader sees it."""

    member_id: str
    group_instance_id: str | None
    subscription: Subscription


def _sort_key(member: GroupMember) -> tuple[int, str]:
    if member.group_instance_id is not None:
        return (0, member.group_instance_id)
    return (1, member.member_id)


class Assignor:
    """Base: a name for JoinGroup's protocol list, the subscription bytes, and `assign`."""

    name = ""
    subscription_version = 0

    def subscription(self, topics: Sequence[str], owned: Sequence[tuple[str, int]] = (),
                     generation_id: int = -1) -> Subscription:
        return Subscription(tuple(sorted(topics)), None, group_by_topic(owned) if self.subscription_version else (),
                            generation_id, None, self.subscription_version)

    def assign(self, partitions_per_topic: Mapping[str, int],
               members: Sequence[GroupMember]) -> dict[str, Assignment]:
        raise NotImplementedError


class RangeAssignor(Assignor):
    name = "range"

    def assign(self, partitions_per_topic: Mapping[str, int],
               members: Sequence[GroupMember]) -> dict[str, Assignment]:
        ordered = sorted(members, key=_sort_key)
        out: dict[str, list[tuple[str, int]]] = {m.member_id: [] for m in ordered}
        topics = sorted({t for m in ordered for t in m.subscription.topics})
        for topic in topics:
            count = partitions_per_topic.get(topic)
            if not count:
                continue
            consumers = [m for m in ordered if topic in m.subscription.topics]
            per, extra = divmod(count, len(consumers))
            start = 0
            for i, member in enumerate(consumers):
                length = per + (1 if i < extra else 0)
                out[member.member_id].extend((topic, p) for p in range(start, start + length))
                start += length
        return {member_id: Assignment(group_by_topic(tps)) for member_id, tps in out.items()}


class RoundRobinAssignor(Assignor):
    name = "roundrobin"

    def assign(self, partitions_per_topic: Mapping[str, int],
               members: Sequence[GroupMember]) -> dict[str, Assignment]:
        ordered = sorted(members, key=_sort_key)
        out: dict[str, list[tuple[str, int]]] = {m.member_id: [] for m in ordered}
        topics = sorted({t for m in ordered for t in m.subscription.topics})
        all_tps = [(t, p) for t in topics for p in range(partitions_per_topic.get(t) or 0)]
        cycle = itertools.cycle(ordered)
        for topic, partition in all_tps:
            member = next(cycle)
            while topic not in member.subscription.topics:  # ends: some member subscribes to `topic`
                member = next(cycle)
            out[member.member_id].append((topic, partition))
        return {member_id: Assignment(group_by_topic(tps)) for member_id, tps in out.items()}


ASSIGNORS: dict[str, type[Assignor]] = {"range": RangeAssignor, "roundrobin": RoundRobinAssignor}


def assignor_for(name: str) -> Assignor:
    cls = ASSIGNORS.get(name)
    if cls is None:
        raise ValueError(f"unknown partition assignor {name!r} (known: {sorted(ASSIGNORS)})")
    return cls()
