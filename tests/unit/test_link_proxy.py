"""The session link's proxy choice: the environment's, as websockets finds it, read once per
host (websockets would read every proxy variable at each connection)."""

from __future__ import annotations

import pytest

from fabstir_sdk.managers._link import _proxy, _proxy_for


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ws_proxy", "wss_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    _proxy_for.cache_clear()
    yield
    _proxy_for.cache_clear()


def test_the_environments_proxy_is_used(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert _proxy("ws://host.example:8080/v1/ws") == "http://proxy.example:3128"
    assert _proxy("wss://host.example/v1/ws") == "http://proxy.example:3128"


def test_no_proxy_and_none_configured(monkeypatch):
    assert _proxy("ws://host.example:8080/v1/ws") is None
    _proxy_for.cache_clear()
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "host.example")
    assert _proxy("ws://host.example:8080/v1/ws") is None
    assert _proxy("ws://other.example:8080/v1/ws") == "http://proxy.example:3128"


def test_read_once_per_host(monkeypatch):
    assert _proxy("ws://host.example:8080/v1/ws") is None
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert _proxy("ws://host.example:8080/v1/ws") is None  # cached for this host
    assert _proxy_for.cache_info().hits == 1


def test_a_bad_url_is_left_to_connect():
    assert _proxy("http://not-a-websocket") is None
