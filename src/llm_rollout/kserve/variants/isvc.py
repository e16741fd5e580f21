"""What the two InferenceService variants share: :class:`InferenceServiceVariant`.

Both are an ``InferenceService`` ``<service>`` whose lease and promotion record are on the service's
Lease ``<service>-rollout`` (:mod:`llm_rollout.kserve.records`), never on the InferenceService: KServe
copies its labels and annotations into the pod template (``predictor.go`` ``buildObjectMeta``). The
module-level functions are the shared flow (plan a rollout, promote, roll back); each calls the
mode's hooks (:mod:`.standard`, :mod:`.knative`) where KServe treats the modes differently.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from abc import abstractmethod
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve import builders
from llm_rollout.kserve.addresses import service_address
from llm_rollout.kserve.builders import LABEL_REVISION, Member
from llm_rollout.kserve.lease import PROMOTION_STEP, _set_lease_field, _step_of, _step_value, rollout_state
from llm_rollout.kserve.preflight import preflight
from llm_rollout.kserve.records import (
    ServiceRef,
    _annotations,
    _labels,
    _meta,
    _pred_name,
    find_stable_record,
    service_ref,
)
from llm_rollout.kserve.variants.base import (
    Doc,
    Plan,
    PromoteSteps,
    Promotion,
    PromotionConflict,
    Removal,
    RunGate,
    Variant,
    conditions_summary,
)
from llm_rollout.kserve.views import InferenceServiceView, PredictorView
from llm_rollout.kserve.wait import DELETE_TIMEOUT_S, Readiness, gone_if_terminating, wait_deleted, wait_ready
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient
from llm_rollout.names import isvc_member_name, predictor_service_name
from llm_rollout.platform import Gate
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)


def predictor_address(spec: RolloutSpec, predictor: str = "") -> str:
    """In-cluster address of a predictor's Service, from the name KServe gives it.

    KServe names a predictor's Service ``<isvc>-predictor`` (unnamed) or ``<isvc>-<name>-predictor``
    (a named predictor, every Standard-mode canary) (``constants.PredictorServiceName``), in the
    InferenceService's namespace, port 80 (``http://<svc>.<ns>.svc.<cluster domain>``; the domain is
    ``spec.cluster_domain``). This is where the steps send requests; the status URLs KServe writes
    (``status.url``: the ingress host of ``GenerateDomainName``) only confirm it.
    """
    return service_address(predictor_service_name(spec.service_name, predictor), spec.namespace, spec.cluster_domain)


def canary_address(spec: RolloutSpec, member: str) -> str:
    """In-cluster address of a Standard-mode canary: its own Service ``<isvc>-<canary>-predictor``."""
    return predictor_address(spec, member)


def _plan(v: InferenceServiceVariant, client: KubeClient, new: Member) -> Plan:
    live = client.get_or_none(INFERENCE_SERVICES, v.spec.service_name, v.spec.namespace)
    live = gone_if_terminating(client, INFERENCE_SERVICES, live, timeout_s=DELETE_TIMEOUT_S)  # then a first rollout
    ref = v.ref()  # the stable record is read only when a canary needs it
    return _plan_on(v, live, new, lambda: find_stable_record(client.get_or_none(ref.res, ref.name, ref.namespace)))


def _plan_on(
    v: InferenceServiceVariant, live: dict[str, Any] | None, new: Member, recorded: Callable[[], dict[str, Any]]
) -> Plan:
    """The plan beside the ``live`` InferenceService (``recorded``: the last promotion's stable record)."""
    spec = v.spec
    plan = Plan()
    plan.kind = "InferenceService"
    plan.object_name = spec.service_name
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
    # The revision id: the predictor's own label, else (a service of an earlier version) the
    # InferenceService's label, else what the last promotion recorded for this member.
    stable_record = recorded()
    stable_rev = live_revision(live, live_pred)
    if not stable_rev and stable_record.get("member") == live_member:
        stable_rev = stable_record.get("revision", "")
    v.check_new_revision(new, live_member, live_uri, live_pred)
    stable_name = live_member
    if knative_canary and live_member == new.name:
        # A rerun of this Knative canary: the predictor already holds it; the stable revision is the
        # one the last promotion recorded (nothing else names it once the predictor was replaced).
        stable_name, live_uri = stable_record.get("member", ""), stable_record.get("model_uri", "")
        stable_rev = stable_record.get("revision", "")
    stable_member = Member(name=stable_name, model_uri=live_uri, revision=stable_rev)
    plan.stable = StableRef(
        member=stable_name,
        model_uri=live_uri,
        revision=stable_rev,
        resource_version=view.resource_version,
        endpoint_url=v.stable_address(live_pred),
        generation=view.generation,
    )
    canary = dataclasses.replace(new, traffic_percent=spec.canary.traffic_percent)
    plan.obj = v.canary_object(plan, live, live_pred, stable_member, canary)
    plan.canary = True
    plan.traffic_percent = spec.canary.traffic_percent
    return plan


def live_revision(live: dict[str, Any] | None, pred: dict[str, Any]) -> str:
    """A live predictor's revision id: its own label, else the InferenceService's (an earlier version's)."""
    return PredictorView(pred).revision or InferenceServiceView(live).labels.get(LABEL_REVISION, "")


def _canary_entry(live: dict[str, Any], member: str) -> dict[str, Any] | None:
    return InferenceServiceView(live).canary_entry(member)


def _check_unchanged(
    v: InferenceServiceVariant, rec: DeploymentRecord, live: dict[str, Any], state: dict[str, Any] | None
) -> None:
    """Raises PromotionConflict when the InferenceService changed under us since deploy
    (``state``: the rollout Lease, where a stepped promotion recorded the generation it wrote)."""
    spec = v.spec
    where = f"InferenceService {spec.namespace}/{spec.service_name}"
    pred = InferenceServiceView(live).predictor
    gen = _meta(live).get("generation")
    step = _step_of(state, rec)
    expected_gen = step.get("generation") if step else rec.generation
    v.check_stable_predictor(rec, pred, where)
    if expected_gen is not None and gen != expected_gen:
        raise PromotionConflict(
            f"{where}: its spec changed since {rec.member} was deployed (generation {expected_gen} -> {gen}); "
            "someone else edited it. Nothing was changed. Fix: check the change (managedFields), then redeploy "
            "so that validation sees what would be promoted"
        )


def _promoted(
    v: InferenceServiceVariant, rec: DeploymentRecord, live: dict[str, Any], state: dict[str, Any] | None
) -> bool:
    spec = v.spec
    pred = InferenceServiceView(live).predictor
    if _pred_name(spec.service_name, pred) != rec.member:
        return False
    if rec.stable is None:
        return find_stable_record(state).get("member") == rec.member
    return v.canary_gone(live, rec)


def _promote(
    v: InferenceServiceVariant,
    client: KubeClient,
    rec: DeploymentRecord,
    ref: ServiceRef,
    gate: Gate | None,
    run_gate: RunGate,
    timeout_s: float | None,
) -> Promotion:
    spec = v.spec
    where = f"InferenceService {spec.namespace}/{spec.service_name}"
    state = rollout_state(client, ref)
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        raise PromotionConflict(f"{where} is gone (deleted since {rec.member} was deployed); nothing to promote")
    if _promoted(v, rec, live, state):
        return Promotion(
            "none",
            f"already promoted: {rec.member} is the stable revision of {spec.service_name}",
            rec.member,
            rec.stable.member if rec.stable else None,
            served={"predictor": InferenceServiceView(live).spec.get("predictor")},
            record=True,
        )
    pred = copy.deepcopy(InferenceServiceView(live).predictor)
    if rec.stable is None:
        # First rollout: the revision already takes all traffic; a pass marks it stable.
        if _pred_name(spec.service_name, pred) != rec.member:
            raise PromotionConflict(
                f"{where}: its predictor is now {_pred_name(spec.service_name, pred)}, not the validated {rec.member}; "
                "someone else replaced it. Nothing was changed"
            )
        _check_unchanged(v, rec, live, state)
        return Promotion(
            "promote",
            f"promoted {rec.member} ({rec.model_uri}): first rollout of {spec.service_name}, now stable",
            rec.member,
            served={"predictor": pred},
        )
    v.check_still_canary(live, pred, rec, where)
    _check_unchanged(v, rec, live, state)
    previous_record = v.previous_record(state, rec, pred)

    # KServe's webhook judges the promoted object before the first traffic step moves anything.
    preflight(client, [v.isvc_object(v.final_body(rec, live, pred)[0])], step="promote")
    steps = v.traffic_steps(rec, gate)
    for percent in steps:
        body = v.step_body(live, pred, rec, percent)
        applied = client.apply(v.isvc_object(body))
        _set_lease_field(
            client, ref, rec.run_id, PROMOTION_STEP, _step_value(rec, percent, _meta(applied).get("generation"))
        )
        v.wait(client, spec.service_name, v.promotion_readiness(applied, canary=rec.member), timeout_s)
        run_gate(percent)
        live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)

    body, final_pred = v.final_body(rec, live, pred)
    applied = client.apply(v.isvc_object(body))
    log.info(
        "%s: %s is the predictor now (generation %s)", spec.service_name, rec.member, _meta(applied).get("generation")
    )
    v.wait(client, spec.service_name, v.promotion_readiness(applied, gone=rec.member), timeout_s)
    return Promotion(
        "promote",
        f"promoted {rec.member} ({rec.model_uri}) in {spec.service_name}; replaced {rec.stable.member}",
        rec.member,
        rec.stable.member,
        served={"predictor": final_pred},
        previous_record=previous_record,
    )


