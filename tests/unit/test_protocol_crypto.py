"""E2EE of the host protocol, checked against independent implementations.

Every vector here is recomputed with the ``cryptography`` package's primitives (ECDH on
SECP256K1, HKDF, ECDSA, ChaCha20 and ChaCha20-Poly1305), not with the coincurve/PyNaCl code
under test, so a shared mistake cannot hide.
"""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account

from fabstir_sdk.errors import (
    FrameDecryptionError,
    HandshakeError,
    MessageIndexError,
    ProtocolError,
    ValidationError,
)
from fabstir_sdk.protocol import (
    ClientSession,
    EncryptedSessionInit,
    HostSession,
    ResponseDone,
    SessionInitAck,
    TokenChunk,
    hkdf_sha256,
    open_session_init,
    parse_client_message,
    prepare_session_init,
    seal_prepared,
    seal_session_init,
    transcript_digest,
)
from fabstir_sdk.protocol._crypto import ecdh_x, open_aead, seal_aead

HOST_KEY = bytes.fromhex("11" * 32)
CLIENT_KEY = bytes.fromhex("22" * 32)
EPH_KEY = bytes.fromhex("33" * 32)
SESSION_KEY = bytes(range(32))
NONCE = bytes(range(100, 124))
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# ---------------------------------------------------------------- independent primitives


def _ec_key(secret: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256K1())


def _compressed(secret: bytes) -> bytes:
    return _ec_key(secret).public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


def _hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 from one ChaCha20 block: undo the final addition on words 0-3 and 12-15."""
    block = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(bytes(64))
    words = struct.unpack("<16I", block)
    const = struct.unpack("<4I", b"expand 32-byte k")
    counter_nonce = struct.unpack("<4I", nonce16)
    out = [(words[i] - const[i]) % 2**32 for i in range(4)]
    out += [(words[12 + i] - counter_nonce[i]) % 2**32 for i in range(4)]
    return struct.pack("<8I", *out)


def _xchacha_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    subkey = _hchacha20(key, nonce[:16])
    return ChaCha20Poly1305(subkey).encrypt(bytes(4) + nonce[16:], plaintext, aad)


def _xchacha_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    subkey = _hchacha20(key, nonce[:16])
    return ChaCha20Poly1305(subkey).decrypt(bytes(4) + nonce[16:], ciphertext, aad)


def _hkdf(ikm: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes(32), info=b"").derive(ikm)


def _ecdh_x(secret: bytes, peer_compressed: bytes) -> bytes:
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), peer_compressed)
    return _ec_key(secret).exchange(ec.ECDH(), peer)


# ---------------------------------------------------------------- primitives vs independent


def test_ecdh_x_matches_cryptography():
    assert ecdh_x(EPH_KEY, _compressed(HOST_KEY)) == _ecdh_x(EPH_KEY, _compressed(HOST_KEY))
    assert ecdh_x(HOST_KEY, _compressed(EPH_KEY)) == _ecdh_x(EPH_KEY, _compressed(HOST_KEY))


@pytest.mark.parametrize("ikm", [b"", b"\x01" * 32, bytes(range(80))])
def test_hkdf_matches_cryptography(ikm):
    assert hkdf_sha256(ikm) == _hkdf(ikm)
    assert hkdf_sha256(ikm, b"", b"") == _hkdf(ikm)  # empty salt = 32 zero bytes (RFC 5869)


@pytest.mark.parametrize("plaintext", [b"", b"x", "héllo wörld".encode() * 40])
@pytest.mark.parametrize("aad", [b"", b"chunk_7", b"encrypted_response_final"])
def test_xchacha20_poly1305_matches_independent_construction(plaintext, aad):
    sealed = seal_aead(SESSION_KEY, NONCE, plaintext, aad)
    assert sealed == _xchacha_seal(SESSION_KEY, NONCE, plaintext, aad)
    assert len(sealed) == len(plaintext) + 16
    assert open_aead(SESSION_KEY, NONCE, sealed, aad) == plaintext


def test_open_aead_sizes_around_its_scratch_buffer_and_threads():
    """Small ciphertexts open into a per-thread scratch buffer, larger ones into their own:
    each plaintext comes back whole and alone, a failed open between two leaves no trace,
    and threads opening at once do not see each other's text."""
    from concurrent.futures import ThreadPoolExecutor

    from fabstir_sdk.protocol._crypto import _SCRATCH_SIZE

    sizes = [0, 1, 5, _SCRATCH_SIZE - 16, _SCRATCH_SIZE - 15, _SCRATCH_SIZE + 100]
    for size in sizes:
        plaintext = bytes([size % 251]) * size
        sealed = _xchacha_seal(SESSION_KEY, NONCE, plaintext, b"chunk_0")
        assert open_aead(SESSION_KEY, NONCE, sealed, b"chunk_0") == plaintext
        with pytest.raises(FrameDecryptionError):
            open_aead(SESSION_KEY, NONCE, sealed, b"chunk_1")
    short = _xchacha_seal(SESSION_KEY, NONCE, b"ab", b"")
    assert open_aead(SESSION_KEY, NONCE, short, b"") == b"ab"  # after a long one: not its tail

    def opens(n: int) -> bool:
        text = bytes([n]) * (n * 97 % 300)
        sealed = _xchacha_seal(SESSION_KEY, NONCE, text, b"")
        return all(open_aead(SESSION_KEY, NONCE, sealed, b"") == text for _ in range(300))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(opens, range(1, 33)))


