"""The README's Getting started, on this machine, run as printed (issue 32).

One real ``llm-rollout run-local`` (slow: a vLLM server on CPU, the whole gate) with the CPU example:
every ``.venv/bin/llm-rollout`` line of the README's first bash block under "Getting started" is run
as printed, with only the tiny model's path of this machine put in, from a scratch folder that
links ``examples/`` and ``.venv`` (so ``build/local-state`` is the test's own). The tiny model is
promoted, ``status`` shows it serving (``--keep-serving``), ``rollback`` says there is nothing to
restore yet, ``stop`` stops the kept server.

Also as printed: "Your own model" (``cp`` of the CPU example, ``run-local --pipeline llm-optimize-deploy``)
with its placeholder folder replaced by the tiny model's, and "Against a cluster from your machine"
(``run-local --platform kserve``) against the test API server and the KServe controller stand-in, with a
real vLLM behind the address map. The README's ``status``/``rollback -n`` lines are
``tests/cluster/test_readme_commands.py``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.serving import run_stoppable

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
        done = run_stoppable(argv, cwd=tmp_path, timeout=900)
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


def your_own_model_lines() -> list[str]:
    """The bash block under "Your own model" (``cp`` and ``run-local``), continuation lines joined, comments cut."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("Your own model, the same way") :]
    start = section.index("```bash\n") + 8
    block = section[start : section.index("\n```", start)].replace("\\\n", " ")
    return [" ".join(line.split("  #")[0].split()) for line in block.splitlines() if line.strip()]


def test_your_own_model_as_printed_with_the_tiny_model(tmp_path, tiny_model, vllm_python):
    """The README's "Your own model" lines with only its placeholder folder (~/models/my-llama) replaced
    by the tiny model's, as the README says: the copied CPU spec unedited, the model compressed, served
    beside the original and promoted."""
    for name in ("examples", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    lines = your_own_model_lines()
    assert [shlex.split(line)[0] for line in lines] == ["cp", ".venv/bin/llm-rollout"]
    assert "~/models/my-llama" in lines[1]
    copied = subprocess.run(shlex.split(lines[0]), cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert copied.returncode == 0 and (tmp_path / "my-spec.yaml").is_file(), copied.stderr
    argv = shlex.split(lines[1].replace("~/models/my-llama", str(tiny_model)))
    done = run_stoppable(argv, cwd=tmp_path, timeout=1100)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "== llm-optimize-deploy: PROMOTED" in done.stdout, done.stdout[-4000:]
    state = json.loads((tmp_path / "build" / "local-state" / "state.json").read_text())
    assert state["stable"]["model_uri"] != str(tiny_model)  # the compressed copy serves, not the original


def cluster_run_local_line() -> str:
    """The README's ``... llm-rollout run-local --platform kserve ...`` line (section "Against a cluster from
    your machine"), continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)\n```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "run-local --platform kserve" in line:
                return " ".join(line.split("  #")[0].split())
    raise AssertionError("no run-local --platform kserve line in the README")


@pytest.mark.cluster
@pytest.mark.parallel  # promoted or rolled back, both pass: the outcome may depend on speed, the test does not
def test_run_local_against_a_cluster_as_printed(kube_cluster, tmp_path, tiny_model, vllm_python):
    """The README's run-local against a cluster, as printed, with two of its values this test's own: the
    kubeconfig (the test API server, the KServe controller stand-in reconciling team-a) and the port-forward's
    address (a real vLLM serving the tiny model under the team example's model name, as the predictor's pods
    would). The team example's GPU SLO decides; whatever it decides, the run gets that far: every step ran
    against the cluster and the outcome is promoted (0) or rolled back (3), never a failed step or bad input."""
    from llm_rollout.kube import INFERENCE_SERVICES, LEASES, KubeClient
    from llm_rollout.spec import load_spec
    from tests.fixtures.serving import start_vllm
    from tests.reconciler import Behaviour, Reconciler, delete_without_controller

    spec = load_spec(str(ROOT / "examples" / "kserve-team.yaml"))
    tokens = shlex.split(cluster_run_local_line())
    at = tokens.index("llm-rollout")
    assignments, argv = dict(t.split("=", 1) for t in tokens[:at]), tokens[at:]
    assert set(assignments) == {"KUBECONFIG", "LLM_ROLLOUT_ADDRESS_MAP"}
    assert "http://127.0.0.1:8080" in assignments["LLM_ROLLOUT_ADDRESS_MAP"]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    kubeconfig = kube_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    stand_in = Reconciler(kube_cluster.configuration(), default=Behaviour(), namespace=spec.namespace)
    stand_in.start()
    try:
        with start_vllm(tiny_model, spec.model.name, log_path=tmp_path / "vllm.log") as server:
            env = {
                **os.environ,
                "KUBECONFIG": str(kubeconfig),
                "LLM_ROLLOUT_ADDRESS_MAP": assignments["LLM_ROLLOUT_ADDRESS_MAP"].replace(
                    "http://127.0.0.1:8080", server.base_url
                ),
                "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
            }
            done = run_stoppable(argv, cwd=tmp_path, env=env, timeout=1100)
    finally:
        stand_in.stop()
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode in (0, 3), done.stdout[-4000:] + done.stderr[-2000:]
    outcome = "PROMOTED" if done.returncode == 0 else "ROLLED BACK"
    assert f"== llm-deploy: {outcome}" in done.stdout, done.stdout[-4000:]
    client = KubeClient.from_kubeconfig(str(kubeconfig))
    isvc = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    if done.returncode == 0:
        assert isvc["spec"]["predictor"]["model"]["storageUri"] == spec.model.uri
    else:
        assert isvc is None  # a first rollout that failed validation leaves nothing behind
    delete_without_controller(client, spec.service_name, spec.namespace)  # the stand-in stopped: its finalizer too
    client.delete(LEASES, f"{spec.service_name}-rollout", spec.namespace)
