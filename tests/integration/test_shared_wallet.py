"""One wallet, many processes: a web app's workers sharing one funded account.

Four real processes each open 25 USDC sessions at once with the same key, then settle
them. Before: a raw ``RpcFailure: nonce too low`` and ``InsufficientAllowanceError`` (each
process's approval replaced the allowance the others counted on). Now: no error, and every
balance is exact to the base unit, the gas included.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from fabstir_sdk.chain.rpc import JsonRpcClient

from .conftest import HOST, USDC_PRICE, USER

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("shared_wallet_worker.py")
PROCESSES, SESSIONS = 4, 25
DEPOSIT = 500_000  # "0.5" USDC


async def run_worker(orders: dict) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(json.dumps(orders).encode())
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def gas_spent(rpc: JsonRpcClient, address: str, first_block: int, last_block: int) -> int:
    """Wei paid for gas by ``address`` in blocks ``first_block..last_block``, from receipts."""
    blocks = await rpc.batch(
        [("eth_getBlockByNumber", (hex(n), True)) for n in range(first_block, last_block + 1)]
    )
    mine = [t["hash"] for b in blocks for t in b["transactions"] if t["from"] == address.lower()]
    receipts = await rpc.batch([("eth_getTransactionReceipt", (h,)) for h in mine])
    return sum(int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16) for r in receipts)


async def test_four_processes_share_one_wallet(devnet, user, host):
    me = devnet.accounts[USER].address
    pm = user.get_payment_manager()
    usdc = devnet.addresses.usdc_token
    rpc = JsonRpcClient(devnet.rpc_url)
    try:
        usdc_before = await pm.get_token_balance(usdc)
        market_before = await pm.get_token_balance(usdc, devnet.addresses.job_marketplace)
        eth_before = await pm.get_eth_balance()
        nonce_before = int(await rpc.call("eth_getTransactionCount", me, "latest"), 16)
        first_block = int(await rpc.call("eth_blockNumber"), 16) + 1
        orders = {
            "config": devnet.sdk_config().model_dump_json(),
            "key": devnet.accounts[USER].private_key,
            "host": devnet.accounts[HOST].address,
            "model": devnet.models[0],
            "price": USDC_PRICE,
            "deposit": "0.5",
            "count": SESSIONS,
        }
        results = await asyncio.gather(*(run_worker(orders) for _ in range(PROCESSES)))

        assert [r["errors"] for r in results] == [[]] * PROCESSES
        jobs = sorted(j for r in results for j in r["jobs"])
        assert len(set(jobs)) == PROCESSES * SESSIONS
        assert [r["refunds"] for r in results] == [[DEPOSIT] * SESSIONS] * PROCESSES
        for job in jobs:
            state = await pm.get_session_job(job)
            assert (state.depositor, state.deposit, state.refunded_to_user) == (
                me,
                DEPOSIT,
                DEPOSIT,
            )
        # every deposit came back, the marketplace keeps nothing, the gas is all that was paid
        assert await pm.get_token_balance(usdc) == usdc_before
        assert await pm.get_token_balance(usdc, devnet.addresses.job_marketplace) == market_before
        last_block = int(await rpc.call("eth_blockNumber"), 16)
        gas = await gas_spent(rpc, me, first_block, last_block)
        assert await pm.get_eth_balance() == eth_before - gas
        sent = int(await rpc.call("eth_getTransactionCount", me, "latest"), 16) - nonce_before
        approvals = sent - 2 * PROCESSES * SESSIONS
        assert 1 <= approvals <= PROCESSES  # at most one per process, and never lowered
        # (how often a process lost a nonce to another and signed again is timing: not asserted)
        print("signed again after a taken nonce:", [r["signed_again"] for r in results])
    finally:
        await rpc.aclose()
