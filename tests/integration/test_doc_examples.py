"""Every block marked ``<!-- run -->`` in README.md and docs/ runs as written against a devnet.

Each is a complete program (or, marked ``<!-- run: pytest -->``, a test module run by pytest)
that starts its own devnet; when a ``<!-- output -->`` text block follows, the program's
output must equal it exactly. The markers are parsed by tests/unit/test_docs.py.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.unit.test_docs import ROOT, DocBlock, runnable_blocks

pytestmark = pytest.mark.integration

# Only to keep the repository's own pytest configuration out: a doc's test module must run
# with none (the fabstir plugin puts its async tests on the session loop by itself).
PYTEST_INI = "[pytest]\n"

# Runs a block as __main__; top-level ``await`` / ``async with`` is allowed (as in a notebook).
# Marked "with devnet", it runs inside a devnet with these names defined: net, config,
# private_key (account 1), FabstirSDK, and with "and host" a running reference host as host.
RUNNER = """import ast, asyncio, sys
from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet
kind, path = sys.argv[1], sys.argv[2]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

async def run(names):
    result = eval(code, {"__name__": "__main__", "__file__": path, **names})
    if asyncio.iscoroutine(result):
        await result

async def in_devnet():
    async with Devnet.start(with_s5=True) as net:
        names = {"net": net, "config": net.sdk_config(), "FabstirSDK": FabstirSDK,
                 "private_key": net.accounts[1].private_key}
        if kind == "devnet+host":
            names["host"] = await net.start_host(account=2)
        await run(names)

if kind == "python":
    result = eval(code, {"__name__": "__main__", "__file__": path})
    if asyncio.iscoroutine(result):
        asyncio.run(result)
else:
    asyncio.run(in_devnet())
"""

BLOCKS = runnable_blocks()


async def _run(*args: str, cwd: object) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
async def test_doc_example_runs(block: DocBlock, tmp_path):
    if block.run == "pytest":
        (tmp_path / "pytest.ini").write_text(PYTEST_INI)
        (tmp_path / "test_doc_example.py").write_text(block.code)
        args = (
            "-m",
            "pytest",
            "-q",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
            "test_doc_example.py",
        )
        code, out, err = await _run(sys.executable, *args, cwd=tmp_path)
        assert code == 0, f"{block.id}: pytest exited {code}\n{out}\n{err}"
        assert " passed" in out and "failed" not in out and "skipped" not in out, out
        return
    script = tmp_path / "example.py"
    script.write_text(block.code)
    code, out, err = await _run(sys.executable, "-c", RUNNER, block.run, str(script), cwd=ROOT)
    assert code == 0, f"{block.id}: exited {code}\n{out}\n{err}"
    if block.output is not None:
        assert out == block.output, f"{block.id}: printed\n{out}"


def test_the_examples_are_collected():
    assert [b.run for b in BLOCKS].count("python") >= 3
    assert [b.run for b in BLOCKS].count("devnet") >= 1
    assert [b.run for b in BLOCKS].count("pytest") >= 1
