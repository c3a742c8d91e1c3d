"""The docs site builds with ``mkdocs build --strict``, and every code block in it is valid.

Blocks marked ``<!-- run -->`` (complete programs), ``<!-- run: pytest -->`` (a test module)
or ``<!-- run: with devnet -->`` (a fragment given a devnet's names) are run by
tests/integration/test_doc_examples.py; every other ``python`` block must at least compile
(top-level ``await`` allowed).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(`{3,})(\w*)\s*$")
# marker -> how the block runs: a program; a test module; a fragment given a devnet's names
RUN_MARKERS = {
    "run": "python",
    "run: pytest": "pytest",
    "run: with devnet": "devnet",
    "run: with devnet and host": "devnet+host",
    # shell: a pip user's install steps, run by scripts/pip_user_check.sh in a new venv
    "run: pip-user": "pip-user",
    # shell: a clone's steps, run by .ci/run (CI is a fresh clone)
    "run: clone": "clone",
}
#: The kinds tests/integration/test_doc_examples.py runs; the shell kinds run in CI scripts.
PYTHON_KINDS = ("python", "pytest", "devnet", "devnet+host")


@dataclass(frozen=True)
class DocBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    run: str | None  # None (a fragment that only compiles) or a value of RUN_MARKERS
    output: str | None  # the expected output of a run block, if given

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _marker(lines: list[str], before: int) -> str | None:
    """The ``<!-- ... -->`` comment on the last non-blank line before ``before``, if any."""
    for i in range(before - 1, -1, -1):
        text = lines[i].strip()
        if text:
            match = re.fullmatch(r"<!--\s*(.+?)\s*-->", text)
            return match.group(1) if match else None
    return None


def doc_blocks(path: Path) -> list[DocBlock]:
    """Every fenced block of a markdown file, with its run marker and expected output."""
    lines = path.read_text().splitlines()
    raw: list[tuple[int, int, str, str]] = []  # (open index, close index, lang, code)
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        close = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == opening.group(1))
        raw.append((i, close, opening.group(2), "\n".join(lines[i + 1 : close]) + "\n"))
        i = close + 1
    blocks = []
    for n, (start, end, lang, code) in enumerate(raw):
        marker = _marker(lines, start)
        run = RUN_MARKERS.get(marker or "")
        if marker is not None and marker.startswith("run") and run is None:
            raise ValueError(f"{path}:{start + 1}: unknown marker <!-- {marker} -->")
        output = None
        if run and n + 1 < len(raw):
            nxt = raw[n + 1]
            between = [x.strip() for x in lines[end + 1 : nxt[0]] if x.strip()]
            if between == ["<!-- output -->"] and nxt[2] == "text":
                output = nxt[3]
        blocks.append(DocBlock(path, start + 1, lang, code, run, output))
    return blocks


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def all_blocks() -> list[DocBlock]:
    return [block for path in doc_files() for block in doc_blocks(path)]


def runnable_blocks() -> list[DocBlock]:
    return [block for block in all_blocks() if block.run in PYTHON_KINDS]


def shell_blocks(kind: str) -> list[DocBlock]:
    """The ``<!-- run: pip-user -->`` or ``<!-- run: clone -->`` blocks, in page order."""
    return [block for block in all_blocks() if block.run == kind]


def test_the_site_builds_strict(tmp_path):
    """Broken links, missing nav pages and unresolvable API references fail the build."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    # the API reference was generated from the docstrings, not left empty
    api = (tmp_path / "api" / "fabstir_sdk" / "index.html").read_text()
    assert 'id="fabstir_sdk.FabstirSDK.authenticate"' in api
    managers = (tmp_path / "api" / "managers" / "index.html").read_text()
    assert 'id="fabstir_sdk.managers.session.SessionManager.create_session"' in managers
    for page in ("quickstart", "howto/test-with-devnet", "benchmarks", "protocol"):
        assert (tmp_path / page / "index.html").is_file(), page


