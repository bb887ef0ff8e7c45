"""Topic administration on the wire: CreateTopics, DeleteTopics, DescribeConfigs,
IncrementalAlterConfigs, Metadata auto-creation, and what survives a restart
(broker/handlers/topics.py, configs.py, metadata.py).
"""

from __future__ import annotations

import os

import pytest
import test_protocol_helpers as helpers
from test_protocol_helpers import (
    API_CREATE_TOPICS,
    API_DELETE_TOPICS,
    API_DESCRIBE_CONFIGS,
    API_FETCH,
    API_INCREMENTAL_ALTER_CONFIGS,
    API_METADATA,
    CREATE_TOPICS_V,
    DELETE_TOPICS_V,
    DESCRIBE_CONFIGS_V,
    FETCH_V,
    METADATA_V,
    KafkaConnection,
    batch,
    create_topic,
    fetch_body,
    fetch_partitions,
    list_offsets,
    produce,
    unique_topic,
)

from client.wire.errors import ErrorCode

shared_broker = helpers.shared_broker
conn = helpers.conn

RESOURCE_TOPIC, RESOURCE_BROKER = 2, 4
SOURCE_DYNAMIC_TOPIC, SOURCE_STATIC_BROKER, SOURCE_DEFAULT = 1, 4, 5
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3
LATEST = -1


# ------------------------------------------------------------------------------------ helpers

def _create(conn: KafkaConnection, *topics: dict, validate_only: bool = False,
            version: int = CREATE_TOPICS_V) -> list[dict]:
    full = [{"num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": [], **t} for t in topics]
    body = conn.request(API_CREATE_TOPICS, version, {"topics": full, "timeout_ms": 5000,
                                                     "validate_only": validate_only})
    return body["topics"]


def _create_one(conn: KafkaConnection, name: str, **fields) -> tuple[int, str | None]:
    (result,) = _create(conn, {"name": name, **fields})
    assert result["name"] == name
    return result["error_code"], result["error_message"]


def _configs(**kv: str | None) -> list[dict]:
    return [{"name": k.replace("_", "."), "value": v} for k, v in kv.items()]


def _metadata(conn: KafkaConnection, *names: str, allow_auto_create: bool = False,
              version: int = METADATA_V) -> dict[str, dict]:
    body = conn.request(API_METADATA, version, {"topics": [{"name": n} for n in names],
                                                "allow_auto_topic_creation": allow_auto_create})
    return {t["name"]: t for t in body["topics"]}


def _exists(conn: KafkaConnection, name: str) -> bool:
    return _metadata(conn, name)[name]["error_code"] == 0


def _describe(conn: KafkaConnection, kind: int, name: str, keys: list[str] | None = None) -> dict:
    body = conn.request(API_DESCRIBE_CONFIGS, DESCRIBE_CONFIGS_V, {"resources": [
        {"resource_type": kind, "resource_name": name, "configuration_keys": keys}], "include_synonyms": False})
    (result,) = body["results"]
    assert (result["resource_type"], result["resource_name"]) == (kind, name)
    return result


def _topic_configs(conn: KafkaConnection, name: str) -> dict[str, dict]:
    result = _describe(conn, RESOURCE_TOPIC, name)
    assert result["error_code"] == 0, result
    return {c["name"]: c for c in result["configs"]}


def _alter(conn: KafkaConnection, name: str, *ops: tuple[int, str, str | None], validate_only: bool = False,
           kind: int = RESOURCE_TOPIC) -> tuple[int, str | None]:
    body = conn.request(API_INCREMENTAL_ALTER_CONFIGS, 0, {"resources": [
        {"resource_type": kind, "resource_name": name,
         "configs": [{"config_operation": op, "name": k, "value": v} for op, k, v in ops]}],
        "validate_only": validate_only})
    (result,) = body["responses"]
    assert (result["resource_type"], result["resource_name"]) == (kind, name)
    return result["error_code"], result["error_message"]


def _delete(conn: KafkaConnection, *names: str) -> dict[str, int]:
    body = conn.request(API_DELETE_TOPICS, DELETE_TOPICS_V, {"topic_names": list(names), "timeout_ms": 5000})
    return {r["name"]: r["error_code"] for r in body["responses"]}


# ------------------------------------------------------------------------------------ CreateTopics

