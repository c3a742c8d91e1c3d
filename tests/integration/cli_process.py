"""The ``fabstir`` command as its own process, as a person runs it: :func:`fabstir` starts
one, :func:`run` runs one to its end, :class:`Chat` drives ``fabstir chat`` line by line.

A process gets no key from the test run's environment: only what a test gives it
(``environ(FABSTIR_PRIVATE_KEY=...)``). Nothing here has a deadline: a process that dies
gives end-of-file at once, and one that hangs is ended by pytest's timeout (a short
deadline would fail on a loaded machine).

``net`` and ``host`` are the module-scoped fixtures of the chat tests (their own devnet,
with the S5 portal the conversations are kept in, and one reference host); a module takes
them with ``from .cli_process import host as host`` (and ``net as net``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet, RunningHost

from .host_helpers import BUILTIN

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "FABSTIR_PRIVATE_KEY"
HOST_KEY_ENV = "FABSTIR_HOST_PRIVATE_KEY"
HOST = 2  # the devnet account of ``host``


@pytest.fixture(scope="module")
async def net() -> AsyncIterator[Devnet]:
    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net: Devnet) -> AsyncIterator[RunningHost]:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


def environ(**extra: str) -> dict[str, str]:
    """This process's environment without any key, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, HOST_KEY_ENV)}
    return {**env, **extra}


def foreground() -> None:
    """``preexec_fn`` for a child that stands for a program a person runs in a terminal:
    SIGINT back to its default. A test run started as a shell's background job (SIGINT
    ignored, inherited by every child) would otherwise leave Ctrl-C ignored in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def fabstir(
    *argv: str,
    env: dict[str, str] | None = None,
    stdin: int | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> asyncio.subprocess.Process:
    """``fabstir ARGV`` started in the repository's root, stdout and stderr piped;
    ``env``: its whole environment (by default :func:`environ`, no key)."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fabstir_sdk.cli", *argv),
        cwd=ROOT,
        env=environ() if env is None else env,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=preexec_fn,
    )


async def run(
    *argv: str, env: dict[str, str] | None = None, input: str | None = None
) -> tuple[int, str, str]:
    """``fabstir ARGV`` to its end (``input`` on its stdin): exit code, stdout, stderr."""
    piped = None if input is None else asyncio.subprocess.PIPE
    proc = await fabstir(*argv, env=env, stdin=piped)
    out, err = await proc.communicate(None if input is None else input.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Chat:
    """A ``fabstir chat`` process: write lines to it, read its answers line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, net: Devnet, *args: str, key: str | None = None) -> Chat:
        argv = ["chat", "--manifest", str(net.manifest_path)]
        argv += ["--s5-portal-url", str(net.s5_portal_url), *args]
        env = environ() if key is None else environ(**{KEY_ENV: key})
        proc = await fabstir(*argv, env=env, stdin=asyncio.subprocess.PIPE, preexec_fn=foreground)
        return cls(proc)

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def say(self, line: str) -> str:
        """Send one line; the answer line it streams back."""
        assert self.proc.stdout is not None
        await self.send(line)
        answer = await self.proc.stdout.readline()
        return answer.decode().rstrip("\n")

    async def finish(self, last: str | None = None) -> tuple[int, str, str]:
        """Send ``last`` (if any), close stdin; exit code, rest of stdout, stderr."""
        assert self.proc.stdin is not None
        if last is not None:
            self.proc.stdin.write(last.encode() + b"\n")
        self.proc.stdin.close()
        out, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


def session_id(stderr: str) -> int:
    """The job id ``fabstir chat`` names on stderr when its session opens."""
    found = re.search(r"^Session (\d+) with host (0x[0-9a-fA-F]{40}) at", stderr, re.M)
    assert found, stderr
    return int(found.group(1))


async def usdc_of(net: Devnet, address: str) -> int:
    """``address``'s USDC, in base units."""
    async with FabstirSDK(net.sdk_config()) as sdk:
        return await sdk.get_payment_manager().get_token_balance(net.addresses.usdc_token, address)
