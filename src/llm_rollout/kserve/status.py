"""``llm-rollout status``: a service's revisions, traffic, readiness, stable record and history.

What a user would otherwise piece together with kubectl, for one service found by name (an
InferenceService, or an llm-d group through its record object and member labels).
"""

from __future__ import annotations

from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kserve.builders import (
    LABEL_REVISION,
    LABEL_RUN_ID,
    LABEL_SERVICE,
    STOP_ANNOTATION,
)
from llm_rollout.kserve.lease import lease_of
from llm_rollout.kserve.objects import _weight
from llm_rollout.kserve.records import (
    HISTORY,
    PREVIOUS_STABLE,
    STABLE,
    ServiceRef,
    _annotations,
    _find_ref,
    _json_annotation,
    _labels,
    _meta,
    _pred_name,
    record_object_name,
)
from llm_rollout.kube import (
    LLM_INFERENCE_SERVICE_CONFIGS,
    LLM_INFERENCE_SERVICES,
    KubeClient,
    condition,
)
from llm_rollout.platform import HistoryEntry, RevisionStatus, StableRecord, Status


def _conditions_summary(obj: dict[str, Any] | None) -> dict[str, Any]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    ready = condition(obj, "Ready")
    bad = [
        {"type": c.get("type"), "reason": c.get("reason", ""), "message": c.get("message", "")}
        for c in conds
        if c.get("status") != "True" and c.get("severity") != "Info"
    ]
    gen = _meta(obj).get("generation")
    observed = ((obj or {}).get("status") or {}).get("observedGeneration")
    # An InferenceService's observedGeneration is its first child's, not its own (wait.py): no
    # comparison with its generation there.
    behind = (obj or {}).get("kind") != "InferenceService" and None not in (observed, gen) and observed < gen
    return {
        "ready": bool(ready and ready.get("status") == "True") and not behind,
        "reason": (ready or {}).get("reason", "") if ready else "no Ready condition yet",
        "not_ready": bad,
        "generation": gen,
        "observed_generation": observed,
    }


def status(client: KubeClient, name: str, namespace: str) -> Status:
    """The service ``name``'s :class:`~llm_rollout.platform.Status` (its kind found on the cluster).

    Raises:
        PermanentError: No InferenceService or llm-d group of that name.
    """
    return _typed(_status_dict(client, name, namespace))


