"""A test-only stand-in for the KServe controller.

Nothing here can run pods, so cluster tests need something that does what KServe's controller does
to the custom resources: watch InferenceServices and LLMInferenceServices and write their
``status`` (conditions with reasons and lastTransitionTime, ``observedGeneration``, ``url``,
``address``, per-component and per-canary information). :class:`Reconciler` is that, as a thread,
with switches for the failure modes a rollout must survive:

* ``ready`` (default): Ready after ``ready_after_ms``;
* ``never``: never Ready because of ``reason`` (default ``ImagePullBackOff``; ``CrashLoopBackOff``,
  ``OOMKilled``, ``Unschedulable`` for want of a GPU; ``Progressing``: pods that never come up). An
  InferenceService's conditions carry what KServe copies from its Deployment
  (``MinimumReplicasUnavailable``, ``ProgressDeadlineExceeded``); ``reason`` is in the pods and the
  kubelet's and scheduler's events (:meth:`Reconciler.pods`, :meth:`Reconciler.core_events`, served
  through a fault proxy by :meth:`Reconciler.serve_core_api`). An LLMInferenceService's conditions
  carry ``reason``;
* ``degrade``: Ready, then after ``degrade_after_ms`` not Ready with ``reason``;
* ``stale``: a lagging controller: writes Ready=True with the status of the last spec it reconciled
  (InferenceService) or with ``observedGeneration`` at the previous generation (LLMInferenceService);
  a correct waiter must not accept it.

InferenceService status follows upstream's controller, not our waiter: the stand-in simulates the
children KServe would own (Standard: one Deployment per predictor and canary, named
``constants.PredictorServiceName``; Knative: one Knative Service with revisions) and, like
``inference_service_status.go``, copies the first child's observedGeneration into the
InferenceService (kserve#6081), keeps PredictorReady/Ready True through a rolling update of an
available Deployment (kserve#4626), writes ``canaryStatuses`` exactly as ``components/predictor.go``
``reconcileCanaryDeployments`` does, and splits Knative traffic as ``ksvc_reconciler.go`` does.
Standard-mode canary weights move no traffic here, as with upstream's default
``enableGatewayApi: false`` (only the HTTPRoute reconciler applies them); nothing in the status says
otherwise. :meth:`Reconciler.backends_of` says where the service address sends requests
(:func:`service_backends`; ``gateway_api = True`` weights them as the HTTPRoute reconciler does), for
a test's router in front of real servers.

Switches are global (:meth:`Reconciler.set_default`) or per object name
(:meth:`Reconciler.behave`). An InferenceService's URLs are upstream's (:func:`upstream_urls`:
ingress hosts from ``GenerateDomainName``, the predictor Service's cluster-local address; Knative tag
URLs only with tag routing on); ``url`` points an LLMInferenceService's at a real endpoint. Each
predictor's pod template is computed as ``buildObjectMeta`` builds it and every change counted
(:meth:`Reconciler.pod_template_versions`). The status shapes follow KServe's own (see ``llm_rollout.kserve.wait`` for
the sources): ``PredictorReady``/``IngressReady``/``Ready``, ``CanaryPredictorReady`` (reason
``AllCanariesReady``) with ``status.canaryStatuses``; for LLMInferenceService ``PresetsCombined``,
``MainWorkloadReady``, ``PrefillWorkloadReady``, ``WorkloadsReady``, ``HTTPRoutesReady``,
``SchedulerWorkloadReady``, ``InferencePoolReady``, ``RouterReady``, ``Ready`` (``failing`` picks
which of them carry the failure, e.g. the gateway while the workloads are up).

Run-time rules of KServe 0.20's InferenceService controller it follows (each cited where it is
written): the runtime must exist and support the model (:func:`resolve_runtime`, else
``modelStatus`` and an ``InternalError`` event, nothing built, retried with backoff); the finalizer
``inferenceservice.finalizers`` makes deletion asynchronous; ``serving.kserve.io/stop`` clears the
status to ``Stopped``; a canary's replicas follow ``canaryReplicaCount`` (0: never ready);
``IngressReady`` is True only once the predictor is.

Every Ready=True write is recorded in :attr:`Reconciler.ready_writes` with the time it was sent,
which the detection-latency benchmark compares with the moment the waiter returned.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import heapq
import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes import client as k8s_client

from llm_rollout.errors import RolloutError
from llm_rollout.kube import (
    INFERENCE_SERVICES,
    LLM_INFERENCE_SERVICE_CONFIGS,
    LLM_INFERENCE_SERVICES,
    SERVING_RUNTIMES,
    InvalidError,
    KubeClient,
    Resource,
    Target,
    WatchExpired,
    map_error,
    retry,
)
from tests.standin_autoscaler import SCALED_OBJECTS, autoscalers, component_refusal, keda_refusal

log = logging.getLogger("tests.reconciler")

Mode = Literal["ready", "never", "degrade", "stale"]
FIELD_MANAGER = "kserve-controller-standin"


@dataclass(frozen=True)
class Behaviour:
    """How the stand-in treats an object.

    Attributes:
        mode: ``ready``, ``never``, ``degrade`` or ``stale`` (see the module docstring).
        ready_after_ms: Delay between seeing a generation and writing its Ready status.
        reason: Reason of the not-ready conditions (``never``/``degrade``).
        message: Message of the not-ready conditions.
        degrade_after_ms: How long ``degrade`` stays Ready.
        url: LLMInferenceService only: a real endpoint to write as its URLs (e.g. a local vLLM
            ``http://127.0.0.1:PORT``). An InferenceService's status carries the addresses upstream
            writes (:func:`upstream_urls`); a test reaches a real server behind them through
            ``$LLM_ROLLOUT_ADDRESS_MAP``, as a user outside the cluster would.
        finalize_after_ms: InferenceService only: how long its controller takes, once the object is
            being deleted, to remove the children and drop ``inferenceservice.finalizers`` (the
            delete is asynchronous, as on a cluster).
        failing: LLMInferenceService only: the leaf conditions that carry ``reason`` while not
            ready (e.g. ``("GatewaysReady",)`` with ``WaitingForGateway``: workloads up, router
            not); the others are True and the roll-ups (``WorkloadsReady``, ``RouterReady``,
            ``Ready``) follow their leaves. Empty: the workload conditions fail (the default).
    """

    mode: Mode = "ready"
    ready_after_ms: int = 0
    reason: str = "ImagePullBackOff"
    message: str = 'Back-off pulling image "vllm/vllm-openai:v0.11.0"'
    degrade_after_ms: int = 300
    finalize_after_ms: int = 50
    url: str | None = None
    failing: tuple[str, ...] = ()


@dataclass
class ReadyWrite:
    """One Ready=True status write.

    Attributes:
        kind: ``InferenceService`` or ``LLMInferenceService``.
        namespace: Namespace.
        name: Object name.
        generation: The generation the status claims to have observed.
        sent_at: ``time.monotonic()`` just before the write was sent.
        done_at: ``time.monotonic()`` when the server had accepted it.
        resource_version: The object's resourceVersion after the write.
    """

    kind: str
    namespace: str
    name: str
    generation: int
    sent_at: float
    done_at: float = 0.0
    resource_version: str = ""


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    key: tuple[str, str, str] = field(compare=False)
    phase: str = field(compare=False, default="ready")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(kind: str, ok: bool, reason: str = "", message: str = "", severity: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    if severity:
        cond["severity"] = severity
    return cond


def _strip_times(status: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(status)
    for cond in out.get("conditions") or []:
        cond.pop("lastTransitionTime", None)
    return out


def _with_times(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Keeps lastTransitionTime of conditions whose status did not change (as Knative's helpers do)."""
    before = {c.get("type"): c for c in old.get("conditions") or []}
    now = _now()
    for cond in new.get("conditions") or []:
        prev = before.get(cond["type"])
        if prev is not None and prev.get("status") == cond["status"] and prev.get("lastTransitionTime"):
            cond["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = now
    return new


_UIDS = itertools.count(1)
_SCALING_KEYS = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "canaryTrafficPercent")


def predictor_service_name(isvc: str, predictor: str = "") -> str:
    """``pkg/constants/constants.go`` PredictorServiceName (written out here, not imported: the
    stand-in must not share the code under test's understanding)."""
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"


def service_backends(isvc: dict[str, Any], *, gateway_api: bool) -> list[tuple[str, int]]:
    """Where a Standard-mode InferenceService's address sends requests: ``[(Service, weight), ...]``.

    Without Gateway API (upstream's default ``enableGatewayApi: false``,
    ``config/configmap/inferenceservice.yaml``) the raw ingress routes the host to the stable
    predictor's Service only: canary weights are applied nowhere. With it, the HTTPRoute gets
    weighted backends as ``httproute_reconciler.go`` ``applyCanaryWeights`` builds them: each canary
    whose ``status.canaryStatuses`` entry is ready gets its ``trafficPercent``, the stable predictor
    the rest (not-ready canaries are left out).
    """
    meta, spec, status = isvc.get("metadata") or {}, isvc.get("spec") or {}, isvc.get("status") or {}
    name = meta.get("name", "")
    stable = predictor_service_name(name, (spec.get("predictor") or {}).get("name") or "")
    if not gateway_api:
        return [(stable, 100)]
    ready = {c.get("name"): bool(c.get("ready")) for c in status.get("canaryStatuses") or []}
    canaries = [
        (predictor_service_name(name, c["predictor"]["name"]), int(c.get("trafficPercent") or 0))
        for c in spec.get("canary") or []
        if ready.get((c.get("predictor") or {}).get("name"))
    ]
    return [(stable, 100 - sum(w for _, w in canaries)), *canaries]


INGRESS_DOMAIN = "example.com"
"""KServe's default ``ingressDomain`` (``config/configmap/inferenceservice.yaml``)."""
CLUSTER_DOMAIN = "cluster.local"


def generate_domain_name(name: str, namespace: str) -> str:
    """``ingress/domain.go`` ``GenerateDomainName`` with the default domain template
    ``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``."""
    return f"{name}-{namespace}.{INGRESS_DOMAIN}"


def upstream_urls(isvc: str, namespace: str, predictor_svc: str, mode: str) -> dict[str, Any]:
    """The URLs and addresses KServe writes into an InferenceService's status.

    Standard: ``status.url`` from ``createRawURL`` (``httproute_reconciler.go``: the ingress host of
    the InferenceService, ``GenerateDomainName(isvc.Name)``); ``status.address.url`` from
    ``createAddress`` (``kube_ingress_reconciler.go``: ``http://`` + the stable predictor Service's
    cluster-local host name, no port); the predictor component's ``url`` from the raw reconciler's
    ``createRawURL`` (``raw_kube_reconciler.go``: ``GenerateDomainName(<predictor Service name>)``),
    set only once ready (``PropagateRawStatus``); a canary gets no URL at all (``CanaryStatus``).
    Knative: the component is the Knative Service's (``PropagateStatus``): its URL under Knative's
    domain template and its cluster-local address.
    """
    out: dict[str, Any] = {
        "url": f"http://{generate_domain_name(isvc, namespace)}",
        "address": f"http://{predictor_svc}.{namespace}.svc.{CLUSTER_DOMAIN}",
    }
    if mode == "Knative":
        out["component"] = {
            "url": f"http://{predictor_svc}.{namespace}.{INGRESS_DOMAIN}",
            "address": {"url": f"http://{predictor_svc}.{namespace}.svc.{CLUSTER_DOMAIN}"},
        }
    else:
        out["component"] = {"url": f"http://{generate_domain_name(predictor_svc, namespace)}"}
    return out


SERVICE_ANNOTATION_DISALLOWED = (
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration",
    "modelFormat",
)
"""KServe's default ``serviceAnnotationDisallowedList`` (``config/configmap/inferenceservice.yaml``)."""


def merge_override(dst: Any, src: Any) -> Any:
    """``mergo.Merge(&dst, src, mergo.WithOverride)`` on JSON: maps merged key by key, every non-empty
    value of ``src`` replaces ``dst``'s (lists whole); empty values of ``src`` leave ``dst``'s."""
    if isinstance(dst, dict) and isinstance(src, dict):
        out = copy.deepcopy(dst)
        for key, value in src.items():
            out[key] = merge_override(out.get(key), value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(src) if src not in (None, "", [], {}, 0, False) else copy.deepcopy(dst)


def canary_replica_count(spec: dict[str, Any], canary: dict[str, Any]) -> int:
    """``components/predictor.go`` ``canaryReplicaCount``: the canary's ``minReplicas`` when set, else
    ``ceil(stable minReplicas (default 1) * trafficPercent / 100)``; a canary at 0 % without
    ``minReplicas`` gets 0 replicas (and is never ready: ``AvailableReplicas > 0``)."""
    cp = canary.get("predictor") or {}
    if cp.get("minReplicas") is not None:
        return int(cp["minReplicas"])
    stable = (spec.get("predictor") or {}).get("minReplicas")
    stable = 1 if stable is None else int(stable)
    return -(-stable * int(canary.get("trafficPercent") or 0) // 100)


def build_canary_predictor(stable: dict[str, Any], canary: dict[str, Any]) -> dict[str, Any]:
    """``components/predictor.go`` ``buildCanaryPredictor``: the stable predictor with the canary's
    fields merged over it, the autoscaling fields zeroed (the replica count is fixed)."""
    out = merge_override(stable, canary)
    for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
        out.pop(key, None)
    return out


CLUSTER_SERVING_RUNTIMES = Resource(
    "serving.kserve.io", "v1alpha1", "clusterservingruntimes", "ClusterServingRuntime", False
)


@dataclass(frozen=True)
class RuntimeResolution:
    """What ``components/predictor.go`` ``reconcileModel`` made of an InferenceService's runtime.

    Attributes:
        runtime: The resolved runtime's ``spec`` (None when resolution failed).
        name: Its name (``status.servingRuntimeName``).
        reason: On failure, the ``FailureInfo.Reason`` upstream writes into
            ``status.modelStatus.lastFailureInfo`` (``RuntimeNotRecognized``, ``RuntimeDisabled``,
            ``NoSupportingRuntime``).
        message: On failure, upstream's ``FailureInfo.Message``.
        error: On failure, the error ``reconcileModel`` returns (the ``InternalError`` event's text).
    """

    runtime: dict[str, Any] | None
    name: str = ""
    reason: str = ""
    message: str = ""
    error: str = ""


def _format_label(fmt: dict[str, Any]) -> str:
    """``predictor_model.go`` ``getModelFormatLabel``: ``mt:<name>[:<version>]``."""
    return f"mt:{fmt.get('name', '')}" + (f":{fmt['version']}" if fmt.get("version") else "")


def runtime_supports_model(model: dict[str, Any], runtime: dict[str, Any]) -> bool:
    """``predictor_model.go`` ``RuntimeSupportsModel`` (with
    ``getServingRuntimeSupportedModelFormatLabelSet``): the runtime lists the model's format (and
    version, when the model names one); without ``model.runtime`` only auto-selected formats count."""
    labels: set[str] = set()
    for fmt in runtime.get("supportedModelFormats") or []:
        if model.get("runtime") or fmt.get("autoSelect"):
            labels.add(f"mt:{fmt.get('name', '')}")
            if fmt.get("version"):
                labels.add(f"mt:{fmt.get('name', '')}:{fmt['version']}")
    return _format_label(model.get("modelFormat") or {}) in labels


def resolve_runtime(kube: KubeClient, isvc: dict[str, Any]) -> RuntimeResolution:
    """``components/predictor.go`` ``reconcileModel``: the runtime an InferenceService's predictor runs on.

    A named runtime (``spec.predictor.model.runtime``) is looked up as
    ``inferenceservice/utils/utils.go`` ``GetServingRuntime`` does (the namespace's ServingRuntime,
    then a ClusterServingRuntime; neither: "No ServingRuntimes or ClusterServingRuntimes with the
    name: X", failure ``RuntimeNotRecognized`` / "Waiting for runtime to become available"), then
    refused when disabled (``RuntimeDisabled``), when it does not list the model's protocol version
    (``IsProtocolVersionSupported``: a runtime without ``protocolVersions`` takes any;
    ``NoSupportingRuntime``) or its format (``RuntimeSupportsModel``; ``NoSupportingRuntime``).
    Without a name, the namespace's runtimes that auto-select the format
    (``GetSupportingRuntimes``: enabled, format listed with ``autoSelect``, the highest priority
    first) and then the cluster's; none is ``NoSupportingRuntime`` / "No runtime found to support
    specified framework/version".
    """
    meta = isvc.get("metadata") or {}
    model = ((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}
    namespace = meta.get("namespace", "")
    name = model.get("runtime")
    if name:
        found = kube.get_or_none(SERVING_RUNTIMES, name, namespace)
        if found is None:
            with contextlib.suppress(RolloutError):  # no ClusterServingRuntime kind: IsNoMatchError
                found = kube.get_or_none(CLUSTER_SERVING_RUNTIMES, name, None)
        if found is None:
            return RuntimeResolution(
                None,
                reason="RuntimeNotRecognized",
                message="Waiting for runtime to become available",
                error=f"No ServingRuntimes or ClusterServingRuntimes with the name: {name}",
            )
        spec = found.get("spec") or {}
        if spec.get("disabled"):
            return RuntimeResolution(
                None,
                reason="RuntimeDisabled",
                message="Specified runtime is disabled",
                error=f"specified runtime {name} is disabled",
            )
        protocol = model.get("protocolVersion")
        if protocol and spec.get("protocolVersions") and protocol not in spec["protocolVersions"]:
            return RuntimeResolution(
                None,
                reason="NoSupportingRuntime",
                message="Specified runtime does not support specified protocol version",
                error=f"specified runtime {name} does not support specified protocol version",
            )
        if not runtime_supports_model(model, spec):
            return RuntimeResolution(
                None,
                reason="NoSupportingRuntime",
                message="Specified runtime does not support specified framework/version",
                error=f"specified runtime {name} does not support specified framework/version",
            )
        return RuntimeResolution(spec, name)
    candidates = [
        r
        for r in kube.list(SERVING_RUNTIMES, namespace).get("items") or []
        if not (r.get("spec") or {}).get("disabled") and runtime_supports_model(model, r.get("spec") or {})
    ]

    def priority(r: dict[str, Any]) -> int:
        fmt = (model.get("modelFormat") or {}).get("name")
        pri = [
            f.get("priority") for f in (r.get("spec") or {}).get("supportedModelFormats") or [] if f.get("name") == fmt
        ]
        return -int(pri[0] or 0) if pri else 0

    candidates.sort(key=priority)
    if not candidates:
        fmt = model.get("modelFormat") or {}
        return RuntimeResolution(
            None,
            reason="NoSupportingRuntime",
            message="No runtime found to support specified framework/version",
            error=f"no runtime found to support predictor with model type: {fmt}",
        )
    return RuntimeResolution(candidates[0].get("spec") or {}, candidates[0]["metadata"]["name"])


def runtime_failure_status(old: dict[str, Any], failure: RuntimeResolution, mode: str) -> dict[str, Any]:
    """The status KServe writes when ``reconcileModel`` fails: the previous status, with the
    conditions initialized when there were none (``controller.go`` ``InitializeConditions``:
    ``PredictorReady``, ``IngressReady`` and ``Ready`` Unknown) and ``modelStatus`` set by
    ``UpdateModelTransitionStatus(InvalidSpec, FailureInfo)`` (target state ``FailedToLoad``,
    ``lastFailureInfo`` = reason and message); ``deploymentMode`` from ``updateStatus``. No
    condition carries the reason: only ``modelStatus`` and the ``InternalError`` event do."""
    out = copy.deepcopy(old)
    if not any(c.get("type") == "Ready" for c in out.get("conditions") or []):
        present = {c.get("type") for c in out.get("conditions") or []}
        out["conditions"] = list(out.get("conditions") or []) + [
            {"type": t, "status": "Unknown"} for t in ("IngressReady", "PredictorReady", "Ready") if t not in present
        ]
    model_status = dict(out.get("modelStatus") or {})
    model_status["transitionStatus"] = "InvalidSpec"
    model_status["states"] = {**(model_status.get("states") or {}), "targetModelState": "FailedToLoad"}
    model_status["lastFailureInfo"] = {"reason": failure.reason, "message": failure.message}
    out["modelStatus"] = model_status
    out["deploymentMode"] = mode
    return out


def pod_template(isvc_meta: dict[str, Any], pred: dict[str, Any]) -> dict[str, Any]:
    """What KServe puts into a predictor's pod template (Standard: the Deployment's; Knative: the
    revision's), as far as the InferenceService decides it.

    Metadata per ``components/predictor.go`` ``buildObjectMeta``: labels = the InferenceService's,
    then the predictor's, then ``serving.kserve.io/inferenceservice`` and ``component``; annotations
    = the InferenceService's and the predictor's, less ``serviceAnnotationDisallowedList``. The pod
    spec is built from the predictor (model, runtime, resources, ...): everything but its name and
    the scaling/traffic fields, which change replicas and routes, not pods.
    """
    labels = {
        **(isvc_meta.get("labels") or {}),
        **(pred.get("labels") or {}),
        "serving.kserve.io/inferenceservice": isvc_meta.get("name", ""),
        "component": "predictor",
    }
    annotations = {
        k: v
        for k, v in {**(isvc_meta.get("annotations") or {}), **(pred.get("annotations") or {})}.items()
        if k not in SERVICE_ANNOTATION_DISALLOWED
    }
    body = {k: v for k, v in pred.items() if k not in (*_SCALING_KEYS, "name", "labels", "annotations")}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": body}


def pod_templates(isvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod template of every predictor workload of an InferenceService, by workload name
    (``PredictorServiceName``): the stable predictor's, and each canary's as
    ``reconcileCanaryDeployments`` builds it (``buildCanaryPredictor`` over the stable)."""
    meta, spec = isvc.get("metadata") or {}, isvc.get("spec") or {}
    name = meta.get("name", "")
    stable = spec.get("predictor") or {}
    out = {predictor_service_name(name, stable.get("name") or ""): pod_template(meta, stable)}
    for entry in spec.get("canary") or []:
        cp = entry.get("predictor") or {}
        out[predictor_service_name(name, cp.get("name") or "")] = pod_template(meta, build_canary_predictor(stable, cp))
    return out


@dataclass
class _Deployment:
    """A simulated apps/v1 Deployment: its generation moves only when its own spec does."""

    generation: int = 0
    spec: str = ""
    available: bool = False
    rolling: bool = False
    uid: int = field(default_factory=lambda: next(_UIDS))
    broken: bool = False
    replicas: int = 1

    @property
    def ready(self) -> bool:
        return self.available and not self.broken

    @property
    def available_replicas(self) -> int:
        """``status.availableReplicas``: every replica once its pods are up, none otherwise."""
        return self.replicas if self.ready else 0


def deployment_status(dep: _Deployment) -> dict[str, Any]:
    """A simulated Deployment as the API reports it: ``status.conditions`` (Available, Progressing)
    and ``status.observedGeneration``, as the Deployment controller writes them."""
    crashed = dep.broken and not dep.rolling  # pods that were up crash: availability is lost
    available = dep.available and not crashed
    conditions = [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        }
    ]
    if dep.broken and dep.rolling:
        progressing = ("False", "ProgressDeadlineExceeded", "ReplicaSet has timed out progressing.")
    elif dep.rolling:
        progressing = ("True", "ReplicaSetUpdated", "ReplicaSet is progressing.")
    else:
        progressing = ("True", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed.")
    conditions.append(dict(zip(("type", "status", "reason", "message"), ("Progressing", *progressing), strict=True)))
    return {"status": {"conditions": conditions, "observedGeneration": dep.generation}}


def _deployment_condition(deployments: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """``getDeploymentCondition`` for one Deployment (the single-node path): its condition of ``kind``."""
    if not deployments:
        return None
    return next((c for c in (deployments[0].get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def propagate_raw_status(deployments: list[dict[str, Any]], url: str | None = None) -> dict[str, Any]:
    """``inference_service_status.go`` ``PropagateRawStatus`` for the predictor (single node).

    Returns ``{"condition": PredictorReady's {status, reason, message}, "url": the component URL (only
    when ready), "observedGeneration": deploymentList[0]'s (None for an empty list)}``.
    """
    ready = {"status": "False", "reason": "", "message": ""}
    available = _deployment_condition(deployments, "Available")
    if available is not None and available["status"] == "True":
        ready = {k: available.get(k, "") for k in ("status", "reason", "message")}
    progressing = _deployment_condition(deployments, "Progressing")
    if progressing is not None:
        if progressing["status"] == "False":
            if progressing.get("message"):
                # a message means a problem, often ProgressDeadlineExceeded
                ready = {"status": "False", "reason": progressing.get("reason", ""), "message": progressing["message"]}
        elif progressing["status"] == "True":
            if progressing.get("reason") == "NewReplicaSetAvailable":
                ready = {"status": "True", "reason": progressing["reason"], "message": progressing.get("message", "")}
            elif available is None or available["status"] != "True":
                ready = {
                    "status": "Unknown",
                    "reason": progressing.get("reason", ""),
                    "message": progressing.get("message", ""),
                }
    if available is not None and available["status"] == "False":
        ready = {"status": "False", "reason": available.get("reason", ""), "message": available.get("message", "")}
    failure = _deployment_condition(deployments, "ReplicaFailure")
    if failure is not None and failure["status"] == "True":
        ready = {"status": "False", "reason": failure.get("reason", ""), "message": failure.get("message", "")}
    return {
        "condition": ready,
        "url": url if ready["status"] == "True" else None,
        "observedGeneration": (deployments[0].get("status") or {}).get("observedGeneration") if deployments else None,
    }


def propagate_status(component: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    """``inference_service_status.go`` ``PropagateStatus``: a Knative Service's status into the
    predictor's component status (rolled-out revision tracking, traffic, URL and address once Ready).

    Args:
        component: The component status so far (``latestRolledoutRevision``, ``previousRolledoutRevision``).
        service: The Knative Service's status: ``latestReadyRevisionName``, ``latestCreatedRevisionName``,
            ``traffic``, ``conditions``, ``url``, ``address``, ``observedGeneration``.

    Returns:
        ``{"component", "ready": the Service's Ready condition (PredictorReady), "observedGeneration"}``.
    """
    out = dict(component)
    out["latestCreatedRevision"] = service.get("latestCreatedRevisionName", "")
    latest_ready = service.get("latestReadyRevisionName", "")
    traffic = list(service.get("traffic") or [])
    per_revision: dict[str, int] = {}
    for t in traffic:
        if t.get("percent") is not None:
            per_revision[t.get("revisionName", "")] = per_revision.get(t.get("revisionName", ""), 0) + t["percent"]
    for t in traffic:
        if t.get("revisionName") == latest_ready and t.get("latestRevision"):
            if out.get("latestRolledoutRevision", "") != latest_ready:
                if t.get("percent") == 100:  # track the last revision that's fully rolled out
                    out["previousRolledoutRevision"] = out.get("latestRolledoutRevision", "")
                    out["latestRolledoutRevision"] = latest_ready
            elif latest_ready == service.get("latestCreatedRevisionName", ""):
                # rolled out at 100 % and then rolled back: back to the previous rolled-out revision
                pct = t.get("percent")
                same = pct is not None and pct < 100 and per_revision.get(t.get("revisionName", "")) == 100
                if same and out.get("previousRolledoutRevision"):
                    out["latestRolledoutRevision"] = out["previousRolledoutRevision"]
    out["latestReadyRevision"] = latest_ready
    ready = next((c for c in service.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        if service.get("address") is not None:
            out["address"] = service["address"]
        if service.get("url") is not None:
            out["url"] = service["url"]
    out["traffic"] = traffic
    return {"component": out, "ready": ready, "observedGeneration": service.get("observedGeneration")}


@dataclass
class _Ksvc:
    """A simulated Knative Service with its revisions (``ksvc_reconciler.go``, ``PropagateStatus``)."""

    generation: int = 0
    template: str = ""
    traffic_spec: str = ""
    revisions: int = 0
    latest_created: str = ""
    latest_ready: str = ""
    latest_rolledout: str = ""
    previous_rolledout: str = ""
    canary_percent: int | None = None
    ready: bool = False

    def traffic_targets(self) -> list[dict[str, Any]]:
        """The Knative Service's traffic as ``ksvc_reconciler.go`` sets it (a split of the latest
        revision and the last rolled-out one only with a percent), as Knative reports it (the latest
        target resolved to the latest ready revision)."""
        pct = self.canary_percent
        if pct is not None and self.latest_rolledout:
            out = [{"revisionName": self.latest_ready, "percent": pct, "latestRevision": True}]
            if pct < 100:
                out.append({"revisionName": self.latest_rolledout, "percent": 100 - pct, "latestRevision": False})
            return out
        return [{"revisionName": self.latest_ready, "percent": 100, "latestRevision": True}]

    def component_status(self, tag_routing: bool, svc: str, ns: str) -> dict[str, Any]:
        """The predictor's status as KServe copies it from the Knative Service: traffic targets as
        ``ksvc_reconciler.go`` builds them (``latest`` tagged only with
        ``serving.kserve.io/enable-tag-routing: "true"``; ``prev`` below 100 %), and a URL for each
        tagged target the way Knative names it (its default tag template ``{{.Tag}}-{{.Name}}`` under
        the domain template ``{{.Name}}.{{.Namespace}}.{{.Domain}}``, domain ``example.com``)."""

        def tagged(target: dict[str, Any], tag: str) -> dict[str, Any]:
            return {**target, "tag": tag, "url": f"http://{tag}-{svc}.{ns}.example.com"}

        traffic: list[dict[str, Any]] = []
        pct = self.canary_percent
        if pct is not None and self.latest_rolledout:
            latest = {"revisionName": self.latest_ready, "percent": pct, "latestRevision": True}
            traffic.append(tagged(latest, "latest") if tag_routing else latest)
            if pct < 100:
                prev = {"revisionName": self.latest_rolledout, "percent": 100 - pct, "latestRevision": False}
                traffic.append(tagged(prev, "prev"))
        elif self.latest_ready:
            latest = {"revisionName": self.latest_ready, "percent": 100, "latestRevision": True}
            traffic.append(tagged(latest, "latest") if tag_routing else latest)
        out: dict[str, Any] = {
            "latestCreatedRevision": self.latest_created,
            "latestReadyRevision": self.latest_ready,
            "traffic": traffic,
        }
        if self.latest_rolledout:
            out["latestRolledoutRevision"] = self.latest_rolledout
        if self.previous_rolledout:
            out["previousRolledoutRevision"] = self.previous_rolledout
        return out


@dataclass
class _Children:
    """The children KServe's controller would own for one InferenceService."""

    deployments: dict[str, _Deployment] = field(default_factory=dict)
    ksvc: dict[str, _Ksvc] = field(default_factory=dict)
    last_spec: dict[str, Any] | None = None

    def reconcile_raw(self, isvc: str, spec: dict[str, Any], phase: str) -> None:
        """Standard mode: one Deployment per predictor and per canary, named PredictorServiceName;
        orphans are deleted (``reconcileCanaryDeployments``' cleanup)."""
        pred = spec.get("predictor") or {}
        wanted = {predictor_service_name(isvc, pred.get("name") or ""): pred}
        replicas = {predictor_service_name(isvc, pred.get("name") or ""): int(pred.get("minReplicas") or 1)}
        for c in spec.get("canary") or []:
            cp = c.get("predictor") or {}
            wanted[predictor_service_name(isvc, cp.get("name") or "")] = cp
            replicas[predictor_service_name(isvc, cp.get("name") or "")] = canary_replica_count(spec, c)
        for gone in [n for n in self.deployments if n not in wanted]:
            del self.deployments[gone]
        for name, p in wanted.items():
            dep = self.deployments.setdefault(name, _Deployment())
            dep.replicas = replicas[name]
            body = json.dumps(p, sort_keys=True)
            if body != dep.spec:
                dep.spec, dep.generation, dep.rolling, dep.broken = body, dep.generation + 1, True, False
            if phase == "ready":
                dep.available, dep.rolling, dep.broken = True, False, False
            elif phase == "failed" and (dep.rolling or not dep.available):
                dep.broken = True  # the new pods never come up: Progressing=False (deadline exceeded)
            elif phase == "degraded":
                dep.broken = True  # the pods crash after having been up

    def reconcile_knative(
        self, isvc: str, spec: dict[str, Any], phase: str, meta: dict[str, Any] | None = None
    ) -> None:
        """Knative mode: one Knative Service named after the (unnamed) predictor; a template change
        is a new revision; traffic as ``ksvc_reconciler.go`` splits it; rollouts tracked as
        ``PropagateStatus`` does."""
        pred = spec.get("predictor") or {}
        ksvc = self.ksvc.setdefault(predictor_service_name(isvc, pred.get("name") or ""), _Ksvc())
        # A revision per template: the predictor and the metadata buildObjectMeta copies into it.
        template = json.dumps(pod_template(meta or {"name": isvc}, pred), sort_keys=True)
        pct = pred.get("canaryTrafficPercent")
        # ksvc_reconciler.go: a split (latest + the last rolled-out revision) only with a percent
        traffic_spec = json.dumps([pct, ksvc.latest_rolledout] if pct is not None else None)
        if template != ksvc.template:
            ksvc.template = template
            ksvc.revisions += 1
            ksvc.latest_created = f"{predictor_service_name(isvc, pred.get('name') or '')}-{ksvc.revisions:05d}"
            ksvc.generation += 1
            ksvc.ready = False
        elif traffic_spec != ksvc.traffic_spec:
            ksvc.generation += 1
        ksvc.traffic_spec = traffic_spec
        ksvc.canary_percent = None if pct is None else int(pct)
        if phase == "ready":
            ksvc.latest_ready, ksvc.ready = ksvc.latest_created, True
        known = {"latestRolledoutRevision": ksvc.latest_rolledout, "previousRolledoutRevision": ksvc.previous_rolledout}
        knative = {
            "latestReadyRevisionName": ksvc.latest_ready,
            "latestCreatedRevisionName": ksvc.latest_created,
            "traffic": ksvc.traffic_targets(),
        }
        component = propagate_status(known, knative)["component"]
        ksvc.latest_rolledout = component.get("latestRolledoutRevision", "")
        ksvc.previous_rolledout = component.get("previousRolledoutRevision", "")


# The kubelet's and the scheduler's side: pods and events ---------------------------------------------

SCHEDULING_REASONS = ("Unschedulable", "FailedScheduling", "Insufficient")
"""Behaviour reasons that mean the pods never get a node (e.g. no free GPU)."""


def _pod_cause(reason: str, message: str, pod: str, image: str) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """A failing pod's ``status`` and its events ``(type, reason, message)``, as the kubelet and the
    scheduler write them for the cause ``reason`` (what ``kubectl describe pod`` shows).

    * ``ImagePullBackOff`` / ``ErrImagePull``: Pending, the container waiting ``ImagePullBackOff``;
      events ``Failed`` ("Failed to pull image ...", "Error: ErrImagePull") and ``BackOff``.
    * ``CrashLoopBackOff`` / ``OOMKilled``: Running, the container waiting ``CrashLoopBackOff``
      with ``lastState.terminated`` (``Error`` exit 1, or ``OOMKilled`` exit 137) and restarts;
      event ``BackOff`` "Back-off restarting failed container ...".
    * ``Unschedulable`` (no node has the GPU): Pending, ``PodScheduled`` False ``Unschedulable``, no
      container status; event ``FailedScheduling`` from the scheduler.
    """
    container = "kserve-container"
    if any(k.lower() in reason.lower() for k in SCHEDULING_REASONS):
        text = (
            message
            if "nodes are available" in message
            else (
                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
                "3 No preemption victims found for incoming pod."
            )
        )
        status = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": text}],
        }
        return status, [("Warning", "FailedScheduling", text)]
    if reason in ("CrashLoopBackOff", "OOMKilled", "Error"):
        oom = reason == "OOMKilled"
        waiting = f"back-off 5m0s restarting failed container={container} pod={pod}"
        status = {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": container,
                    "image": image,
                    "ready": False,
                    "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": waiting}},
                    "lastState": {
                        "terminated": {
                            "reason": "OOMKilled" if oom else "Error",
                            "exitCode": 137 if oom else 1,
                            **({"message": message} if message and not oom else {}),
                        }
                    },
                }
            ],
        }
        return status, [("Warning", "BackOff", f"Back-off restarting failed container {container} in pod {pod}")]
    # the image cannot be pulled (the default)
    pull = message or f'Back-off pulling image "{image}"'
    status = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": container,
                "image": image,
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": pull}},
            }
        ],
    }
    events = [
        ("Normal", "Pulling", f'Pulling image "{image}"'),
        ("Warning", "Failed", f'Failed to pull image "{image}": {pull}'),
        ("Warning", "Failed", "Error: ErrImagePull"),
        ("Normal", "BackOff", pull),
        ("Warning", "Failed", "Error: ImagePullBackOff"),
    ]
    return status, events


