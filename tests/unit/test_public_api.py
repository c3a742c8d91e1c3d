import subprocess
import sys
import types

import fabstir_sdk


def test_all_is_sorted_and_complete():
    public = [
        n
        for n in dir(fabstir_sdk)
        if (not n.startswith("_") or n == "__version__")
        and not isinstance(getattr(fabstir_sdk, n), types.ModuleType)
    ]
    assert fabstir_sdk.__all__ == sorted(fabstir_sdk.__all__)
    assert sorted(public) == fabstir_sdk.__all__


def test_import_is_light():
    code = (
        "import sys, fabstir_sdk; "
        "print(sorted(m for m in ('web3', 'libp2p', 'trio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
