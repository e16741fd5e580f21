"""Is the candidate at least as good as what serves now? Paired non-inferiority with a stated confidence.

The question a rollout with a stable revision asks is not "is it faster" but "is it not worse by
more than a margin". The two are measured in rounds, and the unit of evidence is a
*counterbalanced block* of four rounds, candidate - stable - stable - candidate (ABBA): requests
inside one round share the machine's state at that moment, so they are not independent samples
(treating them as such makes equal servers look different), while whatever drifts during a block
hits both sides alike and cancels in the block's ratio ``(c1 + c2) / (s1 + s2)`` of a per-round
statistic (median TTFT, round throughput, ...) - a linear drift exactly, and so does any cost of
being measured right after the other side (each side has one round in each position). Pairs of
rounds cannot cancel that: measured on vLLM CPU, the side measured second in a pair was 40-50 %
slower whichever it was, so the pair ratios split into two clusters and the interval spanned both.

**The rule for blocks** (:func:`sequential_looks`): a look after **every block** from
``min_blocks`` (4) to ``max_blocks`` (24).

* Interim looks (``rule="trimmed_t"``): the block ratios' logarithms get a one-sided **15 %-trimmed
  mean t interval** (Tukey and McLaughlin 1963, "Less vulnerable confidence and significance
  procedures for location based on a single sample", Sankhya A 25; Yuen 1974, "The two-sample
  trimmed t for unequal population variances", Biometrika 61, in its one-sample form; Wilcox,
  *Introduction to Robust Estimation and Hypothesis Testing*, ch. 4): the mean of the values left
  after cutting ``floor(0.15 n)`` from each end (a quarter, ``floor(0.25 n)``, from 16 blocks:
  :func:`trim_share`), its standard error from the winsorized variance,
  ``s_w / ((1 - 2g/n) sqrt(n))``, and Student's t with ``n - 2g - 1`` degrees of freedom. It uses
  every block's size, so on quiet blocks it is as narrow as a t interval, while the blocks a
  pause hit are cut once there are enough of them. It calls "worse" only from
  :data:`MIN_WORSE_UNITS` (5) blocks: on fewer, pauses that hit the same side of every block look
  alike and their small variance reads as a slower candidate.
* The last look (``rule="sign"``): the median's distribution-free interval from the order
  statistics (the sign test), which ignores any number of outlying blocks short of a quarter
  and so keeps a good candidate on a busy machine from ending undecided; at 24 blocks and
  98.75 % it is the rank the sign test used there before (7).
* The error is spread over the looks by a weighted Bonferroni split (:func:`look_confidences`:
  the last look gets :data:`LAST_LOOK_SHARE`, a quarter, of ``1 - confidence``, the interim looks
  share the rest evenly). The union bound holds for any dependence between looks and any
  statistic, which is why it was kept over a Lan-DeMets alpha-spending function (Lan and DeMets
  1983, "Discrete sequential boundaries for clinical trials", Biometrika 70; O'Brien-Fleming or
  Pocock shapes), whose boundaries assume a normal statistic with independent increments.

Why this rule: ``bench/bench_gate_rule.py`` (``make bench``) simulates block log-ratios with the
spreads measured on vLLM CPU (sd 0.13 on a quiet 2-core machine), GPU-like ones (sd 0.03),
outlying blocks (a contaminated normal; blocks made of rounds with the position effect and 1 in
20 or 1 in 10 rounds 3x slower; Student's t with 2 degrees of freedom) and a busy machine (sd
0.6), and judges the sign test over 6, 12 and 24 blocks (the rule until issue 30) and the
candidates: Wilcoxon's signed-rank test / the Hodges-Lehmann interval (Hodges and Lehmann 1963,
"Estimates of location based on rank tests", Ann. Math. Statist. 34), the plain t, 15 % and 20 %
trimmed t alone, doubling or every-block looks, equal or weighted Bonferroni. Rank tests cannot
decide before 6 blocks at these levels (all 6 on one side is ``1/64``) and lose decisions to
pauses; the plain t loses a quarter of its decisions to outlying blocks; a trimmed t alone ends
undecided more often where pauses are frequent (with pauses in 1 round of 10 a 15 % trim
needed as many blocks as the sign test, 16.7; cutting a quarter from 16 blocks on, 15.1).
The adopted rule decided in fewer blocks at equal sides (GPU-like 4.1 against 6.0, CPU 9.6
against 10.8, pauses in 1 round of 10 15.1 against 16.7: each beyond two Monte-Carlo standard
errors of the paired difference; on a busy machine a tie, 22.8, both ending undecided in 82 %
of runs), ended undecided less often, called a candidate 2x slower "worse" after 5.1 blocks
against 6.0, and had neither error rate higher under any of the models (the README, "Is the
candidate at least as good", has the numbers). The first look comes after 4 blocks: on 3, a
candidate 30 % slower was called "not worse" 3x as often as by the sign test where pauses hit
1 round in 10 (three blocks a pause hit alike look tight).

Three outcomes per metric, in the gate's one vocabulary (:data:`~llm_rollout.validation.answers.Decision`):

* lower is better (latency): ``pass``, **not worse** (non-inferior), when the interval's upper
  end is <= ``1 + margin``; ``fail``, **worse** (inferior), when the whole interval lies beyond it
  (its lower end > ``1 + margin``); else ``inconclusive``, **undecided** (measure more);
* higher is better (throughput): not worse when the lower end >= ``1 - margin``, worse when the
  upper end is below it.

A metric the instrument could not see in most blocks is ``inconclusive`` with ``measured`` False
(set by the measurement, :func:`~llm_rollout.validation.compare.judge_speed`, never by the
statistics): neither evidence for nor against the candidate, and said ``unmeasured``.

Each end is one-sided at the look's confidence, so at equal distributions a false "worse"
happens in at most ``1 - confidence`` of runs over all looks - the unit tests measure it over
many seeds - and a candidate exactly at the margin is called "not worse" no more often than that.

The sign test (``rule="sign"``) stays for *differences* (``scale="difference"``): the quality
question pairs each reference text's bits per byte on the two sides, and there the texts differ
from each other, not only by noise - the median per-text difference is the question, its
distribution-free interval from the order statistics (the sign test) the answer, and its margin
is in bits per byte, not a share (:mod:`llm_rollout.validation.quality`). The sign test needs at
least 6 units for one end at 98.33 % (``P(all 6 on one side) = 1/64``). Paired right/wrong
outcomes (a scored suite's items) get McNemar's exact test (:func:`mcnemar_exact`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

from llm_rollout.validation.answers import Decision
from llm_rollout.validation.metrics import percentile

TRIM = 0.15
"""Share of the values the trimmed t cuts from each end (``floor(TRIM * n)`` each side) below
:data:`LATE_TRIM_FROM` units (:func:`trim_share`)."""
LATE_TRIM = 0.25
"""Share cut from each end from :data:`LATE_TRIM_FROM` units on: where pauses hit a third of the
blocks (1 round in 10), 15 % leaves some of them in; from 16 units a quarter still leaves the t
7 degrees of freedom (``bench/bench_gate_rule.py``, cpu+pauses10)."""
LATE_TRIM_FROM = 16
"""Units from which the trimmed t cuts :data:`LATE_TRIM` instead of :data:`TRIM`."""
LAST_LOOK_SHARE = 0.25
"""Share of ``1 - confidence`` the last look of a sequential comparison gets (:func:`look_confidences`)."""
MIN_WORSE_UNITS = 5
"""Units the trimmed t needs before it calls "worse": on fewer, pauses that hit the same side of
every block look alike, so their t has a small variance and reads as a slower candidate (equal
sides with pauses in 1 round of 20: 7 false "worse" in 200000 simulated runs from 4 units, none
from 5 or 6, 1 with the sign test over 6, 12 and 24). "Not worse" may come earlier."""

SAID: dict[Decision, str] = {"pass": "not worse", "fail": "worse", "inconclusive": "undecided"}
"""How a comparison's decision reads in its line (:meth:`Comparison.describe`): the gate's one
vocabulary (:data:`~llm_rollout.validation.answers.Decision`) said as the question asks it; an
unmeasured metric (``measured`` False) reads ``unmeasured``."""
Better = Literal["lower", "higher"]
Rule = Literal["trimmed_t", "sign"]
"""``trimmed_t``: the 15 %-trimmed-mean t interval (blocks); ``sign``: the median's order-statistic
interval (the sign test; reference texts)."""
Scale = Literal["ratio", "difference"]
"""``ratio``: candidate/stable per unit, margin relative (speed); ``difference``: candidate - stable
per unit, margin in the values' own unit (bits per byte)."""


