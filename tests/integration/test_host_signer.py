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
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.errors import NondeterministicSignerError
from fabstir_sdk.host import HOST_E2EE_MESSAGE, HostConfig, HostNode
from fabstir_sdk.host._keys import p2p_seed
from fabstir_sdk.managers.auth import S5_SEED_MESSAGE, seed_from_signature

from .cli_process import run
from .conftest import nonce
from .host_helpers import BUILTIN
from .signer_service import FlippingSigner, N, signer_flags
from .signer_service import service as service  # a fixture

pytestmark = pytest.mark.integration

USER, HOST = 1, 2
ROTATING, FLIPPING, SPARE, OPERATOR, KEY_HOST = 3, 5, 6, 7, 8


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


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
    # spelt out: a change to the domain would change every signer host's published key
    assert HOST_E2EE_MESSAGE.startswith(b"fabstir-sdk host E2EE key v1\n")
    info = b"fabstir-sdk/host-e2ee-key/v1"
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
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
    # registered by the host process, which never had the key: the service signed it
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
        fees_before = await hosts.get_treasury_manager().get_accumulated_fees(usdc)
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
    # the proof (only the host may submit one): signed by the service, the host has no key
    # (">": the host may be settling other tests' jobs meanwhile)
    assert await nonce(net, HOST) > host_nonce
    async with FabstirSDK(net.sdk_config()) as hosts:
        earned = await hosts.get_host_manager().get_host_earnings(usdc, host.address)
        fees = await hosts.get_treasury_manager().get_accumulated_fees(usdc)
    assert (earned, fees) == (earned_before + 1800, fees_before + 200)
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
    # the earnings leave HostEarnings through the service too
    async with FabstirSDK(net.sdk_config()) as hosts:
        wallet_before = await hosts.get_payment_manager().get_token_balance(usdc, host.address)
    code, out, err = await host_cli(net, service, HOST, "withdraw", "--usdc")
    assert (code, err) == (0, ""), err
    withdrawn = int(json.loads(out)["withdrawn"])
    assert withdrawn >= earned  # more if the host settled another test's job meanwhile
    async with FabstirSDK(net.sdk_config()) as hosts:
        paid = await hosts.get_payment_manager().get_token_balance(usdc, host.address)
    assert paid == wallet_before + withdrawn


async def host_cli(
    net: Devnet, service: Any, account: int, *args: str, method: str = "personal_sign"
) -> tuple[int, str, str]:
    """``fabstir host ACTION ...`` as a process whose wallet is in the signer service."""
    action, *rest = args
    return await run(
        *("host", action, "--manifest", str(net.manifest_path), *rest),
        *signer_flags(service.rpc_url, net.accounts[account].address),
        *("--signer-message-method", method),
    )


async def test_operator_commands_through_a_signer_service(net, service):
    """register, status and unregister with no key in the process: the stake goes and
    comes back exactly."""
    address = net.accounts[OPERATOR].address
    fab = net.addresses.fab_token
    async with FabstirSDK(net.sdk_config()) as sdk:
        fab_before = await sdk.get_payment_manager().get_token_balance(fab, address)
    code, out, err = await host_cli(
        net,
        service,
        OPERATOR,
        "register",
        *("--api-url", "http://127.0.0.1:1", "--model", BUILTIN),
        *("--price-stable", "2000", "--price-native", str(10**12)),
        method="eth_sign",  # the storage-seed message, signed the other way a service may
    )
    assert (code, err) == (0, ""), err
    stake = int(json.loads(out)["stake"])
    assert stake == 1000 * 10**18
    code, out, err = await host_cli(net, service, OPERATOR, "status")
    assert (code, json.loads(out)["address"], json.loads(out)["active"]) == (0, address, True)
    async with FabstirSDK(net.sdk_config()) as sdk:
        pm = sdk.get_payment_manager()
        assert await pm.get_token_balance(fab, address) == fab_before - stake
        code, out, err = await host_cli(net, service, OPERATOR, "unregister")
        assert (code, json.loads(out)["stake_returned"]) == (0, str(stake)), err
        assert await pm.get_token_balance(fab, address) == fab_before


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


def storage_secrets(key: str) -> dict[str, str]:
    """The host's S5 storage seed and the signature it comes from."""
    account = Account.from_key(key)
    signature = bytes(account.sign_message(encode_defunct(S5_SEED_MESSAGE)).signature)
    return {
        "storage seed": seed_from_signature(signature),
        "storage seed signature": signature[:32].hex(),
    }


async def what_the_host_wrote(
    net: Devnet, host: RunningHost, account: int, storage: Path
) -> dict[str, bytes]:
    """After a checkpointed session: the host's log, state directory and S5 files, and the
    reprs it shows."""
    await checkpointed_session(net, host, coincurve.PrivateKey())
    written: dict[str, bytes] = {"host log": host.log_path.read_bytes()}
    assert b"serving" in written["host log"] and b"DEBUG" in written["host log"]
    state = net.state_dir / "hosts" / f"state-{account}"
    for root in (state, storage):
        for path in root.rglob("*"):
            if path.is_file():
                written[str(path)] = path.read_bytes()
    assert len(written) > 3  # the init record, the S5 blobs
    written["reprs"] = repr(host).encode()
    return written


