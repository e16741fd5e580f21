"""The vLLM ``ServingRuntime`` and the ``InferenceService``.

The stable predictor, ``spec.canary[]`` entries (Standard mode) and ``canaryTrafficPercent`` (Knative mode).
"""

from __future__ import annotations

import copy
from typing import Any

from llm_rollout.kserve.builders.common import (
    ISVC_API,
    LABEL_MEMBER,
    LABEL_REVISION,
    LABEL_RUN_ID,
    MODEL_MOUNT,
    RUNTIME_API,
    Member,
    _env,
    _labels,
    _meta,
    _probe,
    _resources,
    _security_context,
    run_label,
)
from llm_rollout.kserve.builders.promql import selector
from llm_rollout.kserve.builders.storage import serving_account
from llm_rollout.names import predictor_service_name
from llm_rollout.spec import RolloutSpec
from llm_rollout.vllm_args import VLLM_MODULE, server_args


def serving_runtime(spec: RolloutSpec) -> dict[str, Any]:
    """The namespaced vLLM ``ServingRuntime`` (serving.kserve.io/v1alpha1).

    Nothing auto-selects it (``autoSelect: false``): the InferenceService names it in
    ``predictor.model.runtime``, so every service in a namespace has its own runtime. It runs the
    upstream OpenAI-compatible server (``python -m vllm.entrypoints.openai.api_server``)
    on port 8080 with the model mounted at ``/mnt/models`` and served under the InferenceService's
    name (``{{.Name}}``) unless the spec names the model. Readiness and startup probes hit
    ``/v1/models`` (200 only once the model is loaded); the startup probe allows 30 minutes for
    large models. ``/dev/shm`` is a memory-backed emptyDir (tensor parallel needs it).
    """
    rt = spec.runtime
    sargs = server_args(spec, "kserve", model_path=MODEL_MOUNT, served_model_name=spec.model.name or "{{.Name}}")
    container = {
        "name": "kserve-container",
        "image": rt.image,
        "command": ["python", "-m", VLLM_MODULE],
        "args": sargs.args,
        "env": _env(spec),
        "ports": [{"containerPort": rt.port, "name": "http1", "protocol": "TCP"}],
        "resources": _resources(spec),
        "securityContext": _security_context(),
        "readinessProbe": _probe("/v1/models", rt.port, period=10, failures=3, timeout=5),
        "startupProbe": _probe("/v1/models", rt.port, period=30, failures=60, timeout=10, delay=30),
        "volumeMounts": [{"name": "devshm", "mountPath": "/dev/shm"}],
    }
    return {
        "apiVersion": RUNTIME_API,
        "kind": "ServingRuntime",
        "metadata": _meta(
            spec,
            spec.runtime_name,
            annotations={"serving.kserve.io/server-type": "vllmserver"},
        ),
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(rt.port), "prometheus.kserve.io/path": "/metrics"},
            # One runtime per service that nothing auto-selects: each InferenceService names its own
            # (predictor.model.runtime). Auto-selected runtimes of one format, protocol and priority
            # refuse each other (servingruntime_webhook.go validateServingRuntimePriority), so a
            # second service in the namespace could not register. No protocolVersions, as upstream's
            # own vLLM runtime (kserve-vllmserver.yaml) declares none.
            "supportedModelFormats": [{"name": "vLLM", "version": "1", "autoSelect": False}],
            "multiModel": False,
            "containers": [container],
            "volumes": [{"name": "devshm", "emptyDir": {"medium": "Memory"}}],
            "hostIPC": False,
        },
    }


def _scaling_fields(spec: RolloutSpec, predictor_name: str = "") -> dict[str, Any]:
    """Scaling fields of a stable predictor (a canary entry gets none of them, see :func:`_canary_predictor`).

    ``predictor_name`` is the predictor's ``name`` ("" when unnamed): the KEDA query selects that
    predictor's own Service, ``constants.PredictorServiceName``.
    """
    if spec.scaling is None:
        n = spec.replicas if spec.replicas is not None else 1
        return {"minReplicas": n, "maxReplicas": max(n, 1)}
    sc = spec.scaling
    out: dict[str, Any] = {"minReplicas": sc.min_replicas, "maxReplicas": sc.max_replicas}
    if spec.deployment_mode == "Knative":
        metric = {"request-rate": "rps", "concurrency": "concurrency"}.get(sc.metric, sc.metric)
        out.update({"scaleMetric": metric, "scaleTarget": sc.static_target()})
        return out
    if sc.metric in ("cpu", "memory"):
        out["autoScaling"] = {
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": sc.metric,
                        "target": {"type": "Utilization", "averageUtilization": sc.static_target()},
                    },
                }
            ]
        }
        return out
    # Standard mode scales on request rate (or in-flight requests) through KEDA on vLLM's metrics.
    # The series carry the scraped Service's name; KServe names it PredictorServiceName.
    match = selector(namespace=spec.namespace, service=predictor_service_name(spec.service_name, predictor_name))
    query = {
        "request-rate": "sum(rate(vllm:request_success_total{%s}[1m]))",
        "concurrency": "sum(vllm:num_requests_running{%s})",
    }[sc.metric] % match
    out["autoScaling"] = {
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"backend": "prometheus", "serverAddress": sc.prometheus_url, "query": query},
                    # inference_service_validation.go validateScalingKedaCompExtension requires
                    # external.target.value, and keda_reconciler.go reads only Target.Value (threshold).
                    "target": {"type": "Value", "value": str(sc.static_target())},
                },
            }
        ]
    }
    return out