@pytest.mark.parametrize("version", [2, 3, 4])
def test_create_topics_creates_with_partitions_and_configs(conn: KafkaConnection, version: int) -> None:
    name = unique_topic("created")
    (result,) = _create(conn, {"name": name, "num_partitions": 3, "configs": _configs(retention_ms="3600000")},
                        version=version)
    assert (result["error_code"], result["error_message"]) == (0, None)
    topic = _metadata(conn, name)[name]
    assert sorted(p["partition_index"] for p in topic["partitions"]) == [0, 1, 2]
    assert all(p["error_code"] == 0 and p["leader_id"] == 1 and p["replica_nodes"] == [1] for p in topic["partitions"])
    assert _topic_configs(conn, name)["retention.ms"]["value"] == "3600000"


def test_create_topics_defaults_for_minus_one(conn: KafkaConnection) -> None:
    name = unique_topic("defaults")
    assert _create_one(conn, name, num_partitions=-1, replication_factor=-1) == (0, None)
    assert len(_metadata(conn, name)[name]["partitions"]) == 1  # num.partitions


def test_create_topics_existing_name(conn: KafkaConnection) -> None:
    name = unique_topic("twice")
    create_topic(conn, name, partitions=2)
    error, message = _create_one(conn, name, num_partitions=5)
    assert error == ErrorCode.TOPIC_ALREADY_EXISTS
    assert message and name in message
    assert len(_metadata(conn, name)[name]["partitions"]) == 2  # unchanged


@pytest.mark.parametrize("name", ["", ".", "..", "has space", "slash/y", "ü", "x" * 250, "comma,x"])
def test_create_topics_bad_names(conn: KafkaConnection, name: str) -> None:
    assert _create_one(conn, name)[0] == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_create_topics_longest_legal_name(shared_broker, conn: KafkaConnection) -> None:
    name = "n" * 249
    assert _create_one(conn, name) == (0, None)
    assert _exists(conn, name)


@pytest.mark.parametrize("replication", [2, 3, 0])
def test_create_topics_replication_factor_other_than_1(conn: KafkaConnection, replication: int) -> None:
    name = unique_topic("rf")
    assert _create_one(conn, name, replication_factor=replication)[0] == ErrorCode.INVALID_REPLICATION_FACTOR
    assert not _exists(conn, name)


@pytest.mark.parametrize("partitions", [0, -5, 10_001])
def test_create_topics_bad_partition_counts(conn: KafkaConnection, partitions: int) -> None:
    name = unique_topic("parts")
    assert _create_one(conn, name, num_partitions=partitions)[0] == ErrorCode.INVALID_PARTITIONS
    assert not _exists(conn, name)


@pytest.mark.parametrize("configs", [
    {"no.such.config": "1"},
    {"retention.ms": "soon"},
    {"cleanup.policy": "shred"},
    {"message.timestamp.type": "Whenever"},
    {"compression.type": "bogus"},
    {"min.cleanable.dirty.ratio": "2"},
    {"segment.bytes": "12"},
    {"segment.bytes": "-1"},
    {"max.message.bytes": "-1"},
    {"retention.ms": "-7"},
], ids=lambda c: "=".join(next(iter(c.items()))))
def test_create_topics_bad_configs(conn: KafkaConnection, configs: dict[str, str]) -> None:
    name = unique_topic("cfg")
    error, message = _create_one(conn, name, configs=_configs(**{k.replace(".", "_"): v for k, v in configs.items()}))
    assert error == ErrorCode.INVALID_CONFIG
    assert message and next(iter(configs)) in message
    assert not _exists(conn, name)


def test_create_topics_validate_only_creates_nothing(shared_broker, conn: KafkaConnection) -> None:
    good, bad = unique_topic("dry"), unique_topic("dry-bad")
    results = _create(conn, {"name": good, "num_partitions": 2},
                      {"name": bad, "replication_factor": 3}, validate_only=True)
    assert [(r["name"], r["error_code"]) for r in results] == [
        (good, 0), (bad, ErrorCode.INVALID_REPLICATION_FACTOR)]
    assert not _exists(conn, good)
    assert not os.path.exists(os.path.join(shared_broker.data_dir, f"{good}-0"))
    existing = unique_topic("dry-existing")
    create_topic(conn, existing)
    (result,) = _create(conn, {"name": existing}, validate_only=True)
    assert result["error_code"] == ErrorCode.TOPIC_ALREADY_EXISTS


def test_create_topics_several_in_one_request(conn: KafkaConnection) -> None:
    a, b = unique_topic("multi"), unique_topic("multi")
    results = _create(conn, {"name": a}, {"name": "bad name"}, {"name": b, "num_partitions": 2})
    assert [r["error_code"] for r in results] == [0, ErrorCode.INVALID_TOPIC_EXCEPTION, 0]
    assert _exists(conn, a) and _exists(conn, b)


