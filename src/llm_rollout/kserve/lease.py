"""The rollout lease: one rollout of a service at a time, as a ``coordination.k8s.io/v1`` Lease.

The lock is the Lease ``<service>-rollout`` in the service's namespace
(:class:`~llm_rollout.kserve.records.ServiceRef`, :func:`~llm_rollout.kserve.records.rollout_object_name`),
the Kubernetes object made for it (client-go ``tools/leaderelection/resourcelock`` holds its leader
locks the same way): ``spec.holderIdentity`` is the run id, ``spec.renewTime`` +
``spec.leaseDurationSeconds`` say when it expires, ``spec.acquireTime`` and ``spec.leaseTransitions``
when and how often it changed hands. It is taken in :func:`llm_rollout.kserve.deploy.deploy` and
released by promote, rollback or the exit handler. Nothing of it is on the InferenceService: KServe
copies an InferenceService's labels and annotations into the predictor's pod template
(``components/predictor.go`` ``buildObjectMeta``), so a lock kept there restarted the serving pods
(Standard) or made a new Knative revision with every write.

Because every run has its own field manager, a second run's apply of a different holder is a
server-side apply *conflict*; an expired lease is taken over with ``force`` under a
``resourceVersion`` precondition, so two runs taking over at once cannot both win. The annotation
``llm-rollout.io/promotion-step`` on the Lease (owned by the same manager) remembers how far a
stepped promotion got, so a rerun continues from there. Releasing drops the run's fields
(holder, times, step); the object stays, with the records (:mod:`llm_rollout.kserve.records`).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from llm_rollout.errors import PermanentError, TransientError
from llm_rollout.kserve.builders import ANNOTATION_PREFIX, LABEL_SERVICE, MANAGED_BY
from llm_rollout.kserve.records import (
    RECORD_KEYS,
    RECORD_MANAGER,
    ServiceRef,
    _annotations,
    _compact,
    _iso,
    _json_annotation,
    _meta,
    _now,
    _parse_iso,
    _skeleton,
    _twin,
    _write_record,
    records_of,
)
from llm_rollout.kube import ConflictError, KubeClient, NotFoundError, WatchExpired
from llm_rollout.names import short_hash
from llm_rollout.record import DeploymentRecord

log = logging.getLogger(__name__)

LEASE_MANAGER_PREFIX = "llm-rollout-lease-"
"""Field manager of a run's lease: this prefix + a hash of the run id."""


DEFAULT_LEASE_TTL_S = 6 * 3600.0
"""A lease older than this is taken over (a run that died without its exit handler)."""


PROMOTION_STEP = f"{ANNOTATION_PREFIX}promotion-step"


LEGACY_LEASE_HOLDER = f"{ANNOTATION_PREFIX}lease-holder"
"""Where versions before the Lease kept the holder (an annotation on the service object; migrated)."""


LEGACY_LEASE_EXPIRES = f"{ANNOTATION_PREFIX}lease-expires"


LEASE_KEYS = (PROMOTION_STEP,)
"""The Lease's annotations owned by the run holding it."""


INT32_MAX = 2**31 - 1


MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
"""``metav1.MicroTime`` as the API server writes it (RFC 3339 with microseconds, UTC)."""


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


def lease_manager(run_id: str) -> str:
    """The field manager of ``run_id``'s lease (one per run, so two runs' leases conflict)."""
    return LEASE_MANAGER_PREFIX + short_hash(run_id, 12)


