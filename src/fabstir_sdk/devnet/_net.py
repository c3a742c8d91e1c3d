"""The :class:`Devnet`: anvil plus our deployed contracts, funded accounts and a manifest."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import tempfile
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._display import Progress
from ..chain.rpc import JsonRpcClient
from ..config import ContractAddresses, SDKConfig
from ..errors import DevnetError, ValidationError
from ._accounts import DevAccount, derive_accounts
from ._anvil import DEFAULT_CHAIN_ID, AnvilProcess
from ._balances import AccountBalances, account_balances
from ._deploy import Deployment, deploy, write_manifest
from ._fork import fork_deployment, fund_accounts, reachable
from ._host_process import RunningHost
from ._p2p import DevnetBootstrap

if TYPE_CHECKING:
    from ..s5.server import PortalServer

__all__ = ["Devnet", "StartingDevnet"]

log = logging.getLogger("fabstir_sdk.devnet")

_ACCOUNTS = 10


def _state_dir(
    state_dir: str | Path | None,
) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    """The directory to use, and the temporary directory behind it when we own it."""
    if state_dir is not None:
        return Path(state_dir).resolve(), None
    owned = tempfile.TemporaryDirectory(prefix="fabstir-devnet-", ignore_cleanup_errors=True)
    return Path(owned.name), owned


class Devnet:
    """A local chain with our contracts, for tests, demos and notebooks.

    Start it with ``async with Devnet.start() as net:`` (stopped on exit, even on error) or
    ``net = await Devnet.start()`` and later ``await net.stop()``.
    """

    def __init__(
        self,
        *,
        anvil: AnvilProcess,
        rpc: JsonRpcClient,
        chain_id: int,
        accounts: list[DevAccount],
        deployment: Deployment,
        state_dir: Path,
        manifest_path: Path,
        owned_dir: tempfile.TemporaryDirectory[str] | None,
        portal: PortalServer | None = None,
    ) -> None:
        self.anvil = anvil
        self._rpc = rpc
        self.chain_id = chain_id
        self.accounts = accounts
        self.deployment = deployment
        self.state_dir = state_dir
        self.manifest_path = manifest_path
        self._owned_dir = owned_dir
        self._stopped = False
        self.portal = portal
        self._hosts: list[RunningHost] = []
        self._bootstrap = DevnetBootstrap()

    def __repr__(self) -> str:
        return f"Devnet(rpc_url={self.rpc_url!r}, chain_id={self.chain_id})"

    @classmethod
    def start(
        cls,
        block_time: float | None = None,
        with_s5: bool = False,
        *,
        port: int | None = None,
        chain_id: int | None = None,
        state_dir: str | Path | None = None,
        fork_url: str | None = None,
        fork_block: int | None = None,
        addresses: ContractAddresses | None = None,
        manifest: str | Path | None = None,
        startup_timeout: float = 30.0,
        progress: bool | None = None,
    ) -> StartingDevnet:
        """Start anvil, deploy and fund; ``await`` the result or use it with ``async with``.

        ``block_time`` (seconds) turns on interval mining; by default every transaction is
        mined at once. ``port`` None picks a free port. ``state_dir`` holds anvil.log and
        deployments/<chain_id>.json; by default a temporary directory, removed at stop.
        ``with_s5=True`` also starts a local S5 portal on 127.0.0.1 (its data in
        ``state_dir/s5-portal``); ``net.s5_portal_url`` and ``net.sdk_config()`` point to it.
        ``progress`` draws a bar (default: only in Jupyter).

        ``fork_url`` forks that chain (at ``fork_block``, default its latest) instead of
        deploying: the devnet uses the contracts already there, named by ``addresses`` or a
        deployment ``manifest``, by default the manifest shipped for the chain's id, so
        ``Devnet.start(fork_url=base_sepolia_rpc)`` is Base Sepolia with its contracts, its
        balances, and anvil's ten test accounts holding ETH and, like on a fresh devnet,
        1,000,000 of the chain's USDC and 100,000 of its FAB each (written into the tokens'
        storage), so hosts can stake and users pay. ``chain_id`` defaults to 31337, or to the
        forked chain's id.
        """
        if block_time is not None and not block_time > 0:
            raise ValidationError(f"block_time must be positive seconds, got {block_time!r}")
        if port is not None and not 0 <= port <= 65535:
            raise ValidationError(f"port must be 0..65535, got {port!r}")
        forking = {"fork_block": fork_block, "addresses": addresses, "manifest": manifest}
        if not fork_url and any(v is not None for v in forking.values()):
            given = ", ".join(k for k, v in forking.items() if v is not None)
            raise ValidationError(f"{given} only apply with fork_url")
        if addresses is not None and manifest is not None:
            raise ValidationError("pass addresses or manifest, not both")
        if fork_block is not None and (isinstance(fork_block, bool) or fork_block < 0):
            raise ValidationError(f"fork_block must be a block number, got {fork_block!r}")
        return StartingDevnet(
            cls,
            block_time=block_time,
            port=port,
            chain_id=chain_id,
            state_dir=state_dir,
            fork_url=fork_url,
            fork_block=fork_block,
            addresses=addresses,
            manifest=manifest,
            startup_timeout=startup_timeout,
            with_s5=with_s5,
            progress=progress,
        )

    @classmethod
    async def _launch(
        cls,
        *,
        block_time: float | None,
        port: int | None,
        chain_id: int | None,
        state_dir: str | Path | None,
        fork_url: str | None,
        startup_timeout: float,
        with_s5: bool = False,
        fork_block: int | None = None,
        addresses: ContractAddresses | None = None,
        manifest: str | Path | None = None,
        progress: bool | None = None,
    ) -> Devnet:
        started = time.perf_counter()
        base, owned = _state_dir(state_dir)
        anvil: AnvilProcess | None = None
        rpc: JsonRpcClient | None = None
        portal: PortalServer | None = None
        if chain_id is None and not fork_url:
            chain_id = DEFAULT_CHAIN_ID  # a fork keeps the forked chain's id unless told
        bar = Progress("devnet", total=3 if with_s5 else 2, unit="step", enabled=progress)
        try:
            # Deriving keys imports eth-account (~0.7 s): overlap it with anvil's start-up.
            derived = asyncio.create_task(asyncio.to_thread(derive_accounts, _ACCOUNTS))
            try:
                anvil = await AnvilProcess.start(
                    log_path=base / "anvil.log",
                    port=port,
                    chain_id=chain_id,
                    accounts=_ACCOUNTS,
                    block_time=block_time,
                    fork_url=fork_url,
                    fork_block=fork_block,
                    startup_timeout=startup_timeout,
                )
            except DevnetError:
                if fork_url:  # anvil's own words name neither the URL nor the reason plainly
                    await reachable(fork_url)
                raise
            finally:
                accounts = await derived
            booted = time.perf_counter()
            bar.update(1, status="anvil up")
            rpc = JsonRpcClient(anvil.rpc_url)
            served, funded = await rpc.batch([("eth_chainId", ()), ("eth_accounts", ())])
            chain_id = int(served, 16)
            if [a.lower() for a in funded] != [a.address.lower() for a in accounts]:
                raise DevnetError("anvil's accounts are not those of its default mnemonic")
            if fork_url:
                deployment = await fork_deployment(
                    rpc, chain_id=chain_id, addresses=addresses, manifest=manifest
                )
                await fund_accounts(rpc, deployment.addresses, [a.address for a in accounts])
            else:
                deployment = await deploy(
                    rpc, accounts[0], [a.address for a in accounts], chain_id=chain_id
                )
            bar.update(1, status=f"{deployment.transactions} transactions")
            manifest_path = base / "deployments" / f"{chain_id}.json"
            write_manifest(
                manifest_path,
                deployment,
                chain_id=chain_id,
                rpc_url=anvil.rpc_url,
                source=f"a local anvil forking chain {chain_id}" if fork_url else None,
            )
            if with_s5:
                from ..s5.server import PortalServer

                portal = PortalServer(base / "s5-portal")
                await portal.start()
                bar.update(1, status="S5 portal up")
        except BaseException:
            bar.close()
            if portal is not None:
                await portal.stop()
            if anvil is not None:
                anvil.kill()  # blocking on purpose: it must finish even when cancelled
            if owned is not None:
                owned.cleanup()
            if rpc is not None:
                with contextlib.suppress(Exception):
                    await rpc.aclose()
            raise
        bar.close()
        log.info(
            "devnet on %s ready in %.0f ms (anvil and keys %.0f ms, %d transactions %.0f ms)",
            anvil.rpc_url,
            (time.perf_counter() - started) * 1000,
            (booted - started) * 1000,
            deployment.transactions,
            deployment.seconds * 1000,
        )
        return cls(
            anvil=anvil,
            rpc=rpc,
            chain_id=chain_id,
            accounts=accounts,
            deployment=deployment,
            state_dir=base,
            manifest_path=manifest_path,
            owned_dir=owned,
            portal=portal,
        )

    # ------------------------------------------------------------------ what it offers

    @property
    def rpc_url(self) -> str:
        return self.anvil.rpc_url

    @property
    def addresses(self) -> ContractAddresses:
        return self.deployment.addresses

    @property
    def models(self) -> list[str]:
        """The approved models as ``"repo:file"``."""
        return [m.spec for m in self.deployment.models]

    @property
    def s5_portal_url(self) -> str | None:
        """The local S5 portal's URL with ``with_s5=True``; None: the embedded store."""
        return self.portal.url if self.portal is not None else None

    async def balances(self) -> list[AccountBalances]:
        """What each test account holds now (ETH, USDC, FAB), read from the chain."""
        return await account_balances(self._rpc, self.addresses, [a.address for a in self.accounts])

    async def restart_chain(self, downtime: float = 0.0) -> None:
        """Stop anvil and start it again on the same port with the same state (blocks,
        receipts, balances, contracts): an RPC endpoint that goes away and comes back, for
        fault tests. ``downtime`` seconds pass with nothing listening. Automining devnets
        only (no interval mining, no fork)."""
        dumped = bytes.fromhex(str(await self._rpc.call("anvil_dumpState")).removeprefix("0x"))
        # loaded as anvil starts, before it listens: a client that retries meanwhile never
        # meets the empty chain a later anvil_loadState would leave it for a moment
        saved = self.state_dir / "anvil-state.json"
        saved.write_bytes(gzip.decompress(dumped) if dumped[:2] == b"\x1f\x8b" else dumped)
        port = self.anvil.port
        await self.anvil.stop()
        if downtime > 0:
            await asyncio.sleep(downtime)
        self.anvil = await AnvilProcess.start(
            log_path=self.anvil.log_path,
            port=port,
            chain_id=self.chain_id,
            accounts=_ACCOUNTS,
            load_state=saved,
        )

    async def stop_portal(self) -> None:
        """Take the local S5 portal offline (a fault to test against); its data stays."""
        if self.portal is None:
            raise DevnetError("this devnet has no S5 portal: start it with with_s5=True")
        await self.portal.stop()

    async def start_portal(self) -> str:
        """Bring the portal back after :meth:`stop_portal`, on the same port; returns its URL."""
        if self.portal is None:
            raise DevnetError("this devnet has no S5 portal: start it with with_s5=True")
        return await self.portal.start()

    def sdk_config(self, **overrides: Any) -> SDKConfig:
        """An :class:`SDKConfig` for this devnet; the embedded store lives in the state dir."""
        fields: dict[str, Any] = {
            "rpc_url": self.rpc_url,
            "chain_id": self.chain_id,
            "contract_addresses": self.addresses,
            "deployment_block": self.deployment.block,
            "s5_portal_url": self.s5_portal_url,
            "storage_dir": self.state_dir / "storage",
        }
        return SDKConfig(**{**fields, **overrides})

    async def start_host(
        self,
        account: int = 2,
        models: Sequence[str] | None = None,
        backend: str = "builtin",
        price_per_token: int = 2000,
        *,
        startup_timeout: float = 60.0,
        debug: bool = False,
        p2p: bool = False,
        **options: Any,
    ) -> RunningHost:
        """Start the reference host as its own process, serving ``models`` as ``account``.

        It registers on NodeRegistry (stable minimum ``price_per_token``) with its public
        key in the metadata, listens on a free loopback port and runs until
        ``await host.stop()``, ``host.kill()`` or the devnet stops. ``models`` defaults to
        the built-in toy model. ``options`` are ``fabstir host run`` flags in snake case:
        ``token_delay=0.01``, ``checkpoint_tokens=500``, ``allow_plaintext=True``,
        ``price_per_token_native=...``, ``openai_base_url=..., openai_model=...``, ...
        ``signer_url=URL``: the account's key is in that JSON-RPC signer service (an anvil
        holding the devnet's accounts, for one): the process gets the URL and the address,
        never the key (docs/host.md, "The host's keys").

        ``p2p=True`` also runs the host's libp2p node (the ``p2p`` extra), joined to the
        devnet's bootstrap peer (:attr:`p2p_bootstrap`): it provides its models on the DHT,
        answers ``/fabstir/host/1.0.0`` and publishes ``peerId``/``p2pAddrs`` in its registry
        metadata (``host.peer_id``, ``host.p2p_addrs``). Off by default: importing libp2p
        adds about a second to the host's start.
        """
        from ._host_process import start_host

        if p2p:
            bootstrap = await self.start_p2p_bootstrap()
            options = {"p2p": True, "p2p_bootstrap": bootstrap, **options}
        host = await start_host(
            self,
            account=account,
            models=models,
            backend=backend,
            price_per_token=price_per_token,
            startup_timeout=startup_timeout,
            debug=debug,
            options=options,
        )
        self._hosts.append(host)
        return host

    async def start_p2p_bootstrap(self) -> list[str]:
        """Start the devnet's libp2p bootstrap peer (once); returns its multiaddrs.

        P2P hosts start it themselves; clients join with
        ``await dm.create_node(bootstrap=net.p2p_bootstrap)``.
        """
        return await self._bootstrap.start()

    @property
    def p2p_bootstrap(self) -> list[str]:
        """The bootstrap peer's multiaddrs ([] until a P2P host or
        :meth:`start_p2p_bootstrap` started it)."""
        return self._bootstrap.addrs

    # ------------------------------------------------------------------ time and state

    async def advance_time(self, seconds: int) -> int:
        """Mine a block exactly ``seconds`` after the latest one; returns its timestamp.

        Exact on purpose: ``evm_increaseTime`` alone would add the wall-clock time since the
        last block too, so "29 s into a 30 s window" could already be past it.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            raise ValidationError(f"seconds must be a non-negative int, got {seconds!r}")
        latest = await self._rpc.call("eth_getBlockByNumber", "latest", False)
        target = int(latest["timestamp"], 16) + seconds
        await self._rpc.call("evm_mine", target)
        return target

    async def snapshot(self) -> str:
        """Save the chain state; :meth:`revert` returns to it (once: the id is then spent)."""
        snapshot_id: str = await self._rpc.call("evm_snapshot")
        return snapshot_id

    async def revert(self, snapshot_id: str) -> None:
        """Restore the state (balances, contracts, nonces, time) saved by :meth:`snapshot`."""
        if not await self._rpc.call("evm_revert", snapshot_id):
            raise DevnetError(f"no snapshot {snapshot_id} (each id can be reverted to once)")

    # ------------------------------------------------------------------ lifecycle

    async def stop(self) -> None:
        """Stop anvil and remove what this devnet wrote that would now be stale. Idempotent.

        The manifest goes (its RPC URL is dead); anvil.log stays in a caller's state_dir.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            for host in self._hosts:  # first: their final proofs need the chain and portal
                await host.stop()
            await self._bootstrap.stop()
            if self.portal is not None:
                await self.portal.stop()
            await self._rpc.aclose()
            await self.anvil.stop()
        finally:
            for host in self._hosts:
                host.kill()  # no-op when stopped
            self.anvil.kill()  # no-op when stopped; finishes the job if we were cancelled
            self.manifest_path.unlink(missing_ok=True)
            if self._owned_dir is not None:
                self._owned_dir.cleanup()

    async def __aenter__(self) -> Devnet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class StartingDevnet:
    """What :meth:`Devnet.start` returns: ``await`` it, or enter it with ``async with``."""

    def __init__(self, devnet: type[Devnet], **options: Any) -> None:
        self._devnet = devnet
        self._options = options
        self._net: Devnet | None = None

    def __await__(self) -> Generator[Any, None, Devnet]:
        return self._devnet._launch(**self._options).__await__()

    async def __aenter__(self) -> Devnet:
        self._net = await self
        return self._net

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._net is not None:
            await self._net.stop()
