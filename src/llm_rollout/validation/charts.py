"""The report's inline SVG plots, and the escaping and number formatting all its HTML uses.

:func:`line_chart` (levels or rates on x, one line per series, SLO limits as horizontal lines) and
:func:`ttft_cdf_chart` (the TTFT distribution per level). No script and no external resource:
every text that comes from outside goes through :func:`e` (:func:`html.escape`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


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
        if math.isinf(value):  # a server's +Inf is shown as such (int() of it would raise)
            return "+Inf" if value > 0 else "-Inf"
        if value == int(value) and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


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
    gaps: Mapping[str, str] | None = None,
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
        gaps: Category label -> why its values are missing (``unmeasured``), written in its
            column (categories only): a missing value is said, never drawn as 0.

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
    gaps = dict(gaps or {}) if x_values is None else {}
    if not ys:
        empty = "; ".join(sorted(set(gaps.values()))) or "no data"
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">{e(empty)}</text></svg>')
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
        if label in gaps:
            parts.append(
                f'<text class="gap" x="{x:.1f}" y="{top + ph / 2:.1f}" text-anchor="middle" fill="#8a6d00">'
                f"{e(gaps[label])}</text>"
            )
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
