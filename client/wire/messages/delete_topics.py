"""DeleteTopics (API key 20): versions 0-6, flexible 4+.

Versions 0-6 are the union of Kafka 4.x's 1-6 and the 0-6 of Kafka before 4.0
(KIP-896 removed old versions); the broker chooses which ones to advertise.

Request version history [S: ak clients/src/main/resources/common/message/DeleteTopicsRequest.json]:

    Version 0 was removed in Apache Kafka 4.0, Version 1 is the new baseline.
    Versions 0, 1, 2, and 3 are the same.

    Version 4 is the first flexible version.

    Version 5 adds ErrorMessage in the response and may return a THROTTLING_QUOTA_EXCEEDED error
    in the response if the topics deletion is throttled (KIP-599).

    Version 6 reorganizes topics, adds topic IDs and allows topic names to be null.

Response version history [S: ak .../DeleteTopicsResponse.json]:

    Version 0 was removed in Apache Kafka 4.0, Version 1 is the new baseline.

    Version 1 adds the throttle time.

    Starting in version 2, on quota violation, brokers send out responses before throttling.

    Starting in version 3, a TOPIC_DELETION_DISABLED error code may be returned.

    Version 4 is the first flexible version.

    Version 5 adds ErrorMessage in the response and may return a THROTTLING_QUOTA_EXCEEDED error
    in the response if the topics deletion is throttled (KIP-599).

    Version 6 adds topic ID to responses. An UNSUPPORTED_VERSION error code will be returned when attempting to
        delete using topic IDs when IBP < 2.8. UNKNOWN_TOPIC_ID error code will be returned when IBP is at least
    2.8, but
    the topic ID was not found.
"""

from __future__ import annotations

from client.wire.schema import F, Message

REQUEST = Message("DeleteTopicsRequest", api_key=20, valid="0-6", flexible="4+", fields=[
    F("topics", "[]DeleteTopicState", "6+", fields=[
        F("name", "string", "6+", nullable="6+", default=None),
        F("topic_id", "uuid", "6+"),
    ]),
    F("topic_names", "[]string", "0-5"),
    F("timeout_ms", "int32", "0+"),
])

RESPONSE = Message("DeleteTopicsResponse", api_key=20, valid="0-6", flexible="4+", fields=[
    F("throttle_time_ms", "int32", "1+"),
    F("responses", "[]DeletableTopicResult", "0+", fields=[
        F("name", "string", "0+", nullable="6+"),
        F("topic_id", "uuid", "6+"),
        F("error_code", "int16", "0+"),
        F("error_message", "string", "5+", nullable="5+", default=None),
    ]),
])

