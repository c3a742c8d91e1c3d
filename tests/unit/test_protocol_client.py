"""The client's sans-I/O state machine, driven with no socket: a HostSession makes the frames."""

from __future__ import annotations

import json

import pytest

from fabstir_sdk.errors import HostError, MessageIndexError, ProtocolError
from fabstir_sdk.protocol import (
    CheckpointSubmitted,
    ErrorFrame,
    PongFrame,
    ProofSubmitted,
    ResponseDone,
    StreamEnd,
    TokenChunk,
    TokenOverreport,
    parse_client_message,
)
from fabstir_sdk.protocol._client import (
    CheckpointFailed,
    ClientSession,
    HostErrorEvent,
    State,
)

from .session_pair import ACK, accept, open_pair


def _end(tokens: int, id: str | None) -> str:
    return StreamEnd(tokens_used=tokens, finish_reason="stop", id=id).to_json()


def _error(code: str, id: str | None) -> str:
    return ErrorFrame(code=code, message="no", id=id).to_json()


def test_one_answer_walks_the_states_and_indexes() -> None:
    proto, host = open_pair()
    for turn in range(2):
        frame = proto.prompt_frame(f"turn {turn}")
        assert proto.state is State.STREAMING and proto.answer_id == f"42-{turn}"
        assert json.loads(frame)["id"] == f"42-{turn}"
        assert host.open_message(parse_client_message(frame)).prompt == f"turn {turn}"
        assert proto.next_message == turn + 1
        aid = proto.answer_id
        a = proto.receive(host.chunk_frame("he", tokens=1, id=aid))
        b = proto.receive(host.chunk_frame("llo", tokens=2, id=aid))
        assert a == TokenChunk("he", 0, 1, False, aid)
        assert b == TokenChunk("llo", 1, 2, False, aid)
        assert proto.receive(host.response_frame("stop", id=aid)) == ResponseDone("stop", aid)
        end = proto.receive(_end(3, aid))
        assert isinstance(end, StreamEnd) and end.tokens_used == 3
        assert proto.state is State.READY and proto.answer_id is None
    assert proto.tokens_reported == 6


def test_prompt_only_once_ready_and_one_answer_at_a_time() -> None:
    proto = ClientSession(job_id=42, encrypted=False)
    with pytest.raises(ProtocolError, match="connecting"):
        proto.prompt_frame("before the ack")
    proto.receive(ACK)
    proto.prompt_frame("a")
    proto.cancel_frame()
    assert proto.state is State.CANCELLING
    # a prompt while an answer streams gives that answer up
    proto.prompt_frame("b", id="mine")
    assert proto.state is State.STREAMING and proto.answer_id == "mine"
    assert proto.receive(_end(1, "42-0")) is None
    assert isinstance(proto.receive(_end(2, "mine")), StreamEnd)
    assert proto.state is State.READY and proto.tokens_reported == 3
    proto.end_frame()
    assert proto.state is State.CLOSED
    with pytest.raises(ProtocolError, match="closed"):
        proto.prompt_frame("c")


def test_error_frames_are_events_not_raised() -> None:
    proto, host = open_pair()
    proto.prompt_frame("a")
    event = proto.receive(_error("RATE_LIMITED", "42-0"))
    assert isinstance(event, HostErrorEvent) and event.code == "RATE_LIMITED"
    assert isinstance(event.error, HostError)
    # the answer is over: the next prompt may go, a late stream_end is counted, not shown
    assert proto.state is State.READY
    assert proto.receive(_end(7, "42-0")) is None
    assert proto.tokens_reported == 7
    host.reset_response()
    proto.prompt_frame("b")
    assert isinstance(proto.receive(_end(2, "42-1")), StreamEnd)
    assert proto.tokens_reported == 9
    # a session-level error (no id, nothing streaming) is an event too
    assert isinstance(proto.receive(_error("X", None)), HostErrorEvent)


def test_a_refused_init_can_be_tried_again() -> None:
    proto = ClientSession(job_id=42, encrypted=False)
    proto.init_frame()
    event = proto.receive(_error("HOST_BUSY", None))
    assert isinstance(event, HostErrorEvent) and event.code == "HOST_BUSY"
    assert proto.state is State.CONNECTING and not proto.ready
    proto.init_frame()
    proto.receive(ACK)
    assert proto.state is State.READY


def test_answers_given_up_are_dropped_undecrypted_and_their_end_counted() -> None:
    proto, host = open_pair()
    host.open_message(parse_client_message(proto.prompt_frame("slow")))
    first = proto.receive(host.chunk_frame("x", id="42-0"))
    assert isinstance(first, TokenChunk)
    proto.cancel_frame()
    proto.give_up()  # e.g. a deadline passed
    assert proto.state is State.READY
    late_chunk = host.chunk_frame("y", id="42-0")
    host.reset_response()
    host.open_message(parse_client_message(proto.prompt_frame("next")))
    # the old answer's chunk 1 arrives where the new answer's chunk 0 is due: dropped, and
    # the new answer's chunk index is untouched
    assert proto.receive(late_chunk) is None
    assert proto.receive(host.response_frame("cancelled", id="42-0")) is None
    assert proto.receive(_error("CANCELLED", "42-0")) is None
    assert proto.receive(_end(25, "42-0")) is None
    # the answer brought 2 bytes ("x", and "y" counted from its ciphertext): 25 claimed,
    # 2 + TOKENS_WITHOUT_TEXT = 10 counted
    assert (proto.tokens_claimed, proto.tokens_reported) == (25, 10)
    assert proto.overreports == [TokenOverreport("42-0", 25, 2)]
    assert proto.receive(host.chunk_frame("new", id="42-1")) == TokenChunk(
        "new", 0, 1, False, "42-1"
    )
    assert isinstance(proto.receive(_end(1, "42-1")), StreamEnd)
    assert (proto.tokens_claimed, proto.tokens_reported) == (26, 11)


