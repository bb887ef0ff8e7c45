"""MetadataImage: invariants asserted in apply, replay convergence, exact snapshots, random op sequences."""

from __future__ import annotations

import random
import re
from types import MappingProxyType

import orjson
import pytest

from client.wire.errors import ErrorCode
from controller.metadata import (
    AlterPartitionItem,
    CreateTopic,
    MetadataBuilder,
    MetadataImage,
    MetadataInvariantError,
    SnapshotDecodeError,
)
from controller.placement import NO_LEADER
from controller.records import (
    ControlledShutdownRecord,
    FenceBrokerRecord,
    Listener,
    NoOpRecord,
    PartitionAssignment,
    PartitionChange,
    PartitionChangeRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicConfigRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    decode_batch,
    decode_record,
    encode_batch,
    encode_record,
)

T1 = bytes(range(1, 17))
T2 = bytes(range(2, 18))
LISTENERS = (Listener("PLAINTEXT", "127.0.0.1", 9092),)


def _inc(b: int) -> bytes:
    return bytes([b]) * 16


def base_log() -> list:
    """Three unfenced brokers and topic t (T1) with one partition: replicas (1, 2, 3), leader 1."""
    log = []
    for b in (1, 2, 3):
        log.append(RegisterBrokerRecord(b, _inc(b), 10 + b, LISTENERS, None))
        log.append(UnfenceBrokerRecord(b, 10 + b))
    log.append(TopicRecord("t", T1, {}, (PartitionAssignment((1, 2, 3), (1, 2, 3), 1),)))
    return log


def build(log: list) -> MetadataImage:
    image = MetadataImage()
    for offset, record in enumerate(log, 1):
        image = image.apply(record, offset)
    return image


def change(leader: int, isr, leader_epoch: int, partition_epoch: int, topic_id: bytes = T1) -> PartitionChange:
    return PartitionChange(topic_id, 0, leader, tuple(isr), leader_epoch, partition_epoch)


def test_base_image() -> None:
    image = build(base_log())
    assert image.offset == 7 and image.active_broker_ids() == [1, 2, 3]
    part = image.partition(T1, 0)
    assert (part.replicas, part.isr, part.leader, part.leader_epoch, part.partition_epoch) == ((1, 2, 3),) * 2 + (
        1, 0, 0)
    assert image.topic("t").topic_id == T1 and image.topic_by_id(T1).name == "t"
    assert image.leader_counts() == {1: 1}


# --- invariants: a record that breaks one is a bug, asserted --------------------------------------


@pytest.mark.parametrize("record, message", [
    (PartitionChangeRecord((change(1, (1, 4), 0, 1),)), "not within replicas"),
    (PartitionChangeRecord((change(2, (1, 3), 1, 1),)), "not in ISR"),
    (PartitionChangeRecord((change(1, (1,), 0, 0),)), "partition epoch 0 does not follow 0"),
    (PartitionChangeRecord((change(2, (1, 2), 0, 1),)), "without a leader epoch bump"),
    (PartitionChangeRecord((PartitionChange(T1, 0, 1, (), 0, 1),)), "empty ISR"),
    (PartitionChangeRecord((PartitionChange(T1, 0, 1, (1, 1), 0, 1),)), "duplicate ISR"),
    (PartitionChangeRecord((PartitionChange(T1, 1, 1, (1,), 0, 1),)), "no such partition"),
    (PartitionChangeRecord((change(1, (1,), 0, 1, topic_id=T2),)), "unknown topic id"),
    (TopicRecord("t", T2, {}, (PartitionAssignment((1,), (1,), 1),)), "topic 't' already exists"),
    (TopicRecord("u", T1, {}, (PartitionAssignment((1,), (1,), 1),)), "already exists"),
    (TopicRecord("u", T2, {}, (PartitionAssignment((1, 9), (1,), 1),)), "not a registered broker"),
    (TopicRecord("u", T2, {}, (PartitionAssignment((1, 2), (1,), 1), PartitionAssignment((1,), (1,), 1))),
     "replication factor differs"),
    (RemoveTopicRecord("u", T1), "no such topic"),
    (TopicConfigRecord(T2, {"a": "1"}), "unknown topic id"),
    (FenceBrokerRecord(1, 11), "inactive broker 1 still leads"),
    (FenceBrokerRecord(2, 12), "inactive broker 2 left in ISR"),
    (FenceBrokerRecord(2, 99), "epoch 99 is not 12"),
    (FenceBrokerRecord(7, 1), "not registered"),
    (FenceBrokerRecord(1, 11, (change(2, (2, 3), 1, 1),)), None),   # the correct one: accepted
    (ControlledShutdownRecord(2, 12), "left in ISR"),
    (UnfenceBrokerRecord(2, 12), "cannot be unfenced"),
    (RegisterBrokerRecord(2, _inc(9), 12, LISTENERS, None), "epoch 12 after 12"),
    (RegisterBrokerRecord(4, _inc(4), 1, LISTENERS, None, (change(2, (2, 3), 1, 1),)), "changes partitions"),
    (ProducerIdsRecord(1, 11, 5, 10), "starts at 5, expected 0"),
    (ProducerIdsRecord(1, 10, 0, 10), "epoch 10 is not 11"),
])
def test_apply_asserts_invariants(record, message: str | None) -> None:
    image = build(base_log())
    if message is None:
        image.apply(record, 100)
        return
    with pytest.raises(MetadataInvariantError, match=message):
        image.apply(record, 100)


