"""The README quickstart: a host registers, a user escrows 1 USDC, the user settles."""

import asyncio

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet


async def main() -> None:
    async with Devnet.start() as net:  # anvil + our contracts on 127.0.0.1
        user, host, usdc, model = (
            net.accounts[1],
            net.accounts[2],
            net.addresses.usdc_token,
            net.models[0],
        )
        async with FabstirSDK(net.sdk_config()) as sdk:  # a host stakes FAB and registers
            await sdk.authenticate(host.private_key)
            await sdk.get_host_manager().register_host(
                "http://127.0.0.1:8080",
                [model],
                min_price_per_token_native=10**12,
                min_price_per_token_stable=2000,
            )
        async with FabstirSDK(net.sdk_config()) as sdk:  # a user escrows 1 USDC for a session
            await sdk.authenticate(user.private_key)
            pm = sdk.get_payment_manager()
            await pm.approve_usdc(usdc, "1")
            job = await pm.create_usdc_session_job(
                host.address, usdc, "1", 2000, 3600, 1000, model=model
            )
            print(await pm.get_session_job(job.job_id))
            print(await pm.complete_session_job(job.job_id))  # no proven tokens: full refund


if __name__ == "__main__":
    asyncio.run(main())
