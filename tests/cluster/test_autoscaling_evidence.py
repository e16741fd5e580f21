"""``scaling.target: auto`` against the real API server and the stand-in controller: promotion writes the
measured target into the served object, records the evidence, status shows it, a capacity drop is gated."""

from __future__ import annotations

import json

import pytest

from llm_rollout.errors import PermanentError
from llm_rollout.kserve import records
from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.platform import KServePlatform
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.restore import rollback_to_previous
from llm_rollout.kube import INFERENCE_SERVICES, LEASES
from llm_rollout.platform import format_status
from llm_rollout.spec import RolloutSpec
from tests.cluster._support import kube, make_spec, rv, with_runtime

pytestmark = pytest.mark.cluster

AUTO_RATE = {"scaling": {"target": "auto"}, "validation": {"slo": {"capacity_max_request_rate": 40}}}


def _rate(capacity, low, high):
    return {
        "p95_ttft_ms": 42.0,
        "capacity_max_request_rate_req_s": capacity,
        "capacity_max_request_rate_low_req_s": low,
        "capacity_max_request_rate_high_req_s": high,
    }


def _deploy(spec, client, uri, revision, run_id):
    with_runtime(spec, client)
    return deploy(spec, client, model_uri=uri, revision=revision, run_id=run_id, timeout_s=30, probe=False)


def _promote(spec, client, record, metrics):
    return promote(spec, client, record, verdict="pass", summary="ok", run_id=record.run_id, metrics=metrics)


def _isvc(client, spec):
    return client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)


def _keda_target(obj):
    return obj["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]["value"]


def _state(client, spec):
    """The service's rollout Lease: the records are there, not on the InferenceService."""
    return client.get(LEASES, f"{spec.service_name}-rollout", spec.namespace)


def _evidence(client, spec):
    return json.loads(_state(client, spec)["metadata"]["annotations"][records.AUTOSCALING])


def _status_text(client, spec):
    name = RolloutSpec(name=spec.service_name, namespace=spec.namespace, platform="kserve")
    return format_status(KServePlatform(name, client).status())


def test_standard_promotion_writes_the_measured_keda_threshold_and_gates_a_capacity_drop(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10}, **AUTO_RATE)
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    assert _keda_target(_isvc(client, spec)) == "10", "before any evidence 'auto' renders the static default"

    assert _promote(spec, client, first, _rate(15.0, 14.0, 16.5)).action == "promote"
    live = _isvc(client, spec)
    assert _keda_target(live) == "12"  # floor(15 x 0.8)
    # KEDA through the steps' own ScaledObject (builders/keda.py): KServe's class is `external`, and
    # the ScaledObject of the stable predictor carries the measured threshold.
    assert live["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    scaled = reconciler.scaled_objects(kube_namespace)
    assert [t["metadata"]["threshold"] for o in scaled.values() for t in o["spec"]["triggers"]] == ["12"]
    evidence = _evidence(client, spec)
    assert evidence == {
        "metric": "request-rate",
        "target": 12,
        "capacity": 15.0,
        "low": 14.0,
        "high": 16.5,
        "safety_factor": 0.8,
        "source": "capacity_max_request_rate_req_s",
        "run_id": "run-1",
    }
    stable = json.loads(_state(client, spec)["metadata"]["annotations"][records.STABLE])
    assert stable["autoscaling"] == evidence and _keda_target({"spec": stable}) == "12"
    text = _status_text(client, spec)
    assert "autoscaling: request-rate target 12 per replica = capacity 15 [14, 16.5] x safety 0.8 (run run-1)" in text

    # A new revision that carries a third less is refused before anything is written.
    second = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    before = _isvc(client, spec)
    with pytest.raises(PermanentError) as err:
        _promote(spec, client, second, _rate(10.0, 9.0, 11.0))
    assert "fell from 15 (stable, run run-1) to 10" in str(err.value)
    assert "scaling.accept_capacity_drop: true" in str(err.value)
    assert rv(_isvc(client, spec)) == rv(before) and before["spec"]["canary"]

    # Accepted, the target follows the lower capacity.
    accepting = make_spec(
        kube_namespace,
        canary={"traffic_percent": 10},
        validation=AUTO_RATE["validation"],
        scaling={"target": "auto", "accept_capacity_drop": True},
    )
    assert _promote(accepting, client, second, _rate(10.0, 9.0, 11.0)).action == "promote"
    live = _isvc(client, spec)
    assert "canary" not in live["spec"] and live["spec"]["predictor"]["name"] == second.member
    assert _keda_target(live) == "8"
    assert (_evidence(client, spec)["capacity"], _evidence(client, spec)["run_id"]) == (10.0, "run-2")
    assert "target 8 per replica = capacity 10 [9, 11]" in _status_text(client, spec)

    # `llm-rollout rollback` puts the previous revision back with its own target and evidence.
    rollback_to_previous(spec, client, run_id="manual", timeout_s=30)
    live = _isvc(client, spec)
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/a"
    assert _keda_target(live) == "12" and _evidence(client, spec)["capacity"] == 15.0
    assert "target 12 per replica = capacity 15" in _status_text(client, spec)


def test_knative_promotion_writes_the_measured_concurrency_target(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(
        kube_namespace,
        deployment_mode="Knative",
        canary={"traffic_percent": 20},
        scaling={"target": "auto", "metric": "concurrency", "safety_factor": 0.5},
        validation={"slo": {"capacity_max_concurrency": 64}},
    )
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    assert _promote(spec, client, first, {"capacity_max_concurrency": 20.0}).action == "promote"
    second = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    assert _isvc(client, spec)["spec"]["predictor"]["canaryTrafficPercent"] == 20
    metrics = {"capacity_max_concurrency": 24.0, "capacity_max_concurrency_low": 22.0}
    assert _promote(spec, client, second, metrics).action == "promote"
    pred = _isvc(client, spec)["spec"]["predictor"]
    assert "canaryTrafficPercent" not in pred
    assert (pred["scaleMetric"], pred["scaleTarget"]) == ("concurrency", 12)
    assert pred["model"]["storageUri"] == "s3://models/b"
    assert _evidence(client, spec)["target"] == 12
