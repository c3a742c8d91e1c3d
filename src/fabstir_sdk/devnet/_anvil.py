"""Find and run anvil: one child process on 127.0.0.1 that never outlives us.

Three layers keep a devnet from leaking: :meth:`AnvilProcess.stop` (SIGTERM, then SIGKILL
after a short grace), an ``atexit`` hook for processes nobody stopped, and on Linux
``PR_SET_PDEATHSIG`` so the kernel kills anvil even when Python itself is SIGKILLed. anvil runs
in its own session, so a Ctrl-C in the terminal reaches only us and we stop it in order.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import platformdirs

from .._install_hints import fabstir_command
from ..chain.rpc import JsonRpcClient
from ..errors import AnvilNotFoundError, ConfigError, DevnetError, RpcError

__all__ = [
    "ANVIL_ENV",
    "ANVIL_NPM_DIR",
    "DEFAULT_CHAIN_ID",
    "LOOPBACK",
    "AnvilProcess",
    "anvil_cache_dir",
    "find_anvil",
    "npm_anvil",
    "pinned_anvil_version",
]

log = logging.getLogger("fabstir_sdk.devnet")

#: Environment variable naming the anvil binary to use; it wins over every other place.
ANVIL_ENV = "FABSTIR_ANVIL"
DEFAULT_CHAIN_ID = 31337
LOOPBACK = "127.0.0.1"

_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 5
_PORT_IN_USE = "Address already in use"
#: The pinned @foundry-rs/anvil (package.json and package-lock.json), shipped in the wheel.
ANVIL_NPM_DIR = Path(__file__).parent / "anvil_npm"
# A source checkout (editable install) has its own node_modules from `npm ci`; an installed
# wheel has no checkout, so this is used only where the checkout's pyproject.toml is.
_REPO_ROOT = Path(__file__).resolve().parents[3]  # src/fabstir_sdk/devnet/_anvil.py
_live: set[AnvilProcess] = set()


def pinned_anvil_version() -> str:
    """The @foundry-rs/anvil version the devnet is tested with (the repo's package.json)."""
    manifest = json.loads((ANVIL_NPM_DIR / "package.json").read_text())
    version: str = manifest["devDependencies"]["@foundry-rs/anvil"]
    return version


def anvil_cache_dir() -> Path:
    """Where ``fabstir devnet install`` puts the pinned anvil: the user's cache directory."""
    cache = Path(platformdirs.user_cache_dir("fabstir-sdk", appauthor=False))
    return cache / "anvil" / pinned_anvil_version()


def _npm_package() -> str:
    """The npm platform package of @foundry-rs/anvil, e.g. ``anvil-linux-amd64``."""
    system = {"win32": "win32", "darwin": "darwin"}.get(sys.platform, "linux")
    machine = platform.machine().lower()
    arch = "arm64" if machine in ("arm64", "aarch64") else "amd64"
    return f"anvil-{system}-{arch}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def npm_anvil(base: Path) -> Path:
    """Where an npm install of @foundry-rs/anvil in ``base`` puts this platform's binary."""
    name = "anvil.exe" if sys.platform == "win32" else "anvil"
    return base / "node_modules" / "@foundry-rs" / _npm_package() / "bin" / name


def find_anvil() -> Path:
    """The anvil binary: $FABSTIR_ANVIL; node_modules from the cwd upward (a project's or
    this checkout's pinned copy); anvil on PATH (Foundry's own install); the copy
    ``fabstir devnet install`` put in the user's cache directory."""
    explicit = os.environ.get(ANVIL_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not _executable(path):
            raise ConfigError(f"{ANVIL_ENV}={explicit} is not an executable file")
        return path
    cwd = Path.cwd().resolve()
    bases = [cwd, *cwd.parents]
    if (_REPO_ROOT / "pyproject.toml").is_file():
        bases.append(_REPO_ROOT)
    for base in bases:
        if _executable(npm_anvil(base)):
            return npm_anvil(base)
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    cached = npm_anvil(anvil_cache_dir())
    if _executable(cached):
        return cached
    raise AnvilNotFoundError(
        f"anvil not found: run `{fabstir_command('devnet install')}` (it installs the pinned "
        f"anvil {pinned_anvil_version()} from npm into {anvil_cache_dir()}); "
        f"Foundry's anvil on PATH or {ANVIL_ENV}=/path/to/anvil work too"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _secret_parts(url: str | None) -> list[str]:
    """Every form of ``url`` that could show an API key: whole, without user info, its user
    info, and its path and query (providers put keys there), longest first."""
    if not url:
        return []
    parts = urlsplit(url)
    bare = parts._replace(netloc=parts.hostname or "")
    if parts.port:
        bare = bare._replace(netloc=f"{parts.hostname}:{parts.port}")
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    userinfo = parts.netloc.rpartition("@")[0]
    candidates = {url, urlunsplit(bare), userinfo, tail, parts.path, parts.query}
    return sorted((c for c in candidates if len(c) > 1), key=len, reverse=True)


def _port_free(port: int) -> bool:
    """Whether nothing listens on the loopback ``port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when this thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died between fork and prctl: never run orphaned
            os._exit(1)

    return preexec


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.kill()


class AnvilProcess:
    """A running anvil on ``127.0.0.1:port``; create it with :meth:`start`."""

    def __init__(
        self, popen: subprocess.Popen[bytes], *, port: int, log_path: Path, secret: str | None
    ) -> None:
        self._popen = popen
        self.port = port
        self.log_path = log_path
        self.rpc_url = f"http://{LOOPBACK}:{port}"
        self._secrets = _secret_parts(secret)  # a fork URL may carry an API key
        _live.add(self)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self._popen.returncode}"
        return f"AnvilProcess(pid={self.pid}, rpc_url={self.rpc_url!r}, {state})"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    @classmethod
    async def start(
        cls,
        *,
        log_path: Path,
        port: int | None = None,
        chain_id: int | None = DEFAULT_CHAIN_ID,
        accounts: int = 10,
        block_time: float | None = None,
        fork_url: str | None = None,
        fork_block: int | None = None,
        load_state: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> AnvilProcess:
        """Launch anvil and return once it answers JSON-RPC with ``chain_id``.

        ``port=None`` (or 0) picks a free port and retries if another process takes it first;
        an explicit port that is in use is an error. ``fork_url`` makes anvil fork that chain
        (at ``fork_block``, default its latest); ``chain_id=None`` keeps the forked chain's id.
        ``load_state``: a state file (JSON, as ``anvil --dump-state`` writes it), loaded before
        anvil answers anything.
        """
        binary = find_anvil()
        if port and not _port_free(port):
            raise DevnetError(f"port {port} on {LOOPBACK} is already in use")
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            chosen = port or _free_port()
            args = [
                str(binary),
                "--host",
                LOOPBACK,
                "--port",
                str(chosen),
                "--quiet",
                "--accounts",
                str(accounts),
            ]
            if chain_id is not None:
                args += ["--chain-id", str(chain_id)]
            if block_time is not None:
                args += ["--block-time", f"{block_time:g}"]
            if load_state is not None:
                args += ["--load-state", str(load_state)]
            if fork_url:
                args += ["--fork-url", fork_url]
                if fork_block is not None:
                    args += ["--fork-block-number", str(fork_block)]
            proc = cls._spawn(args, port=chosen, log_path=log_path, secret=fork_url)
            try:
                await proc._wait_ready(chain_id, startup_timeout)
            except _PortTaken:
                proc.kill()
                if port:
                    raise DevnetError(f"port {chosen} on {LOOPBACK} is already in use") from None
                log.debug("port %d was taken (attempt %d), retrying", chosen, attempt)
                continue
            except BaseException:
                proc.kill()  # blocking on purpose: cleanup must finish even when cancelled
                raise
            return proc
        raise DevnetError(f"no free port for anvil after {_PORT_ATTEMPTS} attempts")

    @classmethod
    def _spawn(
        cls, args: list[str], *, port: int, log_path: Path, secret: str | None
    ) -> AnvilProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),  # a prctl only: safe after fork
            )
        return cls(popen, port=port, log_path=log_path, secret=secret)

    async def _wait_ready(self, chain_id: int | None, within: float) -> None:
        deadline = time.monotonic() + within
        rpc = JsonRpcClient(self.rpc_url, timeout=0.5)  # short: a squatter may never answer
        delay = 0.005
        try:
            while True:
                if not self.running:
                    if _PORT_IN_USE in self.log_tail():
                        raise _PortTaken
                    raise DevnetError(
                        f"anvil exited with code {self._popen.returncode} before answering; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(RpcError):
                    served = int(await rpc.call("eth_chainId"), 16)
                    if chain_id is not None and served != chain_id:
                        raise DevnetError(f"anvil serves chain {served}, expected {chain_id}")
                    if self.running:  # the answer came from our anvil, not a squatter
                        return
                    continue
                if time.monotonic() >= deadline:
                    raise DevnetError(
                        f"anvil did not answer on {self.rpc_url} within {within:g} s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        finally:
            await rpc.aclose()

    def log_tail(self, lines: int = 20) -> str:
        """The end of anvil's log, with the fork URL (it may hold an API key) redacted."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 8192))
                text = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL if anvil is still up after ``grace`` seconds. Idempotent."""
        if self.running:
            self._popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._popen.wait, grace)
            if self.running:
                log.warning("anvil (pid %d) ignored SIGTERM for %g s: killing it", self.pid, grace)
                self._popen.kill()
        self._reap()

    def kill(self, grace: float = 1.0) -> None:
        """The blocking form of :meth:`stop`, for atexit and cleanup paths. Idempotent."""
        if self.running:
            self._popen.terminate()
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._popen.kill()
        self._reap()

    def _reap(self) -> None:
        """Collect the exit status, so no zombie keeps the pid; a SIGKILL lands at once."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(5.0)
        _live.discard(self)


class _PortTaken(Exception):
    """anvil lost the race for its port to another process."""
