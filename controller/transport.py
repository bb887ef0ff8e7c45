"""Controller-to-controller transport: the controller listener and one outbound link per peer.

Raft messages are one-way (controller/rpc.py): a node sends every message on its own outbound
connection to the destination's controller listener and receives on its listener; a reply is a
message the other way, on the other node's outbound connection. Raft tolerates loss,
duplication and reordering, so the transport may drop messages; it never blocks the caller.

Outbound (`PeerLink`, one per destination id, started on the first message):

* a send queue of at most `send_queue_max` messages; when full the **oldest** is dropped
  (`dropped` counts them): the newest messages carry the newest terms and anchors;
* connect with `connect_timeout_ms`; on failure or disconnect, retry after an exponential
  backoff from `reconnect_backoff_min_ms` to `reconnect_backoff_max_ms` with ±50% jitter (seeded);
* at most `inflight_max` unacknowledged requests; an acknowledgement older than
  `request_timeout_ms` closes the connection (a peer that stopped reading, SIGSTOP, a dead
  route): queued messages then wait for the reconnect, and the oldest are dropped past the bound;
* the writer is drained when the socket buffer passes `write_high_water_bytes`.

Inbound (`RaftTransport` server on the controller listener, default 127.0.0.1:9093): at most
`connections_max` connections; frames up to `max_frame_bytes` (a snapshot travels whole in one
frame); every request is decoded, handed to the node (`deliver`) and acknowledged in order. A
frame that is too large or does not decode closes that connection (logged); a message for
another node id is acknowledged with INVALID_REQUEST and dropped.

Controller requests (additive): when a `ControllerRequestHandler` is given, frames of its
`api_key` (ControllerRequest, 1001: brokers and admin forwarding, controller/controller_rpc.py)
go to `await handler.handle_request(frame, connection)` and its response frame is written back;
requests on one connection are handled one at a time, in order. When a connection ends,
`handler.connection_closed(connection)` is called (the service's connection-drop grace).

Addresses: voters come from the static map; an observer's address is learned from the sender
address its messages carry (at most `peers_learned_max`, least recently heard evicted), so a
leader can answer observers it has no configuration for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from client.wire.codec import DecodeLimits, ProtocolError
from client.wire.framing import FRAME_BYTES_MAX, FrameDecoder
from controller.controller_rpc import peek_api_key
from controller.raft.messages import Message
from controller.rpc import ERROR_INVALID_REQUEST, ERROR_NONE, decode_ack, decode_message, encode_ack, encode_message

_logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 << 10
CORRELATION_ID_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class TransportConfig:
    send_queue_max: int = 1024              # messages queued per peer; the oldest is dropped beyond
    inflight_max: int = 256                 # unacknowledged requests per peer connection
    request_timeout_ms: int = 2000          # an unacknowledged request this old closes the connection
    connect_timeout_ms: int = 1000
    reconnect_backoff_min_ms: int = 20
    reconnect_backoff_max_ms: int = 1000
    max_frame_bytes: int = FRAME_BYTES_MAX  # 100 MiB: a snapshot is one frame
    connections_max: int = 128              # inbound connections on the controller listener
    peers_learned_max: int = 256            # observer addresses learned from their messages
    write_high_water_bytes: int = 4 << 20   # drain the socket writer above this many buffered bytes
    close_timeout_ms: int = 1000            # close() waits this long for connection tasks

    def __post_init__(self) -> None:
        assert self.send_queue_max > 0 and self.inflight_max > 0 and self.request_timeout_ms > 0
        assert 0 < self.reconnect_backoff_min_ms <= self.reconnect_backoff_max_ms
        assert self.max_frame_bytes > 0 and self.connections_max > 0 and self.peers_learned_max >= 0


class ControllerRequestHandler(Protocol):
    """Serves non-Raft requests on the controller listener (controller/service.py)."""

    api_key: int

    async def handle_request(self, frame: bytes, connection: object) -> bytes: ...

    def connection_closed(self, connection: object) -> None: ...


class PeerLink:
    """The outbound connection to one peer: bounded queue, reconnects, acknowledgements."""

    def __init__(self, transport: RaftTransport, peer_id: int, address: tuple[str, int]) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.address = address
        self.queue: collections.deque[Message] = collections.deque()
        self.dropped = 0
        self.sent = 0
        self.connects = 0
        self.connected = False
        self._inflight: dict[int, float] = {}  # correlation id -> send time (monotonic), oldest first
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closed = False
        self._next_correlation_id = 0

    def enqueue(self, m: Message) -> None:
        if self._closed:
            return
        if len(self.queue) >= self.transport.config.send_queue_max:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(m)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"raft-link-{self.peer_id}")

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing unacknowledged."""
        return not self.queue and not self._inflight

    async def _run(self) -> None:
        cfg = self.transport.config
        backoff_ms = cfg.reconnect_backoff_min_ms
        while not self._closed:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.address, limit=READ_CHUNK_BYTES), cfg.connect_timeout_ms / 1000)
            except (OSError, TimeoutError) as exc:
                _logger.debug("raft link %d -> %s: connect failed: %s", self.transport.node_id, self.address, exc)
                await asyncio.sleep(self._jitter(backoff_ms) / 1000)
                backoff_ms = min(backoff_ms * 2, cfg.reconnect_backoff_max_ms)
                continue
            self.connects += 1
            self.connected = True
            self._writer = writer
            try:
                await self._session(reader, writer)
                backoff_ms = cfg.reconnect_backoff_min_ms
            except (OSError, EOFError, TimeoutError, ProtocolError, asyncio.IncompleteReadError) as exc:
                _logger.debug("raft link %d -> %d: %r", self.transport.node_id, self.peer_id, exc)
            finally:
                self.connected = False
                self._writer = None
                self._inflight.clear()  # lost or delivered: Raft does not care which
                writer.close()
            if not self._closed:
                await asyncio.sleep(self._jitter(backoff_ms) / 1000)
                backoff_ms = min(backoff_ms * 2, cfg.reconnect_backoff_max_ms)

    def _jitter(self, ms: float) -> float:
        return ms * (0.5 + self.transport.rng.random())

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.transport.config
        acks = asyncio.get_running_loop().create_task(self._read_acks(reader))
        timeout_s = cfg.request_timeout_ms / 1000
        try:
            while not self._closed:
                if acks.done():
                    acks.result()
                    raise EOFError("peer closed the connection")
                inflight = self._inflight
                if inflight and time.monotonic() - next(iter(inflight.values())) > timeout_s:
                    raise TimeoutError(f"no acknowledgement within {cfg.request_timeout_ms} ms")
                self._wake.clear()
                while self.queue and len(inflight) < cfg.inflight_max:
                    self._write(writer, self.queue.popleft())
                if writer.transport.get_write_buffer_size() > cfg.write_high_water_bytes:
                    await asyncio.wait_for(writer.drain(), timeout_s)
                if self.queue and len(inflight) < cfg.inflight_max:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout_s / 4)
        finally:
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks

    def _write(self, writer: asyncio.StreamWriter, m: Message) -> None:
        cid = self._next_correlation_id
        self._next_correlation_id = 0 if cid >= CORRELATION_ID_MAX else cid + 1
        transport = self.transport
        writer.write(encode_message(m, cid, transport.advertised, transport.client_id))
        self._inflight[cid] = time.monotonic()
        self.sent += 1

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(self.transport.config.max_frame_bytes)
        try:
            while True:
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    return
                for frame in decoder.feed(data):
                    correlation_id, error_code = decode_ack(frame)
                    if self._inflight.pop(correlation_id, None) is None:
                        raise ProtocolError(f"acknowledgement for unknown correlation id {correlation_id}")
                    if error_code != ERROR_NONE:
                        _logger.warning("raft link %d -> %d: message refused with error %d",
                                        self.transport.node_id, self.peer_id, error_code)
                self._wake.set()
        finally:
            self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def abort(self) -> None:
        """Drop the connection at once (RST), as a crashed process would."""
        self._closed = True
        if self._writer is not None:
            self._writer.transport.abort()
        if self._task is not None:
            self._task.cancel()