def assert_absent(secrets: dict[str, str], written: dict[str, bytes]) -> None:
    for what, secret in secrets.items():
        for where, data in written.items():
            assert secret.lower().encode() not in data.lower(), f"{what} in {where}"
            assert bytes.fromhex(secret) not in data, f"{what} (raw) in {where}"


async def test_no_secret_of_the_host_in_its_logs_files_or_reprs(net, host, storage):
    """Neither the wallet key, nor the E2EE key, nor the signatures they come from, nor the
    storage seed appear in what the host writes unencrypted or shows."""
    from fabstir_sdk.chain.signer import JsonRpcSigner

    wallet = net.accounts[HOST]
    signature, e2ee = await derived(HOST, net)
    secrets = {
        "wallet key": wallet.private_key[2:],
        "E2EE key": e2ee.hex(),
        "E2EE signature": signature[:32].hex(),
        **storage_secrets(wallet.private_key),
    }
    written = await what_the_host_wrote(net, host, HOST, storage)
    signer = JsonRpcSigner("http://127.0.0.1:9", wallet.address)
    written["reprs"] += repr(signer).encode()
    await signer.aclose()
    assert_absent(secrets, written)


async def test_no_secret_of_a_key_host_either(net, tmp_path):
    """The same for a host whose key is in its environment (its E2EE key is that key)."""
    key = net.accounts[KEY_HOST].private_key
    running = await net.start_host(
        account=KEY_HOST, models=[BUILTIN], storage_dir=tmp_path, chain_poll=0.1, debug=True
    )
    try:
        written = await what_the_host_wrote(net, running, KEY_HOST, tmp_path)
    finally:
        await running.stop()
    assert running.public_key == compressed(bytes.fromhex(key[2:]))
    assert_absent({"wallet key": key[2:], **storage_secrets(key)}, written)


async def in_process_host(
    net: Devnet, wallet: Any, tmp_path: Path, *, storage: bool = False, **keys: Any
) -> HostNode:
    sdk = net.sdk_config() if storage else net.sdk_config(s5_portal_url=None, storage_dir=None)
    register = keys.pop("auto_register", True)
    config = HostConfig(
        sdk=sdk,
        models=[BUILTIN],
        state_dir=tmp_path / "state",
        chain_poll=0.1,
        auto_register=register,
    )
    return HostNode(config, wallet, **keys)


async def test_a_new_e2ee_key_is_published_at_start(net, tmp_path, caplog):
    """The registry follows the host's E2EE key: a start with another key updates the
    metadata; with --no-register it cannot, and says so."""
    import logging

    caplog.set_level(logging.WARNING, "fabstir_sdk.host")
    wallet = LocalSigner(Account.from_key(net.accounts[ROTATING].private_key))

    async def published() -> str | None:
        async with FabstirSDK(net.sdk_config()) as sdk:
            return (await sdk.get_host_manager().get_host_info(wallet.address)).public_key

    first, second = os.urandom(32), os.urandom(32)
    node = await in_process_host(net, wallet, tmp_path, e2ee_key=first)
    await node.start()
    await node.stop()
    assert await published() == compressed(first)
    stale = await in_process_host(net, wallet, tmp_path, e2ee_key=second, auto_register=False)
    sent = await nonce(net, ROTATING)
    await stale.start()
    await stale.stop()
    assert await nonce(net, ROTATING) == sent and await published() == compressed(first)
    (warning,) = [r.getMessage() for r in caplog.records if "publishes publicKey" in r.message]
    assert compressed(first) in warning and compressed(second) in warning
    assert "--no-register" in warning
    rotated = await in_process_host(net, wallet, tmp_path, e2ee_key=second)
    await rotated.start()
    await rotated.stop()
    assert await published() == compressed(second)
    assert await nonce(net, ROTATING) == sent + 2  # updateApiUrl (a new port), updateMetadata


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
    key = net.accounts[OPERATOR].private_key
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


class CountingSigner(LocalSigner):
    """A key in this process that counts the messages it signs."""

    def __init__(self, key: str) -> None:
        super().__init__(Account.from_key(key))
        self.messages = 0

    async def sign_message(self, message: bytes) -> bytes:
        self.messages += 1
        return await super().sign_message(message)


async def test_the_checkpoint_index_is_signed_once_per_state(net, tmp_path):
    """A client polling /v1/checkpoints does not make the host ask its signer each time."""
    wallet = CountingSigner(net.accounts[9].private_key)
    node = await in_process_host(net, wallet, tmp_path)
    await node.start()
    try:
        before = wallet.messages
        one, two = b'[{"index":0}]', b'[{"index":0},{"index":1}]'
        first = await node.sign_checkpoint_index(7, one)
        assert await node.sign_checkpoint_index(7, one) == first
        assert wallet.messages == before + 1
        second = await node.sign_checkpoint_index(7, two)  # the index grew: signed again
        assert second != first and wallet.messages == before + 2
        assert await node.sign_checkpoint_index(8, one) == first  # same bytes, same signature
        assert wallet.messages == before + 3
        for text, signature in ((one, first), (two, second)):
            signer = Account.recover_message(encode_defunct(text), signature=signature)
            assert signer == wallet.address
    finally:
        await node.stop()
