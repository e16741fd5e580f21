"""End to end: the real pipelines under kfp.local with the local platform (real vLLM, real llmcompressor).

``test_demo`` runs exactly what ``make demo`` runs (``llm-rollout run-local --demo``): optimize-deploy
on the tiny model is promoted (recovery against its uncompressed original), a retrained copy is
promoted over it (the comparison with the stable revision), a slower copy is rolled back by that
comparison, and a rerun of the promoted model is "already promoted", leaving exactly one promoted
model with its history. Its runs 2 and 3 are also the default comparison's test against real
servers (``test_demo_comparison_decides_with_the_evidence``: one demo serves both, where a
separate retrain loop with a suite ran the same five pipelines again). The scheduled
retrain-and-redeploy case (a run whose model is already the stable one ends as "already promoted"
without starting a server) is tests/e2e/test_scheduled_rerun.py's second run and the demo's run 5.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kfp_llm_rollout.pipelines.run_local import demo_spec
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.state import read_json
from llm_rollout.platform import Status
from llm_rollout.spec import parse_spec
from tests.fixtures.serving import run_stoppable

pytestmark = [pytest.mark.e2e, pytest.mark.serving, pytest.mark.optimize, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]


def status_of(state_dir: Path) -> Status:
    """The local platform's status of the state directory ``state_dir``."""
    return LocalPlatform(parse_spec({"platform": "local", "local": {"state_dir": str(state_dir)}})).status()


def _processes_in(directory: Path) -> list[psutil.Process]:
    """Processes whose working directory is inside ``directory`` (vLLM servers run in the state dir)."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd = proc.info.get("cwd") or ""
        if cwd and Path(cwd).is_relative_to(directory):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model, retrained_model, deep_model, scrambled_model, vllm_python):
    out = tmp_path_factory.mktemp("demo") / "demo"
    env = dict(os.environ)
    proc = run_stoppable(
        [sys.executable, "-m", "kfp_llm_rollout.pipelines.cli", "run-local", "--demo", "--out", str(out)],
        cwd=ROOT,
        env=env,
        timeout=1700,
    )
    return proc, out


def _runs(out: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "demo-summary.json").read_text())
    return summary, [{s["step"]: s for s in r["steps"]} for r in summary["runs"]]


def _results(steps: dict) -> dict:
    """The full validation results (``validation.json``) of one run's validate step."""
    return json.loads(Path(steps["validate-deployment"]["results"]).read_text())


def test_demo_tells_the_story_in_five_runs(demo):
    proc, out = demo
    summary, (compressed, retrained, deep, scrambled, rerun) = _runs(out)
    outcomes = [r["outcome"] for r in summary["runs"]]
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    assert summary["ok"] is True
    assert outcomes == ["promoted", "promoted", "rolled back", "rolled back", "already promoted"], outcomes
    # Run 4: the scrambled copy is named for quality (its smoke checks pass), before any speed.
    head = scrambled["validate-deployment"]["summary"].splitlines()[0]
    assert head.startswith("fail: quality of the reference texts: "), head
    assert "Does it model the reference texts as well?" in proc.stdout
    assert rerun["deploy-model"]["already_promoted"] is True
    # Runs 2 and 5 are a scheduled retrain: run 2 compresses the retrained copy as run 1 compressed
    # the tiny model (two W8A8 models compared), run 5's optimize-model is KFP's cache hit.
    assert "optimize-model" in retrained and "optimize-model" not in rerun
    assert summary["runs"][4]["cached"] == ["optimize-model"], summary["runs"][4]["cached"]
    # Run 2 was promoted because the comparison decided, not because it was skipped.
    assert retrained["validate-deployment"]["verdict"] == "pass"
    assert "(against the stable revision): NON-INFERIOR" in proc.stdout, proc.stdout[-6000:]
    # prepare-rollout comes first; optimize-model and register-runtime do not depend on each other:
    # kfp.local may run either first.
    order = [s["step"] for s in summary["runs"][0]["steps"]]
    assert order[0] == "prepare-rollout"
    assert set(order[1:3]) == {"optimize-model", "register-runtime"}
    assert order[3:] == ["deploy-model", "validate-deployment", "promote-model", "finalize-rollout"]
    assert all(s["status"] == "succeeded" for r in summary["runs"] for s in r["steps"])
    # Run 1 answers the recovery question (no stable yet); run 2 the comparison (no recovery base).
    assert compressed["validate-deployment"]["recovery_base"] and not compressed["validate-deployment"]["stable"]
    assert retrained["validate-deployment"]["stable"] and not retrained["validate-deployment"]["recovery_base"]
    # Run 3: the slower copy is found worse by the comparison, whatever serves.
    assert deep["validate-deployment"]["verdict"] == "fail"
    assert "comparison: " in deep["validate-deployment"]["summary"]
    assert "worse" in deep["validate-deployment"]["summary"]
    # The printed story shows each question with its answer, and where things are.
    for text in (
        "optimize-model", "Did compression keep the model?", "KEPT", "Is it at least as good as what serves now?",
        "INFERIOR", "verdict: fail", "compiled pipelines", "kserve manifests", "state file",
    ):  # fmt: skip
        assert text in proc.stdout, text