def _predictor_labels(member: Member) -> dict[str, str]:
    # On the predictor, not the InferenceService: they travel with the model (a canary's labels become
    # the stable predictor's at promotion), so the pod template changes only with the model.
    labels = {LABEL_MEMBER: member.name} if member.name else {}
    if member.revision:
        labels[LABEL_REVISION] = member.revision
    if member.run_id:
        labels[LABEL_RUN_ID] = run_label(member.run_id)
    return labels


def _model(spec: RolloutSpec, member: Member) -> dict[str, Any]:
    # No model.name: inference_service_validation.go validatePredictor refuses it
    # ("the 'name' field is not allowed in standard predictor").
    return {
        "modelFormat": {"name": "vLLM"},
        "runtime": spec.runtime_name,
        "storageUri": member.model_uri,
        "resources": _resources(spec),
    }


def _predictor(spec: RolloutSpec, member: Member, *, named: bool = False) -> dict[str, Any]:
    """A stable predictor; ``named`` sets ``predictor.name`` (Standard mode only, after a promotion)."""
    name = member.name if named and spec.deployment_mode == "Standard" else ""
    pred: dict[str, Any] = {}
    if name:
        pred["name"] = name
    if serving_account(spec, member.model_uri):
        # The serving pods' own account, never the steps' (spec.check_spec refuses that one); for a
        # model in runtime.model_store's buckets the one listing the store's Secret (builders/storage.py).
        pred["serviceAccountName"] = serving_account(spec, member.model_uri)
    if spec.runtime.node_selector():
        # runtime.accelerator pins the pods to the GPU the spec was checked against.
        pred["nodeSelector"] = spec.runtime.node_selector()
    pred.update(_scaling_fields(spec, name))
    labels = _predictor_labels(member)
    if labels:
        pred["labels"] = labels
    pred["model"] = _model(spec, member)
    return pred


def _canary_predictor(spec: RolloutSpec, member: Member, stable_min_replicas: int) -> dict[str, Any]:
    """A ``spec.canary[]`` entry's predictor: named, fixed replicas.

    ``inference_service_validation.go`` ``validateCanarySpecs``: a canary may not set maxReplicas,
    scaleTarget, scaleMetric, autoScaling or workerSpec ("canary uses fixed replicas"), and its
    minReplicas may not exceed the stable's (1 when unset). It keeps a minReplicas of one (or the
    stable's when that is lower) so that a 0 % dark launch still gets a pod and becomes Ready.
    """
    pred: dict[str, Any] = {
        "name": member.name,
        **({"serviceAccountName": account} if (account := serving_account(spec, member.model_uri)) else {}),
        **({"nodeSelector": spec.runtime.node_selector()} if spec.runtime.node_selector() else {}),
        "minReplicas": min(1, stable_min_replicas),
        "labels": _predictor_labels(member),
        # The released CRD still lists `name` as required under canary[].predictor.model (KServe's
        # Makefile strips `required` only from spec.<component>.<field>, not inside the canary
        # list), so the entry carries the empty name upstream's own SDK sends (V1beta1ModelSpec
        # name=''); validatePredictor refuses only a non-empty one.
        "model": {"name": "", **_model(spec, member)},
    }
    return pred


CANARY_FORBIDDEN = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "workerSpec")
"""Predictor fields a canary entry may not carry (``validateCanarySpecs``)."""


def promoted_predictor(spec: RolloutSpec, canary_predictor: dict[str, Any]) -> dict[str, Any]:
    """The stable predictor a validated canary entry becomes at promotion.

    Upstream's raw-deployment canary promotion (``test/e2e/predictor/test_canary_raw_deployment.py``)
    sets ``predictor.name`` to the canary's name and drops the entry, so KServe keeps the canary's
    Deployment and pods. The predictor keeps what was validated (name, model, labels) and gets the
    stable's scaling fields back (a canary has fixed replicas), with the KEDA query on its own Service.
    """
    pred = {k: copy.deepcopy(v) for k, v in canary_predictor.items() if k not in ("minReplicas", *CANARY_FORBIDDEN)}
    out: dict[str, Any] = {}
    for key in ("name", "serviceAccountName"):
        if key in pred:
            out[key] = pred.pop(key)
    out.update(_scaling_fields(spec, out.get("name", "")))
    out.update(pred)
    return out


