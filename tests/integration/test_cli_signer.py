"""``fabstir chat``, ``proxy`` and ``model`` with the wallet in a signer service.

The signer service is a second anvil, a separate process holding the devnet's keys unlocked
(as in test_signers.py). The commands run as processes that get its URL and the wallet's
address, never the key; they pay, stream and settle through it. A service that misbehaves
(holds another key, signs non-deterministically) is that anvil behind a rewriting proxy on
loopback: the key still never leaves the anvil.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from fabstir_sdk import FabstirSDK, SessionState
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet import Devnet

from .cli_process import KEY_ENV, Chat, fabstir, session_id, usdc_of
from .cli_process import host as host  # a fixture
from .cli_process import net as net  # a fixture
from .cli_process import run as run_fabstir
from .conftest import nonce
from .host_helpers import BUILTIN, read_job, wait_for_job
from .signer_service import N, signer_flags
from .signer_service import service as service  # a fixture

pytestmark = pytest.mark.integration

USER, HOST, OTHER, FLIPPING, PROXY_USER, VOTER, OWNER, AGENT = 1, 2, 3, 4, 5, 6, 7, 8


def no_key_in(pid: int, key: str) -> None:
    """The process was never given the key: not in its environment nor its arguments."""
    proc = Path(f"/proc/{pid}")
    for name in ("environ", "cmdline"):
        assert key.removeprefix("0x").lower().encode() not in (proc / name).read_bytes().lower()
    assert f"{KEY_ENV}=".encode() not in (proc / "environ").read_bytes()


class Wallet:
    """An account's ETH and USDC at one block, to check later what it paid since then."""

    def __init__(self, net: Devnet, address: str, block: int, eth: int, usdc: int) -> None:
        self.net, self.address = net, address
        self.block, self.eth, self.usdc = block, eth, usdc

    @classmethod
    async def now(cls, net: Devnet, address: str) -> Wallet:
        rpc = JsonRpcClient(net.rpc_url)
        try:
            block = int(await rpc.call("eth_blockNumber"), 16)
            eth = int(await rpc.call("eth_getBalance", address, hex(block)), 16)
        finally:
            await rpc.aclose()
        return cls(net, address, block, eth, await usdc_of(net, address))

    async def paid(self) -> tuple[int, int]:
        """``(transactions sent, USDC spent)`` since :meth:`now`; the ETH balance must have
        moved by exactly those transactions' gas (these sessions pay in USDC)."""
        rpc = JsonRpcClient(self.net.rpc_url)
        try:
            last = int(await rpc.call("eth_blockNumber"), 16)
            sent = gas = 0
            for number in range(self.block + 1, last + 1):
                block = await rpc.call("eth_getBlockByNumber", hex(number), True)
                for tx in block["transactions"]:
                    if tx["from"].lower() == self.address.lower():
                        receipt = await rpc.call("eth_getTransactionReceipt", tx["hash"])
                        assert int(receipt["status"], 16) == 1
                        sent += 1
                        gas += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
            eth = int(await rpc.call("eth_getBalance", self.address, hex(last)), 16)
        finally:
            await rpc.aclose()
        assert gas > 0 and eth == self.eth - gas
        return sent, self.usdc - await usdc_of(self.net, self.address)


async def test_chat_through_a_signer_service_streams_and_settles(net, host, service):
    user = net.accounts[USER]
    wallet = await Wallet.now(net, user.address)
    chat = await Chat.start(
        net,
        *("--model", BUILTIN, "--host-address", host.address, "--yes"),
        *signer_flags(service.rpc_url, user.address),
    )
    assert await chat.say("My name is Ada.") == "Nice to meet you, Ada. I will remember your name."
    no_key_in(chat.proc.pid, user.private_key)  # asked while it holds the session
    assert await chat.say("count to 5") == "1 2 3 4 5"
    code, rest, err = await chat.finish("/quit")
    assert (code, rest) == (0, ""), err
    job_id = session_id(err)
    assert (
        f"Session {job_id} completed (tx 0x" in err
        and "1,000 tokens billed; paid 0.002 USDC (host 0.0018 USDC, treasury 0.0002 USDC); "
        "refunded 0.998 USDC."
        in err
    ), err
    assert user.private_key.removeprefix("0x") not in err
    # approve + createSessionJob + completeSessionJob, all signed by the service; the
    # wallet paid their gas and 2000 micro-USDC (the 1000-token minimum at 2000 per 1000)
    assert await wallet.paid() == (3, 2000)
    job = await read_job(net, job_id)
    assert (job.status, job.depositor, job.tokens_used, job.refunded_to_user) == (
        SessionState.COMPLETED,
        user.address,
        1000,
        998_000,
    )
    # the conversation is in the wallet's storage: the same seed as from the key itself
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(user.private_key)
        conversation = await (await sdk.get_storage_manager()).load_conversation(str(job_id))
    assert [m.content for m in conversation.messages] == [
        "My name is Ada.",
        "Nice to meet you, Ada. I will remember your name.",
        "count to 5",
        "1 2 3 4 5",
    ]


Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


