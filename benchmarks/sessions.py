"""A paid session end to end on the devnet: create, first token, tokens/s, complete.

One reference host process serves the built-in toy model; the user pays in USDC and the
conversation goes to the devnet's local S5 portal. ``create_session`` reads the host's
price, approves, creates the job, records it in S5 and opens the encrypted WebSocket; its
baseline, measured in the same run, is the two raw web3.py transfers its two transactions
would cost. ``complete`` waits for the host's final proof and settles in one transaction.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet

from ._report import Row
from .payments import _median_ms, raw_eth_transfer

PROMPT = "count to 20"


async def run(runs: int) -> list[Row]:
    samples: dict[str, list[float]] = {"create_session": [], "ttft": [], "tps": [], "complete": []}
    async with Devnet.start(with_s5=True) as net:
        model = net.models[2]  # the built-in toy model
        host = await net.start_host(account=2, models=[model])
        w3 = AsyncWeb3(AsyncHTTPProvider(net.rpc_url))
        raw_account = Account.from_key(net.accounts[0].private_key)

        async def raw_transfer() -> None:
            await raw_eth_transfer(w3, raw_account, net.accounts[3].address, net.chain_id)

        raw = await _median_ms(runs, raw_transfer)
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[1].private_key)
            sm = await sdk.get_session_manager()
            for i in range(runs + 1):  # the first is a warm-up
                start = time.perf_counter()
                session = await sm.create_session(model=model, host=host.address, deposit="1")
                created = time.perf_counter()
                first = None
                async with session.stream(PROMPT) as stream:
                    async for chunk in stream:
                        first = first or time.perf_counter()
                        del chunk
                streamed = time.perf_counter()
                await session.complete()
                done = time.perf_counter()
                assert first is not None and stream.usage is not None
                if i:
                    samples["create_session"].append((created - start) * 1000)
                    samples["ttft"].append((first - created) * 1000)
                    samples["tps"].append(stream.usage.completion_tokens / (streamed - created))
                    samples["complete"].append((done - streamed) * 1000)
        await host.stop()
        await w3.provider.disconnect()

    create, ttft, complete = (
        statistics.median(samples[k]) for k in ("create_session", "ttft", "complete")
    )
    tps = statistics.median(samples["tps"])
    print(f"\n# sessions on the devnet (USDC, local S5 portal, toy model): median of {runs} runs")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{'operation':<36} {'ms':>8} {'vs raw':>8}")
    print(f"{'raw web3.py transfer (baseline)':<36} {raw:8.2f} {'1.00x':>8}")
    print(f"{'create_session (2 txs)':<36} {create:8.2f} {create / (2 * raw):7.2f}x")
    print(f"{'first token after create (TTFT)':<36} {ttft:8.2f} {'-':>8}")
    print(f"{'complete (final proof + settle)':<36} {complete:8.2f} {'-':>8}")
    print(f"{'tokens/s (' + PROMPT + ')':<36} {tps:8.1f}")
    return [
        Row("sessions", "create_session", create, "2 raw web3.py transfer(s)", 2 * raw),
        Row("sessions", "first token (TTFT)", ttft),
        Row("sessions", "complete (final proof + settle)", complete),
    ]
