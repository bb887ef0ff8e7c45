"""FindCoordinator (API key 10): versions 0-6, flexible 3+.

Request version history [S: ak clients/src/main/resources/common/message/FindCoordinatorRequest.json]:

    Version 1 adds KeyType.

    Version 2 is the same as version 1.

    Version 3 is the first flexible version.

    Version 4 adds support for batching via CoordinatorKeys (KIP-699)

    Version 5 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).

    Version 6 adds support for share groups (KIP-932).
    For key type SHARE (2), the coordinator key format is "groupId:topicId:partition".

Response version history [S: ak .../FindCoordinatorResponse.json]:

    Version 1 adds throttle time and error messages.

    Starting in version 2, on quota violation, brokers send out responses before throttling.

    Version 3 is the first flexible version.

    Version 4 adds support for batching via Coordinators (KIP-699)

    Version 5 adds support for new error code TRANSACTION_ABORTABLE (KIP-890).

    Version 6 adds support for share groups (KIP-932).
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("FindCoordinatorRequest", api_key=10, valid="0-6", flexible="3+", fields=[
    F("key", "string", "0-3"),
    F("key_type", "int8", "1+"),
    F("coordinator_keys", "[]string", "4+"),
])

RESPONSE = Message("FindCoordinatorResponse", api_key=10, valid="0-6", flexible="3+", fields=[
    F("throttle_time_ms", "int32", "1+"),
    F("error_code", "int16", "0-3"),
    F("error_message", "string", "1-3", nullable="1-3"),
    F("node_id", "int32", "0-3"),
    F("host", "string", "0-3"),
    F("port", "int32", "0-3"),
    F("coordinators", "[]Coordinator", "4+", fields=[
        F("key", "string", "4+"),
        F("node_id", "int32", "4+"),
        F("host", "string", "4+"),
        F("port", "int32", "4+"),
        F("error_code", "int16", "4+"),
        F("error_message", "string", "4+", nullable="4+"),
    ]),
])

