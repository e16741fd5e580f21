"""``llm-rollout submit`` / ``schedule`` against a local HTTP server that checks what kfp.Client sends.

The KFP API server cannot run here; this one answers the KFP v2beta1 REST calls the client makes
(healthz, experiment lookup and creation, run and recurring-run creation), records every request,
and checks each request body against KFP's own API models (the ``kfp-server-api`` package that
``kfp`` depends on, generated from the server's swagger): a field the server does not know, a
value of the wrong type or an enum value it does not accept is answered with HTTP 400, as the
server's JSON decoder (``protojson``, unknown fields refused) would. Ids come from the server, so
the tests compare what the client returns with what the server issued.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import kfp_server_api
import pytest
import yaml

from kfp_llm_rollout.pipelines import cli, kfp_runs
from llm_rollout.errors import SpecError
from tests.fast_yaml import YAML_LOADER

_SCALARS = {"str": str, "bool": bool, "int": int, "float": (int, float), "datetime": str, "object": object}

_INT64 = {("V2beta1RecurringRun", "max_concurrency"), ("V2beta1PeriodicSchedule", "interval_second")}
"""Fields the swagger types ``string`` / ``format: int64`` (kfp-server-api generates ``str``):
proto3's JSON mapping, which the server decodes with, accepts a number or a decimal string there
(backend/api/v2beta1/swagger/recurring_run.swagger.json)."""


def model_errors(value: Any, type_name: str, where: str = "") -> list[str]:
    """What in ``value`` the kfp-server-api model ``type_name`` does not accept ([] when all of it).

    Walks the generated model's ``openapi_types`` / ``attribute_map`` (JSON names) recursively;
    enum models (no fields, upper-case constants) accept only their constants.
    """
    if value is None:
        return []
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        inner = type_name[5:-1]
        return [e for i, v in enumerate(value) for e in model_errors(v, inner, f"{where}[{i}]")]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        inner = type_name[5:-1].split(", ", 1)[1]
        return [e for k, v in value.items() for e in model_errors(v, inner, f"{where}.{k}")]
    if type_name in _SCALARS:
        ok = isinstance(value, _SCALARS[type_name]) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{where}: expected {type_name}, got {value!r}"]
    model = getattr(kfp_server_api, type_name)
    if not model.openapi_types:  # an enum
        allowed = [n for n in dir(model) if n.isupper()]
        return [] if value in allowed else [f"{where}: {value!r} is not one of {allowed}"]
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} object, got {type(value).__name__}"]
    fields = {json_name: model.openapi_types[attr] for attr, json_name in model.attribute_map.items()}
    errors = [f"{where}.{k}: unknown field of {type_name}" for k in value if k not in fields]
    for key, item in value.items():
        if (type_name, key) in _INT64:
            if not (isinstance(item, int) or str(item).lstrip("-").isdigit()):
                errors.append(f"{where}.{key}: expected an int64 (number or decimal string), got {item!r}")
        elif key in fields:
            errors += model_errors(item, fields[key], f"{where}.{key}")
    return errors


class _KfpHandler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]]
    experiments: ClassVar[list[dict[str, Any]]]
    issued: ClassVar[list[str]]
    recurring: ClassVar[list[dict[str, Any]]]

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

    def _new_id(self, prefix: str) -> str:
        self.issued.append(f"{prefix}-{uuid.uuid4().hex[:12]}")
        return self.issued[-1]

    def do_GET(self) -> None:
        req = self._record()
        if req["path"] == "/apis/v2beta1/healthz":
            self._reply(200, {"multi_user": False})
        elif req["path"] == "/apis/v2beta1/experiments":
            wanted = json.loads(req["query"]["filter"][0])["predicates"][0]["stringValue"]
            found = [e for e in self.experiments if e["display_name"] == wanted]
            self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
        elif req["path"] == "/apis/v2beta1/recurringruns":
            # The server filters on display_name and experiment (filter.proto EQUALS).
            wanted = json.loads(req["query"]["filter"][0])["predicates"][0]
            assert wanted["key"] == "display_name" and wanted["operation"] == "EQUALS", wanted
            exp = req["query"].get("experiment_id", [None])[0]
            found = [
                r
                for r in self.recurring
                if r["display_name"] == wanted["stringValue"] and exp in (None, r["experiment_id"])
            ]
            self._reply(200, {"recurringRuns": found, "total_size": len(found)} if found else {})
        else:
            self._reply(404, {"error": f"unexpected GET {req['path']}"})

    def do_POST(self) -> None:
        req = self._record()
        body = req["body"] or {}
        model = {
            "/apis/v2beta1/experiments": "V2beta1Experiment",
            "/apis/v2beta1/runs": "V2beta1Run",
            "/apis/v2beta1/recurringruns": "V2beta1RecurringRun",
        }.get(req["path"])
        if model is None:
            self._reply(404, {"error": f"unexpected POST {req['path']}"})
            return
        errors = model_errors(body, model, model)
        req["errors"] = errors
        if errors:
            self._reply(400, {"error": "; ".join(errors), "code": 3})
        elif model == "V2beta1Experiment":
            exp = {**body, "experiment_id": self._new_id("exp")}
            self.experiments.append(exp)
            self._reply(200, exp)
        elif model == "V2beta1Run":
            self._reply(200, {**body, "run_id": self._new_id("run"), "state": "PENDING"})
        else:
            created = {**body, "recurring_run_id": self._new_id("rr"), "status": "ENABLED"}
            self.recurring.append(created)
            self._reply(200, created)

    def do_DELETE(self) -> None:
        req = self._record()
        prefix = "/apis/v2beta1/recurringruns/"
        gone = [r for r in self.recurring if req["path"] == prefix + r["recurring_run_id"]]
        if not gone:
            self._reply(404, {"error": f"unexpected DELETE {req['path']}"})
            return
        self.recurring.remove(gone[0])
        self._reply(200, {})

    def log_message(self, *args: Any) -> None:
        pass


class KfpServer:
    """The fake server's address and what it saw and issued."""

    def __init__(self, host: str, requests: list, experiments: list, issued: list) -> None:
        self.host, self.requests, self.experiments, self.issued = host, requests, experiments, issued

    def __iter__(self):  # host, requests, experiments
        return iter((self.host, self.requests, self.experiments))


