"""A flaky API server: 5xx, 429, reset and cut connections, a restart; the rollout still completes."""

from __future__ import annotations

import threading
import time

import pytest

from llm_rollout.errors import DeadlineExceeded
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kube import INFERENCE_SERVICES, ApiTransientError
from tests.cluster._support import kube, make_spec

pytestmark = [pytest.mark.cluster, pytest.mark.fault]


def _writes(method: str, path: str) -> bool:
    return method == "PATCH"


def test_5xx_on_writes_and_reads_are_retried_and_the_rollout_completes(
    kube_cluster, kube_namespace, reconciler, kube_fault_proxy
):
    client = kube(kube_cluster, via=kube_fault_proxy)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    kube_fault_proxy.fail_next_requests(2, status=503, match=_writes)
    kube_fault_proxy.fail_next_requests(2, status=500)
    register_runtime(spec, client)
    first = deploy(spec, client, model_uri="s3://models/a", revision="ra", timeout_s=60, probe=False)
    kube_fault_proxy.fail_next_requests(3, status=503)
    kube_fault_proxy.fail_next_requests(1, status=504, match=_writes)
    record = deploy(spec, client, model_uri="s3://models/b", revision="rb", timeout_s=60, probe=False)
    stats = kube_fault_proxy.stats
    assert stats.injected_statuses == {503: 5, 500: 2, 504: 1}
    live = kube(kube_cluster).get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert [c["predictor"]["name"] for c in live["spec"]["canary"]] == [record.member]
    assert live["spec"]["predictor"]["labels"]["llm-rollout.io/member"] == first.member


def test_reset_connections_are_retried(kube_cluster, kube_namespace, reconciler, kube_fault_proxy):
    client = kube(kube_cluster, via=kube_fault_proxy)
    spec = make_spec(kube_namespace)
    kube_fault_proxy.reset_next_connections(4)
    register_runtime(spec, client)
    kube_fault_proxy.drop_connections(reset=True)
    kube_fault_proxy.reset_next_connections(3)
    record = deploy(spec, client, model_uri="s3://models/a", revision="ra", timeout_s=60, probe=False)
    assert record.endpoint_url
    assert kube_fault_proxy.stats.connections_reset == 7


def test_429_retry_after_is_honoured(kube_cluster, kube_namespace, kube_fault_proxy):
    client = kube(kube_cluster, via=kube_fault_proxy)
    spec = make_spec(kube_namespace)
    kube_fault_proxy.fail_next_requests(1, status=429, retry_after=1, match=_writes)
    started = time.monotonic()
    register_runtime(spec, client)
    assert time.monotonic() - started >= 1.0
    assert kube_fault_proxy.stats.injected_statuses == {429: 1}


def test_a_server_that_stays_down_ends_in_a_deadline_with_the_last_error(
    kube_cluster, kube_namespace, kube_fault_proxy
):
    client = kube(kube_cluster, via=kube_fault_proxy, retry_deadline_s=2)
    spec = make_spec(kube_namespace)
    kube_fault_proxy.fail_next_requests(10_000, status=503, message="etcd leader changed")
    with pytest.raises(DeadlineExceeded) as info:
        register_runtime(spec, client)
    assert kube_fault_proxy.stats.injected_statuses[503] >= 2, "it retried before the deadline ended it"
    assert "etcd leader changed" in str(info.value) and "503" in str(info.value)
    assert isinstance(info.value.__cause__, ApiTransientError)


def test_api_server_restart_mid_rollout(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    register_runtime(spec, client)
    reconciler.set_default(ready_after_ms=4000)
    result: dict = {}

    def run():
        try:
            result["record"] = deploy(
                spec, client, model_uri="s3://models/a", revision="ra", timeout_s=120, probe=False
            )
        except Exception as err:  # reported below
            result["err"] = err

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while client.get_or_none(INFERENCE_SERVICES, spec.service_name, kube_namespace) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kube_cluster.restart_apiserver(kill=True)  # a crash while the deploy waits; etcd keeps the data
    worker.join(timeout=150)
    assert "err" not in result, result.get("err")
    assert result["record"].endpoint_url
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert live["status"]["observedGeneration"] == live["metadata"]["generation"] == 1
