"""Proofs and settlement, off the streaming path: one transaction pipeline, one biller per job.

Streaming only records tokens (:meth:`JobBilling.record`). Claims that come due are queued
and a per-job task submits them: it writes the checkpoint, waits until the contract's rate
limit allows the claim (``tokens <= seconds since the last proof * limit * burst``, read
from the pending block's timestamp), then sends ``submitProofOfWork`` through the host's one
:class:`TxPipeline` (many jobs' claims in flight at once). Claims that come due while one
waits are merged into it.

After the last connection of a job closes, :meth:`JobBilling.settle` claims the remainder,
waits for the dispute window and completes the job (unless the user completed it first).
Before every transaction the job is read again: a job that is no longer the one we served
(settled, or another job under the same id after a devnet revert) is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ContractRevertError, SessionNotActiveError, SessionNotFoundError
from ..models import SessionJob, SessionState
from ._chain import HostChain
from ._checkpoints import (
    CheckpointRefs,
    CheckpointWriter,
    MessageRecord,
    build_checkpoint,
)
from ._clock import ChainClock
from ._ledger import Ledger

__all__ = ["CheckpointEntry", "JobBilling", "SubmittedProof", "TxPipeline"]

log = logging.getLogger("fabstir_sdk.host")

T = TypeVar("T")

_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)


class TxPipeline:
    """The host's transactions, up to ``limit`` of them in flight at once.

    Nonces are the :class:`~fabstir_sdk.chain.client.TxSender`'s (one allocator; signed and
    broadcast in order), so transactions may wait for their receipts together: proving 250
    sessions takes a few blocks, not 250 receipt round trips one after the other (which
    missed the clients' 60 s settle wait). A job's own transactions stay in order: one
    submitter per job, and its completion only after its last claim.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.sent = 0

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` once fewer than ``limit`` transactions are in flight."""
        async with self._slots:
            result = await operation()
        self.sent += 1
        return result


@dataclass(frozen=True)
class SubmittedProof:
    checkpoint_index: int
    tokens: int
    total: int
    proof_hash: str
    tx_hash: str


@dataclass(frozen=True)
class CheckpointEntry:
    """One row of ``GET /v1/checkpoints/{session_id}``."""

    index: int
    proof_hash: str
    proof_cid: str
    delta_cid: str
    token_range: tuple[int, int]
    timestamp: int
    tx_hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "proofHash": self.proof_hash,
            "proofCid": self.proof_cid,
            "deltaCid": self.delta_cid,
            "tokenRange": list(self.token_range),
            "timestamp": self.timestamp,
            "txHash": self.tx_hash,
        }


class _Gone(Exception):
    """The job is settled or is not the one this biller serves any more."""


class JobBilling:
    """The billing of one session job on this host."""

    def __init__(
        self,
        *,
        chain: HostChain,
        txq: TxPipeline,
        writer: CheckpointWriter,
        job: SessionJob,
        model_id: str,
        checkpoint_tokens: int,
        recovery_public_key: str | None,
        notify: Callable[[SubmittedProof], None],
        poll: float = 1.0,
        clock: ChainClock | None = None,
    ) -> None:
        self.chain, self.txq, self.writer = chain, txq, writer
        self.job = job
        self.model_id = model_id
        self.recovery_public_key = recovery_public_key
        self.ledger = (
            Ledger(job.proof_interval, checkpoint_tokens, job.max_tokens)
            if job.tokens_used == 0
            else Ledger.resumed(
                proof_interval=job.proof_interval,
                checkpoint_tokens=checkpoint_tokens,
                max_tokens=job.max_tokens,
                on_chain=job.tokens_used,
            )
        )
        self.records: list[MessageRecord] = []
        self.checkpoints: list[CheckpointEntry] = []
        self.proofs: list[SubmittedProof] = []
        self.settlement_tx: str | None = None
        self.closed = False
        self._notify = notify
        #: the host's one clock reader (a biller on its own reads it for itself)
        self.clock = clock or ChainClock(chain.now, poll)
        self._pending = 0
        self._proven = job.tokens_used  # on chain
        self._last_proof_time = job.last_proof_time
        self._records_done = 0
        self._previous_hash: bytes | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker = asyncio.create_task(self._submitter(), name=f"fabstir-bill-{job.id}")

    def __repr__(self) -> str:
        return f"JobBilling(job={self.job.id}, billed={self.ledger.billed}, proven={self._proven})"

    # -- streaming side (never blocks) ----------------------------------------------------

    def record(self, tokens: int) -> None:
        """Count ``tokens`` streamed to the client; queue a claim when one is due."""
        self._queue(self.ledger.add(tokens))

    def _queue(self, claim: int) -> None:
        if claim and not self.closed:
            self._pending += claim
            self._idle.clear()
            self._wake.set()

    # -- flushing and settling ------------------------------------------------------------

    async def flush(self) -> SubmittedProof | None:
        """Claim everything reported so far and wait until it is on chain (or failed)."""
        self._queue(self.ledger.final())
        await self._idle.wait()
        return self.proofs[-1] if self.proofs else None

    async def settle(self) -> None:
        """Final claim, then complete the job once the dispute window allows the host to."""
        await self.flush()
        due = self.job.start_time + self.chain.dispute_window
        try:
            # The user usually completed the job before leaving: one read, not a poll of the
            # chain's clock until the dispute window ends (a second per job, for 30 s on a
            # devnet: a thousand settled sessions made anvil answer tens of thousands).
            await self._check_still_ours()
            await self.clock.until(due)
            await self.txq.run(self._complete)
        except _Gone:
            log.info("job %s was settled by someone else", self.job.id)
        except ContractRevertError as exc:
            log.warning("completing job %s failed: %s", self.job.id, exc)
        finally:
            self.closed = True

    async def _complete(self) -> None:
        await self._check_still_ours()
        delays = iter(_RETRY_DELAYS)
        while True:
            try:
                settlement = await self.chain.payments.complete_session_job(self.job.id, "")
            except SessionNotActiveError:
                raise _Gone from None
            except ContractRevertError as exc:
                if "dispute window" not in exc.reason:
                    raise
                await asyncio.sleep(next(delays, 4.0))
                continue
            self.settlement_tx = settlement.tx_hash
            log.info(  # "paid" is what the tokens cost; the host's net is 90% of it
                "completed job %s: %d tokens, paid %d (host net %d), refund %d (tx %s)",
                self.job.id,
                settlement.tokens_used,
                settlement.host_payment,
                settlement.host_net,
                settlement.refund,
                settlement.tx_hash,
            )
            return

    async def aclose(self) -> None:
        self.closed = True
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        self._idle.set()

    # -- the submitter --------------------------------------------------------------------

    async def _submitter(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self.closed:
                try:
                    await self._submit(self._pending)
                except _Gone:
                    log.info("job %s is no longer active: dropping its claims", self.job.id)
                    self._pending = 0
                    self.closed = True
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "proof for job %s failed (%s): %d tokens unclaimed",
                        self.job.id,
                        exc,
                        self._pending,
                    )
                    self.ledger.billed -= self._pending
                    self._pending = 0
            self._idle.set()

    async def _submit(self, tokens: int) -> None:
        start = self._proven
        records = self.records[self._records_done :]
        checkpoint = build_checkpoint(
            index=len(self.checkpoints),
            job_id=self.job.id,
            chain_id=self.chain.chain_id,
            host_address=self.chain.address,
            model_id=self.model_id,
            token_range=(start, start + tokens),
            messages=records,
            previous_proof_hash=self._previous_hash,
            recovery_public_key=self.recovery_public_key,
        )
        refs: CheckpointRefs = await self.writer.write(checkpoint)
        await self._wait_for_rate_limit(tokens)
        tx = await self.txq.run(lambda: self._send_proof(checkpoint, refs))
        self._pending -= tokens
        self._proven += tokens
        self._records_done += len(records)
        self._previous_hash = checkpoint.proof_hash
        proof_hash = "0x" + checkpoint.proof_hash.hex()
        self.checkpoints.append(
            CheckpointEntry(
                checkpoint.index,
                proof_hash,
                refs.proof_cid,
                refs.delta_cid,
                checkpoint.token_range,
                self._last_proof_time,
                tx,
            )
        )
        proof = SubmittedProof(checkpoint.index, tokens, self._proven, proof_hash, tx)
        self.proofs.append(proof)
        log.info(
            "job %s: proved %d tokens (total %d, tx %s)", self.job.id, tokens, self._proven, tx
        )
        self._notify(proof)

    async def _wait_for_rate_limit(self, tokens: int) -> None:
        rate = self.chain.tokens_per_second(self.model_id)
        ready = self._last_proof_time + math.ceil(tokens / rate)
        await self.clock.until(ready)

    async def _send_proof(self, checkpoint: Any, refs: CheckpointRefs) -> str:
        await self._check_still_ours()
        delays = iter(_RETRY_DELAYS)
        while True:
            try:
                tx = await self.chain.hosts.submit_proof_of_work(
                    self.job.id,
                    checkpoint.tokens,
                    checkpoint.proof_hash,
                    refs.proof_cid,
                    refs.delta_cid,
                )
                break
            except SessionNotActiveError:
                raise _Gone from None
            except ContractRevertError as exc:
                delay = next(delays, None)
                if "rate limit" not in exc.reason or delay is None:
                    raise
                await asyncio.sleep(delay)  # the pending block's clock was behind
        job = await self.chain.job(self.job.id)
        self._last_proof_time = job.last_proof_time
        return tx

    async def _check_still_ours(self) -> None:
        try:
            job = await self.chain.job(self.job.id)
        except SessionNotFoundError:
            raise _Gone from None
        if (job.depositor, job.start_time, job.host) != (
            self.job.depositor,
            self.job.start_time,
            self.job.host,
        ) or job.status != SessionState.ACTIVE:
            raise _Gone
