"""``llm-rollout rollback NAME``: puts the previous stable model back from its promotion record."""

from __future__ import annotations

import copy
import logging
from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import (
    LABEL_REVISION,
)
from llm_rollout.kserve.lease import LeaseHeld, lease_of
from llm_rollout.kserve.objects import _llmisvc_from_live, _weight
from llm_rollout.kserve.records import (
    HISTORY,
    LAST_ROLLBACK,
    PREVIOUS_STABLE,
    PROMOTED_AT,
    PROMOTED_DIGEST,
    PROMOTED_MEMBER,
    PROMOTED_MODEL_URI,
    PROMOTED_REVISION,
    PROMOTED_RUN_ID,
    PROMOTED_VERDICT,
    STABLE,
    _annotations,
    _compact,
    _find_ref,
    _history_with,
    _iso,
    _json_annotation,
    _labels,
    _meta,
    _now,
    _write_record,
)
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import (
    LLM_INFERENCE_SERVICES,
    KubeClient,
)

log = logging.getLogger(__name__)


def rollback_to_previous(
    client: KubeClient, name: str, namespace: str, *, run_id: str = "", timeout_s: float = 900.0
) -> dict[str, Any]:
    """Puts the previous stable model back (``llm-rollout rollback NAME``).

    Uses the ``llm-rollout.io/previous-stable`` record: InferenceService: its predictor becomes
    ``spec.predictor`` again (canaries removed); llm-d: its member is applied again (or restarted
    if it was stopped) at the current stable's weight, and the current stable member is deleted
    once the restored one is ready. The records swap, so running it again goes forward again.

    Args:
        client: The kube client.
        name: The service name.
        namespace: Namespace.
        run_id: Recorded with the rollback (e.g. ``manual-<user>``).
        timeout_s: Bound on waiting for the restored revision.

    Returns:
        ``{"action": "rollback" | "none", "message", "member", "previous"}``.

    Raises:
        PermanentError: No such service, no previous stable model recorded, or a run holds the lease.
    """
    found = _find_ref(client, name, namespace)
    if found is None:
        raise PermanentError(f"no InferenceService or llm-d group named {name} in namespace {namespace}")
    ref, holder = found
    lease = lease_of(holder)
    if lease and not lease["expired"]:
        raise LeaseHeld(
            f"{name}: run {lease['holder']} is rolling out right now (lease until {lease['expires']}); "
            "Fix: wait for it to finish, then roll back",
            holder=lease["holder"],
            expires=lease["expires"],
        )
    prev = _json_annotation(holder, PREVIOUS_STABLE)
    current = _json_annotation(holder, STABLE) or {}
    if not isinstance(prev, dict) or not prev.get("member"):
        raise PermanentError(
            f"{name}: no previous stable model is recorded (only promotions by llm-rollout are); "
            "nothing to roll back to"
        )
    if ref.kind == "InferenceService":
        pred = prev.get("predictor")
        if not pred:
            raise PermanentError(f"{name}: the previous stable record has no predictor to restore")
        body = {k: v for k, v in (holder.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = copy.deepcopy(pred)
        labels = {**_labels(holder), LABEL_REVISION: prev.get("revision") or ""}
        if not labels[LABEL_REVISION]:
            labels.pop(LABEL_REVISION)
        annotations = {k: v for k, v in _annotations(holder).items() if k.startswith("serving.kserve.io/")}
        obj = {
            "apiVersion": holder["apiVersion"],
            "kind": holder["kind"],
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
            "spec": body,
        }
        applied = client.apply(obj)
        wait_ready(
            client,
            name,
            namespace,
            Readiness.inference_service(min_generation=_meta(applied).get("generation")),
            timeout_s=timeout_s,
        )
    else:
        member_spec = prev.get("member_spec")
        if not member_spec:
            raise PermanentError(f"{name}: the previous stable record has no member spec to restore")
        cur_live = client.get_or_none(LLM_INFERENCE_SERVICES, current.get("member", ""), namespace)
        weight = _weight(cur_live) or 100
        body = copy.deepcopy(member_spec)
        body.setdefault("router", {}).setdefault("route", {})["weight"] = weight
        obj = {
            "apiVersion": builders.LLMISVC_API,
            "kind": "LLMInferenceService",
            "metadata": {"name": prev["member"], "namespace": namespace, "labels": prev.get("labels") or {}},
            "spec": body,
        }
        applied = client.apply(obj)
        wait_ready(
            client,
            prev["member"],
            namespace,
            Readiness.llm_inference_service(prefill="prefill" in body, min_generation=_meta(applied).get("generation")),
            timeout_s=timeout_s,
        )
        if cur_live is not None and current.get("member") != prev["member"]:
            client.apply(_llmisvc_from_live(cur_live, weight=0))
            client.delete(LLM_INFERENCE_SERVICES, current["member"], namespace)
    at = _iso(_now())
    restored = {
        **prev,
        "promoted_at": at,
        "run_id": run_id or prev.get("run_id", ""),
        "summary": "restored by rollback",
    }
    entry = {
        "action": "rollback",
        "at": at,
        "member": current.get("member"),
        "revision": current.get("revision"),
        "model_uri": current.get("model_uri"),
        "run_id": run_id,
        "reason": f"manual rollback to {prev['member']}",
        "stable": prev["member"],
    }
    live = client.get_or_none(ref.res, ref.name, namespace)
    history = _history_with(live, entry)
    updates: dict[str, str | None] = {
        PROMOTED_MEMBER: prev["member"],
        PROMOTED_REVISION: prev.get("revision") or "",
        PROMOTED_MODEL_URI: prev.get("model_uri") or "",
        PROMOTED_DIGEST: prev.get("artifact_digest") or "",
        PROMOTED_RUN_ID: restored["run_id"],
        PROMOTED_VERDICT: "restored by rollback",
        PROMOTED_AT: at,
        STABLE: _compact(restored),
        PREVIOUS_STABLE: _compact(current) if current else None,
        LAST_ROLLBACK: _compact(entry),
    }
    if history is not None:
        updates[HISTORY] = history
    _write_record(client, ref, updates)
    message = f"rolled {name} back to {prev['member']} ({prev.get('model_uri')}); {current.get('member')} retired"
    log.info(message)
    return {"action": "rollback", "message": message, "member": prev["member"], "previous": current.get("member")}
