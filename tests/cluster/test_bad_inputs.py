"""The bad inputs only a server can refuse: the CRD-version situations, refused with what is missing and the fix.

The pipeline's kserve steps (``register_runtime_step`` and ``deploy_step`` from
:mod:`llm_rollout.steps`, driven exactly as the KFP components drive them: the spec as JSON, the
cluster from ``KUBECONFIG``), each situation on its own real test API server: KServe's CRDs
missing, an InferenceService CRD without ``spec.canary`` (KServe < 0.20) for a Standard-mode
canary, no LLMInferenceService ``v1alpha2`` when llm-d is on. Each asserts that the error names the
problem and its fix and that nothing was written: every KServe kind the server serves, listed in
the namespace, is empty.

Every other bad input (the spec's fields, the model URI, the spec text) is refused while parsing,
before any request: ``tests/unit/test_step_bad_inputs.py`` proves that with the steps pointed at a
closed port, where a request would have ended in a connection error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.config import kube_config

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kube import CRDS, KSERVE_GROUP, KubeClient, Resource, ResourceTypeNotServed
from llm_rollout.spec import deep_merge
from llm_rollout.steps import deploy_step, register_runtime_step
from tests.fast_yaml import YAML_LOADER
from tests.fixtures.cluster import TestCluster, kserve_crd_paths, require_binaries

pytestmark = pytest.mark.cluster

GOOD_URI = "s3://models/chat"
RUN_ID = "bad-input-run"


def kserve_objects(client: KubeClient, namespace: str) -> dict[str, list[str]]:
    """Every namespaced KServe object in ``namespace``, by plural, for every kind the server serves.

    The kinds come from the server's own CRDs (group ``serving.kserve.io``), each listed at every
    served version, so a kind the library does not know yet is covered too. A kind that is not
    served has no objects.
    """
    out: dict[str, list[str]] = {}
    for crd in client.list(CRDS)["items"]:
        spec = crd["spec"]
        if spec["group"] != KSERVE_GROUP or spec["scope"] != "Namespaced":
            continue
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            res = Resource(KSERVE_GROUP, version["name"], spec["names"]["plural"], spec["names"]["kind"])
            try:
                items = client.list(res, namespace)["items"]
            except ResourceTypeNotServed:
                items = []
            out[f"{res.plural}.{res.version}"] = sorted(i["metadata"]["name"] for i in items)
    return out


@pytest.fixture
def steps_env(monkeypatch):
    """Point the steps at a cluster the way a KFP pod outside the cluster would: KUBECONFIG."""

    def use(cluster: TestCluster) -> None:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig_path))
        # The kubernetes client reads $KUBECONFIG once, at import; a pod has it set before that.
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig_path))

    return use


# CRD-version situations: each on its own API server -------------------------------------------


def _crd_doc(suffix: str) -> dict[str, Any]:
    path = next(p for p in kserve_crd_paths() if p.name.endswith(suffix))
    return yaml.load(path.read_text(), Loader=YAML_LOADER)


def _old_kserve_crds(tmp: Path) -> list[Path]:
    """KServe as it was before 0.20: InferenceService without spec.canary, LLMInferenceService v1alpha1 only."""
    isvc = _crd_doc("_inferenceservices.yaml")
    for version in isvc["spec"]["versions"]:
        props = version["schema"]["openAPIV3Schema"]["properties"]
        props["spec"]["properties"].pop("canary", None)
        props["status"]["properties"].pop("canaryStatuses", None)
    llmisvc = _crd_doc("_llminferenceservices.yaml")
    llmisvc["spec"]["versions"] = [v for v in llmisvc["spec"]["versions"] if v["name"] == "v1alpha1"]
    llmisvc["spec"]["versions"][0]["storage"] = True
    paths = [next(p for p in kserve_crd_paths() if p.name.endswith("_servingruntimes.yaml"))]
    for name, doc in (("old-isvc.json", isvc), ("old-llmisvc.json", llmisvc)):
        (tmp / name).write_text(json.dumps(doc))
        paths.append(tmp / name)
    return paths


def _cluster(tmp_path_factory, name: str, crds: list[Path] | None = None):
    """A started API server with ``crds`` installed: from the cached CRD snapshot after the first run (the
    old CRDs are derived deterministically from the pinned ones, so their bytes key it)."""
    cluster = TestCluster(tmp_path_factory.mktemp(name), binaries=require_binaries(), crd_paths=crds or [])
    return cluster.start_cached() if crds else cluster.start()


@pytest.fixture(scope="module")
def no_kserve(tmp_path_factory):
    """An API server without any KServe CRD."""
    cluster = _cluster(tmp_path_factory, "no-kserve")
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def old_kserve(tmp_path_factory):
    """An API server with a pre-0.20 KServe: no spec.canary, no LLMInferenceService v1alpha2."""
    cluster = _cluster(tmp_path_factory, "old-kserve", _old_kserve_crds(tmp_path_factory.mktemp("old-crds")))
    yield cluster
    cluster.close()


LLMD = {"llmd": {"enabled": True}, "scaling": None, "replicas": 1}
INSTALL_FIX = "helm upgrade --install kserve-crd"

# (cluster fixture, spec overrides, words naming the missing piece, words of the fix)
CRD_CASES = [
    (
        "no_kserve",
        {"canary": {"traffic_percent": 10}},
        ["inferenceservices.serving.kserve.io is not installed", "servingruntimes.serving.kserve.io is not installed"],
        INSTALL_FIX,
    ),
    ("no_kserve", LLMD, ["llminferenceservices.serving.kserve.io is not installed"], INSTALL_FIX),
    (
        "old_kserve",
        {"canary": {"traffic_percent": 10}},
        ["inferenceservices.serving.kserve.io v1beta1 has no spec.canary", "older than 0.20"],
        "deployment_mode 'Knative'",
    ),
    (
        "old_kserve",
        LLMD,
        ["llminferenceservices.serving.kserve.io does not serve v1alpha2 (served: v1alpha1)"],
        INSTALL_FIX,
    ),
]


@pytest.mark.parametrize(
    ("cluster_name", "overrides", "problems", "fix"),
    CRD_CASES,
    ids=["no-crds-isvc", "no-crds-llmd", "old-isvc-no-canary", "old-llmisvc-v1alpha1"],
)
def test_crd_situation_is_refused_with_what_is_missing_and_nothing_is_written(
    cluster_name, overrides, problems, fix, request, steps_env
):
    cluster: TestCluster = request.getfixturevalue(cluster_name)
    steps_env(cluster)
    namespace = "team-a"
    text = json.dumps(deep_merge({"name": "chat", "namespace": namespace, "platform": "kserve"}, overrides))
    for step in (lambda: register_runtime_step(text), lambda: deploy_step(text, model_uri=GOOD_URI, run_id=RUN_ID)):
        with pytest.raises(PermanentError) as info:
            step()
        message = str(info.value)
        assert not isinstance(info.value, SpecError)
        assert all(p in message for p in problems), message
        assert "Fix: " in message and fix in message, message
    client = KubeClient(cluster.api_client(), type_grace_s=0)
    objects = kserve_objects(client, namespace)
    assert all(names == [] for names in objects.values()), objects
    if cluster_name == "old_kserve":
        assert set(objects) == {
            "servingruntimes.v1alpha1",
            "inferenceservices.v1beta1",
            "llminferenceservices.v1alpha1",
        }


def test_a_knative_spec_is_fine_on_the_old_kserve(old_kserve, steps_env):
    # The control case: the old cluster is not broken, it is too old for Standard-mode canaries only.
    steps_env(old_kserve)
    text = json.dumps({"name": "chat", "namespace": "team-b", "platform": "kserve", "deployment_mode": "Knative"})
    assert register_runtime_step(text) == "chat-vllm"
    client = KubeClient(old_kserve.api_client())
    assert kserve_objects(client, "team-b")["servingruntimes.v1alpha1"] == ["chat-vllm"]
