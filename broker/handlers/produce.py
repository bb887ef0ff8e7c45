"""Produce (0), v3-8 served; v0-2 advertised (for librdkafka < 2.11.1's lz4 check) but answered
with UNSUPPORTED_VERSION, as Kafka 4 does.

Per partition: exactly one client batch, validated (client.wire.records.validate_client_batch:
CRC, counts, offsets, no control batch, size <= the topic's max.message.bytes, keys on compacted
topics), idempotence-checked, appended by the partition leader (lease valid, `may_lead`).

* acks=0 sends no response; a failed append closes the connection, as Kafka does (there is no
  response to carry the error). acks=1 answers once the leader has appended.
* acks=all: NOT_ENOUGH_REPLICAS before the append if the committed ISR is smaller than the
  topic's min.insync.replicas. After the append the request waits (a delayed produce: one
  future per partition, woken when its high watermark moves or its role/epoch changes, never
  polled) until the high watermark passes the batch; then NOT_ENOUGH_REPLICAS_AFTER_APPEND if
  the ISR shrank below min.insync.replicas meanwhile, else success. If the partition is no longer
  led here in the epoch it was appended in, NOT_LEADER_OR_FOLLOWER (a write acknowledged after
  demotion could be truncated: a lost write). The same once the controller lease has ended: the
  controller will move the partition, so the client had better find the new leader now than
  after its request timeout (an isolated leader would otherwise hold every acks=all request that
  long; the outcome is unknown to the client either way, and an idempotent retry is deduplicated).
  After `timeout_ms` (bounded by DELAYED_PRODUCE_TIMEOUT_MAX_MS), REQUEST_TIMED_OUT.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker import bugs
from broker.handlers.metadata import INTERNAL
from broker.server import Handler
from client.wire.errors import ErrorCode
from client.wire.records import PRODUCER_ID_POS, validate_client_batch

if TYPE_CHECKING:
    from broker.broker import Broker

VALID_ACKS = (-1, 0, 1)
DELAYED_PRODUCE_TIMEOUT_MAX_MS = 300_000
PRODUCER_ID = struct.Struct(">q")


def _error_partition(index: int, error: int, message: str | None = None) -> dict[str, Any]:
    return {"index": index, "error_code": error, "base_offset": -1, "log_append_time_ms": -1,
            "log_start_offset": -1, "error_message": message}


# (index in the topic's results, partition, leader epoch at append, offset the HW must reach, min ISR)
Delayed = tuple[int, Any, int, int, int]


def _delayed_outcome(partition: Any, epoch: int, required_offset: int, min_isr: int) -> int | None:
    """The error code a delayed produce completes with now, or None to keep waiting."""
    if (not partition.is_leader or partition.leader_epoch != epoch) and not bugs.ACK_AFTER_DEMOTION:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    if partition.high_watermark >= required_offset:
        if partition.committed_isr_size() < min_isr:
            return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return ErrorCode.NONE
    return None


async def _complete_delayed(waits: list[tuple[list[dict[str, Any]], list[Delayed]]], timeout_ms: int,
                            lease_left_s: Callable[[], float | None] = lambda: None) -> None:
    """Wait until every delayed partition has an outcome (or the timeout), then fill in the errors.
    `lease_left_s`: seconds of controller lease left (None: no lease); at its end every delayed
    partition fails with NOT_LEADER_OR_FOLLOWER (a timer at the lease's end, not polling)."""
    pending = [(results, item) for results, items in waits for item in items]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_ms / 1000
    while pending:
        still = []
        for results, (pos, partition, epoch, required, min_isr) in pending:
            outcome = _delayed_outcome(partition, epoch, required, min_isr)
            if outcome is None:
                still.append((results, (pos, partition, epoch, required, min_isr)))
            elif outcome:
                _fail(results[pos], outcome)
        pending = still
        left = deadline - loop.time()
        if not pending:
            break
        lease = lease_left_s()
        if lease is not None and lease <= 0 and not bugs.ACK_AFTER_DEMOTION:
            for results, (pos, *_rest) in pending:
                _fail(results[pos], ErrorCode.NOT_LEADER_OR_FOLLOWER)
            break
        if left <= 0:
            for results, (pos, *_rest) in pending:
                _fail(results[pos], ErrorCode.REQUEST_TIMED_OUT)
            break
        if lease is not None and lease > 0:
            left = min(left, lease + 0.001)  # wake at the lease's end (a renewal moves it: re-checked)
        futures = {id(item[1]): item[1].hw_changed() for _r, item in pending}
        try:
            await asyncio.wait(futures.values(), timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in futures.values():
                future.cancel()


def _fail(result: dict[str, Any], error: int) -> None:
    result["error_code"] = error
    result["error_message"] = ErrorCode(error).name
    if error != ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND:
        result["base_offset"] = -1


def handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        version = header.api_version
        acks = body["acks"]
        now_ms = int(time.time() * 1000)
        responses = []
        waits: list[tuple[list[dict[str, Any]], list[Delayed]]] = []
        delayed: list[Delayed] = []
        for topic in body["topic_data"]:
            name = topic["name"]
            results = []
            if name in INTERNAL:  # only the group coordinator writes it (Kafka: InvalidTopicException)
                responses.append({"name": name, "partition_responses": [
                    _error_partition(p["index"], ErrorCode.INVALID_TOPIC_EXCEPTION, "internal topic")
                    for p in topic["partition_data"]]})
                continue
            for part in topic["partition_data"]:
                index = part["index"]
                if version < 3:
                    results.append(_error_partition(index, ErrorCode.UNSUPPORTED_VERSION))
                    continue
                if acks not in VALID_ACKS:
                    results.append(_error_partition(index, ErrorCode.INVALID_REQUIRED_ACKS))
                    continue
                partition = broker.partitions.get((name, index))
                if partition is None or not partition.is_leader or not broker.may_lead():
                    results.append(_error_partition(index, broker.not_leader_error(name, index)))
                    continue
                min_isr = broker.min_insync_replicas(name) if acks == -1 else 1
                if partition.committed_isr_size() < min_isr:
                    results.append(_error_partition(
                        index, ErrorCode.NOT_ENOUGH_REPLICAS,
                        f"ISR {list(partition.isr)} is smaller than min.insync.replicas={min_isr}"))
                    continue
                records = part["records"]
                if records is None or len(records) == 0:
                    results.append(_error_partition(index, ErrorCode.INVALID_RECORD, "no records"))
                    continue
                config = partition.log.config
                error = validate_client_batch(records, max_batch_bytes=config.max_message_bytes,
                                              require_keys=config.compact)
                if error:
                    results.append(_error_partition(index, error, f"batch rejected: {ErrorCode(error).name}"))
                    continue
                producer_id = PRODUCER_ID.unpack_from(records, PRODUCER_ID_POS)[0]
                if producer_id >= 0 and not broker.producer_id_was_issued(producer_id):
                    # an id no InitProducerId ever returned (ids a partition merely forgot, e.g. expired,
                    # are accepted as Kafka >= 2.5 does: KIP-360)
                    results.append(_error_partition(index, ErrorCode.UNKNOWN_PRODUCER_ID,
                                                    f"producer id {producer_id} was never issued"))
                    continue
                # no await since `config` was read: the validation above checked keys if compacted
                result = partition.append_as_leader(records, now_ms, keys_checked=True)
                if acks == -1 and result.error == 0:
                    delayed.append((len(results), partition, partition.leader_epoch, result.last_offset + 1, min_isr))
                results.append({"index": index, "error_code": result.error, "base_offset": result.base_offset,
                                "log_append_time_ms": result.log_append_time_ms,
                                "log_start_offset": result.log_start_offset, "error_message": result.message})
            responses.append({"name": name, "partition_responses": results})
            if delayed:
                waits.append((results, delayed))
                delayed = []
        if waits:
            timeout_ms = min(max(body.get("timeout_ms", 0), 0), DELAYED_PRODUCE_TIMEOUT_MAX_MS)
            await _complete_delayed(waits, timeout_ms, broker.lease_left_s)
        if acks == 0:
            # no response to carry an error: Kafka closes the connection so the producer notices
            if any(r["error_code"] for t in responses for r in t["partition_responses"]):
                conn.close()
            return None
        return {"responses": responses, "throttle_time_ms": 0}
    return handle
