"""The bad-input catalogue: every input the project knows to be wrong, refused with field and fix, nothing written.

One table for the pipeline's kserve steps (``register_runtime_step`` and ``deploy_step`` from
:mod:`llm_rollout.steps`, driven exactly as the KFP components drive them: the spec as JSON, the
cluster from ``KUBECONFIG``) against the real test API server:

* every row of the unit tier's ``BAD_INPUTS`` (spec fields, URIs, SLO expressions, names, vLLM
  flag combinations), plus the inputs that only the steps see (the model artifact URI, the spec
  text itself);
* the CRD-version situations, each on its own API server: KServe's CRDs missing, an
  InferenceService CRD without ``spec.canary`` (KServe < 0.20) for a Standard-mode canary, no
  LLMInferenceService ``v1alpha2`` when llm-d is on.

Each row asserts that the error names the problem and its fix and that nothing was written: every
KServe kind the server serves, listed in the namespace, is empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.config import kube_config

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kube import CRDS, KSERVE_GROUP, KubeClient, Resource, ResourceTypeNotServed
from llm_rollout.spec import deep_merge
from llm_rollout.steps import deploy_step, register_runtime_step
from tests.fixtures.cluster import TestCluster, kserve_crd_paths, require_binaries
from tests.unit.test_spec import BAD_INPUTS

pytestmark = pytest.mark.cluster

GOOD_URI = "s3://models/chat"
RUN_ID = "bad-input-run"


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        doc: Overrides merged into a valid kserve spec (``None``: ``raw`` is the spec text).
        field: The field the error must name (for a CRD situation: words naming the CRD).
        problem: Words of the problem.
        fix: Words of the fix.
        model_uri: The model artifact URI deploy-model gets.
        raw: The spec text itself, when the text is what is wrong.
        steps: Which steps get the input.
    """

    doc: dict[str, Any] | None
    field: str
    problem: str
    fix: str
    model_uri: str = GOOD_URI
    raw: str | None = None
    steps: tuple[str, ...] = ("register", "deploy")


SPEC_CASES = [Case(doc, field, problem, fix) for doc, field, problem, fix in BAD_INPUTS]

# What the unit table cannot hold: inputs only the steps see, and more known mistakes.
STEP_CASES = [
    # The model artifact URI (a KFP artifact's .uri) handed to deploy-model.
    Case({}, "model.uri", "cannot load ftp://", "s3://", model_uri="ftp://files.example.com/m", steps=("deploy",)),
    Case({}, "model.uri", "no model URI was given", "pvc://", model_uri="", steps=("deploy",)),
    Case({}, "model.uri", "a local path", "PVC", model_uri="/data/models/m", steps=("deploy",)),
    Case({}, "model.uri", "names no bucket", "s3://bucket/path", model_uri="s3:///key-only", steps=("deploy",)),
    Case({}, "model.uri", "names no claim", "pvc://claim-name/path", model_uri="pvc://", steps=("deploy",)),
    Case({}, "model.uri", "but no repository", "hf://org/repo", model_uri="hf://meta-llama", steps=("deploy",)),
    Case(
        {"llmd": {"enabled": True}, "scaling": None, "replicas": 1},
        "model.uri",
        "llm-d's storage initializer cannot load gs://",
        "hf://",
        model_uri="gs://bucket/m",
        steps=("deploy",),
    ),
    # The endpoint's API key: a variable the step cannot see is found before anything is applied.
    Case(
        {"validation": {"api_key_env": "LLM_ROLLOUT_TEST_UNSET_KEY"}},
        "validation.api_key_env",
        "LLM_ROLLOUT_TEST_UNSET_KEY is not set or empty",
        "export LLM_ROLLOUT_TEST_UNSET_KEY",
        steps=("deploy",),
    ),
    # The spec text itself (KFP passes it as a JSON string parameter).
    Case(None, "spec", "is not JSON", "pass the spec as JSON", raw="{name: chat"),
    Case(None, "spec", "expected a mapping, got list", "YAML mapping", raw='["chat"]'),
    # Names and flag combinations beyond the unit table.
    Case({"runtime": {"runtime_name": "---"}}, "runtime.runtime_name", "no letters or digits", "lowercase"),
    Case(
        {"runtime": {"extra_args": ["--max-model-len", "512"]}},
        "runtime.extra_args[0]",
        "--max-model-len is set by the spec field 'runtime.max_model_len'",
        "set 'runtime.max_model_len' instead",
    ),
    Case(
        {"runtime": {"extra_args": ["--served-model-name=x"]}},
        "runtime.extra_args[0]",
        "set by the spec field 'model.name'",
        "model.name",
    ),
    Case({"runtime": {"extra_args": ["--model", "/m"]}}, "runtime.extra_args[0]", "'model.uri'", "model.uri"),
    Case({"deployment_mode": "Bogus"}, "deployment_mode", "'Bogus' is not allowed", "'Standard' or 'Knative'"),
    Case({"canary": {"traffic_percent": "ten"}}, "canary.traffic_percent", "'ten' is invalid", "integer"),
    Case(
        {"kserve_version": "zero.twenty", "canary": {"traffic_percent": 5}}, "kserve_version", "not a version", "0.20"
    ),
    Case(
        {"validation": {"slo": {"checks": [""]}}}, "validation.slo.checks[0]", "empty SLO check", "p95_ttft_ms <= 100"
    ),
]

CASES = SPEC_CASES + STEP_CASES


def _case_id(case: Case) -> str:
    return f"{case.field}:{case.problem}"[:80]


def _spec_text(case: Case, namespace: str) -> str:
    if case.raw is not None:
        return case.raw
    base = {"name": "chat", "namespace": namespace, "platform": "kserve"}
    return json.dumps(deep_merge(base, case.doc or {}))


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


def _run_step(step: str, case: Case, namespace: str) -> None:
    text = _spec_text(case, namespace)
    if step == "register":
        register_runtime_step(text)
    else:
        deploy_step(text, model_uri=case.model_uri, run_id=RUN_ID)


@pytest.fixture
def steps_env(monkeypatch):
    """Point the steps at a cluster the way a KFP pod outside the cluster would: KUBECONFIG."""

    def use(cluster: TestCluster) -> None:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig_path))
        # The kubernetes client reads $KUBECONFIG once, at import; a pod has it set before that.
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig_path))

    return use


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_with_field_and_fix_and_nothing_is_written(case, kube_cluster, kube_namespace, steps_env):
    steps_env(kube_cluster)
    client = KubeClient(kube_cluster.api_client())
    for step in case.steps:
        with pytest.raises(SpecError) as info:
            _run_step(step, case, kube_namespace)
        err = info.value
        assert err.field == case.field, f"{step}: {err}"
        assert case.problem in err.problem, f"{step}: {err}"
        assert case.fix in err.fix, f"{step}: {err}"
        assert str(err).startswith(f"{case.field}: ") and "Fix: " in str(err), str(err)
    objects = kserve_objects(client, kube_namespace)
    assert set(objects) >= {"servingruntimes.v1alpha1", "inferenceservices.v1beta1", "llminferenceservices.v1alpha2"}
    assert all(names == [] for names in objects.values()), objects


# CRD-version situations: each on its own API server -------------------------------------------


def _crd_doc(suffix: str) -> dict[str, Any]:
    path = next(p for p in kserve_crd_paths() if p.name.endswith(suffix))
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


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
    cluster = TestCluster(tmp_path_factory.mktemp(name), binaries=require_binaries(), crd_paths=[])
    cluster.start()
    try:
        if crds:
            cluster.install_crds(crds)
    except BaseException:
        cluster.close()
        raise
    return cluster


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
