"""Broker benchmarks: real brokerd processes driven by real clients, each figure against a baseline
measured in the same run. Figures and commands are collected in docs/performance.md.

1. librdkafka (confluent-kafka) producer, 100-byte records, lz4, acks=all, one and eight
   partitions. Baseline: the same producer's enqueue rate (the same produce() calls into a
   producer whose broker is unreachable, nothing flushed). Figure: end-to-end rate (produce N,
   flush until every record is acknowledged) / enqueue rate, target >= 0.6; and the broker's CPU
   time per record from /proc/<pid>/stat (utime + stime), target <= 1.2 us.
2. Broker ceiling: pre-encoded Produce requests written by a raw socket (no client cost), 8000-
   and 134-record batches, and 8000 keyed records to a compacted topic. Baseline:
   validate_client_batch alone on the same batches, in this process (the per-record work the
   broker cannot skip).
3. Produce latency at a fixed 10,000 records/s with replog's Producer (linger_ms=5), measured from
   each record's *scheduled* send time (no coordinated omission) to its future resolving:
   p50/p99/max, target p99 <= linger_ms + 5 ms. Baseline: the generator's own scheduling lag.
4. Event-loop lag of the broker (broker/loop_lag.py log lines) idle, under produce load, and under
   produce load with the log cleaner compacting a topic at the same time; and the stall of the
   append that rolls a 1 GiB segment (it fsyncs the old segment on the event loop).
5. replog Producer/Consumer vs kafka-python for 1 KiB records and for eight partitions (the
   100-byte one-partition case is tests/client/test_client_throughput.py).

The machine these run on is shared: every figure is printed with the 1-minute load average, the
asserted bounds are loose (they catch regressions, not the targets), medians of several rounds.
Slow benchmarks skip unless selected with `-m bench`; only the probe smoke test runs by default.

Run: python -m pytest -m bench tests/bench/test_bench_broker.py -q -s
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from brokerproc import free_port

from client import Consumer, Producer
from client.wire.protocol import decode_response, encode_request
from client.wire.records import CODEC_LZ4, build_batch, validate_client_batch

RESULTS: dict[str, str] = {}
CLK_TCK = os.sysconf("SC_CLK_TCK")
VALUES = [os.urandom(50).hex().encode() for _ in range(1024)]  # 100-byte values; distinct, so lz4 gains little
LAG_LINE = re.compile(r"^(\S+ \S+) .*event-loop lag p50=([\d.]+)ms p99=([\d.]+)ms max=([\d.]+)ms "
                      r"samples=(\d+) busy=(\d+)%", re.M)


@pytest.fixture
def bench_selected(request) -> None:
    if "bench" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("broker benchmark: run with -m bench")


# ---------------------------------------------------------------------------------------- helpers

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_sched(pid: int | None = None) -> tuple[float, float]:
    """(cpu seconds, run-queue wait seconds) of the calling thread, or of a process's main thread:
    how long it ran vs how long it was runnable but waited for a CPU (the machine is shared)."""
    path = f"/proc/{pid}/schedstat" if pid else f"/proc/self/task/{threading.get_native_id()}/schedstat"
    with open(path) as f:
        run_ns, wait_ns, _ = (int(x) for x in f.read().split())
    return run_ns / 1e9, wait_ns / 1e9


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def record(name: str, line: str) -> None:
    RESULTS[name] = f"{name}: {line}"
    print("\n" + RESULTS[name])


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return (ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], ordered[-1])


def create_topic(bootstrap: str, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})]).values():
        future.result(30)


# ------------------------------------------------------------ 1. confluent-kafka (librdkafka) producer

CK_RECORDS = 400_000
CK_ROUNDS = 3
CK_SETTINGS = {  # tuned for throughput as a user would; reported with the figures
    "acks": "all", "compression.type": "lz4", "linger.ms": 10, "batch.size": 1_000_000,
    "queue.buffering.max.messages": 2 * CK_RECORDS, "queue.buffering.max.kbytes": 1 << 20,
}


def ck_produce_loop(producer: Any, topic: str, partitions: int, on_delivery: Callable[..., None]) -> None:
    """The exact calls both the baseline and the end-to-end run time."""
    assert partitions & (partitions - 1) == 0, "a power of two: the partition is i & mask"
    mask = partitions - 1
    produce, values = producer.produce, VALUES
    for i in range(CK_RECORDS):
        produce(topic, values[i & 1023], partition=i & mask, on_delivery=on_delivery)


def ck_enqueue_rate(settings: dict[str, Any], partitions: int) -> float:
    """Records/s that produce() accepts into librdkafka's queues when nothing can be sent."""
    from confluent_kafka import Producer as CKProducer

    unreachable = f"127.0.0.1:{free_port()}"  # nothing listens: every record stays queued
    producer = CKProducer({**settings, "bootstrap.servers": unreachable, "log_level": 0})
    started = time.perf_counter()
    ck_produce_loop(producer, "enqueue-only", partitions, lambda err, msg: None)
    rate = CK_RECORDS / (time.perf_counter() - started)
    producer.purge()
    producer.flush(0)
    return rate


