"""Metadata record codec: exact round trips, strict rejection of malformed records (controller/records.py)."""

from __future__ import annotations

import contextlib
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import limits
from controller.records import (
    RECORD_TYPES,
    ClusterIdRecord,
    ControlledShutdownRecord,
    FenceBrokerRecord,
    Listener,
    NoOpRecord,
    PartitionAssignment,
    PartitionChange,
    PartitionChangeRecord,
    ProducerIdsRecord,
    RecordDecodeError,
    RecordEncodeError,
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

# --- strategies ------------------------------------------------------------------------------

broker_ids = st.integers(0, limits.BROKER_ID_MAX)
epochs32 = st.integers(0, limits.INT32_MAX)
epochs64 = st.integers(0, limits.INT64_MAX)
uuids = st.binary(min_size=16, max_size=16).filter(lambda b: b != bytes(16))
broker_lists = st.lists(st.integers(0, 50), min_size=1, max_size=5, unique=True).map(tuple)
topic_names = st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True).filter(lambda n: n not in (".", ".."))
config_names = st.text(min_size=1, max_size=30)
config_values = st.text(max_size=50)
listeners = st.builds(Listener, st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=50),
                      st.integers(0, 65535))
changes = st.builds(PartitionChange, uuids, st.integers(0, limits.PARTITIONS_PER_TOPIC_MAX - 1),
                    st.integers(-1, 100), broker_lists, epochs32, epochs32)
change_lists = st.lists(changes, max_size=5).map(tuple)
assignments = st.builds(PartitionAssignment, broker_lists, broker_lists, st.integers(-1, 50))

records = st.one_of(
    st.builds(RegisterBrokerRecord, broker_ids, uuids, epochs64, st.lists(listeners, min_size=1, max_size=3),
              st.none() | st.text(min_size=1, max_size=20), change_lists),
    st.builds(FenceBrokerRecord, broker_ids, epochs64, change_lists),
    st.builds(UnfenceBrokerRecord, broker_ids, epochs64, change_lists),
    st.builds(ControlledShutdownRecord, broker_ids, epochs64, change_lists),
    st.builds(TopicRecord, topic_names, uuids, st.dictionaries(config_names, config_values, max_size=4),
              st.lists(assignments, min_size=1, max_size=4)),
    st.builds(RemoveTopicRecord, topic_names, uuids),
    st.builds(TopicConfigRecord, uuids, st.dictionaries(config_names, st.none() | config_values, max_size=4)),
    st.builds(PartitionChangeRecord, st.lists(changes, min_size=1, max_size=5)),
    st.builds(ProducerIdsRecord, broker_ids, epochs64, st.integers(0, 2**40),
              st.integers(1, limits.PRODUCER_ID_BLOCK_SIZE_MAX)),
    st.just(NoOpRecord()),
    st.builds(ClusterIdRecord, st.from_regex(r"[A-Za-z0-9_-]{22}", fullmatch=True)),
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_every_record_round_trips_exactly(record) -> None:
    data = encode_record(record)
    decoded = decode_record(data)
    assert decoded == record
    assert encode_record(decoded) == data
    body = orjson.loads(data)
    assert body["type"] == record.TYPE and body["v"] == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(records, max_size=8))
def test_batches_round_trip(batch) -> None:
    assert decode_batch(encode_batch(batch)) == batch


TID_BYTES = bytes(range(1, 17))
CHANGE = PartitionChange(TID_BYTES, 3, 2, (2, 1), 4, 9)
SAMPLES = [
    RegisterBrokerRecord(1, bytes(range(16, 32)), 7, (Listener("PLAINTEXT", "localhost", 9092),), "rack-a", (CHANGE,)),
    FenceBrokerRecord(1, 7, (CHANGE,)),
    UnfenceBrokerRecord(1, 7, (CHANGE,)),
    ControlledShutdownRecord(1, 7, ()),
    TopicRecord("orders", TID_BYTES, {"retention.ms": "1000"}, (PartitionAssignment((1, 2), (1, 2), 1),)),
    RemoveTopicRecord("orders", TID_BYTES),
    TopicConfigRecord(TID_BYTES, {"retention.ms": None, "segment.bytes": "1024"}),
    PartitionChangeRecord((CHANGE,)),
    ProducerIdsRecord(1, 7, 1000, 1000),
    NoOpRecord(),
    ClusterIdRecord("MkU3OEVBNTcwNTJENDM2Qk"),
]


