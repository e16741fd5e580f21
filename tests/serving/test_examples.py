"""The CPU example promotes the tiny model, run as its own header prints the command (issue 32).

One real ``llm-rollout run-local`` (slow: a vLLM server on CPU, the whole gate): the command is read
from ``examples/local-cpu.yaml``'s header, with the tiny model's path of this machine and a
temporary state directory and output folder added, then ``status``, ``stop`` and ``rollback`` as the
README's Getting started prints them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.serving, pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "local-cpu.yaml"


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def test_the_cpu_example_promotes_the_tiny_model(tmp_path, tiny_model, vllm_python):
    # The tiny model's corpus is shipped beside the example as its reference texts.
    assert (ROOT / "examples" / "tiny-reference.jsonl").read_text() == (tiny_model / "reference.jsonl").read_text()
    [printed] = re.findall(r"^#\s+(llm-rollout run-local .*)$", EXAMPLE.read_text(), re.M)
    args = shlex.split(printed.replace("~/.cache/llm-rollout/models/tiny-llama", str(tiny_model)))[1:]
    state = tmp_path / "state"
    run = _cli(*args, "--state-dir", str(state), "--out", str(tmp_path / "run"), "--keep-serving")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "== llm-deploy: PROMOTED" in run.stdout, run.stdout[-4000:]
    # The report named in the step log is the one that stays.
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    [validate] = [s for s in steps if s["step"] == "validate-deployment"]
    assert Path(validate["report"]).is_file()
    assert f"validate: report {validate['report']}" in (tmp_path / "run" / "run.log").read_text()

    status = _cli("status", "lean-rag-inference", "--platform", "local", "--state-dir", str(state), "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["stable"]["model_uri"] == str(tiny_model)
    assert [r["ready"] for r in body["revisions"] if r["role"] == "stable"] == [True]  # --keep-serving

    stop = _cli("stop", "--state-dir", str(state))
    assert stop.returncode == 0 and stop.stdout.startswith("stopped "), stop.stdout + stop.stderr
    after = json.loads(_cli("status", "lean-rag-inference", "--platform", "local", "--state-dir", str(state),
                            "--json").stdout)  # fmt: skip
    assert not any(r["ready"] for r in after["revisions"])
    # One promotion only: nothing to roll back to, said with exit 1 and no traceback.
    rollback = _cli("rollback", "lean-rag-inference", "--platform", "local", "--state-dir", str(state))
    assert rollback.returncode == 1 and "Traceback" not in rollback.stderr, rollback.stderr