def statistic(values: Sequence[float], name: str) -> float | None:
    """``mean``, ``median`` or ``pNN`` of ``values`` (None when empty).

    Args:
        values: The samples.
        name: ``mean``, ``median`` / ``p50``, or ``p<NN>`` (0-100).
    """
    if not values:
        return None
    if name == "mean":
        return math.fsum(values) / len(values)
    p = 50.0 if name == "median" else float(name[1:])
    return percentile(sorted(values), p)


def trim_share(n: int) -> float:
    """The share the trimmed t cuts from each end of ``n`` values (:data:`TRIM`; :data:`LATE_TRIM` from 16)."""
    return LATE_TRIM if n >= LATE_TRIM_FROM else TRIM


def pct(confidence: float) -> str:
    """A confidence as a percentage with the digits that matter (``95%``, ``98.33%``, ``99.95%``)."""
    return f"{round(confidence * 100, 2):g}%"


def per_look_confidence(confidence: float, looks: int) -> float:
    """The confidence each of ``looks`` sequential looks must use so that all together keep ``confidence``."""
    return 1.0 - (1.0 - confidence) / max(1, looks)


def look_confidences(confidence: float, looks: int) -> list[float]:
    """Each look's confidence so that all ``looks`` together keep ``confidence`` (weighted Bonferroni).

    The last look gets :data:`LAST_LOOK_SHARE` of ``1 - confidence`` and the interim looks share
    the rest evenly (one look: all of it). The shares add up to ``1 - confidence``, so by the union
    bound a false decision at any look happens in at most ``1 - confidence`` of runs, whatever the
    dependence between looks.
    """
    alpha = 1.0 - confidence
    if looks <= 1:
        return [confidence]
    interim = 1.0 - alpha * (1.0 - LAST_LOOK_SHARE) / (looks - 1)
    return [interim] * (looks - 1) + [1.0 - alpha * LAST_LOOK_SHARE]


