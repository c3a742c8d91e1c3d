"""Delegated sessions: an owner gives an agent a budget, never a key (issue 14 §1).

The owner approves the marketplace for USDC and authorises the agent's address; the agent,
with only its own key, opens sessions the owner pays for (the owner is the depositor),
streams through a real host process and ends them. Like test_sessions, this module has its
own devnet and host without per-test snapshots, so every test uses its own owner.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal

import pytest
from eth_account import Account

from fabstir_sdk import (
    ContractRevertError,
    DelegateNotAuthorizedError,
    FabstirSDK,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    NotFoundError,
    SessionState,
    ValidationError,
)
from fabstir_sdk.chain.client import ChainClient
from fabstir_sdk.devnet import Devnet, RunningHost

from .cli_process import environ, fabstir, run
from .host_helpers import BUILTIN, PRICE, wait_for_job

pytestmark = pytest.mark.integration

HOST = 2


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture
def devnet(net: Devnet) -> Devnet:
    """This module's own devnet for the shared fixtures that take ``devnet`` (``sdk_for``)."""
    return net


async def nonces(net: Devnet, *indices: int) -> list[int]:
    """Pending nonces of accounts, in one batch: unchanged means nothing was sent."""
    client = ChainClient(net.rpc_url)
    try:
        return [
            int(n, 16)
            for n in await client.rpc.batch(
                [("eth_getTransactionCount", (net.accounts[i].address, "pending")) for i in indices]
            )
        ]
    finally:
        await client.aclose()


async def allowance(net: Devnet, sdk: FabstirSDK, owner: str) -> int:
    client = ChainClient(net.rpc_url)
    try:
        usdc = client.contract("TestUSDC", net.addresses.usdc_token)
        return int(await client.read(usdc.call("allowance", owner, net.addresses.job_marketplace)))
    finally:
        await client.aclose()


async def test_an_agent_spends_its_owners_budget_without_the_owners_key(net, host, sdk_for):
    owner_sdk, agent_sdk = await sdk_for(1), await sdk_for(3)
    owner, agent = net.accounts[1].address, net.accounts[3].address
    usdc = net.addresses.usdc_token
    owner_pm, agent_pm = owner_sdk.get_payment_manager(), agent_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "2")
    await owner_pm.authorize_delegate(agent)
    assert await agent_pm.is_delegate_authorized(agent, payer=owner) is True
    owner_before = await owner_pm.get_token_balance(usdc)
    agent_before = await agent_pm.get_token_balance(usdc)

    sm = await agent_sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1", payer=owner)
    opened = await owner_pm.get_session_job(session.job_id)
    assert (opened.depositor, opened.deposit) == (owner, 1_000_000)
    assert await owner_pm.get_token_balance(usdc) == owner_before - 1_000_000
    first = await session.send_prompt("My name is Ada.")
    reply = await session.send_prompt("What is my name?")
    assert "Ada" in reply.text  # the host keeps the agent's context
    assert 0 < first.usage.completion_tokens + reply.usage.completion_tokens < 1000
    with pytest.raises(ValidationError, match="only the depositor"):
        await agent_pm.complete_session_job(session.job_id)  # the owner's job, not the agent's
    (agent_nonce,) = await nonces(net, 3)
    with pytest.raises(ValidationError, match="only the depositor"):
        await session.complete()  # refused before a byte goes to the host
    assert await nonces(net, 3) == [agent_nonce] and session.depositor == owner
    more = await session.send_prompt("count to 2")  # the session goes on
    assert more.text == "1 2"
    await session.end()  # the host bills its last proof and settles
    await net.advance_time(31)  # past the dispute window
    job = await wait_for_job(net, session.job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.depositor, job.tokens_used) == (SessionState.COMPLETED, owner, 1000)
    assert (job.withdrawn_by_host, job.refunded_to_user) == (1000 * PRICE // 1000, 998_000)

    # the second session: the owner completes it, once the host has proven its tokens
    second = await sm.create_session(model=BUILTIN, host=host.address, deposit="1", payer=owner)
    await second.send_prompt("count to 3")
    await second.end()
    await wait_for_job(net, second.job_id, lambda j: j.tokens_used == 1000)
    settlement = await owner_pm.complete_session_job(second.job_id)
    assert (settlement.tokens_used, settlement.host_payment, settlement.refund) == (
        1000,
        2000,
        998_000,
    )
    # the owner paid exactly the two bills; the agent paid no USDC at all
    assert await owner_pm.get_token_balance(usdc) == owner_before - 2 * 2000
    assert await agent_pm.get_token_balance(usdc) == agent_before
    assert await allowance(net, owner_sdk, owner) == 0

    # the conversations are the agent's, in the agent's storage; the owner's has none of it
    agent_storage = await agent_sdk.get_storage_manager()
    conversation = await agent_storage.load_conversation(session.conversation_id)
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "My name is Ada."),
        ("assistant", first.text),
        ("user", "What is my name?"),
        ("assistant", reply.text),
        ("user", "count to 2"),
        ("assistant", "1 2"),
    ]
    meta = await sm.get_session_data(session.session_id, "metadata")
    assert (meta["user"], meta["payer"]) == (agent, owner)
    owner_storage = await owner_sdk.get_storage_manager()
    with pytest.raises(NotFoundError):
        await owner_storage.load_conversation(session.conversation_id)


