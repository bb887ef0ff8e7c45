"""Consumer-group smoke tests with real clients against one brokerd: kafka-python's
KafkaConsumer(group_id=...), kcat -G (librdkafka 2.0.2) and confluent-kafka (librdkafka 2.16).

Each client joins a group on a 4-partition topic holding 5 records per partition, consumes to the
end, commits, and stops; after 2 more records per partition, a new member of the same group gets
exactly those (it resumes at the committed offsets). Clients that are not installed are skipped
(REPLOG_REQUIRE_INTEROP=1 makes that a failure; tests/interop/interop_clients.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from brokerproc import BrokerProcess, free_port
from test_protocol_helpers import KafkaConnection, assert_clean_log, batch, create_topic, produce, unique_topic

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop"))

from interop_clients import require

PARTITIONS = 4
FIRST_PER_PARTITION = 5
MORE_PER_PARTITION = 2
CLIENT_DEADLINE_S = 30.0

Seen = set[tuple[int, int]]  # (partition, offset)


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("groups-interop")
    proc = BrokerProcess(str(base / "data"), free_port(), ["--set", "group.initial.rebalance.delay.ms=0"])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_clean_log(proc)


def _fill(bootstrap: str, topic: str, per_partition: int, create: bool) -> None:
    with KafkaConnection(bootstrap) as conn:
        if create:
            create_topic(conn, topic, PARTITIONS)
        for partition in range(PARTITIONS):
            assert produce(conn, topic, batch(per_partition), partition)["error_code"] == 0


def _expected(first: int, count: int) -> Seen:
    return {(p, o) for p in range(PARTITIONS) for o in range(first, first + count)}


def _kafka_python(bootstrap: str, topic: str, group: str, want: int) -> Seen:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    seen: Seen = set()
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    try:
        while len(seen) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen |= {(r.partition, r.offset) for r in records}
        consumer.commit()
    finally:
        consumer.close()
    return seen


def _confluent(bootstrap: str, topic: str, group: str, want: int) -> Seen:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    seen: Seen = set()
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    try:
        consumer.subscribe([topic])
        while len(seen) < want and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen.add((message.partition(), message.offset()))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen


def _kcat(bootstrap: str, topic: str, group: str, want: int) -> Seen:
    """kcat -G to the end of every partition (-e); it commits the consumed offsets when it closes."""
    result = subprocess.run(["kcat", "-b", bootstrap, "-G", group, topic, "-e", "-q", "-f", "%p:%o\n",
                             "-X", "auto.offset.reset=earliest"], capture_output=True, timeout=CLIENT_DEADLINE_S)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return {(int(p), int(o)) for p, o in (line.split(":") for line in result.stdout.decode().split())}


CLIENTS: dict[str, Callable[[str, str, str, int], Seen]] = {
    "kafka_python": _kafka_python, "confluent": _confluent, "kcat": _kcat}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_group_consume_commit_and_resume(group_broker: BrokerProcess, client: str) -> None:
    require(client)
    consume = CLIENTS[client]
    topic, group = unique_topic(), unique_topic("group")
    _fill(group_broker.bootstrap, topic, FIRST_PER_PARTITION, create=True)
    first = consume(group_broker.bootstrap, topic, group, PARTITIONS * FIRST_PER_PARTITION)
    assert first == _expected(0, FIRST_PER_PARTITION)
    _fill(group_broker.bootstrap, topic, MORE_PER_PARTITION, create=False)
    resumed = consume(group_broker.bootstrap, topic, group, PARTITIONS * MORE_PER_PARTITION)
    assert resumed == _expected(FIRST_PER_PARTITION, MORE_PER_PARTITION)


def _committed_then_closed(bootstrap: str, topic: str, group: str) -> None:
    """A kafka-python member consumes everything, commits and leaves: an Empty group with offsets."""
    assert _kafka_python(bootstrap, topic, group, PARTITIONS * FIRST_PER_PARTITION) == _expected(0, FIRST_PER_PARTITION)


def test_kafka_python_admin_lists_describes_and_deletes_groups(group_broker: BrokerProcess) -> None:
    require("kafka_python")
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient

    topic, group = unique_topic(), unique_topic("group")
    _fill(group_broker.bootstrap, topic, FIRST_PER_PARTITION, create=True)
    _committed_then_closed(group_broker.bootstrap, topic, group)
    admin = KafkaAdminClient(bootstrap_servers=group_broker.bootstrap)
    member = KafkaConsumer(topic, bootstrap_servers=group_broker.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while not member.assignment():
            assert time.monotonic() < deadline, "the member never got an assignment"
            member.poll(timeout_ms=100)
        assert {"group_id": group, "protocol_type": "consumer"} in admin.list_groups()
        described = admin.describe_groups([group])[group]
        assert described["group_state"] == "Stable" and described["protocol_data"] == "range"
        (m,) = described["members"]
        everything = [{"topic": topic, "partitions": list(range(PARTITIONS))}]
        assert m["member_assignment"]["assigned_partitions"] == everything
        offsets = admin.list_group_offsets(group)[group]
        assert {tp.partition: o.offset for tp, o in offsets.items()} == dict.fromkeys(range(PARTITIONS),
                                                                                  FIRST_PER_PARTITION)
    finally:
        member.close()
    assert admin.delete_groups([group]) == {group: "OK"}
    assert group not in {g["group_id"] for g in admin.list_groups()}
    admin.close()


def test_confluent_admin_lists_describes_and_deletes_groups(group_broker: BrokerProcess) -> None:
    require("confluent")
    require("kafka_python")
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    topic, group = unique_topic(), unique_topic("group")
    _fill(group_broker.bootstrap, topic, FIRST_PER_PARTITION, create=True)
    _committed_then_closed(group_broker.bootstrap, topic, group)
    admin = AdminClient({"bootstrap.servers": group_broker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=CLIENT_DEADLINE_S)
    assert group in {g.group_id for g in listed.valid}
    described = admin.describe_consumer_groups([group])[group].result(timeout=CLIENT_DEADLINE_S)
    assert described.state.name == "EMPTY" and described.members == []
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(
        timeout=CLIENT_DEADLINE_S)
    assert {tp.partition: tp.offset for tp in result.topic_partitions} == dict.fromkeys(range(PARTITIONS),
                                                                                       FIRST_PER_PARTITION)
    admin.delete_consumer_groups([group])[group].result(timeout=CLIENT_DEADLINE_S)
    listed = admin.list_consumer_groups().result(timeout=CLIENT_DEADLINE_S)
    assert group not in {g.group_id for g in listed.valid}
