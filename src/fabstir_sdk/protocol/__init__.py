"""The host wire protocol, sans-I/O: message models, E2EE and per-session state machines.

The same protocol upstream hosts and SDKs speak (``ws(s)://host/v1/ws``), so our client can
use their hosts and their clients ours. A client drives one :class:`ClientSession` per
session::

    proto = ClientSession(job_id=42, chain_id=84532, host_public_key=host.public_key,
                          client_private_key=wallet_key, model_name="repo:file")
    await ws.send(proto.init_frame())
    while not proto.ready:
        proto.receive(await ws.recv())          # Connected, then SessionInitAck
    await ws.send(proto.prompt_frame("Hello"))
    while True:
        event = proto.receive(await ws.recv())  # TokenChunk ... ResponseDone, StreamEnd
        if isinstance(event, HostErrorEvent):
            raise event.error                   # error frames are events, not raised
        if isinstance(event, StreamEnd):
            break

``proto.state`` (:class:`ClientState`) says where the session is. The host side is
:class:`HostSession`; the frames are the models in ``_messages``.
"""

from ._client import (
    TOKENS_WITHOUT_TEXT,
    CheckpointFailed,
    ClientEvent,
    ClientSession,
    HostErrorEvent,
    SessionEvent,
    TokenOverreport,
    tokens_bound,
)
from ._client import State as ClientState
from ._crypto import NONCE_SIZE, ZERO_SALT, hkdf_sha256, transcript_digest
from ._deltas import (
    DELTA_INFO,
    open_checkpoint_delta,
    seal_checkpoint_delta,
    seal_checkpoint_delta_signed,
)
from ._messages import (
    CLIENT_MESSAGES,
    DEFAULT_CHAIN_ID,
    E2EE_ALG,
    HOST_MESSAGES,
    MAX_FRAME_BYTES,
    ChatMessage,
    CheckpointRequest,
    CheckpointSubmitted,
    ChunkPayload,
    CipherPayload,
    ClientMessage,
    Connected,
    EncryptedChunk,
    EncryptedMessage,
    EncryptedResponse,
    EncryptedSessionInit,
    EphemeralCipherPayload,
    ErrorFrame,
    HostMessage,
    HostNotice,
    Inference,
    LegacyCancel,
    Ping,
    PongFrame,
    Prompt,
    PromptRequest,
    ProofSubmitted,
    Response,
    SessionEnd,
    SessionInit,
    SessionInitAck,
    SessionInitData,
    StreamCancel,
    StreamChunkFrame,
    StreamEnd,
    UnsupportedRequest,
    Usage,
    VectorDatabase,
    WireModel,
    decode_frame,
    load_json,
    parse_client_message,
    parse_host_message,
)
from ._session import (
    FINAL_AAD,
    SIGNED_MESSAGE_ALG,
    HostSession,
    OpenedInit,
    PresignedInit,
    ResponseDone,
    TokenChunk,
    chunk_aad,
    message_aad,
    open_session_init,
    presign_session_init,
    seal_session_init,
)

__all__ = [
    "CLIENT_MESSAGES",
    "ChatMessage",
    "CheckpointFailed",
    "CheckpointRequest",
    "CheckpointSubmitted",
    "ChunkPayload",
    "CipherPayload",
    "ClientEvent",
    "ClientMessage",
    "ClientSession",
    "ClientState",
    "Connected",
    "DEFAULT_CHAIN_ID",
    "DELTA_INFO",
    "E2EE_ALG",
    "EncryptedChunk",
    "EncryptedMessage",
    "EncryptedResponse",
    "EncryptedSessionInit",
    "EphemeralCipherPayload",
    "ErrorFrame",
    "FINAL_AAD",
    "HOST_MESSAGES",
    "HostErrorEvent",
    "HostMessage",
    "HostNotice",
    "HostSession",
    "Inference",
    "LegacyCancel",
    "MAX_FRAME_BYTES",
    "NONCE_SIZE",
    "OpenedInit",
    "Ping",
    "PongFrame",
    "PresignedInit",
    "Prompt",
    "PromptRequest",
    "ProofSubmitted",
    "Response",
    "ResponseDone",
    "SIGNED_MESSAGE_ALG",
    "SessionEnd",
    "SessionEvent",
    "SessionInit",
    "SessionInitAck",
    "SessionInitData",
    "StreamCancel",
    "StreamChunkFrame",
    "StreamEnd",
    "TOKENS_WITHOUT_TEXT",
    "TokenChunk",
    "TokenOverreport",
    "UnsupportedRequest",
    "Usage",
    "VectorDatabase",
    "WireModel",
    "ZERO_SALT",
    "chunk_aad",
    "decode_frame",
    "hkdf_sha256",
    "load_json",
    "message_aad",
    "open_checkpoint_delta",
    "open_session_init",
    "parse_client_message",
    "parse_host_message",
    "presign_session_init",
    "seal_checkpoint_delta",
    "seal_checkpoint_delta_signed",
    "seal_session_init",
    "tokens_bound",
    "transcript_digest",
]
