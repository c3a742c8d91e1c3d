"""How many tokens to claim, and when: the host's billing rules, without I/O.

The contract takes claims of at least 100 tokens, never more than the deposit pays for, and
settles only what was claimed. The rules:

- the bill is ``max(reported, proof_interval)`` once anything was reported (the first
  checkpoint is padded up to the session's proof interval, the minimum bill), capped by the
  deposit;
- every ``checkpoint_tokens`` reported tokens, claim what is unbilled minus a reserve of 100,
  so that whatever remains at the end is always a claimable amount (>= 100): the final
  claim then makes the bill exact;
- at the end (disconnect, or the client asking for its final checkpoint) claim the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIN_CLAIM", "Ledger"]

#: The contract refuses smaller claims ("Must claim minimum tokens").
MIN_CLAIM = 100


@dataclass
class Ledger:
    """Token accounting of one session job."""

    proof_interval: int
    checkpoint_tokens: int
    max_tokens: int
    #: Tokens the client was told about (the sum of ``stream_end.tokens_used``).
    reported: int = 0
    #: Tokens claimed, queued or on chain.
    billed: int = 0
    _reported_at_claim: int = 0

    @classmethod
    def resumed(
        cls, *, proof_interval: int, checkpoint_tokens: int, max_tokens: int, on_chain: int
    ) -> Ledger:
        """A ledger for a job that already has ``on_chain`` proven tokens (a host restart)."""
        return cls(
            proof_interval,
            checkpoint_tokens,
            max_tokens,
            reported=on_chain,
            billed=on_chain,
            _reported_at_claim=on_chain,
        )

    @property
    def target(self) -> int:
        """What the whole session should cost, in tokens, if it ended now."""
        if self.reported == 0:
            return self.billed
        return max(min(max(self.reported, self.proof_interval), self.max_tokens), self.billed)

    @property
    def remaining(self) -> int:
        """Tokens the deposit still pays for beyond what was reported."""
        return max(0, self.max_tokens - max(self.reported, self.billed))

    def add(self, tokens: int) -> int:
        """Record ``tokens`` reported; returns a periodic claim to submit (0: none yet)."""
        self.reported += tokens
        if self.reported - self._reported_at_claim < self.checkpoint_tokens:
            return 0
        claim = self.target - self.billed - MIN_CLAIM
        if claim < MIN_CLAIM or (self.billed == 0 and claim < self.proof_interval):
            return 0
        return self._claim(claim)

    def final(self) -> int:
        """The claim that makes the bill exact (0 when nothing, or under 100, is left)."""
        claim = self.target - self.billed
        return self._claim(claim) if claim >= MIN_CLAIM else 0

    def _claim(self, tokens: int) -> int:
        self.billed += tokens
        self._reported_at_claim = self.reported
        return tokens
