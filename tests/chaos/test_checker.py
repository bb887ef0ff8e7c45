"""The checker's own tests (RELIABILITY.md: a checker that has never caught a bug proves nothing).

Hand-made histories and final logs, one per anomaly kind: each must be flagged, and only as the
kinds expected; a clean history (with fail and info outcomes present, and an info value that made
it into the log) passes. Also the dump parser on real `brokerctl log dump --json` lines, the HW
checkpoint parser, the history's JSON-lines round trip and the figures.
"""

from __future__ import annotations

import json

import pytest

from tools.chaos import checker, metrics
from tools.chaos.history import History
from tools.chaos.logs import Batch, ReplicaLog, parse_dump, read_hw_checkpoint


def _history() -> History:
    """p0: p-0 ok@0, p-1 ok@1, p-2 info (appended at 2), p-3 fail; p1: q-0 ok@0. Consumer c read p0 0..2."""
    h = History()
    for seq, (partition, outcome, offset) in enumerate([(0, "ok", 0), (0, "ok", 1), (0, "info", -1), (0, "fail", -1)]):
        op = h.invoke("p", seq, partition, float(seq))
        h.complete(op, outcome, seq + 0.5, offset, "" if outcome == "ok" else "ERR")
    h.complete(h.invoke("q", 0, 1, 0.1), "ok", 0.2, 0)
    h.seek("c", 0, 0, 0.0)
    for offset, value in enumerate(["p-0", "p-1", "p-2"]):
        h.read("c", 0, offset, value, 10.0 + offset)
    return h


def _final() -> dict[int, dict[int, str | None]]:
    return {0: {0: "p-0", 1: "p-1", 2: "p-2"}, 1: {0: "q-0"}}


def _replica(node: int, partition: int, values: list[str], epoch: int = 1, hw: int | None = None,
             crcs: list[int] | None = None) -> ReplicaLog:
    batches = [Batch(i, i, epoch, (crcs or [1000 + i for i in range(len(values))])[i], True, (v,), (i,))
               for i, v in enumerate(values)]
    return ReplicaLog(node, partition, batches, high_watermark=hw)


def _replicas() -> list[ReplicaLog]:
    return [_replica(n, 0, ["p-0", "p-1", "p-2"]) for n in (1, 2, 3)] + [_replica(n, 1, ["q-0"]) for n in (1, 2, 3)]


def _found(h: History, final: dict[int, dict[int, str | None]], replicas: list[ReplicaLog] | None = None,
           logs: dict[str, str] | None = None) -> set[str]:
    return checker.check(h, final, _replicas() if replicas is None else replicas, logs or {}).found()


def test_a_clean_history_passes() -> None:
    result = checker.check(_history(), _final(), _replicas(), {"node-1": "INFO listening on 127.0.0.1:1\n"})
    assert result.ok, result.examples()
    assert set(result.counts()) == set(checker.KINDS)


def test_lost_write_missing_from_the_final_log() -> None:
    final = _final()
    del final[0][1]
    replicas = [_replica(n, 0, ["p-0"]) for n in (1, 2, 3)] + [_replica(n, 1, ["q-0"]) for n in (1, 2, 3)]
    assert "lost_write" in _found(_history(), final, replicas)


def test_lost_write_with_another_value_is_also_a_reused_offset() -> None:
    final = _final()
    final[1][0] = "z-9"
    found = _found(_history(), final)
    assert {"lost_write", "offset_reused"} <= found


def test_lost_write_on_one_replica_below_its_high_watermark() -> None:
    replicas = _replicas()
    replicas[1] = _replica(2, 0, ["p-0", "x-1", "p-2"], crcs=[1000, 9, 1002])
    found = _found(_history(), _final(), replicas)
    assert {"lost_write", "offset_reused", "replica_divergence"} <= found


def test_a_replica_tail_above_its_high_watermark_is_not_a_lost_write() -> None:
    replicas = _replicas()
    replicas[1] = _replica(2, 0, ["p-0", "p-1", "zz"], hw=2)
    assert _found(_history(), _final(), replicas) == set()