class RaftTransport:
    """The controller listener plus the outbound links of one node (see the module docstring)."""

    def __init__(self, node_id: int, peers: Mapping[int, tuple[str, int]], deliver: Callable[[Message], None],
                 config: TransportConfig | None = None, rng: random.Random | None = None,
                 request_handler: ControllerRequestHandler | None = None) -> None:
        self.node_id = node_id
        self.request_handler = request_handler
        self.peers = dict(peers)
        self.deliver = deliver
        self.config = config or TransportConfig()
        self.rng = rng or random.Random()
        self.client_id = f"replog-raft-{node_id}"
        self.advertised: tuple[str, int] = ("127.0.0.1", 0)
        self.links: dict[int, PeerLink] = {}
        self.learned: collections.OrderedDict[int, tuple[str, int]] = collections.OrderedDict()
        self.unroutable = 0  # messages for a destination with no known address
        self.received = 0
        frame_max = self.config.max_frame_bytes  # a snapshot's bytes or a fetch's records may fill a frame
        self._limits = DecodeLimits(bytes_max=frame_max, records_bytes_max=frame_max)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._conn_tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, advertised_host: str | None = None) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True,
                                                  limit=READ_CHUNK_BYTES)
        bound = self._server.sockets[0].getsockname()
        self.advertised = (advertised_host or bound[0], bound[1])
        return bound[0], bound[1]

    # -- sending -----------------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        """Queue `m` for its destination; never blocks, may drop (see the module docstring)."""
        dst = m.dst
        address = self.peers.get(dst) or self.learned.get(dst)
        if address is None:
            self.unroutable += 1
            return
        link = self.links.get(dst)
        if link is not None and link.address != address:  # an observer came back elsewhere
            self.links.pop(dst)
            asyncio.get_running_loop().create_task(link.close())
            link = None
        if link is None:
            link = self.links[dst] = PeerLink(self, dst, address)
        link.enqueue(m)

    def dropped(self) -> int:
        return sum(link.dropped for link in self.links.values())

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every link has sent and had acknowledged what it queued (bounded)."""
        deadline = time.monotonic() + timeout_s
        while not all(link.idle or (not link.connected and not link.queue) for link in self.links.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # -- receiving -----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.config.connections_max:
            _logger.warning("controller %d: refusing connection, %d open", self.node_id, len(self._connections))
            writer.close()
            return
        if task is not None:
            self._conn_tasks.add(task)
        self._connections.add(writer)
        decoder = FrameDecoder(self.config.max_frame_bytes)
        try:
            while True:
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    break
                for frame in decoder.feed(data):
                    handler = self.request_handler
                    if handler is not None and peek_api_key(frame) == handler.api_key:
                        writer.write(await handler.handle_request(bytes(frame), writer))
                    else:
                        writer.write(self._receive(frame))
                if writer.transport.get_write_buffer_size() > self.config.write_high_water_bytes:
                    await writer.drain()
        except ProtocolError as exc:
            _logger.warning("controller %d: closing %s: %s", self.node_id, writer.get_extra_info("peername"), exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels connections that outlive their close; end quietly (asyncio's stream
            # callback would log a cancelled connection task as an error)
            pass
        finally:
            self._connections.discard(writer)
            if task is not None:
                self._conn_tasks.discard(task)
            writer.close()
            if self.request_handler is not None:
                self.request_handler.connection_closed(writer)

    def _receive(self, frame: bytes | memoryview) -> bytes:
        header, m, address = decode_message(frame, self._limits)
        if m.dst != self.node_id:
            _logger.warning("controller %d: dropping a message for node %d", self.node_id, m.dst)
            return encode_ack(header.correlation_id, ERROR_INVALID_REQUEST)
        if m.src not in self.peers and m.src != self.node_id:
            self._learn(m.src, address)
        self.received += 1
        self.deliver(m)
        return encode_ack(header.correlation_id)

    def _learn(self, node_id: int, address: tuple[str, int]) -> None:
        learned = self.learned
        learned[node_id] = address
        learned.move_to_end(node_id)
        while len(learned) > self.config.peers_learned_max:
            learned.popitem(last=False)

    # -- shutdown ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop listening, close every connection (queued messages are dropped)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        await asyncio.gather(*(link.close() for link in self.links.values()))
        self.links.clear()
        tasks = list(self._conn_tasks)
        if tasks:  # closed writers end their reads; cancel what has not ended by the deadline
            _done, late = await asyncio.wait(tasks, timeout=self.config.close_timeout_ms / 1000)
            for task in late:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), self.config.close_timeout_ms / 1000)

    def abort(self) -> None:
        """A crash: reset every connection, stop listening, no goodbyes."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        for link in self.links.values():
            link.abort()
