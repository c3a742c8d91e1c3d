"""The host's billing rules (sans-I/O) and the built-in toy model."""

from __future__ import annotations

import pytest

from fabstir_sdk.host import MIN_CLAIM, Ledger
from fabstir_sdk.host._toy import count_tokens, reply_tokens, tokenize
from fabstir_sdk.protocol import ChatMessage


def _run(ledger: Ledger, turns: list[int]) -> list[int]:
    """Claims made while streaming ``turns`` token by token, then the final one."""
    claims = [c for n in turns for c in (ledger.add(1) for _ in range(n)) if c]
    final = ledger.final()
    return [*claims, final] if final else claims


@pytest.mark.parametrize(
    ("proof_interval", "turns", "claims"),
    [
        (1000, [13], [1000]),  # below the proof interval: the minimum bill
        (1000, [1000], [1000]),  # exactly one interval: one claim at the end
        (1000, [1099], [1099]),
        (1000, [1100], [1000, 100]),  # periodic claim keeps a reserve of 100
        (1000, [1200], [1000, 200]),
        (1000, [600, 600, 900], [1000, 1000, 100]),
        (1000, [3050], [1000, 1000, 1050]),
        (500, [13], [500]),
        (100, [250], [250]),
        (5000, [1200], [5000]),  # padding wins until the tokens pass the interval
        (5000, [5100], [5000, 100]),
    ],
)
def test_claims(proof_interval, turns, claims):
    ledger = Ledger(proof_interval, 1000, max_tokens=500_000)
    assert _run(ledger, turns) == claims
    assert all(c >= MIN_CLAIM for c in claims)
    assert ledger.billed == sum(claims) == max(sum(turns), proof_interval)


def test_nothing_used_nothing_billed():
    ledger = Ledger(1000, 1000, max_tokens=500_000)
    assert ledger.final() == 0 and ledger.billed == 0


def test_deposit_caps_the_bill():
    ledger = Ledger(100, 1000, max_tokens=1500)
    assert _run(ledger, [2000]) == [900, 500, 100]  # 1000 less the reserve; capped at 1500
    assert ledger.remaining == 0


def test_a_remainder_under_100_after_a_flush_is_not_claimable():
    ledger = Ledger(1000, 1000, max_tokens=500_000)
    assert _run(ledger, [1500]) == [1000, 500]
    assert _run(ledger, [40]) == []  # the contract refuses claims under 100 tokens
    assert ledger.billed == 1500


def test_smaller_checkpoint_interval():
    ledger = Ledger(1000, 200, max_tokens=500_000)
    assert _run(ledger, [1500]) == [1000, 200, 200, 100]


def test_resumed_ledger_bills_only_new_work():
    ledger = Ledger.resumed(
        proof_interval=1000, checkpoint_tokens=1000, max_tokens=10**6, on_chain=1000
    )
    assert _run(ledger, [150]) == [150]
    assert ledger.billed == 1150


def test_toy_tokens_round_trip_and_count():
    text = "Hello, world!  It's 42."
    assert "".join(tokenize(text)) == text
    assert tokenize(text) == ["Hello", ",", " world", "!", "  It", "'", "s", " 42", "."]
    messages = [ChatMessage(role="user", content="count to 5")]
    assert count_tokens(messages) == 4
    assert list(reply_tokens(messages)) == ["1", " 2", " 3", " 4", " 5"]
    down = [ChatMessage(role="user", content="count from 3 to 1")]
    assert "".join(reply_tokens(down)) == "3 2 1"


def test_toy_remembers_from_the_context():
    def reply(*contents: str) -> str:
        roles = ["user", "assistant"]
        return "".join(
            reply_tokens(
                [ChatMessage(role=roles[i % 2], content=c) for i, c in enumerate(contents)]
            )
        )

    assert reply("What is my name?") == "You have not told me your name yet."
    assert reply("My name is Ada.", "ok", "What's my name?") == "Your name is Ada."
    assert reply("Remember that the key is blue.", "ok", "What did I ask you to remember?") == (
        "You asked me to remember that the key is blue."
    )
    words = list(reply_tokens([ChatMessage(role="user", content="write 300 words")]))
    assert len(words) == 300 and words == list(
        reply_tokens([ChatMessage(role="user", content="write 300 words")])
    )
    assert reply("hello there").startswith('You said: "hello there". This is reply 1')


def test_host_config_refuses_bad_settings():
    from fabstir_sdk.config import SDKConfig
    from fabstir_sdk.errors import ConfigError
    from fabstir_sdk.host import HostConfig

    sdk = SDKConfig.base_sepolia()
    with pytest.raises(ConfigError, match="models"):
        HostConfig(sdk=sdk, models=[])
    with pytest.raises(ConfigError, match="listed twice"):
        HostConfig(sdk=sdk, models=["org/repo:f.gguf", "org/repo/f.gguf"])
    with pytest.raises(ConfigError, match="price_per_token_native"):
        HostConfig(sdk=sdk, models=["r:f"], price_per_token_native=1)
    config = HostConfig(sdk=sdk, models=["r:f"], port=0)
    assert config.api_url(8081) == "http://127.0.0.1:8081"
    assert HostConfig(sdk=sdk, models=["r:f"], public_url="https://h.example").api_url(1) == (
        "https://h.example"
    )
