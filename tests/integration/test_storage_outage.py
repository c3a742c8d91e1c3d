"""The S5 portal goes down during a session: the stream goes on, the conversation waits on
disk (sealed) and reaches the portal when it is back; a new process finds what an old one
queued; with the portal up, what each answer costs it. Real parts: anvil, the devnet's
portal (stopped and restarted on its port), a host process, subprocesses for "the process
exited".

Its own devnet (no snapshot reverts): a live host must never see a job id reused.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from fabstir_sdk import FabstirSDK, StorageUnavailableError
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.s5 import PortalClient

from .host_helpers import BUILTIN, PRICE

pytestmark = pytest.mark.integration

USER, HOST = 1, 2
SECRET = "Zebra-Quokka-7781 is my secret phrase"


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


@pytest.fixture
async def portal_back(net):
    """Whatever a test does to the portal, the next one finds it up."""
    yield
    await net.start_portal()


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, token_delay=0.01, chain_poll=0.1)
    yield running
    await running.stop()


def queue_files(root: Path) -> list[Path]:
    return sorted((root / "queue").rglob("*.q"))


def assert_no_plaintext(root: Path, *needles: str) -> int:
    """Every queue file is free of each needle (as UTF-8 and as hex); returns the bytes read."""
    scanned = 0
    for path in (root / "queue").rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        scanned += len(data)
        for needle in needles:
            assert needle.encode() not in data, f"{needle!r} in {path.name}"
            assert needle.encode().hex().encode() not in data.lower()
    return scanned


async def portal_view(net, tmp_path: Path, conversation_id: str):
    """The conversation as the portal has it: a fresh SDK with an empty queue directory."""
    config = net.sdk_config(storage_dir=tmp_path / "fresh")
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        storage = await sdk.get_storage_manager()
        return await storage.load_conversation(conversation_id)


async def test_writes_queue_while_the_portal_is_down_and_flush_when_it_is_back(
    net, tmp_path, portal_back
):
    root = tmp_path / "a"
    async with FabstirSDK(net.sdk_config(storage_dir=root)) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        storage = await sdk.get_storage_manager()
        await storage.append_message("c1", {"role": "user", "content": "before"})
        assert storage.queued == 0

        await net.stop_portal()
        await storage.append_message("c1", {"role": "assistant", "content": SECRET})
        await storage.store_data("note", {"text": SECRET})
        assert storage.queued > 0
        # Reads see the queued versions at once.
        conversation = await storage.load_conversation("c1")
        assert [m.content for m in conversation.messages] == ["before", SECRET]
        assert await storage.retrieve_data("note") == {"text": SECRET}
        with pytest.raises(StorageUnavailableError):
            await storage.flush()
        queued = storage.queued
        assert len(queue_files(root)) == queued
        assert (
            assert_no_plaintext(root, SECRET, "before", net.accounts[USER].address, "conversation")
            > 0
        )

        await net.start_portal()
        assert await storage.flush() == queued
        assert storage.queued == 0 and queue_files(root) == []
        assert await storage.flush() == 0

    on_portal = await portal_view(net, tmp_path, "c1")
    assert [m.content for m in on_portal.messages] == ["before", SECRET]


async def test_the_next_storage_call_flushes_by_itself(net, tmp_path, portal_back):
    async with FabstirSDK(net.sdk_config(storage_dir=tmp_path / "b")) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        storage = await sdk.get_storage_manager()
        await storage.append_message("c2", {"role": "user", "content": "sent"})
        storage.fs.store.retry_after = 0  # type: ignore[attr-defined]  # no back-off wait
        await net.stop_portal()
        await storage.append_message("c2", {"role": "user", "content": "queued"})
        assert storage.queued > 0
        await net.start_portal()
        await storage.get_user_settings()  # any call that reaches the portal
        assert storage.queued == 0
    on_portal = await portal_view(net, tmp_path, "c2")
    assert [m.content for m in on_portal.messages] == ["sent", "queued"]


_WRITER = """
import asyncio, json, sys
from fabstir_sdk import FabstirSDK, SDKConfig

async def main():
    config = SDKConfig.model_validate_json(sys.argv[1])
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(sys.argv[2])
        storage = await sdk.get_storage_manager()
        await storage.append_message("c3", {"role": "user", "content": "hello"})
        print("ready", flush=True)
        sys.stdin.readline()  # the test takes the portal down meanwhile
        await storage.append_message("c3", {"role": "user", "content": sys.argv[3]})
        print(json.dumps({"queued": storage.queued}), flush=True)

