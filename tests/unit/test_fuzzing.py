"""tests/unit/fuzzing.py: FABSTIR_FUZZ_EXAMPLES scales every fuzz property once (CI's fuzz
step sets 1000 and means 4x each property's default size, not 16x)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZING = Path(__file__).with_name("fuzzing.py")


def _fuzzing_at(monkeypatch: pytest.MonkeyPatch, scale: str | None) -> ModuleType:
    """A fresh copy of the fuzzing module, read with FABSTIR_FUZZ_EXAMPLES=scale (the test
    modules keep their own copy and its event loop)."""
    if scale is None:
        monkeypatch.delenv("FABSTIR_FUZZ_EXAMPLES", raising=False)
    else:
        monkeypatch.setenv("FABSTIR_FUZZ_EXAMPLES", scale)
    spec = importlib.util.spec_from_file_location("_fuzzing_copy", FUZZING)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "_fuzzing_copy", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("scale", "default", "sized"),
    [
        (None, 250, [100, 120]),
        ("250", 250, [100, 120]),
        ("1000", 1000, [400, 480]),
        ("5000", 5000, [2000, 2400]),
        ("1", 1, [1, 1]),
    ],
)
def test_each_property_is_scaled_once(monkeypatch, scale, default, sized):
    fuzzing = _fuzzing_at(monkeypatch, scale)
    assert fuzzing.fuzz().max_examples == default
    assert [fuzzing.fuzz(n).max_examples for n in (100, 120)] == sized
