"""A scripted in-process Kafka broker for client tests: deterministic faults the real brokerd cannot
produce on demand (an error code on the Nth Produce, a connection dropped after a request, a request
never answered, a leader epoch bump).

It speaks the wire protocol through client.wire (decode_request / encode_response), advertises the
same versions as brokerd, leads every partition of its topics, and keeps an in-memory log per
partition so Produce answers carry real offsets and Fetch serves them back. Each Produce partition
takes the next action from `produce_actions` (default "ok"):

- "ok": append and answer NONE;
- an ErrorCode: answer that code without appending;
- ("append", code): append, then answer `code` (an after-append error such as
  NOT_ENOUGH_REPLICAS_AFTER_APPEND);
- "drop": append, then close the connection without answering;
- "hang": read the request and never answer;
- ("hold", code): answer `code`, but only when the test calls `release()`; later answers on that
  connection wait behind it (answers stay in request order), so several requests are in flight;
- ("move", node_id, action): do `action`, and hand the partition's leadership to `node_id` in the
  next leader epoch before answering (a failover right behind this request).

`produced` records (producer_id, producer_epoch, base_sequence, record count, appended) for every
Produce partition seen, so tests can check that a retry reuses its sequence numbers.

Several fakes can form one cluster (`share_state(a, b, ...)`): Metadata lists every member, each
partition has one leader and leader epoch in `leaders` (default: the fake itself, epoch
`leader_epoch`), and the log and producer state are shared as if replicated. A member that does not
lead a partition answers Produce and Fetch for it with NOT_LEADER_OR_FOLLOWER (a Fetch with a newer
epoch than it knows gets UNKNOWN_LEADER_EPOCH, an older one FENCED_LEADER_EPOCH). With `dedup` on, a
Produce whose (producer id, base sequence) is already in the log is answered with the first
append's offset and not appended again, as a Kafka leader does for its producer's last 5 batches,
and one that does not follow the producer's last sequence gets OUT_OF_ORDER_SEQUENCE_NUMBER
(one record per batch assumed).
`partition_overrides` replaces fields of a partition's Metadata entry (e.g. leader -1 with
LEADER_NOT_AVAILABLE); ListOffsets answers from the log (earliest 0, latest its end).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from client.wire.errors import ErrorCode
from client.wire.framing import FrameDecoder
from client.wire.protocol import decode_request, encode_response
from client.wire.records import read_header, set_base_offset

ADVERTISED = {0: (3, 8), 1: (4, 12), 2: (1, 5), 3: (4, 8), 18: (0, 3), 22: (0, 1), 23: (2, 3)}


class FakeBroker:
    def __init__(self, topics: dict[str, int] | None = None, node_id: int = 1,
                 advertised: dict[int, tuple[int, int]] | None = None) -> None:
        self.topics = topics or {"t": 1}
        self.advertised = advertised or ADVERTISED
        self.node_id = node_id
        self.leader_epoch = 0
        self.produce_actions: deque[Any] = deque()
        self.fetch_errors: deque[int] = deque()
        self.produced: list[tuple[int, int, int, int, bool]] = []
        self.requests: list[tuple[int, int]] = []  # (api_key, api_version)
        self.logs: dict[tuple[str, int], list[bytes]] = {}
        self.next_offset: dict[tuple[str, int], int] = {}
        self.next_producer_id = 1000
        self.peers: dict[int, FakeBroker] = {node_id: self}
        self.leaders: dict[tuple[str, int], tuple[int, int]] = {}  # tp -> (leader id, leader epoch)
        self.dedup = False
        self.sequences: dict[tuple[tuple[str, int], int, int], int] = {}  # (tp, pid, base seq) -> base offset
        self.partition_overrides: dict[tuple[str, int], dict[str, Any]] = {}
        self.port = 0
        self.advertised_port: int | None = None  # set to send clients to another (e.g. dead) address
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._held: dict[asyncio.StreamWriter, list[bytes]] = {}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, api_key: int) -> int:
        return sum(1 for key, _ in self.requests if key == api_key)

    async def start(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def leader(self, tp: tuple[str, int]) -> tuple[int, int]:
        """(leader id, leader epoch) of `tp`."""
        return self.leaders.get(tp, (self.node_id, self.leader_epoch))

    def move_leader(self, tp: tuple[str, int], node_id: int) -> None:
        """A failover: `node_id` leads `tp` from now on, in the next leader epoch."""
        self.leaders[tp] = (node_id, self.leader(tp)[1] + 1)

    def release(self) -> None:
        """Send every held answer, in order, and stop holding."""
        for writer, frames in self._held.items():
            for frame in frames:
                writer.write(frame)
        self._held.clear()

    def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for frame in decoder.feed(data):
                    header, body = decode_request(frame, supported=self.advertised)
                    self.requests.append((header.api_key, header.api_version))
                    response = self._handle(header.api_key, body)
                    if response == "drop":
                        writer.close()
                        return
                    if response == "hang":
                        continue
                    if response is None:
                        continue
                    if header.api_key == 1 and not any(
                            len(p["records"]) for t in response["responses"] for p in t["partitions"]):
                        await asyncio.sleep(0.02)  # a short long-poll, so idle fetchers do not spin
                    if isinstance(response, tuple):  # ("hold", body)
                        self._held.setdefault(writer, [])
                        response = response[1]
                    frame = encode_response(header, header.api_key, header.api_version, response, framed=True)
                    if writer in self._held:
                        self._held[writer].append(frame)
                    else:
                        writer.write(frame)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _handle(self, api_key: int, body: dict[str, Any]) -> Any:
        if api_key == 18:
            ranges = sorted(self.advertised.items())
            return {"error_code": 0, "throttle_time_ms": 0, "api_keys": [
                {"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in ranges]}
        if api_key == 3:
            return self._metadata(body)
        if api_key == 22:
            self.next_producer_id += 1
            return {"throttle_time_ms": 0, "error_code": 0, "producer_id": self.next_producer_id, "producer_epoch": 0}
        if api_key == 0:
            return self._produce(body)
        if api_key == 1:
            return self._fetch(body)
        if api_key == 2:
            return self._list_offsets(body)
        raise AssertionError(f"api {api_key} not scripted")

    def _metadata(self, body: dict[str, Any]) -> dict[str, Any]:
        names = list(self.topics) if body["topics"] is None else [t["name"] for t in body["topics"]]
        topics = []
        for name in names:
            if name not in self.topics:
                topics.append({"error_code": 3, "name": name, "partitions": []})
                continue
            partitions = []
            for p in range(self.topics[name]):
                leader, epoch = self.leader((name, p))
                replicas = sorted(self.peers)
                partitions.append({"error_code": 0, "partition_index": p, "leader_id": leader, "leader_epoch": epoch,
                                   "replica_nodes": replicas, "isr_nodes": replicas, "offline_replicas": [],
                                   **self.partition_overrides.get((name, p), {})})
            topics.append({"error_code": 0, "name": name, "partitions": partitions})
        brokers = [{"node_id": b.node_id, "host": "127.0.0.1",
                    "port": b.port if b.advertised_port is None else b.advertised_port} for b in self.peers.values()]
        return {"brokers": brokers, "cluster_id": "fake", "controller_id": self.node_id, "topics": topics}

    def _append(self, tp: tuple[str, int], records: Any) -> int:
        batch = bytearray(records)
        base = self.next_offset.get(tp, 0)
        set_base_offset(batch, base)
        self.logs.setdefault(tp, []).append(bytes(batch))
        self.next_offset[tp] = base + read_header(batch).last_offset_delta + 1
        return base

    def _produce(self, body: dict[str, Any]) -> Any:
        outcome: Any = None
        responses = []
        for topic in body["topic_data"]:
            parts = []
            for part in topic["partition_data"]:
                tp = (topic["name"], part["index"])
                header = read_header(part["records"])
                action = self.produce_actions.popleft() if self.produce_actions else "ok"
                if self.leader(tp)[0] != self.node_id:
                    action = ErrorCode.NOT_LEADER_OR_FOLLOWER
                elif isinstance(action, tuple) and action[0] == "move":
                    self.move_leader(tp, action[1])
                    action = action[2]
                key = (tp, header.producer_id, header.base_sequence)
                if self.dedup and action in ("ok", "drop") and key in self.sequences:
                    self.produced.append((header.producer_id, header.producer_epoch, header.base_sequence,
                                          header.records_count, False))
                    parts.append({"index": part["index"], "error_code": 0, "base_offset": self.sequences[key],
                                  "log_append_time_ms": -1, "log_start_offset": 0})
                    continue
                if self.dedup and action in ("ok", "drop") and not self._in_sequence(tp, header):
                    action = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
                if isinstance(action, tuple) and action[0] == "hold":
                    outcome, action = "hold", action[1]
                    action = "ok" if action == ErrorCode.NONE else action
                appended = action in ("ok", "drop") or isinstance(action, tuple)
                self.produced.append((header.producer_id, header.producer_epoch, header.base_sequence,
                                      header.records_count, appended))
                base = self._append(tp, part["records"]) if appended else -1
                if appended and header.producer_id >= 0:
                    self.sequences[key] = base
                code = 0 if action in ("ok", "drop", "hang") else action[1] if isinstance(action, tuple) else action
                if action in ("drop", "hang"):
                    outcome = action
                parts.append({"index": part["index"], "error_code": int(code), "base_offset": base if not code else -1,
                              "log_append_time_ms": -1, "log_start_offset": 0})
            responses.append({"name": topic["name"], "partition_responses": parts})
        answer = {"responses": responses, "throttle_time_ms": 0}
        if outcome == "hold":
            return ("hold", answer)
        if outcome is not None:
            return outcome
        if body["acks"] == 0:
            return None
        return answer

    def _fetch(self, body: dict[str, Any]) -> dict[str, Any]:
        responses = []
        for topic in body["topics"]:
            parts = []
            for part in topic["partitions"]:
                tp = (topic["topic"], part["partition"])
                end = self.next_offset.get(tp, 0)
                out = {"partition_index": tp[1], "error_code": 0, "high_watermark": end, "last_stable_offset": end,
                       "log_start_offset": 0, "records": b""}
                leader, epoch = self.leader(tp)
                if self.fetch_errors:
                    out["error_code"] = self.fetch_errors.popleft()
                elif part["current_leader_epoch"] not in (-1, epoch):
                    out["error_code"] = 74 if part["current_leader_epoch"] < epoch else 75
                elif leader != self.node_id:
                    out["error_code"] = ErrorCode.NOT_LEADER_OR_FOLLOWER
                else:
                    chunks = [b for b in self.logs.get(tp, []) if read_header(b).last_offset >= part["fetch_offset"]]
                    out["records"] = b"".join(chunks)
                parts.append(out)
            responses.append({"topic": topic["topic"], "partitions": parts})
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}

    def _in_sequence(self, tp: tuple[str, int], header: Any) -> bool:
        """The batch's base sequence follows the producer's last one in the log (or it is its first)."""
        last = max((seq for (t, pid, seq) in self.sequences if t == tp and pid == header.producer_id), default=None)
        return last is None or header.base_sequence == last + 1

    def _list_offsets(self, body: dict[str, Any]) -> dict[str, Any]:
        topics = []
        for topic in body["topics"]:
            parts = []
            for part in topic["partitions"]:
                tp = (topic["name"], part["partition_index"])
                code = 0 if self.leader(tp)[0] == self.node_id else ErrorCode.NOT_LEADER_OR_FOLLOWER
                offset = 0 if part["timestamp"] == -2 else self.next_offset.get(tp, 0)
                parts.append({"partition_index": tp[1], "error_code": int(code), "timestamp": -1,
                              "offset": offset if not code else -1, "leader_epoch": self.leader(tp)[1]})
            topics.append({"name": topic["name"], "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}


def share_state(*brokers: FakeBroker) -> None:
    """Make `brokers` one cluster (module docstring): peers, leaders, log and producer state shared."""
    first = brokers[0]
    peers = {b.node_id: b for b in brokers}
    for broker in brokers:
        broker.peers = peers
        broker.leaders, broker.logs, broker.next_offset = first.leaders, first.logs, first.next_offset
        broker.sequences = first.sequences
