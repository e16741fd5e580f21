"""End to end on the kserve platform: the real pipeline under kfp.local against the real test API server.

Every step runs as kfp.local runs it (a subprocess per step, ``$KUBECONFIG`` pointing at the test
cluster). The KServe controller stand-in publishes a real vLLM server (the tiny model) as the
revisions' address, so validation measures real completions and latencies. Run 1 is a first
rollout that passes and becomes stable; run 2 is a new model with an SLO it cannot meet: it is
rolled back and the stable InferenceService's spec is exactly what run 1 left.
"""

from __future__ import annotations

import json

import pytest

from llm_rollout.kserve.builders import ANNOTATION_PREFIX
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient
from llm_rollout.spec import parse_spec
from pipelines.run_local import run_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.serving, pytest.mark.timeout(900)]

NAME = "lean-rag-inference"


def _spec(namespace: str, probes, checks: list[str]) -> dict:
    return {
        "name": NAME,
        "namespace": namespace,
        "platform": "kserve",
        "model": {"name": "tiny"},  # what the stand-in's vLLM serves
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
            # The stand-in serves every revision from one vLLM server; a server compared with itself
            # says nothing (tests/serving/test_comparison.py and the local retrain loop test it).
            "comparison": {"enabled": False},
        },
    }


@pytest.fixture
def kubeconfig(kube_cluster, tmp_path, monkeypatch):
    path = kube_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def test_first_rollout_is_promoted_then_a_failing_model_is_rolled_back(
    kubeconfig, kube_namespace, reconciler, vllm_server, tiny_model, tmp_path, monkeypatch
):
    reconciler.behave(NAME, url=vllm_server.base_url)
    # KServe reports no address for a Standard-mode canary: its in-cluster Service name is derived
    # (<isvc>-<member>-predictor). Outside a cluster, the address map points it at the real vLLM.
    monkeypatch.setenv("LLM_ROLLOUT_ADDRESS_MAP", f"*.{kube_namespace}.svc.cluster.local={vllm_server.base_url}")
    client = KubeClient.from_kubeconfig(str(kubeconfig))

    doc = _spec(kube_namespace, tiny_model / "probes.json", ["p99_e2el_ms <= 30000", "error_rate == 0"])
    # Autoscaling from evidence: the promoted revision's KEDA threshold is the measured capacity
    # (requests/s per replica at the highest concurrency meeting the SLO) times the safety factor.
    doc["scaling"] = {"target": "auto", "expected_peak_rps": 1}
    doc["validation"]["slo"].update({"capacity_max_concurrency": 2, "capacity_repeats": 1})
    good = parse_spec(doc)
    first = run_pipeline("llm-deploy", "s3://models/tiny-llama/v1", good, out_dir=tmp_path / "run-1", quiet=True)
    assert first.outcome == "promoted", json.dumps(first.steps, indent=1)
    assert first.verdict == "pass"
    isvc = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    evidence = json.loads(isvc["metadata"]["annotations"]["llm-rollout.io/autoscaling"])
    assert evidence["metric"] == "request-rate" and evidence["run_id"]
    assert evidence["target"] == max(1, int(evidence["capacity"] * evidence["safety_factor"]))
    keda = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]["value"]
    assert keda == str(evidence["target"]), "the measured target is on the object, not the static default"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://models/tiny-llama/v1"
    assert not isvc["spec"].get("canary")
    annotations = isvc["metadata"]["annotations"]
    assert any(k.startswith(ANNOTATION_PREFIX) and "s3://models/tiny-llama/v1" in v for k, v in annotations.items())
    stable_spec = isvc["spec"]

    impossible = parse_spec(_spec(kube_namespace, tiny_model / "probes.json", ["p50_ttft_ms <= 0.001"]))
    second = run_pipeline("llm-deploy", "s3://models/tiny-llama/v2", impossible, out_dir=tmp_path / "run-2", quiet=True)
    assert second.outcome == "rolled back", json.dumps(second.steps, indent=1)
    assert second.verdict == "fail"
    assert "p50_ttft_ms" in second.step("validate-deployment")["summary"]
    deploy = second.step("deploy-model")
    assert deploy["canary"] is True
    after = client.get(INFERENCE_SERVICES, NAME, kube_namespace)
    assert after["spec"] == stable_spec, "the stable revision is exactly as run 1 left it: no canary, same predictor"
    assert after["spec"]["predictor"]["model"]["storageUri"] == "s3://models/tiny-llama/v1"


def test_llmd_stepped_promotion_reruns_the_gate_at_each_traffic_step(
    kubeconfig, kube_namespace, reconciler, vllm_server, tiny_model, tmp_path
):
    """llm-d path: the second model's weight moves 50 -> 100 with the validation re-run at each step."""
    from llm_rollout.kube import LLM_INFERENCE_SERVICES

    reconciler.set_default(url=vllm_server.base_url)
    client = KubeClient.from_kubeconfig(str(kubeconfig))
    doc = _spec(kube_namespace, tiny_model / "probes.json", ["p99_e2el_ms <= 30000", "error_rate == 0"])
    doc["llmd"] = {"enabled": True}
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
