"""A client that speaks to a host the way upstream's sdk-core does, written for these tests
from upstream's documented and observed behaviour (docs, frames seen on the wire), with none
of our SDK's protocol code: if our client and host shared a mistake, this one would not.

What it reproduces:
- the E2EE key is not the wallet: it is derived from the storage seed phrase,
  ``sha256(phrase + "fabstir-encryption-key-from-s5-seed-v1")``;
- the session init: ephemeral secp256k1 key, ECDH with the host's static key (x coordinate),
  HKDF-SHA256 (32 zero bytes of salt, empty info), XChaCha20-Poly1305 with a 24-byte nonce
  and empty AAD; the signer signs ``sha256("E2EEv1|" eph "|" host "|" salt "|" nonce "|"
  info)`` (65 bytes, r|s|recid); the frame and payload field names and the inner JSON exactly
  as upstream sends them;
- a new init (new session key, index 0) before every prompt, on the same WebSocket;
- prompts as JSON ``{prompt, model, max_tokens, temperature, stream}`` sealed with AAD
  ``message_{n}``; answers as ``encrypted_chunk`` (AAD ``chunk_{i}``), ``encrypted_response``
  and ``stream_end``;
- the plaintext fallbacks: ``session_init`` with ``jobId`` and ``user_address``, ``prompt``
  frames carrying the whole request, and ``POST /v1/inference`` with
  ``{model, prompt, max_tokens, temperature, sessionId, jobId}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import coincurve
import websockets
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils import keccak, to_checksum_address
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

SEED_DOMAIN = "fabstir-encryption-key-from-s5-seed-v1"
ALG = "secp256k1-ecdh(ephemeral→static)+hkdf(sha256)+xchacha20-poly1305"


def key_from_seed(phrase: str) -> bytes:
    """The E2EE private key upstream derives from a storage seed phrase."""
    return hashlib.sha256((phrase + SEED_DOMAIN).encode()).digest()


def address_of(private_key: bytes) -> str:
    public = coincurve.PrivateKey(private_key).public_key.format(compressed=False)[1:]
    return to_checksum_address(keccak(public)[-20:])


def _seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def _open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)


def sealed_init_payload(
    host_public_key: bytes, signer: bytes, inner: dict[str, Any]
) -> dict[str, Any]:
    """The ``payload`` of ``encrypted_session_init`` for ``inner`` (upstream's field names)."""
    ephemeral = coincurve.PrivateKey()
    eph_pub = ephemeral.public_key.format(compressed=True)
    host = coincurve.PublicKey(host_public_key).format(compressed=True)
    shared_x = coincurve.PublicKey(host).multiply(ephemeral.secret).format(compressed=True)[1:]
    salt, info, aad = bytes(32), b"", b""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(shared_x)
    nonce = os.urandom(24)
    ciphertext = _seal(key, nonce, json.dumps(inner).encode(), aad)
    digest = hashlib.sha256(
        b"E2EEv1|" + eph_pub + b"|" + host + b"|" + salt + b"|" + nonce + b"|" + info
    ).digest()
    signature = coincurve.PrivateKey(signer).sign_recoverable(digest, hasher=None)
    return {
        "ephPubHex": eph_pub.hex(),
        "saltHex": salt.hex(),
        "nonceHex": nonce.hex(),
        "ciphertextHex": ciphertext.hex(),
        "signatureHex": signature.hex(),
        "recid": signature[64],
        "alg": ALG,
        "info": info.hex(),
        "aadHex": aad.hex(),
    }


class HostRefused(Exception):
    """The host answered an ``error`` frame (upstream reads ``code`` and ``message``)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code = frame.get("code")
        self.message = str(frame.get("message", ""))


@dataclass
class Answer:
    text: str
    stream_end: dict[str, Any]
    chunk_indexes: list[int] = field(default_factory=list)
    finish_reason: str | None = None


class UpstreamStyleClient:
    """One WebSocket to a host, driven as upstream's SessionManager drives it."""

    def __init__(
        self,
        ws: Any,
        *,
        host_public_key: bytes,
        signer: bytes,
        chain_id: int,
        job_id: int,
        model: str,
        price_per_token: int,
    ) -> None:
        self.ws = ws
        self.host_public_key = host_public_key
        self.signer = signer
        self.chain_id = chain_id
        self.job_id = job_id
        self.model = model
        self.price_per_token = price_per_token
        self.session_key: bytes | None = None
        self.message_index = 0
        self.frames_in: list[dict[str, Any]] = []
        self.last_init: dict[str, Any] | None = None

    @classmethod
    async def connect(cls, api_url: str, **options: Any) -> UpstreamStyleClient:
        ws_url = api_url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/ws"
        ws = await websockets.connect(ws_url, max_size=None)
        return cls(ws, **options)

    async def close(self) -> None:
        await self.ws.close()

    async def receive(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
        self.frames_in.append(frame)
        return frame

    async def _until(self, *types: str) -> dict[str, Any]:
        """The next frame of one of ``types``; an error frame raises (upstream ignores the rest,
        such as ``connected``)."""
        while True:
            frame = await self.receive()
            if frame.get("type") == "error":
                raise HostRefused(frame)
            if frame.get("type") in types:
                return frame

    # -- encrypted ------------------------------------------------------------------------

    def init_frame(self) -> dict[str, Any]:
        """A fresh ``encrypted_session_init``: a new session key, the index back to 0."""
        self.session_key = os.urandom(32)
        self.message_index = 0
        recovery = coincurve.PrivateKey(self.signer).public_key.format(compressed=True)
        inner = {
            "sessionKey": self.session_key.hex(),
            "jobId": str(self.job_id),
            "modelName": self.model,
            "pricePerToken": self.price_per_token,
            "recoveryPublicKey": "0x" + recovery.hex(),
        }
        frame = {
            "type": "encrypted_session_init",
            "payload": sealed_init_payload(self.host_public_key, self.signer, inner),
            "chain_id": self.chain_id,
            "session_id": str(self.job_id),
            "job_id": str(self.job_id),
        }
        self.last_init = frame
        return frame

    async def init(self, frame: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send an init and wait for ``session_init_ack``."""
        await self.ws.send(json.dumps(frame or self.init_frame()))
        return await self._until("session_init_ack")

    def prompt_frame(self, prompt: str, max_tokens: int = 4000) -> dict[str, Any]:
        return self.request_frame(
            {
                "prompt": prompt,
                "model": self.model,
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "stream": True,
            }
        )

    def request_frame(self, request: dict[str, Any]) -> dict[str, Any]:
        """An ``encrypted_message`` carrying ``request`` (a prompt, or upstream's image,
        video and transcode requests, which name an ``action``)."""
        assert self.session_key is not None, "init first"
        aad = f"message_{self.message_index}".encode()
        self.message_index += 1
        nonce = os.urandom(24)
        ciphertext = _seal(self.session_key, nonce, json.dumps(request).encode(), aad)
        return {
            "type": "encrypted_message",
            "session_id": str(self.job_id),
            "id": f"{int(time.time() * 1000)}-{random.getrandbits(32):x}",
            "payload": {
                "ciphertextHex": ciphertext.hex(),
                "nonceHex": nonce.hex(),
                "aadHex": aad.hex(),
            },
        }

    async def prompt(self, prompt: str) -> Answer:
        """sendPromptStreaming: re-init, then one encrypted prompt, read to ``stream_end``."""
        await self.init()
        await self.ws.send(json.dumps(self.prompt_frame(prompt)))
        return await self.read_answer()

    async def read_answer(self) -> Answer:
        assert self.session_key is not None
        pieces: list[str] = []
        answer = Answer("", {})
        while True:
            frame = await self._until("encrypted_chunk", "encrypted_response", "stream_end")
            payload = frame.get("payload", {})
            if frame["type"] == "encrypted_chunk":
                aad = bytes.fromhex(payload["aadHex"])
                assert aad == f"chunk_{payload['index']}".encode()
                text = _open(
                    self.session_key,
                    bytes.fromhex(payload["nonceHex"]),
                    bytes.fromhex(payload["ciphertextHex"]),
                    aad,
                )
                pieces.append(text.decode())
                answer.chunk_indexes.append(payload["index"])
            elif frame["type"] == "encrypted_response":
                aad = bytes.fromhex(payload["aadHex"])
                assert aad == b"encrypted_response_final"
                answer.finish_reason = _open(
                    self.session_key,
                    bytes.fromhex(payload["nonceHex"]),
                    bytes.fromhex(payload["ciphertextHex"]),
                    aad,
                ).decode()
            else:
                answer.text = "".join(pieces)
                answer.stream_end = frame
                return answer

    # -- plaintext ------------------------------------------------------------------------

    async def plaintext_init(self, user_address: str) -> dict[str, Any]:
        """upstream's sendPlaintextInit (sent before every prompt, like the encrypted one)."""
        frame = {
            "type": "session_init",
            "chain_id": self.chain_id,
            "session_id": str(self.job_id),
            "jobId": str(self.job_id),
            "user_address": user_address,
        }
        await self.ws.send(json.dumps(frame))
        return await self._until("session_init_ack")

    async def plaintext_prompt(self, prompt: str, max_tokens: int) -> tuple[str, dict[str, Any]]:
        """upstream's plaintext prompt frame; the answer's text and its ``stream_end``."""
        frame = {
            "type": "prompt",
            "chain_id": self.chain_id,
            "jobId": str(self.job_id),
            "prompt": prompt,
            "web_search": False,
            "max_searches": 0,
            "search_queries": None,
            "request": {
                "model": self.model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "stream": True,
            },
            "id": f"{int(time.time() * 1000)}-{random.getrandbits(32):x}",
        }
        await self.ws.send(json.dumps(frame))
        pieces = []
        while True:
            answer = await self._until("stream_chunk", "stream_end")
            if answer["type"] == "stream_end":
                return "".join(pieces), answer
            pieces.append(answer["content"])


def inference_body(model: str, prompt: str, job_id: int) -> dict[str, Any]:
    """upstream's non-streaming sendPrompt body for ``POST /v1/inference``."""
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": 4000,
        "temperature": 0.7,
        "sessionId": str(job_id),
        "jobId": str(job_id),
    }
