"""Another team's pipeline with our components, run by kfp.local on the local platform (real parts).

The pipeline is tests/own_pipeline.py (the README's example): their "train" step outputs a Model,
then optimize-model (real llmcompressor) -> register -> deploy (a real vLLM process) -> validate ->
promote, inside the exit handler. Besides the outcome, it shows where the model's files went: the
train and optimize tasks hold them; the deploy step (working directory and task directory) never
does, and the promoted server serves the optimize step's Model artifact in place.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfp_llm_rollout.pipelines.run_local import demo_spec
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.session import local_session
from llm_rollout.spec import spec_to_json
from llm_rollout.steplog import RUN_LOG_ENV, read_run_log

pytestmark = [pytest.mark.e2e, pytest.mark.serving, pytest.mark.optimize, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILES = ("config.json", ".safetensors", "tokenizer.json")

RUNNER = """
import json, sys
from kfp import local
from kfp_llm_rollout.components import build_components
from tests.own_pipeline import train_and_serve_pipeline

args = json.loads(open(sys.argv[1]).read())
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=args["pipeline_root"], raise_on_error=True)
train_and_serve_pipeline(build_components())(**args["arguments"])
"""


def _model_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith(MODEL_FILES))


def test_own_pipeline_promotes_and_the_deploy_step_never_holds_the_model(tmp_path, tiny_model, vllm_python):
    state, work, pipeline_root = tmp_path / "state", tmp_path / "work", tmp_path / "kfp-root"
    work.mkdir()
    spec = demo_spec(state, tiny_model / "probes.json")
    args = tmp_path / "args.json"
    arguments = {"source": str(tiny_model), "spec": spec_to_json(spec), "scheme": "W8A8"}
    args.write_text(json.dumps({"pipeline_root": str(pipeline_root), "arguments": arguments}))
    (tmp_path / "runner.py").write_text(RUNNER)
    run_log = tmp_path / "steps.jsonl"
    env = {
        **os.environ,
        RUN_LOG_ENV: str(run_log),
        "LLM_ROLLOUT_STATE_DIR": str(state),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with local_session(str(state)):
        proc = subprocess.run(
            [sys.executable, str(tmp_path / "runner.py"), str(args)],
            cwd=work,  # every kfp.local step runs here: the deploy step's working directory
            env=env,
            capture_output=True,
            text=True,
            timeout=1100,
        )
    steps = {s["step"]: s for s in read_run_log(run_log)}
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    assert all(s["status"] == "succeeded" for s in steps.values()), steps
    assert {"optimize-model", "register-runtime", "deploy-model", "validate-deployment", "promote-model"} <= set(steps)
    assert "finalize-rollout" in steps and "rollback-model" not in steps
    assert steps["validate-deployment"]["verdict"] == "pass", steps["validate-deployment"]

    # Where the model's files are: the train step's Model and the optimize step's Model, nowhere else.
    (run_dir,) = pipeline_root.iterdir()
    holders = {p.relative_to(run_dir).parts[0] for p in _model_files(run_dir)}
    assert holders == {"train", "optimize-model"}, holders
    assert _model_files(run_dir / "deploy-model") == [] and (run_dir / "deploy-model").is_dir()
    assert _model_files(work) == [], "the steps' working directory never holds model files"

    # The promoted server serves the optimize step's Model artifact where it lies (no copy).
    stable = LocalPlatform(spec).status().stable
    assert stable.member == steps["deploy-model"]["member"] and stable.verdict == "pass"
    assert Path(stable.model_uri) == run_dir / "optimize-model" / "optimized_model"
    assert "quantization_config" in json.loads((Path(stable.model_uri) / "config.json").read_text())
