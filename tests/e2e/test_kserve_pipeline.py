"""End to end on the kserve platform: the real pipeline under kfp.local against the real test API server.

Every step runs as kfp.local runs it (a subprocess per step, ``$KUBECONFIG`` pointing at the test
cluster through KServe's webhook mirror at the wire, :class:`tests.fixtures.admission.AdmissionProxy`:
each write of a KServe object is refused where KServe's webhooks would refuse it). The steps call
each revision at the Service KServe creates for its predictor
(``<isvc>-predictor``, ``<isvc>-<canary>-predictor`` in the namespace); the KServe controller stand-in
writes the status URLs upstream's controller writes (ingress hosts, only confirmation);
``$LLM_ROLLOUT_ADDRESS_MAP`` points each Service at the real vLLM server playing its pods, as a
``kubectl port-forward`` per Service would, so validation measures real completions and latencies on
the server of each revision.

The retrain-and-redeploy loop with the default comparison settings: run 1 promotes the tiny model
(served by server A); run 2 rolls out a retrained copy (weights moved by 5 % noise, served by
server B) as a canary, compares it with the stable revision on A and promotes it; a rerun of the same
model URI is "already promoted". Then two bad models, each a canary against the retrained stable on
B and each rolled back with the stable InferenceService's spec exactly as run 2 left it: a scrambled
copy (server C: garbage, caught by the quality question; it is also held to an SLO nothing meets) and a
deeper copy (server D: the same answers, about twice as slow, caught by the comparison with the
stable). Servers A, B and C are the session's (``vllm_server``, ``retrained_server``,
``scrambled_server``: started once for the serving and e2e tiers); D starts while run 4 runs.
"""

from __future__ import annotations

import contextlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kfp_llm_rollout.pipelines.run_local import run_pipeline
from llm_rollout.kserve.builders import ANNOTATION_PREFIX
from llm_rollout.kube import INFERENCE_SERVICES, LEASES, KubeClient
from llm_rollout.spec import parse_spec
from tests.fixtures.admission import AdmissionProxy
from tests.fixtures.cluster import RealCluster
from tests.fixtures.serving import finished_requests, start_vllm, tiny_quality

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.serving, pytest.mark.timeout(900)]

NAME = "lean-rag-inference"


def _spec(namespace: str, probes, checks: list[str]) -> dict:
    return {
        "name": NAME,
        "namespace": namespace,
        "platform": "kserve",
        "model": {"name": "tiny"},  # what both vLLM servers serve
        "runtime": {"max_model_len": 256},
        "validation": {
            "readiness_timeout_s": 60,
            "suite_file": str(probes),
            "load": {
                "concurrency": [2],
                "num_prompts": 12,
                "input_words": 16,
                "output_tokens": 8,
                "max_duration_s": 60,
            },
            "slo": {"checks": checks, "judge_concurrency": [2], "min_successful_requests": 5},
            "recovery": {"checks": []},
            "quality": tiny_quality(),
            # validation.comparison: the defaults (the comparison with the stable revision is on).
        },
    }


def _address_map(namespace: str, pairs: list[tuple[str, str]]) -> str:
    """``$LLM_ROLLOUT_ADDRESS_MAP`` sending predictor Service ``<NAME>-<predictor>`` of ``namespace`` to a URL."""
    return ",".join(f"{NAME}-{svc}.{namespace}.svc.cluster.local={url}" for svc, url in pairs)


