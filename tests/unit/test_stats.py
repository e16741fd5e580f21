"""Paired non-inferiority statistics on synthetic rounds (llm_rollout.validation.stats).

Each synthetic round pair shares a drift factor (what the machine was doing at that moment) and
has noise of its own on each side, as interleaved rounds do. Expected values are literals or come
from distributions the test draws: equal sides (a false "worse" must stay under the stated
1 - confidence over many seeds), a clearly slower side (must be caught), one exactly at the margin
(called "not worse" at most at the stated level), heavy-tailed noise, and too few pairs.

The block tests simulate what was measured on vLLM CPU servers sharing two cores: the round
measured right after the other side's is 45 % slower (whichever side), a slow drift, and now and
then a round 3x slower (a neighbour's burst). Counterbalanced blocks (candidate, stable, stable,
candidate) with the default rule (the 15 %-trimmed-mean t of the block log-ratios, a look after
every block from 4 to 24, 95 % over all looks) must keep false alarms under the stated 5 % and
still decide: equal sides "not worse", a 2x slower side "worse". The error rates of the rule on
the bench's noise models are tests/unit/test_gate_error_rates.py's.
"""

from __future__ import annotations

import math
import random

import pytest

from llm_rollout.validation.stats import (
    block_sums,
    look_schedule,
    order_statistic_bounds,
    paired_non_inferiority,
    per_look_confidence,
    sequential_looks,
    statistic,
    t_quantile,
    trim_share,
    trimmed_t_interval,
)


def rounds(rng: random.Random, n: int, *, ratio: float = 1.0, noise: float = 0.15, heavy: bool = False):
    """n round pairs (candidate, stable): shared drift, own noise; the candidate scaled by ``ratio``."""
    cand, stable = [], []
    for _ in range(n):
        drift = rng.lognormvariate(0.0, 0.3)  # the machine's state during this pair

        def own() -> float:
            if heavy:
                return rng.paretovariate(3.0) / 1.5
            return rng.lognormvariate(0.0, noise)

        cand.append(20.0 * drift * ratio * own())
        stable.append(20.0 * drift * own())
    return cand, stable


def decide(cand, stable, *, better="lower", margin=0.1, confidence=0.95):
    return paired_non_inferiority(
        cand, stable, metric="median_ttft_ms", better=better, margin=margin, confidence=confidence
    )


def test_statistic_literals():
    assert statistic([1, 2, 3, 4], "mean") == 2.5
    assert statistic([1, 2, 3, 4, 5], "median") == 3
    assert statistic(list(range(101)), "p95") == 95
    assert statistic([], "p95") is None


def test_order_statistic_ranks_match_the_binomial_table():
    # Binomial(20, 1/2): P(X <= 5) = 0.0207, P(X <= 6) = 0.0577 -> rank 6 at 97.5 %.
    assert order_statistic_bounds(20, 0.975) == 6
    # Binomial(5, 1/2): P(X <= 0) = 0.03125 -> rank 1 at 95 %; with 4 samples 0.0625 > 5 %: none.
    assert order_statistic_bounds(5, 0.95) == 1
    assert order_statistic_bounds(4, 0.95) is None


def test_student_t_quantiles_match_the_table():
    # Student's t table (one-sided): t(0.975, 10) = 2.228, t(0.99, 2) = 6.965, t(0.995, 3) = 5.841,
    # t(0.95, 1) = 6.314; far in the tail t(0.99875, 5) = 5.409 (what a look at 6 blocks uses).
    for p, df, table in ((0.975, 10, 2.228), (0.99, 2, 6.965), (0.995, 3, 5.841), (0.95, 1, 6.314)):
        assert t_quantile(p, df) == pytest.approx(table, abs=5e-4)
    assert t_quantile(0.999, 200) == pytest.approx(3.131, abs=5e-3)  # near the normal's 3.090


