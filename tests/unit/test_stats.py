"""Non-inferiority statistics on synthetic distributions (llm_rollout.validation.stats).

Expected values are literals or come from distributions the test draws itself: equal ones (a
false "worse" must stay under the stated 1 - confidence over many seeds), ones shifted by twice
the margin (must be caught), one exactly at the margin, heavy-tailed ones, and too few samples.
"""

from __future__ import annotations

import random

import pytest

from llm_rollout.validation.stats import bootstrap_ratio, non_inferiority, per_look_confidence, statistic


def lognormal(rng: random.Random, n: int, scale: float = 1.0, sigma: float = 0.3) -> list[float]:
    return [scale * rng.lognormvariate(0.0, sigma) for _ in range(n)]


def pareto(rng: random.Random, n: int, scale: float = 1.0) -> list[float]:
    return [scale * rng.paretovariate(2.5) for _ in range(n)]


def test_statistic_literals():
    assert statistic([1, 2, 3, 4], "mean") == 2.5
    assert statistic([1, 2, 3, 4, 5], "median") == 3
    assert statistic(list(range(101)), "p95") == 95
    assert statistic([], "p95") is None


def test_per_look_confidence_spreads_the_error():
    assert per_look_confidence(0.95, 1) == pytest.approx(0.95)
    assert per_look_confidence(0.95, 5) == pytest.approx(0.99)


def test_bootstrap_interval_contains_the_point_and_narrows_with_more_data():
    rng = random.Random(1)
    small = bootstrap_ratio(lognormal(rng, 30), lognormal(rng, 30), "p50", confidence=0.95)
    large = bootstrap_ratio(lognormal(rng, 400), lognormal(rng, 400), "p50", confidence=0.95)
    for ratio, low, high in (small, large):
        assert low <= ratio <= high
    assert (large[2] - large[1]) < (small[2] - small[1])


@pytest.mark.parametrize(("stat", "draw"), [("p95", lognormal), ("median", lognormal), ("p95", pareto)])
def test_false_alarm_rate_at_equal_distributions_stays_under_the_stated_level(stat, draw):
    """200 runs at equal distributions, margin 0: "worse" in at most 5 % (+ sampling slack) of runs."""
    confidence, runs, worse = 0.95, 200, 0
    for seed in range(runs):
        rng = random.Random(seed)
        result = non_inferiority(
            draw(rng, 60), draw(rng, 60), metric="x", stat=stat, better="lower", margin=0.0,
            confidence=confidence, resamples=300, seed=seed,
        )  # fmt: skip
        worse += result.decision == "worse"
    # Binomial(200, 0.05): mean 10, sd 3.1; 20 is more than 3 sd above the stated level.
    assert worse <= 20, f"{worse}/{runs} false alarms"


def test_equal_distributions_with_the_default_margin_are_called_not_worse():
    rng = random.Random(7)
    result = non_inferiority(
        lognormal(rng, 300, sigma=0.2), lognormal(rng, 300, sigma=0.2), metric="p95_ttft_ms", stat="p95",
        better="lower", margin=0.1, confidence=0.95,
    )  # fmt: skip
    assert result.decision == "not_worse", result.describe()
    assert result.high <= 1.1


def test_a_clearly_slower_candidate_is_caught_as_worse():
    """50 % slower against a 10 % margin, 200 requests each: p95 intervals are wide, still decided."""
    rng = random.Random(3)
    result = non_inferiority(
        lognormal(rng, 200, scale=1.5), lognormal(rng, 200), metric="p95_ttft_ms", stat="p95", better="lower",
        margin=0.1, confidence=0.95,
    )  # fmt: skip
    assert result.decision == "worse", result.describe()
    assert result.low > 1.1
    assert "worse" in result.describe() and "needed <= 1.100" in result.describe()


def test_a_lower_rate_is_worse_and_an_equal_rate_is_not():
    rng = random.Random(5)
    slow = non_inferiority(
        lognormal(rng, 200, scale=50), lognormal(rng, 200, scale=100), metric="mean_stream_output_tok_s",
        stat="mean", better="higher", margin=0.1, confidence=0.95,
    )  # fmt: skip
    assert slow.decision == "worse" and slow.high < 0.9
    same = non_inferiority(
        lognormal(rng, 300, scale=100, sigma=0.1), lognormal(rng, 300, scale=100, sigma=0.1),
        metric="mean_stream_output_tok_s", stat="mean", better="higher", margin=0.1, confidence=0.95,
    )  # fmt: skip
    assert same.decision == "not_worse" and same.low >= 0.9


def test_exactly_at_the_margin_is_rarely_called_not_worse():
    """A candidate 10 % slower with a 10 % margin: 'not worse' is the error here; at most ~5 %."""
    not_worse = 0
    for seed in range(100):
        rng = random.Random(1000 + seed)
        result = non_inferiority(
            lognormal(rng, 80, scale=1.1), lognormal(rng, 80), metric="x", stat="median", better="lower",
            margin=0.1, confidence=0.95, resamples=300, seed=seed,
        )  # fmt: skip
        not_worse += result.decision == "not_worse"
    assert not_worse <= 12, f"{not_worse}/100"


def test_heavy_tails_with_few_samples_stay_undecided_rather_than_guess():
    rng = random.Random(11)
    result = non_inferiority(
        pareto(rng, 25), pareto(rng, 25), metric="p95_ttft_ms", stat="p95", better="lower", margin=0.1,
        confidence=0.95,
    )  # fmt: skip
    assert result.decision == "undecided", result.describe()


def test_too_few_samples_is_undecided_with_the_reason():
    result = non_inferiority(
        [1.0] * 5, [1.0] * 50, metric="p95_ttft_ms", stat="p95", better="lower", margin=0.1, confidence=0.95
    )
    assert result.decision == "undecided"
    assert result.note == "5 samples, 20 needed on each side"
    assert "5 samples" in result.describe()
