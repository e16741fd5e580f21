"""The RBAC the steps need, and :func:`render_all`: every object of a spec, for ``manifests/`` (``make render``)."""

from __future__ import annotations

import copy
from typing import Any

from llm_rollout.kserve.builders.common import GROUP, _labels, _meta, default_member
from llm_rollout.kserve.builders.isvc import inference_service, serving_runtime
from llm_rollout.kserve.builders.keda import autoscaling_objects, hpa_rules
from llm_rollout.kserve.builders.llmd import llm_inference_service, llm_inference_service_config
from llm_rollout.kserve.builders.storage import model_store_objects, model_store_rules
from llm_rollout.spec import RolloutSpec

RBAC_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [GROUP],
        "resources": ["servingruntimes"],
        # register-runtime only applies it (server-side apply); nothing reads it back. An apply that
        # creates the object is authorized as `create` too (k8s.io/apiserver
        # pkg/endpoints/handlers/patch.go PatchResource: createValidation wrapped in
        # withAuthorization(..., createAuthorizerAttributes)), so every applied resource needs both.
        "verbs": ["create", "patch"],
    },
    {
        "apiGroups": [GROUP],
        "resources": ["inferenceservices", "llminferenceservices"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": [GROUP],
        "resources": ["llminferenceserviceconfigs"],
        # create+patch: the preset; get+patch: an llm-d service's record object of earlier versions,
        # read once and emptied when its records move to the Lease (kserve/lease.py migrate_legacy)
        "verbs": ["get", "create", "patch"],
    },
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        # each service's Lease <service>-rollout: the rollout lock and records (kserve/lease.py,
        # records.py); create+patch: applied (the first apply creates it); watch: waiting for a lease
        "verbs": ["get", "watch", "create", "patch"],
    },
    {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        # Standard mode with KEDA: the stable predictor's ScaledObject is applied by the steps, and a
        # replaced predictor's found (list, by label) and deleted (kserve/autoscaler.py)
        "verbs": ["list", "create", "patch", "delete"],
    },
    # listed only to explain a deploy that timed out (diagnose.cluster_context); optional, the message
    # says so when they are not readable
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
    # llm-d canary preflight: the class of the Gateways in llmd.gateway_refs (kserve/gateway.py)
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways"], "verbs": ["get"]},
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
    },
    {
        # llm-d canary preflight (kserve/gateway.py): KServe's default Gateway (kserveIngressGateway,
        # in the kserve namespace) when llmd.gateway_refs is empty
        "apiGroups": ["gateway.networking.k8s.io"],
        "resources": ["gateways"],
        "resourceNames": ["kserve-ingress-gateway"],
        "verbs": ["get"],
    },
    {
        # ... and the GatewayClass a Gateway names (its spec.controllerName: Istio or not). Class names
        # differ per cluster, so this read cannot be limited by name; a class holds no secrets.
        "apiGroups": ["gateway.networking.k8s.io"],
        "resources": ["gatewayclasses"],
        "verbs": ["get"],
    },
]
"""The cluster-scoped reads: the CRD version preflight (limited by name to KServe's CRDs) and the
llm-d canary preflight's Gateway classes."""


KFP_LAUNCHER_CONFIGMAP = "kfp-launcher"
"""kubeflow/pipelines ``backend/src/v2/config/env.go`` ``configMapName``."""
KFP_OBJECT_STORE_SECRET = "mlpipeline-minio-artifact"
"""kubeflow/pipelines ``backend/src/v2/config/env.go`` ``minioArtifactSecretName`` (the default store's keys)."""

