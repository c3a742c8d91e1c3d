"""``fabstir host register|update|price|status|withdraw|unregister`` as processes on the devnet."""

from __future__ import annotations

import json

from .cli_process import environ, run
from .conftest import ETH_PRICE, USDC_PRICE, nonce

OPERATOR = 6
STAKE = 1000 * 10**18


async def fabstir(devnet, *args: str) -> tuple[int, str, str]:
    env = environ(FABSTIR_HOST_PRIVATE_KEY=devnet.accounts[OPERATOR].private_key)
    action, *rest = args
    return await run("host", action, "--manifest", str(devnet.manifest_path), *rest, env=env)


async def test_host_life_from_the_command_line(devnet, sdk_for):
    address = devnet.accounts[OPERATOR].address
    first, second = devnet.models[0], devnet.models[1]
    pm = (await sdk_for(OPERATOR)).get_payment_manager()
    fab = devnet.addresses.fab_token
    fab_before = await pm.get_token_balance(fab)

    code, out, err = await fabstir(
        devnet,
        "register",
        "--api-url",
        "http://127.0.0.1:1",
        "--model",
        first,
        "--price-stable",
        str(USDC_PRICE),
        "--price-native",
        str(ETH_PRICE),
        "--metadata",
        '{"publicKey": "02' + "11" * 32 + '"}',
    )
    assert (code, err) == (0, ""), err
    assert json.loads(out)["stake"] == str(STAKE)
    assert await pm.get_token_balance(fab) == fab_before - STAKE

    before = await nonce(devnet, OPERATOR)
    code, out, err = await fabstir(
        devnet,
        "register",
        "--api-url",
        "http://x",
        "--model",
        first,
        "--price-stable",
        "1",
        "--price-native",
        str(ETH_PRICE),
    )
    assert (code, out) == (1, "")
    assert err.strip() == f"fabstir: error: {address} is already registered"
    assert await nonce(devnet, OPERATOR) == before

    code, out, err = await fabstir(
        devnet, "update", "--api-url", "http://127.0.0.1:2", "--model", first, "--model", second
    )
    assert (code, json.loads(out)["updated"]) == (0, ["api_url", "models"]), err
    code, out, err = await fabstir(devnet, "price", "--model", second, "--usdc", "--set", "7000")
    assert (code, json.loads(out)["price"]) == (0, 7000), err
    code, out, err = await fabstir(devnet, "price", "--model", first, "--set", str(3 * ETH_PRICE))
    assert (code, json.loads(out)["price"]) == (0, 3 * ETH_PRICE), err

    code, out, err = await fabstir(devnet, "status")
    assert code == 0, err
    status = json.loads(out)
    assert status["address"] == address
    assert (status["active"], status["api_url"], status["stake"]) == (
        True,
        "http://127.0.0.1:2",
        str(STAKE),
    )
    first_id, second_id = (m for m in status["prices"])
    assert status["prices"][first_id] == {"native": 3 * ETH_PRICE, "usdc": USDC_PRICE}
    assert status["prices"][second_id] == {"native": ETH_PRICE, "usdc": 7000}
    assert status["earnings"] == {"ETH": "0", "USDC": "0"}

    code, out, err = await fabstir(devnet, "price", "--model", second, "--usdc", "--clear")
    assert (code, json.loads(out)["price"]) == (0, USDC_PRICE), err

    code, out, err = await fabstir(devnet, "withdraw", "--usdc")
    assert code == 1
    assert err.strip().startswith("fabstir: error: no ")

    code, out, err = await fabstir(devnet, "unregister")
    assert code == 0, err
    assert json.loads(out)["stake_returned"] == str(STAKE)
    assert await pm.get_token_balance(fab) == fab_before
    code, out, err = await fabstir(devnet, "status", "--address", address)
    assert (code, json.loads(out)["active"]) == (0, False)