def test_demo_comparison_decides_with_the_evidence(demo):
    """The comparison with the stable revision against real servers, on the user's path.

    The demo's comparison keeps the default settings (only its load and SLO are CPU-sized), so
    its runs 2 and 3 are the default gate's test: a retrained copy (same size, same speed) never
    called worse, a slower one caught with the evidence; the damaged copy is named for its answers
    and its quality. (tests/e2e/test_retrain_loop.py covers a new user's spec without a suite.)
    """
    _, out = demo
    _, (_, retrained, deep, scrambled, _) = _runs(out)
    validate = retrained["validate-deployment"]
    assert validate["stable"] and validate["recovery_base"] is None
    assert "token agreement" not in validate["summary"]
    # The comparison decided (not skipped): the suite scored alike on both, every speed metric
    # not worse, on blocks of candidate/stable rounds; the report and the Metrics carry it.
    results = _results(retrained)
    comparison = results["comparison"]
    assert comparison["stable_url"] == validate["stable"] and comparison["decision"] == "pass", comparison
    assert comparison["quality"]["ok"] and comparison["quality"]["stable_passed"] == comparison["quality"]["total"]
    assert comparison["blocks"] >= results["spec"]["comparison"]["min_blocks"]
    assert comparison["rounds"] == 2 * comparison["blocks"]
    assert {c["metric"]: c["decision"] for c in comparison["speed"]} == {
        "median_ttft_ms": "pass", "mean_tpot_ms": "pass", "output_throughput_tok_s": "pass",
    }  # fmt: skip
    # No recovery question: the stable is another model, never a "baseline" to agree with.
    assert results["agreement"] is None and not results["baseline_levels"]
    assert results["metrics"]["vs_stable_not_worse"] == 1.0
    assert "Against the stable revision" in Path(validate["report"]).read_text()
    # The damaged copy fails its answers and its quality.
    summary = scrambled["validate-deployment"]["summary"]
    assert "correctness" in summary and "quality of the reference texts: " in summary, summary
    # The deeper copy answers exactly like the tiny one: only its speed failed, with the evidence.
    summary = deep["validate-deployment"]["summary"]
    assert "comparison: " in summary and "worse: candidate/stable" in summary, summary
    assert "confidence" in summary and "blocks" in summary, summary
    deep_results = _results(deep)
    assert all(p["passed"] for p in deep_results["correctness"]), deep_results["correctness"]
    assert "fail" in {c["decision"] for c in deep_results["comparison"]["speed"]}


def test_demo_state_has_exactly_one_promoted_model_with_history(demo):
    _, out = demo
    status = status_of(out / "state")
    _, (compressed, retrained, deep, scrambled, _) = _runs(out)
    promoted = retrained
    stable = status.stable
    assert stable is not None and stable.member == promoted["deploy-model"]["member"]
    assert stable.verdict == "pass"
    assert stable.metrics, "the promotion keeps the validation's metrics"
    assert Path(stable.report_path).is_file()
    history = [(h.action, h.member) for h in status.history]
    assert ("rollback", deep["deploy-model"]["member"]) in history
    assert ("rollback", scrambled["deploy-model"]["member"]) in history
    assert history[-1] == ("promote", compressed["deploy-model"]["member"])
    assert next(m for action, m in history if action == "promote") == promoted["deploy-model"]["member"]
    rollback = next(h for h in status.history if h.member == deep["deploy-model"]["member"])
    assert "comparison" in (rollback.reason or "")
    # W8A8: run 1 promoted the compressed model, with step one's metadata in the record.
    first = next(h for h in status.history if h.member == compressed["deploy-model"]["member"])
    config = read_json(Path(first.model_uri or "") / "config.json")
    assert "quantization_config" in config


def test_demo_leaves_nothing_running(demo):
    _, out = demo
    assert status_of(out / "state").revisions == []
    assert _processes_in(out) == []


def test_demo_writes_the_compiled_pipelines_and_the_kserve_manifests(demo):
    _, out = demo
    assert sorted(p.name for p in (out / "pipelines").iterdir()) == ["llm-deploy.yaml", "llm-optimize-deploy.yaml"]
    manifests = sorted(p.name for p in (out / "manifests").iterdir())
    assert "kserve-inferenceservice.yaml" in manifests and "vllm-runtime.yaml" in manifests


@pytest.mark.fault
@pytest.mark.parallel  # interrupted mid-validation: its outcome never depends on speed
def test_ctrl_c_mid_validation_stops_every_server_and_changes_no_state(tmp_path, tiny_model, vllm_python):
    """Ctrl-C in a terminal signals the whole foreground group: runner, step and this command."""
    state, out = tmp_path / "state", tmp_path / "run"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(demo_spec(state, tiny_model / "probes.json").model_dump(mode="json")))
    cmd = [sys.executable, "-m", "kfp_llm_rollout.pipelines.cli", "run-local", "--model", str(tiny_model)]
    cmd += ["--spec", str(spec_file), "--out", str(out), "--baseline", str(tiny_model)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_log = out / "run.log"
    try:
        deadline = time.monotonic() + 600
        while not (run_log.is_file() and "validate-deployment: started" in run_log.read_text()):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "validation never started"
            time.sleep(0.2)
        servers = [json.loads(p.read_text()) for p in (state / "servers").glob("*.json")]
        assert {s["role"] for s in servers} == {"baseline", "candidate"}
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output[-3000:]
    assert _processes_in(state) == []
    for server in servers:
        assert not psutil.pid_exists(server["pid"]) or psutil.Process(server["pid"]).status() == psutil.STATUS_ZOMBIE
    after = status_of(state)
    assert after.stable is None and after.revisions == []
    assert after.history == [], "state unchanged: nothing promoted, nothing recorded"