async def test_a_revoked_or_unknown_agent_is_refused_before_any_transaction(net, host, sdk_for):
    owner_sdk, agent_sdk = await sdk_for(4), await sdk_for(5)
    owner, agent = net.accounts[4].address, net.accounts[5].address
    usdc = net.addresses.usdc_token
    owner_pm, agent_pm = owner_sdk.get_payment_manager(), agent_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "5")
    sm = await agent_sdk.get_session_manager()
    (before,) = await nonces(net, 5)
    with pytest.raises(DelegateNotAuthorizedError) as never:
        await sm.create_session(model=BUILTIN, host=host.address, deposit="1", payer=owner)
    assert (never.value.payer, never.value.delegate) == (owner, agent)

    await owner_pm.authorize_delegate(agent)
    await owner_pm.authorize_delegate(agent, allowed=False)
    assert await owner_pm.is_delegate_authorized(agent) is False
    owner_usdc = await owner_pm.get_token_balance(usdc)
    with pytest.raises(DelegateNotAuthorizedError):
        await agent_pm.open_session_job(
            host.address, "1", PRICE, model=BUILTIN, token=usdc, payer=owner
        )
    assert await nonces(net, 5) == [before]  # the agent sent nothing
    assert await owner_pm.get_token_balance(usdc) == owner_usdc
    # and the contract itself refuses the call, as its typed custom error
    client = ChainClient(net.rpc_url)
    try:
        sender = client.sender(
            Account.from_key(net.accounts[5].private_key), chain_id=net.sdk_config().chain_id
        )
        mp = client.contract("JobMarketplace", net.addresses.job_marketplace)
        call = mp.call(
            "createSessionForModelAsDelegate",
            owner,
            "0x" + "00" * 32,
            host.address,
            usdc,
            1_000_000,
            PRICE,
            3600,
            1000,
            300,
        )
        with pytest.raises(ContractRevertError) as refused:
            await sender.send(call)
        assert refused.value.error_name == "NotDelegate"
    finally:
        await client.aclose()
    assert await nonces(net, 5) == [before]
    # bad arguments are refused locally, by both sides
    (owner_nonce,) = await nonces(net, 4)
    with pytest.raises(ValidationError):
        await sm.create_session(model=BUILTIN, host=host.address, payment="eth", payer=owner)
    for bad in (
        {"token": None, "payer": owner},
        {"token": usdc, "funding": "deposit", "payer": owner},
        {"token": usdc, "payer": "0x" + "00" * 20},
    ):
        with pytest.raises(ValidationError):
            await agent_pm.open_session_job(host.address, "1", PRICE, model=BUILTIN, **bad)
    for delegate, allowed in ((owner, True), ("0x" + "00" * 20, True), (agent, "yes")):
        with pytest.raises(ValidationError):
            await owner_pm.authorize_delegate(delegate, allowed)  # type: ignore[arg-type]
    assert await nonces(net, 4, 5) == [owner_nonce, before]


