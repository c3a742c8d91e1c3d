"""What the client's core counts of a host's ``stream_end`` claims: the claim, capped at what
the answer's text can hold (one token a UTF-8 byte, plus TOKENS_WITHOUT_TEXT), whatever the
chunking; frames of answers given up are counted from their ciphertext's length."""

from __future__ import annotations

from fabstir_sdk.protocol import (
    TOKENS_WITHOUT_TEXT,
    ClientSession,
    StreamChunkFrame,
    StreamEnd,
    TokenChunk,
    TokenOverreport,
    tokens_bound,
)

from .session_pair import ACK, open_pair


def _end(tokens: int, id: str | None) -> str:
    return StreamEnd(tokens_used=tokens, finish_reason="stop", id=id).to_json()


def test_the_bound_is_one_token_a_byte_plus_eight() -> None:
    assert TOKENS_WITHOUT_TEXT == 8
    assert [tokens_bound(n) for n in (0, 1, 11, 4000)] == [8, 9, 19, 4008]


def test_a_chunk_may_carry_many_tokens_up_to_one_a_byte() -> None:
    """One chunk of 11 bytes ("hello world") may be 19 tokens; 20 is one too many."""
    proto, host = open_pair()
    for turn, claim in enumerate((19, 20)):
        aid = f"42-{turn}"
        proto.prompt_frame("hi")
        assert proto.receive(host.chunk_frame("hello world", tokens=1, id=aid)) == TokenChunk(
            "hello world", 0, 1, False, aid
        )
        assert isinstance(proto.receive(_end(claim, aid)), StreamEnd)
        assert proto.take_count(aid) == 19
        assert proto.take_count(aid) is None  # taken once
        host.reset_response()
    assert (proto.tokens_claimed, proto.tokens_reported) == (39, 38)
    assert proto.overreports == [TokenOverreport("42-1", 20, 11)]
    assert proto.overreports[0].bound == 19


def test_bytes_not_characters() -> None:
    """ "é" is 2 bytes and "€" 3 in UTF-8: 5 bytes, so 13 tokens may be claimed."""
    proto, host = open_pair()
    proto.prompt_frame("hi")
    proto.receive(host.chunk_frame("é", id="42-0"))
    proto.receive(host.chunk_frame("€", id="42-0"))
    proto.receive(_end(13, "42-0"))
    assert (proto.tokens_reported, proto.overreports) == (13, [])


def test_an_answer_with_no_text_may_claim_eight() -> None:
    proto, host = open_pair()
    proto.prompt_frame("hi")
    proto.receive(host.chunk_frame("", tokens=0, final=True, id="42-0"))
    proto.receive(_end(10**18, "42-0"))
    assert (proto.tokens_claimed, proto.tokens_reported) == (10**18, 8)
    assert proto.overreports == [TokenOverreport("42-0", 10**18, 0)]


def test_an_id_less_late_chunk_counts_for_the_answer_given_up() -> None:
    """Hosts that echo no id: a chunk while nothing is current belongs to the oldest answer
    given up, and its bytes (from the ciphertext, not decrypted) count for that answer."""
    proto, host = open_pair()
    proto.prompt_frame("a")
    proto.receive(host.chunk_frame("abc"))
    proto.give_up()
    assert proto.receive(host.chunk_frame("defgh")) is None
    assert proto.receive(_end(16, None)) is None
    assert (proto.tokens_claimed, proto.tokens_reported, proto.overreports) == (16, 16, [])
    # the next answer starts from nothing
    host.reset_response()
    proto.prompt_frame("b")
    proto.receive(host.chunk_frame("z"))
    proto.receive(_end(10, None))
    assert proto.tokens_reported == 16 + 9
    assert proto.overreports == [TokenOverreport("42-1", 10, 1)]


def test_plaintext_chunks_count_their_content() -> None:
    proto = ClientSession(job_id=42, encrypted=False)
    proto.receive(ACK)
    proto.prompt_frame("a")
    chunk = StreamChunkFrame(content="four", tokens=1, id="42-0").to_json()
    assert isinstance(proto.receive(chunk), TokenChunk)
    proto.give_up()
    late = StreamChunkFrame(content="more", tokens=1, id="42-0").to_json()
    assert proto.receive(late) is None  # dropped, still 4 bytes of this answer
    assert proto.receive(_end(17, "42-0")) is None
    assert (proto.tokens_reported, proto.overreports) == (16, [TokenOverreport("42-0", 17, 8)])
