"""Real Kafka clients across a leader failover: kcat, confluent-kafka and kafka-python each produce
(acks=all, lz4) and consume one partition of an RF=3 topic (min.insync.replicas=2) of a 3-node
replog cluster (tests/clusterproc.py) while the partition's leader gets `kill -9`.

For each client: the producer writes unique values at a steady pace, the consumer (started first,
from offset 0) reads them as they commit; once enough writes are acknowledged, the leader (chosen
to be a broker other than the active controller) is killed, production goes on, the victim restarts
and rejoins the ISR. Checks:

* every value the producer reports as delivered is read by that client's consumer and is stored
  (replog's Consumer reading the partition from 0 to the high watermark afterwards);
* no final delivery error; the errors the clients reported on the way are retriable only
  (librdkafka: error callback / log lines, none fatal; kafka-python: exceptions marked retriable);
* the idempotent producers (confluent-kafka with enable.idempotence=True, kafka-python 3.x whose
  `enable_idempotence` defaults to True) store no value twice; kcat (librdkafka's default, not
  idempotent) is allowed duplicates from retries and the count is printed;
* confluent-kafka's failover time, kill -> first delivery report of a message produced after the
  kill, is printed (median / max over the trials; `REPLOG_TRIALS` sets the number, default 1) with a
  loose bound.

A missing client skips its test (fails it with REPLOG_REQUIRE_INTEROP=1, as interop_clients.require does).
"""

from __future__ import annotations

import asyncio
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from clusterproc import Cluster, metadata, wait_until
from interop_clients import require

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "broker"))

from test_protocol_helpers import (
    API_CREATE_TOPICS,
    CREATE_TOPICS_V,
    KafkaConnection,
    unique_topic,
)

from client import Consumer

VALUES = 1500          # per client and trial
PACE_S = 0.002         # the producers' pacing between sends (~500 values/s)
KILL_AFTER = 300       # delivered values before the kill
DEADLINE_S = 60.0      # a whole run (produce, failover, consume) must end within this
REJOIN_TIMEOUT_S = 20.0
FAILOVER_BOUND_S = 8.0  # loose CI bound on confluent-kafka's kill -> first delivery (target 1 s median)
SLOW_TRIALS = 20


# ------------------------------------------------------------------------------------------- the cluster

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(str(tmp_path_factory.mktemp("interop-failover")), nodes=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()






def controller_of(cluster: Cluster) -> int:
    for node_id in cluster.alive():
        controller = metadata(cluster.bootstrap(node_id))["controller_id"]
        if controller in cluster.alive():
            return int(controller)
    raise AssertionError("no controller known")


def partitions_of(cluster: Cluster, topic: str) -> dict[int, tuple[int, tuple[int, ...]]]:
    """partition -> (leader, isr) as the active controller's broker sees it."""
    (t,) = metadata(cluster.bootstrap(controller_of(cluster)), [topic])["topics"]
    return {p["partition_index"]: (p["leader_id"], tuple(p["isr_nodes"])) for p in t["partitions"]}


def new_topic(cluster: Cluster, partitions: int = 3, controller_victim: bool = False) -> tuple[str, int, int]:
    """An RF=3 topic, min.insync.replicas=2, fully in sync; (name, a partition, its leader) where the
    leader is not the active controller (or is it, with `controller_victim`)."""
    name = unique_topic("interop-fo")
    controller = controller_of(cluster)
    with KafkaConnection(cluster.bootstrap(controller), timeout_s=15) as conn:
        body = conn.request(API_CREATE_TOPICS, CREATE_TOPICS_V, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": 3, "assignments": [],
            "configs": [{"name": "min.insync.replicas", "value": "2"}]}], "timeout_ms": 10_000,
            "validate_only": False})
    assert body["topics"][0]["error_code"] == 0, body
    wait_until(lambda: all(leader >= 0 and len(isr) == 3 for leader, isr in partitions_of(cluster, name).values())
               and len(partitions_of(cluster, name)) == partitions, 10, f"{name} in sync")
    view = partitions_of(cluster, name)
    partition = next(p for p, (leader, _) in sorted(view.items()) if (leader == controller) is controller_victim)
    return name, partition, view[partition][0]


def bootstrap_list(cluster: Cluster) -> str:
    return ",".join(cluster.bootstrap(i) for i in cluster.nodes)


# ------------------------------------------------------------------------------------------- a run's record

