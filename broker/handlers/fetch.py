"""Fetch (1), v4-12: long poll, byte limits, whole batches, high-watermark-bounded reads.

* Consumers read below the high watermark only (isolation_level 1 is served with the last stable
  offset = the high watermark: no transactions yet).
* Byte limits: each partition gets at most `partition_max_bytes`, the response at most `max_bytes`,
  but the first partition with data always gets at least one whole batch (KIP-74).
* Errors per partition carry *empty* records, never null (librdkafka loops on null).
* Offsets: below the log start or above the log end -> OFFSET_OUT_OF_RANGE; between the high
  watermark and the log end -> an empty answer (a new leader's high watermark may trail).
* current_leader_epoch (v9+): older than ours -> FENCED_LEADER_EPOCH, newer -> UNKNOWN_LEADER_EPOCH.
* Long poll: if fewer than `min_bytes` are ready (and no partition has an error), wait until a
  fetched partition's high watermark moves or `max_wait_ms` passes (bounded by FETCH_WAIT_MAX_MS),
  then answer with what is there.
* Fetch sessions (v7+) are not kept: session_id 0 tells clients to send full fetches.
* Follower fetches (replica_id >= 0, broker/replica_fetcher.py): served by the leader only, read up
  to the log end (not the high watermark). `last_fetched_epoch` is checked first (KIP-595 style,
  Kafka >= 2.7): if the leader's log diverges from the follower's below `fetch_offset`, the answer
  is `diverging_epoch` = (largest leader epoch <= the follower's, its end offset on the leader) and
  no records, and the follower's state is not updated. Otherwise the fetch offset is the follower's
  log end: the leader's LeaderState records it (the high watermark may advance, the ISR may grow).
  Followers long-poll on the log end, consumers on the high watermark.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from broker.server import Handler
from client.wire.errors import ErrorCode
from storage.errors import LogOfflineError, OffsetOutOfRangeError, StorageError

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.partition import Partition

FETCH_WAIT_MAX_MS = 30_000
FETCH_RESPONSE_BYTES_MAX = 64 << 20
EMPTY = b""


def _chunk_bytes(log_: Any, chunk: Any) -> bytes:
    try:
        return bytes(chunk)
    except OSError as exc:  # a failing disk takes this log offline; other partitions keep serving
        log_.offline = True
        raise LogOfflineError(f"read failed: {exc}") from exc


def _partition_error(index: int, error: int, partition: Partition | None = None) -> dict[str, Any]:
    hw = partition.high_watermark if partition is not None else -1
    start = partition.log.log_start_offset if partition is not None else -1
    return {"partition_index": index, "error_code": error, "high_watermark": hw, "last_stable_offset": hw,
            "log_start_offset": start, "aborted_transactions": [], "preferred_read_replica": -1,
            "records": EMPTY}


def _diverging(partition: Partition, fetch_offset: int, last_fetched_epoch: int) -> tuple[int, int] | None:
    """(epoch, end offset) where a follower's log diverges from ours, or None."""
    if last_fetched_epoch < 0 or fetch_offset <= 0:
        return None
    epoch, end_offset = partition.log.end_offset_for_epoch(last_fetched_epoch)
    if epoch < last_fetched_epoch or end_offset < fetch_offset:
        return epoch, end_offset
    return None