def test_epochs_are_monotonic_and_fenced_brokers_never_lead_or_join() -> None:
    image = build([*base_log(), PartitionChangeRecord((change(2, (2, 3), 3, 5),))])
    with pytest.raises(MetadataInvariantError, match="leader epoch 2 goes back from 3"):
        image.apply(PartitionChangeRecord((change(2, (2,), 2, 6),)), 100)
    fenced = image.apply(FenceBrokerRecord(1, 11), 100)
    with pytest.raises(MetadataInvariantError, match="joins the ISR but is not active"):
        fenced.apply(PartitionChangeRecord((change(2, (1, 2, 3), 3, 6),)), 101)
    with pytest.raises(MetadataInvariantError, match="leader 1 is not an active broker"):
        fenced.apply(PartitionChangeRecord((change(1, (1, 2, 3), 4, 6),)), 101)


def test_offsets_must_increase() -> None:
    image = build(base_log())
    for offset in (7, 3, -1):
        with pytest.raises(MetadataInvariantError, match="does not follow"):
            image.apply(NoOpRecord(), offset)
    assert image.apply_batch((), 9).offset == 9   # an empty entry (a Raft NOOP) just moves the offset
    with pytest.raises(MetadataInvariantError, match="not a metadata record"):
        image.apply("noop", 8)  # type: ignore[arg-type]


def test_images_are_immutable_values() -> None:
    image = build(base_log())
    before = image.snapshot()
    after = image.apply(PartitionChangeRecord((change(1, (1, 2), 0, 1),)), 8)
    after = after.apply(TopicConfigRecord(T1, {"retention.ms": "5"}), 9)
    after = after.apply(RemoveTopicRecord("t", T1), 10)
    assert image.snapshot() == before and image.partition(T1, 0).isr == (1, 2, 3)
    assert after.topic("t") is None and image.topic("t") is not None
    with pytest.raises(TypeError):
        image.topics[T2] = image.topics[T1]  # type: ignore[index]
    with pytest.raises(TypeError):
        image.topic("t").configs["a"] = "b"  # type: ignore[index]
    with pytest.raises(AttributeError):
        image.partition(T1, 0).leader = 3  # type: ignore[misc]


def test_a_failed_apply_leaves_the_image_unchanged() -> None:
    image = build(base_log())
    before = image.snapshot()
    bad = PartitionChangeRecord((change(1, (1, 2), 0, 1), change(4, (4,), 1, 2)))
    with pytest.raises(MetadataInvariantError):
        image.apply(bad, 8)
    assert image.snapshot() == before


# --- convergence and snapshots -----------------------------------------------------------------