def _micro(when: datetime) -> str:
    return when.astimezone(UTC).strftime(MICRO_TIME)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def lease_of(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lease a Lease object holds: ``{"holder", "expires", "expired"}``, or None when free.

    Expiry as client-go's leader election reads it: ``renewTime`` (else ``acquireTime``) plus
    ``leaseDurationSeconds``; a lease without times or duration counts as expired.
    """
    spec = (obj or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return None
    since = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    when = since + timedelta(seconds=int(duration)) if since is not None and duration is not None else None
    return {
        "holder": holder,
        "expires": _iso(when) if when is not None else "",
        "expired": when is None or when <= _now(),
    }


def _lease_body(
    ref: ServiceRef,
    live: dict[str, Any] | None,
    *,
    run_id: str,
    ttl_s: float,
    acquired: str,
    transitions: int,
    annotations: dict[str, str],
) -> dict[str, Any]:
    """Everything the run's lease manager owns on the Lease: the holder spec and its annotations."""
    body = _skeleton(ref, live)
    body["spec"] = {
        "holderIdentity": run_id,
        "leaseDurationSeconds": max(1, min(int(ttl_s), INT32_MAX)),  # int32 in the Lease's schema
        "acquireTime": acquired,
        "renewTime": _micro(_now()),
        "leaseTransitions": transitions,
    }
    if annotations:
        body["metadata"]["annotations"] = dict(annotations)
    return body


def _own_annotations(live: dict[str, Any] | None) -> dict[str, str]:
    return {k: v for k, v in _annotations(live).items() if k in LEASE_KEYS}


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
    ref: ServiceRef,
    client: KubeClient,
    run_id: str,
    *,
    ttl_s: float = DEFAULT_LEASE_TTL_S,
    wait_s: float = 0.0,
    rewrite: bool = False,
) -> str:
    """Takes (or renews) the service's rollout lease for ``run_id``.

    Args:
        ref: The service's rollout object (its variant's :meth:`~llm_rollout.kserve.variants.base.Variant.ref`).
        client: The kube client.
        run_id: The run taking it.
        ttl_s: How long the lease lasts without renewal (``spec.leaseDurationSeconds``).
        wait_s: How long to wait for another run's lease to be released or to expire, from the
            first read that finds it held (a slow API server does not eat the wait; 0: no wait).
        rewrite: Renew even when this run holds it for long enough already.

    Returns:
        ``taken``, ``renewed`` or ``created`` (the Lease object was created with this run as holder).

    Raises:
        LeaseHeld: Another run holds an unexpired lease (after ``wait_s``); the message names it.
    """
    migrate_legacy(client, ref)
    lm = _twin(client, lease_manager(run_id))
    until: float | None = None  # the wait starts when another run's lease is first seen, not before our first read
    while True:
        live = client.get_or_none(ref.res, ref.name, ref.namespace)
        now = _micro(_now())
        if live is None:
            try:
                lm.apply(
                    _lease_body(ref, None, run_id=run_id, ttl_s=ttl_s, acquired=now, transitions=0, annotations={})
                )
            except ConflictError:
                continue  # created by someone else meanwhile: look again
            log.info("%s: rollout lease taken by run %s (for %ds)", ref.service, run_id, int(ttl_s))
            return "created"
        lease = lease_of(live)
        spec = live.get("spec") or {}
        if lease and lease["holder"] == run_id:
            since = _parse_time(spec.get("renewTime")) or _now()
            if not rewrite and (_now() - since).total_seconds() < ttl_s / 2:
                return "renewed"  # a rerun: nothing to write
            lm.apply(
                _lease_body(
                    ref,
                    live,
                    run_id=run_id,
                    ttl_s=ttl_s,
                    acquired=spec.get("acquireTime") or now,
                    transitions=int(spec.get("leaseTransitions") or 0),
                    annotations=_own_annotations(live),
                )
            )
            return "renewed"
        if lease and not lease["expired"]:
            if until is None:
                until = time.monotonic() + max(0.0, wait_s)
            if time.monotonic() >= until:
                raise LeaseHeld(
                    f"{ref.kind} {ref.namespace}/{ref.service} is being rolled out by run {lease['holder']} "
                    f"(its lease, Lease {ref.name}, expires {lease['expires']}). Fix: wait for that run to finish "
                    "(its exit handler rolls back what it did not promote and releases the lease; `llm-rollout "
                    f"status {ref.service} -n {ref.namespace}` shows it), or, if it died, rerun after the lease "
                    "expires",
                    holder=lease["holder"],
                    expires=lease["expires"],
                )
            log.info("%s: waiting for run %s's rollout to finish", ref.service, lease["holder"])
            _wait_for_change(client, ref, live, until)
            continue
        # A new holder is a transition whether the last one expired or released it (client-go
        # tools/leaderelection/leaderelection.go tryAcquireOrRenew: LeaderTransitions + 1 unless
        # this identity already leads; release keeps the count).
        body = _lease_body(
            ref,
            live,
            run_id=run_id,
            ttl_s=ttl_s,
            acquired=now,
            transitions=int(spec.get("leaseTransitions") or 0) + 1,
            annotations={},
        )
        body["metadata"]["resourceVersion"] = _meta(live)["resourceVersion"]
        try:
            # Forced: the previous holder's manager owns the fields (a released lease keeps its count);
            # the resourceVersion precondition is what keeps two runs from both taking it.
            lm.apply(body, force=True)
        except ConflictError:
            continue  # someone else took it, or the object changed: look again
        if lease is not None:
            log.warning(
                "%s: took over the expired lease of run %s (expired %s)", ref.service, lease["holder"], lease["expires"]
            )
        log.info("%s: rollout lease taken by run %s (for %ds)", ref.service, run_id, int(ttl_s))
        return "taken"


