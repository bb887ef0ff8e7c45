"""Leader-epoch divergence end to end (KIP-101 / KIP-595 style): two real Logs in tmp dirs, the real
follower side (`ReplicaFetcher._build_request` / `_process`, `truncation_offset`) and the real leader
side (`broker.handlers.fetch._read_all`), with every request and response going through the Fetch v12
wire codec. Only the TCP connection and the fetch loop's timing are left out: `fetch_round` is one
iteration of `ReplicaFetcher._run`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import bugs
from broker.handlers.fetch import _read_all
from broker.partition import Partition
from broker.replica_fetcher import FETCH_API_KEY, FETCH_VERSION, ReplicaFetcher, truncation_offset
from broker.replica_state import UNKNOWN
from client.wire.errors import ErrorCode
from client.wire.protocol import decode_request, decode_response, encode_request, encode_response
from client.wire.records import build_batch, decode_records
from storage import Log

NOW = 1_700_000_000_000
LEADER = 1
FOLLOWER = 2
REPLICAS = (LEADER, FOLLOWER)
TP = ("t", 0)


def batch(values: list[str]) -> bytes:
    return build_batch([(b"k", v.encode(), NOW + i, ()) for i, v in enumerate(values)])


def vals(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


class FakeReplication:
    def __init__(self) -> None:
        self.isr_checks = 0

    def isr_check_soon(self) -> None:
        self.isr_checks += 1


@dataclass
class LeaderBroker:
    """What `_read_all` needs of a Broker."""

    partitions: dict[tuple[str, int], Partition]
    replication: FakeReplication = field(default_factory=FakeReplication)

    def not_leader_error(self, topic: str, index: int) -> int:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER if (topic, index) in self.partitions \
            else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


@dataclass
class Pair:
    leader: Partition
    follower: Partition
    broker: LeaderBroker
    fetcher: ReplicaFetcher
    truncations: list[tuple[int, int]] = field(default_factory=list)   # (log end before, after)
    backoffs: int = 0


def make_pair(leader_log: Log, follower_log: Log, leader_epoch: int, *,
              follower_hw: int | None = None, isr: tuple[int, ...] = REPLICAS) -> Pair:
    leader = Partition(*TP, leader_log, leader_epoch, local_id=LEADER, leader=False)
    leader.make_leader(leader_epoch, 1, REPLICAS, isr, NOW)
    follower = Partition(*TP, follower_log, leader_epoch, local_id=FOLLOWER, leader=False,
                         high_watermark=follower_hw)
    follower.make_follower(LEADER, leader_epoch, 1, REPLICAS, isr)
    fetcher = ReplicaFetcher(FOLLOWER, LEADER, ("127.0.0.1", 1))
    fetcher.add(follower)
    return Pair(leader, follower, LeaderBroker({TP: leader}), fetcher)


def fetch_round(pair: Pair) -> dict[str, Any]:
    """One follower fetch: request built by the fetcher, served by the leader's handler logic,
    processed by the fetcher; both directions through the v12 codec. Returns the partition answer."""
    request = pair.fetcher._build_request()
    assert request is not None, "the follower has nothing to fetch (backed off?)"
    _header, body = decode_request(encode_request(FETCH_API_KEY, FETCH_VERSION, 7, "replica-2", request))
    assert body["replica_id"] == pair.follower.local_id
    responses, _total, _waiting = _read_all(pair.broker, body, FETCH_VERSION, body["replica_id"])
    response = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
    _cid, decoded = decode_response(encode_response(7, FETCH_API_KEY, FETCH_VERSION, response),
                                    FETCH_API_KEY, FETCH_VERSION)
    before = pair.follower.log.log_end_offset
    pair.fetcher._process(decoded)
    after = pair.follower.log.log_end_offset
    if after < before:
        pair.truncations.append((before, after))
    if pair.fetcher._backoff_until:
        pair.backoffs += 1
        pair.fetcher._backoff_until.clear()  # the fetch loop would wait REPLICA_FETCH_BACKOFF_MS
    (part,) = decoded["responses"][0]["partitions"]
    return part


def diverging_of(part: dict[str, Any]) -> tuple[int, int] | None:
    d = part.get("diverging_epoch") or {}
    epoch, end = d.get("epoch", -1), d.get("end_offset", -1)
    return None if epoch < 0 and end < 0 else (epoch, end)


def converge(pair: Pair, rounds_max: int = 20) -> int:
    """Fetch until an answer brings neither records nor a divergence; returns the rounds used."""
    for i in range(rounds_max):
        part = fetch_round(pair)
        if part["error_code"] == 0 and not diverging_of(part) and not part["records"] \
                and pair.follower.log.log_end_offset == pair.leader.log.log_end_offset:
            return i + 1
    raise AssertionError(f"no convergence in {rounds_max} rounds: leader {pair.leader.log.epochs.entries} "
                         f"end {pair.leader.log.log_end_offset}, follower {pair.follower.log.epochs.entries} "
                         f"end {pair.follower.log.log_end_offset}, backoffs {pair.backoffs}")


def batch_sequence(log: Log) -> list[tuple[int, int, int, int]]:
    return [(h.base_offset, h.last_offset, h.leader_epoch, h.crc) for h, _ in log.batches()]


def values(log: Log) -> list[tuple[int, str]]:
    out = []
    for _header, data in log.batches():
        out += [(r.offset, (r.value or b"").decode()) for r in decode_records(data)]
    return out


def assert_identical(pair: Pair) -> None:
    leader_log, follower_log = pair.leader.log, pair.follower.log
    assert batch_sequence(follower_log) == batch_sequence(leader_log)
    assert values(follower_log) == values(leader_log)
    assert follower_log.log_end_offset == leader_log.log_end_offset
    # the follower's epoch cache is the leader's, except the leader's own (possibly empty) epoch
    assert follower_log.epochs.entries == [e for e in leader_log.epochs.entries
                                           if e[1] < leader_log.log_end_offset]


def open_logs(tmp_path: Path) -> tuple[Log, Log]:
    return Log.open(str(tmp_path / "leader" / "t-0")), Log.open(str(tmp_path / "follower" / "t-0"))


def append_both(logs: tuple[Log, ...], data: bytes, epoch: int) -> None:
    for log in logs:
        log.append(data, epoch, NOW)


# --- scenarios --------------------------------------------------------------------------------------------

def test_plain_replication_advances_leader_high_watermark(tmp_path: Path) -> None:
    leader_log, follower_log = open_logs(tmp_path)
    pair = make_pair(leader_log, follower_log, 0)
    for i in range(3):
        pair.leader.append_as_leader(batch(vals(f"b{i}-", 3)), NOW)
    assert pair.leader.high_watermark == 0
    first = fetch_round(pair)
    assert first["high_watermark"] == 0 and len(first["records"]) > 0  # a follower reads past the HW
    assert pair.follower.log.log_end_offset == 9
    assert pair.follower.high_watermark == 0
    converge(pair)
    assert pair.leader.high_watermark == 9
    fetch_round(pair)  # the next answer carries the new HW to the follower
    assert pair.follower.high_watermark == 9
    assert_identical(pair)
    assert pair.truncations == [] and pair.backoffs == 0


def test_follower_extra_entries_of_old_epoch_truncated_to_leader_epoch_end(tmp_path: Path) -> None:
    """(a) Old leader F wrote 0..9 in epoch 1, only 0..5 reached L; L leads epoch 2 and writes 6..7.
    F (now follower, last epoch 1, end 10) is told epoch 1 ends at 6 on L and truncates there."""
    leader_log, follower_log = open_logs(tmp_path)
    for i in range(3):
        append_both((leader_log, follower_log), batch(vals(f"c{i}-", 2)), 1)
    follower_log.append(batch(vals("old", 4)), 1, NOW)               # 6..9, uncommitted
    pair = make_pair(leader_log, follower_log, 2, follower_hw=6)
    pair.leader.append_as_leader(batch(vals("new", 2)), NOW)          # 6..7 in epoch 2
    part = fetch_round(pair)
    assert diverging_of(part) == (1, 6)
    assert part["records"] == b"" or len(part["records"]) == 0
    assert pair.truncations == [(10, 6)]
    # a diverging fetch does not report the follower's log end to the leader
    assert pair.leader.leader_state is not None
    assert pair.leader.leader_state.followers[FOLLOWER].log_end_offset == UNKNOWN
    converge(pair)
    assert_identical(pair)
    assert [v for _o, v in values(follower_log)][-2:] == ["new0", "new1"]
    assert pair.leader.high_watermark == 8
    assert pair.backoffs == 0


def _old_tail_scenario(tmp_path: Path) -> Pair:
    """F led epoch 1 and wrote 6..9 that never reached L; L leads epoch 2 and writes 6..9, 10..11."""
    leader_log, follower_log = open_logs(tmp_path)
    for i in range(3):
        append_both((leader_log, follower_log), batch(vals(f"c{i}-", 2)), 1)
    follower_log.append(batch(vals("old", 4)), 1, NOW)               # 6..9, never replicated
    pair = make_pair(leader_log, follower_log, 2, follower_hw=6)
    pair.leader.append_as_leader(batch(vals("new", 4)), NOW)          # 6..9 in epoch 2
    pair.leader.append_as_leader(batch(vals("newer", 2)), NOW)        # 10..11
    return pair


def test_a_longer_new_leader_log_still_truncates_the_old_tail(tmp_path: Path) -> None:
    pair = _old_tail_scenario(tmp_path)
    converge(pair)
    assert_identical(pair)


def test_canary_ignoring_divergence_is_caught_by_the_replica_comparison(tmp_path: Path, monkeypatch: Any) -> None:
    """The broken variant REPLOG_BUG=ignore_divergence (no last fetched epoch): the follower keeps
    its old tail under the leader's later records, and the batch comparison the consistency checker
    makes (base, last, epoch, crc per batch) must flag it. A deterministic twin of the chaos canary."""
    monkeypatch.setattr(bugs, "IGNORE_DIVERGENCE", True)
    pair = _old_tail_scenario(tmp_path)
    converge(pair)
    assert pair.follower.log.log_end_offset == pair.leader.log.log_end_offset  # looks converged
    assert batch_sequence(pair.follower.log) != batch_sequence(pair.leader.log)  # but diverged
    assert ("old0" in [v for _o, v in values(pair.follower.log)])


def test_follower_lacking_the_diverging_epoch_converges_in_two_truncations(tmp_path: Path) -> None:
    """(b) L: epoch 0 [0,5), epoch 1 [5,10), epoch 3 [10,12). F: epoch 0 [0,7), epoch 2 [7,13).
    F fetches with last epoch 2: L answers (1, 10); F has no epoch 1, so it cuts to the end of its
    largest epoch below 1 (epoch 0 ends at 7 on F); then (0, 5) cuts it to 5; then it copies."""
    leader_log, follower_log = open_logs(tmp_path)
    append_both((leader_log, follower_log), batch(vals("common", 5)), 0)
    follower_log.append(batch(vals("f0-", 2)), 0, NOW)                 # 5..6 epoch 0
    follower_log.append(batch(vals("f2-", 6)), 2, NOW)                 # 7..12 epoch 2
    leader_log.append(batch(vals("l1-", 5)), 1, NOW)                   # 5..9 epoch 1
    pair = make_pair(leader_log, follower_log, 3)
    pair.leader.append_as_leader(batch(vals("l3-", 2)), NOW)           # 10..11 epoch 3
    assert truncation_offset(pair.follower, 1, 10) == 7
    first = fetch_round(pair)
    assert diverging_of(first) == (1, 10)
    assert follower_log.epochs.entries == [(0, 0)]
    second = fetch_round(pair)
    assert diverging_of(second) == (0, 5)
    assert pair.truncations == [(13, 7), (7, 5)]
    converge(pair)
    assert_identical(pair)
    assert follower_log.epochs.entries == [(0, 0), (1, 5), (3, 10)]
    assert pair.backoffs == 0


def elect(leader: Partition, follower: Partition, epoch: int) -> Pair:
    """The controller moved leadership to `leader` in `epoch`; the other replica follows it."""
    leader.make_leader(epoch, epoch, REPLICAS, REPLICAS, NOW)
    follower.make_follower(leader.local_id, epoch, epoch, REPLICAS, REPLICAS)
    fetcher = ReplicaFetcher(follower.local_id, leader.local_id, ("127.0.0.1", 1))
    fetcher.add(follower)
    return Pair(leader, follower, LeaderBroker({TP: leader}), fetcher)


def test_converged_replicas_hold_identical_batches_after_several_failovers(tmp_path: Path) -> None:
    """(c) Leadership moves back and forth, each leader leaving an uncommitted tail the other never
    saw; after every convergence both logs hold the same (base, last, epoch, crc) batches and the
    lost tails are gone everywhere."""
    a_log, b_log = open_logs(tmp_path)
    a = Partition(*TP, a_log, 0, local_id=LEADER, leader=False)
    b = Partition(*TP, b_log, 0, local_id=FOLLOWER, leader=False)
    plan = [(a, b, 3), (b, a, 2), (a, b, 4), (b, a, 1), (a, b, 0)]
    for epoch, (leader, follower, tail) in enumerate(plan, start=1):
        pair = elect(leader, follower, epoch)
        for i in range(3):
            leader.append_as_leader(batch(vals(f"e{epoch}b{i}-", 2)), NOW)
        converge(pair)
        assert_identical(pair)
        assert leader.high_watermark == leader.log.log_end_offset
        for i in range(tail):  # never replicated: the next leader's epoch overwrites it
            leader.append_as_leader(batch(vals(f"e{epoch}lost{i}-", 1)), NOW)
        if tail:
            assert pair.leader.log.log_end_offset > pair.follower.log.log_end_offset
    final = [v for _o, v in values(a_log)]
    assert not any("lost" in v for v in final)
    assert final == [f"e{e}b{i}-{j}" for e in range(1, 6) for i in range(3) for j in range(2)]
    assert a_log.epochs.entries == b_log.epochs.entries == [(e, 6 * (e - 1)) for e in range(1, 6)]


def test_restarted_follower_is_not_truncated_to_its_checkpointed_high_watermark(tmp_path: Path) -> None:
    """(d) KIP-101: a follower restarting with HW 3 < log end 10 must not cut its log to 3 when
    the leader holds the same entries; it fetches on from 10."""
    leader_log, follower_log = open_logs(tmp_path)
    for i in range(5):
        append_both((leader_log, follower_log), batch(vals(f"d{i}-", 2)), 1)
    kept = batch_sequence(follower_log)
    follower_path = follower_log.path
    follower_log.close()
    restarted = Log.open(follower_path)  # recovery scans (no clean-shutdown flag)
    assert restarted.log_end_offset == 10
    pair = make_pair(leader_log, restarted, 2, follower_hw=3)
    assert pair.follower.high_watermark == 3
    pair.leader.append_as_leader(batch(vals("e", 2)), NOW)
    request = pair.fetcher._build_request()
    assert request is not None
    (p,) = request["topics"][0]["partitions"]
    assert (p["fetch_offset"], p["last_fetched_epoch"]) == (10, 1)
    converge(pair)
    assert pair.truncations == []
    assert batch_sequence(restarted)[:5] == kept
    assert_identical(pair)


def test_follower_below_leader_log_start_starts_over_there(tmp_path: Path) -> None:
    leader_log, follower_log = open_logs(tmp_path)
    for i in range(4):
        leader_log.append(batch(vals(f"s{i}-", 2)), 0, NOW)
        leader_log.roll()
    pair = make_pair(leader_log, follower_log, 0, isr=(LEADER,))
    assert pair.leader.high_watermark == 8
    leader_log.delete_before(4)
    assert leader_log.log_start_offset == 4
    part = fetch_round(pair)
    assert part["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE
    assert (follower_log.log_start_offset, follower_log.log_end_offset) == (4, 4)
    converge(pair)
    assert batch_sequence(follower_log) == batch_sequence(leader_log)
    assert pair.broker.replication.isr_checks > 0  # a non-member reached the HW: ISR check requested


def test_empty_epoch_of_a_brief_leadership_does_not_block_the_follower_forever(tmp_path: Path) -> None:
    """F followed L in epoch 4, then led epoch 5 without appending anything (make_leader put (5, 6)
    in its epoch cache), then L leads again in epoch 6. F fetches with last epoch 5: L answers
    (4, 6); F's end for epoch 4 is 6 = its log end, so nothing is cut, and the same answer comes
    back for ever unless the stale (5, 6) entry goes (Kafka's UnifiedLog.truncateTo always truncates
    the epoch cache, "since we may have a conflicting epoch entry at the end of the log")."""
    leader_log, follower_log = open_logs(tmp_path)
    for i in range(3):
        append_both((leader_log, follower_log), batch(vals(f"x{i}-", 2)), 4)
    follower_log.assign_epoch(5)   # what Partition.make_leader(5) did on F
    assert follower_log.epochs.entries == [(4, 0), (5, 6)]
    pair = make_pair(leader_log, follower_log, 6)
    part = fetch_round(pair)
    assert diverging_of(part) == (4, 6)
    assert truncation_offset(pair.follower, 4, 6) == 6  # = the follower's log end
    pair.leader.append_as_leader(batch(vals("y", 2)), NOW)
    converge(pair, rounds_max=5)
    assert_identical(pair)


def test_truncation_offset_rules(tmp_path: Path) -> None:
    _leader_log, follower_log = open_logs(tmp_path)
    follower_log.append(batch(vals("a", 3)), 1, NOW)    # epoch 1: [0, 3)
    follower_log.append(batch(vals("b", 3)), 3, NOW)    # epoch 3: [3, 6)
    p = Partition(*TP, follower_log, 3, local_id=FOLLOWER, leader=False)
    assert truncation_offset(p, -1, 5) is None
    assert truncation_offset(p, 3, -1) is None
    assert truncation_offset(p, 3, 4) == 4              # same epoch: min(leader end, own end)
    assert truncation_offset(p, 3, 99) == 6
    assert truncation_offset(p, 1, 2) == 2
    assert truncation_offset(p, 1, 5) == 3              # own end of epoch 1 is 3
    assert truncation_offset(p, 2, 5) == 3              # no epoch 2: end of epoch 1
    assert truncation_offset(p, 0, 5) == 0              # below the earliest epoch: its start


# --- property: random leader changes, partial replication and restarts always converge -------------------

step = st.one_of(
    st.tuples(st.just("elect"), st.integers(1, 3)),        # switch leadership, then append 1..3 batches
    st.tuples(st.just("append"), st.integers(1, 3)),
    st.tuples(st.just("fetch"), st.integers(1, 3)),        # this many follower fetch rounds
    st.tuples(st.just("restart"), st.just(0)),             # the follower restarts from its checkpointed HW
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=12))
def test_random_failovers_converge_and_keep_committed_records(steps: list[tuple[str, int]]) -> None:
    """Two replicas, both always in the ISR (so any new leader holds every committed record).
    Every leadership appends at least one batch (the empty case has its own test above).
    After the history, a last convergence leaves identical batch sequences, and every record that
    was ever below a leader's high watermark is still at its offset."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {LEADER: os.path.join(tmp, "a", "t-0"), FOLLOWER: os.path.join(tmp, "b", "t-0")}
        parts = {i: Partition(*TP, Log.open(path), 0, local_id=i, leader=False) for i, path in paths.items()}
        epoch = 1
        lead = LEADER
        pair = elect(parts[lead], parts[3 - lead], epoch)
        committed: dict[int, str] = {}
        serial = 0

        def append(n: int) -> None:
            nonlocal serial
            for _ in range(n):
                serial += 1
                assert pair.leader.append_as_leader(batch([f"v{serial}"]), NOW).error == 0

        def remember_committed() -> None:
            hw = pair.leader.high_watermark
            for offset, value in values(pair.leader.log):
                if offset < hw:
                    assert committed.setdefault(offset, value) == value, "a committed offset changed"

        append(1)
        for kind, n in steps:
            if kind == "elect":
                epoch += 1
                lead = 3 - lead
                pair = elect(parts[lead], parts[3 - lead], epoch)
                append(n)
            elif kind == "append":
                append(n)
            elif kind == "fetch":
                for _ in range(n):
                    fetch_round(pair)
            else:
                follower = pair.follower
                hw = follower.high_watermark
                follower.log.close()
                log = Log.open(follower.log.path)
                parts[follower.local_id] = Partition(*TP, log, epoch, local_id=follower.local_id,
                                                     high_watermark=hw, leader=False)
                pair = elect(pair.leader, parts[follower.local_id], epoch)
            remember_committed()
        converge(pair)
        remember_committed()
        assert_identical(pair)
        final = dict(values(pair.leader.log))
        assert all(final.get(offset) == value for offset, value in committed.items())
        for p in parts.values():
            p.log.close()
