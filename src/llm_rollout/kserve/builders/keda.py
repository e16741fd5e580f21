"""The KEDA ``ScaledObject`` of a Standard-mode stable predictor, built as KServe builds it.

Why we build it and KServe does not: KServe builds each canary entry with fixed replicas
(``components/predictor.go`` ``buildCanaryPredictor`` zeroes the autoscaling fields) but gives it the
InferenceService's autoscaler class (``autoscaler_reconciler.go`` ``getAutoscalerClass`` reads the
component metadata, which ``buildObjectMeta`` fills from the InferenceService's annotations). Under
``serving.kserve.io/autoscalerClass: keda`` that is a ScaledObject without triggers
(``keda_reconciler.go`` ``createKedaScaledObject``), which KEDA refuses (the CRD requires
``triggers``; ``scaletriggers_types.go`` ``ValidateTriggers``: "no triggers defined"), and the
predictor's reconcile stops before the canary gets a status: every canary of a KEDA-scaled service
fails. Giving only the canary another class (``none``, as upstream's canary e2e runs,
``test_canary_raw_deployment.py``) would change the class in its pod template at promotion
(``buildObjectMeta`` copies annotations into the template) and restart the validated pods.

So the InferenceService says ``autoscalerClass: external`` (``constants.go``
``AutoscalerClassExternal``: KServe creates no autoscaler, for any component, and leaves
``replicas`` alone, ``deployment_reconciler.go``), the same in every phase, and the steps apply this
ScaledObject for the stable predictor only: the triggers KServe would have built from the
predictor's ``autoScaling`` (``getKedaMetrics``), the same name and target (the predictor's
Deployment, ``constants.PredictorServiceName``), owned by the InferenceService so it goes with it.
A canary runs its fixed replicas, as upstream intends.
"""

from __future__ import annotations

import copy
from typing import Any

from llm_rollout.kserve.builders.common import LABEL_SERVICE, _labels
from llm_rollout.names import predictor_service_name
from llm_rollout.spec import RolloutSpec

KEDA_API = "keda.sh/v1alpha1"

AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
"""``constants.go`` ``AutoscalerClass``."""


def keda_triggers(predictor: dict[str, Any]) -> list[dict[str, Any]]:
    """``keda_reconciler.go`` ``getKedaMetrics`` for the predictor's External metrics (what we render).

    Each becomes a trigger of the metric's backend with ``serverAddress``, ``query`` and
    ``threshold`` (the target's ``value``; KServe reads only ``Target.Value``).
    """
    triggers: list[dict[str, Any]] = []
    for metric in (predictor.get("autoScaling") or {}).get("metrics") or []:
        if metric.get("type") != "External":
            continue
        external = metric.get("external") or {}
        m = external.get("metric") or {}
        trigger: dict[str, Any] = {
            "type": m.get("backend", "prometheus"),
            "metadata": {
                "serverAddress": m.get("serverAddress", ""),
                "query": m.get("query", ""),
                "threshold": str((external.get("target") or {}).get("value") or "0"),
            },
        }
        if m.get("backend") == "prometheus" and m.get("namespace"):
            trigger["metadata"]["namespace"] = m["namespace"]
        triggers.append(trigger)
    return triggers


def uses_keda(spec: RolloutSpec) -> bool:
    """Standard mode scaled on vLLM's request rate or in-flight requests (KEDA on Prometheus)."""
    return (
        spec.deployment_mode == "Standard"
        and not spec.llmd.enabled
        and spec.scaling is not None
        and spec.scaling.metric in ("request-rate", "concurrency")
    )


def uses_kserve_hpa(spec: RolloutSpec) -> bool:
    """Standard mode where KServe makes an HPA per predictor: class ``hpa`` (cpu/memory), or no class
    at all (fixed replicas: ``getAutoscalerClass`` defaults to ``hpa``, ``constants.DefaultAutoscalerClass``)."""
    return spec.deployment_mode == "Standard" and not spec.llmd.enabled and not uses_keda(spec)


