"""make test's two runs (tests/conftest.py ``--tiers``): every test runs in exactly one of them.

``--tiers parallel`` (the fast tiers and the serving/optimize tests marked ``parallel``) and
``--tiers serial`` (the rest) partition the suite; the fast tiers are inside the parallel run and hold
no serving/optimize test; every serial test is a serving/optimize/e2e one, and the tests that judge
speed (the e2e pipelines' comparisons, live analysis, the validation SLOs) stay serial.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(*args: str) -> set[str]:
    """Node ids ``pytest --collect-only`` selects with ``args`` (a child process: the real conftest)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_the_parallel_and_serial_runs_partition_the_suite():
    every, fast = collected(), collected("--tiers", "fast")
    parallel, serial = collected("--tiers", "parallel"), collected("--tiers", "serial")
    assert parallel.isdisjoint(serial) and parallel | serial == every
    assert fast < parallel
    assert all(not n.startswith(("tests/serving/", "tests/optimize/", "tests/e2e/")) for n in fast)
    assert all(n.startswith(("tests/serving/", "tests/optimize/", "tests/e2e/", "tests/cluster/")) for n in serial)
    speed = {
        "tests/e2e/test_local_pipeline.py::test_demo_tells_the_story_in_five_runs",
        "tests/e2e/test_retrain_loop.py::test_default_gate_without_a_suite_rolls_back_a_scrambled_model_for_quality",
        "tests/serving/test_live_analysis.py::test_equal_candidate_is_promoted_through_every_step",
        "tests/serving/test_validation.py::test_healthy_model_passes_a_realistic_slo",
    }
    assert speed <= serial
    assert "tests/optimize/test_optimize.py::test_recipe_yaml_errors" in parallel