def test_trimmed_t_interval_literals():
    # 10 values, 15 % trimmed: g = 1 cut from each end; the outlier 100 does not move the centre.
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0]
    centre, low, high = trimmed_t_interval(values, 0.975)
    assert centre == pytest.approx(5.5)  # mean of 2..9
    # Winsorized: 2,2,3,...,9,9 -> sd 2.7183; se = 2.7183 / (0.8 * sqrt(10)) = 1.0745; t(0.975, 7) = 2.3646.
    assert high - centre == pytest.approx(2.3646 * 2.7183 / (0.8 * math.sqrt(10)), rel=1e-4)
    assert centre - low == pytest.approx(high - centre)
    # Equal values: a zero-width interval at the value.
    assert trimmed_t_interval([0.01] * 8, 0.99) == pytest.approx((0.01, 0.01, 0.01))


def test_looks_double_and_confidence_is_spread_over_them():
    assert look_schedule(8, 32) == [8, 16, 32]
    assert look_schedule(5, 30) == [5, 10, 20, 30]
    assert look_schedule(3, 3) == [3]
    assert per_look_confidence(0.95, 1) == pytest.approx(0.95)
    assert per_look_confidence(0.95, 4) == pytest.approx(0.9875)


@pytest.mark.parametrize("heavy", [False, True])
def test_false_alarm_rate_at_equal_sides_stays_under_the_stated_level(heavy):
    """1000 runs at equal sides, margin 0 (the hardest case): "worse" in at most 5 % (+ slack)."""
    runs, worse = 1000, 0
    for seed in range(runs):
        cand, stable = rounds(random.Random(seed), 10, heavy=heavy)
        worse += decide(cand, stable, margin=0.0).decision == "fail"
    # Binomial(1000, 0.05): mean 50, sd 6.9; 70 is ~3 sd above the stated level.
    assert worse <= 70, f"{worse}/{runs} false alarms"


def test_sequential_looks_keep_the_false_alarm_rate():
    """Looks at 8, 16, 32 pairs, stopping at the first decision, with the per-look confidence."""
    schedule = look_schedule(8, 32)
    conf = per_look_confidence(0.95, len(schedule))
    runs, worse = 400, 0
    for seed in range(runs):
        cand, stable = rounds(random.Random(10_000 + seed), 32)
        for n in schedule:
            result = decide(cand[:n], stable[:n], margin=0.0, confidence=conf)
            if result.decision != "inconclusive":
                break
        worse += result.decision == "fail"
    assert worse <= 32, f"{worse}/{runs}"  # 5 % of 400 = 20, sd 4.4


def test_equal_sides_with_the_default_margin_are_called_not_worse():
    cand, stable = rounds(random.Random(7), 20)
    result = decide(cand, stable)
    assert result.decision == "pass", result.describe()
    assert result.high <= 1.1 and "20 blocks" in result.describe()


def test_a_clearly_slower_candidate_is_caught_as_worse():
    cand, stable = rounds(random.Random(3), 10, ratio=1.5)
    result = decide(cand, stable)
    assert result.decision == "fail", result.describe()
    assert result.low > 1.1
    assert "needed <= 1.100" in result.describe()


def test_a_lower_throughput_is_worse_and_an_equal_one_is_not():
    slow = decide(*rounds(random.Random(5), 10, ratio=0.6), better="higher")
    assert slow.decision == "fail" and slow.high < 0.9, slow.describe()
    same = decide(*rounds(random.Random(6), 32, noise=0.1), better="higher")
    assert same.decision == "pass" and same.low >= 0.9, same.describe()


def test_exactly_at_the_margin_is_rarely_called_not_worse():
    """10 % slower with a 10 % margin: 'not worse' is the error here; at most ~5 % of runs."""
    not_worse = 0
    for seed in range(400):
        cand, stable = rounds(random.Random(50_000 + seed), 10, ratio=1.1)
        not_worse += decide(cand, stable).decision == "pass"
    assert not_worse <= 32, f"{not_worse}/400"


def test_too_few_pairs_is_undecided_with_the_reason():
    result = decide([20.0] * 3, [20.0] * 3)
    assert result.decision == "inconclusive"
    assert result.note == "3 blocks, 6 needed"
    assert "3 blocks" in result.describe()


def test_rounds_without_a_value_are_left_out():
    cand, stable = rounds(random.Random(8), 8)
    cand[2], stable[5] = None, 0.0
    result = decide(cand, stable)
    assert result.pairs == 6
    logs = [math.log(c / s) for c, s in zip(cand, stable, strict=True) if c and s]
    # 6 blocks: floor(0.15 * 6) = 0 cut, so the centre is the geometric mean of the 6 ratios.
    assert result.ratio == pytest.approx(math.exp(sum(logs) / 6), rel=1e-9)
    assert result.rule == "trimmed_t"


