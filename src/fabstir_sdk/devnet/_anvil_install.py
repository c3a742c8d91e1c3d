"""``fabstir devnet install``: the pinned anvil from npm, for a pip install with no checkout.

npm installs @foundry-rs/anvil from the wheel's own package-lock.json (``npm ci``), so the
version and the integrity hash of every tarball are the ones the repository tests with; the
binary comes inside this platform's npm package. Nothing is downloaded from anywhere but the
npm registry. The install goes to a scratch directory beside the target and is renamed into
place once anvil answers ``--version``, so a failed or interrupted install leaves nothing that
:func:`find_anvil` would pick up.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from ..errors import DevnetError
from ._anvil import ANVIL_NPM_DIR, anvil_cache_dir, npm_anvil, pinned_anvil_version

__all__ = ["install_anvil"]

_NPM_CI = [
    "ci",
    "--no-audit",
    "--no-fund",
    "--loglevel=error",
    "--include=dev",
    "--include=optional",
]
_NO_NPM = (
    "npm not found: `fabstir devnet install` uses npm to fetch the pinned anvil from the npm "
    "registry. Install Node.js (it includes npm: https://nodejs.org or your package manager) "
    "and run it again, or install Foundry (https://getfoundry.sh) so anvil is on PATH"
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _install_blocking(target: Path, *, force: bool, say: Callable[[str], None]) -> Path:
    version = pinned_anvil_version()
    binary = npm_anvil(target)
    if binary.is_file() and not force:
        say(f"anvil {version} is already installed: {binary}")
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise DevnetError(_NO_NPM)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if binary.is_file() and not force:  # another process installed it meanwhile
            say(f"anvil {version} is already installed: {binary}")
            return binary
        scratch = target.parent / f".{target.name}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(ANVIL_NPM_DIR / name, scratch / name)
            say(f"Installing anvil {version} (npm package @foundry-rs/anvil) into {target}")
            done = _run([npm, *_NPM_CI], scratch)
            if done.returncode != 0:
                raise DevnetError(
                    f"npm ci failed (exit {done.returncode}) installing @foundry-rs/anvil "
                    f"{version}:\n{_tail(done.stderr or done.stdout)}"
                )
            built = npm_anvil(scratch)
            if not built.is_file():
                raise DevnetError(
                    f"npm installed @foundry-rs/anvil {version} but not its binary for this "
                    f"platform ({built.relative_to(scratch)}); Foundry's own installer "
                    "(https://getfoundry.sh) may support it"
                )
            check = _run([str(built), "--version"], scratch)
            if check.returncode != 0 or version not in check.stdout:
                raise DevnetError(
                    f"the installed anvil does not run as version {version}: "
                    f"{_tail(check.stdout + check.stderr, 3)}"
                )
            shutil.rmtree(target, ignore_errors=True)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    say(f"Installed: {binary}")
    return binary


async def install_anvil(
    *, target: Path | None = None, force: bool = False, say: Callable[[str], None] = print
) -> Path:
    """Install the pinned anvil into ``target`` (default: the user's cache directory, where
    :func:`~fabstir_sdk.devnet.find_anvil` looks) and return the binary's path. Already
    there, it does nothing unless ``force``."""
    return await asyncio.to_thread(
        _install_blocking, target or anvil_cache_dir(), force=force, say=say
    )