async def test_an_agent_cannot_settle_or_withdraw_what_its_owner_holds(net, host, sdk_for):
    owner_sdk, agent_sdk = await sdk_for(6), await sdk_for(7)
    owner, agent = net.accounts[6].address, net.accounts[7].address
    usdc = net.addresses.usdc_token
    owner_pm, agent_pm = owner_sdk.get_payment_manager(), agent_sdk.get_payment_manager()
    await owner_pm.authorize_delegate(agent)
    own = await owner_pm.open_session_job(host.address, "1", PRICE, model=BUILTIN, token=usdc)
    await owner_pm.approve_usdc(usdc, "1")
    await owner_pm.deposit("1", usdc)
    (before,) = await nonces(net, 7)
    with pytest.raises(ValidationError, match="only the depositor"):
        await agent_pm.complete_session_job(own.job_id)
    with pytest.raises(InsufficientBalanceError):
        await agent_pm.withdraw("1", usdc)  # withdraw only ever takes the caller's deposit
    client = ChainClient(net.rpc_url)
    try:
        sender = client.sender(
            Account.from_key(net.accounts[7].private_key), chain_id=net.sdk_config().chain_id
        )
        mp = client.contract("JobMarketplace", net.addresses.job_marketplace)
        with pytest.raises(ContractRevertError) as complete:
            await sender.send(mp.call("completeSessionJob", own.job_id, ""))
        assert complete.value.reason == "Only depositor or host can complete"
        with pytest.raises(ContractRevertError) as withdraw:
            await sender.send(mp.call("withdrawToken", usdc, 1_000_000))
        assert withdraw.value.reason == "Insufficient balance"
    finally:
        await client.aclose()
    assert await nonces(net, 7) == [before]
    job = await owner_pm.get_session_job(own.job_id)
    assert (job.status, job.depositor) == (SessionState.ACTIVE, owner)
    assert await owner_pm.get_deposit_balance(usdc) == 1_000_000


async def test_the_owners_allowance_bounds_all_its_agents_together(net, host, sdk_for):
    owner_sdk, first_sdk, second_sdk = await sdk_for(8), await sdk_for(9), await sdk_for(0)
    owner = net.accounts[8].address
    usdc = net.addresses.usdc_token
    owner_pm = owner_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "1.5")
    await owner_pm.authorize_delegate(net.accounts[9].address)
    await owner_pm.authorize_delegate(net.accounts[0].address)
    owner_usdc = await owner_pm.get_token_balance(usdc)
    first, second = first_sdk.get_payment_manager(), second_sdk.get_payment_manager()

    a = await first.open_session_job(
        host.address, "1", PRICE, model=BUILTIN, token=usdc, payer=owner
    )
    assert a.job.depositor == owner
    (before,) = await nonces(net, 0)
    with pytest.raises(InsufficientAllowanceError) as short:
        await second.open_session_job(
            host.address, "1", PRICE, model=BUILTIN, token=usdc, payer=owner
        )
    assert (short.value.needed, short.value.allowance) == (1_000_000, 500_000)
    assert await nonces(net, 0) == [before]  # no approval attempted with the agent's key
    b = await second.open_session_job(
        host.address, "0.5", PRICE, model=BUILTIN, token=usdc, payer=owner
    )
    assert b.job.depositor == owner
    with pytest.raises(InsufficientAllowanceError):
        await first.open_session_job(
            host.address, "0.5", PRICE, model=BUILTIN, token=usdc, payer=owner
        )
    assert await owner_pm.get_token_balance(usdc) == owner_usdc - 1_500_000
    assert await allowance(net, owner_sdk, owner) == 0
    # the owner settles both at once: nothing was proven, so each bills the contract's
    # minimum for an early cancellation, and the rest comes back to the owner
    settled = [await owner_pm.complete_session_job(j.job_id) for j in (a, b)]
    refunds = sum(s.refund for s in settled)
    fees = sum(s.host_payment for s in settled)
    assert refunds + fees == 1_500_000
    assert await owner_pm.get_token_balance(usdc) == owner_usdc - fees


