"""Any signer: a wallet whose key lives in another process (a JSON-RPC signer service).

The signer service is a second anvil, a separate process that holds the devnet's keys
unlocked; the SDK under test is given only its URL and an address, never a key.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.chain.signer import JsonRpcSigner, LocalSigner, Signer, as_signer
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.errors import AuthError, NondeterministicSignerError, SignerError
from fabstir_sdk.managers.auth import S5_SEED_MESSAGE, seed_from_signature

from .conftest import nonce
from .host_helpers import BUILTIN, PRICE
from .signer_service import FlippingSigner
from .signer_service import service as service  # a fixture

pytestmark = pytest.mark.integration

USER, HOST, OTHER = 1, 2, 3

TYPED: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "chainId", "type": "uint256"},
        ],
        "Grant": [
            {"name": "agent", "type": "address"},
            {"name": "budget", "type": "uint256"},
        ],
    },
    "primaryType": "Grant",
    "domain": {"name": "fabstir-test", "chainId": 31337},
    "message": {"agent": "0x" + "ab" * 20, "budget": 1_000_000},
}


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


async def remote(service, net, index: int) -> JsonRpcSigner:
    return JsonRpcSigner(service.rpc_url, net.accounts[index].address)


async def test_remote_and_local_signatures_are_the_same_bytes(net, service):
    signer = await remote(service, net, USER)
    local = LocalSigner(Account.from_key(net.accounts[USER].private_key))
    assert isinstance(signer, Signer) and as_signer(signer) is signer
    tx = {
        "to": net.accounts[OTHER].address,
        "value": 12345,
        "gas": 21000,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": 7,
        "chainId": net.chain_id,
        "type": 2,
        "data": "0x",
    }
    raw = await signer.sign_transaction(tx)
    assert raw == await local.sign_transaction(tx)
    assert Account.recover_transaction(raw) == signer.address
    message = await signer.sign_message(S5_SEED_MESSAGE)
    assert message == await local.sign_message(S5_SEED_MESSAGE)
    typed = await signer.sign_typed_data(TYPED)
    assert typed == await local.sign_typed_data(TYPED)
    eth_sign = JsonRpcSigner(service.rpc_url, signer.address, message_method="eth_sign")
    assert await eth_sign.sign_message(S5_SEED_MESSAGE) == message
    assert "0x" not in repr(signer).replace(signer.address, "")  # only the address shows
    for s in (signer, eth_sign):
        await s.aclose()


async def test_session_paid_through_a_remote_signer(net, host, service, caplog):
    caplog.set_level(logging.DEBUG)
    signer = await remote(service, net, USER)
    async with FabstirSDK(net.sdk_config()) as by_key:
        await by_key.authenticate(net.accounts[USER].private_key)
        seed_by_key = by_key.get_auth_manager().get_s5_seed()
    async with FabstirSDK(net.sdk_config()) as sdk:
        result = await sdk.authenticate(signer)
        assert result.user_address == net.accounts[USER].address
        auth = sdk.get_auth_manager()
        assert auth.get_signer() is signer and sdk._ctx_.account is None  # no key here
        # the same wallet, the same storage, whichever way it signs
        assert auth.get_s5_seed() == seed_by_key
        with pytest.raises(AuthError):
            auth.get_legacy_s5_seed()
        pm = sdk.get_payment_manager()
        usdc = net.addresses.usdc_token
        before = await pm.get_token_balance(usdc)
        sm = await sdk.get_session_manager()
        sent = await nonce(net, USER)
        # encrypted: the init's transcript is signed by the service, as an EIP-191 message
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        reply = await session.send_prompt("My name is Ada.")
        assert reply.usage.completion_tokens > 0
        assert "Ada" in (await session.send_prompt("What is my name?")).text
        settlement = await session.complete()
        assert settlement.tokens_used == 1000  # padded to the proof interval
        assert settlement.host_payment == 1000 * PRICE // 1000 == 2000
        assert settlement.refund == 998_000
        assert await pm.get_token_balance(usdc) == before - 2000
        assert await nonce(net, USER) > sent  # the remote signer's transactions were mined
        shown = [repr(o) for o in (sdk, auth, signer, session, settlement, sdk._ctx_)]
    # neither the seed nor the signature it comes from is ever shown
    seed_signature = await signer.sign_message(S5_SEED_MESSAGE)
    assert len(caplog.records) > 10  # DEBUG logging was on
    for secret in (seed_by_key, seed_signature.hex(), seed_signature[:32].hex()):
        assert secret not in caplog.text and all(secret not in text for text in shown)
    await signer.aclose()


async def test_nondeterministic_signer_refused_for_storage(net):
    flipping = FlippingSigner(net.accounts[OTHER].private_key)
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(flipping)  # transactions are fine
        auth = sdk.get_auth_manager()
        with pytest.raises(NondeterministicSignerError, match="two different signatures"):
            auth.get_s5_seed()
        with pytest.raises(NondeterministicSignerError):
            await sdk.get_storage_manager()
        with pytest.raises(NondeterministicSignerError):  # sessions record into storage
            await sdk.get_session_manager()
        assert await sdk.get_payment_manager().get_eth_balance() > 0  # the rest works
    # the same key, deterministic (an eth-account LocalAccount): the seed of its signature
    account = Account.from_key(net.accounts[OTHER].private_key)
    async with FabstirSDK(net.sdk_config()) as sdk:
        assert (await sdk.authenticate(account)).user_address == account.address
        expected = seed_from_signature(await LocalSigner(account).sign_message(S5_SEED_MESSAGE))
        assert sdk.get_auth_manager().get_s5_seed() == expected
        legacy = sdk.get_auth_manager().get_legacy_s5_seed()  # the key-derived v1 seed
        v1 = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fabstir-sdk/s5-seed/v1")
        assert legacy == v1.derive(bytes(account.key)).hex() != expected


async def test_signer_errors_are_typed(net, service):
    with pytest.raises(AuthError, match="Signer"):
        as_signer(object())
    stranger = JsonRpcSigner(service.rpc_url, "0x" + "12" * 20)  # not unlocked there
    with pytest.raises(SignerError, match="refused personal_sign"):
        await stranger.sign_message(b"hi")
    await stranger.aclose()


async def test_host_operations_through_a_remote_signer(net, service):
    """A host's wallet in a signer service: stake approval and registration are signed there."""
    signer = await remote(service, net, 4)
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(signer)
        hm = sdk.get_host_manager()
        await hm.register_host(
            "http://127.0.0.1:9",
            [BUILTIN],
            min_price_per_token_native=10**12,
            min_price_per_token_stable=PRICE,
            metadata={"publicKey": "02" + "22" * 32},
        )
        info = await hm.get_host_info(signer.address)
        assert info.address == signer.address and info.api_url == "http://127.0.0.1:9"
        # a user pays a job with this host; the host's proof is signed by the service
        async with FabstirSDK(net.sdk_config()) as user:
            await user.authenticate(net.accounts[USER].private_key)
            upm = user.get_payment_manager()
            usdc = net.addresses.usdc_token
            created = await upm.open_session_job(
                signer.address, "1", PRICE, model=BUILTIN, token=usdc
            )
            # the contract bounds tokens by seconds since the job began: let a minute pass
            rpc = JsonRpcClient(net.rpc_url)
            await rpc.call("evm_increaseTime", 60)
            await rpc.call("evm_mine")
            await rpc.aclose()
            host_nonce = await nonce(net, 4)
            await hm.submit_proof_of_work(created.job_id, 1000, "0x" + "5a" * 32, "cid", "delta")
            assert await nonce(net, 4) == host_nonce + 1
            settlement = await upm.complete_session_job(created.job_id)
        assert (settlement.tokens_used, settlement.host_payment) == (1000, 2000)
        assert await hm.get_host_earnings(usdc) == settlement.host_net == 1800
    await signer.aclose()


