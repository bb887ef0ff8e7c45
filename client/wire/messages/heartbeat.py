"""Heartbeat (API key 12): versions 0-4, flexible 4+.

Request version history [S: ak clients/src/main/resources/common/message/HeartbeatRequest.json]:

    Version 1 and version 2 are the same as version 0.

    Starting from version 3, we add a new field called groupInstanceId to indicate member identity across restarts.

    Version 4 is the first flexible version.

Response version history [S: ak .../HeartbeatResponse.json]:

    Version 1 adds throttle time.

    Starting in version 2, on quota violation, brokers send out responses before throttling.

        Starting from version 3, heartbeatRequest supports a new field called groupInstanceId to indicate member
    identity across restarts.

    Version 4 is the first flexible version.
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("HeartbeatRequest", api_key=12, valid="0-4", flexible="4+", fields=[
    F("group_id", "string", "0+"),
    F("generation_id", "int32", "0+"),
    F("member_id", "string", "0+"),
    F("group_instance_id", "string", "3+", nullable="3+", default=None),
])

RESPONSE = Message("HeartbeatResponse", api_key=12, valid="0-4", flexible="4+", fields=[
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16", "0+"),
])

