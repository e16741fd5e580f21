"""What KServe does with our objects after admission: pod templates, tag routing, addresses.

Against the real API server and the stand-in controller, which computes each predictor's pod
template as KServe builds it (``components/predictor.go`` ``buildObjectMeta``: the InferenceService's
labels and annotations go into it; ``buildCanaryPredictor`` for a canary) and counts every change
(:meth:`tests.reconciler.Reconciler.pod_template_versions`): a change restarts the pods (Standard) or
makes a new cold Knative revision. Lease, records and traffic steps must change none; only a model
does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve import records
from llm_rollout.kserve.addresses import address_resolver
from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.lease import LEGACY_LEASE_EXPIRES, LEGACY_LEASE_HOLDER, LeaseHeld, lease_manager, lease_of
from llm_rollout.kserve.platform import KServePlatform
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.rollback import rollback
from llm_rollout.kserve.variants import variant_for
from llm_rollout.kserve.variants.base import Plan
from llm_rollout.kube import INFERENCE_SERVICES, LEASES
from tests.cluster._support import kube, make_spec, models_server, upstream_test_runtime, with_runtime

pytestmark = pytest.mark.cluster


def _deploy(spec, client, uri, revision, run_id, **kwargs):
    kwargs.setdefault("timeout_s", 30)
    kwargs.setdefault("probe", False)
    with_runtime(spec, client)
    return deploy(spec, client, model_uri=uri, revision=revision, run_id=run_id, **kwargs)


def _promote(spec, client, record, **kwargs):
    return promote(spec, client, record, verdict="pass", summary="ok", run_id=record.run_id, **kwargs)


def _meta(client, spec):
    live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    return live["metadata"].get("labels"), live["metadata"].get("annotations")


def test_lease_steps_promotion_and_rollback_leave_every_pod_template_as_its_model_made_it(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10, "steps": [25, 50, 100]})
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    metadata = _meta(client, spec)
    assert _promote(spec, client, first).action == "promote"
    assert reconciler.pod_template_versions("chat") == {"chat-predictor": 1}

    # Second rollout: lease taken, canary, two traffic steps with the gate, promotion, lease released.
    second = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    gates: list[int] = []
    assert _promote(spec, client, second, gate=lambda p: gates.append(p) or ("pass", "ok")).action == "promote"
    assert gates == [25, 50, 100]
    # The canary's Deployment became the stable one without a new pod template (its pods stay, the
    # ones just validated); the old stable's Deployment went with its only template.
    assert reconciler.pod_template_versions("chat") == {"chat-predictor": 1, "chat-rb-predictor": 1}

    # Third rollout, rolled back: the stable's template is untouched, the canary's had one.
    third = _deploy(spec, client, "s3://models/c", "rc", "run-3")
    assert rollback(spec, client, third, reason="fail", run_id="run-3").action == "rollback"
    assert reconciler.pod_template_versions("chat") == {
        "chat-predictor": 1,
        "chat-rb-predictor": 1,
        "chat-rc-predictor": 1,
    }
    # Nothing of the rollout's state is on the InferenceService: its metadata never changed.
    assert _meta(client, spec) == metadata
    state = client.get(LEASES, "chat-rollout", kube_namespace)
    assert json.loads(state["metadata"]["annotations"][records.STABLE])["member"] == second.member
    assert lease_of(state) is None


def test_knative_makes_a_revision_per_model_and_none_for_the_rollout_state(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, deployment_mode="Knative", canary={"traffic_percent": 20, "steps": [50, 100]})
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    _promote(spec, client, first)
    second = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    _promote(spec, client, second, gate=lambda p: ("pass", "ok"))
    # Two models, two pod templates (revisions): the lease, the records and the steps made none.
    assert reconciler.pod_template_versions("chat") == {"chat-predictor": 2}
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert live["status"]["components"]["predictor"]["latestCreatedRevision"] == "chat-predictor-00002"


def test_a_knative_canary_is_measured_alone_and_the_stable_through_prev(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, deployment_mode="Knative", canary={"traffic_percent": 20})
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    _promote(spec, client, first)
    with models_server([spec.served_model_name]) as new, models_server([spec.served_model_name]) as old:
        # Knative's tag routes, <tag>-<Knative Service> in the namespace; the split service address
        # (chat-predictor) is not mapped: a request there would fail the probe.
        where = f"{kube_namespace}.svc.cluster.local"
        resolve = address_resolver(f"latest-chat-predictor.{where}={new},prev-chat-predictor.{where}={old}")
        record = _deploy(spec, client, "s3://models/b", "rb", "run-2", probe=True, resolve_url=resolve)
        assert record.endpoint_url == new  # probed there: the new revision alone answered
        assert record.stable is not None
        assert resolve(record.stable.endpoint_url) == old
        live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
        traffic = {t.get("tag"): t for t in live["status"]["components"]["predictor"]["traffic"]}
        assert traffic["latest"]["revisionName"] == "chat-predictor-00002" and traffic["latest"]["percent"] == 20
        assert traffic["prev"]["revisionName"] == "chat-predictor-00001" and traffic["prev"]["percent"] == 80


def test_without_tag_routing_knative_tags_nothing_latest_and_the_candidate_has_no_address(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, deployment_mode="Knative", canary={"traffic_percent": 20})
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    _promote(spec, client, first)
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    assert record.endpoint_url == f"http://latest-chat-predictor.{kube_namespace}.svc.cluster.local"
    # The same canary written without the annotation (as versions before this one did): the
    # stand-in, as ksvc_reconciler.go, tags only the previous revision, and the variant refuses to
    # take the split service address for the candidate's.
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    annotations = dict(live["metadata"]["annotations"])
    annotations.pop("serving.kserve.io/enable-tag-routing")
    old = {
        "apiVersion": live["apiVersion"],
        "kind": "InferenceService",
        "metadata": {"name": "old", "namespace": kube_namespace, "annotations": annotations},
        "spec": live["spec"],
    }
    stable_pred = {k: v for k, v in live["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
    stable_pred = {**stable_pred, "model": {**stable_pred["model"], "storageUri": "s3://models/a"}}
    client.apply({**old, "spec": {"predictor": stable_pred}})
    first_ready = reconciler.wait_for_ready_write("old", timeout=20)
    client.apply(old)
    after = reconciler.wait_for_ready_write("old", generation=2, timeout=20, since=first_ready.done_at)
    assert after.generation >= 2
    status = client.get(INFERENCE_SERVICES, "old", kube_namespace)["status"]
    traffic = status["components"]["predictor"]["traffic"]
    assert [(t.get("tag"), t["percent"]) for t in traffic] == [(None, 20), ("prev", 80)], traffic
    with pytest.raises(PermanentError, match="enable-tag-routing"):
        variant_for(spec).canary_url(client.get(INFERENCE_SERVICES, "old", kube_namespace), "rb", Plan())


def test_validation_calls_the_services_kserve_creates(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    _promote(spec, client, first)
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    target = KServePlatform(spec, client).validation_target(record)
    # <isvc>-<canary>-predictor and <isvc>-predictor (PredictorServiceName) in the namespace, never
    # the ingress hosts KServe writes into the status (GenerateDomainName), which are only confirmation.
    assert target.endpoint_url == f"http://chat-rb-predictor.{kube_namespace}.svc.cluster.local"
    assert target.stable_url == f"http://chat-predictor.{kube_namespace}.svc.cluster.local"
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert live["status"]["url"] == record.service_url == f"http://chat-{kube_namespace}.example.com"

    # A cluster domain that is not the cluster's is refused, naming the field and the right value.
    other = make_spec(kube_namespace, name="other", cluster_domain="corp.internal")
    with pytest.raises(SpecError, match="cluster_domain") as info:
        _deploy(other, client, "s3://models/x", "rx", "run-9")
    assert "cluster.local" in str(info.value)


def test_a_service_rolled_out_by_the_previous_version_is_migrated_on_first_contact(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    _promote(spec, client, first)
    state = client.get(LEASES, "chat-rollout", kube_namespace)
    recorded = {k: v for k, v in state["metadata"]["annotations"].items() if k in records.RECORD_KEYS}
    client.delete(LEASES, "chat-rollout", kube_namespace)
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # What the previous version left: the records (record manager) and a held lease (the run's
    # lease manager) as annotations on the InferenceService, and the revision as its label.
    old = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    records_writer = kube(kube_cluster)
    records_writer.field_manager = records.RECORD_MANAGER
    skeleton = {"apiVersion": old["apiVersion"], "kind": "InferenceService"}
    records_writer.apply(
        {**skeleton, "metadata": {"name": "chat", "namespace": kube_namespace, "annotations": recorded}}
    )
    lease_writer = kube(kube_cluster)
    lease_writer.field_manager = lease_manager("run-old")
    lease_writer.apply(
        {
            **skeleton,
            "metadata": {
                "name": "chat",
                "namespace": kube_namespace,
                "annotations": {LEGACY_LEASE_HOLDER: "run-old", LEGACY_LEASE_EXPIRES: soon},
            },
        }
    )
    # First contact: `llm-rollout status` moves them and takes them off the InferenceService.
    st = KServePlatform(spec, client).status()
    assert st.stable is not None and st.stable.member == first.member
    assert st.lease is not None and st.lease["holder"] == "run-old"
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    left = set(live["metadata"].get("annotations") or {}) & {*records.RECORD_KEYS, LEGACY_LEASE_HOLDER}
    assert left == set()
    state = client.get(LEASES, "chat-rollout", kube_namespace)
    assert {k: state["metadata"]["annotations"][k] for k in recorded} == recorded
    # The old run still holds the lease (it can release it), so a new run waits for it.
    with pytest.raises(LeaseHeld, match="run-old"):
        _deploy(spec, client, "s3://models/b", "rb", "run-2")


def test_promoting_a_canary_does_not_trigger_a_redeployment_of_the_canary_pods(
    kube_cluster, kube_namespace, reconciler
):
    """canary_controller_test.go "When promoting a canary" / "Should not trigger a redeployment of the
    canary pods", on the stand-in: upstream's objects (makeCanaryISVC, makeCanary), promoted the way
    the upstream test promotes (predictor.name and the model set to the canary's, the canary removed)."""
    client = kube(kube_cluster)

    def model(uri, **extra):
        return {
            **extra,
            "modelFormat": {"name": "tensorflow"},
            "storageUri": uri,
            "runtimeVersion": "0.14.0",
        }

    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "canary-promote-test",
            "namespace": kube_namespace,
            "annotations": {"serving.kserve.io/deploymentMode": "Standard"},
        },
        "spec": {
            "predictor": {"minReplicas": 4, "model": model("s3://test/model-v1")},
            # the released CRD requires canary[].predictor.model.name (see builders._canary_predictor)
            "canary": [
                {"trafficPercent": 25, "predictor": {"name": "v2", "model": model("s3://test/model-v2", name="")}}
            ],
        },
    }
    client.apply(upstream_test_runtime("tf-canary-promote", kube_namespace))  # as upstream's test does
    first = client.apply(isvc)
    reconciler.wait_for_ready_write("canary-promote-test", first["metadata"]["generation"], timeout=20)
    canary_uid = reconciler.deployments_of("canary-promote-test")["canary-promote-test-v2-predictor"][0]
    promoted = {
        **isvc,
        "spec": {"predictor": {"name": "v2", "minReplicas": 4, "model": model("s3://test/model-v2", name="")}},
    }
    after = client.apply(promoted)
    reconciler.wait_for_ready_write("canary-promote-test", after["metadata"]["generation"], timeout=20)
    deployments = reconciler.deployments_of("canary-promote-test")
    # The canary's Deployment, now the stable one, keeps its pod template; the old stable's is gone.
    assert list(deployments) == ["canary-promote-test-v2-predictor"]
    assert deployments["canary-promote-test-v2-predictor"][0] == canary_uid
    assert reconciler.pod_template_versions("canary-promote-test")["canary-promote-test-v2-predictor"] == 1
