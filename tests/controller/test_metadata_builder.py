"""MetadataBuilder: every rule of the active controller, checked through committed records.

Each test drives a `Cluster`: the builder's records are encoded, "committed" to a log, decoded and
applied (as every node will), so each rule is checked end to end and `apply`'s invariants run on
every record.
"""

from __future__ import annotations

import random

import pytest

from broker.config import validate_topic_config
from client.wire.errors import ErrorCode
from controller import limits
from controller.metadata import (
    AlterPartitionItem,
    BuilderConfig,
    ControllerResult,
    CreateTopic,
    MetadataBuilder,
    MetadataImage,
)
from controller.placement import NO_LEADER
from controller.records import (
    ControlledShutdownRecord,
    FenceBrokerRecord,
    Listener,
    PartitionChangeRecord,
    RegisterBrokerRecord,
    UnfenceBrokerRecord,
    decode_record,
    encode_record,
)


class Cluster:
    """An active controller's view: builder + committed log + image (one record per entry)."""

    def __init__(self, brokers: int = 3, seed: int = 0, **builder_kw) -> None:
        ids = random.Random(seed + 1000)
        self.builder = MetadataBuilder(validate_config=validate_topic_config, rng=random.Random(seed),
                                       new_uuid=lambda: ids.randbytes(16), **builder_kw)
        self.image = MetadataImage()
        self.log: list[bytes] = []
        self.incarnations: dict[int, bytes] = {}
        for b in range(1, brokers + 1):
            self.register(b)
            assert not self.heartbeat(b).is_fenced

    def commit(self, result: ControllerResult):
        before = self.image.snapshot()
        for record in result.records:
            data = encode_record(record)
            self.log.append(data)
            self.image = self.image.apply(decode_record(data), len(self.log))
        assert MetadataImage.from_snapshot(before).snapshot() == before  # older images are untouched
        return result.response

    def epoch(self, b: int) -> int:
        reg = self.image.brokers.get(b)
        return -1 if reg is None else reg.broker_epoch

    def register(self, b: int, new_incarnation: bool = False, alive: bool = False):
        if new_incarnation or b not in self.incarnations:
            self.incarnations[b] = random.Random(b * 7919 + len(self.log)).randbytes(16)
        return self.commit(self.builder.register_broker(
            self.image, b, self.incarnations[b], [Listener("PLAINTEXT", "127.0.0.1", 9000 + b)],
            previous_session_alive=alive))

    def heartbeat(self, b: int, offset: int | None = None, **kw):
        return self.commit(self.builder.heartbeat(self.image, b, self.epoch(b),
                                                  self.image.offset if offset is None else offset, **kw))

    def create(self, name: str, partitions: int = 1, rf: int = 3, **configs: str):
        [result] = self.commit(self.builder.create_topics(self.image, [CreateTopic(name, partitions, rf, configs)]))
        return result

    def fence(self, b: int) -> None:
        assert self.commit(self.builder.fence_broker(self.image, b)) == ErrorCode.NONE

    def parts(self, name: str):
        return self.image.topic(name).partitions

    def alter(self, name: str, index: int, isr, *, by: int | None = None, leader_epoch: int | None = None,
              partition_epoch: int | None = None, epochs: dict[int, int] | None = None):
        topic = self.image.topic(name)
        part = topic.partitions[index]
        leader = part.leader if by is None else by
        item = AlterPartitionItem(
            topic.topic_id, index, part.leader_epoch if leader_epoch is None else leader_epoch,
            part.partition_epoch if partition_epoch is None else partition_epoch,
            tuple((b, (epochs or {}).get(b, self.epoch(b))) for b in isr))
        response = self.commit(self.builder.alter_partition(self.image, leader, self.epoch(leader), [item]))
        assert response.error == ErrorCode.NONE
        [result] = response.partitions
        return result

    def catch_up(self, b: int) -> None:
        """Leaders add `b` back to the ISRs of their partitions (as after it fetched to their log end)."""
        for topic, index, part in list(self.image.iter_partitions()):
            if b in part.replicas and b not in part.isr and part.leader != NO_LEADER:
                isr = [r for r in part.replicas if r in part.isr or r == b]
                assert self.alter(topic.name, index, isr).error == ErrorCode.NONE

    def replay(self) -> MetadataImage:
        image = MetadataImage()
        for offset, data in enumerate(self.log, 1):
            image = image.apply(decode_record(data), offset)
        return image


