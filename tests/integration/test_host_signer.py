"""The reference host with its wallet in a signer service: the key never enters the host.

The signer service is a second anvil, a separate process holding the devnet's keys unlocked
(as in test_signers.py). The host process gets its URL and the host's address; it registers,
proves and signs its checkpoints through it, and opens session inits with its own E2EE key,
derived from the wallet's signature and published in the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import coincurve
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.signer import LocalSigner
from fabstir_sdk.devnet import AnvilProcess, Devnet, RunningHost
from fabstir_sdk.errors import NondeterministicSignerError
from fabstir_sdk.host import HostConfig, HostNode
from fabstir_sdk.host._keys import HOST_E2EE_INFO, HOST_E2EE_MESSAGE, p2p_seed
from fabstir_sdk.managers.auth import S5_SEED_MESSAGE, seed_from_signature

from .conftest import nonce
from .host_helpers import BUILTIN
from .test_signers import FlippingSigner, N

pytestmark = pytest.mark.integration

USER, HOST = 1, 2
FLIPPING, SPARE = 5, 6


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def service(net, tmp_path_factory):
    """The signer service: a separate anvil process that holds the same keys unlocked."""
    log = tmp_path_factory.mktemp("signer") / "anvil.log"
    proc = await AnvilProcess.start(log_path=log, chain_id=net.chain_id)
    yield proc
    await proc.stop()


@pytest.fixture(scope="module")
async def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("host-s5")


@pytest.fixture(scope="module")
async def host(net, service, storage) -> RunningHost:
    running = await net.start_host(
        account=HOST,
        models=[BUILTIN],
        signer_url=service.rpc_url,
        storage_dir=storage,
        p2p=True,
        chain_poll=0.1,
        debug=True,  # the most the host ever logs
    )
    yield running
    await running.stop()


async def derived(index: int, net: Devnet) -> tuple[bytes, bytes]:
    """``(the wallet's signature of the host-key message, the E2EE key from it)``, computed
    here from the key, independently of the host's code."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    account = Account.from_key(net.accounts[index].private_key)
    signature = bytes(account.sign_message(encode_defunct(HOST_E2EE_MESSAGE)).signature)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HOST_E2EE_INFO)
    return signature, hkdf.derive(signature[:64])


def compressed(secret: bytes) -> str:
    return coincurve.PrivateKey(secret).public_key.format(compressed=True).hex()


async def test_host_registers_with_a_published_e2ee_key_not_its_wallet_key(net, host):
    wallet = net.accounts[HOST]
    _, e2ee = await derived(HOST, net)
    assert host.address == wallet.address
    assert host.public_key == compressed(e2ee)
    assert host.public_key != compressed(bytes.fromhex(wallet.private_key[2:]))
    async with FabstirSDK(net.sdk_config()) as sdk:
        info = await sdk.get_host_manager().get_host_info(host.address)
    assert info.is_active and info.api_url == host.api_url
    assert info.public_key == host.public_key  # what every client encrypts to
    # the libp2p identity comes from the E2EE key: the wallet key is nowhere
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    seed = hashlib.sha256(p2p_seed(e2ee)).digest()
    assert host.peer_id == ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58()
    assert info.peer_id == host.peer_id
    # the host process was never given the key: not in its environment nor its arguments
    proc = Path(f"/proc/{host.pid}")
    for name in ("environ", "cmdline"):
        raw = (proc / name).read_bytes().lower()
        assert wallet.private_key[2:].lower().encode() not in raw
    environ = (proc / "environ").read_bytes()
    assert b"FABSTIR_HOST_PRIVATE_KEY=" not in environ


async def test_session_streams_and_settles_through_the_signer(net, host, service):
    """Our SDK's client: the init opens with the E2EE key, the host proves through the
    service, the user settles; every balance exact to the base unit."""
    usdc = net.addresses.usdc_token
    async with FabstirSDK(net.sdk_config()) as hosts:
        earned_before = await hosts.get_host_manager().get_host_earnings(usdc, host.address)
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        pm = sdk.get_payment_manager()
        before = await pm.get_token_balance(usdc)
        sm = await sdk.get_session_manager()
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        host_nonce = await nonce(net, HOST)
        async with session.stream("count to 5") as stream:
            streamed = "".join([chunk.text async for chunk in stream])
        assert streamed.split() == ["1", "2", "3", "4", "5"]
        assert "Ada" in (await session.send_prompt("My name is Ada.")).text
        assert (await session.send_prompt("What is my name?")).text == "Your name is Ada."
        settlement = await session.complete()
        job_id = session.job_id
        assert (settlement.tokens_used, settlement.host_payment) == (1000, 2000)
        assert (settlement.host_net, settlement.treasury_fee, settlement.refund) == (
            1800,
            200,
            998_000,
        )
        assert await pm.get_token_balance(usdc) == before - 2000
        job = await pm.get_session_job(job_id)
        assert job.tokens_used == 1000
    assert await nonce(net, HOST) == host_nonce + 1  # the proof, signed by the service
    async with FabstirSDK(net.sdk_config()) as hosts:
        earned = await hosts.get_host_manager().get_host_earnings(usdc, host.address)
    assert earned == earned_before + 1800
    # the checkpoint index is signed by the wallet, through the service
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{host.api_url}/v1/checkpoints/{job_id}") as reply,
    ):
        index = await reply.json()
    canonical = json.dumps(index["checkpoints"], separators=(",", ":"), sort_keys=True)
    signer = Account.recover_message(
        encode_defunct(canonical.encode()), signature=index["hostSignature"]
    )
    assert signer == host.address
    assert [c["tokenRange"] for c in index["checkpoints"]] == [[0, 1000]]


