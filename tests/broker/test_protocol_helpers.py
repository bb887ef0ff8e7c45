"""A tiny blocking Kafka client for raw-protocol tests, built on client.wire.protocol, plus its self-tests.

`KafkaConnection` is one TCP connection to a broker: `request(api_key, version, body)` frames a
request with `encode_request`, reads the response frame and decodes it with `decode_response`,
checking the correlation id. `send` / `recv` split the two for pipelining and for acks=0;
`send_raw` writes arbitrary bytes; `wait_closed` polls for the broker closing the connection.
Every read has a deadline (socket timeouts), so a broker that never answers fails the test instead
of hanging it.

`InProcessBroker` runs `broker.broker.Broker` on an event loop in a background thread, for the few
states a single-node brokerd process never reaches by itself (a leader epoch above 0, as the
replication issue's leader changes will produce); the requests still go over a real socket.

`shared_broker` is a module-scoped brokerd (one per test module that uses it): tests isolate
themselves with `unique_topic()` names. Tests that need their own configuration or a restart use
the function-scoped `start_broker` fixture from tests/conftest.py instead.

The other tests/broker/test_protocol_*.py modules import from here (pytest puts this directory on
sys.path, as there is no __init__.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from brokerproc import BrokerProcess, free_port

from client.wire.protocol import decode_response, encode_request, peek_correlation_id
from client.wire.records import CODEC_NONE, build_batch

IO_TIMEOUT_S = 10.0
CLIENT_ID = "replog-protocol-test"

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_DELETE_TOPICS = 20
API_INIT_PRODUCER_ID = 22
API_OFFSET_FOR_LEADER_EPOCH = 23
API_DESCRIBE_CONFIGS = 32
API_INCREMENTAL_ALTER_CONFIGS = 44

# The versions the tests speak by default: the highest non-flexible ones the broker advertises,
# which are what the real clients use (KAFKA_PROTOCOL.md §1.4 "nonflex").
PRODUCE_V = 8
FETCH_V = 11
LIST_OFFSETS_V = 5
METADATA_V = 8
CREATE_TOPICS_V = 4
DELETE_TOPICS_V = 3
DESCRIBE_CONFIGS_V = 3
OFFSET_FOR_LEADER_EPOCH_V = 3

_SIZE = struct.Struct(">i")
_topic_counter = itertools.count()


class ConnectionClosedError(Exception):
    """The broker closed the connection (EOF or reset) while a response was expected."""


class KafkaConnection:
    def __init__(self, bootstrap: str, timeout_s: float = IO_TIMEOUT_S) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout_s = timeout_s
        self._buf = bytearray()
        self._correlation = itertools.count(1)

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KafkaConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- sending
    def send(self, api_key: int, version: int, body: Mapping[str, Any], *, correlation_id: int | None = None,
             client_id: str | None = CLIENT_ID) -> int:
        """Send one request; returns its correlation id."""
        cid = next(self._correlation) if correlation_id is None else correlation_id
        self.sock.sendall(encode_request(api_key, version, cid, client_id, body, framed=True))
        return cid

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # ---------------------------------------------------------------- receiving
    def _fill(self, need: int, deadline: float) -> None:
        while len(self._buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete response within {self.timeout_s}s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError as exc:
                raise ConnectionClosedError("connection reset by the broker") from exc
            except TimeoutError:
                continue  # the loop re-checks the deadline
            if not chunk:
                raise ConnectionClosedError("the broker closed the connection")
            self._buf += chunk

    def recv_frame(self, timeout_s: float | None = None) -> bytes:
        """The payload of the next response frame (correlation id + header + body)."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        self._fill(4, deadline)
        size = _SIZE.unpack_from(self._buf, 0)[0]
        assert 0 <= size < 1 << 30, f"implausible response size {size}"
        self._fill(4 + size, deadline)
        frame = bytes(self._buf[4:4 + size])
        del self._buf[:4 + size]
        return frame

    def recv(self, api_key: int, version: int, correlation_id: int | None = None,
             timeout_s: float | None = None) -> dict[str, Any]:
        frame = self.recv_frame(timeout_s)
        got, body = decode_response(frame, api_key, version)
        if correlation_id is not None:
            assert got == correlation_id, f"response for correlation id {got}, expected {correlation_id}"
        return body

    def request(self, api_key: int, version: int, body: Mapping[str, Any], *,
                timeout_s: float | None = None) -> dict[str, Any]:
        cid = self.send(api_key, version, body)
        return self.recv(api_key, version, cid, timeout_s)

    def wait_closed(self, timeout_s: float = IO_TIMEOUT_S) -> bool:
        """True once the broker has closed the connection (EOF or reset) within the deadline.

        Bytes the broker sends before closing are discarded; False if it is still open at the end.
        """
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                return False
            if not chunk:
                return True
        return False


def correlation_of(frame: bytes) -> int:
    return peek_correlation_id(frame)


# ------------------------------------------------------------------------------------ body helpers

def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid()}-{next(_topic_counter)}-{uuid.uuid4().hex[:6]}"


