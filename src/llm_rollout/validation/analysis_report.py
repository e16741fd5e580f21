"""promote-model's HTML report: each canary step's live analysis, as the validation report looks.

validate-deployment's report (:mod:`llm_rollout.validation.report`) is written before promotion,
so it cannot show what the users served by the canary got at each step. promote-model writes this
page instead (its ``analysis_report`` HTML artifact; on the local platform a file in the run's
directory, named by run-local's summary), whether the steps went on or the promotion stopped and
rolled back.

It is rendered from the steps' answers only (``StepAnalysis.to_dict()`` of
:mod:`llm_rollout.validation.analysis_steps`: each step's typed answer with its evidence, and each
attempt's measurements), so it can be re-rendered from saved data. Per step: the answer (decision,
reasons, the evidence at the last look: each ratio with its interval and what it needed, the
requests seen per side); per interval of each attempt: the requests finished per side, each
compared metric's ratio over that interval and the sequential rule's interval so far. An
unmeasured value reads ``unmeasured``, never 0. Same page rules as the validation report: no
scripts or external resources, every outside text escaped, a Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_rollout.validation.charts import e, fmt
from llm_rollout.validation.report import _CSS, VERDICT_COLORS, _atomic_write, _mono, _status, _table

ORDER = {"fail": 0, "inconclusive": 1, "pass": 2}


def steps_decision(steps: Sequence[Mapping[str, Any]]) -> str:
    """The worst step's decision (``none`` when no step was analysed)."""
    decisions = [str(s.get("decision") or (s.get("answer") or {}).get("decision")) for s in steps]
    return min(decisions, key=lambda d: ORDER.get(d, -1)) if decisions else "none"


def _num(value: Any) -> str:
    return "unmeasured" if value is None else fmt(value)


def _interval(comp: Mapping[str, Any]) -> str:
    """A comparison so far: ``0.950 [0.810, 1.100] at 97.5 %: not worse`` (or why there is none)."""
    word = str(comp.get("said") or comp.get("decision") or "")
    if comp.get("ratio") is None or comp.get("low") is None or comp.get("high") is None:
        return f"{word} ({comp.get('note') or 'no interval yet'})"
    conf = comp.get("confidence")
    at = f" at {100 * float(conf):.4g} %" if conf is not None else ""
    return f"{comp['ratio']:.3f} [{comp['low']:.3f}, {comp['high']:.3f}]{at}: {word}"


def _bounds(ev: Mapping[str, Any]) -> str:
    low, high = ev.get("low"), ev.get("high")
    return f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""


def _evidence_table(evidence: Sequence[Mapping[str, Any]]) -> str:
    return _table(
        ["evidence", "value", "interval", "confidence", "needed", "note"],
        (
            [
                ev.get("name"),
                _num(ev.get("value")),
                _bounds(ev),
                fmt(ev.get("confidence")) if ev.get("confidence") is not None else "",
                ev.get("needed") or "",
                ev.get("unmeasured") or "",
            ]
            for ev in evidence
        ),
        numeric=[False, True, False, True, False, False],
    )


def _intervals_table(measurements: Sequence[Mapping[str, Any]]) -> str:
    metrics: list[str] = []
    for m in measurements:
        metrics += [k for k in (m.get("comparisons") or {}) if k not in metrics]
    headers = ["interval", "decision", "candidate requests", "stable requests"]
    for metric in metrics:
        headers += [f"{metric} ratio", f"{metric} so far"]
    rows = []
    for m in measurements:
        requests = m.get("requests") or {}
        row: list[Any] = [m.get("index"), _status(str(m.get("decision"))),
                          _num(requests.get("candidate")), _num(requests.get("stable"))]  # fmt: skip
        for metric in metrics:
            comp = (m.get("comparisons") or {}).get(metric)
            row += [_num((m.get("ratios") or {}).get(metric)), _interval(comp) if comp else "-"]
        rows.append(row)
    numeric = [True, False, True, True] + [True, False] * len(metrics)
    return _table(headers, rows, numeric=numeric)


def _step_section(step: Mapping[str, Any]) -> list[str]:
    answer = step.get("answer") or {}
    decision = str(step.get("decision") or answer.get("decision"))
    n = step.get("step")
    out = [
        f'<h2 id="step{e(n)}">Step {e(n)} ({e(step.get("weight"))} %): '
        f'<span class="{e(decision)}">{e(answer.get("said") or decision)}</span></h2>',
        f'<p class="muted">{e(answer.get("question"))} Against {e(answer.get("against"))}; held '
        f"{e(fmt(step.get('held_s'), 3))} s, {e(len(step.get('attempts') or []))} attempt(s).</p>",
    ]
    reasons = answer.get("reasons") or []
    if reasons:
        out.append("<ul>" + "".join(f'<li class="mono">{e(r)}</li>' for r in reasons) + "</ul>")
    evidence = answer.get("evidence") or []
    if evidence:
        out.append("<p>At the last look:</p>" + _evidence_table(evidence))
    attempts = step.get("attempts") or []
    for i, attempt in enumerate(attempts, 1):
        measurements = attempt.get("measurements") or []
        title = f"Attempt {i}: {attempt.get('decision')}" if len(attempts) > 1 else "Intervals"
        out.append(f"<h3>{e(title)}</h3>")
        out.append(_intervals_table(measurements) if measurements else "<p>No interval was measured.</p>")
    return out


def render_steps_html(
    steps: Sequence[Mapping[str, Any]], *, service: str = "", member: str = "", outcome: str = ""
) -> str:
    """The page for the steps' analyses (``StepAnalysis.to_dict()`` each, in order).

    Args:
        steps: The analysed steps.
        service: The service promoted into.
        member: The candidate.
        outcome: What promote-model did, one line (promoted, or why it stopped).
    """
    decision = steps_decision(steps)
    shown = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}.get(decision, "NO STEP ANALYSED")
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<title>Live analysis {e(decision)}: {e(member)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Live analysis of the canary steps of {e(member)} in {e(service)}</h1>",
        f'<p><span class="verdict" id="verdict" style="background:{VERDICT_COLORS.get(decision, "#555")}">'
        f"{e(shown)}</span></p>",
    ]
    if outcome:
        out.append(f'<p id="outcome">{_mono(outcome)[1]}</p>')
    if not steps:
        out.append("<p>No canary step was analysed (no step of canary.steps has an analysis, or no Prometheus).</p>")
    else:
        out.append(
            _table(
                ["step", "weight %", "decision", "held s", "attempts", "candidate requests", "stable requests"],
                (
                    [
                        s.get("step"),
                        s.get("weight"),
                        _status(str(s.get("decision"))),
                        s.get("held_s"),
                        len(s.get("attempts") or []),
                        *(_num(_evidence(s, f"{side}_requests")) for side in ("candidate", "stable")),
                    ]
                    for s in steps
                ),
                numeric=[True, True, False, True, True, True, True],
            )
        )
    for step in steps:
        out += _step_section(step)
    out.append("</body></html>")
    return "".join(out)


def _evidence(step: Mapping[str, Any], name: str) -> Any:
    for ev in (step.get("answer") or {}).get("evidence") or []:
        if ev.get("name") == name:
            return ev.get("value")
    return None


def write_steps_report(
    path: str | Path, steps: Sequence[Mapping[str, Any]], *, service: str = "", member: str = "", outcome: str = ""
) -> Path:
    """Writes :func:`render_steps_html` to ``path`` (its directory created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, render_steps_html(steps, service=service, member=member, outcome=outcome))
    return target
