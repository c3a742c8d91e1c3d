"""The host's HTTP routes (upstream's paths and shapes) and the ``/v1/ws`` upgrade."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from .._version import __version__
from ..errors import BackendError, ProtocolError, SessionRefusedError
from ..protocol import ChatMessage, load_json
from ._backends import Generation
from ._checkpoints import MessageRecord
from ._ws import Connection, model_matches

if TYPE_CHECKING:
    from ._node import HostNode, JobState

__all__ = ["build_app"]

_CHAIN_NAMES = {84532: "Base Sepolia", 8453: "Base", 31337: "Local devnet"}
_NODE: web.AppKey[HostNode] = web.AppKey("node")


class InferenceRequest(BaseModel):
    """``POST /v1/inference`` as upstream's clients send it (``sendPrompt``); fields upstream
    accepts but we do not use (web search, thinking) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    model: str | None = None
    prompt: str
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, ge=0)
    stream: bool = False
    request_id: str | None = None
    #: Earlier turns: the endpoint is stateless, as upstream's.
    conversation_context: list[ChatMessage] = Field(default_factory=list)
    #: The session job to bill (upstream's client sends ``jobId`` and ``sessionId``).
    job_id: int | str | None = Field(default=None, validation_alias=AliasChoices("job_id", "jobId"))
    session_id: str | None = Field(
        default=None, validation_alias=AliasChoices("session_id", "sessionId")
    )
    chain_id: int | None = Field(default=None, validation_alias=AliasChoices("chain_id", "chainId"))

    def job_number(self) -> int | None:
        """The job named by ``jobId``, else by a numeric ``sessionId`` (as upstream reads it)."""
        for value in (self.job_id, self.session_id):
            text = str(value).removesuffix("n") if value is not None else ""
            if text.isdigit() and 0 < len(text) <= 78 and int(text) > 0:
                return int(text)
        if self.job_id is not None:
            raise ProtocolError(f"jobId {str(self.job_id)[:80]!r} is not a job id")
        return None


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":"))
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": message, "code": code}, status)


@web.middleware
async def _cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:  # permissive, as upstream: browsers call hosts directly
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def build_app(node: HostNode) -> web.Application:
    app = web.Application(client_max_size=node.config.max_frame_bytes, middlewares=[_cors])
    app[_NODE] = node
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/version", _version)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/inference", _inference)
    app.router.add_get("/v1/checkpoints/{session_id}", _checkpoints)
    app.router.add_get("/v1/ws", _websocket)
    return app


async def _health(request: web.Request) -> web.Response:
    return _json({"status": "healthy", "issues": None})


async def _version(request: web.Request) -> web.Response:
    node = request.app[_NODE]
    return _json(
        {
            "version": __version__,
            "build": f"fabstir-sdk-reference-host/{node.backend.name}",
            "date": None,
            "features": node.features(),
        }
    )


async def _models(request: web.Request) -> web.Response:
    node = request.app[_NODE]
    chain_id = node.chain.chain_id
    asked = request.query.get("chain_id")
    if asked is not None and asked != str(chain_id):
        return _error(400, "WRONG_CHAIN", f"this host serves chain {chain_id}")
    models = [
        {
            "id": info.model_id,
            "name": info.file,
            "huggingface_repo": info.repo,
            "sha256_hash": info.sha256,
            "approval_tier": 1,
        }
        for info in node.model_infos
    ]
    return _json(
        {"models": models, "chain_id": chain_id, "chain_name": _CHAIN_NAMES.get(chain_id, "")}
    )


