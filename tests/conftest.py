"""Shared fixtures: each tier's real part is a pytest plugin in tests/fixtures/.

It also keeps the fault suite's account: every test marked ``@pytest.mark.fault`` (a
fault-injection scenario: a flaky or restarted API server, a killed vLLM, a killed or cancelled
run) is counted, and the terminal summary ends with ``fault scenarios: N run, M survived``.

``--tiers fast`` keeps only the fast tiers (the unit and cluster tiers without the ``serving`` or
``optimize`` marked tests: no vLLM, no llmcompressor), ``--tiers slow`` only the rest; ``make test``
runs ``--tiers parallel`` (the fast tiers and the serving tests marked ``parallel``) on pytest-xdist
workers, then ``--tiers serial`` in one process. On the workers, the files that use a session vLLM
server go to one worker together and long files go out first (:func:`shared_servers_scheduling`).
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.kube_audit",
    "tests.fixtures.reconciler",
    "tests.fixtures.serving",
]


def _sigterm_ends_the_session(signum: int, frame: object) -> None:
    """SIGTERM (a CI runner's timeout, ``kill``, ``timeout``) as Ctrl-C: pytest then tears every fixture
    down, so each vLLM server, API server and run a fixture started is stopped. A repeated SIGTERM
    does not cut that teardown short (a Python handler, not SIG_IGN, so no child inherits it)."""
    signal.signal(signal.SIGTERM, lambda *_: None)
    raise KeyboardInterrupt(f"pytest received signal {signum}: stopping, every fixture is torn down")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Turns SIGTERM into KeyboardInterrupt in the main thread (fixtures stop only on teardown, and a
    process killed by the default SIGTERM action runs none: its servers, in their own process groups,
    would outlive it). tests/serving/test_sigterm.py checks that nothing a test started survives."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_ends_the_session)
        # A shell starts a background job (`make test &`, nohup in a script) with SIGINT ignored, and
        # every child inherits that: the Ctrl-C tests' pipelines then ignore their SIGINT and run to
        # the end. Python's own handler is reset to the default action at exec, as in a terminal.
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Finds KServe's and KEDA's pinned CRDs once (tests/crds.py: shared/, the cache, or a download
    checked by sha256), or fails the whole run once, clearly, saying why.

    Without them the unit tier's schema checks and the API server have nothing to check against;
    each test failing on its own with a bare KeyError says nothing about why.
    """
    from tests.crds import KEDA, KSERVE, CrdError, crd_paths

    try:
        for crds in (KSERVE, KEDA):
            crd_paths(crds)
    except CrdError as err:
        pytest.exit(f"setup: {err}", returncode=4)


TESTS_DIR = Path(__file__).resolve().parent
FAST_TIER_DIRS = ("unit", "cluster")
SLOW_MARKERS = ("serving", "optimize")
"""The fast tiers: tests under tests/unit and tests/cluster that carry none of these markers."""
PARALLEL_MARKER = "parallel"
"""Marks a serving/optimize test whose outcome does not depend on the machine's speed (no latency bound
it could miss under load, no comparison of two servers' speed): ``--tiers parallel`` runs it beside
the fast tiers on the parallel workers; ``--tiers serial`` runs the rest one at a time."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tiers",
        choices=("all", "fast", "slow", "parallel", "serial"),
        default="all",
        help="fast: the unit and cluster tiers less their serving/optimize-marked tests (no vLLM, no "
        "llmcompressor; make test-fast, on parallel workers); slow: every other test; parallel: the fast "
        "tiers and the slow tests marked 'parallel' (their outcome does not depend on speed; make test's "
        "first run, on parallel workers); serial: the other slow tests (make test's second run, one at "
        "a time: their comparisons and latency bounds are CPU-sensitive); all (default): every test",
    )


def in_fast_tiers(item: pytest.Item) -> bool:
    """Whether ``item`` belongs to the fast tiers (``--tiers fast``)."""
    try:
        top = Path(item.path).resolve().relative_to(TESTS_DIR).parts[0]
    except ValueError:
        return False
    return top in FAST_TIER_DIRS and not any(item.get_closest_marker(m) for m in SLOW_MARKERS)


def in_tiers(item: pytest.Item, tiers: str) -> bool:
    """Whether ``item`` runs under ``--tiers tiers``."""
    fast = in_fast_tiers(item)
    if tiers in ("fast", "slow"):
        return fast == (tiers == "fast")
    together = fast or item.get_closest_marker(PARALLEL_MARKER) is not None
    return together == (tiers == "parallel")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--tiers fast|slow|parallel|serial``: deselects the other tiers' tests (reported as deselected);
    on a pytest-xdist worker, then orders and groups them for :func:`pytest_xdist_make_scheduler`."""
    tiers = config.getoption("tiers")
    if tiers != "all":
        keep = [item for item in items if in_tiers(item, tiers)]
        if len(keep) < len(items):
            kept = set(keep)
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = keep
    if hasattr(config, "workerinput"):
        schedule_order(items)


SHARED_SERVER_FIXTURES = frozenset({"vllm_server", "tiny_copies", "scrambled_server", "retrained_server"})
"""The session-scoped vLLM servers of tests/fixtures/serving.py (each ~20 CPU-s to start)."""
SHARED_SERVER_FILES = frozenset(
    {
        "tests/cluster/test_reliability.py",
        "tests/cluster/test_secrets.py",
        "tests/cluster/test_traffic_proof.py",
        "tests/serving/test_quality.py",
        "tests/serving/test_report_browser.py",
        "tests/serving/test_tiny_model.py",
    }
)
"""The files of ``--tiers parallel`` whose tests use :data:`SHARED_SERVER_FIXTURES` (xdist's scheduler
sees node ids only, not fixtures; tests/unit/test_tiers.py keeps this list equal to the collection's)."""
SHARED_SERVERS_SCOPE = "shared-vllm-servers"


def file_of(nodeid: str) -> str:
    """The test file part of a node id."""
    return nodeid.split("::", 1)[0]


def schedule_order(items: list[pytest.Item]) -> None:
    """How ``make test``'s parallel run (``--dist loadfile``) deals out its files, set in each worker's
    collection (every worker computes the same, as xdist requires): :data:`SHARED_SERVER_FILES` first,
    then the files with serving/optimize tests, then the rest, each by its number of tests (a long
    file drawn last keeps the run going on one worker while the others idle). Within a file the
    order is the collection's. :func:`shared_servers_scheduling` deals the shared-server files as
    one unit."""
    slow = {file_of(item.nodeid) for item in items if not in_fast_tiers(item)}
    count = Counter(file_of(item.nodeid) for item in items)

    def rank(item: pytest.Item) -> tuple[bool, bool, int]:
        path = file_of(item.nodeid)
        return path not in SHARED_SERVER_FILES, path not in slow, -count[path]

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` as :func:`shared_servers_scheduling`; other modes as xdist has them."""
    if config.getoption("dist") != "loadfile":
        return None
    return shared_servers_scheduling(config, log)


def shared_servers_scheduling(config: pytest.Config, log: Any) -> Any:
    """xdist's loadfile scheduler with :data:`SHARED_SERVER_FILES` dealt as one unit, so the session's shared
    vLLM servers start on one worker (a session fixture is per worker: otherwise each worker that
    draws one of those files starts its own copy), and units in the workers' collection order
    (:func:`schedule_order`; xdist would otherwise reorder them by their number of tests alone)."""
    from xdist.scheduler import LoadFileScheduling

    class SharedServersFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if file_of(nodeid) in SHARED_SERVER_FILES:
                return SHARED_SERVERS_SCOPE
            return super()._split_scope(nodeid)

    config.option.loadscopereorder = False
    return SharedServersFirst(config, log)


FAULT_PROPERTY = "fault_scenario"
"""user_properties key set on the reports of fault tests (travels with the report, e.g. from xdist workers)."""

_fault_outcomes: dict[str, str] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tags the reports of fault-marked tests so the summary can count them."""
    if item.get_closest_marker("fault") is not None and (FAULT_PROPERTY, True) not in item.user_properties:
        item.user_properties.append((FAULT_PROPERTY, True))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Folds each phase of a fault test into one outcome: skipped, failed or passed."""
    if (FAULT_PROPERTY, True) not in report.user_properties:
        return
    before = _fault_outcomes.get(report.nodeid)
    if report.skipped:
        # A skip (or xfail) did not run the scenario; a failure in another phase still counts.
        _fault_outcomes[report.nodeid] = before if before == "failed" else "skipped"
    elif report.failed:
        _fault_outcomes[report.nodeid] = "failed"
    elif report.when == "call" and before != "failed":
        _fault_outcomes[report.nodeid] = "passed"
    elif before is None:
        _fault_outcomes[report.nodeid] = "setup"  # set up fine; the call decides


def fault_counts(outcomes: dict[str, str]) -> tuple[int, int]:
    """``(run, survived)``: scenarios that ran (setup failures count, skips do not) and that passed."""
    ran = [o for o in outcomes.values() if o != "skipped"]
    return len(ran), sum(o == "passed" for o in ran)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Prints ``fault scenarios: N run, M survived`` when any fault-marked test was collected to run."""
    if not _fault_outcomes:
        return
    ran, survived = fault_counts(_fault_outcomes)
    terminalreporter.write_sep("-", "fault suite")
    terminalreporter.write_line(f"fault scenarios: {ran} run, {survived} survived")
