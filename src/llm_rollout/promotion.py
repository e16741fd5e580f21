"""Promotion and rollback on the ``kserve`` platform, the run's exit handler and the rollout lease.

What each outcome does to the cluster:

* :func:`promote` (verdict ``pass`` only). InferenceService, Standard mode: the canary entry's
  predictor (name included, so KServe keeps its Deployment and pods) becomes ``spec.predictor``
  and the canary entry goes. Knative mode: ``canaryTrafficPercent`` is removed. LLMInferenceService
  group: the new member's weight is raised (in the steps of ``canary.steps``, with the gate
  re-run at each), the old member's weight goes to 0, then the old member is deleted (or stopped
  with ``serving.kserve.io/stop``). A first rollout is just marked stable.
* :func:`rollback`: the canary entry is removed (Standard), the stable predictor is put back with
  ``canaryTrafficPercent: 0`` (Knative: all traffic on the previous rolled-out revision), the new
  llm-d member's weight goes to 0 and the member is deleted; a first rollout's service is deleted
  so no unvalidated model keeps serving. The stable revision's object is not written.
* :func:`finalize_run` (the exit handler): finds what a run deployed and did not promote by the
  ``llm-rollout.io/run-id`` label, rolls it back and releases the run's lease.

Records. Every promotion and rollback is recorded with annotations on the *service object*: the
InferenceService itself, or for llm-d (whose members come and go) an
``LLMInferenceServiceConfig`` ``<service>-rollout`` that no member references and that only carries
annotations. ``llm-rollout.io/promoted-*`` say what is stable (model URI, artifact digest, run id,
verdict summary, time), ``llm-rollout.io/stable`` and ``llm-rollout.io/previous-stable`` keep the
full predictor/member spec of the stable and the previous stable model (for
:func:`rollback_to_previous`, ``llm-rollout rollback NAME``), ``llm-rollout.io/history`` the last
promotions and rollbacks.

Field managers. The spec is written by ``llm-rollout`` (as in :mod:`llm_rollout.rollout`); the
record annotations by ``llm-rollout-record``; the lease by ``llm-rollout-lease-<hash of run id>``,
one per run. Each writes only its own fields with metadata-only server-side applies that carry the
object's ``uid`` (so they never create an object that was deleted meanwhile).

The lease. ``llm-rollout.io/lease-holder`` (run id) and ``llm-rollout.io/lease-expires`` on the
service object, taken in :func:`llm_rollout.rollout.deploy`. Because every run has its own field
manager, a second run's apply of a different holder is a server-side apply *conflict*; an
expired lease is taken over with ``force`` under a ``resourceVersion`` precondition, so two runs
taking over at once cannot both win. A first InferenceService rollout creates the object with the
lease in the same write.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from llm_rollout import builders
from llm_rollout.builders import (
    ANNOTATION_PREFIX,
    LABEL_REVISION,
    LABEL_RUN_ID,
    LABEL_SERVICE,
    MANAGED_BY,
    STOP_ANNOTATION,
    Member,
)
from llm_rollout.errors import PermanentError, RolloutError, TransientError
from llm_rollout.kube import (
    INFERENCE_SERVICES,
    LLM_INFERENCE_SERVICE_CONFIGS,
    LLM_INFERENCE_SERVICES,
    ConflictError,
    KubeClient,
    Resource,
    WatchExpired,
    condition,
)
from llm_rollout.names import dns_name, short_hash
from llm_rollout.procs import Terminated, sigterm_raises
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.rollout import preflight
from llm_rollout.spec import RolloutSpec, coerce_spec
from llm_rollout.wait import Readiness, wait_ready

log = logging.getLogger(__name__)

RECORD_MANAGER = "llm-rollout-record"
"""Field manager of the record annotations."""
LEASE_MANAGER_PREFIX = "llm-rollout-lease-"
"""Field manager of a run's lease: this prefix + a hash of the run id."""
DEFAULT_LEASE_TTL_S = 6 * 3600.0
"""A lease older than this is taken over (a run that died without its exit handler)."""
HISTORY_LIMIT = 20
"""Entries kept in ``llm-rollout.io/history`` (newest first)."""
SUMMARY_LIMIT = 500
GATE_REASON_LIMIT = 900
"""A failed gate's reason in the rollback record and the error (the traffic proof's cause and fix fit)."""

LEASE_HOLDER = f"{ANNOTATION_PREFIX}lease-holder"
LEASE_EXPIRES = f"{ANNOTATION_PREFIX}lease-expires"
PROMOTION_STEP = f"{ANNOTATION_PREFIX}promotion-step"
LEASE_KEYS = (LEASE_HOLDER, LEASE_EXPIRES, PROMOTION_STEP)

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
)


class PromotionConflict(PermanentError):
    """The objects changed since deploy (someone else edited the stable revision): nothing was forced."""


class LeaseHeld(PermanentError):
    """Another run holds the service's rollout lease.

    Attributes:
        holder: The run id holding it.
        expires: When it expires (ISO 8601).
    """

    def __init__(self, message: str, *, holder: str, expires: str) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires = expires


