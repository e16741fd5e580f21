"""Reading Prometheus for the live analysis: which pods are whose, the query templates, bounded HTTP.

:func:`default_selector` gives one side's label matchers per serving flavour (KServe Standard,
Knative, llm-d, local) from the pod names the controllers derive; :class:`QueryTemplates` the PromQL
a measurement runs (a team overrides any); :class:`PrometheusClient` reads ``/api/v1/query`` and
``/api/v1/query_range`` with timeouts, a response size cap, a bearer token and bounded retries, and
says where and what to check when Prometheus cannot be reached. The judging is in
:mod:`llm_rollout.validation.analysis`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from llm_rollout.names import child_name
from llm_rollout.spec.analysis import StepAnalysisSpec
from llm_rollout.urls import redact_url

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""A Prometheus answer larger than this is refused (a query that selects far too many series)."""
HTTP_TIMEOUT_S = 10.0
UNREACHABLE_RETRY_S = 15.0
"""How long connection errors and 5xx answers are retried before the step fails."""

Flavor = Literal["kserve-standard", "knative", "llm-d", "local"]
FLAVORS: tuple[Flavor, ...] = ("kserve-standard", "knative", "llm-d", "local")

# Pod names as the controllers derive them; PromQL regexes are anchored at both ends.
_POD_SUFFIX = "-[a-z0-9]+-[a-z0-9]+"
"""A Deployment's pods: ``<deployment>-<replicaset hash>-<pod hash>`` (kube-controller-manager)."""


def _literal(name: str) -> str:
    """A Kubernetes name inside a PromQL regex string: ``.`` (the only regex character a DNS name has)
    escaped for RE2, its backslash doubled for the PromQL string literal."""
    return name.replace(".", "\\\\.")


def default_selector(
    flavor: Flavor, workload: str, namespace: str = "", *, pod_label: str = "pod", namespace_label: str = "namespace"
) -> str:
    """The label matchers that select one side's pods on a cluster's Prometheus.

    The pod names follow the controllers: KServe Standard runs a predictor as the Deployment
    ``<isvc>[-<predictor name>]-predictor`` (kserve ``pkg/constants/constants.go``
    ``PredictorServiceName``); Knative runs revision ``<rev>`` as the Deployment ``<rev>-deployment``
    (knative serving ``pkg/reconciler/revision/resources/names``); llm-d runs an
    LLMInferenceService's decode workload as ``kmeta.ChildName(<member>, "-kserve")`` and its prefill
    as ``...-kserve-prefill`` (kserve ``workload_single_node.go`` ``mainDeploymentName``), and vLLM's
    request metrics come from the decode pods, which the pattern selects alone. Local servers are
    scraped with ``pod=<server name>``.

    Args:
        flavor: ``kserve-standard``, ``knative``, ``llm-d`` or ``local``.
        workload: The side's predictor service name (KServe Standard), revision (Knative),
            LLMInferenceService member (llm-d) or server name (local).
        namespace: The namespace; left out of the matchers when empty.
        pod_label: The label that carries the pod name on this Prometheus (``pod`` with the
            Prometheus Operator's ServiceMonitors and PodMonitors; ``kubernetes_pod_name`` on
            older scrape configs).
        namespace_label: The label that carries the namespace.

    Returns:
        PromQL label matchers, e.g. ``namespace="team",pod=~"chat-predictor-[a-z0-9]+-[a-z0-9]+"``.
    """
    if flavor == "kserve-standard":
        pod = f'{pod_label}=~"{_literal(workload)}{_POD_SUFFIX}"'
    elif flavor == "knative":
        pod = f'{pod_label}=~"{_literal(workload)}-deployment{_POD_SUFFIX}"'
    elif flavor == "llm-d":
        pod = f'{pod_label}=~"{_literal(child_name(workload, "-kserve"))}{_POD_SUFFIX}"'
    elif flavor == "local":
        pod = f'{pod_label}="{workload}"'
    else:
        raise ValueError(f"unknown flavour {flavor!r} (one of {', '.join(FLAVORS)})")
    return f'{namespace_label}="{namespace}",{pod}' if namespace else pod


@dataclass(frozen=True)
class QueryTemplates:
    """The PromQL a measurement runs, per side; ``{selector}`` is the side's label matchers.

    The counters are read as they are (cumulative) at the window's two ends and differenced here,
    so an interval or a sub-window is exactly its own seconds (``increase()`` over a short range
    extrapolates and needs several scrapes per window); a counter that went down (a pod restarted)
    leaves that window unmeasured. A team overrides any template where its cluster names things
    differently (a relabelled pod label, a gateway's own request counter instead of vLLM's).

    Attributes:
        requests: Requests finished (the count ``min_requests`` is held against).
        errors: Requests that failed (server error responses, aborted requests).
        latency_sum: The histogram ``{series}``'s ``_sum``.
        latency_count: Its ``_count``.
        latency_quantile: Its quantile ``{q}`` over ``{window}`` (only for checks on percentiles).
    """

    requests: str = 'sum(vllm:request_success_total{{{selector},finished_reason=~"stop|length"}})'
    errors: str = (
        '(sum(http_requests_total{{{selector},status="5xx"}}) or vector(0))'
        ' + (sum(vllm:request_success_total{{{selector},finished_reason=~"abort|error"}}) or vector(0))'
    )
    latency_sum: str = "sum({series}_sum{{{selector}}})"
    latency_count: str = "sum({series}_count{{{selector}}})"
    latency_quantile: str = "histogram_quantile({q}, sum by (le) (increase({series}_bucket{{{selector}}}[{window}])))"

    def render(self, name: str, selector: str, window: str = "", **extra: Any) -> str:
        """Template ``name`` filled in."""
        return getattr(self, name).format(selector=selector, window=window, **extra)


