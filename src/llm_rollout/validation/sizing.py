"""Sizing from evidence: replicas and GPUs for a stated peak, from the measured capacity per replica.

The validator measures one replica (the endpoint it is given). With ``scaling.expected_peak_rps``
and a capacity search (``validation.slo.capacity_max_concurrency`` or ``capacity_max_request_rate``),
it computes:

* replicas needed = ceil(peak / capacity rps per replica), from the capacity the search settled
  (the highest load that met every check on every measurement, the conservative end of its
  interval); the range ceil(peak / high) .. ceil(peak / low) shows what the interval allows;
* GPUs = replicas x GPUs per replica (``resources.gpus``; for llm-d the decode role's
  ``gpus_per_pod() x nodes``);
* a failed check naming ``scaling.max_replicas`` when the replicas needed exceed it (the spec
  cannot refuse it at parse time: the capacity is known only after the measurement).

The capacity in requests/s comes from the open-loop search when it ran
(``capacity_max_request_rate``); otherwise from the closed-loop search: the request throughput
measured at the capacity concurrency (Little's law: what that many concurrent users got through).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from llm_rollout.spec import RolloutSpec, ScalingSpec


@dataclass(frozen=True)
class SizingInput:
    """What the rollout spec says about scale (see :func:`sizing_input`).

    Attributes:
        expected_peak_rps: The peak request rate to carry (requests/s).
        max_replicas: The autoscaler's upper bound.
        gpus_per_replica: GPUs one replica requests.
        field: Where ``max_replicas`` lives in the spec (``scaling`` or ``llmd.decode.scaling``).
    """

    expected_peak_rps: float
    max_replicas: int
    gpus_per_replica: int
    field: str = "scaling"


@dataclass(frozen=True)
class Sizing:
    """The sizing for a peak from one replica's capacity.

    Attributes:
        expected_peak_rps: The peak (requests/s).
        capacity_rps: Requests/s one replica carries within the SLO (the settled capacity).
        capacity_rps_low: The interval's low end (requests/s).
        capacity_rps_high: The interval's high end (requests/s).
        source: How the capacity in requests/s was found.
        replicas_needed: ceil(peak / capacity_rps); 0 when the capacity is 0 (no count suffices).
        replicas_range: (ceil(peak / high), ceil(peak / low)): what the interval allows.
        gpus_per_replica: GPUs per replica.
        gpus_needed: replicas_needed x gpus_per_replica.
        max_replicas: The spec's upper bound.
        field: The spec field of ``max_replicas``.
        fits: ``max_replicas`` carries the peak.
        reason: Why not (a failed check's text), None when it fits.
    """

    expected_peak_rps: float
    capacity_rps: float
    capacity_rps_low: float
    capacity_rps_high: float
    source: str
    replicas_needed: int
    replicas_range: tuple[int, int]
    gpus_per_replica: int
    gpus_needed: int
    max_replicas: int
    field: str
    fits: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)


def sizing_input(spec: RolloutSpec) -> SizingInput | None:
    """The sizing inputs of a rollout spec, None when no peak is stated.

    The InferenceService path uses ``scaling`` and ``resources.gpus``; llm-d uses the decode
    role's own ``scaling`` when set (else the top-level one) and its GPUs per replica
    (``gpus_per_pod() x nodes``), since decode carries the requests.
    """
    scaling: ScalingSpec | None = spec.scaling
    field = "scaling"
    gpus = spec.resources.gpus
    if spec.llmd.enabled:
        decode = spec.llmd.decode
        gpus = decode.gpus_per_pod() * decode.nodes
        if decode.scaling is not None:
            scaling, field = decode.scaling, "llmd.decode.scaling"
    if scaling is None or scaling.expected_peak_rps is None:
        return None
    return SizingInput(scaling.expected_peak_rps, scaling.max_replicas, gpus, field)


def _ceil(peak: float, capacity: float) -> int:
    # A tiny tolerance so that peak == k * capacity (up to float noise) needs k replicas, not k + 1.
    return max(1, math.ceil(peak / capacity - 1e-9))


def size(
    inp: SizingInput,
    capacity_rps: float,
    *,
    low: float | None = None,
    high: float | None = None,
    source: str = "",
) -> Sizing:
    """Replicas and GPUs for ``inp.expected_peak_rps`` from one replica's capacity.

    Args:
        inp: The spec's peak, bound and GPUs per replica.
        capacity_rps: Requests/s one replica carries within the SLO (the conservative estimate).
        low: The capacity interval's low end (default ``capacity_rps``).
        high: Its high end (default ``capacity_rps``).
        source: How the capacity was found (shown in the report).

    Returns:
        The sizing, with ``fits`` False and the reason when ``max_replicas`` cannot carry the peak.
    """
    low = capacity_rps if low is None else low
    high = capacity_rps if high is None else max(high, capacity_rps)
    peak = inp.expected_peak_rps
    where = f"{inp.field}.max_replicas"
    if capacity_rps <= 0:
        reason = (
            f"sizing: {where}: no load met the SLO on one replica, so no replica count carries "
            f"{inp.field}.expected_peak_rps {peak:g} req/s. Fix: make the revision meet validation.slo.checks "
            "at the lowest load first"
        )
        return Sizing(
            peak, 0.0, 0.0, high, source, 0, (0, 0), inp.gpus_per_replica, 0, inp.max_replicas, inp.field, False, reason
        )
    needed = _ceil(peak, capacity_rps)
    span = (_ceil(peak, high), _ceil(peak, low) if low > 0 else needed)
    fits = needed <= inp.max_replicas
    reason = None
    if not fits:
        reason = (
            f"sizing: {where} {inp.max_replicas} carries {inp.max_replicas} x {capacity_rps:.3g} = "
            f"{inp.max_replicas * capacity_rps:.3g} req/s, below {inp.field}.expected_peak_rps {peak:g}: the peak "
            f"needs {needed} replicas ({needed * inp.gpus_per_replica} GPUs; one replica carries {capacity_rps:.3g} "
            f"req/s within the SLO{', ' + source if source else ''}). Fix: raise {where} to {needed}, or lower "
            f"{inp.field}.expected_peak_rps to {inp.max_replicas * capacity_rps:.3g} or less"
        )
    return Sizing(
        peak,
        capacity_rps,
        low,
        high,
        source,
        needed,
        span,
        inp.gpus_per_replica,
        needed * inp.gpus_per_replica,
        inp.max_replicas,
        inp.field,
        fits,
        reason,
    )