def test_offset_reused_between_two_ok_sends() -> None:
    h = _history()
    h.complete(h.invoke("r", 0, 1, 5.0), "ok", 5.5, 0)  # r-0 acknowledged at p1@0, which q-0 holds
    found = _found(h, _final())
    assert {"offset_reused", "lost_write"} <= found


def test_offset_reused_between_a_poll_and_the_final_log() -> None:
    h = _history()
    h.read("c", 1, 0, "q-OTHER", 20.0)
    assert "offset_reused" in _found(h, _final())


def test_duplicate_value_at_two_offsets() -> None:
    final = _final()
    final[0][3] = "p-0"
    assert "duplicate" in _found(_history(), final)


def test_duplicate_across_partitions() -> None:
    final = _final()
    final[1][1] = "p-1"
    assert "duplicate" in _found(_history(), final)


def test_uncommitted_read_absent_from_the_final_log() -> None:
    h = _history()
    h.read("c", 0, 3, "p-2b", 13.0)
    assert "uncommitted_read" in _found(h, _final())


def test_aborted_read_a_failed_value_polled() -> None:
    h = _history()
    h.read("d", 0, 3, "p-3", 13.0)
    assert "aborted_read" in _found(h, _final())


def test_aborted_read_a_failed_value_in_the_log_or_a_replica_tail() -> None:
    final = _final()
    final[0][3] = "p-3"
    assert "aborted_read" in _found(_history(), final)
    replicas = _replicas()
    replicas[0] = _replica(1, 0, ["p-0", "p-1", "p-2", "p-3"], hw=3)  # above the HW still counts
    assert "aborted_read" in _found(_history(), _final(), replicas)


def test_producer_order_offsets_not_increasing() -> None:
    h = History()
    a = h.invoke("p", 0, 0, 0.0)
    b = h.invoke("p", 1, 0, 0.1)
    h.complete(a, "ok", 1.0, 1)
    h.complete(b, "ok", 1.1, 0)  # sent later, stored earlier
    final: dict[int, dict[int, str | None]] = {0: {0: "p-1", 1: "p-0"}}
    replicas = [_replica(1, 0, ["p-1", "p-0"])]
    assert _found(h, final, replicas) == {"order_producer"}


def test_consumer_skip_and_back() -> None:
    h = _history()
    h.read("c", 0, 0, "p-0", 20.0)  # went back without a seek
    assert _found(h, _final()) == {"order_consumer"}
    h = _history()
    h.reads.insert(1, h.reads.pop(2))  # polled 0, 2, 1: a skip then a step back
    assert _found(h, _final()) == {"order_consumer"}
    h = _history()
    h.seek("c", 0, 0, 15.0)
    h.read("c", 0, 0, "p-0", 20.0)  # after an explicit seek: fine
    assert _found(h, _final()) == set()


def test_consumer_that_does_not_start_at_its_seek() -> None:
    h = _history()
    h.reads.pop(0)
    assert _found(h, _final()) == {"order_consumer"}


def test_replica_divergence_by_leader_epoch_and_crc() -> None:
    replicas = _replicas()
    replicas[2] = _replica(3, 0, ["p-0", "p-1", "p-2"], epoch=2)
    assert _found(_history(), _final(), replicas) == {"replica_divergence"}
    replicas = _replicas()
    replicas[2] = _replica(3, 0, ["p-0", "p-1", "p-2"], crcs=[1000, 1001, 7])
    assert _found(_history(), _final(), replicas) == {"replica_divergence"}


def test_replica_divergence_by_batch_boundaries() -> None:
    replicas = _replicas()
    merged = Batch(0, 1, 1, 5555, True, ("p-0", "p-1"), (0, 1))
    replicas[1] = ReplicaLog(2, 0, [merged, replicas[1].batches[2]])
    assert "replica_divergence" in _found(_history(), _final(), replicas)


def test_replica_divergence_only_below_the_smallest_high_watermark() -> None:
    replicas = _replicas()
    replicas[0] = _replica(1, 0, ["p-0", "p-1", "p-2", "tail-a"], hw=3)
    replicas[1] = _replica(2, 0, ["p-0", "p-1", "p-2", "tail-b"], hw=3)
    assert _found(_history(), _final(), replicas) == set()


