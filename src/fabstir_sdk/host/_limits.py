"""What one client may cost the host: connections per IP, time to send a request head,
frames per second. Enforced below aiohttp where it has no knob (at the TCP connection).

A connection over the per-IP cap is answered ``429`` and closed before aiohttp sees a
byte. A connection whose request head (an HTTP request or the WebSocket handshake) is not
complete within ``header_timeout`` is closed (slowloris); the deadline is armed again
after each HTTP response, so an idle keep-alive connection goes the same way. WebSocket
frames are metered per connection by :class:`FrameRate` (see ``_ws``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["ConnectionGuard", "FrameRate", "GuardedSite"]

log = logging.getLogger("fabstir_sdk.host")

_BUSY_BODY = b'{"error":"too many connections from your address","code":"BUSY"}'
_BUSY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class FrameRate:
    """A token bucket: ``rate`` frames a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ConnectionGuard:
    """Per-IP connection counts and request-head deadlines for one listening socket."""

    def __init__(self, *, max_per_ip: int, header_timeout: float) -> None:
        self.max_per_ip = max_per_ip
        self.header_timeout = header_timeout
        self.per_ip: Counter[str] = Counter()
        self.refused = 0
        self.timed_out = 0
        self._deadlines: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """``factory`` (aiohttp's request handler) with the checks on connect and close."""
        return lambda: _Guarded(self, factory())

    def arm(self, transport: asyncio.BaseTransport) -> None:
        """Close ``transport`` unless a complete request head arrives in time."""
        self.disarm(transport)
        loop = asyncio.get_running_loop()
        self._deadlines[transport] = loop.call_later(self.header_timeout, self._expire, transport)

    def disarm(self, transport: asyncio.BaseTransport | None) -> None:
        handle = self._deadlines.pop(transport, None) if transport is not None else None
        if handle is not None:
            handle.cancel()

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        self._deadlines.pop(transport, None)
        self.timed_out += 1
        log.debug(
            "cutting off %s: no request head within %g s", _peer(transport), self.header_timeout
        )
        transport.abort() if isinstance(transport, asyncio.Transport) else transport.close()

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """The head arrived: no deadline while the request is served; then the next one."""
        transport = request.transport
        self.disarm(transport)
        try:
            return await handler(request)
        finally:
            if transport is not None and not transport.is_closing():
                self.arm(transport)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol (it has ``__slots__``) behind the guard's checks."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard, self.inner = guard, inner
        self.transport: asyncio.BaseTransport | None = None
        self.ip = self.peer = ""
        self.data_received = inner.data_received  # type: ignore[method-assign]
        self.eof_received = inner.eof_received  # type: ignore[method-assign]
        self.pause_writing = inner.pause_writing  # type: ignore[method-assign]
        self.resume_writing = inner.resume_writing  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        self.transport, self.ip = transport, _ip(transport)
        self.peer = _peer(transport)
        self.inner.connection_made(transport)
        guard.per_ip[self.ip] += 1
        if guard.per_ip[self.ip] > guard.max_per_ip:
            guard.refused += 1
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_BUSY)
            transport.close()
            return
        guard.arm(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        guard = self.guard
        guard.disarm(self.transport)
        if guard.per_ip[self.ip] > 1:
            guard.per_ip[self.ip] -= 1
        else:
            guard.per_ip.pop(self.ip, None)
        log.debug("connection from %s closed", self.peer)  # its per-IP slot is free
        self.inner.connection_lost(exc)


def _ip(transport: Any) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else ""


def _peer(transport: Any) -> str:
    """``ip:port`` of the client, for the DEBUG log (tests wait on its lines)."""
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass through ``guard``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard):
        super().__init__(runner, host, port)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.wrap(server),
            self._host,
            self._port,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