def _running_pod_status(image: str) -> dict[str, Any]:
    return {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {
                "name": "kserve-container",
                "image": image,
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": _now()}},
            }
        ],
    }


def _pod_image(spec_json: str) -> str:
    """The serving container's image: the predictor's own container when it names one, else the
    vLLM image of upstream's runtime (``kserve-vllmserver.yaml``)."""
    try:
        pred = json.loads(spec_json or "{}")
    except ValueError:
        pred = {}
    containers = pred.get("containers") or []
    return (containers[0].get("image") if containers else "") or "vllm/vllm-openai:v0.11.0"


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (``a=b,c==d,e!=f``), as ``?labelSelector=`` filters a list."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term not in labels:
            return False
    return True


def patch_status(
    client: KubeClient, res: Resource, name: str, namespace: str, status: dict[str, Any]
) -> dict[str, Any]:
    """Merge-patches the ``status`` subresource, as a controller does (the library itself never writes status).

    Goes through the ``kubernetes`` client's ``CustomObjectsApi`` on ``client``'s connection, with
    the library's error mapping and retry of transient errors, so a stand-in write fails the way
    the library's own calls do.

    Args:
        client: The stand-in's client (its connection, field manager and retry deadline are used).
        res: The resource.
        name: Object name.
        namespace: Namespace.
        status: The status fields to set (``None`` values delete keys; lists are replaced).

    Returns:
        The object after the patch.
    """
    api = k8s_client.CustomObjectsApi(client.api_client)
    target = Target("patch", res.kind, name, namespace, res.plural + "/status")

    def once() -> dict[str, Any]:
        try:
            return api.patch_namespaced_custom_object_status(
                res.group,
                res.version,
                namespace,
                res.plural,
                name,
                {"status": status},
                field_manager=client.field_manager,
                _request_timeout=client.request_timeout_s,
            )
        except BaseException as err:  # mapped once, re-raised
            mapped = map_error(err, target)
            if mapped is err:
                raise
            raise mapped from err

    return retry(once, deadline_s=client.retry_deadline_s, what=f"patch status of {target.describe()}")


