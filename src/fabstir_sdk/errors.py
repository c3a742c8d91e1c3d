"""The errors the SDK raises; catch :class:`FabstirError` to catch them all.

Every bad input is refused with one of these *before* any transaction is sent or any byte
is written. Errors that stand for bad arguments also derive from :class:`ValueError` (or
:class:`TypeError` for a ``float`` amount), so generic handlers keep working. Refusals that
come from the chain's current state (a balance, an allowance, a host's registration or
price, a session's status) derive from :class:`ChainStateError` instead, not from
``ValueError``: the same arguments may succeed later. :class:`HostFailedError` marks "this
host failed, another may serve": failover and ``fabstir chat`` move on from exactly those.

::

    FabstirError
    ├── ConfigError
    │   ├── ChainMismatchError
    │   ├── UnsupportedContractsError
    │   └── AnvilNotFoundError
    ├── AuthError
    │   ├── AuthRequiredError
    │   └── SignerError
    │       └── NondeterministicSignerError
    ├── ValidationError                      (also ValueError)
    │   ├── InvalidAmountError
    │   │   └── FloatAmountError             (also TypeError)
    │   ├── InvalidAddressError
    │   ├── InvalidMultiaddrError
    │   ├── InvalidPeerIdError
    │   ├── DepositOutOfRangeError
    │   ├── ProofIntervalError
    │   ├── ProofTimeoutWindowError
    │   ├── DurationError
    │   ├── InvalidStorageKeyError
    │   └── PayloadTooLargeError
    ├── ChainStateError                      (the chain's state refuses; nothing was sent)
    │   ├── InsufficientBalanceError
    │   ├── InsufficientAllowanceError
    │   ├── HostNotActiveError
    │   ├── ModelNotApprovedError
    │   ├── PriceBelowMinimumError
    │   ├── PriceAboveMaximumError
    │   ├── SessionNotActiveError
    │   ├── DelegateNotAuthorizedError
    │   └── ProposalStateError               (a model proposal's vote is not in that stage)
    ├── NotFoundError
    │   ├── NoHostAvailableError
    │   └── SessionNotFoundError
    ├── P2PError
    │   ├── P2PUnavailableError
    │   ├── P2PNodeClosedError
    │   ├── PeerUnreachableError
    │   ├── P2PTimeoutError                  (also TimeoutError)
    │   ├── P2PProtocolError
    │   │   └── P2PFrameTooLargeError
    │   └── P2PRemoteError
    ├── StorageError
    │   ├── IntegrityError
    │   │   └── RegistryRollbackError
    │   ├── DecryptionError
    │   ├── StorageUnavailableError
    │   ├── RevisionConflictError
    │   └── S5FormatError                    (also ValueError)
    │       └── InvalidCIDError
    ├── ProtocolError                        (code: the wire error code)
    │   ├── FrameTooLargeError
    │   ├── FrameDecryptionError
    │   ├── MessageIndexError
    │   ├── HandshakeError
    │   │   └── ReplayedInitError            (host side)
    │   ├── ContextTooLongError              (host side)
    │   └── SessionRefusedError              (host side)
    ├── SessionError
    │   ├── HostFailedError                  (this host failed; another may serve)
    │   │   ├── HostUnreachableError
    │   │   ├── HostKeyMismatchError
    │   │   └── StreamTimeoutError           (also TimeoutError)
    │   ├── SessionClosedError
    │   ├── StreamNotOpenError
    │   └── HostOverclaimError                (also UserWarning: issued as a warning)
    │       └── HostOverreportError           (a stream_end claims more than its text holds)
    ├── HostError                            (an error frame from the host)
    │   └── ContextLimitError
    ├── BackendError                         (host side: the inference backend)
    ├── DevnetError
    ├── DemoCheckError
    └── ChainError
        ├── RpcError
        │   ├── RpcUnavailableError
        │   ├── RpcFailure                   (the node's JSON-RPC error for one call)
        │   └── SimulationUnsupportedError   (the node has no eth_simulateV1)
        ├── TransactionTimeoutError
        ├── TransactionDroppedError
        ├── TransactionReplacedError
        └── ContractRevertError
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AnvilNotFoundError",
    "AuthError",
    "AuthRequiredError",
    "BackendError",
    "ChainError",
    "ChainMismatchError",
    "ChainStateError",
    "ConfigError",
    "ContextLimitError",
    "ContextTooLongError",
    "ContractRevertError",
    "DecryptionError",
    "DelegateNotAuthorizedError",
    "DemoCheckError",
    "DepositOutOfRangeError",
    "DevnetError",
    "DurationError",
    "FabstirError",
    "FloatAmountError",
    "FrameDecryptionError",
    "FrameTooLargeError",
    "HandshakeError",
    "HostError",
    "HostFailedError",
    "HostKeyMismatchError",
    "HostNotActiveError",
    "HostOverclaimError",
    "HostOverreportError",
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
    "MessageIndexError",
    "ModelNotApprovedError",
    "NoHostAvailableError",
    "NondeterministicSignerError",
    "NotFoundError",
    "OutOfGasError",
    "P2PError",
    "P2PFrameTooLargeError",
    "P2PNodeClosedError",
    "P2PProtocolError",
    "P2PRemoteError",
    "P2PTimeoutError",
    "P2PUnavailableError",
    "PayloadTooLargeError",
    "PeerUnreachableError",
    "PriceAboveMaximumError",
    "PriceBelowMinimumError",
    "ProofIntervalError",
    "ProofTimeoutWindowError",
    "ProposalStateError",
    "ProtocolError",
    "RegistryRollbackError",
    "ReplayedInitError",
    "RevisionConflictError",
    "RpcError",
    "RpcFailure",
    "RpcUnavailableError",
    "S5FormatError",
    "SessionClosedError",
    "SessionError",
    "SessionNotActiveError",
    "SessionNotFoundError",
    "SessionRefusedError",
    "SignerError",
    "SimulationUnsupportedError",
    "StorageError",
    "StorageUnavailableError",
    "StreamNotOpenError",
    "StreamTimeoutError",
    "TransactionDroppedError",
    "TransactionReplacedError",
    "TransactionTimeoutError",
    "UnsupportedContractsError",
    "ValidationError",
]

#: A token's ``(decimals, symbol)``: with it, amounts in messages read as the user typed them.
Unit = tuple[int, str]


def _amount(base_units: int, unit: Unit) -> str:
    from .chain.units import format_amount  # chain.units imports this module

    return format_amount(base_units, *unit)


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


class UnsupportedContractsError(ConfigError):
    """The configured addresses hold contracts this SDK does not speak: an older generation of
    the Fabstir contracts, another contract, nothing, or contracts wired to other addresses.

    ``problems`` lists each finding; ``generation`` names the contracts the SDK speaks.
    """

    def __init__(self, problems: list[str], *, generation: str) -> None:
        self.problems = list(problems)
        self.generation = generation
        super().__init__(
            f"the configured contracts are not the {generation} this SDK speaks: "
            + "; ".join(self.problems)
            + ". Check contract_addresses (or the deployment manifest)."
        )


class AnvilNotFoundError(ConfigError):
    """No anvil binary for the devnet; the message names the one command that installs it."""


class AuthError(FabstirError):
    """Authentication failed (for example, a malformed private key)."""


class AuthRequiredError(AuthError):
    """The operation needs a wallet: call ``await sdk.authenticate(private_key)`` first."""


class SignerError(AuthError):
    """The signer refused (its service answered an error, e.g. a transaction for another
    chain), or answered something that is not a signature by the wallet's key."""


