"""DeleteRecords (API key 21): versions 0-2, flexible 2+.

Request version history [S: ak clients/src/main/resources/common/message/DeleteRecordsRequest.json]:

    Version 1 is the same as version 0.

    Version 2 is the first flexible version.

Response version history [S: ak .../DeleteRecordsResponse.json]:

    Starting in version 1, on quota violation, brokers send out responses before throttling.

    Version 2 is the first flexible version.
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("DeleteRecordsRequest", api_key=21, valid="0-2", flexible="2+", fields=[
    F("topics", "[]DeleteRecordsTopic", "0+", fields=[
        F("name", "string", "0+"),
        F("partitions", "[]DeleteRecordsPartition", "0+", fields=[
            F("partition_index", "int32", "0+"),
            F("offset", "int64", "0+"),
        ]),
    ]),
    F("timeout_ms", "int32", "0+"),
])

RESPONSE = Message("DeleteRecordsResponse", api_key=21, valid="0-2", flexible="2+", fields=[
    F("throttle_time_ms", "int32", "0+"),
    F("topics", "[]DeleteRecordsTopicResult", "0+", fields=[
        F("name", "string", "0+"),
        F("partitions", "[]DeleteRecordsPartitionResult", "0+", fields=[
            F("partition_index", "int32", "0+"),
            F("low_watermark", "int64", "0+"),
            F("error_code", "int16", "0+"),
        ]),
    ]),
])

