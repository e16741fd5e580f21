"""The gate's sequential rule on simulated blocks: error rates, power and blocks to a decision (issue 30).

Each simulated run is ``MAX_BLOCKS`` block log-ratios ``log(candidate / stable)`` of one metric
(lower is better, margin 20 %, confidence 95 %: the comparison's defaults), drawn from a noise
model around a true log-ratio, and judged look by look as
:func:`llm_rollout.validation.compare.compare_with_stable` does: stop at the first look that
decides, "undecided" (inconclusive) when the last look does not.

Noise models (sd of a block's log-ratio; estimated from the per-round values of the comparisons
the serving and e2e tests left on this 2-core machine, ``per_round`` in their results):

* ``gpu``: normal, sd 0.03 (steady serving on its own accelerator);
* ``cpu``: normal, sd 0.13 (vLLM CPU on a quiet 2-core machine: 0.07-0.19 in 6 runs of equal models);
* ``cpu+spikes``: ``cpu`` with 15 % of blocks from a normal of sd 0.8 (a neighbour's burst: 4 of
  24 and 2 of 12 blocks in two runs, at +/-0.6 to 2.0);
* ``t2``: Student's t with 2 degrees of freedom, scale 0.1 (infinite variance);
* ``cpu+pauses``, ``cpu+pauses10``: blocks made of rounds as on vLLM CPU (tests/unit/test_stats.py's
  ``measured_blocks``): a drift, the round after a switch of side 45 % slower, and 1 round in 20
  (in 10) 3x slower;
* ``busy``: normal, sd 0.6 (three runs while several test suites shared the cores: 0.56-0.66).

Cases: equal sides, sides differing by exactly the margin (ratio 1.2), by 1.5 times it (1.3), and
a candidate 2x slower (the demo's run 3, whose throughput ratio was 0.44).
Per rule and model: ``false alarm`` (equal called worse), ``worse@margin`` (a candidate exactly at
the margin called worse: the hardest false "worse"), ``error@margin`` (at the margin called not
worse), ``error@1.5m`` (at 1.5x the margin called not worse), ``power`` (equal called not worse),
``power@1.5m`` (1.5x the margin called worse), ``inconclusive`` (equal sides undecided at the last
look) and ``ASN`` (average blocks to the end: equal sides, 1.5x the margin, 2x slower).

The verdict compares the new rule with today's on the same simulated runs (common random
numbers): per run the difference of the blocks used and of each error's indicator, whose mean's
Monte-Carlo standard error is the per-run differences' standard deviation over ``sqrt(runs)``.
"Fewer blocks" needs the difference below minus two standard errors (within them it is reported
as a tie); an error rate counts as higher when its difference is above two standard errors; an
inconclusive rate must not be higher at all.

Rules: today's until issue 30 (the sign test's order-statistic interval, looks at 6, 12, 24,
Bonferroni), the adopted one (:func:`llm_rollout.validation.stats.sequential_looks`: the
trimmed-mean t - 15 %, a quarter from 16 blocks, :func:`~llm_rollout.validation.stats.trim_share`
- at a look after every block from the spec's default ``min_blocks`` (4), the sign test at the
last look, weighted Bonferroni with a quarter of the error at the last look, "worse" from
:data:`~llm_rollout.validation.stats.MIN_WORSE_UNITS` (5) blocks), the rule first adopted in
issue 30 (a 15 % trim at every look from 3, "worse" from 6), the adopted one with one of its
three changes undone, and the other candidates tried (Wilcoxon signed-rank / Hodges-Lehmann, the
plain t, 20 % trimming, doubling looks, equal Bonferroni). Seeds are fixed; numpy, vectorised
over runs.

Usage: ``python bench/bench_gate_rule.py [--runs N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm_rollout.spec import ComparisonSpec  # noqa: E402
from llm_rollout.validation.stats import (  # noqa: E402
    MIN_WORSE_UNITS,
    TRIM,
    block_looks,
    look_confidences,
    look_schedule,
    order_statistic_bounds,
    per_look_confidence,
    sequential_looks,
    t_quantile,
    trim_share,
)

MARGIN = 0.2
CONFIDENCE = 0.95
MAX_BLOCKS = 24
LIMIT = math.log1p(MARGIN)
CASES = {"equal": 0.0, "margin": LIMIT, "1.5x margin": math.log1p(1.5 * MARGIN), "2x slower": math.log(2.0)}
MIN_BLOCKS = ComparisonSpec().min_blocks
MODELS = ("gpu", "cpu", "cpu+spikes", "cpu+pauses", "cpu+pauses10", "t2", "busy")


def paused_blocks(rng: np.random.Generator, shape: tuple[int, int], pause: float) -> np.ndarray:
    """Block log-ratios from rounds (tests/unit/test_stats.py's ``measured_blocks``, vectorised).

    Rounds candidate, stable, stable, candidate; a slow drift (a random walk, sd 0.05 a round in
    log scale), each round's own noise (sd 0.08), the round after a switch of side 45 % slower,
    and a share ``pause`` of rounds 3x slower.
    """
    runs, blocks = shape
    level = np.cumsum(rng.normal(0.0, 0.05, (runs, 4 * blocks)), 1)
    value = np.exp(level) * rng.lognormal(0.0, 0.08, (runs, 4 * blocks))
    position = np.arange(4 * blocks) % 4
    value *= np.where((position == 1) | (position == 3), 1.45, 1.0)
    value *= np.where(rng.random((runs, 4 * blocks)) < pause, 3.0, 1.0)
    v = value.reshape(runs, blocks, 4)
    return np.log((v[:, :, 0] + v[:, :, 3]) / (v[:, :, 1] + v[:, :, 2]))


def noise(model: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Block log-ratios around 0 for one noise model (see the module doc)."""
    if model.startswith("cpu+pauses"):
        return paused_blocks(rng, shape, 0.1 if model.endswith("10") else 0.05)
    if model == "gpu":
        return rng.normal(0.0, 0.03, shape)
    if model == "cpu":
        return rng.normal(0.0, 0.13, shape)
    if model == "cpu+spikes":
        quiet, spike = rng.normal(0.0, 0.13, shape), rng.normal(0.0, 0.8, shape)
        return np.where(rng.random(shape) < 0.15, spike, quiet)
    if model == "t2":
        return 0.1 * rng.standard_t(2, shape)
    if model == "busy":
        return rng.normal(0.0, 0.6, shape)
    raise ValueError(model)


def signrank_rank(n: int, confidence: float) -> int | None:
    """The rank ``k`` of the Walsh averages bounding the Hodges-Lehmann interval (exact signed-rank law)."""
    top = n * (n + 1) // 2
    counts = [1] + [0] * top
    for i in range(1, n + 1):
        for s in range(top, i - 1, -1):
            counts[s] += counts[s - i]
    cdf, k = 0.0, None
    for i in range(top + 1):
        cdf += counts[i] / 2.0**n
        if cdf > 1.0 - confidence:
            break
        k = i + 1
    return k


def bounds(rule: str, x: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Per run (row), the one-sided lower and upper bounds of the rule's interval at ``confidence``."""
    n = x.shape[1]
    if rule == "sign":
        k = order_statistic_bounds(n, confidence)
        if k is None:
            return None
        s = np.sort(x, 1)
        return s[:, k - 1], s[:, n - k]
    if rule == "hl":
        k = signrank_rank(n, confidence)
        if k is None:
            return None
        i, j = np.triu_indices(n)
        walsh = np.sort((x[:, i] + x[:, j]) / 2.0, 1)
        return walsh[:, k - 1], walsh[:, walsh.shape[1] - k]
    # "trimmed_t" is the comparison's (stats.trim_share: 15 %, a quarter from 16 blocks).
    trim = {"t": 0.0, "trimmed_t": trim_share(n), "trimmed_t15": TRIM, "trimmed_t20": 0.2}[rule]
    g = int(trim * n)
    df = n - 2 * g - 1
    if df < 1:
        return None
    s = np.sort(x, 1)
    centre = s[:, g : n - g].mean(1)
    wins = s.copy()
    wins[:, :g] = s[:, [g]]
    wins[:, n - g :] = s[:, [n - g - 1]]
    se = wins.std(1, ddof=1) / ((1.0 - 2.0 * g / n) * math.sqrt(n))
    half = t_quantile(confidence, df) * se
    return centre - half, centre + half


Plan = list[tuple[int, float, str]]
"""Looks: (blocks, confidence, interval rule)."""


def sequential(plan: Plan, x: np.ndarray, min_worse: int = MIN_WORSE_UNITS) -> tuple[np.ndarray, np.ndarray]:
    """Decisions (0 undecided, 1 not worse, 2 worse) and blocks used, stopping at the first decided look.

    A trimmed t calls "worse" only from ``min_worse`` blocks (stats.MIN_WORSE_UNITS for the
    adopted rule, as stats._trimmed_t_judgement; 6 for the rule adopted first in issue 30).
    """
    decision = np.zeros(x.shape[0], dtype=np.int8)
    used = np.full(x.shape[0], plan[-1][0])
    for n, conf, rule in plan:
        b = bounds(rule, x[:, :n], conf)
        if b is None:
            continue
        low, high = b
        open_ = decision == 0
        worse_allowed = not rule.startswith("trimmed_t") or n >= min_worse
        not_worse, worse = open_ & (high <= LIMIT), open_ & (low > LIMIT) & worse_allowed
        decision[not_worse], decision[worse] = 1, 2
        used[not_worse | worse] = n
    return decision, used


def rules() -> dict[str, tuple[Plan, int]]:
    """Name -> (looks, blocks from which a trimmed t may call "worse")."""
    today = look_schedule(6, MAX_BLOCKS)
    every = block_looks(3, MAX_BLOCKS)
    doubling3 = look_schedule(3, MAX_BLOCKS)
    weighted = look_confidences(CONFIDENCE, len(every))

    def bonferroni(rule: str, looks: list[int]) -> Plan:
        return [(n, per_look_confidence(CONFIDENCE, len(looks)), rule) for n in looks]

    def each(rule: str) -> Plan:
        return [(n, c, rule) for n, c in zip(every, weighted, strict=True)]

    def adopted(first: int, rule: str = "trimmed_t") -> Plan:
        return [(n, c, rule if r == "trimmed_t" else r) for n, c, r in sequential_looks(first, MAX_BLOCKS, CONFIDENCE)]

    return {
        "today: sign 6/12/24 Bonferroni": (bonferroni("sign", today), MIN_WORSE_UNITS),
        f"new: trimmed t every block from {MIN_BLOCKS}, last sign": (adopted(MIN_BLOCKS), MIN_WORSE_UNITS),
        "first new: t 15% from 3, worse from 6": (adopted(3, "trimmed_t15"), 6),
        "new, but looks from 3": (adopted(3), MIN_WORSE_UNITS),
        "new, but worse from 4": (adopted(MIN_BLOCKS), 4),
        "new, but 15% at every look": (adopted(MIN_BLOCKS, "trimmed_t15"), MIN_WORSE_UNITS),
        "Hodges-Lehmann 6/12/24 Bonferroni": (bonferroni("hl", today), MIN_WORSE_UNITS),
        "Hodges-Lehmann every block from 3": (each("hl"), MIN_WORSE_UNITS),
        "t every block from 3": (each("t"), MIN_WORSE_UNITS),
        "trimmed t 20% every block from 3": (each("trimmed_t20"), MIN_WORSE_UNITS),
        "trimmed t 15% 3/6/12/24 Bonferroni": (bonferroni("trimmed_t15", doubling3), MIN_WORSE_UNITS),
        "trimmed t 15% every block, Bonferroni": (bonferroni("trimmed_t15", every), MIN_WORSE_UNITS),
    }


ERRORS = ("false_alarm", "worse_at_margin", "error_at_margin", "error_at_1.5x_margin")


def measure(runs: int, seed: int = 30) -> dict[str, Any]:
    """Every rule on the same simulated runs (common random numbers), per noise model.

    Today's and the adopted rule get all ``runs``; the other candidates the first fifth (enough
    to rank them, and the bench stays within seconds). ``paired`` holds, per model, the new
    rule's differences from today's over the same runs (blocks at equal sides and each error's
    indicator) with their Monte-Carlo standard errors: the same draws feed both rules, so the
    standard error of a difference is that of the per-run differences.
    """
    rng = np.random.default_rng(seed)
    data = {m: {c: noise(m, rng, (runs, MAX_BLOCKS)) + shift for c, shift in CASES.items()} for m in MODELS}
    out: dict[str, Any] = {}
    per_run: list[dict[str, dict[str, np.ndarray]]] = []
    for i, (name, (plan, min_worse)) in enumerate(rules().items()):
        per_model = {}
        rows = runs if i < 2 else max(1, runs // 5)
        kept: dict[str, dict[str, np.ndarray]] = {}
        for model in MODELS:
            res = {c: sequential(plan, data[model][c][:rows], min_worse) for c in CASES}
            (eq, eq_n), (at, _), (beyond, beyond_n) = res["equal"], res["margin"], res["1.5x margin"]
            events = {
                "false_alarm": eq == 2,
                "worse_at_margin": at == 2,
                "error_at_margin": at == 1,
                "error_at_1.5x_margin": beyond == 1,
            }
            kept[model] = {**events, "blocks_equal": eq_n}
            per_model[model] = {
                **{k: float(np.mean(v)) for k, v in events.items()},
                "power": float(np.mean(eq == 1)),
                "power_at_1.5x_margin": float(np.mean(beyond == 2)),
                "inconclusive": float(np.mean(eq == 0)),
                "asn_equal": float(eq_n.mean()),
                "asn_1.5x_margin": float(beyond_n.mean()),
                "asn_2x_slower": float(res["2x slower"][1].mean()),
            }
        out[name] = {
            "looks": [n for n, _, _ in plan],
            "worse_from": min_worse,
            "runs": rows,
            "per_model": per_model,
        }
        if i < 2:
            per_run.append(kept)
    old, new = per_run
    out["paired"] = {
        model: {
            key: {"difference": float(d.mean()), "standard_error": float(d.std(ddof=1) / math.sqrt(len(d)))}
            for key in ("blocks_equal", *ERRORS)
            for d in [new[model][key].astype(float) - old[model][key].astype(float)]
        }
        for model in MODELS
    }
    return out


COLUMNS = (
    ("false_alarm", "false alarm", "{:.4f}"),
    ("worse_at_margin", "worse@margin", "{:.4f}"),
    ("error_at_margin", "error@margin", "{:.4f}"),
    ("error_at_1.5x_margin", "error@1.5m", "{:.4f}"),
    ("power", "power", "{:.3f}"),
    ("power_at_1.5x_margin", "power@1.5m", "{:.3f}"),
    ("inconclusive", "inconclusive", "{:.4f}"),
    ("asn_equal", "ASN equal", "{:.2f}"),
    ("asn_1.5x_margin", "ASN 1.5m", "{:.2f}"),
    ("asn_2x_slower", "ASN 2x", "{:.2f}"),
)


def report(results: dict[str, Any], runs: int) -> list[str]:
    """The table (old and new rule side by side per model, then the other candidates) and the verdict.

    Per model the new rule is judged against today's on the same runs: fewer blocks at equal
    sides when the difference is below minus two of its Monte-Carlo standard errors (a tie
    within them is reported as such, not as fewer), not more inconclusive endings, and no error
    rate higher by more than two standard errors of its paired difference.
    """
    lines = [
        f"gate rule: {runs} simulated runs per model and case, margin {MARGIN:.0%}, confidence {CONFIDENCE:.0%}, "
        f"at most {MAX_BLOCKS} blocks (ASN 2x: blocks to a decision for a candidate 2x slower, the demo's run 3)",
        f"{'model':12s} {'rule':45s} " + " ".join(f"{h:>12s}" for _, h, _ in COLUMNS),
    ]
    names = [name for name in results if name != "paired"]
    for model in MODELS:
        for name in names:
            row = results[name]["per_model"][model]
            lines.append(f"{model:12s} {name:45s} " + " ".join(f"{f.format(row[k]):>12s}" for k, _, f in COLUMNS))
    old, new = results[names[0]]["per_model"], results[names[1]]["per_model"]
    paired = results["paired"]

    def beyond(model: str, key: str) -> float:
        # The paired difference in units of its standard error (0 when both rules agree on every run).
        d = paired[model][key]
        return d["difference"] / d["standard_error"] if d["standard_error"] > 0 else 0.0

    verdict = {}
    for model in MODELS:
        o, n = old[model], new[model]
        blocks = paired[model]["blocks_equal"]
        z = beyond(model, "blocks_equal")
        verdict[model] = {
            "blocks": "fewer" if z < -2.0 else "more" if z > 2.0 else "tie",
            "fewer_blocks_at_equal": z < -2.0,
            "blocks_ratio": round(n["asn_equal"] / o["asn_equal"], 3),
            "blocks_difference": round(blocks["difference"], 3),
            "blocks_difference_se": round(blocks["standard_error"], 3),
            "not_more_inconclusive": n["inconclusive"] <= o["inconclusive"],
            "errors_not_higher": not any(beyond(model, k) > 2.0 for k in ERRORS),
        }
        v = verdict[model]
        ok = v["blocks"] != "more" and v["not_more_inconclusive"] and v["errors_not_higher"]
        lines.append(
            f"new vs today, {model}: ASN at equal sides {n['asn_equal']:.2f} vs {o['asn_equal']:.2f} "
            f"({v['blocks_ratio']:.0%}; {blocks['difference']:+.2f} +- {blocks['standard_error']:.2f}: {v['blocks']}), "
            f"inconclusive {n['inconclusive']:.4f} vs {o['inconclusive']:.4f}, false alarm {n['false_alarm']:.4f} vs "
            f"{o['false_alarm']:.4f}, error@margin {n['error_at_margin']:.4f} vs {o['error_at_margin']:.4f}, "
            f"worse@margin {n['worse_at_margin']:.4f} vs {o['worse_at_margin']:.4f}, error@1.5m "
            f"{n['error_at_1.5x_margin']:.4f} vs {o['error_at_1.5x_margin']:.4f}: "
            + ("MISSED" if not ok else "ok" if v["blocks"] == "fewer" else "ok, blocks a tie within simulation error")
        )
    fewer = [m for m in MODELS if verdict[m]["blocks"] == "fewer"]
    ties = [m for m in MODELS if verdict[m]["blocks"] == "tie"]
    lines.append(
        f"new vs today: fewer blocks at equal sides under {len(fewer)} of {len(MODELS)} noise models"
        + (f" (a tie under {', '.join(ties)})" if ties else "")
        + ", error rates "
        + ("not higher under any" if all(verdict[m]["errors_not_higher"] for m in MODELS) else "HIGHER under some")
        + ", inconclusive "
        + ("not more often under any" if all(verdict[m]["not_more_inconclusive"] for m in MODELS) else "MORE often")
    )
    results["verdict"] = verdict
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000, help="simulated runs per model and case (old, new rule)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = measure(args.runs)
    lines = report(results, args.runs)
    results["seconds"] = round(time.monotonic() - started, 2)
    print("\n".join(lines))
    print(f"({results['seconds']} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
