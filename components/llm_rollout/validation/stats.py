"""Is the candidate at least as good as what serves now? Non-inferiority with a stated confidence.

The question a rollout with a stable revision asks is not "is it faster" but "is it not worse by
more than a margin", judged on samples measured side by side (interleaved rounds, so that noise
on the machine hits both alike):

* For a latency statistic (lower is better, e.g. p95 TTFT) the candidate/stable ratio of the
  statistic gets a bootstrap confidence interval (each side resampled on its own, percentile
  interval). **not worse** when the interval's upper end is <= ``1 + margin``; **worse** when its
  lower end is > ``1 + margin``; else **undecided** (measure more).
* For a rate (higher is better, e.g. each stream's output tokens per second) the same with
  ``1 - margin``: not worse when the lower end >= ``1 - margin``, worse when the upper end is below.

Each side of the interval is one-sided at ``1 - confidence``; the interval is the central
``1 - 2 * (1 - confidence)`` one. With sequential looks (stop once the decision is clear, measure
more while it is not) the error is spread over the looks (Bonferroni): :func:`per_look_confidence`.
So at equal distributions a false "worse" happens in at most ``1 - confidence`` of runs (the unit
tests measure it over many seeds), and a candidate exactly at the margin is called "not worse"
no more often than that.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from llm_rollout.validation.metrics import percentile

Decision = Literal["not_worse", "worse", "undecided"]
Better = Literal["lower", "higher"]

DEFAULT_RESAMPLES = 1000


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


def per_look_confidence(confidence: float, looks: int) -> float:
    """The confidence each of ``looks`` sequential looks must use so that all together keep ``confidence``."""
    return 1.0 - (1.0 - confidence) / max(1, looks)


def bootstrap_ratio(
    candidate: Sequence[float],
    stable: Sequence[float],
    stat: str,
    *,
    confidence: float,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float | None, float | None, float | None]:
    """The candidate/stable ratio of ``stat`` with its central bootstrap interval.

    Each side's interval end is one-sided at ``1 - confidence``.

    Returns:
        ``(ratio, low, high)``; all None when a side is empty or the stable statistic is 0.
    """
    point_c, point_s = statistic(candidate, stat), statistic(stable, stat)
    if point_c is None or not point_s:
        return None, None, None
    rng = random.Random(seed)
    ratios: list[float] = []
    nc, ns = len(candidate), len(stable)
    for _ in range(resamples):
        c = statistic([candidate[rng.randrange(nc)] for _ in range(nc)], stat)
        s = statistic([stable[rng.randrange(ns)] for _ in range(ns)], stat)
        if c is not None and s:
            ratios.append(c / s)
    ratios.sort()
    tail = (1.0 - confidence) * 100.0
    return point_c / point_s, percentile(ratios, tail), percentile(ratios, 100.0 - tail)


@dataclass(frozen=True)
class Comparison:
    """One metric, candidate against stable.

    Attributes:
        metric: What was compared, e.g. ``p95_ttft_ms`` or ``mean_stream_output_tok_s``.
        better: ``lower`` or ``higher``.
        margin: The tolerated relative loss (0.1 = 10 %).
        confidence: The confidence the decision was taken at (per look).
        ratio: Candidate statistic / stable statistic.
        low: Lower end of the ratio's interval.
        high: Upper end.
        decision: ``not_worse``, ``worse`` or ``undecided``.
        candidate_n: Samples on the candidate.
        stable_n: Samples on the stable revision.
        candidate_value: The candidate's statistic.
        stable_value: The stable revision's statistic.
        note: Why undecided, when it is for lack of samples.
    """

    metric: str
    better: Better
    margin: float
    confidence: float
    ratio: float | None
    low: float | None
    high: float | None
    decision: Decision
    candidate_n: int
    stable_n: int
    candidate_value: float | None = None
    stable_value: float | None = None
    note: str = ""

    @property
    def limit(self) -> float:
        """The ratio the interval is held against: ``1 + margin`` (lower is better) or ``1 - margin``."""
        return 1.0 + self.margin if self.better == "lower" else 1.0 - self.margin

    def describe(self) -> str:
        """One line: the decision, the ratio with its interval and what it was held against."""
        if self.ratio is None:
            return f"{self.metric}: {self.decision} ({self.note or 'not measured'})"
        sign = "<=" if self.better == "lower" else ">="
        return (
            f"{self.metric}: {self.decision.replace('_', ' ')}: candidate/stable {self.ratio:.3f} "
            f"[{self.low:.3f}, {self.high:.3f}] at {self.confidence:.1%} confidence, needed {sign} {self.limit:.3f} "
            f"(candidate {self.candidate_value:.4g}, stable {self.stable_value:.4g}; "
            f"n={self.candidate_n}/{self.stable_n})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (with ``limit``)."""
        return {**asdict(self), "limit": self.limit}


def non_inferiority(
    candidate: Sequence[float],
    stable: Sequence[float],
    *,
    metric: str,
    stat: str,
    better: Better,
    margin: float,
    confidence: float,
    min_samples: int = 20,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Decides whether the candidate is not worse than the stable by more than ``margin``.

    Args:
        candidate: The candidate's samples (e.g. per-request TTFT).
        stable: The stable revision's samples, measured interleaved with the candidate's.
        metric: The name to report.
        stat: The statistic compared (``p95``, ``median``, ``mean``).
        better: ``lower`` (latency) or ``higher`` (rate).
        margin: Tolerated relative loss, e.g. 0.1.
        confidence: One-sided confidence of the decision (per look; see :func:`per_look_confidence`).
        min_samples: Below this many samples on either side the decision is ``undecided``.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (a decision is reproducible from its samples).

    Returns:
        The comparison.
    """
    c_val, s_val = statistic(candidate, stat), statistic(stable, stat)
    base = {
        "metric": metric, "better": better, "margin": margin, "confidence": confidence,
        "candidate_n": len(candidate), "stable_n": len(stable), "candidate_value": c_val, "stable_value": s_val,
    }  # fmt: skip
    if min(len(candidate), len(stable)) < min_samples:
        return Comparison(
            **base, ratio=None, low=None, high=None, decision="undecided",
            note=f"{min(len(candidate), len(stable))} samples, {min_samples} needed on each side",
        )  # fmt: skip
    ratio, low, high = bootstrap_ratio(candidate, stable, stat, confidence=confidence, resamples=resamples, seed=seed)
    if ratio is None or low is None or high is None:
        return Comparison(**base, ratio=None, low=None, high=None, decision="undecided", note="the stable value is 0")
    limit = 1.0 + margin if better == "lower" else 1.0 - margin
    if better == "lower":
        decision: Decision = "not_worse" if high <= limit else "worse" if low > limit else "undecided"
    else:
        decision = "not_worse" if low >= limit else "worse" if high < limit else "undecided"
    return Comparison(**base, ratio=ratio, low=low, high=high, decision=decision)
