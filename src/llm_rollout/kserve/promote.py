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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from llm_rollout.autoscaling import Capacity, autoscaling_evidence, check_capacity_drop, with_target
from llm_rollout.errors import PermanentError
from llm_rollout.kserve.lease import release_lease
from llm_rollout.kserve.records import _one_line, _record_promotion, find_stable_record
from llm_rollout.kserve.rollback import RolledBack, _rollback
from llm_rollout.kserve.variants import variant_for
from llm_rollout.kserve.variants.base import PromoteSteps
from llm_rollout.kube import KubeClient
from llm_rollout.names import predictor_service_name
from llm_rollout.platform import Outcome
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec
from llm_rollout.validation.analysis_steps import live_record, recorded_steps, step_lines

log = logging.getLogger(__name__)

GATE_REASON_LIMIT = 900
"""A failed gate's reason in the rollback record and the error (the traffic proof's cause and fix fit)."""


@dataclass(frozen=True)
class Promoted:
    """What :func:`promote` did.

    Attributes:
        action: ``promote``, or ``none`` (already promoted: a rerun, or a model that already was stable).
        message: One line for the step's log.
        member: The revision promoted.
        previous: The stable revision it replaced (None on a first rollout and on a rerun).
        analysis: The steps' live analyses (:func:`llm_rollout.validation.analysis_steps.live_record`).
    """

    action: Literal["promote", "none"]
    message: str
    member: str
    previous: str | None = None
    analysis: dict[str, Any] = field(default_factory=dict)

    def outcome(self) -> Outcome:
        """As :meth:`llm_rollout.platform.Platform.promote` reports it (the same on both platforms)."""
        stopped = [self.previous] if self.action == "promote" and self.previous else []
        return Outcome(
            action=self.action,
            message=self.message,
            member=self.member,
            stable=self.member,
            stopped=stopped,
            analysis=list(self.analysis.get("analysis", [])),
            analysis_metrics=dict(self.analysis.get("analysis_metrics", {})),
        )


