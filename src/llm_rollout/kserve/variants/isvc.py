"""What the two InferenceService variants share: :class:`InferenceServiceVariant`.

Both are an ``InferenceService`` ``<service>`` that carries its own lease and promotion record. The
module-level functions are the shared flow (plan a rollout, promote, roll back); each calls the
mode's hooks (:mod:`.standard`, :mod:`.knative`) where KServe treats the modes differently.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from abc import abstractmethod
from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import LABEL_REVISION, Member
from llm_rollout.kserve.lease import PROMOTION_STEP, _set_lease_field, _step_of, _step_value
from llm_rollout.kserve.preflight import preflight
from llm_rollout.kserve.records import (
    STABLE,
    ServiceRef,
    _annotations,
    _json_annotation,
    _labels,
    _meta,
    _pred_name,
    find_stable_record,
)
from llm_rollout.kserve.variants.base import (
    Doc,
    Plan,
    PromoteSteps,
    PromotionConflict,
    RunGate,
    Variant,
    conditions_summary,
)
from llm_rollout.kserve.views import InferenceServiceView, PredictorView
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient
from llm_rollout.names import isvc_member_name, predictor_service_name
from llm_rollout.platform import Gate
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)


def _status_url(obj: dict[str, Any]) -> str | None:
    return InferenceServiceView(obj).url


def _predictor_url(obj: dict[str, Any]) -> str | None:
    return InferenceServiceView(obj).predictor_url


def canary_address(isvc_name: str, member: str, namespace: str) -> str:
    """In-cluster address of a Standard-mode canary: KServe names its Service ``<isvc>-<canary>-predictor``
    (``constants.PredictorServiceName``)."""
    return f"http://{predictor_service_name(isvc_name, member)}.{namespace}.svc.cluster.local"


def _canary_url(obj: dict[str, Any], member: str) -> str:
    view = InferenceServiceView(obj)
    return view.canary_url(member) or canary_address(view.name, member, view.meta.get("namespace", ""))


def _knative_latest_url(obj: dict[str, Any]) -> str | None:
    return next((t["url"] for t in InferenceServiceView(obj).traffic if t.get("latestRevision") and t.get("url")), None)


def _plan(v: InferenceServiceVariant, client: KubeClient, new: Member) -> Plan:
    spec = v.spec
    plan = Plan()
    plan.kind = "InferenceService"
    plan.object_name = spec.service_name
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    view = InferenceServiceView(live)
    live_pred = view.predictor
    live_member = builders.predictor_member(spec.service_name, live_pred)
    if live is None or not live_pred:
        # First rollout (or a rerun/resume of it): the stable predictor is unnamed, as upstream's.
        plan.obj = builders.inference_service(spec, new)
        return plan
    live_uri = PredictorView(live_pred).model_uri
    knative_canary = v.canary_in_predictor(live_pred)
    if live_member == new.name and live_uri == new.model_uri and not knative_canary:
        # This revision already is the predictor (a rerun of the first rollout, or promoted):
        # re-applying the live predictor changes nothing.
        plan.obj = builders.inference_service(spec, new, stable_predictor=live_pred)
        return plan
    stable_rev = view.labels.get(LABEL_REVISION, "")
    v.check_new_revision(new, live_member, live_uri, live_pred)
    stable_name = live_member
    if knative_canary and live_member == new.name:
        # A rerun of this Knative canary: the predictor already holds it; the stable revision is the
        # one the last promotion recorded (nothing else names it once the predictor was replaced).
        recorded = find_stable_record(live)
        stable_name, live_uri, stable_rev = (recorded.get("member", ""), recorded.get("model_uri", ""), stable_rev)
    stable_member = Member(name=stable_name, model_uri=live_uri, revision=stable_rev)
    plan.stable = StableRef(
        member=stable_name,
        model_uri=live_uri,
        revision=stable_rev,
        resource_version=view.resource_version,
        endpoint_url=_predictor_url(live),
        generation=view.generation,
    )
    canary = dataclasses.replace(new, traffic_percent=spec.canary.traffic_percent)
    obj = v.canary_object(plan, live, live_pred, stable_member, canary)
    obj_labels = obj["metadata"].setdefault("labels", {})
    if stable_rev:
        obj_labels[LABEL_REVISION] = stable_rev
    else:
        obj_labels.pop(LABEL_REVISION, None)
    plan.obj = obj
    plan.canary = True
    plan.traffic_percent = spec.canary.traffic_percent
    return plan


def _isvc_object(spec: RolloutSpec, revision: str, body: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService as the main field manager writes it, with ``body`` as its spec."""
    obj = builders.inference_service(spec, Member("predictor", "", revision))
    if not revision:
        obj["metadata"]["labels"].pop(LABEL_REVISION, None)
    obj["spec"] = body
    return obj