def counter_delta(at_start: float | None, at_end: float | None) -> float | None:
    """A counter's increase between two reads: a series born inside the window started at 0; a
    counter that went down was reset (a restarted pod) and the window is unmeasured."""
    if at_end is None:
        return None
    d = at_end - (at_start or 0.0)
    return d if d >= 0 else None


def selectors_for(
    analysis: StepAnalysisSpec, flavor: Flavor, *, namespace: str, candidate: str, stable: str
) -> tuple[str, str]:
    """The (candidate, stable) label matchers: the team's templates when given (``{namespace}`` and
    ``{name}`` filled in), else :func:`default_selector` for ``flavor`` with the spec's label names."""

    def one(template: str | None, name: str) -> str:
        if template:
            return template.replace("{namespace}", namespace).replace("{name}", name)
        return default_selector(
            flavor, name, namespace, pod_label=analysis.pod_label, namespace_label=analysis.namespace_label
        )

    return one(analysis.candidate_selector, candidate), one(analysis.stable_selector, stable)


class PrometheusUnreachable(RuntimeError):
    """Prometheus did not answer within the retry window (the message names its address and the fix)."""


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (4xx: a template that is not PromQL); the message has the query."""


class PrometheusClient:
    """Bounded reads of Prometheus' HTTP API (``/api/v1/query``, ``/api/v1/query_range``).

    Every request has a timeout and a response size cap; connection errors and 5xx answers are
    retried with backoff for ``retry_s``, then :class:`PrometheusUnreachable` says where and what to
    check; a 4xx (a query Prometheus cannot parse) is :class:`PrometheusQueryError` at once.
    """

    def __init__(
        self, url: str, *, token: str = "", timeout_s: float = HTTP_TIMEOUT_S, retry_s: float = UNREACHABLE_RETRY_S
    ) -> None:
        self.url = url.rstrip("/")
        self.retry_s = retry_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers, follow_redirects=False)

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        deadline = time.monotonic() + self.retry_s
        delay, last = 0.2, ""
        while True:
            try:
                with self._http.stream("GET", f"{self.url}{path}", params=params) as resp:
                    body = bytearray()
                    for chunk in resp.iter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            raise PrometheusQueryError(
                                f"Prometheus answered more than {MAX_RESPONSE_BYTES // 2**20} MiB to "
                                f"{params.get('query')!r}: "
                                "the query selects too many series; narrow its selector"
                            )
                    if resp.status_code < 400:
                        data = json.loads(bytes(body))
                        if data.get("status") != "success":
                            raise PrometheusQueryError(f"Prometheus: {data.get('error')} in {params.get('query')!r}")
                        return data["data"]
                    if resp.status_code in (401, 403):
                        raise PrometheusUnreachable(
                            f"Prometheus at {redact_url(self.url)} refused the request ({resp.status_code}): check "
                            "validation.analysis.token_secret (a bearer token its proxy accepts)"
                        )
                    if resp.status_code < 500:
                        raise PrometheusQueryError(
                            f"Prometheus refused {params.get('query')!r} ({resp.status_code}): "
                            f"{bytes(body[:300]).decode(errors='replace')}"
                        )
                    last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
            if time.monotonic() + delay > deadline:
                raise PrometheusUnreachable(
                    f"Prometheus at {redact_url(self.url)} is unreachable ({last}) after {self.retry_s:.0f} s: check "
                    "validation.analysis.prometheus_url (the address the rollout step can reach, e.g. "
                    "http://prometheus-operated.monitoring:9090) and that Prometheus is running"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def instant(self, query: str, at: float) -> float | None:
        """The query's one value at ``at`` (None when it returns nothing or NaN)."""
        data = self._get("/api/v1/query", {"query": query, "time": f"{at:.3f}"})
        return _scalar(data)

    def range(self, query: str, start: float, end: float, step: float) -> dict[float, float]:
        """The query's values from ``start`` to ``end`` every ``step`` seconds (timestamp -> value)."""
        data = self._get(
            "/api/v1/query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        )
        out: dict[float, float] = {}
        for series in data.get("result", [])[:1]:
            for ts, value in series.get("values", []):
                v = float(value)
                if math.isfinite(v):
                    out[round(float(ts), 3)] = v
        return out


def _scalar(data: Mapping[str, Any]) -> float | None:
    result = data.get("result")
    if data.get("resultType") == "scalar" and result:
        v = float(result[1])
        return v if math.isfinite(v) else None
    if not result:
        return None
    v = float(result[0]["value"][1])
    return v if math.isfinite(v) else None