class RewritingService:
    """The signer service behind a loopback proxy that rewrites each call's request and
    answer: a service that misbehaves, while the key stays in the anvil."""

    def __init__(
        self,
        upstream: str,
        *,
        request: Rewrite = lambda payload: payload,
        answer: Rewrite = lambda reply: reply,
    ) -> None:
        self.upstream, self.request, self.answer = upstream, request, answer
        self.url = ""

    async def __aenter__(self) -> RewritingService:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        await self._http.close()

    async def _forward(self, request: web.Request) -> web.Response:
        payload = self.request(await request.json())
        async with self._http.post(self.upstream, json=payload) as reply:
            answer = await reply.json()
        return web.json_response(self.answer(answer))


async def refused(net: Devnet, url: str, address: str) -> tuple[int, str]:
    """``fabstir chat`` with this signer: it must fail before paying, output nothing on
    stdout, and write one line on stderr that shows no key; the exit code and that line."""
    chat = await Chat.start(net, "--model", BUILTIN, "--yes", *signer_flags(url, address))
    code, out, err = await chat.finish()
    assert out == "" and err.count("\n") == 1 and err.startswith("fabstir: error: "), err
    for account in net.accounts:
        assert account.private_key.removeprefix("0x").lower() not in err.lower()
    return code, err.removeprefix("fabstir: error: ").rstrip("\n")


