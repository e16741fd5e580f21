"""The kube layer against the real test API server: server-side apply, dry run, errors, CRD checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve import builders
from llm_rollout.kserve.crds import check_crds
from llm_rollout.kserve.deploy import register_runtime
from llm_rollout.kserve.diagnose import cluster_context
from llm_rollout.kserve.wait import Readiness
from llm_rollout.kube import (
    CRDS,
    INFERENCE_SERVICES,
    LLM_INFERENCE_SERVICES,
    SERVING_RUNTIMES,
    ConflictError,
    InvalidError,
    NotFoundError,
)
from llm_rollout.spec import parse_spec
from tests.cluster._support import kube, llmd_spec, make_spec, objects_in, rv
from tests.fast_yaml import YAML_LOADER
from tests.fixtures.cluster import TestCluster, kserve_crd_paths

pytestmark = pytest.mark.cluster


def test_apply_creates_and_returns_the_object_as_the_server_has_it(kube_cluster, kube_namespace, kube_audit):
    client = kube(kube_cluster)
    calls = kube_audit(client)
    spec = make_spec(kube_namespace)
    created = client.apply(builders.serving_runtime(spec))  # HTTP 201: the body is read, not None
    assert created["metadata"]["uid"]
    assert created["metadata"]["generation"] == 1
    managers = [(m["manager"], m["operation"]) for m in created["metadata"]["managedFields"]]
    assert managers == [("llm-rollout", "Apply")]
    assert (
        client.get(SERVING_RUNTIMES, spec.runtime_name, kube_namespace)["metadata"]["uid"] == created["metadata"]["uid"]
    )
    # A creating apply is authorized as create and patch (apiserver patch.go): the audit says both.
    assert calls == {
        ("patch", "serving.kserve.io", "servingruntimes"),
        ("create", "serving.kserve.io", "servingruntimes"),
        ("get", "serving.kserve.io", "servingruntimes"),
    }


def test_register_runtime_twice_changes_nothing(kube_cluster, kube_namespace):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    first = register_runtime(spec, client)
    second = register_runtime(spec, client)
    assert rv(second) == rv(first)
    assert second["metadata"]["generation"] == first["metadata"]["generation"] == 1
    assert second["metadata"]["managedFields"] == first["metadata"]["managedFields"]
    live = client.get(SERVING_RUNTIMES, spec.runtime_name, kube_namespace)
    assert rv(live) == rv(first) and len(live["metadata"]["managedFields"]) == 1


def test_dry_run_writes_nothing(kube_cluster, kube_namespace):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    planned = register_runtime(spec, client, dry_run=True)
    assert planned["metadata"]["name"] == spec.runtime_name
    assert planned["spec"]["containers"][0]["image"] == spec.runtime.image
    with pytest.raises(NotFoundError):
        client.get(SERVING_RUNTIMES, spec.runtime_name, kube_namespace)
    assert objects_in(client, kube_namespace) == {
        "servingruntimes": [],
        "inferenceservices": [],
        "llminferenceservices": [],
    }


def test_runtime_name_collision_with_another_field_manager(kube_cluster, kube_namespace):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    theirs = builders.serving_runtime(spec)
    theirs["spec"]["containers"][0]["image"] = "registry.example.com/team-b/vllm:custom"
    status, body = kube_cluster.request(
        "PATCH",
        f"/apis/serving.kserve.io/v1alpha1/namespaces/{kube_namespace}/servingruntimes/{spec.runtime_name}"
        "?fieldManager=team-b-deployer",
        theirs,
        content_type="application/apply-patch+yaml",
    )
    assert status == 201, body
    with pytest.raises(ConflictError) as info:
        register_runtime(spec, client)
    err = info.value
    assert err.managers == ["team-b-deployer"]
    assert any("containers" in f for f in err.fields)
    text = str(err)
    assert "team-b-deployer" in text and "force" in text
    # Nothing was forced: the other team's runtime is as they left it.
    live = client.get(SERVING_RUNTIMES, spec.runtime_name, kube_namespace)
    assert live["spec"]["containers"][0]["image"] == "registry.example.com/team-b/vllm:custom"
    # Only when asked: force takes the fields over.
    forced = register_runtime(spec, client, force=True)
    assert forced["spec"]["containers"][0]["image"] == spec.runtime.image


def test_typo_field_is_rejected_and_named(kube_cluster, kube_namespace):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    obj = builders.inference_service(spec, builders.default_member(spec, "s3://models/a", "ra"))
    obj["spec"]["predictor"]["modle"] = copy.deepcopy(obj["spec"]["predictor"].pop("model"))
    with pytest.raises(InvalidError) as info:
        client.apply(obj)
    assert "modle" in str(info.value)
    assert any("modle" in f for f in info.value.fields) or ".spec.predictor.modle" in str(info.value)
    assert client.get_or_none(INFERENCE_SERVICES, spec.service_name, kube_namespace) is None


def test_cel_rule_violation_carries_the_servers_message(kube_cluster, kube_namespace):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, model={"uri": "hf://org/tiny"})
    obj = builders.llm_inference_service(spec, builders.default_member(spec), weight=100)
    obj["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2}
    with pytest.raises(InvalidError) as info:
        client.apply(obj)
    assert "mutually exclusive" in str(info.value)
    assert client.list(LLM_INFERENCE_SERVICES, kube_namespace)["items"] == []


def test_check_crds_passes_on_a_full_kserve(kube_cluster, kube_audit):
    client = kube(kube_cluster)
    calls = kube_audit(client)
    found = check_crds(client, need_llmd=False)
    assert set(found) == {"inferenceservices.serving.kserve.io", "servingruntimes.serving.kserve.io"}
    assert set(check_crds(client, need_llmd=True)) == {"llminferenceservices.serving.kserve.io"}
    assert calls == {("get", "apiextensions.k8s.io", "customresourcedefinitions")}  # by name: no list


def test_core_v1_unavailable_is_said_not_raised(kube_cluster, kube_namespace):
    text, _ = cluster_context(kube(kube_cluster), Readiness.inference_service(), "x", kube_namespace)
    assert "pod states and events unavailable" in text and "404" in text


# A second, separate API server for the CRD situations (the session's one always has all CRDs).


def _old_isvc_crd(tmp: Path) -> Path:
    """The InferenceService CRD as a KServe older than 0.20 had it: no spec.canary."""
    src = next(p for p in kserve_crd_paths() if p.name.endswith("inferenceservices.yaml"))
    doc = yaml.load(src.read_text(), Loader=YAML_LOADER)
    for version in doc["spec"]["versions"]:
        version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"].pop("canary", None)
        version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"].pop("canaryStatuses", None)
    out = tmp / "old-inferenceservices.yaml"
    out.write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory):
    """An API server with no KServe CRDs at all (CRDs are added by the tests)."""
    from tests.fixtures.cluster import require_binaries

    cluster = TestCluster(tmp_path_factory.mktemp("bare-cluster"), binaries=require_binaries(), crd_paths=[])
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


def test_crds_missing_then_too_old(bare_cluster, tmp_path):
    client = kube(bare_cluster, type_grace_s=0)
    spec = make_spec("team-a")
    with pytest.raises(PermanentError) as info:
        register_runtime(spec, client)
    text = str(info.value)
    assert "inferenceservices.serving.kserve.io is not installed" in text
    assert "servingruntimes.serving.kserve.io is not installed" in text
    assert "KServe" in text and "helm" in text
    with pytest.raises(PermanentError, match=r"llminferenceservices\.serving\.kserve\.io is not installed"):
        register_runtime(llmd_spec("team-a"), client)

    runtimes = next(p for p in kserve_crd_paths() if p.name.endswith("_servingruntimes.yaml"))
    bare_cluster.install_crds([runtimes, _old_isvc_crd(tmp_path)])
    with pytest.raises(PermanentError) as info:
        register_runtime(spec, client)
    assert "has no spec.canary" in str(info.value) and "0.20" in str(info.value)
    assert client.get_or_none(SERVING_RUNTIMES, spec.runtime_name, "team-a") is None  # nothing half-applied
    # Knative mode does not need spec.canary: the same cluster is good enough for it.
    knative = make_spec("team-a", deployment_mode="Knative")
    assert register_runtime(knative, client)["metadata"]["name"] == knative.runtime_name
    # The waiter's own reads name the missing type too.
    with pytest.raises(NotFoundError, match="CustomResourceDefinition"):
        client.list(LLM_INFERENCE_SERVICES, "team-a")
    assert client.get_or_none(CRDS, "llminferenceservices.serving.kserve.io") is None


def test_spec_for_another_platform_is_refused_before_any_call(bare_cluster, kube_audit):
    client = kube(bare_cluster)
    calls = kube_audit(client)
    with pytest.raises(SpecError, match="platform"):
        register_runtime(parse_spec({"name": "x", "namespace": "team-a", "platform": "local"}), client)
    assert calls == set()
