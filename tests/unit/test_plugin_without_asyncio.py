"""The pytest plugin where pytest-asyncio is missing: it loads, and a test that uses one of
its fixtures fails with the command that installs the testing extra."""

from __future__ import annotations

import os
import subprocess
import sys

from fabstir_sdk._install_hints import pip_install

# pytest with only our plugin, in an interpreter where importing pytest_asyncio fails.
DRIVER = (
    "import sys; sys.modules['pytest_asyncio'] = None; import pytest; "
    "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'fabstir_sdk.testing', "
    "'test_user.py']))"
)
USER_TEST = (
    "async def test_counts(fabstir_sdk, fabstir_host):\n    pass\n\n\ndef test_plain():\n    pass\n"
)


def test_a_test_using_the_fixtures_names_the_testing_extra(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    why = f"the fabstir fixtures need pytest-asyncio: {pip_install('testing')} (the testing extra)"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert why in lines, proc.stdout
    assert lines[-1] == "1 passed, 1 error in " + lines[-1].split(" in ")[1], proc.stdout
