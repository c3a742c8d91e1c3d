"""Typed models and tolerant parsing of every host-protocol message, both directions."""

from __future__ import annotations

import json

import pytest

from fabstir_sdk.errors import (
    ContextLimitError,
    FrameTooLargeError,
    HostError,
    ProtocolError,
)
from fabstir_sdk.protocol import (
    CLIENT_MESSAGES,
    HOST_MESSAGES,
    MAX_FRAME_BYTES,
    CheckpointRequest,
    CheckpointSubmitted,
    ClientSession,
    Connected,
    EncryptedChunk,
    EncryptedMessage,
    EncryptedResponse,
    EncryptedSessionInit,
    ErrorFrame,
    HostErrorEvent,
    HostNotice,
    Inference,
    LegacyCancel,
    Ping,
    PongFrame,
    Prompt,
    ProofSubmitted,
    Response,
    SessionEnd,
    SessionInit,
    SessionInitAck,
    StreamCancel,
    StreamChunkFrame,
    StreamEnd,
    TokenChunk,
    UnsupportedRequest,
    Usage,
    parse_client_message,
    parse_host_message,
)

EPH = {
    "ephPubHex": "02" + "aa" * 32,
    "saltHex": "00" * 32,
    "nonceHex": "bb" * 24,
    "ciphertextHex": "cc" * 40,
    "signatureHex": "dd" * 65,
    "recid": 0,
    "alg": "secp256k1-ecdh(ephemeral→static)+hkdf(sha256)+xchacha20-poly1305",
    "info": "",
    "aadHex": "",
}
CIPHER = {"ciphertextHex": "ee" * 20, "nonceHex": "ff" * 24, "aadHex": b"message_0".hex()}

#: One frame of every client -> host type, as upstream SDKs write them.
CLIENT_FRAMES = [
    (
        {
            "type": "encrypted_session_init",
            "payload": EPH,
            "chain_id": 84532,
            "session_id": "42",
            "job_id": "42",
        },
        EncryptedSessionInit,
    ),
    (
        {
            "type": "session_init",
            "chain_id": 84532,
            "session_id": "42",
            "jobId": "42",
            "user_address": "0x" + "12" * 20,
        },
        SessionInit,
    ),
    (
        {"type": "encrypted_message", "session_id": "42", "id": "1-x", "payload": CIPHER},
        EncryptedMessage,
    ),
    ({"type": "prompt", "prompt": "hi"}, Prompt),
    ({"type": "inference", "request": {"prompt": "hi", "max_tokens": 5}}, Inference),
    ({"type": "stream_cancel", "session_id": "42", "reason": "user_cancelled"}, StreamCancel),
    ({"type": "cancel", "requestId": "r1"}, LegacyCancel),
    ({"type": "session_end", "session_id": "42"}, SessionEnd),
    ({"type": "ping"}, Ping),
    ({"type": "checkpoint_request", "session_id": "42", "id": 9}, CheckpointRequest),
    ({"type": "uploadVectors", "session_id": "42", "vectors": []}, UnsupportedRequest),
    ({"type": "searchVectors", "session_id": "42"}, UnsupportedRequest),
    ({"type": "searchRequest", "session_id": "42"}, UnsupportedRequest),
]