@dataclass
class Run:
    """What one client's producer and consumer reported (filled from their threads)."""

    values: list[bytes]
    sent_at: dict[bytes, float] = field(default_factory=dict)
    delivered: dict[bytes, float] = field(default_factory=dict)    # value -> delivery report time
    failed: dict[bytes, str] = field(default_factory=dict)
    transient: list[str] = field(default_factory=list)             # retriable errors reported on the way
    fatal: list[str] = field(default_factory=list)                 # anything else
    consumed: dict[bytes, list[int]] = field(default_factory=dict)  # value -> offsets the consumer saw
    producer_done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_delivered(self, value: bytes) -> None:
        with self.lock:
            self.delivered[value] = time.monotonic()

    def on_consumed(self, value: bytes, offset: int) -> None:
        with self.lock:
            self.consumed.setdefault(value, []).append(offset)

    def consumer_done(self) -> bool:
        with self.lock:
            return self.producer_done.is_set() and all(v in self.consumed for v in self.delivered)

    def first_delivery_after(self, when: float) -> float | None:
        with self.lock:
            times = [t for v, t in self.delivered.items() if self.sent_at.get(v, 0.0) >= when]
        return min(times) - when if times else None


def paced(run: Run, send: Callable[[bytes], None], poll: Callable[[], None] = lambda: None) -> None:
    for value in run.values:
        if run.stop.is_set():
            return
        run.sent_at[value] = time.monotonic()
        send(value)
        poll()
        time.sleep(PACE_S)  # pacing of the load, not a synchronisation


# ------------------------------------------------------------------------------------------- kcat

def kcat_produce(bootstrap: str, topic: str, partition: int, run: Run) -> None:
    """kcat -P reading values from a pipe as they are generated. kcat reports no per-message
    delivery, so a value counts as delivered once kcat exited 0 without a delivery failure."""
    cmd = ["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", str(partition), "-z", "lz4", "-X", "acks=all",
           "-X", "linger.ms=5"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        def send(value: bytes) -> None:
            assert proc.stdin is not None
            proc.stdin.write(value + b"\n")
            proc.stdin.flush()
        paced(run, send)
        proc.stdin.close()
        code = proc.wait(DEADLINE_S)
        stderr = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in stderr.splitlines():
        lowered = line.lower()
        if "delivery failed" in lowered or "fatal" in lowered:
            run.fatal.append(line)
        elif line.strip():
            run.transient.append(line)
    if code != 0:
        run.fatal.append(f"kcat -P exited {code}")
    else:
        for value in run.values:
            run.on_delivered(value)


def kcat_consume(bootstrap: str, topic: str, partition: int, run: Run) -> None:
    cmd = ["kcat", "-b", bootstrap, "-C", "-t", topic, "-p", str(partition), "-o", "beginning", "-u",
           "-X", "check.crcs=true", "-f", "%o %s\\n"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not run.consumer_done() and time.monotonic() < deadline and not run.stop.is_set():
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if proc.poll() is not None:
                    run.fatal.append(f"kcat -C exited {proc.returncode}")
                    break
                continue
            offset, _, value = line.rstrip(b"\n").partition(b" ")
            run.on_consumed(value, int(offset))
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)
    for line in proc.stderr.read().decode(errors="replace").splitlines():
        if "fatal" in line.lower():
            run.fatal.append(f"consumer: {line}")
        elif line.strip():
            run.transient.append(f"consumer: {line}")


# ------------------------------------------------------------------------------------------- confluent-kafka

def _librdkafka_error(run: Run, where: str, err: Any) -> None:
    from confluent_kafka import KafkaError

    # connection-level errors librdkafka reports through error_cb and recovers from by itself
    transient = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
                 KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}
    text = f"{where}: {err.name()} {err.str()}"
    if err.fatal() or not (err.retriable() or err.code() in transient):
        run.fatal.append(text)
    else:
        run.transient.append(text)


def confluent_produce(bootstrap: str, topic: str, partition: int, run: Run) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5, "client.id": "replog-interop-failover",
                         "error_cb": lambda err: _librdkafka_error(run, "producer", err)})

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            run.failed[msg.value()] = f"{err.name()} {err.str()}"
        else:
            run.on_delivered(msg.value())

    paced(run, lambda v: producer.produce(topic, value=v, partition=partition, on_delivery=on_delivery),
          lambda: producer.poll(0))
    left = producer.flush(DEADLINE_S)
    if left:
        run.fatal.append(f"{left} messages not delivered by flush")


