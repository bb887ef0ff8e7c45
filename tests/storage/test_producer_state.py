"""Idempotent producer state (storage/producer_state.py): Kafka's sequence rules, snapshots, rebuild."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import struct

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.wire.errors import ErrorCode
from client.wire.records import CONTROL_BIT, BatchHeader
from storage.files import FaultyFileSystem, FileSystem
from storage.producer_state import (
    BATCHES_RETAINED,
    SEQUENCE_MAX,
    DuplicateBatch,
    ProducerSnapshotError,
    ProducerStateConfig,
    ProducerStateManager,
    decode_snapshot,
    delete_all_snapshots,
    encode_snapshot,
    list_snapshot_offsets,
    load,
    on_log_start_moved,
    rebuild,
    snapshot_file_name,
    take_snapshot,
)

PID = 1000
NOW_MS = 1_000_000
DAY_MS = 86_400_000


def header(pid: int = PID, epoch: int = 0, seq: int = 0, count: int = 1, *, base_offset: int = 0,
           ts: int = NOW_MS, control: bool = False) -> BatchHeader:
    return BatchHeader(base_offset=base_offset, batch_length=49 + 10 * count, leader_epoch=0, magic=2, crc=0,
                       attributes=CONTROL_BIT if control else 0, last_offset_delta=count - 1,
                       base_timestamp=ts, max_timestamp=ts, producer_id=pid, producer_epoch=epoch,
                       base_sequence=seq, records_count=count)


class LeaderModel:
    """A log of stored batch headers, fed through the leader path as Log.append would."""

    def __init__(self, state: ProducerStateManager | None = None) -> None:
        self.state = state if state is not None else ProducerStateManager()
        self.stored: list[BatchHeader] = []

    def produce(self, h: BatchHeader, now_ms: int = NOW_MS) -> tuple[ErrorCode, tuple[int, int] | None]:
        """(error, (base, last)) for an append or a duplicate; (error, None) when refused."""
        code, duplicate = self.state.check_append(h, now_ms)
        if code != ErrorCode.NONE:
            return code, None
        if duplicate is not None:
            return code, (duplicate.base_offset, duplicate.last_offset)
        base = self.state.map_end_offset
        stored = h._replace(base_offset=base)
        self.stored.append(stored)
        self.state.update(h, base, stored.last_offset)
        return code, (base, stored.last_offset)


def assert_same_state(a: ProducerStateManager, b: ProducerStateManager) -> None:
    assert a.map_end_offset == b.map_end_offset
    assert list(a.producers.items()) == list(b.producers.items())
    assert encode_snapshot(a) == encode_snapshot(b)


# ---------------------------------------------------------------------- sequence rules
def test_non_idempotent_batches_pass_and_only_move_the_map_end() -> None:
    leader = LeaderModel()
    for i in range(3):
        assert leader.produce(header(pid=-1, epoch=-1, seq=-1, count=2)) == (ErrorCode.NONE, (2 * i, 2 * i + 1))
    assert leader.state.producer_count == 0
    assert leader.state.map_end_offset == 6


def test_in_order_sequences_are_accepted_and_a_gap_is_out_of_order() -> None:
    leader = LeaderModel()
    assert leader.produce(header(seq=0, count=3)) == (ErrorCode.NONE, (0, 2))
    assert leader.produce(header(seq=3, count=2)) == (ErrorCode.NONE, (3, 4))
    assert leader.produce(header(seq=6)) == (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, None)  # 5 is missing
    assert leader.produce(header(seq=5)) == (ErrorCode.NONE, (5, 5))
    entry = leader.state.entry(PID)
    assert entry is not None and entry.last_seq == 5 and entry.last_offset == 5


def test_a_retry_of_each_of_the_last_five_batches_gets_its_original_offsets() -> None:
    leader = LeaderModel()
    leader.produce(header(pid=-1, epoch=-1, seq=-1))  # offset 0: a non-idempotent producer
    originals = []
    seq = 0
    for count in (2, 1, 3, 1, 2, 4, 1):
        code, offsets = leader.produce(header(seq=seq, count=count, ts=NOW_MS + seq))
        assert code == ErrorCode.NONE
        originals.append((seq, count, offsets, NOW_MS + seq))
        seq += count
    end = leader.state.map_end_offset
    for seq, count, offsets, ts in originals[-BATCHES_RETAINED:]:
        code, duplicate = leader.state.check_append(header(seq=seq, count=count), NOW_MS)
        assert code == ErrorCode.NONE
        assert duplicate == DuplicateBatch(offsets[0], offsets[1], ts)
        assert leader.produce(header(seq=seq, count=count)) == (ErrorCode.NONE, offsets)
    assert leader.state.map_end_offset == end  # nothing appended
    # older than the retained five: Kafka >= 1.1 answers OUT_OF_ORDER (never DUPLICATE_SEQUENCE_NUMBER)
    for seq, count, _, _ in originals[:-BATCHES_RETAINED]:
        assert leader.produce(header(seq=seq, count=count)) == (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, None)
    # a batch overlapping a retained one without the exact range is not a duplicate either
    seq, count, _, _ = originals[-1]
    assert leader.produce(header(seq=seq, count=count + 1))[0] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_epoch_bump_must_restart_at_zero_and_fences_the_older_epoch() -> None:
    leader = LeaderModel()
    leader.produce(header(epoch=0, seq=0, count=2))
    leader.produce(header(epoch=0, seq=2, count=2))
    assert leader.produce(header(epoch=1, seq=4)) == (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, None)
    assert leader.produce(header(epoch=1, seq=0)) == (ErrorCode.NONE, (4, 4))
    entry = leader.state.entry(PID)
    assert entry is not None and entry.producer_epoch == 1 and len(entry.batches) == 1
    # the old epoch is fenced, even for what would have been a duplicate or the next sequence
    assert leader.produce(header(epoch=0, seq=2, count=2)) == (ErrorCode.INVALID_PRODUCER_EPOCH, None)
    assert leader.produce(header(epoch=0, seq=4)) == (ErrorCode.INVALID_PRODUCER_EPOCH, None)
    assert leader.produce(header(epoch=1, seq=1)) == (ErrorCode.NONE, (5, 5))


def test_unknown_producer_id_is_accepted_by_default_as_kafka_since_kip_360() -> None:
    leader = LeaderModel()
    assert leader.produce(header(seq=42, count=2)) == (ErrorCode.NONE, (0, 1))
    assert leader.produce(header(seq=44)) == (ErrorCode.NONE, (2, 2))
    assert leader.produce(header(seq=46))[0] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_unknown_producer_id_error_as_kafka_before_2_5() -> None:
    leader = LeaderModel(ProducerStateManager(config=ProducerStateConfig(unknown_producer_id_error=True)))
    assert leader.produce(header(seq=42)) == (ErrorCode.UNKNOWN_PRODUCER_ID, None)
    assert leader.produce(header(seq=0)) == (ErrorCode.NONE, (0, 0))  # a reset / new producer starts at 0
    assert leader.produce(header(pid=PID + 1, epoch=3, seq=0)) == (ErrorCode.NONE, (1, 1))


def test_idempotent_batch_without_a_sequence_is_an_invalid_record() -> None:
    assert ProducerStateManager().check_append(header(seq=-1), NOW_MS) == (ErrorCode.INVALID_RECORD, None)


def test_int32_sequence_wraparound() -> None:
    leader = LeaderModel()
    assert leader.produce(header(seq=SEQUENCE_MAX - 2, count=3)) == (ErrorCode.NONE, (0, 2))  # ends at MAX
    assert leader.state.entry(PID).last_seq == SEQUENCE_MAX
    assert leader.produce(header(seq=1)) == (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, None)
    assert leader.produce(header(seq=0, count=2)) == (ErrorCode.NONE, (3, 4))
    # a batch whose own range wraps: base MAX-1, four records -> last sequence 1
    leader2 = LeaderModel()
    leader2.produce(header(seq=SEQUENCE_MAX - 3, count=2))
    assert leader2.produce(header(seq=SEQUENCE_MAX - 1, count=4)) == (ErrorCode.NONE, (2, 5))
    assert leader2.state.entry(PID).last_seq == 1
    assert leader2.produce(header(seq=SEQUENCE_MAX - 1, count=4)) == (ErrorCode.NONE, (2, 5))  # duplicate
    assert leader2.produce(header(seq=2)) == (ErrorCode.NONE, (6, 6))


# ---------------------------------------------------------------------- expiry and the bound
def test_remove_expired_uses_the_last_batch_timestamp() -> None:
    leader = LeaderModel()
    leader.produce(header(pid=1, ts=1_000))
    leader.produce(header(pid=2, ts=5_000))
    state = leader.state
    assert state.remove_expired(1_000 + DAY_MS - 1) == 0
    assert state.remove_expired(1_000 + DAY_MS) == 1  # >= expiration, as Kafka's isProducerExpired
    assert state.entry(1) is None and state.entry(2) is not None
    assert state.remove_expired(5_000 + 10, producer_id_expiration_ms=10) == 1
    assert state.producer_count == 0


def test_check_append_treats_an_expired_producer_as_unknown() -> None:
    state = ProducerStateManager(config=ProducerStateConfig(producer_id_expiration_ms=100,
                                                            unknown_producer_id_error=True))
    leader = LeaderModel(state)
    leader.produce(header(seq=0, count=2, ts=1_000), now_ms=1_000)
    assert state.check_append(header(seq=0, count=2), 1_099) == (ErrorCode.NONE, DuplicateBatch(0, 1, 1_000))
    # expired: no duplicate any more, and a non-zero sequence is an unknown producer's
    assert state.check_append(header(seq=0, count=2), 1_100) == (ErrorCode.NONE, None)
    assert state.check_append(header(seq=2), 1_100) == (ErrorCode.UNKNOWN_PRODUCER_ID, None)
    relaxed = ProducerStateManager(config=ProducerStateConfig(producer_id_expiration_ms=100))
    leader = LeaderModel(relaxed)
    leader.produce(header(seq=0, ts=1_000), now_ms=1_000)
    assert leader.produce(header(seq=9, ts=2_000), now_ms=2_000) == (ErrorCode.NONE, (1, 1))
    entry = relaxed.entry(PID)
    assert entry is not None and [b.first_seq for b in entry.batches] == [9]  # a new run starts


def test_the_bound_evicts_the_least_recently_used_producer() -> None:
    config = ProducerStateConfig(producer_ids_max=3)
    leader = LeaderModel(ProducerStateManager(config=config))
    for pid in (1, 2, 3):
        leader.produce(header(pid=pid, seq=0))
    leader.produce(header(pid=1, seq=1))  # 1 is now the most recently used
    leader.produce(header(pid=4, seq=0))
    assert list(leader.state.producers) == [3, 1, 4]
    assert leader.state.entry(2) is None
    assert leader.produce(header(pid=2, seq=5))[0] == ErrorCode.NONE  # unknown again: accepted
    assert list(leader.state.producers) == [1, 4, 2]
    assert leader.state.evicted_producer_count == 2


def test_control_and_sequence_less_batches_carry_no_state() -> None:
    state = ProducerStateManager()
    state.update_replicated(header(pid=5, seq=0, control=True, base_offset=0))
    state.update_replicated(header(pid=6, seq=-1, base_offset=1))
    assert state.producer_count == 0 and state.map_end_offset == 2


def test_update_asserts_on_a_batch_below_the_map_end() -> None:
    state = ProducerStateManager(10)
    with pytest.raises(AssertionError):
        state.update_replicated(header(base_offset=5))


def test_truncate_from_start_keeps_producers_unless_the_log_restarts_past_them() -> None:
    leader = LeaderModel()
    for seq in range(4):
        leader.produce(header(seq=seq))
    leader.state.truncate_from_start(3)
    assert leader.state.entry(PID) is not None and leader.state.map_end_offset == 4
    leader.state.truncate_from_start(10)
    assert leader.state.producer_count == 0 and leader.state.map_end_offset == 10


# ---------------------------------------------------------------------- snapshots
ops = st.lists(st.tuples(st.integers(0, 6), st.integers(1, 5), st.booleans(), st.integers(0, 2),
                         st.integers(-1, 2**40), st.integers(0, 3)), max_size=60)


def state_from_ops(operations: list[tuple[int, int, bool, int, int, int]],
                   producer_ids_max: int = 5) -> ProducerStateManager:
    """Replicated appends of arbitrary (not necessarily in-sequence) batches: any state update can take."""
    state = ProducerStateManager(config=ProducerStateConfig(producer_ids_max=producer_ids_max))
    sequences: dict[int, tuple[int, int]] = {}
    for pid, count, bump, jump, ts, gap in operations:
        epoch, seq = sequences.get(pid, (0, SEQUENCE_MAX - 4 if pid == 6 else 0))
        if bump:
            epoch, seq = epoch + 1, 0
        seq = (seq + jump) & SEQUENCE_MAX
        h = header(pid=pid if pid else -1, epoch=epoch, seq=seq if pid else -1, count=count,
                   base_offset=state.map_end_offset + gap, ts=ts)
        state.update_replicated(h)
        sequences[pid] = (epoch, h.last_sequence + 1 & SEQUENCE_MAX)
    return state


@settings(max_examples=200, deadline=None)
@given(ops)
def test_snapshot_round_trip(operations) -> None:
    state = state_from_ops(operations)
    data = encode_snapshot(state)
    decoded = decode_snapshot(data, state.config)
    assert_same_state(decoded, state)


@settings(max_examples=100, deadline=None)
@given(ops.filter(bool), st.data())
def test_any_single_bit_flip_makes_a_snapshot_corrupt(operations, data) -> None:
    raw = bytearray(encode_snapshot(state_from_ops(operations)))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProducerSnapshotError):
        decode_snapshot(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decoding_garbage_raises_only_snapshot_errors(raw) -> None:
    with contextlib.suppress(ProducerSnapshotError):
        decode_snapshot(raw)


def test_decoder_rejects_well_checksummed_nonsense() -> None:
    def sealed(body: bytes) -> bytes:
        return struct.pack(">hI", 1, crc32c.crc32c(body)) + body

    entry = struct.pack(">qhiqb", 5, 0, -1, -1, 1)
    ok_batch = struct.pack(">iiqq", 3, 1, 9, 0)
    assert decode_snapshot(sealed(struct.pack(">qi", 10, 1) + entry + ok_batch)).producer_count == 1
    cases = {
        "last offset at map end": struct.pack(">qi", 9, 1) + entry + ok_batch,
        "zero batches": struct.pack(">qi", 10, 1) + struct.pack(">qhiqb", 5, 0, -1, -1, 0),
        "six batches": struct.pack(">qi", 10, 1) + struct.pack(">qhiqb", 5, 0, -1, -1, 6) + ok_batch * 6,
        "negative delta": struct.pack(">qi", 10, 1) + entry + struct.pack(">iiqq", 3, -1, 9, 0),
        "producer twice": struct.pack(">qi", 20, 2) + entry + ok_batch + entry + struct.pack(">iiqq", 5, 1, 12, 0),
        "gap in a run": struct.pack(">qi", 20, 1) + struct.pack(">qhiqb", 5, 0, -1, -1, 2) + ok_batch
        + struct.pack(">iiqq", 9, 0, 12, 0),
        "out of LRU order": struct.pack(">qi", 20, 2) + entry + ok_batch
        + struct.pack(">qhiqb", 6, 0, -1, -1, 1) + struct.pack(">iiqq", 0, 0, 4, 0),
        "trailing bytes": struct.pack(">qi", 10, 1) + entry + ok_batch + b"\0",
        "count too large": struct.pack(">qi", 10, 10**6),
    }
    for name, body in cases.items():
        with pytest.raises(ProducerSnapshotError):
            decode_snapshot(sealed(body))
            pytest.fail(name)
    with pytest.raises(ProducerSnapshotError):
        decode_snapshot(struct.pack(">hI", 2, 0) + struct.pack(">qi", 0, 0))  # unknown version


def test_decode_trims_to_a_lowered_bound() -> None:
    state = state_from_ops([(pid, 1, False, 0, 0, 0) for pid in (1, 2, 3, 4)], producer_ids_max=5)
    smaller = decode_snapshot(encode_snapshot(state), ProducerStateConfig(producer_ids_max=2))
    assert list(smaller.producers) == [3, 4]


def produce_some(leader: LeaderModel, batches: int, pid: int = PID) -> None:
    entry = leader.state.entry(pid)
    seq = 0 if entry is None else entry.last_seq + 1
    for _ in range(batches):
        assert leader.produce(header(pid=pid, seq=seq, count=2))[0] == ErrorCode.NONE
        seq += 2


def test_snapshot_files_are_named_by_offset_written_atomically_and_pruned(tmp_path) -> None:
    fs, d = FileSystem(), str(tmp_path)
    leader = LeaderModel()
    for _ in range(5):
        produce_some(leader, 2)
        assert take_snapshot(fs, d, leader.state)
    assert not take_snapshot(fs, d, leader.state)  # one already at this offset
    assert list_snapshot_offsets(fs, d) == [12, 16, 20]
    assert sorted(os.listdir(d)) == [snapshot_file_name(o) for o in (12, 16, 20)]
    assert snapshot_file_name(12) == "00000000000000000012.snapshot"
    state = load(fs, d, 0, 20)
    assert_same_state(state, leader.state)


def test_load_rebuilds_from_an_older_snapshot_when_the_latest_is_corrupt(tmp_path) -> None:
    fs, d = FileSystem(), str(tmp_path)
    leader = LeaderModel()
    produce_some(leader, 3)
    take_snapshot(fs, d, leader.state)  # at 6
    produce_some(leader, 3, pid=PID + 1)
    take_snapshot(fs, d, leader.state)  # at 12
    produce_some(leader, 2)
    latest = tmp_path / snapshot_file_name(12)
    raw = bytearray(latest.read_bytes())
    raw[-3] ^= 0x40
    latest.write_bytes(bytes(raw))

    state = load(fs, d, 0, leader.state.map_end_offset)
    assert state.map_end_offset == 6 and list_snapshot_offsets(fs, d) == [6]  # the corrupt one is gone
    rebuild(state, leader.stored)
    assert_same_state(state, leader.state)


@pytest.mark.parametrize("damage", ["truncated", "empty", "renamed", "version"])
def test_every_kind_of_bad_snapshot_is_ignored(tmp_path, damage) -> None:
    fs, d = FileSystem(), str(tmp_path)
    leader = LeaderModel()
    produce_some(leader, 4)
    take_snapshot(fs, d, leader.state)
    path = tmp_path / snapshot_file_name(8)
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:-5])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "renamed":  # the body says 8, the name says 7
        path.rename(tmp_path / snapshot_file_name(7))
    else:
        path.write_bytes(b"\x00\x07" + raw[2:])
    state = load(fs, d, 0, 8)
    assert state.map_end_offset == 0 and state.producer_count == 0 and list_snapshot_offsets(fs, d) == []
    assert_same_state(rebuild(state, leader.stored), leader.state)


def test_load_deletes_snapshots_above_the_log_end_and_ignores_those_below_the_start(tmp_path) -> None:
    fs, d = FileSystem(), str(tmp_path)
    leader = LeaderModel()
    for _ in range(3):
        produce_some(leader, 2)
        take_snapshot(fs, d, leader.state)  # 4, 8, 12
    state = load(fs, d, 0, 10)
    assert state.map_end_offset == 8 and list_snapshot_offsets(fs, d) == [4, 8]
    state = load(fs, d, 5, 7)
    assert state.map_end_offset == 5 and state.producer_count == 0  # 4 is below the start: no usable snapshot
    assert list_snapshot_offsets(fs, d) == [4]
    (tmp_path / "junk.snapshot").write_bytes(b"x")  # not a 20-digit name: not a snapshot
    (tmp_path / (snapshot_file_name(6) + ".tmp")).write_bytes(b"x")
    assert list_snapshot_offsets(fs, d) == [4] and load(fs, d, 0, 7).map_end_offset == 4


def test_on_log_start_moved_keeps_a_usable_snapshot_and_the_producers(tmp_path) -> None:
    fs, d = FileSystem(), str(tmp_path)
    leader = LeaderModel()
    produce_some(leader, 2)
    take_snapshot(fs, d, leader.state)  # at 4
    produce_some(leader, 2, pid=PID + 1)  # map end 8, no snapshot there yet
    on_log_start_moved(fs, d, leader.state, 6)
    assert list_snapshot_offsets(fs, d) == [8]
    assert leader.state.producer_count == 2  # the producer whose batches are all below the start stays
    assert_same_state(load(fs, d, 6, 8), leader.state)
    on_log_start_moved(fs, d, leader.state, 8)  # a snapshot at the start is kept, nothing written
    assert list_snapshot_offsets(fs, d) == [8]
    delete_all_snapshots(fs, d)
    assert list_snapshot_offsets(fs, d) == []


def test_a_failed_snapshot_write_leaves_the_previous_one_usable(tmp_path) -> None:
    fs, d = FaultyFileSystem(seed=3), str(tmp_path)
    leader = LeaderModel()
    produce_some(leader, 2)
    take_snapshot(fs, d, leader.state)
    produce_some(leader, 2)
    fs.fail_next("fsync", errno.EIO, path_contains=".snapshot")
    with pytest.raises(OSError):
        take_snapshot(fs, d, leader.state)
    fs.crash()
    assert list_snapshot_offsets(fs, d) == [4]  # the temp file is not a snapshot
    state = load(fs, d, 0, 8)
    assert_same_state(rebuild(state, leader.stored), leader.state)


def test_a_snapshot_survives_a_crash_right_after_it_is_taken(tmp_path) -> None:
    fs, d = FaultyFileSystem(seed=4), str(tmp_path)
    leader = LeaderModel()
    produce_some(leader, 3)
    take_snapshot(fs, d, leader.state)
    fs.crash()
    assert_same_state(load(fs, d, 0, 6), leader.state)


# ---------------------------------------------------------------------- truncation property
class ClientModel:
    """Idempotent producers that send legal batches, plus retries, as a conforming client would."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sessions: dict[int, tuple[int, int]] = {}  # pid -> (epoch, next sequence)

    def next_batch(self, state: ProducerStateManager, ts: int) -> BatchHeader:
        rng = self.rng
        pid = rng.choice([-1, 1, 2, 3, 4, 5, 6])
        count = rng.randint(1, 4)
        if pid == -1:
            return header(pid=-1, epoch=-1, seq=-1, count=count, ts=ts)
        epoch, seq = self.sessions.get(pid, (0, rng.choice([0, SEQUENCE_MAX - 3])))
        if rng.random() < 0.08:
            epoch, seq = epoch + 1, 0
        h = header(pid=pid, epoch=epoch, seq=seq, count=count, ts=ts)
        self.sessions[pid] = (epoch, h.last_sequence + 1 & SEQUENCE_MAX)
        return h

    def resync(self, state: ProducerStateManager) -> None:
        """After a truncation a client continues from what the partition kept (it resends the rest)."""
        for pid, entry in state.producers.items():
            epoch, _ = self.sessions[pid]
            assert epoch >= entry.producer_epoch
            # an epoch bump that was truncated away: the client is still in its new epoch, at 0
            self.sessions[pid] = (epoch, (entry.last_seq + 1) & SEQUENCE_MAX if epoch == entry.producer_epoch else 0)