def test_a_stream_end_for_another_answer_is_not_this_ones() -> None:
    proto, host = open_pair()
    proto.prompt_frame("a")
    assert proto.receive(_end(500, "not-ours")) is None
    assert proto.state is State.STREAMING and proto.tokens_reported == 0
    assert isinstance(proto.receive(host.chunk_frame("x", id="42-0")), TokenChunk)
    assert isinstance(proto.receive(_end(1, "42-0")), StreamEnd)
    # with no answer current it is shown, still not counted
    assert isinstance(proto.receive(_end(500, "not-ours")), StreamEnd)
    assert proto.tokens_reported == 1


def test_hosts_that_echo_no_id() -> None:
    proto, host = open_pair()
    proto.prompt_frame("a")
    assert isinstance(proto.receive(host.chunk_frame("x")), TokenChunk)
    proto.give_up()
    # nothing is current: an id-less frame belongs to the answer given up
    assert proto.receive(host.chunk_frame("y")) is None
    assert proto.receive(_end(4, None)) is None
    assert proto.tokens_reported == 4
    # and with nothing given up any more, an id-less stream_end is a current one's
    host.reset_response()
    proto.prompt_frame("b")
    assert isinstance(proto.receive(host.chunk_frame("z")), TokenChunk)
    assert isinstance(proto.receive(_end(2, None)), StreamEnd)
    assert proto.tokens_reported == 6


def test_final_checkpoint_correlation() -> None:
    proto, _ = open_pair()
    frame = json.loads(proto.checkpoint_request_frame())
    assert frame == {"type": "checkpoint_request", "session_id": "42", "id": "42-final"}
    failed = proto.receive(_error("CHECKPOINT_FAILED", "42-final"))
    assert isinstance(failed, CheckpointFailed) and failed.error.code == "CHECKPOINT_FAILED"
    proto.checkpoint_request_frame()
    # a host that echoes no id: its error answers the pending request
    assert isinstance(proto.receive(_error("CHECKPOINT_FAILED", None)), CheckpointFailed)
    proto.checkpoint_request_frame()
    done = CheckpointSubmitted(session_id="42", tokens_claimed=1000, tx_hash="0xab", id="42-final")
    event = proto.receive(done.to_json())
    assert isinstance(event, CheckpointSubmitted) and event.tx_hash == "0xab"
    # answered: an id-less error is the session's again
    assert isinstance(proto.receive(_error("X", None)), HostErrorEvent)


def test_proofs_are_kept_and_keep_alives_pass_through() -> None:
    proto, _ = open_pair()
    proof = ProofSubmitted(session_id="42", tokens_claimed=1000, proof_hash="0x01", tx_hash="0x02")
    assert proto.receive(proof.to_json()) == proof
    assert proto.receive(PongFrame().to_json()) == PongFrame()
    assert proto.proofs == [proof]


def test_rekey_restarts_the_message_index_with_a_new_key() -> None:
    proto, host = open_pair()
    host.open_message(parse_client_message(proto.prompt_frame("a")))
    proto.receive(_end(1, "42-0"))
    assert proto.next_message == 1
    frame = proto.init_frame(new_key=True)
    assert proto.state is State.CONNECTING and proto.next_message == 0
    with pytest.raises(ProtocolError):
        proto.prompt_frame("too early")
    fresh = accept(frame)
    proto.receive(ACK)
    prompt = parse_client_message(proto.prompt_frame("b"))
    assert fresh.open_message(prompt).prompt == "b"  # message_0 under the new key
    with pytest.raises(MessageIndexError):
        host.open_message(prompt)  # the old key's host expects message_1
    # a refused re-init leaves the session as it was: same key, same message index
    proto.receive(_end(1, proto.answer_id))
    proto.init_frame(new_key=True)
    assert isinstance(proto.receive(_error("SESSION_ALREADY_INITIALIZED", None)), HostErrorEvent)
    assert proto.state is State.READY and proto.next_message == 1
    assert fresh.open_message(parse_client_message(proto.prompt_frame("c"))).prompt == "c"
    # no re-init while an answer streams
    with pytest.raises(ProtocolError, match="streaming"):
        proto.init_frame()


def test_protocol_breaks_raise() -> None:
    proto, host = open_pair()
    proto.prompt_frame("a")
    host.chunk_frame("skipped", id="42-0")
    with pytest.raises(MessageIndexError):
        proto.receive(host.chunk_frame("x", id="42-0"))
    with pytest.raises(ProtocolError):
        proto.receive(ACK)  # no init outstanding
    with pytest.raises(ProtocolError):
        proto.receive(b"not json")
