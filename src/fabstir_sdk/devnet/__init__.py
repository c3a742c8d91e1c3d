"""A local devnet: anvil on 127.0.0.1 with our contracts deployed, models approved and ten
accounts funded with ETH, USDC and FAB. For tests, demos, notebooks and ``fabstir devnet up``.

::

    async with Devnet.start() as net:
        config = net.sdk_config()            # SDKConfig for this chain
        key = net.accounts[1].private_key    # a funded test account (accounts[0] deployed)

Importing this package is cheap: anvil starts, and eth-account loads, only in ``start()``.
Where anvil comes from: :func:`find_anvil`; in a pip install, ``fabstir devnet install``
(:func:`install_anvil`) puts the pinned one in the user's cache directory.
"""

from ._accounts import ANVIL_MNEMONIC, DevAccount
from ._anvil import ANVIL_ENV, DEFAULT_CHAIN_ID, AnvilProcess, anvil_cache_dir, find_anvil
from ._anvil_install import install_anvil
from ._balances import AccountBalances
from ._deploy import (
    DEVNET_MODELS,
    FAB_PER_ACCOUNT,
    PLACEHOLDER_SHA256,
    USDC_PER_ACCOUNT,
    Deployment,
    DevnetModel,
)
from ._host_process import RunningHost
from ._net import Devnet, StartingDevnet

__all__ = [
    "ANVIL_ENV",
    "ANVIL_MNEMONIC",
    "AccountBalances",
    "AnvilProcess",
    "DEFAULT_CHAIN_ID",
    "DEVNET_MODELS",
    "Deployment",
    "DevAccount",
    "Devnet",
    "DevnetModel",
    "FAB_PER_ACCOUNT",
    "PLACEHOLDER_SHA256",
    "RunningHost",
    "StartingDevnet",
    "USDC_PER_ACCOUNT",
    "anvil_cache_dir",
    "find_anvil",
    "install_anvil",
]
