"""The errors the SDK raises; catch :class:`FabstirError` to catch them all.

Every bad input is refused with one of these *before* any transaction is sent or any byte
is written. Errors that stand for bad arguments also derive from :class:`ValueError` (or
:class:`TypeError` for a ``float`` amount), so generic handlers keep working.

::

    FabstirError
    ├── ConfigError
    │   └── ChainMismatchError
    ├── AuthError
    │   └── AuthRequiredError
    ├── ValidationError                      (also ValueError)
    │   ├── InvalidAmountError
    │   │   └── FloatAmountError             (also TypeError)
    │   ├── InvalidAddressError
    │   ├── DepositOutOfRangeError
    │   ├── PriceBelowMinimumError
    │   ├── ProofIntervalError
    │   ├── ProofTimeoutWindowError
    │   ├── DurationError
    │   ├── ModelNotApprovedError
    │   ├── HostNotActiveError
    │   ├── InsufficientBalanceError
    │   ├── InsufficientAllowanceError
    │   └── SessionNotActiveError
    ├── NotFoundError
    │   └── SessionNotFoundError
    ├── DevnetError
    └── ChainError
        ├── RpcError
        ├── TransactionTimeoutError
        └── ContractRevertError
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "AuthRequiredError",
    "ChainError",
    "ChainMismatchError",
    "ConfigError",
    "ContractRevertError",
    "DepositOutOfRangeError",
    "DevnetError",
    "DurationError",
    "FabstirError",
    "FloatAmountError",
    "HostNotActiveError",
    "InsufficientAllowanceError",
    "InsufficientBalanceError",
    "InvalidAddressError",
    "InvalidAmountError",
    "ModelNotApprovedError",
    "NotFoundError",
    "PriceBelowMinimumError",
    "ProofIntervalError",
    "ProofTimeoutWindowError",
    "RpcError",
    "SessionNotActiveError",
    "SessionNotFoundError",
    "TransactionTimeoutError",
    "ValidationError",
]


class FabstirError(Exception):
    """Base of every error raised by fabstir_sdk."""


class ConfigError(FabstirError):
    """The SDK configuration is incomplete or inconsistent."""


class ChainMismatchError(ConfigError):
    """The RPC endpoint serves another chain than the configuration names."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"config chain_id is {expected} but the RPC serves chain {actual}")
        self.expected = expected
        self.actual = actual


class AuthError(FabstirError):
    """Authentication failed (for example, a malformed private key)."""


class AuthRequiredError(AuthError):
    """The operation needs a wallet: call ``await sdk.authenticate(private_key)`` first."""


class ValidationError(FabstirError, ValueError):
    """An argument was refused before anything was sent."""


class InvalidAmountError(ValidationError):
    """An amount is zero, negative, not a number, or finer than the token's decimals."""


class FloatAmountError(InvalidAmountError, TypeError):
    """Amounts must be ``str``, ``Decimal`` or ``int``: a ``float`` cannot hold money exactly."""


class InvalidAddressError(ValidationError):
    """Not a 20-byte hex address, or a mixed-case address with a bad EIP-55 checksum."""


class DepositOutOfRangeError(ValidationError):
    """The deposit is below the contract's minimum or above its maximum for that token."""

    def __init__(self, amount: int, minimum: int, maximum: int, token: str) -> None:
        super().__init__(
            f"deposit {amount} is outside [{minimum}, {maximum}] base units for token {token}"
        )
        self.amount, self.minimum, self.maximum, self.token = amount, minimum, maximum, token


class PriceBelowMinimumError(ValidationError):
    """The price per token is below the host's on-chain minimum for that model and token."""

    def __init__(self, price: int, minimum: int) -> None:
        super().__init__(f"price_per_token {price} is below the host's minimum {minimum}")
        self.price, self.minimum = price, minimum


class ProofIntervalError(ValidationError):
    """The proof interval is below 100 tokens or above what the deposit can pay for."""


class ProofTimeoutWindowError(ValidationError):
    """The proof timeout window is outside 60..3600 seconds."""


class DurationError(ValidationError):
    """The session duration is not a positive number of seconds up to 365 days."""


class ModelNotApprovedError(ValidationError):
    """The model is unknown to the ModelRegistry, deactivated, or not served by the host."""


class HostNotActiveError(ValidationError):
    """The host is not registered, or is registered but inactive."""


class InsufficientBalanceError(ValidationError):
    """The account holds less than the operation needs."""

    def __init__(self, needed: int, available: int, token: str) -> None:
        super().__init__(f"needs {needed} base units of {token}, the account holds {available}")
        self.needed, self.available, self.token = needed, available, token


class InsufficientAllowanceError(ValidationError):
    """The ERC-20 allowance for the marketplace is below the deposit: approve first."""

    def __init__(self, needed: int, allowance: int, token: str) -> None:
        super().__init__(
            f"needs an allowance of {needed} base units of {token}, approved: {allowance}"
        )
        self.needed, self.allowance, self.token = needed, allowance, token


class SessionNotActiveError(ValidationError):
    """The session job is already completed or timed out."""


class NotFoundError(FabstirError, LookupError):
    """The thing asked for does not exist."""


class SessionNotFoundError(NotFoundError):
    """No session job has this id."""


class DevnetError(FabstirError):
    """The local devnet (anvil plus our contracts) failed to start, deploy or answer."""


class ChainError(FabstirError):
    """Talking to the chain failed."""


class RpcError(ChainError):
    """The RPC endpoint is unreachable or answered with an error."""


class TransactionTimeoutError(ChainError):
    """No receipt arrived before the deadline; the transaction may still be mined later."""

    def __init__(self, tx_hash: str, timeout: float) -> None:
        super().__init__(f"no receipt for {tx_hash} after {timeout:g} s")
        self.tx_hash, self.timeout = tx_hash, timeout


class ContractRevertError(ChainError):
    """A contract call reverted; ``reason`` is the revert string or the custom error's name."""

    def __init__(
        self,
        reason: str,
        *,
        error_name: str | None = None,
        args: tuple[Any, ...] = (),
        tx_hash: str | None = None,
    ) -> None:
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"contract reverted: {reason}{where}")
        self.reason = reason
        self.error_name = error_name
        self.error_args = args
        self.tx_hash = tx_hash
