"""`brokerctl produce` and `brokerctl consume` against a real brokerd: round trips with keys (text
and JSON, binary and empty values), acks and compression (the codec checked on disk with `log
dump`), --partition/--offset, the --max-messages and --timeout-ms stops, the default start at the
end (a real `python -m tools.brokerctl` subprocess racing a producer), and per-record failures."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tools.brokerctl_produce as brokerctl_produce
from client.sync import SyncConsumer, SyncProducer
from tools.brokerctl import main
from tools.brokerctl_produce import LineSplitter

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20.0


def cli(bootstrap: str, *args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["-b", bootstrap, *args], input=input, catch_exceptions=False)


def brokerctl_process(bootstrap: str, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tools.brokerctl", "-b", bootstrap, *args], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]


def create(bootstrap: str, topic: str, partitions: int) -> None:
    result = cli(bootstrap, "topics", "create", topic, "--partitions", str(partitions))
    assert result.exit_code == 0, result.stderr


def consume_json(bootstrap: str, topic: str, *args: str) -> list[dict]:
    result = cli(bootstrap, "consume", topic, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def raw(rendered: dict | None) -> bytes | None:
    if rendered is None:
        return None
    return rendered["utf8"].encode() if "utf8" in rendered else base64.b64decode(rendered["base64"])


def test_round_trip_with_keys(broker) -> None:
    b = broker.bootstrap
    create(b, "orders", 3)
    lines = [b"k1:hello", b"k2:world", b"k1:again", b"k3:", b"k4:caf\xc3\xa9 \xff\xfe", b"k5:a:b:c",
             b"k6:crlf\r"]
    result = cli(b, "produce", "orders", "--key-separator", ":", "--compression", "lz4",
                 input=b"\n".join(lines))  # no newline after the last line
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "brokerctl: produced 7 of 7 records to topic orders (acks=all)\n"
    assert result.stdout == ""

    records = consume_json(b, "orders", "--from-beginning", "--max-messages", "7")
    assert all(set(r) == {"topic", "partition", "offset", "timestamp", "key", "value", "headers"} for r in records)
    got = {(raw(r["key"]), raw(r["value"])) for r in records}
    assert got == {(b"k1", b"hello"), (b"k2", b"world"), (b"k1", b"again"), (b"k3", b""),
                   (b"k4", b"caf\xc3\xa9 \xff\xfe"), (b"k5", b"a:b:c"), (b"k6", b"crlf")}
    binary = next(r for r in records if r["key"] == {"utf8": "k4"})
    assert binary["value"] == {"base64": base64.b64encode(b"caf\xc3\xa9 \xff\xfe").decode()}
    now_ms = time.time() * 1000
    assert all(r["topic"] == "orders" and r["headers"] == [] and now_ms - 60_000 < r["timestamp"] <= now_ms
               for r in records)
    # same key, same partition, in send order; each partition's offsets are 0..n-1
    k1 = [r for r in records if r["key"] == {"utf8": "k1"}]
    assert k1[0]["partition"] == k1[1]["partition"] and [raw(r["value"]) for r in k1] == [b"hello", b"again"]
    for p in range(3):
        offsets = [r["offset"] for r in records if r["partition"] == p]
        assert offsets == list(range(len(offsets)))

    # text output: key SEP value, bytes unchanged, one line per record
    result = cli(b, "consume", "orders", "--from-beginning", "--max-messages", "7", "--key-separator", "=>")
    assert result.exit_code == 0 and result.stderr == "Processed a total of 7 messages\n"
    assert sorted(result.stdout_bytes.splitlines()) == sorted(line.replace(b":", b"=>", 1).removesuffix(b"\r")
                                                              for line in lines)
    result = cli(b, "consume", "orders", "--partition", str(k1[0]["partition"]), "--offset", "earliest",
                 "--max-messages", "2", "--print-key")
    assert result.stdout_bytes == b"k1\thello\nk1\tagain\n"


def test_values_only_null_keys_and_headers(broker) -> None:
    b = broker.bootstrap
    create(b, "plain", 1)
    result = cli(b, "produce", "plain", input=b"one\n\nthree:3\n")
    assert result.exit_code == 0, result.stderr
    with SyncProducer(b) as producer:  # headers and a null value: what the CLI's producer cannot send
        producer.send_and_wait("plain", None, b"\xffkey", headers=[("trace", b"\xfe\x01"), ("n", None), ("t", b"x")])
    records = consume_json(b, "plain", "--from-beginning", "--max-messages", "4")
    assert [(r["key"], raw(r["value"])) for r in records] == [(None, b"one"), (None, b""), (None, b"three:3"),
                                                              ({"base64": "/2tleQ=="}, None)]
    assert records[3]["headers"] == [{"key": "trace", "value": {"base64": "/gE="}}, {"key": "n", "value": None},
                                     {"key": "t", "value": {"utf8": "x"}}]
    result = cli(b, "consume", "plain", "--from-beginning", "--max-messages", "4", "--print-key")
    assert result.stdout_bytes == b"null\tone\nnull\t\nnull\tthree:3\n\xffkey\tnull\n"
    result = cli(b, "consume", "plain", "--from-beginning", "--max-messages", "4")
    assert result.stdout_bytes == b"one\n\nthree:3\nnull\n"


@pytest.mark.parametrize(("acks", "compression"), [("all", "lz4"), ("1", "gzip"), ("0", "none")])
def test_acks_and_compression(start_broker, acks: str, compression: str) -> None:
    broker = start_broker()
    create(broker.bootstrap, "codec", 1)
    text = b"".join(b"%d:the same words over and over and over %d\n" % (i, i) for i in range(50))
    result = cli(broker.bootstrap, "produce", "codec", "--key-separator", ":", "--acks", acks,
                 "--compression", compression, input=text)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"brokerctl: produced 50 of 50 records to topic codec (acks={acks})\n"
    records = consume_json(broker.bootstrap, "codec", "--from-beginning", "--max-messages", "50")
    assert [raw(r["key"]) for r in records] == [b"%d" % i for i in range(50)]
    assert broker.stop() == 0
    dump = cli(broker.bootstrap, "log", "dump", "--json", os.path.join(broker.data_dir, "codec-0"))
    batches = [json.loads(line) for line in dump.stdout.splitlines() if '"type":"batch"' in line]
    assert batches and {batch["codec"] for batch in batches} == {compression}
    assert all((batch["producer_id"] >= 0) == (acks == "all") for batch in batches)  # idempotent iff acks=all


def test_produce_to_one_partition(broker) -> None:
    create(broker.bootstrap, "spread", 3)
    result = cli(broker.bootstrap, "produce", "spread", "--partition", "2", "--key-separator", ":",
                 input=b"a:1\nb:2\nc:3\n")
    assert result.exit_code == 0, result.stderr
    records = consume_json(broker.bootstrap, "spread", "--from-beginning", "--max-messages", "3")
    assert [(r["partition"], r["offset"]) for r in records] == [(2, 0), (2, 1), (2, 2)]


def test_failed_lines_are_reported_and_fail_the_run(broker, monkeypatch: pytest.MonkeyPatch) -> None:
    create(broker.bootstrap, "strict", 1)
    monkeypatch.setattr(brokerctl_produce, "LINE_BYTES_MAX", 20)
    result = cli(broker.bootstrap, "produce", "strict", "--key-separator", ":",
                 input=b"a:ok\nno separator\nb:also ok\nc:" + b"x" * 40 + b"\nd:last")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "brokerctl: line 2: not sent: no key separator ':' in the line",
        "brokerctl: line 4: not sent: longer than 20 bytes",
        "brokerctl: produced 3 of 5 records to topic strict (acks=all); 2 failed",
    ]
    records = consume_json(broker.bootstrap, "strict", "--from-beginning", "--max-messages", "3")
    assert [raw(r["value"]) for r in records] == [b"ok", b"also ok", b"last"]


def test_produce_checks_the_topic_and_partition(broker) -> None:
    create(broker.bootstrap, "small", 2)
    result = cli(broker.bootstrap, "produce", "ghost", input=b"boo\n")
    assert (result.exit_code, result.stderr) == (1, "brokerctl: unknown topic 'ghost' [UNKNOWN_TOPIC_OR_PARTITION]\n")
    assert cli(broker.bootstrap, "topics", "list").stdout == "small\n"  # not auto-created
    result = cli(broker.bootstrap, "produce", "small", "--partition", "2", input=b"x\n")
    assert (result.exit_code, result.stderr) == (1, "brokerctl: topic 'small' has no partition 2 (it has 2)\n")
    result = cli(broker.bootstrap, "produce", "small", "--key-separator", "", input=b"x\n")
    assert result.exit_code == 2 and "--key-separator" in result.stderr
    result = cli(broker.bootstrap, "produce", "small", input=b"")
    assert (result.exit_code, result.stderr) == (0, "brokerctl: produced 0 of 0 records to topic small (acks=all)\n")


def test_consume_stops_after_max_messages(broker) -> None:
    create(broker.bootstrap, "many", 2)
    assert cli(broker.bootstrap, "produce", "many", input=b"".join(b"m%d\n" % i for i in range(20))).exit_code == 0
    started = time.monotonic()
    result = cli(broker.bootstrap, "consume", "many", "--from-beginning", "--max-messages", "7")
    assert time.monotonic() - started < 5  # no --timeout-ms: it stops because of the count
    assert result.exit_code == 0 and len(result.stdout_bytes.splitlines()) == 7
    assert result.stderr == "Processed a total of 7 messages\n"


def test_consume_stops_after_timeout(broker) -> None:
    create(broker.bootstrap, "quiet", 1)
    assert cli(broker.bootstrap, "produce", "quiet", input=b"only\n").exit_code == 0
    started = time.monotonic()
    result = cli(broker.bootstrap, "consume", "quiet", "--from-beginning", "--timeout-ms", "400")
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5, elapsed
    assert (result.exit_code, result.stdout, result.stderr) == (0, "only\n", "Processed a total of 1 messages\n")
    started = time.monotonic()
    result = cli(broker.bootstrap, "consume", "quiet", "--timeout-ms", "300")  # from the end: nothing new
    assert time.monotonic() - started < 5
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "Processed a total of 0 messages\n")


def test_consume_partition_and_offset(broker) -> None:
    create(broker.bootstrap, "seek", 2)
    assert cli(broker.bootstrap, "produce", "seek", "--partition", "1",
               input=b"".join(b"s%d\n" % i for i in range(6))).exit_code == 0
    records = consume_json(broker.bootstrap, "seek", "--partition", "1", "--offset", "4", "--timeout-ms", "500")
    assert [(r["partition"], r["offset"], raw(r["value"])) for r in records] == [(1, 4, b"s4"), (1, 5, b"s5")]
    assert consume_json(broker.bootstrap, "seek", "--partition", "1", "--offset", "latest", "--timeout-ms", "300") == []
    assert consume_json(broker.bootstrap, "seek", "--partition", "0", "--from-beginning", "--timeout-ms", "300") == []
    assert consume_json(broker.bootstrap, "seek", "--partition", "1", "--offset", "6", "--timeout-ms", "300") == []

    result = cli(broker.bootstrap, "consume", "seek", "--partition", "1", "--offset", "7", "--timeout-ms", "3000")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "out of range" in result.stderr
    result = cli(broker.bootstrap, "consume", "seek", "--partition", "5", "--timeout-ms", "300")
    assert (result.exit_code, result.stderr) == (1, "brokerctl: topic 'seek' has no partition 5 (it has 2)\n")
    result = cli(broker.bootstrap, "consume", "ghost", "--timeout-ms", "300")
    assert (result.exit_code, result.stderr) == (1, "brokerctl: unknown topic 'ghost' [UNKNOWN_TOPIC_OR_PARTITION]\n")


@pytest.mark.parametrize("args", [
    ["--offset", "3"],                                        # --offset needs --partition
    ["--partition", "0", "--offset", "3", "--from-beginning"],
    ["--partition", "0", "--offset", "-1"],
    ["--partition", "0", "--offset", "soon"],
    ["--json", "--print-key"],
    ["--max-messages", "0"],
    ["--timeout-ms", "x"],
], ids=lambda args: "-".join(a.strip("-") for a in args))
def test_consume_usage_errors(args: list[str]) -> None:
    result = cli("127.0.0.1:1", "consume", "t", *args)  # rejected before connecting anywhere
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_consume_starts_at_the_end_by_default(broker) -> None:
    """A real process: records that exist before it starts are not printed, later ones are."""
    create(broker.bootstrap, "live", 2)
    assert cli(broker.bootstrap, "produce", "live", input=b"old-1\nold-2\nold-3\n").exit_code == 0
    consumer = brokerctl_process(broker.bootstrap, "consume", "live", "--max-messages", "2",
                                 "--timeout-ms", str(int(WAIT_S * 1000)))
    try:
        deadline = time.monotonic() + WAIT_S
        with SyncProducer(broker.bootstrap) as producer:
            i = 0
            while consumer.poll() is None:  # it has not resolved its start yet, or has not seen 2 records
                assert time.monotonic() < deadline, "the consumer did not print two new records"
                producer.send_and_wait("live", b"new-%d" % i, partition=i % 2)
                i += 1
                time.sleep(0.1)
        out, err = consumer.communicate(timeout=WAIT_S)
    finally:
        consumer.kill()
    assert consumer.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.startswith(b"new-") for line in lines), out
    assert err == b"Processed a total of 2 messages\n"


def test_round_trip_through_real_processes(broker) -> None:
    create(broker.bootstrap, "piped", 3)
    producer = brokerctl_process(broker.bootstrap, "produce", "piped", "--key-separator", "|", "--compression",
                                 "lz4", stdin=subprocess.PIPE)
    out, err = producer.communicate(b"".join(b"key-%d|value-%d\n" % (i, i) for i in range(100)), timeout=WAIT_S)
    assert producer.returncode == 0 and out == b""
    assert err == b"brokerctl: produced 100 of 100 records to topic piped (acks=all)\n"
    consumer = brokerctl_process(broker.bootstrap, "consume", "piped", "--from-beginning", "--max-messages", "100",
                                 "--key-separator", "|")
    out, err = consumer.communicate(timeout=WAIT_S)
    assert consumer.returncode == 0 and err == b"Processed a total of 100 messages\n"
    assert sorted(out.splitlines()) == sorted(b"key-%d|value-%d" % (i, i) for i in range(100))
    with SyncConsumer(broker.bootstrap) as check:  # the client agrees on where they went
        ends = check.end_offsets([("piped", p) for p in range(3)])
    assert sum(ends.values()) == 100


def test_line_splitter() -> None:
    splitter = LineSplitter(8)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\r\nde\n\nf") == [(1, b"abc"), (2, b"de"), (3, b"")]
    assert splitter.feed(b"ghijklmnop") == []  # line 4 grows past 8 bytes: dropped as it arrives
    assert splitter.feed(b"q\nexactly8\r\n123456789\n") == [(4, None), (5, b"exactly8"), (6, None)]
    assert splitter.end() == []
    assert splitter.feed(b"tail") == [] and splitter.end() == [(7, b"tail")]
