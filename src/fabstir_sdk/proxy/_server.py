"""The proxy's HTTP adapter: aiohttp routes over :class:`~fabstir_sdk._chat_api.Chat`.

Everything about sessions and the OpenAI shapes lives in ``_chat_api`` (shared with
``sdk.chat``); this module only parses HTTP, writes JSON or server-sent events and maps
errors. Stopping completes every session, so the user pays the proven tokens only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
from types import TracebackType
from typing import Any

from aiohttp import web

from .._chat_api import Chat, ChatCompletionStream
from .._chat_request import parse_request
from .._chat_shapes import ChatCompletion
from ..errors import ConfigError, FabstirError, ValidationError
from ..models import Settlement
from ._errors import error_body, openai_error

__all__ = ["ProxyServer"]

log = logging.getLogger("fabstir_sdk.proxy")

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def _openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure as an OpenAI error body (HTTP errors of aiohttp included)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        kind = "authentication_error" if exc.status == 401 else "invalid_request_error"
        return _json(exc.status, error_body(exc.text or exc.reason, kind))
    except FabstirError as exc:
        status, body = openai_error(exc)
        log.info("%s %s -> %d: %s", request.method, request.path, status, exc)
        return _json(status, body)
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return _json(*openai_error(exc))


class ProxyServer:
    """An OpenAI-compatible server (``/v1/models``, ``/v1/chat/completions``) for ``chat``.

    It binds loopback by default; binding another address needs ``api_key`` (every request
    must then send ``Authorization: Bearer <api_key>``), since anyone reaching the proxy
    spends the user's deposit.
    """

    def __init__(
        self, chat: Chat, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None
    ) -> None:
        if not _is_loopback(host) and not api_key:
            raise ConfigError(f"binding {host} exposes your deposit: set an API key as well")
        self.chat = chat
        self.host, self.port = host, port
        self._api_key = api_key
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"ProxyServer(url={self.url!r})"

    @property
    def url(self) -> str:
        """The base URL for OpenAI clients (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[_openai_errors])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._completions)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> list[Settlement]:
        """Stop serving (answers under way finish), then complete every session."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        return await self.chat.aclose()

    def _authorize(self, request: web.Request) -> None:
        if self._api_key is None:
            return
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), self._api_key.encode()):
            raise web.HTTPUnauthorized(text="invalid API key for this Fabstir proxy")

    async def _models(self, request: web.Request) -> web.Response:
        self._authorize(request)
        models = await self.chat.models()
        return web.Response(text=models.model_dump_json(), content_type="application/json")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        try:
            body = await request.json()
        except ValueError:
            raise ValidationError("the request body is not JSON") from None
        result = await self.chat.completions.answer(parse_request(body))
        if isinstance(result, ChatCompletion):
            return web.Response(text=result.model_dump_json(), content_type="application/json")
        return await self._stream(request, result)

    async def _stream(
        self, request: web.Request, stream: ChatCompletionStream
    ) -> web.StreamResponse:
        """Server-sent events: a chunk per ``data:`` line, then ``data: [DONE]``.

        An error after the first byte cannot change the status any more: it goes out as
        a ``data: {"error": ...}`` event, which OpenAI clients raise as an APIError.
        """
        response = web.StreamResponse(headers=_SSE_HEADERS)
        async with stream:  # a client that left early cancels the answer on the host
            await response.prepare(request)
            try:
                async for chunk in stream:
                    await response.write(b"data: " + chunk.model_dump_json().encode() + b"\n\n")
            except FabstirError as exc:
                _, body = openai_error(exc)
                await response.write(b"data: " + json.dumps(body).encode() + b"\n\n")
                return response
            except ConnectionResetError:
                log.info("the client left a stream early: its answer is cancelled")
                return response
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response
