"""Sans-IO bookkeeping of one client connection to a broker: requests out, responses matched in.

No sockets, no clocks, no asyncio: the caller passes bytes in (`receive_data`), takes bytes out
(the chunks `send_request` returns) and passes `now_ms` where time matters (transport.py drives
it). Contract:

- Correlation ids increase by one per request from 1 (int32, wrapping to 0 after 2^31-1), so a
  response can be matched and a stale one detected.
- Kafka answers the requests of one connection in the order it received them [kafka.apache.org/
  protocol.html "Network"], so in-flight requests are a FIFO and the next response must carry the
  oldest in-flight request's correlation id; anything else is a protocol violation by the peer.
- At most `max_in_flight_requests` requests await a response (`can_send`); sending past the
  bound is a caller bug (assertion). Requests sent with `expect_response=False` (Produce acks=0)
  are never in flight: the broker sends nothing back.
- Failure is connection-wide: a protocol violation (`ConnectionProtocolError` from
  `receive_data`), a request past its timeout, or the transport closing all end in `close()`,
  which returns every in-flight request. Their outcome is unknown: the broker may have executed
  them. The connection is unusable afterwards.
- Frames are bounded by `max_frame_bytes` (FrameDecoder: checked on the size prefix).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from client.wire.codec import ProtocolError
from client.wire.framing import FRAME_BYTES_MAX, FrameDecoder
from client.wire.protocol import decode_response, encode_request_chunks, peek_correlation_id

__all__ = ["Connection", "ConnectionProtocolError", "InFlightRequest"]

CORRELATION_ID_MAX = 0x7FFFFFFF


class ConnectionProtocolError(ProtocolError):
    """The broker broke the protocol (bad frame, unexpected correlation id, undecodable body)."""


class InFlightRequest:
    """A request that was written and awaits its response. `context` is the caller's (a future)."""

    __slots__ = ("api_key", "api_version", "context", "correlation_id", "sent_at_ms")

    def __init__(self, correlation_id: int, api_key: int, api_version: int, sent_at_ms: int, context: Any) -> None:
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.api_version = api_version
        self.sent_at_ms = sent_at_ms
        self.context = context

    def __repr__(self) -> str:
        return (f"InFlightRequest(correlation_id={self.correlation_id}, api_key={self.api_key}, "
                f"v{self.api_version}, sent_at_ms={self.sent_at_ms})")


class Connection:
    """One broker connection's request/response state machine (see the module docstring)."""

    __slots__ = ("_decoder", "_in_flight", "_next_correlation_id", "client_id", "closed", "max_in_flight_requests")

    def __init__(self, *, client_id: str | None, max_in_flight_requests: int,
                 max_frame_bytes: int = FRAME_BYTES_MAX) -> None:
        if max_in_flight_requests < 1:
            raise ValueError("max_in_flight_requests must be >= 1")
        self.client_id = client_id
        self.max_in_flight_requests = max_in_flight_requests
        self._decoder = FrameDecoder(max_frame_bytes)
        self._in_flight: deque[InFlightRequest] = deque()
        self._next_correlation_id = 1
        self.closed = False

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    @property
    def can_send(self) -> bool:
        return not self.closed and len(self._in_flight) < self.max_in_flight_requests

    def oldest_sent_at_ms(self) -> int | None:
        """When the oldest in-flight request was sent (the next one that can time out), or None."""
        return self._in_flight[0].sent_at_ms if self._in_flight else None

    def send_request(self, api_key: int, api_version: int, body: Mapping[str, Any], now_ms: int, context: Any = None,
                     *, expect_response: bool = True) -> list[Any]:
        """Encode a request; returns the framed chunks to write (records uncopied)."""
        assert not self.closed, "send_request on a closed connection"
        assert not expect_response or len(self._in_flight) < self.max_in_flight_requests, "in-flight bound exceeded"
        correlation_id = self._next_correlation_id
        self._next_correlation_id = 0 if correlation_id == CORRELATION_ID_MAX else correlation_id + 1
        chunks = encode_request_chunks(api_key, api_version, correlation_id, self.client_id, body, framed=True)
        if expect_response:
            self._in_flight.append(InFlightRequest(correlation_id, api_key, api_version, now_ms, context))
        return chunks

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[tuple[InFlightRequest, dict[str, Any]]]:
        """Feed bytes from the socket; returns (request, decoded response body) for each completed response.

        Raises ConnectionProtocolError on any violation; the caller must then `close()`.
        """
        if self.closed:
            return []
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            raise ConnectionProtocolError(f"bad frame from broker: {exc}") from exc
        completed = []
        for frame in frames:
            if not self._in_flight:
                raise ConnectionProtocolError("a response arrived with no request in flight")
            request = self._in_flight[0]
            correlation_id = peek_correlation_id(frame)
            if correlation_id != request.correlation_id:
                raise ConnectionProtocolError(
                    f"response correlation id {correlation_id}, expected {request.correlation_id}")
            try:
                _, body = decode_response(frame, request.api_key, request.api_version)
            except ProtocolError as exc:
                raise ConnectionProtocolError(
                    f"undecodable response to api {request.api_key} v{request.api_version}: {exc}") from exc
            self._in_flight.popleft()
            completed.append((request, body))
        return completed

    def expired(self, now_ms: int, request_timeout_ms: int) -> InFlightRequest | None:
        """The oldest in-flight request if it has waited longer than `request_timeout_ms`."""
        if self._in_flight and now_ms - self._in_flight[0].sent_at_ms >= request_timeout_ms:
            return self._in_flight[0]
        return None

    def close(self) -> list[InFlightRequest]:
        """Mark closed; returns the in-flight requests, whose outcome is now unknown."""
        self.closed = True
        failed = list(self._in_flight)
        self._in_flight.clear()
        return failed