class NondeterministicSignerError(SignerError):
    """The signer signed the same message twice and gave two signatures, so the storage
    seed (derived from that signature) would differ each time: storage is refused rather
    than silently opening a different, empty storage."""


class ValidationError(FabstirError, ValueError):
    """An argument was refused before anything was sent."""


class InvalidAmountError(ValidationError):
    """An amount is zero, negative, not a number, or finer than the token's decimals."""


class FloatAmountError(InvalidAmountError, TypeError):
    """Amounts must be ``str``, ``Decimal`` or ``int``: a ``float`` cannot hold money exactly."""


class InvalidAddressError(ValidationError):
    """Not a 20-byte hex address, or a mixed-case address with a bad EIP-55 checksum."""


class InvalidMultiaddrError(ValidationError):
    """Not a multiaddr the node can dial: unparsable, not TCP, or without ``/p2p/<peer id>``."""


class InvalidPeerIdError(ValidationError):
    """Not a base58 libp2p peer id (an identity or sha2-256 multihash of a public key)."""


class DepositOutOfRangeError(ValidationError):
    """The deposit is below the contract's minimum or above its maximum for that token."""

    def __init__(
        self, amount: int, minimum: int, maximum: int, token: str, *, unit: Unit | None = None
    ) -> None:
        if unit is None:
            text = f"deposit {amount} is outside [{minimum}, {maximum}] base units of {token}"
        else:
            text = (
                f"deposit {_amount(amount, unit)} is outside the marketplace's bounds: "
                f"{_amount(minimum, unit)} to {_amount(maximum, unit)}"
            )
        super().__init__(text)
        self.amount, self.minimum, self.maximum, self.token = amount, minimum, maximum, token


