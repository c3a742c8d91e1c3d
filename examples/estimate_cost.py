"""What a session will cost before paying: estimate_session_cost, then the same session.

The estimate names the host's price, the tokens billed (at least the proof interval) and the
gas of each of your transactions; the real session then pays exactly the token cost, and its
gas costs at most the estimate (the devnet's base fee only falls between the two).
Runs on a devnet of its own: `python examples/estimate_cost.py`.
"""

import asyncio

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet

MODEL = "fabstir/builtin:toy-1.gguf"  # the reference host's built-in toy model


async def main() -> None:
    async with Devnet.start() as net:
        await net.start_host(account=2, models=[MODEL])
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[1].private_key)
            sm = await sdk.get_session_manager()
            estimate = await sm.estimate_session_cost(MODEL, 1500, deposit="1")  # sends nothing
            print(f"{estimate.price_per_token} micro-USDC per 1000 tokens")
            print(f"{estimate.billed_tokens} tokens: {estimate.token_cost} micro-USDC")
            print(f"minimum bill: {estimate.min_tokens} tokens, {estimate.min_cost} micro-USDC")
            print(", ".join(f"{g.step} {g.gas} gas" for g in estimate.gas))

            wallet = sdk.get_payment_manager()
            eth_before = await wallet.get_eth_balance()
            session = await sm.create_session(model=MODEL, host=estimate.host, deposit="1")
            reply = await session.send_prompt("count to 5")
            settlement = await session.complete()
            gas_paid = eth_before - await wallet.get_eth_balance()
            print(
                f"{reply.usage.completion_tokens} tokens streamed, {settlement.tokens_used} billed"
            )
            print(f"paid {settlement.host_payment} micro-USDC (the minimum bill)")
            print(f"gas: estimated {estimate.gas_cost} wei, paid {gas_paid} wei")


asyncio.run(main())
