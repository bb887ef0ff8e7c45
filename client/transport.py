"""The asyncio adapter around a sans-IO `Connection`: open, write frames, read loop, close.

`BrokerConnection` owns one TCP connection (an asyncio.Protocol, so received bytes go straight
into the connection core without a StreamReader copy) and turns in-flight requests into futures:

- `open()` connects within `connect_timeout_ms` or raises KafkaConnectionError.
- `send()` writes one request now (the caller checked `can_send`) and returns a future of the
  decoded response body (None for `expect_response=False`). `request()` first waits, bounded by
  the request timeout, for an in-flight slot.
- The oldest in-flight request is timed by one timer: past `request_timeout_ms` the connection
  is closed (responses are ordered, so a stuck one blocks all later ones, as in Kafka's
  NetworkClient) and every in-flight future fails with KafkaTimeoutError.
- Any close (peer, protocol violation, timeout, `close()`) fails every in-flight future; those
  requests' outcome is unknown (connection.py). `closed_future` resolves then.
- Writes are bounded: above WRITE_BUFFER_HIGH_BYTES asyncio pauses us and `writable` is False
  until the buffer drains below the low mark; producers stop draining batches meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from client.connection import Connection, ConnectionProtocolError
from client.errors import KafkaConnectionError, KafkaTimeoutError
from client.wire.framing import FRAME_BYTES_MAX

__all__ = ["BrokerConnection", "WRITE_BUFFER_HIGH_BYTES"]

WRITE_BUFFER_HIGH_BYTES = 4 << 20
WRITE_BUFFER_LOW_BYTES = 1 << 20


class _Protocol(asyncio.Protocol):
    __slots__ = ("owner",)

    def __init__(self, owner: BrokerConnection) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._on_data(data)

    def eof_received(self) -> bool | None:
        self.owner.close(KafkaConnectionError(f"{self.owner.name}: connection closed by the broker"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self.owner.close(KafkaConnectionError(f"{self.owner.name}: connection lost{reason}"))

    def pause_writing(self) -> None:
        self.owner.writable = False

    def resume_writing(self) -> None:
        self.owner.writable = True
        self.owner._wake_waiters()


class BrokerConnection:
    """One connection to one broker (see the module docstring)."""

    def __init__(self, host: str, port: int, *, node_id: int = -1, client_id: str | None = None,
                 max_in_flight_requests: int = 5, request_timeout_ms: int = 30_000,
                 max_frame_bytes: int = FRAME_BYTES_MAX) -> None:
        self.host = host
        self.port = port
        self.node_id = node_id
        self.request_timeout_ms = request_timeout_ms
        self.core = Connection(client_id=client_id, max_in_flight_requests=max_in_flight_requests,
                               max_frame_bytes=max_frame_bytes)
        self.api_versions: dict[int, int] = {}  # negotiated by the cluster after open()
        self.writable = True
        self.error: Exception | None = None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.closed_future: asyncio.Future[Exception] = self._loop.create_future()

    @property
    def name(self) -> str:
        return f"node {self.node_id} ({self.host}:{self.port})" if self.node_id >= 0 else f"{self.host}:{self.port}"

    @property
    def closed(self) -> bool:
        return self.core.closed

    @property
    def can_send(self) -> bool:
        return self.core.can_send and self.writable and self._transport is not None

    @property
    def in_flight_count(self) -> int:
        return self.core.in_flight_count

    def _now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    async def open(self, connect_timeout_ms: int) -> None:
        try:
            async with asyncio.timeout(connect_timeout_ms / 1000):
                transport, _ = await self._loop.create_connection(lambda: _Protocol(self), self.host, self.port)
        except TimeoutError as exc:
            self.close(KafkaConnectionError(f"{self.name}: connect timed out after {connect_timeout_ms} ms"))
            raise KafkaConnectionError(f"{self.name}: connect timed out after {connect_timeout_ms} ms") from exc
        except OSError as exc:
            self.close(KafkaConnectionError(f"{self.name}: cannot connect: {exc}"))
            raise KafkaConnectionError(f"{self.name}: cannot connect: {exc}") from exc
        if self.core.closed:  # lost between connect and here
            transport.close()
            raise self.error or KafkaConnectionError(f"{self.name}: connection lost")
        assert isinstance(transport, asyncio.Transport)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES, low=WRITE_BUFFER_LOW_BYTES)
        self._transport = transport

    def send(self, api_key: int, api_version: int, body: Mapping[str, Any], *,
             expect_response: bool = True) -> asyncio.Future[dict[str, Any]] | None:
        """Write one request now. The caller checked `can_send`; a closed connection raises its error."""
        if self.core.closed or self._transport is None:
            raise self.error or KafkaConnectionError(f"{self.name}: not connected")
        future: asyncio.Future[dict[str, Any]] | None = self._loop.create_future() if expect_response else None
        chunks = self.core.send_request(api_key, api_version, body, self._now_ms(), future,
                                        expect_response=expect_response)
        self._transport.writelines(chunks)
        if expect_response and self._timer is None:
            self._arm_timer()
        return future

    async def request(self, api_key: int, api_version: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """Wait (at most the request timeout) for a slot, send, and return the response body."""
        await self.wait_for_slot(self.request_timeout_ms)
        future = self.send(api_key, api_version, body)
        assert future is not None
        return await future

    async def wait_for_slot(self, timeout_ms: int) -> None:
        """Until `can_send`, the connection closes (raises its error) or `timeout_ms` passes (KafkaTimeoutError)."""
        deadline = self._loop.time() + timeout_ms / 1000
        while not self.can_send:
            if self.core.closed:
                raise self.error or KafkaConnectionError(f"{self.name}: closed")
            left = deadline - self._loop.time()
            if left <= 0:
                raise KafkaTimeoutError(f"{self.name}: no free in-flight slot within {timeout_ms} ms")
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                pass

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _on_data(self, data: bytes) -> None:
        try:
            completed = self.core.receive_data(data)
        except ConnectionProtocolError as exc:
            self.close(KafkaConnectionError(f"{self.name}: {exc}"))
            return
        for request, body in completed:
            future = request.context
            if future is not None and not future.done():
                future.set_result(body)
        if completed:
            if self._waiters:
                self._wake_waiters()
            if self._timer is not None and not self.core.in_flight_count:
                self._timer.cancel()
                self._timer = None

    def _arm_timer(self) -> None:
        sent_at_ms = self.core.oldest_sent_at_ms()
        if sent_at_ms is None:
            self._timer = None
            return
        self._timer = self._loop.call_at((sent_at_ms + self.request_timeout_ms) / 1000 + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        expired = self.core.expired(self._now_ms(), self.request_timeout_ms)
        if expired is not None:
            self.close(KafkaTimeoutError(
                f"{self.name}: no response to api {expired.api_key} within {self.request_timeout_ms} ms"))
        else:
            self._arm_timer()

    def close(self, error: Exception | None = None) -> None:
        """Close now; every in-flight request fails with `error` (its outcome is unknown)."""
        if self.core.closed and self.closed_future.done():
            return
        self.error = error or KafkaConnectionError(f"{self.name}: closed by the client")
        failed = self.core.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        for request in failed:
            future = request.context
            if future is not None and not future.done():
                future.set_exception(self.error)
        self._wake_waiters()
        if not self.closed_future.done():
            self.closed_future.set_result(self.error)