@pytest.fixture
def kfp_server() -> Iterator[KfpServer]:
    requests: list[dict[str, Any]] = []
    experiments: list[dict[str, Any]] = [{"experiment_id": "exp-existing", "display_name": "nightly"}]
    issued: list[str] = []
    recurring: list[dict[str, Any]] = []
    attrs = {"requests": requests, "experiments": experiments, "issued": issued, "recurring": recurring}
    handler = type("Handler", (_KfpHandler,), attrs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # poll_interval: shutdown() returns within 0.05 s instead of up to 0.5 s (each test's teardown)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        fake = KfpServer(f"http://127.0.0.1:{server.server_address[1]}", requests, experiments, issued)
        fake.recurring = recurring  # what it holds now: created and not deleted
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def test_the_model_check_refuses_what_the_kfp_server_would():
    good = {"display_name": "r", "runtime_config": {"parameters": {"a": "b"}}, "pipeline_spec": {"x": 1}}
    assert model_errors(good, "V2beta1Run") == []
    assert model_errors({**good, "serviceAccount": "sa"}, "V2beta1Run") == [
        ".serviceAccount: unknown field of V2beta1Run"
    ]
    assert model_errors({"runtime_config": {"params": {}}}, "V2beta1Run") == [
        ".runtime_config.params: unknown field of V2beta1RuntimeConfig"
    ]
    assert model_errors({"mode": "ON"}, "V2beta1RecurringRun") == [
        ".mode: 'ON' is not one of ['DISABLE', 'ENABLE', 'MODE_UNSPECIFIED']"
    ]
    assert model_errors({"max_concurrency": 2}, "V2beta1RecurringRun") == []
    assert model_errors({"max_concurrency": "two"}, "V2beta1RecurringRun") == [
        ".max_concurrency: expected an int64 (number or decimal string), got 'two'"
    ]
    assert model_errors({"no_catchup": "yes"}, "V2beta1RecurringRun") == [".no_catchup: expected bool, got 'yes'"]
    assert model_errors({"trigger": {"cron_schedule": {"cron": 5}}}, "V2beta1RecurringRun") == [
        ".trigger.cron_schedule.cron: expected str, got 5"
    ]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, str]:
    from kfp_llm_rollout.pipelines.compile import compile_pipelines

    out = tmp_path_factory.mktemp("pipelines")
    return {p.stem: str(p) for p in compile_pipelines(out)}


