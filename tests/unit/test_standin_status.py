"""Upstream's own status cases, run against the stand-in's status writer (``tests/reconciler.py``).

Ported from KServe v0.20 ``pkg/apis/serving/v1beta1/inference_service_status_test.go``, the cases
about fields the library reads: the predictor's Ready condition, its component URL (set only when
ready) and ``observedGeneration`` (copied from the first Deployment, kserve#6081); in Knative mode
the traffic and the rolled-out revision tracking (``PropagateStatus``). Each case is named after its
upstream test and scenario. The stand-in computes an InferenceService's status through these
functions (:func:`tests.reconciler.propagate_raw_status` over :func:`tests.reconciler.deployment_status`;
:func:`tests.reconciler.propagate_status` over its Knative Service's traffic), so a case that fails
here is a stand-in that lies.
"""

from __future__ import annotations

import pytest

from tests.reconciler import _Deployment, deployment_status, propagate_raw_status, propagate_status, upstream_urls

URL = "http://test-predictor-default.default.example.com"
AVAILABLE = {
    "type": "Available",
    "status": "True",
    "reason": "MinimumReplicasAvailable",
    "message": "Deployment has minimum availability.",
}
UNAVAILABLE = {
    "type": "Available",
    "status": "False",
    "reason": "MinimumReplicasUnavailable",
    "message": "Deployment does not have minimum availability.",
}