async def checkpointed_session(net: Devnet, host: RunningHost, recovery: Any) -> int:
    """A job whose first checkpoint (proof and sealed delta) the host published; its id."""
    from .host_helpers import Client, open_job

    job_id = await open_job(net, host.address)
    recovery_hex = recovery.public_key.format(compressed=True).hex()
    client = await Client.session(net, host, job_id, recovery_public_key=recovery_hex)
    try:
        await client.ask("My name is Lin.")
        await net.advance_time(2)
        await client.ws.send(client.proto.checkpoint_request_frame())
        assert (await client.next()).total_tokens == 1000
    finally:
        await client.close()
    return job_id


async def test_delta_sealed_and_pong_signed_by_the_wallet(net, host, storage):
    """The checkpoint delta in S5 opens for the user and names the wallet as its signer; the
    P2P liveness answer is signed by the wallet too."""
    from fabstir_sdk.p2p import P2PNode
    from fabstir_sdk.protocol import open_checkpoint_delta
    from fabstir_sdk.s5._blob import BlobId
    from fabstir_sdk.s5._local import LocalStore

    from .host_helpers import read_job

    recovery = coincurve.PrivateKey()
    job_id = await checkpointed_session(net, host, recovery)
    job = await read_job(net, job_id)
    store = LocalStore(storage)
    proof = await store.get_blob(BlobId.parse(job.last_proof_cid))
    assert "0x" + hashlib.sha256(proof).hexdigest() == job.last_proof_hash
    deltas = []
    for path in storage.rglob("*"):  # the sealed delta is the other blob of this job
        if path.is_file():
            with_text = path.read_bytes()
            if b'"ciphertext"' in with_text:
                deltas.append(json.loads(with_text))
    opened = [open_checkpoint_delta(d, recovery_private_key=recovery.secret) for d in deltas]
    mine = [(delta, signer) for delta, signer in opened if delta["sessionId"] == str(job_id)]
    assert [signer for _, signer in mine] == [host.address]
    assert mine[0][0]["messages"][0]["content"] == "My name is Lin."
    async with P2PNode() as node:
        await node.bootstrap(net.p2p_bootstrap)
        await node.remember(host.peer_id, host.p2p_addrs)
        pong, _ = await node.ping(host.peer_id, chain_id=net.chain_id, host=host.address)
    assert pong.host == host.address


async def test_no_secret_of_the_host_in_its_logs_files_or_reprs(net, host, storage):
    """Neither the wallet key, nor the E2EE key, nor the signatures they come from, nor the
    storage seed appear in what the host writes unencrypted or shows."""
    from fabstir_sdk.chain.signer import JsonRpcSigner

    wallet = net.accounts[HOST]
    signature, e2ee = await derived(HOST, net)
    seed_signature = bytes(
        Account.from_key(wallet.private_key).sign_message(encode_defunct(S5_SEED_MESSAGE)).signature
    )
    secrets = {
        "wallet key": wallet.private_key[2:],
        "E2EE key": e2ee.hex(),
        "E2EE signature": signature[:32].hex(),
        "storage seed": seed_from_signature(seed_signature),
        "storage seed signature": seed_signature[:32].hex(),
    }
    await checkpointed_session(net, host, coincurve.PrivateKey())  # files to look in
    written: dict[str, bytes] = {"host log": host.log_path.read_bytes()}
    assert b"serving" in written["host log"] and b"DEBUG" in written["host log"]
    state = net.state_dir / "hosts" / f"state-{HOST}"
    for root in (state, storage):
        for path in root.rglob("*"):
            if path.is_file():
                written[str(path)] = path.read_bytes()
    assert len(written) > 3  # the init record, the S5 blobs
    written["reprs"] = repr(host).encode()
    signer = JsonRpcSigner("http://127.0.0.1:9", wallet.address)
    written["reprs"] += repr(signer).encode()
    await signer.aclose()
    for what, secret in secrets.items():
        for where, data in written.items():
            text = data.lower()
            assert secret.lower().encode() not in text, f"{what} in {where}"
            assert bytes.fromhex(secret) not in data, f"{what} (raw) in {where}"


