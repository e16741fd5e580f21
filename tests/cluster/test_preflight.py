"""Dry-run preflight: the cluster judges every object of a step before the step writes anything."""

from __future__ import annotations

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.kserve import lease
from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.preflight import PreflightRefused
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.variants import variant_for
from llm_rollout.kube import INFERENCE_SERVICES, LEASES
from tests.cluster._support import kube, make_spec, with_runtime

pytestmark = pytest.mark.cluster


def _ours(obj):
    """The managedFields entries of everything but the stand-in's status writes."""
    return [m for m in obj["metadata"].get("managedFields") or [] if m.get("subresource") != "status"]


def test_a_refused_object_leaves_the_cluster_untouched(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    with_runtime(spec, client)
    deploy(spec, client, model_uri="s3://models/a", revision="ra", run_id="run-1", timeout_s=30, probe=False)
    lease.release_lease(client, variant_for(spec).ref(), "run-1")
    # Someone else (a person with kubectl, another pipeline) owns spec.canary now.
    other = kube(kube_cluster, field_manager="kubectl-edit")
    theirs = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": spec.service_name, "namespace": kube_namespace},
        "spec": {
            "canary": [
                {
                    "trafficPercent": 5,
                    "predictor": {
                        "name": "manual",
                        "minReplicas": 1,
                        "model": {"name": "", "modelFormat": {"name": "vLLM"}, "storageUri": "s3://models/manual"},
                    },
                }
            ]
        },
    }
    other.apply(theirs)
    before = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)

    with pytest.raises(PreflightRefused) as info:
        deploy(spec, client, model_uri="s3://models/b", revision="rb", run_id="run-2", timeout_s=30, probe=False)
    err = info.value
    text = str(err)
    assert err.step == "deploy-model" and err.kind == "InferenceService"
    assert "server-side dry run (dryRun=All), so nothing was applied" in text
    assert "kubectl-edit" in text and "spec.canary" in text  # who and which field
    assert "force=True" in text  # and what to do about it
    after = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    # not even the lease was written (the stand-in may have written status meanwhile: compare what we own)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] and after["spec"] == before["spec"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert _ours(after) == _ours(before)
    assert lease.lease_of(client.get(LEASES, "chat-rollout", kube_namespace)) is None
    assert [c["predictor"]["name"] for c in after["spec"]["canary"]] == ["manual"]


def test_a_canary_named_like_the_stable_predictor_is_refused_before_any_write(kube_cluster, kube_namespace, reconciler):
    """validateCanarySpecs refuses a canary whose name is the stable's; validatePredictorNameChange a
    promotion that renames without a new model: both are refused before anything is written."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    with_runtime(spec, client)
    first = deploy(spec, client, model_uri="s3://models/a", revision="v1", run_id="run-1", timeout_s=30, probe=False)
    promote(spec, client, first, verdict="pass", summary="ok", run_id="run-1", timeout_s=30)
    second = deploy(spec, client, model_uri="s3://models/b", revision="v2", run_id="run-2", timeout_s=30, probe=False)
    promote(spec, client, second, verdict="pass", summary="ok", run_id="run-2", timeout_s=30)
    before = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert before["spec"]["predictor"]["name"] == "v2"
    with pytest.raises(SpecError, match="conflicts with stable predictor name") as info:
        deploy(spec, client, model_uri="s3://models/c", revision="v2", run_id="run-3", timeout_s=30, probe=False)
    assert info.value.field == "model.revision"
    with pytest.raises(SpecError, match="validatePredictorNameChange"):
        deploy(
            spec,
            client,
            model_uri="s3://models/b",  # the stable's URI with other content (another digest)
            artifact_digest="sha256:other",
            revision="v3",
            run_id="run-3",
            timeout_s=30,
            probe=False,
        )
    after = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert after["spec"] == before["spec"] and _ours(after) == _ours(before)
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
