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

from tests.conftest import SHARED_SERVER_FILES, SHARED_SERVERS_SCOPE, schedule_order, shared_servers_scheduling

ROOT = Path(__file__).resolve().parents[2]


_COLLECT = r"""
import json, sys
import pytest

from tests.conftest import SHARED_SERVER_FIXTURES, file_of

class Collect:
    ids = []
    shared = []

    def pytest_collection_finish(self, session):
        self.ids = [item.nodeid for item in session.items]
        self.shared = sorted({file_of(item.nodeid) for item in session.items
                              if SHARED_SERVER_FIXTURES.intersection(item.fixturenames)})

out = {}
for name, args in json.loads(sys.argv[1]).items():
    plugin = Collect()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *args], plugins=[plugin])
    out[name] = [int(code), plugin.ids, plugin.shared]
print("LLM_ROLLOUT_RESULT " + json.dumps(out))
"""


def collected(**runs: list[str]) -> dict[str, tuple[set[str], set[str]]]:
    """Node ids ``pytest --collect-only`` selects with each run's arguments, and the files among them whose
    tests use a session vLLM server: the real conftest, in one child process (the test modules are
    imported once for all the collections, not once each)."""
    done = subprocess.run(
        [sys.executable, "-c", _COLLECT, json.dumps(runs)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LLM_ROLLOUT_RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].split(" ", 1)[1])
    assert all(code == 0 for code, _, _ in result.values()), done.stdout[-3000:]
    return {name: (set(ids), set(shared)) for name, (_, ids, shared) in result.items()}


def test_the_parallel_and_serial_runs_partition_the_suite():
    runs = collected(every=[], fast=["--tiers", "fast"], parallel=["--tiers", "parallel"], serial=["--tiers", "serial"])
    every, fast, parallel, serial = (runs[name][0] for name in ("every", "fast", "parallel", "serial"))
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
    # The parallel run's scheduler sees node ids only: its list of shared-server files is the collection's.
    assert runs["parallel"][1] == SHARED_SERVER_FILES


class _Item:
    """What :func:`tests.conftest.schedule_order` reads of a collected item."""

    def __init__(self, path: str, name: str, marker: str | None = None) -> None:
        self.path = ROOT / path
        self.nodeid = f"{path}::{name}"
        self._marker = marker

    def get_closest_marker(self, name: str) -> object:
        return name if name == self._marker else None


def test_the_parallel_run_starts_the_shared_servers_on_one_worker_and_deals_long_files_first():
    from xdist.scheduler import LoadFileScheduling

    shared_a, shared_b = sorted(SHARED_SERVER_FILES)[:2]
    items = [
        _Item("tests/cluster/test_a.py", "one"),
        _Item("tests/cluster/test_a.py", "two"),
        _Item(shared_a, "uses_the_server", "serving"),
        _Item(shared_a, "no_server_but_same_file"),
        _Item("tests/serving/test_local.py", "own_servers", "serving"),
        _Item(shared_b, "copies", "serving"),
        _Item("tests/unit/test_b.py", "one"),
        _Item("tests/unit/test_b.py", "two"),
        _Item("tests/unit/test_b.py", "three"),
    ]
    schedule_order(items)  # type: ignore[arg-type]
    # The shared-server files first, then the file with serving tests, then the fast files with most
    # tests first; each file's tests together and in their order.
    assert [i.nodeid for i in items] == [
        f"{shared_a}::uses_the_server", f"{shared_a}::no_server_but_same_file", f"{shared_b}::copies",
        "tests/serving/test_local.py::own_servers",
        "tests/unit/test_b.py::one", "tests/unit/test_b.py::two", "tests/unit/test_b.py::three",
        "tests/cluster/test_a.py::one", "tests/cluster/test_a.py::two",
    ]  # fmt: skip

    # xdist's loadfile scheduler as make test's parallel run gets it: the shared-server files are one unit.
    class Config:
        class option:  # xdist reads config.option.<name>
            loadscopereorder = True

        @staticmethod
        def getvalue(name: str) -> object:
            return {"tx": ["3*popen"]}.get(name)

    scheduler = shared_servers_scheduling(Config, log=None)  # type: ignore[arg-type]
    assert isinstance(scheduler, LoadFileScheduling)
    assert Config.option.loadscopereorder is False  # units go out in the workers' order above
    assert [scheduler._split_scope(i.nodeid) for i in items] == [SHARED_SERVERS_SCOPE] * 3 + [
        "tests/serving/test_local.py", *["tests/unit/test_b.py"] * 3, *["tests/cluster/test_a.py"] * 2
    ]  # fmt: skip
