"""The cluster id: its record (strict decode), the image's one-time cluster id (snapshots, invariant),
the builder's activation step, and meta.properties confirmation (broker/identity.py)."""

from __future__ import annotations

import os

import orjson
import pytest

from broker.identity import META_PROPERTIES, IdentityError, confirm_cluster_id, ensure_identity
from controller.metadata import (
    MetadataBuilder,
    MetadataImage,
    MetadataInvariantError,
    SnapshotDecodeError,
    new_cluster_id,
)
from controller.records import (
    ClusterIdRecord,
    NoOpRecord,
    RecordDecodeError,
    RecordEncodeError,
    decode_record,
    encode_record,
)

CID = "MkU3OEVBNTcwNTJENDM2Qk"
OTHER = "AAAAAAAAAAAAAAAAAAAAAA"


def test_the_record_round_trips() -> None:
    data = encode_record(ClusterIdRecord(CID))
    assert orjson.loads(data) == {"type": "cluster_id", "v": 1, "cluster_id": CID}
    assert decode_record(data) == ClusterIdRecord(CID)


@pytest.mark.parametrize("body, expected", [
    ({"type": "cluster_id", "v": 1}, "missing field"),
    ({"type": "cluster_id", "v": 1, "cluster_id": CID, "x": 1}, "unknown field"),
    ({"type": "cluster_id", "v": 2, "cluster_id": CID}, "version 2 is not supported"),
    ({"type": "cluster_id", "v": 1, "cluster_id": 7}, "expected a string"),
    ({"type": "cluster_id", "v": 1, "cluster_id": "short"}, "length 5"),
    ({"type": "cluster_id", "v": 1, "cluster_id": "MkU3OEVBNTcwNTJENDM2Q+"}, "does not match"),
])
def test_malformed_records_are_rejected(body: dict, expected: str) -> None:
    with pytest.raises(RecordDecodeError, match=expected):
        decode_record(orjson.dumps(body))


def test_a_bad_id_cannot_be_encoded() -> None:
    with pytest.raises(RecordEncodeError):
        encode_record(ClusterIdRecord("not an id"))


def test_new_ids_have_kafkas_format_and_differ() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cid in ids:
        assert decode_record(encode_record(ClusterIdRecord(cid))).cluster_id == cid


def test_the_image_takes_the_id_once() -> None:
    image = MetadataImage()
    assert image.cluster_id is None
    image = image.apply(NoOpRecord(), 1).apply(ClusterIdRecord(CID), 2)
    assert image.cluster_id == CID
    assert image.apply(NoOpRecord(), 3).cluster_id == CID
    assert image.apply(ClusterIdRecord(CID), 3).cluster_id == CID   # the same id again changes nothing
    with pytest.raises(MetadataInvariantError, match="would replace"):
        image.apply(ClusterIdRecord(OTHER), 3)
    with pytest.raises(MetadataInvariantError):
        MetadataImage().apply_batch((ClusterIdRecord(CID), ClusterIdRecord(OTHER)), 1)
    assert image != MetadataImage(2)
    assert image == MetadataImage(2, cluster_id=CID)


def test_snapshots_keep_the_id_and_read_the_old_format() -> None:
    for image in (MetadataImage(), MetadataImage().apply(ClusterIdRecord(CID), 4)):
        data = image.snapshot()
        restored = MetadataImage.from_snapshot(data)
        assert restored == image and restored.cluster_id == image.cluster_id
        assert restored.snapshot() == data
    old = {"format": "replog-metadata-image", "v": 1, "offset": 3, "next_producer_id": 0, "brokers": [],
           "topics": []}
    assert MetadataImage.from_snapshot(orjson.dumps(old)) == MetadataImage(3)
    with pytest.raises(SnapshotDecodeError, match="unknown field"):
        MetadataImage.from_snapshot(orjson.dumps({**old, "cluster_id": CID}))
    bad = orjson.loads(MetadataImage(3).snapshot())
    bad["cluster_id"] = "x"
    with pytest.raises(SnapshotDecodeError, match="cluster_id"):
        MetadataImage.from_snapshot(orjson.dumps(bad))


def test_the_builder_appends_an_id_only_when_the_image_has_none() -> None:
    builder = MetadataBuilder()
    result = builder.ensure_cluster_id(MetadataImage())
    assert len(result.records) == 1 and isinstance(result.records[0], ClusterIdRecord)
    assert result.response == result.records[0].cluster_id
    image = MetadataImage().apply(result.records[0], 1)
    again = builder.ensure_cluster_id(image)
    assert again.records == () and again.response == image.cluster_id


def _props(data_dir: str) -> str:
    with open(os.path.join(data_dir, META_PROPERTIES)) as f:
        return f.read()


def test_meta_properties_a_provisional_id_is_replaced_then_confirmed(tmp_path) -> None:
    d = str(tmp_path)
    own = ensure_identity(d, 1)     # a single node's own id: provisional
    assert own != CID and "confirmed" not in _props(d)
    confirm_cluster_id(d, 1, CID)
    assert f"cluster.id={CID}\n" in _props(d) and "cluster.id.confirmed=true" in _props(d)
    assert ensure_identity(d, 1) == CID
    confirm_cluster_id(d, 1, CID)    # idempotent
    with pytest.raises(IdentityError, match=f"data directory {d} belongs to cluster {CID}, not {OTHER}"):
        confirm_cluster_id(d, 1, OTHER)
    assert f"cluster.id={CID}\n" in _props(d)
