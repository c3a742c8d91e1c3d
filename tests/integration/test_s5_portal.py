"""The local S5 portal over real HTTP on loopback, and the portal client against it: accounts,
uploads and downloads, the registry, limits, and every fault the storage issue names."""

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from fabstir_sdk import FabstirSDK
from fabstir_sdk.errors import (
    IntegrityError,
    NotFoundError,
    PayloadTooLargeError,
    RevisionConflictError,
    StorageUnavailableError,
)
from fabstir_sdk.s5 import BlobId, RegistryEntry, S5Identity, blob_id
from fabstir_sdk.s5._fs import FileSystem
from fabstir_sdk.s5._portal import (
    PortalClient,
    account_key,
    b64url_decode,
    b64url_encode,
    challenge_response,
)
from fabstir_sdk.s5.server import PortalServer
from tests.integration.test_storage import contents, files_under

SEED = bytes(range(32))


@pytest.fixture(scope="module")
async def portal(tmp_path_factory):
    async with PortalServer(tmp_path_factory.mktemp("portal")) as server:
        yield server


@pytest.fixture
async def client_for(portal):
    made = []

    def make(seed=b"user-one-seed-0123456789", url=None, **options):
        client = PortalClient(url or portal.url, S5Identity(seed), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_account_registration_then_login(portal, client_for):
    first = client_for()
    await first.put_blob(b"hello")
    pk = b64url_encode(
        b"\xed"
        + bytes(account_key(S5Identity(b"user-one-seed-0123456789"), first.authority).verify_key)
    )
    accounts = json.loads((portal.store.root / "accounts.json").read_text())["accounts"]
    assert pk in accounts
    assert first._token.startswith("S5A")
    second = client_for()  # same identity, new process state: logs in to the same account
    await second.put_blob(b"again")
    assert second._token != first._token
    assert json.loads((portal.store.root / "accounts.json").read_text())["accounts"] == accounts


async def test_every_data_route_needs_a_token(portal):
    bid = blob_id(b"x")
    async with httpx.AsyncClient(base_url=portal.url) as http:
        assert (await http.get("/s5/version")).status_code == 200
        for method, path in [
            ("POST", "/s5/upload"),
            ("GET", f"/s5/download/{bid.legacy_cid()}"),
            ("GET", f"/{bid}"),
            ("GET", "/s5/registry?pk=x"),
            ("POST", "/s5/registry"),
        ]:
            response = await http.request(method, path, headers={"Authorization": "Bearer nope"})
            assert response.status_code == 401, path


async def test_challenge_bound_to_this_portal(portal):
    key = account_key(S5Identity(b"other-user-seed-0123456"), "x")
    pk = b64url_encode(b"\xed" + bytes(key.verify_key))
    async with httpx.AsyncClient(base_url=portal.url) as http:
        challenge = (await http.get("/s5/account/register", params={"pubKey": pk})).json()
        value = b64url_decode(challenge["challenge"])
        response = challenge_response(1, value, "evil.example:443")  # another portal
        body = {
            "pubKey": pk,
            "response": b64url_encode(response),
            "signature": b64url_encode(key.sign(response).signature),
        }
        refused = await http.post("/s5/account/register", json=body)
        assert refused.status_code == 400
        assert "not for this portal" in refused.json()["error"]
        # the challenge is spent: replaying it with the right authority fails too
        good = challenge_response(1, value, portal.url.split("://")[1])
        body.update(response=b64url_encode(good), signature=b64url_encode(key.sign(good).signature))
        assert (await http.post("/s5/account/register", json=body)).status_code == 400


async def test_upload_download_and_cid_forms(portal, client_for):
    client = client_for()
    data = os.urandom(5000)
    bid = await client.put_blob(data)
    assert bid == blob_id(data)
    assert await client.get_blob(bid) == data
    headers = {"Authorization": f"Bearer {client._token}"}
    async with httpx.AsyncClient(base_url=portal.url, headers=headers) as http:
        upload = await http.post("/s5/upload", content=data)
        assert upload.json() == {"cid": bid.legacy_cid()}
        multipart = await http.post("/s5/upload", files={"file": ("f", data)})
        assert multipart.json() == {"cid": bid.legacy_cid()}
        for text in (str(bid), bid.to_string("z"), bid.to_string("u"), bid.to_string("f")):
            assert (await http.get(f"/{text}")).content == data
            assert (await http.get(f"/s5/download/{text}")).content == data
        redirect = await http.get(f"/s5/blob/{bid}")
        assert redirect.status_code == 307
        assert redirect.headers["location"] == f"/s5/download/{bid}"
        assert (await http.get("/s5/download/not-a-cid")).status_code == 400
    with pytest.raises(NotFoundError):
        await client.get_blob(blob_id(b"never uploaded"))


async def test_streamed_upload_of_pieces(client_for):
    client = client_for()
    pieces = [os.urandom(300_000) for _ in range(5)]
    bid = await client.put_blob(lambda: iter(pieces))
    assert bid == blob_id(b"".join(pieces))
    assert await client.get_blob(bid) == b"".join(pieces)


async def test_damaged_blob_on_the_portal_is_integrity_error(portal, client_for):
    client = client_for()
    data = os.urandom(2_000_000)
    bid = await client.put_blob(data)
    path = portal.store.blob_path(bid)
    damaged = bytearray(data)
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))
    received = []
    with pytest.raises(IntegrityError):
        async for piece in client.read_blob(bid):
            received.append(piece)
    assert sum(map(len, received)) < len(data)
    path.write_bytes(data + b"more")
    with pytest.raises(IntegrityError):
        await client.get_blob(bid)