def test_create_topics_a_name_twice_in_one_request(conn: KafkaConnection) -> None:
    """Kafka answers INVALID_REQUEST for every entry of a repeated name and creates none of them."""
    name, other = unique_topic("dup"), unique_topic("single")
    results = _create(conn, {"name": name}, {"name": other}, {"name": name, "num_partitions": 2})
    assert [(r["name"], r["error_code"]) for r in results] == [
        (name, ErrorCode.INVALID_REQUEST), (other, 0), (name, ErrorCode.INVALID_REQUEST)]
    assert not _exists(conn, name) and _exists(conn, other)


def test_create_topics_with_explicit_assignments(conn: KafkaConnection) -> None:
    def assigned(*pairs: tuple[int, list[int]], num_partitions: int = -1) -> int:
        return _create_one(conn, unique_topic("assigned"), num_partitions=num_partitions, replication_factor=-1,
                           assignments=[{"partition_index": i, "broker_ids": b} for i, b in pairs])[0]

    assert assigned((0, [1]), (1, [1])) == 0
    assert assigned((0, [2])) == ErrorCode.INVALID_REPLICA_ASSIGNMENT  # another broker
    assert assigned((0, [])) == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert assigned((5, [1])) == ErrorCode.INVALID_REPLICA_ASSIGNMENT  # indexes must be 0..n-1
    assert assigned((1, [1]), (0, [1])) == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert assigned((0, [1]), num_partitions=1) == ErrorCode.INVALID_REQUEST  # both ways at once


# ------------------------------------------------------------------------------------ DeleteTopics