ISVC_FINALIZER = "inferenceservice.finalizers"
"""The finalizer KServe's InferenceService controller keeps on every InferenceService (``controller.go``)."""


def _patch_metadata(kube: KubeClient, name: str, namespace: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of an InferenceService's ``metadata`` (how ``controller.go`` writes its
    finalizer: ``client.RawPatch(types.MergePatchType, ...)``), with the library's error mapping."""
    api = k8s_client.CustomObjectsApi(kube.api_client)
    res = INFERENCE_SERVICES
    target = Target("patch", res.kind, name, namespace, res.plural)

    def once() -> dict[str, Any]:
        try:
            return api.patch_namespaced_custom_object(
                res.group,
                res.version,
                namespace,
                res.plural,
                name,
                {"metadata": metadata},
                field_manager=kube.field_manager,
                _request_timeout=kube.request_timeout_s,
            )
        except BaseException as err:  # mapped once, re-raised
            mapped = map_error(err, target)
            if mapped is err:
                raise
            raise mapped from err

    return retry(once, deadline_s=kube.retry_deadline_s, what=f"patch metadata of {target.describe()}")


def delete_without_controller(kube: KubeClient, name: str, namespace: str) -> None:
    """Deletes InferenceService ``name`` when no controller runs any more (a test's cleanup after the
    stand-in stopped): its ``inferenceservice.finalizers`` dropped first, as a person does with
    ``kubectl patch --type merge -p '{"metadata":{"finalizers":null}}'``, so it does not stay
    terminating for the next test in the namespace."""
    with contextlib.suppress(RolloutError):
        _patch_metadata(kube, name, namespace, {"finalizers": None})
    kube.delete(INFERENCE_SERVICES, name, namespace)


