"""The stand-in's Standard-mode autoscalers: what KServe's controller builds for each predictor.

Part of the KServe controller stand-in (:mod:`tests.reconciler`), written from upstream's code, not
from the product's (``../shared/reference/kserve``; files and functions named beside each rule):

* :func:`component_meta`: ``components/predictor.go`` ``buildPredictorResources`` /
  ``buildObjectMeta``: the labels and annotations of a predictor's Deployment, Service, autoscaler and
  pod template (the ServingRuntime's, the InferenceService's and the predictor's own, in that order
  of priority; ``app: isvc.<component>`` added by ``createRawDefaultDeployment``);
* :func:`canary_predictor`: ``buildCanaryPredictor`` with ``canaryReplicaCount`` (the stable merged
  with the canary entry, autoscaling fields zeroed, fixed replicas);
* :func:`autoscaler_class`: ``autoscaler_reconciler.go`` ``getAutoscalerClass`` (the
  ``serving.kserve.io/autoscalerClass`` annotation of the component's metadata, ``hpa`` by default);
* :func:`keda_scaled_object`: ``keda_reconciler.go`` ``createKedaScaledObject`` / ``getKedaMetrics``;
* :func:`hpa`: ``hpa_reconciler.go`` ``createHPA`` (with ``shouldCreateHPA``: only class ``hpa``);
* :func:`autoscalers`: ``createAutoscaler`` for every component in the order
  ``predictor.go`` ``Reconcile`` reaches them: the canaries (``reconcileCanaryDeployments``) before
  the stable (``reconcileRawDeployment``), each through ``raw_kube_reconciler.go`` ``Reconcile``
  (Service, Deployment, then the autoscaler).

The ScaledObjects go to the test API server, which serves KEDA's real CRD
(``../shared/crds/keda``): one without ``triggers`` is refused there as on a cluster, and an empty
list is refused as KEDA's admission webhook does (``scaletriggers_types.go`` ``ValidateTriggers``:
"no triggers defined in the ScaledObject/ScaledJob"). HPAs (``autoscaling/v2``, not served by the
test API server) stay in the stand-in's memory.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from llm_rollout.kube import Resource

SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"  # constants.go AutoscalerClass
DEFAULT_AUTOSCALER_CLASS = "hpa"  # constants.go DefaultAutoscalerClass
# config/configmap/inferenceservice.yaml: the default serviceAnnotationDisallowedList
DISALLOWED_ANNOTATIONS = (
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration",
    "modelFormat",
)
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
_SCALING_FIELDS = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")


def predictor_service_name(isvc: str, predictor: str = "") -> str:
    """``constants.go`` ``PredictorServiceName``."""
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"


def component_meta(isvc: dict[str, Any], pred: dict[str, Any], runtime: dict[str, Any] | None) -> dict[str, Any]:
    """The predictor's ObjectMeta (``buildObjectMeta``), ``app`` label included (``createRawDefaultDeployment``)."""
    meta = isvc.get("metadata") or {}
    rt_spec = (runtime or {}).get("spec") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in DISALLOWED_ANNOTATIONS}
    uri = (pred.get("model") or {}).get("storageUri")
    if uri:  # addStorageInitializerAnnotations
        annotations[STORAGE_URI_ANNOTATION] = uri
    pred_annotations = {k: v for k, v in (pred.get("annotations") or {}).items() if k not in DISALLOWED_ANNOTATIONS}
    rt_annotations = {k: v for k, v in (rt_spec.get("annotations") or {}).items() if k not in DISALLOWED_ANNOTATIONS}
    name = predictor_service_name(meta["name"], pred.get("name") or "")
    labels = {
        **(rt_spec.get("labels") or {}),
        **(meta.get("labels") or {}),
        **(pred.get("labels") or {}),
        "serving.kserve.io/inferenceservice": meta["name"],
        "component": "predictor",
    }
    labels["app"] = "isvc." + name  # constants.GetRawServiceLabel
    return {
        "name": name,
        "namespace": meta.get("namespace", ""),
        "labels": labels,
        "annotations": {**rt_annotations, **annotations, **pred_annotations},
    }