def block_looks(min_blocks: int, max_blocks: int) -> list[int]:
    """Block counts at which the comparison looks: after every block from ``min_blocks`` to ``max_blocks``."""
    first = max(1, min(min_blocks, max_blocks))
    return list(range(first, max_blocks + 1))


def sequential_looks(min_blocks: int, max_blocks: int, confidence: float) -> list[tuple[int, float, Rule]]:
    """The comparison's looks: ``(blocks, confidence, rule)`` after every block from ``min_blocks``.

    Interim looks use the trimmed t (it decides a clear case within a few blocks); the last look,
    the verdict at ``max_blocks``, uses the sign test when it can decide at that look's
    confidence (it ignores any number of outlying blocks short of a quarter, which is what keeps a
    good candidate on a busy machine from ending undecided), else the trimmed t. Confidences from
    :func:`look_confidences`.
    """
    looks = block_looks(min_blocks, max_blocks)
    confs = look_confidences(confidence, len(looks))
    plan: list[tuple[int, float, Rule]] = [(n, c, "trimmed_t") for n, c in zip(looks[:-1], confs[:-1], strict=True)]
    last, conf = looks[-1], confs[-1]
    plan.append((last, conf, "sign" if order_statistic_bounds(last, conf) is not None else "trimmed_t"))
    return plan


def look_schedule(min_pairs: int, max_pairs: int) -> list[int]:
    """Pair counts at which to look: ``min_pairs``, doubling, and ``max_pairs`` (e.g. 5, 10, 20, 40)."""
    first = max(1, min(min_pairs, max_pairs))
    looks = [first]
    while looks[-1] * 2 < max_pairs:
        looks.append(looks[-1] * 2)
    if looks[-1] != max_pairs:
        looks.append(max_pairs)
    return looks


