"""``make bench``: every benchmark of the project, one after the other, each measuring side by side.

1. The demo's pipeline runs, by phase (warm machine): wall time of ``llm-rollout run-local --demo``
   and of each of its runs, each step's duration from the run log, each vLLM start, the
   validation's phases (readiness, correctness, quality, load, the comparison and its blocks),
   and the peak memory of the whole process tree (sampled every 0.2 s). Goals (issues 5 and 30):
   under 3 minutes warm on 2 cores with every run under 60 s, peak under 6 GB.
2. Compiling both pipelines (what CI does on every change).
3. ``bench/bench_wait.py``: the watch-driven waiter vs a poller, detection latency.
4. ``bench/bench_validator.py``: the validation client vs ``vllm bench serve`` on the same server.
5. ``bench/bench_client_memory.py``: the validation client's memory at 200 concurrent streams.
6. ``bench/bench_gate_rule.py``: the comparison's sequential rule on simulated blocks, the rule
   before issue 30 and the new one side by side (false alarms, error at the margin, power,
   inconclusive endings, average blocks to a decision; a few seconds, no server).

Results are printed and written to ``build/bench/results.json``. The benchmarks do not fail on a
missed goal (the machine is shared and noisy); they report it.

Usage: ``python bench/run_all.py [--only demo,compile,wait,validator,client_memory,gate_rule]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench"
DEMO_GOAL_S = 180.0
DEMO_RUN_GOAL_S = 60.0
DEMO_PEAK_GOAL_GB = 6.0


class PeakMemory:
    """Samples the summed memory of a process and all its descendants until stopped.

    RSS counts the pages processes share (torch's libraries in every vLLM process) once per
    process; PSS splits them among the sharers, so the PSS sum is what the run really occupies.
    """

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid = pid
        self.period_s = period_s
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = pss = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    info = proc.memory_full_info()
                    total += info.rss
                    pss += getattr(info, "pss", info.rss)
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            self._stop.wait(self.period_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_demo() -> dict[str, Any]:
    """Times the demo end to end and per step, with the peak memory of its process tree."""
    out = Path(tempfile.mkdtemp(prefix="llm-rollout-bench-demo-"))
    cmd = [sys.executable, "-m", "kfp_llm_rollout.pipelines.cli", "run-local", "--demo", "--out", str(out / "demo")]
    load = os.getloadavg()  # the machine is shared: a busy one makes every phase slower
    started = time.monotonic()
    with open(out / "demo.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        with PeakMemory(proc.pid) as peak:
            returncode = proc.wait()
    seconds = time.monotonic() - started
    summary_file = out / "demo" / "demo-summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {"runs": []}
    for run in summary["runs"]:  # each run's folder, named after its label
        run.setdefault("run_dir", str(out / "demo" / run["label"].replace(" ", "-")))
    runs = [demo_run_phases(run) for run in summary["runs"]]
    slowest_run = max((r["wall_s"] or 0.0 for r in runs), default=0.0)
    result = {
        "returncode": returncode,
        "ok": summary.get("ok", False),
        "wall_s": round(seconds, 1),
        "peak_rss_gb": round(peak.peak_bytes / 1e9, 2),
        "peak_pss_gb": round(peak.peak_pss_bytes / 1e9, 2),
        "runs": runs,
        "by_phase_s": demo_time_by_phase(runs, seconds),
        "load_average_at_start": [round(x, 2) for x in load],
        "log": str(out / "demo.log"),
        "goal": (f"wall < {DEMO_GOAL_S:.0f} s, every run < {DEMO_RUN_GOAL_S:.0f} s, peak PSS < {DEMO_PEAK_GOAL_GB} GB"),
        "goal_met": seconds < DEMO_GOAL_S
        and slowest_run < DEMO_RUN_GOAL_S
        and peak.peak_pss_bytes / 1e9 < DEMO_PEAK_GOAL_GB,
    }
    print(
        f"demo: {'ok' if result['ok'] else 'NOT OK'} in {seconds:.1f} s, peak memory {result['peak_pss_gb']} GB PSS "
        f"({result['peak_rss_gb']} GB RSS summed over processes, shared pages counted in each)"
    )
    for run in runs:
        print(format_run_phases(run))
    phases = result["by_phase_s"]
    per_block = phases["comparisons"] / phases["comparison_blocks"] if phases["comparison_blocks"] else 0.0
    print(
        f"  by phase: deploy-model (vLLM starts) {phases['deploy-model']:.1f} s, comparisons "
        f"{phases['comparisons']:.1f} s ({phases['comparison_blocks']} blocks, {per_block:.1f} s a block), "
        f"register-runtime {phases['register-runtime']:.1f} s, optimize-model {phases['optimize-model']:.1f} s, "
        f"everything else {phases['everything else']:.1f} s (load average at start "
        f"{', '.join(f'{x:.2f}' for x in load)})"
    )
    print(f"  goal ({result['goal']}): {'met' if result['goal_met'] else 'NOT met'}")
    return result


def demo_time_by_phase(runs: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Where the demo's wall time went, summed over its runs: the steps that start servers or
    compress, the comparisons with the stable revision (and their blocks), and the rest."""
    out: dict[str, Any] = {
        step: round(sum(r["steps_s"].get(step, 0.0) for r in runs), 1)
        for step in ("deploy-model", "register-runtime", "optimize-model")
    }
    out["comparisons"] = round(sum(r["validation_phases_s"].get("comparison", 0.0) for r in runs), 1)
    out["comparison_blocks"] = sum(r["comparison_blocks"] or 0 for r in runs)
    named = out["deploy-model"] + out["register-runtime"] + out["optimize-model"] + out["comparisons"]
    out["everything else"] = round(wall_s - named, 1)
    return out


_HEALTH_OK = re.compile(r"(\S+): /health OK after ([0-9.]+) s")


def demo_run_phases(run: dict[str, Any]) -> dict[str, Any]:
    """One demo run's time by phase: steps, vLLM starts, and the validation's own phases.

    The vLLM starts are read from the run's log (the deploy step logs ``/health OK after S s``)
    plus the baseline the demo starts beside run 1; the validation's phases (readiness,
    correctness, quality, load, comparison ...) and the comparison's block count from the
    validation's results file.
    """
    steps = {s["step"]: round(s["seconds"], 2) for s in run["steps"]}
    starts: dict[str, float] = {}
    run_dir = Path(run.get("run_dir") or "")
    log = run_dir / "run.log"
    if run.get("run_dir") and log.is_file():
        for match in _HEALTH_OK.finditer(log.read_text(errors="replace")):
            starts[match.group(1)] = float(match.group(2))
    if run.get("baseline_start_s") is not None:
        starts["baseline (started while the run compresses)"] = float(run["baseline_start_s"])
    validation: dict[str, float] = {}
    blocks = None
    validate = next((s for s in run["steps"] if s["step"] == "validate-deployment"), None)
    results = Path(validate["results"]) if validate and validate.get("results") else None
    if results is not None and results.is_file():
        data = json.loads(results.read_text())
        for phase in data.get("phases") or []:
            validation[phase["name"]] = round(float(phase.get("seconds") or 0.0), 2)
        comparison = data.get("comparison") or {}
        blocks = comparison.get("blocks")
    return {
        "label": run["label"],
        "outcome": run["outcome"],
        "wall_s": run.get("seconds"),
        "steps_s": steps,
        "vllm_starts_s": starts,
        "validation_phases_s": validation,
        "comparison_blocks": blocks,
    }


def format_run_phases(run: dict[str, Any]) -> str:
    """The lines ``make bench`` prints for one demo run."""
    wall = f"{run['wall_s']:.1f} s" if run["wall_s"] is not None else "?"
    lines = [f"  {run['label']} ({run['outcome']}) in {wall}"]
    lines.append("    steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in run["steps_s"].items()))
    if run["vllm_starts_s"]:
        lines.append("    vLLM starts: " + ", ".join(f"{k} {v:.1f}s" for k, v in run["vllm_starts_s"].items()))
    if run["validation_phases_s"]:
        blocks = ""
        if run["comparison_blocks"]:
            per_block = run["validation_phases_s"].get("comparison", 0.0) / run["comparison_blocks"]
            blocks = f" ({run['comparison_blocks']} comparison blocks, {per_block:.1f} s a block)"
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in run["validation_phases_s"].items())
        lines.append(f"    validation: {phases}{blocks}")
    return "\n".join(lines)


def bench_compile(repeats: int = 3) -> dict[str, Any]:
    """Compiles both pipelines ``repeats`` times in fresh processes (what CI pays per change)."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "kfp_llm_rollout.pipelines.cli", "compile", "--out", tmp],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            times.append(time.monotonic() - started)
    result = {
        "repeats": repeats,
        "median_s": round(sorted(times)[len(times) // 2], 2),
        "all_s": [round(t, 2) for t in times],
    }
    print(f"compile: both pipelines in {result['median_s']} s (median of {repeats}, including interpreter start)")
    return result


def bench_script(name: str, *args: str) -> dict[str, Any]:
    """Runs one of the bench scripts, streaming its output, and keeps its JSON result when it writes one."""
    result_file = OUT / f"{name}.json"
    cmd = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT)
    data: dict[str, Any] = {"returncode": proc.returncode, "wall_s": round(time.monotonic() - started, 1)}
    if result_file.is_file():
        data["result"] = json.loads(result_file.read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        default="demo,compile,wait,validator,client_memory,gate_rule",
        help="comma-separated benchmarks to run",
    )
    args = parser.parse_args(argv)
    chosen = [x.strip() for x in args.only.split(",") if x.strip()]
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if "demo" in chosen:
        print("== demo pipeline (warm): llm-rollout run-local --demo", flush=True)
        results["demo"] = bench_demo()
    if "compile" in chosen:
        results["compile"] = bench_compile()
    if "wait" in chosen:
        results["wait"] = bench_script("bench_wait")
    if "validator" in chosen:
        results["validator"] = bench_script("bench_validator", "--json", str(OUT / "bench_validator.json"))
    if "client_memory" in chosen:
        results["client_memory"] = bench_script("bench_client_memory", "--json", str(OUT / "bench_client_memory.json"))
    if "gate_rule" in chosen:
        results["gate_rule"] = bench_script("bench_gate_rule", "--json", str(OUT / "bench_gate_rule.json"))
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {OUT / 'results.json'}")
    failed = [name for name, r in results.items() if r.get("returncode", 0) != 0]
    if failed:
        print(f"benchmarks that did not run to the end: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
