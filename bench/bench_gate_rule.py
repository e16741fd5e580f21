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

Cases: equal sides, sides differing by exactly the margin (ratio 1.2) and by 1.5 times it (1.3).
Per rule and model: ``false alarm`` (equal called worse), ``worse@margin`` (a candidate exactly at
the margin called worse: the hardest false "worse"), ``error@margin`` (at the margin called not
worse), ``error@1.5m`` (at 1.5x the margin called not worse), ``power`` (equal called not worse),
``power@1.5m`` (1.5x the margin called worse), ``inconclusive`` (equal sides undecided at the last
look) and ``ASN`` (average blocks to the end, equal sides and 1.5x the margin). An error rate of
the new rule counts as higher than today's when it is beyond simulation noise (two standard
errors of the difference).

Rules: today's until issue 30 (the sign test's order-statistic interval, looks at 6, 12, 24,
Bonferroni), the adopted one (:func:`llm_rollout.validation.stats.sequential_looks`: the
15 %-trimmed-mean t at a look after every block from 3, the sign test at the last look, weighted
Bonferroni with a quarter of the error at the last look, "worse" from 6 blocks), and the other
candidates tried (Wilcoxon signed-rank / Hodges-Lehmann, the plain t, 20 % trimming, the trimmed
t alone, doubling looks, equal Bonferroni). Seeds are fixed; numpy, vectorised over runs.

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
)

MARGIN = 0.2
CONFIDENCE = 0.95
MAX_BLOCKS = 24
LIMIT = math.log1p(MARGIN)
CASES = {"equal": 0.0, "margin": LIMIT, "1.5x margin": math.log1p(1.5 * MARGIN)}
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
    trim = {"t": 0.0, "trimmed_t": TRIM, "trimmed_t20": 0.2}[rule]
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


