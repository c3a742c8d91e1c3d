"""The hand-written reader of ``encrypted_chunk`` frames (the per-token hot path) accepts
nothing the pydantic model refuses, and reads what it accepts exactly as the model does."""

from __future__ import annotations

import copy
import json
import os
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabstir_sdk.errors import FabstirError
from fabstir_sdk.protocol import (
    ClientSession,
    EncryptedChunk,
    HostSession,
    TokenChunk,
    WireModel,
    _client,
)
from fabstir_sdk.protocol._chunks import CHUNK_FIELDS, field_table
from fabstir_sdk.protocol._chunks import read_chunk_fields as _plain_chunk
from fabstir_sdk.protocol._chunks import read_chunk_text as _chunk_text

from .session_pair import fixed_pair, open_pair

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


def _model_read(frame: object) -> tuple[object, ...]:
    """What the model reads of a frame, in the fast readers' order."""
    model = EncryptedChunk.model_validate(frame)
    p = model.payload
    return (model.tokens, p.ciphertext_hex, p.nonce_hex, p.aad_hex, p.index, model.id, model.final)


@settings(max_examples=600, deadline=None)
@given(chunk_frames())
def test_fast_reader_accepts_only_what_the_model_accepts(frame: dict[str, object]) -> None:
    fast = _plain_chunk(frame)
    if fast is None:
        return  # the model decides (and the same _open_chunk reads it)
    assert fast == _model_read(frame)  # the model must not raise


def test_the_usual_frames_take_the_fast_path_and_decrypt_alike() -> None:
    client, host = open_pair()
    client.prompt_frame("hi")
    frames = [host.chunk_frame(" tok", id="42-0"), host.chunk_frame("en", final=True, tokens=2)]
    assert all(_plain_chunk(json.loads(f)) is not None for f in frames)
    assert [client.receive(f) for f in frames] == [
        TokenChunk(" tok", 0, 1, False, "42-0"),
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
    assert fast == _model_read(obj)


def test_the_host_frames_take_the_text_path_in_both_field_orders() -> None:
    key = os.urandom(32)
    frame = json.loads(HostSession(key, session_id="12").chunk_frame("x", id="12-4", final=True))
    for payload_last in (False, True):
        text = _compact(frame, payload_last, True)
        p = frame["payload"]
        assert _chunk_text(text) == (
            1,
            p["ciphertextHex"],
            p["nonceHex"],
            p["aadHex"],
            0,
            "12-4",
            True,
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


# ------------------------------------------------ both paths, the same frames


ODD_VALUES = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        1.0,
        2**63,
        10**30,
        "",
        "42",
        "042",
        " 42",
        "\u0664\u0662",  # Arabic-Indic digits
        "0x00",
        "ab",
        "abc",
        "x\u00e9",
        [],
        {},
    ]
)
FIELDS_AT = st.sampled_from(
    [(False, k) for k in ["type", "tokens", "session_id", "sessionId", "id", "final", "extra"]]
    + [(True, k) for k in ["ciphertextHex", "nonceHex", "aadHex", "index", "nonce_hex"]]
)


@st.composite
def hostile_texts(draw: st.DrawFn, frame: dict[str, Any]) -> str:
    """A real chunk frame, changed as a hostile or odd host might: fields replaced, removed,
    respelled or added, keys reordered, spaces, unicode escapes, duplicate keys, numbers too
    big for any int, hex in other spellings."""
    frame = json.loads(json.dumps(frame))
    payload = frame["payload"]
    for _ in range(draw(st.integers(0, 3))):
        inner, key = draw(FIELDS_AT)
        target = payload if inner else frame
        how = draw(st.sampled_from(["set", "delete", "upper", "0x"]))
        if how == "set":
            target[key] = draw(ODD_VALUES)
        elif how == "delete":
            target.pop(key, None)
        elif isinstance(target.get(key), str):
            text = target[key]
            target[key] = text.upper() if how == "upper" else "0x" + text
    if draw(st.booleans()):  # another order of the members
        keys = draw(st.permutations(list(frame)))
        frame = {k: frame[k] for k in keys}
    text = json.dumps(
        frame,
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
        ensure_ascii=draw(st.booleans()),
    )
    edit = draw(
        st.sampled_from(["none", "escape", "duplicate", "huge", "float", "tail", "unicode-key"])
    )
    if edit == "escape":  # one character of a string as a \u escape: the same value
        at = [i for i, ch in enumerate(text) if ch.isalnum()]
        if at:
            i = draw(st.sampled_from(at))
            text = text[:i] + f"\\u{ord(text[i]):04x}" + text[i + 1 :]
    elif edit == "duplicate":  # a member again, first or last: the last one counts
        member = draw(st.sampled_from(['"tokens":7', '"index":0', '"id":"x"', '"final":false']))
        text = (
            "{" + member + "," + text[1:] if draw(st.booleans()) else text[:-1] + "," + member + "}"
        )
    elif edit == "huge":
        text = text.replace(
            '"tokens":1', '"tokens":1' + "0" * draw(st.sampled_from([18, 19, 5000]))
        )
    elif edit == "float":
        text = text.replace('"index":0', '"index":' + draw(st.sampled_from(["0.0", "0e0", "-0"])))
    elif edit == "tail":
        text += draw(st.sampled_from([" ", "\n", "x", "}"]))
    elif edit == "unicode-key":
        text = text.replace('"tokens"', '"tok\\u0065ns"')
    return text


