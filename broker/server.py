"""The client listener: TCP connections speaking Kafka's framing, requests answered in order.

Per connection: frames are decoded incrementally (max frame size = `socket.request.max.bytes`)
and responses go out in request order. Each request is handled before the next one starts
(Kafka mutes a channel while a request is in flight), with one exception: consecutive Produce
requests are pipelined. A Produce handler appends synchronously before its first await (the
acks=all wait for the high watermark), and handler tasks start in creation order, so appends
keep the request order (idempotent sequences stay in order) while up to
PIPELINED_PRODUCE_MAX requests wait for replication together; without this one acks=all round
trip per connection bounds a client's throughput and small batches queue for ~100 ms. Any other
request waits until every earlier one has been answered. Past the limit the connection is not
read (TCP backpressure). Responses are written with `writelines` (record data is not copied into
one buffer) and the writer is drained when the transport buffer passes a high-water mark.

Bad input: a frame that is too large, a body that does not decode, or an unsupported version of
any API other than ApiVersions closes the connection and is logged once; an unsupported
ApiVersions version gets Kafka's error-35 fallback answer. A handler bug is logged with its
traceback and closes that connection only; the process and other connections are unaffected.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from client.wire.codec import ProtocolError
from client.wire.framing import FrameDecoder
from client.wire.protocol import (
    RequestHeader,
    UnsupportedVersionError,
    decode_request,
    encode_api_versions_fallback,
    encode_response_chunks,
)

log = logging.getLogger(__name__)

API_VERSIONS_KEY = 18
PRODUCE_KEY = 0
PIPELINED_PRODUCE_MAX = 5   # Produce requests in progress at once per connection (clients send <= 5)
READ_CHUNK_BYTES = 256 << 10
WRITE_HIGH_WATER_BYTES = 4 << 20
STOP_TASKS_TIMEOUT_S = 5.0  # stop() waits this long for cancelled connection tasks to end

# handler(connection, header, body) -> response body, or None for no response (Produce acks=0)
Handler = Callable[["ClientConnection", RequestHeader, dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class ApiSpec:
    min_version: int
    max_version: int
    handler: Handler


class ClientConnection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.decoder = FrameDecoder(server.max_frame_bytes)
        self.closed = False
        self._pipeline: collections.deque[asyncio.Task[list[Any] | None]] = collections.deque()

    async def run(self) -> None:
        try:
            while not self.closed:
                data = await self.reader.read(READ_CHUNK_BYTES)
                if not data:
                    break
                for frame in self.decoder.feed(data):
                    await self._handle_frame(frame)
                    if self.closed:
                        break
                await self._maybe_drain()
        except ProtocolError as exc:
            log.warning("closing %s: protocol error: %s", self.peer, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.close()
            for task in self._pipeline:
                task.cancel()

    async def _handle_frame(self, frame: memoryview | bytes) -> None:
        specs = self.server.apis
        try:
            header, body = decode_request(frame, supported=self.server.advertised)
        except UnsupportedVersionError as exc:
            if exc.header is not None and exc.header.api_key == API_VERSIONS_KEY:
                spec = specs[API_VERSIONS_KEY]
                self._write([encode_api_versions_fallback(exc.header.correlation_id, spec.min_version,
                                                          spec.max_version, framed=True)])
                return
            raise
        spec = specs.get(header.api_key)
        if spec is None:  # decode_request only accepts advertised APIs; keep the invariant loud
            raise ProtocolError(f"api key {header.api_key} not served")
        if header.api_key == PRODUCE_KEY:
            while len(self._pipeline) >= PIPELINED_PRODUCE_MAX and not self.closed:
                await asyncio.wait([self._pipeline[0]])
            task = asyncio.get_running_loop().create_task(self._respond(spec, header, body))
            self._pipeline.append(task)
            task.add_done_callback(self._write_done)
            return
        while self._pipeline and not self.closed:  # everything earlier is answered first
            await asyncio.wait(list(self._pipeline))
        chunks = await self._respond(spec, header, body)
        if chunks is not None and not self.closed:
            self._write(chunks)
        await self._maybe_drain()

    async def _respond(self, spec: ApiSpec, header: RequestHeader, body: dict[str, Any]) -> list[Any] | None:
        try:
            response = await spec.handler(self, header, body)
            # encoded here so that a response the schema cannot carry is a handler bug like any other
            return None if response is None or self.closed else encode_response_chunks(
                header, header.api_key, header.api_version, response, framed=True)
        except Exception:  # a bug: this connection goes, the broker stays
            log.exception("handler for api %d v%d failed; closing %s", header.api_key, header.api_version,
                          self.peer)
            self.close()
            return None

    def _write_done(self, _task: asyncio.Task[list[Any] | None]) -> None:
        """Write the answers of finished pipelined requests, in request order."""
        while self._pipeline and self._pipeline[0].done():
            task = self._pipeline.popleft()
            if task.cancelled() or self.closed:
                continue
            chunks = task.result()
            if chunks is not None:
                self._write(chunks)

    async def _maybe_drain(self) -> None:
        if not self.closed and self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER_BYTES:
            await self.writer.drain()

    def _write(self, chunks: list[Any]) -> None:
        if not self.closed:
            self.writer.writelines(chunks)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            self.server.connections.discard(self)


class Server:
    def __init__(self, apis: dict[int, ApiSpec], *, max_frame_bytes: int, max_connections: int) -> None:
        self.apis = apis
        self.advertised = {key: (spec.min_version, spec.max_version) for key, spec in apis.items()}
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.connections: set[ClientConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True,
                                                  limit=READ_CHUNK_BYTES)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.max_connections:
            log.warning("refusing connection: %d connections open", len(self.connections))
            writer.close()
            return
        connection = ClientConnection(self, reader, writer)
        self.connections.add(connection)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await connection.run()
        except asyncio.CancelledError:
            # shutdown (stop() or the loop's end): end quietly. Python 3.11's start_server
            # done-callback calls task.exception() on a cancelled task and logs that as an error.
            connection.close()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close()
        # end every connection task (idle in a read, or waiting in a handler such as a long poll)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TASKS_TIMEOUT_S)
        if self._server is not None:
            await self._server.wait_closed()