def _set_lease_field(client: KubeClient, ref: ServiceRef, run_id: str, key: str, value: str | None) -> None:
    """Sets (None: removes) one of the holder's annotations on the Lease, keeping its hold."""
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    lease = lease_of(live)
    if live is None or not lease or lease["holder"] != run_id:
        return
    ann = _own_annotations(live)
    if value is None:
        ann.pop(key, None)
    else:
        ann[key] = value
    spec = live.get("spec") or {}
    body = _lease_body(
        ref,
        live,
        run_id=run_id,
        ttl_s=float(spec.get("leaseDurationSeconds") or DEFAULT_LEASE_TTL_S),
        acquired=spec.get("acquireTime") or _micro(_now()),
        transitions=int(spec.get("leaseTransitions") or 0),
        annotations=ann,
    )
    _twin(client, lease_manager(run_id)).apply(body)


def release_lease(client: KubeClient, ref: ServiceRef, run_id: str) -> bool:
    """Releases ``run_id``'s lease (its holder fields and step go; the object and records stay).

    Returns:
        True when ``run_id`` held it.
    """
    if not run_id:
        return False
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    lease = lease_of(live)
    if live is None or not lease or lease["holder"] != run_id:
        return False
    # The holder fields go; the transition count stays (client-go leaderelection.go release keeps
    # LeaderTransitions), so the Lease's history of holders survives a release.
    body = _skeleton(ref, live)
    body["spec"] = {"leaseTransitions": int((live.get("spec") or {}).get("leaseTransitions") or 0)}
    try:
        _twin(client, lease_manager(run_id)).apply(body)
    except ConflictError:
        if client.get_or_none(ref.res, ref.name, ref.namespace) is None:
            return False  # deleted meanwhile (the uid precondition)
        raise
    log.info("%s: rollout lease of run %s released", ref.service, run_id)
    return True