@pytest.mark.parametrize("seed", range(60))
def test_truncate_then_rebuild_equals_building_only_the_surviving_batches(tmp_path, seed) -> None:
    rng = random.Random(seed)
    fs, d = FileSystem(), str(tmp_path)
    config = ProducerStateConfig(producer_ids_max=rng.choice([2, 4, 100]))
    state = ProducerStateManager(0, config)
    stored: list[BatchHeader] = []
    client = ClientModel(rng)
    for _ in range(4):
        for _ in range(rng.randint(5, 50)):
            ts = NOW_MS + len(stored)
            if stored and rng.random() < 0.1:  # a retry of a retained batch: the original offsets
                entry = state.entry(rng.choice(list(state.producers) or [PID]))
                if entry is not None:
                    b = rng.choice(list(entry.batches))
                    retry = header(pid=entry.producer_id, epoch=entry.producer_epoch, seq=b.first_seq,
                                   count=b.last_offset - b.first_offset + 1)
                    assert state.check_append(retry, ts) == (
                        ErrorCode.NONE, DuplicateBatch(b.first_offset, b.last_offset, b.max_timestamp))
                    continue
            h = client.next_batch(state, ts)
            if rng.random() < 0.2:  # a follower append (gaps allowed: compacted leaders)
                h = h._replace(base_offset=state.map_end_offset + rng.randint(0, 2))
                state.update_replicated(h)
                stored.append(h)
            else:
                code, duplicate = state.check_append(h, ts)
                assert (code, duplicate) == (ErrorCode.NONE, None), (h, state.entry(h.producer_id))
                base = state.map_end_offset
                state.update(h, base, base + h.last_offset_delta)
                stored.append(h._replace(base_offset=base))
            if rng.random() < 0.15:
                take_snapshot(fs, d, state, snapshots_retained=rng.randint(1, 3))
        if rng.random() < 0.3:  # a clean restart: snapshot, reload, replay nothing
            take_snapshot(fs, d, state)
            reopened = load(fs, d, 0, state.map_end_offset, config)
            assert_same_state(rebuild(reopened, stored), state)
        truncate_at = rng.randint(0, state.map_end_offset)
        stored = [h for h in stored if h.last_offset < truncate_at]  # Log.truncate_to drops whole batches
        log_end = stored[-1].next_offset if stored else 0
        if rng.random() < 0.3:  # and sometimes the newest surviving snapshot is corrupt
            offsets = [o for o in list_snapshot_offsets(fs, d) if o <= log_end]
            if offsets:
                path = tmp_path / snapshot_file_name(offsets[-1])
                raw = bytearray(path.read_bytes())
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                path.write_bytes(bytes(raw))
        state = load(fs, d, 0, log_end, config)
        assert all(o <= log_end for o in list_snapshot_offsets(fs, d))
        rebuild(state, stored)
        assert_same_state(state, rebuild(ProducerStateManager(0, config), stored))
        client.resync(state)