async def test_langchain_through_a_proxy_that_runs_with_the_agents_key(
    net, host, sdk_for, tmp_path
):
    """`fabstir proxy --payer OWNER` with the agent's key; LangChain's ChatOpenAI in front."""
    import openai
    from langchain_openai import ChatOpenAI

    owner_sdk = await sdk_for(1)  # the owner of the first test: a new budget
    owner = net.accounts[1].address
    agent = net.accounts[3]
    usdc = net.addresses.usdc_token
    owner_pm = owner_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "1")
    await owner_pm.authorize_delegate(agent.address, allowed=False)  # not yet
    owner_usdc = await owner_pm.get_token_balance(usdc)
    known = {j.id for j in await (await owner_sdk.get_session_manager()).list_sessions()}

    env = environ(FABSTIR_PRIVATE_KEY=agent.private_key)
    argv = ["proxy", "--manifest", str(net.manifest_path), "--port", "0", "--json"]
    argv += ["--storage-dir", str(tmp_path), "--payer", owner]
    proc = await fabstir(*argv, env=env)
    try:
        assert proc.stdout is not None
        ready = json.loads(await proc.stdout.readline())
        llm = ChatOpenAI(model=BUILTIN, base_url=ready["url"], api_key="unused", max_retries=0)
        (agent_nonce,) = await nonces(net, 3)
        with pytest.raises(openai.PermissionDeniedError, match="not authorised"):
            await llm.ainvoke("count to 5")
        assert await nonces(net, 3) == [agent_nonce]
        await owner_pm.authorize_delegate(agent.address)
        answer = await llm.ainvoke("count to 5")
        assert answer.content == "1 2 3 4 5"
        chunks = [c.content async for c in llm.astream("count to 3")]
        assert "".join(chunks) == "1 2 3" and len(chunks) >= 3
        # and the synchronous calls, from a worker thread (this loop runs the test)
        assert (await asyncio.to_thread(llm.invoke, "count to 2")).content == "1 2"
        streamed = await asyncio.to_thread(lambda: [c.content for c in llm.stream("count to 4")])
        assert "".join(streamed) == "1 2 3 4" and len(streamed) >= 4
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    (job_id,) = {
        j.id for j in await (await owner_sdk.get_session_manager()).list_sessions()
    } - known
    await net.advance_time(31)  # the proxy ended the session: the host settles it
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.depositor, job.tokens_used) == (SessionState.COMPLETED, owner, 1000)
    assert await owner_pm.get_token_balance(usdc) == owner_usdc - 2000


async def test_the_host_keeps_the_owners_and_the_agents_contexts_apart(net, host, sdk_for):
    """The owner may join its agent's job with its own key: each signer has its own context
    on the host and its own storage; the owner then completes the job."""
    owner_sdk, agent_sdk = await sdk_for(6), await sdk_for(7)
    owner = net.accounts[6].address
    usdc = net.addresses.usdc_token
    owner_pm = owner_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "1")
    await owner_pm.authorize_delegate(net.accounts[7].address)
    owner_usdc = await owner_pm.get_token_balance(usdc)
    agent_session = await (await agent_sdk.get_session_manager()).create_session(
        model=BUILTIN, host=host.address, deposit="1", payer=owner
    )
    told = await agent_session.send_prompt("My name is Ada.")
    assert told.text == "Nice to meet you, Ada. I will remember your name."

    joined = await (await owner_sdk.get_session_manager()).resume_session(agent_session.job_id)
    asked = await joined.send_prompt("What is my name?")
    assert asked.text == "You have not told me your name yet."
    again = await agent_session.send_prompt("What is my name?")
    assert again.text == "Your name is Ada."
    await agent_session.end()
    settlement = await joined.complete()
    assert (settlement.tokens_used, settlement.host_payment, settlement.refund) == (
        1000,
        2000,
        998_000,
    )
    assert await owner_pm.get_token_balance(usdc) == owner_usdc - 2000
    # each conversation is in its signer's storage only
    agent_storage = await agent_sdk.get_storage_manager()
    owner_storage = await owner_sdk.get_storage_manager()
    mine = await agent_storage.load_conversation(agent_session.conversation_id)
    theirs = await owner_storage.load_conversation(joined.conversation_id)
    assert [m.content for m in mine.messages] == [
        "My name is Ada.",
        told.text,
        "What is my name?",
        again.text,
    ]
    assert [m.content for m in theirs.messages] == ["What is my name?", asked.text]


