"""An S5 portal over HTTP (aiohttp), behind the same :class:`Store` interface as the embedded one.

Speaks the portal API of the S5 node and s5.js: account registration and login by signed
challenge (``/s5/account/{register,login}``), ``POST /s5/upload``, ``GET /s5/download/<cid>``,
``GET/POST /s5/registry``. Nothing the portal says is trusted: downloaded blobs are hashed
as they stream in, registry entries are signature-checked, upload answers are compared
with the locally computed id.

Failures: a portal that cannot be reached (or answers 5xx to a call that is safe to repeat)
is retried with exponential backoff, then StorageUnavailableError. Only calls that are safe
to repeat are repeated: reads, content-addressed uploads, and registry writes (a repeated
write that finds its own entry stored counts as done).

aiohttp rather than httpx: a session stores each exchange with three portal calls, and
aiohttp spends about a fifth of httpx's CPU on one (0.23 vs 1.24 ms measured here), which
is most of what storing an answer costs the client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import urllib.request
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import blake3
import httpx
from nacl.signing import SigningKey

from .._display import Progress
from ..chain.transport import redact_url
from ..errors import (
    IntegrityError,
    NotFoundError,
    PayloadTooLargeError,
    RevisionConflictError,
    S5FormatError,
    StorageError,
    StorageUnavailableError,
    ValidationError,
)
from ._blob import BlobId, blob_id
from ._keys import MKEY_ED25519, S5Identity
from ._registry import RegistryEntry
from ._store import BlobSource, BlobVerifier, Store, check_entry, pieces_of

__all__ = ["PortalClient", "account_key", "b64url_decode", "b64url_encode", "challenge_response"]

CHALLENGE_REGISTER, CHALLENGE_LOGIN = 1, 2
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: What a call that did not get through raises (timeouts included).
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
#: Uploads show a progress bar (in notebooks) once this many bytes have gone out.
PROGRESS_AFTER = 8 * 1024 * 1024


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: object) -> bytes:
    if not isinstance(text, str):
        raise S5FormatError("expected base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise S5FormatError("malformed base64url text") from None


def challenge_response(kind: int, challenge: bytes, authority: str) -> bytes:
    """What an account key signs: type byte, the 32-byte challenge, BLAKE3(portal authority)."""
    return bytes([kind]) + challenge + blake3.blake3(authority.encode()).digest()


def account_key(identity: S5Identity, authority: str) -> SigningKey:
    """The account key for one portal: BLAKE3(storage-accounts sub-seed ‖ BLAKE3(authority)).

    s5.js keeps a random per-portal seed in its hidden DB; deriving it from the portal's
    authority instead needs no extra state and still gives every portal its own key.
    """
    portal_seed = blake3.blake3(authority.encode()).digest()
    return SigningKey(blake3.blake3(identity.storage_accounts_seed + portal_seed).digest())


def _entry_json(entry: RegistryEntry) -> dict[str, Any]:
    return {
        "pk": b64url_encode(entry.pk),
        "revision": entry.revision,
        "data": b64url_encode(entry.data),
        "signature": b64url_encode(entry.signature),
    }


def _entry_from_json(body: Any) -> RegistryEntry:
    if not isinstance(body, dict) or not isinstance(body.get("revision"), int):
        raise S5FormatError("registry answer is not {pk, revision, data, signature}")
    return RegistryEntry(
        pk=b64url_decode(body.get("pk")),
        revision=body["revision"],
        data=b64url_decode(body.get("data")),
        signature=b64url_decode(body.get("signature")),
    )


class PortalClient(Store):
    """S5 storage on a portal at ``url`` (``http://127.0.0.1:5050``, ``https://s5.example``)."""

    def __init__(
        self,
        url: str,
        identity: S5Identity,
        *,
        invite_token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
    ) -> None:
        parsed = httpx.URL(url)  # parsed as before: the account key derives from authority
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValidationError(
                f"an S5 portal URL is http(s)://host[:port], not {redact_url(url)!r}"
            )
        self.url = str(parsed).rstrip("/")
        self._shown = redact_url(self.url)  # for reprs and messages: no credentials
        self.authority = parsed.netloc.decode()
        self._key = account_key(identity, self.authority)
        self._pk = bytes([MKEY_ED25519]) + bytes(self._key.verify_key)
        self._invite = invite_token
        self._retries = retries
        self._backoff = backoff
        self._token: str | None = None
        self._login_lock = asyncio.Lock()
        # connect and each read: as httpx's timeout did (a long upload or download is fine,
        # a portal that stops answering is not)
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None  # made in the loop that uses it
        self._session_loop: asyncio.AbstractEventLoop | None = None
        # HTTP(S)_PROXY / NO_PROXY read once (aiohttp's trust_env reads them, and .netrc, in a
        # thread on every call)
        self._proxy = _env_proxy(parsed.scheme, parsed.host)

    def __repr__(self) -> str:
        return f"PortalClient({self._shown!r})"

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        """The HTTP session, made in (and kept for) the running loop: one used from another
        loop (a second ``asyncio.run``) gets its own, as its connections cannot move."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._session_loop = loop
        return self._session

    # ------------------------------------------------------------------ transport

    async def _send(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        stream: bool = False,
        body: BlobSource | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> _Answer:
        """One call with retries. Its body is read, unless ``stream``: then the caller reads
        (``answer.response.content``) and releases it."""
        last = "no attempt"
        relogged = False
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            sent = dict(headers or {})
            if auth:
                await self._login()
                sent["Authorization"] = f"Bearer {self._token}"
            content: Any = None
            if body is not None:  # a fresh iterator per attempt: the source is replayable
                content = body if isinstance(body, bytes) else _aiter(pieces_of(body))
            try:
                response = await self._http().request(
                    method, self.url + path, headers=sent, data=content, proxy=self._proxy, **kwargs
                )
            except _TRANSPORT_ERRORS as exc:
                last = type(exc).__name__
                continue
            status = response.status
            if (status == 401 and auth and not relogged) or status in _RETRY_STATUS:
                response.release()
                if status == 401:
                    self._token, relogged = None, True  # the portal forgot us: log in again
                last = f"HTTP {status}"
                continue
            if stream and status < 300:
                return _Answer(status, b"", response)
            try:
                data = await response.read()
            except _TRANSPORT_ERRORS as exc:
                last = type(exc).__name__
                continue
            finally:
                response.release()
            return _Answer(status, data, response)
        raise StorageUnavailableError(
            f"S5 portal {self._shown} unavailable after {self._retries + 1} attempts ({last})"
        )

    async def _check(self, answer: _Answer, what: str) -> _Answer:
        """``answer`` if it is a success; the matching typed error otherwise."""
        status = answer.status
        if status < 300:
            return answer
        text = answer.body.decode(errors="replace")[:300]
        if status == 404:
            raise NotFoundError(f"{what}: not on the portal")
        if status == 409 or ("revision" in text.lower() and "low" in text.lower()):
            raise RevisionConflictError(f"{what}: {text}")
        if status == 413:
            try:
                limit = int(json.loads(text).get("limit", -1))
            except (ValueError, AttributeError, TypeError):
                limit = -1
            raise PayloadTooLargeError(-1, limit, f"{what} (refused by the portal)")
        if status in (401, 403):
            raise StorageUnavailableError(f"{what}: the portal refused the account ({status})")
        raise StorageError(f"{what}: portal answered {status}: {text}")

    # ------------------------------------------------------------------ account

    async def _login(self) -> None:
        if self._token is not None:
            return
        async with self._login_lock:
            if self._token is not None:
                return
            try:
                self._token = await self._challenge("login", CHALLENGE_LOGIN)
            except StorageUnavailableError:
                raise
            except (NotFoundError, StorageError):  # no account on this portal yet
                self._token = await self._challenge("register", CHALLENGE_REGISTER)

    async def _challenge(self, kind: str, kind_byte: int) -> str:
        pk = b64url_encode(self._pk)
        what = f"account {kind}"
        answer = await self._check(
            await self._send("GET", f"/s5/account/{kind}", auth=False, params={"pubKey": pk}),
            what,
        )
        try:
            challenge = b64url_decode(answer.json()["challenge"])
        except (ValueError, KeyError, TypeError):
            raise S5FormatError(f"{what}: the portal sent no challenge") from None
        if len(challenge) != 32:
            raise S5FormatError(f"{what}: the challenge is not 32 bytes")
        response = challenge_response(kind_byte, challenge, self.authority)
        payload: dict[str, Any] = {
            "pubKey": pk,
            "response": b64url_encode(response),
            "signature": b64url_encode(self._key.sign(response).signature),
        }
        headers = {}
        if kind == "register":
            payload["label"] = "fabstir-sdk"
            if self._invite:
                headers["Authorization"] = f"Bearer {self._invite}"
        done = await self._check(
            await self._send(
                "POST", f"/s5/account/{kind}", auth=False, json=payload, headers=headers
            ),
            what,
        )
        try:
            token = done.json()["authToken"]
        except (ValueError, KeyError, TypeError):
            cookie = done.response.cookies.get("s5-auth-token")
            token = None if cookie is None else cookie.value
        if not isinstance(token, str) or not token:
            raise S5FormatError(f"{what}: the portal sent no auth token")
        return token

    # ------------------------------------------------------------------ blobs

    async def put_blob(self, source: BlobSource) -> BlobId:
        local: list[BlobId] = []

        def hashed() -> Iterable[bytes]:
            hasher, size = blake3.blake3(), 0
            with Progress("S5 upload", unit="B", after=PROGRESS_AFTER) as bar:
                for piece in pieces_of(source):
                    hasher.update(piece)
                    size += len(piece)
                    bar.update(len(piece))
                    yield piece
            local[:] = [BlobId(hasher.digest(), size)]

        if isinstance(source, bytes):
            local.append(blob_id(source))
        body: BlobSource = source if isinstance(source, bytes) else hashed
        response = await self._check(
            await self._send(
                "POST",
                "/s5/upload",
                body=body,
                headers={"Content-Type": "application/octet-stream"},
            ),
            "upload",
        )
        try:
            remote = BlobId.parse(response.json()["cid"])
        except (ValueError, KeyError, TypeError):
            raise S5FormatError("upload: the portal answered without a valid cid") from None
        if not local or remote != local[0]:
            raise IntegrityError("upload: the portal's cid does not match the bytes sent")
        return remote

    async def read_blob(self, blob: BlobId) -> AsyncIterator[bytes]:
        answer = await self._send("GET", f"/s5/download/{blob.legacy_cid()}", stream=True)
        try:
            await self._check(answer, f"download {blob}")
            verifier = BlobVerifier(blob)
            held: bytes | None = None
            try:
                async for piece in answer.response.content.iter_any():
                    verifier.update(piece)
                    if held is not None:
                        yield held
                    held = piece
            except _TRANSPORT_ERRORS as exc:
                raise StorageUnavailableError(
                    f"download {blob}: the portal connection broke ({type(exc).__name__})"
                ) from None
            verifier.finish()
            if held is not None:
                yield held
        finally:
            answer.response.release()

    # ------------------------------------------------------------------ registry

    async def registry_get(self, pk: bytes) -> RegistryEntry | None:
        response = await self._send("GET", "/s5/registry", params={"pk": b64url_encode(pk)})
        try:
            await self._check(response, "registry read")
        except NotFoundError:
            return None
        try:
            body = response.json()
        except ValueError:
            raise S5FormatError("registry read: the portal answered with no JSON") from None
        return check_entry(_entry_from_json(body), pk)

    async def registry_set(self, entry: RegistryEntry) -> None:
        check_entry(entry, entry.pk)
        response = await self._send("POST", "/s5/registry", json=_entry_json(entry))
        try:
            await self._check(response, "registry write")
        except RevisionConflictError:
            # A retried write may find itself already stored: that is success.
            if await self.registry_get(entry.pk) != entry:
                raise


def _env_proxy(scheme: str, host: str) -> str | None:
    """The proxy the environment names for ``scheme`` (``HTTPS_PROXY``, ...), unless
    ``NO_PROXY`` exempts ``host``."""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme)


class _Answer:
    """A portal's answer: its status and body (empty while streamed), and the response."""

    __slots__ = ("body", "response", "status")

    def __init__(self, status: int, body: bytes, response: aiohttp.ClientResponse) -> None:
        self.status, self.body, self.response = status, body, response

    def json(self) -> Any:
        return json.loads(self.body)


async def _aiter(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