def _merge(dst: Any, src: Any) -> Any:
    """mergo.Merge(dst, src, WithOverride): non-empty values of ``src`` win, maps merge key by key."""
    if isinstance(dst, dict) and isinstance(src, dict):
        out = copy.deepcopy(dst)
        for k, v in src.items():
            out[k] = _merge(out.get(k), v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(src) if src not in (None, "", 0, [], {}) else copy.deepcopy(dst)


def canary_replica_count(stable: dict[str, Any], entry: dict[str, Any]) -> int:
    """``predictor.go`` ``canaryReplicaCount``."""
    cp = entry.get("predictor") or {}
    if cp.get("minReplicas") is not None:
        return int(cp["minReplicas"])
    stable_min = int(stable["minReplicas"]) if stable.get("minReplicas") is not None else 1
    return math.ceil(stable_min * int(entry.get("trafficPercent") or 0) / 100)


def canary_predictor(stable: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``predictor.go`` ``buildCanaryPredictor``: the stable merged with the entry, fixed replicas."""
    out = _merge(stable, entry.get("predictor") or {})
    for key in _SCALING_FIELDS:
        out.pop(key, None)
    out["minReplicas"] = canary_replica_count(stable, entry)
    return out


def autoscaler_class(meta: dict[str, Any]) -> str:
    """``autoscaler_reconciler.go`` ``getAutoscalerClass``."""
    return (meta.get("annotations") or {}).get(AUTOSCALER_CLASS, DEFAULT_AUTOSCALER_CLASS)


def _keda_triggers(ext: dict[str, Any]) -> list[dict[str, Any]]:
    """``keda_reconciler.go`` ``getKedaMetrics`` (Resource and External metrics)."""
    triggers: list[dict[str, Any]] = []
    for metric in (ext.get("autoScaling") or {}).get("metrics") or []:
        if metric.get("type") == "Resource":
            res = metric.get("resource") or {}
            target = res.get("target") or {}
            value = "0"
            if target.get("type") == "Utilization":
                util = target.get("averageUtilization")
                if util is None and res.get("name") == "cpu":
                    util = 80  # constants.DefaultCPUUtilization
                value = str(util) if util is not None else "0"
            elif target.get("type") == "AverageValue":
                value = str(target.get("averageValue") or "0")
            elif target.get("type") == "Value":
                value = str(target.get("value") or "0")
            triggers.append({"type": res.get("name"), "metadata": {"value": value}, "metricType": target.get("type")})
        elif metric.get("type") == "External":
            ex = metric.get("external") or {}
            m = ex.get("metric") or {}
            trigger = {
                "type": m.get("backend"),
                "metadata": {
                    "serverAddress": m.get("serverAddress", ""),
                    "query": m.get("query", ""),
                    "threshold": str((ex.get("target") or {}).get("value") or "0"),
                },
            }
            if m.get("backend") == "prometheus" and m.get("namespace"):
                trigger["metadata"]["namespace"] = m["namespace"]
            triggers.append(trigger)
    return triggers


def keda_scaled_object(meta: dict[str, Any], ext: dict[str, Any]) -> dict[str, Any]:
    """``keda_reconciler.go`` ``createKedaScaledObject``; no ``triggers`` key when there are none
    (Go's nil slice, sent as ``null``, which the API server treats as absent)."""
    min_replicas = int(ext["minReplicas"]) if ext.get("minReplicas") is not None else 1  # DefaultMinReplicas
    max_replicas = max(int(ext.get("maxReplicas") or 0), min_replicas)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": meta["name"]},
        "minReplicaCount": min_replicas,
        "maxReplicaCount": max_replicas,
    }
    triggers = _keda_triggers(ext)
    if triggers:
        spec["triggers"] = triggers
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta["labels"]),
            "annotations": dict(meta["annotations"]),
        },
        "spec": spec,
    }


