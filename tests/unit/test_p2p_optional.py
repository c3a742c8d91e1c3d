"""Without py-libp2p (the p2p extra) the SDK imports, and the P2P methods say what to install."""

import shutil
import subprocess
import sys
import sysconfig
import textwrap

from fabstir_sdk import P2PUnavailableError

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    for name in ("libp2p", "trio", "multiaddr"):
        sys.modules[name] = None  # as if not installed: importing them raises ImportError
    import fabstir_sdk.p2p, fabstir_sdk.managers.discovery
    from fabstir_sdk import FabstirSDK, P2PUnavailableError, SDKConfig, ContractAddresses
    from fabstir_sdk.p2p import P2PNode

    ADDR = "0x" + "11" * 20
    PEER = "QmWMmzpn6PRqrxLQJY9ztWrhiKah96XVsW9R7V486vAVwz"
    config = SDKConfig(
        rpc_url="http://127.0.0.1:9",
        contract_addresses=ContractAddresses(**{f: ADDR for f in ContractAddresses.model_fields}),
    )

    async def main():
        messages = []
        async with FabstirSDK(config) as sdk:
            dm = sdk.get_discovery_manager()
            calls = [
                lambda: P2PNode(),
                lambda: dm.create_node(),
                lambda: dm.connect_to_peer("/ip4/127.0.0.1/tcp/1/p2p/" + PEER),
                lambda: dm.send_message(PEER, {"type": "load"}),
            ]
            for call in calls:
                try:
                    result = call()
                    if asyncio.iscoroutine(result):
                        await result
                    messages.append("no error")
                except P2PUnavailableError as exc:
                    messages.append(str(exc))
            messages.append(str(dm.get_connected_peers()))
        print("\\n".join(messages))

    asyncio.run(main())
    """
)


def test_p2p_methods_name_the_extra_when_libp2p_is_missing():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    lines = out.stdout.strip().splitlines()
    # the pip of this environment: `pip` when PATH finds it, else `<python> -m pip`
    pip = "pip" if shutil.which("pip") == sysconfig.get_path("scripts") + "/pip" else None
    pip = pip or f"{sys.executable} -m pip"
    expected = (
        "P2P discovery needs py-libp2p, which is not installed: "
        f"{pip} install 'fabstir-sdk[p2p]' (the p2p extra)"
    )
    assert lines == [expected] * 4 + ["[]"]


def test_unavailable_is_a_p2p_error():
    from fabstir_sdk import FabstirError, P2PError

    assert issubclass(P2PUnavailableError, P2PError)
    assert issubclass(P2PUnavailableError, FabstirError)


def test_p2p_and_discovery_modules_import_without_trio_or_libp2p():
    code = (
        "import sys, fabstir_sdk.p2p, fabstir_sdk.managers.discovery; "
        "print(sorted(m for m in ('libp2p', 'trio', 'multiaddr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
