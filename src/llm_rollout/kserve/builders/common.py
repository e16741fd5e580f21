"""What every KServe object shares.

API versions, the ``llm-rollout.io/`` labels, the :class:`Member` a revision is, metadata, resources, probes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llm_rollout.names import isvc_member_name, member_name, revision_id, short_hash
from llm_rollout.spec import RolloutSpec

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
    rev = revision or spec.model.revision or revision_id(uri, spec.model.digest)
    name = member_name(spec.service_name, rev) if spec.llmd.enabled else isvc_member_name(rev)
    return Member(name=name, model_uri=uri, revision=rev)


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def run_label(run_id: str) -> str:
    """The ``llm-rollout.io/run-id`` label value of a run: the id itself when it is a valid label
    value (KFP run ids are UUIDs), else ``h-`` + a hash of it."""
    return run_id if _LABEL_VALUE.match(run_id) else "h-" + short_hash(run_id, 16)


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
