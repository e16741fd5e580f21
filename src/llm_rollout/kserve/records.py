"""The promotion record: what is stable and why, kept in annotations on the service object.

Every promotion and rollback is recorded with annotations on the *service object*
(:class:`ServiceRef`): the InferenceService itself, or for llm-d (whose members come and go) an
``LLMInferenceServiceConfig`` ``<service>-rollout`` that no member references and that only carries
annotations. ``llm-rollout.io/promoted-*`` say what is stable (model URI, artifact digest, run id,
verdict summary, time), ``llm-rollout.io/stable`` and ``llm-rollout.io/previous-stable`` keep the
full predictor/member spec of the stable and the previous stable model (for
:func:`llm_rollout.kserve.restore.rollback_to_previous`, ``llm-rollout rollback NAME``),
``llm-rollout.io/history`` the last promotions and rollbacks.

Field managers. The spec is written by ``llm-rollout`` (:mod:`llm_rollout.kserve.deploy`); the record
annotations by ``llm-rollout-record``; the lease by ``llm-rollout-lease-<hash of run id>``
(:mod:`llm_rollout.kserve.lease`). Each writes only its own fields with metadata-only server-side
applies that carry the object's ``uid`` (so they never create an object that was deleted meanwhile).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import Any

from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import ANNOTATION_PREFIX, LABEL_SERVICE, MANAGED_BY
from llm_rollout.kube import KubeClient, Resource
from llm_rollout.names import dns_name
from llm_rollout.record import DeploymentRecord

log = logging.getLogger(__name__)

RECORD_MANAGER = "llm-rollout-record"
"""Field manager of the record annotations."""


HISTORY_LIMIT = 20
"""Entries kept in ``llm-rollout.io/history`` (newest first)."""


SUMMARY_LIMIT = 500


PROMOTED_MEMBER = f"{ANNOTATION_PREFIX}promoted-member"


PROMOTED_REVISION = f"{ANNOTATION_PREFIX}promoted-revision"


PROMOTED_MODEL_URI = f"{ANNOTATION_PREFIX}promoted-model-uri"


PROMOTED_DIGEST = f"{ANNOTATION_PREFIX}promoted-artifact-digest"


PROMOTED_RUN_ID = f"{ANNOTATION_PREFIX}promoted-run-id"


PROMOTED_VERDICT = f"{ANNOTATION_PREFIX}promoted-verdict"


PROMOTED_AT = f"{ANNOTATION_PREFIX}promoted-at"


STABLE = f"{ANNOTATION_PREFIX}stable"


PREVIOUS_STABLE = f"{ANNOTATION_PREFIX}previous-stable"


HISTORY = f"{ANNOTATION_PREFIX}history"


LAST_ROLLBACK = f"{ANNOTATION_PREFIX}last-rollback"


AUTOSCALING = f"{ANNOTATION_PREFIX}autoscaling"
"""The evidence behind a ``scaling.target: auto`` target (JSON: metric, target, capacity, low, high,
safety_factor, source, run_id), written at promotion (:mod:`llm_rollout.autoscaling`)."""


RECORD_KEYS = (
    PROMOTED_MEMBER,
    PROMOTED_REVISION,
    PROMOTED_MODEL_URI,
    PROMOTED_DIGEST,
    PROMOTED_RUN_ID,
    PROMOTED_VERDICT,
    PROMOTED_AT,
    STABLE,
    PREVIOUS_STABLE,
    HISTORY,
    LAST_ROLLBACK,
    AUTOSCALING,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _twin(client: KubeClient, manager: str) -> KubeClient:
    """The same client (connection, audit, retries) writing as another field manager."""
    twin = copy.copy(client)
    twin.field_manager = manager
    return twin


def _meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("metadata") or {}


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(_meta(obj).get("annotations") or {})


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def _json_annotation(obj: dict[str, Any] | None, key: str) -> Any:
    raw = _annotations(obj).get(key)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        log.warning("annotation %s is not JSON; ignoring it", key)
        return None


def _one_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclasses.dataclass(frozen=True)
class ServiceRef:
    """The object that carries a service's lease and records.

    Attributes:
        kind: What serves: ``InferenceService`` or ``LLMInferenceService``.
        res: The resource of the record object.
        name: The record object's name.
        namespace: Namespace.
        service: The service name.
        lease_creates: The record object is only a record (llm-d's ``LLMInferenceServiceConfig``):
            taking the lease creates it. Otherwise it is the serving object, which deploy creates.
    """

    kind: str
    res: Resource
    name: str
    namespace: str
    service: str
    lease_creates: bool = False


def record_object_name(service: str) -> str:
    """Name of an llm-d service's record object (an ``LLMInferenceServiceConfig``)."""
    return dns_name(f"{service}-rollout", field="name", max_len=63)


def _skeleton(ref: ServiceRef, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """A metadata-only object for ``ref`` (with the live object's uid: it never creates one)."""
    meta: dict[str, Any] = {
        "name": ref.name,
        "namespace": ref.namespace,
        "labels": {**MANAGED_BY, LABEL_SERVICE: ref.service},
    }
    if live is not None:
        meta["uid"] = _meta(live)["uid"]
    return {"apiVersion": ref.res.api_version, "kind": ref.res.kind, "metadata": meta}


def _write_record(client: KubeClient, ref: ServiceRef, updates: dict[str, str | None]) -> dict[str, Any] | None:
    """Sets record annotations (None removes one) with the record manager; a no-op when unchanged."""
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    if live is None:
        return None
    current = {k: v for k, v in _annotations(live).items() if k in RECORD_KEYS}
    wanted = dict(current)
    for key, value in updates.items():
        if value is None:
            wanted.pop(key, None)
        else:
            wanted[key] = value
    if wanted == current:
        return live
    body = _skeleton(ref, live)
    body["metadata"]["annotations"] = wanted
    return _twin(client, RECORD_MANAGER).apply(body)


def _history_with(live: dict[str, Any] | None, entry: dict[str, Any]) -> str | None:
    history = _json_annotation(live, HISTORY) or []
    if not isinstance(history, list):
        history = []
    key = (entry.get("action"), entry.get("member"), entry.get("run_id"))
    if any((h.get("action"), h.get("member"), h.get("run_id")) == key for h in history if isinstance(h, dict)):
        return None
    return json.dumps([entry, *history][:HISTORY_LIMIT], separators=(",", ":"))


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _record_promotion(
    client: KubeClient,
    ref: ServiceRef,
    rec: DeploymentRecord,
    *,
    run_id: str,
    summary: str,
    metrics: dict[str, Any] | None,
    served: dict[str, Any],
    previous: dict[str, Any] | None,
    autoscaling: dict[str, Any] | None = None,
) -> None:
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    if live is None:
        return
    at = _iso(_now())
    current = _json_annotation(live, STABLE)
    if isinstance(current, dict) and current.get("member") == rec.member:
        return  # recorded already (a rerun)
    # What both the stable record and its history entry say about the promoted revision.
    promoted = {
        "member": rec.member,
        "revision": rec.revision,
        "model_uri": rec.model_uri,
        "artifact_digest": rec.artifact_digest,
        "run_id": rec.run_id or run_id,
        "verdict": "pass",
    }
    stable = {
        **promoted,
        "summary": _one_line(summary),
        "promoted_at": at,
        "endpoint_url": rec.endpoint_url,
        "served_model_name": rec.served_model_name,
        **served,
    }
    if metrics:
        small = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
        stable["metrics"] = dict(list(small.items())[:20])
    if autoscaling:
        stable["autoscaling"] = autoscaling
    prev = current if isinstance(current, dict) else previous
    entry = {
        "action": "promote",
        "at": at,
        **promoted,
        "summary": _one_line(summary, 200),
        "previous": (prev or {}).get("member"),
    }
    updates: dict[str, str | None] = {
        PROMOTED_MEMBER: rec.member,
        PROMOTED_REVISION: rec.revision,
        PROMOTED_MODEL_URI: rec.model_uri,
        PROMOTED_DIGEST: rec.artifact_digest or "",
        PROMOTED_RUN_ID: rec.run_id or run_id,
        PROMOTED_VERDICT: _one_line(f"pass: {summary}" if summary else "pass"),
        PROMOTED_AT: at,
        STABLE: _compact(stable),
        PREVIOUS_STABLE: _compact(prev) if prev else None,
        # The annotation describes the stable's target: gone when it was not set from evidence.
        AUTOSCALING: _compact(autoscaling) if autoscaling else None,
    }
    history = _history_with(live, entry)
    if history is not None:
        updates[HISTORY] = history
    _write_record(client, ref, updates)


def _record_rollback(client: KubeClient, ref: ServiceRef, rec: DeploymentRecord, reason: str, run_id: str) -> None:
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    if live is None:
        return
    entry = {
        "action": "rollback",
        "at": _iso(_now()),
        "member": rec.member,
        "revision": rec.revision,
        "model_uri": rec.model_uri,
        "run_id": run_id or rec.run_id,
        "reason": _one_line(reason, 200),
        "stable": rec.stable.member if rec.stable else None,
    }
    history = _history_with(live, entry)
    if history is None:
        return
    _write_record(client, ref, {HISTORY: history, LAST_ROLLBACK: _compact(entry)})


def find_stable_record(live: dict[str, Any] | None) -> dict[str, Any]:
    """The ``llm-rollout.io/stable`` record on a live object ({} when there is none)."""
    stable = _json_annotation(live, STABLE)
    return stable if isinstance(stable, dict) else {}


def same_model(stable: dict[str, Any] | None, model_uri: str, digest: str | None) -> bool:
    """Tells whether a stable record is this model (same storage URI and artifact digest)."""
    if not stable:
        return False
    return stable.get("model_uri") == model_uri and (stable.get("artifact_digest") or None) == (digest or None)


def _pred_name(spec_name: str, pred: dict[str, Any]) -> str:
    """The member a predictor holds (its name, or the member label of an unnamed one)."""
    return builders.predictor_member(spec_name, pred)
