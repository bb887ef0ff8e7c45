"""SyncGroup (API key 14): versions 0-5, flexible 4+.

Request version history [S: ak clients/src/main/resources/common/message/SyncGroupRequest.json]:

    Versions 1 and 2 are the same as version 0.

    Starting from version 3, we add a new field called groupInstanceId to indicate member identity across restarts.

    Version 4 is the first flexible version.

    Starting from version 5, the client sends the Protocol Type and the Protocol Name
    to the broker (KIP-559). The broker will reject the request if they are inconsistent
    with the Type and Name known by the broker.

Response version history [S: ak .../SyncGroupResponse.json]:

    Version 1 adds throttle time.

    Starting in version 2, on quota violation, brokers send out responses before throttling.

        Starting from version 3, syncGroupRequest supports a new field called groupInstanceId to indicate member
    identity across restarts.

    Version 4 is the first flexible version.

    Starting from version 5, the broker sends back the Protocol Type and the Protocol Name
    to the client (KIP-559).
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("SyncGroupRequest", api_key=14, valid="0-5", flexible="4+", fields=[
    F("group_id", "string", "0+"),
    F("generation_id", "int32", "0+"),
    F("member_id", "string", "0+"),
    F("group_instance_id", "string", "3+", nullable="3+", default=None),
    F("protocol_type", "string", "5+", nullable="5+", default=None),
    F("protocol_name", "string", "5+", nullable="5+", default=None),
    F("assignments", "[]SyncGroupRequestAssignment", "0+", fields=[
        F("member_id", "string", "0+"),
        F("assignment", "bytes", "0+"),
    ]),
])

RESPONSE = Message("SyncGroupResponse", api_key=14, valid="0-5", flexible="4+", fields=[
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16", "0+"),
    F("protocol_type", "string", "5+", nullable="5+", default=None),
    F("protocol_name", "string", "5+", nullable="5+", default=None),
    F("assignment", "bytes", "0+"),
])

