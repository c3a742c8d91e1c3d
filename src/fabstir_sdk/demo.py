"""``fabstir demo``: the whole story on one machine, in well under a minute.

A devnet starts (anvil, our contracts, a local S5 portal), then a reference host with the
built-in toy model. A user finds that host through the registry (and, with the ``p2p``
extra installed, confirms it on the libp2p DHT; without it, one line says what that needs),
escrows 1 USDC for a session, streams two prompts (the second needs the first's context),
and completes. What is printed is read back: the split from the chain (balances and
earnings before and after, checked against the settlement's events), the conversation from
S5 (checked against the CID the chain recorded), and how long each step took. Any mismatch
raises, so the command exits non-zero.

``fabstir demo --payments`` runs the payment walkthrough of docs/payments.md instead: no
host process, a proof of 150,000 tokens submitted by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from .chain.units import format_units
from .errors import DemoCheckError, P2PUnavailableError
from .models import Conversation, Settlement
from .sdk import FabstirSDK

if TYPE_CHECKING:
    from .devnet import Devnet

__all__ = ["DemoResult", "payment_walkthrough", "session_demo"]

PRICE = 2000  # micro-USDC per 1000 tokens
TOKENS = 150_000
BUILTIN = "fabstir/builtin:toy-1.gguf"
PROMPTS = ("My name is Ada.", "What is my name?")
USER, HOST = 1, 2

Say = Callable[[str], None]


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise DemoCheckError(f"demo check failed: {what}")


class Progress:
    """A one-line spinner on a terminal (plain lines otherwise) while a step runs."""

    FRAMES = "|/-\\"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()

    @contextlib.asynccontextmanager
    async def step(self, label: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        spinner = asyncio.get_running_loop().create_task(self._spin(label, started))
        if not self.tty:
            self._write(f"{label}...\n")
        ok = False
        try:
            yield
            ok = True
        finally:
            spinner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await spinner
            took = time.perf_counter() - started
            end = f"done in {took:.1f} s" if ok else "failed"
            self._write(f"\r\x1b[2K{label}... {end}\n" if self.tty else f"  {end}\n")

    async def _spin(self, label: str, started: float) -> None:
        if not self.tty:
            return
        for frame in itertools.cycle(self.FRAMES):
            took = time.perf_counter() - started
            self._write(f"\r\x1b[2K{frame} {label}... {took:.1f} s")
            await asyncio.sleep(0.1)

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()


@dataclass
class DemoResult:
    """What :func:`session_demo` did and read back (amounts in the token's base units)."""

    host: str
    job_id: int
    replies: list[str]
    tokens_streamed: int
    settlement: Settlement
    user_cost: int
    host_credit: int
    treasury_credit: int
    conversation: Conversation
    conversation_cid: str
    timings: dict[str, float] = field(default_factory=dict)


async def session_demo(say: Say = print, progress: Progress | None = None) -> DemoResult:
    """Run the session demo on a new devnet, print the story and return what was read back."""
    from .devnet import Devnet

    progress = progress or Progress()
    dht = _dht_available(say)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    async with progress.step("Starting the devnet (anvil, contracts, S5 portal)"):
        net = await Devnet.start(with_s5=True)
    timings["devnet start"] = time.perf_counter() - started
    try:
        say(f"Devnet     {net.rpc_url} (chain {net.chain_id}), S5 portal {net.s5_portal_url}")
        mark = time.perf_counter()
        async with progress.step("Starting a reference host with the built-in model"):
            host = await net.start_host(
                account=HOST, models=[BUILTIN], price_per_token=PRICE, p2p=dht
            )
        timings["host start"] = time.perf_counter() - mark
        say(f"Host       {host.address} at {host.api_url}, serving {BUILTIN}")
        say(f"           price {PRICE} micro-USDC per 1000 tokens")
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            say(f"User       {net.accounts[USER].address}")
            result = await _user_story(sdk, net, host.address, timings, say, dht=dht)
    finally:
        await net.stop()
    _print_result(result, say)
    return result


def _dht_available(say: Say) -> bool:
    """Whether py-libp2p is installed; without it, say in one line what the DHT part needs."""
    from .p2p import require_libp2p

    try:
        require_libp2p()
    except P2PUnavailableError as exc:
        say(f"DHT        skipped, the registry alone finds the host. {exc}")
        return False
    return True


async def _balances(sdk: FabstirSDK, usdc: str, host: str) -> tuple[int, int, int]:
    """The user's USDC, the host's USDC earnings and the treasury's USDC fees."""
    return (
        await sdk.get_payment_manager().get_token_balance(usdc),
        await sdk.get_host_manager().get_host_earnings(usdc, address=host),
        await sdk.get_treasury_manager().get_accumulated_fees(usdc),
    )


async def _user_story(
    sdk: FabstirSDK, net: Devnet, host: str, timings: dict[str, float], say: Say, *, dht: bool
) -> DemoResult:
    pm, usdc = sdk.get_payment_manager(), net.addresses.usdc_token
    sm = await sdk.get_session_manager()
    before = await _balances(sdk, usdc, host)

    # Discovery: registry candidates, confirmed by their DHT records when we run a node.
    dm = sdk.get_discovery_manager()
    if dht:
        await dm.create_node(bootstrap=net.p2p_bootstrap)
    (best,) = await dm.rank_hosts(required_models=[BUILTIN], limit=1)
    _check(best.host.address == host, f"the registry ranked {best.host.address} first")
    _check(best.dht == dht, "the host was found on the DHT too" if dht else "no DHT was asked")
    mark = time.perf_counter()
    session = await sm.create_session(model=BUILTIN, deposit="1")  # host=None: discovery
    timings["create_session"] = time.perf_counter() - mark
    _check(session.host.address == host, f"discovery found our host, not {session.host.address}")
    say("")
    say(f"Found host {host} in the registry{' and on the DHT' if dht else ''};")
    say(f"           session {session.session_id} opened,")
    say(f"           1 USDC escrowed at {session.price_per_token} micro-USDC per 1000 tokens")
    deposit = (await pm.get_session_job(session.job_id)).deposit

    replies: list[str] = []
    tokens, streaming, first_token = 0, 0.0, 0.0
    say("")
    for prompt in PROMPTS:
        say(f"> {prompt}")
        mark = time.perf_counter()
        async with session.stream(prompt) as stream:
            async for chunk in stream:
                if chunk.index == 0 and not replies:
                    first_token = time.perf_counter() - mark
                tokens += 1
        streaming += time.perf_counter() - mark
        replies.append(stream.text)
        say(stream.text)
    _check("Ada" in replies[1], f"the second answer used the first's context: {replies[1]!r}")
    timings["first token (TTFT)"] = first_token
    timings["streaming"] = streaming

    mark = time.perf_counter()
    settlement = await session.complete()
    timings["complete"] = time.perf_counter() - mark

    after = await _balances(sdk, usdc, host)
    user_cost, host_credit, treasury_credit = (
        before[0] - after[0],
        after[1] - before[1],
        after[2] - before[2],
    )
    _check(host_credit == settlement.host_net, "the host's earnings grew by host_net")
    _check(treasury_credit == settlement.treasury_fee, "the treasury grew by treasury_fee")
    _check(user_cost == settlement.host_payment, "the user paid host_payment")
    _check(deposit - settlement.refund == user_cost, "the rest of the deposit was refunded")
    _check(
        settlement.host_payment == settlement.tokens_used * session.price_per_token // 1000,
        "host_payment is the billed tokens at the session's price",
    )

    storage = await sdk.get_storage_manager()
    conversation = await storage.load_conversation(session.conversation_id)
    fs, user = storage.fs, net.accounts[USER].address
    ref = await fs.file_ref(f"home/sessions/{user}/{session.conversation_id}/conversation.json")
    job = await pm.get_session_job(session.job_id)
    _check(str(fs.blob_id(ref)) == job.conversation_cid, "the chain holds the conversation's CID")
    _check(
        [m.content for m in conversation.messages]
        == [PROMPTS[0], replies[0], PROMPTS[1], replies[1]],
        "S5 holds both exchanges",
    )
    timings["tokens"] = float(tokens)
    return DemoResult(
        host=host,
        job_id=session.job_id,
        replies=replies,
        tokens_streamed=tokens,
        settlement=settlement,
        user_cost=user_cost,
        host_credit=host_credit,
        treasury_credit=treasury_credit,
        conversation=conversation,
        conversation_cid=job.conversation_cid,
        timings=timings,
    )


def _usdc(value: int) -> str:
    return f"{value:>10,} micro-USDC = {format_units(value, 6)} USDC"


def _print_result(result: DemoResult, say: Say) -> None:
    s = result.settlement
    say("")
    say(f"Settlement of session {result.job_id}, read back from the chain (tx {s.tx_hash})")
    say(f"  {'tokens streamed':<24}{result.tokens_streamed:>10,}")
    say(f"  {'tokens billed':<24}{s.tokens_used:>10,}  (the first proof covers a whole interval)")
    for label, value in (
        ("value of billed tokens", s.host_payment),
        ("host (90%)", result.host_credit),
        ("treasury (10%)", result.treasury_credit),
        ("refund to user", s.refund),
        ("user's net cost", result.user_cost),
    ):
        say(f"  {label:<24}{_usdc(value)}")
    say("")
    say(f"Conversation read back from S5 (CID on chain {result.conversation_cid})")
    for message in result.conversation.messages:
        say(f"  {message.role:<11}{message.content}")
    t = result.timings
    rate = t["tokens"] / t["streaming"] if t["streaming"] > 0 else 0.0
    say("")
    say("Timing")
    for label in ("devnet start", "host start", "create_session", "first token (TTFT)"):
        say(f"  {label:<24}{t[label] * 1000:>10.1f} ms")
    say(f"  {'tokens/s':<24}{rate:>10.0f}     ({result.tokens_streamed} tokens)")
    say(f"  {'complete':<24}{t['complete'] * 1000:>10.1f} ms")


async def payment_walkthrough(say: Say = print) -> Settlement:
    """The worked example of docs/payments.md on a new devnet; returns the settlement.

    A host registers, a user escrows 1 USDC at price 2000, the host proves 150,000 tokens,
    the user completes: host 270,000, treasury 30,000, refund 700,000 micro-USDC.
    """
    from .devnet import Devnet

    say("Starting a devnet (anvil + contracts on 127.0.0.1)...")
    async with Devnet.start() as net:
        user_acct, host_acct = net.accounts[1], net.accounts[2]
        usdc, model = net.addresses.usdc_token, net.models[0]
        say(f"  RPC {net.rpc_url}, chain {net.chain_id}")
        async with FabstirSDK(net.sdk_config()) as host, FabstirSDK(net.sdk_config()) as user:
            await host.authenticate(host_acct.private_key)
            await user.authenticate(user_acct.private_key)
            hm, pm = host.get_host_manager(), user.get_payment_manager()

            await hm.register_host(
                "http://127.0.0.1:8080",
                [model],
                min_price_per_token_native=10**12,
                min_price_per_token_stable=PRICE,
            )
            say(f"Host {host_acct.address} staked 1000 FAB and serves {model}")

            before = await pm.get_token_balance(usdc)
            await pm.approve_usdc(usdc, "1")
            job = await pm.create_usdc_session_job(
                host_acct.address, usdc, "1", PRICE, 3600, 1000, model=model
            )
            say(f"User {user_acct.address} escrowed 1 USDC in session job {job.job_id}")

            await net.advance_time(TOKENS // 2000 + 1)  # proofs are rate-limited per second
            proof = hashlib.sha256(f"demo proof {job.job_id}".encode()).digest()
            await hm.submit_proof_of_work(job.job_id, TOKENS, proof, "demo-proof", "demo-delta")
            say(f"Host proved {TOKENS:,} tokens")

            settlement = await pm.complete_session_job(job.job_id)
            paid = before - await pm.get_token_balance(usdc)
            say(f"User completed the session (tx {settlement.tx_hash})")
            for label, value in (
                ("value of proven tokens", settlement.host_payment),
                ("host (90%)", settlement.host_net),
                ("treasury (10%)", settlement.treasury_fee),
                ("refund to user", settlement.refund),
                ("user's net cost", paid),
            ):
                say(f"  {label:<24}{_usdc(value)}")
            return settlement
