"""Replica fetchers: followers pull from partition leaders by offset (the asyncio driver).

One `ReplicaFetcher` per source broker batches every partition this broker follows on it into
one Fetch request (v12, `replica_id` = this broker): per partition the follower's log end
(`fetch_offset`), the epoch of its last batch (`last_fetched_epoch`, KIP-595 style validation)
and the leader epoch it knows (`current_leader_epoch`). Per partition answer:

* records: appended as they are (`Log.append_replicated` verifies CRCs, keeps the leader's
  offsets and epochs, rebuilds producer state), then the high watermark follows the leader's
  (min(leader's high watermark, own log end)).
* `diverging_epoch` (epoch E, end offset O on the leader): truncate to min(O, own end offset of
  E) if this log has epoch E, else to the end of its largest epoch below E (then fetch again: the
  leader re-checks). Never to the local high watermark on restart (the KIP-101 bug): truncation
  only ever follows the leader's epoch history.
* OFFSET_OUT_OF_RANGE below the leader's log start: start over, empty, at the leader's log start;
  above the leader's log end: truncate to the leader's high watermark and fetch again.
* NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION, storage
  errors: the partition backs off for REPLICA_FETCH_BACKOFF_MS (new metadata usually arrives
  first and moves it to another fetcher).

A connection failure backs the whole fetcher off for REPLICA_FETCH_BACKOFF_MS, then reconnects.
Adding a partition while a long poll is in flight drops that connection and fetches again at
once, so a new leader's followers start fetching within a round trip (the acks=all failover time
depends on it). Bounds: REPLICA_FETCH_WAIT_MAX_MS per long poll, REPLICA_FETCH_MAX_BYTES per
partition, REPLICA_FETCH_RESPONSE_MAX_BYTES per response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from broker import bugs
from broker.partition import Partition
from client.errors import KafkaConnectionError, KafkaTimeoutError
from client.transport import BrokerConnection
from client.wire.errors import ErrorCode, KafkaError
from storage.errors import StorageError

log = logging.getLogger(__name__)

FETCH_API_KEY = 1
FETCH_VERSION = 12
REPLICA_FETCH_WAIT_MAX_MS = 500            # replica.fetch.wait.max.ms
REPLICA_FETCH_MAX_BYTES = 1 << 20          # replica.fetch.max.bytes
REPLICA_FETCH_RESPONSE_MAX_BYTES = 10 << 20  # replica.fetch.response.max.bytes
REPLICA_FETCH_BACKOFF_MS = 100             # Kafka: 1000; short here because failover time counts
REPLICA_CONNECT_TIMEOUT_MS = 1_000
REPLICA_REQUEST_TIMEOUT_MS = REPLICA_FETCH_WAIT_MAX_MS + 5_000

_RETRY_LATER = frozenset({
    ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_LEADER_EPOCH,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.UNKNOWN_TOPIC_ID, ErrorCode.REPLICA_NOT_AVAILABLE,
})


def _now_ms() -> int:
    return int(time.time() * 1000)


def truncation_offset(partition: Partition, diverging_epoch: int, diverging_end_offset: int) -> int | None:
    """Where to truncate given the leader's (epoch, end offset) answer, or None to retry later."""
    if diverging_epoch < 0 or diverging_end_offset < 0:
        return None
    local_epoch, local_end = partition.log.end_offset_for_epoch(diverging_epoch)
    if local_epoch < 0:
        return None
    if local_epoch == diverging_epoch:
        return min(diverging_end_offset, local_end)
    return local_end  # this log lacks the epoch: cut back to the end of its largest epoch below it


