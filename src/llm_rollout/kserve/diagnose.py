"""Why a KServe object is not ready: the likely causes behind its conditions, and the pods and
events around it, for the message of a readiness wait that ran out of time.

KServe's conditions seldom carry the cause: an InferenceService's ``PredictorReady`` is its
Deployment's condition (``inference_service_status.go`` ``PropagateRawStatus``:
``MinimumReplicasUnavailable``, ``ProgressDeadlineExceeded``), a missing runtime is in
``status.modelStatus.lastFailureInfo`` (``predictor.go`` ``reconcileModel``). The pod-level cause
(``ImagePullBackOff``, ``CrashLoopBackOff`` with an ``OOMKilled`` last state, ``Unschedulable`` for
want of a GPU) is in the pods' container states and conditions and in the kubelet's and the
scheduler's events, which :func:`cluster_context` reads (label ``serving.kserve.io/inferenceservice``,
events of objects named after the service).

Read only by :mod:`llm_rollout.kserve.wait`; kept apart so the waiter itself stays the watch loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llm_rollout.errors import DeadlineExceeded, PermanentError, TransientError
from llm_rollout.kube import (
    EVENTS,
    LLM_INFERENCE_SERVICES,
    PODS,
    ApiError,
    KubeClient,
)

if TYPE_CHECKING:
    from llm_rollout.kserve.wait import Readiness, ReadinessEvaluation

log = logging.getLogger(__name__)


def describe_condition(kind: str, cond: tuple[str, str, str] | None) -> str:
    if cond is None:
        return f"{kind} not reported yet"
    status, reason, message = cond
    detail = ": ".join(p for p in (reason, message[:300]) if p)
    return f"{kind}={status}" + (f" ({detail})" if detail else "")


_CAUSES: list[tuple[tuple[str, ...], str]] = [
    (
        ("imagepull", "errimagepull", "invalidimagename", "pull access denied", "manifest unknown"),
        "image pull failed: check runtime.image (name, tag/digest) and the image pull secret of the service account",
    ),
    (
        ("oomkilled", "out of memory", "outofmemory", "cuda out of memory"),
        "the server was OOM-killed at startup: raise resources.memory_limit, lower "
        "runtime.gpu_memory_utilization or runtime.max_model_len, or use more GPUs (tensor parallel)",
    ),
    (
        ("max_model_len", "max-model-len", "kv cache", "kv_cache", "larger than the maximum number of tokens"),
        "runtime.max_model_len is larger than the KV cache can hold: lower runtime.max_model_len or raise "
        "runtime.gpu_memory_utilization / use a GPU with more memory",
    ),
    (
        ("runtimenotrecognized", "nosupportingruntime", "runtimedisabled", "servingruntime", "no runtime"),
        "the ServingRuntime is missing, disabled or does not support the model (components/predictor.go "
        "reconcileModel, status.modelStatus.lastFailureInfo): run register-runtime with this spec for this "
        "namespace before deploy-model (the InferenceService names runtime.runtime_name)",
    ),
    (
        ("gateway", "httproute", "notprogrammed", "not programmed", "inferencepool", "notaccepted"),
        "the gateway/route is not programmed: check the Gateway (llmd.gateway_refs) exists and is "
        "Programmed, and that the Gateway API / inference extension CRDs are installed",
    ),
    (
        ("crashloopbackoff", "error", "modelloadfailed"),
        "the server container crashes: read the kserve-container logs (model URI reachable? storage "
        "credentials? vLLM flags valid for this model?)",
    ),
    (
        ("unschedulable", "insufficient", "failedscheduling", "didn't match", "untolerated"),
        "pods cannot be scheduled: not enough GPUs/CPU/memory or no node matches; check node capacity, "
        "resources.gpu_resource, runtime.accelerator (its node selector) and tolerations",
    ),
    (
        ("confignotfound", "combinebaseerror", "invalidrenderedconfig"),
        "the member's preset (an LLMInferenceServiceConfig in spec.baseRefs) is missing or does not merge "
        "(config_merge.go reconcileBaseRefs, PresetsCombined): run register-runtime for this service and "
        "namespace, which writes it, or set llmd.use_preset: false",
    ),
    (
        ("stopped",),
        'the service is stopped (annotation serving.kserve.io/stop: "true": set by a person, or by a promotion '
        "with retire=stop for an llm-d member): KServe removes its workloads and routes until the annotation "
        "goes; remove it (llm-d: llm-rollout rollback NAME restores a retired member)",
    ),
]

_DEPLOYMENT_ONLY = (
    ("minimumreplicasunavailable", "progressdeadlineexceeded", "does not have minimum availability"),
    "the predictor's pods are not available: KServe copies only its Deployment's condition "
    "(inference_service_status.go PropagateRawStatus: MinimumReplicasUnavailable, ProgressDeadlineExceeded); "
    "the cause (image pull, crash, no GPU) is in the pods and their events: kubectl describe pods -l "
    "serving.kserve.io/inferenceservice=NAME",
)
"""Said only when nothing in the pods or events named a more specific cause."""

GENERIC_CAUSES = (
    "image pull errors (runtime.image, pull secrets)",
    "OOM at startup (memory limit, gpu_memory_utilization)",
    "max-model-len larger than the KV cache",
    "missing ServingRuntime (run register-runtime)",
    "gateway not programmed (llm-d)",
    "no GPU capacity (pending pods)",
)


def likely_causes(texts: list[str]) -> list[str]:
    """Likely causes, in order, for the reasons/messages seen (pure).

    Args:
        texts: Condition reasons and messages, pod waiting reasons, event messages.

    Returns:
        Matching causes with what to check; the generic list when nothing matched.
    """
    blob = " ".join(texts).lower()
    found = [cause for keys, cause in _CAUSES if any(k in blob for k in keys)]
    # "error" is too broad to stand alone next to a more specific cause.
    if len(found) > 1:
        crash = _CAUSES[5][1]
        found = [c for c in found if c != crash] or found
    if not found and any(k in blob for k in _DEPLOYMENT_ONLY[0]):
        found = [_DEPLOYMENT_ONLY[1]]
    return found or [f"nothing specific reported; common causes: {', '.join(GENERIC_CAUSES)}"]


def _pod_selector(readiness: Readiness, name: str) -> str:
    if readiness.resource is LLM_INFERENCE_SERVICES:
        # KServe's GetWorkloadLabelSelector: the labels it stamps on an LLMInferenceService's pods.
        return f"app.kubernetes.io/part-of=llminferenceservice,app.kubernetes.io/name={name}"
    return f"serving.kserve.io/inferenceservice={name}"


def _pod_line(pod: dict[str, Any]) -> str:
    st = pod.get("status") or {}
    parts = [f"{(pod.get('metadata') or {}).get('name')}: {st.get('phase', '?')}"]
    for cond in st.get("conditions") or []:
        # the scheduler's verdict (PodScheduled False Unschedulable: "0/3 nodes are available: ...")
        if cond.get("status") == "False" and cond.get("reason"):
            parts.append(f"{cond.get('type')} {cond['reason']} {(cond.get('message') or '')[:200]}")
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        state = cs.get("state") or {}
        for key in ("waiting", "terminated"):
            if state.get(key):
                detail = state[key]
                parts.append(f"{cs.get('name')} {key} {detail.get('reason', '')} {detail.get('message', '')[:200]}")
        last = (cs.get("lastState") or {}).get("terminated")
        if last:
            parts.append(f"{cs.get('name')} last terminated {last.get('reason', '')} (exit {last.get('exitCode')})")
        if cs.get("restartCount"):
            parts.append(f"{cs.get('name')} restarts {cs['restartCount']}")
    return "; ".join(p.strip() for p in parts)


def cluster_context(client: KubeClient, readiness: Readiness, name: str, namespace: str) -> tuple[str, list[str]]:
    """Pod states and recent events of the object, or a note saying why they are unavailable.

    Args:
        client: The kube client.
        readiness: What was awaited (decides the pod label selector).
        name: Object name.
        namespace: Namespace.

    Returns:
        ``(text for the message, texts for cause matching)``. Never raises for an API server that
        does not serve core/v1 (it says so instead).
    """
    lines: list[str] = []
    texts: list[str] = []
    client = client.without_type_grace()
    try:
        pods = client.list(PODS, namespace, label_selector=_pod_selector(readiness, name), deadline_s=5)
        items = pods.get("items") or []
        lines.append("pods: " + (" | ".join(_pod_line(p) for p in items[:10]) if items else "none found"))
        texts += lines
        events = client.list(EVENTS, namespace, deadline_s=5)
        recent = [
            e for e in events.get("items") or [] if ((e.get("involvedObject") or {}).get("name") or "").startswith(name)
        ]
        recent.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        shown = [f"{e.get('type', '')} {e.get('reason', '')}: {(e.get('message') or '')[:200]}" for e in recent[-8:]]
        lines.append("recent events: " + (" | ".join(shown) if shown else "none"))
        texts += shown
    except ApiError as err:
        code = getattr(err, "status", "?")
        lines.append(
            f"pod states and events unavailable: this API server does not serve core/v1 pods/events "
            f"to us ({code}); check them with kubectl get pods,events -n {namespace}"
        )
    except (TransientError, DeadlineExceeded) as err:
        lines.append(f"pod states and events unavailable: {err}")
    return "; ".join(lines), texts


# Waiting ---------------------------------------------------------------------------------------


def timeout_message(
    readiness: Readiness,
    name: str,
    namespace: str,
    timeout_s: float,
    verdict: ReadinessEvaluation | None,
    context: str,
    context_texts: list[str],
    last_error: BaseException | None,
) -> str:
    kind = readiness.resource.kind
    parts = [f"{kind} {namespace}/{name} was not ready after {timeout_s:g}s."]
    texts = list(context_texts)
    if verdict is not None:
        parts.append(f"generation {verdict.generation}, observedGeneration {verdict.observed_generation}.")
        parts.append("Waiting on: " + "; ".join(verdict.blockers) + ".")
        conds = ", ".join(describe_condition(k, v) for k, v in sorted(verdict.conditions.items())) or "none"
        parts.append(f"Last conditions: {conds}.")
        for status, reason, message in verdict.conditions.values():
            if status != "True":
                texts += [reason, message]
        if verdict.model_failure is not None:
            texts += list(verdict.model_failure)
    else:
        parts.append("The object was never read successfully.")
    if last_error is not None:
        parts.append(f"Last API error: {last_error}.")
    causes = " | ".join(likely_causes(texts)).replace("inferenceservice=NAME", f"inferenceservice={name}")
    parts.append("Likely causes: " + causes + ".")
    parts.append(context + ".")
    return " ".join(parts)


def deleted_error(kind: str, namespace: str, name: str) -> PermanentError:
    return PermanentError(
        f"{kind} {namespace}/{name} was deleted while waiting for it to become ready (by another run, a "
        "person or a rollback); rerun the rollout"
    )