class Reconciler:
    """Watches KServe objects on an API server and writes their status like KServe's controller.

    Args:
        configuration: The kubernetes client Configuration of the (direct, not proxied) API server.
        default: Behaviour for objects without their own.
        namespace: Only objects in this namespace (all when None).
    """

    def __init__(
        self,
        configuration: k8s_client.Configuration,
        *,
        default: Behaviour | None = None,
        namespace: str | None = None,
    ) -> None:
        self._configuration = configuration
        self._default = default or Behaviour()
        self._per_name: dict[str, Behaviour] = {}
        self._namespace = namespace
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._seen_gen: dict[tuple[str, str, str], int] = {}
        self._children: dict[tuple[str, str, str], _Children] = {}
        self._jobs: list[_Job] = []
        self._seq = 0
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: list[Any] = []
        self.ready_writes: list[ReadyWrite] = []
        self.errors: list[str] = []
        self.collected: list[str] = []
        """Names of the LLMInferenceServiceConfigs the garbage collector deleted (:func:`collect_garbage`)."""
        self._ready_cv = threading.Condition(self._lock)
        self.gateway_api = False
        """KServe's ``enableGatewayApi`` (default false): whether canary weights route traffic."""
        self.hpas: dict[tuple[str, str], dict[str, Any]] = {}
        """Standard mode: the HPAs KServe would own, ``{(namespace, component): essentials}``."""
        self.events: list[tuple[str, str, str]] = []
        """Warning events KServe would record on an InferenceService: ``(name, reason, message)``."""
        self._pod_templates: dict[tuple[str, str], list[str]] = {}
        self._failures: dict[tuple[str, str, str], int] = {}
        self._finalizing: set[tuple[str, str, str]] = set()
        self.finalized: list[str] = []
        """InferenceServices whose finalizer the stand-in removed (their deletion completed)."""

    # Switches ----------------------------------------------------------------------------------

    def set_default(self, behaviour: Behaviour | None = None, **changes: Any) -> None:
        """Sets the global behaviour (``behaviour`` or changes to the current one)."""
        with self._lock:
            self._default = behaviour or replace(self._default, **changes)
        self.resync()

    def behave(self, name: str, behaviour: Behaviour | None = None, **changes: Any) -> None:
        """Sets the behaviour of the object called ``name`` (any kind, any namespace)."""
        with self._lock:
            base = self._per_name.get(name, self._default)
            self._per_name[name] = behaviour or replace(base, **changes)
        self.resync(name)

    def forget(self, name: str) -> None:
        """Drops the per-object behaviour of ``name`` (it follows the default again)."""
        with self._lock:
            self._per_name.pop(name, None)
        self.resync(name)

    def behaviour_of(self, name: str) -> Behaviour:
        """The behaviour that applies to ``name``."""
        with self._lock:
            return self._per_name.get(name, self._default)

    def backends_of(self, name: str, namespace: str) -> list[tuple[str, int]]:
        """Where InferenceService ``name``'s address sends requests now (:func:`service_backends`)."""
        live = self._client().get(INFERENCE_SERVICES, name, namespace)
        return service_backends(live, gateway_api=self.gateway_api)

    def deployments_of(self, name: str) -> dict[str, tuple[int, int]]:
        """Standard mode: the simulated Deployments of InferenceService ``name`` as
        ``{Deployment name: (uid, generation)}`` (a uid survives as long as the Deployment, i.e. its pods)."""
        with self._lock:
            return {
                n: (d.uid, d.generation)
                for key, children in self._children.items()
                if key[2] == name
                for n, d in children.deployments.items()
            }

    def pod_template_versions(self, name: str) -> dict[str, int]:
        """How many pod templates each predictor workload of InferenceService ``name`` has had:
        ``{Deployment or Knative Service name: versions}``. Each version after the first is a rolling
        restart of its pods (Standard) or a new revision (Knative); a workload deleted and created
        again keeps counting (its pods started again too)."""
        with self._lock:
            return {w: len(v) for (isvc, w), v in self._pod_templates.items() if isvc == name}

    def _track_pod_templates(self, obj: dict[str, Any]) -> None:
        """Records each predictor workload's pod template when it changes (see :func:`pod_templates`)."""
        name = (obj.get("metadata") or {}).get("name", "")
        for workload, template in pod_templates(obj).items():
            text = json.dumps(template, sort_keys=True)
            seen = self._pod_templates.setdefault((name, workload), [])
            if not seen or seen[-1] != text:
                seen.append(text)

    def knative_services_of(self, name: str) -> list[str]:
        """Knative mode: the simulated Knative Services of InferenceService ``name``."""
        with self._lock:
            return sorted(n for key, children in self._children.items() if key[2] == name for n in children.ksvc)

    def autoscale(self, name: str, times: int = 1) -> None:
        """Scales the predictor Deployment of InferenceService ``name`` ``times`` times, as an HPA or
        KEDA does: each change of ``spec.replicas`` is a new Deployment generation, which KServe
        copies into the InferenceService's ``status.observedGeneration`` (so it can run ahead of
        the InferenceService's own generation)."""
        with self._lock:
            for key, children in self._children.items():
                if key[2] != name or children.last_spec is None:
                    continue
                pred = children.last_spec.get("predictor") or {}
                dep = children.deployments.get(predictor_service_name(name, pred.get("name") or ""))
                if dep is not None:
                    dep.generation += times
        self.resync(name)

    def resync(self, name: str | None = None) -> None:
        """Re-evaluates known objects (all, or those called ``name``) now."""
        with self._lock:
            for key in list(self._objects):
                if name is None or key[2] == name:
                    self._schedule(key, 0.0)

    # Lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Reconciler:
        """Starts the watch threads and the worker; returns self."""
        self._stop.clear()
        for res in (INFERENCE_SERVICES, LLM_INFERENCE_SERVICES, LLM_INFERENCE_SERVICE_CONFIGS, SERVING_RUNTIMES):
            t = threading.Thread(target=self._watch_loop, args=(res,), name=f"standin-watch-{res.plural}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._work_loop, name="standin-worker", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stops all threads (closes the open watches)."""
        self._stop.set()
        self._queue.put(("STOP", {}))
        for stream in list(self._streams):
            with contextlib.suppress(Exception):
                stream.close()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()

    def __enter__(self) -> Reconciler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_ready_write(
        self, name: str, generation: int | None = None, timeout: float = 10.0, *, since: float | None = None
    ) -> ReadyWrite:
        """Blocks until a Ready=True status was written for ``name``.

        Args:
            name: Object name.
            generation: Only a write claiming at least this observedGeneration counts.
            timeout: Seconds to wait.
            since: Only a write sent at or after this ``time.monotonic()`` counts.
        """
        deadline = time.monotonic() + timeout
        with self._ready_cv:
            while True:
                for w in reversed(self.ready_writes):
                    if (
                        w.name == name
                        and (generation is None or w.generation >= generation)
                        and (since is None or w.sent_at >= since)
                        and w.done_at
                    ):
                        return w
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no Ready write for {name} (generation {generation}) in {timeout}s")
                self._ready_cv.wait(left)

    def wait_collected(self, name: str, timeout: float = 10.0) -> None:
        """Waits until the stand-in's garbage collector deleted the object called ``name``."""
        deadline = time.monotonic() + timeout
        with self._ready_cv:
            while name not in self.collected:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{name} was not garbage-collected in {timeout}s")
                self._ready_cv.wait(left)

    # Internals ---------------------------------------------------------------------------------

    def _client(self) -> KubeClient:
        return KubeClient(
            k8s_client.ApiClient(self._configuration),
            field_manager=FIELD_MANAGER,
            retry_deadline_s=10,
            request_timeout_s=10,
        )

    def _watch_loop(self, res: Resource) -> None:
        kube = self._client()
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listed = kube.list(res, self._namespace)
                    rv = (listed.get("metadata") or {}).get("resourceVersion") or "0"
                    for obj in listed.get("items") or []:
                        self._queue.put(("UPSERT", obj))
                stream = kube.watch(res, self._namespace, resource_version=rv, timeout_s=30)
                self._streams.append(stream)
                try:
                    if self._stop.is_set():
                        # stop() ran while this watch was being opened (a re-list after an API server
                        # restart retries for a while) and closed only the streams it saw: without
                        # this the watch is read until its server-side timeout, past stop()'s join.
                        return
                    for event in stream:
                        obj = event.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if event.get("type") == "BOOKMARK":
                            continue
                        self._queue.put(("DELETE" if event.get("type") == "DELETED" else "UPSERT", obj))
                finally:
                    with contextlib.suppress(ValueError):
                        self._streams.remove(stream)
                    stream.close()
            except WatchExpired:
                rv = None
            except (RolloutError, OSError) as err:
                if self._stop.is_set():
                    return
                self.errors.append(f"watch {res.plural}: {err}")
                rv = None
                self._stop.wait(0.2)

    def _retry_with_backoff(self, key: tuple[str, str, str]) -> None:
        """Requeues a reconcile that returned an error as controller-runtime does (its default
        per-item rate limiter: 5 ms doubling per consecutive failure, at most 1000 s)."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self._schedule(key, min(0.005 * 2**n, 1000.0), "ready")

    def _schedule(self, key: tuple[str, str, str], delay_s: float, phase: str = "ready") -> None:
        self._seq += 1
        heapq.heappush(self._jobs, _Job(time.monotonic() + delay_s, self._seq, key, phase))
        self._queue.put(("WAKE", {}))

    def _work_loop(self) -> None:
        kube = self._client()
        while not self._stop.is_set():
            with self._lock:
                timeout = max(0.0, self._jobs[0].due - time.monotonic()) if self._jobs else 0.5
            try:
                op, obj = self._queue.get(timeout=timeout)
            except queue.Empty:
                op, obj = "TICK", {}
            if op == "STOP":
                return
            with self._lock:
                if op in ("UPSERT", "DELETE"):
                    self._on_event(op, obj)
                due: list[_Job] = []
                now = time.monotonic()
                while self._jobs and self._jobs[0].due <= now:
                    due.append(heapq.heappop(self._jobs))
            for job in due:
                try:
                    self._reconcile(kube, job)
                except RolloutError as err:
                    if self._stop.is_set():
                        return
                    self.errors.append(f"reconcile {job.key}: {err}")
                    with self._lock:
                        self._schedule(job.key, 0.1, job.phase)

    def _on_event(self, op: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if key[0] == "ServingRuntime":
            # controller.go servingRuntimeFunc: a runtime event requeues the namespace's
            # InferenceServices whose status.servingRuntimeName is that runtime (a service that never
            # resolved it waits for its error backoff instead).
            for k, o in list(self._objects.items()):
                named = (o.get("status") or {}).get("servingRuntimeName") == key[2]
                if k[0] == "InferenceService" and k[1] == key[1] and named:
                    self._schedule(k, 0.0)
            return
        if key[0] == "LLMInferenceServiceConfig":
            # The llmisvc controller watches configs: a preset that appears, changes or goes
            # re-reconciles the services of its namespace (config_merge.go reads them each pass).
            for k in [k for k in self._objects if k[0] == "LLMInferenceService" and k[1] == key[1]]:
                self._schedule(k, 0.0)
            return
        if op == "DELETE" and key[0] == "LLMInferenceService":
            # Kubernetes' garbage collector: objects owned only by deleted members go too.
            self._schedule(("GC", key[1], ""), 0.0, "gc")
        if op == "DELETE":
            self._objects.pop(key, None)
            self._seen_gen.pop(key, None)
            self._children.pop(key, None)
            self._failures.pop(key, None)
            self._finalizing.discard(key)
            return
        self._objects[key] = obj
        if key[0] == "InferenceService" and meta.get("deletionTimestamp"):
            # controller.go Reconcile: an object being deleted is finalized, never reconciled.
            if ISVC_FINALIZER in (meta.get("finalizers") or []) and key not in self._finalizing:
                self._finalizing.add(key)
                self._schedule(key, self.behaviour_of(key[2]).finalize_after_ms / 1000.0, "finalize")
            return
        gen = int(meta.get("generation") or 0)
        # The llmisvc controller reconciles on every event: the stop annotation moves no generation;
        # KServe's InferenceService controller is triggered by the annotation's change too.
        seen: Any = (gen, is_stopped(obj)) if key[0] in ("LLMInferenceService", "InferenceService") else gen
        if self._seen_gen.get(key) != seen:
            self._seen_gen[key] = seen
            b = self.behaviour_of(key[2])
            # A new generation: "in progress" at once (as KServe marks it), then the outcome.
            if b.ready_after_ms > 0:
                self._schedule(key, 0.0, "progress")
            self._schedule(key, b.ready_after_ms / 1000.0, "ready")

    def _reconcile(self, kube: KubeClient, job: _Job) -> None:
        if job.phase == "gc":
            gone = collect_garbage(kube, job.key[1])
            with self._ready_cv:
                self.collected.extend(gone)
                self._ready_cv.notify_all()
            return
        with self._lock:
            obj = self._objects.get(job.key)
            if obj is None:
                return
            obj = copy.deepcopy(obj)
            b = self.behaviour_of(job.key[2])
        kind = job.key[0]
        if kind == "InferenceService":
            if job.phase == "finalize" or (obj.get("metadata") or {}).get("deletionTimestamp"):
                if job.phase == "finalize":
                    self._finalize_isvc(kube, job.key, obj)
                return
            self._ensure_finalizer(kube, obj)
        gen = int((obj.get("metadata") or {}).get("generation") or 0)
        old_status = obj.get("status") or {}
        phase = job.phase
        if phase == "degraded" and b.mode != "degrade":
            phase = "ready"
        if phase == "ready" and b.mode == "never":
            phase = "failed"
        ready = phase == "ready"
        observed = gen
        if b.mode == "stale":
            # A lagging controller: Ready=True, but observedGeneration stays where it was.
            kept = old_status.get("observedGeneration")
            phase, ready, observed = "ready", True, kept if kept is not None else gen - 1
        if kind == "InferenceService":
            status, ready, observed = self._isvc_status(job.key, obj, b, phase)
            res = INFERENCE_SERVICES
        else:
            status, ready = self._llmisvc_status(obj, b, phase, ready, observed, presets=resolve_presets(kube, obj))
            res = LLM_INFERENCE_SERVICES
        if _strip_times(status) != _strip_times(old_status):
            status = _with_times(status, old_status)
            patch: dict[str, Any] = {k: None for k in old_status if k not in status}
            patch.update(status)
            write = None
            if ready:
                write = ReadyWrite(kind, job.key[1], job.key[2], observed, time.monotonic())
                with self._lock:
                    self.ready_writes.append(write)
            updated = patch_status(kube, res, job.key[2], job.key[1], patch)
            if write is not None:
                with self._ready_cv:
                    write.done_at = time.monotonic()
                    write.resource_version = ((updated or {}).get("metadata") or {}).get("resourceVersion", "")
                    self._ready_cv.notify_all()
            with self._lock:
                if job.key in self._objects:
                    self._objects[job.key] = updated
        if ready and b.mode == "degrade" and job.phase == "ready":
            with self._lock:
                self._schedule(job.key, b.degrade_after_ms / 1000.0, "degraded")

    def _ensure_finalizer(self, kube: KubeClient, obj: dict[str, Any]) -> None:
        """``controller.go`` ``Reconcile``: an InferenceService without ``inferenceservice.finalizers``
        gets it (a merge patch of ``metadata.finalizers``) before anything else."""
        meta = obj.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if ISVC_FINALIZER in finalizers:
            return
        updated = _patch_metadata(kube, meta["name"], meta["namespace"], {"finalizers": [*finalizers, ISVC_FINALIZER]})
        with self._lock:
            key = ("InferenceService", meta["namespace"], meta["name"])
            if key in self._objects and updated:
                self._objects[key] = updated
                obj["metadata"] = updated.get("metadata") or meta

    def _finalize_isvc(self, kube: KubeClient, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        """``controller.go`` ``Reconcile`` on an object being deleted: ``deleteExternalResources``,
        then the finalizer removed (the API server deletes the object once no finalizer is left);
        Kubernetes' garbage collector removes the children it owned (Deployments, Services,
        autoscalers: here the simulated ones and the ScaledObjects on the API server)."""
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        with self._lock:
            self._children.pop(key, None)
        # Recorded before the finalizer goes: once it is gone the API server deletes the object and
        # a waiter may look at ``finalized`` at once (recording after the patch raced that look).
        with self._ready_cv:
            self.finalized.append(key[2])
            self._ready_cv.notify_all()
        rest = [f for f in meta.get("finalizers") or [] if f != ISVC_FINALIZER]
        try:
            _patch_metadata(kube, key[2], key[1], {"finalizers": rest})
        except RolloutError:
            with self._lock:
                self._finalizing.discard(key)
                self.finalized.remove(key[2])
            raise
        with contextlib.suppress(RolloutError):
            for so in kube.list(SCALED_OBJECTS, key[1]).get("items") or []:
                if any(o.get("uid") == uid for o in (so.get("metadata") or {}).get("ownerReferences") or []):
                    kube.delete(SCALED_OBJECTS, so["metadata"]["name"], key[1])

    # Status shapes -----------------------------------------------------------------------------

    @staticmethod
    def _not_ok(phase: str, b: Behaviour) -> tuple[str, str]:
        if phase == "progress":
            return "Progressing", "Deployment is progressing"
        if phase == "degraded":
            return b.reason if b.reason != "ImagePullBackOff" else "MinimumReplicasUnavailable", (
                "Deployment does not have minimum availability." if b.reason == "ImagePullBackOff" else b.message
            )
        return b.reason, b.message

    def _reconcile_autoscalers(self, isvc: dict[str, Any]) -> str | None:
        """Standard mode: the autoscaler of every component as KServe creates it
        (:func:`tests.standin_autoscaler.autoscalers`, canaries first); ScaledObjects are applied to the
        API server (KEDA's CRD), HPAs kept in :attr:`hpas`. Returns the error that ends the predictor's
        reconcile (also in :attr:`events` as ``InternalError``), None when every one was accepted."""
        kube = self.__dict__.setdefault("_autoscaler_kube", self._client())
        meta = isvc.get("metadata") or {}
        runtime_name = (((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("runtime")
        runtime = kube.get_or_none(SERVING_RUNTIMES, runtime_name, meta["namespace"]) if runtime_name else None
        owner = {"apiVersion": isvc.get("apiVersion", "serving.kserve.io/v1beta1"), "kind": "InferenceService"}
        owner.update({"name": meta["name"], "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True})
        for scaler in autoscalers(isvc, runtime):
            key = (meta["namespace"], scaler.component)
            refused = component_refusal(scaler.meta)
            if refused is not None:  # the component's names: before any of its children is written
                what = f"canary {scaler.component}" if scaler.canary else "predictor"
                message = f"fails to reconcile {what}: {refused}"
                with self._lock:
                    self.events.append((meta["name"], "InternalError", message))
                return message
            if scaler.autoscaler_class == "keda" and scaler.obj is not None:
                obj = copy.deepcopy(scaler.obj)
                obj["metadata"]["ownerReferences"] = [owner]  # raw_kube_reconciler.go SetControllerReferences
                why = keda_refusal(obj)
                if why is None:
                    try:
                        kube.apply(obj)
                    except InvalidError as err:
                        why = str(err)
                if why is not None:
                    what = (
                        f"fails to reconcile canary {scaler.component}"
                        if scaler.canary
                        else "fails to reconcile predictor"
                    )
                    message = f"{what}: {why}"
                    with self._lock:
                        self.events.append((meta["name"], "InternalError", message))
                    return message
            elif scaler.autoscaler_class == "hpa" and scaler.obj is not None:
                self.hpas[key] = scaler.obj
            else:  # hpa_reconciler.go shouldDeleteHPA: external / none remove a KServe-owned HPA
                self.hpas.pop(key, None)
        return None

    def pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        """The predictor pods of this namespace's Standard-mode InferenceServices as the API would list
        them (``v1`` Pods): each simulated Deployment's replicas, with the labels KServe puts on
        them (``buildObjectMeta``: ``serving.kserve.io/inferenceservice``, ``component``; the raw
        reconciler's ``app: isvc.<Deployment>``). Up: Running and ready. Failing: the cause of the
        object's behaviour as the kubelet or the scheduler reports it (:func:`_pod_cause`), the cause
        KServe never copies into the InferenceService (its conditions are the Deployment's)."""
        return [
            p
            for p, _ in self._pods_and_events(namespace)
            if label_selector_matches(label_selector, p["metadata"]["labels"])
        ]

    def core_events(self, namespace: str) -> list[dict[str, Any]]:
        """The ``v1`` Events of those pods (kubelet: pulls and back-offs; scheduler: FailedScheduling),
        beside KServe's own on the InferenceService (``InternalError``, :attr:`events`)."""
        out: list[dict[str, Any]] = []
        for pod, evs in self._pods_and_events(namespace):
            for n, (etype, reason, message) in enumerate(evs):
                out.append(self._event(namespace, "Pod", pod["metadata"]["name"], etype, reason, message, n))
        with self._lock:
            own = list(self.events)
        for n, (name, reason, message) in enumerate(own):
            out.append(self._event(namespace, "InferenceService", name, "Warning", reason, message, n))
        return out

    @staticmethod
    def _event(namespace: str, kind: str, name: str, etype: str, reason: str, message: str, n: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{n:x}", "namespace": namespace},
            "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
            "type": etype,
            "reason": reason,
            "message": message,
            "count": 1,
            "lastTimestamp": _now(),
        }

    def _pods_and_events(self, namespace: str) -> list[tuple[dict[str, Any], list[tuple[str, str, str]]]]:
        out: list[tuple[dict[str, Any], list[tuple[str, str, str]]]] = []
        with self._lock:
            items = [(k, c) for k, c in self._children.items() if k[1] == namespace and k[0] == "InferenceService"]
            for (_, ns, isvc), children in items:
                b = self.behaviour_of(isvc)
                for workload, dep in sorted(children.deployments.items()):
                    labels = {
                        "serving.kserve.io/inferenceservice": isvc,
                        "component": "predictor",
                        "app": f"isvc.{workload}",
                    }
                    digest = hashlib.sha256(f"{workload}{dep.generation}".encode()).hexdigest()
                    image = _pod_image(dep.spec)
                    for i in range(max(dep.replicas, 1 if dep.broken else 0)):
                        pod = f"{workload}-{digest[:10]}-{digest[10 + i * 5 : 15 + i * 5]}"
                        meta = {"name": pod, "namespace": ns, "labels": dict(labels)}
                        if dep.broken or (not dep.available and not dep.rolling):
                            status, evs = _pod_cause(b.reason, b.message, pod, image)
                        elif not dep.available:  # still starting
                            status = {
                                "phase": "Pending",
                                "containerStatuses": [
                                    {
                                        "name": "kserve-container",
                                        "ready": False,
                                        "restartCount": 0,
                                        "image": image,
                                        "state": {"waiting": {"reason": "ContainerCreating"}},
                                    }
                                ],
                            }
                            evs = [("Normal", "Scheduled", f"Successfully assigned {ns}/{pod}")]
                        else:
                            status, evs = _running_pod_status(image), []
                        out.append(({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}, evs))
        return out

    def serve_core_api(self, proxy: Any) -> None:
        """Answers ``GET /api/v1/namespaces/<ns>/pods`` and ``.../events`` on ``proxy`` (a
        TLS-terminating :class:`tests.fixtures.faultproxy.FaultProxy`) with :meth:`pods` and
        :meth:`core_events`: the test API server serves custom resources only, and a client through the
        proxy reads the pods and events a cluster would have beside the stand-in's objects."""
        from urllib.parse import parse_qs, unquote, urlsplit

        def respond(method: str, target: str) -> tuple[int, dict[str, Any]] | None:
            url = urlsplit(target)
            parts = url.path.strip("/").split("/")
            if method != "GET" or parts[:3] != ["api", "v1", "namespaces"] or len(parts) != 5:
                return None
            ns, plural = unquote(parts[3]), parts[4]
            if plural not in ("pods", "events"):
                return None
            selector = (parse_qs(url.query).get("labelSelector") or [""])[0]
            items = self.pods(ns, selector) if plural == "pods" else self.core_events(ns)
            kind = "PodList" if plural == "pods" else "EventList"
            return 200, {"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}

        proxy.answer(respond)

    def scaled_objects(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The ScaledObjects on the API server in ``namespace``, by name."""
        kube = self.__dict__.setdefault("_autoscaler_kube", self._client())
        return {o["metadata"]["name"]: o for o in kube.list(SCALED_OBJECTS, namespace).get("items") or []}

    def _isvc_status(
        self, key: tuple[str, str, str], obj: dict[str, Any], b: Behaviour, phase: str
    ) -> tuple[dict[str, Any], bool, int]:
        """The status KServe's controller writes, from simulated children (see :class:`_Children`).

        Returns ``(status, Ready, observedGeneration)``. ``stale``: the status of the last spec this
        stand-in reconciled (a lagging controller), Ready=True.
        """
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        name, ns = meta["name"], meta["namespace"]
        mode = (meta.get("annotations") or {}).get("serving.kserve.io/deploymentMode", "Standard")
        children = self._children.setdefault(key, _Children())
        if b.mode == "stale" and children.last_spec is not None:
            spec, phase = children.last_spec, "ready"  # what it saw before: nothing new is reconciled
        else:
            children.last_spec = copy.deepcopy(spec)
            # predictor.go Reconcile -> buildPredictorResources -> reconcileModel, before any child
            # (canaries included): a runtime that is missing, disabled or does not support the model
            # ends the pass with modelStatus set, the conditions as they were and an InternalError
            # event (controller.go); controller-runtime retries the error with backoff.
            resolved = resolve_runtime(self.__dict__.setdefault("_autoscaler_kube", self._client()), obj)
            if resolved.runtime is None:
                with self._lock:
                    self.events.append((name, "InternalError", resolved.error))
                    self._retry_with_backoff(key)
                status = runtime_failure_status(obj.get("status") or {}, resolved, mode)
                return status, False, int(status.get("observedGeneration") or 0)
            with self._lock:
                self._failures.pop(key, None)
                self._track_pod_templates(obj)
            if phase == "failed" and b.reason in ("Progressing", "ContainerCreating"):
                phase = "progress"  # pods that never fail but never come up (a long model download)
            if is_stopped(obj):
                # serving.kserve.io/stop: "true" (utils.GetForceStopRuntime). The raw and Knative
                # reconcilers delete the workloads (predictor.go reconcileRawDeployment /
                # reconcileKnativeDeployment skip their status); predictor.go Reconcile then clears
                # the whole status but deploymentMode and writes PredictorReady False Stopped;
                # controller.go sets Stopped True; the ingress reconcilers IngressReady False Stopped;
                # Ready follows (no observedGeneration, URL, canary statuses or model status left).
                children.deployments.clear()
                children.ksvc.clear()
                stopped = _cond("PredictorReady", False, "Stopped")
                status = {
                    "deploymentMode": mode,
                    "conditions": [
                        _cond("IngressReady", False, "Stopped"),
                        stopped,
                        _cond("Ready", False, "Stopped"),
                        _cond("Stopped", True),
                    ],
                }
                return status, False, 0
            if mode == "Knative":
                children.reconcile_knative(name, spec, phase, meta)
            else:
                failed = self._reconcile_autoscalers(obj)
                if failed is not None:
                    # predictor.go Reconcile returns the error before any status of this pass is set
                    # (no canaryStatuses, the stable not reconciled); controller.go writes the status
                    # as it was and records an InternalError event.
                    status = copy.deepcopy(obj.get("status") or {})
                    return status, False, int(status.get("observedGeneration") or 0)
                children.reconcile_raw(name, spec, phase)
        pred = spec.get("predictor") or {}
        svc = predictor_service_name(name, pred.get("name") or "")
        if mode == "Knative":
            ksvc = children.ksvc.get(svc) or _Ksvc()
            pred_ready = phase != "failed" and ksvc.ready
            observed = ksvc.generation  # PropagateStatus: ss.ObservedGeneration = ksvc's
            # PropagateStatus copies the Knative Service's Ready: RevisionFailed with the
            # revision's message while it fails, Unknown while the revision deploys.
            pred_status = "True" if pred_ready else ("Unknown" if phase == "progress" else "False")
            reason, message = ("", "") if pred_ready else self._not_ok(phase if phase != "ready" else "progress", b)
            if not pred_ready and phase != "progress":
                reason = "RevisionFailed"
                message = f'Revision "{ksvc.latest_created}" failed with message: {b.message}.'
        else:
            dep = children.deployments.get(svc)
            # PropagateRawStatus over the Deployment's conditions: Available=True (old pods) keeps
            # PredictorReady=True through a rolling update (kserve#4626); a failed rollout ends it.
            # The reason is the Deployment's (MinimumReplicasUnavailable, ProgressDeadlineExceeded):
            # the pods' cause (image pull, crash, no GPU) is in the pods and events only (:meth:`pods`).
            raw = propagate_raw_status([deployment_status(dep)] if dep is not None else [])
            pred_status = raw["condition"]["status"]
            pred_ready = pred_status == "True"
            reason, message = ("", "") if pred_ready else (raw["condition"]["reason"], raw["condition"]["message"])
            observed = raw["observedGeneration"] or 0  # ss.ObservedGeneration = deploymentList[0]'s
        urls = upstream_urls(name, ns, svc, mode)
        # Ingress: kube_ingress_reconciler.go createRawIngress (Standard) / ingress_reconciler.go
        # createIngress (Knative): no ingress while PredictorReady is not True - IngressReady
        # "Predictor ingress not created" (False; Knative: Unknown while the predictor is Unknown),
        # and the URL and address are not (re)written that pass.
        if pred_ready:
            ingress = _cond("IngressReady", True)
        else:
            ingress = _cond("IngressReady", False, "Predictor ingress not created")
            if mode == "Knative" and pred_status == "Unknown":
                ingress["status"] = "Unknown"
        predictor = _cond("PredictorReady", pred_ready, reason, message)
        predictor["status"] = pred_status
        # Ready: knative.dev/pkg's living condition set over PredictorReady and IngressReady
        # (inference_service_status.go conditionSet): True when both are; else a False dependent
        # (False trumps Unknown; the predictor's first when both are), its reason and message.
        unhappy = [c for c in (predictor, ingress) if c["status"] == "False"] or [
            c for c in (predictor, ingress) if c["status"] != "True"
        ]
        ready_cond = _cond("Ready", pred_ready)
        if unhappy:
            ready_cond.update(
                {k: v for k, v in unhappy[0].items() if k in ("status", "reason", "message")},
            )
        # controller.go: Stopped False on every pass of a service that is not stopped.
        conditions = [ingress, predictor, ready_cond, _cond("Stopped", False)]
        component: dict[str, Any] = {}
        if pred_ready:  # statusSpec.URL is set only when the component is ready
            component = dict(urls["component"])
        model_status: dict[str, Any] = {
            "transitionStatus": "UpToDate"
            if pred_ready
            else ("InProgress" if phase == "progress" else "BlockedByFailedLoad"),
            "states": {
                "activeModelState": "Loaded" if pred_ready else "Pending",
                "targetModelState": "Loaded" if pred_ready else "Loading",
            },
            "copies": {"failedCopies": 0 if pred_ready or phase == "progress" else 1, "totalCopies": int(pred_ready)},
        }
        old_status = obj.get("status") or {}
        status: dict[str, Any] = {
            "observedGeneration": observed,
            "conditions": conditions,
            "url": urls["url"] if pred_ready else old_status.get("url"),
            "address": {"url": urls["address"]} if pred_ready else old_status.get("address"),
            "deploymentMode": mode,
            "servingRuntimeName": (pred.get("model") or {}).get("runtime", ""),
            "modelStatus": model_status,
            "components": {"predictor": component},
        }
        if mode == "Knative":
            ksvc = children.ksvc.get(svc) or _Ksvc()
            tag_routing = (meta.get("annotations") or {}).get("serving.kserve.io/enable-tag-routing") == "true"
            component.update(ksvc.component_status(tag_routing, svc, ns))
        canaries = spec.get("canary") or []
        if canaries and mode == "Standard":
            # components/predictor.go reconcileCanaryDeployments: {name, ready, trafficPercent}
            # (ready = the canary Deployment has an available replica); CanaryPredictorReady True
            # (AllCanariesReady) or False (CanariesNotReady); cleared when there are no canaries.
            statuses = []
            for c in canaries:
                cname = (c.get("predictor") or {}).get("name", "")
                cdep = children.deployments.get(predictor_service_name(name, cname)) or _Deployment()
                ok = cdep.available_replicas > 0  # deploy.Status.AvailableReplicas > 0
                statuses.append({"name": cname, "ready": ok, "trafficPercent": int(c.get("trafficPercent") or 0)})
            status["canaryStatuses"] = statuses
            all_ready = all(c["ready"] for c in statuses)
            conditions.insert(
                0, _cond("CanaryPredictorReady", all_ready, "AllCanariesReady" if all_ready else "CanariesNotReady")
            )
        return {k: v for k, v in status.items() if v is not None}, pred_ready, observed

    def _llmisvc_status(
        self,
        obj: dict[str, Any],
        b: Behaviour,
        phase: str,
        ready: bool,
        observed: int,
        *,
        presets: Presets | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The status KServe's llmisvc controller writes (``controller.go`` ``Reconcile``), and Ready.

        Every pass, in progress or done, writes ``observedGeneration = metadata.generation``
        (knative.dev/pkg ``reconciler.PostProcessReconcile``); conditions follow
        ``llm_inference_service_lifecycle.go`` (Ready from PresetsCombined, WorkloadsReady,
        RouterReady; the workload and router leaves roll up into those two, the first False leaf
        giving its reason: ``DetermineWorkloadReadiness`` / ``DetermineRouterReadiness``).

        * Presets (``config_merge.go`` ``reconcileBaseRefs``): a missing baseRef is
          PresetsCombined False ``ConfigNotFound`` and the controller stops before any child, so
          the other conditions keep what they were (Unknown on a new object) and Ready is False
          with that reason; stopped, the same failure reads ``Stopped``. P/D and the scheduler are
          decided on the spec merged with its presets (``combineBaseRefsConfig``: ``Prefill != nil``).
        * Stop (``serving.kserve.io/stop: "true"``, ``utils.GetForceStopRuntime``): every workload
          and router leaf False ``Stopped`` / "Service is stopped" (``workload_single_node.go``,
          ``router.go``, ``scheduler.go``), ``status.workloads`` nil (``workload_status.go``
          ``observeWorkloadStatus``), ``address``/``addresses``/``router`` cleared
          (``router.go`` ``updateRoutingStatus``); ``url`` is left as it was.
        * Leaves exist only where upstream sets them: ``HTTPRoutesReady`` with ``router.route.http``,
          ``GatewaysReady`` with ``router.gateway.refs``, ``InferencePoolReady`` and
          ``SchedulerWorkloadReady`` with a scheduler, ``PrefillWorkloadReady`` with a prefill role.
        * Children are named ``kmeta.ChildName(<name>, <suffix>)`` (:func:`child_name`).
        """
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        name, ns = meta["name"], meta["namespace"]
        old = obj.get("status") or {}
        presets = presets or Presets()
        stopped = is_stopped(obj)
        why = ("", "")
        if presets.missing:
            kept = {c["type"]: c for c in old.get("conditions") or [] if c.get("type") != "PresetsCombined"}
            message = f'LLMInferenceServiceConfig "{presets.missing}" not found in namespaces [{ns} kserve]'
            why = ("Stopped", f"Service is stopped with warning: {message}") if stopped else ("ConfigNotFound", message)
            if not stopped:
                # reconcileBaseRefs returns a terminal error: nothing else is reconciled this pass.
                conds = [_cond("PresetsCombined", False, *why)]
                for kind in ("WorkloadsReady", "RouterReady"):
                    conds.append(kept.get(kind) or {"type": kind, "status": "Unknown"})
                conds += [c for k, c in kept.items() if k not in ("WorkloadsReady", "RouterReady", "Ready")]
                conds.append(_cond("Ready", False, *why))
                out = {k: v for k, v in old.items() if k != "conditions"}
                out.update({"observedGeneration": observed, "conditions": conds})
                return out, False
        merged = presets.merged(spec)
        router = merged.get("router") or {}
        route = router.get("route") or {}
        prefill = merged.get("prefill") is not None
        scheduler = router.get("scheduler") is not None
        url = b.url or f"http://gateway.example.com/{ns}/{name}"
        workload_leaves = ["MainWorkloadReady"] + (["PrefillWorkloadReady"] if prefill else [])
        router_leaves = (
            (["GatewaysReady"] if stopped or (router.get("gateway") or {}).get("refs") else [])
            + (["HTTPRoutesReady"] if stopped or route.get("http") is not None else [])
            + (["InferencePoolReady", "SchedulerWorkloadReady"] if stopped or scheduler else [])
        )
        if stopped:
            ready, reason, message = False, "Stopped", "Service is stopped"
            failing = set(workload_leaves + router_leaves)
        else:
            reason, message = ("", "") if ready else self._not_ok(phase, b)
            failing = set(b.failing or workload_leaves)
            router_leaves += [c for c in b.failing if c not in workload_leaves + router_leaves]

        def leaf(kind: str) -> dict[str, Any]:
            ok = ready or kind not in failing
            return _cond(kind, ok, "" if ok else reason, "" if ok else message)

        def rollup(kind: str, leaves: list[str]) -> dict[str, Any]:
            ok = ready or not failing.intersection(leaves)
            return _cond(kind, ok, "" if ok else reason, "" if ok else message)

        # Stopped with a missing preset, reconcileBaseRefs goes on with the service's own spec.
        conds = [_cond("PresetsCombined", not presets.missing, *why)]
        conds += [leaf(k) for k in workload_leaves] + [rollup("WorkloadsReady", workload_leaves)]
        conds += [leaf(k) for k in router_leaves] + [rollup("RouterReady", router_leaves)]
        conds.append(rollup("Ready", workload_leaves + router_leaves))
        if route.get("group") is not None and route.get("weight") is not None:
            conds.append(_cond("GroupReady", True))
        if stopped:
            # observeWorkloadStatus: Workloads nil; updateRoutingStatus: Router, Address(es) nil.
            out = {"observedGeneration": observed, "conditions": conds}
            if old.get("url"):
                out["url"] = old["url"]
            return out, False
        workloads: dict[str, Any] = {
            "primary": {
                "kind": "Deployment",
                "apiGroup": "apps",
                "name": child_name(name, "-kserve"),
                "readyReplicas": 1 if ready else 0,
            },
            "service": {"kind": "Service", "name": child_name(name, "-kserve-workload-svc")},
        }
        if prefill:
            workloads["prefill"] = {
                "kind": "Deployment",
                "apiGroup": "apps",
                "name": child_name(name, "-kserve-prefill"),
                "readyReplicas": 1 if ready else 0,
            }
        if scheduler:
            workloads["scheduler"] = {
                "kind": "Deployment",
                "apiGroup": "apps",
                "name": child_name(name, "-kserve-router-scheduler"),
                "readyReplicas": 1 if ready else 0,
            }
        status: dict[str, Any] = {"observedGeneration": observed, "conditions": conds, "workloads": workloads}
        if route:
            status.update(
                {"url": url, "address": {"url": url}, "addresses": [{"name": "gateway-external", "url": url}]}
            )
        else:
            # updateRoutingStatus without a route: the workload Service's cluster address only.
            svc = b.url or f"http://{child_name(name, '-kserve-workload-svc')}.{ns}.svc.cluster.local"
            status["addresses"] = [{"url": svc}]
        return status, ready


# llm-d: presets, stop, children, garbage collection ---------------------------------------------------

STOP_ANNOTATION = "serving.kserve.io/stop"


def is_stopped(obj: dict[str, Any]) -> bool:
    """``pkg/utils`` ``GetForceStopRuntime``: the stop annotation is ``"true"`` (any case)."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(STOP_ANNOTATION)
    return value is not None and value.lower() == "true"


def child_name(parent: str, suffix: str) -> str:
    """knative.dev/pkg ``kmeta.ChildName`` (written out here, not imported from the code under test)."""
    if len(parent) <= 63 - len(suffix):
        return parent + suffix
    if 31 - len(suffix) <= 0:
        out = parent[:31] + hashlib.md5((parent + suffix).encode()).hexdigest()
        if 63 - len(out) > 0:
            out += suffix[: 63 - len(out)]
        return out.rstrip("-")
    return parent[: 31 - len(suffix)] + hashlib.md5(parent.encode()).hexdigest() + suffix


@dataclass
class Presets:
    """What ``config_merge.go`` ``combineBaseRefsConfig`` found for one LLMInferenceService.

    Attributes:
        specs: The ``spec`` of each baseRef found, in order.
        missing: The first baseRef found in neither the service's namespace nor ``kserve``.
    """

    specs: list[dict[str, Any]] = field(default_factory=list)
    missing: str = ""

    def merged(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The service's spec with its presets merged in (what decides P/D and the scheduler)."""
        out = copy.deepcopy(spec)
        for cfg in self.specs:
            out = _merge(out, cfg)
        return out


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else out.get(k, v)
    return out


def resolve_presets(kube: KubeClient, obj: dict[str, Any]) -> Presets:
    """``config_merge.go`` ``getConfig`` for every baseRef: the service's namespace, then ``kserve``."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    found = Presets()
    for ref in spec.get("baseRefs") or []:
        name = ref.get("name", "")
        cfg = kube.get_or_none(LLM_INFERENCE_SERVICE_CONFIGS, name, meta.get("namespace", ""))
        if cfg is None:
            cfg = kube.get_or_none(LLM_INFERENCE_SERVICE_CONFIGS, name, "kserve")
        if cfg is None:
            found.missing = found.missing or name
            continue
        found.specs.append(cfg.get("spec") or {})
    return found


def collect_garbage(kube: KubeClient, namespace: str) -> list[str]:
    """Kubernetes' garbage collector for LLMInferenceServiceConfigs owned by LLMInferenceServices.

    An object whose ``ownerReferences`` are all gone (no live object with that uid) is deleted
    (background propagation); one without owners is never collected. Returns the deleted names.
    """
    live = {
        (i.get("metadata") or {}).get("uid") for i in kube.list(LLM_INFERENCE_SERVICES, namespace).get("items") or []
    }
    gone: list[str] = []
    for cfg in kube.list(LLM_INFERENCE_SERVICE_CONFIGS, namespace).get("items") or []:
        owners = [
            o
            for o in (cfg.get("metadata") or {}).get("ownerReferences") or []
            if o.get("kind") == "LLMInferenceService"
        ]
        if owners and not any(o.get("uid") in live for o in owners):
            name = cfg["metadata"]["name"]
            kube.delete(LLM_INFERENCE_SERVICE_CONFIGS, name, namespace)
            gone.append(name)
    return gone