def confluent_consume(bootstrap: str, topic: str, partition: int, run: Run) -> None:
    from confluent_kafka import Consumer as CKConsumer
    from confluent_kafka import TopicPartition

    consumer = CKConsumer({"bootstrap.servers": bootstrap, "group.id": f"replog-interop-fo-{os.getpid()}",
                           "enable.auto.commit": False, "check.crcs": True, "auto.offset.reset": "error",
                           "error_cb": lambda err: _librdkafka_error(run, "consumer", err)})
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + DEADLINE_S
        while not run.consumer_done() and time.monotonic() < deadline and not run.stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                _librdkafka_error(run, "consumer poll", msg.error())
                continue
            run.on_consumed(msg.value(), msg.offset())
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------------- kafka-python

def _kafka_python_error(run: Run, where: str, exc: BaseException) -> None:
    (run.transient if getattr(exc, "retriable", False) else run.fatal).append(f"{where}: {exc!r}")


def kafka_python_produce(bootstrap: str, topic: str, partition: int, run: Run) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), compression_type="lz4", acks="all",
                             linger_ms=5, enable_idempotence=True, client_id="replog-interop-failover")
    try:
        assert producer.config["enable_idempotence"]
        futures = []

        def send(value: bytes) -> None:
            future = producer.send(topic, value=value, partition=partition)
            future.add_callback(lambda _meta, value=value: run.on_delivered(value))
            future.add_errback(lambda exc, value=value: run.failed.__setitem__(value, repr(exc)))
            futures.append(future)

        paced(run, send)
        producer.flush(DEADLINE_S)
    finally:
        producer.close(timeout=10)


def kafka_python_consume(bootstrap: str, topic: str, partition: int, run: Run) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                             check_crcs=True, client_id="replog-interop-failover")
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        deadline = time.monotonic() + DEADLINE_S
        while not run.consumer_done() and time.monotonic() < deadline and not run.stop.is_set():
            try:
                batches = consumer.poll(timeout_ms=200)
            except Exception as exc:  # classified: retriable ones are allowed
                _kafka_python_error(run, "consumer poll", exc)
                continue
            for records in batches.values():
                for r in records:
                    run.on_consumed(r.value, r.offset)
    finally:
        consumer.close()


Side = Callable[[str, str, int, Run], None]
CLIENTS: dict[str, tuple[Side, Side, bool]] = {  # client -> (producer, consumer, idempotent producer?)
    "kcat": (kcat_produce, kcat_consume, False),
    "confluent": (confluent_produce, confluent_consume, True),
    "kafka_python": (kafka_python_produce, kafka_python_consume, True),
}


# ------------------------------------------------------------------------------------------- the scenario

