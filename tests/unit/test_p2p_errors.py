"""trio ExceptionGroups and libp2p exceptions become the SDK's typed errors."""

import trio
from libp2p.network.exceptions import SwarmDialAllFailedError, SwarmException
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.protocol_muxer.exceptions import ProtocolNotSupportedError

from fabstir_sdk import (
    P2PError,
    P2PNodeClosedError,
    P2PProtocolError,
    P2PTimeoutError,
    PeerUnreachableError,
)
from fabstir_sdk.p2p._errors import leaf, translate


def test_nested_groups_unwrap_to_the_real_error():
    cause = SwarmException("unable to connect to 12D3Koo...")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [cause])])
    error = translate(group)
    assert type(error) is PeerUnreachableError
    assert error.__cause__ is cause
    assert "unable to connect" in str(error)


def test_cancellations_do_not_hide_the_error():
    cancelled = BaseExceptionGroup("g", [trio.Cancelled._create(), StreamReset("reset")])
    assert isinstance(leaf(cancelled), StreamReset)
    assert type(translate(cancelled)) is P2PProtocolError


def test_typed_error_inside_a_group_passes_through():
    mine = P2PTimeoutError("late")
    assert translate(ExceptionGroup("g", [ValueError("x"), mine])) is mine


def test_mapping():
    assert type(translate(trio.TooSlowError())) is P2PTimeoutError
    assert isinstance(translate(trio.TooSlowError()), TimeoutError)
    dial = SwarmDialAllFailedError("no addresses", peer_id=None, num_addrs_tried=0)
    assert type(translate(dial)) is PeerUnreachableError
    assert type(translate(ConnectionRefusedError())) is PeerUnreachableError
    assert type(translate(StreamEOF())) is P2PProtocolError
    assert type(translate(ProtocolNotSupportedError("na"))) is P2PProtocolError
    assert type(translate(trio.RunFinishedError())) is P2PNodeClosedError
    other = translate(KeyError("k"))
    assert type(other) is P2PError and "KeyError" in str(other)
