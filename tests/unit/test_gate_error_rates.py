"""The gate's sequential rule keeps its error rates and decides early, over many seeds (issue 30).

The comparison's rule (:func:`llm_rollout.validation.stats.sequential_looks`: the trimmed-mean t
interval of the block log-ratios - 15 %, a quarter from 16 blocks - at a look after every block
from the default ``min_blocks`` (4), the sign test at the last of 24, 95 % over all looks by
weighted Bonferroni, "worse" from 5 blocks) is run here look by look
through :func:`paired_non_inferiority`, as ``compare_with_stable`` runs it, on block log-ratios
drawn from the noise models of ``bench/bench_gate_rule.py`` (sd measured on vLLM CPU, a GPU-like
tighter one, CPU with outlying blocks). No wall clock: counts over seeds, with bounds about 3
standard deviations from the rates the bench measures, tight enough that the sign test over 6, 12
and 24 blocks (today's rule until issue 30: it cannot decide before 6 blocks) or a rule that
never decides would fail them.

Reference level: the sign test's exact error at the margin over its looks was 2.60 %
(a candidate exactly 20 % slower called "not worse"); the new rule must stay at or below it.
"""

from __future__ import annotations

import math
import random

import pytest

from llm_rollout.spec import ComparisonSpec
from llm_rollout.validation.stats import block_looks, look_confidences, paired_non_inferiority, sequential_looks

MARGIN = 0.2
MIN_BLOCKS = ComparisonSpec().min_blocks
LIMIT = math.log1p(MARGIN)


def draw(rng: random.Random, model: str) -> float:
    """One block's log-ratio noise (the bench's models)."""
    if model == "gpu":
        return rng.gauss(0.0, 0.03)
    if model == "cpu":
        return rng.gauss(0.0, 0.13)
    if model == "cpu+spikes":
        return rng.gauss(0.0, 0.8) if rng.random() < 0.15 else rng.gauss(0.0, 0.13)
    raise ValueError(model)


def run(seed: int, model: str, shift: float, *, better: str = "lower", max_blocks: int = 24):
    """One sequential comparison: (decision, blocks used)."""
    rng = random.Random(seed)
    logs = [shift + draw(rng, model) for _ in range(max_blocks)]
    for n, conf, rule in sequential_looks(MIN_BLOCKS, max_blocks, 0.95):
        cand = [20.0 * math.exp(x) for x in logs[:n]]
        result = paired_non_inferiority(
            cand, [20.0] * n, metric="median_ttft_ms", better=better, margin=MARGIN, confidence=conf,
            min_pairs=MIN_BLOCKS, rule=rule,
        )  # fmt: skip
        if result.decision != "inconclusive":
            return result.decision, n
    return "inconclusive", max_blocks


def rates(model: str, shift: float, runs: int, seed0: int, **kw):
    results = [run(seed0 + i, model, shift, **kw) for i in range(runs)]
    count = {d: sum(r[0] == d for r in results) for d in ("pass", "fail", "inconclusive")}
    return count, sum(n for _, n in results) / runs


def test_look_confidences_add_up_to_the_stated_error():
    confs = look_confidences(0.95, 22)
    assert math.fsum(1 - c for c in confs) == pytest.approx(0.05)
    assert confs[-1] == pytest.approx(0.9875) and confs[0] == pytest.approx(1 - 0.0375 / 21)
    assert look_confidences(0.95, 1) == [0.95]
    assert block_looks(3, 24) == list(range(3, 25)) and block_looks(5, 5) == [5]
    plan = sequential_looks(3, 24, 0.95)
    assert [r for _, _, r in plan] == ["trimmed_t"] * 21 + ["sign"]
    # The sign test's last look at 24 blocks and 98.75 % is today's (rank 7); a last look it cannot
    # decide at (5 blocks) stays with the trimmed t.
    assert sequential_looks(3, 5, 0.95)[-1][2] == "trimmed_t"


def test_equal_sides_at_margin_zero_call_worse_at_most_the_stated_share():
    """The hardest false "worse": equal sides, margin 0 - at most 5 % over all 21 looks (measured ~2 %)."""
    worse = 0
    for seed in range(1000):
        decision, _ = run(seed, "cpu", LIMIT)  # exactly at the limit: "fail" is the error
        worse += decision == "fail"
    # Binomial(1000, 0.026) has sd 5: 45 is > 3 sd above the sign test's exact 2.6 %.
    assert worse <= 45, f"{worse}/1000 called worse at the limit"
    assert worse >= 8, f"{worse}/1000: a rule this conservative spends no error and decides late"


def test_a_candidate_exactly_at_the_margin_is_rarely_called_not_worse():
    for model, seed0 in (("cpu", 10_000), ("cpu+spikes", 20_000)):
        count, _ = rates(model, LIMIT, 1000, seed0)
        assert count["pass"] <= 45, f"{model}: {count['pass']}/1000 called not worse at the margin"
        assert count["fail"] <= 45, f"{model}: {count['fail']}/1000 called worse at the margin"


def test_beyond_the_margin_is_caught():
    """1.5x the margin (30 % slower): never "not worse"; GPU noise: "worse" within a few blocks."""
    count, asn = rates("gpu", math.log1p(1.5 * MARGIN), 300, 30_000)
    assert count["fail"] == 300 and asn <= 7.0, (count, asn)
    count, _ = rates("cpu", math.log1p(1.5 * MARGIN), 500, 31_000)
    assert count["pass"] <= 3 and count["fail"] >= 250, count  # bench: 0.05 %, 59 % (the sign test 56 %)


def test_equal_sides_decide_not_worse_in_fewer_blocks_than_the_sign_test_needed():
    """Average blocks at equal sides (bench: GPU 4.1, CPU 9.6, CPU with spikes 12.4; the sign test's 6, 10.8, 14.2)."""
    count, asn = rates("gpu", 0.0, 300, 40_000)
    assert count["pass"] == 300 and asn <= 4.5, (count, asn)  # the sign test cannot decide before 6
    count, asn = rates("cpu", 0.0, 500, 41_000)
    assert count["pass"] >= 497 and asn <= 10.2, (count, asn)
    count, asn = rates("cpu+spikes", 0.0, 500, 42_000)
    assert count["fail"] == 0 and count["inconclusive"] <= 22 and asn <= 13.2, (count, asn)  # measured 2.0 % undecided


def test_throughput_is_judged_the_same_way_round():
    """Higher is better: a candidate 30 % slower (ratio 1/1.3) is worse, an equal one not worse."""
    assert run(1, "gpu", -math.log1p(1.5 * MARGIN), better="higher")[0] == "fail"
    assert run(2, "gpu", 0.0, better="higher")[0] == "pass"
    # At the margin for throughput (ratio 0.8, log(1 - margin)): "not worse" at most ~2.6 %.
    at = [run(50_000 + s, "cpu", math.log1p(-MARGIN), better="higher")[0] for s in range(600)]
    assert sum(d == "pass" for d in at) <= 28, sum(d == "pass" for d in at)
