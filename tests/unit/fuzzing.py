"""Shared hypothesis settings for the fuzz tests (tests/unit/test_fuzz_*.py).

``FABSTIR_FUZZ_EXAMPLES`` scales every fuzz test (default: a CI-sized run of a few seconds
per property); set it to thousands for a long local hunt.
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