def scenario_log() -> list:
    log = base_log()
    log += [
        TopicRecord("u", T2, {"retention.ms": "1000"}, (PartitionAssignment((2, 3), (2, 3), 2),
                                                       PartitionAssignment((3, 1), (3, 1), 3))),
        PartitionChangeRecord((change(1, (1, 2), 0, 1),)),
        FenceBrokerRecord(2, 12, (change(1, (1,), 0, 2), PartitionChange(T2, 0, 3, (3,), 1, 1))),
        ProducerIdsRecord(1, 11, 0, 1000),
        TopicConfigRecord(T2, {"retention.ms": None, "segment.bytes": "2048"}),
        RegisterBrokerRecord(2, _inc(22), 40, LISTENERS, "r1"),
        UnfenceBrokerRecord(2, 40),
        ProducerIdsRecord(2, 40, 1000, 1000),
        NoOpRecord(),
    ]
    return log


def test_nodes_applying_the_same_entries_converge_to_equal_images() -> None:
    log = scenario_log()
    wire = [encode_record(r) for r in log]
    a = build(log)
    b = MetadataImage()
    for offset, data in enumerate(wire, 1):
        b = b.apply(decode_record(data), offset)
    assert a == b and a.snapshot() == b.snapshot()
    # a node that restored a snapshot half-way and applied the rest converges too
    mid = build(log[:9])
    c = MetadataImage.from_snapshot(mid.snapshot())
    for offset, record in enumerate(log[9:], 10):
        c = c.apply(record, offset)
    assert c == a
    # the same records grouped in batches (one Raft entry each) give the same state at the same end offset
    d = MetadataImage()
    chunks = [log[:4], log[4:5], log[5:11], log[11:]]
    for index, chunk in enumerate(chunks):
        offset = len(log) if index == len(chunks) - 1 else index + 1
        d = d.apply_batch(decode_batch(encode_batch(chunk)), offset)
    assert d.brokers[1] == a.brokers[1] and d.topics == a.topics and d.next_producer_id == a.next_producer_id
    assert d != a  # registration offsets differ: they are entry offsets, a real part of the state


def test_snapshot_round_trip_is_exact() -> None:
    image = build(scenario_log())
    data = image.snapshot()
    restored = MetadataImage.from_snapshot(data)
    assert restored == image
    assert restored.snapshot() == data
    assert restored.offset == image.offset == len(scenario_log())
    assert restored.next_producer_id == 2000
    assert MetadataImage.from_snapshot(MetadataImage().snapshot()) == MetadataImage()


def test_snapshots_are_canonical() -> None:
    image = build(scenario_log())
    topic = image.topic("u")
    reordered = MetadataImage(image.offset, dict(reversed(list(image.brokers.items()))),
                              {**{topic.topic_id: topic}, **image.topics}, image.next_producer_id)
    assert reordered == image and reordered.snapshot() == image.snapshot()


def _corrupt(mutate) -> bytes:
    body = orjson.loads(build(scenario_log()).snapshot())
    mutate(body)
    return orjson.dumps(body)


@pytest.mark.parametrize("data, message", [
    (b"not json", "JSON"),
    (b"[]", "not a replog metadata snapshot"),
    (_corrupt(lambda b: b.update(format="x")), "not a replog metadata snapshot"),
    (_corrupt(lambda b: b.update(v=3)), "v: 3 is outside"),
    (_corrupt(lambda b: b.pop("brokers")), "missing field(s) ['brokers']"),
    (_corrupt(lambda b: b["topics"][0]["partitions"][0].update(leader=3)), "not in ISR"),
    (_corrupt(lambda b: b["topics"][0]["partitions"][0].update(isr=[])), "0 items"),
    (_corrupt(lambda b: b["topics"][1].update(name="t")), "twice"),
    (_corrupt(lambda b: b["topics"][1].update(topic_id=b["topics"][0]["topic_id"])), "duplicate"),
    (_corrupt(lambda b: b["brokers"][0].update(fenced=1)), "expected a boolean"),
    (_corrupt(lambda b: b["brokers"][2].update(fenced=True)), "inactive"),
    (_corrupt(lambda b: b.update(offset=3)), "registered after the image offset"),
])
def test_malformed_snapshots_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(SnapshotDecodeError, match=re.escape(message)):
        MetadataImage.from_snapshot(data)


# --- randomized op sequences (seeded): invariants after every committed record -----------------


