"""promote-model's live analysis on KServe at run time (issue 29): the library's promote() with
``canary.steps`` carrying an analysis, against the test API server and the KServe stand-in, judged
on a real Prometheus.

A Standard-mode InferenceService gets a canary; each analysed step's weight is applied on the
cluster (the stand-in reconciles it), then the step's analysis reads the real test Prometheus
(:mod:`tests.fixtures.prometheus`), which scrapes one small exporter per side serving vLLM's series
(``vllm:request_success_total`` by ``finished_reason``, the histograms
``vllm:time_to_first_token_seconds``, ``vllm:e2e_request_latency_seconds`` and
``vllm:inter_token_latency_seconds`` with ``_bucket``/``_sum``/``_count``;
:class:`tests.fixtures.prometheus.MetricsTarget`), while the test plays users on both.

Each exporter's series carry the labels a cluster's Prometheus gives a pod's series: ``namespace``
and ``pod`` (the Prometheus Operator's PodMonitor and ServiceMonitor scrape configs relabel
``__meta_kubernetes_namespace`` -> ``namespace`` and ``__meta_kubernetes_pod_name`` -> ``pod``:
prometheus-operator ``pkg/prometheus/promcfg.go`` ``generatePodMonitorConfig`` /
``generateServiceMonitorConfig``). The pod names are written out from the live InferenceService
the way KServe names a Standard predictor's Deployment (``<isvc>-<predictor name>-predictor``,
``<isvc>-predictor`` unnamed: kserve ``pkg/constants/constants.go`` ``PredictorServiceName``) plus
the ReplicaSet and pod hashes a Deployment's pods get - not from the library's own
``live_workloads``, so a wrong selector in the library fails here.

Scenarios: a canary worse by far fails the analysis at the first step and is rolled back on the
cluster (the canary gone, the stable's predictor serving alone, the stable record unchanged, the
reason naming the metric); an equal canary is promoted through every step, and ``llm-rollout
status`` on the service shows each step's analysis lines.
"""

from __future__ import annotations

import json

import pytest

from llm_rollout.kserve import records
from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.platform import KServePlatform
from llm_rollout.kserve.promote import GateFailed, promote
from llm_rollout.kube import INFERENCE_SERVICES, LEASES
from llm_rollout.platform import format_status
from llm_rollout.spec import RolloutSpec
from tests.cluster._support import kube, make_spec, with_runtime
from tests.fixtures.prometheus import ScrapeTarget, metrics_target, prometheus  # noqa: F401
from tests.unit.test_analysis import Users

pytestmark = pytest.mark.cluster

# Two analysed steps before 100 %; intervals of 2 s read in 1 s sub-windows (the test Prometheus
# scrapes every second), so the sign test has its 6 paired units at the third interval. Margin 0.25:
# an equal canary's 1 s sub-windows stay inside it on a busy 2-core host; one 3x slower is far beyond.
ANALYSIS = {"interval_s": 2, "count": 3, "min_requests": 10, "resolution_s": 1, "deadline_s": 15, "margin": 0.25}
STEPS = [{"weight": 25, "analysis": ANALYSIS}, {"weight": 50, "analysis": ANALYSIS}, 100]
POD_HASHES = "-5d4c3b2a1-abcde"
"""``-<ReplicaSet hash>-<pod hash>``: what kube-controller-manager appends to a Deployment's pods."""


def _spec(namespace: str, url: str) -> RolloutSpec:
    return make_spec(
        namespace,
        canary={"traffic_percent": 10, "steps": STEPS},
        validation={"analysis": {"prometheus_url": url}},
    )


def _deploy(spec, client, uri, revision, run_id):
    with_runtime(spec, client)
    return deploy(spec, client, model_uri=uri, revision=revision, run_id=run_id, timeout_s=30, probe=False)


def _promote(spec, client, record):
    return promote(spec, client, record, verdict="pass", summary="every check passed", run_id=record.run_id)


def _isvc(client, spec):
    return client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)


def _stable_record(client, spec) -> dict:
    lease = client.get(LEASES, f"{spec.service_name}-rollout", spec.namespace)
    return json.loads(lease["metadata"]["annotations"][records.STABLE])


def _pod(isvc_name: str, predictor: dict) -> str:
    """A pod of this predictor's Deployment, named as KServe Standard names it (``PredictorServiceName``)."""
    name = predictor.get("name")
    deployment = f"{isvc_name}-{name}-predictor" if name else f"{isvc_name}-predictor"
    return deployment + POD_HASHES