def block_sums(values: Sequence[float | None]) -> list[float | None]:
    """One side's per-round values summed per counterbalanced block (rounds ``2b`` and ``2b + 1``).

    Args:
        values: The side's per-round values in the order measured; an unfinished block is left out.

    Returns:
        Per block the sum of its two rounds, None when either round has no value.
    """
    out: list[float | None] = []
    for b in range(len(values) // 2):
        first, second = values[2 * b], values[2 * b + 1]
        out.append(first + second if first and second and first > 0 and second > 0 else None)
    return out


def order_statistic_bounds(n: int, confidence: float) -> int | None:
    """The 1-based rank ``k`` whose order statistics ``x(k)`` and ``x(n-k+1)`` bound the median of ``n`` samples.

    Distribution-free (the sign test): ``P(x(k) > median) = P(Binomial(n, 1/2) <= k - 1)``, and
    ``k`` is the largest rank keeping that at most ``1 - confidence``; None when even ``k = 1``
    cannot (too few samples for the confidence).
    """
    alpha, cdf, k = 1.0 - confidence, 0.0, None
    for i in range(n):
        cdf += math.comb(n, i) / 2.0**n
        if cdf > alpha:
            break
        k = i + 1
    return k


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        for aa in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Student's t upper tail ``P(T > t)`` with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile: ``q`` with ``P(T <= q) = p``, for ``p`` in [0.5, 1) (bisection on :func:`t_sf`)."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1, got {p}")
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_sf(mid, df) > 1.0 - p else (lo, mid)
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2.0


def trimmed_t_interval(
    values: Sequence[float], confidence: float, trim: float | None = None
) -> tuple[float, float, float]:
    """The trimmed mean of ``values`` and its one-sided-``confidence`` bounds (Tukey-McLaughlin / Yuen).

    ``g = floor(trim * n)`` values (``trim`` by default :func:`trim_share`) are cut from each end; the
    standard error comes from the winsorized variance (the cut values replaced by the nearest
    kept one), ``s_w / ((1 - 2g/n) sqrt(n))``, and the bounds use Student's t with ``n - 2g - 1``
    degrees of freedom.

    Returns:
        ``(trimmed mean, lower bound, upper bound)``; each bound alone holds at ``confidence``.
    """
    xs = sorted(values)
    n = len(xs)
    g = int((trim_share(n) if trim is None else trim) * n)
    if n - 2 * g - 1 < 1:
        raise ValueError(f"{n} values leave no degree of freedom after trimming {g} from each end")
    kept = xs[g : n - g]
    centre = math.fsum(kept) / len(kept)
    wins = [kept[0]] * g + kept + [kept[-1]] * g
    w_mean = math.fsum(wins) / n
    s_w = math.sqrt(math.fsum((x - w_mean) ** 2 for x in wins) / (n - 1))
    half = t_quantile(confidence, n - 2 * g - 1) * s_w / ((1.0 - 2.0 * g / n) * math.sqrt(n))
    return centre, centre - half, centre + half


@dataclass(frozen=True)
class Comparison:
    """One metric, candidate against stable, over counterbalanced blocks (or any paired units).

    Attributes:
        metric: What was compared, e.g. ``median_ttft_ms`` or ``output_throughput_tok_s``.
        better: ``lower`` or ``higher``.
        margin: The tolerated relative loss (0.1 = 10 %).
        confidence: The confidence the decision was taken at (per look).
        ratio: The centre of the units' candidate/stable ratios: their trimmed geometric mean
            (``trimmed_t``) or median (``sign``).
        low: Lower end of the ratio's interval.
        high: Upper end.
        decision: ``pass`` (not worse), ``fail`` (worse) or ``inconclusive`` (undecided, or unmeasured).
        pairs: Units (blocks) used.
        candidate_value: The candidate's median of the per-unit values.
        stable_value: The stable revision's median of the per-unit values.
        note: Why undecided, when it is for lack of units.
        unit: What one unit is, for the messages (``blocks``, ``round pairs``, ``texts``).
        scale: ``ratio`` (``ratio``, ``low``, ``high`` are candidate/stable ratios) or
            ``difference`` (they are candidate - stable differences, the margin absolute).
        rule: The interval's rule, ``trimmed_t`` or ``sign``.
        measured: False when the instrument could not see the metric (the decision is then
            ``inconclusive`` and ``note`` says why); set by the measurement, never by the statistics.
    """

    metric: str
    better: Better
    margin: float
    confidence: float
    ratio: float | None
    low: float | None
    high: float | None
    decision: Decision
    pairs: int
    candidate_value: float | None = None
    stable_value: float | None = None
    note: str = ""
    unit: str = "blocks"
    scale: Scale = "ratio"
    rule: Rule = "sign"
    measured: bool = True

    @property
    def word(self) -> str:
        """The decision as the line says it: ``not worse``, ``worse``, ``undecided`` or ``unmeasured``."""
        return SAID[self.decision] if self.measured else "unmeasured"

    @property
    def undecided(self) -> bool:
        """Measured but not decided yet (more units could decide it)."""
        return self.decision == "inconclusive" and self.measured

    @property
    def limit(self) -> float:
        """What the interval is held against: ``1 +/- margin`` (ratio) or ``+/- margin`` (difference)."""
        sign = 1.0 if self.better == "lower" else -1.0
        return sign * self.margin if self.scale == "difference" else 1.0 + sign * self.margin

    def describe(self) -> str:
        """One line: the decision, the ratio (or difference) with its interval and what it was held against."""
        if self.ratio is None or self.low is None or self.high is None:
            return f"{self.metric}: {self.word} ({self.note or 'not measured'})"
        sign = "<=" if self.better == "lower" else ">="
        if self.scale == "difference":
            return (
                f"{self.metric}: {self.word}: candidate - stable {self.ratio:+.4f} "
                f"[{self.low:+.4f}, {self.high:+.4f}] at {pct(self.confidence)} confidence, needed {sign} "
                f"{self.limit:+.4f} (median per unit: candidate {self.candidate_value:.4g}, stable "
                f"{self.stable_value:.4g}; {self.pairs} {self.unit})"
            )
        return (
            f"{self.metric}: {self.word}: candidate/stable {self.ratio:.3f} "
            f"[{self.low:.3f}, {self.high:.3f}] at {pct(self.confidence)} confidence, needed {sign} {self.limit:.3f} "
            f"(candidate {self.candidate_value:.4g}, stable {self.stable_value:.4g}; {self.pairs} {self.unit})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (with ``limit`` and ``said``, the decision as the line says it)."""
        return {**asdict(self), "limit": self.limit, "said": self.word}


def paired_non_inferiority(
    candidate: Sequence[float],
    stable: Sequence[float],
    *,
    metric: str,
    better: Better,
    margin: float,
    confidence: float,
    min_pairs: int = 6,
    unit: str = "blocks",
    scale: Scale = "ratio",
    rule: Rule | None = None,
) -> Comparison:
    """Decides whether the candidate is not worse than the stable by more than ``margin``.

    Args:
        candidate: The candidate's per-unit values (unit ``i`` pairs with ``stable[i]``; for blocks
            :func:`block_sums` of its rounds).
        stable: The stable revision's per-unit values, measured interleaved with the candidate's.
        metric: The name to report.
        better: ``lower`` (latency) or ``higher`` (throughput).
        margin: Tolerated relative loss, e.g. 0.1.
        confidence: One-sided confidence of the decision (per look; see :func:`per_look_confidence`).
        min_pairs: Below this many usable units the decision is ``inconclusive`` (undecided).
        unit: What one unit is, for the messages.
        scale: ``ratio`` (candidate/stable, judged on the log scale, ``margin`` relative) or
            ``difference`` (candidate - stable, ``margin`` in the values' unit).
        rule: ``trimmed_t`` or ``sign`` (see the module doc); None: ``trimmed_t`` on the ratio
            scale (blocks), ``sign`` on the difference scale (reference texts).

    Returns:
        The comparison. Pairs where either value is missing (or, on the ratio scale, not
        positive) are left out.
    """
    if scale == "difference":
        pairs = [(c, s) for c, s in zip(candidate, stable, strict=False) if c is not None and s is not None]
    else:
        pairs = [(c, s) for c, s in zip(candidate, stable, strict=False) if c and s and c > 0 and s > 0]
    c_med = statistic([c for c, _ in pairs], "median")
    s_med = statistic([s for _, s in pairs], "median")
    rule = rule or ("trimmed_t" if scale == "ratio" else "sign")
    base: dict[str, Any] = {
        "metric": metric, "better": better, "margin": margin, "confidence": confidence, "pairs": len(pairs),
        "candidate_value": c_med, "stable_value": s_med, "unit": unit, "scale": scale, "rule": rule,
    }  # fmt: skip
    if len(pairs) < max(2, min_pairs):
        return Comparison(
            **base, ratio=None, low=None, high=None, decision="inconclusive",
            note=f"{len(pairs)} {unit}, {max(2, min_pairs)} needed",
        )  # fmt: skip
    if scale == "difference":
        # Differences are judged as they are, against +/- margin.
        values, upper, lower, back = sorted(c - s for c, s in pairs), margin, -margin, float
    else:
        # Ratios are judged on the log scale (the median of logs is the log of the median ratio).
        values = sorted(math.log(c / s) for c, s in pairs)
        upper = math.log1p(margin)
        lower = math.log1p(-margin) if margin < 1 else -math.inf
        back = math.exp
    if rule == "trimmed_t":
        return _trimmed_t_judgement(values, base, better, upper, lower, back, confidence)
    return _sign_test_judgement(values, base, better, upper, lower, back, confidence, unit)


def _decide(better: Better, low: float, high: float, upper: float, lower: float) -> Decision:
    if better == "lower":
        return "pass" if high <= upper else "fail" if low > upper else "inconclusive"
    return "pass" if low >= lower else "fail" if high < lower else "inconclusive"


def _trimmed_t_judgement(
    values: list[float],
    base: dict[str, Any],
    better: Better,
    upper: float,
    lower: float,
    back: Callable[[float], float],
    confidence: float,
) -> Comparison:
    """The trimmed-mean t interval of ``values`` (:func:`trimmed_t_interval`) judged as the sign test's is,
    "worse" only from :data:`MIN_WORSE_UNITS` values."""
    centre, low, high = trimmed_t_interval(values, confidence)
    decision = _decide(better, low, high, upper, lower)
    note = ""
    if decision == "fail" and len(values) < MIN_WORSE_UNITS:
        decision, note = "inconclusive", f"worse is called from {MIN_WORSE_UNITS} {base['unit']}"
    return Comparison(**base, ratio=back(centre), low=back(low), high=back(high), decision=decision, note=note)


def _sign_test_judgement(
    values: list[float],
    base: dict[str, Any],
    better: Better,
    upper: float,
    lower: float,
    back: Callable[[float], float],
    confidence: float,
    unit: str,
) -> Comparison:
    """The median's sign-test interval of sorted ``values`` against ``upper`` (lower is better) or
    ``lower`` (higher is better); ``back`` maps the scale back to what is reported."""
    n = len(values)
    k = order_statistic_bounds(n, confidence)
    if k is None:
        return Comparison(
            **base, ratio=None, low=None, high=None, decision="inconclusive",
            note=f"{n} {unit} cannot reach {pct(confidence)} confidence",
        )  # fmt: skip
    mid = statistic(values, "median") or 0.0
    low, high = values[k - 1], values[n - k]
    decision = _decide(better, low, high, upper, lower)
    return Comparison(**base, ratio=back(mid), low=back(low), high=back(high), decision=decision)


@dataclass(frozen=True)
class McNemar:
    """Paired right/wrong outcomes of two sides on the same items: does the candidate get fewer right?

    Attributes:
        items: Items scored on both sides.
        candidate_right: Items the candidate got right.
        stable_right: Items the stable revision got right.
        only_stable: Discordant items only the stable got right.
        only_candidate: Discordant items only the candidate got right.
        p_value: One-sided exact p-value of "the candidate gets fewer right": ``P(X >= only_stable)``
            for ``X ~ Binomial(only_stable + only_candidate, 1/2)`` (1.0 without discordant items).
        confidence: The confidence a "fewer" needs (``p_value <= 1 - confidence``).
        fewer: The candidate gets fewer right beyond chance.
    """

    items: int
    candidate_right: int
    stable_right: int
    only_stable: int
    only_candidate: int
    p_value: float
    confidence: float
    fewer: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)


def mcnemar_exact(candidate: Sequence[bool], stable: Sequence[bool], *, confidence: float) -> McNemar:
    """McNemar's exact test (one-sided) on paired outcomes: the candidate is worse only beyond chance.

    Only the discordant items carry evidence: under "equally good" each is as likely to favour
    either side, so the count favouring the stable is ``Binomial(discordant, 1/2)``.

    Args:
        candidate: Per item, whether the candidate got it right.
        stable: Per item (same order), whether the stable revision got it right.
        confidence: One-sided confidence of a "fewer" (0.95: p <= 0.05).

    Returns:
        The test's counts, p-value and decision.
    """
    pairs = list(zip(candidate, stable, strict=True))
    only_stable = sum(1 for c, s in pairs if s and not c)
    only_candidate = sum(1 for c, s in pairs if c and not s)
    n = only_stable + only_candidate
    p = sum(math.comb(n, i) for i in range(only_stable, n + 1)) / 2.0**n if n else 1.0
    return McNemar(
        items=len(pairs), candidate_right=sum(1 for c, _ in pairs if c), stable_right=sum(1 for _, s in pairs if s),
        only_stable=only_stable, only_candidate=only_candidate, p_value=p, confidence=confidence,
        fewer=p <= 1.0 - confidence,
    )  # fmt: skip
