"""Randomized op-sequence test of `storage.log.Log` against a simple in-memory model.

Redpanda-style (ARCHITECTURE.md §4): one seeded random sequence of operations -- leader appends,
replicated appends, reads, rolls, truncations, log-start moves, retention, flushes, clean reopens,
power-loss crashes (FaultyFileSystem, torn tails) and injected write/fsync failures -- and after
every operation the log is compared with the model:

* log_start_offset / log_end_offset, lso <= recovery_point <= leo;
* the leader epoch cache and `end_offset_for_epoch` for every epoch around the known ones, checked
  against Kafka's LeaderEpochFileCache semantics implemented here independently;
* reading everything back gives exactly the model's batches, byte for byte.

The model is a list of stored batches (bytes with offsets and epochs stamped), plus the log start
and end offsets and the epoch entries. After a crash the model keeps what survived: everything
below the recovery point at the crash must be there; above it the recovered log must be a prefix of
the model's batches (whole batches only), so the model is cut to that prefix.

Replay a failure with its seed: ``REPLOG_SEED=1234 python -m pytest tests/storage/test_log_opsequence.py``
(``REPLOG_OPS`` sets the number of operations). `-m slow` runs many more seeds.
"""

from __future__ import annotations

import bisect
import errno
import os
import random
from dataclasses import dataclass, field

import pytest

from storage import FaultyFileSystem, Log, LogConfig, LogOfflineError, OffsetOutOfRangeError
from storage.retention import SegmentInfo, segments_to_delete

DEFAULT_SEEDS = [11, 23, 37, 41, 59, 71]
DEFAULT_OPS = 700
SLOW_SEEDS = range(1000, 1120)
SLOW_OPS = 2500
TRACE_TAIL = 25
UNDEFINED = -1


# --------------------------------------------------------------------------- model of the epoch cache
class ModelEpochs:
    """Kafka's LeaderEpochFileCache (assign, truncateFromEnd, truncateFromStart, endOffsetFor),
    written from the Java code as a dict epoch -> start offset."""

    def __init__(self) -> None:
        self.starts: dict[int, int] = {}

    def entries(self) -> list[tuple[int, int]]:
        return sorted(self.starts.items())

    def latest(self) -> int:
        return max(self.starts) if self.starts else UNDEFINED

    def assign(self, epoch: int, start: int) -> None:
        if self.starts:
            latest = self.latest()
            if latest == epoch and self.starts[latest] <= start:
                return
        self.starts = {e: s for e, s in self.starts.items() if e < epoch and s < start}
        self.starts[epoch] = start

    def truncate_from_end(self, end_offset: int) -> None:
        self.starts = {e: s for e, s in self.starts.items() if s < end_offset}

    def truncate_from_start(self, start_offset: int) -> None:
        removed = [(e, s) for e, s in self.entries() if s <= start_offset]
        if removed:
            for e, _ in removed:
                del self.starts[e]
            self.starts[removed[-1][0]] = start_offset

    def end_offset_for(self, requested: int, log_end_offset: int) -> tuple[int, int]:
        if requested == UNDEFINED:
            return UNDEFINED, UNDEFINED
        if self.starts and self.latest() == requested:
            return requested, log_end_offset
        higher = [e for e in self.starts if e > requested]
        if not higher:
            return UNDEFINED, UNDEFINED
        higher_start = self.starts[min(higher)]
        floor = [e for e in self.starts if e <= requested]
        if not floor:
            return requested, higher_start
        return max(floor), higher_start


@dataclass
class MBatch:
    base: int
    last: int
    epoch: int
    data: bytes
    records: list[tuple[int, int]]  # (offset, timestamp)


@dataclass
class Model:
    batches: list[MBatch] = field(default_factory=list)  # every batch whose last offset >= lso
    lso: int = 0
    leo: int = 0
    epochs: ModelEpochs = field(default_factory=ModelEpochs)
    flushed: int = 0  # every offset below this was explicitly flushed (a lower bound of the log's)

    def first_at_or_after(self, offset: int) -> int:
        """Index of the first batch whose last offset >= offset."""
        return bisect.bisect_left([b.last for b in self.batches], offset)

    def set_lso(self, lso: int) -> None:
        self.lso = lso
        self.batches = [b for b in self.batches if b.last >= lso]


