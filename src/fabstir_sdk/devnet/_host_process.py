"""Run the reference host as a real separate process on a devnet (``Devnet.start_host``).

The host runs ``python -m fabstir_sdk.host run ...`` against the devnet's manifest, with its
key in the environment (never on the command line) or, given ``signer_url``, in a signer
service (the process gets the URL and the address only), listens on a free loopback port and
prints one JSON line once it is registered and serving. Like anvil it never outlives us:
:meth:`RunningHost.stop` (SIGTERM, then SIGKILL), an ``atexit`` hook, and on Linux
``PR_SET_PDEATHSIG``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DevnetError, ValidationError
from ._anvil import _die_with_parent

if TYPE_CHECKING:
    from ._net import Devnet

__all__ = ["RunningHost", "start_host"]

log = logging.getLogger("fabstir_sdk.devnet")

_live: set[RunningHost] = set()
_KEY_ENV = "FABSTIR_HOST_PRIVATE_KEY"


@atexit.register
def _kill_leftovers() -> None:
    for host in list(_live):
        host.kill()


class RunningHost:
    """A reference host process serving a devnet."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        address: str,
        api_url: str,
        public_key: str,
        models: list[str],
        log_path: Path,
        peer_id: str | None = None,
        p2p_addrs: list[str] | None = None,
    ) -> None:
        self._popen = popen
        self.address = address
        self.api_url = api_url
        self.public_key = public_key
        self.models = models
        self.log_path = log_path
        #: The host's libp2p peer id and addresses (None and [] when it runs no node).
        self.peer_id = peer_id
        self.p2p_addrs = list(p2p_addrs or [])
        _live.add(self)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self._popen.returncode}"
        return f"RunningHost(address={self.address!r}, api_url={self.api_url!r}, {state})"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    @property
    def ws_url(self) -> str:
        return self.api_url.replace("http", "ws", 1) + "/v1/ws"

    async def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (the host closes sessions and submits final proofs), SIGKILL after
        ``grace`` seconds. Idempotent."""
        if self.running:
            self._popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._popen.wait, grace)
            if self.running:
                log.warning("host (pid %d) ignored SIGTERM for %g s: killing it", self.pid, grace)
                self._popen.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL at once: a crash, as far as clients and the chain can tell. Idempotent."""
        if self.running:
            self._popen.kill()
        self._reap()

    def _reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(5.0)
        _live.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _arguments(
    net: Devnet,
    models: Sequence[str],
    backend: str,
    price_per_token: int,
    options: dict[str, Any],
) -> list[str]:
    args = ["run", "--manifest", str(net.manifest_path), "--port", "0", "--ready-json"]
    for model in models:
        args += ["--model", model]
    args += ["--backend", backend, "--price-per-token", str(price_per_token)]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, list | tuple):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag] if value is True else [flag, str(value)]
    return args


async def start_host(
    net: Devnet,
    *,
    account: int,
    models: Sequence[str] | None,
    backend: str,
    price_per_token: int,
    startup_timeout: float,
    debug: bool,
    options: dict[str, Any],
) -> RunningHost:
    if not 0 < account < len(net.accounts):
        raise ValidationError(f"account must be 1..{len(net.accounts) - 1} (0 deployed)")
    models = list(models) if models else [net.models[-1]]
    if net.s5_portal_url and "storage_dir" not in options:
        options = {"s5_portal_url": net.s5_portal_url, **options}
    dev = net.accounts[account]
    if "state_dir" not in options:  # the same account's host restarts with its memory
        options = {**options, "state_dir": net.state_dir / "hosts" / f"state-{account}"}
    log_path = net.state_dir / "hosts" / f"host-{account}-{int(time.time() * 1000)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if options.get("signer_url"):  # the key stays in the signer service: not even in env
        options = {"signer_address": dev.address, **options}
        env.pop(_KEY_ENV, None)
    else:
        env[_KEY_ENV] = dev.private_key
    argv = [sys.executable, "-m", "fabstir_sdk.host", *(["--debug"] if debug else [])]
    argv += _arguments(net, models, backend, price_per_token, options)
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(  # noqa: ASYNC220  (prctl: must fork from the loop's thread)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # from this (the loop's) thread: see prctl(2)
        )
    assert popen.stdout is not None
    reader = asyncio.create_task(asyncio.to_thread(popen.stdout.readline))
    try:
        line = await asyncio.wait_for(reader, startup_timeout)
    except BaseException:
        popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5.0)
        raise
    finally:
        popen.stdout.close()
    try:
        ready = json.loads(line)
        assert ready.get("event") == "ready"
    except (ValueError, AssertionError):
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5.0)
        if popen.poll() is None:
            popen.kill()
            popen.wait(5.0)
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise DevnetError(
            f"the host did not start (exit {popen.returncode}); log {log_path}:\n" + "\n".join(tail)
        ) from None
    return RunningHost(
        popen,
        address=ready["address"],
        api_url=ready["api_url"],
        public_key=ready["public_key"],
        models=ready["models"],
        log_path=log_path,
        peer_id=ready.get("peer_id"),
        p2p_addrs=ready.get("p2p_addrs"),
    )
