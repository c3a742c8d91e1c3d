"""``fabstir chat``: a paid, encrypted conversation with a host, one stdin line per prompt.

Answers stream to stdout as they arrive, one line each; everything else (the session, errors,
the settlement) goes to stderr, so ``fabstir chat < questions.txt > answers.txt`` works.
``/quit`` or the end of input leaves: by default the session is completed at once (the user
pays gas and gets the refund now); ``--on-exit end`` disconnects for free and lets the host
settle. A lost connection is resumed once per prompt, with the history replayed from S5.
Before paying it shows what the session will cost (tokens and gas) and, at a terminal, asks;
``--yes`` skips the question.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import Callable
from typing import Literal, TextIO

from .chain.addresses import ZERO_ADDRESS, checksum_address
from .chain.signer import Signer
from .chain.units import ETH_DECIMALS, USDC_DECIMALS, format_amount
from .config import SDKConfig
from .errors import (
    FabstirError,
    HostError,
    HostFailedError,
    SimulationUnsupportedError,
    StorageUnavailableError,
    ValidationError,
)
from .managers.cost import CostEstimate
from .managers.session import Payment, Session, SessionManager
from .models import Settlement
from .sdk import FabstirSDK

__all__ = ["QUIT", "chat", "cost_summary", "settlement_summary"]

QUIT = ("/quit", "/exit")
OnExit = Literal["complete", "end"]
_Note = Callable[[str], None]


def _lines(stream: TextIO) -> asyncio.Queue[str | None]:
    """Lines of ``stream`` on a queue (None at its end), read by a daemon thread.

    A thread rather than a pipe transport: it works for terminals, pipes and plain files
    alike, and a daemon thread blocked in ``readline`` never holds up the exit.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in stream:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="fabstir-chat-stdin", daemon=True).start()
    return queue


async def chat(
    config: SDKConfig,
    wallet: bytes | Signer,
    *,
    model: str,
    host: str | None = None,
    payment: Payment = "usdc",
    deposit: str = "1",
    max_price_per_token: int | None = None,
    on_exit: OnExit | None = None,
    expected_tokens: int = 0,
    yes: bool = False,
    payer: str | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Open a session, answer stdin's lines until /quit or its end, then settle.

    ``wallet``: a private key or a :class:`Signer` (``--signer-url``: the key stays in the
    signer service). ``payer``: chat as that wallet's agent (it pays; see
    ``authorize_delegate``). Only the depositor or the host may complete a job, so such a
    session ends (``on_exit="end"``, the default then) and the host settles it with the payer.
    """
    stdin, out, err = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    payer = checksum_address(payer, what="payer") if payer is not None else None
    if on_exit is None:
        on_exit = "end" if payer else "complete"
    if payer and on_exit == "complete":
        raise ValidationError(
            "a session the payer pays for ends with on_exit='end' (--on-exit end): only the "
            "payer or the host may complete it"
        )

    def note(text: str) -> None:
        print(text, file=err, flush=True)

    lines = _lines(stdin)
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(wallet)
        sm = await sdk.get_session_manager()
        await _storage_ready(sdk, note)
        unit = "ETH" if payment == "eth" else "USDC"
        note(f"Opening a session for {model} ({deposit} {unit} deposit)...")
        estimate_ = functools.partial(
            sm.estimate_session_cost,
            model,
            expected_tokens,
            host,
            payment=payment,
            deposit=deposit,
            max_price_per_token=max_price_per_token,
            payer=payer,
        )
        try:
            estimate = await estimate_()
        except SimulationUnsupportedError as exc:  # the token cost is still worth showing
            note(f"The RPC node {exc.url} has no eth_simulateV1: gas cannot be estimated there.")
            estimate = await estimate_(gas=False)
        note(cost_summary(estimate))
        if not yes and stdin.isatty():
            err.write("Pay and open the session? [y/N] ")
            err.flush()
            answer = await lines.get()
            if (answer or "").strip().lower() not in ("y", "yes"):
                note("Nothing was paid.")
                return 1
        host = host or estimate.host
        session = await sm.create_session(
            model=model,
            host=host,
            payment=payment,
            deposit=deposit,
            max_price_per_token=max_price_per_token,
            payer=payer,
        )
        note(
            f"Session {session.session_id} with host {session.host.address} at "
            f"{_amount(session.price_per_token, session.payment_token)} per 1000 tokens. "
            "Type /quit to leave."
        )
        try:
            while True:
                if stdin.isatty():
                    err.write("> ")
                    err.flush()
                line = await lines.get()
                if line is None:
                    break
                prompt = line.strip()
                if prompt in QUIT:
                    break
                if prompt:
                    session = await _answer(sm, session, prompt, out, note)
        finally:
            await _leave(session, on_exit, note)
    return 0


async def _storage_ready(sdk: FabstirSDK, note: _Note) -> None:
    """Reach the conversation store before paying: a process that never reached it cannot
    keep the conversation (it has nothing to queue writes against), so a session it paid
    for would stop at its first write. Once read, a portal lost later only queues writes."""
    storage = await sdk.get_storage_manager()
    try:
        await storage.check()
    except StorageUnavailableError:
        note("S5 storage is unreachable: nothing was paid. Check --s5-portal-url and retry.")
        raise


async def _answer(
    sm: SessionManager, session: Session, prompt: str, out: TextIO, note: _Note
) -> Session:
    """Stream one answer; a lost host is resumed once, a host's error frame is reported."""
    for attempt in (1, 2):
        try:
            async with session.stream(prompt) as stream:
                async for chunk in stream:
                    out.write(chunk.text)
                    out.flush()
            out.write("\n")
            out.flush()
            return session
        except HostFailedError as exc:
            out.write("\n")
            out.flush()
            if attempt == 2:
                raise
            note(f"lost the host ({exc}); resuming the session...")
            session = await sm.resume_session(session.session_id)
        except HostError as exc:
            out.write("\n")
            out.flush()
            note(f"the host refused this prompt: {exc}")
            return session
    return session


