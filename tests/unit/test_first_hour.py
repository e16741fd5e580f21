"""The first hour (issue 32): the shipped examples parse and say what they are, and the command line
refuses bad input with exit 2, the field and the fix, before anything runs.

The CPU example's real run (the tiny model promoted by ``llm-rollout run-local``) is
``tests/serving/test_examples.py``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from kfp_llm_rollout.pipelines import cli
from kfp_llm_rollout.pipelines.run_local import DEMO_SPEC
from llm_rollout.errors import SpecError
from llm_rollout.platform import HistoryEntry, StableRecord, Status, format_status
from llm_rollout.spec import load_spec, parse_spec, spec_to_json
from llm_rollout.validation.probes import load_suite
from llm_rollout.validation.workload import load_file
from tests.unit.test_kfp_runs import _posts, compiled, kfp_server  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


# Examples ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["local-cpu.yaml", "kserve-team.yaml", "llm-d-pd.yaml"])
def test_every_example_spec_parses(name):
    spec = load_spec(EXAMPLES / name)
    assert spec.name and spec.namespace


def test_the_scored_suite_example_loads_with_must_pass_and_scored_probes_of_several_kinds():
    probes = load_suite(EXAMPLES / "suite.jsonl")
    assert any(p.must_pass for p in probes) and any(not p.must_pass for p in probes)
    assert {"exact", "contains", "regex"} <= {e.split()[0] for p in probes for e in p.expectations()}


def test_the_workload_example_loads_as_a_timed_trace_of_prompts_and_conversations():
    workload = load_file(str(EXAMPLES / "workload.jsonl"))
    requests = workload.requests
    assert len(requests) >= 5
    assert all(r.timestamp is not None for r in requests)
    assert any(r.messages for r in requests) and any(r.prompt for r in requests)


def test_the_reference_texts_example_is_jsonl_of_texts():
    lines = (EXAMPLES / "tiny-reference.jsonl").read_text().splitlines()
    assert len(lines) >= 64 and all(json.loads(line)["text"] for line in lines)


def test_the_cpu_example_is_what_the_demo_runs_and_says_it_is_sized_for_cpu():
    text = (EXAMPLES / "local-cpu.yaml").read_text()
    doc = yaml.safe_load(text)
    assert doc["platform"] == "local"
    assert doc["runtime"] == DEMO_SPEC["runtime"] and doc["model"] == DEMO_SPEC["model"]
    for key in ("slo", "load", "recovery", "readiness_timeout_s"):
        assert doc["validation"][key] == DEMO_SPEC["validation"][key], key
    assert "sized for a 2-core CPU" in text and "GPU" in text
    # Its files are the ones shipped beside it (paths relative to the repository root).
    assert (ROOT / doc["validation"]["suite_file"]).is_file()
    assert (ROOT / doc["validation"]["quality"]["texts"]).is_file()


def test_the_kserve_example_is_a_gpu_team_spec():
    spec = load_spec(EXAMPLES / "kserve-team.yaml")
    assert spec.platform == "kserve" and spec.namespace == "team-a"
    assert spec.model.uri.startswith("s3://") and spec.runtime.accelerator
    assert "p95_ttft_ms <= 100" in spec.validation.slo.checks and spec.resources.gpus == 1


def test_the_pd_example_disaggregates_prefill():
    spec = load_spec(EXAMPLES / "llm-d-pd.yaml")
    assert spec.platform == "kserve" and spec.llmd.enabled and spec.llmd.prefill is not None
    assert spec.llmd.scheduler.profile == "pd"


# The command line: bad input exits 2 with the field and the fix -----------------------------------


def _fake_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return model


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "/nonexistent/model"], ["--model:", "does not exist", "Fix:", "tiny-llama"]),
        (["--model", "s3://bucket/model"], ["--model:", "s3:// URI", "Fix:", "model_uri"]),
    ],
)
def test_run_local_bad_model_exits_2_with_the_field_and_fix(args, words, tmp_path, capsys):
    assert cli.main(["run-local", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_run_local_unknown_scheme_exits_2_naming_the_flag_not_the_component_input(tmp_path, capsys):
    model = _fake_model(tmp_path)
    argv = ["run-local", "--pipeline", "llm-optimize-deploy", "--model", str(model), "--scheme", "W8A16"]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--scheme: unknown quantization scheme 'W8A16'" in err and "--recipe FILE" in err
    assert "recipe_path" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--url", "--stable-url", "--baseline-url"])
def test_validate_url_without_scheme_exits_2_at_once(flag, capsys):
    argv = ["validate", "--url", "http://127.0.0.1:8000", "--model", "m"]
    if flag == "--url":
        argv[2] = "127.0.0.1:8000"
    else:
        argv += [flag, "127.0.0.1:8001"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{flag}: " in err and "Fix: write the scheme" in err and "http://127.0.0.1:800" in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_an_unreachable_kfp_host_is_one_line_with_the_fix(command, compiled, capsys):  # noqa: F811
    argv = [command, "--host", f"http://127.0.0.1:{_closed_port()}", "--package", compiled["llm-deploy"]]
    if command == "schedule":
        argv += ["--cron", "0 0 3 * * *"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "--host: cannot reach the KFP API" in err and "port-forward" in err and "Traceback" not in err


def test_submit_spec_file_is_checked_and_sent_as_the_spec_parameter(kfp_server, compiled):  # noqa: F811
    host, requests, _ = kfp_server
    argv = ["submit", "--host", host, "--package", compiled["llm-deploy"]]
    assert cli.main([*argv, "--spec", str(EXAMPLES / "kserve-team.yaml"), "--param", "model_uri=s3://m/v3"]) == 0
    [run] = _posts(requests, "/apis/v2beta1/runs")
    sent = json.loads(run["body"]["runtime_config"]["parameters"]["spec"])
    assert sent["platform"] == "kserve" and sent["namespace"] == "team-a"
    assert load_spec(EXAMPLES / "kserve-team.yaml").model_dump() == load_spec(None, sent).model_dump()


def test_submit_bad_spec_file_is_refused_before_any_request(kfp_server, compiled, tmp_path, capsys):  # noqa: F811
    host, requests, _ = kfp_server
    bad = tmp_path / "spec.yaml"
    bad.write_text("platform: kserve\nvalidaton: {}\n")
    assert cli.main(["submit", "--host", host, "--package", compiled["llm-deploy"], "--spec", str(bad)]) == 2
    assert "did you mean 'validation'" in capsys.readouterr().err
    assert requests == []


# status: hints that work as printed, one line per history entry -----------------------------------


def _status(platform: str) -> Status:
    stable = StableRecord(member="m2", model_uri="/models/b", summary="pass:\n  correctness suite: passed")
    return Status(
        platform=platform,
        kind="LocalServer" if platform == "local" else "InferenceService",
        name="svc",
        namespace="local" if platform == "local" else "team-a",
        stable=stable,
        previous_stable=StableRecord(member="m1", model_uri="/models/a"),
        history=[
            HistoryEntry(action="rollback", member="m3", run_id="r3", reason="fail: slower\n  ttft: 2x\n  tpot: 3x"),
            HistoryEntry(action="promote", member="m2", run_id="r2", summary="pass:\n  slo: met"),
        ],
        location="/tmp/state dir" if platform == "local" else "",
    )


def test_local_status_names_the_rollback_command_with_its_flags():
    text = format_status(_status("local"))
    assert "`llm-rollout rollback svc --platform local --state-dir '/tmp/state dir'` restores it" in text


def test_kserve_status_names_the_rollback_command_with_the_namespace():
    assert "`llm-rollout rollback svc -n team-a` restores it" in format_status(_status("kserve"))


def test_multi_line_reasons_are_one_line_each_in_the_status_history():
    lines = format_status(_status("local")).splitlines()
    history = lines[lines.index("last promotions and rollbacks:") + 1 :]
    assert len(history) == 2
    assert history[0].endswith("run r3: fail: slower ttft: 2x tpot: 3x")
    assert history[1].endswith("run r2: pass: slo: met")
    assert any(line.endswith("by run : pass: correctness suite: passed") for line in lines)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--model", "/models/llama"], ["--model:", "path on this machine", "s3://"]),
        (["--model", "s3://m/v1", "--keep-serving"], ["--keep-serving:", "local platform only"]),
    ],
)
def test_run_local_against_a_cluster_takes_a_uri_and_no_local_flags(extra, words, tmp_path, capsys):
    argv = ["run-local", "--platform", "kserve", "--spec", str(EXAMPLES / "kserve-team.yaml"), *extra]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "out").exists()


def test_stop_without_servers_says_so(tmp_path, capsys):
    assert cli.main(["stop", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no local server was running")
    assert cli.main(["stop", "svc", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no local server of svc was running")


@pytest.fixture
def kept_servers(tmp_path):
    """Two recorded local servers (services a and b) as run-local --keep-serving leaves them: real processes
    in their own process groups, carrying the server marker the platform checks before it stops anything."""
    from llm_rollout.local.server import SERVER_MARKER
    from llm_rollout.local.state import ServerRecord, StateDir
    from llm_rollout.procs import proc_start_time

    state = StateDir(tmp_path / "state")
    procs = {}
    for service in ("a", "b"):
        marker = f"test-{service}"
        env = {**os.environ, SERVER_MARKER: marker}
        proc = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
        # Reaped as soon as it dies, as init reaps a kept server whose run-local has exited: a zombie
        # child of this process would keep its group "alive" to `stop` for 5 s (procs.stop_group).
        threading.Thread(target=proc.wait, daemon=True).start()
        procs[service] = proc
        state.write_server(
            ServerRecord(
                member=f"{service}-1",
                service=service,
                role="stable",
                status="serving",
                pid=proc.pid,
                pgid=proc.pid,
                start_time=proc_start_time(proc.pid),
                marker=marker,
                endpoint_url="http://127.0.0.1:1",
            )
        )
    yield state, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_stop_name_stops_only_that_services_kept_server_and_status_names_the_command(kept_servers, capsys):
    from llm_rollout.procs import pid_alive

    state, procs = kept_servers
    where = str(state.root)
    assert cli.main(["status", "a", "--platform", "local", "--state-dir", where]) == 0
    assert f"until stopped: `llm-rollout stop a --state-dir {where}`" in capsys.readouterr().out
    assert cli.main(["stop", "a", "--platform", "local", "--state-dir", where]) == 0
    assert capsys.readouterr().out.startswith(f"stopped a-1 ({where})")
    assert procs["a"].wait(timeout=20) is not None
    # pid_alive, not poll(): poll() answers None while the reaper thread waits on the process.
    assert pid_alive(procs["b"].pid), "stop a stopped b's server"
    assert [i.member for i in state.servers()] == ["b-1"]
    assert cli.main(["stop", "--state-dir", where]) == 0  # no name: every server there
    assert capsys.readouterr().out.startswith("stopped b-1")
    assert procs["b"].wait(timeout=20) is not None
    assert cli.main(["status", "b", "--platform", "local", "--state-dir", where]) == 0
    assert "until stopped" not in capsys.readouterr().out


def test_stop_is_local_only(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["stop", "svc", "--platform", "kserve"])
    assert exit_.value.code == 2 and "invalid choice: 'kserve'" in capsys.readouterr().err


def _help_texts() -> dict[str, str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    texts = {"": parser.format_help()} | {name: p.format_help() for name, p in sub.choices.items()}
    from llm_rollout.validation.cli import build_parser as validate_parser

    texts["validate"] = validate_parser().format_help()
    return texts


def test_help_prints_no_rest_markup():
    for command, text in _help_texts().items():
        assert "``" not in text and not re.search(r":[a-z]+:`", text), (command, text)
    assert "The llm-rollout command line." in _help_texts()[""]


# validation.load.workload: a bare path is the file ------------------------------------------------


def test_a_bare_workload_path_in_a_spec_file_is_the_custom_file(tmp_path):
    (tmp_path / "spec.yaml").write_text("validation:\n  load:\n    workload: traffic.jsonl\n")
    workload = load_spec(str(tmp_path / "spec.yaml")).validation.load.workload
    assert (workload.dataset, workload.path) == ("custom", "traffic.jsonl")
    # What a KFP run sends (spec_to_json) reads back the same.
    sent = spec_to_json(load_spec(str(tmp_path / "spec.yaml")))
    assert parse_spec(json.loads(sent)).validation.load.workload == workload


def test_a_bare_workload_path_from_set_is_the_custom_file_and_replaces_a_mapping():
    from kfp_llm_rollout.pipelines.run_local import _overrides  # what run-local --set does with its values

    spec = load_spec(str(EXAMPLES / "kserve-team.yaml"), _overrides(["validation.load.workload=traffic.jsonl"]))
    assert (spec.validation.load.workload.dataset, spec.validation.load.workload.path) == ("custom", "traffic.jsonl")


def test_a_dataset_name_from_set_exits_2_with_the_form_before_anything_runs(tmp_path, capsys):
    argv = ["run-local", "--model", str(_fake_model(tmp_path)), "--spec", str(EXAMPLES / "local-cpu.yaml")]
    argv += ["--set", "validation.load.workload=random", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "validation.load.workload: 'random' names a dataset" in err and "{dataset: random}" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("random", ["names a dataset, not a file", "{dataset: random}"]),
        ("", ["empty", "workload: traffic.jsonl"]),
        (3, ["is a int", "workload: traffic.jsonl"]),
    ],
)
def test_a_workload_that_is_no_path_is_refused_with_the_form_to_use(value, words):
    with pytest.raises(SpecError) as err:
        parse_spec({"validation": {"load": {"workload": value}}})
    assert err.value.field == "validation.load.workload"
    for word in words:
        assert word in str(err.value), str(err.value)


def _subcommand_options() -> dict[str, set[str]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    options = {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}
    from llm_rollout.validation.cli import build_parser as validate_parser

    options["validate"] = {o for a in validate_parser()._actions for o in a.option_strings}
    return options


def test_every_flag_in_the_readme_commands_table_exists_and_every_command_is_listed():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Commands") : text.index("## How the code is laid out")]
    options = _subcommand_options()
    listed = set()
    for row in table.splitlines():
        m = re.match(r"^\| `llm-rollout (\S+)(.*?)` \|", row)
        if not m:
            continue
        command, usage = m.group(1), m.group(2)
        listed.add(command)
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-n)\b", usage):
            assert flag in options[command], f"{command} has no {flag}"
    assert listed == set(options), f"commands missing from the table: {set(options) - listed}"


# render: exactly what the kserve platform applies, for that spec and phase ------------------------


def _render(tmp_path: Path, spec: str, phase: str, *extra: str) -> dict[str, list[dict]]:
    out = tmp_path / phase
    assert cli.main(["render", "--spec", spec, "--out", str(out), "--phase", phase, *extra]) == 0
    return {p.name: p.read_text() for p in out.glob("*.yaml")}


@pytest.mark.parametrize("phase", ["first", "canary", "promoted"])
def test_render_of_an_isvc_spec_writes_no_llmd_object_and_names_spec_and_phase(tmp_path, phase):
    from tests.schema_check import schema_errors
    from tests.webhook_check import isvc_webhook_errors

    spec = "examples/kserve-team.yaml"
    files = _render(tmp_path, str(ROOT / spec), phase, "--candidate-uri", "s3://team-a-models/support-assistant/v4")
    # kserve-model-store.yaml: runtime.model_store is on by default (KFP's store, for a run's optimized model).
    assert set(files) == {
        "vllm-runtime.yaml",
        "kserve-inferenceservice.yaml",
        "kserve-autoscaling.yaml",
        "kserve-model-store.yaml",
        "rbac.yaml",
    }
    for name, text in files.items():
        assert text.startswith(f"# Rendered by `llm-rollout render --spec {ROOT / spec} --phase {phase}`"), name
        assert "default spec" not in text.split("apiVersion")[0], name
        for doc in yaml.safe_load_all(text):
            if doc["apiVersion"].startswith("serving.kserve.io/"):  # the KServe CRDs' schemas
                assert schema_errors(doc) == [], (name, doc["kind"])
    (isvc,) = yaml.safe_load_all(files["kserve-inferenceservice.yaml"])
    assert isvc["metadata"]["namespace"] == "team-a" and isvc_webhook_errors(isvc) == []
    uris = [isvc["spec"]["predictor"]["model"]["storageUri"]]
    uris += [c["predictor"]["model"]["storageUri"] for c in isvc["spec"].get("canary") or []]
    expected = {
        "first": ["s3://team-a-models/support-assistant/v3"],
        "canary": ["s3://team-a-models/support-assistant/v3", "s3://team-a-models/support-assistant/v4"],
        "promoted": ["s3://team-a-models/support-assistant/v4"],
    }[phase]
    assert uris == expected
    assert not any("REPLACE-ME" in text for text in files.values())


def test_render_of_the_pd_example_writes_only_llmd_objects_that_pass_the_webhook_mirror(tmp_path):
    from tests.schema_check import schema_errors
    from tests.webhook_check import llmisvc_webhook_errors

    files = _render(tmp_path, str(EXAMPLES / "llm-d-pd.yaml"), "first")
    assert set(files) == {"llm-d-configuration.yaml", "kserve-model-store.yaml", "rbac.yaml"}
    docs = list(yaml.safe_load_all(files["llm-d-configuration.yaml"]))
    assert [d["kind"] for d in docs] == ["LLMInferenceServiceConfig", "LLMInferenceService"]
    for doc in docs:
        assert schema_errors(doc) == [], doc["kind"]
    assert llmisvc_webhook_errors(docs[1]) == []
    assert docs[1]["spec"]["model"]["uri"] == "hf://Qwen/Qwen2.5-7B-Instruct" and docs[1]["spec"]["prefill"]


@pytest.mark.parametrize(
    ("doc", "args", "field"),
    [
        ({"platform": "kserve", "namespace": "team-a"}, [], "model.uri: is empty in"),
        ({"platform": "kserve", "model": {"uri": "s3://m/v1"}}, ["--phase", "canary"], "--candidate-uri: is needed"),
    ],
)
def test_render_refuses_a_placeholder_model(doc, args, field, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert cli.main(["render", "--spec", str(spec), "--out", str(tmp_path / "out"), *args]) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("agreement", "ratio_status", "decision"),
    [(1.0, "fail", "speed-up missed"), (0.5, "pass", "lost"), (0.5, "fail", "lost"), (1.0, "pass", "kept")],
)
def test_recovery_says_lost_only_when_the_outputs_were(agreement, ratio_status, decision):
    """A missed throughput ratio with token agreement 1.000 is not a quality loss (issue 32 item 1)."""
    from llm_rollout.validation.slo import CheckResult
    from llm_rollout.validation.summary import recovery_answer

    ratio = CheckResult("c4", "output_throughput_ratio_vs_baseline >= 2", "output_throughput_ratio_vs_baseline", 1.1,
                        ratio_status)  # fmt: skip
    recovery = recovery_answer("http://base", agreement=agreement, min_token_agreement=0.9, ratio_checks=[ratio])
    assert recovery.said == decision and recovery.decision == ("pass" if decision == "kept" else "fail")


# The README's own commands, as printed ------------------------------------------------------------


def readme_commands() -> list[str]:
    """Every ``llm-rollout`` command in the README's bash blocks, continuation lines joined, comments cut."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)\n```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if re.match(r"^(\.venv/bin/)?llm-rollout ", line):
                out.append(line)
    return out