def hpa(meta: dict[str, Any], ext: dict[str, Any]) -> dict[str, Any]:
    """``hpa_reconciler.go`` ``createHPA`` (the default CPU metric when the component has none)."""
    min_replicas = max(int(ext["minReplicas"]) if ext.get("minReplicas") is not None else 1, 1)
    return {
        "name": meta["name"],
        "minReplicas": min_replicas,
        "maxReplicas": max(int(ext.get("maxReplicas") or 0), min_replicas),
    }


@dataclass(frozen=True)
class Autoscaler:
    """What ``createAutoscaler`` made for one component.

    Attributes:
        component: The Deployment (and autoscaler) name, ``PredictorServiceName``.
        autoscaler_class: ``hpa``, ``keda``, ``external`` or ``none``.
        obj: The ScaledObject (``keda``) or the HPA's essentials (``hpa``); None otherwise.
        canary: Whether the component is a canary entry.
        meta: The component's ObjectMeta (:func:`component_meta`).
    """

    component: str
    autoscaler_class: str
    obj: dict[str, Any] | None
    canary: bool
    meta: dict[str, Any]


def autoscalers(isvc: dict[str, Any], runtime: dict[str, Any] | None) -> list[Autoscaler]:
    """Every Standard-mode component's autoscaler, canaries first (``predictor.go`` ``Reconcile``).

    A canary's component extension carries only ``MinReplicas`` (``reconcileCanaryDeployments``:
    ``componentExt := v1beta1.ComponentExtensionSpec{MinReplicas: &replicas}``); the stable's is its
    predictor's (``reconcileRawDeployment``).
    """
    spec = isvc.get("spec") or {}
    stable = spec.get("predictor") or {}
    out: list[Autoscaler] = []
    components = [(canary_predictor(stable, e), True) for e in spec.get("canary") or []]
    components.append((stable, False))
    for pred, is_canary in components:
        meta = component_meta(isvc, pred, runtime)
        ext = {"minReplicas": pred["minReplicas"]} if is_canary else pred
        cls = autoscaler_class(meta)
        obj = keda_scaled_object(meta, ext) if cls == "keda" else hpa(meta, ext) if cls == "hpa" else None
        out.append(Autoscaler(meta["name"], cls, obj, is_canary, meta))
    return out


def keda_refusal(obj: dict[str, Any]) -> str | None:
    """KEDA's admission webhook on a ScaledObject's triggers (``scaletriggers_types.go`` ``ValidateTriggers``)."""
    if "triggers" in obj["spec"] and not obj["spec"]["triggers"]:
        return "no triggers defined in the ScaledObject/ScaledJob"
    return None


INGRESS_DOMAIN = "example.com"
"""KServe's default ``ingressDomain`` (``config/configmap/inferenceservice.yaml``)."""


def component_refusal(meta: dict[str, Any]) -> str | None:
    """Why KServe cannot build a component's children from its names (None when it can).

    In ``raw_kube_reconciler.go`` order: ``NewRawKubeReconciler`` renders the component's host with
    ``createRawURL`` -> ``domain.go`` ``GenerateDomainName`` (default template
    ``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``), refused unless every label is at most 63
    (``IsFullyQualifiedDomainName``); then the API server refuses a Service named over 63
    characters and a Deployment whose ``app`` label value is over 63.
    """
    host = f"{meta['name']}-{meta['namespace']}.{INGRESS_DOMAIN}"
    if any(len(label) > 63 for label in host.split(".")):
        return (
            f"failed creating host name: invalid domain name {host!r}: url: Invalid value: {host!r}: "
            "must be no more than 63 characters"
        )
    if len(meta["name"]) > 63:
        return f'Service "{meta["name"]}" is invalid: metadata.name: must be no more than 63 characters'
    app = meta["labels"].get("app", "")
    if len(app) > 63:
        return (
            f'Deployment "{meta["name"]}" is invalid: metadata.labels: Invalid value: "{app}": '
            "must be no more than 63 characters"
        )
    return None
