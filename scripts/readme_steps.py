"""Write the README's pip-user material into a directory, for scripts/pip_user_check.sh.

Out come ``install.sh`` (the ``<!-- run: pip-user -->`` block, as written), ``quickstart.py``
and ``quickstart.out`` (the ``<!-- run -->`` program and its ``<!-- output -->``), and
``test_user.py`` (the ``<!-- run: pytest -->`` test module). The blocks are parsed by the
same code that tests the docs, so what CI runs is what the README shows.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.test_docs import doc_blocks  # noqa: E402


def main(out: Path) -> None:
    blocks = doc_blocks(ROOT / "README.md")
    (install,) = [b for b in blocks if b.run == "pip-user"]
    (quickstart,) = [b for b in blocks if b.run == "python"]
    (user_test,) = [b for b in blocks if b.run == "pytest"]
    assert quickstart.output is not None, "the quickstart's output block is missing"
    out.mkdir(parents=True, exist_ok=True)
    (out / "install.sh").write_text(install.code)
    (out / "quickstart.py").write_text(quickstart.code)
    (out / "quickstart.out").write_text(quickstart.output)
    (out / "test_user.py").write_text(user_test.code)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
