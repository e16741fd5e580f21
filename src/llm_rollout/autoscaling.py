"""Autoscaling targets from evidence (``scaling.target: auto``): pure functions, no I/O.

Validation measures the capacity per replica (:mod:`llm_rollout.validation.slo` and
:mod:`llm_rollout.validation.sizing`); it reaches promotion as the verdict's typed
:class:`Capacity` (never picked out of metric names). Here that
capacity becomes the autoscaler's per-replica target (capacity x ``scaling.safety_factor``) and the
evidence recorded on the service (``llm-rollout.io/autoscaling``), and a capacity that dropped
against the stable's recorded one by more than ``scaling.max_capacity_drop`` is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from llm_rollout.errors import PermanentError
from llm_rollout.spec.serving import ScalingSpec


class Measured(BaseModel):
    """One measured capacity with its interval (ends None when it has none)."""

    model_config = ConfigDict(extra="forbid")

    value: float
    low: float | None = None
    high: float | None = None


class Capacity(BaseModel):
    """What validation measured one replica to carry, as promotion receives it (typed evidence).

    Attributes:
        request_rate: The open-loop search's highest request rate meeting the SLO (req/s).
        concurrency: The closed-loop search's highest concurrency meeting the SLO.
        per_replica_req_s: The sizing's requests/s per replica (a concurrency search alone yields it).
    """

    model_config = ConfigDict(extra="forbid")

    request_rate: Measured | None = None
    concurrency: Measured | None = None
    per_replica_req_s: float | None = None

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> Capacity:
        """Reads a stable record written before the capacity was typed (its flat key metrics)."""

        def measured(key: str, low: str, high: str) -> Measured | None:
            value = metrics.get(key)
            if not isinstance(value, int | float):
                return None
            ends = [metrics.get(k) if isinstance(metrics.get(k), int | float) else None for k in (low, high)]
            return Measured(value=float(value), low=ends[0], high=ends[1])

        per = metrics.get("sizing_capacity_per_replica_req_s")
        return cls(
            request_rate=measured(*_SOURCES["request-rate"][0]),
            concurrency=measured(*_SOURCES["concurrency"][0]),
            per_replica_req_s=float(per) if isinstance(per, int | float) else None,
        )

    def candidates(self, metric: str) -> list[tuple[str, Measured]]:
        """The measurements a target for ``metric`` can come from, preferred first, each named by its source."""
        out: list[tuple[str, Measured | None]] = []
        if metric == "request-rate":
            out.append((_SOURCES["request-rate"][0][0], self.request_rate))
            per = self.per_replica_req_s
            out.append((_SOURCES["request-rate"][1][0], Measured(value=per) if per is not None else None))
        elif metric == "concurrency":
            out.append((_SOURCES["concurrency"][0][0], self.concurrency))
        return [(source, m) for source, m in out if m is not None]


# Per metric kind: the names of (capacity, its interval's low end, high end) in the validation's
# Metrics - the evidence's recorded ``source`` and how a record written before Capacity was typed
# reads. request-rate prefers the open-loop rate search; the sizing's req/s capacity (which a
# concurrency search alone also yields) is the fallback, with no interval of its own.
_SOURCES: dict[str, list[tuple[str, str, str]]] = {
    "request-rate": [
        (
            "capacity_max_request_rate_req_s",
            "capacity_max_request_rate_low_req_s",
            "capacity_max_request_rate_high_req_s",
        ),
        ("sizing_capacity_per_replica_req_s", "", ""),
    ],
    "concurrency": [("capacity_max_concurrency", "capacity_max_concurrency_low", "capacity_max_concurrency_high")],
}


def autoscaling_evidence(
    scaling: ScalingSpec | None, capacity: Capacity | Mapping[str, Any] | None, run_id: str
) -> dict[str, Any] | None:
    """The measured per-replica target and its evidence, or None when ``target`` is not ``auto``.

    Args:
        scaling: The spec's ``scaling``.
        capacity: The validation's measured capacity (the verdict's :class:`Capacity`; flat key
            metrics of an older record are read by :meth:`Capacity.from_metrics`).
        run_id: The run that measured it (recorded).

    Returns:
        ``{"metric", "target", "capacity", "low", "high", "safety_factor", "source", "run_id"}``;
        ``target`` is ``max(1, floor(capacity x safety_factor))`` (KServe's ``scaleTarget`` is an integer).

    Raises:
        PermanentError: ``auto`` and the validation measured no capacity for the metric.
    """
    if scaling is None or scaling.target != "auto":
        return None
    if not isinstance(capacity, Capacity):
        capacity = Capacity.from_metrics(capacity or {})
    for source, m in capacity.candidates(scaling.metric):
        if m.value > 0:
            return {
                "metric": scaling.metric,
                "target": max(1, math.floor(m.value * scaling.safety_factor)),
                "capacity": m.value,
                "low": m.low,
                "high": m.high,
                "safety_factor": scaling.safety_factor,
                "source": source,
                "run_id": run_id,
            }
    wanted = " or ".join(k for k, _, _ in _SOURCES.get(scaling.metric, []))
    raise PermanentError(
        f"scaling.target is 'auto' but the validation measured no {scaling.metric} capacity ({wanted} is missing "
        "from its metrics). Fix: configure validation.slo.capacity_max_request_rate (request-rate) or "
        "capacity_max_concurrency (concurrency) so the capacity search runs, or give scaling.target a number"
    )


def with_target(scaling: ScalingSpec, target: int) -> ScalingSpec:
    """``scaling`` with the resolved per-replica target (what the builders render)."""
    return scaling.model_copy(update={"target": int(target)})


def check_capacity_drop(scaling: ScalingSpec, evidence: dict[str, Any], stable: dict[str, Any] | None) -> None:
    """Refuses a capacity that fell more than ``max_capacity_drop`` below the stable's recorded one.

    Args:
        scaling: The spec's ``scaling`` (tolerance and ``accept_capacity_drop``).
        evidence: The new revision's :func:`autoscaling_evidence`.
        stable: The stable's recorded evidence (``llm-rollout.io/autoscaling``); None on a first rollout.

    Raises:
        PermanentError: The drop exceeds the tolerance and is not accepted.
    """
    if not stable or stable.get("metric") != evidence["metric"] or scaling.accept_capacity_drop:
        return
    old = stable.get("capacity")
    if not isinstance(old, (int, float)) or old <= 0:
        return
    drop = 1.0 - evidence["capacity"] / float(old)
    if drop > scaling.max_capacity_drop:
        raise PermanentError(
            f"the measured {evidence['metric']} capacity per replica fell from {old:g} (stable, run "
            f"{stable.get('run_id', '?')}) to {evidence['capacity']:g}: a drop of {drop:.0%}, more than "
            f"scaling.max_capacity_drop {scaling.max_capacity_drop:.0%}. Fix: find why the new revision carries "
            "less (model, runtime, flags), or accept it with scaling.accept_capacity_drop: true (the target "
            "follows the lower capacity)"
        )


def describe(evidence: dict[str, Any]) -> str:
    """One line for ``llm-rollout status``."""
    interval = ""
    if evidence.get("low") is not None and evidence.get("high") is not None:
        interval = f" [{evidence['low']:g}, {evidence['high']:g}]"
    return (
        f"autoscaling: {evidence.get('metric')} target {evidence.get('target')} per replica = capacity "
        f"{evidence.get('capacity', 0):g}{interval} x safety {evidence.get('safety_factor')} "
        f"(run {evidence.get('run_id')})"
    )
