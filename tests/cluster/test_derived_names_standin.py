"""The stand-in fails an over-long derived name as KServe does; the spec check refuses it first (issue 25 item 6).

``raw_kube_reconciler.go`` ``NewRawKubeReconciler`` -> ``createRawURL`` -> ``domain.go``
``GenerateDomainName`` refuses a host label over 63 characters, and the API server a Deployment whose
``app: isvc.<component>`` label is over 63; the predictor's reconcile stops there, so the canary never
gets a status. :mod:`llm_rollout.spec.derived` refuses such a name when the spec is read.
"""

from __future__ import annotations

import time

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.kserve import builders
from llm_rollout.kube import INFERENCE_SERVICES
from tests.cluster._support import kube, make_spec, with_runtime

pytestmark = pytest.mark.cluster


def _apply_with_canary(client, namespace, name):
    spec = make_spec(namespace, name="chat")
    stable = builders.Member("", "s3://m/a", "ra")
    canary = builders.Member("r0123456789a", "s3://m/b", "rb", traffic_percent=10)  # the longest: 12
    obj = builders.inference_service(spec, stable, canary)
    obj["metadata"]["name"] = name
    with_runtime(spec, client)
    client.apply(obj)


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_an_over_long_app_label_stops_the_predictor_reconcile_and_the_spec_refuses_it_up_front(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    long_name = "a" * 20 + "-" + "b" * 19  # 40: isvc.<name>-r0123456789a-predictor is 68
    with pytest.raises(SpecError, match="label app"):
        make_spec(kube_namespace, name=long_name)
    _apply_with_canary(client, kube_namespace, long_name)
    assert _wait_for(lambda: any(e[0] == long_name for e in reconciler.events))
    (event,) = [e for e in reconciler.events if e[0] == long_name]
    assert event[1] == "InternalError" and "must be no more than 63 characters" in event[2]
    live = client.get(INFERENCE_SERVICES, long_name, kube_namespace)
    assert not (live.get("status") or {}).get("canaryStatuses")

    fits = "c" * 19  # what the spec check lets through in this 20-character namespace is reconciled
    make_spec(kube_namespace, name=fits)
    _apply_with_canary(client, kube_namespace, fits)
    assert _wait_for(
        lambda: (client.get(INFERENCE_SERVICES, fits, kube_namespace).get("status") or {}).get("canaryStatuses")
    )
    assert not [e for e in reconciler.events if e[0] == fits]