# --- topics ----------------------------------------------------------------------------------


def test_create_topic_places_replicas_with_the_preferred_leader_first_and_a_full_isr() -> None:
    c = Cluster()
    result = c.create("orders", 6, 3, **{"retention.ms": "60000", "cleanup.policy": "delete,compact"})
    assert result.error == ErrorCode.NONE and result.num_partitions == 6 and result.replication_factor == 3
    topic = c.image.topic("orders")
    assert topic.topic_id == result.topic_id and len(topic.topic_id) == 16
    assert dict(topic.configs) == {"retention.ms": "60000", "cleanup.policy": "compact,delete"}  # normalized
    for part in topic.partitions:
        assert sorted(part.replicas) == [1, 2, 3]
        assert part.isr == part.replicas and part.leader == part.replicas[0]
        assert (part.leader_epoch, part.partition_epoch) == (0, 0)
    assert c.replay() == c.image


@pytest.mark.parametrize("name", [".", "..", "a b", "x" * 250, "", "t\n", "ünï"])
def test_invalid_topic_names_are_refused(name: str) -> None:
    c = Cluster()
    assert c.create(name).error == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert c.image.topics == {}


def test_create_topic_errors() -> None:
    c = Cluster()
    assert c.create("a.b").error == ErrorCode.NONE
    assert c.create("a.b").error == ErrorCode.TOPIC_ALREADY_EXISTS
    assert c.create("a_b").error == ErrorCode.INVALID_TOPIC_EXCEPTION  # collides with a.b
    assert c.create("p0", 0).error == ErrorCode.INVALID_PARTITIONS
    assert c.create("p1", limits.PARTITIONS_PER_TOPIC_MAX + 1).error == ErrorCode.INVALID_PARTITIONS
    assert c.create("r0", 1, 0).error == ErrorCode.INVALID_REPLICATION_FACTOR
    assert c.create("r4", 1, 4).error == ErrorCode.INVALID_REPLICATION_FACTOR
    bad = c.create("cfg", 1, 3, **{"retention.ms": "soon"})
    assert bad.error == ErrorCode.INVALID_CONFIG and "retention.ms" in bad.message
    assert c.create("cfg", 1, 3, **{"no.such.config": "1"}).error == ErrorCode.INVALID_CONFIG
    assert list(c.image.topic_ids) == ["a.b"]


def test_replication_factor_counts_only_unfenced_brokers() -> None:
    c = Cluster()
    c.fence(3)
    result = c.create("t", 1, 3)
    assert result.error == ErrorCode.INVALID_REPLICATION_FACTOR and "1..2" in result.message
    assert c.create("t", 4, 2).error == ErrorCode.NONE
    assert all(3 not in p.replicas for p in c.parts("t"))


def test_several_topics_in_one_request_duplicates_defaults_and_validate_only() -> None:
    c = Cluster(config=BuilderConfig(default_partitions=3, default_replication_factor=2))
    result = c.builder.create_topics(c.image, [CreateTopic("a"), CreateTopic("b", 2, 3), CreateTopic("d"),
                                               CreateTopic("d")])
    assert [r.error for r in result.response] == [ErrorCode.NONE, ErrorCode.NONE, ErrorCode.INVALID_REQUEST,
                                                  ErrorCode.INVALID_REQUEST]
    assert (result.response[0].num_partitions, result.response[0].replication_factor) == (3, 2)
    dry = c.builder.create_topics(c.image, [CreateTopic("a")], validate_only=True)
    assert dry.records == () and dry.response[0].error == ErrorCode.NONE
    c.commit(result)
    assert sorted(c.image.topic_ids) == ["a", "b"]
    assert c.image.topic("a").partition_count == 3 and c.image.topic("a").replication_factor == 2


def test_delete_topics_by_name_and_id_and_recreate_with_a_new_id() -> None:
    c = Cluster()
    first = c.create("t", 2).topic_id
    other = c.create("u").topic_id
    results = c.commit(c.builder.delete_topics(c.image, names=["t", "nope"], topic_ids=[other, bytes(range(16))]))
    assert [r.error for r in results] == [ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NONE,
                                          ErrorCode.UNKNOWN_TOPIC_ID]
    assert c.image.topics == {}
    again = c.create("t", 2).topic_id
    assert again != first