def test_samples_cover_every_record_type_and_round_trip() -> None:
    assert {r.TYPE for r in SAMPLES} == set(RECORD_TYPES)
    for record in SAMPLES:
        assert decode_record(encode_record(record)) == record


def test_configs_are_normalized_so_construction_order_does_not_matter() -> None:
    tid = bytes(range(1, 17))
    a = TopicConfigRecord(tid, {"b": "2", "a": None})
    b = TopicConfigRecord(tid, [("a", None), ("b", "2")])
    assert a == b and encode_record(a) == encode_record(b)
    assert decode_record(encode_record(a)) == a


# --- malformed input: always RecordDecodeError, with a message naming what is wrong ------------

TID = "0102030405060708090a0b0c0d0e0f10"
GOOD = {"type": "producer_ids", "v": 1, "broker_id": 1, "broker_epoch": 5, "first_producer_id": 0, "size": 1000}


def _bad(body: object) -> str:
    with pytest.raises(RecordDecodeError) as info:
        decode_record(orjson.dumps(body))
    return str(info.value)


def test_the_reference_record_is_good() -> None:
    assert decode_record(orjson.dumps(GOOD)) == ProducerIdsRecord(1, 5, 0, 1000)


@pytest.mark.parametrize("body, expected", [
    ({**GOOD, "type": "mystery"}, "unknown record type 'mystery'"),
    ({k: v for k, v in GOOD.items() if k != "type"}, "unknown record type"),
    ({**GOOD, "type": 7}, "unknown record type"),
    ({**GOOD, "v": 2}, "version 2 is not supported"),
    ({**GOOD, "v": "1"}, "version '1' is not supported"),
    ({k: v for k, v in GOOD.items() if k != "size"}, "missing field(s) ['size']"),
    ({**GOOD, "extra": 1}, "unknown field(s) ['extra']"),
    ({**GOOD, "broker_id": "1"}, "broker_id: expected an integer, got a string"),
    ({**GOOD, "broker_id": True}, "broker_id: expected an integer, got a boolean"),
    ({**GOOD, "broker_id": 1.0}, "broker_id: expected an integer, got a number"),
    ({**GOOD, "broker_id": -1}, "broker_id: -1 is outside"),
    ({**GOOD, "size": 0}, "size: 0 is outside"),
    ([GOOD], "expected an object, got a list"),
    (None, "expected an object, got null"),
])
def test_malformed_records_are_rejected_with_a_clear_error(body: object, expected: str) -> None:
    assert expected in _bad(body)


def _topic(**overrides: object) -> dict:
    body = {"type": "topic", "v": 1, "name": "t", "topic_id": TID, "configs": {},
            "partitions": [{"replicas": [1, 2], "isr": [1, 2], "leader": 1}]}
    body.update(overrides)
    return body


