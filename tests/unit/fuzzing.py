"""Shared hypothesis settings for the fuzz tests (tests/unit/test_fuzz_*.py).

``FABSTIR_FUZZ_EXAMPLES`` scales every fuzz test (default 250: a CI-sized run of a few
seconds per property): a property of ``fuzz(n)`` runs ``n * FABSTIR_FUZZ_EXAMPLES / 250``
examples, ``fuzz()`` 250 of them at the default size (CI's fuzz step sets 1000: 4x). A long
hunt, past pytest-timeout's 300 s per test::

    FABSTIR_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest --timeout=0 tests/unit/test_fuzz_*.py
"""

from __future__ import annotations

import asyncio
import atexit
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

from fabstir_sdk.errors import FabstirError

#: Examples of a ``fuzz()`` property at the default size.
BASE = 250
SCALE = int(os.environ.get("FABSTIR_FUZZ_EXAMPLES", str(BASE)))


def fuzz(examples: int = BASE) -> settings:
    """Per-test settings (other modules keep their own hypothesis profile): ``examples`` at
    the default size, scaled by ``FABSTIR_FUZZ_EXAMPLES / 250`` (once: CI's 1000 is 4x)."""
    return settings(
        max_examples=max(1, examples * SCALE // BASE),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def typed_only(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Call; a FabstirError is a fine answer (returned), anything else escapes and fails."""
    try:
        return call(*args, **kwargs)
    except FabstirError as exc:
        return exc


T = TypeVar("T")
_runner: asyncio.Runner | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on one event loop for all examples (a new loop each example cost more
    than most examples: 1.5 ms against 0.4 ms at load 10). The loop is never the thread's
    current one (its own factory), so no other test sees it."""
    global _runner
    if _runner is None:
        _runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        atexit.register(_runner.close)
    return _runner.run(coro)