def measured_blocks(rng: random.Random, blocks: int, *, ratio: float = 1.0, switch: float = 1.45, spikes: float = 0.1):
    """Per-round values (lower is better) of ``blocks`` blocks measured candidate, stable, stable, candidate.

    A round right after the other side's costs ``switch`` (the position effect), the machine drifts
    slowly (a random walk in log scale), each round has its own noise, and a share ``spikes`` of
    rounds is hit by a 3x pause.
    """
    cand, stable, level, last = [], [], 0.0, ""
    for _ in range(blocks):
        for side in ("c", "s", "s", "c"):
            level += rng.gauss(0.0, 0.05)
            value = 20.0 * math.exp(level) * rng.lognormvariate(0.0, 0.08)
            value *= switch if last and last != side else 1.0
            value *= 3.0 if rng.random() < spikes else 1.0
            last = side
            (cand if side == "c" else stable).append(value * (ratio if side == "c" else 1.0))
    return cand, stable


def sequential_blocks(cand, stable, *, margin=0.2, confidence=0.95, min_blocks=4, max_blocks=24):
    """The comparison's sequential rule over block sums: the first decided look, else the last."""
    for n, conf, rule in sequential_looks(min_blocks, max_blocks, confidence):
        result = paired_non_inferiority(
            block_sums(cand[: 2 * n]), block_sums(stable[: 2 * n]), metric="median_ttft_ms", better="lower",
            margin=margin, confidence=conf, min_pairs=min_blocks, rule=rule,
        )  # fmt: skip
        if result.decision != "inconclusive":
            break
    return result


def test_block_sums_pair_each_sides_two_rounds_of_a_block():
    assert block_sums([1.0, 2.0, 3.0, 4.0, 5.0]) == [3.0, 7.0]  # the unfinished block is left out
    assert block_sums([1.0, None, 3.0, 4.0]) == [None, 7.0]


def test_the_sign_test_needs_six_units_at_98_33_percent():
    conf = per_look_confidence(0.95, len(look_schedule(6, 24)))
    assert look_schedule(6, 24) == [6, 12, 24]
    assert order_statistic_bounds(6, conf) == 1  # 1/64 = 1.6 % <= 1.67 %
    assert order_statistic_bounds(5, conf) is None
    assert order_statistic_bounds(24, conf) == 7


def test_blocks_cancel_the_position_effect_that_splits_round_pairs():
    """Equal servers, 45 % penalty after a switch: pair ratios split into two clusters, block ratios do not."""
    cand, stable = measured_blocks(random.Random(1), 12, spikes=0.0)
    pair_ratios = sorted(c / s for c, s in zip(cand, stable, strict=True))
    assert pair_ratios[0] < 0.8 and pair_ratios[-1] > 1.25  # what a round pair sees
    blocks = [c / s for c, s in zip(block_sums(cand), block_sums(stable), strict=True)]
    assert all(0.8 < b < 1.25 for b in blocks), blocks


def test_blocks_keep_false_alarms_under_the_stated_level_on_a_noisy_machine():
    """Equal sides, margin 0 (the hardest case), 1000 seeds: "worse" in at most 5 % (+ 3 sd)."""
    runs, worse = 1000, 0
    for seed in range(runs):
        cand, stable = measured_blocks(random.Random(70_000 + seed), 24)
        worse += sequential_blocks(cand, stable, margin=0.0).decision == "fail"
    assert worse <= 70, f"{worse}/{runs} false alarms"


