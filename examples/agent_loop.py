"""An AI agent that pays per answer from its owner's budget, never holding the owner's key.

The agent checks what its work will cost before paying (its one transaction and the owner's
tokens), then works through its tasks on one delegated session, counting what each answer is
worth at the host's price. Runs on a devnet of its own: `python examples/agent_loop.py`.
"""

import asyncio

from fabstir_sdk import FabstirSDK, SessionState
from fabstir_sdk.devnet import Devnet

MODEL = "fabstir/builtin:toy-1.gguf"  # the reference host's built-in toy model
TASKS = ["count to 3", "count to 5", "My name is Ada.", "What is my name?"]


async def main() -> None:
    async with Devnet.start() as net:
        host = await net.start_host(account=2, models=[MODEL])
        config = net.sdk_config()
        usdc = config.contract_addresses.usdc_token
        async with FabstirSDK(config) as owner:
            me = (await owner.authenticate(net.accounts[1].private_key)).user_address
            wallet = owner.get_payment_manager()
            await wallet.approve_usdc(usdc, "1")
            await wallet.authorize_delegate(net.accounts[3].address)
            before = await wallet.get_token_balance(usdc)

            async with FabstirSDK(config) as agent:  # the agent: its own key only
                await agent.authenticate(net.accounts[3].private_key)
                sessions = await agent.get_session_manager()
                plan = await sessions.estimate_session_cost(
                    MODEL, 100, host=host.address, deposit="1", payer=me
                )
                print(f"at most {plan.token_cost} micro-USDC of the owner's budget;")
                print(f"the agent's transactions: {[g.step for g in plan.gas]}")
                session = await sessions.create_session(
                    model=MODEL, host=host.address, deposit="1", payer=me
                )
                spent = 0
                for task in TASKS:
                    reply = await session.send_prompt(task)
                    tokens = reply.usage.completion_tokens
                    cost = tokens * session.price_per_token // 1000  # USDC base units
                    spent += tokens
                    print(f"{reply.text!r}: {tokens} tokens, {cost} micro-USDC")
                await session.end()  # the host proves its tokens and settles with the owner
                print(f"{spent} tokens streamed")

            await net.advance_time(31)  # devnet only: past the host's dispute window
            while (await wallet.get_session_job(session.job_id)).status is SessionState.ACTIVE:  # noqa: ASYNC110 (the chain)
                await asyncio.sleep(0.2)  # the host settles on its own
            job = await wallet.get_session_job(session.job_id)
            paid = before - await wallet.get_token_balance(usdc)
            print(f"the owner paid {paid} micro-USDC for {job.tokens_used} billed tokens")


asyncio.run(main())
