"""Knative mode: a new revision goes into the predictor with ``canaryTrafficPercent``.

Knative keeps the previous rolled-out revision serving the rest of the traffic and gives it no
address of its own; promotion removes ``canaryTrafficPercent``, rollback puts the stable predictor
back with ``canaryTrafficPercent: 0`` (all traffic on the previous revision).
"""

from __future__ import annotations

import copy
from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import LABEL_REVISION, Member
from llm_rollout.kserve.records import STABLE, _json_annotation, _labels, _meta, _pred_name
from llm_rollout.kserve.variants.base import Plan
from llm_rollout.kserve.variants.isvc import (
    InferenceServiceVariant,
    _knative_latest_url,
    _predictor_url,
)
from llm_rollout.kserve.views import InferenceServiceView, PredictorView
from llm_rollout.kserve.wait import Readiness
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient
from llm_rollout.record import DeploymentRecord


class KnativeIsvc(InferenceServiceVariant):
    """Knative mode: a new revision goes into the predictor with ``canaryTrafficPercent``; Knative keeps
    the previous rolled-out revision serving the rest (and gives it no address of its own)."""

    def canary_in_predictor(self, live_pred: dict[str, Any]) -> bool:
        return live_pred.get("canaryTrafficPercent") is not None

    def check_new_revision(self, new: Member, live_member: str, live_uri: str, live_pred: dict[str, Any]) -> None:
        return None  # a Knative revision is the predictor itself: no canary name to clash with

    def canary_object(
        self, plan: Plan, live: dict[str, Any], live_pred: dict[str, Any], stable: Member, canary: Member
    ) -> dict[str, Any]:
        obj = builders.inference_service(self.spec, stable, canary)
        view = InferenceServiceView(live)
        plan.readiness_kwargs = {
            "knative_canary": True,
            "knative_percent": canary.traffic_percent,
            # our write makes a new revision; a status still naming the old one is stale
            "knative_after": view.predictor_status.get("latestCreatedRevision"),
        }
        plan.live_generation = view.generation
        return obj

    def canary_url(self, ready: dict[str, Any], member: str) -> str | None:
        return _knative_latest_url(ready) or _predictor_url(ready)

    def member_metrics_urls(self, rec: DeploymentRecord) -> tuple[dict[str, str], str]:
        return (
            {},
            "Knative splits traffic between revisions itself and gives the stable revision no address of its own",
        )

    def check_stable_predictor(self, rec: DeploymentRecord, pred: dict[str, Any], where: str) -> None:
        return None  # the predictor holds the canary; the stable revision is Knative's previous one

    def canary_gone(self, live: dict[str, Any], rec: DeploymentRecord) -> bool:
        return PredictorView(InferenceServiceView(live).predictor).canary_traffic_percent is None

    def check_still_canary(self, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, where: str) -> None:
        if _pred_name(self.spec.service_name, pred) != rec.member or pred.get("canaryTrafficPercent") is None:
            raise PermanentError(
                f"{where}: {rec.member} is no longer the canary (rolled back or replaced); nothing to promote. "
                "Fix: redeploy"
            )

    def step_body(
        self, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, percent: int
    ) -> dict[str, Any]:
        return {**(live.get("spec") or {}), "predictor": {**pred, "canaryTrafficPercent": percent}}

    def final_body(
        self, rec: DeploymentRecord, live: dict[str, Any], pred: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        final_pred = {k: v for k, v in pred.items() if k != "canaryTrafficPercent"}
        body = {k: v for k, v in (live.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = final_pred
        return body, final_pred

    def promotion_readiness(
        self, applied: dict[str, Any], canary: str | None = None, gone: str | None = None
    ) -> Readiness:
        pct = PredictorView(InferenceServiceView(applied).predictor).canary_traffic_percent
        return Readiness.inference_service(
            knative_canary=pct is not None,
            knative_percent=100 if pct is None else pct,
            min_generation=_meta(applied).get("generation"),
        )

    def remove_canary(
        self, client: KubeClient, live: dict[str, Any], pred: dict[str, Any], rec: DeploymentRecord, stable_rev: str
    ) -> tuple[bool, str]:
        assert rec.stable is not None
        if _pred_name(self.spec.service_name, pred) != rec.member:
            return False, f"nothing to roll back: {rec.member} is not the canary of {self.spec.service_name}"
        stable = _json_annotation(live, STABLE) or {}
        if stable.get("member") == rec.stable.member and stable.get("predictor"):
            restored = copy.deepcopy(stable["predictor"])
        else:
            restored = builders.inference_service(
                self.spec, Member(rec.stable.member, rec.stable.model_uri, rec.stable.revision)
            )["spec"]["predictor"]
        restored["canaryTrafficPercent"] = 0
        body = {k: v for k, v in (live.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = restored
        client.apply(self.isvc_object(rec.stable.revision, body))
        return True, f"rolled back {rec.member}: all traffic on {rec.stable.member} ({rec.stable.model_uri}) again"

    def without_record(self, client: KubeClient, rec: DeploymentRecord) -> bool:
        # A dead run's canary whose stable revision no promotion recorded: nothing to restore from,
        # so its traffic goes to 0 (Knative's previous revision serves everything).
        if not (rec.canary and rec.stable and not rec.stable.model_uri):
            return False
        live = client.get(INFERENCE_SERVICES, self.spec.service_name, self.spec.namespace)
        body = copy.deepcopy(live.get("spec") or {})
        body["predictor"]["canaryTrafficPercent"] = 0
        client.apply(self.isvc_object(_labels(live).get(LABEL_REVISION, ""), body))
        return True