@pytest.mark.bench
@pytest.mark.parametrize("partitions, report", [(1, "errors"), (8, "errors"), (1, "all")],
                         ids=["1-partition", "8-partitions", "1-partition-callback-per-record"])
def test_confluent_producer(bench_selected, broker, benchmark, partitions: int, report: str) -> None:
    from confluent_kafka import Producer as CKProducer

    settings = {**CK_SETTINGS, "delivery.report.only.error": report == "errors"}
    enqueue: list[float] = []
    end_to_end: list[float] = []
    broker_cpu_s: list[float] = []
    broker_busy: list[float] = []  # broker CPU seconds per wall second of the end-to-end run
    thread_run_wait: list[tuple[float, float, float, float]] = []
    failed = [0]
    topics = iter(f"ck{partitions}{report}-{n}" for n in range(100))

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    def baseline() -> None:
        enqueue.append(ck_enqueue_rate(settings, partitions))

    def one_round() -> None:
        topic = next(topics)
        create_topic(broker.bootstrap, topic, partitions)
        producer = CKProducer({**settings, "bootstrap.servers": broker.bootstrap})
        for p in range(partitions):  # metadata, connection and one batch per partition before timing
            producer.produce(topic, b"warm-up", partition=p)
        assert producer.flush(30) == 0
        cpu0, sched0, started = cpu_seconds(broker.pid), thread_sched(), time.perf_counter()
        broker_sched0 = thread_sched(broker.pid)
        ck_produce_loop(producer, topic, partitions, on_delivery)
        assert producer.flush(120) == 0, "records left undelivered"
        elapsed = time.perf_counter() - started
        broker_cpu_s.append(cpu_seconds(broker.pid) - cpu0)
        broker_busy.append(broker_cpu_s[-1] / elapsed)
        sched1 = thread_sched()
        broker_sched1 = thread_sched(broker.pid)
        thread_run_wait.append((sched1[0] - sched0[0], sched1[1] - sched0[1],
                                broker_sched1[0] - broker_sched0[0], broker_sched1[1] - broker_sched0[1]))
        end_to_end.append(CK_RECORDS / elapsed)
        stored = sum(ck_high_watermark(broker.bootstrap, topic, p) for p in range(partitions)) - partitions
        assert stored == CK_RECORDS and failed[0] == 0  # every record is in the log, none failed

    benchmark.pedantic(one_round, setup=baseline, rounds=CK_ROUNDS)
    ratios = sorted(e / b for e, b in zip(end_to_end, enqueue))
    ratio = statistics.median(ratios)
    us_per_record = statistics.median(broker_cpu_s) / CK_RECORDS * 1e6
    ran, waited, broker_ran, broker_waited = (statistics.median(x) for x in zip(*thread_run_wait))
    ceiling = 1e6 / us_per_record
    benchmark.extra_info.update(enqueue_rps=statistics.median(enqueue), end_to_end_rps=statistics.median(end_to_end),
                                ratio=ratio, broker_us_per_record=us_per_record, settings=settings)
    name = f"confluent-kafka produce, 100 B lz4 acks=all, {partitions} partition(s), delivery reports: {report}"
    rounds = ", ".join(f"{r:.2f}" for r in ratios)
    record(name, f"enqueue {statistics.median(enqueue):,.0f} rec/s, end-to-end "
                 f"{statistics.median(end_to_end):,.0f} rec/s, ratio {ratio:.2f} (rounds {rounds}; "
                 f"target >= 0.6); broker CPU {us_per_record:.2f} us/record (target <= 1.2; a broker ceiling of "
                 f"{ceiling:,.0f} rec/s of CPU; busy {statistics.median(broker_busy):.0%} of the end-to-end run); "
                 f"per round the producing thread ran {ran:.2f} s and waited "
                 f"{waited:.2f} s for a CPU, the broker ran {broker_ran:.2f} s and waited {broker_waited:.2f} s; "
                 f"{load()}")
    assert ratio >= 0.15 and us_per_record <= 3.0