class Failure(AssertionError):
    pass


# --------------------------------------------------------------------------- the harness
class Harness:
    def __init__(self, seed: int, path: str, kit) -> None:
        self.seed = seed
        self.kit = kit
        self.rng = rng = random.Random(seed)
        self.path = path
        self.fs = FaultyFileSystem(seed)
        self.config = LogConfig(
            segment_bytes=rng.choice([700, 1500, 4000]),
            segment_ms=rng.choice([2_000, 60_000, 7 * 24 * 3600 * 1000]),
            segment_index_bytes=rng.choice([10 << 20, 12 * 6]),
            index_interval_bytes=rng.choice([1, 200, 4096]),
            flush_messages=rng.choice([None, None, 25]),
            retention_ms=rng.choice([-1, 3_000, 30_000]),
            retention_bytes=rng.choice([-1, 2_000, 6_000]),
            message_timestamp_type="LogAppendTime" if rng.random() < 0.2 else "CreateTime",
        )
        self.log = Log.open(path, self.config, fs=self.fs)
        self.model = Model()
        self.leader_epoch = 0
        self.now = 1_700_000_000_000
        self.trace: list[str] = [f"config {self.config}"]
        self.ops = [
            (30, self.op_append), (12, self.op_append_replicated), (20, self.op_read), (4, self.op_roll),
            (5, self.op_truncate_to), (4, self.op_delete_before), (4, self.op_apply_retention),
            (5, self.op_flush), (2, self.op_assign_epoch), (3, self.op_reopen), (4, self.op_crash),
            (3, self.op_fault), (1, self.op_truncate_fully), (3, self.op_offset_for_timestamp),
        ]
        self.weights = [w for w, _ in self.ops]

    # --- running ---------------------------------------------------------------------------------
    def run(self, count: int) -> None:
        for i in range(count):
            _, op = self.rng.choices(self.ops, self.weights)[0]
            self.now += self.rng.randrange(0, 300)
            try:
                op()
                self.check()
            except Exception as exc:
                tail = "\n  ".join(self.trace[-TRACE_TAIL:])
                state = f"log {self.log.describe()} segments {[s.base_offset for s in self.log.segments]}"
                raise Failure(f"seed={self.seed} (replay: REPLOG_SEED={self.seed}) failed at op #{i} "
                              f"{op.__name__}: {type(exc).__name__}: {exc}\n{state}\nlast ops:\n  {tail}") from exc
        self.log.close()

    def note(self, text: str) -> None:
        self.trace.append(text)

    # --- batches ---------------------------------------------------------------------------------
    def _records(self) -> tuple[list, int]:
        kit = self.kit
        count = self.rng.choice([1, 1, 2, 3, 5, 8, 13])
        compressible = self.rng.random() < 0.3
        codec = kit.CODEC_LZ4 if compressible and self.rng.random() < 0.7 else kit.CODEC_NONE
        return kit.random_records(self.rng, count, self.now, compressible=compressible), codec

    def _mbatch(self, data: bytes) -> MBatch:
        h = self.kit.header(data)
        records = [(offset, ts) for offset, ts, _k, _v in self.kit.decode(data)]
        return MBatch(h.base_offset, h.last_offset, h.leader_epoch, data, records)

    def _model_append(self, mb: MBatch) -> None:
        model = self.model
        if mb.epoch > model.epochs.latest():
            model.epochs.assign(mb.epoch, mb.base)
        model.batches.append(mb)
        model.leo = mb.last + 1

    # --- operations ------------------------------------------------------------------------------
    def op_append(self) -> None:
        if self.rng.random() < 0.1:
            self.leader_epoch += self.rng.choice([1, 1, 2])
        records, codec = self._records()
        batch = self.kit.make_batch(records, codec=codec, base_offset=self.rng.randrange(1000),
                                    leader_epoch=self.rng.randrange(-1, 5))
        base, last = self.log.append(batch, self.leader_epoch, now_ms=self.now)
        self.note(f"append epoch={self.leader_epoch} n={len(records)} codec={codec} -> [{base}, {last}]")
        expected = self.kit.stamp(batch, self.model.leo, self.leader_epoch)
        if self.config.log_append_time:
            expected = self.kit.stamp_log_append_time(expected, self.now)
        assert (base, last) == (self.model.leo, self.model.leo + len(records) - 1)
        self._model_append(self._mbatch(expected))

    def _replicated_batches(self) -> list[bytes]:
        out = []
        next_base = self.model.leo
        for _ in range(self.rng.choice([1, 1, 2, 4])):
            if self.rng.random() < 0.1:
                self.leader_epoch += 1
            next_base += self.rng.choice([0, 0, 0, 0, 1, 7])  # gaps, as a compacted leader sends
            records, codec = self._records()
            batch = self.kit.make_batch(records, codec=codec, base_offset=next_base, leader_epoch=self.leader_epoch)
            out.append(batch)
            next_base += len(records)
        return out

    def op_append_replicated(self) -> None:
        batches = self._replicated_batches()
        payload = b"".join(batches)
        if self.rng.random() < 0.2:  # a partial trailing batch is ignored
            after = self.kit.header(batches[-1]).last_offset + 1
            extra = self.kit.make_batch([(b"x", b"tail", self.now)], base_offset=after)
            payload += extra[: self.rng.randrange(1, len(extra))]
        leo = self.log.append_replicated(payload, now_ms=self.now)
        stamps = [(self.kit.header(b).base_offset, self.kit.header(b).leader_epoch) for b in batches]
        self.note(f"append_replicated {stamps} -> leo {leo}")
        for batch in batches:
            self._model_append(self._mbatch(batch))
        assert leo == self.model.leo

    def op_read(self) -> None:
        model = self.model
        if self.rng.random() < 0.05:
            bad = self.rng.choice([model.lso - 1 - self.rng.randrange(3), model.leo + 1 + self.rng.randrange(3)])
            if bad >= 0:
                self.note(f"read out of range {bad}")
                with pytest.raises(OffsetOutOfRangeError):
                    self.log.read(bad, 1000)
            return
        start = self.rng.randint(model.lso, model.leo)
        max_bytes = self.rng.choice([1, 60, 200, 500, 1500, 5000, 1 << 20])
        max_offset = None if self.rng.random() < 0.5 else self.rng.randint(model.lso, model.leo + 2)
        chunk = self.log.read(start, max_bytes, max_offset)
        data = bytes(chunk)
        self.note(f"read start={start} max_bytes={max_bytes} max_offset={max_offset} -> {len(data)} bytes")
        self._check_read(start, max_bytes, max_offset, chunk, data)
        if self.rng.random() < 0.2:
            assert self.log.read_verified(start, max_bytes, max_offset) == data

    def _check_read(self, start: int, max_bytes: int, max_offset: int | None, chunk, data: bytes) -> None:
        model = self.model
        i = model.first_at_or_after(start)
        if (max_offset is not None and start >= max_offset) or i == len(model.batches) \
                or (max_offset is not None and model.batches[i].last >= max_offset):
            assert data == b"", "expected an empty read"
            return
        got = self.kit.split_batches(data)  # whole batches only
        assert got, "a batch is there below max_offset: KIP-74 says at least one"
        expected = [b.data for b in model.batches[i:i + len(got)]]
        assert got == expected, "read returned batches that differ from the model"
        assert chunk.first_offset == model.batches[i].base
        last = model.batches[i + len(got) - 1]
        assert max_offset is None or last.last < max_offset, "read past max_offset"
        assert len(got) == 1 or len(data) <= max_bytes, "more than max_bytes and more than one batch"
        following = model.batches[i + len(got)] if i + len(got) < len(model.batches) else None
        # the reader continues at chunk.next_offset and must land on the following batch
        assert last.last < chunk.next_offset <= (following.last if following else model.leo), \
            f"next_offset {chunk.next_offset} skips or repeats a batch"
        if following and (max_offset is None or following.last < max_offset) \
                and self.log.segment_for(following.base) is self.log.segment_for(model.batches[i].base):
            assert len(data) + len(following.data) > max_bytes, "read stopped early within a segment"

    def op_roll(self) -> None:
        self.note("roll")
        self.log.roll(now_ms=self.now)

    def op_flush(self) -> None:
        rp = self.log.flush(now_ms=self.now)
        self.note(f"flush -> {rp}")
        assert rp == self.model.leo
        self.model.flushed = self.model.leo

    def op_assign_epoch(self) -> None:
        self.leader_epoch += 1
        self.note(f"assign_epoch {self.leader_epoch} at {self.model.leo}")
        self.log.assign_epoch(self.leader_epoch)
        self.model.epochs.assign(self.leader_epoch, self.model.leo)

    def op_truncate_to(self) -> None:
        model = self.model
        offset = self.rng.randint(max(0, model.lso - 3), model.leo + 2)
        self.log.truncate_to(offset)
        self.note(f"truncate_to {offset} -> leo {self.log.log_end_offset}")
        if offset >= model.leo:
            model.epochs.truncate_from_end(model.leo)  # an epoch entry at the log end holds no batch
            return
        cut = model.first_at_or_after(max(offset, model.lso))
        first_dropped = model.batches[cut].base if cut < len(model.batches) else model.leo
        model.batches = model.batches[:cut]
        # the log ends after its last batch, or where its now empty active segment starts (a
        # segment rolled for a replicated batch after an offset gap): never inside dropped data
        prev_end = model.batches[-1].last + 1 if model.batches else 0
        assert prev_end <= self.log.log_end_offset <= min(first_dropped, max(offset, model.lso))
        model.leo = self.log.log_end_offset
        model.lso = min(model.lso, model.leo)
        model.flushed = min(model.flushed, model.leo)
        model.epochs.truncate_from_end(model.leo)

    def op_truncate_fully(self) -> None:
        offset = self.model.leo + self.rng.randrange(0, 50)
        self.note(f"truncate_fully_and_start_at {offset}")
        self.log.truncate_fully_and_start_at(offset)
        self.model = Model(lso=offset, leo=offset, flushed=offset)

    def op_delete_before(self) -> None:
        model = self.model
        offset = self.rng.randint(max(0, model.lso - 2), model.leo)
        deleted = self.log.delete_before(offset)
        self.note(f"delete_before {offset} -> {deleted} segments")
        new_lso = max(model.lso, min(offset, model.leo))
        if new_lso > model.lso:
            model.set_lso(new_lso)
            model.epochs.truncate_from_start(new_lso)

    def op_apply_retention(self) -> None:
        model = self.model
        now = self.now + self.rng.choice([0, 5_000, 50_000])
        upper = self.rng.randint(model.lso, model.leo)
        segments = list(self.log.segments)
        infos = [SegmentInfo(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp) for s in segments]
        expected = segments_to_delete(infos, retention_ms=self.config.retention_ms,
                                      retention_bytes=self.config.retention_bytes, now_ms=now,
                                      upper_bound_offset=upper)
        deleted = self.log.apply_retention(now, upper)
        self.note(f"apply_retention now=+{now - self.now} upper={upper} -> {deleted}")
        assert deleted == expected
        assert self.log.segments == segments[deleted:], "retention deleted other than the oldest segments"
        assert self.log.segments, "the active segment was deleted"
        for gone in segments[:deleted]:
            assert gone.next_offset <= upper, "retention deleted data at/above the upper bound"
            assert not os.path.exists(os.path.join(self.path, f"{gone.base_offset:020d}.log"))
        if deleted and segments[deleted].base_offset > model.lso:
            new_lso = segments[deleted].base_offset
            model.set_lso(new_lso)
            model.epochs.truncate_from_start(new_lso)

    def op_offset_for_timestamp(self) -> None:
        model = self.model
        stamps = [ts for b in model.batches for _, ts in b.records]
        target = self.rng.choice(stamps) + self.rng.choice([-1, 0, 0, 1]) if stamps else self.now
        found = self.log.offset_for_timestamp(target)
        expected = next(((o, ts) for b in model.batches for o, ts in b.records if o >= model.lso and ts >= target),
                        None)
        self.note(f"offset_for_timestamp {target} -> {found}")
        assert found == expected

    def _reopen(self, rp: int, lso: int, clean: bool) -> None:
        self.log = Log.open(self.path, self.config, fs=self.fs, recovery_point=rp, log_start_offset=lso,
                            clean_shutdown=clean)

    def op_reopen(self) -> None:
        clean = self.rng.random() < 0.7
        lso = self.log.log_start_offset
        self.log.close()
        rp = self.log.recovery_point
        assert rp == self.model.leo, "close must flush everything"
        self._reopen(rp, lso, clean)
        self.note(f"close + reopen clean_shutdown={clean}")
        assert self.log.truncated_bytes_on_open == 0
        self.model.flushed = self.model.leo
        self.model.epochs.truncate_from_end(self.model.leo)  # an epoch that starts at the log end is dropped

    def op_crash(self) -> None:
        torn = self.rng.random() < 0.7
        self._crash_and_recover(torn, maybe=[])

    def _crash_and_recover(self, torn: bool, maybe: list[MBatch], crash: bool = True) -> None:
        model = self.model
        rp, lso = self.log.recovery_point, self.log.log_start_offset
        assert lso == model.lso
        guaranteed = max(rp, model.flushed)
        if crash:
            self.fs.crash(torn=torn)
        else:
            self.log.close()
        self._reopen(rp, lso, clean=False)
        log = self.log
        self.note(f"{'crash' if crash else 'reopen after fault'} torn={torn} rp={rp} -> leo {log.log_end_offset}")
        candidates = model.batches + maybe
        got = self.kit.read_all(log)
        assert log.log_end_offset >= guaranteed, f"lost data below the recovery point {guaranteed}"
        assert got == [b.data for b in candidates[:len(got)]], "recovered log is not a prefix of the model"
        kept = candidates[:len(got)]
        lost = candidates[len(got):]
        assert all(b.last >= guaranteed for b in lost), "a batch below the recovery point was lost"
        # the log end is after the last surviving batch (or at the log start when none survived:
        # offsets below the log start are never handed out again), never inside lost data
        prev_end = kept[-1].last + 1 if kept else lso
        upper = lost[0].base if lost else (maybe[-1].last + 1 if maybe else model.leo)
        assert prev_end <= log.log_end_offset <= max(upper, prev_end), "log end does not match what survived"
        assert log.log_start_offset == lso, "the log start moved in a crash"
        epochs = model.epochs
        for b in kept[len(model.batches):]:
            if b.epoch > epochs.latest():
                epochs.assign(b.epoch, b.base)
        model.batches = kept
        model.leo = log.log_end_offset
        model.lso = log.log_start_offset
        model.flushed = min(model.flushed, model.leo)
        epochs.truncate_from_end(model.leo)
        epochs.truncate_from_start(model.lso)

    def op_fault(self) -> None:
        """Inject ENOSPC/EIO into the next write or fsync of one operation; an I/O error takes the
        log offline (KAFKA_STORAGE_ERROR), then the log is reopened (after a crash or not)."""
        rng = self.rng
        kind = rng.choice(["write", "fsync"])
        err = rng.choice([errno.ENOSPC, errno.EIO])
        needle = rng.choice([None, ".log", ".log", ".index", ".timeindex", "leader-epoch"])
        partial = kind == "write" and rng.random() < 0.5
        if kind == "fsync":
            self.op_append()  # something to fsync
            action = rng.choice(["append", "append_replicated", "flush", "flush", "roll"])
        else:
            action = rng.choice(["append", "append_replicated"])
        if needle == "leader-epoch":
            self.leader_epoch += 1  # the epoch checkpoint is rewritten
        self.fs.fail_next(kind, err, partial=partial, path_contains=needle)
        self.note(f"fault {kind} {errno.errorcode[err]} partial={partial} on {needle} during {action}")
        maybe: list[MBatch] = []
        model_before = (list(self.model.batches), self.model.leo)
        try:
            if action == "append":
                records, codec = self._records()
                batch = self.kit.make_batch(records, codec=codec)
                expected = self.kit.stamp(batch, self.model.leo, self.leader_epoch)
                if self.config.log_append_time:
                    expected = self.kit.stamp_log_append_time(expected, self.now)
                maybe = [self._mbatch(expected)]
                self.log.append(batch, self.leader_epoch, now_ms=self.now)
            elif action == "append_replicated":
                batches = self._replicated_batches()
                maybe = [self._mbatch(b) for b in batches]
                self.log.append_replicated(b"".join(batches), now_ms=self.now)
            elif action == "flush":
                self.log.flush(now_ms=self.now)
            else:
                self.log.roll(now_ms=self.now)
        except LogOfflineError as exc:
            assert exc.error_code == 56
            assert isinstance(exc.__cause__, OSError)
            self._after_offline(maybe)
            return
        # the armed failure did not fire (nothing of that kind happened): disarm, apply the op
        self.fs._failures.clear()
        self.note("  (no fault fired)")
        assert (self.model.batches, self.model.leo) == model_before
        for mb in maybe:
            self._model_append(mb)
        if action == "flush":
            self.model.flushed = self.model.leo

    def _after_offline(self, maybe: list[MBatch]) -> None:
        log = self.log
        assert log.offline
        with pytest.raises(LogOfflineError):
            log.append(self.kit.simple_batch(1), self.leader_epoch, now_ms=self.now)
        with pytest.raises(LogOfflineError):
            log.read(self.model.lso, 100)
        with pytest.raises(LogOfflineError):
            log.flush()
        crash = self.rng.random() < 0.6
        self._crash_and_recover(torn=True, maybe=maybe, crash=crash)

    # --- the invariants after every operation ----------------------------------------------------
    def check(self) -> None:
        log, model = self.log, self.model
        assert not log.offline
        assert (log.log_start_offset, log.log_end_offset) == (model.lso, model.leo), \
            f"log [{log.log_start_offset}, {log.log_end_offset}) != model [{model.lso}, {model.leo})"
        assert log.log_start_offset <= log.recovery_point <= log.log_end_offset
        assert log.epochs.entries == model.epochs.entries(), \
            f"epochs {log.epochs.entries} != model {model.epochs.entries()}"
        known = [e for e, _ in model.epochs.entries()]
        for epoch in {UNDEFINED, 0, *known, *(e + 1 for e in known), *(e - 1 for e in known)}:
            assert log.end_offset_for_epoch(epoch) == model.epochs.end_offset_for(epoch, model.leo), \
                f"end_offset_for_epoch({epoch})"
        assert self.kit.read_all(log) == [b.data for b in model.batches], "reading back differs from the model"
        assert all(s.next_offset <= n.base_offset for s, n in zip(log.segments, log.segments[1:]))


