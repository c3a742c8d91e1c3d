"""chain/signer.py against a scripted signer service (MockTransport, no socket): what the
adapter sends, and the answers it refuses."""

from __future__ import annotations

import inspect
import json
from typing import Any

import coincurve
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.chain.signer import JsonRpcSigner, LocalSigner, as_signer
from fabstir_sdk.chain.transport import HttpTransport, MockTransport, redact_url
from fabstir_sdk.errors import AuthError, InvalidAddressError, ProtocolError, SignerError
from fabstir_sdk.managers.auth import S5_SEED_MESSAGE, seed_from_signature
from fabstir_sdk.protocol import (
    E2EE_ALG,
    SIGNED_MESSAGE_ALG,
    ClientSession,
    EphemeralCipherPayload,
    PresignedInit,
    open_session_init,
    prepare_session_init,
    presign_session_init,
    seal_session_init,
)
from fabstir_sdk.protocol._crypto import address_of

KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32
ACCOUNT = Account.from_key(KEY)
ALCHEMY_KEY = "AbCdEf0123456789ghIJkl_mnOPqr-st"  # an RPC provider's key, in a URL's path
TX = {
    "to": "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB",
    "value": 5,
    "gas": 21000,
    "maxFeePerGas": 2 * 10**9,
    "maxPriorityFeePerGas": 10**9,
    "nonce": 3,
    "chainId": 84532,
    "type": 2,
    "data": "0x",
}


def service(answer: Any, seen: list[Any]) -> MockTransport:
    def node(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload)
        return {"jsonrpc": "2.0", "id": payload["id"], "result": answer}

    return MockTransport(node)


async def test_requests_on_the_wire():
    seen: list[Any] = []
    signature = ACCOUNT.sign_message(encode_defunct(primitive=b"hi")).signature
    low_v = bytes(signature[:64]) + bytes([signature[64] - 27])  # a 0/1-style service
    signer = JsonRpcSigner(
        "http://signer", ACCOUNT.address, transport=service("0x" + low_v.hex(), seen)
    )
    assert await signer.sign_message(b"hi") == bytes(signature)  # v normalised to 27/28
    eth_sign = JsonRpcSigner(
        "http://signer",
        ACCOUNT.address,
        message_method="eth_sign",
        transport=service("0x" + low_v.hex(), seen),
    )
    await eth_sign.sign_message(b"hi")
    assert [(p["method"], p["params"]) for p in seen] == [
        ("personal_sign", ["0x6869", ACCOUNT.address]),
        ("eth_sign", [ACCOUNT.address, "0x6869"]),
    ]
    raw = bytes(ACCOUNT.sign_transaction(TX).raw_transaction)
    seen.clear()
    signer = JsonRpcSigner(
        "http://signer", ACCOUNT.address, transport=service("0x" + raw.hex(), seen)
    )
    assert await signer.sign_transaction(TX) == raw
    (request,) = seen[0]["params"]
    assert request["from"] == ACCOUNT.address and request["nonce"] == "0x3"
    assert request["gas"] == request["gasLimit"] == "0x5208" and request["chainId"] == "0x14a34"


async def test_answers_refused():
    other = bytes(Account.from_key(OTHER_KEY).sign_transaction(TX).raw_transaction)
    signer = JsonRpcSigner(
        "http://signer", ACCOUNT.address, transport=service("0x" + other.hex(), [])
    )
    with pytest.raises(SignerError, match="another key"):
        await signer.sign_transaction(TX)
    short = JsonRpcSigner("http://signer", ACCOUNT.address, transport=service("0x" + "00" * 64, []))
    with pytest.raises(SignerError, match="64 bytes, not 65"):
        await short.sign_message(b"hi")
    text = JsonRpcSigner("http://signer", ACCOUNT.address, transport=service("nope", []))
    with pytest.raises(SignerError, match="not hex"):
        await text.sign_typed_data({})
    with pytest.raises(AuthError):
        JsonRpcSigner("http://signer", ACCOUNT.address, message_method="eth_sign_v2")
    with pytest.raises(InvalidAddressError):
        JsonRpcSigner("http://signer", "0x1234")
    with pytest.raises(AuthError, match="LocalAccount"):
        as_signer("not a signer")


TYPED = {
    "types": {
        "EIP712Domain": [{"name": "name", "type": "string"}],
        "Note": [{"name": "text", "type": "string"}],
    },
    "primaryType": "Note",
    "domain": {"name": "test"},
    "message": {"text": "hi"},
}


