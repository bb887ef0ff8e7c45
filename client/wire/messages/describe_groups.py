"""DescribeGroups (API key 15): versions 0-6, flexible 5+.

Versions 0-6 are the union of Kafka 4.x's 0-6 and the 0-5 of Kafka before 4.0
(KIP-896 removed old versions); the broker chooses which ones to advertise.

Request version history [S: ak clients/src/main/resources/common/message/DescribeGroupsRequest.json]:

    Versions 1 and 2 are the same as version 0.

    Starting in version 3, authorized operations can be requested.

    Starting in version 4, the response will include group.instance.id info for members.

    Version 5 is the first flexible version.

    Version 6 returns error code GROUP_ID_NOT_FOUND if the group ID is not found (KIP-1043).

Response version history [S: ak .../DescribeGroupsResponse.json]:

    Version 1 added throttle time.

    Starting in version 2, on quota violation, brokers send out responses before throttling.

    Starting in version 3, brokers can send authorized operations.

    Starting in version 4, the response will optionally include group.instance.id info for members.

    Version 5 is the first flexible version.

    Version 6 returns error code GROUP_ID_NOT_FOUND if the group ID is not found (KIP-1043).
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("DescribeGroupsRequest", api_key=15, valid="0-6", flexible="5+", fields=[
    F("groups", "[]string", "0+"),
    F("include_authorized_operations", "bool", "3+"),
])

RESPONSE = Message("DescribeGroupsResponse", api_key=15, valid="0-6", flexible="5+", fields=[
    F("throttle_time_ms", "int32", "1+"),
    F("groups", "[]DescribedGroup", "0+", fields=[
        F("error_code", "int16", "0+"),
        F("error_message", "string", "6+", nullable="6+", default=None),
        F("group_id", "string", "0+"),
        F("group_state", "string", "0+"),
        F("protocol_type", "string", "0+"),
        F("protocol_data", "string", "0+"),
        F("members", "[]DescribedGroupMember", "0+", fields=[
            F("member_id", "string", "0+"),
            F("group_instance_id", "string", "4+", nullable="4+", default=None),
            F("client_id", "string", "0+"),
            F("client_host", "string", "0+"),
            F("member_metadata", "bytes", "0+"),
            F("member_assignment", "bytes", "0+"),
        ]),
        F("authorized_operations", "int32", "3+", default=-2147483648),
    ]),
])

