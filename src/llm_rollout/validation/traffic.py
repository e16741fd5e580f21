"""Proof that a canary step really moved traffic: each member's own vLLM request counters.

A stepped promotion raises the canary's weight and re-validates the whole service through its
address. Whether that address really splits by the weight is up to the cluster: in KServe 0.20
Standard mode a canary's ``trafficPercent`` is applied only by the HTTPRoute reconciler
(``pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go``
``applyCanaryWeights``), i.e. only with Gateway API, and ``enableGatewayApi`` defaults to false
(``config/configmap/inferenceservice.yaml``, ``ingress``). Without it the service address keeps
sending every request to the stable predictor and the gate would silently judge the stable model.

So each member's ``/metrics`` (vLLM's ``vllm:request_success_total``, all ``finished_reason``
values) is read before and after the step's validation traffic, and :func:`judge_traffic` decides
from the two counts.

The rule. With the split working, each request reaches the canary independently with probability
``p = weight / 100`` (the gateway picks a weighted backend per request), so the canary's count
``k`` among the ``n`` requests both members finished is Binomial(n, p). The step fails when the
lower tail ``P(X <= k | n, p)`` is below :data:`ALPHA` (1 in 1000): a working split sends so few
requests to the canary less than once in a thousand steps, so a small or unlucky sample cannot
fail a step. With no canary request at all the tail is ``(1 - p)^n``: at weight 10 % that takes
66 requests, at 50 % ten. Fewer requests than that cannot tell, and the proof says so (with the
number needed) instead of failing. Other clients' requests during the step are split the same way
and only add evidence; a few requests routed by the previous weights while the gateway catches up
can only lower the canary's count a little, and a weight of 100 is judged as 99
(:data:`MAX_JUDGED_WEIGHT`). A member with several replicas is scraped through its Service, so one pod's
counters are read: for the stable that can only lower ``n`` and raise the canary's observed share,
which makes the rule more cautious, never less; a canary entry has a single replica
(``builders._canary_predictor``). A counter that went down (a restarted pod, or a scrape that
reached another pod) makes the proof inconclusive for the step, never a failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from llm_rollout.validation.answers import Decision
from llm_rollout.validation.prom import COUNTERS, parse_prometheus

ALPHA = 1e-3
"""A working split fails a step less often than this (the binomial lower-tail bound)."""

MAX_JUDGED_WEIGHT = 99
"""A weight of 100 is judged as 99: a request the stable member was still finishing when the step
switched (or one the gateway routed before it took the new weights) cannot fail the step."""

REQUESTS_SERIES = COUNTERS["requests_finished"]
"""vLLM's finished-request counter across versions (``vllm:request_success_total`` first)."""

GATEWAY_API_FIX = (
    "KServe Standard mode applies canary weights only through Gateway API (httproute_reconciler.go "
    "applyCanaryWeights); with the default enableGatewayApi: false the service address sends every request to "
    'the stable predictor. Fix: set "enableGatewayApi": true in the ingress section of the inferenceservice-config '
    "ConfigMap (KServe's namespace) with a Gateway in place, check `kubectl get httproute`, then run again"
)
"""The likely cause and the fix, named in the failure message."""

TrafficDecision = Decision | Literal["skipped"]
"""The traffic proof's decision: the gate's decisions (:data:`~llm_rollout.validation.answers.Decision`),
or ``skipped`` where the members' counters are unknown or unreadable (the proof could not be asked)."""


def requests_finished(text: str) -> float | None:
    """The finished-request count in one vLLM ``/metrics`` exposition (summed over label sets).

    Args:
        text: Prometheus text.

    Returns:
        The count, or None when the exposition has no such counter (not a vLLM server).
    """
    series = parse_prometheus(text)
    for name in REQUESTS_SERIES:
        if name in series:
            return math.fsum(v for _, v in series[name])
    return None


def scrape_requests(url: str, *, timeout_s: float = 10.0, verify: bool | str = True) -> tuple[float | None, str]:
    """Reads one member's finished-request count from its ``/metrics`` URL.

    Returns:
        ``(count, "")``, or ``(None, why)`` when the scrape failed or holds no vLLM counter.
    """
    try:
        resp = httpx.get(url, timeout=timeout_s, verify=verify)
    except (httpx.HTTPError, OSError) as err:
        return None, f"{url}: {type(err).__name__}: {err}"
    if resp.status_code != 200:
        return None, f"HTTP {resp.status_code} from {url}"
    count = requests_finished(resp.text)
    if count is None:
        return None, f"{url} has no {REQUESTS_SERIES[0]} (not a vLLM server?)"
    return count, ""


