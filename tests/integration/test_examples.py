"""The README quickstart and `fabstir demo` run as written and print exact numbers."""

from __future__ import annotations

import asyncio
import os
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
    # 18 tokens streamed, 1000 billed (the proof interval) at 2000 per 1000 tokens
    assert out.splitlines() == [
        "Nice to meet you, Ada. I will remember your name.",
        "Your name is Ada.",
        "host 1800, treasury 200, refund 998000 micro-USDC",
    ]


def test_readme_quickstart_is_the_example():
    """The README's quickstart block is examples/quickstart.py, less its docstring."""
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    block = readme.split("<!-- run -->\n```python\n", 1)[1].split("```\n", 1)[0]
    docstring, code = example.split("\n\n", 1)
    assert docstring.startswith('"""') and docstring.endswith('"""')
    assert code == block
    assert 15 <= len([line for line in block.splitlines() if line.strip()]) <= 20


async def test_fabstir_demo_payments_prints_the_worked_example():
    out = await run(sys.executable, "-m", "fabstir_sdk.cli", "demo", "--payments")
    assert re.search(r"host \(90%\)\s+270,000 micro-USDC = 0\.27 USDC", out), out
    assert re.search(r"treasury \(10%\)\s+30,000 micro-USDC = 0\.03 USDC", out), out
    assert re.search(r"refund to user\s+700,000 micro-USDC = 0\.7 USDC", out), out
    assert re.search(r"user's net cost\s+300,000 micro-USDC = 0\.3 USDC", out), out


async def test_fabstir_demo_tells_the_session_story():
    """Devnet, host, discovery, a USDC session, two prompts, completion, S5, timings."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fabstir_sdk.cli", "demo"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    raw_out, raw_err = await asyncio.wait_for(proc.communicate(), timeout=120)
    out, err = raw_out.decode(), raw_err.decode()
    assert proc.returncode == 0, out + err
    # progress goes to stderr (plain lines when it is not a terminal), the story to stdout
    assert "Starting the devnet (anvil, contracts, S5 portal)...\n  done in " in err, err
    assert "Starting a reference host with the built-in model...\n  done in " in err, err
    host = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # devnet account 2
    assert f"Found host {host} in the registry and on the DHT;" in out, out
    assert "session 1 opened," in out, out
    lines = out.splitlines()
    story = lines[lines.index("> My name is Ada.") :][:4]
    assert story == [
        "> My name is Ada.",
        "Nice to meet you, Ada. I will remember your name.",
        "> What is my name?",
        "Your name is Ada.",  # the second answer relies on the first's context
    ]
    # 18 tokens streamed; the first proof is padded to the 1000-token interval at 2000 per
    # 1000 tokens: 2000 micro-USDC paid, 90% to the host, 10% to the treasury.
    for pattern in (
        r"tokens streamed\s+18\n",
        r"tokens billed\s+1,000 ",
        r"value of billed tokens\s+2,000 micro-USDC = 0\.002 USDC\n",
        r"host \(90%\)\s+1,800 micro-USDC = 0\.0018 USDC\n",
        r"treasury \(10%\)\s+200 micro-USDC = 0\.0002 USDC\n",
        r"refund to user\s+998,000 micro-USDC = 0\.998 USDC\n",
        r"user's net cost\s+2,000 micro-USDC = 0\.002 USDC\n",
    ):
        assert re.search(pattern, out), (pattern, out)
    conversation = lines[lines.index(next(x for x in lines if "read back from S5" in x)) :]
    assert re.fullmatch(
        r"Conversation read back from S5 \(CID on chain b\w{50,}\)", conversation[0]
    )
    assert conversation[1:5] == [
        "  user       My name is Ada.",
        "  assistant  Nice to meet you, Ada. I will remember your name.",
        "  user       What is my name?",
        "  assistant  Your name is Ada.",
    ]
    timing = lines[lines.index("Timing") + 1 :]
    labels = [re.split(r"\s{2,}", line.strip())[0] for line in timing]
    assert labels == [
        "devnet start",
        "host start",
        "create_session",
        "first token (TTFT)",
        "tokens/s",
        "complete",
    ]
    assert all(re.search(r"\d+(\.\d)? ms$|\(18 tokens\)$", line) for line in timing), timing


# `fabstir demo` as if py-libp2p (the p2p extra) were not installed: importing it fails.
NO_LIBP2P_DEMO = (
    "import sys\n"
    "for name in ('libp2p', 'trio', 'multiaddr'):\n"
    "    sys.modules[name] = None\n"
    "from fabstir_sdk.cli import main\n"
    "sys.exit(main(['demo']))\n"
)


async def test_fabstir_demo_without_the_p2p_extra():
    """A plain install: the registry finds the host, and one line says what the DHT needs."""
    out = await run(sys.executable, "-c", NO_LIBP2P_DEMO)
    from fabstir_sdk._install_hints import pip_install

    lines = out.splitlines()
    needs = f"py-libp2p, which is not installed: {pip_install('p2p')} (the p2p extra)"
    skipped = f"DHT        skipped, the registry alone finds the host. P2P discovery needs {needs}"
    assert lines.count(skipped) == 1, out
    assert len([line for line in lines if "libp2p" in line or "DHT" in line]) == 1, out
    host = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # devnet account 2
    assert f"Found host {host} in the registry;" in lines, out
    assert re.search(r"host \(90%\)\s+1,800 micro-USDC = 0\.0018 USDC\n", out), out
    assert "  assistant  Your name is Ada." in lines, out


async def test_fabstir_demo_fails_loudly():
    """Any failure: the step that failed is marked, the error printed, the exit code 1."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fabstir_sdk.cli", "demo"),
        cwd=ROOT,
        env={**os.environ, "FABSTIR_ANVIL": "/bin/false"},  # an "anvil" that exits at once
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert (proc.returncode, out) == (1, b"")
    lines = err.decode().splitlines()
    assert lines[:2] == ["Starting the devnet (anvil, contracts, S5 portal)...", "  failed"]
    assert lines[2].startswith("fabstir: error: anvil exited with code 1"), lines
