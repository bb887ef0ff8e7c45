"""Topic administration through the real admin clients, each against a fresh brokerd:
confluent-kafka's AdminClient (librdkafka 2.16: CreateTopics v4, DescribeConfigs v1,
IncrementalAlterConfigs, DeleteTopics, Metadata) and kafka-python's KafkaAdminClient (CreateTopics,
DescribeConfigs, DeleteTopics, describe_cluster served from Metadata since DescribeCluster is not
advertised). kcat's metadata listing is checked too.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from interop_clients import CLIENT_TIMEOUT_S, require

WEEK_MS = str(7 * 24 * 3600 * 1000)


def test_confluent_admin_client(start_broker) -> None:
    require("confluent")
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ConfigSource,
        NewTopic,
    )

    broker = start_broker()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def error_of(future) -> int:
        with pytest.raises(KafkaException) as info:
            future.result(timeout=CLIENT_TIMEOUT_S)
        return info.value.args[0].code()

    # create, with a topic config
    futures = admin.create_topics([NewTopic("admin-c", 3, 1, config={"retention.ms": "3600000"})])
    assert futures["admin-c"].result(timeout=CLIENT_TIMEOUT_S) is None
    assert error_of(admin.create_topics([NewTopic("admin-c", 1, 1)])["admin-c"]) == KafkaError.TOPIC_ALREADY_EXISTS
    assert error_of(admin.create_topics([NewTopic("admin-rf", 1, 2)])["admin-rf"]) == \
        KafkaError.INVALID_REPLICATION_FACTOR
    assert error_of(admin.create_topics([NewTopic("bad name", 1, 1)])["bad name"]) == KafkaError.TOPIC_EXCEPTION
    assert error_of(admin.create_topics([NewTopic("admin-cfg", 1, 1, config={"nope": "1"})])["admin-cfg"]) == \
        KafkaError.INVALID_CONFIG
    assert admin.create_topics([NewTopic("admin-dry", 1, 1)], validate_only=True)["admin-dry"].result(
        timeout=CLIENT_TIMEOUT_S) is None

    # list_topics (Metadata)
    md = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
    assert md.controller_id == 1 and md.cluster_id
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: ("127.0.0.1", broker.port)}
    assert "admin-dry" not in md.topics and "admin-rf" not in md.topics
    parts = md.topics["admin-c"].partitions
    assert sorted(parts) == [0, 1, 2]
    assert all(p.leader == 1 and p.replicas == [1] and p.isrs == [1] and p.error is None for p in parts.values())

    # describe_configs: topic and broker
    (topic_future,) = admin.describe_configs([ConfigResource("topic", "admin-c")]).values()
    configs = topic_future.result(timeout=CLIENT_TIMEOUT_S)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].value == "delete"
    assert configs["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value
    (broker_future,) = admin.describe_configs([ConfigResource("broker", "1")]).values()
    broker_configs = broker_future.result(timeout=CLIENT_TIMEOUT_S)
    assert broker_configs["node.id"].value == "1"
    assert broker_configs["log.retention.ms"].value == WEEK_MS

    # incremental_alter_configs: set, then delete back to the default
    change = ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
    (alter_future,) = admin.incremental_alter_configs([ConfigResource("topic", "admin-c",
                                                                      incremental_configs=[change])]).values()
    assert alter_future.result(timeout=CLIENT_TIMEOUT_S) is None
    (topic_future,) = admin.describe_configs([ConfigResource("topic", "admin-c")]).values()
    assert topic_future.result(timeout=CLIENT_TIMEOUT_S)["retention.ms"].value == "7200000"
    reset = ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)
    (alter_future,) = admin.incremental_alter_configs([ConfigResource("topic", "admin-c",
                                                                      incremental_configs=[reset])]).values()
    alter_future.result(timeout=CLIENT_TIMEOUT_S)
    (topic_future,) = admin.describe_configs([ConfigResource("topic", "admin-c")]).values()
    assert topic_future.result(timeout=CLIENT_TIMEOUT_S)["retention.ms"].value == WEEK_MS

    # delete
    assert admin.delete_topics(["admin-c"])["admin-c"].result(timeout=CLIENT_TIMEOUT_S) is None
    assert "admin-c" not in admin.list_topics(timeout=CLIENT_TIMEOUT_S).topics
    assert not os.path.exists(os.path.join(broker.data_dir, "admin-c-0"))
    assert error_of(admin.delete_topics(["admin-c"])["admin-c"]) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_admin_client(start_broker) -> None:
    require("kafka_python")
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

    broker = start_broker()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="replog-interop-admin")
    try:
        result = admin.create_topics([NewTopic("admin-k", 2, 1, topic_configs={"retention.ms": "3600000"})])
        assert [(t["name"], t["error_code"]) for t in result["topics"]] == [("admin-k", 0)]
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic("admin-k", 2, 1)])
        with pytest.raises(InvalidReplicationFactorError):
            admin.create_topics([NewTopic("admin-k-rf", 1, 3)])
        assert "admin-k" in admin.list_topics() and "admin-k-rf" not in admin.list_topics()

        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 1 and cluster["cluster_id"]
        assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [
            (1, "127.0.0.1", broker.port)]

        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "admin-k")], config_filter="all")
        topic_configs = described["topic"]["admin-k"]
        assert topic_configs["retention.ms"]["value"] == "3600000"
        assert topic_configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert topic_configs["segment.bytes"]["config_source"] == "DEFAULT_CONFIG"
        modified = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "admin-k")])  # default filter
        assert set(modified["topic"]["admin-k"]) == {"retention.ms"}
        described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
        assert described["broker"]["1"]["node.id"]["value"] == "1"

        result = admin.delete_topics(["admin-k"])
        assert [(t["name"], t["error_code"]) for t in result["topics"]] == [("admin-k", 0)]
        assert "admin-k" not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics(["admin-k"])
    finally:
        admin.close()


def test_kcat_lists_metadata_and_queries_offsets(start_broker) -> None:
    require("kcat")
    broker = start_broker("--set", "num.partitions=2")
    produce = subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", "kcat-meta", "-p", "1", "-X", "acks=all"],
                             input=b"one\ntwo\n", capture_output=True, timeout=CLIENT_TIMEOUT_S)
    assert produce.returncode == 0, produce.stderr
    listing = subprocess.run(["kcat", "-b", broker.bootstrap, "-L", "-t", "kcat-meta"], capture_output=True,
                             text=True, timeout=CLIENT_TIMEOUT_S)
    assert listing.returncode == 0, listing.stderr
    assert "1 brokers:" in listing.stdout and f"127.0.0.1:{broker.port}" in listing.stdout
    assert 'topic "kcat-meta" with 2 partitions' in listing.stdout
    query = subprocess.run(["kcat", "-b", broker.bootstrap, "-Q", "-t", "kcat-meta:1:0"], capture_output=True,
                           text=True, timeout=CLIENT_TIMEOUT_S)
    assert query.returncode == 0, query.stderr
    assert "kcat-meta [1] offset 0" in query.stdout