#: One frame of every host -> client type.
HOST_FRAMES = [
    ({"type": "connected", "message": "WebSocket connected successfully"}, Connected),
    (
        {
            "type": "session_init_ack",
            "status": "success",
            "session_id": "42",
            "job_id": 42,
            "chain_id": 84532,
            "client_address": "0x" + "12" * 20,
            "message": "ok",
        },
        SessionInitAck,
    ),
    (
        {
            "type": "encrypted_chunk",
            "tokens": 1,
            "session_id": "42",
            "final": True,
            "payload": {**CIPHER, "aadHex": b"chunk_0".hex(), "index": 0},
        },
        EncryptedChunk,
    ),
    ({"type": "encrypted_response", "session_id": "42", "payload": CIPHER}, EncryptedResponse),
    (
        {
            "type": "stream_end",
            "reason": "complete",
            "tokens_used": 57,
            "finish_reason": "stop",
            "usage": {
                "prompt_tokens": 25,
                "completion_tokens": 57,
                "total_tokens": 82,
                "context_window_size": 32768,
            },
            "session_id": "42",
        },
        StreamEnd,
    ),
    ({"type": "stream_chunk", "content": "Hel", "tokens": 1}, StreamChunkFrame),
    ({"type": "response", "content": "Hello", "tokens_used": 2}, Response),
    ({"type": "error", "code": "INVALID_NONCE_SIZE", "message": "bad nonce"}, ErrorFrame),
    ({"type": "error", "error": "Session not found"}, ErrorFrame),
    ({"type": "pong"}, PongFrame),
    (
        {
            "type": "proof_submitted",
            "session_id": "42",
            "job_id": 42,
            "tokens_claimed": 1000,
            "total_tokens": 1000,
            "proof_hash": "0x" + "00" * 32,
            "tx_hash": "0x" + "11" * 32,
        },
        ProofSubmitted,
    ),
    ({"type": "checkpoint_submitted", "session_id": "42", "id": 9}, CheckpointSubmitted),
    ({"type": "session_status", "status": "active", "anything": [1]}, HostNotice),
    ({"type": "checkpoint", "index": 3}, HostNotice),
]


def _name(value: object) -> str:
    return getattr(value, "__name__", "")


@pytest.mark.parametrize(("frame", "model"), CLIENT_FRAMES, ids=_name)
def test_every_client_message_parses_and_round_trips(frame, model):
    message = parse_client_message(json.dumps(frame))
    assert type(message) is model
    again = parse_client_message(message.to_json())
    assert again == message


@pytest.mark.parametrize(("frame", "model"), HOST_FRAMES, ids=_name)
def test_every_host_message_parses_and_round_trips(frame, model):
    message = parse_host_message(json.dumps(frame))
    assert type(message) is model
    assert parse_host_message(message.to_json()) == message


def test_tables_cover_every_type():
    assert sorted(CLIENT_MESSAGES) == sorted(f["type"] for f, _ in CLIENT_FRAMES)
    assert sorted(HOST_MESSAGES) == sorted({f["type"] for f, _ in HOST_FRAMES})


def test_wire_field_names_are_upstreams():
    init = parse_client_message(json.dumps(CLIENT_FRAMES[0][0]))
    assert json.loads(init.to_json()) == CLIENT_FRAMES[0][0]
    assert next(iter(json.loads(init.to_json()))) == "type"
    fallback = parse_client_message(json.dumps(CLIENT_FRAMES[1][0]))
    assert json.loads(fallback.to_json()) == CLIENT_FRAMES[1][0]  # jobId in this one
    end = parse_host_message(json.dumps(HOST_FRAMES[4][0]))
    assert json.loads(end.to_json()) == HOST_FRAMES[4][0]
    ack = parse_host_message(json.dumps(HOST_FRAMES[1][0]))
    assert json.loads(ack.to_json()) == HOST_FRAMES[1][0]