def _twins() -> tuple[ClientSession, ClientSession, HostSession]:
    client, host = fixed_pair()
    client.prompt_frame("hi", id="42-0")
    return client, copy.deepcopy(client), host


TWINS = _twins()


def _outcome(session: ClientSession, text: str) -> tuple[object, ...]:
    """The event (and where the session is after it), or the typed error's type, code and
    text; any other exception fails the test."""
    try:
        event = session.receive(text)
    except FabstirError as exc:
        return ("error", type(exc), exc.code, str(exc))
    return ("event", event, session.state, session._next_chunk, session._received)


@settings(max_examples=800, deadline=None)
@given(st.data(), st.booleans())
def test_fast_readers_and_the_model_give_the_same_event_or_error(data, final) -> None:
    """A frame read by the client (compact text reader, then the parsed-frame reader, then
    the model) and by a twin that only has the model: the same event, or the same typed
    error, for valid, odd and hostile frames alike."""
    fast, slow, host = (copy.deepcopy(x) for x in TWINS)
    frame = json.loads(host.chunk_frame("tok", tokens=1, final=final, id="42-0"))
    text = data.draw(hostile_texts(frame))
    with (
        patch.object(_client, "read_chunk_text", lambda _: None),
        patch.object(_client, "read_chunk_fields", lambda _: None),
    ):
        model_only = _outcome(slow, text)
    assert _outcome(fast, text) == model_only


def test_the_hostile_frames_reach_every_outcome() -> None:
    """The strategy above is not vacuous: unchanged frames decrypt on the fast path, and
    hostile ones get both the model's typed errors and its tolerant reads."""
    fast, _, host = (copy.deepcopy(x) for x in TWINS)
    frame = json.loads(host.chunk_frame("tok", id="42-0"))
    compact = json.dumps(frame, separators=(",", ":"))
    spaced = json.dumps(frame)
    assert _chunk_text(compact) is not None and _chunk_text(spaced) is None
    assert _plain_chunk(json.loads(spaced)) == _chunk_text(compact)
    assert _outcome(fast, compact)[:2] == ("event", TokenChunk("tok", 0, 1, False, "42-0"))
    for text, code in (
        (compact.replace('"tokens":1', '"tokens":-1'), "INVALID_MESSAGE"),
        (compact.replace('"tokens":1', '"tokens":1' + "0" * 5000), "INVALID_JSON"),
        (compact[:-1] + ',"index":0}', None),  # a duplicate at the top: ignored extra
        (compact.replace('"session_id":"42"', '"session_id":"\\u0034\\u0032"'), None),
    ):
        fresh = copy.deepcopy(TWINS[0])
        outcome = _outcome(fresh, text)
        if code is None:
            assert outcome[:2] == ("event", TokenChunk("tok", 0, 1, False, "42-0")), text
        else:
            assert outcome[0] == "error" and outcome[2] == code, (text, outcome)


def test_a_field_type_without_a_plain_form_fails_the_table() -> None:
    """How the readers and the model cannot drift apart: a field the fast readers could not
    read as the model does stops the table being made."""

    class Loose(WireModel):
        tokens: int = 0

    with pytest.raises(TypeError, match=r"Loose\.tokens"):
        field_table(Loose)
    assert [f.name for f in CHUNK_FIELDS] == [
        "type",
        "tokens",
        "session_id",
        "id",
        "final",
        "payload",
    ]
