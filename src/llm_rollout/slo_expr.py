"""SLO check expressions: the metric catalogue and the strict parser (no dependencies above ``errors``).

It sits below :mod:`llm_rollout.spec`, which parses ``validation.slo.checks`` when a spec is loaded,
and :mod:`llm_rollout.validation.slo`, which judges the parsed checks against measured metrics;
the measuring side (:mod:`llm_rollout.validation.metrics`) returns exactly the names of
:data:`METRIC_UNITS`.

A check is ``<metric> <op> <number>``, e.g. ``p95_ttft_ms <= 100`` or ``error_rate == 0``:

* ``metric`` is a name from :data:`METRIC_UNITS` (the unit is part of the name) or
  ``<stem>_ratio_vs_baseline`` - the new revision's value divided by the baseline's at the same
  level, where ``stem`` is a metric name without its unit suffix
  (``output_throughput_ratio_vs_baseline``, ``p95_ttft_ratio_vs_baseline``);
* ``op`` is one of ``<=``, ``<``, ``>=``, ``>``, ``==``, ``!=``;
* ``number`` is a plain decimal (``100``, ``0.5``, ``1e3``); no units, no ``nan``/``inf``.

Anything else is refused with :class:`SLOExpressionError`, whose message repeats the expression
with a caret under the offending column and says how to fix it.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from llm_rollout.errors import SpecError

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
"""Percentiles reported for every latency series (plus mean, median and std)."""

LATENCY_SERIES: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el")
"""Latency series, in vLLM's names: time to first token, time per output token, inter-token
latency, end-to-end latency."""

METRIC_UNITS: dict[str, str] = {
    "successful_requests": "requests",
    "failed_requests": "requests",
    "incomplete_requests": "requests",
    "sent_requests": "requests",
    "error_rate": "fraction",
    "duration_s": "s",
    "total_input_tokens": "tokens",
    "total_output_tokens": "tokens",
    "request_throughput_req_s": "req/s",
    "output_throughput_tok_s": "tok/s",
    "total_token_throughput_tok_s": "tok/s",
    "goodput_req_s": "req/s",
    "peak_output_throughput_tok_s": "tok/s",
    "peak_concurrent_requests": "requests",
    **{
        f"{stat}_{name}_ms": "ms"
        for name in LATENCY_SERIES
        for stat in ("mean", "median", "std", *(f"p{p}" for p in PERCENTILES))
    },
}
"""Every metric an SLO check may name, with its unit: exactly the names
:func:`llm_rollout.validation.metrics.calculate_metrics` returns (``tests/unit/test_metrics.py`` checks that)."""


OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
    "!=": operator.ne,
}
RATIO_SUFFIX = "_ratio_vs_baseline"
UNIT_SUFFIXES = ("_req_s", "_tok_s", "_ms", "_s")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OP_RE = re.compile(r"<=|>=|==|!=|<|>")
_NUM_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def metric_stem(name: str) -> str:
    """A metric name without its unit suffix (``output_throughput_tok_s`` -> ``output_throughput``)."""
    for suffix in UNIT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


RATIO_METRICS: dict[str, str] = {metric_stem(name) + RATIO_SUFFIX: name for name in METRIC_UNITS}
"""``<stem>_ratio_vs_baseline`` -> the metric it divides (new / baseline)."""

KNOWN_METRICS: tuple[str, ...] = (*METRIC_UNITS, *RATIO_METRICS)
"""Every metric name a check may use."""


class SLOExpressionError(SpecError):
    """An SLO check that cannot be parsed; the message points at the offending column.

    Attributes:
        expression: The check as written.
        column: 0-based column of the problem.
        width: How many characters the caret underlines.
    """

    def __init__(self, field: str, expression: str, column: int, width: int, problem: str, fix: str) -> None:
        super().__init__(field, problem, fix)
        self.expression = expression
        self.column = column
        self.width = max(1, width)
        pointer = " " * column + "^" * self.width
        message = f"{field}: {problem}\n    {expression}\n    {pointer}\nFix: {fix}"
        Exception.__init__(self, message)


@dataclass(frozen=True)
class Check:
    """One parsed SLO check.

    Attributes:
        metric: Metric name (unit in the name) or ``<stem>_ratio_vs_baseline``.
        op: Comparison operator.
        threshold: The number compared with.
        text: The check in canonical form (``p95_ttft_ms <= 100``).
        field: Where it came from (``validation.slo.checks[0]``).
    """

    metric: str
    op: str
    threshold: float
    text: str
    field: str = ""

    @property
    def baseline(self) -> bool:
        """Whether the check compares with the baseline (a ``_ratio_vs_baseline`` metric)."""
        return self.metric in RATIO_METRICS

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the check."""
        return OPS[self.op](value, self.threshold)


