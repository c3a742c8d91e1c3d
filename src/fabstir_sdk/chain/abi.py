"""ABI encoding and decoding for our contracts, without I/O (sans-I/O, like a wire codec).

A :class:`Contract` turns ``("sessionJobs", 7)`` into call data and the node's answer back
into Python values, and decodes the events in a receipt. The transport lives in
:mod:`fabstir_sdk.chain.client`; keeping the two apart lets one JSON-RPC batch carry many
reads and lets tests check the bytes without a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ..errors import RpcError
from .addresses import eip55
from .artifacts import load_abi

__all__ = ["Call", "Contract", "canonical_type", "encode_constructor"]


def canonical_type(item: dict[str, Any]) -> str:
    """The ABI type string of one input/output, with tuples spelled out."""
    kind: str = item["type"]
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in item["components"])
        return f"({inner}){kind[5:]}"
    return kind


def _normalize(kind: str, value: Any) -> Any:
    """Values as users expect them: checksummed addresses, 0x-hex bytes32 stays bytes."""
    if kind == "address":
        return eip55(value)
    if kind.endswith("]") and isinstance(value, list | tuple):
        inner = kind[: kind.rindex("[")]
        return [_normalize(inner, v) for v in value]
    return value


def _encodable(kind: str, value: Any) -> Any:
    """Accept 0x-hex strings where the ABI wants bytes (model ids, proof hashes)."""
    if kind.endswith("]") and isinstance(value, list | tuple):
        inner = kind[: kind.rindex("[")]
        return [_encodable(inner, v) for v in value]
    if kind.startswith("bytes") and isinstance(value, str) and value.startswith("0x"):
        return bytes.fromhex(value[2:])
    return value


#: Encoded calls a :class:`Contract` keeps for reuse (all dropped when full).
_CALLS_KEPT = 256

#: What malformed data makes eth-abi and eth-utils raise (UnicodeDecodeError is a ValueError).
_MALFORMED = (DecodingError, ValueError, TypeError, AttributeError, KeyError, OverflowError)


@dataclass(frozen=True)
class Call:
    """One encoded contract call: where it goes, its data, and how to read its answer."""

    contract: str
    fn: str
    to: str
    data: bytes
    output_types: tuple[str, ...]
    output_names: tuple[str, ...]
    #: ``fn(type,...)``, the canonical signature behind the selector
    signature: str = ""

    def decode(self, result: bytes) -> Any:
        """The return value: one value, or a tuple when the function returns several."""
        values = self._values(result)
        return values[0] if len(values) == 1 else values

    def decode_named(self, result: bytes) -> dict[str, Any]:
        """The return values by their ABI output names (for struct getters)."""
        return dict(zip(self.output_names, self._values(result), strict=True))

    def _values(self, result: bytes) -> tuple[Any, ...]:
        """Decoded and normalised; data that is not this function's answer is an RpcError."""
        try:
            values = decode(list(self.output_types), result)
            return tuple(_normalize(t, v) for t, v in zip(self.output_types, values, strict=True))
        except _MALFORMED as exc:
            raise RpcError(
                f"{self.contract}.{self.fn}: malformed return data ({len(result)} bytes): {exc}"
            ) from None


@dataclass(frozen=True)
class _Event:
    name: str
    topic: bytes
    indexed: tuple[tuple[str, str], ...]
    plain: tuple[tuple[str, str], ...]


@cache
def _function_table(name: str) -> dict[str, list[tuple[bytes, list[str], dict[str, Any]]]]:
    """Artifact ``name``'s functions by name: (selector, input types, ABI entry) per overload.

    Built once per artifact, not per :class:`Contract`: hashing every signature costs more
    than the calls a short-lived client makes (``authenticate`` probes seven contracts)."""
    table: dict[str, list[tuple[bytes, list[str], dict[str, Any]]]] = {}
    for item in load_abi(name):
        if item.get("type") != "function":
            continue
        types = [canonical_type(i) for i in item.get("inputs", [])]
        selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
        table.setdefault(item["name"], []).append((selector, types, item))
    return table


@cache
def _event_table(name: str) -> dict[str, _Event]:
    """Artifact ``name``'s events by name, built once per artifact."""
    events = {}
    for item in load_abi(name):
        if item.get("type") != "event":
            continue
        inputs = item.get("inputs", [])
        signature = f"{item['name']}({','.join(canonical_type(i) for i in inputs)})"
        events[item["name"]] = _Event(
            name=item["name"],
            topic=keccak(signature.encode()),
            indexed=tuple((i["name"], canonical_type(i)) for i in inputs if i["indexed"]),
            plain=tuple((i["name"], canonical_type(i)) for i in inputs if not i["indexed"]),
        )
    return events


