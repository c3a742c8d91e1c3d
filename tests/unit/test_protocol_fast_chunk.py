"""The hand-written reader of ``encrypted_chunk`` frames (the per-token hot path) accepts
nothing the pydantic model refuses, and reads what it accepts exactly as the model does."""

from __future__ import annotations

import json
import os

import coincurve
from hypothesis import given, settings
from hypothesis import strategies as st

from fabstir_sdk.protocol import (
    ClientSession,
    EncryptedChunk,
    HostSession,
    SessionInitAck,
    TokenChunk,
    parse_client_message,
)
from fabstir_sdk.protocol._chunks import read_chunk_fields as _plain_chunk
from fabstir_sdk.protocol._chunks import read_chunk_text as _chunk_text

HEXISH = st.sampled_from(["", "00", "0xab", "0XAB", "aB", "abc", "zz", " ab", "ab\n", "١٢"])
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["", "0", "7", "007", " 7", "x", "7\n", "٣", "1" * 79]),
    HEXISH,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
PAYLOAD_KEYS = ["ciphertextHex", "nonceHex", "aadHex", "index", "ciphertext_hex", "extra"]
FRAME_KEYS = ["tokens", "session_id", "sessionId", "id", "final", "extra"]


VALID_PAYLOAD = {"ciphertextHex": "ab" * 20, "nonceHex": "cd" * 24, "aadHex": "", "index": 3}
VALID_FRAME = {"type": "encrypted_chunk", "tokens": 1, "session_id": "42", "id": "42-0"}


@st.composite
def chunk_frames(draw: st.DrawFn) -> dict[str, object]:
    """A valid frame with a few of its fields replaced, removed or added."""
    payload: dict[str, object] = dict(VALID_PAYLOAD)
    frame: dict[str, object] = dict(VALID_FRAME)
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from([payload, frame]))
        keys = PAYLOAD_KEYS if target is payload else FRAME_KEYS
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            target[key] = draw(ANY)
        else:
            target.pop(key, None)
    frame["payload"] = payload if draw(st.integers(0, 9)) else draw(ANY)
    return frame


@settings(max_examples=600, deadline=None)
@given(chunk_frames())
def test_fast_reader_accepts_only_what_the_model_accepts(frame: dict[str, object]) -> None:
    fast = _plain_chunk(frame)
    if fast is None:
        return  # the model decides (and the same _open_chunk reads it)
    model = EncryptedChunk.model_validate(frame)  # must not raise
    p = model.payload
    assert fast == (
        p.index,
        p.nonce_hex,
        p.ciphertext_hex,
        p.aad_hex,
        model.tokens,
        model.final,
        model.id,
    )


def test_the_usual_frames_take_the_fast_path_and_decrypt_alike() -> None:
    host_key, client_key = os.urandom(32), os.urandom(32)
    host_public = coincurve.PrivateKey(host_key).public_key.format()
    client = ClientSession(job_id=9, host_public_key=host_public, client_private_key=client_key)
    host, _ = HostSession.accept(
        parse_client_message(client.init_frame()), host_private_key=host_key
    )
    client.receive(SessionInitAck(session_id="9").to_json())
    frames = [host.chunk_frame(" tok", id="9-0"), host.chunk_frame("en", final=True, tokens=2)]
    assert all(_plain_chunk(json.loads(f)) is not None for f in frames)
    assert [client.receive(f) for f in frames] == [
        TokenChunk(" tok", 0, 1, False, "9-0"),
        TokenChunk("en", 1, 2, True, None),
    ]


def _compact(frame: dict[str, object], payload_last: bool, ascii_only: bool) -> str:
    """The frame as hosts write it: compact JSON, ``payload`` last (upstream) or not (ours)."""
    ordered = dict(frame)
    if payload_last and "payload" in ordered:
        ordered["payload"] = ordered.pop("payload")
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=ascii_only)


@st.composite
def chunk_texts(draw: st.DrawFn) -> str:
    """Frame texts near the compact form: valid ones, fields changed, characters changed."""
    text = _compact(draw(chunk_frames()), draw(st.booleans()), draw(st.booleans()))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(['"', "\\", " ", "0", "a", "-", "}", ",", "\u00e9", "1e2"]))
        text = text[:at] + junk + text[at + draw(st.integers(0, 2)) :]
    return text


@settings(max_examples=1500, deadline=None)
@given(chunk_texts())
def test_text_reader_accepts_only_what_the_parser_and_model_accept(text: str) -> None:
    fast = _chunk_text(text)
    if fast is None:
        return  # parsed and validated as before
    assert text.isascii()
    obj = json.loads(text)  # must not raise
    assert _plain_chunk(obj) == fast
    model = EncryptedChunk.model_validate(obj)
    p = model.payload
    assert fast == (
        p.index,
        p.nonce_hex,
        p.ciphertext_hex,
        p.aad_hex,
        model.tokens,
        model.final,
        model.id,
    )


def test_the_host_frames_take_the_text_path_in_both_field_orders() -> None:
    key = os.urandom(32)
    frame = json.loads(HostSession(key, session_id="12").chunk_frame("x", id="12-4", final=True))
    for payload_last in (False, True):
        text = _compact(frame, payload_last, True)
        p = frame["payload"]
        assert _chunk_text(text) == (
            0,
            p["nonceHex"],
            p["ciphertextHex"],
            p["aadHex"],
            1,
            True,
            "12-4",
        )
    assert _chunk_text(_compact({**frame, "id": 7}, True, True)) is not None
    for other in (
        json.dumps(frame),  # spaces
        _compact({**frame, "id": "12-\u00e9"}, False, False),  # not ASCII
        _compact({**frame, "tokens": 1.0}, False, True),
        _compact({**frame, "session_id": "012"}, False, True),
        _compact({**frame, "payload": {**p, "nonceHex": "abc"}}, False, True),  # odd hex
    ):
        assert _chunk_text(other) is None
