"""Raft messages on the wire: RaftMessage (API key 1000) frames and their acknowledgements.

One controller-core `Message` travels as one request (client/wire/messages/raft_message.py has
the schema and the reasons for one internal API rather than Kafka's KRaft RPCs; docs/raft.md
"Wire"). Frames use client/wire/framing.py's int32 size prefix and the headers protocol.py gives
an API key outside its Kafka tables:

    request   size | api_key 1000 | api_version 0 | correlation_id | client_id (int16 string) | body
    response  size | correlation_id | body {error_code}

The acknowledgement says only "received": a node's reply to a Raft message is a Raft message of
its own, sent on its own outbound connection. The sender uses acknowledgements to bound what is
in flight and to detect a dead peer (request timeout), see controller/transport.py.

Decoding is strict (ARCHITECTURE.md §3 rule 2: a peer breaking the protocol has its connection
closed): an unknown type or status, a negative id, index or term, entries anywhere but an OK
fetch response or not continuing its anchor (contiguous from `index + 1`, terms never decreasing
from `log_term` and never above the message's term), a snapshot anywhere but a SNAPSHOT fetch
response, all raise `ProtocolError`. Entry batches are CRC-checked (controller/raft_log.py).
"""

from __future__ import annotations

import struct
from typing import Any

from client.wire.codec import DecodeLimits, ProtocolError, encode_nullable_string
from client.wire.messages import raft_message
from client.wire.protocol import RequestHeader, decode_request_header, peek_correlation_id
from controller.raft.messages import FetchStatus, Message, MessageType
from controller.raft.storage import Snapshot
from controller.raft_log import TERM_MAX, EntryDecodeError, decode_entries, encode_entries

RAFT_API_KEY = raft_message.API_KEY
RAFT_API_VERSION = 0
HOST_BYTES_MAX = 255
ERROR_NONE = 0
ERROR_INVALID_REQUEST = 42  # Kafka's INVALID_REQUEST: e.g. a message addressed to another node

_HEADER = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_CORRELATION_ID = struct.Struct(">i")
_INT64_MAX = 2**63 - 1
_ACK_OK = raft_message.RESPONSE.encode({"error_code": ERROR_NONE}, RAFT_API_VERSION)


def encode_message(m: Message, correlation_id: int, src_address: tuple[str, int], client_id: str | None) -> bytes:
    """One framed RaftMessage request carrying `m`; `src_address` is the sender's listener."""
    assert 0 <= m.term <= TERM_MAX, f"term {m.term} does not fit int32"
    snap = m.snapshot
    body: dict[str, Any] = {
        "src_host": src_address[0], "src_port": src_address[1],
        "type": int(m.type), "term": m.term, "src": m.src, "dst": m.dst, "index": m.index,
        "log_term": m.log_term, "commit": m.commit, "reject": m.reject, "status": int(m.status),
        "hint_index": m.hint_index, "hint_term": m.hint_term,
        "leader_hint": -1 if m.leader_hint is None else m.leader_hint,
        "transfer": m.transfer, "fetch_id": m.fetch_id,
        "entries": encode_entries(m.entries) if m.entries else None,
    }
    if snap is not None:
        body.update(snapshot_index=snap.index, snapshot_term=snap.term, snapshot_data=snap.data)
    out: list[Any] = [_HEADER.pack(RAFT_API_KEY, RAFT_API_VERSION, correlation_id), encode_nullable_string(client_id)]
    raft_message.REQUEST.encode_into(body, RAFT_API_VERSION, out)
    payload = b"".join(bytes(p) if p.__class__ is memoryview else p for p in out)
    return _SIZE.pack(len(payload)) + payload


def decode_message(frame: bytes | memoryview, limits: DecodeLimits) -> tuple[RequestHeader, Message, tuple[str, int]]:
    """(header, message, sender's listener address) of a request frame; ProtocolError if invalid."""
    header, pos = decode_request_header(frame, limits)
    if header.api_key != RAFT_API_KEY or header.api_version != RAFT_API_VERSION:
        raise ProtocolError(f"controller listener serves only RaftMessage v0, not {header.api_key}"
                            f" v{header.api_version}")
    body, _end = raft_message.REQUEST.decode(frame, RAFT_API_VERSION, pos, limits)
    return header, _message_from(body), _address_from(body)


def encode_ack(correlation_id: int, error_code: int = ERROR_NONE) -> bytes:
    body = _ACK_OK if error_code == ERROR_NONE else raft_message.RESPONSE.encode(
        {"error_code": error_code}, RAFT_API_VERSION)
    payload = _CORRELATION_ID.pack(correlation_id) + body
    return _SIZE.pack(len(payload)) + payload


def decode_ack(frame: bytes | memoryview) -> tuple[int, int]:
    """(correlation_id, error_code) of a response frame."""
    correlation_id = peek_correlation_id(frame)
    body, _end = raft_message.RESPONSE.decode(frame, RAFT_API_VERSION, 4)
    return correlation_id, body["error_code"]


def _address_from(body: dict[str, Any]) -> tuple[str, int]:
    host, port = body["src_host"], body["src_port"]
    if not 0 < len(host.encode()) <= HOST_BYTES_MAX or not 0 < port <= 65535:
        raise ProtocolError(f"bad sender address {host!r}:{port}")
    return host, port


def _message_from(body: dict[str, Any]) -> Message:
    try:
        mtype = MessageType(body["type"])
        status = FetchStatus(body["status"])
    except ValueError as exc:
        raise ProtocolError(f"RaftMessage: {exc}") from exc
    for name in ("term", "src", "dst", "index", "log_term", "commit", "hint_index", "hint_term", "fetch_id"):
        if body[name] < 0:
            raise ProtocolError(f"RaftMessage: negative {name}")
    leader_hint = body["leader_hint"]
    if leader_hint < -1:
        raise ProtocolError("RaftMessage: leader_hint below -1")
    is_fetch_resp = mtype is MessageType.FETCH_RESP
    term, index, log_term = body["term"], body["index"], body["log_term"]
    entries: tuple = ()
    records = body["entries"]
    if records is not None and len(records):
        if not (is_fetch_resp and status is FetchStatus.OK):
            raise ProtocolError(f"RaftMessage: entries on a {mtype.name} {status.name}")
        try:
            entries = tuple(decode_entries(records, first_index=index + 1))
        except EntryDecodeError as exc:
            raise ProtocolError(f"RaftMessage: {exc}") from exc
        if entries[0].term < log_term or entries[-1].term > term:
            raise ProtocolError("RaftMessage: entry terms outside [log_term, term]")
    snapshot = None
    if body["snapshot_index"] >= 0:
        if not (is_fetch_resp and status is FetchStatus.SNAPSHOT) or body["snapshot_index"] == 0 \
                or not 0 < body["snapshot_term"] <= term:
            raise ProtocolError("RaftMessage: unexpected or malformed snapshot")
        snapshot = Snapshot(body["snapshot_index"], body["snapshot_term"], body["snapshot_data"])
    elif is_fetch_resp and status is FetchStatus.SNAPSHOT:
        raise ProtocolError("RaftMessage: SNAPSHOT fetch response without a snapshot")
    return Message(mtype, term, body["src"], body["dst"], index=index, log_term=log_term, entries=entries,
                   commit=body["commit"], reject=body["reject"], status=status, hint_index=body["hint_index"],
                   hint_term=body["hint_term"], leader_hint=None if leader_hint == -1 else leader_hint,
                   snapshot=snapshot, transfer=body["transfer"], fetch_id=body["fetch_id"])
