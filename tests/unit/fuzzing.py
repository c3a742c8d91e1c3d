"""Shared hypothesis settings for the fuzz tests (tests/unit/test_fuzz_*.py).

``FABSTIR_FUZZ_EXAMPLES`` scales every fuzz test (default 250: a CI-sized run of a few
seconds per property). A long hunt, past pytest-timeout's 300 s per test::

    FABSTIR_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest --timeout=0 tests/unit/test_fuzz_*.py
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from fabstir_sdk.errors import FabstirError

SCALE = int(os.environ.get("FABSTIR_FUZZ_EXAMPLES", "250"))


def fuzz(examples: int = SCALE) -> settings:
    """Per-test settings (other modules keep their own hypothesis profile)."""
    return settings(
        max_examples=max(1, examples * SCALE // 250),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def typed_only(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Call; a FabstirError is a fine answer (returned), anything else escapes and fails."""
    try:
        return call(*args, **kwargs)
    except FabstirError as exc:
        return exc
