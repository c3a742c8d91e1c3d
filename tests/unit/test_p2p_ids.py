"""Peer ids, multiaddrs and DHT keys are checked before any byte reaches the network."""

import cid
import multihash
import pytest

from fabstir_sdk import InvalidMultiaddrError, InvalidPeerIdError, ValidationError
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.p2p import check_multiaddr, check_peer_id, model_key

ED25519_PEER = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
RSA_PEER = "QmWMmzpn6PRqrxLQJY9ztWrhiKah96XVsW9R7V486vAVwz"
TOY = "fabstir/builtin:toy-1.gguf"


@pytest.mark.parametrize("peer", [ED25519_PEER, RSA_PEER])
def test_valid_peer_ids(peer):
    assert check_peer_id(peer) == peer


@pytest.mark.parametrize(
    "bad",
    [
        "",
        None,
        42,
        "notapeer",  # 'l' is not a base58 digit
        "0OIl",
        ED25519_PEER[:-3],  # truncated: the multihash length no longer matches
        ED25519_PEER + "1",
        "1" * 200,
        "2",  # one byte: no multihash
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd",  # sha2-256 with 31 bytes
    ],
)
def test_invalid_peer_ids(bad):
    with pytest.raises(InvalidPeerIdError):
        check_peer_id(bad)


def test_invalid_peer_id_is_a_value_error():
    assert issubclass(InvalidPeerIdError, ValidationError)
    assert issubclass(InvalidPeerIdError, ValueError)


def test_dialable_multiaddrs():
    addr = f"/ip4/127.0.0.1/tcp/4001/p2p/{ED25519_PEER}"
    assert check_multiaddr(addr) == (addr, ED25519_PEER)
    assert check_multiaddr("/ip4/127.0.0.1/tcp/0", need_peer=False) == (
        "/ip4/127.0.0.1/tcp/0",
        None,
    )
    assert check_multiaddr(f"/dns4/host.example/tcp/4001/p2p/{RSA_PEER}")[1] == RSA_PEER


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "",
        None,
        b"/ip4/127.0.0.1/tcp/1",
        "/ip4/999.1.1.1/tcp/1/p2p/" + ED25519_PEER,
        "/ip4/127.0.0.1/tcp/99999/p2p/" + ED25519_PEER,
        "/ip4/127.0.0.1/udp/4001/p2p/" + ED25519_PEER,
        "/ip4/127.0.0.1/tcp/4001/ws/p2p/" + ED25519_PEER,
        "/ip4/127.0.0.1/p2p/" + ED25519_PEER,
        "/ip4/127.0.0.1/tcp/4001",  # no peer id
        "/ip4/127.0.0.1/tcp/4001/p2p/notapeer",
        "/ip4/127.0.0.1/tcp/4001/p2p/" + ED25519_PEER[:-3],
    ],
)
def test_invalid_multiaddrs(bad):
    with pytest.raises(InvalidMultiaddrError):
        check_multiaddr(bad)


def test_model_key_is_a_cidv1_of_the_namespaced_model_id():
    key = model_key(TOY)
    assert key == "bafkreigaqrhsjxuhczslb32pw4oljnqk24gvwkmw7hdpss5bonnzq7u6su"
    # the same key from an independent CID implementation (py-cid, a libp2p dependency)
    data = b"fabstir:model:" + model_id(TOY).encode()
    expected = cid.make_cid(1, "raw", multihash.digest(data, "sha2-256").encode())
    assert key == expected.encode("base32").decode()
    # every spelling of the model gives the same key
    assert model_key("fabstir/builtin/toy-1.gguf") == key
    assert model_key(model_id(TOY)) == key
    assert model_key(model_id(TOY).upper().replace("0X", "0x")) == key


def test_model_key_refuses_bad_models():
    with pytest.raises(ValidationError):
        model_key("no-separator")
