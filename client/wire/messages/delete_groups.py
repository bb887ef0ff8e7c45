"""DeleteGroups (API key 42): versions 0-2, flexible 2+.

Request version history [S: ak clients/src/main/resources/common/message/DeleteGroupsRequest.json]:

    Version 1 is the same as version 0.

    Version 2 is the first flexible version.

Response version history [S: ak .../DeleteGroupsResponse.json]:

    Starting in version 1, on quota violation, brokers send out responses before throttling.

    Version 2 is the first flexible version.
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("DeleteGroupsRequest", api_key=42, valid="0-2", flexible="2+", fields=[
    F("groups_names", "[]string", "0+"),
])

RESPONSE = Message("DeleteGroupsResponse", api_key=42, valid="0-2", flexible="2+", fields=[
    F("throttle_time_ms", "int32", "0+"),
    F("results", "[]DeletableGroupResult", "0+", fields=[
        F("group_id", "string", "0+"),
        F("error_code", "int16", "0+"),
    ]),
])
