"""register-runtime and deploy-model on the kserve platform, against the real API server and the stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from llm_rollout.errors import DeadlineExceeded, SpecError
from llm_rollout.kserve.addresses import address_resolver
from llm_rollout.kserve.builders import LABEL_MEMBER
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.promote import promote
from llm_rollout.kube import INFERENCE_SERVICES, LLM_INFERENCE_SERVICES
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import parse_spec
from tests.cluster._support import kube, llmd_spec, make_spec, models_server, objects_in, rv, with_runtime

pytestmark = pytest.mark.cluster

EMPTY = {"servingruntimes": [], "inferenceservices": [], "llminferenceservices": []}


def _deploy(spec, client, uri, revision=None, *, register=True, **kwargs):
    """deploy-model after register-runtime (``register=False``: the deploy alone, e.g. refused or dry)."""
    kwargs.setdefault("timeout_s", 30)
    kwargs.setdefault("probe", False)
    if register and not kwargs.get("dry_run"):
        with_runtime(spec, client)
    return deploy(spec, client, model_uri=uri, revision=revision, run_id="run-1", **kwargs)


def test_first_rollout_creates_the_service_and_a_rerun_changes_nothing(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    # A model in KFP's store, with the store off: the test API server serves no core ServiceAccounts
    # or Secrets, so the store's preflight would refuse (that refusal: tests/cluster/test_model_store.py).
    spec = make_spec(kube_namespace, runtime={"model_store": {"enabled": False}})
    register_runtime(spec, client)
    record = _deploy(spec, client, "minio://mlpipeline/v2/artifacts/run-1/model", "r1")
    assert record.kind == "InferenceService" and record.platform == "kserve"
    assert record.model_uri == "s3://mlpipeline/v2/artifacts/run-1/model"
    # A revision id that is a short DNS label is the predictor name as it is.
    assert record.member == "r1" and record.revision == "r1"
    assert record.canary is False and record.stable is None and record.run_id == "run-1"
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    # Unnamed, as upstream's first predictor (KServe: <isvc>-predictor); our label names the member.
    assert "name" not in live["spec"]["predictor"]
    assert live["spec"]["predictor"]["labels"][LABEL_MEMBER] == record.member
    assert live["spec"]["predictor"]["model"]["storageUri"] == record.model_uri
    # Validation calls the predictor's Service KServe creates (<isvc>-predictor, PredictorServiceName),
    # the address KServe itself writes as status.address (createAddress); the component URL it writes
    # is the ingress host of GenerateDomainName, which only confirms the predictor is ready.
    assert record.endpoint_url == f"http://chat-predictor.{kube_namespace}.svc.cluster.local"
    assert live["status"]["address"]["url"] == record.endpoint_url
    assert live["status"]["components"]["predictor"]["url"] == f"http://chat-predictor-{kube_namespace}.example.com"
    assert record.service_url == live["status"]["url"] == f"http://chat-{kube_namespace}.example.com"
    assert record.generation == live["metadata"]["generation"] == 1
    assert DeploymentRecord.from_json(record.to_json()) == record

    again = _deploy(spec, client, "minio://mlpipeline/v2/artifacts/run-1/model", "r1")
    after = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert rv(after) == rv(live)
    assert after["metadata"]["managedFields"] == live["metadata"]["managedFields"]
    assert again == record


def test_canary_rollout_leaves_the_stable_predictor_untouched(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    first = _deploy(spec, client, "s3://models/a", "ra")
    stable_before = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)

    canary_spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    record = _deploy(canary_spec, client, "s3://models/b", "rb")
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert live["spec"]["predictor"] == stable_before["spec"]["predictor"]
    assert [(c["trafficPercent"], c["predictor"]["name"]) for c in live["spec"]["canary"]] == [(10, record.member)]
    assert live["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == "s3://models/b"
    assert live["metadata"]["labels"] == stable_before["metadata"]["labels"]
    assert record.canary is True and record.traffic_percent == 10
    assert record.stable is not None
    assert record.stable.member == first.member and record.stable.model_uri == "s3://models/a"
    assert record.stable.revision == "ra" and record.stable.resource_version == rv(stable_before)
    assert (
        record.stable.endpoint_url == first.endpoint_url == f"http://chat-predictor.{kube_namespace}.svc.cluster.local"
    )
    # Validation measures only the new revision: its own Service, not the split service URL.
    # KServe names a named predictor's Service <isvc>-<predictor name>-predictor
    # (pkg/constants/constants.go PredictorServiceName): isvc "chat", canary predictor "rb".
    assert record.member == "rb"
    assert record.endpoint_url == f"http://chat-rb-predictor.{kube_namespace}.svc.cluster.local"
    assert record.service_url == live["status"]["url"]
    canary_status = live["status"]["canaryStatuses"]
    assert [(c["name"], c["ready"]) for c in canary_status] == [(record.member, True)]

    rerun = _deploy(canary_spec, client, "s3://models/b", "rb")
    assert rv(client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)) == rv(live)
    assert rerun.stable is not None and rerun.stable.member == first.member


def test_dark_launch_gets_no_traffic(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    _deploy(spec, client, "s3://models/a", "ra")
    record = _deploy(spec, client, "s3://models/b", "rb")
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert live["spec"]["canary"][0]["trafficPercent"] == 0 and record.traffic_percent == 0


def test_knative_mode_canary(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, deployment_mode="Knative", canary={"traffic_percent": 20})
    first = _deploy(spec, client, "s3://models/a", "ra")
    record = _deploy(spec, client, "s3://models/b", "rb")
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/b"
    assert "canary" not in live["spec"]
    pred = live["status"]["components"]["predictor"]
    assert pred["latestReadyRevision"] == pred["latestCreatedRevision"]
    # Tag routing on (ksvc_reconciler.go tags the latest revision only with the annotation): the new
    # revision is validated through its own tag, the stable one through "prev", each alone.
    assert live["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    tags = {t.get("tag"): t for t in pred["traffic"]}
    assert tags["latest"]["revisionName"] == pred["latestReadyRevision"] and tags["latest"]["percent"] == 20
    assert tags["prev"]["percent"] == 80 and tags["prev"]["revisionName"] != pred["latestReadyRevision"]
    assert record.endpoint_url == f"http://latest-chat-predictor.{kube_namespace}.svc.cluster.local"
    assert record.stable is not None and record.stable.member == first.member
    assert record.stable.endpoint_url == f"http://prev-chat-predictor.{kube_namespace}.svc.cluster.local"


def test_llmd_canary_is_a_second_member_and_the_stable_object_is_not_written(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 20})
    register_runtime(spec, client)  # the LLMInferenceServiceConfig preset
    first = _deploy(spec, client, "hf://org/model-a", "ra")
    assert first.kind == "LLMInferenceService" and first.canary is False
    stable_before = client.get(LLM_INFERENCE_SERVICES, first.member, kube_namespace)
    assert stable_before["spec"]["router"]["route"]["weight"] == 100

    record = _deploy(spec, client, "hf://org/model-b", "rb")
    # <service>-<first 8 hex digits of sha256(revision)>: sha256("ra"), sha256("rb") start 37e7702e, 64f23261.
    assert (first.member, record.member) == ("chat-37e7702e", "chat-64f23261")
    stable_after = client.get(LLM_INFERENCE_SERVICES, first.member, kube_namespace)
    assert rv(stable_after) == rv(stable_before)
    canary = client.get(LLM_INFERENCE_SERVICES, record.member, kube_namespace)
    route = canary["spec"]["router"]["route"]
    assert route["group"] == stable_before["spec"]["router"]["route"]["group"] == spec.route_group
    assert route["weight"] == 25  # 25 / (100 + 25) = 20 %
    assert record.endpoint_url == canary["status"]["url"] != first.endpoint_url
    assert record.stable is not None and record.stable.member == first.member
    assert record.stable.resource_version == rv(stable_before) and record.stable.model_uri == "hf://org/model-a"
    assert objects_in(client, kube_namespace)["llminferenceservices"] == sorted([first.member, record.member])

    again = _deploy(spec, client, "hf://org/model-b", "rb")
    assert rv(client.get(LLM_INFERENCE_SERVICES, record.member, kube_namespace)) == rv(canary)
    assert again == record


@pytest.mark.fault
def test_resume_after_the_step_was_killed_mid_wait(kube_cluster, kube_namespace, reconciler, tmp_path):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _deploy(spec, client, "s3://models/a", "ra")
    promote(spec, client, first, verdict="pass", summary="", run_id="run-1")  # run-1 is done (its lease released)
    reconciler.behave(spec.service_name, mode="never", reason="Progressing", message="pulling the model")
    script = (
        "import sys\n"
        "from llm_rollout.kube import KubeClient\n"
        "from llm_rollout.kserve.deploy import deploy\n"
        "from llm_rollout.spec import coerce_spec\n"
        "client = KubeClient.from_kubeconfig(sys.argv[1])\n"
        "deploy(coerce_spec(sys.argv[2]), client, model_uri='s3://models/b', revision='rb', run_id='run-2',\n"
        "       timeout_s=300, probe=False)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(kube_cluster.kubeconfig_path), json.dumps(spec.model_dump(mode="json"))]
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
            if live["spec"].get("canary"):
                break
            assert proc.poll() is None, "the deploy process ended before applying its canary"
            assert time.monotonic() < deadline, "the killed deploy never applied its canary"
            time.sleep(0.1)
        time.sleep(0.5)  # it is waiting now
        assert proc.poll() is None
    finally:
        proc.kill()  # preempted: no cleanup, no goodbye
        proc.wait()
    applied = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)

    reconciler.behave(spec.service_name, mode="ready")
    record = deploy(spec, client, model_uri="s3://models/b", revision="rb", run_id="run-2", timeout_s=30, probe=False)
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert live["metadata"]["uid"] == applied["metadata"]["uid"]
    assert live["metadata"]["generation"] == applied["metadata"]["generation"]  # nothing re-applied differently
    assert [c["predictor"]["name"] for c in live["spec"]["canary"]] == [record.member]
    assert record.canary is True and record.run_id == "run-2"


def test_nothing_is_written_when_the_input_is_invalid(kube_cluster, kube_namespace, reconciler, kube_audit):
    client = kube(kube_cluster)
    calls = kube_audit(client)
    spec = make_spec(kube_namespace)
    with pytest.raises(SpecError) as info:
        _deploy(spec, client, "ftp://files.example.com/model", register=False)
    assert "s3://" in str(info.value) and "pvc://" in str(info.value)
    with pytest.raises(SpecError, match="kv_cache_dtype"):
        register_runtime(
            parse_spec(
                {
                    "name": "chat",
                    "namespace": kube_namespace,
                    "platform": "kserve",
                    "runtime": {"kv_cache_dtype": "fp9"},
                }
            ),
            client,
        )
    with pytest.raises(SpecError, match=r"model\.uri"):
        _deploy(spec, client, "", register=False)
    assert objects_in(client, kube_namespace) == EMPTY
    assert not any(verb == "patch" for verb, _g, _r in calls)

    # llm-d: a canary at 100% would need the stable member changed; refused before any write.
    llmd = llmd_spec(kube_namespace, name="gen")
    first = _deploy(llmd, client, "hf://org/a", "ra")
    with pytest.raises(SpecError, match="traffic_percent"):
        _deploy(llmd_spec(kube_namespace, name="gen", canary={"traffic_percent": 100}), client, "hf://org/b", "rb")
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [first.member]


def test_dry_run_deploy_plans_without_writing(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    record = _deploy(spec, client, "s3://models/a", "ra", dry_run=True)
    assert record.member == "ra" and record.endpoint_url == ""
    assert objects_in(client, kube_namespace) == EMPTY


@pytest.mark.fault
def test_deploy_timeout_says_why(kube_cluster, kube_namespace, reconciler, kube_fault_proxy):
    reconciler.serve_core_api(kube_fault_proxy)  # the pods and events a cluster has beside the API
    client = kube(kube_cluster, via=kube_fault_proxy)
    spec = make_spec(kube_namespace)
    reconciler.set_default(mode="never", reason="OOMKilled", message="container kserve-container was OOMKilled")
    with pytest.raises(DeadlineExceeded) as info:
        _deploy(spec, client, "s3://models/a", "ra", timeout_s=2)
    text = str(info.value)
    # KServe says only MinimumReplicasUnavailable; the OOM kill is in the pod's last state.
    assert "PredictorReady=False (MinimumReplicasUnavailable" in text
    assert "last terminated OOMKilled (exit 137)" in text and "OOM-killed at startup" in text
    assert "gpu_memory_utilization" in text


def test_ready_is_not_serving_until_the_endpoint_lists_the_model(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, validation={"readiness_timeout_s": 2})
    with models_server([spec.served_model_name]) as url:
        # The predictors' Services are cluster-internal; the address map sends them where we can reach.
        resolve = address_resolver(f"chat-*.{kube_namespace}.svc.cluster.local={url}")
        record = _deploy(spec, client, "s3://models/a", "ra", probe=True, resolve_url=resolve)
        assert record.endpoint_url == url
        canary = _deploy(spec, client, "s3://models/b", "rb", probe=True, resolve_url=resolve)
        assert canary.endpoint_url == url and canary.canary
    with models_server(["some-other-model"]) as url, pytest.raises(DeadlineExceeded, match="Ready is not serving"):
        _deploy(
            make_spec(kube_namespace, name="other", validation={"readiness_timeout_s": 2}),
            client,
            "s3://models/a",
            "ra",
            probe=True,
            resolve_url=address_resolver(f"other-predictor.{kube_namespace}.svc.cluster.local={url}"),
        )
