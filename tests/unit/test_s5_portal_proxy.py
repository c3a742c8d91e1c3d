"""The S5 portal client takes its proxy from the environment once, as httpx did on every
call: HTTP(S)_PROXY for the portal's scheme, unless NO_PROXY names the portal's host."""

from __future__ import annotations

import pytest

from fabstir_sdk.s5 import S5Identity
from fabstir_sdk.s5._portal import PortalClient

NAMES = ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def proxy_of(url: str) -> str | None:
    return PortalClient(url, S5Identity(bytes(32)))._proxy


def test_no_proxy_in_the_environment_means_none(env: pytest.MonkeyPatch) -> None:
    assert proxy_of("https://s5.example") is None


def test_the_schemes_proxy_unless_no_proxy_names_the_host(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    env.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert proxy_of("https://s5.example") == "http://proxy.internal:3128"
    assert proxy_of("http://s5.example") is None  # no HTTP_PROXY
    assert proxy_of("https://127.0.0.1:5050") is None
    env.setenv("HTTP_PROXY", "http://plain.internal:8080")
    assert proxy_of("http://s5.example:5050") == "http://plain.internal:8080"