def migrate_legacy(client: KubeClient, ref: ServiceRef) -> bool:
    """Moves a service's lease and records from where earlier versions kept them onto its Lease.

    Earlier versions wrote them as annotations on the InferenceService (``llm-rollout.io/stable``,
    ``history``, ``promoted-*``, ``autoscaling``, ``lease-holder``, ``lease-expires``,
    ``promotion-step``), which KServe copies into the pod template (``predictor.go``
    ``buildObjectMeta``), or on an llm-d group's ``LLMInferenceServiceConfig``. On first contact the
    records are copied onto the Lease (keys it does not have yet), a lease that has not expired
    moves to the Lease with the same holder (the run that took it can still release it), and the
    annotations are removed from the old object by the field managers that wrote them. Rerun-safe:
    every step checks what is done already; with nothing left on the old object it is one read.

    Returns:
        True when something was moved.
    """
    if ref.legacy_res is None:
        return False
    try:
        old = client.get_or_none(ref.legacy_res, ref.legacy_name, ref.namespace)
    except NotFoundError:
        return False  # the old kind is not served here (an llm-d group on a cluster without its CRD)
    ann = _annotations(old)
    records = {k: v for k, v in ann.items() if k in RECORD_KEYS}
    holder = ann.get(LEGACY_LEASE_HOLDER, "")
    step = ann.get(PROMOTION_STEP)
    if old is None or not (records or holder or step):
        return False
    live = client.get_or_none(ref.res, ref.name, ref.namespace)
    have = records_of(live)
    todo = {k: v for k, v in records.items() if k not in have}
    if todo:
        live = _write_record(client, ref, todo)
    expires = _parse_iso(ann.get(LEGACY_LEASE_EXPIRES))
    if holder and expires is not None and expires > _now() and lease_of(live) is None:
        body = _lease_body(
            ref,
            live,
            run_id=holder,
            ttl_s=(expires - _now()).total_seconds(),
            acquired=_micro(_now()),
            transitions=0,
            annotations={PROMOTION_STEP: step} if step else {},
        )
        try:
            _twin(client, lease_manager(holder)).apply(body)
        except ConflictError:
            log.info("%s: a run took the Lease meanwhile; the old lease of run %s is not moved", ref.service, holder)
    skeleton = {
        "apiVersion": ref.legacy_res.api_version,
        "kind": ref.legacy_res.kind,
        "metadata": {
            "name": ref.legacy_name,
            "namespace": ref.namespace,
            "uid": _meta(old)["uid"],
            "labels": {**MANAGED_BY, LABEL_SERVICE: ref.service},
        },
    }
    for manager in [RECORD_MANAGER, *([lease_manager(holder)] if holder else [])]:
        try:
            _twin(client, manager).apply(skeleton)
        except ConflictError:
            return True  # deleted meanwhile (the uid precondition): nothing left to remove
    left = [
        k
        for k in _annotations(client.get_or_none(ref.legacy_res, ref.legacy_name, ref.namespace))
        if k in (*RECORD_KEYS, LEGACY_LEASE_HOLDER, LEGACY_LEASE_EXPIRES, PROMOTION_STEP)
    ]
    if left:
        log.warning(
            "%s: %s %s still carries %s (written by another field manager); remove them by hand",
            ref.service,
            ref.legacy_res.kind,
            ref.legacy_name,
            ", ".join(left),
        )
    log.info(
        "%s: moved the rollout records and lease from %s %s onto Lease %s",
        ref.service,
        ref.legacy_res.kind,
        ref.legacy_name,
        ref.name,
    )
    return True


def rollout_state(client: KubeClient, ref: ServiceRef) -> dict[str, Any] | None:
    """The service's rollout Lease (lock and records) after migrating an old service; None when absent."""
    migrate_legacy(client, ref)
    return client.get_or_none(ref.res, ref.name, ref.namespace)


def _step_value(rec: DeploymentRecord, percent: int, generation: Any, stable_weight: int | None = None) -> str:
    data: dict[str, Any] = {"member": rec.member, "percent": percent, "generation": generation}
    if stable_weight is not None:
        data["stable_weight"] = stable_weight
    return _compact(data)


def _step_of(obj: dict[str, Any] | None, rec: DeploymentRecord) -> dict[str, Any] | None:
    """The promotion step recorded on the Lease ``obj`` for ``rec``'s member, or None."""
    step = _json_annotation(obj, PROMOTION_STEP)
    return step if isinstance(step, dict) and step.get("member") == rec.member else None
