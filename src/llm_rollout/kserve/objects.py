"""Reading and rewriting the live serving objects during promotion and rollback.

The InferenceService as the main field manager writes it (:func:`_isvc_object`), an llm-d member
re-applied from its live spec (:func:`_llmisvc_from_live`), the route weight and canary entry of a
live object, and the readiness a promotion write must reach (:mod:`llm_rollout.kserve.wait`).
"""

from __future__ import annotations

import copy
from typing import Any

from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import (
    LABEL_REVISION,
    STOP_ANNOTATION,
    Member,
)
from llm_rollout.kserve.records import _labels, _meta
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import (
    KubeClient,
)
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec


def _isvc_object(spec: RolloutSpec, revision: str, body: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService as the main field manager writes it, with ``body`` as its spec."""
    obj = builders.inference_service(spec, Member("predictor", "", revision))
    if not revision:
        obj["metadata"]["labels"].pop(LABEL_REVISION, None)
    obj["spec"] = body
    return obj


def _llmisvc_from_live(live: dict[str, Any], *, weight: int | None = None, stop: bool = False) -> dict[str, Any]:
    meta = _meta(live)
    spec_body = copy.deepcopy(live.get("spec") or {})
    if weight is not None:
        spec_body.setdefault("router", {}).setdefault("route", {})["weight"] = weight
    out_meta: dict[str, Any] = {"name": meta["name"], "namespace": meta["namespace"], "labels": _labels(live)}
    if stop:
        out_meta["annotations"] = {STOP_ANNOTATION: "true"}
    return {"apiVersion": live["apiVersion"], "kind": live["kind"], "metadata": out_meta, "spec": spec_body}


def _member_of(rec: DeploymentRecord, traffic: int = 0) -> Member:
    return Member(rec.member, rec.model_uri, rec.revision, traffic, run_id=rec.run_id)


def _weight(obj: dict[str, Any] | None) -> int:
    return int(((((obj or {}).get("spec") or {}).get("router") or {}).get("route") or {}).get("weight") or 0)


def _canary_entry(live: dict[str, Any], member: str) -> dict[str, Any] | None:
    for entry in (live.get("spec") or {}).get("canary") or []:
        if (entry.get("predictor") or {}).get("name") == member:
            return entry
    return None


def _wait(
    client: KubeClient, spec: RolloutSpec, name: str, readiness: Readiness, timeout_s: float | None
) -> dict[str, Any]:
    return wait_ready(
        client, name, spec.namespace, readiness, timeout_s=timeout_s or spec.validation.readiness_timeout_s
    )


def _isvc_readiness(
    spec: RolloutSpec, applied: dict[str, Any], canary: str | None = None, gone: str | None = None
) -> Readiness:
    """What the status must show after a promotion write (see llm_rollout.kserve.wait: freshness is read
    from what the controller writes for this change, not from observedGeneration)."""
    gen = _meta(applied).get("generation")
    if spec.deployment_mode == "Knative":
        pct = ((applied.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
        return Readiness.inference_service(
            knative_canary=pct is not None, knative_percent=100 if pct is None else int(pct), min_generation=gen
        )
    traffic = None
    if canary:
        entry = _canary_entry(applied, canary) or {}
        traffic = int(entry.get("trafficPercent") or 0)
    return Readiness.inference_service(canary=canary, canary_traffic=traffic, gone_canary=gone, min_generation=gen)