async def test_chat_refuses_a_bad_signer_before_paying(net, host, service):
    """Each refusal is one line naming the problem, with nothing sent and no key shown."""
    user, other, flipping = (net.accounts[i].address for i in (USER, OTHER, FLIPPING))
    sent = [await nonce(net, i) for i in (USER, OTHER, FLIPPING)]
    assert await refused(net, "http://127.0.0.1:9", user) == (
        1,
        "the signer service: RPC endpoint http://127.0.0.1:9 unreachable (connection refused)",
    )
    assert await refused(net, "127.0.0.1:9", user) == (
        1,
        "a signer service URL is http:// or https:// and a host",
    )
    # the key itself pasted as the address: refused, and not shown
    assert await refused(net, service.rpc_url, net.accounts[USER].private_key) == (
        1,
        "signer address must be 0x followed by 40 hex digits, got a private key? (not shown)",
    )
    # an address the service does not hold: the service says so
    stranger = "0x" + "12" * 20
    assert await refused(net, service.rpc_url, stranger) == (
        1,
        f"the signer refused personal_sign for {stranger}: No Signer available",
    )

    # a service holding another key than --signer-address says: its first signature shows it
    def as_other(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["method"] == "personal_sign":
            payload["params"][1] = other
        return payload

    async with RewritingService(service.rpc_url, request=as_other) as wrong:
        assert await refused(net, wrong.url, user) == (
            1,
            f"the signer service signed the message as {other}, not {user}: it holds another key",
        )

    # a service whose signatures of one message differ (as with random nonces): each is
    # valid, but the storage key would change every time; refused before paying
    flips = 0

    def flip(reply: dict[str, Any]) -> dict[str, Any]:
        nonlocal flips
        signature = bytes.fromhex(str(reply.get("result", ""))[2:])
        if len(signature) == 65 and (flips := flips + 1) % 2 == 0:
            s = N - int.from_bytes(signature[32:64], "big")
            v = 55 - signature[64]  # 27 <-> 28: the same signer, the other valid form
            reply["result"] = "0x" + (signature[:32] + s.to_bytes(32, "big") + bytes([v])).hex()
        return reply

    async with RewritingService(service.rpc_url, answer=flip) as random_nonces:
        code, err = await refused(net, random_nonces.url, flipping)
    assert flips >= 2
    assert (code, err) == (
        1,
        f"the signer of {flipping} signed the storage-seed message twice and gave two "
        "different signatures, so its storage key would change every time; use a signer "
        "with deterministic (RFC 6979) signatures for storage",
    )
    assert [await nonce(net, i) for i in (USER, OTHER, FLIPPING)] == sent  # nothing sent


async def start_proxy(net: Devnet, storage: Path, *flags: str) -> asyncio.subprocess.Process:
    argv = ["proxy", "--manifest", str(net.manifest_path), "--port", "0", "--json"]
    argv += ["--storage-dir", str(storage), "--budget", "2", *flags]
    return await fabstir(*argv)


async def test_proxy_through_a_signer_service_bills_the_signers_account(
    net, host, service, tmp_path
):
    """An OpenAI-style request (plain and streaming) paid by the service's wallet;
    SIGTERM completes the session through the service; exact USDC."""
    user = net.accounts[PROXY_USER]
    wallet = await Wallet.now(net, user.address)
    proc = await start_proxy(net, tmp_path, *signer_flags(service.rpc_url, user.address))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready = json.loads(await proc.stdout.readline())
        assert ready["event"] == "ready" and ready["url"].startswith("http://127.0.0.1:")
        client = openai.AsyncOpenAI(base_url=ready["url"], api_key="unused", max_retries=0)
        messages: Any = [{"role": "user", "content": "count to 4"}]
        reply = await client.chat.completions.create(model=BUILTIN, messages=messages)
        assert reply.choices[0].message.content == "1 2 3 4"
        no_key_in(proc.pid, user.private_key)  # while it holds the session
        stream = await client.chat.completions.create(
            model=BUILTIN, messages=[{"role": "user", "content": "count to 3"}], stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "1 2 3"
        proc.send_signal(signal.SIGTERM)
        settled = json.loads(await proc.stdout.readline())
        assert await proc.wait() == 0
        rest = (await proc.stdout.read()).decode() + (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert user.private_key.removeprefix("0x") not in json.dumps(ready) + rest
    job_id = int(reply.model_extra["fabstir"]["session_id"])
    assert (settled["event"], settled["job_id"]) == ("settled", job_id)
    assert (settled["tokens_used"], settled["host_payment"]) == (1000, 2000)
    assert (settled["host_net"], settled["treasury_fee"]) == (1800, 200)
    assert settled["refund"] == 2_000_000 - 2000
    job = await read_job(net, job_id)
    assert (job.status, job.depositor, job.deposit) == (
        SessionState.COMPLETED,
        user.address,
        2_000_000,
    )
    assert await wallet.paid() == (3, 2000)  # approve, create, complete: by the service


async def test_proxy_refuses_a_bad_signer_in_one_line(net, service, tmp_path):
    user = net.accounts[PROXY_USER].address
    for flags, message in (
        (
            signer_flags("http://127.0.0.1:9", user),
            "the signer service: RPC endpoint http://127.0.0.1:9 unreachable (connection refused)",
        ),
        (["--signer-address", user], "--signer-address goes with --signer-url"),
        (["--signer-url", service.rpc_url], "--signer-url needs --signer-address, the wallet"),
    ):
        proc = await start_proxy(net, tmp_path, *flags)
        out, err = await proc.communicate()
        assert (proc.returncode, out) == (1, b"")
        assert err.decode().startswith(f"fabstir: error: {message}") and err.count(b"\n") == 1


async def cli(net: Devnet, *argv: str) -> tuple[int, dict[str, Any], str]:
    """``fabstir ARGV --manifest ...`` as a process with no key in its environment."""
    code, out, err = await run_fabstir(*argv, "--manifest", str(net.manifest_path))
    return code, json.loads(out or "{}"), err


async def test_model_governance_through_a_signer_service(net, service):
    """``fabstir model propose`` and ``vote`` signed by the service: the fee and the
    locked FAB leave the service's wallet exactly."""
    from fabstir_sdk.chain.model_id import model_id

    voter = net.accounts[VOTER].address
    fab = net.addresses.fab_token
    model = "community/Signer-GGUF:signer.q4.gguf"
    repo, file = model.split(":")
    async with FabstirSDK(net.sdk_config()) as sdk:
        before = await sdk.get_payment_manager().get_token_balance(fab, voter)
    flags = signer_flags(service.rpc_url, voter)
    code, proposed, err = await cli(
        net, "model", "propose", "--repo", repo, "--file", file, "--sha256", "cd" * 32, *flags
    )
    assert (code, err, proposed["proposed"]) == (0, "", model_id(model))
    code, voted, err = await cli(net, "model", "vote", "--model", model, "--amount", "2.5", *flags)
    assert (code, err, voted["votes_for"]) == (0, "", str(25 * 10**17))
    code, status, err = await cli(net, "model", "status", "--model", model, *flags)
    assert (code, status["proposal"]["proposer"]) == (0, voter), err
    assert status["votes"] == {"address": voter, "amount": str(25 * 10**17)}
    async with FabstirSDK(net.sdk_config()) as sdk:
        after = await sdk.get_payment_manager().get_token_balance(fab, voter)
    assert after == before - 100 * 10**18 - 25 * 10**17  # the proposal fee, the vote


async def test_an_agents_chat_through_a_signer_service(net, host, service):
    """``fabstir chat --payer OWNER`` with the agent's key in the service: the agent signs
    the session's creation and its init there, the owner pays, the host settles."""
    owner, agent = net.accounts[OWNER], net.accounts[AGENT]
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(owner.private_key)
        pm = sdk.get_payment_manager()
        await pm.approve_usdc(net.addresses.usdc_token, "1")
        await pm.authorize_delegate(agent.address)
    before = await usdc_of(net, owner.address)
    sent = await nonce(net, AGENT)
    chat = await Chat.start(
        net,
        *("--model", BUILTIN, "--host-address", host.address, "--yes"),
        *("--payer", owner.address, *signer_flags(service.rpc_url, agent.address)),
    )
    assert await chat.say("count to 3") == "1 2 3"
    no_key_in(chat.proc.pid, agent.private_key)
    code, rest, err = await chat.finish()
    assert (code, rest) == (0, ""), err
    job_id = session_id(err)
    assert f"Session {job_id} ended." in err
    assert await nonce(net, AGENT) == sent + 1  # the creation, signed by the service
    await net.advance_time(31)
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.depositor, job.tokens_used) == (
        SessionState.COMPLETED,
        owner.address,
        1000,
    )
    assert await usdc_of(net, owner.address) == before - 2000
