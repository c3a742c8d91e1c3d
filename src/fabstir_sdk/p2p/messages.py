"""The ``/fabstir/host/1.0.0`` messages and the host's side of the protocol (sans-I/O).

A client opens one stream to a host and sends requests one at a time; each request gets
exactly one reply. Every message is a JSON object with a ``type``:

=================  =====================================================================
request            reply
=================  =====================================================================
``ping``           ``pong``: the nonce signed by the host's Ethereum key (liveness proof)
``capabilities``   ``capabilities``: address, API URL, chain, protocols, features
``models``         ``models``: the model ids (0x bytes32) the host serves
``prices``         ``prices``: per model, base units per 1000 tokens, for one token
``load``           ``load``: active and maximum sessions, queue length
anything else      ``error`` with a ``code`` (``bad_request``, ``unknown_type``, ...)
=================  =====================================================================

Amounts travel as decimal strings so that JavaScript peers do not round them. The signed
liveness answer binds the host's registry address to the libp2p peer id that answered (Noise
authenticated it), the chain and a fresh client nonce: a DHT record can then be checked
against the chain, and a replayed answer is refused.
"""

from __future__ import annotations

import inspect
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from ..errors import P2PProtocolError, P2PRemoteError

__all__ = [
    "HOST_PROTOCOL",
    "Capabilities",
    "ErrorReply",
    "HostLoad",
    "HostProtocolServer",
    "Models",
    "Pong",
    "Prices",
    "liveness_text",
    "new_nonce",
    "parse_reply",
    "verify_pong",
]

HOST_PROTOCOL = "/fabstir/host/1.0.0"
#: How far a pong's timestamp may be from the client's clock, in seconds.
MAX_CLOCK_SKEW = 300
_HEX32 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BYTES32 = re.compile(r"0x[0-9a-f]{64}")


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Pong(_Message):
    type: Literal["pong"] = "pong"
    nonce: str = Field(pattern=_HEX32.pattern)
    host: str = Field(pattern=_ADDRESS.pattern)
    peer_id: str
    chain_id: int
    timestamp: int
    signature: str = Field(pattern=r"0x[0-9a-fA-F]{130}")


class Capabilities(_Message):
    type: Literal["capabilities"] = "capabilities"
    host: str = Field(pattern=_ADDRESS.pattern)
    api_url: str
    chain_id: int
    protocols: list[str]
    features: list[str]


class Models(_Message):
    type: Literal["models"] = "models"
    models: list[str]


class Prices(_Message):
    """Minimum price per model in ``token`` (None: the chain's native token)."""

    type: Literal["prices"] = "prices"
    token: str | None = Field(default=None, pattern=_ADDRESS.pattern)
    prices: dict[str, int]


class HostLoad(_Message):
    type: Literal["load"] = "load"
    active_sessions: int = Field(ge=0)
    max_sessions: int = Field(ge=0)
    queued: int = Field(default=0, ge=0)


class ErrorReply(_Message):
    type: Literal["error"] = "error"
    code: str
    message: str = ""


_REPLIES: dict[str, type[_Message]] = {
    "pong": Pong,
    "capabilities": Capabilities,
    "models": Models,
    "prices": Prices,
    "load": HostLoad,
}


def new_nonce() -> str:
    """32 random bytes as lowercase hex: the challenge of one ``ping``."""
    return secrets.token_hex(32)


def liveness_text(*, chain_id: int, host: str, peer_id: str, nonce: str, timestamp: int) -> str:
    """The text a host signs (EIP-191 ``personal_sign``) to answer a ``ping``."""
    return (
        "fabstir host liveness v1\n"
        f"chain:{chain_id}\nhost:{host.lower()}\npeer:{peer_id}\nnonce:{nonce}\ntime:{timestamp}"
    )


def parse_reply(reply: dict[str, Any], expected: str) -> Any:
    """The typed reply; an ``error`` reply raises :class:`P2PRemoteError`."""
    kind = reply.get("type")
    if kind == "error":
        error = ErrorReply.model_validate(reply) if isinstance(reply.get("code"), str) else None
        code = error.code if error else "error"
        raise P2PRemoteError(code, error.message if error else str(reply.get("message", "")))
    if kind != expected or expected not in _REPLIES:
        raise P2PProtocolError(f"expected a {expected!r} reply, got {kind!r}")
    try:
        return _REPLIES[expected].model_validate(_wire_prices(reply))
    except PydanticValidationError as exc:
        raise P2PProtocolError(
            f"malformed {expected!r} reply: {exc.error_count()} bad fields"
        ) from None


def _wire_prices(reply: dict[str, Any]) -> dict[str, Any]:
    """Prices travel as decimal strings; anything else in that field is refused."""
    prices = reply.get("prices")
    if reply.get("type") != "prices" or not isinstance(prices, dict):
        return reply
    parsed: dict[str, int] = {}
    for model, value in prices.items():
        if not _BYTES32.fullmatch(str(model)) or not isinstance(value, str) or not value.isdigit():
            raise P2PProtocolError("prices must map 0x model ids to decimal strings")
        parsed[model] = int(value)
    return {**reply, "prices": parsed}


