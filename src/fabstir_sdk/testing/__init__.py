"""A pytest plugin for your own integration tests against a local Fabstir chain.

Installed with fabstir-sdk (``pytest11`` entry point ``fabstir``) and needing pytest-asyncio
(``pip install 'fabstir-sdk[testing]'``), it gives every test suite three fixtures:

- ``fabstir_devnet``: one :class:`~fabstir_sdk.devnet.Devnet` per test session (anvil on
  127.0.0.1, the contracts, ten funded accounts, a local S5 portal);
- ``fabstir_host``: the reference host as a real process, serving the built-in toy model
  ``"fabstir/builtin:toy-1.gguf"`` as account 2, one per session;
- ``fabstir_sdk``: a :class:`~fabstir_sdk.FabstirSDK` authenticated as account 1, per test.

::

    async def test_counts(fabstir_sdk, fabstir_host):
        sm = await fabstir_sdk.get_session_manager()
        session = await sm.create_session(model=fabstir_host.models[0], host=fabstir_host.address)
        assert (await session.send_prompt("count to 3")).text == "1 2 3"

Nothing starts unless a test asks for one of them. Tests that do run on pytest-asyncio's
session event loop (the plugin marks them; no decorator needed). To test against a fork
of a live chain instead, run ``pytest --fabstir-fork-url URL`` (Base Sepolia's contracts are
known; elsewhere add ``--fabstir-fork-manifest PATH``), or override ``fabstir_devnet_options``
in your conftest.py::

    @pytest.fixture(scope="session")
    def fabstir_devnet_options():
        return {"fork_url": os.environ["BASE_SEPOLIA_RPC_URL"]}
"""

from ._plugin import (
    HOST_ACCOUNT,
    USER_ACCOUNT,
    fabstir_devnet,
    fabstir_devnet_options,
    fabstir_host,
    fabstir_host_options,
    fabstir_sdk,
    pytest_addoption,
    pytest_configure,
    pytest_pycollect_makeitem,
)

__all__ = [
    "HOST_ACCOUNT",
    "USER_ACCOUNT",
    "fabstir_devnet",
    "fabstir_devnet_options",
    "fabstir_host",
    "fabstir_host_options",
    "fabstir_sdk",
    "pytest_addoption",
    "pytest_configure",
    "pytest_pycollect_makeitem",
]