async def test_an_agent_resumes_its_delegated_session_after_a_restart(net, host, sdk_for):
    owner_sdk = await sdk_for(8)
    owner, agent = net.accounts[8].address, net.accounts[9]
    usdc = net.addresses.usdc_token
    owner_pm = owner_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "1")
    await owner_pm.authorize_delegate(agent.address)
    owner_usdc = await owner_pm.get_token_balance(usdc)
    async with FabstirSDK(net.sdk_config()) as first_run:
        await first_run.authenticate(agent.private_key)
        sm = await first_run.get_session_manager()
        session = await sm.create_session(
            model=BUILTIN, host=host.address, deposit="1", payer=owner
        )
        await session.send_prompt("My name is Ada.")
    # a new process with the same key: the agent's own S5 records say the job is its own
    second_run = await sdk_for(9)
    resumed = await (await second_run.get_session_manager()).resume_session(session.job_id)
    assert (resumed.depositor, resumed.model) == (owner, BUILTIN)
    assert (await resumed.send_prompt("What is my name?")).text == "Your name is Ada."
    await resumed.end()
    await wait_for_job(net, session.job_id, lambda j: j.tokens_used == 1000)
    settlement = await owner_pm.complete_session_job(session.job_id)
    assert (settlement.tokens_used, settlement.refund) == (1000, 998_000)
    assert await owner_pm.get_token_balance(usdc) == owner_usdc - 2000
    # someone else's job is still refused
    stranger = await sdk_for(5)
    with pytest.raises(ValidationError, match="not to you"):
        await (await stranger.get_session_manager()).resume_session(session.job_id)


