"""Knative mode: a new revision goes into the predictor with ``canaryTrafficPercent``.

Knative keeps the previous rolled-out revision serving the rest of the traffic; with
``serving.kserve.io/enable-tag-routing`` (set by the builders) it tags the new revision ``latest`` and the
previous one ``prev``, each with an address of its own, which validation measures apart;
promotion removes ``canaryTrafficPercent``, rollback puts the stable predictor
back with ``canaryTrafficPercent: 0`` (all traffic on the previous revision).
"""

from __future__ import annotations

import copy
from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.addresses import service_address
from llm_rollout.kserve.builders import Member
from llm_rollout.kserve.records import _meta, _pred_name, find_stable_record
from llm_rollout.kserve.variants.base import Plan, Removal
from llm_rollout.kserve.variants.isvc import InferenceServiceVariant
from llm_rollout.kserve.views import InferenceServiceView, PredictorView
from llm_rollout.kserve.wait import Readiness
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient
from llm_rollout.names import predictor_service_name
from llm_rollout.record import DeploymentRecord

TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
"""``constants.EnableRoutingTagAnnotationKey``: Knative tags the revisions ``latest`` and ``prev``."""


class KnativeIsvc(InferenceServiceVariant):
    """Knative mode: a new revision goes into the predictor with ``canaryTrafficPercent``; Knative keeps
    the previous rolled-out revision serving the rest; each has its tag address (``latest``, ``prev``)."""

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

    def tag_address(self, tag: str) -> str:
        """A tagged revision's own address: Knative names its route ``<tag>-<Knative Service>`` and the
        Knative Service is the predictor's ``<isvc>-predictor`` (``ksvc_reconciler.go``)."""
        ksvc = predictor_service_name(self.spec.service_name)
        return service_address(f"{tag}-{ksvc}", self.spec.namespace, self.spec.cluster_domain)

    def canary_url(self, ready: dict[str, Any], member: str, plan: Plan) -> str | None:
        # ksvc_reconciler.go tags the latest revision "latest" (only with serving.kserve.io/enable-tag-routing,
        # which the builders set) and the previous rolled-out one "prev" (below 100 %). Without the tags the
        # service address sends most requests to the stable revision: the candidate is measured only
        # through its own tag, the stable through "prev".
        view = InferenceServiceView(ready)
        if view.tagged("latest") is None:
            raise PermanentError(
                f"InferenceService {self.spec.namespace}/{self.spec.service_name}: Knative reports no 'latest' tag, "
                "so the new revision has no address of its own. Fix: keep the annotation "
                f"{TAG_ROUTING_ANNOTATION}: 'true' on the InferenceService (llm-rollout sets it; something removed it)"
            )
        if plan.stable is not None:
            plan.stable.endpoint_url = self.tag_address("prev") if view.tagged("prev") else None
        return self.tag_address("latest")

    def stable_address(self, live_pred: dict[str, Any]) -> str | None:
        return self.tag_address("prev")  # confirmed (or dropped) once the canary's status shows the tags

    def member_metrics_urls(self, rec: DeploymentRecord) -> tuple[dict[str, str], str]:
        return (
            {},
            "Knative revisions answer through the activator and their tag routes, not through a Service of their own "
            "whose vLLM /metrics a step could read",
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
        self,
        client: KubeClient,
        live: dict[str, Any],
        state: dict[str, Any] | None,
        pred: dict[str, Any],
        rec: DeploymentRecord,
    ) -> Removal:
        assert rec.stable is not None
        if _pred_name(self.spec.service_name, pred) != rec.member:
            return Removal(False, f"nothing to roll back: {rec.member} is not the canary of {self.spec.service_name}")
        stable = find_stable_record(state)
        if stable.get("member") == rec.stable.member and stable.get("predictor"):
            restored = copy.deepcopy(stable["predictor"])
        else:
            restored = builders.inference_service(
                self.spec, Member(rec.stable.member, rec.stable.model_uri, rec.stable.revision)
            )["spec"]["predictor"]
        restored["canaryTrafficPercent"] = 0
        body = {k: v for k, v in (live.get("spec") or {}).items() if k != "canary"}
        body["predictor"] = restored
        client.apply(self.isvc_object(body))
        return Removal(
            True, f"rolled back {rec.member}: all traffic on {rec.stable.member} ({rec.stable.model_uri}) again"
        )

    def without_record(self, client: KubeClient, rec: DeploymentRecord) -> bool:
        # A dead run's canary whose stable revision no promotion recorded: nothing to restore from,
        # so its traffic goes to 0 (Knative's previous revision serves everything).
        if not (rec.canary and rec.stable and not rec.stable.model_uri):
            return False
        live = client.get(INFERENCE_SERVICES, self.spec.service_name, self.spec.namespace)
        body = copy.deepcopy(live.get("spec") or {})
        body["predictor"]["canaryTrafficPercent"] = 0
        client.apply(self.isvc_object(body))
        return True
