"""ControllerRequest (API key 1001, replog-internal): a broker's (or admin's) request to the active controller.

Version 0, flexible. Not a Kafka API, and deliberately not in `messages.REQUESTS` (those tables are
the Kafka APIs, cross-checked against kafka-python; same reason as RaftMessage, key 1000).
controller/controller_rpc.py frames it with the headers protocol.py gives a key outside its tables:
request header v1 (api_key, api_version, correlation_id, client_id), response header v0
(correlation_id).

Request: `op` names the operation (register_broker, heartbeat, create_topics, delete_topics,
alter_configs, alter_partition, allocate_producer_ids, elect_preferred_leaders) and `payload` is
its arguments as one orjson object (docs/controller.md lists the shapes).

Response: `error_code` is the routing outcome — NONE (the operation ran; its own per-item errors are
in `payload`), NOT_CONTROLLER (41; `leader_id` is the active controller this node knows, -1 if
none), REQUEST_TIMED_OUT (7; the outcome is unknown, retry), INVALID_REQUEST (42; malformed
arguments). `payload` is the operation's result as one orjson object (empty on an error).

Why one internal API rather than BrokerRegistration (62) / BrokerHeartbeat (63) / CreateTopics
forwarding / AlterPartition (56) / AllocateProducerIds (67): only replog brokers talk to replog
controllers, the builder's request and result types are the contract, and one envelope keeps the
whole controller RPC surface in one small module (docs/controller.md "Wire").
"""

from __future__ import annotations

from client.wire.schema import F, Message

API_KEY = 1001

REQUEST = Message("ControllerRequestRequest", api_key=API_KEY, valid="0", flexible="0+", fields=[
    F("op", "string", "0+"),
    F("payload", "bytes", "0+"),
])

RESPONSE = Message("ControllerRequestResponse", api_key=API_KEY, valid="0", flexible="0+", fields=[
    F("error_code", "int16", "0+"),
    F("leader_id", "int32", "0+", default=-1),
    F("payload", "bytes", "0+"),
])
