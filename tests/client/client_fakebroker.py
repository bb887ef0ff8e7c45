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
  connection wait behind it (answers stay in request order), so several requests are in flight.

`produced` records (producer_id, producer_epoch, base_sequence, record count, appended) for every
Produce partition seen, so tests can check that a retry reuses its sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

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
        raise AssertionError(f"api {api_key} not scripted")

    def _metadata(self, body: dict[str, Any]) -> dict[str, Any]:
        names = list(self.topics) if body["topics"] is None else [t["name"] for t in body["topics"]]
        topics = []
        for name in names:
            if name not in self.topics:
                topics.append({"error_code": 3, "name": name, "partitions": []})
                continue
            topics.append({"error_code": 0, "name": name, "partitions": [
                {"error_code": 0, "partition_index": p, "leader_id": self.node_id, "leader_epoch": self.leader_epoch,
                 "replica_nodes": [self.node_id], "isr_nodes": [self.node_id]} for p in range(self.topics[name])]})
        port = self.port if self.advertised_port is None else self.advertised_port
        return {"brokers": [{"node_id": self.node_id, "host": "127.0.0.1", "port": port}],
                "cluster_id": "fake", "controller_id": self.node_id, "topics": topics}

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
                if isinstance(action, tuple) and action[0] == "hold":
                    outcome, action = "hold", action[1]
                appended = action in ("ok", "drop") or isinstance(action, tuple)
                self.produced.append((header.producer_id, header.producer_epoch, header.base_sequence,
                                      header.records_count, appended))
                base = self._append(tp, part["records"]) if appended else -1
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
                if self.fetch_errors:
                    out["error_code"] = self.fetch_errors.popleft()
                elif part["current_leader_epoch"] not in (-1, self.leader_epoch):
                    out["error_code"] = 74 if part["current_leader_epoch"] < self.leader_epoch else 75
                else:
                    chunks = [b for b in self.logs.get(tp, []) if read_header(b).last_offset >= part["fetch_offset"]]
                    out["records"] = b"".join(chunks)
                parts.append(out)
            responses.append({"topic": topic["topic"], "partitions": parts})
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