def ck_high_watermark(bootstrap: str, topic: str, partition: int) -> int:
    from confluent_kafka import Consumer as CKConsumer
    from confluent_kafka import TopicPartition

    consumer = CKConsumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        consumer.close()


# ------------------------------------------------------------------------ 2. broker ceiling, raw socket

RAW_RECORDS = 400_000
RAW_IN_FLIGHT = 5


def raw_produce_frames(topic: str, records_per_batch: int, count: int,
                       keyed: bool) -> tuple[list[bytes], list[bytes]]:
    """`count` framed Produce v8 requests (acks=all) cycling over 8 distinct batches, and the batches."""
    timestamp = int(time.time() * 1000)
    batches = [build_batch([(b"key-%06d" % ((k * records_per_batch + i) % 20_000) if keyed else None,
                             VALUES[(k * records_per_batch + i) & 1023], timestamp, ())
                            for i in range(records_per_batch)], compression=CODEC_LZ4) for k in range(8)]
    frames = []
    for n in range(count):
        body = {"transactional_id": None, "acks": -1, "timeout_ms": 30_000,
                "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batches[n % 8]}]}]}
        payload = encode_request(0, 8, n, "raw-bench", body)
        frames.append(struct.pack(">i", len(payload)) + payload)
    return frames, batches


def raw_produce(port: int, frames: list[bytes]) -> None:
    """Write the frames with at most RAW_IN_FLIGHT unanswered; check every answer."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = answered = 0
        buffer = b""
        while answered < len(frames):
            while sent < len(frames) and sent - answered < RAW_IN_FLIGHT:
                s.sendall(frames[sent])
                sent += 1
            data = s.recv(1 << 16)
            assert data, "broker closed the connection"
            buffer += data
            while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack_from(">i", buffer)[0]:
                size = struct.unpack_from(">i", buffer)[0]
                _, body = decode_response(buffer[4:4 + size], 0, 8)
                assert body["responses"][0]["partition_responses"][0]["error_code"] == 0
                buffer = buffer[4 + size:]
                answered += 1


@pytest.mark.bench
@pytest.mark.parametrize("records_per_batch, compacted", [(8000, False), (134, False), (8000, True)],
                         ids=["8000-records", "134-records", "8000-keyed-records-compacted-topic"])
def test_broker_ceiling_raw_produce(bench_selected, broker, benchmark, records_per_batch: int,
                                    compacted: bool) -> None:
    topic = f"raw{records_per_batch}{'c' if compacted else ''}"
    create_topic(broker.bootstrap, topic, 1, {"cleanup.policy": "compact"} if compacted else None)
    frames, batches = raw_produce_frames(topic, records_per_batch, RAW_RECORDS // records_per_batch, compacted)
    total = len(frames) * records_per_batch
    rates: list[float] = []
    cpu_us: list[float] = []

    def one_round() -> None:
        cpu0, started = cpu_seconds(broker.pid), time.perf_counter()
        raw_produce(broker.port, frames)
        rates.append(total / (time.perf_counter() - started))
        cpu_us.append((cpu_seconds(broker.pid) - cpu0) / total * 1e6)

    benchmark.pedantic(one_round, rounds=3)
    started = time.process_time()  # baseline: the broker's unavoidable per-record work, here
    for n in range(len(frames)):
        assert validate_client_batch(batches[n % 8], require_keys=compacted) == 0
    validate_us = (time.process_time() - started) / total * 1e6
    us = statistics.median(cpu_us)
    benchmark.extra_info.update(records_per_s=statistics.median(rates), broker_us_per_record=us,
                                validate_us_per_record=validate_us)
    what = "keyed, compacted topic" if compacted else "no key"
    record(f"broker ceiling, raw pre-encoded Produce, {records_per_batch} x 100 B lz4 per batch ({what}), "
           f"{RAW_IN_FLIGHT} in flight",
           f"{statistics.median(rates):,.0f} rec/s, broker CPU {us:.2f} us/record; baseline validate_client_batch "
           f"alone {validate_us:.2f} us/record ({validate_us / us:.0%} of the broker's CPU); {load()}")
    assert us <= 4.0


# ------------------------------------------------------------------ 3. latency at a fixed rate

LATENCY_RATE = 10_000
LATENCY_SECONDS = 6
LATENCY_LINGER_MS = 5


async def fixed_rate_latencies(bootstrap: str, topic: str) -> tuple[list[float], list[float]]:
    """(latency from scheduled send time to the future resolving, scheduled-to-send lag) in seconds."""
    count = LATENCY_RATE * LATENCY_SECONDS
    latencies = [0.0] * count
    send_lag = [0.0] * count
    clock = time.perf_counter
    async with Producer(bootstrap, acks="all", compression="lz4", linger_ms=LATENCY_LINGER_MS) as producer:
        await producer.send_and_wait(topic, b"warm-up")
        start = clock() + 0.01
        remaining = [count]
        done = asyncio.get_running_loop().create_future()

        def resolved(i: int, scheduled: float, future: asyncio.Future[Any]) -> None:
            future.result()  # a failed send fails the benchmark
            latencies[i] = clock() - scheduled
            remaining[0] -= 1
            if not remaining[0]:
                done.set_result(None)

        i = 0
        while i < count:
            now = clock()
            due = min(count, int((now - start) * LATENCY_RATE) + 1)
            while i < due:
                scheduled = start + i / LATENCY_RATE
                send_lag[i] = clock() - scheduled
                future = producer.send(topic, VALUES[i & 1023])
                future.add_done_callback(lambda f, i=i, s=scheduled: resolved(i, s, f))
                i += 1
            await asyncio.sleep(max(0.0, start + i / LATENCY_RATE - clock()))
        await asyncio.wait_for(done, 60)
    return latencies, send_lag


@pytest.mark.bench
def test_produce_latency_fixed_rate(bench_selected, broker, benchmark) -> None:
    create_topic(broker.bootstrap, "latency", 1)
    runs: list[tuple[list[float], list[float]]] = []
    benchmark.pedantic(lambda: runs.append(asyncio.run(fixed_rate_latencies(broker.bootstrap, "latency"))), rounds=2)
    stats = [percentiles(latencies) for latencies, _ in runs]
    lags = [percentiles(send_lag) for _, send_lag in runs]
    p50, p99 = statistics.median(s[0] for s in stats), statistics.median(s[1] for s in stats)
    worst = max(s[2] for s in stats)
    lag_p99 = statistics.median(s[1] for s in lags)
    benchmark.extra_info.update(p50_ms=p50 * 1e3, p99_ms=p99 * 1e3, max_ms=worst * 1e3, send_lag_p99_ms=lag_p99 * 1e3)
    record(f"replog Producer latency at {LATENCY_RATE:,} rec/s, linger_ms={LATENCY_LINGER_MS}, acks=all, lz4",
           f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms (target <= {LATENCY_LINGER_MS + 5} ms), max "
           f"{worst * 1e3:.2f} ms, from scheduled send time, {len(runs)} runs of {LATENCY_SECONDS} s (medians; max "
           f"of both); baseline: the generator's own scheduled-to-send lag p99 {lag_p99 * 1e3:.2f} ms; {load()}")
    assert p99 <= 0.1


# ---------------------------------------------------------------------------- 4. event-loop lag

LAG_INTERVAL_MS = 10
LAG_WINDOW_MS = 1000


def lag_windows(text: str) -> list[tuple[float, float, float, int, int]]:
    """(p50 ms, p99 ms, max ms, samples, busy %) of every lag line in a broker log."""
    return [(float(m[2]), float(m[3]), float(m[4]), int(m[5]), int(m[6])) for m in LAG_LINE.finditer(text)]


def summarize(windows: list[tuple[float, float, float, int, int]]) -> str:
    if not windows:
        return "no windows"
    return (f"p50 {statistics.median(w[0] for w in windows):.2f} ms, p99 {statistics.median(w[1] for w in windows):.2f}"
            f" ms (worst window {max(w[1] for w in windows):.2f}), max {max(w[2] for w in windows):.2f} ms "
            f"[{len(windows)} windows of {LAG_WINDOW_MS} ms, {sum(w[3] for w in windows)} samples]")


def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)  # poll interval of a condition wait with a deadline


@pytest.fixture
def lag_broker(start_broker, monkeypatch):
    monkeypatch.setenv("REPLOG_LOOP_LAG_INTERVAL_MS", str(LAG_INTERVAL_MS))
    monkeypatch.setenv("REPLOG_LOOP_LAG_WINDOW_MS", str(LAG_WINDOW_MS))
    return start_broker()


def test_loop_lag_probe_logs(lag_broker) -> None:
    """Smoke test (runs by default, ~1.5 s): the broker logs the probe's line every window."""
    wait_for(lambda: len(lag_windows(lag_broker.log_text())) >= 1, 10)
    p50, p99, peak, samples, busy = lag_windows(lag_broker.log_text())[0]
    assert 0 <= p50 <= p99 <= peak and samples > 0 and busy == 0


def ck_fill(bootstrap: str, topic: str, count: int, keys: int | None, *, stop: Callable[[], bool] = lambda: False,
            rate: int | None = None, settings: dict[str, Any] | None = None) -> int:
    """Produce up to `count` records with the tuned librdkafka settings, at most `rate` per second
    (chunks of 1% of a second), until `stop()`; returns how many were sent (all acknowledged)."""
    from confluent_kafka import Producer as CKProducer

    producer = CKProducer({**CK_SETTINGS, **(settings or {}), "bootstrap.servers": bootstrap,
                           "delivery.report.only.error": True})
    chunk = rate // 100 if rate else 20_000
    started = time.perf_counter()
    sent = 0
    while sent < count and not stop():
        for i in range(sent, sent + chunk):
            key = None if keys is None else b"key-%06d" % (i % keys)
            while True:
                try:
                    producer.produce(topic, VALUES[i & 1023], key=key, partition=0)
                    break
                except BufferError:  # the queue is full: let librdkafka deliver some
                    producer.poll(0.01)
        sent += chunk
        producer.poll(0)
        if rate:
            time.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    assert producer.flush(120) == 0
    return sent


LAG_LOAD_RATE = 200_000  # records/s: 20 MB/s of 100-byte records; 45 s stay below one 1 GiB segment


@pytest.mark.bench
@pytest.mark.parametrize("compacted_batch_bytes", [16_384, 1_000_000], ids=["compacted-16KiB-batches",
                                                                           "compacted-1MB-batches"])
def test_event_loop_lag_under_load_with_cleaner(bench_selected, lag_broker, benchmark,
                                                compacted_batch_bytes: int) -> None:
    """Lag idle, under a steady produce load, and under that load while the cleaner compacts 100 MB.

    The cleaner works a slice at a time, but a slice holds at least one whole batch: the batch size
    of the compacted topic's producers sets the longest slice. The load stays inside one segment
    (segment rolls fsync the old segment on the loop: test_segment_roll_stall)."""
    broker = lag_broker
    create_topic(broker.bootstrap, "compacted", 1, {"cleanup.policy": "compact", "segment.bytes": str(1 << 20),
                                                    "min.cleanable.dirty.ratio": "0.01"})
    create_topic(broker.bootstrap, "load", 1)
    wait_for(lambda: len(lag_windows(broker.log_text())) >= 3, 20)
    idle = lag_windows(broker.log_text())
    ck_fill(broker.bootstrap, "compacted", 1_000_000, keys=20_000,  # ~100 MB, 20k keys: the cleaner has work
            settings={"batch.size": compacted_batch_bytes})
    before_load = len(lag_windows(broker.log_text()))

    def cleaned() -> bool:  # a pass ended (the broker cleans 15 s after start, CLEANER_BACKOFF_MS)
        return "reason='done'" in broker.log_text()

    def drive_load() -> None:
        deadline = time.monotonic() + 45  # 9 M records: below 1 GiB
        sent = ck_fill(broker.bootstrap, "load", 10**9, keys=None, rate=LAG_LOAD_RATE,
                       stop=lambda: (cleaned() and len(lag_windows(broker.log_text())) > before_load + 12)
                       or time.monotonic() > deadline)
        assert sent * 110 < 1 << 30, "the load rolled a segment"

    sched0 = thread_sched(broker.pid)
    benchmark.pedantic(drive_load, rounds=1)
    ran, waited = (b - a for a, b in zip(sched0, thread_sched(broker.pid)))
    assert cleaned(), "the cleaner did not finish a pass during the load"
    loaded = lag_windows(broker.log_text())[before_load + 1:-1]  # whole windows under load only
    with_cleaner = [w for w in loaded if w[4] > 0]
    without = [w for w in loaded if w[4] == 0]
    p99_cleaning = statistics.median(w[1] for w in with_cleaner) if with_cleaner else float("nan")
    benchmark.extra_info.update(idle=summarize(idle), load=summarize(without), load_and_cleaner=summarize(with_cleaner))
    case = f"compacted topic written in {compacted_batch_bytes:,} B batches"
    load_what = f"librdkafka produce load, {LAG_LOAD_RATE:,} x 100 B rec/s"
    record(f"broker event-loop lag (10 ms probe), idle (baseline) [{case}]", summarize(idle))
    record(f"broker event-loop lag under {load_what} [{case}]", f"{summarize(without)}; {load()}")
    record(f"broker event-loop lag under the same load + log cleaner compacting 100 MB [{case}]",
           f"{summarize(with_cleaner)}; during the load the broker ran {ran:.1f} s and waited {waited:.1f} s for "
           f"a CPU; {load()}")
    assert with_cleaner, "no lag window overlapped the cleaner's pass"
    assert p99_cleaning <= 100


@pytest.mark.bench
def test_segment_roll_stall(bench_selected, tmp_path, benchmark) -> None:
    """The append that rolls a full 1 GiB segment fsyncs it (Log._roll -> _flush_all) on the caller's
    thread, which in the broker is the event loop. Baseline: the median append of the same run."""
    from storage import Log, LogConfig

    batch = build_batch([(None, VALUES[i & 1023], int(time.time() * 1000), ()) for i in range(9000)])
    log_ = Log.open(str(tmp_path / "roll-0"), LogConfig(max_message_bytes=2 << 20))  # 1 GiB segments
    times: list[float] = []

    def fill_and_roll() -> None:
        while len(log_.segments) == 1:
            started = time.perf_counter()
            log_.append(batch, 0)
            times.append(time.perf_counter() - started)

    try:
        benchmark.pedantic(fill_and_roll, rounds=1)
        assert len(log_.segments) == 2
    finally:
        log_.close()
        log_.delete()
    roll, typical = times[-1], statistics.median(times)
    benchmark.extra_info.update(roll_append_ms=roll * 1e3, median_append_ms=typical * 1e3)
    record("segment roll stall (Log.append that rolls a 1 GiB segment, on the event loop in the broker)",
           f"{roll * 1e3:.0f} ms, vs a median append of {len(batch) >> 10} KiB {typical * 1e3:.2f} ms (baseline, "
           f"same run); {load()}")
    assert roll < 30


# ------------------------------------------------------- 5. replog clients vs kafka-python, more shapes

async def ours_produce(bootstrap: str, topic: str, values: list[bytes], count: int, partitions: int) -> float:
    async with Producer(bootstrap, acks="all", compression="lz4", linger_ms=5) as producer:
        await producer.send_and_wait(topic, values[0])
        started = time.perf_counter()
        for i in range(count):
            await producer.send_when_ready(topic, values[i & 255], partition=i % partitions)
        await producer.flush()
        return count / (time.perf_counter() - started)


async def ours_consume(bootstrap: str, topic: str, count: int, partitions: int) -> float:
    async with Consumer(bootstrap, max_poll_records=10_000) as consumer:
        tps = [(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        got = 0
        started = time.perf_counter()
        while got < count:
            got += len(await consumer.poll(timeout_ms=1_000))
        return got / (time.perf_counter() - started)


def kp_produce(bootstrap: str, topic: str, values: list[bytes], count: int, partitions: int) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="lz4", linger_ms=5)
    producer.send(topic, values[0], partition=0).get(timeout=30)
    started = time.perf_counter()
    for i in range(count):
        producer.send(topic, values[i & 255], partition=i % partitions)
    producer.flush()
    rate = count / (time.perf_counter() - started)
    producer.close()
    return rate


def kp_consume(bootstrap: str, topic: str, count: int, partitions: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    got = 0
    started = time.perf_counter()
    while got < count:
        got += sum(len(records) for records in consumer.poll(timeout_ms=1_000, max_records=10_000).values())
    rate = got / (time.perf_counter() - started)
    consumer.close()
    return rate


CLIENT_ROUNDS = 3


@pytest.mark.bench
@pytest.mark.parametrize("value_bytes, partitions, ours_records, kp_records",
                         [(1024, 1, 60_000, 20_000), (100, 8, 200_000, 60_000)], ids=["1KiB-1p", "100B-8p"])
def test_clients_vs_kafka_python(bench_selected, broker, benchmark, value_bytes: int, partitions: int,
                                 ours_records: int, kp_records: int) -> None:
    values = [os.urandom(value_bytes // 2).hex().encode() for _ in range(256)]  # distinct: lz4 gains little
    rounds: list[dict[str, float]] = []

    def one_round() -> None:  # kafka-python and ours back to back, so both see the same machine load
        n = len(rounds)
        create_topic(broker.bootstrap, f"kp{n}", partitions)
        create_topic(broker.bootstrap, f"ours{n}", partitions)
        figures = {"kp_produce": kp_produce(broker.bootstrap, f"kp{n}", values, kp_records, partitions),
                   "ours_produce": asyncio.run(ours_produce(broker.bootstrap, f"ours{n}", values, ours_records,
                                                            partitions)),
                   "kp_consume": kp_consume(broker.bootstrap, f"ours{n}", ours_records, partitions),
                   "ours_consume": asyncio.run(ours_consume(broker.bootstrap, f"ours{n}", ours_records, partitions))}
        rounds.append(figures)

    benchmark.pedantic(one_round, rounds=CLIENT_ROUNDS)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    produce_ratio = statistics.median(r["ours_produce"] / r["kp_produce"] for r in rounds)
    consume_ratio = statistics.median(r["ours_consume"] / r["kp_consume"] for r in rounds)
    benchmark.extra_info.update(median, produce_ratio=produce_ratio, consume_ratio=consume_ratio)
    shape = f"{value_bytes} B records, {partitions} partition(s), lz4, acks=all, linger 5 ms"
    each = ", ".join(f"{r['ours_produce'] / r['kp_produce']:.1f}" for r in rounds)
    record(f"replog Producer vs kafka-python, {shape}",
           f"ours {median['ours_produce']:,.0f} rec/s, kafka-python {median['kp_produce']:,.0f} rec/s "
           f"(median ratio {produce_ratio:.1f}x of rounds {each}; target >= 3x); {load()}")
    each = ", ".join(f"{r['ours_consume'] / r['kp_consume']:.1f}" for r in rounds)
    record(f"replog Consumer vs kafka-python, {shape}",
           f"ours {median['ours_consume']:,.0f} rec/s, kafka-python {median['kp_consume']:,.0f} rec/s "
           f"(median ratio {consume_ratio:.1f}x of rounds {each}; target >= 2x); {load()}")
    assert produce_ratio >= 1.5 and consume_ratio >= 1.2


def test_zz_summary() -> None:
    """Runs last in the module: all figures together (with -s)."""
    if RESULTS:
        print("\n" + "\n".join(RESULTS.values()))