HPA_RULES: list[dict[str, Any]] = [
    # Standard mode with KServe's HPA: a replaced or rolled-back predictor's HPA is found (list, by
    # KServe's labels) and deleted (kserve/autoscaler.py prune_hpas): KServe deletes only its
    # Deployment and Service (predictor.go reconcileCanaryDeployments' cleanup).
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list", "delete"]},
]
"""Role rules a spec with KServe's HPA needs beside :data:`~llm_rollout.kserve.builders.rbac.RBAC_RULES`."""


def hpa_rules(spec: RolloutSpec) -> list[dict[str, Any]]:
    """:data:`HPA_RULES` when the spec scales through KServe's HPA, else none."""
    return copy.deepcopy(HPA_RULES) if uses_kserve_hpa(spec) else []


def scaled_object(
    spec: RolloutSpec, predictor: dict[str, Any], owner: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ScaledObject of the stable ``predictor`` (``createKedaScaledObject``), or None without triggers.

    Args:
        spec: The rollout spec.
        predictor: The InferenceService's ``spec.predictor`` as applied.
        owner: The InferenceService as the server has it (its ``uid`` makes it the owner, so the
            ScaledObject is deleted with it); no owner reference when None (``render``).

    Returns:
        The object, named and targeting ``PredictorServiceName`` of the predictor, with
        ``minReplicaCount`` the predictor's ``minReplicas`` (1 when unset, ``DefaultMinReplicas``)
        and ``maxReplicaCount`` at least that.
    """
    triggers = keda_triggers(predictor)
    if not triggers:
        return None
    name = predictor_service_name(spec.service_name, predictor.get("name") or "")
    min_replicas = int(predictor["minReplicas"]) if predictor.get("minReplicas") is not None else 1
    meta: dict[str, Any] = {"name": name, "namespace": spec.namespace, "labels": _labels(spec)}
    if owner is not None and (owner.get("metadata") or {}).get("uid"):
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max(int(predictor.get("maxReplicas") or 0), min_replicas),
            "triggers": triggers,
        },
    }


def service_monitor(spec: RolloutSpec) -> dict[str, Any] | None:
    """A Prometheus Operator ``ServiceMonitor`` that makes the series the KEDA query reads (None without KEDA).

    The query selects ``namespace`` and ``service`` (the predictor's Service,
    ``PredictorServiceName``); a ServiceMonitor gives each series the scraped Service's name as
    ``service``. It selects every predictor Service of this InferenceService (KServe labels them with
    the InferenceService's labels and ``component: predictor``, ``components/predictor.go``
    ``buildObjectMeta``) on the port KServe names after the runtime container's (``http1``,
    ``service_reconciler.go`` ``createDefaultSvc``), so the stable and every canary are scraped.
    KServe's ``serving.kserve.io/enable-prometheus-scraping`` does not do this in Standard mode: the pod
    mutator then points ``prometheus.io/port`` at 9091, the Knative queue-proxy's port
    (``webhook/admission/pod/metrics_aggregate_injector.go`` ``InjectMetricsAggregator``), which vLLM
    does not serve, and a pod scrape yields no ``service`` label.
    """
    if not uses_keda(spec):
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": f"{spec.service_name}-vllm", "namespace": spec.namespace, "labels": _labels(spec)},
        "spec": {
            "selector": {"matchLabels": {LABEL_SERVICE: spec.service_name, "component": "predictor"}},
            "endpoints": [{"port": "http1", "path": "/metrics", "interval": "15s"}],
        },
    }


def autoscaling_objects(spec: RolloutSpec, predictor: dict[str, Any]) -> list[dict[str, Any]]:
    """What ``manifests/kserve-autoscaling.yaml`` shows for the stable ``predictor``: its ScaledObject
    (applied by the steps) and the ServiceMonitor (applied by the cluster's admin)."""
    return [o for o in (scaled_object(spec, predictor), service_monitor(spec)) if o is not None]