def test_transcript_digest_layout():
    eph, recipient, salt, nonce = _compressed(EPH_KEY), _compressed(HOST_KEY), bytes(32), NONCE
    expected = hashlib.sha256(
        b"E2EEv1|" + eph + b"|" + recipient + b"|" + salt + b"|" + nonce + b"|"
    ).digest()
    assert transcript_digest(eph, recipient, salt, nonce, b"") == expected
    with_aad = hashlib.sha256(
        b"E2EEv1|" + eph + b"|" + recipient + b"|" + salt + b"|" + nonce + b"|" + b"|ad"
    ).digest()
    assert transcript_digest(eph, recipient, salt, nonce, b"", b"ad") == with_aad


def test_fixed_init_vector_recomputed_independently():
    """Every payload field of a session init, rebuilt from scratch with ``cryptography``
    (the ephemeral key and nonce fixed: prepare_session_init, then seal_prepared, which is
    what seal_session_init does with fresh ones)."""
    inner = b'{"sessionKey":"00","jobId":"7"}'
    payload = seal_prepared(
        prepare_session_init(
            _compressed(HOST_KEY).hex(),
            sender_private_key=CLIENT_KEY,
            _ephemeral_key=EPH_KEY,
            _nonce=NONCE,
        ),
        inner,
    )
    eph, host = _compressed(EPH_KEY), _compressed(HOST_KEY)
    key = _hkdf(_ecdh_x(EPH_KEY, host))
    assert payload.eph_pub_hex == eph.hex()
    assert payload.salt_hex == "00" * 32
    assert payload.info == "" and payload.aad_hex == ""
    assert payload.nonce_hex == NONCE.hex()
    assert payload.ciphertext_hex == _xchacha_seal(key, NONCE, inner, b"").hex()
    # the signature: r|s|recid over SHA-256("E2EEv1|" eph "|" host "|" salt "|" nonce "|")
    digest = hashlib.sha256(
        b"E2EEv1|" + eph + b"|" + host + b"|" + bytes(32) + b"|" + NONCE + b"|"
    ).digest()
    sig = bytes.fromhex(payload.signature_hex)
    assert len(sig) == 65 and sig[64] == payload.recid and sig[64] in (0, 1)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    assert 0 < s <= SECP256K1_N // 2  # low-s, as libsecp256k1 and noble produce
    _ec_key(CLIENT_KEY).public_key().verify(
        encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256()))
    )
    # RFC 6979: the same inputs give the same bytes every time
    again = prepare_session_init(
        host, sender_private_key=CLIENT_KEY, _ephemeral_key=EPH_KEY, _nonce=NONCE
    )
    assert seal_prepared(again, inner) == payload


