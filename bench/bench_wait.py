"""Detection latency of the waiter: from the controller writing Ready to ``wait_ready`` returning.

Runs on the project's test API server (started here, with the KServe CRDs) and the KServe
controller stand-in (``tests/reconciler.py``), which records the moment it sends each Ready=True
status write. For each of N rollouts an InferenceService is applied, the stand-in writes Ready
after a random delay (so the waiter is already watching, as in a real rollout, and a poller's phase
is random), and the time from that write to the waiter's return is measured. A polling waiter
(GET every ``--poll-s`` seconds, what the anchors do with 3-30 s intervals) is measured the same
way in the same run, side by side.

Usage: ``python bench/bench_wait.py [--rollouts 20] [--poll-s 1.0]`` (``make bench`` runs it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client as k8s_client

from llm_rollout import builders
from llm_rollout.kube import INFERENCE_SERVICES, KubeClient
from llm_rollout.spec import parse_spec
from llm_rollout.wait import Readiness, evaluate, wait_ready
from tests.fixtures.cluster import TestCluster, locate_binaries
from tests.reconciler import Behaviour, Reconciler

GOAL_P50_MS = 200.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def poll_until_ready(client: KubeClient, name: str, namespace: str, readiness: Readiness, interval: float) -> None:
    """The anchors' way: GET, check, sleep, repeat."""
    while not evaluate(client.get(INFERENCE_SERVICES, name, namespace), readiness).ready:
        time.sleep(interval)


def run(rollouts: int, poll_s: float, ready_after_ms: int, verbose: bool = False) -> tuple[list[float], list[float]]:
    """Measures ``rollouts`` watch-driven and ``rollouts`` polling detections; returns both in ms."""
    with tempfile.TemporaryDirectory(prefix="bench-wait-") as tmp:
        cluster = TestCluster(Path(tmp) / "cluster", binaries=locate_binaries())
        cluster.start()
        try:
            namespace = "bench"
            client = KubeClient(k8s_client.ApiClient(cluster.configuration()))
            stand_in = Reconciler(
                cluster.configuration(), default=Behaviour(ready_after_ms=ready_after_ms), namespace=namespace
            )
            stand_in.start()
            try:
                results: dict[str, list[float]] = {"watch": [], "poll": []}
                rng = random.Random(20)
                for i in range(rollouts * 2):
                    how = "watch" if i % 2 == 0 else "poll"  # interleaved: same conditions for both
                    spec = parse_spec({"name": f"bench-{i}", "namespace": namespace, "platform": "kserve"})
                    # Ready comes at a random moment (as pods do), so a poller's phase is random too.
                    delay_ms = ready_after_ms + rng.uniform(0, 1000 * poll_s)
                    stand_in.behave(spec.service_name, ready_after_ms=int(delay_ms))
                    member = builders.default_member(spec, f"s3://models/{i}", f"r{i}")
                    applied = client.apply(builders.inference_service(spec, member))
                    readiness = Readiness.inference_service(min_generation=applied["metadata"]["generation"])
                    if how == "watch":
                        wait_ready(client, spec.service_name, namespace, readiness, timeout_s=60)
                    else:
                        poll_until_ready(client, spec.service_name, namespace, readiness, poll_s)
                    returned = time.monotonic()
                    write = stand_in.wait_for_ready_write(spec.service_name, timeout=10)
                    results[how].append((returned - write.sent_at) * 1000)
                    if verbose:
                        print(
                            f"{how} {i}: write took {(write.done_at - write.sent_at) * 1000:.0f} ms, "
                            f"returned {(returned - write.sent_at) * 1000:.0f} ms after it was sent",
                            file=sys.stderr,
                        )
                return results["watch"], results["poll"]
            finally:
                stand_in.stop()
        finally:
            cluster.close()


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints the detection-latency line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--poll-s", type=float, default=1.0, help="interval of the polling baseline")
    parser.add_argument(
        "--ready-after-ms", type=int, default=200, help="least delay before the stand-in writes Ready (plus 0-poll-s)"
    )
    parser.add_argument("--verbose", action="store_true", help="one line per rollout on stderr")
    args = parser.parse_args(argv)
    watch, poll = run(args.rollouts, args.poll_s, args.ready_after_ms, args.verbose)
    p50, p95 = statistics.median(watch), percentile(watch, 95)
    b50, b95 = statistics.median(poll), percentile(poll, 95)
    print(
        f"wait detection latency: p50 {p50:.0f} ms p95 {p95:.0f} ms over {len(watch)} rollouts "
        f"(goal p50 < {GOAL_P50_MS:.0f} ms)"
    )
    print(
        f"polling baseline (GET every {args.poll_s:g} s): p50 {b50:.0f} ms p95 {b95:.0f} ms over {len(poll)} rollouts; "
        f"watch-driven is {b50 / max(p50, 0.001):.0f}x faster at p50"
    )
    return 0 if p50 < GOAL_P50_MS else 1


if __name__ == "__main__":
    sys.exit(main())
