"""kill -9 the broker again and again under acks=all load; no acknowledged batch may be lost.

The load (tests/chaos/rawclient.py): several raw producers, each with one connection and several
pipelined Produce requests in flight, each request carrying lz4 or uncompressed batches of 1-20
records for 1-3 of the topic's partitions; every value is unique (`"{producer}-{seq}"`). Each
batch is recorded as `ok` (acknowledged, base offset known), `fail` (rejected before append) or
`info` (unknown: the connection died after it was sent). Unknown batches are never re-sent.

The faults: after each restart, once the first acks=all write has succeeded again, wait a random
0.3-1.2 s (seeded RNG, `REPLOG_SEED`), then, at the first moment a produce request is in flight,
SIGKILL the broker and restart it on the same data dir and port. Small segments
(`log.segment.bytes`) make the kills land around segment rolls too.

The check (RELIABILITY.md, "What the checker proves"), after the broker is stopped cleanly:
the final log of every partition is read twice, through Fetch from the running broker and with
`brokerctl log dump --json --records` (offline, verifies CRCs), and the two must agree. Then:
lost or changed `ok` batch = 0; `fail` values present = 0; any value at two offsets = 0; two `ok`
at one offset = 0; per producer and partition, a later `ok` at a lower offset = 0; a stored
batch that is not exactly one batch we sent (partial, merged, foreign) = 0; offsets not covered
by a batch from 0 to the log end = 0; CRC-invalid / bad-length / torn entries = 0 (exit code 0).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from brokerproc import BrokerProcess
from rawclient import BatchOp, History, RawConnection, RawProducer, StoredBatch, create_topic, fetch_log

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC = "chaos-durability"
PARTITIONS = 4
PRODUCERS = 4
MAX_IN_FLIGHT = 4
RECORDS_MAX = 20
PAUSE_S = (0.0, 0.03)  # between bursts: bounds the data volume (and so the check's time)
SEGMENT_BYTES = 128 * 1024
UPTIME_S = (0.3, 1.2)  # time between the first successful write after a restart and the next kill
FIRST_ACK_TIMEOUT_S = 20.0
IN_FLIGHT_WAIT_S = 1.0
ACKED_RECORDS_MIN = 2000


def seed_from_env() -> int:
    raw = os.environ.get("REPLOG_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


@dataclass
class Fault:
    index: int
    uptime_s: float             # since the first successful write after the previous restart
    in_flight: int              # produce requests outstanding at the kill
    restart_s: float            # process start to "listening on"
    first_ack_s: float          # "listening" to the first successful acks=all write
    unavailable_s: float        # kill to that write


# --- the run ------------------------------------------------------------------------------------

async def _wait_for_ack_after(history: History, since: float, timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        last = history.last_ack_at
        if last > since:
            return last
        await asyncio.sleep(0.01)  # poll interval of a condition with a deadline
    raise AssertionError(f"{what}: no acks=all write succeeded within {timeout_s}s")


async def run_chaos(broker: BrokerProcess, kills: int, seed: int, while_down: Callable[[str], None] | None = None
                    ) -> tuple[History, list[Fault], dict[int, Any]]:
    """The load and the kills; `while_down(data_dir)` runs between each kill and restart (broken variants)."""
    rng = random.Random(seed)
    host, port = "127.0.0.1", broker.port
    conn = await RawConnection.open(host, port)
    assert await create_topic(conn, TOPIC, PARTITIONS) == 0
    await conn.close()

    history = History()
    producers = [RawProducer(f"p{i}", host, port, TOPIC, PARTITIONS, history, random.Random(rng.getrandbits(64)),
                             max_in_flight=MAX_IN_FLIGHT, records_max=RECORDS_MAX, pause_s=PAUSE_S)
                 for i in range(PRODUCERS)]
    tasks = [asyncio.create_task(p.run(), name=p.name) for p in producers]
    faults: list[Fault] = []
    try:
        await _wait_for_ack_after(history, 0.0, FIRST_ACK_TIMEOUT_S, f"seed {seed}: before the first kill")
        for index in range(kills):
            uptime = rng.uniform(*UPTIME_S)
            await asyncio.sleep(uptime)  # the fault schedule, not a synchronisation
            deadline = time.monotonic() + IN_FLIGHT_WAIT_S
            while sum(p.in_flight for p in producers) == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.001)  # kill while writes are in flight (poll, with a deadline)
            in_flight = sum(p.in_flight for p in producers)
            killed_at = time.monotonic()
            os.kill(broker.pid, signal.SIGKILL)  # now, with no await between the check and the kill
            await asyncio.to_thread(broker.kill)  # reaps it
            if while_down is not None:
                while_down(broker.data_dir)
            started = time.monotonic()
            await asyncio.to_thread(broker.start)
            ready = time.monotonic()
            first_ack = await _wait_for_ack_after(history, ready, FIRST_ACK_TIMEOUT_S,
                                                  f"seed {seed}: after restart {index + 1}")
            faults.append(Fault(index, uptime, in_flight, ready - started, first_ack - ready, first_ack - killed_at))
            for task in tasks:
                if task.done():
                    task.result()  # a producer crashed: surface its exception
    finally:
        for producer in producers:
            producer.stop()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
    for task in done:
        task.result()
    assert not pending, f"seed {seed}: producers did not stop"

    conn = await RawConnection.open(host, port)
    try:
        fetched = {p: await fetch_log(conn, TOPIC, p) for p in range(PARTITIONS)}
    finally:
        await conn.close()
    return history, faults, fetched


# --- the offline view ---------------------------------------------------------------------------

def _bytes_of(obj: dict[str, str] | None) -> bytes | None:
    if obj is None:
        return None
    return obj["utf8"].encode() if "utf8" in obj else base64.b64decode(obj["base64"])


def dump_partition(data_dir: str, partition: int) -> tuple[int, list[dict[str, Any]], str]:
    """(exit code, JSON entries, stderr) of `brokerctl log dump --json --records` of one partition."""
    path = os.path.join(data_dir, f"{TOPIC}-{partition}")
    result = subprocess.run([sys.executable, "-m", "tools.brokerctl", "log", "dump", path, "--json", "--records"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    entries = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, entries, result.stderr


def stored_batches(entries: list[dict[str, Any]]) -> list[StoredBatch]:
    out = []
    for entry in entries:
        if entry["type"] != "batch":
            continue
        records = entry.get("records") or []
        values = []
        for record in records:
            raw = _bytes_of(record["value"])
            values.append(raw.decode(errors="replace") if raw is not None else None)
        out.append(StoredBatch(entry["base_offset"], entry["last_offset"], tuple(values),
                               tuple(r["offset"] for r in records), entry["crc_valid"]))
    return out


# --- the checker ---------------------------------------------------------------------------------

def check_history(history: History, logs: dict[int, list[StoredBatch]]) -> dict[str, list[str]]:
    """Every anomaly, by kind (each list must be empty). `logs`: the final log of each partition."""
    anomalies: dict[str, list[str]] = {k: [] for k in (
        "lost_or_changed_ok", "fail_value_present", "duplicate_value", "not_a_sent_batch", "offset_gap",
        "crc_invalid", "ok_offset_reused", "order")}
    sent_by_first: dict[str, BatchOp] = {op.values[0]: op for op in history.ops}
    where: dict[str, tuple[int, int]] = {}
    at: dict[tuple[int, int], StoredBatch] = {}
    for partition, batches in logs.items():
        expected_next = 0
        for batch in batches:
            if not batch.crc_valid:
                anomalies["crc_invalid"].append(f"p{partition}@{batch.base_offset}")
            if batch.base_offset != expected_next:
                anomalies["offset_gap"].append(f"p{partition}: batch at {batch.base_offset}, expected {expected_next}")
            if (batch.offsets != tuple(range(batch.base_offset, batch.last_offset + 1))
                    or len(batch.values) != batch.last_offset - batch.base_offset + 1):
                anomalies["offset_gap"].append(f"p{partition}@{batch.base_offset}: offsets {batch.offsets[:5]}... "
                                               f"do not cover {batch.base_offset}..{batch.last_offset}")
            expected_next = batch.last_offset + 1
            at[(partition, batch.base_offset)] = batch
            sent = sent_by_first.get(batch.values[0]) if batch.values and batch.values[0] is not None else None
            if sent is None or sent.values != batch.values or sent.partition != partition:
                anomalies["not_a_sent_batch"].append(
                    f"p{partition}@{batch.base_offset}: {batch.values[:3]}... ({len(batch.values)} values) is not "
                    f"a whole batch sent to this partition")
            for offset, value in zip(batch.offsets, batch.values):
                if value in where:
                    anomalies["duplicate_value"].append(f"{value!r} at p{where[value][0]}@{where[value][1]} "
                                                        f"and p{partition}@{offset}")
                else:
                    where[value] = (partition, offset)
    acked_at: dict[tuple[int, int], BatchOp] = {}
    previous: dict[tuple[str, int], BatchOp] = {}  # per producer and partition, the last `ok` sent before
    for op in history.ops:  # in the order they were sent
        if op.outcome == "ok":
            before = previous.get((op.producer, op.partition))
            if before is not None and before.base_offset >= op.base_offset:
                anomalies["order"].append(f"{op.producer} p{op.partition}: {before.values[0]} acked at "
                                          f"{before.base_offset}, the later {op.values[0]} at {op.base_offset}")
            previous[(op.producer, op.partition)] = op
            batch = at.get((op.partition, op.base_offset))
            if batch is None or batch.values != op.values:
                found = where.get(op.values[0])
                anomalies["lost_or_changed_ok"].append(
                    f"{op.producer} p{op.partition}@{op.base_offset} {op.values[0]}..{op.values[-1]} "
                    f"({len(op.values)} values, {op.codec}): log has "
                    f"{batch.values[:2] if batch else 'no batch there'}; first value found at {found}")
            other = acked_at.setdefault((op.partition, op.base_offset), op)
            if other is not op:
                anomalies["ok_offset_reused"].append(
                    f"p{op.partition}@{op.base_offset} acknowledged for {other.values[0]} and {op.values[0]}")
        elif op.outcome == "fail":
            present = [v for v in op.values if v in where]
            if present:
                anomalies["fail_value_present"].append(f"{present[0]} (error {op.error}) at {where[present[0]]}")
    return anomalies


def _summary(seed: int, history: History, faults: list[Fault], logs: dict[int, list[StoredBatch]]) -> dict[str, Any]:
    present = {v for batches in logs.values() for b in batches for v in b.values}
    info = history.by_outcome("info")
    restart = [f.restart_s for f in faults]
    return {
        "seed": seed, "kills": len(faults),
        "kills_with_writes_in_flight": sum(1 for f in faults if f.in_flight > 0),
        "batches": {o: len(history.by_outcome(o)) for o in ("ok", "fail", "info", "invoke")},
        "acked_records": history.acked_records, "acked_batches": history.acked_batches,
        "info_batches_present": sum(1 for op in info if op.values[0] in present),
        "info_batches_absent": sum(1 for op in info if op.values[0] not in present),
        "log_end_offsets": {p: (b[-1].last_offset + 1 if b else 0) for p, b in logs.items()},
        "restart_s": {"mean": round(statistics.mean(restart), 3), "max": round(max(restart), 3),
                      "min": round(min(restart), 3)} if restart else {},
        "first_ack_after_ready_s_max": round(max((f.first_ack_s for f in faults), default=0), 3),
        "unavailable_s": {"mean": round(statistics.mean(f.unavailable_s for f in faults), 3),
                          "max": round(max(f.unavailable_s for f in faults), 3)} if faults else {},
        "schedule_uptime_s": [round(f.uptime_s, 3) for f in faults],
    }


def run_and_check(start_broker, kills: int, while_down: Callable[[str], None] | None = None
                  ) -> tuple[dict[str, Any], dict[str, dict[str, list[str]]], str]:
    """Run, read the final logs both ways, check their structure; (report, anomalies by view, tag)."""
    seed = seed_from_env()
    tag = f"[seed {seed}; rerun with REPLOG_SEED={seed}]"
    broker = start_broker("--set", f"log.segment.bytes={SEGMENT_BYTES}")
    history, faults, fetched = asyncio.run(run_chaos(broker, kills, seed, while_down))
    assert broker.stop() == 0, f"{tag} clean stop failed:\n{broker.log_text()[-3000:]}"

    fetch_view = {p: batches for p, (batches, _hw) in fetched.items()}
    dump_view: dict[int, list[StoredBatch]] = {}
    for partition in range(PARTITIONS):
        code, entries, stderr = dump_partition(broker.data_dir, partition)
        summary = entries[-1] if entries and entries[-1]["type"] == "summary" else None
        assert code == 0 and summary is not None, f"{tag} log dump p{partition}: exit {code}\n{stderr}"
        assert summary["invalid_batches"] == 0 and summary["bad_lengths"] == 0, f"{tag} p{partition}: {summary}"
        assert summary["torn_tails"] == 0, f"{tag} p{partition}: torn tail left after recovery: {summary}"
        assert all(not e.get("records_error") for e in entries if e["type"] == "batch"), \
            f"{tag} p{partition}: undecodable batch in the dump"
        dump_view[partition] = stored_batches(entries)
        hw = fetched[partition][1]
        end = dump_view[partition][-1].last_offset + 1 if dump_view[partition] else 0
        assert hw == end, f"{tag} p{partition}: Fetch high watermark {hw} != dumped log end {end}"
        as_tuples = [(b.base_offset, b.last_offset, b.values) for b in dump_view[partition]]
        assert [(b.base_offset, b.last_offset, b.values) for b in fetch_view[partition]] == as_tuples, \
            f"{tag} p{partition}: the Fetch view and the offline dump differ"

    report = _summary(seed, history, faults, dump_view)
    anomalies = {name: check_history(history, view) for name, view in (("fetch", fetch_view), ("dump", dump_view))}
    report["anomalies"] = {name: {k: len(v) for k, v in found.items() if v} for name, found in anomalies.items()}
    print(f"\nkill -9 durability report: {json.dumps(report)}")
    assert history.acked_records >= ACKED_RECORDS_MIN, f"{tag} only {history.acked_records} acknowledged: {report}"
    assert len(faults) == kills, f"{tag} {report}"
    assert report["kills_with_writes_in_flight"] >= kills * 0.8, \
        f"{tag} kills mostly without writes in flight: {report}"
    log = broker.log_text()
    assert "Traceback" not in log, f"{tag} a traceback in the broker log:\n{log[log.index('Traceback') - 500:][:4000]}"
    return report, anomalies, tag


def assert_no_anomalies(report: dict[str, Any], anomalies: dict[str, dict[str, list[str]]], tag: str) -> None:
    for view, found in anomalies.items():
        bad = {kind: examples[:5] for kind, examples in found.items() if examples}
        assert not bad, f"{tag} anomalies in the {view} view: {json.dumps(bad, indent=1)}\nreport: {report}"


def test_acknowledged_writes_survive_kill9(start_broker) -> None:
    assert_no_anomalies(*run_and_check(start_broker, kills=20))


@pytest.mark.slow
def test_acknowledged_writes_survive_many_kill9(start_broker, request) -> None:
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("REPLOG_SLOW"):
        pytest.skip("slow: run with -m slow or REPLOG_SLOW=1")
    assert_no_anomalies(*run_and_check(start_broker, kills=int(os.environ.get("REPLOG_KILLS", "100"))))


# --- the checker's own tests ---------------------------------------------------------------------

def drop_last_batch_of_each_partition(data_dir: str) -> None:
    """A broken broker, simulated on disk while it is down: the last batch of every partition is
    lost, as if acks=all were answered before the write reached the kernel."""
    for partition in range(PARTITIONS):
        path = os.path.join(data_dir, f"{TOPIC}-{partition}")
        for name in sorted((n for n in os.listdir(path) if n.endswith(".log")), reverse=True):
            with open(os.path.join(path, name), "r+b") as f:
                data = f.read()
                position, last = 0, None
                while position + 12 <= len(data):
                    size = 12 + int.from_bytes(data[position + 8:position + 12], "big", signed=True)
                    if size < 61 or position + size > len(data):
                        break
                    last, position = position, position + size
                if last is not None:
                    f.truncate(last)
                    break


def test_the_checker_catches_a_broker_that_loses_acknowledged_writes(start_broker) -> None:
    report, anomalies, tag = run_and_check(start_broker, kills=3, while_down=drop_last_batch_of_each_partition)
    for view, found in anomalies.items():
        assert found["lost_or_changed_ok"], f"{tag} the {view} view missed the lost writes: {report}"


def _op(producer: str, partition: int, values: tuple[str, ...], outcome: str, base_offset: int = -1) -> BatchOp:
    return BatchOp(producer, partition, values, "none", outcome, base_offset)


def _batch(base: int, values: tuple[str, ...], crc_valid: bool = True) -> StoredBatch:
    return StoredBatch(base, base + len(values) - 1, values, tuple(range(base, base + len(values))), crc_valid)


def test_the_checker_flags_each_anomaly_in_hand_made_histories() -> None:
    a = _op("p", 0, ("p-0", "p-1"), "ok", 0)
    b = _op("p", 0, ("p-2",), "ok", 2)
    c = _op("p", 0, ("p-3",), "info")
    d = _op("p", 0, ("p-4",), "fail")
    history = History([a, b, c, d])
    good = [_batch(0, a.values), _batch(2, b.values)]
    cases = {
        "clean": ([*good], set()),
        "info present once": ([*good, _batch(3, c.values)], set()),
        "lost": ([_batch(0, a.values)], {"lost_or_changed_ok"}),
        "changed": ([_batch(0, a.values), _batch(2, ("q-9",))], {"lost_or_changed_ok", "not_a_sent_batch"}),
        "fail present": ([*good, _batch(3, d.values)], {"fail_value_present"}),
        "duplicate": ([*good, _batch(3, c.values), _batch(4, c.values)], {"duplicate_value"}),
        "partial": ([_batch(0, ("p-0",)), _batch(1, ("p-1",)), _batch(2, b.values)],
                    {"not_a_sent_batch", "lost_or_changed_ok"}),
        "gap": ([_batch(0, a.values), _batch(3, c.values)], {"offset_gap", "lost_or_changed_ok"}),
        "not from 0": ([_batch(1, a.values)], {"offset_gap", "lost_or_changed_ok"}),
        "crc": ([_batch(0, a.values), _batch(2, b.values, crc_valid=False)], {"crc_invalid"}),
        "wrong partition": ([_batch(0, a.values)], {"not_a_sent_batch", "lost_or_changed_ok"}),
    }
    for name, (batches, expected) in cases.items():
        logs = {0: batches, 1: [_batch(0, b.values)] if name == "wrong partition" else []}
        found = {kind for kind, examples in check_history(history, logs).items() if examples}
        assert found == expected, f"{name}: flagged {found}, expected {expected}"
    reused = History([a, _op("q", 0, ("q-0", "q-1"), "ok", 0)])
    assert check_history(reused, {0: [_batch(0, a.values)]})["ok_offset_reused"]
    backwards = History([b, a])  # b was sent first but got the higher offset
    found = check_history(backwards, {0: good})
    assert {kind for kind, examples in found.items() if examples} == {"order"}
