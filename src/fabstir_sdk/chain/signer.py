"""Signers: what the SDK needs from a wallet, so the key may live elsewhere.

The SDK never needs the private key itself, only four things a wallet can do. Anything with
them is a :class:`Signer`: an eth-account ``LocalAccount`` (wrapped by :func:`as_signer`), a
JSON-RPC signer service (:class:`JsonRpcSigner`: a node with unlocked accounts, web3signer,
a wallet bridge), or your own object (a KMS, a hardware wallet)::

    class Signer(Protocol):
        address: str                                      # checksummed
        async def sign_transaction(self, tx: dict) -> bytes   # the raw signed transaction
        async def sign_message(self, message: bytes) -> bytes # EIP-191 personal_sign, 65 bytes
        async def sign_typed_data(self, data: dict) -> bytes  # EIP-712 (eth_signTypedData_v4)

The methods are coroutines, because a remote signer is a network call away. The SDK signs
with nothing else: the encrypted session init, which a key in the process signs over a bare
digest, is signed by any other signer as an EIP-191 message (docs/signers.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import coincurve
import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from ..errors import AuthError, RpcError, RpcFailure, SignerError
from .addresses import checksum_address
from .rpc import JsonRpcClient
from .transport import RpcTransport

__all__ = ["JsonRpcSigner", "LocalSigner", "Signer", "as_signer"]


@runtime_checkable
class Signer(Protocol):
    """What the SDK asks of a wallet (see the module docstring)."""

    @property
    def address(self) -> str: ...

    async def sign_transaction(self, tx: dict[str, Any]) -> bytes: ...

    async def sign_message(self, message: bytes) -> bytes: ...

    async def sign_typed_data(self, data: dict[str, Any]) -> bytes: ...


class LocalSigner:
    """A :class:`Signer` over an eth-account ``LocalAccount`` (the key is in this process)."""

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self._key = coincurve.PrivateKey(bytes(account.key))
        self.address: str = account.address

    def __repr__(self) -> str:
        return f"LocalSigner(address={self.address!r})"

    @property
    def account(self) -> LocalAccount:
        return self._account

    async def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        if _plain_fee_market(tx):
            return _sign_fee_market(self._key, tx)
        return bytes(self._account.sign_transaction(tx).raw_transaction)

    async def sign_message(self, message: bytes) -> bytes:
        return bytes(self._account.sign_message(encode_defunct(primitive=message)).signature)

    async def sign_typed_data(self, data: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_message(encode_typed_data(full_message=data)).signature)


_FEE_MARKET_INTS = ("chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas", "value")


def _plain_fee_market(tx: dict[str, Any]) -> bool:
    """Whether ``tx`` is an EIP-1559 transaction as TxSender builds it: int fields, a hex
    ``to`` and ``data``, no access list. Anything else is left to eth-account."""
    to, data = tx.get("to"), tx.get("data")
    return (
        tx.keys() == {*_FEE_MARKET_INTS, "to", "data", "type"}
        and tx["type"] == 2
        and all(type(tx[k]) is int and tx[k] >= 0 for k in _FEE_MARKET_INTS)
        and isinstance(to, str)
        and len(to) == 42
        and to.startswith("0x")
        and isinstance(data, str)
        and data.startswith("0x")
    )


def _sign_fee_market(key: coincurve.PrivateKey, tx: dict[str, Any]) -> bytes:
    """The EIP-1559 envelope signed with coincurve: the same bytes as eth-account's
    ``sign_transaction`` (RFC 6979 signatures are deterministic) at a tenth of its CPU time,
    which its typed-transaction validation spends on every send."""
    fields = [
        tx["chainId"],
        tx["nonce"],
        tx["maxPriorityFeePerGas"],
        tx["maxFeePerGas"],
        tx["gas"],
        bytes.fromhex(tx["to"][2:]),
        tx["value"],
        bytes.fromhex(tx["data"][2:]),
        [],  # access list
    ]
    unsigned: bytes = rlp.encode(fields)
    signature = key.sign_recoverable(keccak(b"\x02" + unsigned), hasher=None)
    r, s, y_parity = signature[:32], signature[32:64], signature[64]
    signed: bytes = rlp.encode([*fields, y_parity, int.from_bytes(r), int.from_bytes(s)])
    return b"\x02" + signed


def _hexify(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list):
        return [_hexify(v) for v in value]
    if isinstance(value, dict):
        return {k: _hexify(v) for k, v in value.items()}
    return value


def _signature(result: object, method: str) -> bytes:
    if not isinstance(result, str) or not result.startswith("0x"):
        raise SignerError(f"the signer's {method} answer is not hex")
    raw = bytes.fromhex(result[2:])
    if len(raw) != 65:
        raise SignerError(f"the signer's {method} answer is {len(raw)} bytes, not 65")
    v = raw[64]
    # Some services answer v = 27/28 (Ethereum style), others 0/1: keep 27/28 like eth-account.
    return raw[:64] + bytes([v + 27 if v < 27 else v])


class JsonRpcSigner:
    """A :class:`Signer` whose key is held by a JSON-RPC signer service.

    It speaks the node methods: ``eth_signTransaction``, ``personal_sign`` (or ``eth_sign``,
    ``message_method="eth_sign"``) and ``eth_signTypedData_v4``. The key never enters this
    process; the service must have ``address`` unlocked. Every signature it returns must
    recover to ``address`` (a service holding another key is refused, :class:`SignerError`).
    """

    def __init__(
        self,
        url: str,
        address: str,
        *,
        message_method: str = "personal_sign",
        timeout: float = 30.0,
        transport: RpcTransport | None = None,
    ) -> None:
        if message_method not in ("personal_sign", "eth_sign"):
            raise AuthError("message_method is personal_sign or eth_sign")
        self.address: str = checksum_address(address, what="signer address")
        if transport is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SignerError("a signer service URL is http:// or https:// and a host")
        self._message_method = message_method
        self._rpc = JsonRpcClient(url, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"JsonRpcSigner(address={self.address!r})"

    async def _call(self, method: str, *params: Any) -> Any:
        try:
            return await self._rpc.call(method, *params)
        except RpcFailure as exc:
            raise SignerError(
                f"the signer refused {method} for {self.address}: {exc.node_message}"
            ) from None
        except RpcError as exc:  # unreachable, or not a JSON-RPC answer
            raise SignerError(f"the signer service: {exc}") from None

    def _check(self, recover: Callable[[], str], what: str) -> None:
        """The signer of the service's answer must be :attr:`address`."""
        try:
            signer = recover()
        except Exception:  # the answer is untrusted: any decoding failure is a bad signature
            raise SignerError(f"the signer service's {what} signature is not valid") from None
        if signer != self.address:
            raise SignerError(
                f"the signer service signed the {what} as {signer}, not {self.address}: "
                "it holds another key"
            )

    async def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        request = {"from": self.address, **_hexify(tx)}
        if "gas" in request:
            request.setdefault("gasLimit", request["gas"])
        result = await self._call("eth_signTransaction", request)
        if not isinstance(result, str) or not result.startswith("0x"):
            raise SignerError("the signer's eth_signTransaction answer is not hex")
        raw = bytes.fromhex(result[2:])
        self._check(lambda: Account.recover_transaction(raw), "transaction")
        return raw

    async def sign_message(self, message: bytes) -> bytes:
        data = "0x" + message.hex()
        if self._message_method == "personal_sign":
            result = await self._call("personal_sign", data, self.address)
        else:
            result = await self._call("eth_sign", self.address, data)
        signature = _signature(result, self._message_method)
        signed = encode_defunct(primitive=message)
        self._check(lambda: Account.recover_message(signed, signature=signature), "message")
        return signature

    async def sign_typed_data(self, data: dict[str, Any]) -> bytes:
        result = await self._call("eth_signTypedData_v4", self.address, json.dumps(data))
        signature = _signature(result, "eth_signTypedData_v4")
        self._check(
            lambda: Account.recover_message(
                encode_typed_data(full_message=data), signature=signature
            ),
            "typed data",
        )
        return signature

    async def aclose(self) -> None:
        await self._rpc.aclose()

    async def __aenter__(self) -> JsonRpcSigner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def as_signer(wallet: object) -> Signer:
    """``wallet`` as a :class:`Signer`: a ``LocalAccount`` is wrapped, a signer is kept."""
    if isinstance(wallet, LocalAccount):
        return LocalSigner(wallet)
    if isinstance(wallet, Signer) and not isinstance(wallet, type):
        checksum_address(wallet.address, what="signer address")
        return wallet
    raise AuthError(
        "a wallet is a private key, an eth-account LocalAccount, or a Signer "
        "(address, sign_transaction, sign_message, sign_typed_data)"
    )


# Exported from fabstir_sdk (lazily): they read as fabstir_sdk.X in reprs and help(), as the
# managers do, however they are reached.
for _cls in (JsonRpcSigner, Signer):
    _cls.__module__ = "fabstir_sdk"
del _cls
