"""The README quickstart: a devnet, a host, a paid and streamed session, settled on chain."""

import asyncio

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet

MODEL = "fabstir/builtin:toy-1.gguf"  # the reference host's built-in toy model


async def main() -> None:
    async with Devnet.start(with_s5=True) as net:  # anvil + contracts + S5 portal, on 127.0.0.1
        await net.start_host(account=2, models=[MODEL])  # a host process, registered on chain
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[1].private_key)  # a funded test account
            sm = await sdk.get_session_manager()
            session = await sm.create_session(model=MODEL, deposit="1")  # host found; 1 USDC
            async with session.stream("My name is Ada.") as stream:  # end-to-end encrypted
                async for chunk in stream:
                    print(chunk.text, end="", flush=True)
            print()
            print((await session.send_prompt("What is my name?")).text)  # context is kept
            s = await session.complete()  # the host's final proof, then the split on chain
            print(f"host {s.host_net}, treasury {s.treasury_fee}, refund {s.refund} micro-USDC")


asyncio.run(main())