class Contract:
    """The ABI of artifact ``name`` bound to ``address``."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = to_checksum_address(address)
        self._abi = load_abi(name)
        self._calls: dict[tuple[Any, ...], Call] = {}  # see call()

    def __repr__(self) -> str:
        return f"Contract({self.name!r}, {self.address!r})"

    @property
    def _functions(self) -> dict[str, list[tuple[bytes, list[str], dict[str, Any]]]]:
        return _function_table(self.name)

    @property
    def _events(self) -> dict[str, _Event]:
        return _event_table(self.name)

    def call(self, fn: str, *args: Any) -> Call:
        """Encode ``fn(*args)``; overloads are told apart by argument count.

        A call made again with the same arguments (a session's checks name the same host,
        model and token every time) is the :class:`Call` encoded the first time: it is
        immutable, and eth-abi's encoding costs tens of microseconds per call."""
        try:
            key = (fn, *[(type(a), a) for a in args])  # types too: True and 1 differ here
            known = self._calls.get(key)
        except TypeError:  # an unhashable argument (a list): encoded each time
            return self._encode(fn, args)
        if known is None:
            if len(self._calls) >= _CALLS_KEPT:
                self._calls.clear()
            known = self._calls[key] = self._encode(fn, args)
        return known

    def _encode(self, fn: str, args: tuple[Any, ...]) -> Call:
        candidates = [c for c in self._functions.get(fn, []) if len(c[1]) == len(args)]
        if len(candidates) != 1:
            raise AttributeError(f"{self.name} has no single function {fn} taking {len(args)} args")
        selector, types, item = candidates[0]
        outputs = item.get("outputs", [])
        return Call(
            contract=self.name,
            fn=fn,
            to=self.address,
            data=selector
            + encode(types, [_encodable(t, a) for t, a in zip(types, args, strict=True)]),
            output_types=tuple(canonical_type(o) for o in outputs),
            output_names=tuple(o.get("name", "") for o in outputs),
            signature=f"{fn}({','.join(types)})",
        )

    def event_topic(self, name: str) -> str:
        """topic0 of event ``name`` as 0x-hex, for ``eth_getLogs`` filters."""
        return "0x" + self._events[name].topic.hex()

    def events(self, receipt: dict[str, Any], name: str) -> list[dict[str, Any]]:
        """Arguments of every ``name`` event this contract emitted in a raw JSON receipt.

        A log that is not well-formed JSON-RPC (or whose data does not decode as the event)
        raises :class:`RpcError`: a receipt is the node's answer, and a broken one is its fault.
        """
        event = self._events[name]
        try:
            return [args for log in receipt.get("logs", []) if (args := self._event(event, log))]
        except _MALFORMED as exc:
            raise RpcError(f"{self.name}: malformed {name} log in a receipt: {exc!r}") from None

    def _event(self, event: _Event, log: dict[str, Any]) -> dict[str, Any] | None:
        topics = [_hex(t) for t in log.get("topics", [])]
        if not topics or topics[0] != event.topic:
            return None
        if eip55(_text(log["address"])) != self.address:
            return None
        args: dict[str, Any] = {}
        for (arg, kind), topic in zip(event.indexed, topics[1:], strict=True):
            args[arg] = _normalize(kind, decode([kind], topic)[0])
        values = decode([k for _, k in event.plain], _hex(log["data"]))
        for (arg, kind), value in zip(event.plain, values, strict=True):
            args[arg] = _normalize(kind, value)
        return args


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _hex(value: object) -> bytes:
    """0x-hex from a JSON answer as bytes; anything else is a TypeError or ValueError."""
    text = _text(value)
    if not text.startswith("0x"):
        raise ValueError(f"expected 0x-hex, got {text[:20]!r}")
    return bytes.fromhex(text[2:])


def encode_constructor(name: str, args: Sequence[Any]) -> bytes:
    """Deployment data for artifact ``name``: bytecode followed by the encoded arguments."""
    from .artifacts import load_artifact

    artifact = load_artifact(name)
    ctor = next((i for i in artifact["abi"] if i.get("type") == "constructor"), None)
    types = [canonical_type(i) for i in ctor.get("inputs", [])] if ctor else []
    if len(types) != len(args):
        raise ValueError(f"{name}'s constructor takes {len(types)} arguments, got {len(args)}")
    return bytes.fromhex(artifact["bytecode"].removeprefix("0x")) + encode(types, list(args))
