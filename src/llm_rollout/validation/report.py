"""Outputs of a validation: flat KFP metrics, a self-contained HTML report and the full JSON.

Everything here works on the result's plain data (``ValidationResult.to_dict()``), so a report can
be re-rendered from a saved ``validation.json``.

The answers are the gate's own (``answers``: each question's typed answer with its evidence,
:mod:`llm_rollout.validation.answers`), the KFP metrics come from
:mod:`llm_rollout.validation.summary` and the plots from :mod:`llm_rollout.validation.charts`;
this module renders the page and writes the three files (:func:`write_reports`). A metric the
client could not measure (TPOT and ITL when the streams arrived in one piece) reads
``unmeasured`` in the load table and the charts, never 0.

The HTML report has no external resource at all (no scripts, no stylesheets, no fonts): tables
and inline SVG plots only, so it renders the same in the KFP UI's sandboxed iframe and in an
offline browser. Every piece of text that comes from outside - model completions, prompts,
server error bodies, model and metric names - goes through :func:`html.escape`, and the page
carries a Content-Security-Policy that forbids scripts as a second line of defence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_rollout.validation.charts import e, fmt, line_chart, ttft_cdf_chart
from llm_rollout.validation.summary import kfp_metrics

VERDICT_COLORS = {"pass": "#1b7f3b", "fail": "#b3261e", "inconclusive": "#8a6d00"}


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


def _level_cell(level: Mapping[str, Any], name: str) -> Any:
    """A load table cell: the value, or ``unmeasured`` where the client could not see the series."""
    value = level["metrics"].get(name)
    if value is None and name.endswith("_ms") and name.split("_")[-2] in (level.get("unmeasured") or {}):
        return "unmeasured"
    return value


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


def quality_section(quality: Mapping[str, Any] | None) -> list[str]:
    """The quality question's evidence: bits per byte per side, the floor, the paired interval, per text.

    Args:
        quality: ``QualityResult.to_dict()`` (None: not asked).

    Returns:
        HTML fragments (empty when the question was not asked).
    """
    if not quality:
        return []
    decision = str(quality.get("said") or quality.get("decision", ""))
    against = quality.get("stable_url") or "uniform guessing (no stable revision)"
    out = [f'<h2 id="quality">Quality: likelihood of the reference texts, against {e(against)}: {e(decision)}</h2>']
    out.append(
        f'<p class="muted">{e(quality.get("texts_scored"))} of {e(quality.get("texts_available"))} texts from '
        f"{e(quality.get('source'))}, each scored in one prefill per side (echoed prompt logprobs), in bits per "
        f"byte of UTF-8 text. {e(quality.get('note') or '')}</p>"
    )
    comp = quality.get("comparison") or {}
    rows = [
        ["candidate bits per byte", quality.get("candidate_bpb")],
        ["stable bits per byte", quality.get("stable_bpb")],
        [
            f"uniform guessing over {fmt(quality.get('vocab_size'))} tokens ({quality.get('vocab_source')})",
            quality.get("uniform_bpb"),
        ],
        ["median per-text difference (candidate - stable)", comp.get("ratio")],
        ["interval", f"[{fmt(comp.get('low'))}, {fmt(comp.get('high'))}] at {fmt(quality.get('confidence'))}"],
        ["margin (validation.quality.margin)", quality.get("margin")],
        ["looks", quality.get("looks")],
    ]
    out.append(_table(["quantity", "value"], rows, numeric=[False, True]))
    texts = quality.get("rows") or []
    if texts:
        out.append(
            _table(
                ["text", "bytes", "candidate bpb", "stable bpb", "difference", "error"],
                (
                    [r.get("index"), r.get("bytes"), r.get("candidate_bpb"), r.get("stable_bpb"), r.get("difference"),
                     _mono(r.get("error") or "")]
                    for r in texts
                ),
                numeric=[True, True, True, True, True, False],
            )
        )  # fmt: skip
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

    questions = [a for a in (result.get("answers") or []) if a.get("summarized", True)]
    if questions:
        # Each question with its own evidence, side by side: never one mixed list of checks.
        out.append('<h2>The gate\'s questions</h2><div id="questions">')
        out.append(
            _table(
                ["question", "against", "answer", "evidence"],
                (
                    [
                        q.get("question") or q["key"],
                        _mono(q.get("against", "")),
                        ("html", f'<span class="{e(q["decision"])}">{e(q.get("said") or q["decision"])}</span>'),
                        ("html", "<br>".join(f'<span class="mono">{e(line)}</span>' for line in q.get("lines") or [])),
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
                    [
                        c["level"],
                        _mono(c["check"]),
                        "unmeasured" if c.get("measured") is None else c["measured"],
                        _status(c["status"]),
                        c.get("note", ""),
                    ]
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
        rows = [[name, *(_level_cell(lv, name) for lv in levels)] for name in REPORT_METRIC_ROWS]
        out.append(_table(headers, rows, numeric=[False, *([True] * len(levels))]))
        labels = [lv["label"] for lv in levels]

        def col(name: str) -> list[float | None]:
            return [lv["metrics"].get(name) for lv in levels]

        out.append('<div class="charts">')
        for title, series in (("TTFT percentiles by level", "ttft"), ("E2E latency percentiles by level", "e2el")):
            percentiles = {p: col(f"{p}_{series}_ms") for p in ("p50", "p90", "p95", "p99")}
            out.append(line_chart(title, labels, percentiles, y_label="ms"))
        out.append(
            line_chart(
                "Decode latency by level",
                labels,
                {"mean TPOT": col("mean_tpot_ms"), "p50 ITL": col("p50_itl_ms"), "p99 ITL": col("p99_itl_ms")},
                y_label="ms",
                gaps={lv["label"]: "unmeasured" for lv in levels if lv.get("unmeasured")},
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
            f"{e(str(comparison.get('said') or comparison.get('decision', '')))}</h2>"
        )
        q = comparison.get("quality") or {}
        if q:
            out.append(
                f"<p>Correctness suite: candidate {e(q.get('candidate_passed'))}/{e(q.get('total'))}, stable "
                f"{e(q.get('stable_passed'))}/{e(q.get('total'))} (tolerance {e(fmt(q.get('tolerance')))}).</p>"
            )
        last = (comparison.get("speed") or [{}])[0]  # the last look's comparisons carry its confidence and rule
        how = (
            "sign-test interval of the median block ratio"
            if last.get("rule") == "sign"
            else "15 %-trimmed-mean t interval of the block ratios"
        )
        out.append(
            f'<p class="muted">{e(comparison.get("blocks"))} blocks of 4 rounds (candidate, stable, stable, '
            f"candidate; {e(comparison.get('rounds'))} rounds per side), {e(comparison.get('looks'))} looks; the "
            f"last at {e(fmt(last.get('confidence', comparison.get('confidence'))))} confidence ({e(how)} "
            "candidate/stable).</p>"
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
                        str(c.get("said") or c.get("decision", "")),
                    ]
                    for c in comparison.get("speed") or []
                ),
                numeric=[False, True, True, True, False, False, False],
            )
        )

    out.extend(quality_section(result.get("quality")))

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
