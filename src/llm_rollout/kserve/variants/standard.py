"""Standard mode (formerly RawDeployment): a new revision is a ``spec.canary[]`` entry.

KServe >= 0.20: each canary entry has its own predictor, Deployment and Service
(``<isvc>-<canary>-predictor``, kserve ``constants.PredictorServiceName``); the entry's
``trafficPercent`` takes effect only with Gateway API. Promotion makes the entry's predictor (name
included, so its pods stay) the ``spec.predictor``. The rules KServe's webhook enforces are in
``pkg/apis/serving/v1beta1/inference_service_validation.go`` (``validateCanarySpecs``,
``validatePredictorNameChange``).
"""

from __future__ import annotations

import copy
from typing import Any

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve import builders
from llm_rollout.kserve.addresses import mapped
from llm_rollout.kserve.builders import Member
from llm_rollout.kserve.records import _meta, _pred_name, find_stable_record
from llm_rollout.kserve.variants.base import Plan, PromotionConflict, Removal
from llm_rollout.kserve.variants.isvc import (
    InferenceServiceVariant,
    _canary_entry,
    _other_canaries,
    canary_address,
)
from llm_rollout.kserve.views import InferenceServiceView, PredictorView
from llm_rollout.kserve.wait import Readiness
from llm_rollout.kube import KubeClient
from llm_rollout.record import DeploymentRecord


