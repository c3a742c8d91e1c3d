"""Checkpoints: the proof document and conversation delta behind each on-chain claim.

Each claim gets a proof document whose SHA-256 is the ``proofHash`` submitted on chain. The
document binds the job, the host, the model, the billed token range and the SHA-256 of the
conversation delta it covers (the messages since the previous checkpoint), and chains to the
previous proof. It is a commitment, not a proof of computation: nothing on chain can check
that the model really produced those tokens (docs/host.md says so).

Where the proof and delta are stored is a :class:`CheckpointWriter`'s business:

- :class:`S5Checkpoints` uploads both as raw S5 blobs, whose CIDs go on chain: the proof
  in the clear (it holds hashes only), the delta sealed to the user's ``recoveryPublicKey``
  (no recovery key: no delta is published, only the proof);
- :class:`UnstoredCheckpoints` (no S5 configured) stores nothing; claims go on chain with
  empty CIDs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..chain.signer import Signer
    from ..s5._store import Store

__all__ = [
    "S5Checkpoints",
    "Checkpoint",
    "CheckpointRefs",
    "CheckpointWriter",
    "MessageRecord",
    "UnstoredCheckpoints",
    "build_checkpoint",
]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    role: str
    content: str
    timestamp: int
    partial: bool = False

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "role": self.role,
            "content": self.content,
            "timestamp": self.timestamp,
        }
        if self.partial:
            record["metadata"] = {"partial": True}
        return record


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One claim's evidence, ready to be stored and submitted."""

    index: int
    job_id: int
    host_address: str
    token_range: tuple[int, int]
    proof: bytes
    proof_hash: bytes
    delta: dict[str, Any] = field(repr=False)
    recovery_public_key: str | None = None

    @property
    def tokens(self) -> int:
        return self.token_range[1] - self.token_range[0]


@dataclass(frozen=True, slots=True)
class CheckpointRefs:
    """Where a writer put the proof and the delta (empty strings: not stored)."""

    proof_cid: str = ""
    delta_cid: str = ""


class CheckpointWriter(Protocol):
    """Stores a checkpoint before its claim is submitted; raise to block the claim."""

    async def write(self, checkpoint: Checkpoint) -> CheckpointRefs: ...


class UnstoredCheckpoints:
    """Stores nothing: the proof hash still goes on chain, with empty CIDs."""

    async def write(self, checkpoint: Checkpoint) -> CheckpointRefs:
        return CheckpointRefs()


class S5Checkpoints:
    """Proofs and sealed deltas as raw blobs in an S5 store (a portal or the embedded one).

    Raw blobs, not files of the host's encrypted file system: anyone with the CID from the
    chain can fetch them, and only the user can open a delta.
    """

    def __init__(self, store: Store, signer: Signer) -> None:
        self.store = store
        self._signer = signer  # the host's wallet: it signs each delta

    def __repr__(self) -> str:
        return f"S5Checkpoints({self.store!r})"

    async def write(self, checkpoint: Checkpoint) -> CheckpointRefs:
        from ..protocol import seal_checkpoint_delta_signed

        proof_cid = str(await self.store.put_blob(checkpoint.proof))
        if not checkpoint.recovery_public_key:
            return CheckpointRefs(proof_cid, "")
        envelope = await seal_checkpoint_delta_signed(
            checkpoint.delta,
            recovery_public_key=checkpoint.recovery_public_key,
            signer=self._signer,
        )
        delta_cid = str(await self.store.put_blob(_canonical(envelope)))
        return CheckpointRefs(proof_cid, delta_cid)

    async def aclose(self) -> None:
        await self.store.aclose()


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def build_checkpoint(
    *,
    index: int,
    job_id: int,
    chain_id: int,
    host_address: str,
    model_id: str,
    token_range: tuple[int, int],
    messages: list[MessageRecord],
    previous_proof_hash: bytes | None,
    recovery_public_key: str | None,
    now: int | None = None,
) -> Checkpoint:
    """The delta and proof document of claim ``index`` covering ``token_range``."""
    timestamp = int(time.time()) if now is None else now
    delta: dict[str, Any] = {
        "sessionId": str(job_id),
        "checkpointIndex": index,
        "startToken": token_range[0],
        "endToken": token_range[1],
        "messages": [m.to_json() for m in messages],
    }
    proof_doc = {
        "type": "fabstir-checkpoint-proof/v1",
        "chainId": chain_id,
        "jobId": str(job_id),
        "host": host_address,
        "modelId": model_id,
        "checkpointIndex": index,
        "tokenRange": list(token_range),
        "tokensClaimed": token_range[1] - token_range[0],
        "deltaHash": "0x" + hashlib.sha256(_canonical(delta)).hexdigest(),
        "previousProofHash": None
        if previous_proof_hash is None
        else "0x" + previous_proof_hash.hex(),
        "timestamp": timestamp,
    }
    proof = _canonical(proof_doc)
    digest = hashlib.sha256(proof).digest()
    delta["proofHash"] = "0x" + digest.hex()
    return Checkpoint(
        index=index,
        job_id=job_id,
        host_address=host_address,
        token_range=token_range,
        proof=proof,
        proof_hash=digest,
        delta=delta,
        recovery_public_key=recovery_public_key,
    )
