"""The host's side of /fabstir/host/1.0.0 and the signed liveness answer (no I/O)."""

import time

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from fabstir_sdk import P2PProtocolError, P2PRemoteError
from fabstir_sdk.p2p import HostLoad, HostProtocolServer
from fabstir_sdk.p2p.messages import liveness_text, new_nonce, parse_reply, verify_pong

HOST_KEY = "0x" + "21" * 32
OTHER_KEY = "0x" + "22" * 32
PEER = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
CLIENT = "QmWMmzpn6PRqrxLQJY9ztWrhiKah96XVsW9R7V486vAVwz"
M1, M2 = "0x" + "11" * 32, "0x" + "22" * 32
USDC = "0x" + "ab" * 20
CHAIN = 31337


def server(**overrides):
    account = Account.from_key(HOST_KEY)
    options = dict(
        chain_id=CHAIN,
        api_url="http://127.0.0.1:8080",
        models=[M1, M2],
        prices={None: {M1: 10**12, M2: 2 * 10**12}, USDC: {M1: 2000}},
        load=lambda: HostLoad(active_sessions=2, max_sessions=8, queued=1),
        features=["e2ee"],
    )
    options.update(overrides)
    return HostProtocolServer(account, **options)


async def ask(srv, request):
    return await srv.handle(request, remote_peer=CLIENT, local_peer=PEER)


async def test_capabilities_models_prices_load():
    srv = server()
    address = Account.from_key(HOST_KEY).address
    assert await ask(srv, {"type": "capabilities"}) == {
        "type": "capabilities",
        "host": address,
        "api_url": "http://127.0.0.1:8080",
        "chain_id": CHAIN,
        "protocols": ["/fabstir/host/1.0.0"],
        "features": ["e2ee"],
    }
    assert await ask(srv, {"type": "models"}) == {"type": "models", "models": [M1, M2]}
    assert await ask(srv, {"type": "prices", "token": None}) == {
        "type": "prices",
        "token": None,
        "prices": {M1: "1000000000000", M2: "2000000000000"},
    }
    assert await ask(srv, {"type": "prices", "token": USDC.upper().replace("0X", "0x")}) == {
        "type": "prices",
        "token": USDC.upper().replace("0X", "0x"),
        "prices": {M1: "2000"},
    }
    assert await ask(srv, {"type": "load"}) == {
        "type": "load",
        "active_sessions": 2,
        "max_sessions": 8,
        "queued": 1,
    }


async def test_async_load_source():
    async def load():
        return HostLoad(active_sessions=0, max_sessions=1)

    assert (await ask(server(load=load), {"type": "load"}))["max_sessions"] == 1


async def test_bad_requests_get_error_replies():
    srv = server()
    assert await ask(srv, {"type": "nope"}) == {
        "type": "error",
        "code": "unknown_type",
        "message": "unknown request type 'nope'",
    }
    assert (await ask(srv, {"type": "ping"}))["code"] == "bad_request"
    assert (await ask(srv, {"type": "ping", "nonce": "AB" * 32}))["code"] == "bad_request"
    assert (await ask(srv, {"type": "prices", "token": "usdc"}))["code"] == "bad_request"


async def test_pong_verifies():
    srv, nonce = server(), new_nonce()
    reply = await ask(srv, {"type": "ping", "nonce": nonce})
    pong = verify_pong(reply, nonce=nonce, peer_id=PEER, chain_id=CHAIN, host=srv.address)
    assert (pong.host, pong.peer_id, pong.nonce, pong.chain_id) == (srv.address, PEER, nonce, CHAIN)
    assert abs(pong.timestamp - time.time()) < 5


async def test_pong_checks_fail_for_each_mismatch():
    srv, nonce = server(), new_nonce()
    reply = await ask(srv, {"type": "ping", "nonce": nonce})
    good = dict(nonce=nonce, peer_id=PEER, chain_id=CHAIN, host=srv.address)
    cases = [
        ({**good, "nonce": new_nonce()}, "another nonce"),
        ({**good, "peer_id": CLIENT}, "the stream is with"),
        ({**good, "chain_id": 1}, "not 1"),
        ({**good, "host": Account.from_key(OTHER_KEY).address}, "expected"),
        ({**good, "now": time.time() + 3600}, "too far"),
    ]
    for kwargs, message in cases:
        with pytest.raises(P2PProtocolError, match=message):
            verify_pong(reply, **kwargs)


async def test_pong_signed_by_another_key_is_refused():
    srv, nonce = server(), new_nonce()
    reply = await ask(srv, {"type": "ping", "nonce": nonce})
    text = liveness_text(
        chain_id=CHAIN, host=srv.address, peer_id=PEER, nonce=nonce, timestamp=reply["timestamp"]
    )
    forged = Account.from_key(OTHER_KEY).sign_message(encode_defunct(text=text)).signature
    reply["signature"] = "0x" + bytes(forged).hex()
    with pytest.raises(P2PProtocolError, match="not signed by the host it names"):
        verify_pong(reply, nonce=nonce, peer_id=PEER, chain_id=CHAIN)
    reply["signature"] = "0x" + "00" * 65
    with pytest.raises(P2PProtocolError, match="does not recover"):
        verify_pong(reply, nonce=nonce, peer_id=PEER, chain_id=CHAIN)


def test_parse_reply():
    with pytest.raises(P2PRemoteError) as info:
        parse_reply({"type": "error", "code": "timeout", "message": "slow"}, "load")
    assert info.value.code == "timeout"
    with pytest.raises(P2PProtocolError, match="expected a 'load' reply, got 'models'"):
        parse_reply({"type": "models", "models": []}, "load")
    with pytest.raises(P2PProtocolError, match="malformed 'load'"):
        parse_reply({"type": "load", "active_sessions": -1, "max_sessions": 1}, "load")
    with pytest.raises(P2PProtocolError, match="decimal strings"):
        parse_reply({"type": "prices", "token": None, "prices": {M1: 5}}, "prices")
    prices = parse_reply({"type": "prices", "token": None, "prices": {M1: "5"}}, "prices")
    assert prices.prices == {M1: 5}