def test_a_prepared_init_seals_the_same_bytes():
    """The init's crypto made ahead (before the job id is known), then sealed: the payload
    seal_session_init makes in one step, and one AEAD encryption under the agreed key."""
    host = _compressed(HOST_KEY)
    prepared = prepare_session_init(
        host.hex(), sender_private_key=CLIENT_KEY, _ephemeral_key=EPH_KEY, _nonce=NONCE
    )
    assert prepared.key == _hkdf(_ecdh_x(EPH_KEY, host))
    assert prepared.eph_pub == _compressed(EPH_KEY) and prepared.recipient == host
    assert CLIENT_KEY.hex() not in repr(prepared) and prepared.key.hex() not in repr(prepared)
    inner = b'{"sessionKey":"00","jobId":"7"}'
    payload = seal_prepared(prepared, inner)
    assert payload.ciphertext_hex == _xchacha_seal(prepared.key, NONCE, inner, b"").hex()
    # seal_session_init in one step (fresh ephemeral key and nonce): the host opens both
    # to the same plaintext and the same sender
    one_step = seal_session_init(inner, recipient_public_key=host, sender_private_key=CLIENT_KEY)
    assert one_step.eph_pub_hex != payload.eph_pub_hex
    assert open_session_init(one_step, recipient_private_key=HOST_KEY) == open_session_init(
        payload, recipient_private_key=HOST_KEY
    )


def test_a_client_session_uses_its_prepared_init_once():
    """The first init is sealed with the prepared key, nonce and signature (the host opens
    it and names the job in it); a re-key makes all of them anew; a prepared init for
    another host's key is refused."""
    host = _compressed(HOST_KEY)
    prepared = prepare_session_init(host, sender_private_key=CLIENT_KEY)
    proto = ClientSession(
        job_id=7,
        host_public_key=host,
        client_private_key=CLIENT_KEY,
        model_name="fabstir/builtin:toy-1.gguf",
        prepared_init=prepared,
    )
    first = parse_client_message(proto.init_frame())
    assert isinstance(first, EncryptedSessionInit)
    assert first.payload.eph_pub_hex == prepared.eph_pub.hex()
    assert first.payload.nonce_hex == prepared.nonce.hex()
    assert first.payload.signature_hex == prepared.signature.hex()
    _, opened = HostSession.accept(first, host_private_key=HOST_KEY)
    assert opened.job_id == 7 and opened.client_address == Account.from_key(CLIENT_KEY).address
    proto.receive(SessionInitAck(session_id="7").to_json())
    again = parse_client_message(proto.init_frame(new_key=True))
    assert isinstance(again, EncryptedSessionInit)
    assert again.payload.eph_pub_hex != prepared.eph_pub.hex()
    assert again.payload.nonce_hex != prepared.nonce.hex()
    assert HostSession.accept(again, host_private_key=HOST_KEY)[1].job_id == 7
    other = prepare_session_init(_compressed(EPH_KEY), sender_private_key=CLIENT_KEY)
    with pytest.raises(ValidationError, match="another host key"):
        ClientSession(
            job_id=7, host_public_key=host, client_private_key=CLIENT_KEY, prepared_init=other
        )


def test_client_session_init_opens_with_independent_code():
    proto = ClientSession(
        job_id=7,
        chain_id=31337,
        host_public_key=_compressed(HOST_KEY),
        client_private_key=CLIENT_KEY,
        model_name="fabstir/builtin:toy-1.gguf",
        price_per_token=2000,
        recovery_public_key="02" + "ab" * 32,
        session_key=SESSION_KEY,
    )
    frame = json.loads(proto.init_frame())
    assert frame["type"] == "encrypted_session_init"
    assert (frame["chain_id"], frame["session_id"], frame["job_id"]) == (31337, "7", "7")
    p = frame["payload"]
    assert set(p) == {
        "ephPubHex",
        "saltHex",
        "nonceHex",
        "ciphertextHex",
        "signatureHex",
        "recid",
        "alg",
        "info",
        "aadHex",
    }
    eph, nonce = bytes.fromhex(p["ephPubHex"]), bytes.fromhex(p["nonceHex"])
    key = _hkdf(_ecdh_x(HOST_KEY, eph))
    inner = json.loads(_xchacha_open(key, nonce, bytes.fromhex(p["ciphertextHex"]), b""))
    assert inner == {
        "sessionKey": SESSION_KEY.hex(),
        "jobId": "7",
        "modelName": "fabstir/builtin:toy-1.gguf",
        "pricePerToken": 2000,
        "recoveryPublicKey": "02" + "ab" * 32,
    }
    # and the prompt that follows (once acknowledged) is sealed under the session key with
    # AAD message_0
    proto.receive(SessionInitAck(session_id="7").to_json())
    msg = json.loads(proto.prompt_frame("hi", max_tokens=9))
    body = msg["payload"]
    assert bytes.fromhex(body["aadHex"]) == b"message_0"
    opened = _xchacha_open(
        SESSION_KEY,
        bytes.fromhex(body["nonceHex"]),
        bytes.fromhex(body["ciphertextHex"]),
        b"message_0",
    )
    assert json.loads(opened)["prompt"] == "hi" and json.loads(opened)["max_tokens"] == 9


