"""Outputs of a validation: flat KFP metrics, a self-contained HTML report and the full JSON.

Everything here works on the result's plain data (``ValidationResult.to_dict()``), so a report can
be re-rendered from a saved ``validation.json``.

The HTML report has no external resource at all (no scripts, no stylesheets, no fonts): tables
and inline SVG plots only, so it renders the same in the KFP UI's sandboxed iframe and in an
offline browser. Every piece of text that comes from outside - model completions, prompts,
server error bodies, model and metric names - goes through :func:`html.escape`, and the page
carries a Content-Security-Policy that forbids scripts as a second line of defence.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_rollout.slo_expr import RATIO_SUFFIX
from llm_rollout.validation.stats import pct

KFP_LEVEL_METRICS: tuple[str, ...] = (
    "successful_requests",
    "failed_requests",
    "error_rate",
    "request_throughput_req_s",
    "output_throughput_tok_s",
    "goodput_req_s",
    *(
        f"{stat}_{series}_ms"
        for series in ("ttft", "tpot", "itl", "e2el")
        for stat in ("mean", "p50", "p90", "p95", "p99")
    ),
)
"""Per-level metrics copied into the KFP ``Metrics`` artifact as ``<level>_<metric>``."""

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
VERDICT_COLORS = {"pass": "#1b7f3b", "fail": "#b3261e", "inconclusive": "#8a6d00"}


def e(value: Any) -> str:
    """HTML-escapes any value's text (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Formats a number for a table (integers plainly, floats with ``digits`` significant digits)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value == int(value) and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


# The gate's questions ---------------------------------------------------------------------------

QUESTION_RECOVERY = "Did compression keep the model? (against its uncompressed original)"
QUESTION_COMPARISON = "Is it at least as good as what serves now? (against the stable revision)"
QUESTION_SLO = "Does it meet the SLO? (absolute thresholds)"


