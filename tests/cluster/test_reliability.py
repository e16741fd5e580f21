"""Fault scenarios of a whole kserve rollout: production ends whole, and reruns converge.

The pipeline's kserve steps (:mod:`llm_rollout.steps`: register-runtime, deploy-model,
validate-deployment, promote-model or rollback-model, and finalize-rollout, the exit handler) run
against the real test API server with the KServe stand-in publishing the real vLLM fixture's URL
as every revision's address, so validation measures a real server. Each scenario starts from a
promoted stable revision (model ``a``) and rolls out model ``b``; whatever the fault, the end state
on the server is either "old stable serving" or "new stable serving" (:func:`end_state`): never a
canary left behind, a lease left held, or a record that disagrees with the spec.

* the run SIGKILLed at each step boundary (a preempted pod: no handler runs), then the exit
  handler, then the same inputs run again as a new run;
* the same, but the killed run retried under its own run id with no exit handler in between;
* the API server crashing while deploy-model waits, and down when promote-model starts;
* the vLLM server behind the new revision killed mid-validation: a non-pass verdict and a rollback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from kubernetes.config import kube_config

from llm_rollout import steps
from llm_rollout.errors import PermanentError
from llm_rollout.kserve import lease, records
from llm_rollout.kserve.addresses import ADDRESS_MAP_ENV
from llm_rollout.kube import INFERENCE_SERVICES, LEASES, KubeClient, condition
from llm_rollout.spec import deep_merge
from tests.fixtures.serving import start_vllm

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.serving,
    pytest.mark.fault,
    pytest.mark.timeout(900),
    pytest.mark.parallel,
]

OLD_URI, NEW_URI = "s3://models/a", "s3://models/b"
BOUNDARIES = ("register", "deploy", "validate", "promote")

TINY_VALIDATION = {
    # The stand-in points the stable and the new revision at one vLLM server: comparing a server
    # with itself says nothing (tests/e2e/test_local_pipeline.py tests the comparison), nor does
    # scoring one server's texts against its own (tests/serving/test_quality.py tests that).
    "comparison": {"enabled": False},
    "quality": {"enabled": False},
    "readiness_timeout_s": 60,
    "load": {
        "concurrency": [2],
        "num_prompts": 8,
        "output_tokens": 8,
        "input_words": 8,
        "warmup_requests": 1,
        "max_duration_s": 30,
    },
    "slo": {
        "checks": ["error_rate == 0", "p95_ttft_ms <= 5000"],
        "judge_concurrency": [2],
        "min_successful_requests": 4,
    },
}

# The run as KFP runs it, one step after the other; the test SIGKILLs it at a boundary.
DRIVER = r"""
import sys
from llm_rollout import steps

spec, model_uri, run_id, stop_after = sys.argv[1:5]


def boundary(name):
    print("BOUNDARY", name, flush=True)
    if name == stop_after:
        sys.stdin.read()  # the test kills us here


steps.register_runtime_step(spec)
boundary("register")
record = steps.deploy_step(spec, model_uri=model_uri, run_id=run_id)
boundary("deploy")
outcome = steps.validate_step(spec, record)
boundary("validate")
if outcome.verdict in ("pass", steps.ALREADY_PROMOTED):
    steps.promote_step(spec, record, verdict=outcome.verdict, summary=outcome.summary, run_id=run_id)
else:
    steps.rollback_step(spec, record, reason=outcome.summary, run_id=run_id)
