"""The private key never shows up in logs (DEBUG included), reprs or error messages."""

from __future__ import annotations

import logging

import pytest

from fabstir_sdk import FabstirSDK, SessionNotActiveError

from .conftest import ETH_PRICE, HOST, USER


def forms(key: str) -> list[str]:
    bare = key.removeprefix("0x")
    return [bare.lower(), bare.upper(), bare[:16].lower()]


async def test_key_absent_from_debug_logs_reprs_and_errors(devnet, host, caplog):
    key = devnet.accounts[USER].private_key
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with FabstirSDK(devnet.sdk_config()) as sdk:
        await sdk.authenticate(key)
        pm = sdk.get_payment_manager()
        job = await pm.create_eth_session_job(
            devnet.accounts[HOST].address, "0.005", ETH_PRICE, 3600, 100, model=devnet.models[0]
        )
        await pm.complete_session_job(job.job_id)
        with pytest.raises(SessionNotActiveError) as info:  # a revert: its message is scanned too
            await sdk.get_host_manager().submit_proof_of_work(job.job_id, 100, b"\1" * 32, "", "")
        texts += [str(info.value), repr(info.value)]
        texts += [repr(sdk), str(sdk), repr(pm), repr(sdk.get_auth_manager())]
        texts += [repr(sdk.get_host_manager()), repr(devnet.accounts[USER])]
        texts += [repr(sdk._ctx), repr(sdk._ctx.sender)]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)
    assert len(caplog.records) > 0  # DEBUG logging was really on
    blob = "\n".join(texts)
    for form in forms(key):
        assert form not in blob