def binomial_lower_tail(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)`` (summed in log space, exact for our sizes)."""
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def requests_needed(weight: int, alpha: float = ALPHA) -> int:
    """How many requests a step needs before a canary that got none of them fails (``(1-p)^n < alpha``)."""
    p = min(weight, MAX_JUDGED_WEIGHT) / 100.0
    if p <= 0.0:
        return 0
    return math.floor(math.log(alpha) / math.log1p(-p)) + 1


@dataclass
class TrafficProof:
    """What one canary step's traffic did, per member.

    Attributes:
        verdict: ``fail`` (the canary got far less than its weight: the split does not work),
            ``pass``, ``inconclusive`` (too few requests, or a counter went down) or ``skipped``
            (member counters unknown or unreadable).
        weight: The canary's traffic percent at this step.
        requests: Member -> requests it finished during the step.
        shares: Member -> its share of the requests both finished.
        tail: ``P(X <= canary's count)`` if the split worked (None when not computed).
        message: One line saying what was seen and, on failure, the likely cause and the fix.
    """

    verdict: TrafficDecision
    weight: int
    requests: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    tail: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "verdict": self.verdict,
            "weight": self.weight,
            "requests": self.requests,
            "shares": self.shares,
            "tail": self.tail,
            "message": self.message,
        }


def judge_traffic(
    before: Mapping[str, float | None],
    after: Mapping[str, float | None],
    *,
    canary: str,
    stable: str,
    weight: int,
    alpha: float = ALPHA,
) -> TrafficProof:
    """Decides whether a canary step's requests reached the canary as its weight says.

    Args:
        before: Member -> finished-request count before the step's traffic (None: unreadable).
        after: Member -> the count after it.
        canary: The canary member's name.
        stable: The stable member's name.
        weight: The canary's traffic percent at this step.
        alpha: The false-alarm bound of the rule (see the module docstring).

    Returns:
        The proof; ``fail`` only when a working split would show so few canary requests with
        probability below ``alpha``.
    """
    members = (stable, canary)
    missing = [m for m in members if before.get(m) is None or after.get(m) is None]
    if missing:
        return TrafficProof("skipped", weight, message=f"no request counters for {', '.join(missing)}")
    deltas = {m: float(after[m]) - float(before[m]) for m in members}  # type: ignore[arg-type]
    went_down = [m for m, d in deltas.items() if d < 0]
    if went_down:
        return TrafficProof(
            "inconclusive",
            weight,
            requests=deltas,
            message=f"the request counter of {', '.join(went_down)} went down (a restarted pod?): cannot tell",
        )
    n = round(sum(deltas.values()))
    k = round(deltas[canary])
    shares = {m: (d / n if n else 0.0) for m, d in deltas.items()}
    seen = (
        f"{canary} (canary, weight {weight}%) served {k} of {n} requests ({shares[canary]:.0%}), "
        f"{stable} (stable) {round(deltas[stable])}"
    )
    if weight <= 0:
        return TrafficProof("pass", weight, deltas, shares, None, f"{seen}; weight 0: nothing expected")
    tail = binomial_lower_tail(k, n, min(weight, MAX_JUDGED_WEIGHT) / 100.0)
    if tail < alpha:
        why = "no traffic reached the canary" if k == 0 else "far less traffic than its weight reached the canary"
        return TrafficProof(
            "fail",
            weight,
            deltas,
            shares,
            tail,
            f"{why}: {seen}; a working {weight}% split shows this less than once in {round(1 / alpha)} steps "
            f"(P={tail:.1e}). {GATEWAY_API_FIX}",
        )
    if k == 0:
        need = requests_needed(weight, alpha)
        return TrafficProof(
            "inconclusive",
            weight,
            deltas,
            shares,
            tail,
            f"{seen}: too few requests to tell at weight {weight}% (a canary with none of at least {need} would "
            "fail; raise validation.load.num_prompts)",
        )
    return TrafficProof("pass", weight, deltas, shares, tail, f"{seen}: traffic moves")
