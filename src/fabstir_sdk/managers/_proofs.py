"""The user's audit trail of what a host billed: every proof it announced, as the chain has it.

A host tells the client of each proof it submits (``proof_submitted``, and the answer to the
final ``checkpoint_request``); the transaction hash in that notice is checked against the
chain: the receipt's ``ProofSubmitted`` event gives the proof hash, the CIDs, the tokens and
the block. The records, and how their sum compares with the job's ``tokensUsed``, are kept in
the session's encrypted S5 data under ``"proofs"``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..chain.abi import Contract
from ..chain.rpc import JsonRpcClient
from ..errors import FabstirError, RpcError, TransactionTimeoutError
from ..protocol import ProofSubmitted

__all__ = ["ProofLog", "wait_for_receipt"]


async def wait_for_receipt(rpc: JsonRpcClient, tx: str, *, within: float) -> dict[str, Any]:
    """The receipt of a transaction someone else sent (the host's proof): a mined one is
    there at the first ask; otherwise ask again, backing off, until ``within`` s passed."""
    deadline = time.monotonic() + within
    delay = 0.005
    while True:
        try:
            receipt = await rpc.call("eth_getTransactionReceipt", tx)
        except RpcError:
            receipt = None
        if receipt:
            return dict(receipt)
        if time.monotonic() >= deadline:
            raise TransactionTimeoutError(tx, within)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)


class ProofLog:
    """The proofs announced on one session job, in arrival order (each transaction once)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self._seen: dict[str, ProofSubmitted] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, notice: ProofSubmitted) -> None:
        if notice.tx_hash and notice.tx_hash not in self._seen:
            self._seen[notice.tx_hash] = notice

    async def records(self, rpc: JsonRpcClient, marketplace: Contract) -> list[dict[str, Any]]:
        """Each announced proof as the chain recorded it (one batched receipt read)."""
        txs = list(self._seen)
        if not txs:
            return []
        receipts = await rpc.batch(
            [("eth_getTransactionReceipt", [tx]) for tx in txs], return_errors=True
        )
        records: list[dict[str, Any]] = []
        for tx, receipt in zip(txs, receipts, strict=True):
            notice = self._seen[tx]
            record: dict[str, Any] = {
                "tx_hash": tx,
                "checkpoint_index": notice.checkpoint_index,
                "tokens_announced": notice.tokens_claimed,
                "proof_hash_announced": notice.proof_hash,
            }
            events: list[dict[str, Any]] = []
            if isinstance(receipt, dict):
                try:
                    events = [
                        e
                        for e in marketplace.events(receipt, "ProofSubmitted")
                        if int(e["jobId"]) == self.job_id
                    ]
                except (FabstirError, KeyError):
                    events = []
                record["block"] = int(receipt["blockNumber"], 16)
            if events:
                event = events[0]
                record.update(
                    on_chain=True,
                    tokens=int(event["tokensClaimed"]),
                    proof_hash=_hex(event["proofHash"]),
                    proof_cid=str(event["proofCID"]),
                    delta_cid=str(event["deltaCID"]),
                )
            else:
                record.update(on_chain=False, tokens=0)
            records.append(record)
        return records

    @staticmethod
    def summary(records: list[dict[str, Any]], tokens_used: int) -> dict[str, Any]:
        """The records beside the job's ``tokensUsed``: do the proofs account for the bill?"""
        proven = sum(int(r["tokens"]) for r in records)
        return {
            "proofs": records,
            "tokens_in_proofs": proven,
            "tokens_used_on_chain": tokens_used,
            "reconciled": proven == tokens_used,
        }


def _hex(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)
