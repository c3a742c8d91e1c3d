"""A paid session with a host: its public face.

A :class:`Session` is a paid job, a :class:`~fabstir_sdk.managers._channel.Channel` to the
job's host (the link, the turn, what the host reported) and a conversation in S5. Each answer
is a :class:`~fabstir_sdk.managers._prompt_stream.PromptStream` on that channel.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import pydantic

from .._display import html_table, native_amount
from ..config import SessionTimeouts
from ..errors import FabstirError, HostOverclaimError, SessionClosedError, ValidationError
from ..models import HostInfo, PromptResult, SessionJob, Settlement
from ..protocol import ChatMessage
from ._backend import Failover, Plan, SessionBackend
from ._channel import Channel
from ._link import Link
from ._prompt_stream import PromptStream
from ._proofs import ProofLog

__all__ = ["PromptStream", "Session"]

log = logging.getLogger("fabstir_sdk.session")


class Session:
    """A paid session with a host. Use :meth:`stream` or :meth:`send_prompt`, then
    :meth:`end` (the host settles, no gas) or :meth:`complete` (you settle now)."""

    def __init__(
        self,
        backend: SessionBackend,
        *,
        job: SessionJob,
        host: HostInfo,
        model: str,
        link: Link | None,
        timeouts: SessionTimeouts,
        plan: Plan,
        history: list[ChatMessage] | None = None,
    ) -> None:
        """``history``: the conversation so far, sent with the first prompt (a resume)."""
        self._backend = backend
        self.conversation_id = str(job.id)
        self.model = model
        self._channel = Channel(
            backend,
            job=job,
            host=host,
            link=link,
            timeouts=timeouts,
            plan=plan,
            conversation_id=self.conversation_id,
            owner=self,
            history=history,
        )

    def __repr__(self) -> str:
        state = "closed" if self._channel.closed else "open"
        return f"Session(job_id={self.job_id}, host={self.host.address!r}, {state})"

    def _repr_html_(self) -> str:
        return html_table(
            f"Session {self.session_id}",
            [
                ("state", "closed" if self._channel.closed else "open"),
                ("connected", self.connected),
                ("model", self.model),
                ("host", self.host.address),
                ("host API", self.host.api_url),
                ("price / 1000 tokens", native_amount(self.price_per_token, self.payment_token)),
                ("tokens reported", self.tokens_reported),
                ("tokens claimed", self.tokens_claimed),
                ("conversation", self.conversation_id),
            ],
        )

    # the job and host of the moment: a failover replaces both

    @property
    def job_id(self) -> int:
        """The session job on chain (a new one after a failover)."""
        return self._channel.job.id

    @property
    def session_id(self) -> str:
        """The job id as text: what the host and ``SessionManager`` call the session."""
        return self._channel.session_id

    @property
    def host(self) -> HostInfo:
        """The host answering now."""
        return self._channel.host

    @property
    def price_per_token(self) -> int:
        """The job's price per 1000 tokens, in the payment token's base units."""
        return self._channel.job.price_per_token

    @property
    def payment_token(self) -> str:
        """The payment token's address (the zero address for ETH)."""
        return self._channel.job.payment_token

    @property
    def proof_interval(self) -> int:
        """Tokens per proof: the least a host that produced a token is paid."""
        return self._channel.job.proof_interval

    @property
    def depositor(self) -> str:
        """Who pays: you, or the owner whose delegate opened the session (``payer=``)."""
        return self._channel.job.depositor

    @property
    def failovers(self) -> list[Failover]:
        """The moves to another host so far (``create_session(..., failover=True)``)."""
        return self._channel.failovers

    @property
    def timeouts(self) -> SessionTimeouts:
        """The deadlines of this session's answers (see the deadline table in the docs)."""
        return self._channel.timeouts

    @timeouts.setter
    def timeouts(self, value: SessionTimeouts) -> None:
        self._channel.timeouts = value

    @property
    def tokens_reported(self) -> int:
        """Tokens the host reported for this job (``stream_end``), answers given up included,
        each answer's count capped at what its text can hold (see :attr:`tokens_claimed`)."""
        return self._channel.tokens_reported

    @tokens_reported.setter
    def tokens_reported(self, value: int) -> None:
        self._channel.tokens_reported = value

    @property
    def tokens_claimed(self) -> int:
        """The host's ``stream_end`` counts for this job as it sent them, uncapped: above
        :attr:`tokens_reported` only if it claimed more than it sent (a warning said so)."""
        return self._channel.tokens_claimed

    @property
    def proofs(self) -> ProofLog:
        """The proofs the host announced on this job so far."""
        return self._channel.proofs

    @property
    def connected(self) -> bool:
        """Whether the link to the host is open."""
        return self._channel.connected

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.end()

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        history: Sequence[ChatMessage | dict[str, Any]] | None = None,
    ) -> PromptStream:
        """Stream the answer to ``prompt`` (use it in ``async with``).

        The host keeps the conversation's context; ``history`` (the messages before this
        prompt: ``ChatMessage`` objects or ``{"role": ..., "content": ...}`` dicts) makes it
        start from those instead; ``[]`` from nothing.
        """
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("prompt must be a non-empty string")
        options: dict[str, Any] = {}
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        messages = None if history is None else _messages(history)
        return PromptStream(self._channel, prompt, options, messages)

    async def send_prompt(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        history: Sequence[ChatMessage | dict[str, Any]] | None = None,
    ) -> PromptResult:
        """The whole answer to ``prompt`` at once (``history`` as in :meth:`stream`)."""
        async with self.stream(
            prompt, max_tokens=max_tokens, temperature=temperature, history=history
        ) as s:
            async for _ in s:
                pass
        assert s.usage is not None
        return PromptResult(text=s.text, usage=s.usage, finish_reason=s.finish_reason)

    async def end(self) -> None:
        """Disconnect; the host submits its last proof and settles (no gas for you)."""
        channel = self._channel
        if channel.closed:
            return
        channel.closed = True
        link = channel.link
        if link is not None and not link.closed:
            with contextlib.suppress(FabstirError):
                await link.send(link.proto.end_frame())
        await channel.drop_link()
        self._backend.record_proofs_soon(channel.proofs)
        await self._backend.metadata_written(self.job_id, quiet=True)
        self._backend.sessions.pop(self.session_id, None)

    async def complete(self) -> Settlement:
        """Settle now: the host bills what it streamed, then you complete the job.

        Asks the host for its final proof (``timeouts.settle``), waits for that proof's
        transaction, keeps every proof announced on the session in S5 (``"proofs"``,
        checked against the chain), stores the conversation and passes its CID to
        ``completeSessionJob``. If the chain holds more tokens than the host reported to us,
        it completes at once and warns with :class:`HostOverclaimError`.
        """
        channel, backend = self._channel, self._backend
        if channel.closed:
            raise SessionClosedError(f"session {self.session_id} is already closed")
        if self.depositor != backend.ctx.require_sender().address:
            raise ValidationError(
                f"session {self.session_id} is paid by {self.depositor}: only the depositor or "
                "the host can complete it; end() lets the host settle"
            )
        async with channel.turn:
            # the conversation is final: stored while the host proves its last tokens
            stored = backend.conversation_stored(self.conversation_id)
            try:
                answer = await channel.final_checkpoint()
                if answer is not None and answer.tx_hash:
                    try:
                        await backend.proof_mined(answer.tx_hash, within=self.timeouts.settle)
                    except FabstirError as exc:
                        log.warning("the final proof of %s is not mined: %s", self.session_id, exc)
                reported = self.tokens_reported
                expected = max(reported, self.proof_interval) if reported else 0
                job, proofs = await backend.billed(self.job_id, self.proofs)
                overclaim = job.tokens_used > expected
                await backend.metadata_written(self.job_id)
                ref = await stored
            finally:
                await backend.drop(stored)
            settlement = await backend.settle(self.job_id, ref.cid)
            counts = {"tokens_reported": reported, "tokens_claimed": self.tokens_claimed}
            backend.store_soon(self.job_id, "proofs", {**proofs, **counts, "settled": True})
        channel.closed = True
        await channel.drop_link()
        backend.sessions.pop(self.session_id, None)
        if overclaim:
            backend.discovery.report_overclaim(
                self.host.address, claimed=job.tokens_used, reported=reported
            )
            warnings.warn(
                HostOverclaimError(
                    f"host {self.host.address} claimed {job.tokens_used} tokens on session "
                    f"{self.session_id} but reported {reported} that its answers account for "
                    f"(at most {expected} billable); the session was completed at once"
                ),
                stacklevel=2,
            )
        return settlement


def _messages(history: Sequence[ChatMessage | dict[str, Any]]) -> list[ChatMessage]:
    """``history`` checked: a list of messages with role system, user or assistant."""
    if isinstance(history, str | bytes) or not isinstance(history, Sequence):
        raise ValidationError("history must be a list of messages")
    messages = []
    for i, message in enumerate(history):
        try:
            messages.append(ChatMessage.model_validate(message))
        except pydantic.ValidationError:
            raise ValidationError(
                f"history[{i}] must be a message: role system, user or assistant, content a string"
            ) from None
    return messages