boundary("promote")
steps.finalize_step(spec, run_id=run_id, state="SUCCEEDED")
print("VERDICT", outcome.verdict, flush=True)
"""


def _spec_doc(namespace: str, **overrides: Any) -> dict[str, Any]:
    doc = {
        "name": "chat",
        "namespace": namespace,
        "platform": "kserve",
        # Knative mode: the new revision answers at its own tag route (latest-chat-predictor, Knative's
        # name for the tag KServe asks for with serving.kserve.io/enable-tag-routing), the stable one at
        # prev-chat-predictor; the address map sends them to the real vLLM servers.
        "deployment_mode": "Knative",
        "model": {"name": "tiny"},
        "canary": {"traffic_percent": 10},
        "validation": TINY_VALIDATION,
    }
    return deep_merge(doc, overrides)


def end_state(client: KubeClient, namespace: str, *, timeout_s: float = 20) -> str:
    """``"old"`` or ``"new"``: which model the stable serves; fails on any half state.

    Whole means: no canary (no ``spec.canary`` entry; ``canaryTrafficPercent`` absent, or 0 after a
    Knative rollback: all traffic on the previous rolled-out revision), the promotion record names
    the model in the spec, no run holds the lease, and the stand-in reports it Ready for the
    current generation.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        live = client.get(INFERENCE_SERVICES, "chat", namespace)
        state = client.get_or_none(LEASES, "chat-rollout", namespace)  # lease and records
        ann = (state or {}).get("metadata", {}).get("annotations") or {}
        ready = condition(live, "Ready") or {}
        observed = (live.get("status") or {}).get("observedGeneration") or 0
        settled = ready.get("status") == "True" and observed >= live["metadata"]["generation"]
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    predictor = live["spec"]["predictor"]
    assert not live["spec"].get("canary"), f"half state: a canary is left: {live['spec']['canary']}"
    assert predictor.get("canaryTrafficPercent") in (None, 0), f"half state: {predictor['canaryTrafficPercent']}%"
    held = lease.lease_of(state)
    assert held is None, f"half state: the lease is still held by {held and held['holder']}"
    uri = predictor["model"]["storageUri"]
    assert ann.get(records.PROMOTED_MODEL_URI) == uri, "the promotion record disagrees with the spec"
    assert settled, f"not Ready for generation {live['metadata']['generation']}: {live.get('status')}"
    assert uri in (OLD_URI, NEW_URI), uri
    return "old" if uri == OLD_URI else "new"


def stable_predictor(client: KubeClient, namespace: str) -> dict[str, Any]:
    """The predictor as a failed run must leave it (a Knative rollback's 0% marker aside)."""
    pred = dict(client.get(INFERENCE_SERVICES, "chat", namespace)["spec"]["predictor"])
    pred.pop("canaryTrafficPercent", None)
    return pred


@pytest.fixture
def kserve_run(kube_cluster, kube_namespace, reconciler, vllm_server, monkeypatch):
    """A stable revision (model a) promoted, every address pointing at the real vLLM; the steps' env."""
    # The predictors' Services KServe creates, mapped to the real server as a user outside the cluster would.
    monkeypatch.setenv(ADDRESS_MAP_ENV, f"*.{kube_namespace}.svc.cluster.local={vllm_server.base_url}")
    kubeconfig = str(kube_cluster.kubeconfig_path)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    # The kubernetes client reads $KUBECONFIG at import; a step's pod has it set before that.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)
    spec = json.dumps(_spec_doc(kube_namespace))
    steps.register_runtime_step(spec)
    first = steps.deploy_step(spec, model_uri=OLD_URI, run_id="run-0")
    steps.promote_step(spec, first, verdict="pass", summary="initial", run_id="run-0")
    client = KubeClient(kube_cluster.api_client())
    assert end_state(client, kube_namespace) == "old"
    return {"spec": spec, "client": client, "stable": stable_predictor(client, kube_namespace)}


