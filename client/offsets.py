"""ListOffsets for a set of partitions: earliest (-2), latest (-1) or by timestamp, with retries.

Used by the consumer (auto_offset_reset, seek_to_beginning/end, beginning/end_offsets) and by the
admin (describe_topics: log start offset and high watermark). Requests go to each partition's
leader with the leader epoch from the metadata (ListOffsets v4+, KIP-320). Retriable errors
(NOT_LEADER_OR_FOLLOWER, leader epochs, connections...) refresh the metadata and retry after
`retry_backoff_ms` (doubling to `retry_backoff_max_ms`), all within `timeout_ms`; any other error
raises its BrokerResponseError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import NamedTuple

from client.cluster import Cluster
from client.errors import KafkaError, KafkaTimeoutError, broker_error
from client.record import TopicPartition
from client.wire.errors import ErrorCode, error_code_for
from client.wire.messages import ApiKey

__all__ = ["EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP", "OffsetAndTimestamp", "list_offsets"]

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


class OffsetAndTimestamp(NamedTuple):
    offset: int  # -1 when no record has a timestamp >= the one asked for
    timestamp: int
    leader_epoch: int


async def list_offsets(cluster: Cluster, requests: dict[TopicPartition, int], *, isolation_level: int = 0,
                       timeout_ms: int = 60_000) -> dict[TopicPartition, OffsetAndTimestamp]:
    """{tp: timestamp (-1 latest, -2 earliest, or ms)} -> {tp: OffsetAndTimestamp}."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_ms / 1000
    cluster.add_topics({tp[0] for tp in requests})
    pending = dict(requests)
    found: dict[TopicPartition, OffsetAndTimestamp] = {}
    failures = 0
    last_error: BaseException | None = None
    while pending:
        if loop.time() >= deadline:
            raise KafkaTimeoutError(f"ListOffsets for {sorted(pending)} did not complete in {timeout_ms} ms: "
                                    f"{last_error}")
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp in pending:
            by_leader.setdefault(cluster.metadata.leader(tp), []).append(tp)
        retry = False
        if -1 in by_leader:
            retry = True
            last_error = broker_error(ErrorCode.LEADER_NOT_AVAILABLE, context=f"no leader for {by_leader[-1]}")
            del by_leader[-1]
        results = await asyncio.gather(*(_list_on(cluster, node, tps, pending, isolation_level)
                                         for node, tps in by_leader.items()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, KafkaError) or not result.retriable:
                    raise result
                retry = True
                last_error = result
                continue
            for tp, (code, answer) in result.items():
                if code == ErrorCode.NONE:
                    found[tp] = answer
                    del pending[tp]
                elif code.retriable:
                    retry = True
                    last_error = broker_error(code, context=f"ListOffsets {tp[0]}-{tp[1]}")
                    if code.refresh_metadata:
                        cluster.metadata.forget_leader(tp)
                else:
                    raise broker_error(code, context=f"ListOffsets {tp[0]}-{tp[1]}")
        if pending and retry:
            failures += 1
            version = cluster.metadata.version
            backoff_ms = min(cluster.retry_backoff_ms << min(failures - 1, 20), cluster.retry_backoff_max_ms)
            left_ms = int((deadline - loop.time()) * 1000)
            await cluster.wait_for_update(version, max(min(backoff_ms, left_ms), 1))
    return found


async def _list_on(cluster: Cluster, node: int, tps: Iterable[TopicPartition], timestamps: dict[TopicPartition, int],
                   isolation_level: int) -> dict[TopicPartition, tuple[ErrorCode, OffsetAndTimestamp]]:
    topics: dict[str, list[dict[str, int]]] = {}
    for tp in tps:
        topics.setdefault(tp[0], []).append({"partition_index": tp[1], "timestamp": timestamps[tp],
                                             "current_leader_epoch": cluster.metadata.leader_epoch(tp)})
    body = {"replica_id": -1, "isolation_level": isolation_level,
            "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]}
    response, _ = await cluster.request(ApiKey.LIST_OFFSETS, body, node_id=node)
    out = {}
    for topic in response["topics"]:
        for part in topic["partitions"]:
            out[(topic["name"], part["partition_index"])] = (
                error_code_for(part["error_code"]),
                OffsetAndTimestamp(part["offset"], part["timestamp"], part.get("leader_epoch", -1)))
    return out
