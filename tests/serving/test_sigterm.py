"""A SIGTERM to pytest (a CI runner's timeout, ``kill``, ``timeout``) stops every vLLM server it started.

The servers run in process groups of their own, so nothing reaches them when pytest dies of the
default SIGTERM action, and fixtures stop them only on teardown. tests/conftest.py turns SIGTERM
into KeyboardInterrupt, so pytest tears every fixture down as after Ctrl-C; the serving plugin
stops whatever is left at interpreter exit. Here a real pytest runs a test holding the
session-scoped ``vllm_server``, gets SIGTERM, and nothing it started may be left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.serving import group_alive

pytestmark = [pytest.mark.serving, pytest.mark.fault, pytest.mark.timeout(400), pytest.mark.parallel]

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os
import time
from pathlib import Path


def test_holds_the_session_server(vllm_server):
    ready = Path(os.environ["PGID_FILE"])
    ready.with_suffix(".tmp").write_text(str(vllm_server.pgid))
    ready.with_suffix(".tmp").rename(ready)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    return False


def test_sigterm_to_pytest_stops_every_server_it_started(tmp_path, tiny_model, vllm_python):
    (tmp_path / "test_child.py").write_text(CHILD)
    pgid_file = tmp_path / "server.pgid"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    argv += ["--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "child"), str(tmp_path / "test_child.py")]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,  # `tests` importable: the project's conftest and fixtures, as `make test` loads them
        env={**os.environ, "PGID_FILE": str(pgid_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    pgid, started = None, []
    try:
        deadline = time.monotonic() + 300
        while not pgid_file.is_file():
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.monotonic() < deadline, "the child's server never came up"
            time.sleep(0.2)
        pgid = int(pgid_file.read_text())
        started = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert group_alive(pgid) and pgid in started
        assert any(psutil.Process(p).name().startswith("VLLM::EngineCore") for p in started if _alive(p)), started
        proc.send_signal(signal.SIGTERM)  # to pytest alone, as a runner's timeout sends it
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if pgid is not None and group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output[-4000:]
    assert "pytest received signal 15" in output, output[-4000:]
    assert not group_alive(pgid), "the session's vLLM server outlived pytest"
    assert [p for p in started if _alive(p)] == [], "a process pytest started outlived it"