def verify_pong(
    reply: dict[str, Any],
    *,
    nonce: str,
    peer_id: str,
    chain_id: int,
    host: str | None = None,
    now: float | None = None,
) -> Pong:
    """Check a ``pong``: our nonce, the peer we asked, our chain, a fresh time, a valid
    signature by ``host`` (when given; else by the address the pong names)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    pong: Pong = parse_reply(reply, "pong")
    if pong.nonce != nonce:
        raise P2PProtocolError("pong answers another nonce")
    if pong.peer_id != peer_id:
        raise P2PProtocolError(f"pong names peer {pong.peer_id}, the stream is with {peer_id}")
    if pong.chain_id != chain_id:
        raise P2PProtocolError(f"pong is for chain {pong.chain_id}, not {chain_id}")
    clock = time.time() if now is None else now
    if abs(pong.timestamp - clock) > MAX_CLOCK_SKEW:
        raise P2PProtocolError("pong timestamp is too far from our clock")
    text = liveness_text(
        chain_id=chain_id, host=pong.host, peer_id=peer_id, nonce=nonce, timestamp=pong.timestamp
    )
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=pong.signature)
    except Exception:
        raise P2PProtocolError("pong signature does not recover") from None
    if signer.lower() != pong.host.lower():
        raise P2PProtocolError("pong is not signed by the host it names")
    if host is not None and signer.lower() != host.lower():
        raise P2PProtocolError(f"pong is signed by {signer}, expected {host}")
    return pong


LoadSource = Callable[[], HostLoad | Awaitable[HostLoad]]


class HostProtocolServer:
    """What a host answers on ``/fabstir/host/1.0.0``; mount it with ``node.serve(server)``.

    ``models``, ``prices`` (token address or None for native -> model id -> price) and
    ``features`` are plain attributes: update them when the host's registry entry changes.
    ``load`` is called on every ``load`` request. ``account`` signs liveness answers: an
    eth-account ``LocalAccount`` or any :class:`~fabstir_sdk.chain.signer.Signer` (a signer
    service: the key need not be in this process).
    """

    def __init__(
        self,
        account: Any,
        *,
        chain_id: int,
        api_url: str,
        models: list[str],
        prices: Mapping[str | None, Mapping[str, int]],
        load: LoadSource,
        features: list[str] | None = None,
    ) -> None:
        from ..chain.signer import as_signer

        self._signer = as_signer(account)
        self.address: str = self._signer.address
        self.chain_id = chain_id
        self.api_url = api_url
        self.models = list(models)
        self.prices = {k: dict(v) for k, v in prices.items()}
        self.features = list(features or [])
        self._load = load

    def __repr__(self) -> str:
        return f"HostProtocolServer(address={self.address!r}, chain_id={self.chain_id})"

    async def handle(
        self, request: dict[str, Any], *, remote_peer: str, local_peer: str
    ) -> dict[str, Any]:
        """The reply to one decoded request; never raises for a bad request."""
        kind = request.get("type")
        if kind == "ping":
            nonce = request.get("nonce")
            if not isinstance(nonce, str) or not _HEX32.fullmatch(nonce):
                return _error("bad_request", "ping needs a 'nonce' of 64 lowercase hex digits")
            return await self._pong(nonce, local_peer)
        if kind == "capabilities":
            return Capabilities(
                host=self.address,
                api_url=self.api_url,
                chain_id=self.chain_id,
                protocols=[HOST_PROTOCOL],
                features=self.features,
            ).model_dump()
        if kind == "models":
            return Models(models=self.models).model_dump()
        if kind == "prices":
            token = request.get("token")
            if token is not None and not (isinstance(token, str) and _ADDRESS.fullmatch(token)):
                return _error("bad_request", "'token' must be an address or null")
            table = _lookup_token(self.prices, token)
            return {
                "type": "prices",
                "token": token,
                "prices": {m: str(p) for m, p in sorted(table.items())},
            }
        if kind == "load":
            load = self._load()
            if inspect.isawaitable(load):
                load = await load
            return load.model_dump()
        return _error("unknown_type", f"unknown request type {str(kind)[:64]!r}")

    async def _pong(self, nonce: str, local_peer: str) -> dict[str, Any]:
        now = int(time.time())
        text = liveness_text(
            chain_id=self.chain_id,
            host=self.address,
            peer_id=local_peer,
            nonce=nonce,
            timestamp=now,
        )
        signature = await self._signer.sign_message(text.encode())
        return Pong(
            nonce=nonce,
            host=self.address,
            peer_id=local_peer,
            chain_id=self.chain_id,
            timestamp=now,
            signature="0x" + bytes(signature).hex(),
        ).model_dump()


def _lookup_token(
    prices: Mapping[str | None, Mapping[str, int]], token: str | None
) -> Mapping[str, int]:
    if token is None:
        return prices.get(None, {})
    for key, table in prices.items():
        if key is not None and key.lower() == token.lower():
            return table
    return {}


def _error(code: str, message: str) -> dict[str, Any]:
    return ErrorReply(code=code, message=message).model_dump()