def _random_ops(seed: int, steps: int = 200) -> tuple[list[bytes], MetadataImage]:
    rng = random.Random(seed)
    uuids = random.Random(seed + 1)
    builder = MetadataBuilder(rng=random.Random(seed), new_uuid=lambda: uuids.randbytes(16))
    image = MetadataImage()
    log: list[bytes] = []
    epochs: dict[tuple[bytes, int], tuple[int, int]] = {}
    incarnations = {b: _inc(b) for b in range(1, 6)}

    def commit(result):
        nonlocal image
        for record in result.records:
            log.append(encode_record(record))
            image = image.apply(decode_record(log[-1]), len(log))
            for topic, index, part in image.iter_partitions():   # epochs never go back
                key = (topic.topic_id, index)
                le, pe = epochs.get(key, (0, 0))
                assert part.leader_epoch >= le and part.partition_epoch >= pe
                epochs[key] = (part.leader_epoch, part.partition_epoch)
                assert part.isr and set(part.isr) <= set(part.replicas)
                assert part.leader == NO_LEADER or (part.leader in part.isr and image.is_active(part.leader))
        return result.response

    for b in incarnations:
        commit(builder.register_broker(image, b, incarnations[b], LISTENERS, previous_session_alive=False))
    for _ in range(steps):
        op = rng.random()
        brokers = sorted(image.brokers)
        b = rng.choice(brokers)
        epoch = image.brokers[b].broker_epoch
        if op < 0.15:
            commit(builder.heartbeat(image, b, epoch, image.offset))
        elif op < 0.3:
            commit(builder.create_topics(image, [CreateTopic(f"t{rng.randrange(30)}", rng.randint(1, 6),
                                                             rng.randint(1, 3))]))
        elif op < 0.38:
            commit(builder.fence_broker(image, b))
        elif op < 0.43:
            if rng.random() < 0.5:
                incarnations[b] = uuids.randbytes(16)
            commit(builder.register_broker(image, b, incarnations[b], LISTENERS,
                                           previous_session_alive=rng.random() < 0.3))
        elif op < 0.47:
            commit(builder.heartbeat(image, b, epoch, image.offset, want_shutdown=True))
        elif op < 0.52 and image.topic_ids:
            commit(builder.delete_topics(image, [rng.choice(sorted(image.topic_ids))]))
        elif op < 0.8:
            parts = [(t, i, p) for t, i, p in image.iter_partitions() if p.leader != NO_LEADER]
            if parts:
                topic, index, part = rng.choice(parts)
                isr = {part.leader} | {r for r in part.replicas
                                       if rng.random() < 0.6 and (image.is_active(r) or rng.random() < 0.2)}
                item = AlterPartitionItem(topic.topic_id, index, part.leader_epoch - rng.choice((0, 0, 0, 1)),
                                          part.partition_epoch - rng.choice((0, 0, 0, 1)),
                                          tuple((r, image.brokers[r].broker_epoch) for r in sorted(isr)))
                leader_epoch = image.brokers[part.leader].broker_epoch
                commit(builder.alter_partition(image, part.leader, leader_epoch, [item]))
        elif op < 0.9:
            commit(builder.elect_preferred_leaders(image))
        else:
            response = commit(builder.allocate_producer_ids(image, b, epoch))
            assert response.error == ErrorCode.NONE
        if rng.random() < 0.1:
            assert MetadataImage.from_snapshot(image.snapshot()) == image   # full invariant check
    return log, image


@pytest.mark.parametrize("seed", range(12))
def test_random_operation_sequences_keep_every_invariant_and_replay_identically(seed: int) -> None:
    log, image = _random_ops(seed)
    assert len(log) > 50
    replayed = MetadataImage()
    for offset, data in enumerate(log, 1):
        replayed = replayed.apply(decode_record(data), offset)
    assert replayed == image
    assert MetadataImage.from_snapshot(image.snapshot()).snapshot() == image.snapshot()
    assert _random_ops(seed)[0] == log   # the builder is deterministic given its seeds


def test_mapping_proxies_compare_by_content() -> None:
    # TopicImage equality relies on it (configs are read-only mappings)
    assert MappingProxyType({"a": "1", "b": "2"}) == MappingProxyType({"b": "2", "a": "1"})
