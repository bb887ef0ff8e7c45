"""A TCP proxy per link on loopback, to cut links without killing processes (isolation faults).

`LinkProxy(name, target_port)` listens on a free 127.0.0.1 port and forwards every accepted
connection to 127.0.0.1:target_port, byte for byte, in both directions.

Two uses:
- a controller link i -> j (node i's `--voters` entry for j points at it): `cut()` cuts every
  connection through it;
- a broker's client listener (the broker advertises the proxy, so clients *and* followers come
  through it) with `classify=True`: the proxy reads each connection's first Kafka request header
  (int32 size, int16 api_key, int16 api_version, int32 correlation_id, int16-length client_id) and
  tags connections whose client_id is `replica-N` (the broker's replica fetcher,
  broker/replica_fetcher.py) with source N; `cut(sources={N, ...})` then cuts only follower traffic
  from those nodes, and clients keep working.

A cut is a black hole, as a network partition is: bytes are dropped, nothing is forwarded in either
direction, new matching connections are accepted and held; the peers see timeouts, not resets.
`heal()` closes every connection that lived through a cut (their byte streams have holes) and
forwards again.

Bounds: at most `CONNECTIONS_MAX` live connections per proxy (more are closed at once); reads are
`CHUNK_BYTES` at a time and a pipe waits for the writer's buffer to drain; the first header must
arrive within `HEADER_TIMEOUT_S`. Runs in the harness's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from dataclasses import dataclass

from tools.chaos.cluster import free_port

CHUNK_BYTES = 64 * 1024
CONNECTIONS_MAX = 256
CONNECT_TIMEOUT_S = 5.0
HEADER_TIMEOUT_S = 10.0
HEADER_PREFIX = struct.Struct(">ihhih")  # size, api_key, api_version, correlation_id, client_id length
REPLICA_CLIENT_ID = re.compile(r"^replica-(\d+)$")
ALL = None


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    source: int | None = None  # replica node id, None for a client
    upstream: asyncio.StreamWriter | None = None
    held: bool = False         # accepted during a cut: never connected upstream

    def close(self) -> None:
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class LinkProxy:
    def __init__(self, name: str, target_port: int, classify: bool = False, port: int | None = None) -> None:
        self.name = name
        self.target_port = target_port
        self.classify = classify
        self.port = port or free_port()
        self.cut_all = False
        self.cut_sources: set[int] = set()
        self.cuts = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    def cut(self, sources: set[int] | None = ALL) -> None:
        """Black-hole every connection (sources None) or those of the given replica sources."""
        if sources is None:
            self.cut_all = True
        else:
            self.cut_sources |= sources
        self.cuts += 1

    def blocked(self, conn: _Conn) -> bool:
        return self.cut_all or (conn.source is not None and conn.source in self.cut_sources)

    def heal(self) -> None:
        doomed = [c for c in self._conns if self.blocked(c) or c.held]
        self.cut_all = False
        self.cut_sources = set()
        for conn in doomed:
            self._conns.discard(conn)
            conn.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= CONNECTIONS_MAX:
            writer.close()
            return
        conn = _Conn(writer)
        first = b""
        if self.classify:
            try:
                first = await asyncio.wait_for(reader.readexactly(HEADER_PREFIX.size), HEADER_TIMEOUT_S)
                length = HEADER_PREFIX.unpack(first)[4]
                client_id = b""
                if length > 0:
                    client_id = await asyncio.wait_for(reader.readexactly(length), HEADER_TIMEOUT_S)
                    first += client_id
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                writer.close()
                return
            match = REPLICA_CLIENT_ID.match(client_id.decode(errors="replace"))
            conn.source = int(match.group(1)) if match else None
        self._conns.add(conn)
        if self.blocked(conn):  # a black hole: hold it, forward nothing, until heal() closes it
            conn.held = True
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target_port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            self._conns.discard(conn)
            writer.close()
            return
        conn.upstream = up_writer
        if first:
            up_writer.write(first)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn) -> None:
        try:
            while True:
                data = await src.read(CHUNK_BYTES)
                if not data:
                    break
                if self.blocked(conn):
                    continue  # dropped on the floor
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            if not self.blocked(conn):  # during a cut the connection stays open (a silent peer); heal() closes it
                self._conns.discard(conn)
                conn.close()