def _seeds_from_env(default: list[int] | range) -> list[int]:
    value = os.environ.get("REPLOG_SEED")
    if value:
        return [int(s) for s in value.split(",")]
    return list(default)


def _ops_from_env(default: int) -> int:
    return int(os.environ.get("REPLOG_OPS", default))


def _run(seed: int, ops: int, tmp_path, kit) -> None:
    Harness(seed, str(tmp_path / f"log-{seed}"), kit).run(ops)


@pytest.mark.parametrize("seed", _seeds_from_env(DEFAULT_SEEDS))
def test_log_matches_model(seed: int, tmp_path, kit, decode_records_available) -> None:
    _run(seed, _ops_from_env(DEFAULT_OPS), tmp_path, kit)


@pytest.mark.slow
def test_log_matches_model_many_seeds(tmp_path, kit, decode_records_available, request) -> None:
    """Many more seeds and operations; one test, the failing seed is in the assertion message."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long run: select it with -m slow")
    for seed in _seeds_from_env(SLOW_SEEDS):
        _run(seed, _ops_from_env(SLOW_OPS), tmp_path, kit)


def test_model_epochs_follow_kafka() -> None:
    """The model itself, on Kafka's LeaderEpochFileCacheTest examples."""
    m = ModelEpochs()
    m.assign(2, 6)
    m.assign(3, 8)
    m.assign(4, 11)
    assert m.end_offset_for(2, 20) == (2, 8)
    assert m.end_offset_for(1, 20) == (1, 6)
    assert m.end_offset_for(4, 20) == (4, 20)
    assert m.end_offset_for(5, 20) == (UNDEFINED, UNDEFINED)
    m.truncate_from_start(9)
    assert m.entries() == [(3, 9), (4, 11)]
    m.truncate_from_end(11)
    assert m.entries() == [(3, 9)]