def test_every_python_fragment_compiles():
    fragments = [b for b in all_blocks() if b.lang == "python" and not b.run]
    assert len(fragments) >= 8
    for block in fragments:
        code = block.code
        if code.lstrip().startswith(">>>"):  # a doctest-style block: its input lines
            code = "".join(line[4:] + "\n" for line in code.splitlines() if line.startswith(">>> "))
        try:
            compile(code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{block.id}: {exc}")


def test_runnable_blocks_are_found():
    found = {b.id: b for b in runnable_blocks()}
    readme = [b for b in found.values() if b.path.name == "README.md"]
    assert [b.run for b in readme] == ["python", "pytest"]  # its quickstart, a user's test
    assert "create_session(" in readme[0].code and readme[0].output
    assert len([line for line in readme[1].code.splitlines()[1:] if line.strip()]) == 3
    quickstart = [b for b in found.values() if b.path.name == "quickstart.md"]
    assert len(quickstart) == 1 and quickstart[0].output
    assert [b.run for b in found.values() if b.path.name == "test-with-devnet.md"] == ["pytest"]


def test_the_parser_reads_markers_and_outputs(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n\n<!-- run -->\n```python\nprint(1)\n```\n\n<!-- output -->\n```text\n1\n```\n"
        "```python\nx = 1\n```\n<!-- run: pytest -->\n\n````python\ndef test(): pass\n````\n"
    )
    blocks = doc_blocks(page)
    assert [(b.line, b.lang, b.run, b.output) for b in blocks] == [
        (4, "python", "python", "1\n"),
        (9, "text", None, None),
        (12, "python", None, None),
        (17, "python", "pytest", None),
    ]
    assert blocks[3].code == "def test(): pass\n"
    page.write_text("<!-- run: bash -->\n```sh\nls\n```\n")
    with pytest.raises(ValueError, match="unknown marker"):
        doc_blocks(page)


def test_install_paths_pip_first_then_clone():
    """README and docs/index.md: the pip path first, the clone path second, both run (the
    pip steps by scripts/pip_user_check.sh, the clone's by .ci/run)."""
    from fabstir_sdk import __version__

    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        kinds = [b.run for b in doc_blocks(page) if b.run in ("pip-user", "clone")]
        assert kinds == ["pip-user", "clone"], page
    (pip_user,) = [b for b in shell_blocks("pip-user") if b.path.name == "README.md"]
    steps = [line.split("#")[0].strip() for line in pip_user.code.splitlines()]
    assert steps == [
        "python3 -m venv .venv && . .venv/bin/activate",
        f"pip install './fabstir_sdk-{__version__}-py3-none-any.whl[testing]'",
        "fabstir devnet install",
        "fabstir demo",
    ]
    from fabstir_sdk.devnet._anvil import pinned_anvil_version

    assert f"# anvil {pinned_anvil_version()}, pinned," in pip_user.code
    index = [b for b in shell_blocks("pip-user") if b.path.name == "index.md"]
    assert [b.code for b in index] == [pip_user.code]  # one set of steps, shown twice
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for block in shell_blocks("clone"):
        first, *commands = [line.split("#")[0].strip() for line in block.code.splitlines()]
        assert first.startswith("git clone ") and first.endswith("&& cd fabstir-sdk")
        assert commands and all(command in ci for command in commands), block.id


def _extras_table(page: Path) -> list[str]:
    lines = page.read_text().splitlines()
    start = lines.index("| extra | adds | needed for |")
    return lines[start : start + next(i for i, x in enumerate(lines[start:]) if not x.strip())]


def test_one_table_of_extras():
    """The extras table (README and docs/index.md show the same one) names every extra."""
    import tomllib

    table = _extras_table(ROOT / "README.md")
    assert _extras_table(ROOT / "docs" / "index.md") == table
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert [row.split("|")[1].strip(" `") for row in table[2:]] == list(extras)