def test_host_chunks_open_with_independent_code():
    host = HostSession(SESSION_KEY, session_id="7")
    for i, text in enumerate(["Hel", "lo"]):
        frame = json.loads(host.chunk_frame(text, final=i == 1, id="q1"))
        p = frame["payload"]
        assert (p["index"], bytes.fromhex(p["aadHex"])) == (i, f"chunk_{i}".encode())
        plain = _xchacha_open(
            SESSION_KEY,
            bytes.fromhex(p["nonceHex"]),
            bytes.fromhex(p["ciphertextHex"]),
            f"chunk_{i}".encode(),
        )
        assert plain == text.encode()
        assert frame.get("final") is (True if i == 1 else None)
        assert frame["id"] == "q1" and frame["tokens"] == 1
    end = json.loads(host.response_frame("stop"))["payload"]
    assert (
        _xchacha_open(
            SESSION_KEY,
            bytes.fromhex(end["nonceHex"]),
            bytes.fromhex(end["ciphertextHex"]),
            b"encrypted_response_final",
        )
        == b"stop"
    )


# ---------------------------------------------------------------- state machines


def _client_init(**client_options):
    """A client session for job 42 and the init it sends first."""
    proto = ClientSession(
        job_id=42,
        chain_id=31337,
        host_public_key=_compressed(HOST_KEY).hex(),
        client_private_key="0x" + CLIENT_KEY.hex(),
        model_name="m",
        **client_options,
    )
    init = parse_client_message(proto.init_frame())
    assert isinstance(init, EncryptedSessionInit)
    return proto, init


def _pair(**client_options):
    proto, init = _client_init(**client_options)
    host, opened = HostSession.accept(init, host_private_key=HOST_KEY)
    proto.receive(SessionInitAck(session_id="42", job_id=42, chain_id=31337).to_json())
    return proto, host, opened


def test_round_trip_many_turns():
    proto, host, opened = _pair()
    assert opened.client_address == Account.from_key(CLIENT_KEY).address
    assert (opened.job_id, opened.session_id, opened.chain_id) == (42, "42", 31337)
    assert proto.user_address == opened.client_address and proto.ready
    for turn in range(3):
        request = host.open_message(parse_client_message(proto.prompt_frame(f"turn {turn}")))
        assert request.prompt == f"turn {turn}"
        words = [f"w{turn}.{i}" for i in range(4)]
        events = [
            proto.receive(host.chunk_frame(w, final=i == 3, id=turn)) for i, w in enumerate(words)
        ]
        assert [e.text for e in events] == words
        assert [e.index for e in events] == [0, 1, 2, 3]
        assert [e.final for e in events] == [False, False, False, True]
        assert proto.receive(host.response_frame("length", id=turn)) == ResponseDone("length", turn)


def test_tampered_init_ciphertext_and_signature():
    proto = ClientSession(
        job_id=1, host_public_key=_compressed(HOST_KEY), client_private_key=CLIENT_KEY
    )
    frame = json.loads(proto.init_frame())
    ct = bytearray.fromhex(frame["payload"]["ciphertextHex"])
    ct[3] ^= 1
    bad = {**frame, "payload": {**frame["payload"], "ciphertextHex": ct.hex()}}
    with pytest.raises(FrameDecryptionError):
        HostSession.accept(parse_client_message(json.dumps(bad)), host_private_key=HOST_KEY)
    # a flipped signature byte recovers to somebody else (or to nobody): never the client
    sig = bytearray.fromhex(frame["payload"]["signatureHex"])
    sig[5] ^= 1
    forged = {**frame, "payload": {**frame["payload"], "signatureHex": sig.hex()}}
    try:
        _, opened = HostSession.accept(
            parse_client_message(json.dumps(forged)), host_private_key=HOST_KEY
        )
    except HandshakeError:
        pass
    else:
        assert opened.client_address != Account.from_key(CLIENT_KEY).address
    # an init sealed for another host does not open
    with pytest.raises(FrameDecryptionError):
        HostSession.accept(parse_client_message(json.dumps(frame)), host_private_key=EPH_KEY)


