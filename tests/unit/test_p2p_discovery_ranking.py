"""Reputation scores and ranking strategies, from exact inputs (no I/O)."""

import pytest

from fabstir_sdk import HostInfo
from fabstir_sdk.managers._ranking import (
    STRATEGIES,
    Candidate,
    HostObservations,
    rank,
    reputation_score,
)

MIN = 1000 * 10**18


@pytest.mark.parametrize(
    ("completed", "timed_out", "slashes", "stake", "score"),
    [
        (0, 0, 0, MIN, 42),  # new host at the minimum stake: 40 + 2
        (0, 0, 0, 10 * MIN, 60),  # full stake points
        (0, 0, 0, 50 * MIN, 60),  # stake points are capped
        (8, 0, 0, MIN, 74),  # 80 * 9/10 + 2
        (98, 0, 0, 10 * MIN, 99),  # 80 * 99/100 + 20
        (0, 3, 0, MIN, 18),  # 80 * 1/5 + 2
        (8, 0, 1, MIN, 37),  # halved by a slash
        (8, 0, 2, MIN, 18),
        (0, 0, 0, 0, 40),
    ],
)
def test_reputation_score(completed, timed_out, slashes, stake, score):
    assert (
        reputation_score(
            completed=completed, timed_out=timed_out, slashes=slashes, stake=stake, min_stake=MIN
        )
        == score
    )


def test_weights_sum_to_one():
    assert all(sum(w) == 1 for w in STRATEGIES.values())


def host(n):
    return HostInfo(
        address="0x" + f"{n:040x}",
        api_url=f"http://127.0.0.1:{8000 + n}",
        is_active=True,
        stake=MIN,
        min_price_per_token_native=1,
        min_price_per_token_stable=1,
    )


def seen(latency, successes=1, failures=0):
    obs = HostObservations()
    for _ in range(successes):
        obs.record_success(latency, 0.0, alpha=1.0)
    obs.failures = failures
    return obs


# cheap but slow and so-so; dear but fast and reputable; middle of the road
CHEAP = Candidate(host(1), price=1000, reputation=40, observations=seen(0.200))
FAST = Candidate(host(2), price=4000, reputation=90, observations=seen(0.010))
MIDDLE = Candidate(host(3), price=2000, reputation=60, observations=seen(0.050))


def order(strategy, candidates=(CHEAP, FAST, MIDDLE)):
    return [r.host.address[-1] for r in rank(list(candidates), strategy)]


def test_each_strategy_picks_its_winner():
    assert order("cheapest") == ["1", "3", "2"]
    assert order("fastest") == ["2", "3", "1"]
    assert order("reliable") == ["2", "3", "1"]
    assert order("auto") == ["2", "1", "3"]  # 0.665, 0.5525, 0.46


def test_scores_are_the_weighted_terms():
    ranked = {r.host.address[-1]: r for r in rank([CHEAP, FAST, MIDDLE], "cheapest")}
    # cheapest: 0.8 * price + 0.15 * reliability + 0.05 * latency, each relative to the best
    assert ranked["1"].score == pytest.approx(0.8 * 1 + 0.15 * 0.40 + 0.05 * 0.010 / 0.200)
    assert ranked["2"].score == pytest.approx(0.8 * 0.25 + 0.15 * 0.90 + 0.05 * 1)
    assert (ranked["2"].price_per_token, ranked["2"].reputation, ranked["2"].latency_ms) == (
        4000,
        90,
        10.0,
    )


def test_observed_failures_lower_reliability():
    flaky = Candidate(host(4), price=4000, reputation=90, observations=seen(0.010, 1, 3))
    assert order("reliable", (FAST, flaky)) == ["2", "4"]
    assert flaky.observations.observed_reliability == pytest.approx(2 / 5)


def test_ties_break_by_address():
    a = Candidate(host(7), price=1000, reputation=50, observations=seen(0.01))
    b = Candidate(host(5), price=1000, reputation=50, observations=seen(0.01))
    assert order("auto", (a, b)) == ["5", "7"]
    assert rank([], "auto") == []
