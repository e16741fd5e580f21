"""The validation client's memory at 200 concurrent streams (goal: under 100 MB of growth).

One tiny-model vLLM server (tests/fixtures/serving.py's ``start_vllm``), one clean Python process
running :func:`llm_rollout.validation.load.run_load` with 400 requests at concurrency 200; its
peak RSS (``ru_maxrss``) before and after the load is reported against the goal. A memory figure,
so it lives here and not in the tests (``tests/serving/test_validation.py`` checks only that the
200 streams really overlapped and all succeeded).

Usage: ``python bench/bench_client_memory.py [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.serving import start_vllm, tiny_model_path  # noqa: E402

GOAL_GROWTH_MB = 100

SCRIPT = """
import asyncio, json, resource, sys
from llm_rollout.validation.client import Endpoint, make_client
from llm_rollout.validation.load import make_prompts, run_load
from llm_rollout.validation.metrics import calculate_metrics

async def main():
    ep = Endpoint(sys.argv[1], "tiny")
    client = make_client(ep, 200)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = await run_load(client, ep, make_prompts(400, 16), output_tokens=32, num_requests=400, concurrency=200,
                         max_duration_s=300)
    await client.aclose()
    m = calculate_metrics(res.records, res.duration_s)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_before_kb": before, "rss_peak_kb": after, "ok": m["successful_requests"],
                      "failed": m["failed_requests"], "peak_concurrency": m["peak_concurrent_requests"]}))
asyncio.run(main())
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), *sys.path])}
    with tempfile.TemporaryDirectory() as tmp, start_vllm(tiny_model_path(), "tiny", log_path=Path(tmp) / "log") as srv:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, srv.base_url], capture_output=True, text=True, timeout=600, env=env
        )
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["growth_mb"] = round((out["rss_peak_kb"] - out["rss_before_kb"]) / 1024, 1)
    out["goal_growth_mb"] = GOAL_GROWTH_MB
    met = "met" if out["growth_mb"] < GOAL_GROWTH_MB else "MISSED"
    print(
        f"client memory at 200 streams: peak RSS {out['rss_peak_kb'] / 1024:.0f} MB, +{out['growth_mb']} MB during "
        f"the load (goal < {GOAL_GROWTH_MB} MB: {met}); {out['ok']} ok, {out['failed']} failed, "
        f"peak {out['peak_concurrency']} concurrent"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
