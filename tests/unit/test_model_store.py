"""KServe reading the model from KFP's object store (issue 27 item 4): the serving account, its S3
Secret and what deploy-model's preflight makes of the live objects.

Upstream rules (kserve ``pkg/credentials``): the storage initializer reads every Secret the serving
pods' ServiceAccount lists (``service_account_credentials.go``
``CreateSecretVolumeAndEnvFromServiceAccount``); a Secret counts as S3 when it has the secret-key
field ``awsSecretAccessKey`` (``mountSecretCredential``); ``s3/s3_secret.go`` ``BuildSecretEnvs``
reads ``awsAccessKeyID``/``awsSecretAccessKey`` and ``s3/utils.go`` ``BuildS3EnvVars`` the
``serving.kserve.io/s3-*`` annotations.
"""

import pytest
import yaml

from llm_rollout.errors import SpecError
from llm_rollout.kserve.builders import default_member, inference_service, llm_inference_service, rbac
from llm_rollout.kserve.builders.isvc import _canary_predictor
from llm_rollout.kserve.builders.storage import (
    effective_store,
    model_store_objects,
    model_store_problems,
    serving_account,
    store_annotations,
)
from llm_rollout.kserve.deploy import to_storage_uri
from llm_rollout.kserve.preflight import check_model_store
from llm_rollout.render import applied_manifests
from llm_rollout.spec import parse_spec
from llm_rollout.spec.serving import ModelStore

KFP_STORE = {"runtime": {"model_store": {}}}
KFP_MODEL = "minio://mlpipeline/v2/artifacts/llm-optimize-deploy/run-1/optimize-model/x/optimized_model"
"""Where a run with default parameters puts the optimized model (KFP's default pipeline root)."""
OFF = {"runtime": {"model_store": {"enabled": False}}}


def _spec(**doc):
    return parse_spec({"name": "chat", "namespace": "team-a", "platform": "kserve", **doc})


def test_defaults_are_kfps_default_store():
    # kubeflow/pipelines objectstore/config.go DefaultEndpointInMultiUserMode, config/env.go
    # getDefaultMinioSessionInfo (region minio, disableSSL true).
    store = ModelStore()
    assert (store.endpoint, store.use_https, store.region) == ("seaweedfs.kubeflow:9000", False, "minio")
    assert store_annotations(store) == {
        "serving.kserve.io/s3-endpoint": "seaweedfs.kubeflow:9000",
        "serving.kserve.io/s3-region": "minio",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-verifyssl": "1",
    }


def test_secret_and_account_render_without_key_values():
    secret, account = model_store_objects(_spec(**KFP_STORE))
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "team-a"
    assert "data" not in secret and "stringData" not in secret, "keys are the admin's to put in, never rendered"
    assert account == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "kfp-model-reader", "namespace": "team-a", "labels": account["metadata"]["labels"]},
        "secrets": [{"name": "kfp-model-store"}],
    }
    cloud = _spec(runtime={"model_store": {"endpoint": "", "use_https": True, "region": "eu-west-1"}})
    notes = model_store_objects(cloud)[0]["metadata"]["annotations"]
    assert "serving.kserve.io/s3-endpoint" not in notes, "no endpoint: AWS S3 itself"
    assert notes["serving.kserve.io/s3-usehttps"] == "1" and notes["serving.kserve.io/s3-region"] == "eu-west-1"


def test_the_store_applies_to_models_in_kfps_store_by_default():
    # No runtime.model_store in the spec: KFP's default store, for its pipeline-root bucket only.
    spec = _spec()
    for uri in (KFP_MODEL, to_storage_uri(KFP_MODEL), "s3://mlpipeline/models/llama"):
        assert effective_store(spec, uri) == ModelStore(), uri
        assert serving_account(spec, uri) == "kfp-model-reader", uri
    for uri in ("hf://org/model", "pvc://models/llama", "gs://mlpipeline/m", "oci://r/m:v1", "s3://models/m", ""):
        assert effective_store(spec, uri) is None and serving_account(spec, uri) is None, uri
    # Off, in either form: nothing for any model (and the Role reads nothing, the file is not written).
    for off in (_spec(**OFF), _spec(runtime={"model_store": None})):
        assert not off.runtime.model_store.enabled
        assert effective_store(off, KFP_MODEL) is None and serving_account(off, KFP_MODEL) is None
    # Other buckets of the store are named, or "*" for all of them.
    mine = _spec(runtime={"model_store": {"buckets": ["models"]}})
    assert serving_account(mine, "s3://models/m") == "kfp-model-reader" and not effective_store(mine, KFP_MODEL)
    every = _spec(runtime={"model_store": {"buckets": ["*"]}})
    assert effective_store(every, "minio://any/m") and not effective_store(every, "gs://any/m")