def test_blocks_decide_equal_sides_not_worse_and_a_slower_side_worse_with_default_settings():
    """What the retrain loop needs: decisions, not 'inconclusive', with spikes and the position effect.

    One round in 20 hit by a 3x pause: >= 95 % of equal runs decide "not worse" (measured 297/300
    with the trimmed t and the sign test's last look, 296/300 with the sign test alone; with one
    round in 10 the bench measures 91 % and 90 %, the rest inconclusive - never "worse").
    """
    equal = [sequential_blocks(*measured_blocks(random.Random(80_000 + seed), 24, spikes=0.05)) for seed in range(300)]
    not_worse = sum(r.decision == "pass" for r in equal)
    assert sum(r.decision == "fail" for r in equal) <= 15  # 5 % of 300
    assert not_worse >= 285, f"only {not_worse}/300 decided not worse"
    slower = [
        sequential_blocks(*measured_blocks(random.Random(90_000 + s), 24, ratio=2.0, spikes=0.05)) for s in range(300)
    ]
    assert all(r.decision == "fail" for r in slower), [r.describe() for r in slower if r.decision != "fail"][:3]
    # "Worse" is called from 5 blocks: many at the first look allowed to (measured 128/300 at 5, 231 by 7).
    assert sum(r.pairs <= 5 for r in slower) >= 100 and sum(r.pairs <= 7 for r in slower) >= 200


def test_exactly_at_the_margin_blocks_are_rarely_called_not_worse():
    not_worse = 0
    for seed in range(400):
        cand, stable = measured_blocks(random.Random(95_000 + seed), 24, ratio=1.2)
        not_worse += sequential_blocks(cand, stable).decision == "pass"
    assert not_worse <= 32, f"{not_worse}/400"  # 5 % of 400 = 20, sd 4.4


# The demo's run 3 (the deep copy, 10 extra layers) measured by `make bench` on 2 cores: each
# round's output throughput, tokens/s, in the order measured per side (candidate, stable, stable,
# candidate per block).
DEEP_CANDIDATE = [492.8, 463.9, 449.9, 461.6, 443.2, 278.6, 288.7, 288.5, 359.6, 423.9]
DEEP_STABLE = [1098.7, 1079.7, 1097.9, 738.6, 1008.7, 1068.6, 791.4, 452.1, 912.0, 819.4]


def test_a_candidate_twice_as_slow_is_worse_after_five_blocks():
    """Run 3's throughput (ratio 0.44, block log-ratios within 0.36 of each other): "worse" after 5
    blocks, the first look allowed to call it; at 4 the interval still reaches the margin."""
    judged = {}
    for n, conf, rule in sequential_looks(4, 24, 0.95)[:2]:
        judged[n] = paired_non_inferiority(
            block_sums(DEEP_CANDIDATE[: 2 * n]), block_sums(DEEP_STABLE[: 2 * n]), metric="output_throughput_tok_s",
            better="higher", margin=0.2, confidence=conf, min_pairs=4, rule=rule,
        )  # fmt: skip
    assert judged[4].high > 0.8 and judged[4].describe().startswith("output_throughput_tok_s: undecided:")
    assert judged[5].high < 0.8 and judged[5].describe().startswith("output_throughput_tok_s: worse:")
    assert judged[5].ratio == pytest.approx(0.44, abs=0.01)


def test_the_trim_cuts_a_quarter_from_sixteen_units():
    assert [trim_share(n) for n in (4, 15, 16, 24)] == [0.15, 0.15, 0.25, 0.25]
    values = [float(i * i) for i in range(16)]  # floor(0.25 * 16) = 4 cut from each end
    centre, _, _ = trimmed_t_interval(values, 0.95)
    assert centre == pytest.approx(sum(values[4:12]) / 8)
    centre, _, _ = trimmed_t_interval(values[:15], 0.95)  # floor(0.15 * 15) = 2
    assert centre == pytest.approx(sum(values[2:13]) / 11)


# Differences (the quality question) and McNemar (scored suites) -------------------------------


def texts(rng: random.Random, n: int, *, shift: float = 0.0, spread: float = 0.02):
    """n reference texts' bits per byte on two sides: a per-text difficulty, own noise, the candidate shifted."""
    cand, stable = [], []
    for _ in range(n):
        difficulty = rng.uniform(0.1, 1.5)
        cand.append(difficulty + shift + rng.gauss(0.0, spread))
        stable.append(difficulty + rng.gauss(0.0, spread))
    return cand, stable


def judge_texts(cand, stable, *, margin=0.05, confidence=0.9875):
    return paired_non_inferiority(
        cand, stable, metric="bits_per_byte", better="lower", margin=margin, confidence=confidence,
        min_pairs=8, unit="texts", scale="difference",
    )  # fmt: skip


