"""The KServe CRD preflight: the CustomResourceDefinitions a rollout needs are installed and new enough.

Read before anything is applied (``get`` by name only; the pipeline's ClusterRole grants exactly
these names, see ``manifests/rbac.yaml``), so a cluster without KServe, or with one older than 0.20,
fails at once with what to install instead of with a 404 in the middle of a rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kube import CRDS, KSERVE_GROUP, KubeClient, condition

KSERVE_INSTALL_HINT = (
    "install or upgrade KServe to 0.20 or newer with its CRDs (e.g. `helm upgrade --install kserve-crd "
    "oci://ghcr.io/kserve/charts/kserve-crd --version v0.20.0` or `kubectl apply --server-side -f "
    "kserve-crds.yaml` from the KServe release), then rerun"
)


@dataclass(frozen=True)
class CrdRequirement:
    """One CRD the rollout needs.

    Attributes:
        name: CRD name (``<plural>.<group>``).
        version: The version that must be served.
        why: What needs it, for the message.
    """

    name: str
    version: str
    why: str


def crd_requirements(*, need_llmd: bool, need_canary: bool = True) -> list[CrdRequirement]:
    """The CRDs (and versions) a rollout with these features needs.

    Args:
        need_llmd: llm-d (LLMInferenceService v1alpha2) is used.
        need_canary: Standard-mode canaries (``spec.canary`` of InferenceService) are used.
    """
    if need_llmd:
        return [
            CrdRequirement(f"llminferenceservices.{KSERVE_GROUP}", "v1alpha2", "llm-d rollouts (LLMInferenceService)")
        ]
    return [
        CrdRequirement(f"servingruntimes.{KSERVE_GROUP}", "v1alpha1", "the vLLM ServingRuntime"),
        CrdRequirement(
            f"inferenceservices.{KSERVE_GROUP}",
            "v1beta1",
            "InferenceService rollouts" + (" with spec.canary (KServe >= 0.20)" if need_canary else ""),
        ),
    ]


def _served_versions(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v.get("name"): v for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served")}


def _schema_has(version: dict[str, Any], path: list[str]) -> bool:
    node = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
    for part in path:
        if node.get("x-kubernetes-preserve-unknown-fields") and not node.get("properties"):
            return True
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return False
    return True


def check_crds(client: KubeClient, need_llmd: bool, *, need_canary: bool = True) -> dict[str, dict[str, Any]]:
    """Checks that the KServe CRDs the rollout needs are installed, established and new enough.

    Reads the named CustomResourceDefinitions (``get`` only; the pipeline's ClusterRole allows
    exactly these names): InferenceService must serve ``v1beta1`` and (for Standard-mode canaries)
    have ``spec.canary`` in its schema; ServingRuntime must serve ``v1alpha1``; with llm-d,
    LLMInferenceService must serve ``v1alpha2``.

    Args:
        client: The kube client.
        need_llmd: The rollout uses llm-d (LLMInferenceService).
        need_canary: Standard-mode canaries are used (``spec.canary`` must exist).

    Returns:
        The CRDs read, by name.

    Raises:
        PermanentError: Naming every missing CRD, version or field and how to install/upgrade KServe.
    """
    problems: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    for req in crd_requirements(need_llmd=need_llmd, need_canary=need_canary):
        crd = client.get_or_none(CRDS, req.name)
        if crd is None:
            problems.append(f"CRD {req.name} is not installed (needed for {req.why})")
            continue
        found[req.name] = crd
        served = _served_versions(crd)
        if req.version not in served:
            problems.append(
                f"CRD {req.name} does not serve {req.version} (served: {', '.join(sorted(served)) or 'none'}); "
                f"{req.why} need {KSERVE_GROUP}/{req.version}"
            )
            continue
        established = condition(crd, "Established")
        if not established or established.get("status") != "True":
            problems.append(
                f"CRD {req.name} is not Established yet ({(established or {}).get('reason', 'no condition')})"
            )
        if (
            req.name.startswith("inferenceservices.")
            and need_canary
            and not _schema_has(served[req.version], ["spec", "canary"])
        ):
            problems.append(
                f"CRD {req.name} {req.version} has no spec.canary: this KServe is older than 0.20 and cannot run "
                "Standard-mode canaries (or set deployment_mode 'Knative')"
            )
    if problems:
        raise PermanentError("KServe prerequisites missing: " + "; ".join(problems) + ". Fix: " + KSERVE_INSTALL_HINT)
    return found
