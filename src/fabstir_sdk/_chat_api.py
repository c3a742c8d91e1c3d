"""``sdk.chat.completions.create``: the OpenAI chat API over paid Fabstir sessions.

Shared by the in-process API and ``fabstir proxy`` (which only adds HTTP): requests are
checked (``_chat_request``), prompts go to one reused session per model, and answers come
back in OpenAI's wire shapes (``_chat_shapes``).

The context. An OpenAI client sends the whole conversation with every request, while a host
keeps the session's history itself. We remember what the host holds for each session; when
the request's earlier messages are exactly that (the usual next turn), only the last user
message is sent. Otherwise (a new conversation, an edited one, a system message, after an
error) the earlier messages are replayed with the prompt and the host resets its context to
them. So the model always sees what the client sent, and a continuing chat costs one message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._chat_request import ChatRequest, parse_request
from ._chat_shapes import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
    FabstirInfo,
    ModelList,
    ModelObject,
)
from .chain.units import Amount
from .errors import (
    ChainStateError,
    FabstirError,
    HostError,
    HostFailedError,
    SessionClosedError,
    ValidationError,
)
from .protocol import ChatMessage

if TYPE_CHECKING:
    from .managers.session import Payment, PromptStream, Session
    from .models import Settlement, TokenUsage
    from .sdk import FabstirSDK

__all__ = ["Chat", "ChatCompletionStream", "Completions"]

log = logging.getLogger("fabstir_sdk.chat")


def _finish_reason(host_reason: str | None) -> str:
    return "length" if host_reason == "length" else "stop"


# -- sessions ---------------------------------------------------------------------------------


@dataclass
class _Slot:
    """The session of one model; ``held`` is the history its host holds (None: unknown)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: Session | None = None
    held: list[ChatMessage] | None = None


class ChatCompletionStream:
    """``async for chunk in stream`` (or ``async with stream``): the answer as chunks.

    One request answered on its model's session: the session is held from the request until
    the last chunk or :meth:`close`; leaving early cancels the answer on the host, which
    bills only what it streamed. Like the ``openai`` package's streams it is a thin shell
    over a generator; here the generator reads the answer inside ``async with
    session.stream(...)``, so however the stream is left, the session's turn comes back.
    """

    def __init__(self, chat: Chat, request: ChatRequest) -> None:
        self.request = request
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self._chat = chat
        self._slot = chat._slot(request.model)
        self._session: Session | None = None
        self._answer: PromptStream | None = None
        self._first: str | None = None
        self._pieces = self._read()
        self._chunks = self._generate()

    async def __aenter__(self) -> ChatCompletionStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> ChatCompletionStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._chunks.__anext__()

    async def close(self) -> None:
        """Give the session back (cancelling the answer if it is not complete)."""
        await self._chunks.aclose()
        await self._pieces.aclose()

    async def _start(self) -> None:
        """Read up to the first piece, so that errors (no host, price cap, deposit used up,
        a refused prompt) raise from ``create`` rather than from the first chunk."""
        self._first = await anext(self._pieces, None)

    async def _read(self) -> AsyncGenerator[str, None]:
        """The answer's pieces, read on the model's session while holding it."""
        chat, slot, request = self._chat, self._slot, self.request
        async with slot.lock:
            try:
                session = self._session = await chat._session(slot, request.model)
                prior = list(request.messages[:-1])
                # the host holds the history already, or resets its context to the client's
                history = None if slot.held == prior else prior
                slot.held = None  # unknown until this answer is complete
                async with session.stream(
                    request.messages[-1].content,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    history=history,
                ) as answer:
                    self._answer = answer
                    async for chunk in answer:
                        yield chunk.text
            except GeneratorExit:  # the caller left early: the answer is cancelled
                raise
            except BaseException as exc:
                self._retire_if_broken(exc)
                raise
            if answer.finish_reason not in ("cancelled", "error"):
                reply = ChatMessage(role="assistant", content=answer.text)
                slot.held = [*request.messages, reply]

    def _retire_if_broken(self, exc: BaseException) -> None:
        """After anything but a clean refusal (a host error frame, bad input) the link may
        be dead or still carry the old answer: the next request gets a new session."""
        if not isinstance(exc, HostError | ValidationError | ChainStateError | SessionClosedError):
            failed = isinstance(exc, HostFailedError)
            self._chat._retire(self._slot, host_failed=failed)

    async def _generate(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        head = self._chunk(ChoiceDelta(role="assistant", content=""))
        yield head.model_copy(update={"fabstir": self._info})
        if self._first is not None:
            yield self._chunk(ChoiceDelta(content=self._first))
            async for piece in self._pieces:
                yield self._chunk(ChoiceDelta(content=piece))
        yield self._chunk(ChoiceDelta(), self._finish_reason)
        if self.request.include_usage:
            yield ChatCompletionChunk(
                id=self.id,
                created=self.created,
                model=self.request.model,
                choices=[],
                usage=self._usage,
            )

    async def _completion(self) -> ChatCompletion:
        """The whole answer at once (a request without ``stream``)."""
        async with self:
            async for _ in self._pieces:
                pass
        assert self._answer is not None
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.request.model,
            choices=[
                Choice(
                    message=ChatCompletionMessage(content=self._answer.text),
                    finish_reason=self._finish_reason,
                )
            ],
            usage=self._usage,
            fabstir=self._info,
        )

    def _chunk(self, delta: ChoiceDelta, finish_reason: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.request.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)],
        )

    @property
    def _info(self) -> FabstirInfo:
        assert self._session is not None
        return FabstirInfo(session_id=self._session.session_id, host=self._session.host.address)

    @property
    def _usage(self) -> CompletionUsage:
        assert self._answer is not None
        usage: TokenUsage | None = self._answer.usage
        return CompletionUsage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
        )

    @property
    def _finish_reason(self) -> str:
        assert self._answer is not None
        return _finish_reason(self._answer.finish_reason)


