"""Framing of /fabstir/host/1.0.0: uvarint length + JSON, with a cap checked before the body."""

import pytest

from fabstir_sdk import P2PProtocolError, ValidationError
from fabstir_sdk.p2p._wire import (
    FrameDecoder,
    P2PFrameTooLargeError,
    decode_message,
    encode_frame,
    encode_message,
)


def test_encode_frame_exact_bytes():
    assert encode_frame(b"") == b"\x00"
    assert encode_frame(b"x" * 127) == b"\x7f" + b"x" * 127
    assert encode_frame(b"x" * 300) == b"\xac\x02" + b"x" * 300


def test_encode_message_is_compact_json():
    assert encode_message({"type": "load"}) == b'\x0f{"type":"load"}'


def test_decoder_reassembles_frames_split_anywhere():
    stream = encode_frame(b"a" * 300) + encode_frame(b'{"type":"x"}') + encode_frame(b"")
    decoder = FrameDecoder()
    frames = []
    for byte in stream:
        frames += decoder.feed(bytes([byte]))
    assert frames == [b"a" * 300, b'{"type":"x"}', b""]
    assert decoder.pending == 0


def test_decoder_returns_several_frames_from_one_chunk():
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"one") + encode_frame(b"two") + b"\x05ab") == [
        b"one",
        b"two",
    ]
    assert decoder.pending == 2
    assert decoder.feed(b"cde") == [b"abcde"]


def test_oversize_header_is_refused_before_the_body():
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(P2PFrameTooLargeError) as info:
        decoder.feed(b"\x81\x08")  # declares 1025 bytes; no body sent
    assert (info.value.size, info.value.cap) == (1025, 1024)
    assert isinstance(info.value, P2PProtocolError)


def test_a_frame_at_the_cap_is_accepted():
    assert FrameDecoder(max_frame=1024).feed(encode_frame(b"z" * 1024, max_frame=1024)) == [
        b"z" * 1024
    ]


def test_huge_declared_length_is_refused():
    with pytest.raises(P2PFrameTooLargeError):
        FrameDecoder().feed(b"\xff\xff\xff\xff\x0f")  # 4 GiB


def test_overlong_varint_is_refused():
    with pytest.raises(P2PProtocolError, match="longer than 10 bytes"):
        FrameDecoder(max_frame=2**80).feed(b"\x80" * 10)


def test_non_minimal_varint_is_refused():
    with pytest.raises(P2PProtocolError, match="minimally"):
        FrameDecoder().feed(b"\x81\x00x")


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe", b"not json", b"[1,2]", b'"type"', b"{}", b'{"type":5}', b"{"],
)
def test_decode_message_refuses_garbage(body):
    with pytest.raises(P2PProtocolError):
        decode_message(body)


def test_decode_message():
    assert decode_message(b'{"type":"ping","nonce":"ab"}') == {"type": "ping", "nonce": "ab"}


@pytest.mark.parametrize(
    "message",
    [
        None,
        [],
        {"no": "type"},
        {"type": 1},
        {"type": "x", "v": float("nan")},
        {"type": "x", "v": {1, 2}},
    ],
)
def test_unsendable_messages_are_validation_errors(message):
    with pytest.raises(ValidationError):
        encode_message(message)


def test_oversize_message_is_refused_before_sending():
    with pytest.raises(ValidationError, match="exceeds the 1024-byte cap"):
        encode_message({"type": "x", "pad": "p" * 2000}, max_frame=1024)
