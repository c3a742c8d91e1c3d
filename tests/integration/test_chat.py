"""``fabstir chat`` driven as a subprocess against a devnet, a local S5 portal and a host.

Its own devnet without snapshots, like the other host tests: the host outlives each test.
"""

from __future__ import annotations

import re

import pytest

from fabstir_sdk import FabstirSDK, SessionState
from fabstir_sdk.devnet import Devnet

from .cli_process import KEY_ENV, Chat, session_id
from .cli_process import host as host  # a fixture
from .cli_process import net as net  # a fixture
from .conftest import nonce
from .host_helpers import BUILTIN, PRICE, wait_for_job

pytestmark = pytest.mark.integration

USER, DOOMED = 1, 3


async def test_chat_streams_answers_with_context_and_completes_on_quit(net, host):
    user = net.accounts[USER]
    chat = await Chat.start(net, "--model", BUILTIN, key=user.private_key)  # host found
    assert await chat.say("My name is Ada.") == "Nice to meet you, Ada. I will remember your name."
    await chat.send("   ")  # blank lines are skipped: no answer line, so the next read gets...
    assert await chat.say("What is my name?") == "Your name is Ada."  # ...this answer
    code, rest, err = await chat.finish("/quit")
    assert (code, rest) == (0, ""), err
    job_id = session_id(err)
    assert f"with host {host.address} at 0.002 USDC per 1000 tokens. Type /quit" in err
    assert PRICE == 2000  # micro-USDC
    # 18 tokens padded to the 1000-token interval at 2000 per 1000 tokens
    assert re.search(
        rf"Session {job_id} completed \(tx 0x[0-9a-f]{{64}}\): 1,000 tokens billed; paid "
        r"0\.002 USDC \(host 0\.0018 USDC, treasury 0\.0002 USDC\); refunded 0\.998 USDC\.",
        err,
    ), err
    assert user.private_key.removeprefix("0x") not in err

    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(user.private_key)
        job = await sdk.get_payment_manager().get_session_job(job_id)
        assert (job.status, job.tokens_used, job.host) == (
            SessionState.COMPLETED,
            1000,
            host.address,
        )
        storage = await sdk.get_storage_manager()
        conversation = await storage.load_conversation(str(job_id))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada. I will remember your name."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]


async def usdc_allowance(net: Devnet, owner: str) -> int:
    """The marketplace's USDC allowance from ``owner``."""
    async with FabstirSDK(net.sdk_config()) as sdk:
        return await sdk.get_payment_manager().get_allowance(net.addresses.usdc_token, owner)


async def test_chat_on_exit_end_is_gas_free_and_the_host_settles(net, host):
    user = net.accounts[USER]
    sent = await nonce(net, USER)
    # an earlier session here approved a budget that still covers this one's 1 USDC
    approvals = 0 if await usdc_allowance(net, user.address) >= 1_000_000 else 1
    chat = await Chat.start(
        net,
        "--model",
        BUILTIN,
        "--host-address",
        host.address,
        "--on-exit",
        "end",
        key=user.private_key,
    )
    assert await chat.say("count to 5") == "1 2 3 4 5"
    code, rest, err = await chat.finish()  # end of input, no /quit
    assert (code, rest) == (0, ""), err
    job_id = session_id(err)
    assert f"Session {job_id} ended." in err
    # (approve if the allowance is short) + createSessionJob; nothing on exit
    assert await nonce(net, USER) == sent + approvals + 1
    await net.advance_time(31)
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.tokens_used) == (SessionState.COMPLETED, 1000)


async def test_chat_refuses_bad_input_before_paying(net, host):
    user = net.accounts[USER]
    before = await nonce(net, USER)
    chat = await Chat.start(net, "--model", BUILTIN)  # no key in the environment
    code, out, err = await chat.finish()
    assert (code, out) == (1, "")
    assert err.strip() == (
        f"fabstir: error: set {KEY_ENV} to the user's private key (or use --key-file)"
    )
    chat = await Chat.start(
        net, "--model", BUILTIN, "--max-price", str(PRICE - 1), key=user.private_key
    )
    code, out, err = await chat.finish()
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith("fabstir: error: no host fits: "), err
    chat = await Chat.start(
        net,
        *("--model", BUILTIN, "--host-address", host.address, "--max-price", str(PRICE - 1)),
        key=user.private_key,
    )
    code, out, err = await chat.finish()
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"Opening a session for {BUILTIN} (1 USDC deposit)...",
        f"fabstir: error: the host charges {PRICE} per 1000 tokens, above your maximum {PRICE - 1}",
    ]
    assert await nonce(net, USER) == before  # no transaction was sent


async def test_chat_host_dying_exits_nonzero_after_settling(net):
    """The host dies between prompts: one resume attempt fails, the session is completed
    (nothing proven, all refunded), and the exit code says it went wrong."""
    doomed = await net.start_host(account=DOOMED, models=[BUILTIN], chain_poll=0.1)
    user = net.accounts[USER]
    chat = await Chat.start(
        net, "--model", BUILTIN, "--host-address", doomed.address, key=user.private_key
    )
    assert await chat.say("count to 3") == "1 2 3"
    doomed.kill()
    code, out, err = await chat.finish("count to 4")
    assert (code, out) == (1, "\n"), err  # the broken answer's line, empty
    job_id = session_id(err)
    assert "lost the host" in err and "fabstir: error: " in err, err
    assert re.search(
        rf"Session {job_id} completed \(tx 0x[0-9a-f]{{64}}\): 0 tokens billed; paid 0 USDC "
        r"\(host 0 USDC, treasury 0 USDC\); refunded 1 USDC\.",
        err,
    ), err
