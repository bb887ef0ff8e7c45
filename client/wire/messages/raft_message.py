"""RaftMessage (API key 1000, replog-internal): one controller Raft message, one-way. Version 0, flexible.

Not a Kafka API: the controller quorum carries its sans-IO core's messages (controller/raft/
messages.py) in this one request instead of mapping them onto Vote (52), BeginQuorumEpoch (53),
EndQuorumEpoch (54), Fetch (1) and FetchSnapshot (59); docs/raft.md "Wire" says why. Only
controller listeners serve it; brokers never advertise it.

Deliberately not in `messages.REQUESTS`: those tables are the Kafka APIs (cross-checked against
kafka-python API by API). controller/rpc.py frames it with client/wire/framing.py and the
headers protocol.py assigns to an API key outside its tables: request header v1 (api_key,
api_version, correlation_id, client_id), response header v0 (correlation_id).

Request: the sender's controller listener (`src_host`, `src_port`, so that a leader can answer
observers that are not in its static voter map), then the message's fields by name. `entries` is
a run of Kafka record batches (partitionLeaderEpoch = term, offset = index - 1, the bytes
controller/raft_log.py stores); `leader_hint` -1 means none; `snapshot_index` -1 means no
snapshot (the snapshot fields are tagged: absent on every message but a snapshot transfer).

Response: `error_code` only — an acknowledgement that the message was received (0) or refused
(INVALID_REQUEST: addressed to another node). Replies to Raft messages are Raft messages of their
own, sent on the replier's own connection.
"""

from __future__ import annotations

from client.wire.schema import F, Message

API_KEY = 1000

REQUEST = Message("RaftMessageRequest", api_key=API_KEY, valid="0", flexible="0+", fields=[
    F("src_host", "string", "0+"),
    F("src_port", "int32", "0+"),
    F("type", "int8", "0+"),
    F("term", "int32", "0+"),
    F("src", "int32", "0+"),
    F("dst", "int32", "0+"),
    F("index", "int64", "0+"),
    F("log_term", "int32", "0+"),
    F("commit", "int64", "0+"),
    F("reject", "bool", "0+"),
    F("status", "int8", "0+"),
    F("hint_index", "int64", "0+"),
    F("hint_term", "int32", "0+"),
    F("leader_hint", "int32", "0+", default=-1),
    F("transfer", "bool", "0+"),
    F("fetch_id", "int64", "0+"),
    F("entries", "records", "0+", nullable="0+"),
    F("snapshot_index", "int64", "0+", tag=0, default=-1),
    F("snapshot_term", "int32", "0+", tag=1, default=0),
    F("snapshot_data", "bytes", "0+", tag=2, default=b""),
])

RESPONSE = Message("RaftMessageResponse", api_key=API_KEY, valid="0", flexible="0+", fields=[
    F("error_code", "int16", "0+"),
])
