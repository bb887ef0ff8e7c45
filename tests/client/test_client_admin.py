"""The admin client against brokerd: create / describe / alter / delete and the error cases."""

from __future__ import annotations

import asyncio

import pytest

from client import Admin, NewTopic, Producer
from client.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from client.wire.errors import ErrorCode


def test_create_describe_alter_delete(broker) -> None:
    async def run() -> None:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("orders", partitions=3, replication_factor=1, configs={"retention.ms": "3600000"})
            await admin.create_topics([NewTopic("a"), NewTopic("b", 2, 1)])
            assert {"orders", "a", "b"} <= set(await admin.list_topics())
            async with Producer(broker.bootstrap, linger_ms=1) as producer:
                await asyncio.gather(*(producer.send("orders", b"v", partition=1) for _ in range(7)))
            described = await admin.describe_topics(["orders", "b"])
            assert list(described) == ["orders", "b"]
            orders = described["orders"]
            assert [p.partition for p in orders.partitions] == [0, 1, 2] and not orders.is_internal
            node = (await admin.describe_cluster()).brokers[0].node_id
            for p in orders.partitions:
                assert (p.leader, p.replicas, p.isr, p.leader_epoch) == (node, (node,), (node,), 0)
                assert p.log_start_offset == 0
            assert [p.high_watermark for p in orders.partitions] == [0, 7, 0]
            assert len(described["b"].partitions) == 2

            configs = await admin.describe_configs("orders")
            assert configs["retention.ms"].value == "3600000" and configs["retention.ms"].source == "dynamic_topic"
            assert configs["cleanup.policy"].is_default
            await admin.alter_configs("orders", {"retention.ms": "60000", "cleanup.policy": "compact"})
            configs = await admin.describe_configs("orders", keys=["retention.ms", "cleanup.policy"])
            assert set(configs) == {"retention.ms", "cleanup.policy"}
            assert (configs["retention.ms"].value, configs["cleanup.policy"].value) == ("60000", "compact")
            await admin.alter_configs("orders", {"cleanup.policy": None})  # DELETE: back to the default
            assert (await admin.describe_configs("orders"))["cleanup.policy"].is_default

            cluster = await admin.describe_cluster()
            assert cluster.cluster_id and cluster.controller_id == node
            assert [(b.host, b.port) for b in cluster.brokers] == [("127.0.0.1", broker.port)]
            assert (await admin.describe_configs(str(node), resource="broker"))

            await admin.delete_topics(["a", "b"])
            await admin.delete_topic("orders")
            assert not {"orders", "a", "b"} & set(await admin.list_topics())

    asyncio.run(run())


def test_errors_carry_the_code_and_the_broker_message(broker) -> None:
    async def run() -> None:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic("exists", partitions=1)
            with pytest.raises(TopicAlreadyExistsError) as info:
                await admin.create_topic("exists", partitions=1)
            assert info.value.code == ErrorCode.TOPIC_ALREADY_EXISTS and "already exists" in str(info.value)
            with pytest.raises(InvalidReplicationFactorError) as info:
                await admin.create_topic("rf3", partitions=1, replication_factor=3)
            assert info.value.code == ErrorCode.INVALID_REPLICATION_FACTOR and "replication factor" in str(info.value)
            with pytest.raises(InvalidPartitionsError):
                await admin.create_topic("zero", partitions=0)
            with pytest.raises(InvalidConfigError):
                await admin.create_topic("badcfg", partitions=1, configs={"retention.ms": "soon"})
            with pytest.raises(TopicAlreadyExistsError) as info:  # plural: the first failure, all of them attached
                await admin.create_topics([NewTopic("fresh", 1), NewTopic("exists", 1), NewTopic("rf9", 1, 9)])
            assert set(info.value.errors) == {"exists", "rf9"}  # type: ignore[attr-defined]
            assert "fresh" in await admin.list_topics()
            for call in (admin.describe_topics(["missing"]), admin.delete_topic("missing"),
                         admin.describe_configs("missing"), admin.alter_configs("missing", {"retention.ms": "1"})):
                with pytest.raises(UnknownTopicOrPartitionError) as info:
                    await call
                assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            with pytest.raises(InvalidConfigError):
                await admin.alter_configs("exists", {"retention.ms": "never"})
            await admin.create_topic("checked", partitions=1, validate_only=True)
            assert "checked" not in await admin.list_topics()

    asyncio.run(run())


def test_describe_an_offline_partition_without_waiting_for_its_offsets() -> None:
    """A partition without a leader (LEADER_NOT_AVAILABLE, leader -1) cannot answer ListOffsets: it is
    described at once with offsets None, the others with theirs (scripted fake broker)."""
    from client_fakebroker import FakeBroker

    from client.admin import PartitionDescription

    async def run() -> None:
        fake = await FakeBroker({"t": 3}).start()
        try:
            fake.partition_overrides[("t", 1)] = {"leader_id": -1, "error_code": ErrorCode.LEADER_NOT_AVAILABLE,
                                                  "isr_nodes": [], "offline_replicas": [1]}
            async with Producer(fake.bootstrap, linger_ms=0) as producer:
                await producer.send_and_wait("t", b"v", partition=2)
            async with Admin(fake.bootstrap, default_api_timeout_ms=30_000) as admin:
                loop = asyncio.get_running_loop()
                started = loop.time()
                partitions = (await admin.describe_topics(["t"]))["t"].partitions
                elapsed = loop.time() - started
            assert partitions == [
                PartitionDescription(0, 1, 0, (1,), (1,), (), 0, 0),
                PartitionDescription(1, -1, 0, (1,), (), (1,), None, None, ErrorCode.LEADER_NOT_AVAILABLE),
                PartitionDescription(2, 1, 0, (1,), (1,), (), 0, 1)]
            assert elapsed < 5  # not the 30 s api timeout of ListOffsets retries
        finally:
            await fake.stop()

    asyncio.run(run())
