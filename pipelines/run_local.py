"""``llm-rollout run-local``: a whole pipeline on this machine, and ``--demo`` (``make demo``).

The pipeline is the same one KFP runs (compiled to the same IR), executed by ``kfp.local`` with
the ``local`` platform: every step runs as a subprocess of the runner, deploy starts a real vLLM
OpenAI server, promote records the model in a local state directory. This process:

1. checks the inputs, compiles the pipelines and renders the manifests the kserve platform would
   apply for the same spec (so a user sees what a cluster run would do);
2. optionally starts a baseline server (e.g. the unquantized model) the validation compares to;
3. runs the pipeline in a child process whose output goes to ``run.log``; progress lines are shown;
4. stops every server the run started (unless ``--keep-serving``), also on Ctrl-C and SIGTERM;
5. prints a summary from the steps' run log: status and duration per step, the verdict with its
   reasons, key metrics and where everything is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_rollout.envs import cache_root
from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.local.state import ServerRecord
from llm_rollout.spec import RolloutSpec, deep_merge, load_spec, parse_spec, spec_to_json
from llm_rollout.steplog import RUN_LOG_ENV, read_run_log

STEPS = {
    "llm-deploy": [
        "prepare-rollout",
        "register-runtime",
        "deploy-model",
        "validate-deployment",
        "promote-model",
        "rollback-model",
    ],
    "llm-optimize-deploy": [
        "prepare-rollout",
        "optimize-model",
        "register-runtime",
        "deploy-model",
        "validate-deployment",
        "promote-model",
        "rollback-model",
    ],
}
"""The steps of each pipeline in order (promote and rollback are alternatives), then finalize."""

CACHE = cache_root()
TINY_MODEL = CACHE / "models" / "tiny-llama"
SCRAMBLED_MODEL = CACHE / "models" / "tiny-llama-scrambled"
RETRAINED_MODEL = CACHE / "models" / "tiny-llama-retrained"
DEEP_MODEL = CACHE / "models" / "tiny-llama-deep"

DEMO_SPEC: dict[str, Any] = {
    "name": "lean-rag-inference",
    "platform": "local",
    "model": {"name": "lean-rag"},
    # The tiny model's context; the serving design's 4096 would not fit its position table.
    "runtime": {"max_model_len": 256},
    "validation": {
        "readiness_timeout_s": 120,
        # One level, the one the SLO judges: a single-stream level judges nothing here and is the
        # slowest one on a slow candidate (the deep copy's c1 took 60 s of run 3 on a busy machine).
        "load": {
            "concurrency": [4],
            "num_prompts": 24,
            "input_words": 16,
            "output_tokens": 16,
            "warmup_requests": 2,
            "max_duration_s": 60,
        },
        # CPU-realistic thresholds: the serving design's GPU SLO (p95 TTFT < 100 ms at 10-20
        # concurrent requests, 2x the uncompressed original) is the default of a kserve spec.
        "slo": {
            "checks": ["p95_ttft_ms <= 1500", "p95_tpot_ms <= 250", "error_rate == 0"],
            "judge_concurrency": [4],
            "min_successful_requests": 10,
        },
        # W8A8 on a 2-core CPU is not faster than bf16 (no int8 GEMM win at this size): the
        # recovery keeps the agreement check and asks only that speed is not lost badly.
        "recovery": {"min_token_agreement": 0.9, "checks": ["output_throughput_ratio_vs_baseline >= 0.3"]},
        # The comparison with the stable revision keeps its defaults: the local servers run one
        # engine process each (llm_rollout.local.server), which measures steadily enough here.
    },
}
"""The demo's spec: the tiny model on CPU, its probes as the correctness suite."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_DONE = re.compile(r"Task '([^']+)' finished with status (\w+)")
_TASK_STARTED = re.compile(r"Executing task '([^']+)'")
CACHEABLE_STEPS = ("optimize-model",)
"""The steps pipelines.py leaves cacheable (every other step is ``_no_cache``)."""


@dataclass
class RunSummary:
    """What one local run did, read back from the steps' run log.

    Attributes:
        pipeline: The pipeline's name.
        outcome: ``promoted``, ``rolled back``, ``already promoted`` or ``failed``.
        returncode: The runner process's exit code.
        steps: The run-log records (step, status, seconds, outcome fields), in order.
        out_dir: Where the run's files are.
        seconds: Wall time of the pipeline run.
        cached: The steps kfp.local took from its cache (they wrote no run-log record).
    """

    pipeline: str
    outcome: str
    returncode: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path = Path(".")
    seconds: float = 0.0
    cached: list[str] = field(default_factory=list)

    def step(self, name: str) -> dict[str, Any] | None:
        """The last record of step ``name``, or None when it did not run."""
        found = [s for s in self.steps if s.get("step") == name]
        return found[-1] if found else None

    @property
    def verdict(self) -> str | None:
        """The validation verdict, when validation ran."""
        rec = self.step("validate-deployment")
        return rec.get("verdict") if rec else None


def _print(message: str = "") -> None:
    print(message, flush=True)


def _outcome(steps: list[dict[str, Any]], returncode: int) -> str:
    by_name = {s["step"]: s for s in steps}
    failed = [s for s in steps if s.get("status") != "succeeded"]
    validate = by_name.get("validate-deployment") or {}
    if validate.get("verdict") == "already-promoted":
        return "already promoted"
    if failed or returncode != 0:
        return "failed"
    if "promote-model" in by_name:
        return "promoted"
    if "rollback-model" in by_name:
        return "rolled back"
    return "failed"


def _show_line(text: str) -> str | None:
    """The part of a runner output line (colours stripped) worth showing live, or None."""
    if "[llm-rollout]" in text:
        return "  " + text[text.index("[llm-rollout]") + len("[llm-rollout] ") :]
    m = _TASK_DONE.search(text)
    if m and m.group(2) != "SUCCESS":
        return f"  task {m.group(1)}: {m.group(2)}"
    if text.startswith(("llmcompressor", "vllm")) or " ERROR " in text or text.startswith("ERROR"):
        return "  " + text
    return None


def _inner_main(args_file: str) -> int:
    """The child process: runs the pipeline with kfp.local (its noisy output goes to run.log)."""
    from kfp import local

    from kfp_llm_rollout.pipelines.pipelines import PIPELINES

    args = json.loads(Path(args_file).read_text())
    cache_root = args.get("cache_root")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=args["pipeline_root"],
        raise_on_error=False,
        **({"enable_caching": True, "cache_root": cache_root} if cache_root else {}),
    )
    build = PIPELINES[args["pipeline"]]
    build()(**args["arguments"])
    return 0


def _compile_and_render(spec: RolloutSpec, out: Path) -> tuple[Path, Path]:
    from kfp_llm_rollout.pipelines.compile import compile_pipelines
    from llm_rollout.render import write_manifests

    pipelines_dir = out / "pipelines"
    compile_pipelines(pipelines_dir)
    manifests_dir = out / "manifests"
    kserve_spec = parse_spec(deep_merge(json.loads(spec_to_json(spec)), {"platform": "kserve"}))
    write_manifests(kserve_spec, manifests_dir)
    return pipelines_dir, manifests_dir


def run_pipeline(
    pipeline: str,
    model: str,
    spec: RolloutSpec,
    *,
    out_dir: str | Path,
    scheme: str = "W8A8",
    recipe: str = "",
    calibration_data: str = "",
    quiet: bool = False,
    cache_root: str | Path | None = None,
) -> RunSummary:
    """Runs one pipeline under kfp.local in a child process and reads back its run log.

    The caller owns the servers' lifetime (:func:`llm_rollout.local.session.local_session`).

    Args:
        pipeline: ``llm-deploy`` or ``llm-optimize-deploy``.
        model: The model directory (the optimize step's input for optimize-deploy), or a model
            URI (``s3://`` ...) for the kserve platform.
        spec: The rollout spec (either platform: kserve steps use ``$KUBECONFIG``).
        out_dir: This run's directory (run log, runner output, KFP pipeline root).
        scheme: Quantization scheme (optimize-deploy).
        recipe: llmcompressor recipe instead of the scheme (optimize-deploy).
        calibration_data: Calibration data (optimize-deploy).
        quiet: Do not print progress lines.
        cache_root: Cache the cacheable steps (optimize-model) across runs in this directory, as
            KFP's cache does on a cluster (kfp.local caches nothing by default).

    Returns:
        The run's summary.
    """
    if pipeline not in STEPS:
        raise SpecError("--pipeline", f"unknown pipeline {pipeline!r}", f"choose one of {', '.join(STEPS)}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_log = out / "steps.jsonl"
    run_log.unlink(missing_ok=True)
    model_uri = model if "://" in model else str(Path(model).resolve())
    # The pipelines default to platform kserve (a run from the KFP UI); name the spec's explicitly.
    # A rollback is an answer here (the summary says it), not a failed run as in the KFP UI.
    arguments: dict[str, Any] = {
        "model_uri": model_uri,
        "spec": spec_to_json(spec),
        "platform": spec.platform,
        "fail_on_rollback": False,
    }
    if pipeline == "llm-optimize-deploy":
        arguments.update({"scheme": scheme, "recipe": recipe, "calibration_data": calibration_data})
    args_file = out / "runner-args.json"
    args_file.write_text(
        json.dumps(
            {
                "pipeline": pipeline,
                "pipeline_root": str(out / "kfp"),
                "arguments": arguments,
                "cache_root": str(Path(cache_root).resolve()) if cache_root else None,
            },
            indent=2,
        )
    )
    env = dict(os.environ)
    env[RUN_LOG_ENV] = str(run_log)
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "kfp_llm_rollout.pipelines.run_local", "--inner", str(args_file)]
    started = time.monotonic()
    executed: set[str] = set()
    with open(out / "run.log", "w") as log_fh:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_fh.write(line)
                text = _ANSI.sub("", line).strip()
                started_task = _TASK_STARTED.search(text)
                if started_task:
                    executed.add(started_task.group(1))
                shown = None if quiet else _show_line(text)
                if shown:
                    _print(shown)
            returncode = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    steps = read_run_log(run_log)
    # kfp.local logs a cache hit with the root logger outside its logging context, so it never
    # prints (kfp/local/orchestrator/task_executor.py): a cacheable step that did not execute while
    # deploy-model, which consumes its output, did was taken from the cache.
    cached = [s for s in CACHEABLE_STEPS if s in STEPS[pipeline] and s not in executed and "deploy-model" in executed]
    return RunSummary(
        pipeline=pipeline,
        outcome=_outcome(steps, returncode),
        returncode=returncode,
        steps=steps,
        out_dir=out,
        seconds=time.monotonic() - started,
        cached=cached,
    )


def format_summary(summary: RunSummary, *, extra_paths: dict[str, str] | None = None) -> str:
    """The closing summary of a run: steps, verdict and reasons, key metrics, paths."""
    lines = [f"== {summary.pipeline}: {summary.outcome.upper()} in {summary.seconds:.0f} s"]
    seen = {s.get("step") for s in summary.steps}
    for rec in summary.steps:
        status = "ok" if rec.get("status") == "succeeded" else rec.get("status", "?").upper()
        detail = rec.get("message") or rec.get("error") or ""
        lines.append(f"  {rec['step']:<22} {status:<7} {rec.get('seconds', 0):6.1f} s  {str(detail)[:100]}")
    for name in STEPS[summary.pipeline]:
        if name in summary.cached:
            lines.append(f"  {name:<22} {'cached':<7}")
        elif name not in seen and name not in ("promote-model", "rollback-model"):
            lines.append(f"  {name:<22} {'not run':<7}")
    validate = summary.step("validate-deployment") or {}
    if validate.get("verdict"):
        lines.append(f"  verdict: {validate['verdict']}")
        for reason in str(validate.get("summary", "")).splitlines():
            lines.append(f"    - {reason}")
        metrics = validate.get("metrics") or {}
        # Numbers only: a kserve run's metrics also carry structured evidence (e.g. capacity per level).
        numbers = sorted((k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        if numbers:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in numbers[:12])
            lines.append(f"  key metrics: {shown}")
    paths = {"run directory": str(summary.out_dir), "runner output": str(summary.out_dir / "run.log")}
    if validate.get("report"):
        paths["report"] = validate["report"]
    promote = summary.step("promote-model") or {}
    if promote.get("analysis_report"):  # the canary steps' live analyses (written after the validation report)
        paths["live analysis report"] = promote["analysis_report"]
    paths.update(extra_paths or {})
    for label, path in paths.items():
        lines.append(f"  {label + ':':<22} {path}")
    return "\n".join(lines)


def _check_model_dir(path: str, flag: str) -> str:
    """The model directory ``path`` as an absolute path; bad input is a SpecError naming ``flag``."""
    from llm_rollout.model_files import check_model_dir

    scheme = path.split("://", 1)[0] if "://" in path else ""
    if scheme and scheme != "file":
        raise SpecError(
            flag,
            f"{path!r} is a {scheme}:// URI; run-local serves a model directory on this machine",
            "copy the model here first (e.g. `aws s3 cp --recursive s3://bucket/model ./model`) and pass "
            f"{flag} ./model; a URI is rolled out on a cluster: `llm-rollout submit --param model_uri=...`",
        )
    try:
        return str(check_model_dir(path, field=flag))
    except SpecError:
        raise
    except PermanentError as err:
        raise SpecError(
            flag,
            str(err).removeprefix(f"{flag} "),
            f"pass {flag} DIR, a Hugging Face model directory; the tiny test model is "
            f"{TINY_MODEL} (make serving-env writes it)",
        ) from None


def run_local(
    *,
    pipeline: str,
    model: str,
    spec: RolloutSpec,
    out_dir: str | Path,
    baseline: str | None = None,
    keep_serving: bool = False,
    scheme: str = "W8A8",
    recipe: str = "",
    calibration_data: str = "",
) -> RunSummary:
    """``llm-rollout run-local``: one pipeline run with the local platform, then the summary.

    Args:
        pipeline: ``llm-deploy`` or ``llm-optimize-deploy``.
        model: The model directory.
        spec: The rollout spec (its platform is forced to ``local``).
        out_dir: Where the run's files go.
        baseline: The uncompressed original to serve beside the candidate for the recovery
            checks (``validation.recovery``). The stable model, when it serves, is compared with
            the candidate either way (``validation.comparison``).
        keep_serving: Leave the promoted model's server running after the run.
        scheme: Quantization scheme (optimize-deploy).
        recipe: llmcompressor recipe (optimize-deploy).
        calibration_data: Calibration data (optimize-deploy).

    Returns:
        The run's summary (also printed).
    """
    from llm_rollout.local.session import local_session, start_baseline

    if spec.platform != "local":
        spec = spec.model_copy(update={"platform": "local"})
    model = _check_model_dir(model, "--model")
    if baseline:
        baseline = _check_model_dir(baseline, "--baseline")
    if pipeline == "llm-optimize-deploy" and not recipe:
        scheme = _check_scheme_name(scheme)
        _check_scheme_runs_here(scheme, spec)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["LLM_ROLLOUT_STATE_DIR"] = str(Path(spec.local.state_dir).expanduser().resolve())
    pipelines_dir, manifests_dir = _compile_and_render(spec, out)
    _print(f"== {pipeline} on this machine: model {model}")
    if spec.local.device == "cpu" and spec.validation.slo.checks == type(spec.validation.slo)().checks:
        # The default SLO is the serving design's GPU target: on a CPU every model misses it (issue 32).
        _print(
            "   note: the SLO is the serving design's GPU target (p95 TTFT <= 100 ms at 10 and 20 streams); "
            "a CPU misses it and the model is rolled back. A spec sized for CPU: examples/local-cpu.yaml"
        )
    with local_session(spec.local.state_dir, keep_serving=keep_serving):
        if baseline:
            base = start_baseline(spec, model_dir=baseline, run_id=out.name)
            spec = _with_baseline(spec, base)
        summary = run_pipeline(
            pipeline, model, spec, out_dir=out, scheme=scheme, recipe=recipe, calibration_data=calibration_data
        )
    paths = {
        "compiled pipeline": str(pipelines_dir / f"{pipeline}.yaml"),
        "kserve manifests": str(manifests_dir),
        "state directory": str(Path(spec.local.state_dir).expanduser()),
    }
    _print(format_summary(summary, extra_paths=paths))
    return summary


def _check_scheme_name(scheme: str) -> str:
    """``--scheme`` checked before anything runs (the optimize step would refuse it minutes later)."""
    from llm_rollout.optimize_inputs import check_scheme

    try:
        return check_scheme(scheme, preset_schemes=None)
    except SpecError as err:
        raise SpecError(
            "--scheme", err.problem, err.fix.replace("recipe YAML (recipe_path)", "--recipe FILE")
        ) from None


def _check_scheme_runs_here(scheme: str, spec: RolloutSpec) -> None:
    """Refuses ``--scheme`` up front when the local vLLM build has no kernel for it (before optimize)."""
    from llm_rollout.cpu_kernels import check_scheme, probe_build
    from llm_rollout.local.server import vllm_python

    check_scheme(scheme, probe_build(vllm_python(spec)), field_name="--scheme", subject="the requested scheme")


def _with_baseline(spec: RolloutSpec, base: ServerRecord) -> RolloutSpec:
    validation = spec.validation.model_copy(
        update={
            "recovery": spec.validation.recovery.model_copy(
                update={"base_url": base.endpoint_url, "base_model": base.served_model_name}
            )
        }
    )
    return spec.model_copy(update={"validation": validation})


# The demo --------------------------------------------------------------------------------------


def demo_spec(state_dir: str | Path, probes: str | Path, texts: str | Path | None = None) -> RolloutSpec:
    """The demo's spec with its state directory, correctness suite and reference texts.

    Args:
        state_dir: The local state directory.
        probes: The correctness suite (the tiny model's ``probes.json``).
        texts: The quality question's reference texts (default: ``reference.jsonl`` beside
            ``probes``, the tiny model's corpus: its own domain, where a damaged copy shows).
    """
    texts = texts or Path(probes).with_name("reference.jsonl")
    validation = {"suite_file": str(probes), "quality": {"texts": str(texts)}}
    return parse_spec(deep_merge(DEMO_SPEC, {"local": {"state_dir": str(state_dir)}, "validation": validation}))


@dataclass(frozen=True)
class DemoRun:
    """One run of the demo's story.

    Attributes:
        label: ``run 1`` ...
        pipeline: ``llm-optimize-deploy`` or ``llm-deploy``.
        model: The model directory fed to it.
        expect: The outcome the story needs.
        what: One line for the user.
        recovery: Serve the uncompressed original beside it (only for the compressing run).
    """

    label: str
    pipeline: str
    model: Path
    expect: str
    what: str
    recovery: bool = False


DEMO_RUNS: tuple[DemoRun, ...] = (
    DemoRun(
        "run 1", "llm-optimize-deploy", TINY_MODEL, "promoted",
        "the tiny model compressed to W8A8; recovery against its uncompressed original", recovery=True,
    ),
    DemoRun(
        "run 2", "llm-optimize-deploy", RETRAINED_MODEL, "promoted",
        "a retrained copy (weights moved by 5 % noise), compressed like run 1's: compared with the stable run 1 serves",
    ),
    DemoRun(
        "run 3", "llm-deploy", DEEP_MODEL, "rolled back",
        "a regressed copy (same answers, 10 extra layers, slower): the comparison must catch it",
    ),
    DemoRun(
        "run 4", "llm-deploy", SCRAMBLED_MODEL, "rolled back",
        "a damaged copy (weights scrambled: it serves and passes the smoke checks): the quality question must catch it",
    ),
    DemoRun(
        "run 5", "llm-optimize-deploy", RETRAINED_MODEL, "already promoted",
        "run 2's model again (a scheduled rerun: optimize-model's cached result)",
    ),
)  # fmt: skip
"""``make demo``'s story: compression kept the model, a retrain replaces it, a regression and a
damaged copy are rolled back, a rerun of what serves is a no-op.

The retrain goes through ``llm-optimize-deploy`` as a scheduled retrain-and-redeploy does, so the
comparison with the stable weighs like with like, two W8A8 models. Fed uncompressed, run 2 compared
float32 with run 1's W8A8 inside a "same speed" story; in one ``make bench`` it measured 8-14 %
slower to its first token and ended undecided after 24 blocks (how much of that was the precision is
not established)."""


def _demo_questions(summary: RunSummary) -> list[str]:
    """The gate's questions of a run as the report answers them (from its ``validation.json``)."""
    validate = summary.step("validate-deployment") or {}
    path = Path(validate["results"]) if validate.get("results") else None  # the full results JSON
    if path is None or not path.is_file():
        return []
    lines = []
    for q in json.loads(path.read_text()).get("answers") or []:
        if q.get("summarized", True):
            lines.append(f"  {q['question']}: {str(q['said']).upper()}")
            lines.extend(f"      {line}" for line in q.get("lines") or [])
    return lines


class _BackgroundBaseline:
    """The recovery question's baseline server, started in a thread while the run compresses.

    Its port is chosen up front, so the run's spec can name its address before it serves; the
    validation step waits for it as for any endpoint (``readiness_timeout_s``). Starting it
    beside the optimize and register steps and the candidate's start (each mostly one core of
    interpreter and torch import) takes it off the demo's critical path.

    Attributes:
        record: What the spec needs of it (address and served name) until :meth:`finish`.
        seconds: How long its start took (set by :meth:`finish`).
    """

    def __init__(self, spec: RolloutSpec, model_dir: Path) -> None:
        import threading

        from llm_rollout.local.session import start_baseline
        from llm_rollout.procs import free_port

        port = free_port(spec.local.host)
        host = "127.0.0.1" if spec.local.host in ("0.0.0.0", "", "::") else spec.local.host
        self.record = ServerRecord.model_construct(
            endpoint_url=f"http://{host}:{port}", served_model_name=spec.served_model_name
        )
        self.seconds = 0.0
        self._started = time.monotonic()
        self._result: ServerRecord | BaseException | None = None

        def _start() -> None:
            try:
                self._result = start_baseline(spec, model_dir=str(model_dir), run_id="demo", port=port)
            except BaseException as err:  # handed to the main thread by finish()
                self._result = err
            self.seconds = round(time.monotonic() - self._started, 2)

        self._thread = threading.Thread(target=_start, name="demo-baseline", daemon=True)
        self._thread.start()

    def finish(self) -> ServerRecord:
        """Waits for the start to end; its record (to stop), or the start's error raised."""
        self._thread.join()
        if isinstance(self._result, BaseException):
            raise self._result
        assert self._result is not None
        return self._result


def run_demo(out_dir: str | Path = "build/demo", *, keep_serving: bool = False) -> int:
    """``make demo``: the rollout story in five runs on the tiny model (:data:`DEMO_RUNS`).

    Run 1 compresses the tiny model (W8A8), validates it against the uncompressed model served
    beside it (recovery: token agreement and speed) and promotes it. Run 2 compresses and deploys
    a retrained copy: compared with run 1's model, which keeps serving (the suite's score, non-inferiority of
    TTFT, TPOT and throughput; the quality of the reference texts), it is promoted. Run 3 deploys a
    slower copy: the comparison calls it inferior and it is rolled back, run 2's model still
    serving. Run 4 deploys a scrambled copy: the quality question (likelihood of the tiny model's
    corpus) calls it worse than guessing and it is rolled back before any speed is measured. Run 5
    feeds run 2's model again, as a schedule would: optimize-model's result comes from the runs'
    KFP cache (``<out_dir>/kfp-cache``), already promoted, nothing deployed.

    Args:
        out_dir: The demo's directory (emptied first; holds the state, every run, the reports).
        keep_serving: Leave the promoted model's server running at the end.

    Returns:
        0 when every run ended as the story needs, else 1.
    """
    from llm_rollout.local.platform import LocalPlatform
    from llm_rollout.local.server import stop_server
    from llm_rollout.local.session import local_session

    for path in {r.model for r in DEMO_RUNS}:
        if not (path / "config.json").is_file():
            raise PermanentError(f"the demo needs the tiny models at {path}; create them with `make serving-env`")
    out = Path(out_dir).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    state_dir = out / "state"
    spec = demo_spec(state_dir, TINY_MODEL / "probes.json")
    os.environ["LLM_ROLLOUT_STATE_DIR"] = str(state_dir)
    started = time.monotonic()
    pipelines_dir, manifests_dir = _compile_and_render(spec, out)
    _print(f"== demo: the rollout story in {len(DEMO_RUNS)} runs on this machine (everything under {out})")
    _print(f"   compiled pipelines: {pipelines_dir}    kserve manifests for this spec: {manifests_dir}")
    summaries: list[RunSummary] = []
    baseline_start_s: dict[str, float] = {}
    with local_session(str(state_dir), keep_serving=keep_serving):
        for run in DEMO_RUNS:
            _print(f"\n== {run.label}: {run.pipeline} with {run.what} (expected: {run.expect})")
            base = None
            if run.recovery:
                _print("   serving the uncompressed tiny model beside it (started while the run compresses)")
                base = _BackgroundBaseline(spec, TINY_MODEL)
            # On an error or Ctrl-C the session's cleanup stops the baseline (recorded, or owned
            # while it starts); waiting here for its start to end would only delay that.
            summary = run_pipeline(
                run.pipeline, str(run.model), _with_baseline(spec, base.record) if base else spec,
                out_dir=out / run.label.replace(" ", "-"), cache_root=out / "kfp-cache",
            )  # fmt: skip
            if base:
                stop_server(base.finish())  # its CPU is the next runs' to measure with
                baseline_start_s[run.label] = base.seconds
            _print(format_summary(summary))
            questions = _demo_questions(summary)
            if questions:
                _print("  the gate's questions:")
                _print("\n".join(questions))
            summaries.append(summary)
    status = LocalPlatform(spec).status()
    _print(f"\n== local state after {len(DEMO_RUNS)} runs")
    stable = status.stable
    if stable:
        _print(f"  promoted model: {stable.member} ({stable.model_uri}), verdict {stable.verdict}")
    for entry in status.history:
        why = str(entry.reason or entry.summary or "").splitlines()
        _print(f"  {entry.at}  {entry.action:<9} {entry.member}  {why[0][:90] if why else ''}")
    _print(f"  state file: {state_dir / 'state.json'}")
    ok = all(s.outcome == r.expect for s, r in zip(summaries, DEMO_RUNS, strict=True))
    _print(
        f"\n== demo {'finished as expected' if ok else 'did NOT end as expected'} "
        f"in {time.monotonic() - started:.0f} s: "
        + "; ".join(f"{r.label} {s.outcome}" for s, r in zip(summaries, DEMO_RUNS, strict=True))
    )
    (out / "demo-summary.json").write_text(
        json.dumps(
            {
                "ok": ok,
                "seconds": time.monotonic() - started,
                "runs": [
                    {"label": r.label, "pipeline": r.pipeline, "model": str(r.model), "outcome": s.outcome}
                    | {"seconds": round(s.seconds, 2), "baseline_start_s": baseline_start_s.get(r.label)}
                    | {"steps": s.steps, "cached": s.cached, "run_dir": str(s.out_dir)}
                    for s, r in zip(summaries, DEMO_RUNS, strict=True)
                ],
                "status": status.model_dump(mode="json"),
            },
            indent=2,
            default=str,
        )
    )
    return 0 if ok else 1


def add_parser(sub: Any) -> None:
    """Adds ``run-local`` to the ``llm-rollout`` subcommands."""
    p = sub.add_parser("run-local", help="run a pipeline on this machine (kfp.local + vLLM), or --demo")
    p.add_argument(
        "--demo",
        action="store_true",
        help="the demo: compressed, then retrained, promoted; a regression rolled back; a rerun a no-op (make demo)",
    )
    p.add_argument(
        "--pipeline", default="llm-deploy", choices=sorted(STEPS), help="which pipeline (default llm-deploy)"
    )
    p.add_argument("--model", help="model directory (the optimize step's input for llm-optimize-deploy)")
    p.add_argument("--spec", help="rollout spec file (YAML/JSON); its platform is replaced by --platform")
    p.add_argument(
        "--platform",
        choices=("local", "kserve"),
        default="local",
        help="local (default: vLLM here) or kserve: the steps run here against the cluster of $KUBECONFIG "
        "(--model is then a URI the cluster reads)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field by its dotted path; VALUE is YAML (e.g. --set validation.load.concurrency=[1,4])",
    )
    p.add_argument("--baseline", help="the uncompressed original to serve beside the candidate (recovery checks)")
    p.add_argument("--scheme", default="W8A8", help="quantization scheme for llm-optimize-deploy (default W8A8)")
    p.add_argument("--recipe", default="", help="llmcompressor recipe YAML instead of --scheme")
    p.add_argument("--calibration-data", default="", help="calibration text file or dataset directory")
    p.add_argument("--state-dir", help="local state directory (default: the spec's local.state_dir)")
    p.add_argument("--out", help="directory for this run's files (default build/run-local/<time>, build/demo)")
    p.add_argument("--keep-serving", action="store_true", help="leave the promoted model's server running")
    p.set_defaults(func=_command)


def _overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError("--set", f"{item!r} is not FIELD=VALUE", "write e.g. --set runtime.max_model_len=256")
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return result


def _against_cluster(args: Any, spec: RolloutSpec, out: str) -> int:
    """``run-local --platform kserve``: the same pipeline under kfp.local, its steps against ``$KUBECONFIG``."""
    if "://" not in args.model or args.model.startswith("file://"):
        raise SpecError(
            "--model",
            f"{args.model!r} is a path on this machine; with --platform kserve the cluster loads the model",
            "give a URI its storage initializer reads, e.g. --model s3://bucket/path/to/model (hf://, pvc://, gs://)",
        )
    for flag, given in (("--baseline", args.baseline), ("--keep-serving", args.keep_serving)):
        if given:
            raise SpecError(flag, "applies to the local platform only", f"drop {flag} with --platform kserve")
    _print(f"== {args.pipeline} against the cluster of $KUBECONFIG, namespace {spec.namespace}: model {args.model}")
    summary = run_pipeline(
        args.pipeline,
        args.model,
        spec,
        out_dir=out,
        scheme=args.scheme,
        recipe=args.recipe,
        calibration_data=args.calibration_data,
    )
    _print(format_summary(summary))
    return {"promoted": 0, "already promoted": 0, "rolled back": 3}.get(summary.outcome, 1)


def _command(args: Any) -> int:
    if args.demo:
        return run_demo(args.out or "build/demo", keep_serving=args.keep_serving)
    if not args.model:
        raise SpecError("--model", "is required (unless --demo)", "pass --model DIR, a Hugging Face model directory")
    overrides = deep_merge({"platform": args.platform}, _overrides(args.set))
    if args.state_dir:
        overrides = deep_merge(overrides, {"local": {"state_dir": args.state_dir}})
    spec = load_spec(args.spec, overrides)
    out = args.out or f"build/run-local/{time.strftime('%Y%m%d-%H%M%S')}"
    if args.platform == "kserve":
        return _against_cluster(args, spec, out)
    summary = run_local(
        pipeline=args.pipeline,
        model=args.model,
        spec=spec,
        out_dir=out,
        baseline=args.baseline,
        keep_serving=args.keep_serving,
        scheme=args.scheme,
        recipe=args.recipe,
        calibration_data=args.calibration_data,
    )
    return {"promoted": 0, "already promoted": 0, "rolled back": 3}.get(summary.outcome, 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--inner":
        sys.exit(_inner_main(sys.argv[2]))
    sys.exit(f"usage: {sys.argv[0]} --inner ARGS_FILE (internal; use `llm-rollout run-local`)")