def sequential(plan: Plan, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decisions (0 undecided, 1 not worse, 2 worse) and blocks used, stopping at the first decided look."""
    decision = np.zeros(x.shape[0], dtype=np.int8)
    used = np.full(x.shape[0], plan[-1][0])
    for n, conf, rule in plan:
        b = bounds(rule, x[:, :n], conf)
        if b is None:
            continue
        low, high = b
        open_ = decision == 0
        worse_allowed = rule != "trimmed_t" or n >= MIN_WORSE_UNITS  # as stats._trimmed_t_judgement
        not_worse, worse = open_ & (high <= LIMIT), open_ & (low > LIMIT) & worse_allowed
        decision[not_worse], decision[worse] = 1, 2
        used[not_worse | worse] = n
    return decision, used


def rules() -> dict[str, Plan]:
    """Name -> looks."""
    today = look_schedule(6, MAX_BLOCKS)
    every = block_looks(3, MAX_BLOCKS)
    doubling3 = look_schedule(3, MAX_BLOCKS)
    weighted = look_confidences(CONFIDENCE, len(every))

    def bonferroni(rule: str, looks: list[int]) -> Plan:
        return [(n, per_look_confidence(CONFIDENCE, len(looks)), rule) for n in looks]

    def each(rule: str) -> Plan:
        return [(n, c, rule) for n, c in zip(every, weighted, strict=True)]

    return {
        "today: sign 6/12/24 Bonferroni": bonferroni("sign", today),
        "new: trimmed t every block from 3, last sign": sequential_looks(3, MAX_BLOCKS, CONFIDENCE),
        "Hodges-Lehmann 6/12/24 Bonferroni": bonferroni("hl", today),
        "Hodges-Lehmann every block from 3": each("hl"),
        "t every block from 3": each("t"),
        "trimmed t 15% every block from 3": each("trimmed_t"),
        "trimmed t 20% every block from 3": each("trimmed_t20"),
        "trimmed t 15% 3/6/12/24 Bonferroni": bonferroni("trimmed_t", doubling3),
        "trimmed t 15% every block, Bonferroni": bonferroni("trimmed_t", every),
    }


def measure(runs: int, seed: int = 30) -> dict[str, Any]:
    """Every rule on the same simulated runs (common random numbers), per noise model.

    Today's and the adopted rule get all ``runs``; the other candidates the first fifth (enough
    to rank them, and the bench stays within seconds).
    """
    rng = np.random.default_rng(seed)
    data = {m: {c: noise(m, rng, (runs, MAX_BLOCKS)) + shift for c, shift in CASES.items()} for m in MODELS}
    out: dict[str, Any] = {}
    for i, (name, plan) in enumerate(rules().items()):
        per_model = {}
        rows = runs if i < 2 else max(1, runs // 5)
        for model in MODELS:
            res = {c: sequential(plan, data[model][c][:rows]) for c in CASES}
            (eq, eq_n), (at, _), (beyond, beyond_n) = res["equal"], res["margin"], res["1.5x margin"]
            per_model[model] = {
                "false_alarm": float(np.mean(eq == 2)),
                "worse_at_margin": float(np.mean(at == 2)),
                "error_at_margin": float(np.mean(at == 1)),
                "error_at_1.5x_margin": float(np.mean(beyond == 1)),
                "power": float(np.mean(eq == 1)),
                "power_at_1.5x_margin": float(np.mean(beyond == 2)),
                "inconclusive": float(np.mean(eq == 0)),
                "asn_equal": float(eq_n.mean()),
                "asn_1.5x_margin": float(beyond_n.mean()),
            }
        out[name] = {"looks": [n for n, _, _ in plan], "runs": rows, "per_model": per_model}
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
)


def report(results: dict[str, Any], runs: int) -> list[str]:
    """The table (old and new rule side by side per model, then the other candidates) and the verdict."""
    lines = [
        f"gate rule: {runs} simulated runs per model and case, margin {MARGIN:.0%}, confidence {CONFIDENCE:.0%}, "
        f"at most {MAX_BLOCKS} blocks",
        f"{'model':11s} {'rule':55s} " + " ".join(f"{h:>12s}" for _, h, _ in COLUMNS),
    ]
    names = list(results)
    for model in MODELS:
        for name in names:
            row = results[name]["per_model"][model]
            lines.append(f"{model:11s} {name:55s} " + " ".join(f"{f.format(row[k]):>12s}" for k, _, f in COLUMNS))
    old, new = results[names[0]]["per_model"], results[names[1]]["per_model"]

    def higher(n: float, o: float) -> bool:
        # Beyond simulation noise: two standard errors of the difference of two rates over `runs`.
        return n - o > 2.0 * math.sqrt((n * (1 - n) + o * (1 - o)) / runs)

    verdict = {}
    for model in MODELS:
        o, n = old[model], new[model]
        verdict[model] = {
            "fewer_blocks_at_equal": n["asn_equal"] < o["asn_equal"],
            "blocks_ratio": round(n["asn_equal"] / o["asn_equal"], 3),
            "not_more_inconclusive": n["inconclusive"] <= o["inconclusive"],
            "errors_not_higher": not any(
                higher(n[k], o[k])
                for k in ("false_alarm", "worse_at_margin", "error_at_margin", "error_at_1.5x_margin")
            ),
        }
        v = verdict[model]
        lines.append(
            f"new vs today, {model}: ASN at equal sides {n['asn_equal']:.2f} vs {o['asn_equal']:.2f} "
            f"({v['blocks_ratio']:.0%}), inconclusive {n['inconclusive']:.4f} vs {o['inconclusive']:.4f}, "
            f"error@margin {n['error_at_margin']:.4f} vs {o['error_at_margin']:.4f}, worse@margin "
            f"{n['worse_at_margin']:.4f} vs {o['worse_at_margin']:.4f}: "
            + (
                "ok"
                if v["fewer_blocks_at_equal"] and v["not_more_inconclusive"] and v["errors_not_higher"]
                else "MISSED"
            )
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
