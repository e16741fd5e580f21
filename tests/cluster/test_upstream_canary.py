"""Upstream's own canary scenarios, adapted to our steps, against the real API server and the
upstream-faithful stand-in (tests/reconciler.py).

* Standard mode: KServe v0.20 ``test/e2e/predictor/test_canary_raw_deployment.py``
  (test_canary_create, test_canary_promote, test_canary_rollback): a canary is a second
  Deployment ``<isvc>-<name>-predictor`` beside ``<isvc>-predictor``; promotion sets
  ``predictor.name`` to the canary's, keeps the canary's Deployment (its pods) and deletes the old
  one; rollback removes the entry and its Deployment.
* Knative mode: ``test/e2e/predictor/test_canary.py`` (test_canary_rollout): the new model goes into
  the same predictor with ``canaryTrafficPercent``; one Knative Service, two revisions, the latest
  one at the canary share.
"""

from __future__ import annotations

import time

import pytest

from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.rollback import rollback
from llm_rollout.kube import INFERENCE_SERVICES
from tests.cluster._support import kube, make_spec, with_runtime

pytestmark = pytest.mark.cluster


def _deploy(spec, client, uri, rev, run_id):
    with_runtime(spec, client)
    return deploy(spec, client, model_uri=uri, revision=rev, run_id=run_id, timeout_s=30, probe=False)


def _promote(spec, client, record, run_id):
    return promote(spec, client, record, verdict="pass", summary="ok", run_id=run_id, timeout_s=30)


def test_raw_deployment_canary_create_promote_rollback(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _deploy(spec, client, "s3://models/v1", "v1", "run-1")
    _promote(spec, client, first, "run-1")
    assert set(reconciler.deployments_of("chat")) == {"chat-predictor"}

    # test_canary_create: a second Deployment, canary status and condition as the controller writes them
    canary = _deploy(spec, client, "s3://models/v2", "v2", "run-2")
    deployments = reconciler.deployments_of("chat")
    assert set(deployments) == {"chat-predictor", "chat-v2-predictor"}
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert live["status"]["canaryStatuses"] == [{"name": "v2", "ready": True, "trafficPercent": 10}]
    cond = next(c for c in live["status"]["conditions"] if c["type"] == "CanaryPredictorReady")
    assert (cond["status"], cond["reason"]) == ("True", "AllCanariesReady")
    assert canary.endpoint_url == f"http://chat-v2-predictor.{kube_namespace}.svc.cluster.local"

    # test_canary_promote: predictor.name = v2, the canary's Deployment (and pods) stays, the old one goes
    _promote(spec, client, canary, "run-2")
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert live["spec"]["predictor"]["name"] == "v2" and "canary" not in live["spec"]
    assert "canaryStatuses" not in live["status"]
    assert not any(c["type"] == "CanaryPredictorReady" for c in live["status"]["conditions"])
    after = reconciler.deployments_of("chat")
    assert set(after) == {"chat-v2-predictor"}
    assert after["chat-v2-predictor"][0] == deployments["chat-v2-predictor"][0]  # same Deployment, same pods

    # test_canary_rollback: the entry goes, and with it its Deployment
    third = _deploy(spec, client, "s3://models/v3", "v3", "run-3")
    assert set(reconciler.deployments_of("chat")) == {"chat-v2-predictor", "chat-v3-predictor"}
    rolled_at = time.monotonic()
    assert rollback(spec, client, third, reason="verdict fail", run_id="run-3").action == "rollback"
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert live["spec"]["predictor"]["name"] == "v2" and "canary" not in live["spec"]
    reconciler.wait_for_ready_write("chat", since=rolled_at)
    assert set(reconciler.deployments_of("chat")) == {"chat-v2-predictor"}


def test_knative_canary_is_a_revision_split_inside_one_knative_service(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, deployment_mode="Knative", canary={"traffic_percent": 10})
    first = _deploy(spec, client, "s3://models/flowers", "v1", "run-1")
    _promote(spec, client, first, "run-1")

    # test_canary_rollout: the latest revision gets 10 %
    canary = _deploy(spec, client, "s3://models/flowers-2", "v2", "run-2")
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    pred = live["spec"]["predictor"]
    assert "name" not in pred and pred["canaryTrafficPercent"] == 10
    assert pred["model"]["storageUri"] == "s3://models/flowers-2"
    traffic = live["status"]["components"]["predictor"]["traffic"]
    assert [(t["revisionName"], t["percent"], t["latestRevision"]) for t in traffic] == [
        ("chat-predictor-00002", 10, True),
        ("chat-predictor-00001", 90, False),
    ]
    assert reconciler.knative_services_of("chat") == ["chat-predictor"]  # one Knative Service, two revisions
    assert canary.stable is not None and canary.stable.member == first.member

    # promotion: canaryTrafficPercent goes, the new revision takes everything and is rolled out
    _promote(spec, client, canary, "run-2")
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]
    comp = live["status"]["components"]["predictor"]
    assert [(t["revisionName"], t["percent"]) for t in comp["traffic"]] == [("chat-predictor-00002", 100)]
    assert comp["latestRolledoutRevision"] == "chat-predictor-00002"
    assert reconciler.knative_services_of("chat") == ["chat-predictor"]

    # a failing next canary rolls back: all traffic on the last rolled-out revision
    third = _deploy(spec, client, "s3://models/flowers-3", "v3", "run-3")
    rolled_at = time.monotonic()
    assert rollback(spec, client, third, reason="verdict fail", run_id="run-3").action == "rollback"
    reconciler.wait_for_ready_write("chat", since=rolled_at)
    live = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 0
    prev = [t for t in live["status"]["components"]["predictor"]["traffic"] if not t["latestRevision"]]
    assert [(t["revisionName"], t["percent"]) for t in prev] == [("chat-predictor-00002", 100)]
    assert reconciler.knative_services_of("chat") == ["chat-predictor"]
