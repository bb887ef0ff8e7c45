"""client.sync: the blocking facade over the asyncio clients, used from plain (and threaded) code."""

from __future__ import annotations

import threading

import pytest

from client.errors import NotAppendedError, TopicAlreadyExistsError
from client.sync import SyncAdmin, SyncConsumer, SyncProducer


def test_sync_facade_round_trip(broker) -> None:
    with SyncAdmin(broker.bootstrap) as admin:
        admin.create_topic("s", partitions=2)
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topic("s", partitions=2)
        assert admin.describe_topics(["s"])["s"].partitions[1].partition == 1
    with SyncProducer(broker.bootstrap, compression="lz4", linger_ms=1) as producer:
        futures = [producer.send("s", b"v%d" % i, key=b"k%d" % i, headers=[("h", b"x")]) for i in range(100)]
        producer.flush()
        assert all(f.done() for f in futures)
        meta = producer.send_and_wait("s", b"last", partition=0)
        assert meta.partition == 0 and meta.offset >= 0
        assert producer.partitions_for("s") == [0, 1]
        threads = [threading.Thread(target=lambda n=n: [producer.send_and_wait("s", b"t%d" % n, partition=1)
                                                       for _ in range(10)]) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with pytest.raises(NotAppendedError):
            producer.send_and_wait("s", b"v", partition=9)
    with SyncConsumer(broker.bootstrap) as consumer:
        consumer.assign([("s", 0), ("s", 1)])
        consumer.seek_to_beginning()
        assert consumer.position(("s", 0)) == 0
        records = []
        for _ in range(40):
            records += consumer.poll(timeout_ms=500)
            if len(records) >= 131:
                break
        assert len(records) == 131
        assert {r.value for r in records} >= {b"v%d" % i for i in range(100)} | {b"last"}
        assert consumer.end_offsets([("s", 0), ("s", 1)]) == {
            ("s", 0): consumer.position(("s", 0)), ("s", 1): consumer.position(("s", 1))}


def test_sync_consumer_in_a_group_commits_and_reads_back(start_broker) -> None:
    proc = start_broker("--set", "group.initial.rebalance.delay.ms=0")
    with SyncProducer(proc.bootstrap, linger_ms=1) as producer:
        for i in range(20):
            producer.send("g-sync", b"v%d" % i, partition=0)
        producer.flush()
    with SyncConsumer(proc.bootstrap, group_id="sync-g", auto_offset_reset="earliest",
                      enable_auto_commit=False) as consumer:
        consumer.subscribe(["g-sync"])
        assert consumer.subscription() == {"g-sync"}
        records = []
        for _ in range(60):
            records += consumer.poll(timeout_ms=500)
            if len(records) >= 20:
                break
        assert [r.value for r in records] == [b"v%d" % i for i in range(20)]
        consumer.commit()
        assert consumer.committed(("g-sync", 0)) == 20