def inference_service(
    spec: RolloutSpec,
    stable: Member,
    canary: Member | None = None,
    *,
    stable_named: bool = False,
    stable_predictor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``InferenceService`` (serving.kserve.io/v1beta1) for one or two revisions.

    Standard mode: ``spec.predictor`` serves the stable revision, unnamed on a first rollout
    (KServe names it ``<isvc>-predictor``); a canary is a ``spec.canary[]`` entry with a short
    predictor name (:func:`llm_rollout.names.isvc_member_name`), ``trafficPercent`` and fixed
    replicas (KServe >= 0.20). Knative mode: the predictor is never named (the Knative Service name
    comes from it, ``ksvc_reconciler.go``); the new model goes into the same predictor with
    ``canaryTrafficPercent``, so Knative splits traffic between two revisions of one Knative Service
    (upstream ``test/e2e/predictor/test_canary.py``).

    Every predictor carries the label ``llm-rollout.io/member`` with its member name, which is how a
    revision is found again when its predictor is unnamed.

    Args:
        spec: The rollout spec.
        stable: The revision in ``spec.predictor`` (the only one on a first rollout).
        canary: The new revision under validation, if any.
        stable_named: Give the stable predictor its member name (Standard mode, after a promotion).
        stable_predictor: The stable predictor exactly as the server has it (a canary step copies
            it, so applying changes nothing there); built from ``stable`` when None.

    Returns:
        The object, ready for server-side apply.
    """
    annotations = {"serving.kserve.io/deploymentMode": spec.deployment_mode}
    if spec.deployment_mode == "Standard" and spec.scaling is not None and "autoScaling" in _scaling_fields(spec):
        metric_type = _scaling_fields(spec)["autoScaling"]["metrics"][0]["type"]
        # KEDA metrics: `external`, and the steps apply the stable's ScaledObject themselves
        # (builders/keda.py says why: KServe's own would give every canary a ScaledObject without
        # triggers). cpu/memory: KServe's HPA, which a fixed-replica canary gets valid (hpa_reconciler.go).
        annotations["serving.kserve.io/autoscalerClass"] = "external" if metric_type == "External" else "hpa"
    if spec.deployment_mode == "Knative" and spec.scaling is not None and spec.scaling.metric in ("cpu", "memory"):
        # Knative's own autoscaler (KPA) scales on concurrency or rps only; cpu/memory need its HPA
        # class, which validateAutoScalingCompExtension then checks with the HPA rules.
        annotations["autoscaling.knative.dev/class"] = "hpa.autoscaling.knative.dev"
    if spec.deployment_mode == "Knative":
        # ksvc_reconciler.go: only with this annotation does Knative tag the latest revision "latest" (and the
        # previous one "prev"), giving the candidate and the stable an address each.
        annotations["serving.kserve.io/enable-tag-routing"] = "true"
    # The same in every phase: KServe copies the InferenceService's labels and annotations into the
    # predictor's pod template (components/predictor.go buildObjectMeta), so a label that changed at
    # promotion (the revision, formerly here) restarted the pods. Revision ids are on the predictors.
    labels = _labels(spec)
    body: dict[str, Any] = {}
    stable_pred = (
        copy.deepcopy(stable_predictor)
        if stable_predictor is not None
        else _predictor(spec, stable, named=stable_named)
    )
    if canary is None:
        body["predictor"] = stable_pred
    elif spec.deployment_mode == "Knative":
        pred = _predictor(spec, canary)
        pred["canaryTrafficPercent"] = canary.traffic_percent
        body["predictor"] = pred
    else:
        body["predictor"] = stable_pred
        stable_min = stable_pred.get("minReplicas")
        entry = _canary_predictor(spec, canary, 1 if stable_min is None else int(stable_min))
        body["canary"] = [{"trafficPercent": canary.traffic_percent, "predictor": entry}]
    return {
        "apiVersion": ISVC_API,
        "kind": "InferenceService",
        "metadata": _meta(spec, spec.service_name, labels=labels, annotations=annotations),
        "spec": body,
    }


def predictor_member(service: str, pred: dict[str, Any]) -> str:
    """The member name of a predictor as we wrote it: its ``name``, else its ``llm-rollout.io/member``
    label (an unnamed predictor), else ``<isvc>-predictor`` (one we did not write)."""
    return pred.get("name") or (pred.get("labels") or {}).get(LABEL_MEMBER) or predictor_service_name(service)