def _read_all(broker: Broker, body: dict[str, Any], version: int,
              replica_id: int = -1) -> tuple[list[dict[str, Any]], int, list[Any]]:
    """One pass over the requested partitions; returns (responses, bytes, partitions to wait on)."""
    follower = replica_id >= 0
    now = int(time.time() * 1000)
    remaining = min(max(body.get("max_bytes", FETCH_RESPONSE_BYTES_MAX), 0), FETCH_RESPONSE_BYTES_MAX)
    total = 0
    waiting = []
    responses = []
    for topic in body["topics"]:
        name = topic["topic"]
        parts = []
        for request in topic["partitions"]:
            index = request["partition"]
            partition = broker.partitions.get((name, index))
            if partition is None or not partition.is_leader:
                parts.append(_partition_error(index, broker.not_leader_error(name, index)))
                continue
            epoch_error = partition.check_leader_epoch(request.get("current_leader_epoch", -1))
            if epoch_error:
                parts.append(_partition_error(index, epoch_error, partition))
                continue
            if follower and (partition.leader_state is None or replica_id not in partition.leader_state.followers):
                parts.append(_partition_error(index, ErrorCode.NOT_LEADER_OR_FOLLOWER, partition))
                continue
            log_ = partition.log
            offset = request["fetch_offset"]
            diverging = None
            if follower:
                diverging = _diverging(partition, offset, request.get("last_fetched_epoch", -1))
                if diverging is None and log_.log_start_offset <= offset <= log_.log_end_offset:
                    if not partition.on_follower_fetch(replica_id, offset, now):
                        parts.append(_partition_error(index, ErrorCode.NOT_LEADER_OR_FOLLOWER, partition))
                        continue
                    if replica_id not in partition.isr:
                        broker.replication.isr_check_soon()
            hw = partition.high_watermark
            upper = log_.log_end_offset if follower else hw
            limit = min(request["partition_max_bytes"], remaining)
            records: Any = EMPTY
            try:
                if diverging is not None:
                    pass
                elif offset < upper and (limit > 0 or total == 0):
                    chunk = log_.read(offset, max(limit, 1), max_offset=None if follower else hw)
                    # the log always returns at least one batch; only the first partition with
                    # data may exceed its limit (KIP-74: Kafka's minOneMessage is for it alone)
                    if total == 0 or len(chunk) <= limit:
                        records = _chunk_bytes(log_, chunk)
                elif offset > log_.log_end_offset or offset < log_.log_start_offset:
                    raise OffsetOutOfRangeError(f"offset {offset}")
            except OffsetOutOfRangeError:
                parts.append(_partition_error(index, ErrorCode.OFFSET_OUT_OF_RANGE, partition))
                continue
            except StorageError as exc:
                parts.append(_partition_error(index, exc.error_code, partition))
                continue
            size = len(records)
            total += size
            remaining = max(remaining - size, 0)
            waiting.append(partition)  # any partition's new data counts towards min_bytes
            out = {"partition_index": index, "error_code": 0, "high_watermark": hw,
                   "last_stable_offset": hw, "log_start_offset": log_.log_start_offset,
                   "aborted_transactions": [], "preferred_read_replica": -1, "records": records}
            if diverging is not None:
                out["diverging_epoch"] = {"epoch": diverging[0], "end_offset": diverging[1]}
                total = max(total, 1)  # answer at once: the follower must truncate first
            parts.append(out)
        responses.append({"topic": name, "partitions": parts})
    return responses, total, waiting


def handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        version = header.api_version
        wait_ms = min(max(body.get("max_wait_ms", 0), 0), FETCH_WAIT_MAX_MS)
        min_bytes = body.get("min_bytes", 1)
        deadline = time.monotonic() + wait_ms / 1000
        replica_id = body.get("replica_id", -1)
        if replica_id is None or replica_id < 0:
            state = body.get("replica_state") or {}
            replica_id = state.get("replica_id", -1)
        while True:
            responses, total, waiting = _read_all(broker, body, version, replica_id)
            left = deadline - time.monotonic()
            errored = any(p["error_code"] for t in responses for p in t["partitions"])
            if total >= min_bytes or left <= 0 or not waiting or errored or conn.closed:
                break  # Kafka answers at once when a partition has an error (DelayedFetch)
            futures = [p.end_changed() if replica_id >= 0 else p.hw_changed() for p in waiting]
            try:
                await asyncio.wait(futures, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in futures:
                    future.cancel()
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
    return handle
