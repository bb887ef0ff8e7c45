"""Record batch throughput, as ratios against kafka-python measured in the same test.

Workload: one batch of 1000 records, each a 100-byte value (hex text, so lz4 finds a little to
compress), no key, no headers, timestamps spread over 20 ms, as a producer's accumulator makes them.

Targets (issue): encode >= 3x kafka-python's DefaultRecordBatchBuilder uncompressed and >= 2.5x with
lz4; decode with every field materialised >= 2x kafka-python's DefaultRecordBatch iteration;
validate_client_batch on an lz4 batch well under 1 us/record. Ours is timed by pytest-benchmark,
the baseline with time.perf_counter in the same test; both are the median of ROUNDS rounds. CI
asserts loose bounds only (shared machines); the printed figures are the measurement.

Run: python -m pytest -m bench tests/bench/test_bench_records.py -q -s
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import lz4.frame
import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from client.wire.records import CODEC_LZ4, CODEC_NONE, build_batch, decode_records, validate_client_batch

pytestmark = pytest.mark.bench
ROUNDS = 7
RECORDS = 1000
TS = 1_700_000_000_000
_rng = random.Random(20240601)
INPUTS = [(None, _rng.randbytes(50).hex().encode(), TS + i // 50, ()) for i in range(RECORDS)]
assert all(len(value) == 100 for _, value, _, _ in INPUTS)
RESULTS: dict[str, str] = {}


def kp_encode(codec: int) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for offset, (key, value, timestamp, headers) in enumerate(INPUTS):
        builder.append(offset, timestamp, key, value, list(headers))
    return bytes(builder.build())


def kp_decode(batch: bytes) -> list:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in DefaultRecordBatch(batch)]


def median_seconds(fn: Callable[[], object], iterations: int) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        times.append((time.perf_counter() - start) / iterations)
    return statistics.median(times)


def measure_ours(benchmark, fn: Callable[[], object], iterations: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds per call, from pytest-benchmark (or our own timer under --benchmark-disable)."""
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=iterations, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return median_seconds(fn, iterations)
    return stats.stats.median


def report(benchmark, name: str, ours_s: float, baseline_s: float,  # type: ignore[no-untyped-def]
           target: float | None) -> float:
    ratio = baseline_s / ours_s
    ours_rps, base_rps = RECORDS / ours_s, RECORDS / baseline_s
    benchmark.extra_info.update(records_per_s=ours_rps, kafka_python_records_per_s=base_rps, ratio=ratio,
                                target_ratio=target)
    line = (f"{name}: ours {ours_rps:,.0f} rec/s ({ours_s / RECORDS * 1e6:.3f} us/rec), kafka-python "
            f"{base_rps:,.0f} rec/s ({baseline_s / RECORDS * 1e6:.3f} us/rec), ratio {ratio:.2f}"
            + (f" (target >= {target})" if target else ""))
    RESULTS[name] = line
    print("\n" + line)
    return ratio


@pytest.mark.parametrize("codec, target", [(CODEC_NONE, 3.0), (CODEC_LZ4, 2.5)], ids=["none", "lz4"])
def test_encode(benchmark, codec: int, target: float) -> None:  # type: ignore[no-untyped-def]
    assert decode_records(build_batch(INPUTS, compression=codec)) == decode_records(kp_encode(codec))
    baseline = median_seconds(lambda: kp_encode(codec), 5)
    ours = measure_ours(benchmark, lambda: build_batch(INPUTS, compression=codec), 10)
    ratio = report(benchmark, f"encode {'lz4' if codec else 'none'}", ours, baseline, target)
    assert ratio >= 1.0  # loose (CI, shared machines); the target is printed


def test_decode(benchmark) -> None:  # type: ignore[no-untyped-def]
    batch = build_batch(INPUTS)
    assert [tuple(r[:4]) for r in decode_records(batch)] == [r[:4] for r in kp_decode(batch)]
    baseline = median_seconds(lambda: kp_decode(batch), 3)
    ours = measure_ours(benchmark, lambda: decode_records(batch), 5)
    ratio = report(benchmark, "decode none, all fields", ours, baseline, 2.0)
    assert ratio >= 1.0


def test_decode_lz4(benchmark) -> None:  # type: ignore[no-untyped-def]
    batch = build_batch(INPUTS, compression=CODEC_LZ4)
    baseline = median_seconds(lambda: kp_decode(batch), 3)
    ours = measure_ours(benchmark, lambda: decode_records(batch), 5)
    ratio = report(benchmark, "decode lz4, all fields", ours, baseline, 2.0)
    assert ratio >= 1.0


def test_validate_lz4(benchmark) -> None:  # type: ignore[no-untyped-def]
    """The Produce hot path. Baselines: kafka-python decoding the batch (what a broker built on it
    would run), and lz4 decompression alone (the floor under any walk)."""
    batch = build_batch(INPUTS, compression=CODEC_LZ4)
    assert validate_client_batch(batch) == 0
    decompress_s = median_seconds(lambda: lz4.frame.decompress(batch[61:]), 20)
    baseline = median_seconds(lambda: kp_decode(batch), 3)
    ours = measure_ours(benchmark, lambda: validate_client_batch(batch), 10)
    us_per_record = ours / RECORDS * 1e6
    benchmark.extra_info.update(us_per_record=us_per_record, decompress_us_per_record=decompress_s / RECORDS * 1e6)
    ratio = report(benchmark, "validate lz4 (baseline: kafka-python decode)", ours, baseline, None)
    RESULTS["validate lz4 per record"] = (f"validate lz4: {us_per_record:.3f} us/record (target well under 1), of "
                                          f"which lz4 decompression {decompress_s / RECORDS * 1e6:.3f}")
    print(RESULTS["validate lz4 per record"])
    assert us_per_record < 2.5 and ratio >= 1.5


def test_zz_summary() -> None:
    """Runs last in the module: all figures together (with -s)."""
    print("\n" + "\n".join(RESULTS.values()))