KFP_RUN_RULES: list[dict[str, Any]] = [
    # The root driver reads the launcher config in the run's namespace as the run's account
    # (kubeflow/pipelines backend/src/v2/driver/root_dag.go RootDAG -> config/env.go FromConfigMap,
    # a Get by name; a missing ConfigMap is fine, a forbidden one fails the run).
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [KFP_LAUNCHER_CONFIGMAP], "verbs": ["get"]},
    # The launcher reads the object store's credentials to download and upload artifacts
    # (config/env.go minioArtifactSecretName, objectstore/config.go secretName; upstream's
    # pipeline-runner Role grants secrets get).
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [KFP_OBJECT_STORE_SECRET], "verbs": ["get"]},
    # Argo's executor reports each step's outputs (manifests/kustomize/base/pipeline/pipeline-runner-role.yaml).
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
]
"""What every pod of a KFP run (driver, launcher, Argo executor) needs from the run's account.

A subset of upstream's ``pipeline-runner`` Role (which also grants ``*`` on pods, deployments,
jobs, ``kubeflow.org`` and more): the reads are limited by name to the objects KFP reads. A
``kfp-launcher`` config that points at other object-store Secrets (``providers``) needs their
names added here.
"""


def analysis_rules(spec: RolloutSpec) -> list[dict[str, Any]]:
    """What promote-model's live analysis reads: Prometheus' bearer-token Secret, by name only.

    Granted only when the spec names one (``validation.analysis.token_secret``): promote reads it
    once before the first step (kserve/promote.py ``_prometheus_token``).
    """
    ref = spec.validation.analysis.token_secret
    if ref is None:
        return []
    return [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": [ref.name]}]


def rbac(spec: RolloutSpec) -> list[dict[str, Any]]:
    """ServiceAccount, Roles and RoleBindings for the pipeline runs (least privilege).

    The Role grants only the verbs and resources the library calls, in one namespace. The CRD
    preflight reads three named CRDs; that read is a ClusterRole limited by ``resourceNames``,
    bound per namespace with a RoleBinding would not reach cluster-scoped objects, so it is bound
    with a ClusterRoleBinding and grants ``get`` on those three names only. A second Role,
    ``<account>-kfp-run`` (:data:`KFP_RUN_RULES`), holds what KFP's own pods need as the run's
    account, since every pod of a run runs as it.
    """
    name = spec.service_account
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(spec, name)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(spec, name),
        # runtime.model_store: deploy-model's preflight reads the serving account and its Secret by name;
        # validation.analysis.token_secret: promote-model reads Prometheus' token Secret by name.
        "rules": copy.deepcopy(RBAC_RULES) + model_store_rules(spec) + hpa_rules(spec) + analysis_rules(spec),
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
    # The run's own needs (KFP driver, launcher, Argo executor) in a Role of their own, so the
    # steps' Role stays exactly what the library calls (tests/cluster/test_rbac.py).
    run_name = f"{name}-kfp-run"
    run_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(spec, run_name),
        "rules": copy.deepcopy(KFP_RUN_RULES),
    }
    run_binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(spec, run_name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": run_name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}],
    }
    return [sa, role, binding, crd_role, crd_binding, run_role, run_binding]


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

    ``kserve-model-store.yaml`` shows ``runtime.model_store`` (KFP's default store when unset).

    Returns:
        ``{file name: [objects]}`` for ``vllm-runtime.yaml``, ``kserve-inferenceservice.yaml``,
        ``kserve-autoscaling.yaml``, ``llm-d-configuration.yaml`` and ``rbac.yaml``.
    """
    stable = default_member(spec)
    llmd_spec = llmd_example_spec(spec)
    llmd_member = default_member(llmd_spec)
    return {
        "vllm-runtime.yaml": [serving_runtime(spec)],
        "kserve-inferenceservice.yaml": [inference_service(spec, stable)],
        "kserve-autoscaling.yaml": autoscaling_objects(spec, inference_service(spec, stable)["spec"]["predictor"]),
        "llm-d-configuration.yaml": [
            llm_inference_service_config(llmd_spec),
            llm_inference_service(llmd_spec, llmd_member, weight=100),
        ],
        "kserve-model-store.yaml": model_store_objects(spec),
        "rbac.yaml": rbac(spec),
    }