def test_camel_case_keys_and_numeric_ids_are_accepted():
    message = parse_client_message(
        json.dumps({"type": "encrypted_session_init", "payload": EPH, "chainId": 8453, "jobId": 7})
    )
    assert isinstance(message, EncryptedSessionInit)
    assert (message.session_id, message.job_id, message.chain_id) == ("7", "7", 8453)
    assert message.job_number == 7
    ack = parse_host_message(
        json.dumps({"type": "session_init_ack", "sessionId": "7", "jobId": "7", "chainId": 1})
    )
    assert isinstance(ack, SessionInitAck) and (ack.session_id, ack.job_id) == ("7", 7)
    hex_prefixed = parse_client_message(
        json.dumps(
            {
                "type": "encrypted_message",
                "sessionId": 7,
                "payload": {**CIPHER, "nonceHex": "0x" + "FF" * 24},
            }
        )
    )
    assert isinstance(hex_prefixed, EncryptedMessage) and hex_prefixed.session_id == "7"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xff\xfe", "INVALID_JSON"),
        ("not json", "INVALID_JSON"),
        ("[1, 2]", "INVALID_MESSAGE"),
        ('{"no_type": 1}', "INVALID_MESSAGE"),
        ('{"type": 5}', "INVALID_MESSAGE"),
        ('{"type": "teleport"}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": "encrypted_session_init"}', "INVALID_MESSAGE"),
        ('{"type": "encrypted_session_init", "payload": {}, "job_id": "1"}', "INVALID_MESSAGE"),
        (
            json.dumps({"type": "encrypted_session_init", "payload": EPH}),  # names no job
            "INVALID_MESSAGE",
        ),
        (
            json.dumps({"type": "encrypted_session_init", "payload": EPH, "job_id": "x1"}),
            "INVALID_MESSAGE",
        ),
        (
            json.dumps({"type": "encrypted_message", "payload": {**CIPHER, "nonceHex": "zz"}}),
            "INVALID_MESSAGE",
        ),
        (
            json.dumps({"type": "encrypted_message", "payload": {**CIPHER, "nonceHex": "abc"}}),
            "INVALID_MESSAGE",
        ),
        ('{"type": "prompt"}', "INVALID_MESSAGE"),
        ('{"type": "inference", "request": {"prompt": "x", "max_tokens": 0}}', "INVALID_MESSAGE"),
        ("[" * 100_000, "INVALID_JSON"),  # would segfault under py_ecc's recursion limit
        (b"{" * 100_000, "INVALID_JSON"),
        ('{"type": "prompt", "prompt": "x", "n": ' + "[" * 900 + "]" * 900 + "}", None),
    ],
)
def test_malformed_client_frames_raise_typed_errors(frame, code):
    import sys

    import eth_account  # noqa: F401  (py_ecc raises the recursion limit to 100000)

    assert sys.getrecursionlimit() >= 100_000
    if code is None:  # legal nesting still parses, and the limit comes back
        assert parse_client_message(frame).prompt == "x"
    else:
        with pytest.raises(ProtocolError) as info:
            parse_client_message(frame)
        assert info.value.code == code
    assert sys.getrecursionlimit() >= 100_000


def test_size_cap_applies_before_parsing():
    big = json.dumps({"type": "prompt", "prompt": "x" * MAX_FRAME_BYTES})
    with pytest.raises(FrameTooLargeError) as info:
        parse_client_message(big)
    assert info.value.code == "FRAME_TOO_LARGE"
    # counted in bytes: 4-byte characters hit the cap sooner than their length suggests
    wide = json.dumps({"type": "prompt", "prompt": "😀" * 300}, ensure_ascii=False)
    assert len(wide) < 1024 < len(wide.encode())
    with pytest.raises(FrameTooLargeError):
        parse_client_message(wide, max_bytes=1024)
    assert parse_client_message(wide, max_bytes=2048).prompt == "😀" * 300


def test_both_error_shapes_become_typed_errors():
    """Error frames come out of receive() as events holding the typed error (not raised)."""
    proto = ClientSession(job_id=42, encrypted=False, user_address="0x" + "12" * 20)
    proto.receive('{"type": "session_init_ack", "session_id": "42"}')

    def error(frame: str) -> HostError:
        event = proto.receive(frame)
        assert isinstance(event, HostErrorEvent)
        return event.error

    coded = error(
        json.dumps({"type": "error", "code": "NOT_DEPOSITOR", "message": "no", "session_id": "42"})
    )
    assert type(coded) is HostError
    assert (coded.code, coded.host_message, coded.session_id) == ("NOT_DEPOSITOR", "no", "42")
    bare = error('{"type": "error", "error": "Session not found"}')
    assert (bare.code, bare.host_message) == ("HOST_ERROR", "Session not found")
    limit = error(
        json.dumps(
            {
                "type": "error",
                "code": "TOKEN_LIMIT_EXCEEDED",
                "message": "too long",
                "prompt_tokens": 9000,
                "context_window_size": 8192,
                "id": 3,
            }
        )
    )
    assert isinstance(limit, ContextLimitError)
    assert (limit.prompt_tokens, limit.context_window_size, limit.id) == (9000, 8192, "3")


