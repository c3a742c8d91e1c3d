"""Conformance: our host, driven the way upstream's sdk-core drives a host (issue 10 §4).

The client is :mod:`.upstream_wire` (written from upstream's observed behaviour, not from our
SDK); chain reads and writes that upstream makes itself go through web3.py with upstream's
function signatures (jobs are opened with upstream's call, delegates authorised, registry
metadata read). Real devnet, real host processes, real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import coincurve
import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.logs import DISCARD

from fabstir_sdk import SessionState
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet import AnvilProcess, Devnet, RunningHost

from ..integration.host_helpers import BUILTIN, PRICE, USER, read_job, wait_for_job
from .upstream_wire import (
    HostRefused,
    UpstreamStyleClient,
    address_of,
    inference_body,
    key_from_seed,
)

pytestmark = pytest.mark.integration

STRICT, OPEN, SIGNED = 2, 4, 5
DEPOSIT = 1_000_000
#: Upstream's delegation and registry calls, by their upstream signatures.
UPSTREAM_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "authorizeDelegate",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "delegate", "type": "address"}, {"name": "authorized", "type": "bool"}],
        "outputs": [],
    },
    {
        "type": "function",
        "name": "isDelegateAuthorized",
        "stateMutability": "view",
        "inputs": [
            {"name": "depositor", "type": "address"},
            {"name": "delegate", "type": "address"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "createSessionJobForModelWithToken",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "host", "type": "address"},
            {"name": "modelId", "type": "bytes32"},
            {"name": "token", "type": "address"},
            {"name": "deposit", "type": "uint256"},
            {"name": "pricePerToken", "type": "uint256"},
            {"name": "maxDuration", "type": "uint256"},
            {"name": "proofInterval", "type": "uint256"},
            {"name": "proofTimeoutWindow", "type": "uint256"},
        ],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "event",
        "name": "SessionJobCreated",
        "anonymous": False,
        "inputs": [
            {"name": "jobId", "type": "uint256", "indexed": True},
            {"name": "depositor", "type": "address", "indexed": True},
            {"name": "host", "type": "address", "indexed": True},
            {"name": "deposit", "type": "uint256", "indexed": False},
        ],
    },
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "getNodeFullInfo",
        "stateMutability": "view",
        "inputs": [{"name": "operator", "type": "address"}],
        "outputs": [
            {"name": "", "type": "address"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "bool"},
            {"name": "", "type": "string"},
            {"name": "", "type": "string"},
            {"name": "", "type": "bytes32[]"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
        ],
    },
]


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def strict(net) -> RunningHost:
    """Our host's defaults: encrypted only, the depositor or its delegates only."""
    running = await net.start_host(account=STRICT, chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def permissive(net) -> RunningHost:
    """Configured as upstream's host behaves: any signer, plaintext allowed."""
    running = await net.start_host(
        account=OPEN, chain_poll=0.1, accept_any_signer=True, allow_plaintext=True
    )
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def signed(net, tmp_path_factory) -> RunningHost:
    """Its wallet in a signer service (a second anvil holding the keys), any signer accepted:
    the host holds no wallet key, only the E2EE key it published (docs/host.md)."""
    log = tmp_path_factory.mktemp("signer") / "anvil.log"
    service = await AnvilProcess.start(log_path=log, chain_id=net.chain_id)
    running = await net.start_host(
        account=SIGNED, signer_url=service.rpc_url, accept_any_signer=True, chain_poll=0.1
    )
    yield running
    await running.stop()
    await service.stop()


async def upstream_call(
    net: Devnet, fn: str, *args: Any, sender: int | None = None, to: str | None = None
) -> Any:
    """Call (or, with ``sender``, transact) ``fn`` as upstream does, through web3.py."""
    w3 = AsyncWeb3(AsyncHTTPProvider(net.rpc_url))
    try:
        if to is None:
            to = (
                net.addresses.node_registry
                if fn == "getNodeFullInfo"
                else net.addresses.job_marketplace
            )
        call = getattr(w3.eth.contract(address=to, abi=UPSTREAM_ABI).functions, fn)(*args)
        if sender is None:
            return await call.call()
        account = net.accounts[sender]
        tx = await call.build_transaction(
            {
                "from": account.address,
                "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
            }
        )
        signed = w3.eth.account.sign_transaction(tx, account.private_key)
        receipt = await w3.eth.wait_for_transaction_receipt(
            await w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1
        return receipt
    finally:
        await w3.provider.disconnect()


async def open_job(net: Devnet, host: str, *, proof_interval: int) -> int:
    """A USDC session job of USER with ``host``, opened as upstream's startSession does it
    (approve, then createSessionJobForModelWithToken); returns its id from the event."""
    usdc, market = net.addresses.usdc_token, net.addresses.job_marketplace
    await upstream_call(net, "approve", market, DEPOSIT, sender=USER, to=usdc)
    receipt = await upstream_call(
        net,
        "createSessionJobForModelWithToken",
        host,
        bytes.fromhex(model_id(BUILTIN)[2:]),
        usdc,
        DEPOSIT,
        PRICE,
        3600,
        proof_interval,
        300,
        sender=USER,
    )
    contract = AsyncWeb3().eth.contract(abi=UPSTREAM_ABI)
    (created,) = contract.events.SessionJobCreated().process_receipt(receipt, errors=DISCARD)
    return int(created["args"]["jobId"])


async def registry_public_key(net: Devnet, host: RunningHost) -> bytes:
    """The host's E2EE key where upstream reads it: ``publicKey`` in its registry metadata."""
    info = await upstream_call(net, "getNodeFullInfo", host.address)
    return bytes.fromhex(json.loads(info[3])["publicKey"].removeprefix("0x"))


async def connect(net: Devnet, host: RunningHost, job_id: int, signer: bytes, **options: Any):
    fields: dict[str, Any] = {
        "host_public_key": await registry_public_key(net, host),
        "signer": signer,
        "chain_id": net.chain_id,
        "job_id": job_id,
        "model": BUILTIN,
        "price_per_token": PRICE,
    }
    return await UpstreamStyleClient.connect(host.api_url, **{**fields, **options})


async def settles_to(net: Devnet, job_id: int, tokens: int) -> None:
    """Past the dispute window the host completes the job, billing ``tokens`` exactly."""
    await net.advance_time(31)
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    cost = tokens * PRICE // 1000
    assert (job.status, job.tokens_used, job.withdrawn_by_host, job.refunded_to_user) == (
        SessionState.COMPLETED,
        tokens,
        cost,
        DEPOSIT - cost,
    )


def check_answer_shape(answer: Any) -> None:
    """What upstream's reader relies on in every answer."""
    assert answer.chunk_indexes == list(range(len(answer.chunk_indexes)))  # from 0, in order
    end = answer.stream_end
    assert {"type", "reason", "tokens_used", "finish_reason", "usage", "session_id"} <= set(end)
    assert (end["reason"], end["finish_reason"]) == ("complete", answer.finish_reason)
    usage = end["usage"]
    assert usage["completion_tokens"] == end["tokens_used"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_seed_key_refused_with_the_fix_then_served_as_a_delegate(net, strict):
    job_id = await open_job(net, strict.address, proof_interval=100)
    seed_key = key_from_seed("ocean ladder quiet copper fabric melody eleven north tiger")
    signer_address = address_of(seed_key)
    client = await connect(net, strict, job_id, seed_key)
    try:
        with pytest.raises(HostRefused) as refused:
            await client.init()
        assert refused.value.code == "NOT_DEPOSITOR"
        assert signer_address in refused.value.message
        assert f"authorizeDelegate({signer_address}, true)" in refused.value.message
        # the depositor authorizes the seed-derived key, as upstream's delegation flow does
        await upstream_call(net, "authorizeDelegate", signer_address, True, sender=USER)
        assert await upstream_call(
            net, "isDelegateAuthorized", net.accounts[USER].address, signer_address
        )
        ack = await client.init()
        assert {k: ack[k] for k in ("type", "status", "session_id", "job_id", "chain_id")} == {
            "type": "session_init_ack",
            "status": "success",
            "session_id": str(job_id),
            "job_id": job_id,
            "chain_id": net.chain_id,
        }
        assert ack["client_address"].lower() == signer_address.lower()
        first = await client.prompt("My name is Ada.")  # a new init before every prompt
        second = await client.prompt("What's my name?")
        assert first.text == "Nice to meet you, Ada. I will remember your name."
        assert second.text == "Your name is Ada."  # the context survived the re-keys
        for answer in (first, second):
            check_answer_shape(answer)
        used = first.stream_end["tokens_used"] + second.stream_end["tokens_used"]
        # revoked, the key is refused at its next init (upstream's next prompt)
        await upstream_call(net, "authorizeDelegate", signer_address, False, sender=USER)
        with pytest.raises(HostRefused) as refused:
            await client.prompt("What's my name?")
        assert refused.value.code == "NOT_DEPOSITOR"
    finally:
        await client.close()
    await settles_to(net, job_id, max(used, 100))
    await check_checkpoint_index(strict, job_id, [[0, max(used, 100)]])


async def check_checkpoint_index(host: RunningHost, job_id: int, ranges: list[list[int]]) -> None:
    """``GET /v1/checkpoints/{job}`` as upstream's recovery validates it before use."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{host.api_url}/v1/checkpoints/{job_id}") as r,
    ):
        index = await r.json()
    assert isinstance(index["messagesSignature"], str)
    assert isinstance(index["checkpointsSignature"], str)
    assert (index["sessionId"], index["hostAddress"]) == (str(job_id), host.address)
    for position, entry in enumerate(index["checkpoints"]):
        assert entry["index"] == position and isinstance(entry["timestamp"], int)
        assert isinstance(entry["proofHash"], str) and isinstance(entry["deltaCid"], str)
    assert [entry["tokenRange"] for entry in index["checkpoints"]] == ranges


async def test_any_signer_host_serves_an_undelegated_seed_key(net, permissive):
    async with (
        aiohttp.ClientSession() as http,
        http.get(permissive.api_url + "/v1/version") as r,
    ):
        features = set((await r.json())["features"])
    assert {"plaintext", "single-use-init"} <= features and "depositor-check" not in features
    job_id = await open_job(net, permissive.address, proof_interval=100)
    seed_key = key_from_seed("never authorized by anyone on chain")
    client = await connect(net, permissive, job_id, seed_key)
    try:
        ack = await client.init()
        assert ack["client_address"].lower() == address_of(seed_key).lower()
        assert (await client.prompt("My name is Lin.")).text.startswith("Nice to meet you, Lin")
        assert (await client.prompt("What's my name?")).text == "Your name is Lin."
        captured = client.last_init
    finally:
        await client.close()
    # even where any signer is accepted, a captured init is not: a replay is refused
    attacker = await connect(net, permissive, job_id, key_from_seed("attacker"))
    try:
        with pytest.raises(HostRefused) as refused:
            await attacker.init(captured)
        assert refused.value.code == "REPLAYED_INIT"
    finally:
        await attacker.close()


async def test_every_model_name_form_upstream_sends(net, strict):
    job_id = await open_job(net, strict.address, proof_interval=100)
    wallet = bytes.fromhex(net.accounts[USER].private_key.removeprefix("0x"))
    mid = model_id(BUILTIN)
    forms = [
        mid,  # the id (startSession's modelId)
        "0x" + mid[2:].upper(),
        "fabstir/builtin:toy-1.gguf",  # repo:file
        "fabstir/builtin/toy-1.gguf",  # repo/file
        "toy-1.gguf",  # the file name
        "toy-1",  # a short name (convertModelHashToName's kind)
        "",
    ]
    for form in forms:
        client = await connect(net, strict, job_id, wallet, model=form)
        try:
            assert (await client.init())["status"] == "success", form
        finally:
            await client.close()
    client = await connect(net, strict, job_id, wallet, model=net.models[0])
    try:
        with pytest.raises(HostRefused) as refused:
            await client.init()
        assert refused.value.code == "WRONG_MODEL"
    finally:
        await client.close()


async def test_plaintext_when_the_host_allows_it(net, strict, permissive):
    job_id = await open_job(net, permissive.address, proof_interval=100)
    async with aiohttp.ClientSession() as http:
        body = inference_body(BUILTIN, "count to 120", job_id)
        async with http.post(strict.api_url + "/v1/inference", json=body) as r:
            assert (r.status, (await r.json())["code"]) == (403, "PLAINTEXT_DISABLED")
        async with http.post(permissive.api_url + "/v1/inference", json=body) as r:
            first = await r.json()
        assert r.status == 200
        # upstream reads response || text || content || generated_text
        assert first["content"] == " ".join(str(i) for i in range(1, 121))
        assert (first["tokens_used"], first["finish_reason"], first["model"]) == (
            120,
            "stop",
            BUILTIN,
        )
        assert isinstance(first["request_id"], str) and first["request_id"]
        body = inference_body(BUILTIN, "count to 130", job_id)
        async with http.post(permissive.api_url + "/v1/inference", json=body) as r:
            assert (await r.json())["tokens_used"] == 130
        # the streamed form (server-sent events) of the same endpoint is billed the same way
        body = {**inference_body(BUILTIN, "count to 110", job_id), "stream": True}
        async with http.post(permissive.api_url + "/v1/inference", json=body) as r:
            events = [line for line in (await r.text()).split("\n\n") if line]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2].removeprefix("data: "))["usage"]["completion_tokens"] == 110
        wrong = {**body, "jobId": str(job_id + 1000), "sessionId": str(job_id + 1000)}
        async with http.post(permissive.api_url + "/v1/inference", json=wrong) as r:
            assert (r.status, (await r.json())["code"]) == (403, "JOB_NOT_FOUND")
    # upstream's plaintext WebSocket path repeats session_init before every prompt, and its
    # prompt frame carries the options in `request`
    client = await connect(net, permissive, job_id, key_from_seed("plain"))
    try:
        for count in (5, 4):
            ack = await client.plaintext_init(net.accounts[USER].address)
            assert (ack["status"], ack["job_id"]) == ("success", job_id)
            text, end = await client.plaintext_prompt(f"count to {count}", max_tokens=3)
            assert (text, end["tokens_used"], end["finish_reason"]) == ("1 2 3", 3, "length")
    finally:
        await client.close()
    # 120 + 130 + 110 billed; the 6 plaintext tokens came after the HTTP requests' final
    # claim and are under the contract's 100-token minimum claim (docs/host.md, limits)
    await settles_to(net, job_id, 360)


async def test_an_image_request_is_refused_before_anything_is_billed(net, permissive):
    """upstream's sendPromptStreaming turns "generate an image of ..." into an encrypted
    request with ``action: image_generation``; a text host refuses it (NOT_SUPPORTED, the
    request's id) instead of answering it as text and billing an answer upstream discards."""
    job_id = await open_job(net, permissive.address, proof_interval=100)
    client = await connect(net, permissive, job_id, key_from_seed("pictures"))
    try:
        await client.init()
        image = {
            "action": "image_generation",
            "prompt": "a cat",
            "size": "1024x1024",
            "steps": 4,
            "safetyLevel": "strict",
            "chainId": 84532,
        }
        frame = client.request_frame(image)
        await client.ws.send(json.dumps(frame))
        with pytest.raises(HostRefused) as refused:
            await client.read_answer()
        assert (refused.value.code, refused.value.frame.get("id")) == ("NOT_SUPPORTED", frame["id"])
        answer = await client.prompt("count to 100")  # upstream falls back to text
        assert answer.stream_end["tokens_used"] == 100
    finally:
        await client.close()
    await settles_to(net, job_id, 100)  # the text answer only


async def test_host_facts_upstream_relies_on(net, strict):
    """The HTTP surface and registry metadata upstream's client reads before a session."""
    async with aiohttp.ClientSession() as http:
        async with http.get(strict.api_url + "/health") as r:
            assert (await r.json())["status"] == "healthy"
        async with http.get(strict.api_url + "/v1/version") as r:
            features = set((await r.json())["features"])
        assert {"e2ee", "single-use-init", "depositor-check"} <= features
        assert "plaintext" not in features
        async with http.get(f"{strict.api_url}/v1/models?chain_id={net.chain_id}") as r:
            models = (await r.json())["models"]
    assert [(m["id"], m["name"]) for m in models] == [(model_id(BUILTIN), "toy-1.gguf")]
    info = await upstream_call(net, "getNodeFullInfo", strict.address)
    metadata = json.loads(info[3])
    assert bytes.fromhex(metadata["publicKey"]).hex() == strict.public_key.removeprefix("0x")
    assert info[4] == strict.api_url and info[2] is True
    # a job the host serves: the first frame is `connected`, an init is acknowledged
    job_id = await open_job(net, strict.address, proof_interval=100)
    wallet = bytes.fromhex(net.accounts[USER].private_key.removeprefix("0x"))
    client = await connect(net, strict, job_id, wallet)
    try:
        assert (await client.receive())["type"] == "connected"
        await client.init()
        answer = await client.prompt("count to 3")
        assert answer.text == "1 2 3"
        check_answer_shape(answer)
    finally:
        await client.close()
    job = await read_job(net, job_id)
    assert job.status == SessionState.ACTIVE


async def test_a_host_whose_key_is_in_a_signer_service(net, signed):
    """Upstream's client takes ``publicKey`` from the registry metadata as published and
    encrypts to it: a host whose wallet is in a signer service publishes its own E2EE key
    there, and serves the client as a key host does; settles and signs through the service."""
    own_key = coincurve.PrivateKey(bytes.fromhex(net.accounts[SIGNED].private_key[2:]))
    published = await registry_public_key(net, signed)
    assert published.hex() == signed.public_key
    assert published != own_key.public_key.format(compressed=True)  # not the wallet's key
    job_id = await open_job(net, signed.address, proof_interval=100)
    client = await connect(net, signed, job_id, key_from_seed("a signer host's visitor"))
    try:
        await client.init()
        first = await client.prompt("My name is Ada.")  # re-initialised before each prompt
        second = await client.prompt("What's my name?")
    finally:
        await client.close()
    assert first.text == "Nice to meet you, Ada. I will remember your name."
    assert second.text == "Your name is Ada."
    for answer in (first, second):
        check_answer_shape(answer)
    used = first.stream_end["tokens_used"] + second.stream_end["tokens_used"]
    await settles_to(net, job_id, max(used, 100))  # completed by the host, via the service
    await check_checkpoint_index(signed, job_id, [[0, max(used, 100)]])