async def test_upstream_style_client_with_a_signer_host(net, service):
    """Upstream's client reads ``publicKey`` from the registry metadata and encrypts to it,
    whatever key it is: a signer host serves it as a key host does (--accept-any-signer, as
    upstream's host accepts its seed-derived signer)."""
    from ..conformance.test_upstream_behaviour import (
        check_checkpoint_index,
        connect,
        open_job,
        settles_to,
    )
    from ..conformance.upstream_wire import key_from_seed

    running = await net.start_host(
        account=SPARE, signer_url=service.rpc_url, accept_any_signer=True, chain_poll=0.1
    )
    try:
        job_id = await open_job(net, running.address, proof_interval=100)
        client = await connect(net, running, job_id, key_from_seed("a signer host's visitor"))
        try:
            await client.init()
            first = await client.prompt("My name is Ada.")  # re-initialised before each one
            second = await client.prompt("What's my name?")
        finally:
            await client.close()
        assert first.text == "Nice to meet you, Ada. I will remember your name."
        assert second.text == "Your name is Ada."
        used = first.stream_end["tokens_used"] + second.stream_end["tokens_used"]
        await settles_to(net, job_id, max(used, 100))  # the host completes, via the service
        await check_checkpoint_index(running, job_id, [[0, max(used, 100)]])
    finally:
        await running.stop()


async def in_process_host(
    net: Devnet, wallet: Any, tmp_path: Path, *, storage: bool = False, **keys: Any
) -> HostNode:
    sdk = net.sdk_config() if storage else net.sdk_config(s5_portal_url=None, storage_dir=None)
    config = HostConfig(sdk=sdk, models=[BUILTIN], state_dir=tmp_path / "state", chain_poll=0.1)
    return HostNode(config, wallet, **keys)


async def test_a_nondeterministic_signer_needs_its_own_e2ee_key(net, tmp_path):
    """A signer whose signatures differ (a KMS with random nonces) cannot derive a stable
    E2EE key: refused before any transaction; with an E2EE key given, the host runs."""
    flipping = FlippingSigner(net.accounts[FLIPPING].private_key)
    sent = await nonce(net, FLIPPING)
    node = await in_process_host(net, flipping, tmp_path)
    with pytest.raises(NondeterministicSignerError, match="--e2ee-key-file"):
        await node.start()
    assert await nonce(net, FLIPPING) == sent
    given = os.urandom(32)
    # its storage (the host's S5 checkpoints) would change at every start too: refused
    node = await in_process_host(net, flipping, tmp_path, storage=True, e2ee_key=given)
    with pytest.raises(NondeterministicSignerError, match="without --s5-portal-url and --st"):
        await node.start()
    node = await in_process_host(net, flipping, tmp_path, e2ee_key=given)
    await node.start()
    try:
        assert node.public_key.hex() == compressed(given)
        assert repr(node.e2ee) == f"E2EEKey(public_key={compressed(given)!r})"
        assert given.hex() not in repr(node) + repr(node.e2ee) + repr(node.chain)
        async with FabstirSDK(net.sdk_config()) as sdk:
            info = await sdk.get_host_manager().get_host_info(flipping.address)
        assert info.is_active and info.public_key == compressed(given)
        assert await nonce(net, FLIPPING) > sent  # registered: signed by the signer
    finally:
        await node.stop()


async def test_a_key_host_keeps_publishing_its_wallet_key(net, tmp_path):
    """Without a signer nothing changed: the wallet key opens the inits (as upstream's node)."""
    key = net.accounts[SPARE + 1].private_key
    node = await in_process_host(net, LocalSigner(Account.from_key(key)).account, tmp_path)
    assert node.public_key.hex() == compressed(bytes.fromhex(key[2:]))
    raw = await in_process_host(net, bytes.fromhex(key[2:]), tmp_path)
    assert raw.public_key == node.public_key
    await node.backend.aclose()
    await raw.backend.aclose()


@pytest.mark.parametrize(
    ("flags", "key_text", "message"),
    [
        (["--signer-url", "http://127.0.0.1:9"], None, "--signer-url needs --signer-address"),
        (["--signer-address", "0x" + "12" * 20], None, "--signer-address goes with --signer-url"),
        ([], "0x" + "ab" * 31, "the host's E2EE key must be 32 bytes of hex"),
        ([], hex(N + 5), "the host's E2EE key is not a valid secp256k1 key"),
        (["--e2ee-key-env", "FABSTIR_TEST_E2EE"], None, "set FABSTIR_TEST_E2EE to the host's"),
    ],
)
async def test_cli_refuses_bad_key_settings_without_echoing_them(
    net, tmp_path, flags, key_text, message
):
    import asyncio
    import subprocess
    import sys

    argv = [sys.executable, "-m", "fabstir_sdk.host", "run", "--port", "0"]
    argv += ["--manifest", str(net.manifest_path), "--model", BUILTIN, *flags]
    if key_text is not None:
        (tmp_path / "e2ee").write_text(key_text)
        argv += ["--e2ee-key-file", str(tmp_path / "e2ee")]
    env = {k: v for k, v in os.environ.items() if k != "FABSTIR_TEST_E2EE"}
    env["FABSTIR_HOST_PRIVATE_KEY"] = net.accounts[SPARE].private_key
    out = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.startswith(f"fabstir: error: {message}")
    assert out.stderr.count("\n") == 1  # one line
    for secret in (net.accounts[SPARE].private_key[2:], "ab" * 31, hex(N + 5)[2:]):
        assert secret not in out.stderr
