"""Placement balance and leader choice (controller/placement.py), alone and through the builder."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from client.wire.errors import ErrorCode
from controller.metadata import AlterPartitionItem, CreateTopic, MetadataBuilder, MetadataImage
from controller.placement import (
    NO_LEADER,
    PlacementBroker,
    PlacementError,
    PlacementLoad,
    choose_leader,
    first_acceptable,
    place_replicas,
    preferred_leader,
    spread,
)
from controller.records import Listener

BROKERS3 = [PlacementBroker(b) for b in (1, 2, 3)]


# --- pure placement ------------------------------------------------------------------------------


def test_each_partition_gets_distinct_brokers_and_the_load_is_updated() -> None:
    load = PlacementLoad()
    out = place_replicas([PlacementBroker(b) for b in range(1, 6)], 20, 3, load, seed=3)
    assert len(out) == 20 and all(len(set(r)) == 3 for r in out)
    assert sum(load.replicas.values()) == 60 and sum(load.leaders.values()) == 20
    assert spread(load.leaders, range(1, 6)) == 0 and spread(load.replicas, range(1, 6)) <= 2


@pytest.mark.parametrize("brokers, rf", [(3, 3), (3, 2), (4, 3), (5, 3), (6, 2), (9, 3)])
def test_preferred_leaders_differ_by_at_most_one_across_many_topics(brokers: int, rf: int) -> None:
    ids = list(range(1, brokers + 1))
    for seed in range(50):
        rng = random.Random(seed)
        load = PlacementLoad()
        for _ in range(10):
            place_replicas([PlacementBroker(b) for b in ids], rng.randint(1, 7), rf, load, seed=rng.randrange(99))
            assert spread(load.leaders, ids) <= 1          # after every topic, not only at the end
        assert spread(load.replicas, ids) <= 2


def test_one_partition_topics_do_not_pile_up_on_one_broker() -> None:
    load = PlacementLoad()
    for _ in range(9):
        place_replicas(BROKERS3, 1, 3, load, seed=0)       # same seed every time: counts still rotate
    assert load.leaders == Counter({1: 3, 2: 3, 3: 3})


def test_a_failed_leaders_partitions_spread_over_the_others() -> None:
    load = PlacementLoad()
    out = place_replicas(BROKERS3, 12, 3, load)
    for failed in (1, 2, 3):
        takeover = Counter(r[1] for r in out if r[0] == failed)
        assert sorted(takeover.values()) == [2, 2]


def test_rack_aware_placement_uses_every_rack_before_repeating_one() -> None:
    brokers = [PlacementBroker(b, "abc"[b % 3]) for b in range(1, 10)]
    load = PlacementLoad()
    out = place_replicas(brokers, 30, 3, load)
    assert all(len({"abc"[b % 3] for b in r}) == 3 for r in out)
    assert spread(load.leaders, range(1, 10)) <= 1
    two_racks = [PlacementBroker(1, "a"), PlacementBroker(2, "a"), PlacementBroker(3, "b"), PlacementBroker(4, "b")]
    out = place_replicas(two_racks, 20, 2)
    assert all({"a", "b"} == {"aabb"[b - 1] for b in r} for r in out)


def test_placement_errors() -> None:
    with pytest.raises(PlacementError, match="replication factor 4"):
        place_replicas(BROKERS3, 1, 4)
    with pytest.raises(PlacementError, match="replication factor 0"):
        place_replicas(BROKERS3, 1, 0)
    with pytest.raises(PlacementError, match="partitions"):
        place_replicas(BROKERS3, 0, 1)
    with pytest.raises(PlacementError, match="duplicate"):
        place_replicas([PlacementBroker(1), PlacementBroker(1)], 1, 1)


# --- leader choice ---------------------------------------------------------------------------------


def test_leader_choice_follows_assignment_order_within_the_isr() -> None:
    def live(b: int) -> bool:
        return b != 9

    assert first_acceptable((3, 1, 2), (1, 2, 3), live) == 3
    assert first_acceptable((3, 1, 2), (2, 1), live) == 1              # assignment order, not ISR order
    assert first_acceptable((9, 1, 2), (9, 2), live) == 2              # unacceptable replicas are skipped
    assert first_acceptable((9, 1), (9,), live) == NO_LEADER           # never from outside the ISR
    assert choose_leader((1, 2, 3), (1, 2, 3), 2, live) == 2           # a valid current leader stays
    assert choose_leader((1, 2, 3), (1, 3), 2, live) == 1              # not in the ISR any more: re-elect
    assert choose_leader((9, 2), (9, 2), 9, live) == 2
    assert preferred_leader((1, 2), (2, 1), live) == 1
    assert preferred_leader((1, 2), (2,), live) == NO_LEADER
    assert preferred_leader((9, 2), (9, 2), live) == NO_LEADER


# --- acceptance: ten topics of 1..7 partitions, RF=3 on 3 brokers, through fence/unfence/restore -----


def _commit(state: dict, result):
    for record in result.records:
        state["image"] = state["image"].apply(record, state["image"].offset + 1)
    return result.response


def _catch_up(state: dict, builder: MetadataBuilder, broker_id: int) -> None:
    image = state["image"]
    for topic, index, part in image.iter_partitions():
        if broker_id in part.replicas and broker_id not in part.isr and part.leader != NO_LEADER:
            isr = tuple((b, image.brokers[b].broker_epoch) for b in part.replicas if b in part.isr or b == broker_id)
            item = AlterPartitionItem(topic.topic_id, index, part.leader_epoch, part.partition_epoch, isr)
            response = _commit(state, builder.alter_partition(image, part.leader,
                                                              image.brokers[part.leader].broker_epoch, [item]))
            assert response.partitions[0].error == ErrorCode.NONE
            image = state["image"]


@pytest.mark.parametrize("seed", range(20))
def test_acceptance_leader_balance_after_creation_fencing_and_preferred_restoration(seed: int) -> None:
    rng = random.Random(seed)
    ids = random.Random(seed + 1)
    builder = MetadataBuilder(rng=random.Random(seed), new_uuid=lambda: ids.randbytes(16))
    state = {"image": MetadataImage()}
    for b in (1, 2, 3):
        _commit(state, builder.register_broker(state["image"], b, bytes([b]) * 16, [Listener("P", "h", 9000 + b)],
                                               previous_session_alive=False))
        _commit(state, builder.heartbeat(state["image"], b, state["image"].brokers[b].broker_epoch,
                                         state["image"].offset))
    sizes = [rng.randint(1, 7) for _ in range(10)]
    results = _commit(state, builder.create_topics(state["image"],
                                                   [CreateTopic(f"topic-{i}", n, 3) for i, n in enumerate(sizes)]))
    assert all(r.error == ErrorCode.NONE for r in results)
    created = state["image"].leader_counts()
    assert sum(created.values()) == sum(sizes)
    assert spread(created, (1, 2, 3)) <= 1

    victim = rng.choice((1, 2, 3))
    _commit(state, builder.fence_broker(state["image"], victim))
    during = state["image"].leader_counts()
    assert during[victim] == 0 and sum(during.values()) == sum(sizes)     # nothing offline with RF=3
    survivors = [b for b in (1, 2, 3) if b != victim]
    assert spread(during, survivors) <= 2                                  # measured, not required

    image = state["image"]
    assert not _commit(state, builder.heartbeat(image, victim, image.brokers[victim].broker_epoch,
                                                image.offset)).is_fenced
    _catch_up(state, builder, victim)
    _commit(state, builder.elect_preferred_leaders(state["image"]))
    restored = state["image"].leader_counts()
    assert restored == created
    assert all(p.leader == p.replicas[0] for _t, _i, p in state["image"].iter_partitions())