def _canary_entry(live: dict[str, Any], member: str) -> dict[str, Any] | None:
    return InferenceServiceView(live).canary_entry(member)


def _check_unchanged(v: InferenceServiceVariant, rec: DeploymentRecord, live: dict[str, Any]) -> None:
    """Raises PromotionConflict when the InferenceService changed under us since deploy."""
    spec = v.spec
    where = f"InferenceService {spec.namespace}/{spec.service_name}"
    pred = InferenceServiceView(live).predictor
    gen = _meta(live).get("generation")
    step = _step_of(live, rec)
    expected_gen = step.get("generation") if step else rec.generation
    v.check_stable_predictor(rec, pred, where)
    if expected_gen is not None and gen != expected_gen:
        raise PromotionConflict(
            f"{where}: its spec changed since {rec.member} was deployed (generation {expected_gen} -> {gen}); "
            "someone else edited it. Nothing was changed. Fix: check the change (managedFields), then redeploy "
            "so that validation sees what would be promoted"
        )


def _promoted(v: InferenceServiceVariant, rec: DeploymentRecord, live: dict[str, Any]) -> bool:
    spec = v.spec
    pred = InferenceServiceView(live).predictor
    if _pred_name(spec.service_name, pred) != rec.member:
        return False
    if rec.stable is None:
        stable = _json_annotation(live, STABLE) or {}
        return stable.get("member") == rec.member
    return v.canary_gone(live, rec)


def _promote(
    v: InferenceServiceVariant,
    client: KubeClient,
    rec: DeploymentRecord,
    ref: ServiceRef,
    gate: Gate | None,
    run_gate: RunGate,
    timeout_s: float | None,
) -> dict[str, Any]:
    spec = v.spec
    where = f"InferenceService {spec.namespace}/{spec.service_name}"
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        raise PromotionConflict(f"{where} is gone (deleted since {rec.member} was deployed); nothing to promote")
    if _promoted(v, rec, live):
        return {
            "action": "none",
            "message": f"already promoted: {rec.member} is the stable revision of {spec.service_name}",
            "member": rec.member,
            "previous": rec.stable.member if rec.stable else None,
            "record": True,
            "served": {"predictor": InferenceServiceView(live).spec.get("predictor")},
        }
    pred = copy.deepcopy(InferenceServiceView(live).predictor)
    if rec.stable is None:
        # First rollout: the revision already takes all traffic; a pass marks it stable.
        if _pred_name(spec.service_name, pred) != rec.member:
            raise PromotionConflict(
                f"{where}: its predictor is now {_pred_name(spec.service_name, pred)}, not the validated {rec.member}; "
                "someone else replaced it. Nothing was changed"
            )
        _check_unchanged(v, rec, live)
        return {
            "action": "promote",
            "message": f"promoted {rec.member} ({rec.model_uri}): first rollout of {spec.service_name}, now stable",
            "member": rec.member,
            "previous": None,
            "served": {"predictor": pred},
        }
    v.check_still_canary(live, pred, rec, where)
    _check_unchanged(v, rec, live)
    stable_rev = _labels(live).get(LABEL_REVISION, "")
    previous_record = v.previous_record(live, rec, pred)

    # KServe's webhook judges the promoted object before the first traffic step moves anything.
    preflight(client, [v.isvc_object(rec.revision, v.final_body(rec, live, pred)[0])], step="promote")
    steps = v.traffic_steps(rec, gate)
    for percent in steps:
        body = v.step_body(live, pred, rec, percent)
        applied = client.apply(v.isvc_object(stable_rev, body))
        _set_lease_field(
            client, ref, rec.run_id, PROMOTION_STEP, _step_value(rec, percent, _meta(applied).get("generation"))
        )
        v.wait(client, spec.service_name, v.promotion_readiness(applied, canary=rec.member), timeout_s)
        run_gate(percent)
        live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)

    body, final_pred = v.final_body(rec, live, pred)
    applied = client.apply(v.isvc_object(rec.revision, body))
    log.info(
        "%s: %s is the predictor now (generation %s)", spec.service_name, rec.member, _meta(applied).get("generation")
    )
    v.wait(client, spec.service_name, v.promotion_readiness(applied, gone=rec.member), timeout_s)
    return {
        "action": "promote",
        "message": f"promoted {rec.member} ({rec.model_uri}) in {spec.service_name}; replaced {rec.stable.member}",
        "member": rec.member,
        "previous": rec.stable.member,
        "served": {"predictor": final_pred},
        "previous_record": previous_record,
    }


