"""A local S5 portal: the S5 node's HTTP API (aiohttp) over the embedded store.

For the devnet (``Devnet.start(with_s5=True)``), for tests and for ``fabstir s5 serve``. It
binds loopback by default, needs an account token for everything but ``/s5/version`` and
the account challenge routes, streams uploads to disk under a size limit, and keeps the
embedded store's guarantees (hash-named blobs, signed registry entries, revision rule).

Routes: ``GET /s5/version``; ``GET``/``POST /s5/account/register`` and ``/s5/account/login``
(signed challenge); ``POST /s5/upload`` (raw body or multipart field ``file``) answering
``{"cid": <legacy raw CID, base58>}``; ``GET /s5/download/<cid>`` and ``GET /<cid>``;
``GET /s5/blob/<cid>`` (307 to the download); ``GET /s5/registry?pk=`` and ``POST
/s5/registry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from .._version import __version__
from ..errors import (
    IntegrityError,
    PayloadTooLargeError,
    RevisionConflictError,
    S5FormatError,
)
from . import _multibase
from ._blob import BlobId
from ._keys import MKEY_ED25519
from ._local import BlobWriter, LocalStore, _write_atomic
from ._portal import (
    CHALLENGE_LOGIN,
    CHALLENGE_REGISTER,
    _entry_from_json,
    _entry_json,
    b64url_decode,
    b64url_encode,
    challenge_response,
)

__all__ = ["DEFAULT_MAX_UPLOAD", "PortalServer", "create_app"]

log = logging.getLogger("fabstir_sdk.s5.server")

#: Uploads above this many bytes are refused with 413.
DEFAULT_MAX_UPLOAD = 512 * 1024 * 1024
#: JSON bodies (account and registry calls) are tiny.
_MAX_JSON = 64 * 1024
_CHALLENGE_TTL = 120.0
_MAX_OPEN_CHALLENGES = 10_000
_PIECE = 1 << 16
#: After refusing an oversized upload, read (and drop) at most this much more so the
#: client sees the 413 instead of a broken pipe.
_DRAIN_LIMIT = 64 * 1024 * 1024

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class _Accounts:
    """Registered account keys (persisted, public) and login tokens (memory only)."""

    def __init__(self, path: Path, authority: str, invite_token: str | None) -> None:
        self.path = path
        self.authority = authority
        self.invite_token = invite_token
        self.keys: set[str] = set()
        if path.exists():
            self.keys = set(json.loads(path.read_text()).get("accounts", []))
        self.tokens: dict[str, str] = {}
        self.challenges: dict[bytes, tuple[int, str, float]] = {}

    def challenge(self, kind: int, pk: str) -> str | None:
        """A fresh challenge, or None when too many are open (anyone may ask for one)."""
        now = time.monotonic()
        self.challenges = {c: v for c, v in self.challenges.items() if v[2] > now}
        if len(self.challenges) >= _MAX_OPEN_CHALLENGES:
            return None
        challenge = secrets.token_bytes(32)
        self.challenges[challenge] = (kind, pk, now + _CHALLENGE_TTL)
        return b64url_encode(challenge)

    def answer(self, kind: int, body: Any) -> str:
        """Check a signed challenge response; returns the account key. ValueError if bad."""
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        pk_text = body.get("pubKey")
        pk = b64url_decode(pk_text)
        response = b64url_decode(body.get("response"))
        signature = b64url_decode(body.get("signature"))
        if len(pk) != 33 or pk[0] != MKEY_ED25519 or len(response) != 65:
            raise ValueError("malformed pubKey or response")
        issued = self.challenges.pop(response[1:33], None)
        if issued is None or issued[2] < time.monotonic() or issued[:2] != (kind, pk_text):
            raise ValueError("unknown or expired challenge")
        if response != challenge_response(kind, response[1:33], self.authority):
            raise ValueError("the response is not for this portal")
        try:
            VerifyKey(pk[1:]).verify(response, signature)
        except (BadSignatureError, ValueError):
            raise ValueError("bad signature") from None
        assert isinstance(pk_text, str)
        return pk_text

    def register(self, pk: str, tmp_dir: Path) -> None:
        self.keys.add(pk)
        data = json.dumps({"accounts": sorted(self.keys)}).encode()
        _write_atomic(self.path, data, tmp_dir)

    def new_token(self, pk: str) -> str:
        token = "S5A" + _multibase.b58encode(secrets.token_bytes(32))
        self.tokens[token] = pk
        return token

    def token_of(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        token = token or request.cookies.get("s5-auth-token") or request.query.get("auth_token")
        return token if token in self.tokens else None


def create_app(
    store: LocalStore,
    *,
    authority: str,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    invite_token: str | None = None,
) -> web.Application:
    """The portal as an aiohttp application over ``store``.

    ``authority`` (``host:port``) is what account challenges are bound to. With an
    ``invite_token``, registering an account needs it as a Bearer token.
    """
    store.prepare()
    accounts = _Accounts(store.root / "accounts.json", authority, invite_token)
    public = {"/s5/version", "/s5/account/register", "/s5/account/login"}

    @web.middleware
    async def auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path not in public and accounts.token_of(request) is None:
            return _error(401, "an account token is required (log in first)")
        try:
            return await handler(request)
        except (S5FormatError, ValueError) as exc:
            return _error(400, str(exc))

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"node": f"fabstir-sdk {__version__}"})

    async def get_challenge(request: web.Request, kind: int) -> web.Response:
        pk = request.query.get("pubKey", "")
        key = b64url_decode(pk)
        if len(key) != 33 or key[0] != MKEY_ED25519:
            return _error(400, "pubKey is 0xed + an ed25519 key, base64url")
        if kind == CHALLENGE_LOGIN and pk not in accounts.keys:
            return _error(404, "no account with this key: register first")
        if kind == CHALLENGE_REGISTER and pk in accounts.keys:
            return _error(409, "an account with this key exists: log in")
        challenge = accounts.challenge(kind, pk)
        if challenge is None:
            return _error(503, "too many open challenges, try again shortly")
        return web.json_response({"challenge": challenge})

    async def post_challenge(request: web.Request, kind: int) -> web.Response:
        invited = request.headers.get("Authorization") == f"Bearer {invite_token}"
        if kind == CHALLENGE_REGISTER and invite_token is not None and not invited:
            return _error(401, "registration on this portal needs an invite token")
        pk = accounts.answer(kind, await request.json())
        if kind == CHALLENGE_REGISTER:
            await asyncio.to_thread(accounts.register, pk, store.root / "tmp")
        elif pk not in accounts.keys:
            return _error(404, "no account with this key")
        # The token goes in the JSON body only: a Set-Cookie header would put it in any
        # client's DEBUG logs of response headers (httpx/httpcore log them).
        return web.json_response({"authToken": accounts.new_token(pk)})

    async def register_get(request: web.Request) -> web.Response:
        return await get_challenge(request, CHALLENGE_REGISTER)

    async def register_post(request: web.Request) -> web.Response:
        return await post_challenge(request, CHALLENGE_REGISTER)

    async def login_get(request: web.Request) -> web.Response:
        return await get_challenge(request, CHALLENGE_LOGIN)

    async def login_post(request: web.Request) -> web.Response:
        return await post_challenge(request, CHALLENGE_LOGIN)

    async def upload(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_upload:
            await _drain(request)
            return _error(413, "upload too large", limit=max_upload)
        writer = BlobWriter(store, max_upload)
        try:
            if request.content_type.startswith("multipart/"):
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if getattr(part, "name", None) == "file":
                        while piece := await part.read_chunk(_PIECE):  # type: ignore[union-attr]
                            writer.write(piece)
                        break
                else:
                    writer.abort()
                    return _error(400, "multipart upload without a 'file' field")
            else:
                async for piece in request.content.iter_chunked(_PIECE):
                    writer.write(piece)
            blob = await asyncio.to_thread(writer.commit)
        except PayloadTooLargeError:
            writer.abort()
            await _drain(request)
            return _error(413, "upload too large", limit=max_upload)
        except BaseException:
            writer.abort()
            raise
        return web.json_response({"cid": blob.legacy_cid()})

    async def download(request: web.Request) -> web.StreamResponse:
        blob = BlobId.parse(request.match_info["cid"])
        path = store.blob_path(blob)
        if not path.is_file():
            return _error(404, f"no blob {blob}")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    async def blob_redirect(request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        BlobId.parse(cid)
        raise web.HTTPTemporaryRedirect(f"/s5/download/{cid}")

    async def registry_get(request: web.Request) -> web.Response:
        pk = b64url_decode(request.query.get("pk", ""))
        if len(pk) != 33:
            return _error(400, "pk is 33 bytes, base64url")
        try:
            entry = await store.registry_get(pk)
        except IntegrityError as exc:
            return _error(500, str(exc))
        if entry is None:
            return _error(404, "no registry entry for this key")
        return web.json_response(_entry_json(entry))

    async def registry_set(request: web.Request) -> web.Response:
        entry = _entry_from_json(await request.json())
        try:
            await store.registry_set(entry)
        except RevisionConflictError:
            return _error(409, "Revision number too low")
        except IntegrityError:
            return _error(400, "registry entry signature is invalid")
        return web.Response(status=204)

    app = web.Application(middlewares=[auth], client_max_size=_MAX_JSON)
    app.router.add_get("/s5/version", version)
    app.router.add_get("/s5/account/register", register_get)
    app.router.add_post("/s5/account/register", register_post)
    app.router.add_get("/s5/account/login", login_get)
    app.router.add_post("/s5/account/login", login_post)
    app.router.add_post("/s5/upload", upload)
    app.router.add_get("/s5/download/{cid}", download)
    app.router.add_get("/s5/blob/{cid}", blob_redirect)
    app.router.add_get("/s5/registry", registry_get)
    app.router.add_post("/s5/registry", registry_set)
    app.router.add_get("/{cid:[fbzu][A-Za-z0-9_-]+}", download)
    return app


async def _drain(request: web.Request) -> None:
    seen = 0
    with contextlib.suppress(Exception):
        async for piece in request.content.iter_chunked(_PIECE):
            seen += len(piece)
            if seen > _DRAIN_LIMIT:
                break


class PortalServer:
    """Run the portal: ``async with PortalServer(root) as portal: portal.url``.

    ``port=0`` picks a free port. ``public_url`` is the address clients use, when it is not
    ``http://host:port`` (account challenges are bound to its authority).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        invite_token: str | None = None,
    ) -> None:
        self.store = LocalStore(root)
        self.host, self.port = host, port
        self._public_url = public_url
        self.max_upload = max_upload
        self._invite = invite_token
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"PortalServer(url={self.url!r})"

    @property
    def url(self) -> str:
        if self._public_url:
            return self._public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        """Bind and serve; returns the URL."""
        if self._runner is not None:
            return self.url
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]  # known before the app: challenges bind to it
        app = create_app(
            self.store,
            authority=self.url.split("://", 1)[1],
            max_upload=self.max_upload,
            invite_token=self._invite,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        log.info("S5 portal on %s serving %s", self.url, self.store.root)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> PortalServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
