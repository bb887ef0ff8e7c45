"""A raw asyncio Kafka-protocol client for the chaos tests, built on client.wire only.

Deliberately independent of replog's own client library (in progress): requests are encoded with
`client.wire.protocol.encode_request`, batches with `client.wire.records.build_batch`, and answers
decoded with `decode_response`. Three pieces:

* `RawConnection`: one TCP connection, pipelined requests (responses come back in request order,
  matched by correlation id); losing the connection fails every pending request with
  `ConnectionLost`, after which the caller cannot know whether the broker handled them.
* `RawProducer` + `History`: an acks=all produce load on several partitions with several requests
  in flight, recording each batch as `invoke` then `ok` (base offset known), `fail` (the broker
  answered with an error that rejects a batch before appending it) or `info` (unknown outcome:
  the connection went away after sending, a timeout, or an error that may follow an append),
  as docs RELIABILITY.md defines the history. Values are unique, `"{producer}-{seq}"`.
* `fetch_log`: the whole readable log of a partition through Fetch, as `StoredBatch`es.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from client.wire.codec import ProtocolError
from client.wire.compression import CODEC_LZ4, CODEC_NONE
from client.wire.errors import ErrorCode
from client.wire.protocol import decode_response, encode_request
from client.wire.records import build_batch, decode_records, iter_batch_headers

PRODUCE_VERSION = 8
FETCH_VERSION = 11
CREATE_TOPICS_VERSION = 4
REQUEST_TIMEOUT_S = 10.0
CONNECT_RETRY_S = 0.02  # poll interval while the broker is down
_SIZE = struct.Struct(">i")
_CORRELATION = struct.Struct(">i")

# Produce errors that mean "rejected before anything was appended" (a `fail`); any other error is `info`.
DEFINITE_PRODUCE_ERRORS = frozenset({
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD,
    ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.INVALID_REQUIRED_ACKS, ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.INVALID_TIMESTAMP, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.NOT_ENOUGH_REPLICAS,
})


class ConnectionLost(ConnectionError):
    """The connection closed (or was closed) before this request was answered."""


class RawConnection:
    """One connection with pipelined requests; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_id: str) -> None:
        self.reader = reader
        self.writer = writer
        self.client_id = client_id
        self.closed = False
        self._next_correlation = 1
        self._pending: collections.deque[tuple[int, int, int, asyncio.Future[dict[str, Any]]]] = collections.deque()
        self._reader_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(cls, host: str, port: int, client_id: str = "chaos", timeout_s: float = 5.0) -> RawConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        return cls(reader, writer, client_id)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def send(self, api_key: int, version: int, body: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Write one request now; the future resolves to the decoded response body."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(ConnectionLost("connection already closed"))
            return future
        correlation = self._next_correlation
        self._next_correlation = (correlation + 1) & 0x7FFFFFFF
        frame = encode_request(api_key, version, correlation, self.client_id, body, framed=True)
        self._pending.append((correlation, api_key, version, future))
        self.writer.write(frame)
        return future

    async def request(self, api_key: int, version: int, body: dict[str, Any],
                      timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        future = self.send(api_key, version, body)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            self._fail_all(ConnectionLost(f"no answer within {timeout_s}s"))
            raise

    async def _read_loop(self) -> None:
        error: BaseException = ConnectionLost("connection closed by the broker")
        try:
            while True:
                size = _SIZE.unpack(await self.reader.readexactly(4))[0]
                payload = await self.reader.readexactly(size)
                if not self._pending:
                    raise ConnectionLost("a response nobody asked for")
                correlation, api_key, version, future = self._pending.popleft()
                got = _CORRELATION.unpack_from(payload, 0)[0]
                if got != correlation:
                    raise ConnectionLost(f"response correlation id {got}, expected {correlation}")
                _cid, body = decode_response(payload, api_key, version)
                if not future.done():
                    future.set_result(body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            error = exc if isinstance(exc, ConnectionLost) else ConnectionLost(str(exc) or type(exc).__name__)
        except (ProtocolError, KeyError) as exc:  # an answer that does not decode: the broker's bug
            error = ConnectionLost(f"undecodable response: {exc}")
        except asyncio.CancelledError:
            error = ConnectionLost("connection closed by the client")
        finally:
            self._fail_all(error)

    def _fail_all(self, error: BaseException) -> None:
        self.closed = True
        while self._pending:
            future = self._pending.popleft()[3]
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: nobody may be awaiting it any more
        with contextlib.suppress(Exception):
            self.writer.close()

    async def close(self) -> None:
        self._fail_all(ConnectionLost("connection closed by the client"))
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def create_topic(conn: RawConnection, name: str, partitions: int, configs: dict[str, str] | None = None) -> int:
    body = {"topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1,
                        "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}],
            "timeout_ms": 5000}
    response = await conn.request(19, CREATE_TOPICS_VERSION, body)
    return response["topics"][0]["error_code"]


def produce_body(topic: str, batches: dict[int, bytes], acks: int = -1) -> dict[str, Any]:
    return {"acks": acks, "timeout_ms": 5000, "transactional_id": None,
            "topic_data": [{"name": topic, "partition_data": [{"index": p, "records": b} for p, b in batches.items()]}]}


# --- history ------------------------------------------------------------------------------------

@dataclass
class BatchOp:
    """One produced batch: its values, and what the client learnt about it."""

    producer: str
    partition: int
    values: tuple[str, ...]
    codec: str
    outcome: str = "invoke"  # invoke -> ok | fail | info
    base_offset: int = -1
    error: int = 0
    invoked_at: float = field(default_factory=time.monotonic)
    completed_at: float = 0.0


@dataclass
class History:
    ops: list[BatchOp] = field(default_factory=list)
    last_ack_at: float = 0.0  # time.monotonic() of the latest `ok`

    def by_outcome(self, outcome: str) -> list[BatchOp]:
        return [op for op in self.ops if op.outcome == outcome]

    @property
    def acked_records(self) -> int:
        return sum(len(op.values) for op in self.ops if op.outcome == "ok")

    @property
    def acked_batches(self) -> int:
        return sum(1 for op in self.ops if op.outcome == "ok")


# --- producer -----------------------------------------------------------------------------------

class RawProducer:
    """acks=all load from one connection at a time, in bursts of `max_in_flight` pipelined requests.

    Each request carries batches for 1..`partitions_per_request_max` distinct partitions; each
    batch has 1..`records_max` records, codec none or lz4 at random. A lost connection makes every
    unanswered batch `info`; the producer reconnects (polling while the broker is down) until
    `stop()`. Between bursts it pauses a random `pause_s` (bounds the data volume; not a sync).
    Unknown-outcome batches are never re-sent, so a value in the log twice is a broker bug.
    """

    def __init__(self, name: str, host: str, port: int, topic: str, partitions: int, history: History,
                 rng: random.Random, *, max_in_flight: int = 4, records_max: int = 40,
                 partitions_per_request_max: int = 3, pause_s: tuple[float, float] = (0.0, 0.0)) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.rng = rng
        self.max_in_flight = max_in_flight
        self.records_max = records_max
        self.partitions_per_request_max = partitions_per_request_max
        self.pause_s = pause_s
        self.seq = 0
        self.conn: RawConnection | None = None
        self.connections = 0
        self._stopping = asyncio.Event()
        self._outstanding: set[asyncio.Future[dict[str, Any]]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._outstanding)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                conn = await self._connect()
                if conn is None:
                    break
                while not conn.closed and not self._stopping.is_set():
                    # one burst: max_in_flight requests written back to back (pipelined), then wait
                    # for their answers, then a short random pause (the load's pacing)
                    for _ in range(self.max_in_flight):
                        if conn.closed:
                            break
                        self._send_one(conn)
                    await self._drain()
                    pause = self.rng.uniform(*self.pause_s)
                    if pause > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stopping.wait(), pause)
                await self._drain()
                await conn.close()
        finally:
            if self.conn is not None:
                await self.conn.close()

    async def _drain(self, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """Wait until every outstanding request is answered or failed (no new ones are sent)."""
        if self._outstanding:
            await asyncio.wait(list(self._outstanding), timeout=timeout_s)
        if self._outstanding and self.conn is not None:  # still unanswered: give up on them (info)
            await self.conn.close()
            await asyncio.wait(list(self._outstanding), timeout=timeout_s)

    async def _connect(self) -> RawConnection | None:
        while not self._stopping.is_set():
            try:
                self.conn = await RawConnection.open(self.host, self.port, client_id=self.name)
                self.connections += 1
                return self.conn
            except (OSError, TimeoutError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), CONNECT_RETRY_S)
        return None

    def _next_batch(self, partition: int) -> tuple[BatchOp, bytes]:
        count = self.rng.randint(1, self.records_max)
        values = tuple(f"{self.name}-{self.seq + i}" for i in range(count))
        self.seq += count
        codec = self.rng.choice((CODEC_NONE, CODEC_LZ4))
        now = int(time.time() * 1000)
        batch = build_batch([(None, v.encode(), now, None) for v in values], compression=codec)
        return BatchOp(self.name, partition, values, "lz4" if codec == CODEC_LZ4 else "none"), batch

    def _send_one(self, conn: RawConnection) -> None:
        chosen = self.rng.sample(range(self.partitions), self.rng.randint(1, min(self.partitions_per_request_max,
                                                                                 self.partitions)))
        ops: dict[int, BatchOp] = {}
        batches: dict[int, bytes] = {}
        for partition in chosen:
            ops[partition], batches[partition] = self._next_batch(partition)
        self.history.ops.extend(ops.values())
        future = conn.send(0, PRODUCE_VERSION, produce_body(self.topic, batches))
        self._outstanding.add(future)
        timeout = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT_S, self._timed_out, conn, future)
        future.add_done_callback(lambda f: self._completed(f, ops, timeout))

    def _timed_out(self, conn: RawConnection, future: asyncio.Future[dict[str, Any]]) -> None:
        if not future.done():
            conn._fail_all(ConnectionLost(f"no answer within {REQUEST_TIMEOUT_S}s"))

    def _completed(self, future: asyncio.Future[dict[str, Any]], ops: dict[int, BatchOp],
                   timeout: asyncio.TimerHandle) -> None:
        timeout.cancel()
        self._outstanding.discard(future)
        now = time.monotonic()
        if future.cancelled() or future.exception() is not None:
            for op in ops.values():
                op.outcome, op.completed_at = "info", now
            return
        answered = {(t["name"], p["index"]): p for t in future.result()["responses"] for p in t["partition_responses"]}
        for partition, op in ops.items():
            op.completed_at = now
            result = answered.get((self.topic, partition))
            if result is None:
                op.outcome = "info"  # the broker did not say: unknown
            elif result["error_code"] == 0:
                op.outcome, op.base_offset = "ok", result["base_offset"]
                self.history.last_ack_at = now
            else:
                op.error = result["error_code"]
                op.outcome = "fail" if op.error in DEFINITE_PRODUCE_ERRORS else "info"


# --- reading the log back -----------------------------------------------------------------------

@dataclass(frozen=True)
class StoredBatch:
    base_offset: int
    last_offset: int
    values: tuple[str | None, ...]
    offsets: tuple[int, ...]
    crc_valid: bool = True


async def fetch_log(conn: RawConnection, topic: str, partition: int, max_bytes: int = 1 << 20) -> tuple[
        list[StoredBatch], int]:
    """Every batch below the high watermark, from offset 0, through Fetch; returns (batches, hw)."""
    batches: list[StoredBatch] = []
    offset = 0
    while True:
        body = {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": max_bytes, "isolation_level": 0,
                "session_id": 0, "session_epoch": -1,
                "topics": [{"topic": topic, "partitions": [{"partition": partition, "fetch_offset": offset,
                                                            "partition_max_bytes": max_bytes}]}]}
        response = await conn.request(1, FETCH_VERSION, body)
        data = response["responses"][0]["partitions"][0]
        if data["error_code"]:
            raise AssertionError(f"fetch {topic}-{partition}@{offset}: error {ErrorCode(data['error_code']).name}")
        hw = data["high_watermark"]
        records = bytes(data["records"] or b"")
        progressed = False
        for pos, header in iter_batch_headers(records):
            if pos + header.total_size > len(records):
                break  # a partial batch at the end of a size-limited answer
            if header.last_offset < offset:
                continue
            decoded = decode_records(records, pos)  # verifies the CRC
            batches.append(StoredBatch(header.base_offset, header.last_offset,
                                       tuple(r.value.decode() if r.value is not None else None for r in decoded),
                                       tuple(r.offset for r in decoded)))
            offset = header.last_offset + 1
            progressed = True
        if offset >= hw:
            return batches, hw
        if not progressed:
            raise AssertionError(f"fetch {topic}-{partition}@{offset}: no whole batch below hw {hw}")
