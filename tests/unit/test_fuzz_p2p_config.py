"""The p2p frame codec and reply parsers, and configuration parsing, fed garbage: typed
FabstirErrors only (P2PProtocolError, ConfigError), never a crash."""

from __future__ import annotations

import json
from typing import Any

from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from fabstir_sdk.config import SDKConfig
from fabstir_sdk.errors import ConfigError, P2PProtocolError
from fabstir_sdk.host._config import HostConfig
from fabstir_sdk.p2p._wire import FrameDecoder, decode_message, encode_message
from fabstir_sdk.p2p.messages import HostLoad, HostProtocolServer, parse_reply, verify_pong

from .fuzzing import fuzz, run, typed_only

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["0x" + "ab" * 32, "0x" + "11" * 20, "", "-1", "1e9", "nan"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
REPLY_TYPES = ["pong", "capabilities", "models", "prices", "load", "error", "other"]


@fuzz()
@given(st.lists(st.binary(max_size=40), max_size=12), st.integers(1, 64))
def test_frame_decoder_takes_any_byte_stream(chunks, max_frame):
    decoder = FrameDecoder(max_frame=max_frame)
    frames: list[bytes] = []
    try:
        for chunk in chunks:
            frames += decoder.feed(chunk)
    except P2PProtocolError:
        return
    assert all(len(f) <= max_frame for f in frames)
    for body in frames:
        typed_only(decode_message, body)


@fuzz(100)
@given(st.lists(json_values, min_size=1, max_size=4), st.data())
def test_frames_survive_any_split(values, data):
    messages = [{"type": "x", "v": v} for v in values]
    stream = b"".join(encode_message(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += [decode_message(f) for f in decoder.feed(stream[a:b])]
    assert out == json.loads(json.dumps(messages))
    assert decoder.pending == 0


@fuzz()
@given(
    st.sampled_from(REPLY_TYPES),
    st.sampled_from(REPLY_TYPES[:-1]),
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    st.dictionaries(
        st.sampled_from(
            ["nonce", "host", "peer_id", "chain_id", "timestamp", "signature", "prices", "code"]
        ),
        json_values,
        max_size=6,
    ),
)
def test_reply_parsers_take_any_reply(kind, expected, extra, fields):
    reply = {**extra, **fields, "type": kind}
    typed_only(parse_reply, reply, expected)
    typed_only(verify_pong, reply, nonce="ab" * 32, peer_id="peer", chain_id=1, now=0)


ACCOUNT = Account.from_key(b"\x07" * 32)
SERVER = HostProtocolServer(
    ACCOUNT,
    chain_id=31337,
    api_url="http://127.0.0.1:1",
    models=["0x" + "ab" * 32],
    prices={None: {"0x" + "ab" * 32: 5}},
    load=lambda: HostLoad(active_sessions=0, max_sessions=1),
)


@fuzz(100)
@given(
    st.sampled_from(["ping", "capabilities", "models", "prices", "load", "nope"]) | json_values,
    st.dictionaries(st.sampled_from(["nonce", "token", "x"]), json_values, max_size=3),
)
def test_host_protocol_server_answers_any_request(kind, fields):
    reply = run(SERVER.handle({**fields, "type": kind}, remote_peer="a", local_peer="b"))
    assert isinstance(reply, dict) and isinstance(reply["type"], str)
    json.dumps(reply)  # always sendable


ADDRESSES = {
    name: "0x" + f"{i + 1:02x}" * 20
    for i, name in enumerate(
        [
            "job_marketplace",
            "node_registry",
            "proof_system",
            "host_earnings",
            "model_registry",
            "usdc_token",
            "fab_token",
        ]
    )
}
FIELDS = [
    "rpc_url",
    "chain_id",
    "contract_addresses",
    "storage_dir",
    "s5_portal_url",
    "tx_timeout",
    "gas_headroom",
    "rpc_timeout",
    "rpc_retry_for",
    "session_timeouts",
]


@fuzz()
@given(st.dictionaries(st.sampled_from([*FIELDS, "bogus"]), json_values, max_size=4))
def test_sdk_config_takes_any_fields(fields):
    base: dict[str, Any] = {"rpc_url": "http://127.0.0.1:8545", "contract_addresses": ADDRESSES}
    config = typed_only(SDKConfig, **{**base, **fields})
    assert isinstance(config, SDKConfig | ConfigError)


HOST_FIELDS = [
    "models",
    "port",
    "price_per_token",
    "backend",
    "token_delay",
    "context_window",
    "max_frame_bytes",
    "max_sessions",
    "max_connections_per_ip",
    "frames_per_second",
    "frame_burst",
    "header_timeout",
    "idle_timeout",
]


@fuzz()
@given(st.dictionaries(st.sampled_from(HOST_FIELDS), json_values, max_size=4))
def test_host_config_takes_any_fields(fields):
    sdk = SDKConfig(rpc_url="http://127.0.0.1:8545", contract_addresses=ADDRESSES)
    config = typed_only(HostConfig, **{"sdk": sdk, "models": ["a/b:c.gguf"], **fields})
    assert isinstance(config, HostConfig | ConfigError)