class GateFailed(PermanentError):
    """A stepped promotion's gate did not pass; the new revision was rolled back.

    Attributes:
        percent: The traffic step at which the gate failed.
        result: What the rollback did.
    """

    def __init__(self, message: str, *, percent: int, result: RolledBack) -> None:
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
    capacity: Capacity | None = None,
    gate: Callable[[int], tuple[str, str]] | None = None,
    retire: str = "delete",
    timeout_s: float | None = None,
) -> Promoted:
    """Promotes the validated revision of ``record`` to stable and retires the one it replaces.

    Refuses unless ``verdict`` is ``pass``. Before writing anything it checks that the stable
    revision is still what deploy saw (predictor/member, model, generation): if someone else changed
    it meanwhile it raises :class:`PromotionConflict` and forces nothing. With ``canary.steps`` (or a
    ``gate``) traffic moves in steps; after each, ``gate(percent)`` must return ``("pass", ...)``,
    otherwise the new revision is rolled back and :class:`GateFailed` is raised. Promoting again is
    a no-op. The promotion is recorded on the service, and the run's lease is released.

    With ``scaling.target: auto`` (InferenceService, Standard or Knative mode) the per-replica
    target comes from the measured ``capacity`` times ``scaling.safety_factor``
    (:func:`llm_rollout.autoscaling.autoscaling_evidence`): the promoted predictor's autoscaling is
    applied with it and the evidence recorded (``llm-rollout.io/autoscaling`` and the stable record).
    A capacity more than ``scaling.max_capacity_drop`` below the stable's recorded one is refused
    before anything is written, unless ``scaling.accept_capacity_drop``.

    Args:
        spec: The rollout spec.
        client: The kube client.
        record: The deployment record from deploy.
        verdict: The validation verdict; only ``pass`` promotes.
        summary: Why the verdict was reached (recorded).
        run_id: The run that promotes (recorded).
        metrics: Key metrics of the validation (a few scalars are recorded).
        capacity: The validation's measured capacity (typed; without it, the capacity in
            ``metrics`` as an older caller passed it).
        gate: Re-runs the validation at a traffic step: ``gate(percent) -> (verdict, summary)``.
        retire: ``delete`` the old llm-d member, or ``stop`` it (``serving.kserve.io/stop``).
        timeout_s: Bound of each readiness wait; ``validation.readiness_timeout_s`` when None.

    Returns:
        What was done (``none`` for a rerun), with the revision it replaced.

    Raises:
        PermanentError: The verdict is not ``pass``, the new revision is gone, or (``target: auto``)
            no capacity was measured or it dropped beyond ``scaling.max_capacity_drop``.
        PromotionConflict: The stable revision was changed by someone else since deploy.
        GateFailed: A stepped promotion's gate did not pass (rolled back).
    """
    rec = record
    if verdict != "pass":
        raise _refuse(rec, verdict, summary)
    if rec.already_promoted:
        return Promoted("none", "already promoted", rec.member)
    if retire not in ("delete", "stop"):
        raise PermanentError(f"retire must be 'delete' or 'stop', not {retire!r}")
    measured = capacity if capacity is not None else metrics
    evidence = None if spec.llmd.enabled else autoscaling_evidence(spec.scaling, measured, rec.run_id or run_id)
    if evidence is not None and spec.scaling is not None:
        where = variant_for(spec).ref()
        live = client.get_or_none(where.res, where.name, where.namespace)
        stable_evidence = find_stable_record(live).get("autoscaling")
        check_capacity_drop(spec.scaling, evidence, stable_evidence if isinstance(stable_evidence, dict) else None)
        # The builders render the measured target from here on (promotion's own writes included).
        spec = spec.model_copy(update={"scaling": with_target(spec.scaling, evidence["target"])})
    variant = variant_for(spec)
    ref = variant.ref()
    gate = with_live_analysis(spec, client, rec, gate)

    def run_gate(percent: int, restore_stable_weight: int | None = None) -> None:
        _run_gate(spec, client, rec, gate, percent, restore_stable_weight)

    with recorded_steps() as analysed:
        result = variant.promote(client, rec, ref, PromoteSteps(gate, run_gate, retire, timeout_s))
    live = live_record(analysed)
    if result.recorded:
        served = variant.apply_scaling(client) if evidence is not None else None
        # The promoted predictor's autoscaler (its own Service's series, the measured target); the
        # replaced predictor's goes (Standard: kserve/autoscaler.py, KEDA's ScaledObject or KServe's HPA).
        variant.sync_autoscaler(client)
        _record_promotion(
            client,
            ref,
            rec,
            run_id=run_id,
            summary=summary,
            metrics=metrics,
            # The steps' live analyses ride in the record's extra fields (`llm-rollout status` shows them).
            served={**(served if served is not None else result.served), **live},
            previous=result.previous_record,
            autoscaling=evidence,
        )
    release_lease(client, ref, rec.run_id or run_id)
    log.info("%s: %s", spec.service_name, result.message)
    return Promoted(result.action, result.message, result.member, result.previous, live)


def live_workloads(spec: RolloutSpec, rec: DeploymentRecord) -> tuple[str, str, str]:
    """(flavor, candidate workload, stable workload) for the live analysis' default selectors
    (:func:`llm_rollout.validation.promql.default_selector`).

    llm-d members are the LLMInferenceServices themselves; a Standard-mode predictor runs as
    ``<isvc>-<name>-predictor`` (unnamed: ``<isvc>-predictor``; kserve ``constants.PredictorServiceName``,
    :func:`~llm_rollout.names.predictor_service_name`); a Knative revision is named after the member
    here (a team whose revisions are named otherwise sets ``candidate_selector`` / ``stable_selector``).

    A Standard canary is always a named predictor (its member). The stable one is named only once a
    canary was promoted into it: a first rollout's predictor stays unnamed, its member known from its
    ``llm-rollout.io/member`` label alone, so its workload is the Service deploy recorded as the
    stable's address (``StableRef.endpoint_url``, :func:`~llm_rollout.kserve.variants.isvc.predictor_address`
    of the live predictor), not one derived from the member.
    """
    stable = rec.stable.member if rec.stable else ""
    if spec.llmd.enabled:
        return "llm-d", rec.member, stable
    if spec.deployment_mode == "Knative":
        return "knative", rec.member, stable

    def predictor(member: str) -> str:
        unnamed = predictor_service_name(spec.service_name)  # predictor_member's name for an unnamed one
        return unnamed if member in ("", unnamed) else predictor_service_name(spec.service_name, member)

    return "kserve-standard", predictor(rec.member), _recorded_service(spec, rec) or predictor(stable)


