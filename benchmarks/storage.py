"""Storage through StorageManager, embedded and over the local portal, against raw I/O.

For 1 KB, 1 MB and 100 MB: ``store_data`` then ``retrieve_data`` on the embedded store and
through the devnet's local S5 portal over HTTP. Baselines measured in the same run: the same
bytes written (and fsynced) to a plain file and read back, and one plain httpx POST / GET of
the same bytes to a bare aiohttp handler on loopback. Also: encryption + hashing throughput,
and the peak memory growth while 100 MB move (tracemalloc; for a retrieve, beyond the
returned bytes themselves).

Targets (storage issue): 1 KB store <= 2 ms embedded and <= 10 ms via the portal;
encryption + hashing >= 200 MB/s; 100 MB moves with peak memory growth < 64 MB.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import blake3
import httpx
from aiohttp import web

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.managers.storage import StorageManager
from fabstir_sdk.s5 import encrypt_blob
from fabstir_sdk.s5._crypto import decrypt_blob

from ._report import Row
from .payments import _median_ms

KB, MB = 1000, 1000 * 1000
SIZES = [("1 KB", KB), ("1 MB", MB), ("100 MB", 100 * MB)]


async def _peak_growth_mb(op: Callable[[], Awaitable[Any]], minus: int = 0) -> float:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        await op()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - base - minus) / MB


def _raw_file(path: Path, data: bytes) -> tuple[Callable[[], Awaitable[None]], ...]:
    def write() -> None:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read() -> None:
        with open(path, "rb") as f:
            f.read()

    async def awrite() -> None:
        await asyncio.to_thread(write)

    async def aread() -> None:
        await asyncio.to_thread(read)

    return awrite, aread


async def _raw_http_server() -> tuple[web.AppRunner, str]:
    held: dict[str, bytes] = {}

    async def post(request: web.Request) -> web.Response:
        held["body"] = await request.read()
        return web.json_response({"ok": True})

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=held.get("body", b""))

    app = web.Application(client_max_size=200 * MB)
    app.router.add_post("/raw", post)
    app.router.add_get("/raw", get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/raw"


def _runs_for(size: int, runs: int) -> int:
    return runs if size <= KB else max(3, runs // 5) if size <= MB else 3


async def run(runs: int) -> list[Row]:
    rows: list[tuple[str, str, float, float | None, str]] = []
    report: list[Row] = []
    memory: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fabstir-bench-") as tmp:
        async with Devnet.start(with_s5=True) as net:
            key = net.accounts[1].private_key
            embedded = FabstirSDK(net.sdk_config(s5_portal_url=None, storage_dir=Path(tmp) / "s"))
            portal = FabstirSDK(net.sdk_config())
            for sdk in (embedded, portal):
                await sdk.authenticate(key)
            stores: dict[str, StorageManager] = {
                "embedded": await embedded.get_storage_manager(),
                "portal": await portal.get_storage_manager(),
            }
            runner, raw_url = await _raw_http_server()
            http = httpx.AsyncClient(timeout=120)
            try:
                for label, size in SIZES:
                    data = os.urandom(size)
                    n = _runs_for(size, runs)
                    write, read = _raw_file(Path(tmp) / "raw.bin", data)
                    raw_write = await _median_ms(n, write)
                    raw_read = await _median_ms(n, read)

                    async def post(data: bytes = data) -> None:
                        (await http.post(raw_url, content=data)).raise_for_status()

                    async def get() -> None:
                        (await http.get(raw_url)).raise_for_status()

                    raw_post = await _median_ms(n, post)
                    raw_get = await _median_ms(n, get)
                    rows += [
                        ("raw file write + fsync", label, raw_write, None, ""),
                        ("raw file read", label, raw_read, None, ""),
                        ("raw httpx POST", label, raw_post, None, ""),
                        ("raw httpx GET", label, raw_get, None, ""),
                    ]
                    for where, st in stores.items():

                        async def store(st: StorageManager = st, data: bytes = data) -> None:
                            await st.store_data(f"bench-{len(data)}", data)

                        async def retrieve(st: StorageManager = st, size: int = size) -> None:
                            await st.retrieve_data(f"bench-{size}")

                        put_ms = await _median_ms(n, store)
                        get_ms = await _median_ms(n, retrieve)
                        base_put = raw_write if where == "embedded" else raw_post
                        base_get = raw_read if where == "embedded" else raw_get
                        raw_names = (
                            ("raw file write + fsync", "raw file read")
                            if where == "embedded"
                            else ("raw httpx POST", "raw httpx GET")
                        )
                        put_name, get_name = (
                            f"store {label} ({where})",
                            f"retrieve {label} ({where})",
                        )
                        report += [
                            Row("storage", put_name, put_ms, raw_names[0], base_put),
                            Row("storage", get_name, get_ms, raw_names[1], base_get),
                        ]
                        rows.append(
                            (
                                f"store ({where})",
                                label,
                                put_ms,
                                size / put_ms / 1000,
                                f"{put_ms / base_put:.1f}x",
                            )
                        )
                        rows.append(
                            (
                                f"retrieve ({where})",
                                label,
                                get_ms,
                                size / get_ms / 1000,
                                f"{get_ms / base_get:.1f}x",
                            )
                        )
                        if size >= 100 * MB:
                            memory.append((f"store 100 MB ({where})", await _peak_growth_mb(store)))
                            memory.append(
                                (
                                    f"retrieve 100 MB ({where})",
                                    await _peak_growth_mb(retrieve, minus=size),
                                )
                            )
                    del data
            finally:
                await http.aclose()
                await runner.cleanup()
                for sdk in (embedded, portal):
                    await sdk.aclose()

    payload = os.urandom(100 * MB)
    key32 = os.urandom(32)
    start = time.perf_counter()
    sealed = encrypt_blob(key32, payload)
    blake3.blake3(sealed).digest()
    seal_mbs = len(payload) / (time.perf_counter() - start) / MB
    start = time.perf_counter()
    blake3.blake3(sealed).digest()
    decrypt_blob(key32, sealed, len(payload))
    open_mbs = len(payload) / (time.perf_counter() - start) / MB

    print(f"# storage: StorageManager vs raw I/O, median of {runs} runs (1 MB: fewer, 100 MB: 3)")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{'operation':<26} {'size':>7} {'ms':>9} {'MB/s':>8} {'vs raw':>7}")
    for name, label, ms, mbs, ratio in rows:
        speed = f"{mbs:8.1f}" if mbs is not None else f"{'-':>8}"
        print(f"{name:<26} {label:>7} {ms:9.2f} {speed} {ratio:>7}")
    print(f"encrypt + hash (100 MB)    {seal_mbs:8.0f} MB/s   target >= 200")
    print(f"hash + decrypt (100 MB)    {open_mbs:8.0f} MB/s")
    for name, mb in memory:
        print(f"peak memory growth, {name:<26} {mb:6.1f} MB   target < 64")
    return report
