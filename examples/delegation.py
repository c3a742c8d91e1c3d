"""Delegation: an owner lets an agent spend its USDC without giving the agent its key.

The owner approves a budget and authorises the agent's address; the agent, with only its own
key, opens a session the owner pays for (the owner is the depositor, refunds go back to it);
the owner revokes the agent, whose next session is refused before it sends anything.
Runs on a devnet of its own: `python examples/delegation.py`.
"""

import asyncio

from fabstir_sdk import DelegateNotAuthorizedError, FabstirSDK, SessionState
from fabstir_sdk.devnet import Devnet

MODEL = "fabstir/builtin:toy-1.gguf"  # the reference host's built-in toy model


async def main() -> None:
    async with Devnet.start() as net:
        host = await net.start_host(account=2, models=[MODEL])
        config = net.sdk_config()
        usdc = config.contract_addresses.usdc_token
        async with FabstirSDK(config) as owner, FabstirSDK(config) as agent:
            me = (await owner.authenticate(net.accounts[1].private_key)).user_address
            bot = (await agent.authenticate(net.accounts[3].private_key)).user_address
            wallet = owner.get_payment_manager()
            await wallet.approve_usdc(usdc, "1.5")  # the budget of all its agents together
            await wallet.authorize_delegate(bot)
            before = await wallet.get_token_balance(usdc)

            # the agent's side: its own key, the owner's money
            sessions = await agent.get_session_manager()
            session = await sessions.create_session(
                model=MODEL, host=host.address, deposit="1", payer=me
            )
            print((await session.send_prompt("count to 3")).text)
            await session.end()  # only the depositor or the host may complete: the host settles
            escrowed = before - await wallet.get_token_balance(usdc)
            print(f"escrowed from the owner: {escrowed} micro-USDC")
            for job in await sessions.list_sessions():  # the agent's view: its delegated jobs
                print(
                    f"the agent's session {job.id}: depositor is the owner: {job.depositor == me}"
                )

            await net.advance_time(31)  # devnet only: past the host's dispute window
            while (await wallet.get_session_job(session.job_id)).status is SessionState.ACTIVE:  # noqa: ASYNC110 (the chain)
                await asyncio.sleep(0.2)  # the host settles on its own
            print(f"the owner paid {before - await wallet.get_token_balance(usdc)} micro-USDC")

            await wallet.authorize_delegate(bot, allowed=False)  # revoke
            try:
                await sessions.create_session(
                    model=MODEL, host=host.address, deposit="0.5", payer=me
                )
            except DelegateNotAuthorizedError as refused:
                print(f"refused before sending: {refused.delegate == bot}")


asyncio.run(main())
