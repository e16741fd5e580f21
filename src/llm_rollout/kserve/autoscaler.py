"""The stable predictor's KEDA ScaledObject (Standard mode), kept by the steps.

:mod:`llm_rollout.kserve.builders.keda` says why the steps and not KServe own it (KServe would give
every canary a ScaledObject without triggers). :func:`sync_autoscaler` runs after every write that
can change the stable predictor: deploy (first rollout; a canary leaves it as it is), promotion (the
promoted predictor, and its measured target), and the manual rollback to the previous model. It
also removes the ScaledObject of a predictor that is no longer the stable one: KServe deletes only
the old predictor's Deployment and Service (``components/predictor.go``
``reconcileCanaryDeployments``' cleanup), so an autoscaler left behind would keep targeting a
Deployment that is gone; a ScaledObject KServe made before this version (class ``keda``) carries the
InferenceService's labels and goes the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from llm_rollout.kserve.builders.common import LABEL_SERVICE
from llm_rollout.kserve.builders.keda import scaled_object, uses_keda
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient, Resource
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)

SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
"""KEDA's ScaledObject (``keda.sh/v1alpha1``)."""


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
