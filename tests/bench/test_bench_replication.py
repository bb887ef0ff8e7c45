"""Replication benchmarks: three combined `brokerd --quorum` processes (tests/clusterproc.py) on this
machine, confluent-kafka (librdkafka) as the load generator, 100-byte records, lz4. Figures and commands
are collected in docs/performance.md ("Replication").

1. Throughput, RF=3 acks=all against RF=1 acks=1 (the baseline, measured in the same run, rounds
   interleaved): one partition each, 400,000 records per round, librdkafka tuned for throughput as
   in test_bench_broker.py. Target ratio >= 0.5. With each round, the CPU seconds (utime + stime from
   /proc/<pid>/stat) of every broker process, split by role (the partition's leader, its followers),
   per GB appended to that replica's log (the partition directory's segment bytes) and per GB of
   record values (100 B x records).
2. End-to-end latency at a fixed 10,000 records/s, RF=3 acks=all: each record carries its *scheduled*
   send time (no coordinated omission); a consumer in the same process (another thread) takes the
   receipt time. p50 / p99 / max after a 1 s warm-up. Target p99 <= 25 ms.

The machine has 2 vCPUs and is shared: three brokers, the producer and the consumer compete for
them, so every figure is printed with the 1-minute load average. Asserted bounds are loose.

Run: python -m pytest -m bench tests/bench/test_bench_replication.py -q -s
"""

from __future__ import annotations

import os
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from clusterproc import Cluster

RESULTS: dict[str, str] = {}
CLK_TCK = os.sysconf("SC_CLK_TCK")
VALUES = [os.urandom(50).hex().encode() for _ in range(1024)]  # 100-byte values; distinct, so lz4 gains little
RECORDS = 400_000
ROUNDS = 5
CK_SETTINGS = {  # as tests/bench/test_bench_broker.py: tuned for throughput as a user would
    "compression.type": "lz4", "linger.ms": 10, "batch.size": 1_000_000,
    "queue.buffering.max.messages": 2 * RECORDS, "queue.buffering.max.kbytes": 1 << 20,
    "delivery.report.only.error": True,
}
LATENCY_RATE = 10_000
LATENCY_SECONDS = 10
LATENCY_WARMUP_S = 1.0
# REPLOG_LINGER_MS=1: small batches (before Produce pipelining: p99 306 ms; after: 11.5 ms)
LATENCY_PRODUCER = {"compression.type": "lz4", "linger.ms": int(os.environ.get("REPLOG_LINGER_MS", "5")),
                    "acks": "all"}
LATENCY_CONSUMER = {"fetch.wait.max.ms": 100, "fetch.min.bytes": 1, "enable.auto.commit": False}
STAMP = struct.Struct(">d")  # the scheduled send time (perf_counter seconds), then the filler


@pytest.fixture(scope="module")
def bench_selected(request: pytest.FixtureRequest) -> None:
    if "bench" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("replication benchmark: run with -m bench")


