"""Pure builders: rollout spec in, plain Kubernetes object (a dict) out.

No I/O, no clients, no clocks: the same spec always renders the same objects, which is what the
files in ``manifests/`` are (a test keeps them in sync) and what the kube layer applies with
server-side apply. Every object carries the same labels so that it can be found again by name or
by selector, and every name comes from :mod:`llm_rollout.names`.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from llm_rollout.errors import SpecError
from llm_rollout.names import isvc_member_name, member_name, predictor_service_name, short_hash
from llm_rollout.spec import RolloutSpec, WorkloadSpec
from llm_rollout.vllm_args import VLLM_MODULE, server_args

GROUP = "serving.kserve.io"
ISVC_API = f"{GROUP}/v1beta1"
RUNTIME_API = f"{GROUP}/v1alpha1"
LLMISVC_API = f"{GROUP}/v1alpha2"

ANNOTATION_PREFIX = "llm-rollout.io/"
LABEL_SERVICE = f"{ANNOTATION_PREFIX}service"
LABEL_REVISION = f"{ANNOTATION_PREFIX}revision"
LABEL_ROLE = f"{ANNOTATION_PREFIX}role"
LABEL_RUN_ID = f"{ANNOTATION_PREFIX}run-id"
LABEL_MEMBER = f"{ANNOTATION_PREFIX}member"
MANAGED_BY = {"app.kubernetes.io/managed-by": "llm-rollout"}

MODEL_MOUNT = "/mnt/models"
STOP_ANNOTATION = f"{GROUP}/stop"


@dataclass(frozen=True)
class Member:
    """One model revision as the builders see it.

    Attributes:
        name: Predictor name (InferenceService) or object name (LLMInferenceService member).
        model_uri: Storage URI KServe downloads the model from.
        revision: Short revision id (labels, annotations).
        traffic_percent: Traffic share (canary members).
        run_id: The pipeline run that rolled it out (label ``llm-rollout.io/run-id``), so the
            run's exit handler finds it even when a step died before writing its outputs.
    """

    name: str
    model_uri: str
    revision: str
    traffic_percent: int = 0
    run_id: str = ""


def default_member(spec: RolloutSpec, model_uri: str | None = None, revision: str | None = None) -> Member:
    """The member for the spec's own model (what ``render`` shows and a first rollout creates)."""
    uri = model_uri or spec.model.uri or "s3://models/REPLACE-ME"
    rev = revision or spec.model.revision or "r" + _short(uri + (spec.model.digest or ""))
    name = member_name(spec.service_name, rev) if spec.llmd.enabled else isvc_member_name(rev)
    return Member(name=name, model_uri=uri, revision=rev)


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def run_label(run_id: str) -> str:
    """The ``llm-rollout.io/run-id`` label value of a run: the id itself when it is a valid label
    value (KFP run ids are UUIDs), else ``h-`` + a hash of it."""
    return run_id if _LABEL_VALUE.match(run_id) else "h-" + short_hash(run_id, 16)


def _short(text: str) -> str:
    return short_hash(text, 8)


def _labels(spec: RolloutSpec, **extra: str) -> dict[str, str]:
    return {**MANAGED_BY, LABEL_SERVICE: spec.service_name, **extra}


def _meta(spec: RolloutSpec, name: str, *, labels: dict[str, str] | None = None, annotations=None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": spec.namespace, "labels": labels or _labels(spec)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _resources(spec: RolloutSpec, gpus: int | None = None) -> dict[str, Any]:
    res = spec.resources
    n = res.gpus if gpus is None else gpus
    requests: dict[str, Any] = {"cpu": res.cpu_request, "memory": res.memory_request}
    limits: dict[str, Any] = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if n:
        requests[res.gpu_resource] = str(n)
        limits[res.gpu_resource] = str(n)
    return {"requests": requests, "limits": limits}


def _env(spec: RolloutSpec) -> list[dict[str, Any]]:
    base = {
        "HF_HOME": "/tmp/hf",
        "VLLM_CONFIG_ROOT": "/tmp/vllm",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    }
    base.update(spec.runtime.env)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(base.items())]
    # Secrets are referenced, never inlined: the kubelet resolves them inside the pod.
    for name, ref in sorted(spec.runtime.secret_env.items()):
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _probe(path: str, port: int, *, period: int, failures: int, timeout: int, delay: int = 0) -> dict:
    probe = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "successThreshold": 1,
        "timeoutSeconds": timeout,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def _security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]}}