class ChainStateError(FabstirError):
    """The chain's current state refuses the operation: a balance or allowance is short, the
    host is not registered or asks another price, the session is settled. Checked before
    sending, so nothing was sent and no gas spent; unlike a :class:`ValidationError` the same
    arguments may succeed later (after a deposit, an approval, another host)."""


class PriceBelowMinimumError(ChainStateError):
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


class ModelNotApprovedError(ChainStateError):
    """The model is unknown to the ModelRegistry, deactivated, or not served by the host."""


class HostNotActiveError(ChainStateError):
    """The host is not registered, or is registered but inactive."""


class HostAlreadyRegisteredError(ChainStateError):
    """This address is already registered as a host: update it, or unregister first."""


class ModelNotSupportedError(ChainStateError):
    """The host does not serve that model (price it after adding it to the host's models)."""


class HostPriceOutOfRangeError(ChainStateError):
    """The host price is outside the registry's allowed range for the native or stable token."""


class DuplicateModelError(ValidationError):
    """The same model was listed twice for one host."""


class InsufficientBalanceError(ChainStateError):
    """The account holds less than the operation needs."""

    def __init__(
        self,
        needed: int,
        available: int,
        token: str,
        *,
        unit: Unit | None = None,
        holder: str = "the account",
    ) -> None:
        if unit is None:
            text = f"needs {needed} base units of {token}, {holder} holds {available}"
        else:
            text = f"needs {_amount(needed, unit)}, {holder} holds {_amount(available, unit)}"
        super().__init__(text)
        self.needed, self.available, self.token = needed, available, token


class NoEarningsError(InsufficientBalanceError):
    """Nothing to withdraw in that token: no host earnings, or no treasury fees."""

    def __init__(self, message: str) -> None:
        ChainStateError.__init__(self, message)
        self.needed, self.available, self.token = 1, 0, ""


class InsufficientAllowanceError(ChainStateError):
    """The ERC-20 allowance for the marketplace is below the deposit: approve first."""

    def __init__(
        self, needed: int, allowance: int, token: str, *, unit: Unit | None = None
    ) -> None:
        if unit is None:
            text = f"needs an allowance of {needed} base units of {token}, approved: {allowance}"
        else:
            text = (
                f"needs an allowance of {_amount(needed, unit)} for the marketplace, "
                f"approved: {_amount(allowance, unit)}"
            )
        super().__init__(text)
        self.needed, self.allowance, self.token = needed, allowance, token


class SessionNotActiveError(ChainStateError):
    """The session job is already completed or timed out."""


class DelegateNotAuthorizedError(ChainStateError):
    """The payer has not authorised this key (``authorize_delegate``) to open sessions it pays."""

    def __init__(self, payer: str, delegate: str) -> None:
        super().__init__(
            f"{delegate} is not authorised to open sessions paid by {payer}: the payer calls "
            f"PaymentManager.authorize_delegate({delegate!r})"
        )
        self.payer, self.delegate = payer, delegate


class ProposalStateError(ChainStateError):
    """A model proposal is not at the stage the call needs: the vote is over (or not yet),
    the proposal was executed (or not yet), a re-proposal is cooling down, no votes to take
    back. The message says when the stage changes, where it will."""


class InvalidStorageKeyError(ValidationError):
    """A storage key, path or conversation id is empty, too long, or not one path segment."""


class PayloadTooLargeError(ValidationError):
    """The data is larger than the store, the format or the portal accepts."""

    def __init__(self, size: int, limit: int, what: str = "payload") -> None:
        super().__init__(f"{what} of {size} bytes is over the limit of {limit} bytes")
        self.size, self.limit = size, limit


class PriceAboveMaximumError(ChainStateError):
    """The host's on-chain price for the model is above the caller's ``max_price_per_token``."""

    def __init__(self, price: int, maximum: int) -> None:
        super().__init__(f"the host charges {price} per 1000 tokens, above your maximum {maximum}")
        self.price, self.maximum = price, maximum


class NotFoundError(FabstirError, LookupError):
    """The thing asked for does not exist."""


class SessionNotFoundError(NotFoundError):
    """No session job has this id."""