@pytest.mark.parametrize("overrides, expected", [
    ({"topic_id": TID.upper()}, "32 lower-case hex digits"),
    ({"topic_id": TID[:-2]}, "32 lower-case hex digits"),
    ({"topic_id": "0" * 32}, "zero UUID"),
    ({"name": "bad name"}, "does not match"),
    ({"name": ".."}, "does not match"),
    ({"name": "t\n"}, "does not match"),
    ({"name": "x" * 250}, "length 250"),
    ({"configs": {"a": 1}}, "configs.a: expected a string"),
    ({"configs": {"a": None}}, "configs.a: expected a string, got null"),
    ({"configs": []}, "configs: expected an object"),
    ({"partitions": []}, "partitions: 0 items"),
    ({"partitions": [{"replicas": [1, 1], "isr": [1], "leader": 1}]}, "duplicate items"),
    ({"partitions": [{"replicas": [], "isr": [1], "leader": 1}]}, "replicas: 0 items"),
    ({"partitions": [{"replicas": [1], "isr": [1], "leader": -2}]}, "leader: -2 is outside"),
    ({"partitions": [{"replicas": [1], "isr": [1]}]}, "missing field(s) ['leader']"),
    ({"partitions": [{"replicas": [1], "isr": [1], "leader": 1, "epoch": 0}]}, "unknown field(s) ['epoch']"),
])
def test_malformed_nested_fields_are_rejected_with_their_path(overrides: dict, expected: str) -> None:
    assert expected in _bad(_topic(**overrides))


def test_config_deletions_are_only_allowed_in_topic_config_records() -> None:
    record = decode_record(orjson.dumps({"type": "topic_config", "v": 1, "topic_id": TID, "configs": {"a": None}}))
    assert record == TopicConfigRecord(bytes.fromhex(TID), {"a": None})


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[1, 2", b"nan", b'{"type": "noop", "v": 1} x'])
def test_bytes_that_are_not_json_are_rejected(data: bytes) -> None:
    with pytest.raises(RecordDecodeError, match="not JSON"):
        decode_record(data)


def test_oversized_input_is_rejected_before_parsing() -> None:
    with pytest.raises(RecordDecodeError, match="above the bound"):
        decode_record(b" " * (limits.RECORD_BYTES_MAX + 1))
    with pytest.raises(RecordDecodeError, match="expected bytes"):
        decode_record("{}")  # type: ignore[arg-type]


def test_integers_beyond_64_bits_are_rejected() -> None:
    with pytest.raises(RecordDecodeError):
        decode_record(b'{"type":"producer_ids","v":1,"broker_id":1,"broker_epoch":99999999999999999999999,'
                      b'"first_producer_id":0,"size":1}')


def test_batches_reject_non_lists_and_name_the_bad_item() -> None:
    with pytest.raises(RecordDecodeError, match="batch: expected a list"):
        decode_batch(orjson.dumps(GOOD))
    with pytest.raises(RecordDecodeError, match=r"batch\[1\]: unknown record type"):
        decode_batch(orjson.dumps([GOOD, {"type": "x", "v": 1}]))


def test_random_mutations_of_valid_records_never_escape_as_other_exceptions() -> None:
    rng = random.Random(7)
    samples = [encode_record(r) for r in SAMPLES]
    for _ in range(4000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(data) + 1)
            if op < 0.4 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op < 0.7:
                del data[pos:pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = rng.choice([b"0", b"-1", b"null", b",", b'"', b"[]", b"{}", b"true"])
        with contextlib.suppress(RecordDecodeError):   # anything else escapes and fails the test
            decode_record(bytes(data))


# --- encoding checks what it writes --------------------------------------------------------------


@pytest.mark.parametrize("record", [
    ProducerIdsRecord(-1, 0, 0, 1),
    ProducerIdsRecord(1, 0, 0, 0),
    RemoveTopicRecord("t", b"short"),
    RemoveTopicRecord("t", bytes(16)),
    RemoveTopicRecord("no way", bytes(range(16))),
    PartitionChangeRecord(()),
    FenceBrokerRecord(1, 1, ("not a change",)),  # type: ignore[arg-type]
    RegisterBrokerRecord(1, bytes(range(16)), 1, (), None),
])
def test_encoding_a_record_that_breaks_its_schema_is_an_error(record) -> None:
    with pytest.raises(RecordEncodeError):
        encode_record(record)


def test_only_record_objects_encode() -> None:
    with pytest.raises(RecordEncodeError, match="not a metadata record"):
        encode_record(Listener("a", "b", 1))  # type: ignore[arg-type]