def _status_dict(client: KubeClient, name: str, namespace: str) -> dict[str, Any]:
    """What a user would otherwise piece together with kubectl, for one service.

    Returns:
        ``kind``, ``name``, ``namespace``, ``revisions`` (each: ``member``, ``role`` stable/canary,
        ``model_uri``, ``revision``, ``traffic_percent``, ``run_id``, ``ready``, ``reason``,
        ``not_ready``), ``stable`` (the promotion record), ``previous_stable``, ``lease``,
        ``history`` (newest first), ``url``, ``readiness``.

    Raises:
        PermanentError: No InferenceService or llm-d group of that name.
    """
    found = _find_ref(client, name, namespace)
    if found is None:
        members = client.list(LLM_INFERENCE_SERVICES, namespace, label_selector=f"{LABEL_SERVICE}={name}")
        if not members.get("items"):
            raise PermanentError(
                f"no InferenceService or LLMInferenceService group named {name} in namespace {namespace}. "
                "Fix: check the name and -n NAMESPACE"
            )
        ref = ServiceRef(
            "LLMInferenceService", LLM_INFERENCE_SERVICE_CONFIGS, record_object_name(name), namespace, name
        )
        holder: dict[str, Any] | None = None
    else:
        ref, holder = found
    stable_rec = _json_annotation(holder, STABLE)
    out: dict[str, Any] = {
        "kind": ref.kind,
        "name": name,
        "namespace": namespace,
        "stable": stable_rec,
        "previous_stable": _json_annotation(holder, PREVIOUS_STABLE),
        "lease": lease_of(holder),
        "history": _json_annotation(holder, HISTORY) or [],
        "revisions": [],
        "url": None,
    }
    revisions: list[dict[str, Any]] = out["revisions"]
    if ref.kind == "InferenceService":
        assert holder is not None
        body = holder.get("spec") or {}
        pred = body.get("predictor") or {}
        st = holder.get("status") or {}
        readiness = _conditions_summary(holder)
        out["url"] = st.get("url")
        out["readiness"] = readiness
        canaries = body.get("canary") or []
        knative_pct = pred.get("canaryTrafficPercent")
        canary_status = {c.get("name"): c for c in st.get("canaryStatuses") or []}
        canary_total = sum(int(c.get("trafficPercent") or 0) for c in canaries)
        if knative_pct is not None:
            traffic = ((st.get("components") or {}).get("predictor") or {}).get("traffic") or []
            prev = next((t for t in traffic if not t.get("latestRevision")), {})
            revisions.append(
                {
                    "member": (stable_rec or {}).get("member") or prev.get("revisionName") or "previous revision",
                    "role": "stable",
                    "model_uri": (stable_rec or {}).get("model_uri", ""),
                    "revision": (stable_rec or {}).get("revision", ""),
                    "traffic_percent": 100 - int(knative_pct),
                    "ready": True,
                    "reason": "",
                }
            )
        revisions.append(
            {
                "member": _pred_name(name, pred),
                "role": "canary" if knative_pct is not None else "stable",
                "model_uri": (pred.get("model") or {}).get("storageUri", ""),
                "revision": _labels(holder).get(LABEL_REVISION, "") if knative_pct is None else "",
                "run_id": (pred.get("labels") or {}).get(LABEL_RUN_ID, ""),
                "traffic_percent": int(knative_pct) if knative_pct is not None else 100 - canary_total,
                "ready": readiness["ready"],
                "reason": readiness["reason"],
            }
        )
        for entry in canaries:
            cp = entry.get("predictor") or {}
            cs = canary_status.get(cp.get("name"), {})
            revisions.append(
                {
                    "member": cp.get("name", ""),
                    "role": "canary",
                    "model_uri": (cp.get("model") or {}).get("storageUri", ""),
                    "revision": "",
                    "run_id": (cp.get("labels") or {}).get(LABEL_RUN_ID, ""),
                    "traffic_percent": int(entry.get("trafficPercent") or 0),
                    "ready": bool(cs.get("ready")),
                    "reason": "" if cs.get("ready") else "canary not ready",
                }
            )
        return out
    members = (
        client.list(LLM_INFERENCE_SERVICES, namespace, label_selector=f"{LABEL_SERVICE}={name}").get("items") or []
    )
    stable_member = (stable_rec or {}).get("member")
    active = [m for m in members if STOP_ANNOTATION not in _annotations(m)]
    total = sum(_weight(m) for m in active) or 0
    if not stable_member and active:
        stable_member = _meta(max(active, key=_weight))["name"]
    for m in members:
        mm = _meta(m)
        readiness = _conditions_summary(m)
        stopped = STOP_ANNOTATION in _annotations(m)
        w = _weight(m)
        revisions.append(
            {
                "member": mm["name"],
                "role": "stopped" if stopped else ("stable" if mm["name"] == stable_member else "canary"),
                "model_uri": ((m.get("spec") or {}).get("model") or {}).get("uri", ""),
                "revision": _labels(m).get(LABEL_REVISION, ""),
                "run_id": _labels(m).get(LABEL_RUN_ID, ""),
                "weight": w,
                "traffic_percent": 0 if stopped or not total else round(100 * w / total),
                "ready": readiness["ready"],
                "reason": readiness["reason"],
                "not_ready": readiness["not_ready"],
            }
        )
        if mm["name"] == stable_member:
            out["url"] = ((m.get("status") or {}).get("url")) or out["url"]
    return out


def _typed(d: dict[str, Any]) -> Status:
    """The status dict as the typed :class:`Status` (rows, stable record, history)."""
    fields = set(RevisionStatus.model_fields)
    revisions = [RevisionStatus(**{k: v for k, v in r.items() if k in fields}) for r in d.get("revisions") or []]
    history = [HistoryEntry.model_validate(h) for h in d.get("history") or [] if isinstance(h, dict)]
    stable, previous = (d.get(k) for k in ("stable", "previous_stable"))
    return Status(
        platform="kserve",
        kind=d["kind"],
        name=d["name"],
        namespace=d["namespace"],
        url=d.get("url"),
        revisions=revisions,
        stable=StableRecord.model_validate(stable) if isinstance(stable, dict) and stable.get("member") else None,
        previous_stable=StableRecord.model_validate(previous)
        if isinstance(previous, dict) and previous.get("member")
        else None,
        history=history,
        lease=d.get("lease"),
    )