class NoHostAvailableError(NotFoundError):
    """No registered, healthy host matches the filters (``reasons`` counts why each was dropped)."""

    def __init__(self, message: str, reasons: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class P2PError(FabstirError):
    """The libp2p node or a peer failed."""


class P2PUnavailableError(P2PError):
    """py-libp2p is not installed: ``pip install 'fabstir-sdk[p2p]'`` (the ``p2p`` extra)."""


class P2PNodeClosedError(P2PError):
    """The P2P node is not running: never created, stopped, or crashed."""


class PeerUnreachableError(P2PError):
    """No connection to the peer could be made (dial refused, timed out or retries used up)."""


class P2PTimeoutError(P2PError, TimeoutError):
    """A peer did not answer before the deadline."""


class P2PProtocolError(P2PError):
    """A peer broke the wire protocol: garbage, an oversize frame, or a stream cut mid-message."""


class P2PFrameTooLargeError(P2PProtocolError):
    """A peer's frame declared a body larger than the cap; it was not read."""

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {cap}-byte cap")
        self.size, self.cap = size, cap


class P2PRemoteError(P2PError):
    """The peer understood the request and refused it (``code`` is its error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"peer refused the request ({code}): {message}")
        self.code = code


class StorageError(FabstirError):
    """Storing or loading S5 data failed."""


class IntegrityError(StorageError):
    """Bytes do not match the hash (or signature) that names them; they were not used."""


class RegistryRollbackError(IntegrityError):
    """The portal served an older registry revision than this user has already seen (a
    rollback: validly signed, but stale); it was not used."""


class DecryptionError(StorageError):
    """Encrypted data does not open with this key: another user's data, or a wrong key."""


class StorageUnavailableError(StorageError):
    """The S5 portal is down, refused the account or timed out, after bounded retries."""


class RevisionConflictError(StorageError):
    """A registry entry with this revision or a newer one is already stored."""


class S5FormatError(StorageError, ValueError):
    """Bytes are not a valid instance of the S5 format they should be (CBOR, entry, ...)."""


class InvalidCIDError(S5FormatError):
    """Not a valid S5 blob identifier (BlobId or legacy raw CID) in any multibase form."""


class ProtocolError(FabstirError):
    """A frame broke the host wire protocol; ``code`` is the error code sent on the wire."""

    code = "INVALID_MESSAGE"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class FrameTooLargeError(ProtocolError):
    """A frame is larger than the protocol's size cap; it was not parsed."""

    code = "FRAME_TOO_LARGE"


class FrameDecryptionError(ProtocolError):
    """An encrypted frame does not open: tampered, another key, or the wrong AAD (index)."""

    code = "DECRYPTION_FAILED"


class MessageIndexError(ProtocolError):
    """An encrypted message's index is reused or out of order (a replay)."""

    code = "INVALID_MESSAGE_INDEX"


class HandshakeError(ProtocolError):
    """A session init is malformed: bad keys, nonce or signature."""

    code = "INVALID_SESSION_INIT"


class ContextTooLongError(ProtocolError):
    """Host side: the prompt and its context do not fit the model's window (the client reads
    it as :class:`ContextLimitError`)."""

    code = "TOKEN_LIMIT_EXCEEDED"

    def __init__(self, prompt_tokens: int, window: int) -> None:
        super().__init__(
            f"prompt and context take {prompt_tokens} tokens, the context window is {window}"
        )
        self.details = {"prompt_tokens": prompt_tokens, "context_window_size": window}


class ReplayedInitError(HandshakeError):
    """Host side: a session init (or its session key) this host accepted before for the job."""

    code = "REPLAYED_INIT"


class SessionRefusedError(ProtocolError):
    """Host side: the chain says no to a session init (unknown or settled job, another host,
    model or client); ``code`` is the wire error code sent back."""


class BackendError(FabstirError):
    """Host side: the inference backend failed (unreachable, refused the request, broke the
    stream)."""


class SessionError(FabstirError):
    """A session with a host failed after it was paid for (the deposit is still escrowed)."""


class HostFailedError(SessionError):
    """This host failed (unreachable, stalled, cannot open our key): another host may serve.

    Failover (``create_session(failover=True)``), ``fabstir chat`` and the chat API move on
    from exactly these; any other error is about the request, not the host.
    """


class HostUnreachableError(HostFailedError):
    """The host's WebSocket could not be opened, or it closed in the middle of a session."""


class HostKeyMismatchError(HostFailedError):
    """The host could not open our session init: its key is not its registry ``publicKey``."""


class StreamTimeoutError(HostFailedError, TimeoutError):
    """A deadline passed: connect, first token, idle between tokens, or the whole answer."""


class SessionClosedError(SessionError):
    """The session was ended or completed; open a new one (or resume it) to go on."""


class StreamNotOpenError(SessionError):
    """A ``PromptStream`` was iterated outside ``async with session.stream(...)``."""


class HostOverclaimError(SessionError, UserWarning):
    """The host's proofs claim more tokens than it reported to us; issued as a warning by
    ``Session.complete()``, which settles at once to stop further claims."""


class HostOverreportError(HostOverclaimError):
    """An answer's ``stream_end`` claims more tokens than the text we received can hold (one
    a UTF-8 byte, plus ``TOKENS_WITHOUT_TEXT``); issued as a warning when the answer ends.
    The SDK counts the bound instead, so a later proof of the claim is an overclaim."""


class HostError(FabstirError):
    """The host answered with an error frame (either wire shape); ``code`` says why."""

    def __init__(
        self, code: str, message: str, *, session_id: str | None = None, id: str | None = None
    ) -> None:
        super().__init__(f"host error {code}: {message}")
        self.code, self.host_message, self.session_id, self.id = code, message, session_id, id


class ContextLimitError(HostError):
    """The prompt and its context do not fit the model's context window (TOKEN_LIMIT_EXCEEDED)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        prompt_tokens: int | None = None,
        context_window_size: int | None = None,
        session_id: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(code, message, session_id=session_id, id=id)
        self.prompt_tokens, self.context_window_size = prompt_tokens, context_window_size


class DevnetError(FabstirError):
    """The local devnet (anvil plus our contracts) failed to start, deploy or answer."""


class DemoCheckError(FabstirError):
    """``fabstir demo``: something it read back is not what it should be."""


class ChainError(FabstirError):
    """Talking to the chain failed."""


class RpcError(ChainError):
    """The RPC endpoint is unreachable or answered with an error."""


class RpcUnavailableError(RpcError):
    """The RPC endpoint stayed unreachable (or kept failing) for the whole retry window."""


class RpcFailure(RpcError):
    """The node answered one call with a JSON-RPC error (``code``, ``data`` kept)."""

    def __init__(self, what: str, error: dict[str, Any]) -> None:
        self.what = what
        code = error.get("code")
        self.code: int | None = (
            code if isinstance(code, int) and not isinstance(code, bool) else None
        )
        self.data: Any = error.get("data")
        self.node_message = str(error.get("message", "unknown error"))[:2000]
        super().__init__(f"{what}: {self.node_message}")

    @property
    def revert_data(self) -> bytes | None:
        """The revert payload when the node reports a contract revert, else None."""
        data = self.data
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            try:
                return bytes.fromhex(data[2:])
            except ValueError:
                return None
        if "revert" in self.node_message:
            return b""
        return None


class SimulationUnsupportedError(RpcError):
    """The RPC node has no ``eth_simulateV1``, which gas estimates of a whole session need
    (the completion of a job that does not exist yet): the token cost is still known."""

    def __init__(self, url: str, node_message: str) -> None:
        super().__init__(
            f"the RPC node at {url} does not support eth_simulateV1 ({node_message}): the gas "
            "of a session cannot be estimated there; estimate_session_cost(..., gas=False) "
            "gives the token cost alone"
        )
        self.url = url


class TransactionTimeoutError(ChainError):
    """No receipt arrived before the deadline; the transaction may still be mined later."""

    def __init__(self, tx_hash: str, timeout: float) -> None:
        super().__init__(f"no receipt for {tx_hash} after {timeout:g} s")
        self.tx_hash, self.timeout = tx_hash, timeout


class TransactionDroppedError(ChainError):
    """The node dropped the transaction from its mempool before mining it; nothing happened
    on chain and the nonce is free again (send the operation again if you still want it)."""

    def __init__(self, tx_hash: str, nonce: int) -> None:
        super().__init__(f"transaction {tx_hash} (nonce {nonce}) was dropped from the mempool")
        self.tx_hash, self.nonce = tx_hash, nonce


class TransactionReplacedError(ChainError):
    """Another transaction with the same nonce (sent with the same key elsewhere) was mined
    instead of ours: ours will never be."""

    def __init__(self, tx_hash: str, nonce: int) -> None:
        super().__init__(f"transaction {tx_hash} was replaced by another with nonce {nonce}")
        self.tx_hash, self.nonce = tx_hash, nonce


class OutOfGasError(ChainError):
    """A mined transaction ran out of gas: the chain's state changed between the gas estimate
    and the mining (another transaction made the call dearer). Nothing else happened on chain;
    the SDK sends such a transaction again with a new estimate before raising this."""

    def __init__(self, tx_hash: str, *, gas_limit: int, needed: int) -> None:
        super().__init__(
            f"transaction {tx_hash} ran out of gas: it had {gas_limit}, it needs {needed} "
            "in the state it was mined in"
        )
        self.tx_hash, self.gas_limit, self.needed = tx_hash, gas_limit, needed


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
