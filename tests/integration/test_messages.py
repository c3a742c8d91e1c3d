"""What a person reads: every message of issue 13 §3, checked word for word.

Amounts are in the units the user typed, with the token's symbol; nothing says "base units"
or prints a token's address where its name is known.
"""

from __future__ import annotations

import pytest

from fabstir_sdk import (
    DepositOutOfRangeError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    ModelNotApprovedError,
    NoHostAvailableError,
)

from .conftest import HOST, USDC_PRICE
from .test_bad_input import UNKNOWN_MODEL, eth_job, refused, usdc_job

pytestmark = pytest.mark.integration


async def test_insufficient_balance_names_amounts_in_usdc(devnet, sdk_for, host):
    poor = await sdk_for(9)
    pm = poor.get_payment_manager()
    usdc = devnet.addresses.usdc_token
    whole = await pm.get_token_balance(usdc) // 10**6
    await pm.approve_usdc(usdc, str(whole))
    await pm.deposit(str(whole - 2), usdc)  # the wallet keeps 2 USDC
    await pm.approve_usdc(usdc, "5")
    err = await refused(devnet, InsufficientBalanceError, usdc_job(devnet, pm, amount="5"), index=9)
    assert str(err) == "needs 5 USDC, the account holds 2 USDC"
    assert (err.needed, err.available, err.token) == (5_000_000, 2_000_000, usdc)

    # from the deposit: the deposit is the holder
    err = await refused(
        devnet,
        InsufficientBalanceError,
        lambda: pm.create_session_job_from_deposit(
            devnet.accounts[HOST].address,
            str(whole - 1),
            USDC_PRICE,
            3600,
            1000,
            model=devnet.models[0],
            token=usdc,
        ),
        index=9,
    )
    assert str(err) == f"needs {whole - 1} USDC, the deposit holds {whole - 2} USDC"
    err = await refused(devnet, InsufficientBalanceError, lambda: pm.withdraw("0.5"), index=9)
    assert str(err) == "needs 0.5 ETH, the deposit holds 0 ETH"


async def test_insufficient_allowance_in_usdc(devnet, user, host):
    pm = user.get_payment_manager()
    await pm.approve_usdc(devnet.addresses.usdc_token, "0.5")
    err = await refused(devnet, InsufficientAllowanceError, usdc_job(devnet, pm, amount="1.25"))
    assert str(err) == "needs an allowance of 1.25 USDC for the marketplace, approved: 0.5 USDC"


async def test_deposit_bounds_in_the_token(devnet, user, host):
    pm = user.get_payment_manager()
    await pm.approve_usdc(devnet.addresses.usdc_token, "2000000")
    err = await refused(devnet, DepositOutOfRangeError, usdc_job(devnet, pm, amount="0.4"))
    assert str(err) == (
        "deposit 0.4 USDC is outside the marketplace's bounds: 0.5 USDC to 1000000 USDC"
    )
    err = await refused(
        devnet, DepositOutOfRangeError, eth_job(devnet, pm, amount="0.00005", proof_interval=100)
    )
    assert str(err) == (
        "deposit 0.00005 ETH is outside the marketplace's bounds: 0.0001 ETH to 1000 ETH"
    )


async def test_an_unknown_model_is_named_with_what_the_chain_says(devnet, user, host):
    dm = user.get_discovery_manager()
    with pytest.raises(NoHostAvailableError) as info:
        await dm.find_host(required_models=[UNKNOWN_MODEL])
    assert str(info.value) == (
        "model nobody/unknown:model.gguf is not approved on chain, and no host serves it "
        "(no host fits: 1 missing model)"
    )
    toy = devnet.models[2]  # approved by the devnet; the registered host serves models 0, 1
    with pytest.raises(NoHostAvailableError) as info:
        await dm.find_host(required_models=[toy, devnet.models[0]])
    assert str(info.value) == (
        "model fabstir/builtin:toy-1.gguf is approved on chain, but no host serves it "
        "(no host fits: 1 missing model)"
    )

    pm = user.get_payment_manager()
    err = await refused(devnet, ModelNotApprovedError, eth_job(devnet, pm, model=UNKNOWN_MODEL))
    assert str(err) == "model nobody/unknown:model.gguf is not approved on chain"
    err = await refused(devnet, ModelNotApprovedError, eth_job(devnet, pm, model=toy))
    assert str(err) == f"host {devnet.accounts[HOST].address} does not serve model {toy}"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_rpc_endpoint_says_so_in_one_line(devnet, caplog):
    import logging

    from fabstir_sdk import FabstirSDK, RpcUnavailableError

    url = f"http://127.0.0.1:{_closed_port()}"
    config = devnet.sdk_config(rpc_url=url, rpc_retry_for=0.5)
    caplog.set_level(logging.WARNING, logger="fabstir_sdk")
    async with FabstirSDK(config) as sdk:
        with pytest.raises(RpcUnavailableError) as info:
            await sdk.authenticate(devnet.accounts[1].private_key)
    assert str(info.value) == (
        f"RPC endpoint {url} unreachable for 0.5 s (connection refused): "
        "is the node running, and is the URL right?"
    )
    # while it retried, one progress line (stderr, via logging's last-resort handler too)
    progress = [r.getMessage() for r in caplog.records if r.name == "fabstir_sdk.chain"]
    assert progress == [
        f"RPC endpoint {url} unreachable (connection refused); retrying for up to 0.5 s"
    ]