async def test_data_stored_under_the_old_seed_is_imported(net):
    """What an SDK before signers stored (under the key-derived v1 seed) is copied in."""
    from fabstir_sdk.managers.storage import open_store
    from fabstir_sdk.s5._fs import FileSystem
    from fabstir_sdk.s5._keys import S5Identity

    account = Account.from_key(net.accounts[5].private_key)
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(account)
        legacy = S5Identity(bytes.fromhex(sdk.get_auth_manager().get_legacy_s5_seed()))
        old = FileSystem(open_store(net.sdk_config(), legacy), legacy)
        base = f"home/conversations/{account.address}"  # where store_data puts a key
        await old.put(f"{base}/notes/a.json", {"n": 1}, metadata={"tag": "x"})
        await old.put(f"{base}/b.json", "older")
        await old.aclose()
        storage = await sdk.get_storage_manager()
        await storage.store_data("b", "newer")
        assert [r.key for r in await storage.list_user_data()] == ["b"]  # not found as is
        assert await storage.import_legacy_storage() == 1
        assert await storage.retrieve_data("notes/a") == {"n": 1}
        assert await storage.retrieve_data("b") == "newer"  # never overwritten
        refs = {r.key: r for r in await storage.list_user_data()}
        assert sorted(refs) == ["b", "notes/a"] and refs["notes/a"].metadata == {"tag": "x"}
        assert await storage.import_legacy_storage() == 0
    async with FabstirSDK(net.sdk_config()) as sdk:
        signer = FlippingSigner(net.accounts[5].private_key)
        await sdk.authenticate(signer)
        with pytest.raises(AuthError, match="private key in this process"):
            sdk.get_auth_manager().get_legacy_s5_seed()