@pytest.fixture
def canary_on_cluster(kube_cluster, kube_namespace, reconciler, prometheus, metrics_target):  # noqa: F811
    """A promoted stable and a deployed canary on the cluster, one exporter per side scraped by a real
    Prometheus with the labels of that side's pods; ``(spec, client, canary record, stable exporter,
    canary exporter)``."""
    client = kube(kube_cluster)
    # The first rollout becomes stable without analysis; then the canary is deployed beside it.
    plain = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _deploy(plain, client, "s3://models/a", "ra", "run-1")
    assert _promote(plain, client, first).action == "promote"
    # The canary is deployed from the rollout's own spec; Prometheus' address is known once it runs
    # (deploy reads nothing of validation.analysis).
    record = _deploy(_spec(kube_namespace, "http://127.0.0.1:9"), client, "s3://models/b", "rb", "run-2")
    # The stable is a first rollout's predictor, unnamed (<isvc>-predictor) though its member is "ra";
    # the canary is named after its member (<isvc>-rb-predictor).
    live = _isvc(client, plain)
    name, stable_predictor, canary_predictor = (
        live["metadata"]["name"],
        live["spec"]["predictor"],
        live["spec"]["canary"][0]["predictor"],
    )
    stable, canary = metrics_target(), metrics_target()
    prom = prometheus(
        [
            ScrapeTarget(stable.address, {"namespace": kube_namespace, "pod": _pod(name, stable_predictor)}),
            ScrapeTarget(canary.address, {"namespace": kube_namespace, "pod": _pod(name, canary_predictor)}),
        ]
    )
    prom.wait_scraped(2)
    return _spec(kube_namespace, prom.url), client, record, stable, canary


def test_a_canary_worse_by_far_fails_the_first_step_and_is_rolled_back_on_the_cluster(canary_on_cluster):
    spec, client, record, stable, canary = canary_on_cluster
    before = _isvc(client, spec)
    stable_before = _stable_record(client, spec)
    assert [c["predictor"]["name"] for c in before["spec"]["canary"]] == [record.member]

    with Users(stable, canary, slow=3.0), pytest.raises(GateFailed) as info:
        _promote(spec, client, record)

    # The first step's analysis failed; nothing went past 25 %.
    assert info.value.percent == 25, str(info.value)
    text = str(info.value)
    assert "'fail'" in text and "mean_e2el_ms: worse" in text and "rolled back" in text, text
    # On the cluster: the canary is gone, the stable predictor serves alone, exactly as before.
    after = _isvc(client, spec)
    assert "canary" not in after["spec"] and after["spec"]["predictor"] == before["spec"]["predictor"]
    # The stable record is unchanged; the rollback's reason names the step and the metric.
    assert _stable_record(client, spec) == stable_before
    lease = client.get(LEASES, f"{spec.service_name}-rollout", spec.namespace)
    reason = json.loads(lease["metadata"]["annotations"][records.LAST_ROLLBACK])["reason"]
    assert reason.startswith("gate at 25% traffic: fail: live analysis fail") and "mean_ttft_ms: worse" in reason, (
        reason
    )


def test_an_equal_canary_is_promoted_through_every_step_and_status_shows_each_analysis(canary_on_cluster):
    spec, client, record, stable, canary = canary_on_cluster
    canary_predictor = _isvc(client, spec)["spec"]["canary"][0]["predictor"]

    with Users(stable, canary):
        result = _promote(spec, client, record)

    assert result.action == "promote", result
    metrics = result.analysis["analysis_metrics"]
    assert metrics["analysis_step1_ok"] == 1.0 and metrics["analysis_step2_ok"] == 1.0, result.analysis
    assert "analysis_step3_ok" not in metrics  # the 100 % step has no analysis
    live = _isvc(client, spec)
    assert "canary" not in live["spec"] and live["spec"]["predictor"]["name"] == canary_predictor["name"]
    assert _stable_record(client, spec)["member"] == record.member

    # `llm-rollout status NAME`: the platform finds the service and prints each step's analysis.
    status = KServePlatform(RolloutSpec(name=spec.service_name, namespace=spec.namespace, platform="kserve"), client)
    text = format_status(status.status())
    assert "live analysis of the canary steps:" in text, text
    for step, weight in ((1, 25), (2, 50)):
        assert f"step {step} ({weight} %): live analysis not worse" in text, text
    assert text.count("interval 3: pass: candidate") == 2 and "mean_e2el_ms" in text, text