async def _read_back(bootstrap: list[str], topic: str, partition: int) -> list[tuple[int, bytes | None]]:
    out: list[tuple[int, bytes | None]] = []
    async with Consumer(bootstrap, auto_offset_reset="none") as consumer:
        tp = (topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        (end,) = (await consumer.end_offsets([tp])).values()
        deadline = time.monotonic() + 30
        while await consumer.position(tp) < end:
            assert time.monotonic() < deadline, "replog consumer did not reach the high watermark"
            out.extend((r.offset, r.value) for r in await consumer.poll(timeout_ms=500))
    return out


def _thread(target: Callable[..., None], *args: Any, run: Run, what: str) -> threading.Thread:
    def body() -> None:
        try:
            target(*args)
        except Exception as exc:  # reported as a fatal error of the run
            run.fatal.append(f"{what} raised {exc!r}")
        finally:
            if what == "producer":
                run.producer_done.set()
    thread = threading.Thread(target=body, name=f"interop-failover-{what}", daemon=True)
    thread.start()
    return thread


def failover_run(cluster: Cluster, client: str,
                 controller_victim: bool = False) -> tuple[Run, float | None, int, list[tuple[int, bytes | None]]]:
    produce, consume, _ = CLIENTS[client]
    # six partitions: the active controller surely leads one of them (placement spreads leaders)
    topic, partition, victim = new_topic(cluster, 6 if controller_victim else 3, controller_victim)
    run = Run([f"{client}-{i:05d}".encode() for i in range(VALUES)])
    bootstrap = bootstrap_list(cluster)
    consumer = _thread(consume, bootstrap, topic, partition, run, run=run, what="consumer")
    producer = _thread(produce, bootstrap, topic, partition, run, run=run, what="producer")
    try:
        # kcat reports no per-message delivery: kill once its consumer saw enough
        progress = run.consumed if client == "kcat" else run.delivered
        wait_until(lambda: len(progress) >= KILL_AFTER or run.fatal, 30, "deliveries before the kill")
        assert not run.fatal, run.fatal[:10]
        cluster.kill(victim)
        killed_at = time.monotonic()
        producer.join(DEADLINE_S)
        assert not producer.is_alive(), "producer did not finish"
        cluster.restart(victim)
        wait_until(lambda: all(victim in isr for _, isr in partitions_of(cluster, topic).values()),
                   REJOIN_TIMEOUT_S, f"broker {victim} back in the ISR")
        consumer.join(DEADLINE_S)
        assert not consumer.is_alive(), "consumer did not finish"
    finally:
        run.stop.set()
        producer.join(DEADLINE_S)
        consumer.join(DEADLINE_S)
    stored = asyncio.run(_read_back([cluster.bootstrap(i) for i in cluster.nodes], topic, partition))
    failover = None if client == "kcat" else run.first_delivery_after(killed_at)
    return run, failover, victim, stored


def check(client: str, run: Run, stored: list[tuple[int, bytes | None]]) -> Counter[bytes | None]:
    idempotent = CLIENTS[client][2]
    assert not run.fatal, run.fatal[:10]
    assert not run.failed, list(run.failed.items())[:5]
    assert len(run.delivered) == VALUES, f"{len(run.delivered)} of {VALUES} delivered"
    unread = [v for v in run.delivered if v not in run.consumed]
    assert not unread, f"{client}'s consumer missed {len(unread)}, e.g. {unread[:5]}"
    counts = Counter(v for _, v in stored)
    missing = [v for v in run.delivered if v not in counts]
    assert not missing, f"{len(missing)} delivered values not stored, e.g. {missing[:5]}"
    assert set(counts) <= set(run.values), "a value nobody sent is stored"
    offsets = [o for o, _ in stored]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "gaps in the stored offsets"
    duplicates = {v: n for v, n in counts.items() if n > 1}
    if idempotent:
        assert not duplicates, f"idempotent {client} stored {len(duplicates)} values twice: {list(duplicates)[:5]}"
    # what the client's consumer saw at an offset is what is stored there
    stored_at = dict(stored)
    wrong = [(v, o) for v, seen in run.consumed.items() for o in seen if stored_at.get(o) != v]
    assert not wrong, wrong[:5]
    return counts


@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_produces_and_consumes_across_a_leader_failover(cluster: Cluster, client: str) -> None:
    require(client)
    run, failover, victim, stored = failover_run(cluster, client)
    counts = check(client, run, stored)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    after = "n/a (kcat reports no deliveries)" if failover is None else f"{failover * 1000:.0f} ms"
    print(f"\n{client}: kill -9 of leader {victim}: {len(run.delivered)} delivered, {len(stored)} stored, "
          f"{duplicates} duplicates, first delivery of a value sent after the kill {after}; "
          f"{len(run.transient)} retriable errors reported, e.g. {run.transient[:3]}")


@pytest.mark.slow  # selected by `-m slow` (then SLOW_TRIALS); runs in the default run with one trial
@pytest.mark.parametrize("controller_victim", [False, True], ids=["leader", "controller-leader"])
def test_confluent_failover_time(cluster: Cluster, request: pytest.FixtureRequest, controller_victim: bool) -> None:
    require("confluent")
    raw = os.environ.get("REPLOG_TRIALS")
    default = 0 if controller_victim else 1   # the controller case runs when trials are asked for
    trials = int(raw) if raw else SLOW_TRIALS if "slow" in (request.config.getoption("markexpr") or "") else default
    if trials == 0:
        pytest.skip("the controller-victim case runs with REPLOG_TRIALS=N or -m slow")
    figures = []
    for _ in range(trials):
        run, failover, _, stored = failover_run(cluster, "confluent", controller_victim)
        check("confluent", run, stored)
        assert failover is not None
        figures.append(failover)
    victim = "the active controller, leading it" if controller_victim else "a leader (not the controller)"
    print(f"\nconfluent-kafka: kill -9 of {victim} -> first delivered acks=all message: "
          f"{trials} trials, median {statistics.median(figures) * 1000:.0f} ms, max {max(figures) * 1000:.0f} ms "
          f"({', '.join(f'{f * 1000:.0f}' for f in figures)})")
    assert max(figures) <= FAILOVER_BOUND_S