SCRIPT = """
import asyncio, sys
from fabstir_sdk import FabstirSDK, SDKConfig

async def main():
    config = SDKConfig.base_sepolia(rpc_url=sys.argv[1], rpc_retry_for=0.5)
    async with FabstirSDK(config) as sdk:
        await sdk.get_payment_manager().get_eth_balance(sys.argv[2])

asyncio.run(main())
"""


async def test_a_users_script_sees_the_retry_then_the_reason(devnet, tmp_path):
    """No logging configured: the progress line reaches stderr, then the error's one line."""
    import asyncio
    import sys

    url = f"http://127.0.0.1:{_closed_port()}"
    script = tmp_path / "balance.py"
    script.write_text(SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        url,
        devnet.accounts[1].address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = err.decode().splitlines()
    assert (proc.returncode, out) == (1, b"")
    assert (
        lines[0] == f"RPC endpoint {url} unreachable (connection refused); retrying for up to 0.5 s"
    )
    assert lines[-1] == (
        f"fabstir_sdk.RpcUnavailableError: RPC endpoint {url} unreachable for 0.5 s "
        "(connection refused): is the node running, and is the URL right?"
    )
    assert "ClientConnectorError" not in lines[-1]


async def test_fabstir_chat_names_the_unknown_model(devnet, host, tmp_path):
    from .cli_process import environ, run

    argv = ["chat", "--model", UNKNOWN_MODEL, "--manifest", str(devnet.manifest_path)]
    argv += ["--storage-dir", str(tmp_path)]
    env = environ(FABSTIR_PRIVATE_KEY=devnet.accounts[1].private_key)
    code, out, err = await run(*argv, env=env, input="")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "fabstir: error: model nobody/unknown:model.gguf is not approved on chain, and no host "
        "serves it (no host fits: 1 missing model)"
    )


async def test_a_stake_shortfall_is_in_fab(devnet, sdk_for):
    """Account 8 holds 2.5 FAB (written into the token's balance slot): registering as a
    host, which stakes 1000 FAB, is refused in FAB."""
    from eth_utils.crypto import keccak

    from fabstir_sdk.chain.rpc import JsonRpcClient

    poor = await sdk_for(8)
    address = devnet.accounts[8].address
    key = keccak(bytes.fromhex(address[2:]).rjust(32, b"\0") + bytes(32))  # OZ ERC-20: slot 0
    rpc = JsonRpcClient(devnet.rpc_url)
    try:
        word = "0x" + (25 * 10**17).to_bytes(32, "big").hex()
        await rpc.call("anvil_setStorageAt", devnet.addresses.fab_token, "0x" + key.hex(), word)
    finally:
        await rpc.aclose()
    assert await poor.get_payment_manager().get_token_balance(devnet.addresses.fab_token) == (
        25 * 10**17
    )
    err = await refused(
        devnet,
        InsufficientBalanceError,
        lambda: poor.get_host_manager().register_host(
            "http://127.0.0.1:9",
            devnet.models[:1],
            min_price_per_token_native=10**12,
            min_price_per_token_stable=USDC_PRICE,
            metadata={"publicKey": "02" + "11" * 32},
        ),
        index=8,
    )
    assert str(err) == "needs 1000 FAB, the account holds 2.5 FAB"
