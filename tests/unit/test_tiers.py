"""make test's two runs (tests/conftest.py ``--tiers``): every test runs in exactly one of them.

``--tiers parallel`` (the fast tiers and the serving/optimize tests marked ``parallel``) and
``--tiers serial`` (the rest) partition the suite; the fast tiers are inside the parallel run and hold
no serving/optimize test; every serial test is a serving/optimize/e2e one, and the tests that judge
speed (the e2e pipelines' comparisons, live analysis, the validation SLOs) stay serial.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


_COLLECT = r"""
import json, sys
import pytest

class Collect:
    ids = []

    def pytest_collection_finish(self, session):
        self.ids = [item.nodeid for item in session.items]

out = {}
for name, args in json.loads(sys.argv[1]).items():
    plugin = Collect()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *args], plugins=[plugin])
    out[name] = [int(code), plugin.ids]
print("LLM_ROLLOUT_RESULT " + json.dumps(out))
"""


def collected(**runs: list[str]) -> dict[str, set[str]]:
    """Node ids ``pytest --collect-only`` selects with each run's arguments: the real conftest, in one
    child process (the test modules are imported once for all the collections, not once each)."""
    done = subprocess.run(
        [sys.executable, "-c", _COLLECT, json.dumps(runs)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LLM_ROLLOUT_RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].split(" ", 1)[1])
    assert all(code == 0 for code, _ in result.values()), done.stdout[-3000:]
    return {name: set(ids) for name, (_, ids) in result.items()}


def test_the_parallel_and_serial_runs_partition_the_suite():
    runs = collected(every=[], fast=["--tiers", "fast"], parallel=["--tiers", "parallel"], serial=["--tiers", "serial"])
    every, fast, parallel, serial = runs["every"], runs["fast"], runs["parallel"], runs["serial"]
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


class _Item:
    """What :func:`tests.conftest.schedule_order` reads of a collected item."""

    def __init__(self, path: str, name: str, fixtures: tuple[str, ...] = (), marker: str | None = None) -> None:
        self.path = ROOT / path
        self._nodeid = f"{path}::{name}"
        self.fixturenames = ["tmp_path", *fixtures]
        self._marker = marker

    @property
    def nodeid(self) -> str:
        return self._nodeid

    def get_closest_marker(self, name: str) -> object:
        return name if name == self._marker else None


def test_the_parallel_run_starts_each_shared_server_on_one_worker_and_deals_long_files_first():
    from xdist.scheduler import LoadFileScheduling

    from tests.conftest import SHARED_SERVERS_SCOPE, schedule_order, shared_servers_scheduling

    items = [
        _Item("tests/cluster/test_a.py", "one"),
        _Item("tests/cluster/test_a.py", "two"),
        _Item("tests/cluster/test_proof.py", "uses_the_server", ("vllm_server",), "serving"),
        _Item("tests/cluster/test_proof.py", "no_server_but_same_file"),
        _Item("tests/serving/test_local.py", "own_servers", marker="serving"),
        _Item("tests/serving/test_quality.py", "copies", ("tiny_copies", "tiny_model"), "serving"),
        _Item("tests/unit/test_b.py", "one"),
        _Item("tests/unit/test_b.py", "two"),
        _Item("tests/unit/test_b.py", "three"),
    ]
    schedule_order(items)  # type: ignore[arg-type]
    files = [str(i.path.relative_to(ROOT)) for i in items]
    # The two files with a session server first (whole files: module fixtures stay on one worker),
    # then the file with serving tests, then the fast files with most tests first; files contiguous.
    assert files == [
        "tests/cluster/test_proof.py", "tests/cluster/test_proof.py", "tests/serving/test_quality.py",
        "tests/serving/test_local.py", "tests/unit/test_b.py", "tests/unit/test_b.py", "tests/unit/test_b.py",
        "tests/cluster/test_a.py", "tests/cluster/test_a.py",
    ]  # fmt: skip
    grouped = [i.nodeid for i in items if i.nodeid.endswith("@" + SHARED_SERVERS_SCOPE)]
    assert len(grouped) == 3 and all("test_proof.py" in n or "test_quality.py" in n for n in grouped)

    # xdist's loadfile scheduler, as make test's parallel run gets it: one unit for the grouped files.
    class Config:
        class option:  # xdist reads config.option.<name>
            loadscopereorder = True

        @staticmethod
        def getoption(name: str) -> str:
            return {"dist": "loadfile"}[name]

        @staticmethod
        def getvalue(name: str) -> object:
            return {"tx": ["3*popen"]}.get(name)

    scheduler = shared_servers_scheduling(Config, log=None)  # type: ignore[arg-type]
    assert isinstance(scheduler, LoadFileScheduling)
    assert Config.option.loadscopereorder is False  # units go out in the workers' order above
    assert {scheduler._split_scope(i.nodeid) for i in items} == {
        SHARED_SERVERS_SCOPE, "tests/serving/test_local.py", "tests/unit/test_b.py", "tests/cluster/test_a.py"
    }  # fmt: skip