def gate_questions(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The gate's questions side by side: what each compared, its evidence and its answer.

    Args:
        result: ``ValidationResult.to_dict()``.

    Returns:
        One entry per question asked (recovery only with an original served beside the candidate,
        comparison only with a stable revision, the SLO always): ``{"key", "question", "against",
        "decision", "ok", "evidence"}``. ``decision`` is ``kept``/``lost``/``inconclusive``
        (recovery), ``non-inferior``/``inferior``/``inconclusive`` (comparison), ``met``/``missed``/
        ``inconclusive`` (SLO); ``ok`` is True, False or None (inconclusive); ``evidence`` lines
        carry the measured values, intervals and what was needed.
    """
    out: list[dict[str, Any]] = []
    results = ((result.get("judgement") or {}).get("results")) or []
    ratio_checks = [r for r in results if str(r.get("metric", "")).endswith(RATIO_SUFFIX)]
    baseline = result.get("baseline")
    if baseline:
        evidence: list[str] = []
        failed, unknown = False, False
        agreement = (result.get("agreement") or {}).get("agreement")
        need = ((result.get("spec") or {}).get("recovery") or {}).get("min_token_agreement")
        if agreement is None:
            unknown = True
            evidence.append("greedy token agreement: not measured")
        else:
            ok = need is None or agreement >= need
            failed |= not ok
            needed = f" (needed >= {need:g})" if need is not None else ""
            evidence.append(f"greedy token agreement {agreement:.3f}{needed}")
        for r in ratio_checks:
            measured = r.get("measured")
            evidence.append(
                f"{r.get('level')}: {r.get('check')}: " + ("not measured" if measured is None else f"{measured:.3f}")
                + f" ({r.get('status')})"
            )  # fmt: skip
            failed |= r.get("status") == "fail"
            unknown |= r.get("status") == "not_judged"
        decision = "lost" if failed else "inconclusive" if unknown else "kept"
        out.append({
            "key": "recovery", "question": QUESTION_RECOVERY, "against": baseline.get("url"), "decision": decision,
            "ok": False if failed else None if unknown else True, "evidence": evidence,
        })  # fmt: skip
    comparison = result.get("comparison")
    if comparison:
        evidence = []
        q = comparison.get("quality") or {}
        if q:
            evidence.append(
                f"quality: correctness suite passed by the candidate {q.get('candidate_passed')}/{q.get('total')}, "
                f"by the stable {q.get('stable_passed')}/{q.get('total')}"
            )
        for c in comparison.get("speed") or []:
            if c.get("ratio") is None:
                decision = str(c.get("decision", "undecided")).replace("_", " ")
                evidence.append(f"{c.get('metric')}: {decision} ({c.get('note') or 'not measured'})")
                continue
            sign = "<=" if c.get("better") == "lower" else ">="
            evidence.append(
                f"{c.get('metric')}: candidate/stable {c['ratio']:.3f} [{c['low']:.3f}, {c['high']:.3f}] at "
                f"{pct(c.get('confidence', 0))}, needed {sign} {c.get('limit', 0):.3f}: "
                + str(c.get("decision", "")).replace("_", " ")
            )  # fmt: skip
        decision = {"not_worse": "non-inferior", "worse": "inferior"}.get(comparison.get("decision"), "inconclusive")
        out.append({
            "key": "comparison", "question": QUESTION_COMPARISON, "against": comparison.get("stable_url"),
            "decision": decision, "ok": {"non-inferior": True, "inferior": False}.get(decision), "evidence": evidence,
        })  # fmt: skip
    slo = [r for r in results if not str(r.get("metric", "")).endswith(RATIO_SUFFIX)]
    if slo:
        failed = [r for r in slo if r.get("status") == "fail"]
        unknown = [r for r in slo if r.get("status") == "not_judged"]
        evidence = [
            f"{r.get('level')}: {r.get('check')}: "
            + ("not measured" if r.get("measured") is None else f"{r['measured']:.4g}") + f" ({r.get('status')})"
            for r in (failed or unknown or slo)
        ]  # fmt: skip
        decision = "missed" if failed else "inconclusive" if unknown else "met"
        out.append({
            "key": "slo", "question": QUESTION_SLO, "against": "slo.checks", "decision": decision,
            "ok": False if failed else None if unknown else True, "evidence": evidence,
        })  # fmt: skip
    return out


# KFP metrics ------------------------------------------------------------------------------------


def kfp_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The flat metrics for KFP's ``Metrics`` artifact (unit in every name, numbers only).

    Args:
        result: ``ValidationResult.to_dict()``.

    Returns:
        ``verdict_pass`` (1/0), ``readiness_s``, ``correctness_passed``/``_total``,
        ``token_agreement_ratio``, ``capacity_max_concurrency`` (and ``_low``/``_high``, its
        interval), ``capacity_max_request_rate_req_s`` (and ``capacity_max_request_rate_{low,high}_req_s``),
        ``sizing_{capacity_per_replica_req_s,expected_peak_req_s,replicas_needed,gpus_needed,fits}``,
        ``<question>_ok`` per question of :func:`gate_questions` (1 yes, 0 no, -1 inconclusive),
        ``vs_stable_not_worse``, ``vs_stable_blocks`` and
        ``vs_stable_<metric>_{ratio,low,high}`` (the comparison with the stable), ``<level>_<metric>`` for
        :data:`KFP_LEVEL_METRICS`, ``baseline_<level>_<metric>`` for the baseline's throughput and
        TTFT, ``<level>_<check metric>`` for each judged ratio, and ``server_<name>`` (the single
        server) or ``server_<role>_<name>`` (each role of an llm-d service) for the server view.
        None values are left out.
    """
    out: dict[str, float] = {"verdict_pass": 1.0 if result.get("verdict") == "pass" else 0.0}
    readiness = result.get("readiness") or {}
    if readiness.get("seconds") is not None:
        out["readiness_s"] = float(readiness["seconds"])
    probes = result.get("correctness") or []
    if probes:
        out["correctness_passed"] = float(sum(1 for p in probes if p.get("passed")))
        out["correctness_total"] = float(len(probes))
    agreement = (result.get("agreement") or {}).get("agreement")
    if agreement is not None:
        out["token_agreement_ratio"] = float(agreement)
    capacity = result.get("capacity")
    if capacity:
        out["capacity_max_concurrency"] = float(capacity["max_concurrency"])
        for end in ("low", "high"):
            if capacity.get(end) is not None:
                out[f"capacity_max_concurrency_{end}"] = float(capacity[end])
    rate_capacity = result.get("rate_capacity")
    if rate_capacity:
        out["capacity_max_request_rate_req_s"] = float(rate_capacity["max_request_rate"])
        for end in ("low", "high"):
            if rate_capacity.get(end) is not None:
                out[f"capacity_max_request_rate_{end}_req_s"] = float(rate_capacity[end])
    sizing = result.get("sizing")
    if sizing:
        out["sizing_capacity_per_replica_req_s"] = float(sizing["capacity_rps"])
        out["sizing_expected_peak_req_s"] = float(sizing["expected_peak_rps"])
        out["sizing_replicas_needed"] = float(sizing["replicas_needed"])
        out["sizing_gpus_needed"] = float(sizing["gpus_needed"])
        out["sizing_fits"] = 1.0 if sizing.get("fits") else 0.0
    for question in gate_questions(result):
        # 1 yes, 0 no, -1 inconclusive: "recovery_ok", "comparison_ok", "slo_ok".
        out[f"{question['key']}_ok"] = {True: 1.0, False: 0.0, None: -1.0}[question["ok"]]
    comparison = result.get("comparison")
    if comparison:
        out["vs_stable_not_worse"] = 1.0 if comparison.get("decision") == "not_worse" else 0.0
        out["vs_stable_blocks"] = float(comparison.get("blocks") or 0)
        for c in comparison.get("speed") or []:
            for key in ("ratio", "low", "high"):
                if c.get(key) is not None:
                    out[f"vs_stable_{c['metric']}_{key}"] = float(c[key])
    for level in result.get("levels") or []:
        for name in KFP_LEVEL_METRICS:
            value = level["metrics"].get(name)
            if value is not None:
                out[f"{level['label']}_{name}"] = float(value)
    for level in result.get("baseline_levels") or []:
        for name in ("output_throughput_tok_s", "request_throughput_req_s", "p50_ttft_ms", "p95_ttft_ms"):
            value = level["metrics"].get(name)
            if value is not None:
                out[f"baseline_{level['label']}_{name}"] = float(value)
    for check in (result.get("judgement") or {}).get("results") or []:
        if check["metric"].endswith("_ratio_vs_baseline") and check.get("measured") is not None:
            out[f"{check['level']}_{check['metric']}"] = float(check["measured"])
    for role, view in (result.get("server") or {}).items():
        # One "server_" prefix: the default role is itself named "server", and some view names
        # (server_ttft_mean_ms) already start with it.
        prefix = "server_" if role == "server" else f"server_{role}_"
        for name, value in view.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[prefix + name.removeprefix("server_")] = float(value)
    return {k: v for k, v in out.items() if math.isfinite(v)}


# SVG plots --------------------------------------------------------------------------------------


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = [math.floor(low / step) * step]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(ticks[-1] + step)
    ticks = [round(t, 10) for t in ticks]
    return ticks


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    y_label: str = "",
    x_values: Sequence[float] | None = None,
    width: int = 540,
    height: int = 260,
    markers: bool = True,
    hlines: Mapping[str, float] | None = None,
    vlines: Mapping[str, float] | None = None,
) -> str:
    """An inline SVG line chart (no scripts; every text escaped).

    Args:
        title: Chart title.
        x_labels: Category labels (used when ``x_values`` is None) or tick labels.
        series: Legend name -> y values (None leaves a gap).
        y_label: Y axis label.
        x_values: Numeric x positions (e.g. TTFT values for a CDF); categories when None.
        width: Width in px.
        height: Height in px.
        markers: Draw a dot at each point.
        hlines: Labelled horizontal reference lines at these y values (e.g. an SLO threshold).
        vlines: Labelled vertical reference lines at these x values (numeric x only; e.g. the
            capacity point).

    Returns:
        The ``<svg>`` element.
    """
    left, right, top, bottom = 64, 130, 28, 40
    pw, ph = width - left - right, height - top - bottom
    ys = [v for vals in series.values() for v in vals if v is not None and math.isfinite(v)]
    hlines = {k: v for k, v in (hlines or {}).items() if math.isfinite(v)}
    vlines = {k: v for k, v in (vlines or {}).items() if math.isfinite(v)} if x_values is not None else {}
    if ys:
        ys += list(hlines.values())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{e(title)}" class="chart">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="ct">{e(title)}</text>',
    ]
    if not ys:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    y_ticks = _nice_ticks(min(0.0, min(ys)), max(ys))
    y0, y1 = y_ticks[0], y_ticks[-1]
    if x_values is None:
        n = max(1, len(x_labels))
        xs = [left + (i + 0.5) * pw / n for i in range(len(x_labels))]
        x_ticks = list(zip(xs, x_labels, strict=True))
    else:
        lo, hi = min([*x_values, *vlines.values()]), max([*x_values, *vlines.values()])
        ticks = _nice_ticks(lo, hi)
        lo, hi = ticks[0], ticks[-1]
        xs = [left + (x - lo) / (hi - lo) * pw for x in x_values]
        x_ticks = [(left + (t - lo) / (hi - lo) * pw, fmt(t, 3)) for t in ticks]

    def sy(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>')
    for t in y_ticks:
        y = sy(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{e(fmt(t, 3))}</text>')
    for x, label in x_ticks:
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{e(label)}</text>')
    for name, value in hlines.items():
        y = sy(value)
        parts.append(
            f'<line class="hline" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#b3261e" '
            'stroke-dasharray="6 4"/>'
        )
        parts.append(f'<text x="{left + pw - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#b3261e">{e(name)}</text>')
    if x_values is not None:
        for name, value in vlines.items():
            x = left + (value - lo) / (hi - lo) * pw
            parts.append(
                f'<line class="vline" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#1b7f3b" '
                'stroke-dasharray="3 3"/>'
            )
            parts.append(f'<text x="{x + 4:.1f}" y="{top + 12}" fill="#1b7f3b">{e(name)}</text>')
    if y_label:
        parts.append(
            f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle">{e(y_label)}</text>'
        )
    for i, (name, values) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        points = [(xs[j], sy(v)) for j, v in enumerate(values) if j < len(xs) and v is not None and math.isfinite(v)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if markers:
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]
        ly = top + 14 + i * 16
        parts.append(f'<rect x="{left + pw + 10}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + pw + 24}" y="{ly}">{e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _downsample(values: Sequence[float], limit: int = 200) -> list[float]:
    if len(values) <= limit:
        return list(values)
    step = (len(values) - 1) / (limit - 1)
    return [values[round(i * step)] for i in range(limit)]


def ttft_cdf_chart(levels: Sequence[Mapping[str, Any]]) -> str:
    """TTFT distribution: one empirical CDF per level (from the successful requests' TTFTs)."""
    width, height = 540, 260
    left, right, top, bottom = 64, 130, 28, 40
    pw, ph = width - left - right, height - top - bottom
    samples = {lv["label"]: sorted(lv.get("ttft_ms") or []) for lv in levels}
    samples = {k: v for k, v in samples.items() if v}
    title = "TTFT distribution (CDF, ms)"
    if not samples:
        return line_chart(title, [], {})
    hi_raw = max(v[-1] for v in samples.values())
    ticks = _nice_ticks(0.0, hi_raw)
    hi = ticks[-1]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{e(title)}" class="chart">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="ct">{e(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
    ]
    for q in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + ph - q * ph
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{q:g}</text>')
    for t in ticks:
        x = left + t / hi * pw
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{e(fmt(t, 3))}</text>')
    for i, (label, values) in enumerate(samples.items()):
        color = COLORS[i % len(COLORS)]
        pts = _downsample(values)
        n = len(pts)
        path = " ".join(f"{left + v / hi * pw:.1f},{top + ph - (j + 1) / n * ph:.1f}" for j, v in enumerate(pts))
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        ly = top + 14 + i * 16
        parts.append(f'<rect x="{left + pw + 10}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + pw + 24}" y="{ly}">{e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# HTML -------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;color:#fff;padding:4px 14px;border-radius:4px;font-weight:600;font-size:18px}
.pass{color:#1b7f3b;font-weight:600}.fail{color:#b3261e;font-weight:600}
.not_judged,.inconclusive,.skipped{color:#8a6d00;font-weight:600}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all}
.chart{margin:4px 12px 12px 0;font-size:11px}.chart .ct{font-size:13px;font-weight:600}
.charts{display:flex;flex-wrap:wrap}.muted{color:#666}
"""


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[bool] | None = None) -> str:
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            if isinstance(cell, tuple) and len(cell) == 2 and cell[0] == "html":
                out.append(f"<td>{cell[1]}</td>")  # already-escaped markup built here
            elif numeric and i < len(numeric) and numeric[i]:
                out.append(f'<td class="n">{e(fmt(cell))}</td>')
            else:
                out.append(f"<td>{e(fmt(cell))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _status(value: str) -> tuple[str, str]:
    return ("html", f'<span class="{e(value)}">{e(value)}</span>')


def _mono(value: Any) -> tuple[str, str]:
    return ("html", f'<span class="mono">{e(value)}</span>')


REPORT_METRIC_ROWS: tuple[str, ...] = (
    "sent_requests",
    "successful_requests",
    "failed_requests",
    "incomplete_requests",
    "error_rate",
    "duration_s",
    "request_throughput_req_s",
    "output_throughput_tok_s",
    "total_token_throughput_tok_s",
    "goodput_req_s",
    "peak_output_throughput_tok_s",
    *(
        f"{stat}_{series}_ms"
        for series in ("ttft", "tpot", "itl", "e2el")
        for stat in ("mean", "median", "p90", "p95", "p99")
    ),
    "total_input_tokens",
    "total_output_tokens",
)


def _slo_curve_metrics(result: Mapping[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """The metrics the absolute SLO judges (latency and throughput) with their thresholds, by metric."""
    from llm_rollout.errors import SpecError
    from llm_rollout.validation.slo import ERROR_METRICS, parse_checks

    texts = (((result.get("spec") or {}).get("slo") or {}).get("checks")) or []
    try:
        checks = parse_checks(texts, "validation.slo.checks")
    except SpecError:
        checks = []
    out: dict[str, dict[str, float]] = {}
    for c in checks:
        if c.baseline or c.metric in ERROR_METRICS:
            continue
        out.setdefault(c.metric, {})[f"SLO {c.op} {fmt(c.threshold)}"] = c.threshold
    return list(out.items())[:4] or [("p95_ttft_ms", {})]


def _curve(points: Iterable[tuple[float, float | None]]) -> tuple[list[float], list[float | None]]:
    """Mean y per x, sorted by x (repeated measurements at one load become one point)."""
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        if y is not None and math.isfinite(y):
            by_x.setdefault(x, []).append(y)
    xs = sorted(by_x)
    return xs, [sum(by_x[x]) / len(by_x[x]) for x in xs]


def capacity_section(result: Mapping[str, Any]) -> list[str]:
    """Latency against load for the workload, with the SLO line and the capacity marked, and the sizing.

    One chart per judged metric (a latency or throughput check of ``validation.slo.checks``) and per
    kind of load: concurrency (every closed-loop level measured, the load phase's and the capacity
    search's; repeats averaged) and request rate (the open-loop levels). Then the sizing table when
    ``scaling.expected_peak_rps`` was given.

    Args:
        result: ``ValidationResult.to_dict()``.

    Returns:
        HTML fragments (empty when there is nothing to draw).
    """
    levels = result.get("levels") or []
    capacity = result.get("capacity") or {}
    rate_capacity = result.get("rate_capacity") or {}
    sizing = result.get("sizing")
    workload = (result.get("workload") or {}).get("description") or "generated prompts"
    closed = [lv for lv in levels if lv.get("request_rate") is None and lv.get("concurrency")]
    opened = [lv for lv in levels if lv.get("request_rate") is not None]
    if not (capacity or rate_capacity or sizing) or not (closed or opened):
        return []
    out = [f'<h2 id="capacity">Capacity per replica: {e(workload)}</h2>', '<div class="charts">']
    for metric, lines in _slo_curve_metrics(result):
        for kind, lvs, key, mark in (
            ("concurrency", closed, "concurrency", capacity.get("max_concurrency") if capacity else None),
            (
                "request rate (req/s)",
                opened,
                "request_rate",
                rate_capacity.get("max_request_rate") if rate_capacity else None,
            ),
        ):
            if len(lvs) < 1:
                continue
            xs, ys = _curve((float(lv[key]), lv["metrics"].get(metric)) for lv in lvs)
            if not xs:
                continue
            unit = " req/s" if key == "request_rate" else ""
            marks = {f"capacity {fmt(mark)}{unit}": float(mark)} if mark else {}
            out.append(
                line_chart(
                    f"{metric} against {kind}",
                    [fmt(x) for x in xs],
                    {metric: ys},
                    x_values=xs,
                    y_label=metric.rsplit("_", 1)[-1],
                    hlines=lines,
                    vlines=marks,
                )
            )
    out.append("</div>")
    if sizing:
        low, high = sizing.get("replicas_range") or (None, None)
        out.append('<h2 id="sizing">Sizing</h2>')
        out.append(
            _table(
                ["quantity", "value"],
                [
                    ["expected peak (req/s)", sizing.get("expected_peak_rps")],
                    ["capacity per replica (req/s)", sizing.get("capacity_rps")],
                    [
                        "capacity interval (req/s)",
                        f"[{fmt(sizing.get('capacity_rps_low'))}, {fmt(sizing.get('capacity_rps_high'))}]",
                    ],
                    ["replicas needed", sizing.get("replicas_needed")],
                    ["replicas the interval allows", f"{fmt(low)} .. {fmt(high)}"],
                    ["GPUs per replica", sizing.get("gpus_per_replica")],
                    ["GPUs needed", sizing.get("gpus_needed")],
                    [f"{sizing.get('field')}.max_replicas", sizing.get("max_replicas")],
                    ["carries the peak", _status("pass" if sizing.get("fits") else "fail")],
                ],
                numeric=[False, True],
            )
        )
        out.append(f'<p class="muted">{e(sizing.get("source"))}</p>')
        if sizing.get("reason"):
            out.append(f'<p class="mono">{e(sizing["reason"])}</p>')
    return out


def render_html(result: Mapping[str, Any]) -> str:
    """The self-contained HTML report.

    Args:
        result: ``ValidationResult.to_dict()``.

    Returns:
        The page (no scripts, no external resources; all outside text escaped).
    """
    verdict = str(result.get("verdict", "inconclusive"))
    endpoint = result.get("endpoint") or {}
    levels = result.get("levels") or []
    judged = {lv["label"] for lv in levels if lv.get("judged")}
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<title>Validation {e(verdict)}: {e(endpoint.get('model'))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Validation of {e(endpoint.get('model'))} at {e(endpoint.get('url'))}</h1>",
        f'<p><span class="verdict" id="verdict" style="background:{VERDICT_COLORS.get(verdict, "#555")}">'
        f"{e(verdict.upper())}</span> "
        f'<span class="muted">started {e(result.get("started_at"))}, {e(fmt(result.get("seconds"), 3))} s</span></p>',
    ]
    workload = (result.get("workload") or {}).get("description")
    if workload:
        out.append(f'<p class="muted" id="workload">Load: {e(workload)}</p>')
    reasons = result.get("reasons") or []
    if reasons:
        out.append(
            '<h2>Why</h2><ul id="reasons">' + "".join(f'<li class="mono">{e(r)}</li>' for r in reasons) + "</ul>"
        )
    else:
        out.append("<p>Every check passed.</p>")

    questions = gate_questions(result)
    if questions:
        # Each question with its own evidence, side by side: never one mixed list of checks.
        status = {True: "pass", False: "fail", None: "inconclusive"}
        out.append('<h2>The gate\'s questions</h2><div id="questions">')
        out.append(
            _table(
                ["question", "against", "answer", "evidence"],
                (
                    [
                        q["question"],
                        _mono(q["against"]),
                        ("html", f'<span class="{status[q["ok"]]}">{e(q["decision"])}</span>'),
                        ("html", "<br>".join(f'<span class="mono">{e(line)}</span>' for line in q["evidence"])),
                    ]
                    for q in questions
                ),
                numeric=[False, False, False, False],
            )
        )
        out.append("</div>")

    phases = result.get("phases") or []
    if phases:
        out.append("<h2>Phases</h2>")
        out.append(
            _table(
                ["phase", "status", "seconds", "detail"],
                ([p["name"], _status(p["status"]), p.get("seconds"), p.get("detail", "")] for p in phases),
                numeric=[False, False, True, False],
            )
        )

    judgement = result.get("judgement") or {}
    checks = judgement.get("results") or []
    out.append("<h2>SLO checks</h2>")
    if checks:
        out.append(
            _table(
                ["level", "check", "measured", "status", "note"],
                (
                    [c["level"], _mono(c["check"]), c.get("measured"), _status(c["status"]), c.get("note", "")]
                    for c in checks
                ),
                numeric=[False, False, True, False, False],
            )
        )
    else:
        out.append('<p class="muted">No check was judged.</p>')
    capacity = result.get("capacity")
    if capacity:
        tried = ", ".join(f"c{k}: {v}" for k, v in capacity.get("tried", {}).items())
        bound = " (the upper bound; capacity may be higher)" if capacity.get("bounded") else ""
        interval = ""
        if capacity.get("high") is not None:
            interval = f", within [{capacity.get('low')}, {capacity.get('high')}]"
            if not capacity.get("settled", True):
                interval += " (the measurement budget ran out)"
        out.append(
            f"<p>Capacity: highest concurrency meeting the SLO = <b>{e(capacity['max_concurrency'])}</b>{e(bound)}"
            f"{e(interval)}. Tried {e(tried)}.</p>"
        )
    rate_capacity = result.get("rate_capacity")
    if rate_capacity:
        tried = ", ".join(f"{k} req/s: {v}" for k, v in rate_capacity.get("tried", {}).items())
        bound = " (the upper bound; capacity may be higher)" if rate_capacity.get("bounded") else ""
        out.append(
            f"<p>Capacity: highest request rate meeting the SLO = <b>{e(fmt(rate_capacity['max_request_rate']))} "
            f"req/s</b>{e(bound)}, within [{e(fmt(rate_capacity.get('low')))}, {e(fmt(rate_capacity.get('high')))}] "
            f"(steps of {e(fmt(rate_capacity.get('step')))} req/s). Tried {e(tried)}.</p>"
        )
    out.extend(capacity_section(result))

    if levels:
        out.append("<h2>Load levels</h2>")
        headers = ["metric", *(lv["label"] + (" (judged)" if lv["label"] in judged else "") for lv in levels)]
        rows = [[name, *(lv["metrics"].get(name) for lv in levels)] for name in REPORT_METRIC_ROWS]
        out.append(_table(headers, rows, numeric=[False, *([True] * len(levels))]))
        labels = [lv["label"] for lv in levels]

        def col(name: str) -> list[float | None]:
            return [lv["metrics"].get(name) for lv in levels]

        out.append('<div class="charts">')
        out.append(
            line_chart(
                "TTFT percentiles by level",
                labels,
                {p: col(f"{p}_ttft_ms") for p in ("p50", "p90", "p95", "p99")},
                y_label="ms",
            )
        )
        out.append(
            line_chart(
                "E2E latency percentiles by level",
                labels,
                {p: col(f"{p}_e2el_ms") for p in ("p50", "p90", "p95", "p99")},
                y_label="ms",
            )
        )
        out.append(
            line_chart(
                "Decode latency by level",
                labels,
                {"mean TPOT": col("mean_tpot_ms"), "p50 ITL": col("p50_itl_ms"), "p99 ITL": col("p99_itl_ms")},
                y_label="ms",
            )
        )
        out.append(ttft_cdf_chart(levels))
        out.append(
            line_chart(
                "Output throughput by level",
                labels,
                {"output tok/s": col("output_throughput_tok_s")},
                y_label="tok/s",
            )
        )
        out.append(
            line_chart(
                "Request throughput and goodput by level",
                labels,
                {"requests/s": col("request_throughput_req_s"), "goodput req/s": col("goodput_req_s")},
                y_label="req/s",
            )
        )
        out.append("</div>")
        errors = [(lv["label"], n, text) for lv in levels for text, n in (lv.get("errors") or {}).items()]
        if errors:
            out.append("<h2>Request errors</h2>")
            out.append(
                _table(["level", "count", "error"], ([lv, n, _mono(t)] for lv, n, t in errors), numeric=[False, True])
            )

    comparison = result.get("comparison")
    if comparison:
        out.append(
            f"<h2>Against the stable revision ({e(comparison.get('stable_url'))}): "
            f"{e(str(comparison.get('decision', '')).replace('_', ' '))}</h2>"
        )
        q = comparison.get("quality") or {}
        if q:
            out.append(
                f"<p>Correctness suite: candidate {e(q.get('candidate_passed'))}/{e(q.get('total'))}, stable "
                f"{e(q.get('stable_passed'))}/{e(q.get('total'))} (tolerance {e(fmt(q.get('tolerance')))}).</p>"
            )
        out.append(
            f'<p class="muted">{e(comparison.get("blocks"))} blocks of 4 rounds (candidate, stable, stable, '
            f"candidate; {e(comparison.get('rounds'))} rounds per side), {e(comparison.get('looks'))} looks; each "
            f"decision at {e(fmt(comparison.get('confidence')))} confidence (sign-test interval of the median block "
            "ratio candidate/stable).</p>"
        )
        out.append(
            _table(
                ["metric", "candidate", "stable", "ratio", "interval", "needed", "decision"],
                (
                    [
                        c.get("metric"),
                        c.get("candidate_value"),
                        c.get("stable_value"),
                        c.get("ratio"),
                        f"[{fmt(c.get('low'))}, {fmt(c.get('high'))}]",
                        ("<= " if c.get("better") == "lower" else ">= ") + fmt(c.get("limit")),
                        str(c.get("decision", "")).replace("_", " "),
                    ]
                    for c in comparison.get("speed") or []
                ),
                numeric=[False, True, True, True, False, False, False],
            )
        )

    base_levels = result.get("baseline_levels") or []
    if base_levels:
        baseline = result.get("baseline") or {}
        out.append(f"<h2>Recovery: the original {e(baseline.get('model'))} at {e(baseline.get('url'))}</h2>")
        headers = ["metric", *(lv["label"] for lv in base_levels)]
        rows = [[name, *(lv["metrics"].get(name) for lv in base_levels)] for name in REPORT_METRIC_ROWS]
        out.append(_table(headers, rows, numeric=[False, *([True] * len(base_levels))]))

    probes = result.get("correctness") or []
    if probes:
        passed = sum(1 for p in probes if p.get("passed"))
        out.append(f"<h2>Correctness ({passed}/{len(probes)} passed)</h2>")
        out.append(
            _table(
                ["probe", "source", "status", "expected", "completion", "finish", "failures"],
                (
                    [
                        p["name"],
                        p.get("source"),
                        _status("pass" if p.get("passed") else "fail"),
                        _mono("; ".join(p.get("expectations") or [])),
                        _mono(p.get("text")),
                        p.get("finish_reason"),
                        _mono("\n".join(p.get("failures") or [])),
                    ]
                    for p in probes
                ),
            )
        )
    agreement = result.get("agreement")
    if agreement:
        out.append(f"<h2>Token agreement with the baseline: {e(fmt(agreement.get('agreement')))}</h2>")
        out.append(f'<p class="muted">{e(agreement.get("method"))}</p>')
        out.append(
            _table(
                ["prompt", "agreement", "first divergence", "new tokens", "baseline tokens", "error"],
                (
                    [
                        r.get("prompt_index"),
                        r.get("agreement"),
                        r.get("first_divergence"),
                        r.get("new_tokens"),
                        r.get("baseline_tokens"),
                        r.get("error"),
                    ]
                    for r in agreement.get("prompts") or []
                ),
                numeric=[True, True, True, True, True, False],
            )
        )

    server = result.get("server") or {}
    if server:
        out.append("<h2>Server view (Prometheus /metrics, over the load)</h2>")
        for role, view in server.items():
            rows = []
            for name, value in view.items():
                if name in ("metric_names", "errors"):
                    continue
                if isinstance(value, dict):
                    value = ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) or "-"
                rows.append([name, value])
            out.append(f"<h3>{e(role)}</h3>")
            out.append(_table(["quantity", "value"], rows, numeric=[False, True]))
            for err in view.get("errors") or []:
                out.append(f'<p class="mono">{e(err)}</p>')
            names = view.get("metric_names") or {}
            if names:
                listed = ", ".join(f"{k} = {v}" for k, v in names.items())
                out.append(f'<p class="muted">vLLM series found: {e(listed)}</p>')

    spec = result.get("spec")
    if spec:
        out.append("<h2>Validation spec</h2>")
        out.append(f'<pre class="mono">{e(json.dumps(spec, indent=2, sort_keys=True))}</pre>')
    out.append("</body></html>")
    return "\n".join(out)


def write_reports(
    result: Mapping[str, Any], report_dir: str | Path, *, full: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Writes ``report.html``, ``validation.json`` and ``metrics.json`` into ``report_dir``.

    Args:
        result: ``ValidationResult.to_dict()`` (the report data).
        report_dir: Target directory (created).
        full: Data for ``validation.json`` when it differs from ``result`` (e.g. with every
            per-request record).

    Returns:
        ``{"html": ..., "json": ..., "metrics": ...}`` paths.
    """
    root = Path(report_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = {"html": root / "report.html", "json": root / "validation.json", "metrics": root / "metrics.json"}
    _atomic_write(paths["html"], render_html(result))
    _atomic_write(paths["json"], json.dumps(full if full is not None else result, indent=1, default=str))
    _atomic_write(paths["metrics"], json.dumps(kfp_metrics(result), indent=1, sort_keys=True))
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
