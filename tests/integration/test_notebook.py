"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient +
ipykernel), with top-level await, and shows what it promises: rich tables and exact money."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def outputs(cell) -> tuple[str, str, dict[str, str]]:
    """(stdout, stderr, the last rich result's data by MIME type) of one executed cell."""
    out = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    err = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    results = [o.data for o in cell.outputs if o.output_type == "execute_result"]
    return out, err, dict(results[-1]) if results else {}


def find(nb, source_start: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    return cell


def td(label: str, value: str) -> str:
    return (
        f"<tr><th style='text-align:left'>{label}</th>"
        f"<td style='text-align:left'><code>{value}</code></td></tr>"
    )


#: Executes the notebook in a separate process (its kernel client, ZMQ sockets and all stay
#: out of the test process) and writes the executed copy.
RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient

nb = nbformat.read(sys.argv[1], as_version=4)
client = NotebookClient(
    nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": sys.argv[3]}}
)
client.execute()  # raises CellExecutionError naming the cell on any error
nbformat.write(nb, sys.argv[2])
"""


async def test_quickstart_notebook_runs_top_to_bottom(tmp_path):
    source = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in source.cells if c.cell_type == "code"), "clear it"
    executed = tmp_path / "executed.ipynb"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUNNER,
        str(NOTEBOOK),
        str(executed),
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, out.decode()
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []

    _, err, shown = outputs(find(nb, "from fabstir_sdk import FabstirSDK"))
    assert re.search(r"devnet: 100%\|[^|]+\| 3/3 \[.*S5 portal up\]", err), err
    assert re.fullmatch(
        r"Devnet\(rpc_url='http://127\.0\.0\.1:\d+', chain_id=31337\)", shown["text/plain"]
    )

    _, _, shown = outputs(find(nb, "host = await net.start_host"))
    assert shown["text/plain"] == "['fabstir/builtin:toy-1.gguf']"

    _, _, shown = outputs(find(nb, "sdk = FabstirSDK"))
    html = shown["text/html"]
    assert html.startswith(
        "<table><caption>Host 0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC</caption>"
    )
    assert (
        td("active", "True") in html and td("min price per 1000 tokens, stablecoin", "2000") in html
    )

    _, _, shown = outputs(find(nb, "sm = await sdk.get_session_manager()"))
    html = shown["text/html"]
    assert html.startswith("<table><caption>Session ")
    assert td("state", "open") in html and td("connected", "True") in html
    assert td("model", "fabstir/builtin:toy-1.gguf") in html
    assert td("price / 1000 tokens", "2000 base units") in html

    out, _, _ = outputs(find(nb, "async with session.stream"))
    assert out == "1 2 3 4 5 6 7 8 9 10"

    out, _, _ = outputs(find(nb, 'await session.send_prompt("My name is Ada.")'))
    assert "Ada" in out

    _, _, shown = outputs(find(nb, "await sm.get_session_status"))
    html = shown["text/html"]
    assert td("state", "ACTIVE") in html and td("messages", "6") in html
    assert td("deposit", "1000000 base units") in html

    _, _, shown = outputs(find(nb, "settlement = await session.complete()"))
    html = shown["text/html"]
    # 1000 tokens billed (the first checkpoint is padded to the proof interval) at 2000 per
    # 1000 tokens: 2000 paid, 10% of it to the treasury, the rest of 1 USDC refunded
    for label, value in [
        ("tokens used", "1000"),
        ("host payment (gross)", "2000 base units"),
        ("treasury fee", "200 base units"),
        ("host net", "1800 base units"),
        ("refund", "998000 base units"),
    ]:
        assert td(label, value) in html, html
    assert shown["text/plain"].startswith("Settlement(job_id=")
