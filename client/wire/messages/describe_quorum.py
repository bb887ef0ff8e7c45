"""DescribeQuorum (API key 55): versions 0-2, flexible 0+ (KIP-595; v1 KIP-836, v2 KIP-853).

Served by every replog broker for the metadata log `__cluster_metadata`-0 (broker/handlers/
describe_quorum.py); Kafka serves it on brokers (forwarded to the active controller) and
controllers.

Request version history [S: ak clients/src/main/resources/common/message/DescribeQuorumRequest.json]:

    Version 1 adds additional fields in the response. The request is unchanged (KIP-836).
    Version 2 adds additional fields in the response. The request is unchanged (KIP-853).

Response version history [S: ak .../DescribeQuorumResponse.json]:

    Version 1 adds LastFetchTimeStamp and LastCaughtUpTimestamp in ReplicaState (KIP-836).
    Version 2 adds ErrorMessage, Nodes, ErrorMessage in PartitionData, ReplicaDirectoryId in
    ReplicaState (KIP-853).

`ReplicaState` is a common struct of the Kafka schema, used by `current_voters` and `observers`;
here it is spelled out in both (same fields).
"""

from __future__ import annotations

from client.wire.schema import F, Field, Message


def _replica_state(name: str) -> Field:
    return F(name, "[]ReplicaState", "0+", fields=[
        F("replica_id", "int32", "0+"),
        F("replica_directory_id", "uuid", "2+"),
        F("log_end_offset", "int64", "0+"),
        F("last_fetch_timestamp", "int64", "1+", default=-1),
        F("last_caught_up_timestamp", "int64", "1+", default=-1),
    ])


REQUEST = Message("DescribeQuorumRequest", api_key=55, valid="0-2", flexible="0+", fields=[
    F("topics", "[]TopicData", "0+", fields=[
        F("topic_name", "string", "0+"),
        F("partitions", "[]PartitionData", "0+", fields=[
            F("partition_index", "int32", "0+"),
        ]),
    ]),
])

RESPONSE = Message("DescribeQuorumResponse", api_key=55, valid="0-2", flexible="0+", fields=[
    F("error_code", "int16", "0+"),
    F("error_message", "string", "2+", nullable="2+", default=None),
    F("topics", "[]TopicData", "0+", fields=[
        F("topic_name", "string", "0+"),
        F("partitions", "[]PartitionData", "0+", fields=[
            F("partition_index", "int32", "0+"),
            F("error_code", "int16", "0+"),
            F("error_message", "string", "2+", nullable="2+", default=None),
            F("leader_id", "int32", "0+"),
            F("leader_epoch", "int32", "0+"),
            F("high_watermark", "int64", "0+"),
            _replica_state("current_voters"),
            _replica_state("observers"),
        ]),
    ]),
    F("nodes", "[]Node", "2+", fields=[
        F("node_id", "int32", "2+"),
        F("listeners", "[]Listener", "2+", fields=[
            F("name", "string", "2+"),
            F("host", "string", "2+"),
            F("port", "uint16", "2+"),
        ]),
    ]),
])