async def test_signatures_by_another_key_or_not_valid_are_refused():
    """A service holding another key than the address it was given (a wrong
    --signer-address) is caught at its first signature, whatever it signs."""
    other = Account.from_key(OTHER_KEY)
    message = other.sign_message(encode_defunct(primitive=b"hi")).signature
    typed = other.sign_message(encode_typed_data(full_message=TYPED)).signature
    for answer, sign in (
        (message, lambda s: s.sign_message(b"hi")),
        (typed, lambda s: s.sign_typed_data(TYPED)),
    ):
        signer = JsonRpcSigner(
            "http://signer", ACCOUNT.address, transport=service("0x" + bytes(answer).hex(), [])
        )
        with pytest.raises(SignerError) as caught:
            await sign(signer)
        what = "message" if answer is message else "typed data"
        assert str(caught.value) == (
            f"the signer service signed the {what} as {other.address}, not {ACCOUNT.address}: "
            "it holds another key"
        )
    garbage = JsonRpcSigner(
        "http://signer", ACCOUNT.address, transport=service("0x" + "ff" * 65, [])
    )
    with pytest.raises(SignerError, match=r"^the signer service's message signature is not valid$"):
        await garbage.sign_message(b"hi")
    not_a_tx = JsonRpcSigner("http://signer", ACCOUNT.address, transport=service("0x1234", []))
    with pytest.raises(SignerError, match=r"^the signer service's transaction signature is not"):
        await not_a_tx.sign_transaction(TX)


@pytest.mark.parametrize("url", ["nonsense", "ftp://signer", "http://", "127.0.0.1:8545"])
def test_a_signer_url_is_http(url):
    with pytest.raises(SignerError, match=r"^a signer service URL is http:// or https:// and a"):
        JsonRpcSigner(url, ACCOUNT.address)


async def test_local_signer_and_the_seed():
    local = as_signer(ACCOUNT)
    assert isinstance(local, LocalSigner) and local.address == ACCOUNT.address
    assert KEY[2:] not in repr(local) and "11" * 8 not in repr(local)
    signature = await local.sign_message(S5_SEED_MESSAGE)
    assert signature == await local.sign_message(S5_SEED_MESSAGE)  # RFC 6979: deterministic
    # the seed ignores the recovery byte, which services spell 0/1 or 27/28
    flipped = signature[:64] + bytes([signature[64] - 27])
    assert seed_from_signature(signature) == seed_from_signature(flipped)
    assert len(bytes.fromhex(seed_from_signature(signature))) == 32
    assert (
        Account.recover_message(encode_defunct(primitive=S5_SEED_MESSAGE), signature=signature)
        == ACCOUNT.address
    )


async def test_presigned_init_recovers_the_wallet_that_signed_it():
    host = coincurve.PrivateKey(b"\x33" * 32)
    eph, nonce, digest = presign_session_init(host.public_key.format())
    signature = await as_signer(ACCOUNT).sign_message(digest)  # as a signer service would
    payload = seal_session_init(
        b"{}",
        recipient_public_key=host.public_key.format(),
        presigned=PresignedInit(eph, nonce, signature),
    )
    assert payload.alg == SIGNED_MESSAGE_ALG and bytes.fromhex(payload.nonce_hex) == nonce
    plaintext, sender = open_session_init(payload, recipient_private_key=host.secret)
    assert plaintext == b"{}" and address_of(sender) == ACCOUNT.address
    assert "33" * 8 not in repr(PresignedInit(eph, nonce, signature)).replace(nonce.hex(), "")
    # the same signature read as a bare-digest signature names somebody else
    bare = payload.model_copy(update={"alg": E2EE_ALG})
    assert (
        address_of(open_session_init(bare, recipient_private_key=host.secret)[1]) != ACCOUNT.address
    )