async def test_an_agents_list_sessions_shows_the_jobs_it_opened_for_its_owner(
    net, host, sdk_for, monkeypatch
):
    """The chain indexes a delegated job under its payer: the agent's list finds it in the
    SessionCreatedByDelegate logs, with the jobs it paid for itself, in id order."""
    from fabstir_sdk.managers._delegated import DelegatedJobs

    owner_sdk, agent_sdk = await sdk_for(4), await sdk_for(5)
    owner, agent = net.accounts[4].address, net.accounts[5].address
    usdc = net.addresses.usdc_token
    owner_pm, agent_pm = owner_sdk.get_payment_manager(), agent_sdk.get_payment_manager()
    owner_sm, agent_sm = (
        await owner_sdk.get_session_manager(),
        await agent_sdk.get_session_manager(),
    )
    await owner_pm.approve_usdc(usdc, "2")
    await owner_pm.authorize_delegate(agent)
    owner_before = [j.id for j in await owner_sm.list_sessions()]
    agent_before = [j.id for j in await agent_sm.list_sessions()]
    owner_usdc = await owner_pm.get_token_balance(usdc)
    agent_usdc = await agent_pm.get_token_balance(usdc)

    def open_(amount: str, payer: str | None):
        return agent_pm.open_session_job(
            host.address, amount, PRICE, model=BUILTIN, token=usdc, payer=payer
        )

    a = await open_("1", owner)
    mine = await open_("1", None)  # the agent's own money: indexed under the agent
    c = await open_("0.5", owner)
    listed = await agent_sm.list_sessions()
    assert [j.id for j in listed] == [*agent_before, a.job_id, mine.job_id, c.job_id]
    assert [(j.depositor, j.deposit, j.status) for j in listed[-3:]] == [
        (owner, 1_000_000, SessionState.ACTIVE),
        (agent, 1_000_000, SessionState.ACTIVE),
        (owner, 500_000, SessionState.ACTIVE),
    ]
    # the owner's view: what it paid for, its agent's jobs included, not the agent's own
    assert [j.id for j in await owner_sm.list_sessions()] == [*owner_before, a.job_id, c.job_id]
    assert await owner_pm.get_token_balance(usdc) == owner_usdc - 1_500_000
    assert await agent_pm.get_token_balance(usdc) == agent_usdc - 1_000_000

    # a later call scans only the new blocks, and still sees everything
    d = await open_("0.5", owner)
    assert [j.id for j in await agent_sm.list_sessions()][-4:] == [
        a.job_id,
        mine.job_id,
        c.job_id,
        d.job_id,
    ]
    # a fresh process, many small log windows and job reads in several batches: the same jobs
    monkeypatch.setattr(DelegatedJobs, "log_window", 3)
    monkeypatch.setattr(DelegatedJobs, "max_batch", 2)
    monkeypatch.setattr("fabstir_sdk.managers.payment._JOBS_PER_BATCH", 3)  # jobs read in 3s
    again = await sdk_for(5)
    again_sm = await again.get_session_manager()
    everything = [*agent_before, a.job_id, mine.job_id, c.job_id, d.job_id]
    assert [j.id for j in await again_sm.list_sessions()] == everything
    # from the block of c: a and every older delegated job are before the scan
    rpc = ChainClient(net.rpc_url).rpc
    try:
        receipt = await rpc.call("eth_getTransactionReceipt", c.tx_hash)
    finally:
        await rpc.aclose()
    later = await (await (await sdk_for(5)).get_session_manager()).list_sessions(
        from_block=int(receipt["blockNumber"], 16)
    )
    assert [j.id for j in later if j.depositor == owner] == [c.job_id, d.job_id]
    assert mine.job_id in [j.id for j in later]  # the agent's own: from the contract's index
    for bad in (-1, "0", True, 1.5):
        with pytest.raises(ValidationError, match="from_block"):
            await agent_sm.list_sessions(from_block=bad)  # type: ignore[arg-type]


async def _fabstir(net, key: str, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    """``fabstir ARGV`` as its own process with ``key`` in FABSTIR_PRIVATE_KEY."""
    return await run(*argv, env=environ(FABSTIR_PRIVATE_KEY=key), input=stdin)


async def test_fabstir_chat_with_payer_runs_an_agents_session(net, host, sdk_for, tmp_path):
    """`fabstir chat --payer OWNER` with the agent's key: the owner pays, the agent sends
    one transaction (the creation), the session ends and the host settles with the owner."""
    owner_sdk = await sdk_for(4)
    owner, agent = net.accounts[4].address, net.accounts[5]
    usdc = net.addresses.usdc_token
    owner_pm = owner_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "1")
    await owner_pm.authorize_delegate(agent.address)
    owner_usdc = await owner_pm.get_token_balance(usdc)
    chat = ["chat", "--manifest", str(net.manifest_path), "--storage-dir", str(tmp_path)]
    chat += ["--model", BUILTIN, "--host-address", host.address, "--yes"]
    (before,) = await nonces(net, 5)

    code, out, err = await _fabstir(
        net, agent.private_key, *chat, "--payer", owner, "--on-exit", "complete"
    )
    assert (code, out) == (1, ""), err
    assert err == (
        "fabstir: error: a session the payer pays for ends with on_exit='end' (--on-exit end): "
        "only the payer or the host may complete it\n"
    )
    code, out, err = await _fabstir(net, agent.private_key, *chat, "--payer", "0x1234")
    assert (code, out, err) == (
        1,
        "",
        "fabstir: error: payer must be 0x followed by 40 hex digits, got '0x1234'\n",
    )
    assert await nonces(net, 5) == [before]

    code, out, err = await _fabstir(
        net, agent.private_key, *chat, "--payer", owner, stdin="count to 3\n"
    )
    assert (code, out) == (0, "1 2 3\n"), err
    assert "Your transactions: create " in err and "approve" not in err, err
    assert "ended. The host submits its last proof and settles" in err, err
    assert await nonces(net, 5) == [before + 1]  # the creation only
    opened = re.search(r"^Session (\d+) with host", err, re.M)
    assert opened, err
    job_id = int(opened.group(1))
    agents_view = await (await sdk_for(5)).get_session_manager()
    assert job_id in [j.id for j in await agents_view.list_sessions()]
    await net.advance_time(31)
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.depositor, job.tokens_used) == (SessionState.COMPLETED, owner, 1000)
    assert await owner_pm.get_token_balance(usdc) == owner_usdc - 2000
    # revoked: the estimate refuses it, before anything is sent
    await owner_pm.authorize_delegate(agent.address, allowed=False)
    code, out, err = await _fabstir(net, agent.private_key, *chat, "--payer", owner)
    assert (code, out) == (1, ""), err
    assert err.splitlines()[-1] == (
        f"fabstir: error: {agent.address} is not authorised to open sessions paid by {owner}: "
        f"the payer calls PaymentManager.authorize_delegate('{agent.address}')"
    )
    assert await nonces(net, 5) == [before + 1]