def test_serving_pods_run_as_the_store_account_stable_canary_and_llmd():
    spec = _spec()
    isvc = inference_service(spec, default_member(spec, model_uri=to_storage_uri(KFP_MODEL)))
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "kfp-model-reader"
    canary = _canary_predictor(spec, default_member(spec, model_uri="s3://mlpipeline/v2/b", revision="b"), 1)
    assert canary["serviceAccountName"] == "kfp-model-reader"
    hf = _canary_predictor(spec, default_member(spec, model_uri="hf://org/m", revision="h"), 1)
    assert "serviceAccountName" not in hf, "a model outside the store: the namespace's default account"
    llmd = _spec(llmd={"enabled": True}, scaling=None, replicas=1)
    member = llm_inference_service(llmd, default_member(llmd, model_uri="s3://mlpipeline/m"), weight=100)
    assert member["spec"]["template"]["serviceAccountName"] == "kfp-model-reader"
    other = llm_inference_service(llmd, default_member(llmd, model_uri="hf://org/m"), weight=100)
    assert "serviceAccountName" not in str(other)
    assert "serviceAccountName" not in str(inference_service(_spec(), default_member(_spec())))
    off = _spec(**OFF)
    assert "serviceAccountName" not in str(inference_service(off, default_member(off, model_uri="s3://mlpipeline/m")))


def test_a_second_serving_account_is_refused():
    spec = _spec(runtime={"service_account": "other", "model_store": {}})
    with pytest.raises(SpecError, match=r"runtime\.service_account") as info:
        serving_account(spec, KFP_MODEL)
    assert "model_store.service_account" in str(info.value) and "enabled: false" in str(info.value)
    assert serving_account(spec, "hf://org/m") == "other", "outside the store the spec's own account serves"
    own = _spec(runtime={"service_account": "other", "model_store": {"enabled": False}})
    assert serving_account(own, KFP_MODEL) == "other"
    same = _spec(runtime={"service_account": "kfp-model-reader", "model_store": {}})
    assert serving_account(same, KFP_MODEL) == "kfp-model-reader"
    steps = _spec(runtime={"model_store": {"service_account": "llm-rollout"}})
    with pytest.raises(SpecError, match=r"runtime\.model_store\.service_account"):
        serving_account(steps, KFP_MODEL)


def test_the_steps_role_reads_only_those_two_names():
    # Granted whenever the store is on, the spec silent included: the Role is rendered before a run
    # knows its model, and the optimized model lands in KFP's pipeline root.
    for spec in (_spec(**KFP_STORE), _spec()):
        role = next(o for o in rbac(spec) if o["kind"] == "Role" and o["metadata"]["name"] == "llm-rollout")
        core = [
            r for r in role["rules"] if r["apiGroups"] == [""] and r["resources"][0] in ("secrets", "serviceaccounts")
        ]
        assert core == [
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts"],
                "verbs": ["get"],
                "resourceNames": ["kfp-model-reader"],
            },
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["kfp-model-store"]},
        ]
    plain = next(o for o in rbac(_spec(**OFF)) if o["kind"] == "Role" and o["metadata"]["name"] == "llm-rollout")
    assert "secrets" not in str(plain["rules"]), "no model store: no Secret read"


def _live():
    secret, account = model_store_objects(_spec(**KFP_STORE))
    secret["data"] = {"awsAccessKeyID": "a2V5", "awsSecretAccessKey": "c2VjcmV0"}
    return account, secret


def test_preflight_problems_from_the_live_objects():
    store = ModelStore()
    account, secret = _live()
    assert model_store_problems(store, account, secret) == []
    assert model_store_problems(store, None, secret) == ["ServiceAccount 'kfp-model-reader' does not exist"]
    assert "does not list Secret" in model_store_problems(store, {**account, "secrets": []}, secret)[0]
    assert model_store_problems(store, account, None) == ["Secret 'kfp-model-store' does not exist"]
    # KFP's own Secret copied as it is: KServe's mountSecretCredential does not see an S3 Secret.
    kfp_names = {**secret, "data": {"accesskey": "a2V5", "secretkey": "c2VjcmV0"}}
    (problem,) = model_store_problems(store, account, kfp_names)
    assert "awsAccessKeyID or awsSecretAccessKey" in problem and "accesskey" in problem
    assert "c2VjcmV0" not in problem
    no_endpoint = {**secret, "metadata": {**secret["metadata"], "annotations": {}}}
    problems = model_store_problems(store, account, no_endpoint)
    assert any("serving.kserve.io/s3-endpoint=None" in p and "seaweedfs.kubeflow:9000" in p for p in problems)


def test_render_spec_writes_the_model_store_file_unless_off(tmp_path):
    doc = {"name": "chat", "namespace": "team-a", "platform": "kserve", "model": {"uri": "s3://mlpipeline/m"}}
    with_store = applied_manifests(parse_spec(doc), source="team.yaml")
    objs = list(yaml.safe_load_all(with_store["kserve-model-store.yaml"]))
    assert [o["kind"] for o in objs] == ["Secret", "ServiceAccount"]
    assert "put its keys" in with_store["kserve-model-store.yaml"]
    isvc = yaml.safe_load(with_store["kserve-inferenceservice.yaml"].split("\n---")[0])
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "kfp-model-reader"
    assert "kserve-model-store.yaml" not in applied_manifests(parse_spec({**doc, **OFF}), source="team.yaml")


def test_the_preflight_reads_nothing_for_a_model_outside_the_store():
    # No client at all: a read would fail. The reads for a model in the store, and the refusal when
    # the account is missing, run against the API server (tests/cluster/test_model_store.py).
    for spec, uri in ((_spec(), "hf://org/m"), (_spec(), "s3://models/m"), (_spec(**OFF), "s3://mlpipeline/m")):
        assert check_model_store(None, spec, uri) is None, uri
    with pytest.raises(AttributeError):
        check_model_store(None, _spec(), "s3://mlpipeline/m")