def serving_runtime(spec: RolloutSpec) -> dict[str, Any]:
    """The namespaced vLLM ``ServingRuntime`` (serving.kserve.io/v1alpha1).

    It runs the upstream OpenAI-compatible server (``python -m vllm.entrypoints.openai.api_server``)
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
            "supportedModelFormats": [{"name": "vLLM", "version": "1", "autoSelect": True, "priority": 1}],
            "protocolVersions": ["v2"],
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
        out.update({"scaleMetric": metric, "scaleTarget": sc.target})
        return out
    if sc.metric in ("cpu", "memory"):
        out["autoScaling"] = {
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": sc.metric,
                        "target": {"type": "Utilization", "averageUtilization": sc.target},
                    },
                }
            ]
        }
        return out
    # Standard mode scales on request rate (or in-flight requests) through KEDA on vLLM's metrics.
    # The series carry the scraped Service's name; KServe names it PredictorServiceName.
    query = {
        "request-rate": 'sum(rate(vllm:request_success_total{namespace="%s",service="%s"}[1m]))',
        "concurrency": 'sum(vllm:num_requests_running{namespace="%s",service="%s"})',
    }[sc.metric] % (spec.namespace, predictor_service_name(spec.service_name, predictor_name))
    out["autoScaling"] = {
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"backend": "prometheus", "serverAddress": sc.prometheus_url, "query": query},
                    # inference_service_validation.go validateScalingKedaCompExtension requires
                    # external.target.value, and keda_reconciler.go reads only Target.Value (threshold).
                    "target": {"type": "Value", "value": str(sc.target)},
                },
            }
        ]
    }
    return out


def _predictor_labels(member: Member) -> dict[str, str]:
    labels = {LABEL_MEMBER: member.name} if member.name else {}
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
    if spec.runtime.service_account:
        # The serving pods' own account, never the steps' (spec.check_spec refuses that one).
        pred["serviceAccountName"] = spec.runtime.service_account
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
        **({"serviceAccountName": spec.runtime.service_account} if spec.runtime.service_account else {}),
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
        annotations["serving.kserve.io/autoscalerClass"] = "keda" if metric_type == "External" else "hpa"
    if spec.deployment_mode == "Knative" and spec.scaling is not None and spec.scaling.metric in ("cpu", "memory"):
        # Knative's own autoscaler (KPA) scales on concurrency or rps only; cpu/memory need its HPA
        # class, which validateAutoScalingCompExtension then checks with the HPA rules.
        annotations["autoscaling.knative.dev/class"] = "hpa.autoscaling.knative.dev"
    labels = _labels(spec, **{LABEL_REVISION: stable.revision})
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


# llm-d ------------------------------------------------------------------------------------------


def kv_transfer_config(role: str, connector: str = "NixlConnector") -> str:
    """The ``--kv_transfer_config`` JSON for one P/D role (``kv_producer`` or ``kv_consumer``)."""
    return json.dumps({"kv_connector": connector, "kv_role": role}, separators=(",", ":"))


def vllm_additional_args(args: list[str], field: str = "runtime.extra_args") -> str:
    """The ``VLLM_ADDITIONAL_ARGS`` value that gives vLLM exactly ``args`` through KServe's presets.

    The well-known presets start vLLM with ``eval "exec vllm serve ... ${VLLM_ADDITIONAL_ARGS} $@"``
    (KServe ``config/llmisvcconfig/config-llm-*template.yaml`` and ``*-worker-data-parallel.yaml``):
    the value is parsed again as shell code, so word splitting, brace expansion, globbing and quote
    removal would tear a JSON argument apart. Each argument is therefore shell-quoted on its own
    (``shlex.quote``), which ``eval`` turns back into exactly that argument.

    Before that, KServe runs the whole merged spec through Go's ``text/template``
    (``pkg/controller/v1alpha2/llmisvc/config_merge.go``, ``ReplaceVariables``), so an argument
    holding ``{{`` would be executed as a template action: it is refused here.

    Args:
        args: The vLLM arguments, one list item per argument.
        field: Spec field named in the error.

    Returns:
        The environment variable's value.

    Raises:
        SpecError: An argument contains ``{{``.
    """
    for i, arg in enumerate(args):
        if "{{" in arg:
            raise SpecError(
                field,
                f"argument {i} ({arg!r}) contains '{{{{', which KServe executes as a Go template action "
                "when it merges the LLMInferenceService (config_merge.go ReplaceVariables)",
                "write the value without '{{' (e.g. put a space between the braces of nested JSON)",
            )
    return " ".join(shlex.quote(arg) for arg in args)


def _llmd_container(spec: RolloutSpec, role: str | None, workload: WorkloadSpec) -> dict[str, Any]:
    sargs = server_args(spec, "llmd", tensor_parallel=workload.tensor)
    extra = list(sargs.args)
    env = _env(spec)
    if role is not None:
        kv_role = "kv_producer" if role == "prefill" else "kv_consumer"
        extra.append("--kv_transfer_config=" + kv_transfer_config(kv_role, spec.llmd.kv_connector))
        env.append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    env.append({"name": "VLLM_ADDITIONAL_ARGS", "value": vllm_additional_args(extra)})
    return {
        "name": "main",
        "env": env,
        "resources": _resources(spec, gpus=workload.gpus_per_pod()),
        "securityContext": _security_context(),
    }


def _parallelism(workload: WorkloadSpec) -> dict[str, Any]:
    par: dict[str, Any] = {"tensor": workload.tensor}
    if workload.data is not None:
        par["data"] = workload.data
    if workload.data_local is not None:
        par["dataLocal"] = workload.data_local
    if workload.pipeline is not None:
        par["pipeline"] = workload.pipeline
    return par


def _workload_scaling(spec: RolloutSpec, role: str, workload: WorkloadSpec) -> dict[str, Any]:
    """``scaling`` of one llm-d role: direct KEDA on the role's own vLLM metrics (or CPU/memory)."""
    sc = workload.scaling
    assert sc is not None
    if sc.metric in ("cpu", "memory"):
        trigger: dict[str, Any] = {
            "type": sc.metric,
            "metricType": "Utilization",
            "metadata": {"value": str(sc.target)},
        }
    else:
        # vLLM labels its series with model_name; KServe labels llm-d pods llm-d.ai/role
        # (decode, prefill, or both without P/D), which a pod scrape's labelmap turns into
        # llm_d_ai_role. So each role scales on its own pods' load only.
        selector = f'namespace="{spec.namespace}",model_name="{spec.served_model_name}",llm_d_ai_role="{role}"'
        query = {
            "request-rate": "sum(rate(vllm:request_success_total{%s}[1m]))",
            "concurrency": "sum(vllm:num_requests_running{%s})",
        }[sc.metric] % selector
        trigger = {
            "type": "prometheus",
            "metadata": {"serverAddress": sc.prometheus_url, "query": query, "threshold": str(sc.target)},
        }
    return {"minReplicas": sc.min_replicas, "maxReplicas": sc.max_replicas, "keda": {"triggers": [trigger]}}


def _workload(spec: RolloutSpec, role: str | None, workload: WorkloadSpec) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if workload.scaling is not None:
        body["scaling"] = _workload_scaling(spec, role or "both", workload)
    else:
        body["replicas"] = workload.replica_count()
    body["parallelism"] = _parallelism(workload)
    body["template"] = {"containers": [_llmd_container(spec, role, workload)]}
    if spec.runtime.service_account:  # the serving pods' own account, never the steps'
        body["template"]["serviceAccountName"] = spec.runtime.service_account
    if workload.nodes > 1:
        body["worker"] = {"containers": [_llmd_container(spec, role, workload)]}
    return body


EPP_API_VERSION = "llm-d.ai/v1alpha1"
"""The EndpointPickerConfig API of llm-d >= 0.7 (KServe ``scheduler.go`` ``withMigrateLLMDAPIVersion``)."""


def endpoint_picker_config(spec: RolloutSpec) -> dict[str, Any] | None:
    """The inline EndpointPickerConfig of the llm-d scheduler, or None for KServe's own default.

    ``default`` (nothing customised): no inline config, so KServe's ``schedulerConfigText``
    (``pkg/controller/v1alpha2/llmisvc/scheduler.go``) picks its llm-d baseline: with a prefill
    role, P/D for every request (``always-disagg-pd-decider``) with prefix-cache, queue and
    KV-cache-utilization scoring on prefill and active-request and prefix-cache scoring on decode;
    without one, a single profile scoring queue, KV-cache utilisation, prefix cache and no-hit LRU.

    The other profiles render today's format (``llm-d.ai/v1alpha1``, as llm-d's
    ``deploy/config/*.yaml`` and KServe's default configs write it):

    * ``prefix-cache``: score pods by prefix-cache locality (RAG prompts sharing long prefixes land
      where their KV cache already is), queue depth and KV-cache utilisation.
    * ``load``: queue depth and KV-cache utilisation only.
    * ``pd``: the same scoring per role (``prefill-filter`` / ``decode-filter`` profiles), the
      ``disagg-headers-handler`` and a ``disagg-profile-handler`` whose prefill decider is
      ``prefix-based-pd-decider`` with ``nonCachedTokens = pd_threshold_tokens`` (llm-d's token
      estimate of the prompt's uncached part), or ``always-disagg-pd-decider`` when the threshold is
      unset or 0. The prefix-cache scorer stays in the decode profile: the decider reads the prefix
      match it records for the decode pod.

    ``prefix-cache-scorer`` takes no parameters: KServe strips every one but
    ``prefixMatchInfoProducerName`` (``withRemovePrefixCacheScorerParametersV09``).
    """
    sch = spec.llmd.scheduler
    if sch.profile == "default":
        return None
    scorers = [
        {"pluginRef": "prefix-cache-scorer", "weight": 3},
        {"pluginRef": "queue-scorer", "weight": 1},
        {"pluginRef": "kv-cache-utilization-scorer", "weight": 1},
    ]
    if sch.profile == "load":
        scorers = scorers[1:]
    plugins: list[dict[str, Any]] = [{"type": s["pluginRef"]} for s in scorers]
    plugins.append({"type": "max-score-picker"})
    if sch.profile != "pd":
        plugins.append({"type": "single-profile-handler"})
        profiles = [{"name": "default", "plugins": [*scorers, {"pluginRef": "max-score-picker"}]}]
    else:
        if sch.pd_threshold_tokens:
            decider = {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": sch.pd_threshold_tokens}}
        else:
            decider = {"type": "always-disagg-pd-decider"}
        plugins += [
            {"type": "disagg-headers-handler"},
            {"type": "prefill-filter"},
            {"type": "decode-filter"},
            decider,
            {"type": "disagg-profile-handler", "parameters": {"deciders": {"prefill": decider["type"]}}},
        ]
        profiles = [
            {
                "name": role,
                "plugins": [
                    {"pluginRef": f"{role}-filter"},
                    *(dict(s) for s in scorers),
                    {"pluginRef": "max-score-picker"},
                ],
            }
            for role in ("prefill", "decode")
        ]
    return {
        "apiVersion": EPP_API_VERSION,
        "kind": "EndpointPickerConfig",
        "plugins": plugins,
        "schedulingProfiles": profiles,
    }


def _router(spec: RolloutSpec, weight: int | None) -> dict[str, Any]:
    ld = spec.llmd
    route: dict[str, Any] = {}
    if ld.http_route_refs:
        route["http"] = {"refs": [{"name": n} for n in ld.http_route_refs]}
    else:
        route["http"] = {}
    if weight is not None:
        # The webhook's rules: weight requires group, and splitting needs the managed route.
        if spec.route_group is None:
            raise SpecError(
                "llmd.route_group",
                f"a member weight ({weight}) was asked for, but weight requires group and llmd.route_group is ''",
                "remove llmd.route_group (it defaults to the service name)",
            )
        if ld.http_route_refs:
            raise SpecError(
                "llmd.http_route_refs",
                f"a member weight ({weight}) was asked for, but traffic splitting cannot use custom HTTPRoute refs",
                "remove llmd.http_route_refs to let KServe manage the route",
            )
        route["group"] = spec.route_group
        route["weight"] = weight
    router: dict[str, Any] = {
        "route": route,
        "gateway": {"refs": [{"name": n} for n in ld.gateway_refs]} if ld.gateway_refs else {},
    }
    if ld.scheduler.enabled:
        inline = endpoint_picker_config(spec)
        # No config: KServe's controller picks its own default (scheduler.go schedulerConfigText).
        router["scheduler"] = {} if inline is None else {"config": {"inline": inline}}
    return router


def llm_inference_service(spec: RolloutSpec, member: Member, weight: int | None = None) -> dict[str, Any]:
    """One ``LLMInferenceService`` member (serving.kserve.io/v1alpha2) for llm-d.

    The decode workload is the top-level ``template``/``replicas``/``parallelism``; with
    ``llmd.prefill`` a separate prefill workload is added and both roles get the NIXL wiring
    (``VLLM_NIXL_SIDE_CHANNEL_HOST`` from the pod IP and ``--kv_transfer_config`` through
    ``VLLM_ADDITIONAL_ARGS``, which KServe does not add by itself). Stable and canary members share
    ``router.route.group`` and split traffic by ``weight``.

    Args:
        spec: The rollout spec (``llmd`` section).
        member: The revision this object serves; its ``name`` is the object name.
        weight: Traffic weight within the route group; ``None`` for a lone member without a group.

    Returns:
        The object, ready for server-side apply.
    """
    ld = spec.llmd
    pd = ld.prefill is not None
    body: dict[str, Any] = {
        "model": {"uri": member.model_uri, "name": spec.served_model_name},
        **_workload(spec, "decode" if pd else None, ld.decode),
        "router": _router(spec, weight),
    }
    if pd:
        body["prefill"] = _workload(spec, "prefill", ld.prefill)
    if ld.use_preset:
        body["baseRefs"] = [{"name": ld.preset_name}]
    labels = _labels(spec, **{LABEL_REVISION: member.revision})
    if member.run_id:
        labels[LABEL_RUN_ID] = run_label(member.run_id)
    return {
        "apiVersion": LLMISVC_API,
        "kind": "LLMInferenceService",
        "metadata": _meta(spec, member.name, labels=labels),
        "spec": body,
    }


def llm_inference_service_config(spec: RolloutSpec) -> dict[str, Any]:
    """The shared ``LLMInferenceServiceConfig`` preset teams reference through ``baseRefs``.

    It carries what every member of a team's P/D deployments shares: the hardening of the ``main``
    container and, only when ``llmd.image`` is set, its image. By default the image stays the one
    of KServe's well-known presets (``config/llmisvcconfig/config-llm-*template.yaml``:
    ``ghcr.io/llm-d/llm-d-cuda``), because those presets also set ``runAsNonRoot: true`` and the
    routing sidecar's ``--kv-connector=nixlv2``: the image must run as a non-root user and ship
    NIXL. Upstream ``vllm/vllm-openai`` has no ``USER`` (vLLM ``docker/Dockerfile``, target
    ``vllm-openai``), so under ``runAsNonRoot`` the kubelet would refuse to start it. The per-role
    NIXL wiring lives on the members themselves, because its ``kv_role`` differs between the
    prefill and decode roles.
    """
    main: dict[str, Any] = {"name": "main", "securityContext": _security_context()}
    if spec.llmd.image:
        main["image"] = spec.llmd.image
    body: dict[str, Any] = {"template": {"containers": [main]}}
    if spec.llmd.prefill is not None:
        body["prefill"] = {"template": {"containers": [dict(main)]}}
    return {
        "apiVersion": LLMISVC_API,
        "kind": "LLMInferenceServiceConfig",
        "metadata": _meta(spec, spec.llmd.preset_name),
        "spec": body,
    }


# RBAC -------------------------------------------------------------------------------------------

# Exactly what the library calls (the cluster tests record every call and compare with this).
RBAC_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [GROUP],
        "resources": ["servingruntimes"],
        # register-runtime only applies it (server-side apply); nothing reads it back
        "verbs": ["patch"],
    },
    {
        "apiGroups": [GROUP],
        "resources": ["inferenceservices", "llminferenceservices"],
        "verbs": ["get", "list", "watch", "patch", "delete"],
    },
    {
        "apiGroups": [GROUP],
        "resources": ["llminferenceserviceconfigs"],
        # patch: the preset and each llm-d service's record object (promotion.py); watch: waiting for its lease
        "verbs": ["get", "watch", "patch"],
    },
    # listed only to explain a deploy that timed out (wait.cluster_context); optional, the message
    # says so when they are not readable
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
]
"""Role rules for the pipeline steps (namespaced; nothing cluster-wide)."""

CRD_READER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "resourceNames": [
            "inferenceservices.serving.kserve.io",
            "servingruntimes.serving.kserve.io",
            "llminferenceservices.serving.kserve.io",
        ],
        "verbs": ["get"],
    }
]
"""The one cluster-scoped read: the CRD version preflight, limited by name to KServe's CRDs."""


def rbac(spec: RolloutSpec) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for the pipeline steps (least privilege).

    The Role grants only the verbs and resources the library calls, in one namespace. The CRD
    preflight reads three named CRDs; that read is a ClusterRole limited by ``resourceNames``,
    bound per namespace with a RoleBinding would not reach cluster-scoped objects, so it is bound
    with a ClusterRoleBinding and grants ``get`` on those three names only.
    """
    name = spec.service_account
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(spec, name)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(spec, name),
        "rules": copy.deepcopy(RBAC_RULES),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(spec, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}],
    }
    crd_name = f"{name}-kserve-crd-reader"
    crd_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": crd_name, "labels": _labels(spec)},
        "rules": copy.deepcopy(CRD_READER_RULES),
    }
    crd_binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{crd_name}-{spec.namespace}", "labels": _labels(spec)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": crd_name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}],
    }
    return [sa, role, binding, crd_role, crd_binding]


# Rendering --------------------------------------------------------------------------------------


def llmd_example_spec(spec: RolloutSpec) -> RolloutSpec:
    """The spec with a realistic P/D setup switched on (what ``manifests/llm-d-configuration.yaml`` shows)."""
    from llm_rollout.spec import deep_merge, parse_spec

    data = spec.model_dump(mode="json")
    if not data["llmd"]["enabled"]:
        data = deep_merge(
            data,
            {
                "llmd": {
                    "enabled": True,
                    "decode": {"replicas": 2, "tensor": 1},
                    "prefill": {"replicas": 1, "tensor": 1},
                    # Nothing customised: KServe's own P/D picker config (see endpoint_picker_config).
                    "scheduler": {"enabled": True},
                }
            },
        )
        if data.get("scaling") is not None:
            data["scaling"] = None
    return parse_spec(data)


def render_all(spec: RolloutSpec) -> dict[str, list[dict[str, Any]]]:
    """Every object for ``spec``, grouped by the manifest file it belongs in.

    Returns:
        ``{file name: [objects]}`` for ``vllm-runtime.yaml``, ``kserve-inferenceservice.yaml``,
        ``llm-d-configuration.yaml`` and ``rbac.yaml``.
    """
    stable = default_member(spec)
    llmd_spec = llmd_example_spec(spec)
    llmd_member = default_member(llmd_spec)
    return {
        "vllm-runtime.yaml": [serving_runtime(spec)],
        "kserve-inferenceservice.yaml": [inference_service(spec, stable)],
        "llm-d-configuration.yaml": [
            llm_inference_service_config(llmd_spec),
            llm_inference_service(llmd_spec, llmd_member, weight=100),
        ],
        "rbac.yaml": rbac(spec),
    }