def test_the_readme_render_compile_submit_and_schedule_commands_run_as_printed(
    kfp_server,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """The cluster commands against a local KFP endpoint (only --host replaced) and render/compile output checked;
    run-local, status, rollback and stop on this machine are tests/serving/test_examples.py."""
    host, requests, _ = kfp_server
    (tmp_path / "examples").symlink_to(EXAMPLES)
    monkeypatch.chdir(tmp_path)
    ran = set()
    for command in readme_commands():
        argv = shlex.split(command.replace("http://localhost:8080", host).replace("<digest>", "a" * 64))[1:]
        if argv[0] not in ("render", "compile", "submit", "schedule", "spec"):
            continue
        code = cli.main(argv)
        assert code == 0, (command, capsys.readouterr().err)
        ran.add(argv[0])
        if argv[0] == "render":
            out = tmp_path / argv[argv.index("--out") + 1]
            assert sorted(p.name for p in out.iterdir()) == sorted(
                [
                    "vllm-runtime.yaml",
                    "kserve-inferenceservice.yaml",
                    "kserve-autoscaling.yaml",
                    "kserve-model-store.yaml",  # runtime.model_store is on by default
                    "rbac.yaml",
                ]
            )
        if argv[0] == "compile":
            out = tmp_path / argv[argv.index("--out") + 1]
            assert {p.name for p in out.iterdir()} == {"llm-deploy.yaml", "llm-optimize-deploy.yaml"}
    assert ran == {"render", "compile", "submit", "schedule"}
    runs = _posts(requests, "/apis/v2beta1/runs")
    assert runs and all(
        json.loads(r["body"]["runtime_config"]["parameters"]["spec"])["namespace"] == "team-a" for r in runs
    )
    assert _posts(requests, "/apis/v2beta1/recurringruns")


def test_the_run_summary_shows_numbers_and_skips_structured_metrics(tmp_path):
    # A kserve run's validate step records structured evidence beside the numbers (found running the README's
    # run-local --platform kserve line: the summary raised TypeError after the run had finished).
    from kfp_llm_rollout.pipelines.run_local import RunSummary, format_summary

    validate = {"step": "validate-deployment", "status": "succeeded", "verdict": "fail", "summary": "fail: slo",
                "metrics": {"p95_ttft_ms": 123.456, "capacity": {"10": 4.2}, "passed": True, "ratio": 2}}  # fmt: skip
    summary = RunSummary(pipeline="llm-deploy", outcome="rolled back", returncode=0, steps=[validate],
                         out_dir=tmp_path, seconds=1.0)  # fmt: skip
    text = format_summary(summary)
    assert "key metrics: p95_ttft_ms=123.5, ratio=2" in text and "capacity" not in text