class ReplicaFetcher:
    """Fetches every partition this broker follows on one leader (see the module docstring)."""

    def __init__(self, local_id: int, leader_id: int, address: tuple[str, int],
                 on_error: Callable[[tuple[str, int], str], None] | None = None) -> None:
        self.local_id = local_id
        self.leader_id = leader_id
        self.address = address
        self.partitions: dict[tuple[str, int], Partition] = {}
        self._backoff_until: dict[tuple[str, int], float] = {}
        self._changed = asyncio.Event()
        self._conn: BrokerConnection | None = None
        self._in_flight: set[tuple[str, int]] = set()
        self._task: asyncio.Task[None] | None = None
        self._on_error = on_error
        self.fetches = 0
        # monotonic time of the first failed connect/fetch since the last answer (None: reachable);
        # Metadata reports the leader's partitions leaderless meanwhile (see broker/replication.py)
        self.unreachable_since: float | None = None

    # -- membership --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"replica-fetcher-{self.leader_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._close()

    def add(self, partition: Partition) -> None:
        tp = partition.tp
        if self.partitions.get(tp) is partition:
            return
        self.partitions[tp] = partition
        self._backoff_until.pop(tp, None)
        self._changed.set()
        if self._in_flight and self._conn is not None:
            self._close()  # the long poll does not cover this partition: fetch again at once

    def remove(self, tp: tuple[str, int]) -> None:
        self.partitions.pop(tp, None)
        self._backoff_until.pop(tp, None)

    def set_address(self, address: tuple[str, int]) -> None:
        if address != self.address:
            self.address = address
            self._close()

    # -- the loop ----------------------------------------------------------------------------------------

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close(KafkaConnectionError("replica fetcher reconnecting"))
            self._conn = None

    async def _connect(self) -> BrokerConnection:
        if self._conn is None or self._conn.closed:
            conn = BrokerConnection(*self.address, node_id=self.leader_id, client_id=f"replica-{self.local_id}",
                                    max_in_flight_requests=1, request_timeout_ms=REPLICA_REQUEST_TIMEOUT_MS)
            await conn.open(REPLICA_CONNECT_TIMEOUT_MS)
            self._conn = conn
        return self._conn

    async def _run(self) -> None:
        while True:
            request = self._build_request()
            if request is None:
                self._changed.clear()
                wait = self._next_backoff_s()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
                continue
            try:
                conn = await self._connect()
                future = conn.send(FETCH_API_KEY, FETCH_VERSION, request)
                assert future is not None
                self._in_flight = {(t["topic"], p["partition"]) for t in request["topics"] for p in t["partitions"]}
                try:
                    response = await future
                finally:
                    self._in_flight = set()
                self.fetches += 1
                self.unreachable_since = None
            except (KafkaConnectionError, KafkaTimeoutError, KafkaError, OSError) as exc:
                if self._conn is not None and self._conn.closed:
                    self._conn = None
                if "reconnecting" in str(exc):
                    continue  # add() dropped the long poll on purpose
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                log.debug("replica fetch from broker %d failed: %s", self.leader_id, exc)
                await asyncio.sleep(REPLICA_FETCH_BACKOFF_MS / 1000)
                continue
            try:
                self._process(response)
            except Exception:
                log.exception("replica fetcher for broker %d: processing a response failed", self.leader_id)
                await asyncio.sleep(REPLICA_FETCH_BACKOFF_MS / 1000)

    def _next_backoff_s(self) -> float:
        if not self._backoff_until:
            return 1.0
        return max(0.0, min(self._backoff_until.values()) - time.monotonic())

    def _build_request(self) -> dict[str, Any] | None:
        now = time.monotonic()
        topics: dict[str, list[dict[str, Any]]] = {}
        for tp, partition in self.partitions.items():
            until = self._backoff_until.get(tp)
            if until is not None:
                if until > now:
                    continue
                del self._backoff_until[tp]
            if partition.is_leader or partition.leader_id != self.leader_id or partition.log.offline:
                continue
            log_ = partition.log
            topics.setdefault(tp[0], []).append({
                "partition": tp[1], "current_leader_epoch": partition.leader_epoch,
                "fetch_offset": log_.log_end_offset,
                "last_fetched_epoch": -1 if bugs.IGNORE_DIVERGENCE else log_.latest_epoch,
                "log_start_offset": log_.log_start_offset, "partition_max_bytes": REPLICA_FETCH_MAX_BYTES})
        if not topics:
            return None
        return {"replica_id": self.local_id, "max_wait_ms": REPLICA_FETCH_WAIT_MAX_MS, "min_bytes": 1,
                "max_bytes": REPLICA_FETCH_RESPONSE_MAX_BYTES, "isolation_level": 0, "session_id": 0,
                "session_epoch": -1, "topics": [{"topic": name, "partitions": parts} for name, parts in topics.items()],
                "forgotten_topics_data": [], "rack_id": ""}

    def _backoff(self, tp: tuple[str, int]) -> None:
        self._backoff_until[tp] = time.monotonic() + REPLICA_FETCH_BACKOFF_MS / 1000

    def _process(self, response: dict[str, Any]) -> None:
        if response.get("error_code"):
            log.debug("replica fetch from broker %d: error %s", self.leader_id, response["error_code"])
            for tp in list(self.partitions):
                self._backoff(tp)
            return
        now = _now_ms()
        for topic in response["responses"]:
            name = topic["topic"]
            for part in topic["partitions"]:
                tp = (name, part["partition_index"])
                partition = self.partitions.get(tp)
                if partition is None or partition.is_leader or partition.leader_id != self.leader_id:
                    continue  # moved while the fetch was in flight
                try:
                    self._process_partition(partition, part, now)
                except StorageError as exc:
                    log.error("replica %s-%d: %s", tp[0], tp[1], exc)
                    if self._on_error is not None:
                        self._on_error(tp, str(exc))
                    self._backoff(tp)

    def _process_partition(self, partition: Partition, part: dict[str, Any], now_ms: int) -> None:
        tp = partition.tp
        error = part["error_code"]
        if error == ErrorCode.OFFSET_OUT_OF_RANGE:
            leader_start = part.get("log_start_offset", -1)
            log_ = partition.log
            if leader_start >= 0 and log_.log_end_offset < leader_start:
                log.info("replica %s-%d: below the leader's log start %d, starting over there",
                         tp[0], tp[1], leader_start)
                partition.truncate_fully_and_start_at(leader_start)
            elif part.get("high_watermark", -1) >= 0 and log_.log_end_offset > part["high_watermark"]:
                log.info("replica %s-%d: ahead of the leader, truncating to its high watermark %d",
                         tp[0], tp[1], part["high_watermark"])
                partition.truncate_to(part["high_watermark"])
            else:
                self._backoff(tp)
            return
        if error:
            if error not in _RETRY_LATER:
                log.warning("replica %s-%d: fetch error %s", tp[0], tp[1], error)
            self._backoff(tp)
            return
        diverging = part.get("diverging_epoch") or {}
        if diverging.get("epoch", -1) >= 0 or diverging.get("end_offset", -1) >= 0:
            target = truncation_offset(partition, diverging.get("epoch", -1), diverging.get("end_offset", -1))
            if target is None:
                self._backoff(tp)
                return
            log_ = partition.log
            before = (log_.log_end_offset, log_.latest_epoch)
            if target < log_.log_end_offset:
                log.info("replica %s-%d: diverged from leader %d (epoch %d ends at %d): truncating %d -> %d",
                         tp[0], tp[1], self.leader_id, diverging.get("epoch", -1), diverging.get("end_offset", -1),
                         log_.log_end_offset, target)
            # at target == log end this only drops an epoch entry that holds no batch (a leadership
            # that appended nothing), which otherwise makes every fetch diverge again
            partition.truncate_to(target)
            if (log_.log_end_offset, log_.latest_epoch) == before:
                self._backoff(tp)  # nothing changed: let the leader's metadata settle
            return
        records = part.get("records") or b""
        partition.append_replicated(records, part["high_watermark"], now_ms, part.get("log_start_offset", -1))
