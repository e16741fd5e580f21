"""``llm-rollout submit`` / ``schedule`` against a local HTTP server that checks what kfp.Client sends.

The KFP API server cannot run here; this one answers the KFP v2beta1 REST calls the client makes
(healthz, experiment lookup and creation, run and recurring-run creation) and records every request.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from llm_rollout.errors import SpecError
from pipelines import cli, kfp_runs


class _KfpHandler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]]
    experiments: ClassVar[list[dict[str, Any]]]

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {
            "method": self.command,
            "path": url.path,
            "query": parse_qs(url.query),
            "body": json.loads(raw) if raw else None,
        }
        self.requests.append(entry)
        return entry

    def do_GET(self) -> None:
        req = self._record()
        if req["path"] == "/apis/v2beta1/healthz":
            self._reply(200, {"multi_user": False})
        elif req["path"] == "/apis/v2beta1/experiments":
            wanted = json.loads(req["query"]["filter"][0])["predicates"][0]["stringValue"]
            found = [e for e in self.experiments if e["display_name"] == wanted]
            self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
        else:
            self._reply(404, {"error": f"unexpected GET {req['path']}"})

    def do_POST(self) -> None:
        req = self._record()
        body = req["body"] or {}
        if req["path"] == "/apis/v2beta1/experiments":
            exp = {"experiment_id": f"exp-{len(self.experiments) + 1}", "display_name": body["display_name"]}
            self.experiments.append(exp)
            self._reply(200, exp)
        elif req["path"] == "/apis/v2beta1/runs":
            self._reply(200, {**body, "run_id": "run-0001", "state": "PENDING"})
        elif req["path"] == "/apis/v2beta1/recurringruns":
            self._reply(200, {**body, "recurring_run_id": "rr-0001", "status": "ENABLED"})
        else:
            self._reply(404, {"error": f"unexpected POST {req['path']}"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kfp_server() -> Iterator[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    experiments: list[dict[str, Any]] = [{"experiment_id": "exp-existing", "display_name": "nightly"}]
    handler = type("Handler", (_KfpHandler,), {"requests": requests, "experiments": experiments})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests, experiments
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, str]:
    from pipelines.compile import compile_pipelines

    out = tmp_path_factory.mktemp("pipelines")
    return {p.stem: str(p) for p in compile_pipelines(out)}


def _posts(requests, path):
    return [r for r in requests if r["method"] == "POST" and r["path"] == path]


def test_submit_creates_the_experiment_and_a_run_with_the_compiled_spec(kfp_server, compiled):
    host, requests, experiments = kfp_server
    result = kfp_runs.submit(
        host,
        package=compiled["llm-deploy"],
        params={"model_uri": "s3://models/llama", "spec": '{"platform": "kserve"}'},
        experiment="llm-rollout",
    )
    assert result["run_id"] == "run-0001" and result["pipeline"] == "llm-deploy"
    assert result["run_name"].startswith("llm-deploy-") and "{{" not in result["run_name"]
    lookups = [r for r in requests if r["method"] == "GET" and r["path"] == "/apis/v2beta1/experiments"]
    assert json.loads(lookups[0]["query"]["filter"][0])["predicates"][0]["stringValue"] == "llm-rollout"
    [exp] = _posts(requests, "/apis/v2beta1/experiments")
    assert exp["body"]["display_name"] == "llm-rollout"
    [run] = _posts(requests, "/apis/v2beta1/runs")
    body = run["body"]
    assert body["display_name"] == result["run_name"] and body["experiment_id"] == experiments[-1]["experiment_id"]
    assert body["runtime_config"]["parameters"] == {
        "model_uri": "s3://models/llama",
        "spec": '{"platform": "kserve"}',
    }
    with open(compiled["llm-deploy"]) as fh:
        assert body["pipeline_spec"] == yaml.safe_load(fh)
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "llm-deploy"
    # The steps run as our account (manifests/rbac.yaml), not the namespace's pipeline runner.
    assert body["service_account"] == "llm-rollout" == result["service_account"]


def test_submit_runs_the_steps_as_the_named_service_account(kfp_server, compiled, capsys):
    host, requests, _ = kfp_server
    argv = ["submit", "--host", host, "--package", compiled["llm-deploy"], "--service-account", "team-a-rollout"]
    assert cli.main(argv) == 0
    [run] = _posts(requests, "/apis/v2beta1/runs")
    assert run["body"]["service_account"] == "team-a-rollout"
    assert "service account team-a-rollout" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_bad_service_account_is_refused_before_any_request(kfp_server, compiled, command, capsys):
    host, requests, _ = kfp_server
    argv = [command, "--host", host, "--package", compiled["llm-deploy"], "--service-account", "Team_A"]
    if command == "schedule":
        argv += ["--cron", "@daily"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--service-account" in err and "'Team_A'" in err and "llm-rollout" in err
    assert requests == []


def test_two_submits_never_share_a_run_name(kfp_server, compiled):
    host, requests, _ = kfp_server
    a = kfp_runs.submit(host, package=compiled["llm-deploy"], experiment="nightly")
    b = kfp_runs.submit(host, package=compiled["llm-deploy"], experiment="nightly")
    assert a["run_name"] != b["run_name"]
    assert not _posts(requests, "/apis/v2beta1/experiments")  # "nightly" exists: looked up, not created
    assert [r["body"]["experiment_id"] for r in _posts(requests, "/apis/v2beta1/runs")] == ["exp-existing"] * 2


def test_schedule_creates_a_recurring_run_with_max_concurrency_1_and_no_catchup(kfp_server, compiled):
    host, requests, _ = kfp_server
    code = cli.main(
        [
            "schedule",
            "--host",
            host,
            "--cron",
            "0 0 3 * * MON-FRI",
            "--package",
            compiled["llm-optimize-deploy"],
            "--param",
            "model_uri=s3://models/base",
            "--experiment",
            "nightly",
        ]
    )
    assert code == 0
    [rr] = _posts(requests, "/apis/v2beta1/recurringruns")
    body = rr["body"]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * MON-FRI"}}
    assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
    assert body["no_catchup"] is True and body["mode"] == "ENABLE"
    assert body["experiment_id"] == "exp-existing"
    assert body["runtime_config"]["parameters"] == {"model_uri": "s3://models/base"}
    # A package with a platform spec (the optimize step's scratch volume) goes as both documents.
    sent = body["pipeline_spec"]
    assert sent["pipeline_spec"]["pipelineInfo"]["name"] == "llm-optimize-deploy"
    executors = sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-optimize-model"]["genericEphemeralVolume"][0]["size"] == "48Gi"
    assert body["display_name"].startswith("llm-optimize-deploy-schedule-")
    assert body["service_account"] == "llm-rollout"


def test_schedule_defaults_to_optimize_deploy_and_can_allow_catchup(kfp_server):
    host, requests, _ = kfp_server
    result = kfp_runs.schedule(
        host, cron="@daily", no_catchup=False, max_concurrency=2, experiment="nightly", service_account="nightly-sa"
    )
    assert result["pipeline"] == "llm-optimize-deploy" and result["recurring_run_id"] == "rr-0001"
    [rr] = _posts(requests, "/apis/v2beta1/recurringruns")
    assert rr["body"]["service_account"] == "nightly-sa"
    assert rr["body"]["no_catchup"] is False and int(rr["body"]["max_concurrency"]) == 2
    assert rr["body"]["trigger"]["cron_schedule"]["cron"] == "@daily"


@pytest.mark.parametrize(
    ("cron", "names"),
    [
        ("0 3 * * *", ["5 fields", "add the seconds field: '0 0 3 * * *'"]),
        ("0 0 25 * * *", ["hours field has 25", "0-23"]),
        ("0 61 * * * *", ["minutes field has 61"]),
        ("0 0 3 32 * *", ["day-of-month field has 32"]),
        ("0 0 3 * FOO *", ["month field", "'FOO'", "JAN"]),
        ("0 0 3 * * 7", ["day-of-week field has 7", "0-6"]),
        ("0 0 3 ? * ?", []),
        ("? 0 3 * * *", ["'?' is only allowed", "seconds"]),
        ("0 */0 * * * *", ["step '0'"]),
        ("0 0 5-2 * * *", ["runs backwards"]),
        ("0 0 3 * *  * *", ["7 fields"]),
        ("@sometimes", ["not a known descriptor", "@daily"]),
        ("", ["no cron expression"]),
    ],
)
def test_invalid_cron_is_refused_before_any_request(kfp_server, cron, names):
    host, requests, _ = kfp_server
    if not names:
        assert kfp_runs.validate_cron(cron) == cron
        return
    with pytest.raises(SpecError) as info:
        kfp_runs.schedule(host, cron=cron)
    for text in names:
        assert text in str(info.value)
    assert "Fix:" in str(info.value)
    assert requests == []


def test_cli_reports_a_bad_cron_with_exit_code_2_and_sends_nothing(kfp_server, capsys):
    host, requests, _ = kfp_server
    assert cli.main(["schedule", "--host", host, "--cron", "0 3 * * *"]) == 2
    err = capsys.readouterr().err
    assert "cron" in err and "'0 0 3 * * *'" in err
    assert requests == []


def test_bad_params_and_packages_are_refused(kfp_server, tmp_path):
    host, requests, _ = kfp_server
    with pytest.raises(SpecError, match="KEY=VALUE"):
        kfp_runs.parse_params(["model_uri"])
    with pytest.raises(SpecError, match="does not exist"):
        kfp_runs.submit(host, package=str(tmp_path / "missing.yaml"))
    with pytest.raises(SpecError, match="unknown pipeline"):
        kfp_runs.submit(host, pipeline="llm-nope")
    assert requests == []