def test_difference_scale_literals():
    # Eight texts, every difference +0.01: the interval is [0.01, 0.01] (k = 1 at 98.75 %).
    comp = judge_texts([1.01] * 8, [1.0] * 8)
    assert comp.decision == "pass" and comp.scale == "difference"
    assert comp.ratio == pytest.approx(0.01) and comp.low == pytest.approx(0.01) and comp.high == pytest.approx(0.01)
    assert comp.limit == 0.05 and comp.to_dict()["limit"] == 0.05
    assert "candidate - stable +0.0100 [+0.0100, +0.0100]" in comp.describe()
    worse = judge_texts([5.0] * 8, [0.3] * 8)
    assert worse.decision == "fail" and worse.low == pytest.approx(4.7)
    # Zero and negative values are data on the difference scale (left out only on the ratio scale).
    assert judge_texts([0.0] * 8, [0.0] * 8).decision == "pass"
    higher = paired_non_inferiority(
        [0.9] * 8, [1.0] * 8, metric="score", better="higher", margin=0.05, confidence=0.95, scale="difference"
    )
    assert higher.decision == "fail" and higher.limit == -0.05


def test_difference_scale_too_few_texts_is_undecided():
    comp = judge_texts([1.0] * 5, [1.0] * 5)
    assert comp.decision == "inconclusive" and comp.note == "5 texts, 8 needed"


def test_difference_false_alarm_rate_at_equal_sides_stays_under_the_stated_level():
    # Equal sides exactly at the margin's edge: the candidate is worse by exactly the margin.
    rng = random.Random(7)
    runs = 2000
    called_not_worse = sum(judge_texts(*texts(rng, 16, shift=0.05)).decision == "pass" for _ in range(runs))
    assert called_not_worse / runs <= 1 - 0.9875 + 0.005
    # Equal sides: "worse" (beyond the margin) practically never.
    worse = sum(judge_texts(*texts(rng, 16)).decision == "fail" for _ in range(runs))
    assert worse == 0


def test_difference_scale_separates_a_damaged_model_at_the_first_look_and_passes_a_retrain():
    rng = random.Random(3)
    # Measured on the tiny models (vLLM, 8 corpus lines): scrambled +0.8 to +6.8 bits per byte,
    # the 5 %-noise retrain within +/-0.02.
    assert judge_texts(*texts(rng, 8, shift=4.0, spread=1.5)).decision == "fail"
    assert judge_texts(*texts(rng, 8, spread=0.008)).decision == "pass"


def test_mcnemar_exact_literals():
    from llm_rollout.validation.stats import mcnemar_exact

    # 6 items only the stable gets right, none only the candidate: p = 1/64.
    result = mcnemar_exact([False] * 6 + [True] * 4, [True] * 10, confidence=0.95)
    assert (result.only_stable, result.only_candidate) == (6, 0)
    assert result.p_value == pytest.approx(1 / 64) and result.fewer
    assert (result.candidate_right, result.stable_right, result.items) == (4, 10, 10)
    # 4 against 0 is p = 1/16: fewer right, but within chance at 95 %.
    assert not mcnemar_exact([False] * 4 + [True] * 6, [True] * 10, confidence=0.95).fewer
    # Discordant both ways cancel: 5 vs 3 -> P(X >= 5 | n = 8) = 93/256.
    cand = [False] * 5 + [True] * 3 + [True] * 2
    stab = [True] * 5 + [False] * 3 + [True] * 2
    assert mcnemar_exact(cand, stab, confidence=0.95).p_value == pytest.approx(93 / 256)
    # No discordant item: no evidence either way.
    same = mcnemar_exact([True, False], [True, False], confidence=0.95)
    assert same.p_value == 1.0 and not same.fewer


def test_mcnemar_false_alarm_rate_at_equal_sides():
    from llm_rollout.validation.stats import mcnemar_exact

    rng = random.Random(11)
    runs = 2000
    alarms = 0
    for _ in range(runs):
        skill = [rng.random() for _ in range(40)]
        cand = [rng.random() < s for s in skill]
        stab = [rng.random() < s for s in skill]
        alarms += mcnemar_exact(cand, stab, confidence=0.95).fewer
    assert alarms / runs <= 0.05