async def test_an_agents_list_sessions_through_a_node_that_caps_the_log_range(
    net, host, sdk_for, monkeypatch
):
    """Providers cap eth_getLogs' block range, each its own way: the scan narrows its
    windows until the node answers, and finds the same jobs; a node without eth_getLogs
    at all is a typed RpcFailure."""
    from fabstir_sdk import RpcFailure
    from fabstir_sdk.managers._delegated import DelegatedJobs

    from .rpc_proxy import RpcProxy

    owner_sdk, agent_sdk = await sdk_for(8), await sdk_for(9)
    owner = net.accounts[8].address
    usdc = net.addresses.usdc_token
    owner_pm = owner_sdk.get_payment_manager()
    await owner_pm.approve_usdc(usdc, "0.5")
    await owner_pm.authorize_delegate(net.accounts[9].address)
    opened = await agent_sdk.get_payment_manager().open_session_job(
        host.address, "0.5", PRICE, model=BUILTIN, token=usdc, payer=owner
    )
    expected = [j.id for j in await (await agent_sdk.get_session_manager()).list_sessions()]
    assert opened.job_id in expected

    monkeypatch.setattr(DelegatedJobs, "log_window", 200)
    proxy = await RpcProxy(net.rpc_url).start()
    proxy.max_log_blocks = 5
    try:
        async with FabstirSDK(net.sdk_config(rpc_url=proxy.url)) as capped:
            await capped.authenticate(net.accounts[9].private_key)
            sm = await capped.get_session_manager()
            assert [j.id for j in await sm.list_sessions()] == expected  # 200 -> 20 -> 2 blocks
            (length,) = await chain_length(net)
            blocks = length - net.deployment.block  # the scan starts at the deployment
            # one request of 200 blocks, refused; windows of 20 in one batch, the first
            # refused; windows of 2, all answered
            assert proxy.seen["eth_getLogs"] == 1 + -(-blocks // 20) + -(-blocks // 2)
        proxy.missing.add("eth_getLogs")
        async with FabstirSDK(net.sdk_config(rpc_url=proxy.url)) as limited:
            await limited.authenticate(net.accounts[9].private_key)
            with pytest.raises(RpcFailure, match="eth_getLogs does not exist"):
                await (await limited.get_session_manager()).list_sessions()
    finally:
        await proxy.stop()


async def chain_length(net: Devnet) -> list[int]:
    """How many blocks the chain has (the latest block's number + 1)."""
    client = ChainClient(net.rpc_url)
    try:
        return [int(await client.rpc.call("eth_blockNumber"), 16) + 1]
    finally:
        await client.aclose()
