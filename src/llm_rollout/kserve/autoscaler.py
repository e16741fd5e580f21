"""The autoscalers of a Standard-mode InferenceService the steps keep: the stable predictor's KEDA
ScaledObject, and no HPA left behind by a predictor that is gone.

:mod:`llm_rollout.kserve.builders.keda` says why the steps and not KServe own it (KServe would give
every canary a ScaledObject without triggers). :func:`sync_autoscaler` runs after every write that
can change the stable predictor: deploy (first rollout; a canary leaves it as it is), promotion (the
promoted predictor, and its measured target), and the manual rollback to the previous model. It
also removes the ScaledObject of a predictor that is no longer the stable one: KServe deletes only
the old predictor's Deployment and Service (``components/predictor.go``
``reconcileCanaryDeployments``' cleanup), so an autoscaler left behind would keep targeting a
Deployment that is gone; a ScaledObject KServe made before this version (class ``keda``) carries the
InferenceService's labels and goes the same way.

Under KServe's own HPA (class ``hpa``: cpu/memory metrics, or fixed replicas, which KServe gives the
default class) every predictor, canaries included, gets an HPA named like its Deployment, owned by
the InferenceService and labelled with it (``hpa_reconciler.go`` ``createHPA`` with the component's
ObjectMeta). The same cleanup leaves it behind when the predictor goes: the replaced stable
predictor's at promotion, the canary's at rollback. :func:`prune_hpas` deletes those.
"""

from __future__ import annotations

import logging
from typing import Any

from llm_rollout.kserve.builders.common import LABEL_SERVICE
from llm_rollout.kserve.builders.keda import scaled_object, uses_keda, uses_kserve_hpa
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient, Resource
from llm_rollout.kube.errors import ResourceTypeNotServed
from llm_rollout.names import predictor_service_name
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)

SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
"""KEDA's ScaledObject (``keda.sh/v1alpha1``)."""
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
"""Kubernetes' HorizontalPodAutoscaler, as KServe makes it (``autoscaling/v2``)."""
ISVC_LABEL = "serving.kserve.io/inferenceservice"
"""``constants.InferenceServicePodLabelKey``: on every child of a predictor (``buildObjectMeta``)."""
COMPONENT_LABEL = "component"
"""``constants.KServiceComponentLabel``: ``predictor`` on a predictor's children."""


def sync_autoscaler(
    spec: RolloutSpec, client: KubeClient, isvc: dict[str, Any] | None = None, *, dry_run: bool = False
) -> str | None:
    """Applies the ScaledObject of the stable predictor and deletes the service's others.

    Args:
        spec: The rollout spec (nothing happens unless it scales through KEDA in Standard mode).
        client: The kube client.
        isvc: The InferenceService as the server has it (read when None).
        dry_run: Validate the ScaledObject with the server only (deploy's dry run); deletes nothing.

    Returns:
        The ScaledObject's name, or None when the service has none.
    """
    if not uses_keda(spec):
        return None
    live = isvc if isvc is not None else client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        return None
    obj = scaled_object(spec, (live.get("spec") or {}).get("predictor") or {}, owner=live)
    if obj is None:
        return None
    name = obj["metadata"]["name"]
    client.apply(obj, dry_run=dry_run)
    if dry_run:
        return name
    listed = client.list(SCALED_OBJECTS, spec.namespace, label_selector=f"{LABEL_SERVICE}={spec.service_name}")
    for old in listed.get("items") or []:
        old_name = (old.get("metadata") or {}).get("name")
        if old_name and old_name != name:
            client.delete(SCALED_OBJECTS, old_name, spec.namespace)
            log.info("%s: removed ScaledObject %s (its predictor no longer serves)", spec.service_name, old_name)
    return name


def predictor_children(service: str, isvc: dict[str, Any] | None) -> set[str]:
    """The names KServe gives the children (Deployment, Service, HPA) of every predictor ``isvc`` has:
    the stable predictor and each ``spec.canary[]`` entry (``constants.PredictorServiceName``)."""
    body = (isvc or {}).get("spec") or {}
    preds = [body.get("predictor") or {}] + [(c or {}).get("predictor") or {} for c in body.get("canary") or []]
    return {predictor_service_name(service, p.get("name") or "") for p in preds}


def stale_hpas(service: str, isvc: dict[str, Any] | None, listed: list[dict[str, Any]]) -> list[str]:
    """The HPAs in ``listed`` (KServe's, of InferenceService ``service``) whose predictor ``isvc`` no longer has."""
    keep = predictor_children(service, isvc)
    names = ((h.get("metadata") or {}).get("name") for h in listed)
    return sorted(n for n in names if n and n not in keep)


def prune_hpas(spec: RolloutSpec, client: KubeClient, isvc: dict[str, Any] | None = None) -> list[str]:
    """Deletes KServe's HPAs of predictors the InferenceService no longer has (after promotion, rollback
    and the manual rollback); a no-op unless the spec scales through KServe's HPA.

    KServe's cleanup after a canary goes or is promoted deletes only the predictor's Deployment and
    Service (``predictor.go`` ``reconcileCanaryDeployments``); its HPA, owned by the InferenceService,
    would stay until the InferenceService is deleted, targeting a Deployment that is gone.

    Returns:
        The names deleted.
    """
    if not uses_kserve_hpa(spec):
        return []
    live = isvc if isvc is not None else client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is None:
        return []  # the HPAs go with the InferenceService that owns them
    selector = f"{ISVC_LABEL}={spec.service_name},{COMPONENT_LABEL}=predictor"
    try:
        listed = client.without_type_grace().list(HPAS, spec.namespace, label_selector=selector)
    except ResourceTypeNotServed:
        # Every Kubernetes serves autoscaling/v2; an API server of custom resources only does not.
        log.info("%s: autoscaling/v2 is not served here: no HPA to look for", spec.service_name)
        return []
    stale = stale_hpas(spec.service_name, live, listed.get("items") or [])
    for name in stale:
        client.delete(HPAS, name, spec.namespace)
        log.info("%s: removed HPA %s (its predictor no longer serves)", spec.service_name, name)
    return stale