def run_driver(spec: str, run_id: str, stop_after: str = "", timeout_s: float = 240) -> tuple[int, list[str]]:
    """Runs the step sequence in a subprocess; SIGKILLs it at ``stop_after`` (or lets it finish)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, spec, NEW_URI, run_id, stop_after],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
    )
    guard = threading.Timer(timeout_s, proc.kill)
    guard.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if stop_after and line.strip() == f"BOUNDARY {stop_after}":
                proc.send_signal(signal.SIGKILL)  # preempted at the boundary: nothing runs after
                break
        code = proc.wait(timeout=30)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    return code, lines


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_run_killed_at_a_step_boundary_then_exit_handler_then_rerun(kserve_run, kube_namespace, boundary):
    spec, client = kserve_run["spec"], kserve_run["client"]
    code, lines = run_driver(spec, "run-1", stop_after=boundary)
    assert code == -signal.SIGKILL, "\n".join(lines[-30:])
    assert lines[-1] == f"BOUNDARY {boundary}", lines

    # The exit handler runs (KFP runs it even when a task's pod died).
    steps.finalize_step(spec, run_id="run-1", state="FAILED", error=f"killed after {boundary}")
    state = end_state(client, kube_namespace)
    assert state == ("new" if boundary == "promote" else "old")
    if state == "old":
        # The failed run never modified the stable predictor.
        assert stable_predictor(client, kube_namespace) == kserve_run["stable"]

    # The same inputs again, as a new run: it converges on the new stable.
    before = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    code, lines = run_driver(spec, "run-2")
    assert code == 0, "\n".join(lines[-30:])
    verdict = lines[-1]
    assert end_state(client, kube_namespace) == "new"
    if boundary == "promote":
        # Already promoted: the rerun changed nothing at all.
        assert verdict == f"VERDICT {steps.ALREADY_PROMOTED}"
        after = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    else:
        assert verdict == "VERDICT pass"

    # And once more: nothing left to do.
    settled = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    code, lines = run_driver(spec, "run-3")
    assert code == 0 and lines[-1] == f"VERDICT {steps.ALREADY_PROMOTED}", lines[-20:]
    again = client.get(INFERENCE_SERVICES, "chat", kube_namespace)
    assert again["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]


def test_killed_run_retried_under_its_own_run_id_resumes(kserve_run, kube_namespace):
    spec, client = kserve_run["spec"], kserve_run["client"]
    code, _ = run_driver(spec, "run-1", stop_after="deploy")
    assert code == -signal.SIGKILL
    # No exit handler: the step is retried in the same run (KFP retry policy); its own lease lets it in.
    code, lines = run_driver(spec, "run-1")
    assert code == 0 and lines[-1] == "VERDICT pass", "\n".join(lines[-30:])
    assert end_state(client, kube_namespace) == "new"


def test_api_server_crash_mid_rollout_and_down_at_promotion(kserve_run, kube_cluster, kube_namespace, reconciler):
    spec, client = kserve_run["spec"], kserve_run["client"]
    reconciler.set_default(ready_after_ms=4000)  # deploy-model is waiting when the server goes
    result: dict[str, Any] = {}

    def deploy() -> None:
        try:
            result["record"] = steps.deploy_step(spec, model_uri=NEW_URI, run_id="run-1")
        except BaseException as err:  # reported below
            result["error"] = err

    worker = threading.Thread(target=deploy)
    worker.start()
    deadline = time.monotonic() + 60
    while "canaryTrafficPercent" not in client.get(INFERENCE_SERVICES, "chat", kube_namespace)["spec"]["predictor"]:
        assert time.monotonic() < deadline and worker.is_alive(), result
        time.sleep(0.05)
    kube_cluster.restart_apiserver(kill=True)  # a crash; etcd keeps the data
    worker.join(timeout=180)
    assert "error" not in result, result.get("error")
    reconciler.set_default(ready_after_ms=0)
    outcome = steps.validate_step(spec, result["record"])
    assert outcome.verdict == "pass", outcome.summary

    # The server is down when promote-model starts; it is back within the retry deadline.
    kube_cluster.stop_apiserver()
    restarter = threading.Timer(3.0, kube_cluster.start_apiserver)
    restarter.start()
    try:
        steps.promote_step(spec, result["record"], verdict="pass", summary=outcome.summary, run_id="run-1")
    finally:
        restarter.join()
    steps.finalize_step(spec, run_id="run-1", state="SUCCEEDED")
    assert end_state(client, kube_namespace) == "new"


def test_vllm_killed_mid_validation_fails_the_gate_and_rolls_back(
    kserve_run, kube_namespace, reconciler, tiny_model, vllm_server, monkeypatch
):
    client = kserve_run["client"]
    slow = json.dumps(
        _spec_doc(
            kube_namespace,
            validation={"load": {"concurrency": [4], "num_prompts": 2000, "output_tokens": 32, "max_duration_s": 60}},
        )
    )
    with start_vllm(tiny_model, "tiny") as victim:
        # the new revision's own tag route (latest-chat-predictor) on its own server
        where = f"{kube_namespace}.svc.cluster.local"
        monkeypatch.setenv(
            ADDRESS_MAP_ENV, f"latest-chat-predictor.{where}={victim.base_url},*.{where}={vllm_server.base_url}"
        )
        record = steps.deploy_step(slow, model_uri=NEW_URI, run_id="run-1")
        assert record and json.loads(record)["endpoint_url"] == victim.base_url
        killer = threading.Timer(6.0, victim.kill)  # past readiness and the probes, into the load
        killer.start()
        try:
            outcome = steps.validate_step(slow, record)
        finally:
            killer.join()
    assert outcome.verdict != "pass"
    assert "stopped answering" in outcome.summary or "error_rate" in outcome.summary, outcome.summary
    with pytest.raises(PermanentError):  # the gate: a failed verdict is never promoted
        steps.promote_step(slow, record, verdict=outcome.verdict, summary=outcome.summary, run_id="run-1")
    steps.rollback_step(slow, record, reason=outcome.summary, run_id="run-1")
    steps.finalize_step(slow, run_id="run-1", state="FAILED")
    assert end_state(client, kube_namespace) == "old"
    assert stable_predictor(client, kube_namespace) == kserve_run["stable"]
