"""deploy-model's model-store preflight against the real API server (issue 27 item 4).

The test API server serves custom resources only: core ServiceAccounts and Secrets answer 404, and
they cannot be added the way the Lease was (tests/fixtures/crds/: a CRD's group must contain a
dot, and core's group is ""). So this tier shows the preflight's reads going to the real server and
a missing account stopping the step before anything is written; what the live objects must hold is
judged by ``model_store_problems``, tested on Kubernetes-shaped objects in
tests/unit/test_model_store.py.
"""

from __future__ import annotations

import pytest

from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.preflight import ModelStoreUnreachable
from llm_rollout.kube import INFERENCE_SERVICES, LEASES
from tests.cluster._support import kube, make_spec

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("runtime", [{}, {"model_store": {}}], ids=["spec-silent", "kfp-store"])
def test_a_missing_serving_account_stops_deploy_before_any_write(kube_cluster, kube_namespace, reconciler, runtime):
    # The spec silent on runtime.model_store is a run from the UI with default parameters: the
    # optimized model lands in KFP's pipeline root, so KFP's default store applies.
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, runtime=runtime)
    with pytest.raises(ModelStoreUnreachable) as info:
        deploy(spec, client, model_uri="minio://mlpipeline/v2/m", revision="ra", run_id="run-1", timeout_s=30)
    text = str(info.value)
    assert "ServiceAccount 'kfp-model-reader' does not exist" in text and "seaweedfs.kubeflow:9000" in text
    assert "awsAccessKeyID" in text and "kserve-model-store.yaml" in text and "Nothing was applied" in text
    assert client.get_or_none(INFERENCE_SERVICES, spec.service_name, kube_namespace) is None
    assert not client.list(LEASES, kube_namespace).get("items"), "not even the rollout lease was taken"
