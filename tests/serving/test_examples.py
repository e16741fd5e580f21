"""The README's Getting started, on this machine, run as printed (issue 32).

One real ``llm-rollout run-local`` (slow: a vLLM server on CPU, the whole gate) with the CPU example:
every ``.venv/bin/llm-rollout`` line of the README's first bash block under "Getting started" is run
as printed, with only the tiny model's path of this machine put in, from a scratch folder that
links ``examples/`` and ``.venv`` (so ``build/local-state`` is the test's own). The tiny model is
promoted, ``status`` shows it serving (``--keep-serving``), ``rollback`` says there is nothing to
restore yet, ``stop`` stops the kept server.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.serving, pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
TINY = "~/.cache/llm-rollout/models/tiny-llama"


def getting_started_commands() -> list[str]:
    """The ``llm-rollout`` lines of the first bash block under "## Getting started", comments cut."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Getting started") :]
    start = section.index("```bash\n") + 8
    block = section[start : section.index("\n```", start)]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith(".venv/bin/llm-rollout")]


def test_the_example_header_prints_the_readme_command():
    header = re.findall(r"^#\s+(llm-rollout run-local .*)$", (ROOT / "examples" / "local-cpu.yaml").read_text(), re.M)
    assert header and any(c.removeprefix(".venv/bin/").startswith(header[0]) for c in getting_started_commands())


def test_getting_started_on_this_machine_as_printed(tmp_path, tiny_model, vllm_python):
    # The tiny model's corpus is shipped beside the example as its reference texts.
    assert (ROOT / "examples" / "tiny-reference.jsonl").read_text() == (tiny_model / "reference.jsonl").read_text()
    for name in ("examples", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    commands = getting_started_commands()
    assert [shlex.split(c)[1] for c in commands] == ["run-local", "status", "rollback", "stop"]
    results = {}
    for command in commands:
        argv = shlex.split(command.replace(TINY, str(tiny_model)))
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        results[argv[1]] = done
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        if argv[1] == "run-local":
            assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
            assert "== llm-deploy: PROMOTED" in done.stdout
            [run_dir] = (tmp_path / "build" / "run-local").iterdir()
            steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
            [validate] = [s for s in steps if s["step"] == "validate-deployment"]
            # The report the step log names is the one that stays.
            assert Path(validate["report"]).is_file()
            assert f"validate: report {validate['report']}" in (run_dir / "run.log").read_text()
        elif argv[1] == "status":
            assert done.returncode == 0, done.stderr
            assert "stable: " in done.stdout and str(tiny_model) in done.stdout
            assert re.search(r"^stable\s+\S+\s+\S*\s+yes", done.stdout, re.M), done.stdout  # --keep-serving
        elif argv[1] == "rollback":
            # One promotion so far: nothing to restore, said in one line with exit 1.
            assert done.returncode == 1 and "error:" in done.stderr, done.stderr
        else:
            assert done.returncode == 0 and done.stdout.startswith("stopped "), done.stdout + done.stderr
    assert (tmp_path / "build" / "local-state" / "state.json").is_file()