def test_init_bad_nonce_and_job_mismatch():
    payload = seal_session_init(
        b'{"sessionKey":"' + SESSION_KEY.hex().encode() + b'","jobId":"5"}',
        recipient_public_key=_compressed(HOST_KEY),
        sender_private_key=CLIENT_KEY,
    )
    short = payload.model_copy(update={"nonce_hex": "00" * 12})
    with pytest.raises(HandshakeError) as info:
        open_session_init(short, recipient_private_key=HOST_KEY)
    assert info.value.code == "INVALID_NONCE_SIZE"
    init = EncryptedSessionInit(payload=payload, session_id="6", job_id="6", chain_id=1)
    with pytest.raises(HandshakeError, match="jobId 5 differs"):
        HostSession.accept(init, host_private_key=HOST_KEY)


def test_tampered_prompt_and_chunk():
    proto, host, _ = _pair()
    frame = json.loads(proto.prompt_frame("secret"))
    ct = bytearray.fromhex(frame["payload"]["ciphertextHex"])
    ct[-1] ^= 0x80
    frame["payload"]["ciphertextHex"] = ct.hex()
    with pytest.raises(FrameDecryptionError) as info:
        host.open_message(parse_client_message(json.dumps(frame)))
    assert info.value.code == "DECRYPTION_FAILED"
    chunk = json.loads(host.chunk_frame("tok"))
    nonce = bytearray.fromhex(chunk["payload"]["nonceHex"])
    nonce[0] ^= 1
    chunk["payload"]["nonceHex"] = nonce.hex()
    with pytest.raises(FrameDecryptionError):
        proto.receive(json.dumps(chunk))


def test_wrong_aad_is_refused():
    proto, host, _ = _pair()
    # sealed under message_1 while message_0 is due, and honest about it: index error
    proto._next_message = 1
    with pytest.raises(MessageIndexError, match="message_1"):
        host.open_message(parse_client_message(proto.prompt_frame("x")))
    # sealed under message_1 but labelled message_0: the tag does not verify
    frame = json.loads(proto.prompt_frame("y"))  # sealed with message_2
    frame["payload"]["aadHex"] = b"message_0".hex()
    with pytest.raises(FrameDecryptionError):
        host.open_message(parse_client_message(json.dumps(frame)))
    # chunks: a chunk sealed under chunk_5 presented as index 0
    other = HostSession(SESSION_KEY, session_id="42")
    other._next_chunk = 5
    forged = json.loads(other.chunk_frame("z"))
    forged["payload"]["index"], forged["payload"]["aadHex"] = 0, b"chunk_0".hex()
    fresh, _, _ = _pair(session_key=SESSION_KEY)
    with pytest.raises(FrameDecryptionError):
        fresh.receive(json.dumps(forged))


def test_reused_and_out_of_order_indexes():
    proto, host, _ = _pair()
    first, second = proto.prompt_frame("a"), proto.prompt_frame("b")
    with pytest.raises(MessageIndexError):  # out of order: message_1 before message_0
        host.open_message(parse_client_message(second))
    assert host.open_message(parse_client_message(first)).prompt == "a"
    with pytest.raises(MessageIndexError):  # replayed message_0
        host.open_message(parse_client_message(first))
    assert host.open_message(parse_client_message(second)).prompt == "b"
    # chunks: a replay and a skip are both refused; the stream goes on in order
    c0, c1, c2 = (host.chunk_frame(t) for t in "xyz")
    assert proto.receive(c0) == TokenChunk("x", 0, 1, False)
    with pytest.raises(MessageIndexError):
        proto.receive(c0)
    with pytest.raises(MessageIndexError):
        proto.receive(c2)
    assert proto.receive(c1).text == "y"
    assert proto.receive(c2).text == "z"