class GateFailed(PermanentError):
    """A stepped promotion's gate did not pass; the new revision was rolled back.

    Attributes:
        percent: The traffic step at which the gate failed.
        result: What :func:`rollback` returned.
    """

    def __init__(self, message: str, *, percent: int, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.percent = percent
        self.result = result


# Small helpers ----------------------------------------------------------------------------------


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


def lease_manager(run_id: str) -> str:
    """The field manager of ``run_id``'s lease (one per run, so two runs' leases conflict)."""
    return LEASE_MANAGER_PREFIX + short_hash(run_id, 12)


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


# The service object -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServiceRef:
    """The object that carries a service's lease and records.

    Attributes:
        kind: What serves: ``InferenceService`` or ``LLMInferenceService``.
        res: The resource of the record object.
        name: The record object's name.
        namespace: Namespace.
        service: The service name.
    """

    kind: str
    res: Resource
    name: str
    namespace: str
    service: str


def record_object_name(service: str) -> str:
    """Name of an llm-d service's record object (an ``LLMInferenceServiceConfig``)."""
    return dns_name(f"{service}-rollout", field="name", max_len=63)


def service_ref(spec: RolloutSpec) -> ServiceRef:
    """Where ``spec``'s service keeps its lease and records."""
    if spec.llmd.enabled:
        return ServiceRef(
            "LLMInferenceService",
            LLM_INFERENCE_SERVICE_CONFIGS,
            record_object_name(spec.service_name),
            spec.namespace,
            spec.service_name,
        )
    return ServiceRef("InferenceService", INFERENCE_SERVICES, spec.service_name, spec.namespace, spec.service_name)


def _find_ref(client: KubeClient, name: str, namespace: str) -> tuple[ServiceRef, dict[str, Any]] | None:
    live = client.get_or_none(INFERENCE_SERVICES, name, namespace)
    if live is not None:
        return ServiceRef("InferenceService", INFERENCE_SERVICES, name, namespace, name), live
    rname = record_object_name(name)
    live = client.get_or_none(LLM_INFERENCE_SERVICE_CONFIGS, rname, namespace)
    if live is not None:
        return ServiceRef("LLMInferenceService", LLM_INFERENCE_SERVICE_CONFIGS, rname, namespace, name), live
    return None


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


# Lease ------------------------------------------------------------------------------------------


def lease_of(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lease on an object: ``{"holder", "expires", "expired"}``, or None."""
    ann = _annotations(obj)
    holder = ann.get(LEASE_HOLDER)
    if not holder:
        return None
    expires = ann.get(LEASE_EXPIRES, "")
    when = _parse_iso(expires)
    return {"holder": holder, "expires": expires, "expired": when is None or when <= _now()}


def _wait_for_change(client: KubeClient, ref: ServiceRef, live: dict[str, Any], until: float) -> None:
    """Blocks until the object changes (watch) or ``until`` (monotonic) passes."""
    left = until - time.monotonic()
    if left <= 0:
        return
    try:
        with client.watch(
            ref.res,
            ref.namespace,
            resource_version=_meta(live).get("resourceVersion", "0"),
            field_selector=f"metadata.name={ref.name}",
            timeout_s=max(1.0, left),
            allow_bookmarks=False,
        ) as stream:
            for _event in stream:
                return
    except (WatchExpired, TransientError):
        time.sleep(min(0.5, max(0.0, until - time.monotonic())))


def acquire_lease(
    spec: RolloutSpec,
    client: KubeClient,
    run_id: str,
    *,
    ttl_s: float = DEFAULT_LEASE_TTL_S,
    wait_s: float = 0.0,
    first_object: dict[str, Any] | None = None,
    rewrite: bool = False,
) -> str:
    """Takes (or renews) the service's rollout lease for ``run_id``.

    Args:
        spec: The rollout spec.
        client: The kube client.
        run_id: The run taking it.
        ttl_s: How long the lease lasts without renewal.
        wait_s: How long to wait for another run's lease to be released or to expire.
        first_object: For an InferenceService that does not exist yet: the object to create,
            with the lease (the caller applies it again with its own field manager, then calls
            this again with ``rewrite=True`` so the lease's manager keeps only the lease fields).
        rewrite: Write the lease even when this run holds it for long enough already.

    Returns:
        ``taken``, ``renewed``, ``created`` (the object was created with the lease) or ``none``
        (there is no object to hold a lease and none was given to create).

    Raises:
        LeaseHeld: Another run holds an unexpired lease (after ``wait_s``); the message names it.
    """
    ref = service_ref(spec)
    lm = _twin(client, lease_manager(run_id))
    until = time.monotonic() + max(0.0, wait_s)
    expires = _iso(_now() + timedelta(seconds=ttl_s))
    lease_ann = {LEASE_HOLDER: run_id, LEASE_EXPIRES: expires}
    while True:
        live = client.get_or_none(ref.res, ref.name, ref.namespace)
        if live is None:
            if ref.res is INFERENCE_SERVICES and first_object is None:
                return "none"
            llmd = ref.res is not INFERENCE_SERVICES
            body = _skeleton(ref) if llmd or first_object is None else copy.deepcopy(first_object)
            body["metadata"].setdefault("annotations", {}).update(lease_ann)
            try:
                lm.apply(body)
            except ConflictError:
                continue  # created by someone else meanwhile: look again
            log.info("%s: rollout lease taken by run %s (until %s)", ref.service, run_id, expires)
            return "created"
        lease = lease_of(live)
        if lease and lease["holder"] == run_id:
            left = (_parse_iso(lease["expires"]) or _now()) - _now()
            if not rewrite and left.total_seconds() > ttl_s / 2:
                return "renewed"  # a rerun: nothing to write
            body = _skeleton(ref, live)
            ann = {k: v for k, v in _annotations(live).items() if k in LEASE_KEYS}
            body["metadata"]["annotations"] = {**ann, LEASE_EXPIRES: expires}
            lm.apply(body)
            return "renewed"
        if lease and not lease["expired"]:
            if time.monotonic() >= until:
                raise LeaseHeld(
                    f"{ref.kind} {ref.namespace}/{ref.service} is being rolled out by run {lease['holder']} "
                    f"(its lease expires {lease['expires']}). Fix: wait for that run to finish (its exit "
                    "handler rolls back what it did not promote and releases the lease; `llm-rollout status "
                    f"{ref.service} -n {ref.namespace}` shows it), or, if it died, rerun after the lease expires",
                    holder=lease["holder"],
                    expires=lease["expires"],
                )
            log.info("%s: waiting for run %s's rollout to finish", ref.service, lease["holder"])
            _wait_for_change(client, ref, live, until)
            continue
        body = _skeleton(ref, live)
        body["metadata"]["resourceVersion"] = _meta(live)["resourceVersion"]
        body["metadata"]["annotations"] = dict(lease_ann)
        try:
            lm.apply(body, force=lease is not None)  # an expired lease: take it over
        except ConflictError:
            continue  # someone else took it, or the object changed: look again
        if lease is not None:
            log.warning(
                "%s: took over the expired lease of run %s (expired %s)", ref.service, lease["holder"], lease["expires"]
            )
        log.info("%s: rollout lease taken by run %s (until %s)", ref.service, run_id, expires)
        return "taken"


def _set_lease_field(client: KubeClient, ref: ServiceRef, run_id: str, key: str, value: str | None) -> None:
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    lease = lease_of(live)
    if live is None or not lease or lease["holder"] != run_id:
        return
    ann = {k: v for k, v in _annotations(live).items() if k in LEASE_KEYS}
    if value is None:
        ann.pop(key, None)
    else:
        ann[key] = value
    body = _skeleton(ref, live)
    body["metadata"]["annotations"] = ann
    _twin(client, lease_manager(run_id)).apply(body)


def release_lease(client: KubeClient, ref: ServiceRef, run_id: str) -> bool:
    """Releases ``run_id``'s lease on the service object; True when it held one."""
    if not run_id:
        return False
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    lease = lease_of(live)
    if live is None or not lease or lease["holder"] != run_id:
        return False
    try:
        _twin(client, lease_manager(run_id)).apply(_skeleton(ref, live))
    except ConflictError:
        if client.get_or_none(ref.res, ref.name, ref.namespace) is None:
            return False  # deleted meanwhile (the uid precondition)
        raise
    log.info("%s: rollout lease of run %s released", ref.service, run_id)
    return True


# Records ----------------------------------------------------------------------------------------


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
) -> None:
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    if live is None:
        return
    at = _iso(_now())
    current = _json_annotation(live, STABLE)
    if isinstance(current, dict) and current.get("member") == rec.member:
        return  # recorded already (a rerun)
    stable = {
        "member": rec.member,
        "revision": rec.revision,
        "model_uri": rec.model_uri,
        "artifact_digest": rec.artifact_digest,
        "run_id": rec.run_id or run_id,
        "verdict": "pass",
        "summary": _one_line(summary),
        "promoted_at": at,
        "endpoint_url": rec.endpoint_url,
        "served_model_name": rec.served_model_name,
        **served,
    }
    if metrics:
        small = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
        stable["metrics"] = dict(list(small.items())[:20])
    prev = current if isinstance(current, dict) else previous
    entry = {
        "action": "promote",
        "at": at,
        "member": rec.member,
        "revision": rec.revision,
        "model_uri": rec.model_uri,
        "artifact_digest": rec.artifact_digest,
        "run_id": rec.run_id or run_id,
        "verdict": "pass",
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


def find_stable_model(spec: RolloutSpec | dict[str, Any] | str, client: KubeClient) -> dict[str, Any] | None:
    """The model the service's last promotion made stable, or None (never promoted).

    Returns:
        The ``llm-rollout.io/stable`` record: ``member``, ``revision``, ``model_uri``,
        ``artifact_digest``, ``run_id``, ``summary``, ``promoted_at``, ``endpoint_url`` ...
    """
    spec = coerce_spec(spec)
    ref = service_ref(spec)
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    stable = _json_annotation(live, STABLE)
    if not isinstance(stable, dict) or not stable.get("member"):
        return None
    if spec.llmd.enabled:
        member = client.get_or_none(LLM_INFERENCE_SERVICES, stable["member"], spec.namespace)
        if member is None or STOP_ANNOTATION in _annotations(member):
            return None
    else:
        pred = ((live or {}).get("spec") or {}).get("predictor") or {}
        if _pred_name(spec.service_name, pred) != stable["member"]:
            return None
    return stable


def find_stable_record(live: dict[str, Any] | None) -> dict[str, Any]:
    """The ``llm-rollout.io/stable`` record on a live object ({} when there is none)."""
    stable = _json_annotation(live, STABLE)
    return stable if isinstance(stable, dict) else {}


def same_model(stable: dict[str, Any] | None, model_uri: str, digest: str | None) -> bool:
    """Tells whether a stable record is this model (same storage URI and artifact digest)."""
    if not stable:
        return False
    return stable.get("model_uri") == model_uri and (stable.get("artifact_digest") or None) == (digest or None)


def already_promoted_record(spec: RolloutSpec, stable: dict[str, Any], *, run_id: str = "") -> DeploymentRecord:
    """The deployment record of a rerun whose model already is the stable one (nothing applied)."""
    log.info(
        "%s: %s (%s) already is the promoted model: nothing to roll out",
        spec.service_name,
        stable["member"],
        stable.get("model_uri"),
    )
    return DeploymentRecord(
        platform="kserve",
        kind="LLMInferenceService" if spec.llmd.enabled else "InferenceService",
        name=spec.service_name,
        namespace=spec.namespace,
        member=stable["member"],
        revision=stable.get("revision") or "",
        model_uri=stable.get("model_uri") or "",
        served_model_name=stable.get("served_model_name") or spec.served_model_name,
        endpoint_url=stable.get("endpoint_url") or "",
        run_id=run_id,
        artifact_digest=stable.get("artifact_digest"),
        already_promoted=True,
    )


# Object builders for promotion/rollback ----------------------------------------------------------


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


def _pred_name(spec_name: str, pred: dict[str, Any]) -> str:
    """The member a predictor holds (its name, or the member label of an unnamed one)."""
    return builders.predictor_member(spec_name, pred)


def _wait(
    client: KubeClient, spec: RolloutSpec, name: str, readiness: Readiness, timeout_s: float | None
) -> dict[str, Any]:
    return wait_ready(
        client, name, spec.namespace, readiness, timeout_s=timeout_s or spec.validation.readiness_timeout_s
    )


def _isvc_readiness(
    spec: RolloutSpec, applied: dict[str, Any], canary: str | None = None, gone: str | None = None
) -> Readiness:
    """What the status must show after a promotion write (see llm_rollout.wait: freshness is read
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


def _step_value(rec: DeploymentRecord, percent: int, generation: Any, stable_weight: int | None = None) -> str:
    data: dict[str, Any] = {"member": rec.member, "percent": percent, "generation": generation}
    if stable_weight is not None:
        data["stable_weight"] = stable_weight
    return _compact(data)


def _step_of(obj: dict[str, Any] | None, rec: DeploymentRecord) -> dict[str, Any] | None:
    step = _json_annotation(obj, PROMOTION_STEP)
    return step if isinstance(step, dict) and step.get("member") == rec.member else None


# promote ------------------------------------------------------------------------------------------


def _refuse(rec: DeploymentRecord, verdict: str, summary: str) -> PermanentError:
    why = f" ({_one_line(summary, 300)})" if summary else ""
    return PermanentError(
        f"refusing to promote {rec.member}: the validation verdict is {verdict!r}, not 'pass'{why}. "
        "Fix: roll it back (the rollback-model step does; or `llm-rollout rollback`), then fix the model, "
        "the runtime or the SLO and run again"
    )


def promote(
    spec: RolloutSpec | dict[str, Any] | str,
    client: KubeClient,
    record: DeploymentRecord | str | dict[str, Any],
    *,
    verdict: str,
    summary: str,
    run_id: str,
    metrics: dict[str, Any] | None = None,
    gate: Callable[[int], tuple[str, str]] | None = None,
    retire: str = "delete",
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Promotes the validated revision of ``record`` to stable and retires the one it replaces.

    Refuses unless ``verdict`` is ``pass``. Before writing anything it checks that the stable
    revision is still what deploy saw (predictor/member, model, generation): if someone else changed
    it meanwhile it raises :class:`PromotionConflict` and forces nothing. With ``canary.steps`` (or a
    ``gate``) traffic moves in steps; after each, ``gate(percent)`` must return ``("pass", ...)``,
    otherwise the new revision is rolled back and :class:`GateFailed` is raised. Promoting again is
    a no-op. The promotion is recorded on the service, and the run's lease is released.

    Args:
        spec: The rollout spec.
        client: The kube client.
        record: The deployment record from deploy.
        verdict: The validation verdict; only ``pass`` promotes.
        summary: Why the verdict was reached (recorded).
        run_id: The run that promotes (recorded).
        metrics: Key metrics of the validation (a few scalars are recorded).
        gate: Re-runs the validation at a traffic step: ``gate(percent) -> (verdict, summary)``.
        retire: ``delete`` the old llm-d member, or ``stop`` it (``serving.kserve.io/stop``).
        timeout_s: Bound of each readiness wait; ``validation.readiness_timeout_s`` when None.

    Returns:
        ``{"action": "promote" | "none", "message": one line, "member", "previous"}``.

    Raises:
        PermanentError: The verdict is not ``pass``, or the new revision is gone.
        PromotionConflict: The stable revision was changed by someone else since deploy.
        GateFailed: A stepped promotion's gate did not pass (rolled back).
    """
    spec = coerce_spec(spec)
    rec = DeploymentRecord.coerce(record)
    if verdict != "pass":
        raise _refuse(rec, verdict, summary)
    if rec.already_promoted:
        return {"action": "none", "message": "already promoted", "member": rec.member, "previous": None}
    if retire not in ("delete", "stop"):
        raise PermanentError(f"retire must be 'delete' or 'stop', not {retire!r}")
    ref = service_ref(spec)
    if spec.llmd.enabled:
        result = _promote_llmd(spec, client, rec, ref, gate, retire, timeout_s)
    else:
        result = _promote_isvc(spec, client, rec, ref, gate, timeout_s)
    if result["action"] == "promote" or result.get("record"):
        _record_promotion(
            client,
            ref,
            rec,
            run_id=run_id,
            summary=summary,
            metrics=metrics,
            served=result.pop("served", {}),
            previous=result.pop("previous_record", None),
        )
    result.pop("record", None)
    result.pop("served", None)
    result.pop("previous_record", None)
    release_lease(client, ref, rec.run_id or run_id)
    log.info("%s: %s", spec.service_name, result["message"])
    return result


def _check_isvc_stable(spec: RolloutSpec, rec: DeploymentRecord, live: dict[str, Any]) -> None:
    """Raises PromotionConflict when the InferenceService changed under us since deploy."""
    where = f"InferenceService {spec.namespace}/{spec.service_name}"
    pred = (live.get("spec") or {}).get("predictor") or {}
    gen = _meta(live).get("generation")
    step = _step_of(live, rec)
    expected_gen = step.get("generation") if step else rec.generation
    if spec.deployment_mode == "Standard" and rec.stable is not None:
        name = _pred_name(spec.service_name, pred)
        uri = (pred.get("model") or {}).get("storageUri", "")
        if name != rec.stable.member or (rec.stable.model_uri and uri != rec.stable.model_uri):
            raise PromotionConflict(
                f"{where}: the stable predictor is now {name} ({uri}), but {rec.member} was validated against "
                f"{rec.stable.member} ({rec.stable.model_uri}); someone else changed it. Nothing was changed. "
                "Fix: check who changed it (kubectl get isvc -o yaml, managedFields), then redeploy"
            )
    if expected_gen is not None and gen != expected_gen:
        raise PromotionConflict(
            f"{where}: its spec changed since {rec.member} was deployed (generation {expected_gen} -> {gen}); "
            "someone else edited it. Nothing was changed. Fix: check the change (managedFields), then redeploy "
            "so that validation sees what would be promoted"
        )


def _isvc_promoted(spec: RolloutSpec, rec: DeploymentRecord, live: dict[str, Any]) -> bool:
    pred = (live.get("spec") or {}).get("predictor") or {}
    if _pred_name(spec.service_name, pred) != rec.member:
        return False
    if rec.stable is None:
        stable = _json_annotation(live, STABLE) or {}
        return stable.get("member") == rec.member
    if spec.deployment_mode == "Knative":
        return pred.get("canaryTrafficPercent") is None
    return _canary_entry(live, rec.member) is None


def _promote_isvc(
    spec: RolloutSpec,
    client: KubeClient,
    rec: DeploymentRecord,
    ref: ServiceRef,
    gate: Callable[[int], tuple[str, str]] | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    where = f"InferenceService {spec.namespace}/{spec.service_name}"
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        raise PromotionConflict(f"{where} is gone (deleted since {rec.member} was deployed); nothing to promote")
    if _isvc_promoted(spec, rec, live):
        return {
            "action": "none",
            "message": f"already promoted: {rec.member} is the stable revision of {spec.service_name}",
            "member": rec.member,
            "previous": rec.stable.member if rec.stable else None,
            "record": True,
            "served": {"predictor": (live.get("spec") or {}).get("predictor")},
        }
    pred = copy.deepcopy((live.get("spec") or {}).get("predictor") or {})
    if rec.stable is None:
        # First rollout: the revision already takes all traffic; a pass marks it stable.
        if _pred_name(spec.service_name, pred) != rec.member:
            raise PromotionConflict(
                f"{where}: its predictor is now {_pred_name(spec.service_name, pred)}, not the validated {rec.member}; "
                "someone else replaced it. Nothing was changed"
            )
        _check_isvc_stable(spec, rec, live)
        return {
            "action": "promote",
            "message": f"promoted {rec.member} ({rec.model_uri}): first rollout of {spec.service_name}, now stable",
            "member": rec.member,
            "previous": None,
            "served": {"predictor": pred},
        }
    knative = spec.deployment_mode == "Knative"
    if knative:
        if _pred_name(spec.service_name, pred) != rec.member or pred.get("canaryTrafficPercent") is None:
            raise PermanentError(
                f"{where}: {rec.member} is no longer the canary (rolled back or replaced); nothing to promote. "
                "Fix: redeploy"
            )
    elif _canary_entry(live, rec.member) is None:
        raise PermanentError(
            f"{where}: {rec.member} is no longer in spec.canary (rolled back or replaced); nothing to promote. "
            "Fix: redeploy"
        )
    _check_isvc_stable(spec, rec, live)
    stable_rev = _labels(live).get(LABEL_REVISION, "")
    previous_record = None
    if not knative and _json_annotation(live, STABLE) is None:
        previous_record = {
            "member": rec.stable.member,
            "revision": rec.stable.revision,
            "model_uri": rec.stable.model_uri,
            "predictor": pred,
        }

    # KServe's webhook judges the promoted object before the first traffic step moves anything.
    preflight(client, [_isvc_object(spec, rec.revision, _final_isvc_body(spec, rec, live, pred)[0])], step="promote")
    steps = _steps(spec, rec, gate)
    for percent in steps:
        if knative:
            body = {**(live.get("spec") or {}), "predictor": {**pred, "canaryTrafficPercent": percent}}
        else:
            entry = copy.deepcopy(_canary_entry(live, rec.member) or {})
            entry["trafficPercent"] = percent
            body = {"predictor": pred, "canary": [entry]}
        applied = client.apply(_isvc_object(spec, stable_rev, body))
        _set_lease_field(
            client, ref, rec.run_id, PROMOTION_STEP, _step_value(rec, percent, _meta(applied).get("generation"))
        )
        _wait(
            client, spec, spec.service_name, _isvc_readiness(spec, applied, None if knative else rec.member), timeout_s
        )
        _run_gate(spec, client, rec, gate, percent)
        live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)

    body, final_pred = _final_isvc_body(spec, rec, live, pred)
    applied = client.apply(_isvc_object(spec, rec.revision, body))
    log.info(
        "%s: %s is the predictor now (generation %s)", spec.service_name, rec.member, _meta(applied).get("generation")
    )
    _wait(
        client, spec, spec.service_name, _isvc_readiness(spec, applied, gone=None if knative else rec.member), timeout_s
    )
    return {
        "action": "promote",
        "message": f"promoted {rec.member} ({rec.model_uri}) in {spec.service_name}; replaced {rec.stable.member}",
        "member": rec.member,
        "previous": rec.stable.member,
        "served": {"predictor": final_pred},
        "previous_record": previous_record,
    }


def _final_isvc_body(
    spec: RolloutSpec, rec: DeploymentRecord, live: dict[str, Any], pred: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The InferenceService spec after promotion (and the new predictor)."""
    if spec.deployment_mode == "Knative":
        final_pred = {k: v for k, v in pred.items() if k != "canaryTrafficPercent"}
        body = {k: v for k, v in (live.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = final_pred
        return body, final_pred
    entry = _canary_entry(live, rec.member) or {}
    # predictor.name becomes the canary's (its Deployment and pods stay) and the entry goes;
    # the stable's scaling fields come back (a canary has fixed replicas).
    final_pred = builders.promoted_predictor(spec, entry.get("predictor") or {})
    others = [
        e for e in (live.get("spec") or {}).get("canary") or [] if (e.get("predictor") or {}).get("name") != rec.member
    ]
    body = {"predictor": final_pred}
    if others:
        body["canary"] = others
    return body, final_pred


def _steps(spec: RolloutSpec, rec: DeploymentRecord, gate: Callable[[int], tuple[str, str]] | None) -> list[int]:
    """Traffic steps before the final switch: ``canary.steps`` above the current share (with 100)."""
    steps = [p for p in spec.canary.steps if p > rec.traffic_percent]
    if gate is not None and not steps:
        steps = [100]
    return steps


def _run_gate(
    spec: RolloutSpec,
    client: KubeClient,
    rec: DeploymentRecord,
    gate: Callable[[int], tuple[str, str]] | None,
    percent: int,
    restore_stable_weight: int | None = None,
) -> None:
    if gate is None:
        return
    verdict, why = gate(percent)
    log.info("%s: gate at %d%%: %s (%s)", spec.service_name, percent, verdict, _one_line(why, 200))
    if verdict == "pass":
        return
    # Long enough for the traffic proof's cause and fix (validation/traffic.py), which comes first.
    reason = f"gate at {percent}% traffic: {verdict}: {_one_line(why, GATE_REASON_LIMIT)}"
    result = _rollback(spec, client, rec, reason=reason, run_id=rec.run_id, restore_stable_weight=restore_stable_weight)
    raise GateFailed(
        f"promotion of {rec.member} stopped at {percent}% traffic: the gate said {verdict!r} "
        f"({_one_line(why, GATE_REASON_LIMIT)}); "
        f"rolled back: {result['message']}",
        percent=percent,
        result=result,
    )


def _promote_llmd(
    spec: RolloutSpec,
    client: KubeClient,
    rec: DeploymentRecord,
    ref: ServiceRef,
    gate: Callable[[int], tuple[str, str]] | None,
    retire: str,
    timeout_s: float | None,
) -> dict[str, Any]:
    ns = spec.namespace
    holder = client.get_or_none(ref.res, ref.name, ns)
    current = _json_annotation(holder, STABLE) or {}
    new_live = client.get_or_none(LLM_INFERENCE_SERVICES, rec.member, ns)
    if current.get("member") == rec.member and new_live is not None:
        return {
            "action": "none",
            "message": f"already promoted: {rec.member} is the stable member of {spec.service_name}",
            "member": rec.member,
            "previous": rec.stable.member if rec.stable else None,
        }
    if new_live is None:
        raise PermanentError(
            f"LLMInferenceService {ns}/{rec.member} is gone (rolled back or deleted); nothing to promote. Fix: redeploy"
        )
    served = {"member_spec": copy.deepcopy(new_live.get("spec") or {}), "labels": _labels(new_live)}
    if rec.stable is None:
        return {
            "action": "promote",
            "message": f"promoted {rec.member} ({rec.model_uri}): first rollout of {spec.service_name}, now stable",
            "member": rec.member,
            "previous": None,
            "served": served,
        }
    step = _step_of(holder, rec)
    old = client.get_or_none(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
    if old is None or STOP_ANNOTATION in _annotations(old):
        if step and step.get("percent") == 100:
            # A rerun after the old member was already retired: only the record is left to write.
            return {
                "action": "promote",
                "message": f"promoted {rec.member} ({rec.model_uri}); {rec.stable.member} already retired",
                "member": rec.member,
                "previous": rec.stable.member,
                "served": served,
            }
        raise PromotionConflict(
            f"LLMInferenceService {ns}/{rec.stable.member} (the stable member {rec.member} was validated against) "
            "was deleted or stopped by someone else; nothing was changed. Fix: check the group, then redeploy"
        )
    old_gen = _meta(old).get("generation")
    expected = step.get("stable_generation") if step and step.get("stable_generation") else rec.stable.generation
    old_uri = ((old.get("spec") or {}).get("model") or {}).get("uri", "")
    if (expected is not None and old_gen != expected) or (rec.stable.model_uri and old_uri != rec.stable.model_uri):
        raise PromotionConflict(
            f"LLMInferenceService {ns}/{rec.stable.member}: the stable member changed since {rec.member} was "
            f"deployed (generation {expected} -> {old_gen}, model {rec.stable.model_uri} -> {old_uri}); someone "
            "else edited it. Nothing was changed. Fix: check the change (managedFields), then redeploy"
        )
    stable_weight = int(step["stable_weight"]) if step and step.get("stable_weight") else _weight(old)
    stable_weight = stable_weight or 100
    previous_record = None
    if not current:
        previous_record = {
            "member": rec.stable.member,
            "revision": rec.stable.revision,
            "model_uri": rec.stable.model_uri,
            "member_spec": copy.deepcopy(old.get("spec") or {}),
            "labels": _labels(old),
        }
    prefill = spec.llmd.prefill is not None

    def set_new_weight(weight: int) -> None:
        applied = client.apply(builders.llm_inference_service(spec, _member_of(rec), weight=weight))
        _wait(
            client,
            spec,
            rec.member,
            Readiness.llm_inference_service(prefill=prefill, min_generation=_meta(applied).get("generation")),
            timeout_s,
        )

    for percent in [*_steps(spec, rec, gate), 100]:
        if percent < 100:
            set_new_weight(max(1, round(stable_weight * percent / (100 - percent))))
            _set_lease_field(client, ref, rec.run_id, PROMOTION_STEP, _step_value(rec, percent, old_gen, stable_weight))
            _run_gate(spec, client, rec, gate, percent)
            continue
        set_new_weight(stable_weight)
        zeroed = client.apply(_llmisvc_from_live(old, weight=0))
        step_data = json.loads(_step_value(rec, 100, old_gen, stable_weight))
        step_data["stable_generation"] = _meta(zeroed).get("generation")
        _set_lease_field(client, ref, rec.run_id, PROMOTION_STEP, _compact(step_data))
        _run_gate(spec, client, rec, gate, 100, restore_stable_weight=stable_weight)
        break

    old = client.get(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
    if retire == "stop":
        client.apply(_llmisvc_from_live(old, weight=0, stop=True))
        how = "stopped"
    else:
        client.delete(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
        how = "deleted"
    return {
        "action": "promote",
        "message": f"promoted {rec.member} ({rec.model_uri}) in {spec.service_name}; {how} {rec.stable.member}",
        "member": rec.member,
        "previous": rec.stable.member,
        "served": served,
        "previous_record": previous_record,
    }


# rollback -----------------------------------------------------------------------------------------


def rollback(
    spec: RolloutSpec | dict[str, Any] | str,
    client: KubeClient,
    record: DeploymentRecord | str | dict[str, Any],
    *,
    reason: str,
    run_id: str = "",
) -> dict[str, Any]:
    """Removes the new revision of ``record``; the stable revision keeps serving as it was.

    Standard: the canary entry is removed. Knative: the stable predictor is put back with
    ``canaryTrafficPercent: 0`` (all traffic on the previously rolled-out revision). llm-d: the new
    member's weight goes to 0, then the member is deleted. First rollout: the unvalidated service
    (or member) is deleted. An already promoted revision is never demoted. Twice is a no-op. The
    rollback is recorded on the service and the run's lease released.

    Args:
        spec: The rollout spec.
        client: The kube client.
        record: The deployment record.
        reason: Why (recorded).
        run_id: The run that rolls back (recorded; the record's run when empty).

    Returns:
        ``{"action": "rollback" | "none", "message": one line, "member", "stable", "lease_released"}``.
    """
    return _rollback(coerce_spec(spec), client, DeploymentRecord.coerce(record), reason=reason, run_id=run_id)


def _rollback(
    spec: RolloutSpec,
    client: KubeClient,
    rec: DeploymentRecord,
    *,
    reason: str,
    run_id: str,
    restore_stable_weight: int | None = None,
) -> dict[str, Any]:
    stable_name = rec.stable.member if rec.stable else None
    if rec.already_promoted:
        return {
            "action": "none",
            "message": f"already promoted: {rec.member} stays the stable revision; nothing to roll back",
            "member": rec.member,
            "stable": rec.member,
        }
    ref = service_ref(spec)
    if spec.llmd.enabled:
        done, message = _rollback_llmd(spec, client, rec, ref, restore_stable_weight)
    else:
        done, message = _rollback_isvc(spec, client, rec, ref)
    if done:
        _record_rollback(client, ref, rec, reason, run_id)
    released = release_lease(client, ref, rec.run_id or run_id)
    if done:
        log.warning("%s: %s (%s)", spec.service_name, message, _one_line(reason, 300) or "no reason given")
    else:
        log.info("%s: %s", spec.service_name, message)
    return {
        "action": "rollback" if done else "none",
        "message": message,
        "member": rec.member,
        "stable": stable_name,
        "lease_released": released,
    }


def _rollback_isvc(spec: RolloutSpec, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef) -> tuple[bool, str]:
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        return False, f"nothing to roll back: InferenceService {spec.service_name} does not exist"
    if (_json_annotation(live, STABLE) or {}).get("member") == rec.member:
        return False, f"{rec.member} is already promoted; it is not demoted"
    pred = copy.deepcopy((live.get("spec") or {}).get("predictor") or {})
    if rec.stable is None:
        if _pred_name(spec.service_name, pred) != rec.member:
            return False, f"nothing to roll back: {rec.member} is not the predictor of {spec.service_name}"
        client.delete(INFERENCE_SERVICES, spec.service_name, spec.namespace)
        return True, f"deleted InferenceService {spec.service_name}: its first revision {rec.member} did not pass"
    stable_rev = _labels(live).get(LABEL_REVISION, rec.stable.revision)
    if spec.deployment_mode == "Knative":
        if _pred_name(spec.service_name, pred) != rec.member:
            return False, f"nothing to roll back: {rec.member} is not the canary of {spec.service_name}"
        stable = _json_annotation(live, STABLE) or {}
        if stable.get("member") == rec.stable.member and stable.get("predictor"):
            restored = copy.deepcopy(stable["predictor"])
        else:
            restored = builders.inference_service(
                spec, Member(rec.stable.member, rec.stable.model_uri, rec.stable.revision)
            )["spec"]["predictor"]
        restored["canaryTrafficPercent"] = 0
        body = {k: v for k, v in (live.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = restored
        client.apply(_isvc_object(spec, rec.stable.revision, body))
        return True, f"rolled back {rec.member}: all traffic on {rec.stable.member} ({rec.stable.model_uri}) again"
    if _canary_entry(live, rec.member) is None:
        return False, f"nothing to roll back: {rec.member} is not a canary of {spec.service_name}"
    others = [
        e for e in (live.get("spec") or {}).get("canary") or [] if (e.get("predictor") or {}).get("name") != rec.member
    ]
    body: dict[str, Any] = {"predictor": pred}
    if others:
        body["canary"] = others
    client.apply(_isvc_object(spec, stable_rev, body))
    return (
        True,
        f"rolled back {rec.member}: removed the canary; {_pred_name(spec.service_name, pred)} serves all traffic",
    )


def _rollback_llmd(
    spec: RolloutSpec,
    client: KubeClient,
    rec: DeploymentRecord,
    ref: ServiceRef,
    restore_stable_weight: int | None,
) -> tuple[bool, str]:
    ns = spec.namespace
    holder = client.get_or_none(ref.res, ref.name, ns)
    if (_json_annotation(holder, STABLE) or {}).get("member") == rec.member:
        return False, f"{rec.member} is already promoted; it is not demoted"
    step = _step_of(holder, rec)
    if rec.stable is not None and restore_stable_weight is None and step and step.get("percent") == 100:
        restore_stable_weight = int(step.get("stable_weight") or 0) or None
    if rec.stable is not None and restore_stable_weight:
        old = client.get_or_none(LLM_INFERENCE_SERVICES, rec.stable.member, ns)
        if old is not None and _weight(old) != restore_stable_weight:
            # Only after a gate failed at the last step (the stable member was at weight 0).
            client.apply(_llmisvc_from_live(old, weight=restore_stable_weight))
    new_live = client.get_or_none(LLM_INFERENCE_SERVICES, rec.member, ns)
    if new_live is None:
        return False, f"nothing to roll back: LLMInferenceService {rec.member} does not exist"
    if rec.stable is not None and _weight(new_live) != 0:
        # Traffic off first (the router drops it from the group), then the member goes.
        client.apply(builders.llm_inference_service(spec, _member_of(rec), weight=0))
    client.delete(LLM_INFERENCE_SERVICES, rec.member, ns)
    if rec.stable is None:
        return True, f"deleted LLMInferenceService {rec.member}: the first revision of {spec.service_name} did not pass"
    return True, f"rolled back {rec.member}: weight 0 and deleted; {rec.stable.member} serves all traffic"


# Exit handler and cancellation ----------------------------------------------------------------------


def _records_of_run(spec: RolloutSpec, client: KubeClient, run_id: str) -> list[DeploymentRecord]:
    """Revisions ``run_id`` deployed that are not promoted (found by the run-id label)."""
    label = builders.run_label(run_id)
    ns = spec.namespace
    base = {
        "platform": "kserve",
        "name": spec.service_name,
        "namespace": ns,
        "served_model_name": spec.served_model_name,
        "endpoint_url": "",
        "run_id": run_id,
    }
    out: list[DeploymentRecord] = []
    if spec.llmd.enabled:
        ref = service_ref(spec)
        stable_member = (_json_annotation(client.get_or_none(ref.res, ref.name, ns), STABLE) or {}).get("member")
        members = client.list(LLM_INFERENCE_SERVICES, ns, label_selector=f"{LABEL_SERVICE}={spec.service_name}")
        items = members.get("items") or []
        for m in items:
            mm = _meta(m)
            if _labels(m).get(LABEL_RUN_ID) != label or mm["name"] == stable_member:
                continue
            others = [o for o in items if _meta(o)["name"] != mm["name"] and STOP_ANNOTATION not in _annotations(o)]
            stable = max(others, key=_weight) if others else None
            out.append(
                DeploymentRecord(
                    kind="LLMInferenceService",
                    member=mm["name"],
                    revision=_labels(m).get(LABEL_REVISION, ""),
                    model_uri=((m.get("spec") or {}).get("model") or {}).get("uri", ""),
                    canary=stable is not None,
                    stable=StableRef(member=_meta(stable)["name"], revision=_labels(stable).get(LABEL_REVISION, ""))
                    if stable
                    else None,
                    **base,
                )
            )
        return out
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, ns)
    if live is None:
        return out
    body = live.get("spec") or {}
    pred = body.get("predictor") or {}
    stable_rec = _json_annotation(live, STABLE) or {}
    pred_ref = StableRef(
        member=_pred_name(spec.service_name, pred),
        model_uri=(pred.get("model") or {}).get("storageUri", ""),
        revision=_labels(live).get(LABEL_REVISION, ""),
    )
    for entry in body.get("canary") or []:
        cp = entry.get("predictor") or {}
        if (cp.get("labels") or {}).get(LABEL_RUN_ID) == label:
            out.append(
                DeploymentRecord(
                    kind="InferenceService",
                    member=cp.get("name", ""),
                    revision="",
                    model_uri=(cp.get("model") or {}).get("storageUri", ""),
                    canary=True,
                    stable=pred_ref,
                    **base,
                )
            )
    if (pred.get("labels") or {}).get(LABEL_RUN_ID) == label and stable_rec.get("member") != _pred_name(
        spec.service_name, pred
    ):
        knative_canary = pred.get("canaryTrafficPercent") is not None
        stable = None
        if knative_canary and stable_rec.get("member"):
            stable = StableRef(
                member=stable_rec["member"],
                model_uri=stable_rec.get("model_uri", ""),
                revision=stable_rec.get("revision", ""),
            )
        if knative_canary and stable is None:
            log.warning(
                "%s: run %s's Knative canary has no promotion record to restore; setting its traffic to 0",
                spec.service_name,
                run_id,
            )
        if not knative_canary and body.get("canary"):
            return out  # a stable predictor with canaries is not a first rollout
        out.append(
            DeploymentRecord(
                kind="InferenceService",
                member=_pred_name(spec.service_name, pred),
                revision=_labels(live).get(LABEL_REVISION, ""),
                model_uri=(pred.get("model") or {}).get("storageUri", ""),
                canary=knative_canary,
                stable=stable
                or (StableRef(member=_pred_name(spec.service_name, pred), model_uri="") if knative_canary else None),
                **base,
            )
        )
    return out


def finalize_run(
    spec: RolloutSpec | dict[str, Any] | str,
    client: KubeClient,
    run_id: str,
    *,
    state: str = "",
    error: str = "",
) -> dict[str, Any]:
    """The exit handler: rolls back what ``run_id`` deployed but did not promote, releases its lease.

    The run's revisions are found on the server by the ``llm-rollout.io/run-id`` label, so this
    works when a step died before writing its outputs. Promoted revisions are left alone.

    Args:
        spec: The rollout spec.
        client: The kube client.
        run_id: The run.
        state: The run's final state (``SUCCEEDED``, ``FAILED``, ``CANCELLED`` ...), recorded.
        error: The run's error message, recorded.

    Returns:
        ``{"action": "rollback" | "none", "message": one line, "rolled_back": [members],
        "lease_released": bool}``.
    """
    spec = coerce_spec(spec)
    ref = service_ref(spec)
    if not run_id:
        return {
            "action": "none",
            "message": "no run id: nothing to finalize",
            "rolled_back": [],
            "lease_released": False,
        }
    reason = f"run {run_id} ended {state or 'without promoting it'}" + (f": {_one_line(error, 300)}" if error else "")
    rolled: list[str] = []
    released_any = False
    for rec in _records_of_run(spec, client, run_id):
        if spec.deployment_mode == "Knative" and rec.canary and rec.stable and not rec.stable.model_uri:
            _knative_zero(spec, client, rec)
            rolled.append(rec.member)
            continue
        result = _rollback(spec, client, rec, reason=reason, run_id=run_id)
        released_any = released_any or result["lease_released"]
        if result["action"] == "rollback":
            rolled.append(rec.member)
    released = release_lease(client, ref, run_id) or released_any
    message = f"rolled back {', '.join(rolled)}" if rolled else "nothing left to roll back"
    if released:
        message += f"; released run {run_id}'s lease"
    return {
        "action": "rollback" if rolled else "none",
        "message": message,
        "rolled_back": rolled,
        "lease_released": released,
    }


def _knative_zero(spec: RolloutSpec, client: KubeClient, rec: DeploymentRecord) -> None:
    live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    body = copy.deepcopy(live.get("spec") or {})
    body["predictor"]["canaryTrafficPercent"] = 0
    client.apply(_isvc_object(spec, _labels(live).get(LABEL_REVISION, ""), body))


@contextlib.contextmanager
def rollback_on_termination(
    spec: RolloutSpec | dict[str, Any] | str,
    client: KubeClient,
    record: DeploymentRecord | str | dict[str, Any] | None,
    *,
    run_id: str = "",
    catch: type[KeyboardInterrupt] = Terminated,
) -> Iterator[None]:
    """Within the block, SIGTERM (a cancelled run) rolls the new revision back, then re-raises.

    With a record, that revision is rolled back; without one (the block *is* the deploy) the run's
    revisions are found by ``run_id`` (:func:`finalize_run`). A second SIGTERM during the rollback
    is ignored so the rollback finishes.

    Args:
        spec: The rollout spec.
        client: The kube client.
        record: The deployment record, or None while deploy runs in the block.
        run_id: The run (needed when ``record`` is None).
        catch: What triggers the rollback: :class:`Terminated` (SIGTERM), or
            :class:`KeyboardInterrupt` for Ctrl-C as well.

    Raises:
        Terminated: After the rollback (a :class:`KeyboardInterrupt`).
    """
    spec = coerce_spec(spec)
    try:
        with sigterm_raises():
            yield
    except catch as stopped:
        why = "SIGTERM" if isinstance(stopped, Terminated) else "interrupted"
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if in_main else None
        try:
            if record:
                rec = DeploymentRecord.coerce(record)
                rollback(spec, client, rec, reason=f"run cancelled ({why})", run_id=run_id or rec.run_id)
            elif run_id:
                finalize_run(spec, client, run_id, state="CANCELLED", error=why)
        except RolloutError as err:
            log.error("rollback after %s failed: %s (the exit handler retries it)", why, err)
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        raise


# status and one-command rollback -----------------------------------------------------------------------


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


def status(client: KubeClient, name: str, namespace: str) -> dict[str, Any]:
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


__all__ = [
    "GateFailed",
    "LeaseHeld",
    "PromotionConflict",
    "acquire_lease",
    "finalize_run",
    "find_stable_model",
    "promote",
    "release_lease",
    "rollback",
    "rollback_on_termination",
    "rollback_to_previous",
    "status",
]