asyncio.run(main())
"""


async def test_a_new_process_finds_the_queue_of_one_that_exited(net, tmp_path, portal_back):
    root = tmp_path / "c"
    config = net.sdk_config(storage_dir=root)
    key = net.accounts[USER].private_key
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        config.model_dump_json(),
        key,
        SECRET,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert writer.stdin is not None and writer.stdout is not None
    assert await asyncio.wait_for(writer.stdout.readline(), 60) == b"ready\n"
    await net.stop_portal()
    writer.stdin.write(b"go\n")
    await writer.stdin.drain()
    out = await asyncio.wait_for(writer.stdout.read(), 60)
    assert await writer.wait() == 0
    queued = json.loads(out)["queued"]
    assert queued > 0 and len(queue_files(root)) == queued
    assert_no_plaintext(root, SECRET, key.removeprefix("0x"))

    async with FabstirSDK(config) as sdk:  # a new process, the same key and directory
        await sdk.authenticate(key)
        storage = await sdk.get_storage_manager()
        # The portal is still down: the queue alone answers.
        conversation = await storage.load_conversation("c3")
        assert [m.content for m in conversation.messages] == ["hello", SECRET]
        assert storage.queued == queued
        await net.start_portal()
        assert await storage.flush() == queued
        assert queue_files(root) == []
    on_portal = await portal_view(net, tmp_path, "c3")
    assert [m.content for m in on_portal.messages] == ["hello", SECRET]


async def test_a_session_streams_on_while_the_portal_is_down(net, host, tmp_path, portal_back):
    root = tmp_path / "d"
    async with FabstirSDK(net.sdk_config(storage_dir=root)) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        sm = await sdk.get_session_manager()
        storage = await sdk.get_storage_manager()
        pm = sdk.get_payment_manager()
        usdc = net.addresses.usdc_token
        before = await pm.get_token_balance(usdc)
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        first = await session.send_prompt(f"My name is Ada. {SECRET}")

        async with session.stream("count to 60") as stream:
            async for chunk in stream:
                if chunk.index == 5:
                    await net.stop_portal()  # mid-stream
        assert stream.text == " ".join(str(i) for i in range(1, 61))
        reply = await session.send_prompt("What is my name?")
        assert "Ada" in reply.text
        assert storage.queued > 0
        assert_no_plaintext(root, SECRET, "count to 60", "What is my name?")
        expected = [
            ("user", f"My name is Ada. {SECRET}"),
            ("assistant", first.text),
            ("user", "count to 60"),
            ("assistant", stream.text),
            ("user", "What is my name?"),
            ("assistant", reply.text),
        ]
        local = await storage.load_conversation(session.conversation_id)
        assert [(m.role, m.content) for m in local.messages] == expected

        await net.start_portal()
        assert await storage.flush() > 0 and storage.queued == 0
        settlement = await session.complete()
        reported = first.usage.completion_tokens + 60 + reply.usage.completion_tokens
        assert session.tokens_reported == reported < 1000
        assert settlement.tokens_used == 1000  # padded to the proof interval
        assert (settlement.host_payment, settlement.refund) == (1000 * PRICE // 1000, 998_000)
        assert await pm.get_token_balance(usdc) == before - 2000
    on_portal = await portal_view(net, tmp_path, session.conversation_id)
    assert [(m.role, m.content) for m in on_portal.messages] == expected


async def test_the_store_is_checked_once_then_writes_queue(net, host, tmp_path, portal_back):
    """create_session reaches the portal before the first payment only: once reached, what
    the portal cannot take waits on disk, so a later session opens (and pays) while the
    portal is down, and its metadata reaches the portal when it is back. A user who never
    reached it pays nothing (tests/adversarial/test_storage_gone.py)."""
    async with FabstirSDK(net.sdk_config(storage_dir=tmp_path / "d")) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        sm = await sdk.get_session_manager()
        storage = await sdk.get_storage_manager()
        reached: list[str] = []
        fs = storage.fs
        reach = fs.reach

        async def counting(path: str = "") -> None:
            reached.append(path)
            await reach(path)

        fs.reach = counting  # type: ignore[method-assign]
        first = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        await first.end()
        assert reached == [f"home/sessions/{net.accounts[USER].address}"]
        await net.stop_portal()
        second = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        assert reached == [f"home/sessions/{net.accounts[USER].address}"]  # not asked again
        assert (await sm.get_session_data(second.session_id, "metadata"))["job_id"] == (
            second.job_id
        )
        assert storage.queued > 0
        await second.end()
        await net.start_portal()
        assert await storage.flush() > 0 and storage.queued == 0
    config = net.sdk_config(storage_dir=tmp_path / "fresh")  # what the portal holds
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        sm = await sdk.get_session_manager()
        record = await sm.get_session_data(second.session_id, "metadata")
        assert record["job_id"] == second.job_id


async def test_each_answer_is_three_portal_calls_and_on_the_portal_when_its_stream_ends(
    net, host, tmp_path
):
    """With the portal up, an answer's conversation write is exactly three HTTP calls: the
    conversation's new version and the directory record naming it (its key, hash, size),
    uploaded side by side, then the directory's registry entry once both are stored (it
    never points at a missing blob). Nothing is read back: this process's copy of the
    directory and of the last version serve. Once the stream's block is left, a process
    with nothing cached reads the exchange from the portal."""
    async with FabstirSDK(net.sdk_config(storage_dir=tmp_path / "e")) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        sm = await sdk.get_session_manager()
        storage = await sdk.get_storage_manager()
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        await sm.get_session_data(session.session_id, "metadata")  # its background write done
        portal = storage.fs.store.inner.inner  # QueuedStore > RevisionGuard > PortalClient
        assert isinstance(portal, PortalClient)
        calls: list[tuple[str, str]] = []
        send = portal._send

        async def counting(method, path, **kwargs):
            calls.append((method, path))
            return await send(method, path, **kwargs)

        portal._send = counting  # type: ignore[method-assign]
        expected: list[tuple[str, str]] = []
        for prompt in ("count to 3", "My name is Ada.", "count to 40"):
            calls.clear()
            async with session.stream(prompt) as stream:
                async for _ in stream:
                    pass
            assert calls == [("POST", "/s5/upload")] * 2 + [("POST", "/s5/registry")]
            expected += [("user", prompt), ("assistant", stream.text)]
            on_portal = await portal_view(net, tmp_path, session.conversation_id)
            assert [(m.role, m.content) for m in on_portal.messages] == expected
        assert stream.text == " ".join(str(i) for i in range(1, 41))
        await session.end()
