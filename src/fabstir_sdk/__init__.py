"""fabstir_sdk: Python asyncio SDK for the Fabstir decentralized LLM inference market.

Find a compute host, escrow ETH or USDC for a session job on Base, stream the model's
answers, and settle: the host is paid for proven tokens, the rest of the deposit comes back.
"""

from ._version import __version__
from .chain.units import PRICE_PRECISION, format_units, to_base_units
from .config import ContractAddresses, SDKConfig
from .errors import (
    AuthError,
    AuthRequiredError,
    ChainError,
    ChainMismatchError,
    ConfigError,
    ContractRevertError,
    DepositOutOfRangeError,
    DurationError,
    FabstirError,
    FloatAmountError,
    HostNotActiveError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    InvalidAddressError,
    InvalidAmountError,
    ModelNotApprovedError,
    NotFoundError,
    PriceBelowMinimumError,
    ProofIntervalError,
    ProofTimeoutWindowError,
    RpcError,
    SessionNotActiveError,
    SessionNotFoundError,
    TransactionTimeoutError,
    ValidationError,
)
from .models import (
    AuthResult,
    HostInfo,
    ModelInfo,
    SessionJob,
    SessionJobCreated,
    SessionState,
    Settlement,
)
from .sdk import FabstirSDK

__all__ = [
    "AuthError",
    "AuthRequiredError",
    "AuthResult",
    "ChainError",
    "ChainMismatchError",
    "ConfigError",
    "ContractAddresses",
    "ContractRevertError",
    "DepositOutOfRangeError",
    "DurationError",
    "FabstirError",
    "FabstirSDK",
    "FloatAmountError",
    "HostInfo",
    "HostNotActiveError",
    "InsufficientAllowanceError",
    "InsufficientBalanceError",
    "InvalidAddressError",
    "InvalidAmountError",
    "ModelInfo",
    "ModelNotApprovedError",
    "NotFoundError",
    "PRICE_PRECISION",
    "PriceBelowMinimumError",
    "ProofIntervalError",
    "ProofTimeoutWindowError",
    "RpcError",
    "SDKConfig",
    "SessionJob",
    "SessionJobCreated",
    "SessionNotActiveError",
    "SessionNotFoundError",
    "SessionState",
    "Settlement",
    "TransactionTimeoutError",
    "ValidationError",
    "__version__",
    "format_units",
    "to_base_units",
]
