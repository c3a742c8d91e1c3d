"""``fabstir model list|status|propose|vote|execute|withdraw|withdraw-fees`` on the devnet:
a model proposed, voted in, executed and usable; FAB balances exact."""

from __future__ import annotations

import asyncio
import json

import pytest

from fabstir_sdk.chain.model_id import model_id

from .conftest import nonce

PROPOSER, VOTER, OWNER = 4, 5, 0
FAB = 10**18
REPO, FILE = "community/Cli-Model-GGUF", "cli-model.q4.gguf"
MODEL = f"{REPO}:{FILE}"
SHA = "ab" * 32


@pytest.fixture
def fabstir(devnet, capsys, monkeypatch):
    """``await fabstir(who, "model", ACTION, ...)``: the command's ``main`` in a worker
    thread (its own event loop, as from a terminal; no interpreter start per call) with
    account ``who``'s key (None: no key at all); exit code, stdout, stderr."""

    async def run(who: int | None, *args: str) -> tuple[int, str, str]:
        from fabstir_sdk.cli import main

        if who is None:
            monkeypatch.delenv("FABSTIR_PRIVATE_KEY", raising=False)
        else:
            monkeypatch.setenv("FABSTIR_PRIVATE_KEY", devnet.accounts[who].private_key)
        action, *rest = args
        capsys.readouterr()
        code = await asyncio.to_thread(
            main, ["model", action, "--manifest", str(devnet.manifest_path), *rest]
        )
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def ok(fabstir, who: int | None, *args: str) -> dict:
    code, out, err = await fabstir(who, *args)
    assert (code, err) == (0, ""), err
    return json.loads(out)


async def refused(devnet, fabstir, who: int, *args: str) -> str:
    """The one error line of a refused action; the account sent nothing."""
    before = await nonce(devnet, who)
    code, out, err = await fabstir(who, *args)
    assert (code, out) == (1, ""), err
    assert await nonce(devnet, who) == before
    (line,) = err.splitlines()
    return line.removeprefix("fabstir: error: ")


async def test_a_model_voted_in_from_the_command_line(devnet, sdk_for, fabstir):
    """Each action once (the SDK's tests cover every stage's refusal): propose, list, vote
    for and against, execute too early (refused, nothing sent), execute, status, withdraw,
    withdraw-fees by a stranger (refused)."""
    voter_sdk = await sdk_for(VOTER)
    pm = voter_sdk.get_payment_manager()
    fab = devnet.addresses.fab_token
    address = {i: devnet.accounts[i].address for i in (PROPOSER, VOTER, OWNER)}
    start = {i: await pm.get_token_balance(fab, address[i]) for i in (PROPOSER, VOTER)}
    mid = model_id(MODEL)

    proposed = await ok(
        fabstir, PROPOSER, "propose", "--repo", REPO, "--file", FILE, "--sha256", SHA
    )
    assert proposed["proposed"] == mid
    assert await pm.get_token_balance(fab, address[PROPOSER]) == start[PROPOSER] - 100 * FAB
    voted = await ok(fabstir, PROPOSER, "vote", "--model", MODEL, "--amount", "50000")
    assert (voted["votes_for"], voted["amount"], voted["support"]) == (
        str(50_000 * FAB),
        str(50_000 * FAB),
        True,
    )
    against = await ok(fabstir, VOTER, "vote", "--model", mid, "--amount", "0.5", "--against")
    assert (against["votes_for"], against["votes_against"], against["support"]) == (
        str(50_000 * FAB),
        str(FAB // 2),
        False,
    )
    await voter_sdk.get_model_manager().vote_on_proposal(MODEL, "50000")  # reaches the threshold
    listed = await ok(fabstir, None, "list")  # no key needed to read
    assert [(p["model_id"], p["votes_for"], p["executed"]) for p in listed["proposals"]] == [
        (mid, str(100_000 * FAB), False)
    ]
    assert {m["model_id"] for m in listed["models"]} >= {model_id(m) for m in devnet.models}
    assert mid not in {m["model_id"] for m in listed["models"]}
    assert await pm.get_token_balance(fab, address[VOTER]) == start[VOTER] - 50_000 * FAB - FAB // 2
    assert (await refused(devnet, fabstir, VOTER, "execute", "--model", MODEL)).startswith(
        f"the vote on model {mid} runs until {_utc(proposed['end_time'])}"
    )

    await devnet.advance_time(3 * 24 * 3600)
    executed = await ok(fabstir, OWNER, "execute", "--model", MODEL)  # anyone may
    assert executed["approved"] is True
    status = await ok(fabstir, VOTER, "status", "--model", MODEL)
    assert status["model"] == {
        "model_id": mid,
        "repo": REPO,
        "file": FILE,
        "sha256": "0x" + SHA,
        "approved": True,
    }
    assert status["proposal"]["executed"] is True
    assert status["votes"] == {"address": address[VOTER], "amount": str(50_000 * FAB + FAB // 2)}

    # votes back; the proposer's fee came back with the approval
    withdrawn = await ok(fabstir, VOTER, "withdraw", "--model", MODEL)
    assert withdrawn["withdrawn"] == str(50_000 * FAB + FAB // 2)
    await (await sdk_for(PROPOSER)).get_model_manager().withdraw_votes(MODEL)
    for i in (PROPOSER, VOTER):
        assert await pm.get_token_balance(fab, address[i]) == start[i]
    # the rejected fees are the owner's
    assert await refused(devnet, fabstir, VOTER, "withdraw-fees") == (
        f"only the registry's owner {address[OWNER]} may withdraw rejected fees"
    )
    # and hosts may now register for the model
    host = voter_sdk.get_host_manager()
    await host.register_host(
        "http://127.0.0.1:1",
        [MODEL],
        min_price_per_token_native=10**12,
        min_price_per_token_stable=2000,
        metadata={"publicKey": "02" + "11" * 32},
    )
    assert (await host.get_host_info(address[VOTER])).models == [mid]


def _utc(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