def _rollback(v: InferenceServiceVariant, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef) -> Removal:
    spec = v.spec
    state = rollout_state(client, ref)
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        return Removal(False, f"nothing to roll back: InferenceService {spec.service_name} does not exist")
    if find_stable_record(state).get("member") == rec.member:
        return Removal(False, f"{rec.member} is already promoted; it is not demoted")
    pred = copy.deepcopy(InferenceServiceView(live).predictor)
    if rec.stable is None:
        if _pred_name(spec.service_name, pred) != rec.member:
            return Removal(False, f"nothing to roll back: {rec.member} is not the predictor of {spec.service_name}")
        client.delete(INFERENCE_SERVICES, spec.service_name, spec.namespace)
        # The delete is asynchronous: KServe's inferenceservice.finalizers keeps the object until
        # its controller has cleaned up (controller.go Reconcile); the next run must find it gone.
        wait_deleted(client, INFERENCE_SERVICES, spec.service_name, spec.namespace, timeout_s=DELETE_TIMEOUT_S)
        return Removal(
            True, f"deleted InferenceService {spec.service_name}: its first revision {rec.member} did not pass"
        )
    return v.remove_canary(client, live, state, pred, rec)


class InferenceServiceVariant(Variant):
    """An ``InferenceService`` ``<service>``: what Standard and Knative mode share.

    Its lease and promotion record are on the Lease ``<service>-rollout``; the first rollout creates
    the InferenceService, whose metadata then never changes during a rollout; status,
    the revisions of a run and the restore of the previous stable predictor read the same fields in
    both modes (Knative's ``canaryTrafficPercent`` shows in the data, not in the mode).
    """

    kind = "InferenceService"

    def ref(self) -> ServiceRef:
        s = self.spec
        # Earlier versions kept lease and records on the InferenceService itself (migrated).
        return service_ref("InferenceService", s.service_name, s.namespace, INFERENCE_SERVICES, s.service_name)

    def runtime_object(self) -> dict[str, Any] | None:
        return builders.serving_runtime(self.spec)

    def member_name(self, revision: str) -> str:
        return isvc_member_name(revision)

    # deploy

    def plan(self, client: KubeClient, new: Member) -> Plan:
        return _plan(self, client, new)

    def plan_on(self, live: list[Doc], new: Member, recorded: Doc | None = None) -> Plan:
        return _plan_on(self, live[0] if live else None, new, lambda: dict(recorded or {}))

    def serving_after(self, live: list[Doc], plan: Plan) -> list[Doc]:
        return [plan.obj]  # the one InferenceService, with the canary in it

    def promoted_objects(self, live: list[Doc], rec: DeploymentRecord) -> list[Doc]:
        if rec.stable is None:
            return live[:1]  # a first rollout is only marked stable; else _promote's last write:
        return [self.isvc_object(self.final_body(rec, live[0], InferenceServiceView(live[0]).predictor)[0])]

    def readiness(self, plan: Plan, generation: int | None) -> Readiness:
        kwargs = dict(plan.readiness_kwargs)
        if plan.live_generation is not None and generation == plan.live_generation:
            kwargs.pop("knative_after", None)  # a rerun changed nothing: no new revision comes
        return Readiness.inference_service(min_generation=generation, **kwargs)

    def addresses(self, ready: dict[str, Any], plan: Plan, new: Member) -> tuple[str | None, str | None]:
        # From the names KServe (and Knative) create, each confirmed by what the status says.
        # The service's own address stays what KServe writes (status.url, the ingress host of
        # GenerateDomainName): production traffic arrives there and the canary weights split it.
        view = InferenceServiceView(ready)
        entry = predictor_address(self.spec, view.predictor.get("name") or "")
        self.confirm_address(view, entry)
        if plan.canary:
            return self.canary_url(ready, new.name, plan), view.url
        if not view.predictor_status.get("url"):
            return None, view.url  # KServe sets the component URL only once it is ready (PropagateRawStatus)
        return entry, view.url

    def confirm_address(self, view: InferenceServiceView, entry: str) -> None:
        """Checks the address KServe wrote (``status.address``, ``createAddress``: the entry Service's
        cluster-local host) against the one computed from the names, which differ only when
        ``cluster_domain`` is not the cluster's."""
        host = urlsplit(entry).hostname
        written = view.address_host
        if written and written != host and written.split(".svc.")[0] == host.split(".svc.")[0]:
            raise SpecError(
                "cluster_domain",
                f"KServe reports the service at {written}, but the spec's cluster domain gives {host}",
                f"set cluster_domain to {written.split('.svc.', 1)[1]!r} (the cluster's DNS domain)",
            )

    def stable_address(self, live_pred: dict[str, Any]) -> str | None:
        """Where the stable revision alone answers while a canary is validated."""
        return predictor_address(self.spec, live_pred.get("name") or "")

    def stable_serves(self, client: KubeClient, holder: dict[str, Any] | None, stable: dict[str, Any]) -> bool:
        live = client.get_or_none(INFERENCE_SERVICES, self.spec.service_name, self.spec.namespace)
        return _pred_name(self.spec.service_name, InferenceServiceView(live).predictor) == stable["member"]

    # promote / rollback

    def promote(self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, steps: PromoteSteps) -> Promotion:
        return _promote(self, client, rec, ref, steps.gate, steps.run_gate, steps.timeout_s)

    def rollback(
        self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, restore_stable_weight: int | None
    ) -> Removal:
        return _rollback(self, client, rec, ref)

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
        client.apply(self.isvc_object(body))
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
        stable_rec = find_stable_record(rollout_state(client, self.ref()))
        pred_ref = StableRef(
            member=_pred_name(spec.service_name, pred),
            model_uri=PredictorView(pred).model_uri,
            revision=live_revision(live, pred),
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
                    revision=live_revision(live, pred),
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
        name = self.spec.service_name
        live = client.get(INFERENCE_SERVICES, name, self.spec.namespace)
        view = InferenceServiceView(live)
        pred = view.predictor
        readiness = conditions_summary(live, own_generation=False)
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
                "revision": live_revision(live, pred) if knative_pct is None else "",
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
                    "revision": PredictorView(cp).revision,
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
        live = client.get(INFERENCE_SERVICES, name, namespace)
        body = {k: v for k, v in (live.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = copy.deepcopy(pred)
        # The metadata stays as it is (KServe copies it into the pod template); the revision id
        # travels on the predictor's own labels.
        labels = {k: v for k, v in _labels(live).items() if k != LABEL_REVISION}
        annotations = {k: v for k, v in _annotations(live).items() if k.startswith("serving.kserve.io/")}
        obj = {
            "apiVersion": live["apiVersion"],
            "kind": live["kind"],
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

    def isvc_object(self, body: dict[str, Any]) -> dict[str, Any]:
        """The InferenceService as the main field manager writes it, with ``body`` as its spec.

        Its metadata is the same in every phase of a rollout (:func:`builders.inference_service`):
        KServe copies it into the pod template (``predictor.go`` ``buildObjectMeta``).
        """
        obj = builders.inference_service(self.spec, Member("predictor", "", ""))
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
    def canary_url(self, ready: dict[str, Any], member: str, plan: Plan) -> str | None:
        """The canary's own address once ready (from the names KServe creates, confirmed by the status)."""

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
        self, state: dict[str, Any] | None, rec: DeploymentRecord, pred: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The stable record of the revision being replaced, when no promotion recorded one (``state``:
        the rollout Lease)."""
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
        self,
        client: KubeClient,
        live: dict[str, Any],
        state: dict[str, Any] | None,
        pred: dict[str, Any],
        rec: DeploymentRecord,
    ) -> Removal:
        """Takes the canary ``rec`` away; the stable predictor serves all traffic again (``state``: the
        rollout Lease with the records)."""


def _other_canaries(live: dict[str, Any], member: str) -> list[dict[str, Any]]:
    return InferenceServiceView(live).other_canaries(member)
