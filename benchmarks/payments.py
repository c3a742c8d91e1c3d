"""Payment operations on the devnet against the raw cost of the transactions they send.

The baseline is one ETH transfer signed with eth-account and sent and confirmed with plain
web3.py, measured in the same run. An SDK operation that sends ``n`` transactions is compared
with ``n`` raw transfers; the goal is a ratio of at most 1.5.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet

from ._report import Row

USDC_PRICE, ETH_PRICE = 2000, 10**12


async def _median_ms(runs: int, op: Callable[[], Awaitable[object]]) -> float:
    await op()  # warm-up: connections, caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def raw_eth_transfer(w3: AsyncWeb3, account: Any, to: str, chain_id: int) -> None:
    """The baseline: one 1-wei transfer signed with eth-account, sent and confirmed by web3.py."""
    nonce = await w3.eth.get_transaction_count(account.address, "pending")
    gas_price = await w3.eth.gas_price
    signed = account.sign_transaction(
        {
            "to": to,
            "value": 1,
            "gas": 21_000,
            "gasPrice": gas_price,
            "nonce": nonce,
            "chainId": chain_id,
        }
    )
    tx = await w3.eth.send_raw_transaction(signed.raw_transaction)
    await w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.002)


async def run(runs: int) -> list[Row]:
    async with Devnet.start() as net:
        deployer, user_acct, host_acct = net.accounts[0], net.accounts[1], net.accounts[2]
        host = FabstirSDK(net.sdk_config())
        await host.authenticate(host_acct.private_key)
        await host.get_host_manager().register_host(
            "http://127.0.0.1:8080",
            net.models[:1],
            min_price_per_token_native=ETH_PRICE,
            min_price_per_token_stable=USDC_PRICE,
        )
        await host.aclose()

        w3 = AsyncWeb3(AsyncHTTPProvider(net.rpc_url))
        raw_account = Account.from_key(deployer.private_key)

        async def raw_transfer() -> None:
            await raw_eth_transfer(w3, raw_account, user_acct.address, net.chain_id)

        sdk = FabstirSDK(net.sdk_config())
        await sdk.authenticate(user_acct.private_key)
        pm = sdk.get_payment_manager()
        usdc = net.addresses.usdc_token
        model = net.models[0]

        async def authenticate() -> None:
            async with FabstirSDK(net.sdk_config()) as fresh:
                await fresh.authenticate(user_acct.private_key)

        async def approve() -> None:
            await pm.approve_usdc(usdc, "1")

        async def usdc_job() -> None:
            await pm.approve_usdc(usdc, "1")
            await pm.create_usdc_session_job(
                host_acct.address, usdc, "1", USDC_PRICE, 3600, 1000, model=model
            )

        async def eth_job() -> None:
            await pm.create_eth_session_job(
                host_acct.address, "0.001", ETH_PRICE, 3600, 100, model=model
            )

        to_complete: list[int] = []

        async def complete() -> None:
            await pm.complete_session_job(to_complete.pop())

        raw = await _median_ms(runs, raw_transfer)
        rows = [("raw web3.py transfer (baseline)", raw, 1)]
        rows.append(("authenticate", await _median_ms(runs, authenticate), 0))
        rows.append(("approve_usdc", await _median_ms(runs, approve), 1))
        rows.append(("approve + create USDC session job", await _median_ms(runs, usdc_job), 2))
        rows.append(("create ETH session job", await _median_ms(runs, eth_job), 1))
        for _ in range(runs + 1):
            created = await pm.create_eth_session_job(
                host_acct.address, "0.001", ETH_PRICE, 3600, 100, model=model
            )
            to_complete.append(created.job_id)
        rows.append(("complete_session_job", await _median_ms(runs, complete), 1))
        await sdk.aclose()
        await w3.provider.disconnect()

    print(f"# payments on the devnet: median of {runs} runs")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{'operation':<36} {'ms':>8} {'txs':>4} {'vs raw':>8}")
    for name, ms, txs in rows:
        ratio = f"{ms / (raw * txs):.2f}x" if txs else "-"
        print(f"{name:<36} {ms:8.2f} {txs:4d} {ratio:>8}")
    return [
        Row("payments", name, ms)
        if not txs or name.endswith("(baseline)")
        else Row("payments", name, ms, f"{txs} raw web3.py transfer(s)", raw * txs)
        for name, ms, txs in rows
    ]
