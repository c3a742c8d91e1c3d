"""``fabstir proxy``: an OpenAI-compatible HTTP server over paid Fabstir sessions.

See docs/proxy.md. The in-process equivalent needs no server: ``sdk.chat.completions.create``.
The server (aiohttp.web) loads on first use of :class:`ProxyServer`, so the CLI stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._server import ProxyServer

__all__ = ["ProxyServer"]


def __getattr__(name: str) -> Any:
    if name == "ProxyServer":
        from ._server import ProxyServer

        return ProxyServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
