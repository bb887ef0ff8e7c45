"""client.wire.framing: incremental, bounded frame decoding and frame encoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.wire.codec import ProtocolError
from client.wire.framing import FrameDecoder, FrameTooLargeError, encode_frame


def framed(*payloads: bytes) -> bytes:
    return b"".join(struct.pack(">i", len(p)) + p for p in payloads)


def test_whole_frames_in_one_feed_are_zero_copy_views() -> None:
    data = framed(b"one", b"", b"three")
    frames = FrameDecoder(100).feed(data)
    assert [bytes(f) for f in frames] == [b"one", b"", b"three"]
    assert all(isinstance(f, memoryview) and f.obj is data for f in frames)


def test_frames_from_a_mutable_buffer_are_copied() -> None:
    data = bytearray(framed(b"abc"))
    frames = FrameDecoder(100).feed(data)
    data[4:7] = b"XXX"
    assert frames == [b"abc"]


def test_byte_by_byte() -> None:
    payloads = [b"hello", b"", b"x" * 300]
    decoder = FrameDecoder(1000)
    out = []
    for b in framed(*payloads):
        out += decoder.feed(bytes([b]))
    assert [bytes(f) for f in out] == payloads
    assert decoder.at_boundary and decoder.buffered_bytes == 0


@given(st.lists(st.binary(max_size=200), max_size=8), st.data())
@settings(max_examples=200)
def test_any_split_gives_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = framed(*payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(200)
    out: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        out += [bytes(f) for f in decoder.feed(stream[a:b])]
        assert decoder.buffered_bytes <= 200 + 4
    assert out == payloads
    assert decoder.at_boundary


def test_huge_prefix_fails_before_allocating() -> None:
    decoder = FrameDecoder(1 << 20)
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(b"\x7f\xff\xff\xff")  # 2 GiB
    assert info.value.size_bytes == 0x7FFFFFFF
    assert decoder.buffered_bytes == 0
    assert isinstance(info.value, ProtocolError)


def test_huge_prefix_split_across_feeds() -> None:
    decoder = FrameDecoder(1 << 20)
    assert decoder.feed(b"\x7f\xff") == []
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\xff\xff")


def test_negative_prefix() -> None:
    with pytest.raises(FrameTooLargeError):
        FrameDecoder(100).feed(b"\xff\xff\xff\xff")


def test_failure_is_sticky() -> None:
    decoder = FrameDecoder(10)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(framed(b"x" * 11))
    with pytest.raises(FrameTooLargeError):
        decoder.feed(framed(b"ok"))


def test_frame_of_exactly_max_size_and_bounded_buffer() -> None:
    decoder = FrameDecoder(1000)
    stream = framed(b"y" * 1000, b"z")
    assert decoder.feed(stream[:600]) == []
    assert decoder.buffered_bytes == 600
    frames = decoder.feed(stream[600:])
    assert [bytes(f) for f in frames] == [b"y" * 1000, b"z"]


def test_large_feed_takes_only_what_the_partial_frame_needs() -> None:
    decoder = FrameDecoder(100)
    stream = framed(b"a" * 50, *[b"b" * 100] * 50)
    decoder.feed(stream[:10])
    frames = decoder.feed(stream[10:])
    assert len(frames) == 51 and decoder.buffered_bytes == 0


def test_memoryview_input() -> None:
    frames = FrameDecoder(100).feed(memoryview(framed(b"abc", b"de")))
    assert frames == [b"abc", b"de"]


def test_encode_frame() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    big = memoryview(bytes(5000))
    chunks = encode_frame([b"ab", big])
    assert chunks[0] == struct.pack(">i", 5002) and chunks[2] is big
    assert FrameDecoder(10_000).feed(b"".join(chunks))[0] == b"ab" + bytes(5000)
