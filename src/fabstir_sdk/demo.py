"""``fabstir demo``: the payment walkthrough of docs/payments.md, run on a fresh devnet.

A host registers, a user escrows 1 USDC at price 2000, the host proves 150,000 tokens, the
user completes, and the split is printed: host 270,000, treasury 30,000, refund 700,000
micro-USDC. Until streaming sessions land, this is the whole demo.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from .chain.units import format_units
from .models import Settlement
from .sdk import FabstirSDK

__all__ = ["payment_walkthrough"]

PRICE = 2000  # micro-USDC per 1000 tokens
TOKENS = 150_000


async def payment_walkthrough(say: Callable[[str], None] = print) -> Settlement:
    """Run the walkthrough on a new devnet and return the settlement."""
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
                say(f"  {label:<24}{value:>10,} micro-USDC = {format_units(value, 6)} USDC")
            return settlement
