"""The three ways a service serves on KServe, as strategy objects chosen once.

- :class:`~llm_rollout.kserve.variants.standard.StandardIsvc`: an ``InferenceService`` in Standard mode
  (formerly RawDeployment); a new revision is a ``spec.canary[]`` entry with its own predictor.
- :class:`~llm_rollout.kserve.variants.knative.KnativeIsvc`: an ``InferenceService`` in Knative mode;
  a new revision goes into the predictor with ``canaryTrafficPercent`` and Knative keeps the
  previous revision serving the rest.
- :class:`~llm_rollout.kserve.variants.llmd.LlmdGroup`: an llm-d group of ``LLMInferenceService``
  members in one ``router.route.group``; a new revision is a second member with a ``weight``.

:func:`variant_for` chooses from the spec (deploy, promote, rollback, finalize);
:func:`found_variant` from what the cluster has under a name (``llm-rollout status`` and
``llm-rollout rollback NAME``, whose spec names only the service). Everything that differs between
the three lives behind :class:`~llm_rollout.kserve.variants.base.Variant` (what the two
InferenceService modes share is :class:`~llm_rollout.kserve.variants.isvc.InferenceServiceVariant`);
the modules around them (:mod:`~llm_rollout.kserve.deploy`, :mod:`~llm_rollout.kserve.promote`,
:mod:`~llm_rollout.kserve.rollback`, :mod:`~llm_rollout.kserve.status`,
:mod:`~llm_rollout.kserve.restore`) do what is common and never ask which one they have.
"""

from __future__ import annotations

from typing import Any

from llm_rollout.kserve.lease import rollout_state
from llm_rollout.kserve.records import _annotations, records_of
from llm_rollout.kserve.variants.base import Variant
from llm_rollout.kserve.variants.knative import KnativeIsvc
from llm_rollout.kserve.variants.llmd import LlmdGroup
from llm_rollout.kserve.variants.standard import StandardIsvc
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient
from llm_rollout.spec import RolloutSpec


def variant_for(spec: RolloutSpec) -> Variant:
    """The variant ``spec`` asks for: llm-d, else the InferenceService in its deployment mode."""
    if spec.llmd.enabled:
        return LlmdGroup(spec)
    return KnativeIsvc(spec) if spec.deployment_mode == "Knative" else StandardIsvc(spec)


def found_variant(client: KubeClient, spec: RolloutSpec) -> tuple[Variant, dict[str, Any] | None] | None:
    """The variant serving ``spec.service_name`` on the cluster, with its rollout Lease.

    An InferenceService of that name, else an llm-d group (its members labelled with the service,
    or its rollout records). The Lease (lock and records) is migrated from where earlier versions
    kept them first (:func:`~llm_rollout.kserve.lease.migrate_legacy`).

    Returns:
        The variant and its rollout Lease (None when no rollout recorded anything yet), or None
        when nothing of that name serves.
    """
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if live is not None:
        # The mode the live object runs in (the deploymentMode annotation, or the status KServe writes).
        mode = _annotations(live).get("serving.kserve.io/deploymentMode") or (live.get("status") or {}).get(
            "deploymentMode"
        )
        variant: Variant = KnativeIsvc(spec) if mode in ("Knative", "Serverless") else StandardIsvc(spec)
        return variant, rollout_state(client, variant.ref())
    group = LlmdGroup(spec)
    holder = rollout_state(client, group.ref())
    if records_of(holder) or group.members(client):
        return group, holder
    return None


__all__ = ["KnativeIsvc", "LlmdGroup", "StandardIsvc", "Variant", "found_variant", "variant_for"]
