"""Rich display for notebooks: escaped HTML tables and optional progress bars."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys

import pytest

from fabstir_sdk import HostInfo, SessionJob, SessionState, SessionStatus, Settlement, _display
from fabstir_sdk._display import Progress, html_table, native_amount, progress_wanted

ZERO = "0x" + "0" * 40
USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
HOST = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def row(label: str, value: str) -> str:
    return (
        f"<tr><th style='text-align:left'>{label}</th>"
        f"<td style='text-align:left'><code>{value}</code></td></tr>"
    )


def test_html_table_is_exact_and_escapes_everything():
    out = html_table("<b>t</b>", [("a&b", "<script>alert('x')</script>"), ("n", None)])
    assert out == (
        "<table><caption>&lt;b&gt;t&lt;/b&gt;</caption><tbody>"
        + row("a&amp;b", "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;")
        + row("n", "None")
        + "</tbody></table>"
    )


def test_long_values_are_cut_and_containers_are_json():
    out = html_table("t", [("long", "x" * 500), ("list", ["a", 1]), ("dict", {"b": 2, "a": "<"})])
    assert row("long", "x" * 199 + "…") in out
    assert row("list", "[&quot;a&quot;, 1]") in out
    assert row("dict", "{&quot;a&quot;: &quot;&lt;&quot;, &quot;b&quot;: 2}") in out


def test_native_amounts_in_eth_others_in_base_units():
    assert native_amount(2_500_000_000_000_000, ZERO) == "2500000000000000 wei (0.0025 ETH)"
    assert native_amount(998_000, USDC) == "998000 base units"


def test_settlement_html():
    s = Settlement(
        job_id=7,
        tokens_used=1000,
        host_payment=2000,
        treasury_fee=200,
        host_net=1800,
        refund=998_000,
        token=USDC,
        tx_hash="0x" + "ab" * 32,
    )
    assert s._repr_html_() == (
        "<table><caption>Settlement of session 7</caption><tbody>"
        + row("tokens used", "1000")
        + row("host payment (gross)", "2000 base units")
        + row("treasury fee", "200 base units")
        + row("host net", "1800 base units")
        + row("refund", "998000 base units")
        + row("token", USDC)
        + row("transaction", "0x" + "ab" * 32)
        + "</tbody></table>"
    )
    eth = s.model_copy(update={"token": ZERO, "refund": 10**18})
    assert row("refund", "1000000000000000000 wei (1 ETH)") in eth._repr_html_()
    assert row("token", "ETH") in eth._repr_html_()


def test_host_info_html_escapes_what_a_host_published():
    info = HostInfo(
        address=HOST,
        api_url='http://127.0.0.1:8080/"><img src=x onerror=alert(1)>',
        metadata={"name": "<i>evil</i>"},
        models=["fabstir/builtin:toy-1.gguf"],
        is_active=True,
        stake=1000 * 10**18,
        min_price_per_token_native=10**12,
        min_price_per_token_stable=2000,
        public_key="02" + "11" * 32,
    )
    out = info._repr_html_()
    assert "<img" not in out and "<i>" not in out
    assert out.startswith(f"<table><caption>Host {HOST}</caption>")
    escaped_url = "http://127.0.0.1:8080/&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"
    assert row("API URL", escaped_url) in out
    assert row("metadata", "{&quot;name&quot;: &quot;&lt;i&gt;evil&lt;/i&gt;&quot;}") in out
    assert row("models", "[&quot;fabstir/builtin:toy-1.gguf&quot;]") in out
    assert row("active", "True") in out
    assert row("min price per 1000 tokens, ETH", "1000000000000 wei") in out
    assert row("min price per 1000 tokens, stablecoin", "2000") in out
    assert row("peer id", "None") in out


def test_session_status_html():
    job = SessionJob(
        id=3,
        depositor=HOST,
        host=HOST,
        payment_token=ZERO,
        deposit=10**15,
        price_per_token=10**12,
        tokens_used=1000,
        max_duration=3600,
        start_time=1,
        last_proof_time=2,
        proof_interval=1000,
        proof_timeout_window=300,
        status=SessionState.COMPLETED,
        withdrawn_by_host=0,
        refunded_to_user=0,
        conversation_cid="",
        last_proof_hash="0x" + "00" * 32,
        last_proof_cid="",
    )
    status = SessionStatus(
        session_id="3",
        job=job,
        connected=False,
        tokens_reported=12,
        tokens_billed=1000,
        proofs=1,
        messages=4,
    )
    out = status._repr_html_()
    assert out.startswith("<table><caption>Session 3</caption>")
    assert row("state", "COMPLETED") in out
    assert row("deposit", "1000000000000000 wei (0.001 ETH)") in out
    assert row("price / 1000 tokens", "1000000000000 wei (0.000001 ETH)") in out
    assert row("tokens billed", "1000") in out and row("messages", "4") in out
    assert row("conversation CID", "None") in out


class FakeIPython:
    """``IPython`` as seen from a kernel (a shell with a kernel) or from a terminal."""

    def __init__(self, kernel: bool) -> None:
        self.shell = type("Shell", (), {"kernel": object()} if kernel else {})()

    def get_ipython(self):
        return self.shell


def test_progress_wanted(monkeypatch):
    monkeypatch.delenv(_display.PROGRESS_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # imported, but no kernel runs
    assert progress_wanted() is False
    assert progress_wanted(True) is True
    monkeypatch.setitem(sys.modules, "IPython", FakeIPython(kernel=False))  # terminal IPython
    assert progress_wanted() is False
    monkeypatch.setitem(sys.modules, "IPython", FakeIPython(kernel=True))  # a notebook
    assert progress_wanted() is True
    assert progress_wanted(False) is False
    monkeypatch.setenv(_display.PROGRESS_ENV, "0")
    assert progress_wanted() is False
    monkeypatch.setenv(_display.PROGRESS_ENV, "1")
    monkeypatch.delitem(sys.modules, "IPython")
    assert progress_wanted() is True


def test_progress_draws_only_after_its_threshold(monkeypatch):
    assert importlib.util.find_spec("tqdm") is not None  # a dev dependency
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Progress("upload", total=10 * 1024, unit="B", after=4096, enabled=True) as bar:
        bar.update(4095)
        assert not bar.shown and err.getvalue() == ""
        bar.update(1)
        assert bar.shown
        bar.update(6144, status="sent")
    text = err.getvalue()
    assert "upload: 100%|##########| 10.0k/10.0k [" in text and ", sent]" in text


def test_progress_is_silent_when_off_or_without_tqdm(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Progress("devnet", total=3, enabled=False) as bar:
        bar.update(3)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tqdm" else real(name, *a)
    )
    with Progress("devnet", total=3, enabled=True) as bar:
        bar.update(3)
        assert not bar.shown
    assert err.getvalue() == ""


@pytest.mark.parametrize("module", ["tqdm", "IPython", "ipykernel", "fabstir_sdk._display"])
def test_display_costs_nothing_at_import(module):
    code = f"import sys, fabstir_sdk; print({module!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # _display itself is a few string helpers (models use it); the heavy ones stay out
    assert out.stdout.strip() == str(module == "fabstir_sdk._display")
