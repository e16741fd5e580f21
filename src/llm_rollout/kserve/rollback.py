"""Rollback on the ``kserve`` platform, the run's exit handler and cancellation.

* :func:`rollback`: the canary entry is removed (Standard), the stable predictor is put back with
  ``canaryTrafficPercent: 0`` (Knative: all traffic on the previous rolled-out revision), the new
  llm-d member's weight goes to 0 and the member is deleted; a first rollout's service is deleted
  so no unvalidated model keeps serving. The stable revision's object is not written.
* :func:`finalize_run` (the exit handler): finds what a run deployed and did not promote by the
  ``llm-rollout.io/run-id`` label, rolls it back and releases the run's lease.
* :func:`rollback_on_termination`: a cancelled run (KFP deletes the step's pod: the kubelet sends
  SIGTERM and waits ``terminationGracePeriodSeconds``, 30 s by default, before SIGKILL) rolls back
  what it deployed before the step exits.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from llm_rollout.errors import RolloutError
from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import (
    LABEL_REVISION,
    LABEL_RUN_ID,
    LABEL_SERVICE,
    STOP_ANNOTATION,
    Member,
)
from llm_rollout.kserve.lease import _step_of, release_lease
from llm_rollout.kserve.objects import _canary_entry, _isvc_object, _llmisvc_from_live, _member_of, _weight
from llm_rollout.kserve.records import (
    STABLE,
    ServiceRef,
    _annotations,
    _json_annotation,
    _labels,
    _meta,
    _one_line,
    _pred_name,
    _record_rollback,
    service_ref,
)
from llm_rollout.kube import (
    INFERENCE_SERVICES,
    LLM_INFERENCE_SERVICES,
    KubeClient,
)
from llm_rollout.procs import Terminated, sigterm_raises
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)


def rollback(
    spec: RolloutSpec,
    client: KubeClient,
    record: DeploymentRecord,
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
    return _rollback(spec, client, record, reason=reason, run_id=run_id)


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
    spec: RolloutSpec,
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
    spec: RolloutSpec,
    client: KubeClient,
    record: DeploymentRecord | None,
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
    try:
        with sigterm_raises():
            yield
    except catch as stopped:
        why = "SIGTERM" if isinstance(stopped, Terminated) else "interrupted"
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if in_main else None
        try:
            if record:
                rec = record
                rollback(spec, client, rec, reason=f"run cancelled ({why})", run_id=run_id or rec.run_id)
            elif run_id:
                finalize_run(spec, client, run_id, state="CANCELLED", error=why)
        except RolloutError as err:
            log.error("rollback after %s failed: %s (the exit handler retries it)", why, err)
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        raise