async def _inference(request: web.Request) -> web.StreamResponse:
    """Plaintext inference, served only when the operator allows plaintext.

    As upstream's host: a request naming a session job (``jobId``) is billed to it, after
    the same chain checks as a session init (active, this host, a model served here); it is
    as unauthenticated as the plaintext ``session_init``. Without a job it is unpaid.
    """
    node = request.app[_NODE]
    if not node.config.allow_plaintext:
        return _error(403, "PLAINTEXT_DISABLED", "use an encrypted WebSocket session (/v1/ws)")
    try:
        body = InferenceRequest.model_validate(load_json(await request.read()))
        job_number = body.job_number()
    except ProtocolError as exc:
        return _error(400, exc.code, str(exc))
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        return _error(400, "INVALID_REQUEST", f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    chain_id = node.chain.chain_id
    if body.chain_id is not None and body.chain_id != chain_id:
        return _error(400, "WRONG_CHAIN", f"this host serves chain {chain_id}")
    state: JobState | None = None
    if job_number is not None:
        try:
            node.check_unauthenticated_job(job_number)
            job, model_id = await node.chain.check_session(job_number, None, node.served)
            info = next((m for m in node.model_infos if m.model_id == model_id), None)
            if body.model and not model_matches(body.model, model_id, info, node.served[model_id]):
                raise SessionRefusedError(
                    f"model {body.model[:80]!r} is not the job's model", code="WRONG_MODEL"
                )
        except ProtocolError as exc:
            status = 503 if exc.code == "CHAIN_UNAVAILABLE" else 403
            return _error(status, exc.code, str(exc))
        state = node.attach(None, job, model_id, None)
    try:
        return await _infer(request, node, body, state)
    finally:
        if state is not None:
            node.request_done(state)


async def _infer(
    request: web.Request, node: HostNode, body: InferenceRequest, state: JobState | None
) -> web.StreamResponse:
    backend = node.backend
    prompt = ChatMessage(role="user", content=body.prompt)
    context = [*body.conversation_context, prompt]
    prompt_tokens = backend.count_tokens(context)
    room = backend.context_window - prompt_tokens
    if room < 1:
        return _json(
            {
                "error": "prompt exceeds the context window",
                "code": "TOKEN_LIMIT_EXCEEDED",
                "prompt_tokens": prompt_tokens,
                "context_window_size": backend.context_window,
            },
            400,
        )
    budget = room
    if state is not None:
        budget = min(room, state.billing.ledger.remaining)
        if budget < 1:
            return _error(402, "DEPOSIT_EXHAUSTED", "the session's deposit is used up")
    chain_id = node.chain.chain_id
    common = {"chain_id": chain_id, "chain_name": _CHAIN_NAMES.get(chain_id, "")}
    result = Generation(prompt_tokens=prompt_tokens)
    started = int(time.time())
    generated: list[str] = []

    async def pieces() -> AsyncIterator[str]:
        """The backend's pieces, each billed to the job (if any) as it is produced."""
        async for piece in backend.stream(
            context,
            max_tokens=min(body.max_tokens, budget),
            temperature=body.temperature,
            result=result,
        ):
            generated.append(piece)
            if state is not None:
                state.billing.record(1)
            yield piece

    def account(complete: bool) -> None:
        """Bill what a backend counted beyond its pieces; keep the turn for checkpoints."""
        if state is None:
            return
        extra = max(0, result.completion_tokens - len(generated)) if complete else 0
        if extra:
            state.billing.record(extra)
        state.billing.records += [
            MessageRecord("user", body.prompt, started),
            MessageRecord("assistant", "".join(generated), int(time.time()), not complete),
        ]

    if not body.stream:
        try:
            text = "".join([p async for p in pieces()])
        except BackendError as exc:
            account(False)
            return _error(502, "INFERENCE_FAILED", str(exc))
        account(True)
        return _json(
            {
                "model": body.model or next(iter(node.served.values())),
                "content": text,
                "tokens_used": result.completion_tokens,
                "finish_reason": result.finish_reason,
                "usage": _usage(result, backend.context_window),
                "request_id": body.request_id or str(uuid.uuid4()),
                "native_token": "ETH",
                **common,
            }
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "Access-Control-Allow-Origin": "*",
        }
    )
    await response.prepare(request)
    complete = False
    try:
        async for piece in pieces():
            await _event(response, {"content": piece, "tokens": 1, "finish_reason": None, **common})
        final = {
            "finish_reason": result.finish_reason,
            "usage": _usage(result, backend.context_window),
        }
        complete = True
    except BackendError as exc:
        final = {"finish_reason": "error", "error": str(exc)}
    finally:
        account(complete)
    await _event(response, {"content": "", "tokens": 0, **final, **common})
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _usage(result: Generation, window: int) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "context_window_size": window,
    }


async def _event(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


async def _checkpoints(request: web.Request) -> web.Response:
    """The checkpoint index of a session this host served, signed by the host (EIP-191)."""
    node = request.app[_NODE]
    session_id = request.match_info["session_id"]
    entry = node.checkpoints.get(int(session_id)) if session_id.isdigit() else None
    if entry is None:
        return _error(404, "SESSION_NOT_FOUND", f"no checkpoints for session {session_id[:80]}")
    host, rows = entry
    checkpoints = [row.to_json() for row in rows]
    canonical = json.dumps(checkpoints, separators=(",", ":"), sort_keys=True).encode()
    signature = await node.sign_checkpoint_index(int(session_id), canonical)
    return _json(
        {
            "sessionId": session_id,
            "hostAddress": host,
            "checkpoints": checkpoints,
            # upstream's reader requires both signatures to be strings, or the node's single
            # hostSignature; the messages are signed in each delta, not in the index
            "messagesSignature": "",
            "checkpointsSignature": "0x" + bytes(signature).hex(),
            "hostSignature": "0x" + bytes(signature).hex(),
            "generatedAt": int(time.time()),
        }
    )


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    node = request.app[_NODE]
    # aiohttp closes (1009) above twice our cap; between the two the frame gets a typed error
    ws = web.WebSocketResponse(max_msg_size=2 * node.config.max_frame_bytes, compress=False)
    await ws.prepare(request)
    conn = Connection(node, ws)
    node.connections.add(conn)
    await conn.run()
    return ws