def test_plaintext_prompt_inside_encrypted_payload():
    """Upstream hosts treat a decrypted non-JSON string as the prompt itself."""
    _, host, _ = _pair(session_key=SESSION_KEY)
    nonce = NONCE
    frame = {
        "type": "encrypted_message",
        "session_id": "42",
        "payload": {
            "ciphertextHex": _xchacha_seal(SESSION_KEY, nonce, b"just text", b"message_0").hex(),
            "nonceHex": nonce.hex(),
            "aadHex": b"message_0".hex(),
        },
    }
    request = host.open_message(parse_client_message(json.dumps(frame)))
    assert (request.prompt, request.max_tokens, request.temperature) == ("just text", 4000, 0.7)


def test_encrypted_frames_need_an_acknowledged_session():
    proto = ClientSession(
        job_id=3, host_public_key=_compressed(HOST_KEY), client_private_key=CLIENT_KEY
    )
    host = HostSession(SESSION_KEY, session_id="3")
    with pytest.raises(ProtocolError, match="outside an established"):
        proto.receive(host.chunk_frame("early"))


def test_keys_stay_out_of_reprs():
    proto, host, opened = _pair(session_key=SESSION_KEY)
    for obj in (proto, host, opened):
        text = repr(obj)
        for secret in (SESSION_KEY.hex(), CLIENT_KEY.hex(), HOST_KEY.hex()):
            assert secret not in text


# ---------------------------------------------------------------- checkpoint deltas


def test_checkpoint_delta_sealed_to_the_recovery_key():
    from fabstir_sdk.protocol import open_checkpoint_delta, seal_checkpoint_delta

    recovery = bytes.fromhex("44" * 32)
    delta = {
        "sessionId": "7",
        "checkpointIndex": 0,
        "messages": [{"role": "user", "content": "hi"}],
    }
    envelope = seal_checkpoint_delta(
        delta,
        recovery_public_key=_compressed(recovery).hex(),
        host_private_key=HOST_KEY,
        _ephemeral_key=EPH_KEY,
        _nonce=NONCE,
    )
    assert envelope["userRecoveryPubKey"] == "0x" + _compressed(recovery).hex()
    assert envelope["ephemeralPublicKey"] == "0x" + _compressed(EPH_KEY).hex()
    # independently: sha256(ECDH x) -> HKDF(info="checkpoint-delta-encryption-v1") -> XChaCha20
    shared = hashlib.sha256(_ecdh_x(EPH_KEY, _compressed(recovery))).digest()
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"checkpoint-delta-encryption-v1"
    ).derive(shared)
    plain = _xchacha_open(key, NONCE, bytes.fromhex(envelope["ciphertext"]), b"")
    assert json.loads(plain) == delta
    opened, signer = open_checkpoint_delta(envelope, recovery_private_key=recovery)
    assert opened == delta and signer == Account.from_key(HOST_KEY).address
    with pytest.raises(FrameDecryptionError):
        open_checkpoint_delta(envelope, recovery_private_key=CLIENT_KEY)  # someone else
    tampered = {**envelope, "ciphertext": "00" + envelope["ciphertext"][2:]}
    with pytest.raises(FrameDecryptionError):
        open_checkpoint_delta(tampered, recovery_private_key=recovery)
    with pytest.raises(ProtocolError):
        open_checkpoint_delta({"encrypted": True}, recovery_private_key=recovery)


def test_accept_with_the_hosts_public_key_kept():
    """A host that keeps its public key (not derived per init) opens the same init the same
    way, and the key it gives is the one in the signed transcript: a wrong one recovers
    another signer."""
    _, init = _client_init()
    _, derived = HostSession.accept(init, host_private_key=HOST_KEY)
    _, kept = HostSession.accept(
        init, host_private_key=HOST_KEY, host_public_key=_compressed(HOST_KEY)
    )
    assert kept == derived
    assert kept.client_address == Account.from_key(CLIENT_KEY).address
    assert kept.ephemeral_public_key == bytes.fromhex(init.payload.eph_pub_hex)
    _, wrong = HostSession.accept(
        init, host_private_key=HOST_KEY, host_public_key=_compressed(CLIENT_KEY)
    )
    assert wrong.client_address != kept.client_address
