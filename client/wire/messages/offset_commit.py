"""OffsetCommit (API key 8): versions 0-10, flexible 8+.

Versions 0-10 are the union of Kafka 4.x's 2-10 and the 0-9 of Kafka before 4.0
(KIP-896 removed old versions); the broker chooses which ones to advertise.

Request version history [S: ak clients/src/main/resources/common/message/OffsetCommitRequest.json]:

    Versions 0-1 were removed in Apache Kafka 4.0, Version 2 is the new baseline.

    Version 1 adds timestamp and group membership information, as well as the commit timestamp.

    Version 2 adds retention time.  It removes the commit timestamp added in version 1.

    Version 3 and 4 are the same as version 2.

    Version 5 removes the retention time, which is now controlled only by a broker configuration.

    Version 6 adds the leader epoch for fencing.

    version 7 adds a new field called groupInstanceId to indicate member identity across restarts.

    Version 8 is the first flexible version.

    Version 9 is the first version that can be used with the new consumer group protocol (KIP-848). The
    request is the same as version 8.

    Version 10 adds support for topic ids and removes support for topic names (KIP-848).

Response version history [S: ak .../OffsetCommitResponse.json]:

    Versions 0-1 were removed in Apache Kafka 4.0, Version 2 is the new baseline.

    Versions 1 and 2 are the same as version 0.

    Version 3 adds the throttle time to the response.

    Starting in version 4, on quota violation, brokers send out responses before throttling.

    Versions 5 and 6 are the same as version 4.

        Version 7 offsetCommitRequest supports a new field called groupInstanceId to indicate member identity across
    restarts.

    Version 8 is the first flexible version.

    Version 9 is the first version that can be used with the new consumer group protocol (KIP-848). The response is
    the same as version 8 but can return STALE_MEMBER_EPOCH when the new consumer group protocol is used and
    GROUP_ID_NOT_FOUND when the group does not exist for both protocols.

    Version 10 adds support for topic ids and removes support for topic names (KIP-848).
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("OffsetCommitRequest", api_key=8, valid="0-10", flexible="8+", fields=[
    F("group_id", "string", "0+"),
    F("generation_id_or_member_epoch", "int32", "1+", default=-1),
    F("member_id", "string", "1+"),
    F("group_instance_id", "string", "7+", nullable="7+", default=None),
    F("retention_time_ms", "int64", "2-4", default=-1),
    F("topics", "[]OffsetCommitRequestTopic", "0+", fields=[
        F("name", "string", "0-9"),
        F("topic_id", "uuid", "10+"),
        F("partitions", "[]OffsetCommitRequestPartition", "0+", fields=[
            F("partition_index", "int32", "0+"),
            F("committed_offset", "int64", "0+"),
            F("committed_leader_epoch", "int32", "6+", default=-1),
            F("commit_timestamp", "int64", "1", default=-1),
            F("committed_metadata", "string", "0+", nullable="0+"),
        ]),
    ]),
])

RESPONSE = Message("OffsetCommitResponse", api_key=8, valid="0-10", flexible="8+", fields=[
    F("throttle_time_ms", "int32", "3+"),
    F("topics", "[]OffsetCommitResponseTopic", "0+", fields=[
        F("name", "string", "0-9"),
        F("topic_id", "uuid", "10+"),
        F("partitions", "[]OffsetCommitResponsePartition", "0+", fields=[
            F("partition_index", "int32", "0+"),
            F("error_code", "int16", "0+"),
        ]),
    ]),
])