async def _leave(session: Session, on_exit: OnExit, note: _Note) -> None:
    if on_exit == "end":
        await session.end()
        note(
            f"Session {session.session_id} ended. The host submits its last proof and settles; "
            "the rest of the deposit comes back to you then."
        )
        return
    try:
        settlement = await session.complete()
    except FabstirError as exc:
        note(f"could not complete session {session.session_id}: {exc}")
        raise
    note(settlement_summary(settlement))


def _amount(value: int, token: str) -> str:
    """Base units of the session's token as a person reads them: ETH, else USDC."""
    if token == ZERO_ADDRESS:
        return format_amount(value, ETH_DECIMALS, "ETH")
    return format_amount(value, USDC_DECIMALS, "USDC")


def cost_summary(e: CostEstimate) -> str:
    """The estimate for a person: tokens (with the minimum bill) and each transaction's gas."""
    gas = ", ".join(f"{g.step} {g.gas:,} gas" for g in e.gas)
    tokens = (
        f"Host {e.host} charges {_amount(e.price_per_token, e.token)} per 1000 tokens; "
        f"{e.billed_tokens:,} tokens cost {_amount(e.token_cost, e.token)} (the minimum bill "
        f"is {e.min_tokens:,} tokens, {_amount(e.min_cost, e.token)})."
    )
    if not e.gas:
        return f"{tokens} Gas: not estimated."
    return (
        f"{tokens} Your transactions: {gas}, {_amount(e.gas_cost, ZERO_ADDRESS)} at the "
        "current gas price."
    )


def settlement_summary(s: Settlement) -> str:
    """One line for a person: what was paid (gross), the host's net and the treasury's fee
    within it, and the refund, in USDC or ETH."""

    def amount(value: int) -> str:
        return _amount(value, s.token)

    return (
        f"Session {s.job_id} completed (tx {s.tx_hash}): {s.tokens_used:,} tokens billed; "
        f"paid {amount(s.host_payment)} (host {amount(s.host_net)}, treasury "
        f"{amount(s.treasury_fee)}); refunded {amount(s.refund)}."
    )