@pytest.fixture(scope="module")
def cluster(bench_selected: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(str(tmp_path_factory.mktemp("bench-replication")), nodes=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


# ---------------------------------------------------------------------------------------- helpers

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def record(name: str, line: str) -> None:
    RESULTS[name] = f"{name}: {line}"
    print("\n" + RESULTS[name])


def bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.bootstrap(i) for i in cluster.nodes)


def create_topic(cluster: Cluster, name: str, rf: int, min_isr: int) -> tuple[int, tuple[int, ...]]:
    """Create a 1-partition topic and wait for a full ISR; (leader, replicas)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap(cluster)})
    for future in admin.create_topics([NewTopic(name, 1, rf, config={"min.insync.replicas": str(min_isr)})]).values():
        future.result(30)
    deadline = time.monotonic() + 20
    while True:
        md = admin.list_topics(name, timeout=10).topics[name]
        part = md.partitions.get(0)
        if md.error is None and part is not None and part.leader >= 0 and len(part.isrs) == rf:
            return part.leader, tuple(part.replicas)
        assert time.monotonic() < deadline, f"{name}: no full ISR within 20 s"
        time.sleep(0.02)  # poll interval of a condition wait with a deadline


def log_bytes(cluster: Cluster, node_id: int, topic: str) -> int:
    path = os.path.join(cluster.nodes[node_id].data_dir, f"{topic}-0")
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".log"))


def high_watermark(cluster: Cluster, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap(cluster), "group.id": "bench-replication-hw"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


# ------------------------------------------------------------------------------ 1. throughput, CPU

def produce_round(cluster: Cluster, topic: str, rf: int, acks: str) -> dict[str, Any]:
    """One round: RECORDS records into a fresh topic; the rate and each broker's CPU and log bytes."""
    from confluent_kafka import Producer

    leader, replicas = create_topic(cluster, topic, rf, min_isr=min(2, rf))
    failed = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    producer = Producer({**CK_SETTINGS, "acks": acks, "bootstrap.servers": bootstrap(cluster)})
    producer.produce(topic, b"warm-up", partition=0)
    assert producer.flush(30) == 0
    pids = {i: n.pid for i, n in cluster.nodes.items()}
    cpu0 = {i: cpu_seconds(pid) for i, pid in pids.items()}
    bytes0 = {i: log_bytes(cluster, i, topic) for i in replicas}
    started = time.perf_counter()
    produce, values = producer.produce, VALUES
    for i in range(RECORDS):
        produce(topic, values[i & 1023], partition=0, on_delivery=on_delivery)
    assert producer.flush(300) == 0, "records left undelivered"
    elapsed = time.perf_counter() - started
    cpu = {i: cpu_seconds(pid) - cpu0[i] for i, pid in pids.items()}
    # the followers may still be fetching the tail (acks=1): wait until their logs hold what the leader does
    deadline = time.monotonic() + 60
    while len({log_bytes(cluster, i, topic) for i in replicas}) > 1:
        assert time.monotonic() < deadline, "followers did not catch up within 60 s"
        time.sleep(0.02)  # poll interval of a condition wait with a deadline
    cpu_caught_up = {i: cpu_seconds(pid) - cpu0[i] for i, pid in pids.items()}
    appended = {i: log_bytes(cluster, i, topic) - bytes0[i] for i in replicas}
    assert failed[0] == 0 and high_watermark(cluster, topic) == RECORDS + 1
    return {"rate": RECORDS / elapsed, "elapsed": elapsed, "leader": leader, "replicas": replicas, "cpu": cpu,
            "cpu_caught_up": cpu_caught_up, "appended": appended}


def per_gb(cpu_s: float, nbytes: int) -> float:
    return cpu_s / (nbytes / 1e9) if nbytes else float("nan")


@pytest.mark.bench
def test_throughput_rf3_acks_all_vs_rf1_acks_1(cluster: Cluster, benchmark: Any) -> None:
    rounds: dict[str, list[dict[str, Any]]] = {"rf1": [], "rf3": []}
    names = iter(range(100))

    def one_round() -> None:  # interleaved, so both see the same machine load
        n = next(names)
        rounds["rf1"].append(produce_round(cluster, f"bench-rf1-{n}", 1, "1"))
        rounds["rf3"].append(produce_round(cluster, f"bench-rf3-{n}", 3, "all"))

    benchmark.pedantic(one_round, rounds=ROUNDS)
    rate = {k: statistics.median(r["rate"] for r in v) for k, v in rounds.items()}
    ratios = sorted(b["rate"] / a["rate"] for a, b in zip(rounds["rf1"], rounds["rf3"]))
    ratio = statistics.median(ratios)
    payload = RECORDS * 100

    def cpu_figures(r: dict[str, Any]) -> tuple[float, float, float, float, float]:
        """(leader CPU s/GB appended, mean follower CPU s/GB appended, leader CPU s/GB values,
        follower CPU s/GB values, CPU s/GB values summed over the three brokers)."""
        leader = r["leader"]
        followers = [i for i in r["replicas"] if i != leader]
        cpu = r["cpu_caught_up"]
        lead = per_gb(cpu[leader], r["appended"][leader])
        follow = statistics.mean(per_gb(cpu[i], r["appended"][i]) for i in followers) if followers else float("nan")
        follow_values = statistics.mean(per_gb(cpu[i], payload) for i in followers) if followers else float("nan")
        return lead, follow, per_gb(cpu[leader], payload), follow_values, per_gb(sum(cpu.values()), payload)

    lines = []
    for key, label in (("rf1", "RF=1 acks=1"), ("rf3", "RF=3 acks=all")):
        figs = [cpu_figures(r) for r in rounds[key]]
        med = [statistics.median(f[i] for f in figs) for i in range(5)]
        appended = statistics.median(r["appended"][r["leader"]] for r in rounds[key])
        per_round = ", ".join(f"{r['rate']:,.0f}" for r in rounds[key])
        lines.append(f"{label}: {rate[key]:,.0f} rec/s (rounds {per_round}); "
                     f"CPU s per GB appended: leader {med[0]:.1f}, follower {med[1]:.1f} "
                     f"(per GB of record values: leader {med[2]:.1f}, follower {med[3]:.1f}, "
                     f"all brokers {med[4]:.1f}); {appended / RECORDS:.1f} B appended per record")
    benchmark.extra_info.update(rate_rf1=rate["rf1"], rate_rf3=rate["rf3"], ratio=ratio)
    record("replication throughput, 1 partition, 100 B lz4, 3 brokers",
           f"ratio RF=3 acks=all / RF=1 acks=1 {ratio:.2f} (rounds {', '.join(f'{x:.2f}' for x in ratios)}; "
           f"target >= 0.5); " + "; ".join(lines) + f"; {load()}")
    assert ratio >= 0.2


# ------------------------------------------------------------------------------ 2. end-to-end latency

def fixed_rate_end_to_end(cluster: Cluster, topic: str) -> tuple[list[float], float, list[float]]:
    """(scheduled send -> consumer receipt latencies after the warm-up, seconds; p99 scheduling lag;
    scheduled send -> delivery report latencies after the warm-up, the producer's share)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    count = LATENCY_RATE * LATENCY_SECONDS
    latencies: list[float] = []
    clock = time.perf_counter
    consumer = Consumer({**LATENCY_CONSUMER, "bootstrap.servers": bootstrap(cluster),
                         "group.id": f"bench-latency-{topic}"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    producer = Producer({**LATENCY_PRODUCER, "bootstrap.servers": bootstrap(cluster)})
    producer.produce(topic, STAMP.pack(0.0) + b"warm-up", partition=0)
    assert producer.flush(30) == 0
    received = [0]
    errors: list[str] = []

    def consume() -> None:
        deadline = time.monotonic() + LATENCY_SECONDS + 60
        while received[0] < count + 1 and time.monotonic() < deadline:
            msg = consumer.poll(0.1)  # one at a time: consume(n, timeout) would wait for n messages
            now = clock()
            if msg is None:
                continue
            if msg.error():
                errors.append(str(msg.error()))
                continue
            received[0] += 1
            scheduled = STAMP.unpack_from(msg.value())[0]
            if scheduled > 0.0:
                latencies.append(now - scheduled)

    reader = threading.Thread(target=consume, name="bench-latency-consumer")
    reader.start()
    send_lag = []
    failed = [0]
    acked: list[float] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failed[0] += 1
        else:
            acked.append(clock() - STAMP.unpack_from(msg.value())[0])

    start = clock() + 0.05
    i = 0
    while i < count:
        due = min(count, int((clock() - start) * LATENCY_RATE) + 1)
        while i < due:
            scheduled = start + i / LATENCY_RATE
            send_lag.append(clock() - scheduled)
            producer.produce(topic, STAMP.pack(scheduled) + VALUES[i & 1023][:92], partition=0,
                             on_delivery=on_delivery)
            i += 1
        producer.poll(0)
        wait = start + i / LATENCY_RATE - clock()
        if wait > 0:
            time.sleep(wait)  # the generator's schedule, not a synchronisation
    assert producer.flush(60) == 0 and failed[0] == 0
    reader.join(LATENCY_SECONDS + 60)
    consumer.close()
    assert not errors and received[0] == count + 1, (received[0], errors[:3])
    warm = int(LATENCY_WARMUP_S * LATENCY_RATE)
    lag_sorted = sorted(send_lag)
    return latencies[warm:], lag_sorted[int(len(lag_sorted) * 0.99)], acked[warm:]


@pytest.mark.bench
def test_end_to_end_latency_rf3_acks_all_fixed_rate(cluster: Cluster, benchmark: Any) -> None:
    runs: list[tuple[list[float], float, list[float]]] = []
    names = iter(range(100))

    def one_round() -> None:
        topic = f"bench-latency-{next(names)}"
        create_topic(cluster, topic, 3, 2)
        runs.append(fixed_rate_end_to_end(cluster, topic))

    benchmark.pedantic(one_round, rounds=2)
    stats, ack_stats = [], []
    for latencies, _, acked in runs:
        ordered = sorted(latencies)
        stats.append((ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)], ordered[-1]))
        ordered = sorted(acked)
        ack_stats.append((ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]))
    p50 = statistics.median(s[0] for s in stats)
    p99 = statistics.median(s[1] for s in stats)
    worst = max(s[2] for s in stats)
    lag = statistics.median(r[1] for r in runs)
    benchmark.extra_info.update(p50_ms=p50 * 1e3, p99_ms=p99 * 1e3, max_ms=worst * 1e3)
    record(f"end-to-end latency at {LATENCY_RATE:,} rec/s, RF=3 acks=all, 100 B lz4, "
           "scheduled send -> consumer receipt",
           f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms (target <= 25 ms), max {worst * 1e3:.1f} ms "
           f"(rounds p99 {', '.join(f'{s[1] * 1e3:.1f}' for s in stats)}); scheduled send -> delivery report "
           f"p50 {statistics.median(a[0] for a in ack_stats) * 1e3:.2f} ms, "
           f"p99 {statistics.median(a[1] for a in ack_stats) * 1e3:.2f} ms; generator scheduling lag p99 "
           f"{lag * 1e3:.2f} ms; producer {LATENCY_PRODUCER}, consumer {LATENCY_CONSUMER}; {load()}")
    assert p99 <= 0.25