def _posts(requests, path):
    """The POSTs to ``path``; each body was accepted by KFP's API model (or the test fails here)."""
    posts = [r for r in requests if r["method"] == "POST" and r["path"] == path]
    for r in posts:
        assert r["errors"] == [], r["errors"]
    return posts


def test_submit_creates_the_experiment_and_a_run_with_the_compiled_spec(kfp_server, compiled):
    host, requests, experiments = kfp_server
    result = kfp_runs.submit(
        host,
        package=compiled["llm-deploy"],
        params={"model_uri": "s3://models/llama", "spec": '{"platform": "kserve"}'},
        experiment="llm-rollout",
    )
    [run_id] = [i for i in kfp_server.issued if i.startswith("run-")]
    assert result["run_id"] == run_id and result["pipeline"] == "llm-deploy"
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
        # the steps' pod deadlines are platform config
        pipeline_spec, platform_spec = yaml.load_all(fh, Loader=YAML_LOADER)
    assert body["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "llm-deploy"
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
    assert executors["exec-optimize-model"]["emptyDirMounts"][0]["sizeLimit"] == "48Gi"
    assert body["display_name"].startswith("llm-optimize-deploy-schedule-")
    assert body["service_account"] == "llm-rollout"


def test_schedule_defaults_to_optimize_deploy_and_can_allow_catchup(kfp_server):
    host, requests, _ = kfp_server
    result = kfp_runs.schedule(
        host, cron="@daily", no_catchup=False, max_concurrency=2, experiment="nightly", service_account="nightly-sa"
    )
    assert result["pipeline"] == "llm-optimize-deploy"
    assert [result["recurring_run_id"]] == [i for i in kfp_server.issued if i.startswith("rr-")]
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
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)))
    notes = tmp_path / "notes.yaml"
    notes.write_text("steps:\n  - optimize\n  - deploy\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipelineInfo: {name: x\n")
    for path, words in ((binary, "not a readable YAML"), (broken, "not a readable YAML"), (notes, "not a compiled")):
        with pytest.raises(SpecError, match=words) as info:
            kfp_runs.submit(host, package=str(path))
        assert info.value.field == "--package" and "llm-rollout compile" in info.value.fix
        with pytest.raises(SpecError, match=words):
            kfp_runs.schedule(host, cron="@daily", package=str(path), name="nightly")
    assert requests == []


