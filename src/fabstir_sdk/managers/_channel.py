"""A session's way to its host: the job it runs on now and the link to that job's host.

A :class:`~fabstir_sdk.managers._session.Session` (the public face) and each
:class:`~fabstir_sdk.managers._prompt_stream.PromptStream` (one answer) share one
:class:`Channel`, so neither reaches into the other. It holds the turn (one answer at a time),
the link (replaced together with the job by a failover), what the host reported and announced
on earlier links, and the conversation owed to the host with the next prompt (after a resume
or a failover).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import TYPE_CHECKING, Any

from ..config import SessionTimeouts
from ..errors import (
    FabstirError,
    HostFailedError,
    HostOverreportError,
    HostUnreachableError,
    SessionClosedError,
)
from ..models import HostInfo, SessionJob, Settlement
from ..protocol import (
    TOKENS_WITHOUT_TEXT,
    ChatMessage,
    CheckpointFailed,
    CheckpointSubmitted,
    ProofSubmitted,
)
from ._backend import Failover, Plan, SessionBackend
from ._link import Link
from ._proofs import ProofLog

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["Channel"]

log = logging.getLogger("fabstir_sdk.session")


class Channel:
    """The job a session is on, the link to its host, and the turn its answers take."""

    def __init__(
        self,
        backend: SessionBackend,
        *,
        job: SessionJob,
        host: HostInfo,
        link: Link | None,
        timeouts: SessionTimeouts,
        plan: Plan,
        conversation_id: str,
        owner: Session,
        history: list[ChatMessage] | None = None,
    ) -> None:
        self.backend = backend
        self.plan = plan
        self.timeouts = timeouts
        self.conversation_id = conversation_id
        #: One answer (or settlement) at a time.
        self.turn = asyncio.Lock()
        self.failovers: list[Failover] = []
        self.closed = False
        #: The session, registered under its new id after a failover.
        self.owner = owner
        self._failed_hosts: set[str] = set()
        self._replay = history or None
        self._bind(job, host, link)

    def _bind(self, job: SessionJob, host: HostInfo, link: Link | None) -> None:
        """Attach to ``job`` with ``host`` (at creation, and after a failover)."""
        self.job = job
        self.host = host
        self.link = link
        self._tokens_before = 0  # reported on this job's earlier connections
        self._claimed_before = 0  # the same, as the host claimed them
        self._overreported = False  # recorded against the host in discovery for this job
        self._proofs = ProofLog(job.id)

    @property
    def session_id(self) -> str:
        return str(self.job.id)

    @property
    def tokens_reported(self) -> int:
        """Tokens the host reported for this job (``stream_end``), answers given up included."""
        link = self.link
        return self._tokens_before + (link.proto.tokens_reported if link else 0)

    @tokens_reported.setter
    def tokens_reported(self, value: int) -> None:
        link = self.link
        self._tokens_before = value - (link.proto.tokens_reported if link else 0)

    @property
    def tokens_claimed(self) -> int:
        """The host's ``stream_end`` counts for this job as it sent them, uncapped."""
        link = self.link
        return self._claimed_before + (link.proto.tokens_claimed if link else 0)

    def audit_claims(self) -> None:
        """Warn about each answer whose ``stream_end`` claimed more tokens than its text can
        hold (:class:`HostOverreportError`), and record the host in discovery, once a job."""
        link = self.link
        if link is None or not link.proto.overreports:
            return
        reports = list(link.proto.overreports)
        link.proto.overreports.clear()
        for report in reports:
            if not self._overreported:
                self._overreported = True
                self.backend.discovery.report_overclaim(
                    self.host.address, claimed=report.claimed, reported=report.bound
                )
            warnings.warn(
                HostOverreportError(
                    f"host {self.host.address} claimed {report.claimed} tokens for answer "
                    f"{report.answer_id} of session {self.session_id}, whose text was "
                    f"{report.received_bytes} bytes: at most {report.bound} tokens (one a "
                    f"byte, plus {TOKENS_WITHOUT_TEXT}); {report.bound} counted. Complete the "
                    "session to stop it proving the claim"
                ),
                stacklevel=2,
            )

    @property
    def proofs(self) -> ProofLog:
        """The proofs the host announced on this job so far."""
        link = self.link
        if link is not None:
            for proof in link.proto.proofs:
                self._proofs.add(proof)
        return self._proofs

    @property
    def connected(self) -> bool:
        return self.link is not None and not self.link.closed

    def require_link(self) -> Link:
        """The open link, or the error that says why there is none."""
        if self.closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        if self.link is None or self.link.closed:
            raise HostUnreachableError(
                f"the connection to host {self.host.address} is closed: resume the session"
            )
        return self.link

    async def drop_link(self) -> None:
        """Close the link, keeping what the host reported and announced on it."""
        link = self.link
        if link is not None:
            self.audit_claims()
            for proof in link.proto.proofs:
                self._proofs.add(proof)
            self._tokens_before += link.proto.tokens_reported
            self._claimed_before += link.proto.tokens_claimed
            self.link = None
            await link.close()

    async def send_prompt(
        self, prompt: str, options: dict[str, Any], history: list[ChatMessage] | None
    ) -> str | None:
        """Send ``prompt`` with ``history`` (None: the conversation owed to the host, if
        any); the answer's correlation id. What was owed is paid once the prompt is sent."""
        link = self.require_link()
        messages = history if history is not None else self._replay
        frame = link.proto.prompt_frame(prompt, messages=messages, **options)
        answer_id = link.proto.answer_id
        await link.send(frame)
        self._replay = None
        return answer_id

    async def append(self, prompt: str, answer: str, *, partial: bool) -> None:
        """Keep an exchange in the conversation in S5."""
        await self.backend.metadata_written(self.job.id)
        await self.backend.append(self.conversation_id, prompt, answer, partial=partial)

    async def final_checkpoint(self) -> CheckpointSubmitted | None:
        """Ask the host to bill everything now; its answer (None: it did not answer)."""
        link = self.link
        if link is None or link.closed or not self.tokens_reported:
            return None
        try:
            await link.send(link.proto.checkpoint_request_frame())
            settle = self.timeouts.settle
            due = link.loop.time() + settle
            while True:
                event = await link.next_event(due, "final checkpoint", settle)
                if isinstance(event, ProofSubmitted) and event.job_id in (None, self.job.id):
                    self._proofs.add(event)
                if isinstance(event, CheckpointSubmitted):
                    return event
                if isinstance(event, CheckpointFailed):
                    log.warning("no final checkpoint from %s: %s", self.host.address, event.error)
                    return None
        except FabstirError as exc:
            log.warning("no final checkpoint from %s: %s", self.host.address, exc)
            return None

    async def recover(self, exc: FabstirError) -> bool:
        """After the host failed or refused mid-answer: fail over if the session may (True).

        A failed host is not offered again until discovery has re-checked it.
        """
        if isinstance(exc, HostFailedError):
            self.backend.discovery.report_failure(self.host.address)
        if not self.plan.failover:
            return False
        await self.fail_over(exc)
        return True

    async def fail_over(self, cause: FabstirError) -> None:
        """Settle the failed host's job (you pay its proven tokens only) and continue with
        the next best host for the model, replaying the conversation from S5."""
        backend = self.backend
        old_host, old_job = self.host.address, self.job.id
        log.warning("session %s: host %s failed (%s); failing over", old_job, old_host, cause)
        self._failed_hosts.add(old_host)
        backend.discovery.report_failure(old_host)
        backend.sessions.pop(self.session_id, None)
        await self.drop_link()
        backend.record_proofs_soon(self._proofs)
        settlement: Settlement | None
        try:
            settlement = await backend.settle(old_job)
        except FabstirError as exc:  # e.g. the host completed it already
            log.warning("could not settle abandoned job %s: %s", old_job, exc)
            settlement = None
        history = await backend.history(self.conversation_id)
        info, price = await backend.next_host(self.plan, exclude=self._failed_hosts)
        job, link = await backend.open(self.plan, info, price, self.timeouts)
        self._bind(job, info, link)
        self._replay = history or None
        backend.sessions[self.session_id] = self.owner
        self.failovers.append(
            Failover(
                reason=str(cause),
                old_host=old_host,
                old_job_id=old_job,
                new_host=info.address,
                new_job_id=job.id,
                settlement=settlement,
            )
        )
        log.info(
            "session moved from job %s on %s to job %s on %s",
            old_job,
            old_host,
            job.id,
            info.address,
        )