def _fail(field: str, text: str, column: int, width: int, problem: str, fix: str | None = None) -> SLOExpressionError:
    return SLOExpressionError(
        field,
        text,
        column,
        width,
        problem,
        fix or "write `<metric> <op> <number>`, e.g. `p95_ttft_ms <= 100` or `error_rate == 0`",
    )


def parse_check(text: str, field: str = "validation.slo.checks") -> Check:
    """Parses one check strictly.

    Args:
        text: ``<metric> <op> <number>``.
        field: Where the check came from, for the error message.

    Returns:
        The parsed check.

    Raises:
        SLOExpressionError: The expression is malformed or names an unknown metric; the message
            shows the expression with a caret under the problem.
    """
    if not isinstance(text, str):
        raise _fail(field, repr(text), 0, len(repr(text)), f"an SLO check must be a string, got {type(text).__name__}")
    pos = len(text) - len(text.lstrip())
    if pos == len(text):
        raise _fail(field, text, 0, 1, "empty SLO check")
    name = _NAME_RE.match(text, pos)
    if not name:
        raise _fail(field, text, pos, 1, "an SLO check must start with a metric name")
    metric = name.group()
    if metric not in METRIC_UNITS and metric not in RATIO_METRICS:
        close = difflib.get_close_matches(metric, KNOWN_METRICS, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise _fail(
            field,
            text,
            name.start(),
            len(metric),
            f"unknown metric {metric!r} in SLO check",
            f"{hint}metric names carry their unit, e.g. p95_ttft_ms, mean_tpot_ms, p99_e2el_ms, error_rate, "
            "output_throughput_tok_s, request_throughput_req_s, goodput_req_s, output_throughput_ratio_vs_baseline",
        )
    pos = name.end()
    while pos < len(text) and text[pos].isspace():
        pos += 1
    op = _OP_RE.match(text, pos)
    if not op:
        if text.startswith("=", pos) or text.startswith("=>", pos) or text.startswith("=<", pos):
            raise _fail(
                field,
                text,
                pos,
                2 if text[pos + 1 : pos + 2] in "<>" else 1,
                "not a comparison operator",
                "use one of <=, <, >=, >, ==, != (equality is ==)",
            )
        raise _fail(
            field, text, pos, 1, "expected a comparison operator after the metric", "use one of <=, <, >=, >, ==, !="
        )
    pos = op.end()
    while pos < len(text) and text[pos].isspace():
        pos += 1
    num = _NUM_RE.match(text, pos)
    if not num:
        raise _fail(
            field,
            text,
            pos,
            max(1, len(text) - pos),
            "expected a number after the operator",
            "write a plain number, e.g. 100 or 0.5 (the unit is part of the metric name)",
        )
    threshold = float(num.group())
    if not math.isfinite(threshold):
        raise _fail(field, text, pos, len(num.group()), "the number is not finite")
    rest = num.end()
    trail = rest
    while trail < len(text) and text[trail].isspace():
        trail += 1
    if trail != len(text):
        extra = text[trail:]
        fix = (
            "leave units out of the number: they are part of the metric name (e.g. p95_ttft_ms <= 100)"
            if (rest == trail and extra[:1].isalpha()) or extra.strip() in {"ms", "s", "%", "tok/s", "req/s"}
            else "one check per expression; list several checks as separate items"
        )
        raise _fail(field, text, trail, len(text) - trail, "unexpected text after the number", fix)
    canonical = f"{metric} {op.group()} {num.group()}"
    return Check(metric, op.group(), threshold, canonical, field)


def parse_checks(texts: Iterable[str], field: str = "validation.slo.checks") -> list[Check]:
    """Parses every check; the first bad one raises (its ``field`` has the list index).

    Args:
        texts: The checks.
        field: The list's dotted path; each check gets ``field[i]``.

    Returns:
        The parsed checks, in order.

    Raises:
        SLOExpressionError: For the first malformed check.
    """
    return [parse_check(text, f"{field}[{i}]") for i, text in enumerate(texts)]