def test_plaintext_fallback_session():
    user = "0x" + "12" * 20
    proto = ClientSession(job_id=9, chain_id=31337, encrypted=False, user_address=user)
    assert json.loads(proto.init_frame()) == {
        "type": "session_init",
        "session_id": "9",
        "jobId": "9",
        "chain_id": 31337,
        "user_address": user,
    }
    proto.receive('{"type": "connected", "message": "hi"}')
    proto.receive('{"type": "session_init_ack", "status": "success", "session_id": "9"}')
    assert proto.ready
    sent = parse_client_message(proto.prompt_frame("hello", max_tokens=3))
    assert isinstance(sent, Inference)
    assert (sent.request.prompt, sent.request.max_tokens, sent.session_id) == ("hello", 3, "9")
    assert proto.receive('{"type": "stream_chunk", "content": "He"}') == TokenChunk(
        "He", 0, 0, False
    )
    assert proto.receive(
        '{"type": "stream_chunk", "content": "y", "tokens": 1, "final": true}'
    ) == (TokenChunk("y", 1, 1, True))
    end = proto.receive('{"type": "stream_end", "reason": "complete", "tokens_used": 2}')
    assert isinstance(end, StreamEnd) and end.tokens_used == 2 and end.usage is None
    assert proto.receive('{"type": "response", "content": "all"}') == TokenChunk("all", 0, 0, True)


def test_plaintext_content_is_refused_in_an_encrypted_session():
    import coincurve

    proto = ClientSession(
        job_id=1,
        host_public_key=coincurve.PrivateKey().public_key.format(),
        client_private_key=coincurve.PrivateKey().secret,
    )
    proto.receive('{"type": "session_init_ack", "session_id": "1"}')
    with pytest.raises(ProtocolError) as info:
        proto.receive('{"type": "stream_chunk", "content": "injected"}')
    assert info.value.code == "ENCRYPTION_REQUIRED"


def test_ack_for_another_session_or_failure_is_refused():
    proto = ClientSession(job_id=1, encrypted=False)
    with pytest.raises(ProtocolError, match="names session 2"):
        proto.receive('{"type": "session_init_ack", "session_id": "2"}')
    with pytest.raises(ProtocolError, match="status 'failed'"):
        proto.receive('{"type": "session_init_ack", "status": "failed", "session_id": "1"}')
    assert not proto.ready


def test_usage_and_stream_end_defaults():
    end = parse_host_message('{"type": "stream_end"}')
    assert isinstance(end, StreamEnd)
    assert (end.reason, end.tokens_used, end.usage) == ("complete", 0, None)
    assert Usage().total_tokens == 0


def test_client_session_refuses_bad_arguments():
    from fabstir_sdk.errors import ValidationError

    with pytest.raises(ValidationError):
        ClientSession(job_id=0, encrypted=False)
    with pytest.raises(ValidationError, match="host_public_key and client_private_key"):
        ClientSession(job_id=1)
    with pytest.raises(ValidationError, match="host_public_key"):
        ClientSession(job_id=1, host_public_key="02" + "00" * 32, client_private_key=b"\x01" * 32)
    valid = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"  # G
    with pytest.raises(ValidationError, match="client_private_key"):
        ClientSession(job_id=1, host_public_key=valid, client_private_key=b"\x00" * 32)
    # the key is checked against the group's order (as libsecp256k1 does), and the address
    # is the key's own
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    for bad in (n, n + 1, 2**256 - 1):
        with pytest.raises(ValidationError, match="not a valid secp256k1 key"):
            ClientSession(
                job_id=1, host_public_key=valid, client_private_key=bad.to_bytes(32, "big")
            )
    from eth_account import Account

    for good in (1, n - 1, 0x22 * (2**248 // 0xFF)):
        key = good.to_bytes(32, "big")
        proto = ClientSession(job_id=1, host_public_key=valid, client_private_key=key)
        assert proto.user_address == Account.from_key(key).address


def test_hex_bytes_reads_both_spellings() -> None:
    from fabstir_sdk.protocol._messages import hex_bytes

    assert hex_bytes("00ab") == b"\x00\xab"
    assert hex_bytes("0x00AB") == b"\x00\xab"
    assert hex_bytes("0X0a") == b"\x0a"
    assert hex_bytes("") == b""
    assert hex_bytes("0x") == b""
