"""Log scans start at the marketplace's deployment block, not at the chain's first block
(on Base that would be millions of blocks of eth_getLogs)."""

from __future__ import annotations

from typing import Any

from fabstir_sdk import FabstirSDK, SDKConfig
from fabstir_sdk.chain.transport import HttpTransport


class RecordingTransport(HttpTransport):
    """HTTP to the devnet's anvil, keeping the params of every eth_getLogs sent."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.get_logs: list[dict[str, Any]] = []

    async def handle(self, payload: Any) -> Any:
        for call in payload if isinstance(payload, list) else [payload]:
            if call["method"] == "eth_getLogs":
                self.get_logs.append(call["params"][0])
        return await super().handle(payload)


async def test_the_first_delegated_log_scan_starts_at_the_deployment_block(devnet):
    block = devnet.deployment.block
    assert block > 0  # anvil's genesis is block 0; the deployment is mined after it
    config = devnet.sdk_config()
    assert config.deployment_block == block
    assert SDKConfig.from_manifest(devnet.manifest_path).deployment_block == block
    transport = RecordingTransport(config.rpc_url)
    sdk = FabstirSDK(config, transport=transport)
    try:
        await sdk.authenticate(devnet.accounts[1].private_key)
        await (await sdk.get_session_manager()).list_sessions()
    finally:
        await sdk.aclose()
    assert transport.get_logs, "list_sessions scanned no logs"
    assert transport.get_logs[0]["fromBlock"] == hex(block)
    assert min(int(p["fromBlock"], 16) for p in transport.get_logs) == block