@pytest.fixture
def kubeconfig(kube_cluster, tmp_path, monkeypatch):
    """``$KUBECONFIG`` for the steps: through KServe's webhook mirror at the wire (the test API server
    runs no webhooks; :class:`tests.fixtures.admission.AdmissionProxy`), so every InferenceService,
    ServingRuntime and llm-d write of every step is refused as a cluster would refuse it. A real
    cluster (``$LLM_ROLLOUT_TEST_KUBECONFIG``) runs KServe's own webhooks: its kubeconfig as it is."""
    if isinstance(kube_cluster, RealCluster):
        path = kube_cluster.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(path))
        yield path
        return
    with AdmissionProxy(kube_cluster) as admission:
        path = kube_cluster.write_kubeconfig(tmp_path / "kubeconfig", via=admission.proxy)
        monkeypatch.setenv("KUBECONFIG", str(path))
        yield path
    assert admission.admitted, "no KServe write went through the admission proxy"
    assert not admission.denied, admission.denied


def test_retrain_is_compared_with_the_stable_and_promoted_a_rerun_is_a_no_op_bad_and_slow_models_rolled_back(
    kubeconfig,
    kube_namespace,
    reconciler,
    vllm_server,
    retrained_server,
    scrambled_server,
    tiny_model,
    deep_model,
    tmp_path,
    monkeypatch,
):
    # Servers A, B and C are the session's (tests/fixtures/serving.py: the tiny model and its two
    # copies, each served as "tiny"); earlier tests sent them requests, so counts are differences.
    a, b = vllm_server.base_url, retrained_server.base_url
    b_before = finished_requests(b)
    client = KubeClient.from_kubeconfig(str(kubeconfig))
    probes = tiny_model / "probes.json"

    # Run 1: the first rollout's predictor is unnamed: Service <isvc>-predictor (kserve
    # constants.PredictorServiceName), played by server A. Any named predictor (a canary,
    # <isvc>-<canary>-predictor) is server B's.
    monkeypatch.setenv("LLM_ROLLOUT_ADDRESS_MAP", _address_map(kube_namespace, [("predictor", a), ("*-predictor", b)]))
    doc = _spec(kube_namespace, probes, ["p99_e2el_ms <= 30000", "error_rate == 0"])
    # Autoscaling from evidence: the promoted revision's KEDA threshold is the measured capacity
    # (requests/s per replica at the highest concurrency meeting the SLO) times the safety factor.
    doc["scaling"] = {"target": "auto", "expected_peak_rps": 1}
    doc["validation"]["slo"].update({"capacity_max_concurrency": 2, "capacity_repeats": 1})
    tiny = parse_spec(doc)
    first = run_pipeline("llm-deploy", "s3://models/tiny-llama/v1", tiny, out_dir=tmp_path / "run-1", quiet=True)
    assert first.outcome == "promoted", json.dumps(first.steps, indent=1)
    assert first.verdict == "pass"
    assert first.step("deploy-model")["endpoint_url"] == a
    assert not first.step("validate-deployment")["stable"], "a first rollout has no stable revision to compare with"
    isvc = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    # The records are on the service's rollout Lease, never on the InferenceService (whose metadata
    # KServe copies into the pod template).
    state = client.get(LEASES, f"{NAME}-rollout", kube_namespace)
    evidence = json.loads(state["metadata"]["annotations"]["llm-rollout.io/autoscaling"])
    assert evidence["metric"] == "request-rate" and evidence["run_id"]
    assert evidence["target"] == max(1, int(evidence["capacity"] * evidence["safety_factor"]))
    keda = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]["value"]
    assert keda == str(evidence["target"]), "the measured target is on the object, not the static default"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/tiny-llama/v1"
    assert not isvc["spec"].get("canary")
    annotations = state["metadata"]["annotations"]
    assert any(k.startswith(ANNOTATION_PREFIX) and "s3://models/tiny-llama/v1" in v for k, v in annotations.items())
    assert not any(k.startswith(ANNOTATION_PREFIX) for k in isvc["metadata"]["annotations"])
    assert finished_requests(b) == b_before, "server B played no revision in run 1"

    # Run 2: the retrained model, a canary on server B, compared with the stable revision on A.
    a_before, b_before = finished_requests(a), finished_requests(b)
    good = parse_spec(_spec(kube_namespace, probes, ["p99_e2el_ms <= 30000", "error_rate == 0"]))
    retrain_uri = "s3://models/tiny-llama/v2-retrained"
    second = run_pipeline("llm-deploy", retrain_uri, good, out_dir=tmp_path / "run-2", quiet=True)
    log = (tmp_path / "run-2" / "run.log").read_text()
    # Each look's intervals: what to read when the comparison could not decide (a CPU hog beside
    # the test widens them; nothing here loosens the default settings).
    looks = re.findall(r"validate: comparison: look \d+ after \d+ blocks: .*", log)
    assert second.outcome == "promoted", "\n".join([*looks, json.dumps(second.steps, indent=1)])
    assert second.verdict == "pass"
    deploy = second.step("deploy-model")
    assert deploy["canary"] is True and deploy["endpoint_url"] == b, deploy
    validate = second.step("validate-deployment")
    assert validate["stable"] == a, validate
    results = json.loads(Path(validate["results"]).read_text())
    assert results["endpoint"]["url"] == b
    comparison = results["comparison"]
    assert comparison["stable_url"] == a and comparison["decision"] == "pass", json.dumps(comparison, indent=1)
    assert {c["metric"] for c in comparison["speed"]} == {"median_ttft_ms", "mean_tpot_ms", "output_throughput_tok_s"}
    assert all(c["decision"] == "pass" for c in comparison["speed"]), comparison["speed"]
    q = comparison["quality"]
    assert q["candidate_passed"] >= q["stable_passed"], q
    assert looks and "undecided" not in looks[-1], looks
    # Both servers really were measured (vLLM's own counters, not our report).
    assert finished_requests(b) - b_before >= comparison["blocks"] * 2 * good.validation.comparison.round_requests
    assert finished_requests(a) - a_before >= comparison["blocks"] * 2 * good.validation.comparison.round_requests
    promoted = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    assert promoted["spec"]["predictor"]["model"]["storageUri"] == retrain_uri
    assert not promoted["spec"].get("canary"), "the promotion leaves no canary"
    promoted_spec = promoted["spec"]

    # Run 3: a rerun of the promoted model changes nothing.
    rerun = run_pipeline("llm-deploy", retrain_uri, good, out_dir=tmp_path / "run-3", quiet=True)
    assert rerun.outcome == "already promoted", json.dumps(rerun.steps, indent=1)
    assert client.get(INFERENCE_SERVICES, NAME, kube_namespace)["spec"] == promoted_spec

    # From here the promoted predictor (named after run 2's member) is server B's; each new canary
    # is played by the server of the model under test. Every bad model is rolled back and leaves
    # the stable spec untouched.
    member = deploy["member"]

    def canary_on(url: str) -> None:
        monkeypatch.setenv(
            "LLM_ROLLOUT_ADDRESS_MAP",
            _address_map(kube_namespace, [(f"{member}-predictor", b), ("*-predictor", url)]),
        )

    def rolled_back(run, canary_url: str) -> dict:
        assert run.outcome == "rolled back", json.dumps(run.steps, indent=1)
        assert run.verdict == "fail"
        assert run.step("deploy-model")["canary"] is True
        assert run.step("deploy-model")["endpoint_url"] == canary_url
        assert run.step("validate-deployment")["stable"] == b
        after = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
        assert after["spec"] == promoted_spec, "the stable revision is exactly as run 2 left it: no canary"
        return run.step("validate-deployment")

    # Run 4: a scrambled copy (server C) models the reference texts worse than guessing (the quality
    # question; it answers the suite wrongly too); it is also held to an SLO
    # nothing meets, and the summary names both failed questions. Server D (run 5's deep copy)
    # starts meanwhile: this run's failures do not depend on timing.
    doc = _spec(kube_namespace, probes, ["p50_ttft_ms <= 0.001"])
    with contextlib.ExitStack() as servers, ThreadPoolExecutor(1) as pool:
        deep_server = pool.submit(
            servers.enter_context, start_vllm(deep_model, "tiny", log_path=tmp_path / "vllm-deep.log")
        )
        c = scrambled_server.base_url
        canary_on(c)
        scrambled = run_pipeline(
            "llm-deploy", "s3://models/tiny-llama/v3-scrambled", parse_spec(doc), out_dir=tmp_path / "run-4", quiet=True
        )
        validate = rolled_back(scrambled, c)
        head, *reasons = validate["summary"].splitlines()
        # The quality question fails it at the first look (worse than guessing), so the suite's
        # items are not paired with the stable's and the speed comparison never runs.
        assert head.startswith("fail: quality of the reference texts: worse than guessing; slo: missed"), head
        assert any(r.startswith("quality: ") for r in reasons) and any("p50_ttft_ms" in r for r in reasons)

        # Run 5: a deeper copy (server D) answers exactly like the tiny model and meets the
        # CPU-sized SLO; the comparison with the stable on B finds it slower, with the evidence.
        d = deep_server.result()
        canary_on(d.base_url)
        deep = run_pipeline(
            "llm-deploy", "s3://models/tiny-llama/v4-deep", good, out_dir=tmp_path / "run-5", quiet=True
        )
        validate = rolled_back(deep, d.base_url)
    summary = validate["summary"]
    assert summary.startswith("fail: comparison with the stable revision: inferior"), summary
    assert "worse: candidate/stable" in summary and "correctness suite: passed" in summary, summary
    deep_results = json.loads(Path(validate["results"]).read_text())
    assert all(p["passed"] for p in deep_results["correctness"]), "only its speed failed"
    assert deep_results["comparison"]["stable_url"] == b
    assert "fail" in {c["decision"] for c in deep_results["comparison"]["speed"]}, deep_results["comparison"]
    after = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    assert after["spec"]["predictor"]["model"]["storageUri"] == retrain_uri