def _recorded_service(spec: RolloutSpec, rec: DeploymentRecord) -> str:
    """The stable predictor's Service from its recorded in-cluster address ``http://<svc>.<ns>.svc...``
    ("" when the record has none, or not of that form, or not one of this service's predictors)."""
    from llm_rollout.kserve.addresses import service_of

    service = service_of(rec.stable.endpoint_url, spec.namespace) if rec.stable and rec.stable.endpoint_url else ""
    unnamed = predictor_service_name(spec.service_name)
    ours = service == unnamed or (service.startswith(f"{spec.service_name}-") and service.endswith("-predictor"))
    return service if ours else ""


def with_live_analysis(
    spec: RolloutSpec,
    client: KubeClient,
    rec: DeploymentRecord,
    gate: Callable[[int], tuple[str, str]] | None,
) -> Callable[[int], tuple[str, str]] | None:
    """``gate`` followed, at each step with an analysis, by the step's live analysis
    (:func:`llm_rollout.validation.analysis_steps.run_step`) once the weight is applied: a failed or (at
    the step's deadline) inconclusive analysis makes the gate say so, and :func:`_run_gate` rolls
    back with its reasons. Without ``validation.analysis.prometheus_url`` the gate is unchanged and
    the log says that no live analysis ran."""
    from llm_rollout import steplog
    from llm_rollout.validation.analysis_steps import gate_answer, no_analysis_note, run_step

    note = no_analysis_note(spec)
    if note:
        steplog.log(f"promote-model: {note}")
    if not spec.validation.analysis.prometheus_url or not spec.canary.steps:
        return gate
    flavor, candidate, stable = live_workloads(spec, rec)
    token = _prometheus_token(spec, client)

    def analysed(percent: int) -> tuple[str, str]:
        verdict, why = gate(percent) if gate is not None else ("pass", "")
        if verdict != "pass":
            return verdict, why
        step = run_step(
            spec, percent, flavor=flavor, candidate=candidate, stable=stable, namespace=spec.namespace, token=token
        )
        if step is None:
            return verdict, why
        for line in step_lines(step):
            steplog.log(f"promote-model: {line}")
        return gate_answer(step)

    return analysed


def _prometheus_token(spec: RolloutSpec, client: KubeClient) -> str:
    """Prometheus' bearer token from ``validation.analysis.token_secret`` ("" without one)."""
    import base64

    ref = spec.validation.analysis.token_secret
    if ref is None:
        return ""
    from llm_rollout.kserve.preflight import SECRETS

    # A Secret is core/v1, served by every API server from its first answer: no grace for a type not
    # served yet (that is for CRDs after a restart; kserve/preflight.py check_model_store reads alike).
    secret = client.without_type_grace().get_or_none(SECRETS, ref.name, spec.namespace)
    data = (secret or {}).get("data") or {}
    if ref.key not in data:
        raise PermanentError(
            f"validation.analysis.token_secret: Secret {spec.namespace}/{ref.name} has no key {ref.key!r} (or is "
            f"missing). Fix: create it (kubectl -n {spec.namespace} create secret generic {ref.name} "
            f"--from-literal={ref.key}=TOKEN) or correct the name and key"
        )
    return base64.b64decode(data[ref.key]).decode().strip()


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
        f"rolled back: {result.message}",
        percent=percent,
        result=result,
    )
