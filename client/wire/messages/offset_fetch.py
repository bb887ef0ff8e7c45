"""OffsetFetch (API key 9): versions 0-10, flexible 6+.

Versions 0-10 are the union of Kafka 4.x's 1-10 and the 0-9 of Kafka before 4.0
(KIP-896 removed old versions); the broker chooses which ones to advertise.

Request version history [S: ak clients/src/main/resources/common/message/OffsetFetchRequest.json]:

    Version 0 was removed in Apache Kafka 4.0, Version 1 is the new baseline.

    In version 0, the request read offsets from ZK.

    Starting in version 1, the broker supports fetching offsets from the internal __consumer_offsets topic.

    Starting in version 2, the request can contain a null topics array to indicate that offsets
    for all topics should be fetched. It also returns a top level error code
    for group or coordinator level errors.

    Version 3, 4, and 5 are the same as version 2.

    Version 6 is the first flexible version.

    Version 7 is adding the require stable flag.

    Version 8 is adding support for fetching offsets for multiple groups at a time.

    Version 9 is the first version that can be used with the new consumer group protocol (KIP-848). It adds
    the MemberId and MemberEpoch fields. Those are filled in and validated when the new consumer protocol is used.

    Version 10 adds support for topic ids and removes support for topic names (KIP-848).

Response version history [S: ak .../OffsetFetchResponse.json]:

    Version 0 was removed in Apache Kafka 4.0, Version 1 is the new baseline.

    Version 1 is the same as version 0.

    Version 2 adds a top-level error code.

    Version 3 adds the throttle time.

    Starting in version 4, on quota violation, brokers send out responses before throttling.

    Version 5 adds the leader epoch to the committed offset.

    Version 6 is the first flexible version.

    Version 7 adds pending offset commit as new error response on partition level.

    Version 8 is adding support for fetching offsets for multiple groups

    Version 9 is the first version that can be used with the new consumer group protocol (KIP-848). The response is
    the same as version 8 but can return STALE_MEMBER_EPOCH and UNKNOWN_MEMBER_ID errors when the new consumer group
    protocol is used.

    Version 10 adds support for topic ids and removes support for topic names (KIP-848).
    It can return UNKNOWN_TOPIC_ID if topic IDs used and the topic is not found in metadata.
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("OffsetFetchRequest", api_key=9, valid="0-10", flexible="6+", fields=[
    F("group_id", "string", "0-7"),
    F("topics", "[]OffsetFetchRequestTopic", "0-7", nullable="2-7", fields=[
        F("name", "string", "0-7"),
        F("partition_indexes", "[]int32", "0-7"),
    ]),
    F("groups", "[]OffsetFetchRequestGroup", "8+", fields=[
        F("group_id", "string", "8+"),
        F("member_id", "string", "9+", nullable="9+", default=None),
        F("member_epoch", "int32", "9+", default=-1),
        F("topics", "[]OffsetFetchRequestTopics", "8+", nullable="8+", fields=[
            F("name", "string", "8-9"),
            F("topic_id", "uuid", "10+"),
            F("partition_indexes", "[]int32", "8+"),
        ]),
    ]),
    F("require_stable", "bool", "7+", default=False),
])

RESPONSE = Message("OffsetFetchResponse", api_key=9, valid="0-10", flexible="6+", fields=[
    F("throttle_time_ms", "int32", "3+"),
    F("topics", "[]OffsetFetchResponseTopic", "0-7", fields=[
        F("name", "string", "0-7"),
        F("partitions", "[]OffsetFetchResponsePartition", "0-7", fields=[
            F("partition_index", "int32", "0-7"),
            F("committed_offset", "int64", "0-7"),
            F("committed_leader_epoch", "int32", "5-7", default=-1),
            F("metadata", "string", "0-7", nullable="0-7"),
            F("error_code", "int16", "0-7"),
        ]),
    ]),
    F("error_code", "int16", "2-7"),
    F("groups", "[]OffsetFetchResponseGroup", "8+", fields=[
        F("group_id", "string", "8+"),
        F("topics", "[]OffsetFetchResponseTopics", "8+", fields=[
            F("name", "string", "8-9"),
            F("topic_id", "uuid", "10+"),
            F("partitions", "[]OffsetFetchResponsePartitions", "8+", fields=[
                F("partition_index", "int32", "8+"),
                F("committed_offset", "int64", "8+"),
                F("committed_leader_epoch", "int32", "8+", default=-1),
                F("metadata", "string", "8+", nullable="8+"),
                F("error_code", "int16", "8+"),
            ]),
        ]),
        F("error_code", "int16", "8+"),
    ]),
])

