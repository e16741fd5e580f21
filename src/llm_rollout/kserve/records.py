"""The promotion record: what is stable and why, kept on the service's rollout object.

Every promotion and rollback is recorded with annotations on the service's rollout object
(:class:`ServiceRef`): the ``coordination.k8s.io/v1`` Lease ``<service>-rollout`` that also holds
the rollout lock (:mod:`llm_rollout.kserve.lease`), for every variant. ``llm-rollout.io/promoted-*``
say what is stable (model URI, artifact digest, run id, verdict summary, time),
``llm-rollout.io/stable`` and ``llm-rollout.io/previous-stable`` keep the stable and the previous
stable model as a :class:`~llm_rollout.platform.StableRecord` (with the full predictor/member spec,
for :func:`llm_rollout.kserve.restore.rollback_to_previous`, ``llm-rollout rollback NAME``),
``llm-rollout.io/history`` the last promotions and rollbacks as
:class:`~llm_rollout.platform.HistoryEntry` items.

Why not on the InferenceService, where versions before 0.x kept them: KServe copies every label
and annotation of an InferenceService into the predictor's pod template (``components/predictor.go``
``buildObjectMeta``), so each record write restarted the serving pods (Standard) or made a new cold
Knative revision. A record found there (or on an llm-d group's old ``LLMInferenceServiceConfig``
record object) is moved onto the Lease on first contact and removed from the old place
(:func:`llm_rollout.kserve.lease.migrate_legacy`).

Field managers. The spec is written by ``llm-rollout`` (:mod:`llm_rollout.kserve.deploy`); the record
annotations by ``llm-rollout-record``; the lease by ``llm-rollout-lease-<hash of run id>``
(:mod:`llm_rollout.kserve.lease`). Each writes only its own fields with server-side applies; the
record manager creates the Lease when no run took a lease (a deploy without a run id).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import Any

from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import ANNOTATION_PREFIX, LABEL_SERVICE, MANAGED_BY
from llm_rollout.kube import LEASES, KubeClient, Resource
from llm_rollout.names import dns_name
from llm_rollout.platform import HistoryEntry, StableRecord
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
    """The object that carries a service's lease and records: its Lease ``<service>-rollout``.

    Attributes:
        kind: What serves: ``InferenceService`` or ``LLMInferenceService``.
        res: The resource of the rollout object (``coordination.k8s.io/v1`` leases).
        name: The rollout object's name.
        namespace: Namespace.
        service: The service name.
        legacy_res: Where earlier versions kept lease and records (the InferenceService itself, or
            an llm-d group's ``LLMInferenceServiceConfig``): read once and emptied by the migration.
        legacy_name: That object's name.
    """

    kind: str
    res: Resource
    name: str
    namespace: str
    service: str
    legacy_res: Resource | None = None
    legacy_name: str = ""


def rollout_object_name(service: str) -> str:
    """Name of a service's rollout object (the Lease holding its lock and records)."""
    return dns_name(f"{service}-rollout", field="name", max_len=63)


def record_object_name(service: str) -> str:
    """Name of an llm-d service's record object of earlier versions (an ``LLMInferenceServiceConfig``)."""
    return dns_name(f"{service}-rollout", field="name", max_len=63)


def service_ref(kind: str, service: str, namespace: str, legacy_res: Resource, legacy_name: str) -> ServiceRef:
    """The rollout Lease of ``service`` (and where earlier versions kept its state)."""
    return ServiceRef(kind, LEASES, rollout_object_name(service), namespace, service, legacy_res, legacy_name)


def _skeleton(ref: ServiceRef, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """A metadata-only object for ``ref`` (with the live object's uid: it never recreates a deleted one)."""
    meta: dict[str, Any] = {
        "name": ref.name,
        "namespace": ref.namespace,
        "labels": {**MANAGED_BY, LABEL_SERVICE: ref.service},
    }
    if live is not None:
        meta["uid"] = _meta(live)["uid"]
    return {"apiVersion": ref.res.api_version, "kind": ref.res.kind, "metadata": meta}


def records_of(live: dict[str, Any] | None) -> dict[str, str]:
    """The record annotations on an object."""
    return {k: v for k, v in _annotations(live).items() if k in RECORD_KEYS}


def _write_record(client: KubeClient, ref: ServiceRef, updates: dict[str, str | None]) -> dict[str, Any] | None:
    """Sets record annotations (None removes one) with the record manager; a no-op when unchanged."""
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    current = records_of(live)
    wanted = dict(current)
    for key, value in updates.items():
        if value is None:
            wanted.pop(key, None)
        else:
            wanted[key] = value
    if wanted == current:
        return live
    body = _skeleton(ref, live)  # no Lease yet (no run took one): the record creates it
    body["metadata"]["annotations"] = wanted
    return _twin(client, RECORD_MANAGER).apply(body)


def _dump(model: StableRecord | HistoryEntry) -> dict[str, Any]:
    """A typed record as the JSON it is stored as (unset optional fields left out)."""
    return model.model_dump(mode="json", exclude_none=True)


def history_of(live: dict[str, Any] | None) -> list[HistoryEntry]:
    """The ``llm-rollout.io/history`` entries on a rollout object, newest first (unreadable ones skipped)."""
    raw = _json_annotation(live, HISTORY) or []
    out: list[HistoryEntry] = []
    for item in raw if isinstance(raw, list) else []:
        with contextlib.suppress(ValueError):
            out.append(HistoryEntry.model_validate(item))
    return out


def _history_with(live: dict[str, Any] | None, entry: HistoryEntry) -> str | None:
    """The history annotation with ``entry`` first; None when it is recorded already (a rerun)."""
    history = history_of(live)
    if any(h.same_event(entry) for h in history):
        return None
    return json.dumps([_dump(h) for h in [entry, *history][:HISTORY_LIMIT]], separators=(",", ":"))


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
    at = _iso(_now())
    current = find_stable_record(live)
    if current.get("member") == rec.member:
        return  # recorded already (a rerun)
    small: dict[str, Any] = {}
    if metrics:
        small = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
        small = dict(list(small.items())[:20])
    extra: dict[str, Any] = dict(served)
    if autoscaling:
        extra["autoscaling"] = autoscaling
    stable = StableRecord(
        member=rec.member,
        revision=rec.revision,
        model_uri=rec.model_uri,
        artifact_digest=rec.artifact_digest,
        served_model_name=rec.served_model_name,
        endpoint_url=rec.endpoint_url,
        run_id=rec.run_id or run_id,
        verdict="pass",
        summary=_one_line(summary),
        promoted_at=at,
        metrics=small,
        **extra,
    )
    prev = current or (StableRecord.model_validate(previous).model_dump(mode="json") if previous else None)
    entry = HistoryEntry(
        action="promote",
        at=at,
        member=rec.member,
        revision=rec.revision,
        model_uri=rec.model_uri,
        artifact_digest=rec.artifact_digest,
        run_id=rec.run_id or run_id,
        verdict="pass",
        summary=_one_line(summary, 200),
        previous=(prev or {}).get("member"),
    )
    updates: dict[str, str | None] = {
        PROMOTED_MEMBER: rec.member,
        PROMOTED_REVISION: rec.revision,
        PROMOTED_MODEL_URI: rec.model_uri,
        PROMOTED_DIGEST: rec.artifact_digest or "",
        PROMOTED_RUN_ID: rec.run_id or run_id,
        PROMOTED_VERDICT: _one_line(f"pass: {summary}" if summary else "pass"),
        PROMOTED_AT: at,
        STABLE: _compact(_dump(stable)),
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
    entry = HistoryEntry(
        action="rollback",
        at=_iso(_now()),
        member=rec.member,
        revision=rec.revision,
        model_uri=rec.model_uri,
        run_id=run_id or rec.run_id,
        reason=_one_line(reason, 200),
        stable=rec.stable.member if rec.stable else None,
    )
    history = _history_with(live, entry)
    if history is None:
        return
    _write_record(client, ref, {HISTORY: history, LAST_ROLLBACK: _compact(_dump(entry))})


def find_stable_record(live: dict[str, Any] | None, key: str = STABLE) -> dict[str, Any]:
    """The ``llm-rollout.io/stable`` record (or ``key``'s) on a rollout object, read through
    :class:`~llm_rollout.platform.StableRecord` ({} when there is none or it is unreadable)."""
    raw = _json_annotation(live, key)
    if not isinstance(raw, dict) or not raw.get("member"):
        return {}
    try:
        return _dump(StableRecord.model_validate(raw))
    except ValueError:
        log.warning("annotation %s is not a stable record; ignoring it", key)
        return {}


def same_model(stable: dict[str, Any] | None, model_uri: str, digest: str | None) -> bool:
    """Tells whether a stable record is this model (same storage URI and artifact digest)."""
    if not stable:
        return False
    return stable.get("model_uri") == model_uri and (stable.get("artifact_digest") or None) == (digest or None)


def _pred_name(spec_name: str, pred: dict[str, Any]) -> str:
    """The member a predictor holds (its name, or the member label of an unnamed one)."""
    return builders.predictor_member(spec_name, pred)