def _rollback(v: InferenceServiceVariant, client: KubeClient, rec: DeploymentRecord) -> tuple[bool, str]:
    spec = v.spec
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        return False, f"nothing to roll back: InferenceService {spec.service_name} does not exist"
    if (_json_annotation(live, STABLE) or {}).get("member") == rec.member:
        return False, f"{rec.member} is already promoted; it is not demoted"
    pred = copy.deepcopy(InferenceServiceView(live).predictor)
    if rec.stable is None:
        if _pred_name(spec.service_name, pred) != rec.member:
            return False, f"nothing to roll back: {rec.member} is not the predictor of {spec.service_name}"
        client.delete(INFERENCE_SERVICES, spec.service_name, spec.namespace)
        return True, f"deleted InferenceService {spec.service_name}: its first revision {rec.member} did not pass"
    stable_rev = _labels(live).get(LABEL_REVISION, rec.stable.revision)
    return v.remove_canary(client, live, pred, rec, stable_rev)


class InferenceServiceVariant(Variant):
    """An ``InferenceService`` ``<service>``: what Standard and Knative mode share.

    The object carries its own lease and promotion record; the first rollout creates it; status,
    the revisions of a run and the restore of the previous stable predictor read the same fields in
    both modes (Knative's ``canaryTrafficPercent`` shows in the data, not in the mode).
    """

    kind = "InferenceService"

    def ref(self) -> ServiceRef:
        s = self.spec
        return ServiceRef("InferenceService", INFERENCE_SERVICES, s.service_name, s.namespace, s.service_name)

    def runtime_object(self) -> dict[str, Any] | None:
        return builders.serving_runtime(self.spec)

    def member_name(self, revision: str) -> str:
        return isvc_member_name(revision)

    # deploy

    def plan(self, client: KubeClient, new: Member) -> Plan:
        return _plan(self, client, new)

    def readiness(self, plan: Plan, generation: int | None) -> Readiness:
        kwargs = dict(plan.readiness_kwargs)
        if plan.live_generation is not None and generation == plan.live_generation:
            kwargs.pop("knative_after", None)  # a rerun changed nothing: no new revision comes
        return Readiness.inference_service(min_generation=generation, **kwargs)

    def addresses(self, ready: dict[str, Any], plan: Plan, new: Member) -> tuple[str | None, str | None]:
        endpoint = self.canary_url(ready, new.name) if plan.canary else _predictor_url(ready)
        return endpoint, _status_url(ready)

    def stable_serves(self, client: KubeClient, holder: dict[str, Any] | None, stable: dict[str, Any]) -> bool:
        return _pred_name(self.spec.service_name, InferenceServiceView(holder).predictor) == stable["member"]

    # promote / rollback

    def promote(self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, steps: PromoteSteps) -> Doc:
        return _promote(self, client, rec, ref, steps.gate, steps.run_gate, steps.timeout_s)

    def rollback(
        self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, restore_stable_weight: int | None
    ) -> tuple[bool, str]:
        return _rollback(self, client, rec)

    def apply_scaling(self, client: KubeClient) -> dict[str, Any] | None:
        # The promoted predictor keeps what was validated and gets the spec's scaling fields
        # (builders.promoted_predictor); a first rollout and a Knative promotion never rebuilt them.
        spec = self.spec
        live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)
        pred = InferenceServiceView(live).predictor
        new = builders.promoted_predictor(spec, pred)
        if new == pred:
            return {"predictor": pred}
        body = copy.deepcopy(InferenceServiceView(live).spec)
        body["predictor"] = new
        client.apply(self.isvc_object(_labels(live).get(LABEL_REVISION, ""), body))
        log.info("%s: autoscaling re-applied with the measured target", spec.service_name)
        return {"predictor": new}

    def revisions_of_run(self, client: KubeClient, run_id: str, base: dict[str, Any]) -> list[DeploymentRecord]:
        spec = self.spec
        label = builders.run_label(run_id)
        out: list[DeploymentRecord] = []
        live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
        if live is None:
            return out
        view = InferenceServiceView(live)
        pred = view.predictor
        stable_rec = _json_annotation(live, STABLE) or {}
        pred_ref = StableRef(
            member=_pred_name(spec.service_name, pred),
            model_uri=PredictorView(pred).model_uri,
            revision=view.labels.get(LABEL_REVISION, ""),
        )
        for entry in view.canaries:
            cp = entry.get("predictor") or {}
            if PredictorView(cp).run_id == label:
                out.append(
                    DeploymentRecord(
                        kind="InferenceService",
                        member=cp.get("name", ""),
                        revision="",
                        model_uri=PredictorView(cp).model_uri,
                        canary=True,
                        stable=pred_ref,
                        **base,
                    )
                )
        if PredictorView(pred).run_id == label and stable_rec.get("member") != _pred_name(spec.service_name, pred):
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
            if not knative_canary and view.canaries:
                return out  # a stable predictor with canaries is not a first rollout
            out.append(
                DeploymentRecord(
                    kind="InferenceService",
                    member=_pred_name(spec.service_name, pred),
                    revision=_labels(live).get(LABEL_REVISION, ""),
                    model_uri=PredictorView(pred).model_uri,
                    canary=knative_canary,
                    stable=stable
                    or (
                        StableRef(member=_pred_name(spec.service_name, pred), model_uri="") if knative_canary else None
                    ),
                    **base,
                )
            )
        return out

    # status / restore

    def status_rows(
        self, client: KubeClient, holder: dict[str, Any] | None, stable: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        assert holder is not None
        name = self.spec.service_name
        view = InferenceServiceView(holder)
        pred = view.predictor
        readiness = conditions_summary(holder, own_generation=False)
        canaries = view.canaries
        knative_pct = PredictorView(pred).canary_traffic_percent
        canary_status = view.canary_statuses
        canary_total = sum(int(c.get("trafficPercent") or 0) for c in canaries)
        revisions: list[dict[str, Any]] = []
        if knative_pct is not None:
            prev = next((t for t in view.traffic if not t.get("latestRevision")), {})
            revisions.append(
                {
                    "member": (stable or {}).get("member") or prev.get("revisionName") or "previous revision",
                    "role": "stable",
                    "model_uri": (stable or {}).get("model_uri", ""),
                    "revision": (stable or {}).get("revision", ""),
                    "traffic_percent": 100 - int(knative_pct),
                    "ready": True,
                    "reason": "",
                }
            )
        revisions.append(
            {
                "member": _pred_name(name, pred),
                "role": "canary" if knative_pct is not None else "stable",
                "model_uri": PredictorView(pred).model_uri,
                "revision": view.labels.get(LABEL_REVISION, "") if knative_pct is None else "",
                "run_id": PredictorView(pred).run_id,
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
                    "model_uri": PredictorView(cp).model_uri,
                    "revision": "",
                    "run_id": PredictorView(cp).run_id,
                    "traffic_percent": int(entry.get("trafficPercent") or 0),
                    "ready": bool(cs.get("ready")),
                    "reason": "" if cs.get("ready") else "canary not ready",
                }
            )
        return revisions, view.status.get("url")

    def restore(self, client: KubeClient, holder: Doc, previous: Doc, current: Doc, timeout_s: float) -> None:
        name, namespace = self.spec.service_name, self.spec.namespace
        pred = previous.get("predictor")
        if not pred:
            raise PermanentError(f"{name}: the previous stable record has no predictor to restore")
        body = {k: v for k, v in (holder.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = copy.deepcopy(pred)
        labels = {**_labels(holder), LABEL_REVISION: previous.get("revision") or ""}
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

    # what Standard and Knative mode do differently

    def isvc_object(self, revision: str, body: dict[str, Any]) -> dict[str, Any]:
        """The InferenceService as the main field manager writes it, with ``body`` as its spec."""
        obj = builders.inference_service(self.spec, Member("predictor", "", revision))
        if not revision:
            obj["metadata"]["labels"].pop(LABEL_REVISION, None)
        obj["spec"] = body
        return obj

    @abstractmethod
    def canary_in_predictor(self, live_pred: dict[str, Any]) -> bool:
        """The live predictor is itself a canary (Knative) rather than the stable revision."""

    @abstractmethod
    def check_new_revision(self, new: Member, live_member: str, live_uri: str, live_pred: dict[str, Any]) -> None:
        """Refuses a new revision KServe would refuse to promote (nothing written yet)."""

    @abstractmethod
    def canary_object(
        self, plan: Plan, live: dict[str, Any], live_pred: dict[str, Any], stable: Member, canary: Member
    ) -> dict[str, Any]:
        """The InferenceService with ``canary`` beside ``stable``; fills the plan's readiness."""

    @abstractmethod
    def canary_url(self, ready: dict[str, Any], member: str) -> str | None:
        """The canary's own address once ready."""

    @abstractmethod
    def check_stable_predictor(self, rec: DeploymentRecord, pred: dict[str, Any], where: str) -> None:
        """Raises PromotionConflict when the stable predictor is not the one ``rec`` was validated against."""

    @abstractmethod
    def canary_gone(self, live: dict[str, Any], rec: DeploymentRecord) -> bool:
        """``rec`` no longer is a canary of the live object (promoted, when it is the predictor)."""

    @abstractmethod
    def check_still_canary(self, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, where: str) -> None:
        """Raises when ``rec`` is no longer the canary (rolled back or replaced)."""

    def previous_record(
        self, live: dict[str, Any], rec: DeploymentRecord, pred: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The stable record of the revision being replaced, when no promotion recorded one."""
        return None

    @abstractmethod
    def step_body(
        self, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, percent: int
    ) -> dict[str, Any]:
        """The InferenceService spec with ``percent`` of the traffic on ``rec``."""

    @abstractmethod
    def final_body(
        self, rec: DeploymentRecord, live: dict[str, Any], pred: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The InferenceService spec after promotion (and the new predictor)."""

    @abstractmethod
    def promotion_readiness(
        self, applied: dict[str, Any], canary: str | None = None, gone: str | None = None
    ) -> Readiness:
        """What the status must show after a promotion write (freshness is read from what the controller
        writes for this change, not from observedGeneration: see :mod:`llm_rollout.kserve.wait`)."""

    @abstractmethod
    def remove_canary(
        self, client: KubeClient, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, stable_rev: str
    ) -> tuple[bool, str]:
        """Takes the canary ``rec`` away; the stable predictor serves all traffic again."""


def _other_canaries(live: dict[str, Any], member: str) -> list[dict[str, Any]]:
    return InferenceServiceView(live).other_canaries(member)