def _progressing(status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": "Progressing", "status": status, "reason": reason, "message": message}


# TestPropagateRawStatus: scenario -> (Deployment conditions, PredictorReady expected)
PROPAGATE_RAW_STATUS = {
    "Available true": ([AVAILABLE], True),
    "Available true, Progressing succeeded": (
        [AVAILABLE, _progressing("True", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed.")],
        True,
    ),
    "Available true, Progressing failed": ([AVAILABLE, _progressing("False", "", "ProgressDeadlineExceeded")], False),
    "Available false, Progressing failed": ([UNAVAILABLE, _progressing("False", "", "Some error happened")], False),
    "Available false, Progressing completed": ([UNAVAILABLE, _progressing("True", "NewReplicaSetAvailable")], False),
    "Available false, Progressing ongoing": ([UNAVAILABLE, _progressing("True", "NewReplicaSetCreated")], False),
    "Available true, ReplicaFailure true": (
        [
            AVAILABLE,
            {"type": "ReplicaFailure", "status": "True", "reason": "replica failure", "message": "replica failure"},
        ],
        False,
    ),
}


@pytest.mark.parametrize("scenario", sorted(PROPAGATE_RAW_STATUS))
def test_propagate_raw_status(scenario):
    """TestPropagateRawStatus (each scenario), plus: the component URL is set exactly when ready."""
    conditions, ready = PROPAGATE_RAW_STATUS[scenario]
    deployment = {
        "metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}},
        "status": {"conditions": conditions},
    }
    out = propagate_raw_status([deployment], URL)
    assert (out["condition"]["status"] == "True") is ready
    assert out["url"] == (URL if ready else None)


def test_propagate_raw_status_empty_deployment_list():
    """TestPropagateRawStatus_EmptyDeploymentList: PredictorReady False, observedGeneration untouched."""
    out = propagate_raw_status([], URL)
    assert out["condition"]["status"] == "False" and out["url"] is None and out["observedGeneration"] is None


def test_propagate_raw_status_copies_the_first_deployments_observed_generation():
    """PropagateRawStatus: ``ss.ObservedGeneration = deploymentList[0].Status.ObservedGeneration``
    (kserve#6081), not the InferenceService's generation."""
    deployment = {"status": {"conditions": [AVAILABLE], "observedGeneration": 7}}
    assert propagate_raw_status([deployment], URL)["observedGeneration"] == 7


@pytest.mark.parametrize(
    ("simulated", "ready", "reason"),
    [
        (_Deployment(generation=1, available=True), True, "NewReplicaSetAvailable"),
        # a rolling update with the old pods available stays Ready (kserve#4626)
        (_Deployment(generation=2, available=True, rolling=True), True, "MinimumReplicasAvailable"),
        (_Deployment(generation=1, rolling=True), False, "MinimumReplicasUnavailable"),
        # a new ReplicaSet that never comes up: Progressing=False with its message ends Ready
        (_Deployment(generation=2, available=True, rolling=True, broken=True), False, "ProgressDeadlineExceeded"),
        # pods that were up crash: availability is lost
        (_Deployment(generation=1, available=True, broken=True), False, "MinimumReplicasUnavailable"),
    ],
)
def test_the_standins_deployments_read_as_upstream_reads_them(simulated, ready, reason):
    """The stand-in's simulated Deployments, through PropagateRawStatus, give the Ready it reports."""
    out = propagate_raw_status([deployment_status(simulated)], URL)
    assert (out["condition"]["status"] == "True", out["condition"]["reason"]) == (ready, reason)
    assert out["observedGeneration"] == simulated.generation
    assert simulated.ready is ready


def test_status_urls_are_upstreams():
    """``GenerateDomainName`` with the default template ``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``
    for ``status.url`` and the predictor's component URL; ``createAddress`` for ``status.address``."""
    assert upstream_urls("chat", "team-a", "chat-predictor", "Standard") == {
        "url": "http://chat-team-a.example.com",
        "address": "http://chat-predictor.team-a.svc.cluster.local",
        "component": {"url": "http://chat-predictor-team-a.example.com"},
    }


def _knative_status(latest_ready: str, traffic: list[dict], latest_created: str = "") -> dict:
    return {
        "conditions": [
            {"type": "Foo", "status": "True"},
            {"type": "RoutesReady", "status": "True"},
            {"type": "ConfigurationsReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "latestReadyRevisionName": latest_ready,
        "latestCreatedRevisionName": latest_created,
        "traffic": traffic,
        "address": {},
        "url": URL,
    }


@pytest.mark.parametrize(
    ("name", "service", "component"),
    [
        (
            "Status with Traffic Routing for Latest Revision",
            _knative_status(
                "test-predictor-default-0001",
                [{"revisionName": "test-predictor-default-0001", "percent": 100, "latestRevision": True}],
            ),
            {},
        ),
        (
            "Status with Traffic Routing for Rolledout Revision",
            _knative_status(
                "test-predictor-default-0001",
                [{"revisionName": "test-predictor-default-0001", "percent": 90, "latestRevision": True}],
                latest_created="test-predictor-default-0001",
            ),
            {"latestRolledoutRevision": "test-predictor-default-0001"},
        ),
    ],
)
def test_propagate_status(name, service, component):
    """TestPropagateStatus (each case): PredictorReady follows the Knative Service's Ready, and the
    component's traffic is the Service's (what the tag addresses are read from)."""
    out = propagate_status(component, service)
    assert out["ready"]["status"] == "True", name
    assert out["component"]["traffic"][0] == service["traffic"][0]
    assert out["component"]["url"] == URL


def test_propagate_status_tracks_the_rolled_out_revision_through_a_canary_and_its_rollback():
    """PropagateStatus' rolled-out tracking, which decides which revision ksvc_reconciler.go tags ``prev``."""
    first = propagate_status(
        {}, _knative_status("r1", [{"revisionName": "r1", "percent": 100, "latestRevision": True}])
    )
    assert first["component"]["latestRolledoutRevision"] == "r1"
    canary = [
        {"revisionName": "r2", "percent": 20, "latestRevision": True},
        {"revisionName": "r1", "percent": 80, "latestRevision": False},
    ]
    split = propagate_status(first["component"], _knative_status("r2", canary, latest_created="r2"))
    assert split["component"]["latestRolledoutRevision"] == "r1"  # a canary is not rolled out
    promoted = propagate_status(
        split["component"], _knative_status("r2", [{"revisionName": "r2", "percent": 100, "latestRevision": True}])
    )
    assert (promoted["component"]["latestRolledoutRevision"], promoted["component"]["previousRolledoutRevision"]) == (
        "r2",
        "r1",
    )
    # Split over the same revision after it was rolled out: upstream takes it as a rollback.
    same = [
        {"revisionName": "r2", "percent": 50, "latestRevision": True},
        {"revisionName": "r2", "percent": 50, "latestRevision": False},
    ]
    back = propagate_status(promoted["component"], _knative_status("r2", same, latest_created="r2"))
    assert back["component"]["latestRolledoutRevision"] == "r1"
