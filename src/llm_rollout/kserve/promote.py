"""Promotion on the ``kserve`` platform (verdict ``pass`` only).

InferenceService, Standard mode: the canary entry's predictor (name included, so KServe keeps its
Deployment and pods) becomes ``spec.predictor`` and the canary entry goes. Knative mode:
``canaryTrafficPercent`` is removed. LLMInferenceService group: the new member's weight is raised
(in the steps of ``canary.steps``, with the gate re-run at each, :mod:`llm_rollout.kserve.gate`),
the old member's weight goes to 0, then the old member is deleted (or stopped with
``serving.kserve.io/stop``). A first rollout is just marked stable. The promotion is recorded
(:mod:`llm_rollout.kserve.records`) and the run's lease released (:mod:`llm_rollout.kserve.lease`).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import (
    LABEL_REVISION,
    STOP_ANNOTATION,
)
from llm_rollout.kserve.deploy import preflight
from llm_rollout.kserve.lease import PROMOTION_STEP, _set_lease_field, _step_of, _step_value, release_lease
from llm_rollout.kserve.objects import (
    _canary_entry,
    _isvc_object,
    _isvc_readiness,
    _llmisvc_from_live,
    _member_of,
    _wait,
    _weight,
)
from llm_rollout.kserve.records import (
    STABLE,
    ServiceRef,
    _annotations,
    _compact,
    _json_annotation,
    _labels,
    _meta,
    _one_line,
    _pred_name,
    _record_promotion,
    service_ref,
)
from llm_rollout.kserve.rollback import _rollback
from llm_rollout.kserve.wait import Readiness
from llm_rollout.kube import (
    INFERENCE_SERVICES,
    LLM_INFERENCE_SERVICES,
    KubeClient,
)
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)

GATE_REASON_LIMIT = 900
"""A failed gate's reason in the rollback record and the error (the traffic proof's cause and fix fit)."""


class PromotionConflict(PermanentError):
    """The objects changed since deploy (someone else edited the stable revision): nothing was forced."""


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


def _refuse(rec: DeploymentRecord, verdict: str, summary: str) -> PermanentError:
    why = f" ({_one_line(summary, 300)})" if summary else ""
    return PermanentError(
        f"refusing to promote {rec.member}: the validation verdict is {verdict!r}, not 'pass'{why}. "
        "Fix: roll it back (the rollback-model step does; or `llm-rollout rollback`), then fix the model, "
        "the runtime or the SLO and run again"
    )


def promote(
    spec: RolloutSpec,
    client: KubeClient,
    record: DeploymentRecord,
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
    rec = record
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
