"""Secrets are referenced, never inlined, and never leak; prompts and completions stay out of the logs.

A planted, unique API key guards the real vLLM fixture (a proxy in front of it answers 401 to any
request without ``Authorization: Bearer <key>``); the pipeline's kserve
steps (register, deploy, validate, promote; then a second run that fails its gate, rollback and the
exit handler) run against the real test API server, with the stand-in publishing that server as
the revisions' address. The key reaches the steps as ``validation.api_key_env`` in the first run
and as ``validation.api_key_file`` in the second, and the runtime references its own copy with
``runtime.secret_env`` (a ``secretKeyRef``). Everything the runs leave behind is collected: stdout
and stderr, Python log records, the steps' run log (``LLM_ROLLOUT_RUN_LOG``), the vLLM log, the
deployment records, the reports and results files, the steps' outputs, the objects on the server
(records included) and the rendered manifests. The key is in none of them.

The kube layer's own credential (a bearer token) is checked the same way on the errors it raises.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes.config import kube_config

from llm_rollout import steps
from llm_rollout.errors import DeadlineExceeded, PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.addresses import ADDRESS_MAP_ENV
from llm_rollout.kserve.deploy import register_runtime
from llm_rollout.kube import INFERENCE_SERVICES, SERVING_RUNTIMES, KubeClient
from llm_rollout.spec import deep_merge, parse_spec
from tests.serving.flaky_proxy import FlakyProxy

pytestmark = [pytest.mark.cluster, pytest.mark.serving, pytest.mark.timeout(900), pytest.mark.parallel]

KEY_ENV = "LLM_ROLLOUT_TEST_ENDPOINT_KEY"
SECRET_REF = {"VLLM_API_KEY": {"name": "chat-vllm-api-key", "key": "token"}}
WRONG_PROBE = {"prompt": "The capital of France is", "expected": " Berlin.", "max_tokens": 6}
VALIDATION = {
    # The stand-in points the stable and the new revision at one vLLM server: comparing a server
    # with itself says nothing (tests/e2e/test_local_pipeline.py tests the comparison), nor does
    # scoring one server's texts against its own (tests/serving/test_quality.py tests that).
    "comparison": {"enabled": False},
    "quality": {"enabled": False},
    "readiness_timeout_s": 60,
    "load": {"concurrency": [2], "num_prompts": 8, "output_tokens": 8, "input_words": 8, "warmup_requests": 1},
    "slo": {
        "checks": ["error_rate == 0"],
        "judge_concurrency": [2],
        "min_successful_requests": 4,
    },
}


def _spec(namespace: str, **overrides: Any) -> str:
    doc = {
        "name": "chat",
        "namespace": namespace,
        "platform": "kserve",
        "deployment_mode": "Knative",  # the new revision answers at its published URL (the real vLLM)
        "model": {"name": "tiny"},
        "canary": {"traffic_percent": 10},
        "runtime": {"secret_env": SECRET_REF},
        "validation": VALIDATION,
    }
    return json.dumps(deep_merge(doc, overrides))


def test_builders_reference_secrets_and_never_inline_them(kube_cluster, kube_namespace):
    spec = parse_spec(
        {
            "namespace": kube_namespace,
            "platform": "kserve",
            "runtime": {"secret_env": {**SECRET_REF, "HF_TOKEN": {"name": "hf", "key": "token"}}},
        }
    )
    llmd = builders.llmd_example_spec(spec)
    containers = [builders.serving_runtime(spec)["spec"]["containers"][0]]
    member = builders.default_member(llmd)
    llmisvc = builders.llm_inference_service(llmd, member)["spec"]
    containers += [llmisvc["template"]["containers"][0], llmisvc["prefill"]["template"]["containers"][0]]
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert env["VLLM_API_KEY"] == {
            "name": "VLLM_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "chat-vllm-api-key", "key": "token"}},
        }
        assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
        assert all("--api-key" not in arg for arg in container.get("args", []))
        # No plain value of anything that looks like a credential.
        assert not [e for e in container["env"] if "value" in e and any(w in e["name"] for w in ("KEY", "TOKEN"))]
    # The real API server takes the reference as the builder writes it (the schema has valueFrom).
    applied = register_runtime(spec, KubeClient(kube_cluster.api_client()))
    live_env = {e["name"]: e for e in applied["spec"]["containers"][0]["env"]}
    assert live_env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "chat-vllm-api-key", "key": "token"}
    # Inline secrets are refused before anything is built.
    for bad in ({"extra_args": ["--api-key=sk-inline"]}, {"env": {"HF_TOKEN": "hf_inline"}}):
        with pytest.raises(PermanentError):
            parse_spec({"platform": "kserve", "runtime": bad})


def _texts_of(path: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in sorted(path.rglob("*")) if p.is_file()]


def test_a_planted_api_key_appears_in_no_log_or_output(
    kube_cluster, kube_namespace, reconciler, vllm_server, tmp_path, monkeypatch, capfd, caplog
):
    secret = f"sk-planted-{uuid.uuid4().hex}"
    key_file = tmp_path / "secrets" / "api-key"
    key_file.parent.mkdir()
    key_file.write_text(secret + "\n")
    out = tmp_path / "outputs"
    run_log = tmp_path / "run-log.jsonl"
    kubeconfig = str(kube_cluster.kubeconfig_path)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)
    monkeypatch.setenv(KEY_ENV, secret)
    monkeypatch.setenv("LLM_ROLLOUT_RUN_LOG", str(run_log))
    caplog.set_level(logging.DEBUG)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([WRONG_PROBE]))

    outputs: list[str] = []
    with FlakyProxy(vllm_server.base_url, require_bearer=secret) as guard:
        # The predictors' Services KServe creates, reached through the key-checking proxy.
        monkeypatch.setenv(ADDRESS_MAP_ENV, f"*.{kube_namespace}.svc.cluster.local={guard.url}")
        # Run 1: key from the environment; passes (so the key was used: the server demands it).
        spec1 = _spec(kube_namespace, validation={"api_key_env": KEY_ENV})
        outputs.append(steps.register_runtime_step(spec1))
        rec1 = steps.deploy_step(spec1, model_uri="s3://models/a", run_id="run-1")
        v1 = steps.validate_step(spec1, rec1, report_path=str(out / "1.html"), results_path=str(out / "1.json"))
        assert v1.verdict == "pass", v1.summary
        assert guard.unauthorized == 0, "every request of the run carried the key"
        outputs += [rec1, v1.summary, json.dumps(v1.metrics)]
        outputs.append(steps.promote_step(spec1, rec1, verdict=v1.verdict, summary=v1.summary, run_id="run-1"))
        outputs.append(steps.finalize_step(spec1, run_id="run-1", state="SUCCEEDED"))

        # Run 2: key from a mounted file; a probe the model gets wrong fails the gate.
        spec2 = _spec(
            kube_namespace, validation={"api_key_file": str(key_file), "suite_file": str(suite), "smoke_suite": False}
        )
        rec2 = steps.deploy_step(spec2, model_uri="s3://models/b", run_id="run-2")
        v2 = steps.validate_step(spec2, rec2, report_path=str(out / "2.html"), results_path=str(out / "2.json"))
        assert v2.verdict == "fail", v2.summary
        outputs += [rec2, v2.summary, json.dumps(v2.metrics)]
        outputs.append(steps.rollback_step(spec2, rec2, reason=v2.summary, run_id="run-2"))
        outputs.append(steps.finalize_step(spec2, run_id="run-2", state="FAILED", error=v2.summary))
        logged = capfd.readouterr()
        log_records = [r.getMessage() for r in caplog.records]
        run_log_text = run_log.read_text()  # before the log_text control below adds to it

        # The control for the text check below: with log_text the same probe's text is logged.
        text_on = {"api_key_file": str(key_file), "suite_file": str(suite), "smoke_suite": False, "log_text": True}
        spec3 = _spec(kube_namespace, validation=text_on)
        v3 = steps.validate_step(spec3, rec2)
        control = capfd.readouterr()
    client = KubeClient(kube_cluster.api_client())
    on_server = [
        json.dumps(client.get(INFERENCE_SERVICES, "chat", kube_namespace)),
        json.dumps(client.get(SERVING_RUNTIMES, "chat-vllm", kube_namespace)),
    ]
    rendered = [yaml.safe_dump_all(objs) for objs in builders.render_all(parse_spec(json.loads(spec2))).values()]

    logs = [logged.out, logged.err, *log_records, run_log_text]
    everything = {
        "stdout/stderr/log records/run log": logs,
        "vLLM log": [vllm_server.log_path.read_text(errors="replace")],
        "reports and results": _texts_of(out),
        "step outputs and records": outputs,
        "objects on the server": on_server,
        "rendered manifests": rendered,
    }
    assert all(everything.values()) and len(everything["reports and results"]) == 4
    leaked = [where for where, texts in everything.items() if any(secret in t for t in texts)]
    assert leaked == [], f"the planted API key leaked into: {leaked}"
    assert "secretKeyRef" in on_server[1] and "chat-vllm-api-key" in on_server[1]

    # Logs carry no prompt or completion unless validation.log_text: only which check failed.
    assert any("exact" in line or "probe" in line for line in [*logs, v2.summary]), v2.summary
    for text in [*logs, *outputs]:
        assert WRONG_PROBE["prompt"] not in text and "Paris" not in text, text[:500]
    assert v3.verdict == "fail"
    assert WRONG_PROBE["prompt"] in control.err + control.out + v3.summary
    assert secret not in run_log.read_text() + control.err + control.out


def test_the_kube_layers_token_is_not_in_its_errors(kube_cluster, kube_fault_proxy, kube_namespace, caplog):
    token = f"planted-token-{uuid.uuid4().hex}"
    configuration = kube_cluster.configuration(via=kube_fault_proxy)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    client = KubeClient(k8s_client.ApiClient(configuration), retry_deadline_s=1.5)
    caplog.set_level(logging.DEBUG)
    spec = parse_spec({"name": "chat", "namespace": kube_namespace, "platform": "kserve"})
    errors = []
    kube_fault_proxy.fail_next_requests(1, status=401)
    with pytest.raises(PermanentError) as info:
        register_runtime(spec, client)
    errors.append(str(info.value))
    kube_fault_proxy.fail_next_requests(10_000, status=503)
    with pytest.raises(DeadlineExceeded) as info:
        register_runtime(spec, client)
    errors += [str(info.value), str(info.value.__cause__)]
    assert "401" in errors[0] and "503" in errors[1]
    texts = errors + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if token in t]
