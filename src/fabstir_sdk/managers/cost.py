"""What a session will cost before paying for it: tokens at the host's price, and gas.

The gas figures come from one ``eth_simulateV1`` request that replays, on the latest state,
exactly the transactions the session will send: the approval (only when the allowance is
short), the job's creation, a proof by the host of the billed tokens, and the depositor's
completion with a conversation CID of the real length. Simulating the sequence (rather than
estimating each call alone) is what makes the completion measurable before the job exists.
The host's proof is the host's gas: it is simulated only so the completion settles a billed
session, and is not counted. An agent's delegated session sends only its creation.

A node without ``eth_simulateV1`` (older geth, some providers) cannot do this, and
``eth_estimateGas`` of each call alone cannot stand in for it (the creation fails before the
approval is mined, the completion before the job exists): such a node gets
:class:`~fabstir_sdk.errors.SimulationUnsupportedError`, and ``gas=False`` the token figures.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from ..chain.addresses import ZERO_ADDRESS
from ..chain.transport import redact_url
from ..chain.units import PRICE_PRECISION, Amount, to_base_units
from ..errors import (
    ChainError,
    DelegateNotAuthorizedError,
    InsufficientAllowanceError,
    RpcFailure,
    SimulationUnsupportedError,
    ValidationError,
)

if TYPE_CHECKING:
    from ..chain.abi import Call
    from ._context import Context

__all__ = [
    "CONVERSATION_CID_LENGTH",
    "CostEstimate",
    "GasItem",
    "estimate_cost",
    "unsupported_method",
]

#: Characters of a conversation's CID (``blob`` + base32 of a blake3 hash and the size),
#: passed to ``completeSessionJob``: its length, not its content, decides the gas. 61 is the
#: length for a conversation of 256 B to 64 KiB; each further size byte adds about 1.6
#: characters (some 24 gas).
CONVERSATION_CID_LENGTH = 61
#: Seconds between the simulated creation and the simulated proof (the rate limit allows
#: ``seconds x model rate x burst`` tokens).
_PROOF_AFTER = 3600


class GasItem(BaseModel):
    """One transaction the session will send: ``gas`` used, ``cost`` in the native token."""

    model_config = ConfigDict(frozen=True)

    step: Literal["approve", "create", "complete"]
    gas: int
    cost: int


class CostEstimate(BaseModel):
    """A session's cost before paying, in base units.

    ``token_cost`` is what the host is paid for ``billed_tokens`` (``expected_tokens``, but
    at least ``min_tokens``, the proof interval: the minimum bill, worth ``min_cost``) at
    ``price_per_token`` (per 1000 tokens) in ``token`` (the zero address: the native
    token). ``gas`` lists the transactions the depositor sends; ``gas_cost`` is their sum at
    ``gas_price`` (latest base fee plus the priority fee the SDK pays), in wei.
    """

    model_config = ConfigDict(frozen=True)

    host: str
    model_id: str
    token: str
    price_per_token: int
    expected_tokens: int
    min_tokens: int
    billed_tokens: int
    token_cost: int
    min_cost: int
    deposit: int
    gas: list[GasItem]
    gas_price: int
    gas_cost: int


def _tx(sender: str, call: Call, value: int = 0) -> dict[str, Any]:
    return {"from": sender, "to": call.to, "data": "0x" + call.data.hex(), "value": hex(value)}


#: How nodes without a method say so: JSON-RPC's "method not found" code, or the words
#: providers that answer with another code use.
_UNSUPPORTED = re.compile(
    r"does not exist|not available|not supported|unsupported|method not found|"
    r"unknown method|not whitelisted|not allowed",
    re.IGNORECASE,
)


def unsupported_method(exc: RpcFailure) -> bool:
    """Whether the node refused a call because it does not have the method."""
    return exc.code == -32601 or bool(_UNSUPPORTED.search(exc.node_message))


async def estimate_cost(
    ctx: Context,
    *,
    host: str,
    model_id: str,
    token: str,
    price: int,
    deposit: Amount,
    funding: Literal["wallet", "deposit"],
    expected_tokens: int,
    duration: int,
    proof_interval: int,
    proof_timeout_window: int,
    payer: str | None = None,
    gas: bool = True,
) -> CostEstimate:
    """The cost of a session with ``host`` on these terms (see :class:`CostEstimate`).

    ``payer``: an agent's session paid by that wallet; the agent sends only the creation
    (the host settles), from the payer's allowance. ``gas=False``: the token figures only,
    no simulation (``gas`` empty, ``gas_cost`` 0), for a node without ``eth_simulateV1``.
    """
    if isinstance(expected_tokens, bool) or not isinstance(expected_tokens, int):
        raise ValidationError("expected_tokens must be an int")
    if expected_tokens < 0:
        raise ValidationError("expected_tokens must not be negative")
    if not isinstance(gas, bool):
        raise ValidationError(f"gas must be a bool, got {type(gas).__name__}")
    user = ctx.require_sender().address
    native = token == ZERO_ADDRESS
    decimals = await ctx.decimals(None if native else token)
    amount = to_base_units(deposit, decimals)
    billed = max(expected_tokens, proof_interval)
    mp = ctx.contract("job_marketplace")
    terms = (price, duration, proof_interval, proof_timeout_window)
    if payer is not None:
        create = mp.call(
            "createSessionForModelAsDelegate", payer, model_id, host, token, amount, *terms
        )
    elif funding == "deposit":
        create = mp.call("createSessionFromDepositForModel", model_id, host, token, amount, *terms)
    elif native:
        create = mp.call("createSessionJobForModel", host, model_id, *terms)
    else:
        create = mp.call("createSessionJobForModelWithToken", host, model_id, token, amount, *terms)
    reads: list[tuple[str, Any]] = [
        (
            "eth_call",
            ({"to": mp.address, "data": "0x" + mp.call("nextJobId").data.hex()}, "latest"),
        ),
        ("eth_getBlockByNumber", ("latest", False)),
        ("eth_maxPriorityFeePerGas", ()),
    ]
    erc20 = None if native or funding == "deposit" else ctx.erc20(token)
    if erc20 is not None:
        allowance = erc20.call("allowance", payer or user, mp.address)
        reads.append(
            ("eth_call", ({"to": erc20.address, "data": "0x" + allowance.data.hex()}, "latest"))
        )
    if payer is not None:
        authorized = mp.call("isDelegateAuthorized", payer, user)
        reads.append(
            ("eth_call", ({"to": mp.address, "data": "0x" + authorized.data.hex()}, "latest"))
        )
    results = await ctx.client.rpc.batch(reads)
    job_id = int(results[0], 16)
    block, tip = results[1], int(results[2], 16)
    gas_price = int(block.get("baseFeePerGas") or "0x0", 16) + tip
    if payer is not None and not int(results[-1], 16):
        raise DelegateNotAuthorizedError(payer, user)
    allowed = int(results[3], 16) if erc20 is not None else 0
    short = erc20 is not None and allowed < amount
    if short and payer is not None:  # the agent cannot approve for its owner
        error = InsufficientAllowanceError(amount, allowed, token, unit=ctx.known_unit(token))
        error.add_note(f"the allowance is the payer's: {payer} approves more")
        raise error
    items: list[GasItem] = []
    if gas:
        budget = to_base_units(ctx.config.approval_budget, decimals, what="approval_budget")
        approve = (
            erc20.call("approve", mp.address, max(budget, amount)) if short and erc20 else None
        )
        # an agent sends only the creation: the payer or the host completes the job
        proof = mp.call(
            "submitProofOfWork", job_id, billed, secrets.token_bytes(32), "estimate", "estimate"
        )
        complete = mp.call("completeSessionJob", job_id, "b" * CONVERSATION_CID_LENGTH)
        items = await _simulated_gas(
            ctx,
            user=user,
            host=host,
            approve=approve,
            create=(create, amount if native and funding == "wallet" else 0),
            later=int(block["timestamp"], 16) + _PROOF_AFTER,
            settle=None if payer is not None else (proof, complete),
            gas_price=gas_price,
        )
    return CostEstimate(
        host=host,
        model_id=model_id,
        token=token,
        price_per_token=price,
        expected_tokens=expected_tokens,
        min_tokens=proof_interval,
        billed_tokens=billed,
        token_cost=billed * price // PRICE_PRECISION,
        min_cost=proof_interval * price // PRICE_PRECISION,
        deposit=amount,
        gas=items,
        gas_price=gas_price,
        gas_cost=sum(i.cost for i in items),
    )


async def _simulated_gas(
    ctx: Context,
    *,
    user: str,
    host: str,
    approve: Call | None,
    create: tuple[Call, int],
    later: int,
    settle: tuple[Call, Call] | None,
    gas_price: int,
) -> list[GasItem]:
    """The gas of the user's transactions, from one ``eth_simulateV1`` of the sequence:
    the approval and creation, then (``settle``) the host's proof and the completion."""
    steps: list[Literal["approve", "create", "complete"]] = []
    first: list[dict[str, Any]] = []
    if approve is not None:
        first.append(_tx(user, approve))
        steps.append("approve")
    first.append(_tx(user, *create))
    steps.append("create")
    blocks: list[dict[str, Any]] = [{"calls": first}]
    if settle is not None:
        proof, complete = settle
        blocks += [
            {"blockOverrides": {"time": hex(later)}, "calls": [_tx(host, proof)]},
            {"blockOverrides": {"time": hex(later + 1)}, "calls": [_tx(user, complete)]},
        ]
    try:
        simulated = await ctx.client.rpc.call(
            "eth_simulateV1", {"blockStateCalls": blocks, "validation": False}, "latest"
        )
    except RpcFailure as exc:
        if unsupported_method(exc):
            raise SimulationUnsupportedError(
                redact_url(ctx.config.rpc_url), exc.node_message
            ) from exc
        raise
    outcomes = list(simulated[0]["calls"])
    checked: list[tuple[str, Any]] = list(zip(steps, outcomes, strict=True))
    if settle is not None:
        outcomes.append(simulated[2]["calls"][0])
        steps.append("complete")
        checked += [("proof", simulated[1]["calls"][0]), ("complete", outcomes[-1])]
    for step, outcome in checked:
        if outcome.get("status") != "0x1":
            raise ChainError(f"the session's {step} would fail: {outcome.get('error')}")
    return [
        GasItem(step=step, gas=int(o["gasUsed"], 16), cost=int(o["gasUsed"], 16) * gas_price)
        for step, o in zip(steps, outcomes, strict=True)
    ]