class StandardIsvc(InferenceServiceVariant):
    """Standard mode: a new revision is a ``spec.canary[]`` entry with its own predictor and Service
    (KServe >= 0.20; the entry's weight takes effect only with Gateway API)."""

    def need_canary_field(self) -> bool:
        return True

    def after_apply(self, client: KubeClient, applied: dict[str, Any], *, dry_run: bool = False) -> None:
        # The stable's KEDA ScaledObject is ours, not KServe's (builders/keda.py); a canary has none.
        from llm_rollout.kserve.autoscaler import sync_autoscaler

        sync_autoscaler(self.spec, client, applied, dry_run=dry_run)

    def sync_autoscaler(self, client: KubeClient) -> None:
        from llm_rollout.kserve.autoscaler import prune_hpas, sync_autoscaler

        sync_autoscaler(self.spec, client)
        prune_hpas(self.spec, client)  # KServe's HPA of the replaced predictor (class hpa)

    def canary_in_predictor(self, live_pred: dict[str, Any]) -> bool:
        return False

    def check_new_revision(self, new: Member, live_member: str, live_uri: str, live_pred: dict[str, Any]) -> None:
        if live_uri == new.model_uri:
            raise SpecError(
                "model.uri",
                f"the new revision {new.revision} has the same storage URI as the stable predictor {live_member} "
                f"({live_uri}); KServe refuses to promote it, since predictor.name may change only together with the "
                "model (inference_service_validation.go validatePredictorNameChange)",
                "publish the new model under its own URI (a new path or version), then deploy again",
            )
        if live_pred.get("name") and live_pred["name"] == new.name:
            raise SpecError(
                "model.revision",
                f"revision {new.revision} gives the predictor name {new.name}, which the stable predictor already has "
                f"(with {live_uri}); KServe refuses a canary named like the stable predictor "
                "(inference_service_validation.go validateCanarySpecs: 'conflicts with stable predictor name')",
                "give the new model its own revision id (model.revision), or leave it empty to derive one from the URI",
            )

    def canary_object(
        self, plan: Plan, live: dict[str, Any], live_pred: dict[str, Any], stable: Member, canary: Member
    ) -> dict[str, Any]:
        # The stable predictor is copied exactly as it is on the server: applying it changes nothing.
        obj = builders.inference_service(self.spec, stable, canary, stable_predictor=live_pred)
        others = [
            c.get("predictor", {}).get("name")
            for c in InferenceServiceView(live).canaries
            if c.get("predictor", {}).get("name") != canary.name
        ]
        if others:
            plan.notes.append(f"replacing leftover canary entries {others} (from an earlier run that did not finish)")
        plan.readiness_kwargs = {"canary": canary.name, "canary_traffic": canary.traffic_percent}
        return obj

    def canary_url(self, ready: dict[str, Any], member: str, plan: Plan) -> str | None:
        # Its own Service <isvc>-<canary>-predictor (PredictorServiceName); KServe writes no URL for a
        # canary, only canaryStatuses[].ready (reconcileCanaryDeployments), which the wait confirmed.
        if not InferenceServiceView(ready).canary_statuses.get(member, {}).get("ready"):
            return None
        return canary_address(self.spec, member)

    def member_metrics_urls(self, rec: DeploymentRecord) -> tuple[dict[str, str], str]:
        # The stable predictor's address (status.components.predictor) and the canary's
        # (<isvc>-<canary>-predictor) are their own Services (kserve constants.PredictorServiceName),
        # vLLM serving /metrics beside the API.
        if rec.stable is None or not rec.stable.endpoint_url or not rec.endpoint_url:
            return ({}, "the record has no address of its own for the stable and the canary predictor")
        urls = {rec.stable.member: mapped(rec.stable.endpoint_url), rec.member: rec.endpoint_url}
        return {m: u.rstrip("/") + "/metrics" for m, u in urls.items()}, ""

    def check_stable_predictor(self, rec: DeploymentRecord, pred: dict[str, Any], where: str) -> None:
        if rec.stable is None:
            return
        name = _pred_name(self.spec.service_name, pred)
        uri = PredictorView(pred).model_uri
        if name != rec.stable.member or (rec.stable.model_uri and uri != rec.stable.model_uri):
            raise PromotionConflict(
                f"{where}: the stable predictor is now {name} ({uri}), but {rec.member} was validated against "
                f"{rec.stable.member} ({rec.stable.model_uri}); someone else changed it. Nothing was changed. "
                "Fix: check who changed it (kubectl get isvc -o yaml, managedFields), then redeploy"
            )

    def canary_gone(self, live: dict[str, Any], rec: DeploymentRecord) -> bool:
        return _canary_entry(live, rec.member) is None

    def check_still_canary(self, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, where: str) -> None:
        if _canary_entry(live, rec.member) is None:
            raise PermanentError(
                f"{where}: {rec.member} is no longer in spec.canary (rolled back or replaced); nothing to promote. "
                "Fix: redeploy"
            )

    def previous_record(
        self, state: dict[str, Any] | None, rec: DeploymentRecord, pred: dict[str, Any]
    ) -> dict[str, Any] | None:
        if find_stable_record(state) or rec.stable is None:
            return None
        return {
            "member": rec.stable.member,
            "revision": rec.stable.revision,
            "model_uri": rec.stable.model_uri,
            "predictor": pred,
        }

    def step_body(
        self, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, percent: int
    ) -> dict[str, Any]:
        entry = copy.deepcopy(_canary_entry(live, rec.member) or {})
        entry["trafficPercent"] = percent
        return {"predictor": pred, "canary": [entry]}

    def final_body(
        self, rec: DeploymentRecord, live: dict[str, Any], pred: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        entry = _canary_entry(live, rec.member) or {}
        # predictor.name becomes the canary's (its Deployment and pods stay) and the entry goes;
        # the stable's scaling fields come back (a canary has fixed replicas).
        final_pred = builders.promoted_predictor(self.spec, entry.get("predictor") or {})
        body: dict[str, Any] = {"predictor": final_pred}
        others = _other_canaries(live, rec.member)
        if others:
            body["canary"] = others
        return body, final_pred

    def promotion_readiness(
        self, applied: dict[str, Any], canary: str | None = None, gone: str | None = None
    ) -> Readiness:
        traffic = None
        if canary:
            entry = _canary_entry(applied, canary) or {}
            traffic = int(entry.get("trafficPercent") or 0)
        gen = _meta(applied).get("generation")
        return Readiness.inference_service(canary=canary, canary_traffic=traffic, gone_canary=gone, min_generation=gen)

    def remove_canary(
        self,
        client: KubeClient,
        live: dict[str, Any],
        state: dict[str, Any] | None,
        pred: dict[str, Any],
        rec: DeploymentRecord,
    ) -> Removal:
        service = self.spec.service_name
        if _canary_entry(live, rec.member) is None:
            return Removal(False, f"nothing to roll back: {rec.member} is not a canary of {service}")
        body: dict[str, Any] = {"predictor": pred}
        others = _other_canaries(live, rec.member)
        if others:
            body["canary"] = others
        applied = client.apply(self.isvc_object(body))
        from llm_rollout.kserve.autoscaler import prune_hpas

        prune_hpas(self.spec, client, applied)  # KServe leaves the canary's HPA behind (class hpa)
        return Removal(
            True, f"rolled back {rec.member}: removed the canary; {_pred_name(service, pred)} serves all traffic"
        )