def test_corrupt_batch_in_a_dump() -> None:
    replicas = _replicas()
    bad = replicas[0].batches[1]
    replicas[0].batches[1] = Batch(bad.base_offset, bad.last_offset, bad.leader_epoch, bad.crc, False, bad.values,
                                   bad.offsets)
    assert "corrupt_batch" in _found(_history(), _final(), replicas)
    replicas = _replicas()
    replicas[0].torn_tails = 1
    assert _found(_history(), _final(), replicas) == {"corrupt_batch"}


@pytest.mark.parametrize("line", ["Traceback (most recent call last):", "AssertionError: hw moved back",
                                  "ERROR partition: invariant violated: hw > leo"])
def test_server_assertion_in_a_broker_log(line: str) -> None:
    logs = {"node-2/brokerd.log": f"INFO started\n{line}\nINFO more\n"}
    result = checker.check(_history(), _final(), _replicas(), logs)
    assert result.found() == {"server_assertion"}
    assert result.anomalies["server_assertion"][0].startswith("node-2/brokerd.log:2:")


def test_parse_dump_of_the_documented_format() -> None:
    lines = [
        json.dumps({"type": "segment", "segment": "00000000000000000000.log", "base_offset": 0, "size_bytes": 1}),
        json.dumps({"type": "batch", "base_offset": 0, "last_offset": 1, "leader_epoch": 3, "crc": 77,
                    "crc_valid": True, "records": [{"offset": 0, "value": {"utf8": "a-0"}},
                                                   {"offset": 1, "value": {"base64": "YS0x"}}]}),
        json.dumps({"type": "torn_tail", "segment": "x", "position": 5, "size_bytes": 3}),
        json.dumps({"type": "summary", "segments": 1, "batches": 1}),
    ]
    replica = parse_dump(lines, 2, 0)
    assert replica.batches == [Batch(0, 1, 3, 77, True, ("a-0", "a-1"), (0, 1))]
    assert replica.torn_tails == 1 and replica.log_end == 2 and replica.records() == {0: "a-0", 1: "a-1"}


def test_read_hw_checkpoint() -> None:
    assert read_hw_checkpoint("0\n2\nchaos 0 17\nchaos 2 5\n") == {("chaos", 0): 17, ("chaos", 2): 5}
    assert read_hw_checkpoint("0\n1\nchaos 0 1") == {}  # torn: no final newline


def test_history_round_trips_through_json_lines() -> None:
    h = _history()
    h.invoke("p", 9, 1, 30.0)  # still pending
    again = History.from_jsonl(h.to_jsonl().splitlines())
    assert sorted((o.value, o.outcome, o.offset) for o in again.ops) == sorted((o.value, o.outcome, o.offset)
                                                                               for o in h.ops)
    assert sorted(again.reads, key=lambda r: r.t) == sorted(h.reads, key=lambda r: r.t)
    assert h.close_pending(40.0) == 1 and h.by_outcome()["info"] == 2


def test_a_second_outcome_is_a_harness_bug() -> None:
    h = History()
    op = h.invoke("p", 0, 0, 0.0)
    h.complete(op, "ok", 1.0, 0)
    with pytest.raises(AssertionError):
        h.complete(op, "info", 2.0)


def test_figures() -> None:
    h = History()
    for seq, (invoke, done) in enumerate([(0.0, 0.1), (0.2, 0.3), (1.0, 5.0), (2.5, 3.0), (3.1, 3.2)]):
        h.complete(h.invoke("p", seq, 0, invoke), "ok", done, seq)
    assert metrics.failover_s(h.ops, 0, 2.0) == pytest.approx(1.0)  # fault at 2.0 -> the ok invoked at 2.5 done at 3.0
    assert metrics.failover_s(h.ops, 1, 2.0) is None
    times = metrics.ok_times_by_partition(h.ops)[0]
    assert metrics.longest_gap_s(times, 1.0, 2.0, 0.0, 6.0) == pytest.approx(2.7)  # 0.3 -> 3.0
    assert metrics.availability(times, 0.0, 6.0, 0.5) == pytest.approx(1 - (2.7 + 1.8 + 1.0) / 6)