class Completions:
    """``chat.completions``: :meth:`create` like the ``openai`` package's."""

    def __init__(self, chat: Chat) -> None:
        self._chat = chat

    async def create(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        stream: bool = False,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        stream_options: dict[str, Any] | None = None,
        n: int | None = None,
        **unsupported: Any,
    ) -> Any:
        """A :class:`ChatCompletion`, or with ``stream=True`` a :class:`ChatCompletionStream`.

        Errors (no host, price cap, deposit used up, ...) raise here, before any chunk.
        """
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": stream,
            "max_tokens": max_tokens,
            "max_completion_tokens": max_completion_tokens,
            "temperature": temperature,
            "stream_options": stream_options,
            "n": n,
        }
        return await self.answer(parse_request({**unsupported, **body}))

    async def answer(self, request: ChatRequest) -> ChatCompletion | ChatCompletionStream:
        """Answer a checked request (the proxy's entry point)."""
        stream = ChatCompletionStream(self._chat, request)
        await stream._start()
        if request.stream:
            return stream
        return await stream._completion()


class Chat:
    """``sdk.chat``: OpenAI-shaped chat over paid sessions, one reused session per model.

    ``budget`` is the deposit escrowed for each model's session (the most it can cost);
    hosts above ``max_price_per_token`` (base units per 1000 tokens) are never used. Both
    (and ``payment``) are read when a model's session opens, so they may be set on
    ``sdk.chat`` before its first request. :meth:`aclose` completes every session now:
    you pay the proven tokens only. With ``payer`` (an agent's chat, paid by the wallet that
    authorised it) sessions are opened as that wallet's delegate and :meth:`aclose` ends
    them instead: only the depositor or the host may complete, so the hosts settle.
    """

    def __init__(
        self,
        sdk: FabstirSDK,
        *,
        budget: Amount = "1.0",
        max_price_per_token: int | None = None,
        payment: Payment = "usdc",
        payer: str | None = None,
    ) -> None:
        self._sdk = sdk
        self.budget = budget
        self.max_price_per_token = max_price_per_token
        self.payment: Payment = payment
        self.payer = payer
        #: Sessions opened for a payer: ended, not completed, at :meth:`aclose`.
        self._delegated: set[str] = set()
        self.completions = Completions(self)
        self._slots: dict[str, _Slot] = {}
        self._retired: list[Session] = []
        self._closed = False

    def __repr__(self) -> str:
        live = sum(1 for s in self._slots.values() if s.session is not None)
        return f"Chat(sessions={live}, budget={self.budget!r})"

    @property
    def sessions(self) -> dict[str, Session]:
        """The open session of each model used so far."""
        return {m: s.session for m, s in self._slots.items() if s.session is not None}

    async def models(self) -> ModelList:
        """The approved models of the registry, as OpenAI's model list."""
        infos = await self._sdk.get_model_manager().list_models()
        return ModelList(data=[ModelObject(id=f"{i.repo}:{i.file}") for i in infos if i.approved])

    async def aclose(self) -> list[Settlement]:
        """Complete every session (after the answers under way): their settlements."""
        self._closed = True
        settlements = []
        for slot in self._slots.values():
            async with slot.lock:
                if slot.session is not None:
                    self._retired.append(slot.session)
                    slot.session, slot.held = None, None
        retired, self._retired = self._retired, []
        for session in retired:
            if session.session_id in self._delegated:
                await session.end()  # the host settles with the payer
                continue
            try:
                settlements.append(await session.complete())
            except FabstirError as exc:
                log.warning("could not complete session %s: %s", session.session_id, exc)
        return settlements

    def _slot(self, model: str) -> _Slot:
        if self._closed:
            raise SessionClosedError("this chat is closed: its sessions were completed")
        return self._slots.setdefault(model, _Slot())

    async def _session(self, slot: _Slot, model: str) -> Session:
        if self._closed:
            raise SessionClosedError("this chat is closed: its sessions were completed")
        if slot.session is None:
            manager = await self._sdk.get_session_manager()
            slot.session = await manager.create_session(
                model=model,
                host=None,
                payment=self.payment,
                deposit=self.budget,
                max_price_per_token=self.max_price_per_token,
                payer=self.payer,
            )
            me = self._sdk.get_auth_manager().get_user_address()
            if slot.session.depositor != me:  # opened for the payer: not ours to complete
                self._delegated.add(slot.session.session_id)
            slot.held = []
            log.info("model %s: session %s", model, slot.session.session_id)
        return slot.session

    def _retire(self, slot: _Slot, *, host_failed: bool) -> None:
        """A broken session is settled at :meth:`aclose`; the next request opens another
        (and discovery re-checks a host that failed before offering it again)."""
        if slot.session is not None:
            self._retired.append(slot.session)
            if host_failed:
                self._sdk.get_discovery_manager().report_failure(slot.session.host.address)
        slot.session, slot.held = None, None
