import subprocess
import sys

import fabstir_sdk


def test_all_is_sorted_and_complete():
    public = sorted(n for n in dir(fabstir_sdk) if not n.startswith("_") or n == "__version__")
    modules = {"chain", "config", "errors", "models", "sdk", "managers"}
    assert fabstir_sdk.__all__ == sorted(fabstir_sdk.__all__)
    assert sorted(set(public) - modules) == sorted(fabstir_sdk.__all__)


def test_import_is_light():
    code = (
        "import sys, fabstir_sdk; "
        "print(sorted(m for m in ('web3', 'libp2p', 'trio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
