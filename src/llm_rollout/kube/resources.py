"""The resource registry: the REST resources the library reads and writes, and lookup by object.

A :class:`Resource` is group, version, plural and scope, and builds the URL paths; the module
constants are the resources the library uses (KServe's custom resources, CRDs, pods, events), and
:func:`resource_for` finds the resource of an object dict from its ``apiVersion`` and ``kind``
(lightkube's ``core/resource.py`` and ``core/resource_registry.py`` play the same part).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from llm_rollout.errors import PermanentError


@dataclass(frozen=True)
class Resource:
    """A REST resource: group, version, plural and scope.

    Attributes:
        group: API group (``""`` for core).
        version: API version.
        plural: Resource name in URLs (``inferenceservices``).
        kind: Kind, for messages.
        namespaced: Whether objects live in namespaces.
    """

    group: str
    version: str
    plural: str
    kind: str = ""
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``group/version`` (or just ``version`` for core)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection, an object or an object's subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


KSERVE_GROUP = "serving.kserve.io"
SERVING_RUNTIMES = Resource(KSERVE_GROUP, "v1alpha1", "servingruntimes", "ServingRuntime")
INFERENCE_SERVICES = Resource(KSERVE_GROUP, "v1beta1", "inferenceservices", "InferenceService")
LLM_INFERENCE_SERVICES = Resource(KSERVE_GROUP, "v1alpha2", "llminferenceservices", "LLMInferenceService")
LLM_INFERENCE_SERVICE_CONFIGS = Resource(
    KSERVE_GROUP, "v1alpha2", "llminferenceserviceconfigs", "LLMInferenceServiceConfig"
)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
"""A service's rollout lease and records (:mod:`llm_rollout.kserve.lease`, :mod:`llm_rollout.kserve.records`)."""

_KNOWN = {
    (r.api_version, r.kind): r
    for r in (
        SERVING_RUNTIMES,
        INFERENCE_SERVICES,
        LLM_INFERENCE_SERVICES,
        LLM_INFERENCE_SERVICE_CONFIGS,
        CRDS,
        PODS,
        EVENTS,
        LEASES,
    )
}


def resource_for(obj: dict[str, Any]) -> Resource:
    """The :class:`Resource` of an object dict from its ``apiVersion`` and ``kind``.

    Args:
        obj: A Kubernetes object (``apiVersion``, ``kind``).

    Returns:
        The resource; unknown kinds get the conventional lower-case plural, namespaced.

    Raises:
        PermanentError: When ``apiVersion`` or ``kind`` is missing.
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        raise PermanentError(f"object has no apiVersion/kind: {json.dumps(obj)[:200]}")
    known = _KNOWN.get((api_version, kind))
    if known:
        return known
    group, _, version = api_version.rpartition("/")
    plural = kind.lower() + ("es" if kind.lower().endswith("s") else "s")
    return Resource(group, version, plural, kind)
