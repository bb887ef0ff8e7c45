"""ListOffsets (2) v1-5 and OffsetForLeaderEpoch (23) v2-3.

ListOffsets: timestamp -1 (latest) answers the high watermark (also the last stable offset: no
transactions), -2 (earliest) the log start offset, any other timestamp the first offset whose
record timestamp is >= it (or -1 if none); leader_epoch (v4+) is the epoch of the batch holding
the offset (the current epoch for latest). OffsetForLeaderEpoch: (largest epoch <= requested,
its end offset), as Kafka's LeaderEpochFileCache.endOffsetFor (KIP-101/KIP-320).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.server import Handler
from client.wire.errors import ErrorCode
from storage.errors import StorageError

if TYPE_CHECKING:
    from broker.broker import Broker

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


def list_offsets_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        topics = []
        for topic in body["topics"]:
            parts = []
            for request in topic["partitions"]:
                index = request["partition_index"]
                out = {"partition_index": index, "error_code": 0, "timestamp": -1, "offset": -1, "leader_epoch": -1}
                partition = broker.partitions.get((topic["name"], index))
                if partition is None or not partition.is_leader:
                    out["error_code"] = broker.not_leader_error(topic["name"], index)
                elif error := partition.check_leader_epoch(request.get("current_leader_epoch", -1)):
                    out["error_code"] = error
                elif partition.leader_state is not None and \
                        partition.high_watermark < partition.leader_state.epoch_start_offset:
                    # KIP-207: a new leader's high watermark has not yet reached what the previous
                    # leader may have exposed; an answer now could go backwards
                    out["error_code"] = ErrorCode.OFFSET_NOT_AVAILABLE
                else:
                    log_ = partition.log
                    timestamp = request["timestamp"]
                    try:
                        if timestamp == LATEST_TIMESTAMP:
                            out["offset"], out["leader_epoch"] = partition.high_watermark, partition.leader_epoch
                        elif timestamp == EARLIEST_TIMESTAMP:
                            out["offset"] = log_.log_start_offset
                            out["leader_epoch"] = log_.epochs.epoch_for_offset(log_.log_start_offset)
                        else:
                            found = log_.offset_for_timestamp(timestamp)
                            if found is not None and found[0] < partition.high_watermark:
                                out["offset"], out["timestamp"] = found
                                out["leader_epoch"] = log_.epochs.epoch_for_offset(found[0])
                    except StorageError as exc:
                        out["error_code"] = exc.error_code
                parts.append(out)
            topics.append({"name": topic["name"], "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}
    return handle


def offset_for_leader_epoch_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        topics = []
        for topic in body["topics"]:
            parts = []
            for request in topic["partitions"]:
                index = request["partition"]
                out = {"error_code": 0, "partition": index, "leader_epoch": -1, "end_offset": -1}
                partition = broker.partitions.get((topic["topic"], index))
                # consumers ask the leader; followers (replica_id >= 0) may ask any replica
                if partition is None or (not partition.is_leader and body.get("replica_id", -1) < 0):
                    out["error_code"] = broker.not_leader_error(topic["topic"], index)
                elif error := partition.check_leader_epoch(request.get("current_leader_epoch", -1)):
                    out["error_code"] = error
                else:
                    out["leader_epoch"], out["end_offset"] = partition.log.end_offset_for_epoch(
                        request["leader_epoch"])
                parts.append(out)
            topics.append({"topic": topic["topic"], "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}
    return handle
