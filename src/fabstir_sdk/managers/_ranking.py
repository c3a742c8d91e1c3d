"""Reputation and ranking of hosts, from numbers we read or measured (sans-I/O).

Nothing here is a placeholder: reputation comes from the chain's history of each host, latency
from our own health checks, failures from what this process observed. See docs/discovery.md
for the scale and the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..models import HostInfo

__all__ = [
    "STRATEGIES",
    "HostObservations",
    "RankedHost",
    "Reputation",
    "Strategy",
    "rank",
    "reputation_score",
]

Strategy = Literal["auto", "cheapest", "reliable", "fastest"]

#: Weights of (price, reliability, latency) per strategy; each row sums to 1.
STRATEGIES: dict[str, tuple[Fraction, Fraction, Fraction]] = {
    "auto": (Fraction(40, 100), Fraction(35, 100), Fraction(25, 100)),
    "cheapest": (Fraction(80, 100), Fraction(15, 100), Fraction(5, 100)),
    "reliable": (Fraction(10, 100), Fraction(80, 100), Fraction(10, 100)),
    "fastest": (Fraction(10, 100), Fraction(15, 100), Fraction(75, 100)),
}

#: Reputation points from the completed/timed-out record, and from stake.
HISTORY_POINTS, STAKE_POINTS = 80, 20
#: Stake earns full points at this multiple of the registry's minimum stake.
FULL_STAKE_MULTIPLE = 10


class Reputation(BaseModel):
    """A host's on-chain record and the 0..100 score derived from it."""

    model_config = ConfigDict(frozen=True)
    address: str
    score: int
    sessions_completed: int
    sessions_timed_out: int
    slashes: int
    slashed_amount: int
    stake: int
    #: Sessions in which this host proved more tokens than it reported to us (seen by this
    #: process, not on chain): any makes the score 0, and discovery no longer offers it.
    overclaims: int = 0


def reputation_score(
    *, completed: int, timed_out: int, slashes: int, stake: int, min_stake: int
) -> int:
    """0..100 (integer, exact arithmetic).

    ``80 * (completed + 1) / (completed + timed_out + 2)`` -- the record, starting from an
    even 40 for a new host -- plus ``20 * min(stake / (10 * min_stake), 1)``, halved for every
    slash. A new host at the minimum stake scores 42.
    """
    history = Fraction(HISTORY_POINTS * (completed + 1), completed + timed_out + 2)
    full = FULL_STAKE_MULTIPLE * max(min_stake, 1)
    stake_points = Fraction(STAKE_POINTS * min(max(stake, 0), full), full)
    score = (history + stake_points) / (2**slashes)
    return int(score)  # floor: a score is only reached, never rounded up to


@dataclass
class HostObservations:
    """What this process measured about one host."""

    latency: float | None = None  # seconds, exponentially weighted
    successes: int = 0
    failures: int = 0
    checked_at: float = float("-inf")  # monotonic time of the last check
    healthy: bool = False

    def record_success(self, latency: float, now: float, *, alpha: float = 0.5) -> None:
        self.latency = (
            latency if self.latency is None else alpha * latency + (1 - alpha) * self.latency
        )
        self.successes += 1
        self.checked_at, self.healthy = now, True

    def record_failure(self, now: float) -> None:
        self.failures += 1
        self.checked_at, self.healthy = now, False

    @property
    def observed_reliability(self) -> Fraction:
        """1 with no failures seen; each failure pulls it down."""
        return Fraction(self.successes + 1, self.successes + self.failures + 1)


class RankedHost(BaseModel):
    """A candidate with the numbers it was ranked on."""

    model_config = ConfigDict(frozen=True)
    host: HostInfo
    score: float
    price_per_token: int
    reputation: int
    latency_ms: float | None
    failures: int
    dht: bool = False


@dataclass(frozen=True)
class Candidate:
    host: HostInfo
    price: int
    reputation: int
    observations: HostObservations
    dht: bool = False


def rank(candidates: Sequence[Candidate], strategy: str) -> list[RankedHost]:
    """Best first. Each term is relative to the best candidate: the cheapest price scores 1,
    twice that price 1/2; likewise for latency. Reliability is reputation/100 times the
    observed reliability. Ties go to the lower address, so the order is deterministic."""
    w_price, w_reliability, w_latency = STRATEGIES[strategy]
    if not candidates:
        return []
    best_price = min(c.price for c in candidates)
    latencies = [c.observations.latency for c in candidates if c.observations.latency]
    best_latency = min(latencies) if latencies else None
    ranked = []
    for c in candidates:
        price_term = Fraction(best_price, c.price) if c.price > 0 else Fraction(1)
        reliability = Fraction(c.reputation, 100) * c.observations.observed_reliability
        latency = c.observations.latency
        if best_latency is None or latency is None:
            latency_term = Fraction(1) if best_latency is None else Fraction(0)
        else:
            latency_term = Fraction(best_latency) / Fraction(latency)
        score = w_price * price_term + w_reliability * reliability + w_latency * latency_term
        ranked.append(
            RankedHost(
                host=c.host,
                score=round(float(score), 6),
                price_per_token=c.price,
                reputation=c.reputation,
                latency_ms=None if latency is None else round(latency * 1000, 3),
                failures=c.observations.failures,
                dht=c.dht,
            )
        )
    ranked.sort(key=lambda r: (-r.score, r.host.address.lower()))
    return ranked