def test_llmd_stepped_promotion_reruns_the_gate_at_each_traffic_step(
    kubeconfig, kube_namespace, reconciler, vllm_server, tiny_model, tmp_path
):
    """llm-d path: the second model's weight moves 50 -> 100 with the validation re-run at each step."""
    from llm_rollout.kube import LLM_INFERENCE_SERVICES

    reconciler.set_default(url=vllm_server.base_url)
    client = KubeClient.from_kubeconfig(str(kubeconfig))
    doc = _spec(kube_namespace, tiny_model / "probes.json", ["p99_e2el_ms <= 30000", "error_rate == 0"])
    doc["llmd"] = {"enabled": True}
    # The stand-in publishes one server for every member here: the comparison would measure it
    # against itself, which it refuses (inconclusive), and so does the quality question. This test
    # is about the traffic steps.
    doc["validation"]["comparison"] = {"enabled": False}
    doc["validation"]["quality"] = {"enabled": False}
    first = run_pipeline("llm-deploy", "s3://models/tiny/v1", parse_spec(doc), out_dir=tmp_path / "r1", quiet=True)
    assert first.outcome == "promoted", json.dumps(first.steps, indent=1)

    doc["canary"] = {"steps": [50, 100]}
    second = run_pipeline("llm-deploy", "s3://models/tiny/v2", parse_spec(doc), out_dir=tmp_path / "r2", quiet=True)
    assert second.outcome == "promoted", json.dumps(second.steps, indent=1)
    log = (tmp_path / "r2" / "run.log").read_text()
    assert "gate at 50% traffic" in log and "gate at 100% traffic" in log
    members = client.list(LLM_INFERENCE_SERVICES, kube_namespace)["items"]
    serving = [m for m in members if "serving.kserve.io/stop" not in (m["metadata"].get("annotations") or {})]
    assert [m["spec"]["model"]["uri"] for m in serving] == ["s3://models/tiny/v2"], [m["metadata"] for m in members]