def test_submit_sends_params_typed_as_the_pipeline_declares_and_compiles_with_the_given_images(kfp_server, capsys):
    host, requests, _ = kfp_server
    argv = ["submit", "--host", host, "--pipeline", "llm-optimize-deploy", "--image", "reg.example/c:2"]
    argv += ["--optimize-image", f"reg.example/o@sha256:{'a' * 64}", "--optimize-disk", "200Gi"]
    for param in (
        "model_uri=s3://models/base",
        "optimize_accelerator_count=2",
        "fail_on_rollback=false",
        'optimize_node_selector={"pool": "a100"}',
        'optimize_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]',
        'spec={"canary": {"traffic_percent": 10}}',
    ):
        argv += ["--param", param]
    assert cli.main(argv) == 0, capsys.readouterr().err
    [run] = _posts(requests, "/apis/v2beta1/runs")
    sent = run["body"]["runtime_config"]["parameters"]
    assert sent == {
        "model_uri": "s3://models/base",
        "optimize_accelerator_count": "2",  # declared a string: KFP's driver reads GetStringValue()
        "fail_on_rollback": False,
        "optimize_node_selector": {"pool": "a100"},
        "optimize_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "spec": '{"canary": {"traffic_percent": 10}}',  # the spec stays JSON text
    }
    spec = run["body"]["pipeline_spec"]
    executors = spec["pipeline_spec"]["deploymentSpec"]["executors"].values()
    images = {e["container"]["image"] for e in executors if "container" in e}  # not the importer
    assert images == {"reg.example/c:2", f"reg.example/o@sha256:{'a' * 64}"}
    executors = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-optimize-model"]["emptyDirMounts"][0]["sizeLimit"] == "200Gi"


@pytest.mark.parametrize(
    ("param", "words"),
    [
        ("fail_on_rollback=maybe", ["true or false", "--param fail_on_rollback=false"]),
        ("optimize_node_selector=pool", ["a JSON object"]),
        ("optimize_tolerations={}", ["a JSON list"]),
        ("optimize_gpus=2", ["has no parameter 'optimize_gpus'", "optimize_accelerator_count"]),
    ],
)
def test_a_param_the_pipeline_cannot_take_is_refused_before_any_request(kfp_server, param, words, capsys):
    host, requests, _ = kfp_server
    argv = ["submit", "--host", host, "--pipeline", "llm-optimize-deploy", "--image", "r.e/c:1"]
    assert cli.main([*argv, "--optimize-image", "r.e/o:1", "--param", param]) == 2
    err = capsys.readouterr().err
    for text in words:
        assert text in err, err
    assert requests == []


def test_compile_options_with_a_compiled_package_are_refused(kfp_server, compiled, capsys):
    host, requests, _ = kfp_server
    argv = ["submit", "--host", host, "--package", compiled["llm-deploy"], "--image", "reg.example/c:2"]
    assert cli.main(argv) == 2
    assert "--image" in capsys.readouterr().err and requests == []


def test_schedule_by_name_replaces_its_own_recurring_run(kfp_server, compiled, capsys):
    host, requests, _ = kfp_server
    base = ["schedule", "--host", host, "--package", compiled["llm-optimize-deploy"], "--name", "nightly-llama"]
    base += ["--experiment", "nightly", "--param", "model_uri=s3://models/base"]
    assert cli.main([*base, "--cron", "0 0 3 * * *"]) == 0
    other = kfp_runs.schedule(host, cron="@daily", package=compiled["llm-optimize-deploy"], name="other")
    assert cli.main([*base, "--cron", "0 30 4 * * *", "--param", "optimize_accelerator_count=2"]) == 0
    first, second = [i for i in kfp_server.issued if i.startswith("rr-") and i != other["recurring_run_id"]]
    assert f"replacing {first}" in capsys.readouterr().out
    deletes = [r["path"] for r in requests if r["method"] == "DELETE"]
    assert deletes == [f"/apis/v2beta1/recurringruns/{first}"], "only its own, and only after the new one exists"
    create_second = next(i for i, r in enumerate(requests) if r["method"] == "POST" and "recurringruns" in r["path"]
                         and r["body"]["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * *")  # fmt: skip
    assert create_second < next(i for i, r in enumerate(requests) if r["method"] == "DELETE")
    left = {r["display_name"]: r for r in kfp_server.recurring}
    assert set(left) == {"nightly-llama", "other"}
    assert left["nightly-llama"]["recurring_run_id"] == second
    assert left["nightly-llama"]["runtime_config"]["parameters"]["optimize_accelerator_count"] == "2"