def create_topic(conn: KafkaConnection, name: str, partitions: int = 1,
                 configs: Mapping[str, str] | None = None) -> None:
    body = conn.request(API_CREATE_TOPICS, CREATE_TOPICS_V, {"topics": [{
        "name": name, "num_partitions": partitions, "replication_factor": 1,
        "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}], "timeout_ms": 10_000})
    assert body["topics"][0]["error_code"] == 0, body


def produce_body(topic: str, batches_by_partition: Mapping[int, bytes | None], acks: int = -1,
                 timeout_ms: int = 10_000) -> dict[str, Any]:
    return {"transactional_id": None, "acks": acks, "timeout_ms": timeout_ms, "topic_data": [
        {"name": topic, "partition_data": [{"index": p, "records": b} for p, b in batches_by_partition.items()]}]}


def produce(conn: KafkaConnection, topic: str, batch: bytes | None, partition: int = 0, *, acks: int = -1,
            version: int = PRODUCE_V) -> dict[str, Any]:
    """Produce one batch to one partition; returns that partition's response."""
    body = conn.request(API_PRODUCE, version, produce_body(topic, {partition: batch}, acks))
    (topic_response,) = body["responses"]
    (part,) = topic_response["partition_responses"]
    return part


def records(n: int, *, value_size: int = 10, key_prefix: str = "k", timestamp: int = 1_700_000_000_000,
            headers: Sequence[tuple[str, bytes | None]] = ()) -> list[tuple[bytes | None, bytes | None, int, Any]]:
    return [(f"{key_prefix}{i}".encode(), (f"v{i}-".encode() * value_size)[:max(value_size, 1)],
             timestamp + i, tuple(headers)) for i in range(n)]


def batch(n: int = 1, *, compression: int = CODEC_NONE, **kwargs: Any) -> bytes:
    """A producer batch of `n` small records (build_batch keyword arguments pass through)."""
    value_size = kwargs.pop("value_size", 10)
    timestamp = kwargs.pop("timestamp", 1_700_000_000_000)
    return build_batch(records(n, value_size=value_size, timestamp=timestamp), compression=compression, **kwargs)


def fetch_body(topic: str, partitions: Mapping[int, int], *, max_wait_ms: int = 0, min_bytes: int = 1,
               max_bytes: int = 50 << 20, partition_max_bytes: int = 1 << 20,
               current_leader_epoch: int = -1, isolation_level: int = 0) -> dict[str, Any]:
    return {"replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": min_bytes, "max_bytes": max_bytes,
            "isolation_level": isolation_level, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [
                {"partition": p, "current_leader_epoch": current_leader_epoch, "fetch_offset": offset,
                 "log_start_offset": -1, "partition_max_bytes": partition_max_bytes}
                for p, offset in partitions.items()]}],
            "forgotten_topics_data": [], "rack_id": ""}


def fetch_partitions(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{partition index: partition response} of a one-topic Fetch response."""
    (topic,) = body["responses"]
    return {p["partition_index"]: p for p in topic["partitions"]}


def list_offsets(conn: KafkaConnection, topic: str, timestamp: int, partition: int = 0, *,
                 current_leader_epoch: int = -1, version: int = LIST_OFFSETS_V) -> dict[str, Any]:
    body = conn.request(API_LIST_OFFSETS, version, {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": partition, "current_leader_epoch": current_leader_epoch,
                                        "timestamp": timestamp}]}]})
    (t,) = body["topics"]
    (p,) = t["partitions"]
    return p


# ------------------------------------------------------------------------------------ in-process broker

class InProcessBroker:
    """A Broker on its own event loop thread; `call(fn, *args)` runs fn(broker, *args) on that loop."""

    def __init__(self, data_dir: str, fs: Any = None, **settings: str) -> None:
        from broker.broker import Broker
        from broker.config import load_config

        config = load_config(None, {"log.dirs": data_dir, "listeners": "127.0.0.1:0",
                                    "controller.listeners": "127.0.0.1:0", **settings})
        self.broker = Broker(config, fs=fs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="inprocess-broker", daemon=True)
        self.thread.start()
        try:
            self._run(self.broker.start())
        except BaseException:
            self._stop_loop()
            raise

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(IO_TIMEOUT_S)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(self.broker, *args)
        return self._run(run())

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(IO_TIMEOUT_S)
        self.loop.close()

    def stop(self) -> None:
        try:
            self._run(self.broker.stop())
        finally:
            self._stop_loop()


def bump_leader_epoch(broker: Any, topic: str, partition: int, epoch: int) -> None:
    """What a leader election does to the partition this broker leads: a new epoch, recorded in the log."""
    p = broker.partitions[(topic, partition)]
    p.leader_epoch = epoch
    p.log.assign_epoch(epoch)


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One brokerd for a whole test module (tests use unique topic names); stopped at module end."""
    base = tmp_path_factory.mktemp("shared-broker")
    proc = BrokerProcess(str(base / "data"), free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_clean_log(proc)


def assert_clean_log(proc: BrokerProcess) -> None:
    """No handler crashed during the tests: a crash closes the connection too, which a test that
    expects a close would otherwise take for the intended behaviour."""
    text = proc.log_text()
    assert "Traceback" not in text, f"brokerd logged a traceback:\n{text[-4000:]}"


@pytest.fixture
def inprocess_broker(tmp_path: Any) -> Iterator[InProcessBroker]:
    broker = InProcessBroker(str(tmp_path / "inprocess"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def conn(shared_broker: BrokerProcess) -> Iterator[KafkaConnection]:
    with KafkaConnection(shared_broker.bootstrap) as c:
        yield c


# ------------------------------------------------------------------------------------ self-tests

def test_helper_round_trips_a_request(conn: KafkaConnection) -> None:
    body = conn.request(API_API_VERSIONS, 0, {})
    assert body["error_code"] == 0
    assert any(k["api_key"] == API_PRODUCE for k in body["api_keys"])


def test_helper_sees_a_closed_connection(conn: KafkaConnection) -> None:
    conn.send_raw(_SIZE.pack(-5))  # a negative frame size: the broker must drop the connection
    assert conn.wait_closed()
    with pytest.raises(ConnectionClosedError):
        conn.recv_frame(timeout_s=2)
