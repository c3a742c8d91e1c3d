"""The wire protocol, fed hostile frames in both directions: typed FabstirErrors only.

Frames are arbitrary bytes and text, arbitrary JSON objects under each known ``type``, and
real frames of a live session pair with one field replaced, removed or a byte flipped.
"""

from __future__ import annotations

import json
from typing import Any

import coincurve
from hypothesis import given
from hypothesis import strategies as st

from fabstir_sdk.errors import FabstirError
from fabstir_sdk.protocol import (
    CLIENT_MESSAGES,
    HOST_MESSAGES,
    EncryptedMessage,
    EncryptedSessionInit,
    HostSession,
    SessionInitAck,
    open_checkpoint_delta,
    parse_client_message,
    parse_host_message,
    seal_checkpoint_delta,
)
from fabstir_sdk.protocol import _crypto as c

from .fuzzing import fuzz as fuzz_settings
from .fuzzing import typed_only
from .session_pair import HOST_KEY, HOST_PUBLIC, fixed_pair

fuzz = fuzz_settings()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "0x", "00" * 24, "zz", "message_0", "-1", "1e400"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _valid_frames() -> tuple[list[str], list[str]]:
    proto, host = fixed_pair()
    again, _ = fixed_pair()  # a re-init, from a session that is ready
    client = [
        again.init_frame(),
        proto.prompt_frame("hello"),
        proto.cancel_frame(),
        proto.end_frame(),
        proto.ping_frame(),
        proto.checkpoint_request_frame(id=3),
    ]
    host.open_message(parse_client_message(client[1]))
    hosts = [
        host.chunk_frame("hi", id=1),
        host.chunk_frame("", final=True, tokens=0),
        host.response_frame("stop"),
        SessionInitAck(session_id="42", job_id=42, chain_id=31337).to_json(),
        '{"type":"connected"}',
        '{"type":"error","code":"X","message":"m"}',
        '{"type":"stream_end","reason":"complete","tokens_used":3}',
        '{"type":"stream_chunk","content":"a","tokens":1}',
        '{"type":"response","content":"a","tokens_used":1}',
        '{"type":"pong"}',
    ]
    return client, hosts


CLIENT_FRAMES, HOST_FRAMES = _valid_frames()


def _replace(obj: Any, path: list[int], value: Any, *, delete: bool) -> Any:
    """``obj`` with the member chosen by ``path`` (indices into sorted keys) replaced or gone."""
    if not path or not isinstance(obj, dict | list) or not obj:
        return value
    keys = sorted(obj) if isinstance(obj, dict) else list(range(len(obj)))
    key = keys[path[0] % len(keys)]
    copy: Any = dict(obj) if isinstance(obj, dict) else list(obj)
    if delete and len(path) == 1:
        del copy[key]
    else:
        copy[key] = _replace(obj[key], path[1:], value, delete=delete)
    return copy


@st.composite
def mutated(draw: st.DrawFn, frames: list[str]) -> str | bytes:
    frame = draw(st.sampled_from(frames))
    how = draw(st.sampled_from(["field", "delete", "flip", "truncate"]))
    if how in ("field", "delete"):
        path = draw(st.lists(st.integers(0, 20), min_size=1, max_size=3))
        obj = _replace(json.loads(frame), path, draw(json_values), delete=how == "delete")
        return json.dumps(obj)
    data = bytearray(frame.encode())
    at = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return bytes(data[:at])
    data[at] ^= draw(st.integers(1, 255))
    return bytes(data)


@fuzz
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_parsers_take_any_bytes(data):
    typed_only(parse_client_message, data)
    typed_only(parse_host_message, data)


@fuzz
@given(st.sampled_from(sorted({*CLIENT_MESSAGES, *HOST_MESSAGES})), json_values, st.data())
def test_parsers_take_any_fields_under_each_type(kind, value, data):
    fields = data.draw(st.dictionaries(st.text(max_size=15), json_values, max_size=5))
    for name in ("payload", "job_id", "session_id", "id", "content", "code", "tokens"):
        if data.draw(st.booleans()):
            fields[name] = value
    frame = json.dumps({**fields, "type": kind})
    typed_only(parse_client_message, frame)
    typed_only(parse_host_message, frame)
    typed_only(parse_client_message, {**fields, "type": kind})


@fuzz
@given(mutated(CLIENT_FRAMES))
def test_host_side_takes_mutated_client_frames(frame):
    """What the host does with a frame: parse, then accept an init or open a prompt."""
    _, host = fixed_pair()
    try:
        message = parse_client_message(frame)
    except FabstirError:
        return
    if isinstance(message, EncryptedSessionInit):
        typed_only(HostSession.accept, message, host_private_key=HOST_KEY)
    elif isinstance(message, EncryptedMessage):
        typed_only(host.open_message, message)


@fuzz
@given(mutated(HOST_FRAMES) | st.binary(max_size=200), st.booleans())
def test_client_receive_takes_mutated_host_frames(frame, fresh):
    proto, host = fixed_pair()
    if not fresh:  # mid-response: one chunk already taken
        proto.receive(host.chunk_frame("x"))
    typed_only(proto.receive, frame)


@fuzz
@given(st.lists(mutated(HOST_FRAMES), max_size=6))
def test_client_session_survives_a_hostile_sequence(frames):
    proto, host = fixed_pair()
    for frame in frames:
        typed_only(proto.receive, frame)
    # the session still works after every refusal of a chunk out of turn or forged
    proto.receive(host.response_frame("stop"))
    event = proto.receive(host.chunk_frame("ok"))
    assert event.text == "ok"  # type: ignore[union-attr]


@fuzz
@given(st.lists(mutated(CLIENT_FRAMES[1:2]), max_size=5))
def test_host_session_refuses_forged_prompts_and_goes_on(frames):
    proto, host = fixed_pair()
    for frame in frames:
        try:
            message = parse_client_message(frame)
        except FabstirError:
            continue
        if isinstance(message, EncryptedMessage):
            typed_only(host.open_message, message)
    opened = 0
    for prompt in ("a", "b"):
        try:
            request = host.open_message(parse_client_message(proto.prompt_frame(prompt)))
        except FabstirError:  # a mutation that kept the ciphertext valid advanced the index
            continue
        assert request.prompt == prompt
        opened += 1
    assert opened >= 1


RECOVERY_KEY = bytes.fromhex("44" * 32)
ENVELOPE = seal_checkpoint_delta(
    {"messages": [{"role": "user", "content": "hi"}]},
    recovery_public_key=coincurve.PrivateKey(RECOVERY_KEY).public_key.format(compressed=True),
    host_private_key=HOST_KEY,
)


@fuzz
@given(mutated([json.dumps(ENVELOPE)]) | json_values)
def test_checkpoint_delta_opener_takes_any_envelope(envelope):
    if isinstance(envelope, str | bytes):
        try:
            envelope = json.loads(envelope)
        except ValueError:
            return
    opened = typed_only(open_checkpoint_delta, envelope, recovery_private_key=RECOVERY_KEY)
    assert isinstance(opened, tuple | FabstirError)


def test_checkpoint_delta_opens_unmutated():
    delta, signer = open_checkpoint_delta(ENVELOPE, recovery_private_key=RECOVERY_KEY)
    assert delta == {"messages": [{"role": "user", "content": "hi"}]}
    assert signer == c.address_of(HOST_PUBLIC)
