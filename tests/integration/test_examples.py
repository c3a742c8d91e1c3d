"""The README quickstart and `fabstir demo` run as written and print exact numbers."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def test_quickstart_example_runs():
    out = await run(sys.executable, "examples/quickstart.py")
    assert "status=<SessionState.ACTIVE: 0>" in out
    assert "deposit=1000000" in out and "price_per_token=2000" in out
    # No proven tokens: nothing paid, the whole deposit refunded.
    assert re.search(r"host_payment=0 treasury_fee=0 host_net=0 refund=1000000 ", out), out


def test_readme_quickstart_matches_the_example():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    for call in ("register_host(", 'approve_usdc(usdc, "1")', "create_usdc_session_job("):
        assert call in readme and call in example


async def test_fabstir_demo_prints_the_worked_example():
    out = await run(sys.executable, "-m", "fabstir_sdk.cli", "demo")
    assert re.search(r"host \(90%\)\s+270,000 micro-USDC = 0\.27 USDC", out), out
    assert re.search(r"treasury \(10%\)\s+30,000 micro-USDC = 0\.03 USDC", out), out
    assert re.search(r"refund to user\s+700,000 micro-USDC = 0\.7 USDC", out), out
    assert re.search(r"user's net cost\s+300,000 micro-USDC = 0\.3 USDC", out), out
