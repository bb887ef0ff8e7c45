"""The controller wire (controller/rpc.py) and transport (controller/transport.py) on real sockets."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from client.wire.codec import DEFAULT_LIMITS, ProtocolError
from controller.raft import Entry, EntryType, FetchStatus, Message, MessageType, Snapshot
from controller.rpc import decode_ack, decode_message, encode_ack, encode_message
from controller.transport import RaftTransport, TransportConfig

MT = MessageType
ADDRESS = ("127.0.0.1", 9093)


def run(coro, timeout_s: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame_payload(frame: bytes) -> bytes:
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    return frame[4:]


SAMPLES = [
    Message(MT.PRE_VOTE, 5, 1, 2, index=10, log_term=4),
    Message(MT.VOTE, 5, 1, 2, index=10, log_term=4, transfer=True),
    Message(MT.VOTE_RESP, 5, 2, 1, reject=True),
    Message(MT.BEGIN_QUORUM_EPOCH, 6, 1, 3),
    Message(MT.BEGIN_QUORUM_EPOCH_RESP, 7, 3, 1, leader_hint=2),
    Message(MT.FETCH, 6, 3, 1, index=9, log_term=4, commit=8, fetch_id=77),
    Message(MT.FETCH_RESP, 6, 1, 3, index=9, log_term=4, commit=12, fetch_id=77,
            entries=(Entry(5, 10, b"a"), Entry(6, 11, b"", EntryType.NOOP), Entry(6, 12, b"x" * 3000))),
    Message(MT.FETCH_RESP, 6, 1, 3, index=9, log_term=5, status=FetchStatus.DIVERGING, hint_index=7,
            hint_term=4, fetch_id=78),
    Message(MT.FETCH_RESP, 6, 1, 3, status=FetchStatus.SNAPSHOT, snapshot=Snapshot(40, 6, b"state"), commit=41),
    Message(MT.FETCH_RESP, 6, 2, 3, status=FetchStatus.NOT_LEADER, leader_hint=None, fetch_id=3),
    Message(MT.TIMEOUT_NOW, 6, 1, 2),
]


@pytest.mark.parametrize("m", SAMPLES, ids=lambda m: f"{m.type.name}-{m.status.name}")
def test_every_message_round_trips(m: Message) -> None:
    frame = encode_message(m, 123, ADDRESS, "replog-raft-1")
    header, decoded, address = decode_message(frame_payload(frame), DEFAULT_LIMITS)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (
        1000, 0, 123, "replog-raft-1")
    assert decoded == m and address == ADDRESS
    assert decode_ack(frame_payload(encode_ack(123))) == (123, 0)


@pytest.mark.parametrize("bad", [
    Message(MT.VOTE, 5, 1, 2, entries=(Entry(5, 1, b"x"),)),                     # entries on a vote
    Message(MT.FETCH_RESP, 5, 1, 2, index=3, log_term=2, entries=(Entry(5, 5, b"x"),)),  # not after the anchor
    Message(MT.FETCH_RESP, 5, 1, 2, index=3, log_term=2, entries=(Entry(6, 4, b"x"),)),  # term above the message's
    Message(MT.FETCH_RESP, 5, 1, 2, index=3, log_term=4, entries=(Entry(3, 4, b"x"),)),  # term below the anchor's
    Message(MT.FETCH, 5, 1, 2, snapshot=Snapshot(3, 2, b"")),                    # snapshot on a fetch
], ids=["entries-on-vote", "gap", "term-above", "term-below", "snapshot-on-fetch"])
def test_malformed_messages_are_protocol_errors(bad: Message) -> None:
    frame = encode_message(bad, 1, ADDRESS, None)
    with pytest.raises(ProtocolError):
        decode_message(frame_payload(frame), DEFAULT_LIMITS)


def test_unknown_type_and_foreign_api_are_protocol_errors() -> None:
    payload = bytearray(frame_payload(encode_message(SAMPLES[0], 1, ADDRESS, None)))
    wrong_api = bytes(struct.pack(">h", 18)) + bytes(payload[2:])
    with pytest.raises(ProtocolError):
        decode_message(wrong_api, DEFAULT_LIMITS)
    # header v1 (10 bytes with a null client_id), then the body: compact host, int32 port, int8 type
    type_at = 10 + 1 + len(ADDRESS[0]) + 4
    assert payload[type_at] == MT.PRE_VOTE
    payload[type_at] = 99
    with pytest.raises(ProtocolError):
        decode_message(bytes(payload), DEFAULT_LIMITS)


def test_messages_flow_both_ways_and_observers_are_answered_at_their_learned_address() -> None:
    async def scenario() -> None:
        got: dict[int, list[Message]] = {1: [], 9: []}
        p1 = free_port()
        t1 = RaftTransport(1, {}, got[1].append)
        await t1.start("127.0.0.1", p1)
        t9 = RaftTransport(9, {1: ("127.0.0.1", p1)}, got[9].append)  # an observer: 1 does not know it
        await t9.start("127.0.0.1", 0)
        t9.send(Message(MT.FETCH, 1, 9, 1, fetch_id=1))
        await wait_until(lambda: got[1])
        assert t1.learned[9] == t9.advertised
        t1.send(Message(MT.FETCH_RESP, 1, 1, 9, fetch_id=1))
        await wait_until(lambda: got[9])
        assert got[9][0].fetch_id == 1
        t1.send(Message(MT.FETCH_RESP, 1, 1, 42))  # nobody knows 42
        assert t1.unroutable == 1
        assert await t9.flush(2.0) and await t1.flush(2.0)
        await t1.close()
        await t9.close()

    run(scenario())


async def wait_until(predicate, timeout_s: float = 5.0) -> None:
    """Poll a socket-level condition with a deadline (transports have no change events)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_down_peer_bounds_the_queue_and_is_reached_after_it_comes_up() -> None:
    async def scenario() -> None:
        port = free_port()
        config = TransportConfig(send_queue_max=8, reconnect_backoff_min_ms=10, reconnect_backoff_max_ms=40)
        sender = RaftTransport(1, {2: ("127.0.0.1", port)}, lambda m: None, config)
        await sender.start("127.0.0.1", 0)
        for k in range(20):
            sender.send(Message(MT.FETCH, 1, 1, 2, fetch_id=k))
        link = sender.links[2]
        assert len(link.queue) == 8 and link.dropped == 12  # the oldest went
        got: list[Message] = []
        receiver = RaftTransport(2, {}, got.append)
        await receiver.start("127.0.0.1", port)
        await wait_until(lambda: len(got) == 8)
        assert [m.fetch_id for m in got] == list(range(12, 20))
        await sender.close()
        await receiver.close()

    run(scenario())