def test_delete_topics_removes_the_data(shared_broker, conn: KafkaConnection) -> None:
    name = unique_topic("doomed")
    create_topic(conn, name, partitions=2)
    produce(conn, name, batch(5), partition=0)
    produce(conn, name, batch(3), partition=1)
    dirs = [os.path.join(shared_broker.data_dir, f"{name}-{p}") for p in (0, 1)]
    assert all(os.path.isdir(d) for d in dirs)
    assert _delete(conn, name) == {name: 0}
    assert not any(os.path.exists(d) for d in dirs)
    assert _metadata(conn, name)[name]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert produce(conn, name, batch(1))["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    # a new topic of the same name starts empty
    create_topic(conn, name)
    assert list_offsets(conn, name, LATEST)["offset"] == 0


def test_delete_topics_unknown_and_mixed(conn: KafkaConnection) -> None:
    real, missing = unique_topic("real"), unique_topic("missing")
    create_topic(conn, real)
    assert _delete(conn, real, missing) == {real: 0, missing: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}


def test_delete_topics_a_name_twice_in_one_request(conn: KafkaConnection) -> None:
    name = unique_topic("dup-delete")
    create_topic(conn, name)
    body = conn.request(API_DELETE_TOPICS, DELETE_TOPICS_V, {"topic_names": [name, name], "timeout_ms": 5000})
    assert [(r["name"], r["error_code"]) for r in body["responses"]] == [(name, ErrorCode.INVALID_REQUEST)] * 2
    assert _exists(conn, name)


def test_delete_wakes_a_waiting_fetch(shared_broker, conn: KafkaConnection) -> None:
    name = unique_topic("deleted-while-polled")
    create_topic(conn, name)
    cid = conn.send(API_FETCH, FETCH_V, fetch_body(name, {0: 0}, max_wait_ms=5000))
    with KafkaConnection(shared_broker.bootstrap) as admin:
        assert _delete(admin, name) == {name: 0}
    part = fetch_partitions(conn.recv(API_FETCH, FETCH_V, cid, timeout_s=2))[0]
    assert part["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


# ------------------------------------------------------------------------------------ DescribeConfigs

def test_describe_configs_of_a_topic(conn: KafkaConnection) -> None:
    name = unique_topic("described")
    create_topic(conn, name, configs={"retention.ms": "12345", "cleanup.policy": "compact"})
    configs = _topic_configs(conn, name)
    assert configs["retention.ms"]["value"] == "12345"
    assert configs["retention.ms"]["config_source"] == SOURCE_DYNAMIC_TOPIC
    assert configs["cleanup.policy"]["value"] == "compact"
    assert configs["segment.bytes"]["config_source"] == SOURCE_DEFAULT
    assert configs["segment.bytes"]["value"] == str(1 << 30)
    assert configs["max.message.bytes"]["value"] == "1048588"
    assert configs["compression.type"]["value"] == "producer"
    assert all(not c["read_only"] and not c["is_sensitive"] for c in configs.values())
    # a key filter returns only those keys
    only = _describe(conn, RESOURCE_TOPIC, name, ["retention.ms", "no.such.key"])
    assert [c["name"] for c in only["configs"]] == ["retention.ms"]


def test_describe_configs_of_an_unknown_topic(conn: KafkaConnection) -> None:
    result = _describe(conn, RESOURCE_TOPIC, unique_topic("ghost"))
    assert result["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert result["configs"] == []


def test_describe_configs_of_the_broker(conn: KafkaConnection) -> None:
    result = _describe(conn, RESOURCE_BROKER, "1")
    assert result["error_code"] == 0
    configs = {c["name"]: c for c in result["configs"]}
    assert configs["node.id"]["value"] == "1"
    assert configs["auto.create.topics.enable"]["value"] in ("true", "True")
    assert configs["message.max.bytes"]["value"] == "1048588"
    assert all(c["config_source"] == SOURCE_STATIC_BROKER and c["read_only"] for c in configs.values())
    assert _describe(conn, RESOURCE_BROKER, "2")["error_code"] != 0  # not this broker


# ------------------------------------------------------------------------------------ IncrementalAlterConfigs

def test_incremental_alter_configs_set_and_delete(conn: KafkaConnection) -> None:
    name = unique_topic("altered")
    create_topic(conn, name, configs={"retention.ms": "1000"})
    assert _alter(conn, name, (OP_SET, "retention.ms", "2000"), (OP_SET, "segment.ms", "60000")) == (0, None)
    configs = _topic_configs(conn, name)
    assert (configs["retention.ms"]["value"], configs["retention.ms"]["config_source"]) == (
        "2000", SOURCE_DYNAMIC_TOPIC)
    assert configs["segment.ms"]["value"] == "60000"
    assert _alter(conn, name, (OP_DELETE, "retention.ms", None)) == (0, None)
    configs = _topic_configs(conn, name)
    assert configs["retention.ms"]["config_source"] == SOURCE_DEFAULT
    assert configs["retention.ms"]["value"] == str(7 * 24 * 3600 * 1000)
    assert configs["segment.ms"]["value"] == "60000"


def test_incremental_alter_configs_apply_at_once(conn: KafkaConnection) -> None:
    name = unique_topic("shrunk")
    create_topic(conn, name)
    assert produce(conn, name, batch(10, value_size=300))["error_code"] == 0
    assert _alter(conn, name, (OP_SET, "max.message.bytes", "1000")) == (0, None)
    assert produce(conn, name, batch(10, value_size=300))["error_code"] == ErrorCode.MESSAGE_TOO_LARGE


def test_incremental_alter_configs_validate_only(conn: KafkaConnection) -> None:
    name = unique_topic("dry-alter")
    create_topic(conn, name)
    assert _alter(conn, name, (OP_SET, "retention.ms", "5"), validate_only=True) == (0, None)
    assert _topic_configs(conn, name)["retention.ms"]["config_source"] == SOURCE_DEFAULT


@pytest.mark.parametrize(("op", "key", "value", "error"), [
    (OP_SET, "retention.ms", "later", ErrorCode.INVALID_CONFIG),
    (OP_SET, "retention.ms", None, ErrorCode.INVALID_CONFIG),
    (OP_SET, "compression.type", None, ErrorCode.INVALID_CONFIG),
    (OP_SET, "no.such.config", "1", ErrorCode.INVALID_CONFIG),
    (OP_DELETE, "no.such.config", None, ErrorCode.INVALID_CONFIG),
    (OP_APPEND, "cleanup.policy", "compact", ErrorCode.INVALID_REQUEST),
    (OP_SUBTRACT, "cleanup.policy", "delete", ErrorCode.INVALID_REQUEST),
    (7, "retention.ms", "1", ErrorCode.INVALID_REQUEST),
])
def test_incremental_alter_configs_invalid(conn: KafkaConnection, op: int, key: str, value: str | None,
                                           error: int) -> None:
    name = unique_topic("bad-alter")
    create_topic(conn, name, configs={"retention.ms": "1000"})
    # a valid change in the same resource is not applied either: the resource is all or nothing
    assert _alter(conn, name, (OP_SET, "segment.ms", "60000"), (op, key, value))[0] == error
    configs = _topic_configs(conn, name)
    assert configs["retention.ms"]["value"] == "1000"
    assert configs["segment.ms"]["config_source"] == SOURCE_DEFAULT


def test_incremental_alter_configs_unknown_topic_and_broker_resource(conn: KafkaConnection) -> None:
    assert _alter(conn, unique_topic("nobody"), (OP_SET, "retention.ms", "1"))[0] == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert _alter(conn, "1", (OP_SET, "log.retention.ms", "1"), kind=RESOURCE_BROKER)[0] != 0


# ------------------------------------------------------------------------------------ Metadata auto-creation

def test_metadata_auto_creates_when_allowed(start_broker) -> None:
    broker = start_broker("--set", "num.partitions=3")
    with KafkaConnection(broker.bootstrap) as c:
        name = unique_topic("auto")
        first = _metadata(c, name, allow_auto_create=True)[name]
        assert first["error_code"] in (0, ErrorCode.LEADER_NOT_AVAILABLE)
        topic = _metadata(c, name)[name]
        assert topic["error_code"] == 0
        assert len(topic["partitions"]) == 3
        assert produce(c, name, batch(1), partition=2)["error_code"] == 0
        # the request's own flag off: not created
        other = unique_topic("not-auto")
        assert _metadata(c, other, allow_auto_create=False)[other]["error_code"] == \
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert not _exists(c, other)
        # an invalid name is refused, not created
        assert _metadata(c, "bad name", allow_auto_create=True)["bad name"]["error_code"] == \
            ErrorCode.INVALID_TOPIC_EXCEPTION
        # Metadata v4 (kcat's version) also auto-creates
        v4 = unique_topic("auto-v4")
        _metadata(c, v4, allow_auto_create=True, version=4)
        assert _exists(c, v4)


def test_metadata_does_not_auto_create_when_disabled(start_broker) -> None:
    broker = start_broker("--set", "auto.create.topics.enable=false")
    with KafkaConnection(broker.bootstrap) as c:
        name = unique_topic("manual")
        assert _metadata(c, name, allow_auto_create=True)[name]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert not _exists(c, name)
        assert produce(c, name, batch(1))["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        create_topic(c, name)  # explicit creation still works
        assert _exists(c, name)


def test_metadata_null_topics_lists_all_and_empty_lists_none(conn: KafkaConnection) -> None:
    name = unique_topic("listed")
    create_topic(conn, name)
    everything = conn.request(API_METADATA, METADATA_V, {"topics": None, "allow_auto_topic_creation": False})
    assert name in {t["name"] for t in everything["topics"]}
    assert everything["controller_id"] == 1 and everything["cluster_id"]
    (me,) = everything["brokers"]
    assert me["node_id"] == 1 and me["port"] > 0
    nothing = conn.request(API_METADATA, METADATA_V, {"topics": [], "allow_auto_topic_creation": True})
    assert nothing["topics"] == []


# ------------------------------------------------------------------------------------ restart

def test_topics_survive_a_restart_and_deleted_topics_stay_deleted(start_broker) -> None:
    broker = start_broker()
    kept, dropped = unique_topic("kept"), unique_topic("dropped")
    with KafkaConnection(broker.bootstrap) as c:
        create_topic(c, kept, partitions=2, configs={"retention.ms": "86400000"})
        create_topic(c, dropped)
        produce(c, kept, batch(4), partition=1)
        produce(c, dropped, batch(2))
        assert _delete(c, dropped) == {dropped: 0}
        cluster_id = c.request(API_METADATA, METADATA_V, {"topics": []})["cluster_id"]
    assert broker.stop() == 0
    broker.start()
    with KafkaConnection(broker.bootstrap) as c:
        assert c.request(API_METADATA, METADATA_V, {"topics": []})["cluster_id"] == cluster_id
        topics = _metadata(c, kept, dropped)
        assert len(topics[kept]["partitions"]) == 2
        assert topics[dropped]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert _topic_configs(c, kept)["retention.ms"]["value"] == "86400000"
        data = fetch_partitions(c.request(API_FETCH, FETCH_V, fetch_body(kept, {1: 0})))[1]
        assert data["high_watermark"] == 4 and len(data["records"]) > 0
        assert produce(c, kept, batch(1), partition=1)["base_offset"] == 4
    assert not os.path.exists(os.path.join(broker.data_dir, f"{dropped}-0"))
    helpers.assert_clean_log(broker)


def test_a_topic_survives_kill_9(start_broker) -> None:
    broker = start_broker()
    name = unique_topic("crash")
    with KafkaConnection(broker.bootstrap) as c:
        create_topic(c, name)
        produce(c, name, batch(3))
    broker.kill()
    broker.start()
    with KafkaConnection(broker.bootstrap) as c:
        assert _exists(c, name)
        assert list_offsets(c, name, LATEST)["offset"] == 3  # acks=all on one node: appended before the answer
