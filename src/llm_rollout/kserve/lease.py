"""The rollout lease: one rollout of a service at a time.

``llm-rollout.io/lease-holder`` (run id) and ``llm-rollout.io/lease-expires`` on the service object
(:class:`~llm_rollout.kserve.records.ServiceRef`), taken in :func:`llm_rollout.kserve.deploy.deploy`
and released by promote, rollback or the exit handler. Because every run has its own field manager,
a second run's apply of a different holder is a server-side apply *conflict*; an expired lease is
taken over with ``force`` under a ``resourceVersion`` precondition, so two runs taking over at once
cannot both win. A first InferenceService rollout creates the object with the lease in the same
write. ``llm-rollout.io/promotion-step`` (beside the lease) remembers how far a stepped promotion got,
so a rerun continues from there.
"""

from __future__ import annotations

import copy
import logging
import time
from datetime import timedelta
from typing import Any

from llm_rollout.errors import PermanentError, TransientError
from llm_rollout.kserve.builders import ANNOTATION_PREFIX
from llm_rollout.kserve.records import (
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
)
from llm_rollout.kube import ConflictError, KubeClient, WatchExpired
from llm_rollout.names import short_hash
from llm_rollout.record import DeploymentRecord

log = logging.getLogger(__name__)

LEASE_MANAGER_PREFIX = "llm-rollout-lease-"
"""Field manager of a run's lease: this prefix + a hash of the run id."""


DEFAULT_LEASE_TTL_S = 6 * 3600.0
"""A lease older than this is taken over (a run that died without its exit handler)."""


LEASE_HOLDER = f"{ANNOTATION_PREFIX}lease-holder"


LEASE_EXPIRES = f"{ANNOTATION_PREFIX}lease-expires"


PROMOTION_STEP = f"{ANNOTATION_PREFIX}promotion-step"


LEASE_KEYS = (LEASE_HOLDER, LEASE_EXPIRES, PROMOTION_STEP)


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
    ref: ServiceRef,
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
        ref: Where the service keeps its lease (its variant's :meth:`~llm_rollout.kserve.variants.base.Variant.ref`).
        client: The kube client.
        run_id: The run taking it.
        ttl_s: How long the lease lasts without renewal.
        wait_s: How long to wait for another run's lease to be released or to expire, from the
            first read that finds it held (a slow API server does not eat the wait; 0: no wait).
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
    lm = _twin(client, lease_manager(run_id))
    until: float | None = None  # the wait starts when another run's lease is first seen, not before our first read
    expires = _iso(_now() + timedelta(seconds=ttl_s))
    lease_ann = {LEASE_HOLDER: run_id, LEASE_EXPIRES: expires}
    while True:
        live = client.get_or_none(ref.res, ref.name, ref.namespace)
        if live is None:
            if not ref.lease_creates and first_object is None:
                return "none"
            body = _skeleton(ref) if ref.lease_creates or first_object is None else copy.deepcopy(first_object)
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
            if until is None:
                until = time.monotonic() + max(0.0, wait_s)
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


def _step_value(rec: DeploymentRecord, percent: int, generation: Any, stable_weight: int | None = None) -> str:
    data: dict[str, Any] = {"member": rec.member, "percent": percent, "generation": generation}
    if stable_weight is not None:
        data["stable_weight"] = stable_weight
    return _compact(data)


def _step_of(obj: dict[str, Any] | None, rec: DeploymentRecord) -> dict[str, Any] | None:
    step = _json_annotation(obj, PROMOTION_STEP)
    return step if isinstance(step, dict) and step.get("member") == rec.member else None