def test_alter_configs_sets_removes_and_validates() -> None:
    c = Cluster()
    c.create("t", 1, 3, **{"retention.ms": "1000"})
    results = c.commit(c.builder.alter_configs(c.image, {"t": {"retention.ms": None, "segment.bytes": "2048"},
                                                         "nope": {"segment.bytes": "2048"}}))
    assert [r.error for r in results] == [ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
    assert dict(c.image.topic("t").configs) == {"segment.bytes": "2048"}
    [bad] = c.commit(c.builder.alter_configs(c.image, {"t": {"segment.bytes": "12"}}))
    assert bad.error == ErrorCode.INVALID_CONFIG and "segment.bytes" in bad.message
    assert dict(c.image.topic("t").configs) == {"segment.bytes": "2048"}


# --- brokers: registration, heartbeats, fencing ------------------------------------------------


def test_a_registered_broker_stays_fenced_until_it_reaches_its_registration_offset() -> None:
    c = Cluster(brokers=1)
    result = c.register(2)
    assert result.error == ErrorCode.NONE and result.broker_epoch == c.epoch(2)
    reg = c.image.brokers[2]
    assert reg.fenced and reg.registered_offset == c.image.offset
    behind = c.heartbeat(2, offset=reg.registered_offset - 1)
    assert (behind.is_caught_up, behind.is_fenced) == (False, True)
    assert c.image.brokers[2].fenced
    caught_up = c.heartbeat(2, offset=reg.registered_offset)
    assert (caught_up.is_caught_up, caught_up.is_fenced) == (True, False)
    assert isinstance(decode_record(c.log[-1]), UnfenceBrokerRecord)
    assert c.heartbeat(2).is_fenced is False and isinstance(decode_record(c.log[-1]), UnfenceBrokerRecord)


def test_heartbeat_errors() -> None:
    c = Cluster(brokers=1)
    assert c.builder.heartbeat(c.image, 9, 1, 0).response.error == ErrorCode.BROKER_ID_NOT_REGISTERED
    assert c.builder.heartbeat(c.image, 1, c.epoch(1) - 1, 0).response.error == ErrorCode.STALE_BROKER_EPOCH


def test_registration_retry_of_the_same_incarnation_is_idempotent() -> None:
    c = Cluster()
    epoch = c.epoch(2)
    entries = len(c.log)
    assert c.register(2, alive=True).broker_epoch == epoch
    assert len(c.log) == entries


def test_another_incarnation_is_refused_while_the_old_session_lives() -> None:
    c = Cluster()
    result = c.register(2, new_incarnation=True, alive=True)
    assert result.error == ErrorCode.DUPLICATE_BROKER_REGISTRATION
    assert not c.image.brokers[2].fenced


def test_reregistration_with_a_new_incarnation_leaves_isrs_until_it_catches_up_kip_903() -> None:
    c = Cluster()
    c.create("t", 6)
    old_epoch = c.epoch(2)
    led = {i: p for i, p in enumerate(c.parts("t")) if p.leader == 2}
    assert led
    result = c.register(2, new_incarnation=True, alive=False)   # restarted before its session expired
    assert result.broker_epoch > old_epoch
    assert isinstance(decode_record(c.log[-1]), RegisterBrokerRecord)
    for index, part in enumerate(c.parts("t")):
        assert 2 not in part.isr and part.leader != 2
        if index in led:
            assert part.leader == next(r for r in part.replicas if r != 2)      # next ISR replica in order
            assert part.leader_epoch == led[index].leader_epoch + 1
    # A leader that saw the old incarnation fetching cannot vouch for it (stale broker epoch) ...
    part = c.parts("t")[0]
    stale = c.alter("t", 0, part.replicas, epochs={2: old_epoch})
    assert stale.error == ErrorCode.INELIGIBLE_REPLICA
    # ... nor add it while it is fenced, even with its new epoch.
    assert c.alter("t", 0, part.replicas).error == ErrorCode.INELIGIBLE_REPLICA
    assert not c.heartbeat(2).is_fenced
    c.catch_up(2)
    assert all(2 in p.isr for p in c.parts("t"))
    assert c.replay() == c.image


def test_fencing_removes_the_broker_from_every_isr_in_one_record_and_moves_its_leaderships() -> None:
    c = Cluster()
    c.create("t", 7)
    before = c.parts("t")
    c.fence(2)
    record = decode_record(c.log[-1])
    assert isinstance(record, FenceBrokerRecord) and len(record.partitions) == 7   # the same record
    for old, new in zip(before, c.parts("t")):
        assert 2 not in new.isr and new.partition_epoch == old.partition_epoch + 1
        if old.leader == 2:
            assert new.leader == next(r for r in old.replicas if r != 2)
            assert new.leader_epoch == old.leader_epoch + 1
        else:
            assert (new.leader, new.leader_epoch) == (old.leader, old.leader_epoch)


def test_fencing_never_empties_an_isr_and_the_offline_partition_returns_with_its_broker() -> None:
    c = Cluster()
    c.create("t", 3)
    c.fence(1)
    c.fence(2)
    for part in c.parts("t"):
        assert part.isr == (3,) and part.leader == 3
    c.fence(3)                              # the last ISR member stays; the partition goes offline
    for part in c.parts("t"):
        assert part.isr == (3,) and part.leader == NO_LEADER
    epochs = [p.leader_epoch for p in c.parts("t")]
    assert not c.heartbeat(1).is_fenced     # a live broker outside the ISR: no unclean election
    assert all(p.leader == NO_LEADER for p in c.parts("t"))
    assert not c.heartbeat(3).is_fenced
    record = decode_record(c.log[-1])
    assert isinstance(record, UnfenceBrokerRecord) and len(record.partitions) == 3
    for part, epoch in zip(c.parts("t"), epochs):
        assert part.leader == 3 and part.isr == (3,) and part.leader_epoch == epoch + 1
    assert c.replay() == c.image


def test_session_expiry_fences_only_expired_unfenced_brokers_and_chains_the_records() -> None:
    c = Cluster()
    c.create("t", 4)
    deadlines = {1: 1000, 2: 1000, 3: 5000}
    result = c.builder.fence_expired_brokers(c.image, 999, deadlines)
    assert result.records == () and result.response == []
    result = c.builder.fence_expired_brokers(c.image, 1000, {1: 1000, 2: 1000})
    assert result.response == [1, 2] and len(result.records) == 2
    c.commit(result)   # the second record was computed on the image after the first
    assert [c.image.brokers[b].fenced for b in (1, 2, 3)] == [True, True, False]
    assert all(p.isr == (3,) and p.leader == 3 for p in c.parts("t"))
    assert c.builder.fence_expired_brokers(c.image, 10**9, {1: 0}).records == ()   # already fenced
    assert c.builder.fence_expired_brokers(c.image, 10**9, {}).records == ()       # untracked: left alone


def test_want_fence_and_controlled_shutdown() -> None:
    c = Cluster()
    c.create("t", 6)
    result = c.heartbeat(1, want_shutdown=True)
    assert result.should_shut_down and not result.is_fenced
    record = decode_record(c.log[-1])
    assert isinstance(record, ControlledShutdownRecord)
    assert c.image.brokers[1].in_controlled_shutdown and not c.image.is_active(1)
    assert all(p.leader != 1 and 1 not in p.isr for p in c.parts("t"))
    assert c.create("u", 1, 3).error == ErrorCode.INVALID_REPLICATION_FACTOR   # not eligible for placement
    assert c.heartbeat(1).is_fenced is False       # no unfencing back out of a shutdown
    assert c.heartbeat(1, want_fence=True).is_fenced
    assert isinstance(decode_record(c.log[-1]), FenceBrokerRecord)
    entries = len(c.log)
    assert c.heartbeat(1, want_shutdown=True).should_shut_down   # fenced: shut down at once, no record
    assert len(c.log) == entries
    c.register(1, new_incarnation=True)            # it comes back
    assert not c.image.brokers[1].in_controlled_shutdown and not c.heartbeat(1).is_fenced


# --- AlterPartition ----------------------------------------------------------------------------


def test_isr_shrink_and_expand_bump_only_the_partition_epoch() -> None:
    c = Cluster()
    c.create("t", 1)
    part = c.parts("t")[0]
    follower = part.replicas[2]
    shrunk = c.alter("t", 0, [r for r in part.replicas if r != follower])
    assert shrunk.error == ErrorCode.NONE and follower not in shrunk.isr
    now = c.parts("t")[0]
    assert (now.leader, now.leader_epoch, now.partition_epoch) == (part.leader, part.leader_epoch, 1)
    assert (shrunk.leader_epoch, shrunk.partition_epoch, shrunk.isr) == (now.leader_epoch, 1, now.isr)
    expanded = c.alter("t", 0, part.replicas)
    assert expanded.error == ErrorCode.NONE and c.parts("t")[0].isr == part.replicas
    assert c.parts("t")[0].partition_epoch == 2
    entries = len(c.log)
    same = c.alter("t", 0, part.replicas)          # nothing to change: no record
    assert same.error == ErrorCode.NONE and len(c.log) == entries and same.partition_epoch == 2


def test_stale_and_invalid_alter_partition_requests_are_rejected() -> None:
    c = Cluster()
    c.create("t", 1)
    part = c.parts("t")[0]
    leader, f1, f2 = part.replicas
    assert c.alter("t", 0, [leader, f1]).error == ErrorCode.NONE            # partition epoch 0 -> 1
    # the same leader retrying its old view (partition epoch 0) is stale
    assert c.alter("t", 0, [leader], partition_epoch=0).error == ErrorCode.INVALID_UPDATE_VERSION
    assert c.alter("t", 0, [leader], partition_epoch=5).error == ErrorCode.NOT_CONTROLLER
    assert c.alter("t", 0, [leader], leader_epoch=3).error == ErrorCode.NOT_CONTROLLER
    c.fence(leader)                                                          # leader epoch 0 -> 1
    new_leader = c.parts("t")[0].leader
    assert new_leader == f1
    assert c.alter("t", 0, [f1], by=f1, leader_epoch=0).error == ErrorCode.FENCED_LEADER_EPOCH
    assert c.alter("t", 0, [f1, f2], by=f2).error == ErrorCode.INVALID_REQUEST           # not the leader
    assert c.alter("t", 0, [f2]).error == ErrorCode.INVALID_REQUEST                      # leader not in ISR
    assert c.alter("t", 0, [f1, 99]).error == ErrorCode.INVALID_REQUEST                  # not a replica
    assert c.alter("t", 0, [f1, leader]).error == ErrorCode.INELIGIBLE_REPLICA           # fenced
    unknown = AlterPartitionItem(bytes(range(16)), 0, 0, 0, ((f1, -1),))
    response = c.builder.alter_partition(c.image, f1, c.epoch(f1), [unknown]).response
    assert response.partitions[0].error == ErrorCode.UNKNOWN_TOPIC_ID
    tid = c.image.topic("t").topic_id
    no_part = AlterPartitionItem(tid, 5, 0, 0, ((f1, -1),))
    response = c.builder.alter_partition(c.image, f1, c.epoch(f1), [no_part]).response
    assert response.partitions[0].error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    now = c.parts("t")[0]
    item = AlterPartitionItem(tid, 0, now.leader_epoch, now.partition_epoch, ((f1, -1),))
    response = c.builder.alter_partition(c.image, f1, c.epoch(f1), [item, item]).response
    assert [p.error for p in response.partitions] == [ErrorCode.INVALID_REQUEST] * 2
    assert c.builder.alter_partition(c.image, f1, c.epoch(f1) + 1, [item]).response.error == \
        ErrorCode.STALE_BROKER_EPOCH
    assert c.parts("t")[0] == now


def test_alter_partition_batches_valid_items_into_one_record_and_reports_the_rest() -> None:
    c = Cluster()
    c.create("t", 2)
    tid = c.image.topic("t").topic_id
    p0, p1 = c.parts("t")
    # broker p0.leader asks for both; it leads only partition 0 unless it also leads 1
    items = [AlterPartitionItem(tid, i, p.leader_epoch, p.partition_epoch, ((p0.leader, -1),))
             for i, p in enumerate((p0, p1))]
    result = c.builder.alter_partition(c.image, p0.leader, c.epoch(p0.leader), items)
    assert result.response.partitions[0].error == ErrorCode.NONE
    expected = ErrorCode.NONE if p1.leader == p0.leader else ErrorCode.INVALID_REQUEST
    assert result.response.partitions[1].error == expected
    assert len(result.records) == 1 and isinstance(result.records[0], PartitionChangeRecord)
    c.commit(result)
    assert c.parts("t")[0].isr == (p0.leader,)


# --- preferred leaders -------------------------------------------------------------------------


def test_preferred_leader_election_restores_replicas_0_when_it_is_back_in_the_isr() -> None:
    c = Cluster()
    c.create("t", 6)
    c.fence(1)
    assert not c.heartbeat(1).is_fenced
    results = c.commit(c.builder.elect_preferred_leaders(c.image))
    by_leader = {p.replicas[0]: p for p in c.parts("t")}
    assert {r.error for r in results} <= {ErrorCode.ELECTION_NOT_NEEDED, ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE}
    assert ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE in {r.error for r in results}   # 1 is not in the ISRs yet
    assert by_leader[1].leader != 1
    c.catch_up(1)
    before = {i: p.leader_epoch for i, p in enumerate(c.parts("t"))}
    results = c.commit(c.builder.elect_preferred_leaders(c.image))
    for index, part in enumerate(c.parts("t")):
        assert part.leader == part.replicas[0]
        moved = results[index].error == ErrorCode.NONE
        assert part.leader_epoch == before[index] + moved
    assert all(r.error == ErrorCode.ELECTION_NOT_NEEDED
               for r in c.builder.elect_preferred_leaders(c.image).response)
    unknown = c.builder.elect_preferred_leaders(c.image, [(bytes(range(16)), 0)]).response
    assert unknown[0].error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_preferred_leader_is_not_elected_while_it_is_fenced() -> None:
    c = Cluster()
    c.create("t", 1)
    part = c.parts("t")[0]
    c.alter("t", 0, part.replicas[:1])          # ISR = {preferred}
    c.alter("t", 0, part.replicas)
    c.fence(part.replicas[0])
    [result] = c.builder.elect_preferred_leaders(c.image).response
    assert result.error == ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE


# --- producer ids ------------------------------------------------------------------------------


def test_producer_id_blocks_never_overlap_across_brokers_and_snapshots() -> None:
    c = Cluster(config=BuilderConfig(producer_id_block_size=100))
    blocks = []
    for i in range(12):
        b = 1 + i % 3
        if i == 6:   # a snapshot/restart of the controller in the middle
            c.image = MetadataImage.from_snapshot(c.image.snapshot())
        result = c.commit(c.builder.allocate_producer_ids(c.image, b, c.epoch(b)))
        assert result.error == ErrorCode.NONE
        blocks.append(range(result.first_producer_id, result.first_producer_id + result.size))
    ids = [pid for block in blocks for pid in block]
    assert len(ids) == len(set(ids)) == 1200 and ids == sorted(ids)
    stale = c.builder.allocate_producer_ids(c.image, 1, c.epoch(1) - 1)
    assert stale.response.error == ErrorCode.STALE_BROKER_EPOCH and stale.records == ()


def test_producer_ids_are_never_issued_past_the_maximum() -> None:
    c = Cluster(brokers=1)
    c.image = MetadataImage(c.image.offset, c.image.brokers, c.image.topics, limits.PRODUCER_ID_MAX - 10)
    result = c.builder.allocate_producer_ids(c.image, 1, c.epoch(1))
    assert result.response.error == ErrorCode.UNKNOWN_SERVER_ERROR and result.records == ()


# --- the builder is pure -------------------------------------------------------------------------


def test_the_builder_never_mutates_the_image_it_is_given() -> None:
    c = Cluster()
    c.create("t", 3)
    snapshot = c.image.snapshot()
    image = c.image
    tid = image.topic("t").topic_id
    c.builder.create_topics(image, [CreateTopic("u", 3, 3)])
    c.builder.delete_topics(image, ["t"])
    c.builder.alter_configs(image, {"t": {"retention.ms": "5"}})
    c.builder.register_broker(image, 2, bytes(range(16)), [Listener("P", "h", 1)], previous_session_alive=False)
    c.builder.heartbeat(image, 1, c.epoch(1), image.offset, want_shutdown=True)
    c.builder.fence_broker(image, 2)
    c.builder.fence_expired_brokers(image, 10**9, {1: 0, 2: 0, 3: 0})
    c.builder.alter_partition(image, 1, c.epoch(1), [AlterPartitionItem(tid, 0, 0, 0, ((1, -1),))])
    c.builder.elect_preferred_leaders(image)
    c.builder.allocate_producer_ids(image, 1, c.epoch(1))
    assert image.snapshot() == snapshot and c.image is image
