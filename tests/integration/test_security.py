"""Secrets stay secret across whole sessions: with every logger at DEBUG, the user's private
key and S5 seed appear in no log record, repr, error message or traceback; the host's key
is not in its own DEBUG log; storage at rest (the embedded store and the S5 portal's
files) holds neither key material nor a byte of the conversation in plaintext.

Private devnet (with an S5 portal) and host process, as in the other host tests.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from pathlib import Path

import pytest

from fabstir_sdk import FabstirError, FabstirSDK, PriceAboveMaximumError
from fabstir_sdk.devnet import Devnet, RunningHost

from .host_helpers import BUILTIN, PRICE

pytestmark = pytest.mark.integration

USER, HOST = 1, 2
#: A word the conversation carries and nothing else does, to look for in files at rest.
SECRET_WORD = "Quetzalcoatlus"


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1, debug=True)
    yield running
    await running.stop()


def text_forms(secret: bytes) -> list[str]:
    """How a 32-byte secret could be written: hex both cases, 0x, a 16-digit prefix, base64."""
    bare = secret.hex()
    return [
        bare,
        bare.upper(),
        "0x" + bare,
        bare[:16],
        bare[:16].upper(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ]


def leaks(blob: str, secrets: dict[str, bytes]) -> list[str]:
    return [
        f"{name} as {form[:6]}..."
        for name, secret in secrets.items()
        for form in text_forms(secret)
        if form in blob
    ]


def explain(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


@pytest.fixture
def debug_everywhere(caplog):
    """Root and every logger that has a level of its own at DEBUG, for the test."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


async def test_keys_absent_from_everything_a_session_prints(net, host, debug_everywhere):
    key_hex = net.accounts[USER].private_key
    key = bytes.fromhex(key_hex.removeprefix("0x"))
    texts: list[str] = []
    async with FabstirSDK(net.sdk_config()) as sdk:
        # a malformed key one digit away from the real one: the error must not echo it
        near = key_hex.removeprefix("0x")[:-1] + "g"
        with pytest.raises(FabstirError) as bad_key:
            await sdk.authenticate(near)
        texts += explain(bad_key.value)
        await sdk.authenticate(key_hex)
        seed = bytes.fromhex(sdk.get_auth_manager().get_s5_seed())
        sm = await sdk.get_session_manager()
        with pytest.raises(PriceAboveMaximumError) as too_dear:
            await sm.create_session(model=BUILTIN, host=host.address, max_price_per_token=1)
        texts += explain(too_dear.value)
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        async with session.stream(f"My name is {SECRET_WORD}.") as stream:
            async for chunk in stream:
                texts.append(repr(chunk))
        reply = await session.send_prompt("What is my name?")
        assert SECRET_WORD in reply.text  # the conversation really carried the word
        settlement = await session.complete()
        with pytest.raises(FabstirError) as again:  # a failure after the end
            await session.send_prompt("one more?")
        texts += explain(again.value)
        storage = await sdk.get_storage_manager()
        texts += [repr(o) for o in (sdk, sm, session, stream, reply, settlement, storage)]
        texts += [str(o) for o in (session, settlement)]
        texts += [repr(sdk.get_auth_manager()), repr(sdk.get_payment_manager())]
        texts.append(session._repr_html_())
        texts.append(settlement._repr_html_())
    # the scanner itself finds each form (a scan that cannot fail proves nothing)
    for form in text_forms(key):
        assert leaks(f"x {form} y", {"private key": key}) != []
    records = debug_everywhere.records
    assert len(records) > 20  # DEBUG logging was really on, from our code and libraries
    texts += [r.getMessage() for r in records]
    texts += ["".join(traceback.format_exception(*r.exc_info)) for r in records if r.exc_info]
    texts.append(debug_everywhere.text)
    assert leaks("\n".join(texts), {"private key": key, "S5 seed": seed}) == []


async def test_host_key_absent_from_its_debug_log(net, host):
    # the session above (or this one) ran through the host: its log has DEBUG lines
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        session = await (await sdk.get_session_manager()).create_session(
            model=BUILTIN, host=host.address, deposit="1"
        )
        await session.send_prompt("count to 3")
        await session.complete()
    log = await asyncio.to_thread(Path(host.log_path).read_text, errors="replace")
    assert "DEBUG" in log
    host_key = bytes.fromhex(net.accounts[HOST].private_key.removeprefix("0x"))
    assert leaks(log, {"host key": host_key}) == []


def files_at_rest(net) -> list[Path]:
    roots = [net.state_dir / "storage", net.state_dir / "s5-portal"]
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


async def test_storage_at_rest_holds_no_plaintext_and_no_keys(net, host):
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        seed = bytes.fromhex(sdk.get_auth_manager().get_s5_seed())
        session = await (await sdk.get_session_manager()).create_session(
            model=BUILTIN, host=host.address, deposit="1"
        )
        await session.send_prompt(f"My name is {SECRET_WORD}.")
        assert SECRET_WORD in (await session.send_prompt("What is my name?")).text
        await session.complete()
    files = files_at_rest(net)
    assert len(files) >= 3  # the conversation, the host's checkpoints, the portal's own data
    key = bytes.fromhex(net.accounts[USER].private_key.removeprefix("0x"))
    host_key = bytes.fromhex(net.accounts[HOST].private_key.removeprefix("0x"))
    secrets = {"private key": key, "S5 seed": seed, "host key": host_key}
    found = []
    for path in files:
        data = path.read_bytes()
        for word in (SECRET_WORD, SECRET_WORD.lower(), "What is my name"):
            if word.encode() in data or word.encode("utf-16-le") in data:
                found.append(f"{path}: plaintext {word!r}")
        found += [f"{path}: raw {name}" for name, s in secrets.items() if s in data]
        found += [f"{path}: {leak}" for leak in leaks(data.decode("latin-1"), secrets)]
    assert found == []
    assert PRICE  # the host charged the devnet price: the session was a real paid one
