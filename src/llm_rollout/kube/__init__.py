"""The Kubernetes layer: one client for server-side apply, reads and watches, and one error mapping.

Generic Kubernetes only (the KServe CRD preflight is :mod:`llm_rollout.kserve.crds`). Split the way
lightkube splits its core (``lightkube/core/exceptions.py``, ``resource.py`` /
``resource_registry.py``, ``client.py`` / ``generic_client.py``):

* :mod:`.errors`: the error taxonomy (:class:`ApiError` and its kinds, :class:`ApiTransientError`,
  :class:`WatchExpired`) and the one mapping of client exceptions into them (:func:`map_error`);
* :mod:`.retry`: :func:`retry` of transient errors with jittered backoff under a deadline;
* :mod:`.resources`: :class:`Resource`, the resources the library uses, :func:`resource_for`;
* :mod:`.client`: :class:`KubeClient` (server-side apply with one field manager and
  ``fieldValidation=Strict``, get, list, delete, watch; every call retried within a deadline);
* :mod:`.watch`: :class:`WatchStream`, the events of one watch, and :func:`condition`.

Import the public names from here (``from llm_rollout.kube import KubeClient, NotFoundError``).
"""

from llm_rollout.kube.client import (
    APPLY_CONTENT_TYPE,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_RETRY_DEADLINE_S,
    KubeClient,
)
from llm_rollout.kube.errors import (
    FIELD_MANAGER,
    ApiError,
    ApiTransientError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    ResourceTypeNotServed,
    Target,
    WatchExpired,
    map_api_exception,
    map_error,
)
from llm_rollout.kube.resources import (
    CRDS,
    EVENTS,
    INFERENCE_SERVICES,
    KSERVE_GROUP,
    LEASES,
    LLM_INFERENCE_SERVICE_CONFIGS,
    LLM_INFERENCE_SERVICES,
    PODS,
    SERVING_RUNTIMES,
    Resource,
    resource_for,
)
from llm_rollout.kube.retry import backoff_delays, retry
from llm_rollout.kube.watch import WatchStream, condition

__all__ = [
    "APPLY_CONTENT_TYPE",
    "CRDS",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "DEFAULT_RETRY_DEADLINE_S",
    "EVENTS",
    "FIELD_MANAGER",
    "INFERENCE_SERVICES",
    "KSERVE_GROUP",
    "LEASES",
    "LLM_INFERENCE_SERVICES",
    "LLM_INFERENCE_SERVICE_CONFIGS",
    "PODS",
    "SERVING_RUNTIMES",
    "ApiError",
    "ApiTransientError",
    "ConflictError",
    "ForbiddenError",
    "InvalidError",
    "KubeClient",
    "NotFoundError",
    "Resource",
    "ResourceTypeNotServed",
    "Target",
    "WatchExpired",
    "WatchStream",
    "backoff_delays",
    "condition",
    "map_api_exception",
    "map_error",
    "resource_for",
    "retry",
]
