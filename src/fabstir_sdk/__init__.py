"""fabstir_sdk: Python asyncio SDK for the Fabstir decentralized LLM inference market.

Find a compute host, escrow ETH or USDC for a session job on Base, stream the model's
answers, and settle: the host is paid for proven tokens, the rest of the deposit comes back.
"""

import typing

from ._version import __version__
from .chain.units import PRICE_PRECISION, format_units, to_base_units
from .config import ContractAddresses, SDKConfig, SessionTimeouts
from .errors import (
    AnvilNotFoundError,
    AuthError,
    AuthRequiredError,
    BackendError,
    ChainError,
    ChainMismatchError,
    ChainStateError,
    ConfigError,
    ContextLimitError,
    ContextTooLongError,
    ContractRevertError,
    DecryptionError,
    DemoCheckError,
    DepositOutOfRangeError,
    DevnetError,
    DurationError,
    FabstirError,
    FloatAmountError,
    FrameDecryptionError,
    FrameTooLargeError,
    HandshakeError,
    HostError,
    HostFailedError,
    HostKeyMismatchError,
    HostNotActiveError,
    HostOverclaimError,
    HostUnreachableError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    IntegrityError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidCIDError,
    InvalidMultiaddrError,
    InvalidPeerIdError,
    InvalidStorageKeyError,
    MessageIndexError,
    ModelNotApprovedError,
    NoHostAvailableError,
    NondeterministicSignerError,
    NotFoundError,
    P2PError,
    P2PFrameTooLargeError,
    P2PNodeClosedError,
    P2PProtocolError,
    P2PRemoteError,
    P2PTimeoutError,
    P2PUnavailableError,
    PayloadTooLargeError,
    PeerUnreachableError,
    PriceAboveMaximumError,
    PriceBelowMinimumError,
    ProofIntervalError,
    ProofTimeoutWindowError,
    ProtocolError,
    RegistryRollbackError,
    ReplayedInitError,
    RevisionConflictError,
    RpcError,
    RpcFailure,
    RpcUnavailableError,
    S5FormatError,
    SessionClosedError,
    SessionError,
    SessionNotActiveError,
    SessionNotFoundError,
    SessionRefusedError,
    SignerError,
    StorageError,
    StorageUnavailableError,
    StreamNotOpenError,
    StreamTimeoutError,
    TransactionDroppedError,
    TransactionReplacedError,
    TransactionTimeoutError,
    UnsupportedContractsError,
    ValidationError,
)
from .models import (
    AuthResult,
    Conversation,
    ConversationSummary,
    HostInfo,
    Message,
    ModelInfo,
    PromptResult,
    Proof,
    SessionJob,
    SessionJobCreated,
    SessionState,
    SessionStatus,
    Settlement,
    StoredRef,
    StreamChunk,
    TokenUsage,
)
from .runner import run
from .sdk import FabstirSDK

if typing.TYPE_CHECKING:
    from .chain.signer import JsonRpcSigner, Signer
    from .managers import (
        AuthManager,
        DiscoveryManager,
        Failover,
        HostManager,
        ModelManager,
        PaymentManager,
        PromptStream,
        RankedHost,
        Session,
        SessionManager,
        StorageManager,
        TreasuryManager,
    )

#: Exported on first use: importing them loads eth-account and the managers (~0.7 s).
_LAZY = frozenset(
    {
        "AuthManager",
        "DiscoveryManager",
        "Failover",
        "HostManager",
        "ModelManager",
        "PaymentManager",
        "PromptStream",
        "RankedHost",
        "Session",
        "SessionManager",
        "StorageManager",
        "TreasuryManager",
    }
)


#: Exported on first use too, from fabstir_sdk.chain.signer (eth-account).
_LAZY_SIGNERS = frozenset({"JsonRpcSigner", "Signer"})


def __getattr__(name: str) -> typing.Any:
    module: typing.Any
    if name in _LAZY_SIGNERS:
        from .chain import signer as module
    elif name in _LAZY:
        from . import managers as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_LAZY_SIGNERS})


__all__ = [
    "AnvilNotFoundError",
    "AuthError",
    "AuthManager",
    "AuthRequiredError",
    "AuthResult",
    "BackendError",
    "ChainError",
    "ChainMismatchError",
    "ChainStateError",
    "ConfigError",
    "ContextLimitError",
    "ContextTooLongError",
    "ContractAddresses",
    "ContractRevertError",
    "Conversation",
    "ConversationSummary",
    "DecryptionError",
    "DemoCheckError",
    "DepositOutOfRangeError",
    "DevnetError",
    "DiscoveryManager",
    "DurationError",
    "FabstirError",
    "FabstirSDK",
    "Failover",
    "FloatAmountError",
    "FrameDecryptionError",
    "FrameTooLargeError",
    "HandshakeError",
    "HostError",
    "HostFailedError",
    "HostInfo",
    "HostKeyMismatchError",
    "HostManager",
    "HostNotActiveError",
    "HostOverclaimError",
    "HostUnreachableError",
    "InsufficientAllowanceError",
    "InsufficientBalanceError",
    "IntegrityError",
    "InvalidAddressError",
    "InvalidAmountError",
    "InvalidCIDError",
    "InvalidMultiaddrError",
    "InvalidPeerIdError",
    "InvalidStorageKeyError",
    "JsonRpcSigner",
    "Message",
    "MessageIndexError",
    "ModelInfo",
    "ModelManager",
    "ModelNotApprovedError",
    "NoHostAvailableError",
    "NondeterministicSignerError",
    "NotFoundError",
    "P2PError",
    "P2PFrameTooLargeError",
    "P2PNodeClosedError",
    "P2PProtocolError",
    "P2PRemoteError",
    "P2PTimeoutError",
    "P2PUnavailableError",
    "PRICE_PRECISION",
    "PayloadTooLargeError",
    "PaymentManager",
    "PeerUnreachableError",
    "PriceAboveMaximumError",
    "PriceBelowMinimumError",
    "PromptResult",
    "PromptStream",
    "Proof",
    "ProofIntervalError",
    "ProofTimeoutWindowError",
    "ProtocolError",
    "RankedHost",
    "RegistryRollbackError",
    "ReplayedInitError",
    "RevisionConflictError",
    "RpcError",
    "RpcFailure",
    "RpcUnavailableError",
    "S5FormatError",
    "SDKConfig",
    "Session",
    "SessionClosedError",
    "SessionError",
    "SessionJob",
    "SessionJobCreated",
    "SessionManager",
    "SessionNotActiveError",
    "SessionNotFoundError",
    "SessionRefusedError",
    "SessionState",
    "SessionStatus",
    "SessionTimeouts",
    "Settlement",
    "Signer",
    "SignerError",
    "StorageError",
    "StorageManager",
    "StorageUnavailableError",
    "StoredRef",
    "StreamChunk",
    "StreamNotOpenError",
    "StreamTimeoutError",
    "TokenUsage",
    "TransactionDroppedError",
    "TransactionReplacedError",
    "TransactionTimeoutError",
    "TreasuryManager",
    "UnsupportedContractsError",
    "ValidationError",
    "__version__",
    "format_units",
    "run",
    "to_base_units",
]

# What users hold reads as fabstir_sdk.X in reprs, tracebacks and help(), as in httpx.
for _name in __all__:
    _value = globals().get(_name)
    if isinstance(_value, type) or callable(_value):
        _value.__module__ = __name__
del _name, _value
