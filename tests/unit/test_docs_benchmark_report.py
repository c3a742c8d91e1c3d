"""docs/benchmarks.md as the report writer renders it from benchmark rows."""

from __future__ import annotations

from benchmarks._report import PUBLISHED, Row, render

MACHINE = {
    "cpu": "Test CPU",
    "cores": "2",
    "python": "3.11.7",
    "os": "Linux 6",
    "date": "2026-01-01 00:00 UTC",
    "load": "0.50 0.40 0.30",
}


def test_ratio_is_against_the_same_run_baseline():
    assert Row("payments", "x", 30.0, "2 raw transfers", 20.0).ratio == 1.5
    assert Row("payments", "authenticate", 1.0).ratio is None


def test_the_report_puts_published_figures_beside_ours():
    rows = [
        Row("payments", "authenticate", 1.25),
        Row("payments", "approve_usdc", 3.5, "1 raw web3.py transfer(s)", 7.0),
        Row("discovery", "find_host chain+DHT cold (10 on DHT)", 1234.5),
    ]
    after = {**MACHINE, "date": "2026-01-01 00:05 UTC"}
    text = render(rows, 25, MACHINE, after, ["storage"])
    lines = text.splitlines()
    assert "- CPU: Test CPU, 2 cores" in lines
    assert "- Run: 2026-01-01 00:00 UTC to 2026-01-01 00:05 UTC" in lines
    assert not any(line.startswith("- Commit:") for line in lines)
    assert "- Commit: 043353f+" in render(rows, 25, {**MACHINE, "commit": "043353f+"}, after, [])
    assert "- Load average (1/5/15 min): before 0.50 0.40 0.30, after 0.50 0.40 0.30" in lines
    assert "| Authentication | < 1 s | 1.25 ms | `payments`: authenticate |" in lines
    # matched by prefix: the row's name carries the benchmark's parameters
    assert "| P2P discovery | 2-5 s | 1.23 s | `discovery`: find_host chain+DHT cold |" in lines
    assert "| Session creation | 3-5 s | not measured | `sessions`: create_session |" in lines
    assert "| approve_usdc | 3.50 | 1 raw web3.py transfer(s) | 7.00 | 0.50x |" in lines
    assert "| authenticate | 1.25 | - | - | - |" in lines
    assert lines.index("### payments") < lines.index("### discovery")
    assert "Not run: storage." in lines
    assert len([x for x in lines if x.startswith("| ") and "`" in x]) == len(PUBLISHED)


def test_a_loaded_machine_is_said_so():
    loaded = {**MACHINE, "load": "5.10 3.00 2.00"}
    text = render([], 25, MACHINE, loaded, [])
    assert (
        "- Load average (1/5/15 min): before 0.50 0.40 0.30, after 5.10 3.00 2.00 "
        "(above 2: processes waited for a CPU during the run)"
    ) in text.splitlines()


def test_each_target_says_whether_it_is_met():
    rows = [
        Row("sessions", "create_session", 45.0, "2 raw web3.py txs + 1 WebSocket handshake", 50.0),
        Row("sessions", "complete (final proof + settle)", 81.0),
        Row("sessions", "client CPU per token, E2EE (1000-token answer)", 0.03, "raw", 0.02),
        Row("sessions-1000", "1000 concurrent sessions (4 hosts): wall time", 407_560.0, errors=13),
    ]
    lines = render(rows, 25, MACHINE, MACHINE, []).splitlines()
    assert (
        "| create_session vs 2 raw web3.py txs + 1 WebSocket handshake | <= 0.6x | 0.90x | no |"
    ) in lines
    assert "| Session.complete() on the devnet | <= 100 ms | 81.00 ms | yes |" in lines
    assert (
        "| Session.complete(), job younger than the proof rate limit allows | <= 100 ms "
        "| not measured | - |"
    ) in lines
    assert (
        "| client CPU per streamed token vs a raw plaintext websockets reader | <= 1.5x "
        "| 1.50x | yes |"
    ) in lines
    assert (
        "| 1,000 concurrent sessions (deposit-funded, one host process per 250) | 0 errors "
        "| 13 errors in 407.56 s | no |"
    ) in lines


def test_a_young_jobs_complete_is_shown_with_and_without_the_chains_clock():
    young = [
        Row("sessions", "complete, job younger than the proof rate limit allows", 586.0),
        Row("sessions", "  of which waiting for the chain's clock (the rate limit)", 505.0),
        Row("sessions", "  the rest: SDK, host and chain work", 81.0),
    ]
    lines = render(young, 25, MACHINE, MACHINE, []).splitlines()
    assert (
        "| Session.complete(), job younger than the proof rate limit allows | <= 100 ms "
        "| 586.00 ms | no |"
    ) in lines
    assert (
        "| the same, beyond the wait for the chain's clock (SDK, host and chain work) "
        "| <= 100 ms | 81.00 ms | yes |"
    ) in lines