def test_a_peer_that_never_acknowledges_is_reconnected_after_the_request_timeout() -> None:
    async def scenario() -> None:
        accepted = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            while await reader.read(65536):
                pass  # reads, never answers

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = TransportConfig(request_timeout_ms=200, reconnect_backoff_min_ms=10, reconnect_backoff_max_ms=20)
        sender = RaftTransport(1, {2: ("127.0.0.1", port)}, lambda m: None, config)
        await sender.start("127.0.0.1", 0)
        sender.send(Message(MT.BEGIN_QUORUM_EPOCH, 1, 1, 2))
        await wait_until(lambda: sender.links[2].connects >= 2, 5.0)
        assert len(accepted) >= 2
        await sender.close()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()

    run(scenario())


def test_garbage_and_oversized_frames_close_only_that_connection() -> None:
    async def scenario() -> None:
        got: list[Message] = []
        t = RaftTransport(1, {}, got.append, TransportConfig(max_frame_bytes=1024))
        host, port = await t.start("127.0.0.1", 0)
        for junk in (struct.pack(">i", 1 << 20) + b"x" * 16,          # above max_frame_bytes
                     struct.pack(">i", 12) + b"\x03\xe8\x00\x00" + b"\xff" * 8):  # RaftMessage header, junk body
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(junk)
            assert await asyncio.wait_for(reader.read(100), 5.0) == b""  # closed by the server
            writer.close()
        reader, writer = await asyncio.open_connection(host, port)  # still serving
        writer.write(encode_message(Message(MT.TIMEOUT_NOW, 3, 2, 1), 5, ("127.0.0.1", 1), None))
        (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 5.0))
        assert decode_ack(await reader.readexactly(size)) == (5, 0)
        writer.write(encode_message(Message(MT.TIMEOUT_NOW, 3, 2, 7), 6, ("127.0.0.1", 1), None))  # for node 7
        (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 5.0))
        assert decode_ack(await reader.readexactly(size)) == (6, 42)  # INVALID_REQUEST, dropped
        assert [m.dst for m in got] == [1]
        writer.close()
        await t.close()

    run(scenario())
