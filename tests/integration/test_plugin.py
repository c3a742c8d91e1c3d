"""The ``fabstir`` pytest plugin, as a user meets it: pytest in a fresh process, in a project
with no configuration, loading the plugin through its ``pytest11`` entry point."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LOOP_SCOPE = "asyncio_default_fixture_loop_scope"

NOTHING_STARTED = """
import sys

import pytest


def test_the_plugin_is_loaded_and_has_started_nothing(request):
    assert request.config.pluginmanager.has_plugin("fabstir")
    loaded = sorted(m for m in sys.modules if m.startswith("fabstir_sdk.devnet"))
    assert loaded == []


@pytest.mark.asyncio  # strict mode: the plugin marks only tests that use its fixtures
async def test_async_tests_without_our_fixtures_are_left_alone(request):
    assert "fabstir_sdk.devnet" not in sys.modules
"""

# The three lines of the module docstring, exactly as a user would write them.
USER_TEST = """
async def test_counts(fabstir_sdk, fabstir_host):
    sm = await fabstir_sdk.get_session_manager()
    session = await sm.create_session(model=fabstir_host.models[0], host=fabstir_host.address)
    assert (await session.send_prompt("count to 3")).text == "1 2 3"


async def test_one_devnet_and_host_for_the_session(fabstir_devnet, fabstir_sdk, fabstir_host):
    assert fabstir_devnet.s5_portal_url is not None
    assert fabstir_sdk.get_auth_manager().get_user_address() == fabstir_devnet.accounts[1].address
    assert fabstir_host.address == fabstir_devnet.accounts[2].address
    assert fabstir_host.models == ["fabstir/builtin:toy-1.gguf"]
    info = await fabstir_sdk.get_host_manager().get_host_info(fabstir_host.address)
    assert info.is_active and info.api_url == fabstir_host.api_url
"""

FORK_CONFTEST = """
import os

import pytest


@pytest.fixture(scope="session")
def fabstir_devnet_options():
    return {"fork_url": os.environ["FORK_URL"], "manifest": os.environ["FORK_MANIFEST"]}
"""

FORK_TEST = """
import os


async def test_runs_on_the_fork(fabstir_devnet, fabstir_sdk):
    assert fabstir_devnet.rpc_url != os.environ["FORK_URL"]
    assert fabstir_devnet.addresses.job_marketplace == os.environ["MARKET"]
    assert fabstir_devnet.deployment.transactions == 0  # nothing deployed: forked
    assert await fabstir_sdk.get_payment_manager().get_deposit_balance() == 7 * 10**16
"""


MARKS_CONFTEST = """
def pytest_collection_modifyitems(items):
    for item in items:
        mark = item.get_closest_marker("asyncio")
        print("ITEM", item.name, type(item).__name__, mark and mark.kwargs)
"""

MARKS_TEST = """
import pytest


async def test_uses_ours(fabstir_sdk):
    pass


@pytest.mark.asyncio(loop_scope="module")
async def test_chose_its_loop(fabstir_devnet):
    pass


async def test_not_ours():
    pass
"""


async def run_pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """pytest in ``project`` (no ini file: pytest-asyncio's strict mode, function loops)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(project),
        *args,
        cwd=project,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


async def test_a_users_integration_test_is_three_lines(tmp_path):
    write(tmp_path / "test_a_nothing.py", NOTHING_STARTED)
    write(tmp_path / "test_b_chat.py", USER_TEST)
    out = await run_pytest(tmp_path, "-W", "error")  # any warning would fail the run
    assert re.search(r"^4 passed in [\d.]+s", out, re.M), out
    assert "Warning" not in out and "warnings summary" not in out, out


@pytest.mark.parametrize(
    ("option", "scope"), [((), "fixture-scope"), (("-o", f"{LOOP_SCOPE}=module"), "module")]
)
async def test_no_loop_scope_warning_and_a_users_setting_is_kept(tmp_path, option, scope):
    """pytest-asyncio warns on every run while its fixture loop scope is unset; the plugin
    sets the value that behaves as unset does, and leaves one the user chose alone."""
    write(tmp_path / "test_a_nothing.py", NOTHING_STARTED)
    out = await run_pytest(tmp_path, "-W", "error", "-v", *option)
    assert f"{LOOP_SCOPE}={scope}," in out, out
    assert re.search(r"^=+ 2 passed in [\d.]+s =+$", out, re.M), out
    assert "Warning" not in out and "warnings summary" not in out, out


@pytest.mark.parametrize("mode", ["strict", "auto"])
async def test_which_tests_the_plugin_puts_on_the_session_loop(tmp_path, mode):
    write(tmp_path / "conftest.py", MARKS_CONFTEST)
    write(tmp_path / "test_marks.py", MARKS_TEST)
    out = await run_pytest(tmp_path, "--collect-only", "-s", "-o", f"asyncio_mode={mode}")
    items = sorted(line for line in out.splitlines() if line.startswith("ITEM "))
    assert items == [
        "ITEM test_chose_its_loop Coroutine {'loop_scope': 'module'}",
        "ITEM test_not_ours Coroutine {}" if mode == "auto" else "ITEM test_not_ours Function None",
        "ITEM test_uses_ours Coroutine {'loop_scope': 'session'}",
    ]


async def test_a_user_can_point_the_fixtures_at_a_fork(tmp_path, devnet, sdk_for):
    user = await sdk_for(1)
    await user.get_payment_manager().deposit("0.07")  # on the original: the fork must see it
    write(tmp_path / "conftest.py", FORK_CONFTEST)
    write(tmp_path / "test_fork.py", FORK_TEST)
    env = {
        "FORK_URL": devnet.rpc_url,
        "FORK_MANIFEST": str(devnet.manifest_path),
        "MARKET": devnet.addresses.job_marketplace,
    }
    out = await run_pytest(tmp_path, env=env)
    assert re.search(r"^1 passed", out, re.M), out
