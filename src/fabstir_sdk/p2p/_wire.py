"""Framing of ``/fabstir/host/1.0.0``: uvarint length prefix + one JSON object (sans-I/O).

This is the framing of js-libp2p's ``lpStream`` and py-libp2p's ``RequestResponse``, so any
libp2p implementation can speak the protocol. The declared length is checked against the cap
*before* the body is read, so an oversize frame costs the reader nothing.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import P2PFrameTooLargeError, P2PProtocolError, ValidationError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameDecoder",
    "P2PFrameTooLargeError",
    "decode_message",
    "encode_frame",
    "encode_message",
]

#: Largest JSON body accepted or sent, in bytes (a price list of ~600 models fits).
DEFAULT_MAX_FRAME = 64 * 1024
_MAX_VARINT_BYTES = 10


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(body: bytes, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """``body`` with its uvarint length prefix; a body over the cap is refused here."""
    if len(body) > max_frame:
        raise ValidationError(f"message of {len(body)} bytes exceeds the {max_frame}-byte cap")
    return _uvarint(len(body)) + body


class FrameDecoder:
    """Feed bytes as they arrive; complete bodies come out in order.

    Raises :class:`P2PFrameTooLargeError` as soon as a header declares too much, and
    :class:`P2PProtocolError` for a varint longer than 10 bytes or not minimally encoded.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # body length once the header is parsed

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._need is None and not self._parse_header():
                return frames
            assert self._need is not None
            if len(self._buffer) < self._need:
                return frames
            frames.append(bytes(self._buffer[: self._need]))
            del self._buffer[: self._need]
            self._need = None

    def _parse_header(self) -> bool:
        value = shift = 0
        for i, byte in enumerate(self._buffer[:_MAX_VARINT_BYTES]):
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte & 0x80:
                continue
            if byte == 0 and i > 0:
                raise P2PProtocolError("frame length is not minimally encoded")
            if value > self.max_frame:
                raise P2PFrameTooLargeError(value, self.max_frame)
            del self._buffer[: i + 1]
            self._need = value
            return True
        if len(self._buffer) >= _MAX_VARINT_BYTES:
            raise P2PProtocolError("frame length varint is longer than 10 bytes")
        return False


def encode_message(message: dict[str, Any], *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """A message as one frame: compact UTF-8 JSON of an object with a string ``type``.

    A message that cannot be sent (not such a dict, not JSON, too large) is a
    :class:`ValidationError`: it is the sender's mistake, found before any byte is written.
    """
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValidationError("a message must be a dict with a string 'type'")
    try:
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"message is not JSON-serialisable: {exc}") from None
    return encode_frame(body, max_frame=max_frame)


def decode_message(body: bytes) -> dict[str, Any]:
    """The JSON object in a frame body; anything else is a :class:`P2PProtocolError`."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise P2PProtocolError("frame body is not UTF-8 JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise P2PProtocolError("frame body is not a JSON object with a string 'type'")
    return message
