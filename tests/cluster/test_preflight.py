"""Dry-run preflight: the cluster judges every object of a step before the step writes anything."""

from __future__ import annotations

import pytest

from llm_rollout import promotion
from llm_rollout.kube import INFERENCE_SERVICES
from llm_rollout.rollout import PreflightRefused, deploy
from tests.cluster._support import kube, make_spec, rv

pytestmark = pytest.mark.cluster


def test_a_refused_object_leaves_the_cluster_untouched(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    deploy(spec, client, model_uri="s3://models/a", revision="ra", run_id="run-1", timeout_s=30, probe=False)
    promotion.release_lease(client, promotion.service_ref(spec), "run-1")
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
    assert rv(after) == rv(before)  # not even the lease was written
    assert promotion.lease_of(after) is None
    assert [c["predictor"]["name"] for c in after["spec"]["canary"]] == ["manual"]
