"""A client session and the host session that accepted its init, with no socket: the
opener the protocol unit tests share (test_protocol_client, test_token_claims,
test_fuzz_protocol, test_protocol_fast_chunk)."""

from __future__ import annotations

import copy
import functools

import coincurve

from fabstir_sdk.protocol import (
    ClientSession,
    Connected,
    EncryptedSessionInit,
    HostSession,
    SessionInitAck,
    parse_client_message,
)
from fabstir_sdk.protocol._client import State

HOST_KEY = bytes.fromhex("11" * 32)
CLIENT_KEY = bytes.fromhex("22" * 32)
HOST_PUBLIC = coincurve.PrivateKey(HOST_KEY).public_key.format(compressed=True)
ACK = SessionInitAck(session_id="42", job_id=42, chain_id=31337).to_json()
#: The session key of :func:`fixed_pair`: frames one such pair's host makes open in another.
FIXED_SESSION_KEY = bytes(range(32))


def accept(frame: str) -> HostSession:
    """The host's side of the session a client's init frame opens."""
    init = parse_client_message(frame)
    assert isinstance(init, EncryptedSessionInit)
    host, _ = HostSession.accept(init, host_private_key=HOST_KEY)
    return host


def open_pair(session_key: bytes | None = None) -> tuple[ClientSession, HostSession]:
    """Session 42: the client sends its init, the host accepts it, the client takes the
    ``connected`` and ``session_init_ack`` frames and is ready (each step checked)."""
    proto = ClientSession(
        job_id=42,
        chain_id=31337,
        host_public_key=HOST_PUBLIC,
        client_private_key=CLIENT_KEY,
        model_name="m",
        session_key=session_key,
    )
    assert proto.state is State.CONNECTING and not proto.ready
    host = accept(proto.init_frame())
    assert isinstance(proto.receive(Connected().to_json()), Connected)
    assert isinstance(proto.receive(ACK), SessionInitAck)
    assert proto.state is State.READY and proto.ready
    return proto, host


@functools.cache
def _fixed() -> tuple[ClientSession, HostSession]:
    return open_pair(FIXED_SESSION_KEY)


def fixed_pair() -> tuple[ClientSession, HostSession]:
    """A new copy of one pair opened under :data:`FIXED_SESSION_KEY`: as :func:`open_pair`
    makes it, without the init's key agreement and signature each time (the fuzz tests
    take one an example)."""
    return copy.deepcopy(_fixed())
