"""Bootstrap, one connection per broker, ApiVersions negotiation, and metadata refresh.

Who calls it: Producer, Consumer and Admin each own one `Cluster`.

- Bootstrap: `start()` fetches metadata through the first bootstrap address that answers (in
  order, each within `connect_timeout_ms`); afterwards brokers are reached by the addresses the
  metadata gives, and the bootstrap list is the fallback when no known broker answers.
- Every new connection first negotiates versions with ApiVersions (KAFKA_PROTOCOL.md §1.1): we send
  our highest ApiVersions version; a broker that does not serve it answers UNSUPPORTED_VERSION with
  its own range in a v0 body and we retry with min(ours, its max). For each API the version used is
  the highest in both our table (`CLIENT_API_VERSIONS`, what this client implements) and the
  broker's range; `version(connection, api_key)` raises IncompatibleBrokerError when they do not
  overlap.
- Metadata refresh is single-flight and rate-limited: at most one Metadata request at a time, and
  after a refresh that was requested by an error (`request_update()`), the next one waits at least
  `retry_backoff_ms`, doubling per consecutive failure up to `retry_backoff_max_ms` (Kafka's
  retry.backoff.ms / retry.backoff.max.ms). Data older than `metadata_max_age_ms` is refreshed.
- Reconnects to a node back off the same way (per node), so a dead broker is not hammered.
- Listeners registered with `add_listener` are called after every metadata update and every new
  connection (the producer's sender wakes up on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from client.errors import (
    IncompatibleBrokerError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailableError,
    broker_error,
)
from client.metadata import MetadataCache
from client.transport import BrokerConnection
from client.wire.errors import ErrorCode
from client.wire.messages import ApiKey

__all__ = ["CLIENT_API_VERSIONS", "Cluster", "parse_bootstrap"]

log = logging.getLogger(__name__)

CLIENT_SOFTWARE_NAME = "replog-python"
CLIENT_SOFTWARE_VERSION = "0.1.0"

# What this client implements, per API: (min, max). Above these maxima Kafka switches to topic ids
# (Produce 13, Fetch 13, Metadata 12+ requests by id, DeleteTopics 6) or batched keys
# (FindCoordinator 4), which this client does not speak.
CLIENT_API_VERSIONS: dict[int, tuple[int, int]] = {
    ApiKey.PRODUCE: (3, 12),
    ApiKey.FETCH: (4, 12),
    ApiKey.LIST_OFFSETS: (1, 7),
    ApiKey.METADATA: (4, 12),
    ApiKey.FIND_COORDINATOR: (0, 3),
    ApiKey.API_VERSIONS: (0, 3),
    ApiKey.CREATE_TOPICS: (2, 7),
    ApiKey.DELETE_TOPICS: (1, 5),
    ApiKey.INIT_PRODUCER_ID: (0, 5),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: (2, 4),
    ApiKey.DESCRIBE_CONFIGS: (1, 4),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (0, 1),
}

ADDRESSES_MAX = 1000  # bootstrap list bound


def parse_bootstrap(bootstrap_servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """"host:port,host:port" or a list of "host:port" -> [(host, port)]."""
    items = bootstrap_servers.split(",") if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"bootstrap address {item!r} is not HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("no bootstrap servers given")
    if len(out) > ADDRESSES_MAX:
        raise ValueError(f"more than {ADDRESSES_MAX} bootstrap servers")
    return out


def negotiate(broker_ranges: Iterable[Mapping[str, int]]) -> dict[int, int]:
    """{api_key: highest version both sides implement} for APIs whose ranges overlap."""
    chosen = {}
    for entry in broker_ranges:
        ours = CLIENT_API_VERSIONS.get(entry["api_key"])
        if ours is None:
            continue
        high = min(ours[1], entry["max_version"])
        if high >= max(ours[0], entry["min_version"]):
            chosen[entry["api_key"]] = high
    return chosen


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


class Cluster:
    """Connections, negotiated versions and the metadata cache of one client (module docstring)."""

    @classmethod
    def for_client(cls, owner: Any, *, max_in_flight_requests: int = 5,
                   allow_auto_topic_creation: bool = False) -> Cluster:
        """A Cluster configured from a Producer/Consumer/Admin's common options (same attribute names)."""
        return cls(owner.bootstrap_servers, client_id=owner.client_id, request_timeout_ms=owner.request_timeout_ms,
                   connect_timeout_ms=owner.connect_timeout_ms, retry_backoff_ms=owner.retry_backoff_ms,
                   retry_backoff_max_ms=owner.retry_backoff_max_ms, metadata_max_age_ms=owner.metadata_max_age_ms,
                   max_in_flight_requests=max_in_flight_requests, allow_auto_topic_creation=allow_auto_topic_creation)

    def __init__(self, bootstrap_servers: str | Sequence[str], *, client_id: str | None,
                 request_timeout_ms: int = 30_000, connect_timeout_ms: int = 10_000,
                 retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1_000,
                 metadata_max_age_ms: int = 300_000, max_in_flight_requests: int = 5,
                 allow_auto_topic_creation: bool = True) -> None:
        self.bootstrap = parse_bootstrap(bootstrap_servers)
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self.max_in_flight_requests = max_in_flight_requests
        self.allow_auto_topic_creation = allow_auto_topic_creation
        self.metadata = MetadataCache()
        self.topics: set[str] = set()  # topics whose metadata we keep
        self._connections: dict[int, BrokerConnection] = {}
        self._connecting: dict[int, asyncio.Task[BrokerConnection]] = {}
        self._node_failures: dict[int, tuple[int, float]] = {}  # node -> (consecutive failures, retry at)
        self._bootstrap_connection: BrokerConnection | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._scheduled_refresh: asyncio.TimerHandle | None = None
        self._refresh_failures = 0
        self._last_refresh_at = -1e18
        self._need_update = True
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Fetch initial metadata (raises NoBrokersAvailableError if no bootstrap address answers)."""
        await self.refresh_metadata()

    async def close(self) -> None:
        self._closed = True
        if self._scheduled_refresh is not None:
            self._scheduled_refresh.cancel()
        tasks = [t for t in (self._refresh_task, *self._connecting.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for connection in [*self._connections.values(), self._bootstrap_connection]:
            if connection is not None:
                connection.close()
        self._connections.clear()

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _now(self) -> float:
        return self._loop.time()

    # ------------------------------------------------------------------ versions
    @staticmethod
    def version(connection: BrokerConnection, api_key: int) -> int:
        version = connection.api_versions.get(api_key)
        if version is None:
            ours = CLIENT_API_VERSIONS.get(api_key)
            raise IncompatibleBrokerError(f"{connection.name} serves no version of api {api_key} in {ours}")
        return version

    # ------------------------------------------------------------------ connections
    async def _open(self, host: str, port: int, node_id: int) -> BrokerConnection:
        connection = BrokerConnection(host, port, node_id=node_id, client_id=self.client_id,
                                      max_in_flight_requests=self.max_in_flight_requests,
                                      request_timeout_ms=self.request_timeout_ms)
        await connection.open(self.connect_timeout_ms)
        try:
            await self._negotiate(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _negotiate(self, connection: BrokerConnection) -> None:
        version = CLIENT_API_VERSIONS[ApiKey.API_VERSIONS][1]
        body = {"client_software_name": CLIENT_SOFTWARE_NAME, "client_software_version": CLIENT_SOFTWARE_VERSION}
        response = await connection.request(ApiKey.API_VERSIONS, version, body)
        if response["error_code"] == ErrorCode.UNSUPPORTED_VERSION:
            broker_max = next((k["max_version"] for k in response["api_keys"]
                               if k["api_key"] == ApiKey.API_VERSIONS), 0)
            version = min(version, broker_max)
            response = await connection.request(ApiKey.API_VERSIONS, version, body)
        if response["error_code"]:
            raise broker_error(response["error_code"], context=f"ApiVersions from {connection.name}")
        connection.api_versions = negotiate(response["api_keys"])

    def ready_connection(self, node_id: int) -> BrokerConnection | None:
        """The open connection to `node_id`, or None (and a connect is started, respecting backoff)."""
        connection = self._connections.get(node_id)
        if connection is not None and not connection.closed:
            return connection
        self._start_connect(node_id)
        return None

    def _start_connect(self, node_id: int) -> asyncio.Task[BrokerConnection] | None:
        if self._closed:
            return None
        task = self._connecting.get(node_id)
        if task is not None:
            return task
        retry_at = self._node_failures.get(node_id, (0, 0.0))[1]
        broker = self.metadata.brokers.get(node_id)
        if broker is None:
            return None
        delay = max(retry_at - self._now(), 0.0)
        task = self._loop.create_task(self._connect(node_id, broker.host, broker.port, delay))
        task.add_done_callback(_retrieve)  # the failure is logged and retried; waiters get it via shield
        self._connecting[node_id] = task
        return task

    async def _connect(self, node_id: int, host: str, port: int, delay_s: float) -> BrokerConnection:
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)  # reconnect backoff
            connection = await self._open(host, port, node_id)
        except KafkaError as exc:
            failures = self._node_failures.get(node_id, (0, 0.0))[0] + 1
            self._node_failures[node_id] = (failures, self._now() + self._backoff_ms(failures) / 1000)
            self.request_update()
            log.debug("connect to node %d failed: %s", node_id, exc)
            raise
        finally:
            self._connecting.pop(node_id, None)
        self._node_failures.pop(node_id, None)
        self._connections[node_id] = connection
        connection.closed_future.add_done_callback(lambda _f, c=connection: self._on_closed(c))
        self._notify()
        return connection

    def _on_closed(self, connection: BrokerConnection) -> None:
        if self._connections.get(connection.node_id) is connection:
            del self._connections[connection.node_id]
            failures = self._node_failures.get(connection.node_id, (0, 0.0))[0] + 1
            self._node_failures[connection.node_id] = (failures, self._now() + self._backoff_ms(failures) / 1000)
            if not self._closed:
                self.request_update()

    async def connection(self, node_id: int) -> BrokerConnection:
        """An open connection to `node_id` (connects if needed; raises KafkaConnectionError)."""
        connection = self.ready_connection(node_id)
        if connection is not None:
            return connection
        task = self._connecting.get(node_id)
        if task is None:
            raise KafkaConnectionError(f"node {node_id} is not in the metadata")
        return await asyncio.shield(task)

    async def any_connection(self) -> BrokerConnection:
        """The least loaded open connection; else a connect to a known broker; else a bootstrap address."""
        open_ = [c for c in self._connections.values() if not c.closed]
        if open_:
            return min(open_, key=lambda c: c.in_flight_count)
        errors: list[str] = []
        for node_id in list(self.metadata.brokers):
            try:
                return await self.connection(node_id)
            except KafkaError as exc:
                errors.append(str(exc))
        if self._bootstrap_connection is not None and not self._bootstrap_connection.closed:
            return self._bootstrap_connection
        for host, port in self.bootstrap:
            try:
                connection = await self._open(host, port, -1)
            except KafkaError as exc:
                errors.append(str(exc))
                continue
            current = self._bootstrap_connection
            if current is not None and not current.closed:  # a concurrent caller got there first
                connection.close()
                return current
            self._bootstrap_connection = connection
            return connection
        raise NoBrokersAvailableError("no broker answered: " + "; ".join(errors[-5:]))

    async def request(self, api_key: int, body: Mapping[str, Any] | Callable[[int], Mapping[str, Any]], *,
                      node_id: int | None = None) -> tuple[dict[str, Any], int]:
        """Send one request to `node_id` (or the least loaded broker); returns (response, version used).

        `body` may be a function of the negotiated version.
        """
        connection = await (self.connection(node_id) if node_id is not None else self.any_connection())
        version = self.version(connection, api_key)
        payload = body(version) if callable(body) else body
        return await connection.request(api_key, version, payload), version

    # ------------------------------------------------------------------ metadata
    def _backoff_ms(self, failures: int) -> int:
        if failures <= 0:
            return 0
        return min(self.retry_backoff_ms * (1 << min(failures - 1, 20)), self.retry_backoff_max_ms)

    def add_topics(self, topics: Iterable[str]) -> None:
        new = [t for t in topics if t not in self.topics]
        if new:
            self.topics.update(new)
            self.request_update()

    def request_update(self) -> None:
        """Refresh soon (after the backoff), in the background."""
        self._need_update = True
        if self._closed or self._scheduled_refresh is not None or (
                self._refresh_task is not None and not self._refresh_task.done()):
            return
        delay = max(self._last_refresh_at + self._backoff_ms(max(self._refresh_failures, 1)) / 1000 - self._now(), 0)
        self._scheduled_refresh = self._loop.call_later(delay, self._scheduled)

    def _scheduled(self) -> None:
        self._scheduled_refresh = None
        if self._closed or (self._refresh_task is not None and not self._refresh_task.done()):
            return
        self._refresh_task = self._loop.create_task(self._refresh())
        self._refresh_task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # the first failure of a streak is a warning, the retries (every backoff) are debug
            level = logging.WARNING if self._refresh_failures <= 1 else logging.DEBUG
            log.log(level, "metadata refresh failed: %s", exc)
            if not self._closed:
                self.request_update()
        elif self._need_update and not self._closed:
            self.request_update()

    def maybe_refresh(self) -> None:
        """Refresh if the data is older than metadata_max_age_ms."""
        if (self._now() * 1000 - self.metadata.updated_at_ms) >= self.metadata_max_age_ms:
            self.request_update()

    async def refresh_metadata(self, *, timeout_ms: int | None = None) -> None:
        """Refresh now (joining a refresh in progress); raises on failure."""
        timeout_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
        if self._scheduled_refresh is not None:
            self._scheduled_refresh.cancel()
            self._scheduled_refresh = None
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = self._loop.create_task(self._refresh())
            self._refresh_task.add_done_callback(self._refresh_done)
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await asyncio.shield(self._refresh_task)
        except TimeoutError as exc:
            raise KafkaTimeoutError(f"metadata not refreshed within {timeout_ms} ms") from exc

    async def wait_for_update(self, version: int, timeout_ms: int) -> None:
        """Until metadata.version > `version` (kicking a refresh) or the timeout passes (no error)."""
        deadline = self._now() + timeout_ms / 1000
        while self.metadata.version <= version and self._now() < deadline:
            self.request_update()
            task = self._refresh_task
            left = deadline - self._now()
            if task is None or task.done():
                await asyncio.sleep(min(left, self.retry_backoff_ms / 1000))  # the scheduled refresh's delay
                continue
            with contextlib.suppress(Exception):
                async with asyncio.timeout(left):
                    await asyncio.shield(task)

    async def _refresh(self) -> None:
        self._last_refresh_at = self._now()
        self._need_update = False
        try:
            connection = await self.any_connection()
            version = self.version(connection, ApiKey.METADATA)
            all_topics = False
            topics: list[dict[str, Any]] | None = [{"name": t} for t in sorted(self.topics)]
            body = {"topics": topics, "allow_auto_topic_creation": self.allow_auto_topic_creation}
            response = await connection.request(ApiKey.METADATA, version, body)
        except (KafkaError, OSError):
            self._refresh_failures += 1
            self._need_update = True
            raise
        if response.get("error_code"):
            self._refresh_failures += 1
            self._need_update = True
            raise broker_error(response["error_code"], context="Metadata")
        self._refresh_failures = 0
        self.metadata.update(response, int(self._now() * 1000), all_topics=all_topics)
        for topic in self.metadata.topics.values():
            if topic.name in self.topics and (topic.error.retriable or any(
                    p.leader < 0 for p in topic.partitions.values())):
                self._need_update = True  # e.g. LEADER_NOT_AVAILABLE right after auto-creation
        self._notify()

    async def fetch_metadata(self, topics: Sequence[str] | None, *, allow_auto_topic_creation: bool = False,
                             node_id: int | None = None) -> dict[str, Any]:
        """One Metadata request for `topics` (None: all topics) without touching the interest set.

        The cache is updated with the answer (Admin uses this for list/describe).
        """
        body = {"topics": None if topics is None else [{"name": t} for t in topics],
                "allow_auto_topic_creation": allow_auto_topic_creation}
        response, _ = await self.request(ApiKey.METADATA, body, node_id=node_id)
        if response.get("error_code"):
            raise broker_error(response["error_code"], context="Metadata")
        self.metadata.update(response, int(self._now() * 1000), all_topics=topics is None)
        self._notify()
        return response
