"""Progress bars where work is long: starting a devnet, large uploads to an S5 portal."""

from __future__ import annotations

import re

import pytest

from fabstir_sdk._display import PROGRESS_ENV
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.s5 import S5Identity, blob_id
from fabstir_sdk.s5._portal import PROGRESS_AFTER, PortalClient

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


async def test_devnet_start_and_large_uploads_draw_bars(capsys, monkeypatch):
    async with Devnet.start(with_s5=True, progress=True) as net:
        err = capsys.readouterr().err
        assert re.search(r"devnet: 100%\|[^|]+\| 3/3 \[.*S5 portal up\]", err), err

        monkeypatch.setenv(PROGRESS_ENV, "1")
        client = PortalClient(net.s5_portal_url, S5Identity(b"progress-test-seed-0123456789"))
        try:
            small = bytes(range(256)) * 4096  # 1 MiB: no bar
            assert await client.put_blob(lambda: [small]) == blob_id(small)
            assert capsys.readouterr().err == ""

            piece = b"\x5a" * MIB
            pieces = PROGRESS_AFTER // MIB + 2
            whole = piece * pieces
            assert await client.put_blob(lambda: [piece] * pieces) == blob_id(whole)
        finally:
            await client.aclose()
        err = capsys.readouterr().err
        # drawn once 8 MiB went out (from the 7 MiB before that piece), closed at 10 MiB
        assert err.startswith("\rS5 upload: 7.00MB [00:00, ?B/s]"), err
        assert re.search(r"\rS5 upload: 10\.0MB \[\d\d:\d\d, [\d.]+[kMG]?B/s\]\n$", err), err


async def test_no_bars_outside_notebooks_by_default(capsys, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    async with Devnet.start():
        pass
    assert capsys.readouterr().err == ""