def test_a_presigned_init_serves_one_init():
    """A wallet outside the process signs the init: ``prepare_session_init(presigned=...)``
    makes the ClientSession's ``prepared_init``; the host recovers that wallet from it."""
    host = coincurve.PrivateKey(b"\x33" * 32)
    eph, nonce, digest = presign_session_init(host.public_key.format())
    signature = ACCOUNT.sign_message(encode_defunct(primitive=digest)).signature
    prepared = prepare_session_init(
        host.public_key.format(), presigned=PresignedInit(eph, nonce, bytes(signature))
    )
    proto = ClientSession(
        job_id=1,
        host_public_key=host.public_key.format(),
        prepared_init=prepared,
        user_address=ACCOUNT.address,
    )
    frame = json.loads(proto.init_frame())["payload"]
    assert frame["alg"] == SIGNED_MESSAGE_ALG and frame["nonceHex"] == nonce.hex()
    payload = EphemeralCipherPayload.model_validate(frame)
    plaintext, sender = open_session_init(payload, recipient_private_key=host.secret)
    assert json.loads(plaintext)["jobId"] == "1" and address_of(sender) == ACCOUNT.address
    # one way to hand ClientSession an init made ahead: prepared_init
    assert "presigned_init" not in inspect.signature(ClientSession).parameters
    with pytest.raises(ProtocolError, match="one init"):
        proto.init_frame()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("https://signer.example/rpc", "https://signer.example/rpc"),
        ("http://user:s3cret@127.0.0.1:8545/rpc", "http://***@127.0.0.1:8545/rpc"),
        ("http://s3cret@127.0.0.1", "http://***@127.0.0.1"),
        ("https://h/rpc?token=s3cret&v=2", "https://h/rpc?token=***&v=***"),
        ("https://h/?s3cret", "https://h/?***"),
        ("https://a:b@h:9/x?k=s3cret#s3cret", "https://***@h:9/x?k=***#***"),
        # RPC providers put the API key in the path
        (
            f"https://base-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
            "https://base-mainnet.g.alchemy.com/v2/***",
        ),
        (f"https://base-mainnet.infura.io/v3/{'0a' * 16}", "https://base-mainnet.infura.io/v3/***"),
        (f"https://x.quiknode.pro/{'5f' * 20}/", "https://x.quiknode.pro/***/"),
        (f"https://rpc.ankr.com/base/{'c3' * 32}", "https://rpc.ankr.com/base/***"),
        (f"https://u:p@h/v2/{ALCHEMY_KEY}?k=v#f", "https://***@h/v2/***?k=***#***"),
        # the rule's edges: 16 hex digits, or 20 of [A-Za-z0-9_-] with a digit and a letter
        ("https://h/base/0123456789abcde", "https://h/base/0123456789abcde"),
        ("https://h/base/0123456789abcdef", "https://h/base/***"),
        (f"https://h/{'g1' * 9}g/rpc", f"https://h/{'g1' * 9}g/rpc"),
        (f"https://h/{'g1' * 10}/rpc", "https://h/***/rpc"),
        ("https://h/eth_getTransactionCount/v2", "https://h/eth_getTransactionCount/v2"),
        ("https://h/v2/rpc/base", "https://h/v2/rpc/base"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _addresses() -> dict[str, str]:
    """Seven distinct contract addresses for a config that never reaches a chain."""
    names = [
        "job_marketplace",
        "node_registry",
        "model_registry",
        "proof_system",
        "host_earnings",
        "usdc_token",
        "fab_token",
    ]
    return {name: "0x" + f"{i + 1:02x}" * 20 for i, name in enumerate(names)}


def config_for(url: str):
    from fabstir_sdk.config import SDKConfig

    addresses = _addresses()
    return SDKConfig(rpc_url=url, s5_portal_url=url, contract_addresses=addresses, rpc_retry_for=0)


async def test_a_key_in_the_rpc_url_path_stays_out_of_reprs_and_errors():
    """An Alchemy-shaped URL: the config, the SDK, its chain client and the error of an
    unreachable node show ``/v2/***``, and no part of the error's chain holds the key."""
    import traceback

    from fabstir_sdk import FabstirSDK
    from fabstir_sdk.chain.client import ChainClient
    from fabstir_sdk.errors import RpcUnavailableError

    port = closed_port()
    url = f"http://127.0.0.1:{port}/v2/{ALCHEMY_KEY}"
    shown = f"http://127.0.0.1:{port}/v2/***"
    config = config_for(url)
    client = ChainClient.from_config(config)
    try:
        assert f"rpc_url='{shown}'" in repr(config)
        assert f"s5_portal_url='{shown}'" in repr(config)
        assert f"rpc_url='{shown}'" in str(config)
        assert repr(FabstirSDK(config)) == f"FabstirSDK(rpc_url='{shown}', user_address=None)"
        assert repr(client) == f"ChainClient('{shown}')"
        assert repr(client.rpc) == f"JsonRpcClient('{shown}')"
        with pytest.raises(RpcUnavailableError) as caught:
            await client.chain_id()
    finally:
        await client.aclose()
    assert str(caught.value) == f"RPC endpoint {shown} unreachable (connection refused)"
    told = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert ALCHEMY_KEY not in told
    for text in (repr(config), str(config), repr(client)):
        assert ALCHEMY_KEY not in text


async def test_a_key_in_a_portal_or_model_server_url_path_stays_out_of_reprs_and_errors():
    from fabstir_sdk.errors import StorageUnavailableError
    from fabstir_sdk.host._backends import OpenAIBackend
    from fabstir_sdk.s5._keys import S5Identity
    from fabstir_sdk.s5._portal import PortalClient

    port = closed_port()
    url = f"http://127.0.0.1:{port}/v2/{ALCHEMY_KEY}"
    shown = f"http://127.0.0.1:{port}/v2/***"
    portal = PortalClient(url, S5Identity(b"a portal user of this test"), retries=0)
    try:
        assert repr(portal) == f"PortalClient('{shown}')"
        with pytest.raises(StorageUnavailableError) as caught:
            await portal.registry_get(b"\xed" + bytes(32))
    finally:
        await portal.aclose()
    assert str(caught.value) == (
        f"S5 portal {shown} unavailable after 1 attempts (ClientConnectorError)"
    )
    backend = OpenAIBackend(url, "m")
    assert repr(backend) == f"OpenAIBackend(url='{shown}/v1/chat/completions', model='m')"


async def unreachable_url(userinfo: str, query: str) -> str:
    """A loopback URL nothing listens on (a port bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://{userinfo}127.0.0.1:{port}/rpc{query}"


@pytest.mark.parametrize(
    ("userinfo", "query", "shown"),
    [
        ("signer:s3cret@", "", "http://***@127.0.0.1:{port}/rpc"),
        ("", "?token=s3cret", "http://127.0.0.1:{port}/rpc?token=***"),
    ],
)
async def test_an_unreachable_signer_service_is_named_without_its_credentials(
    userinfo, query, shown
):
    url = await unreachable_url(userinfo, query)
    signer = JsonRpcSigner(url, ACCOUNT.address)
    with pytest.raises(SignerError) as caught:
        await signer.sign_message(b"hi")
    await signer.aclose()
    port = url.split("127.0.0.1:", 1)[1].split("/", 1)[0]
    message = str(caught.value)
    assert message == (
        f"the signer service: RPC endpoint {shown.format(port=port)} unreachable "
        "(connection refused)"
    )
    assert "s3cret" not in repr(JsonRpcClient(url)) + repr(HttpTransport(url))


async def test_a_signer_service_refusing_the_credentials_is_named_without_them():
    from aiohttp import web

    seen: list[str | None] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=401, text="no")

    app = web.Application()
    app.router.add_post("/rpc", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    signer = JsonRpcSigner(f"http://signer:s3cret@127.0.0.1:{port}/rpc", ACCOUNT.address)
    try:
        with pytest.raises(SignerError) as caught:
            await signer.sign_message(b"hi")
    finally:
        await signer.aclose()
        await runner.cleanup()
    assert seen == ["Basic c2lnbmVyOnMzY3JldA=="]  # the credentials went to the service
    assert str(caught.value) == (
        f"the signer service: JSON-RPC request to http://***@127.0.0.1:{port}/rpc failed: "
        "HTTP 401 Unauthorized"
    )


@pytest.mark.parametrize(
    "tx",
    [
        {**TX, "data": "0x" + "ab" * 300, "value": 0, "nonce": 0},
        {**TX, "nonce": 2**40, "gas": 1_234_567, "maxFeePerGas": 3 * 10**18},
        TX,
    ],
)
async def test_local_signer_fee_market_bytes_match_eth_account(tx):
    """The coincurve path signs the bytes eth-account signs (and it recovers to the key)."""
    raw = await LocalSigner(ACCOUNT).sign_transaction(tx)
    assert raw == bytes(ACCOUNT.sign_transaction(tx).raw_transaction)
    assert Account.recover_transaction(raw) == ACCOUNT.address


async def test_local_signer_other_shapes_go_to_eth_account():
    """A legacy transaction, or one with an access list, is signed by eth-account."""
    dropped = ("maxFeePerGas", "maxPriorityFeePerGas", "type")
    legacy = {**{k: v for k, v in TX.items() if k not in dropped}, "gasPrice": 10**9}
    listed = {**TX, "accessList": [{"address": TX["to"], "storageKeys": ["0x" + "00" * 32]}]}
    for tx in (legacy, listed):
        raw = await LocalSigner(ACCOUNT).sign_transaction(tx)
        assert raw == bytes(ACCOUNT.sign_transaction(tx).raw_transaction)


async def test_reprs_naming_the_rpc_url_hide_its_credentials():
    """The SDK, its chain client and context, and a host's chain side show the RPC URL as
    redact_url does: an API key in the node's URL stays out of logs and tracebacks."""
    from fabstir_sdk import FabstirSDK
    from fabstir_sdk.chain.client import ChainClient
    from fabstir_sdk.config import SDKConfig
    from fabstir_sdk.host._chain import HostChain
    from fabstir_sdk.managers._context import Context

    url = "https://user:s3cret@127.0.0.1:8545/rpc?apikey=s3cret"
    addresses = _addresses()
    config = SDKConfig(rpc_url=url, contract_addresses=addresses)
    client = ChainClient(url)
    host = HostChain(config)
    shown = "'https://***@127.0.0.1:8545/rpc?apikey=***'"
    try:
        assert repr(FabstirSDK(config)) == f"FabstirSDK(rpc_url={shown}, user_address=None)"
        assert repr(client) == f"ChainClient({shown})"
        assert repr(Context(config, client)) == f"Context(rpc_url={shown}, account=None)"
        assert repr(host) == f"HostChain(address='', rpc_url={shown})"
    finally:
        await client.aclose()
        await host.client.aclose()
