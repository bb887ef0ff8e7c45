"""Produce (0), v3-8 served; v0-2 advertised (for librdkafka < 2.11.1's lz4 check) but answered
with UNSUPPORTED_VERSION, as Kafka 4 does.

Per partition: exactly one client batch, validated (client.wire.records.validate_client_batch:
CRC, counts, offsets, no control batch, size <= the topic's max.message.bytes, keys on compacted
topics), idempotence-checked, appended. acks=0 sends no response; acks=1 and acks=all complete
once appended (single node: the ISR is this broker, so the high watermark is the log end).
A failed append under acks=0 closes the connection, as Kafka does: there is no response to carry it.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

from broker.server import Handler
from client.wire.errors import ErrorCode
from client.wire.records import PRODUCER_ID_POS, validate_client_batch

if TYPE_CHECKING:
    from broker.broker import Broker

VALID_ACKS = (-1, 0, 1)
PRODUCER_ID = struct.Struct(">q")


def _error_partition(index: int, error: int, message: str | None = None) -> dict[str, Any]:
    return {"index": index, "error_code": error, "base_offset": -1, "log_append_time_ms": -1,
            "log_start_offset": -1, "error_message": message}


def handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        version = header.api_version
        quorum = broker.quorum
        acks = body["acks"]
        now_ms = int(time.time() * 1000)
        responses = []
        for topic in body["topic_data"]:
            name = topic["name"]
            results = []
            for part in topic["partition_data"]:
                index = part["index"]
                if version < 3:
                    results.append(_error_partition(index, ErrorCode.UNSUPPORTED_VERSION))
                    continue
                if acks not in VALID_ACKS:
                    results.append(_error_partition(index, ErrorCode.INVALID_REQUIRED_ACKS))
                    continue
                partition = broker.partitions.get((name, index))
                if partition is None or not broker.may_lead():
                    results.append(_error_partition(index, broker.not_leader_error(name, index)))
                    continue
                if quorum is not None and quorum.replication_factor(name) > 1:
                    results.append(_error_partition(index, ErrorCode.NOT_ENOUGH_REPLICAS,
                                                    "replication is not implemented yet"))
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
                results.append({"index": index, "error_code": result.error, "base_offset": result.base_offset,
                                "log_append_time_ms": result.log_append_time_ms,
                                "log_start_offset": result.log_start_offset, "error_message": result.message})
            responses.append({"name": name, "partition_responses": results})
        if acks == 0:
            # no response to carry an error: Kafka closes the connection so the producer notices
            if any(r["error_code"] for t in responses for r in t["partition_responses"]):
                conn.close()
            return None
        return {"responses": responses, "throttle_time_ms": 0}
    return handle