async def test_registry_over_http(portal, client_for):
    client = client_for()
    entry = RegistryEntry.sign(SEED, 3, b"three")
    assert await client.registry_get(entry.pk) is None
    await client.registry_set(entry)
    assert await client.registry_get(entry.pk) == entry
    await client.registry_set(entry)  # a repeat of a stored write counts as done
    with pytest.raises(RevisionConflictError):
        await client.registry_set(RegistryEntry.sign(SEED, 3, b"other"))
    with pytest.raises(RevisionConflictError):
        await client.registry_set(RegistryEntry.sign(SEED, 2, b"older"))
    forged = RegistryEntry(entry.pk, 4, b"evil", entry.signature)
    headers = {"Authorization": f"Bearer {client._token}"}
    async with httpx.AsyncClient(base_url=portal.url, headers=headers) as http:
        body = {
            "pk": b64url_encode(forged.pk),
            "revision": 4,
            "data": b64url_encode(b"evil"),
            "signature": b64url_encode(forged.signature),
        }
        assert (await http.post("/s5/registry", json=body)).status_code == 400
        huge = await http.post("/s5/registry", content=b"x" * 100_000)
        assert huge.status_code == 413
    assert await client.registry_get(entry.pk) == entry


async def test_lying_portal_is_caught(client_for):
    """A portal that forges entries, serves other bytes or reports a wrong cid."""
    good = RegistryEntry.sign(SEED, 1, b"data")
    real = blob_id(b"the real bytes")

    async def login_get(request):
        return web.json_response({"challenge": b64url_encode(bytes(32))})

    async def login_post(request):
        return web.json_response({"authToken": "S5Afake"})

    async def registry(request):
        return web.json_response(
            {
                "pk": b64url_encode(good.pk),
                "revision": 2,
                "data": b64url_encode(b"forged"),
                "signature": b64url_encode(good.signature),
            }
        )

    async def download(request):
        return web.Response(body=b"other bytes, same length")

    async def upload(request):
        await request.read()
        return web.json_response({"cid": real.legacy_cid()})

    app = web.Application()
    app.router.add_get("/s5/account/login", login_get)
    app.router.add_post("/s5/account/login", login_post)
    app.router.add_get("/s5/registry", registry)
    app.router.add_get("/s5/download/{cid}", download)
    app.router.add_post("/s5/upload", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        liar = client_for(url=f"http://127.0.0.1:{port}")
        with pytest.raises(IntegrityError):
            await liar.registry_get(good.pk)
        with pytest.raises(IntegrityError):
            await liar.get_blob(blob_id(b"other bytes, same lengtx"))
        with pytest.raises(IntegrityError):
            await liar.put_blob(b"what we sent")
    finally:
        await runner.cleanup()


async def test_portal_down_is_unavailable_after_bounded_retries(client_for):
    client = client_for(url=f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StorageUnavailableError) as err:
        await client.get_blob(blob_id(b"x"))
    assert "after 3 attempts" in str(err.value)
    assert loop.time() - started < 5


async def test_portal_timing_out_is_unavailable(client_for):
    hung = []

    async def never_answer(reader, writer):
        hung.append(writer)
        await reader.read(1 << 20)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = client_for(url=f"http://127.0.0.1:{port}", timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(StorageUnavailableError):
            await client.registry_get(RegistryEntry.sign(SEED, 0, b"").pk)
        # one try and one retry (the server's accept runs on this loop: it may come after
        # a client that gave up during a stall)
        while len(hung) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert len(hung) == 2
    finally:
        for writer in hung:
            writer.close()
        server.close()


async def test_oversized_uploads_refused_with_the_limit(tmp_path, client_for):
    async with PortalServer(tmp_path, max_upload=1_500_000) as small:
        client = client_for(url=small.url)
        with pytest.raises(PayloadTooLargeError) as err:
            await client.put_blob(b"x" * 1_600_000)  # Content-Length: refused up front
        assert err.value.limit == 1_500_000
        pieces = [b"y" * 500_000] * 4  # chunked: refused mid-stream
        with pytest.raises(PayloadTooLargeError):
            await client.put_blob(lambda: iter(pieces))
        assert list((tmp_path / "blobs").iterdir()) == []
        assert list((tmp_path / "tmp").iterdir()) == []


async def test_invite_only_registration(tmp_path, client_for):
    async with PortalServer(tmp_path, invite_token="letmein") as closed:
        with pytest.raises(StorageUnavailableError):
            await client_for(url=closed.url).put_blob(b"x")
        invited = client_for(url=closed.url, invite_token="letmein")
        assert await invited.put_blob(b"x") == blob_id(b"x")


async def test_storage_manager_over_the_portal(devnet, portal, tmp_path):
    config = devnet.sdk_config(s5_portal_url=portal.url, storage_dir=tmp_path / "unused")
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(devnet.accounts[4].private_key)
        st = await sdk.get_storage_manager()
        assert type(st.fs.store).__name__ == "QueuedStore"  # its write queue, unused here
        assert type(st.fs.store.inner).__name__ == "RevisionGuard"  # refuses rollbacks
        assert type(st.fs.store.inner.inner).__name__ == "PortalClient"
        await st.store_data("greeting", {"text": "SECRET-PORTAL-MARKER"})
        assert await st.retrieve_data("greeting") == {"text": "SECRET-PORTAL-MARKER"}
        await asyncio.gather(
            *(st.append_message("c", {"role": "user", "content": f"m{i}"}) for i in range(20))
        )
        assert len((await st.load_conversation("c")).messages) == 20
    # only the registry revisions seen (rollback protection): no data, no queue
    unused = tmp_path / "unused"
    local = [Path(p).relative_to(unused) for p in files_under(unused)]
    assert [p.parts[0] for p in local if p.suffix != ".lock"] == ["revisions"]
    for _, data in contents(files_under(tmp_path / "unused")):
        assert b"SECRET-PORTAL-MARKER" not in data and b"greeting" not in data
    for _, data in contents(files_under(portal.store.root)):
        assert b"SECRET-PORTAL-MARKER" not in data and b"greeting" not in data


async def test_portal_down_mid_use_leaves_no_partial_state(devnet, tmp_path):
    port = free_port()
    server = PortalServer(tmp_path / "p", port=port)
    await server.start()
    config = devnet.sdk_config(s5_portal_url=server.url)
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(devnet.accounts[5].private_key)
        st = await sdk.get_storage_manager()
        st.fs.store.inner.inner._backoff = 0.01
        st.fs.store.retry_after = 0
        await st.store_data("k", "v1")
        await server.stop()
        await st.store_data("k", "v2")  # queued on disk (test_storage_outage.py covers it)
        assert st.queued > 0
        with pytest.raises(StorageUnavailableError):
            await st.get_session_data("999", "never-seen")  # a directory never read
        server = PortalServer(tmp_path / "p", port=port)  # back, with its tokens forgotten
        await server.start()
        try:
            assert await st.retrieve_data("k") == "v2"  # the queue went first
            assert st.queued == 0
            await st.store_data("k", "v3")
            assert await st.retrieve_data("k") == "v3"
        finally:
            await server.stop()


async def test_fabstir_s5_serve_process(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fabstir_sdk.cli",
        "s5",
        "serve",
        "--port",
        "0",
        "--dir",
        str(tmp_path),
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        # the bounds only turn a hang into a failure: a loaded machine starts Python late
        # (a SIGTERM sent before the portal is up kills it: -15, hiding the real error)
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
        assert info["url"].startswith("http://127.0.0.1:") and info["dir"] == str(tmp_path)
        identity = S5Identity(b"cli-user-seed-0123456789")
        client = PortalClient(info["url"], identity)
        fs = FileSystem(client, identity)
        await fs.put("home/x.json", {"a": 1})
        assert await fs.get("home/x.json") == {"a": 1}
        await client.aclose()
        proc.send_signal(signal.SIGTERM)  # a clean stop
        assert await asyncio.wait_for(proc.wait(), 120) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_devnet_with_s5():
    from fabstir_sdk.devnet import Devnet

    async with Devnet.start(with_s5=True) as net:
        url = net.s5_portal_url
        assert url.startswith("http://127.0.0.1:")
        assert net.sdk_config().s5_portal_url == url
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[1].private_key)
            st = await sdk.get_storage_manager()
            ref = await st.store_data("k", b"bytes")
            assert await st.retrieve_data("k") == b"bytes"
            assert net.portal.store.blob_path(BlobId.parse(ref.cid)).exists()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(url + "/s5/version")


async def test_secrets_absent_from_logs_reprs_and_errors(devnet, portal, caplog):
    """Neither the wallet key, the S5 seed nor the portal token shows up anywhere."""
    import logging

    from fabstir_sdk.managers.auth import AuthManager

    caplog.set_level(logging.DEBUG)
    key = devnet.accounts[6].private_key
    texts = []
    async with FabstirSDK(devnet.sdk_config(s5_portal_url=portal.url)) as sdk:
        await sdk.authenticate(key)
        st = await sdk.get_storage_manager()
        await st.store_data("k", {"v": 1})
        with pytest.raises(NotFoundError) as missing:
            await st.retrieve_data("absent")
        seed = AuthManager(st._ctx).get_s5_seed()
        token = st.fs.store.inner.inner._token
        identity = S5Identity(bytes.fromhex(seed))
        texts += [repr(st), repr(st.fs), repr(st.fs.store), repr(identity), str(missing.value)]
    texts += [record.getMessage() for record in caplog.records] + [caplog.text]
    blob = "\n".join(texts)
    assert token and len(seed) == 64
    for secret in (key[2:].lower(), key[2:18].lower(), seed, seed[:16], token):
        assert secret not in blob


async def test_one_client_serves_two_event_loops_one_after_the_other(portal, client_for):
    # A script may call asyncio.run twice with the same SDK: the HTTP session of the first
    # loop cannot serve the second, so the client makes another.
    client = client_for()
    first = await client.put_blob(b"from the test's loop")

    def other_loops():
        async def once(data):
            blob = await client.put_blob(data)
            return await client.get_blob(blob)

        return [asyncio.run(once(b"loop %d" % i)) for i in range(2)]

    assert await asyncio.to_thread(other_loops) == [b"loop 0", b"loop 1"]
    assert await client.get_blob(first) == b"from the test's loop"
