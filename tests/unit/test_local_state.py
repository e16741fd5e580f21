"""The local platform's state directory without a server: state.json as earlier versions wrote it,
read back, shown by ``status``, and changed by rollback and restore_previous only through the record.

Everything here that would need a running vLLM server is what has none: a rollback of a candidate
that never started, a restore while nothing serves (only the records swap).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.state import StateDir
from llm_rollout.platform import ValidationConclusion, format_status
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import parse_spec

SERVICE = "tiny-svc"


def _model(root: Path, name: str) -> str:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"")
    return str(path)


def _spec(state_dir: Path, name: str = SERVICE):
    return parse_spec({"name": name, "platform": "local", "local": {"state_dir": str(state_dir)}})


def _stable(member: str, model_uri: str, spec: dict, generation: int) -> dict:
    """A stable entry exactly as the previous local.py's promote_local wrote it."""
    return {
        "member": member,
        "revision": member[-4:],
        "model_uri": model_uri,
        "served_model_name": SERVICE,
        "endpoint_url": "http://127.0.0.1:9",
        "artifact_digest": f"sha256:{member}",
        "verdict": "pass",
        "summary": "every check passed",
        "metrics": {"p95_ttft_ms": 12.5},
        "report_path": "/r.html",
        "run_id": f"run-{member[-1]}",
        "promoted_at": f"2026-01-0{generation}T00:00:00+00:00",
        "spec": spec,
        "local_args": None,
        "generation": generation,
    }


@pytest.fixture
def old_state(tmp_path):
    """A state directory written by the previous local.py: two promotions and a rollback."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    spec = _spec(state_dir).model_dump(mode="json")
    first = _stable("tiny-svc-aaa1", _model(tmp_path, "first"), spec, 1)
    second = _stable("tiny-svc-bbb2", _model(tmp_path, "second"), spec, 2)
    launch = ("spec", "local_args")
    history = [
        {"action": "rollback", "at": "2026-01-03T00:00:00+00:00", "member": "tiny-svc-ccc3", "revision": "ccc3",
         "model_uri": "/m/c", "reason": "validation failed", "run_id": "run-3", "stable": second["member"]},
        {"action": "promote", **{k: v for k, v in second.items() if k not in launch}, "at": second["promoted_at"],
         "previous": first["member"]},
        {"action": "promote", **{k: v for k, v in first.items() if k not in launch}, "at": first["promoted_at"],
         "previous": None},
    ]  # fmt: skip
    doc = {"format": 1, "service": SERVICE, "generation": 2, "stable": second, "history": history,
           "previous_stable": first}  # fmt: skip
    (state_dir / "state.json").write_text(json.dumps(doc, indent=2))
    return state_dir, doc


def test_state_written_by_the_previous_version_reads_back_and_writes_back_the_same(old_state):
    state_dir, doc = old_state
    state = StateDir(state_dir)
    st = state.read_state()
    assert (st.service, st.generation, st.stable_member) == (SERVICE, 2, doc["stable"]["member"])
    assert st.stable.model_extra["spec"] == doc["stable"]["spec"], "the launch data stays with the stable record"
    assert st.previous_stable.member == doc["previous_stable"]["member"]
    assert [h.action for h in st.history] == ["rollback", "promote", "promote"]
    assert st.history[1].model_extra["metrics"] == {"p95_ttft_ms": 12.5}
    state.write_state(st)
    written = json.loads((state_dir / "state.json").read_text())
    assert written["stable"] == doc["stable"] and written["previous_stable"] == doc["previous_stable"]
    # History entries keep every field they had; the ones they never had are not added as nulls.
    for before, after in zip(doc["history"], written["history"], strict=True):
        assert after == {k: v for k, v in before.items() if v is not None}
    assert state.read_state() == st


def test_status_shows_the_records_without_launch_data_through_the_one_formatter(old_state):
    state_dir, doc = old_state
    status = LocalPlatform(_spec(state_dir)).status()
    assert (status.platform, status.kind, status.name, status.namespace) == ("local", "LocalServer", SERVICE, "local")
    assert status.location == str(state_dir) and status.url is None and status.revisions == []
    assert status.stable.member == doc["stable"]["member"] and status.stable.metrics == {"p95_ttft_ms": 12.5}
    assert "spec" not in (status.stable.model_extra or {})
    text = format_status(status)
    assert f"LocalServer local/{SERVICE}  (state in {state_dir})" in text
    assert f"stable: {doc['stable']['member']} ({doc['stable']['model_uri']}, digest sha256:" in text
    assert f"previous stable: {doc['previous_stable']['member']}" in text
    assert "rollback  tiny-svc-ccc3" in text and "validation failed" in text


def test_restore_with_nothing_serving_swaps_the_records_and_back(old_state):
    state_dir, doc = old_state
    platform = LocalPlatform(_spec(state_dir))
    first, second = doc["previous_stable"]["member"], doc["stable"]["member"]
    outcome = platform.restore_previous(run_id="manual", timeout_s=60)
    assert (outcome.action, outcome.member, outcome.stopped) == ("rollback", first, [])
    assert "not running (nothing was serving)" in outcome.message
    st = StateDir(state_dir).read_state()
    assert (st.stable_member, st.previous_stable.member, st.generation) == (first, second, 3)
    assert st.stable.model_extra["spec"] == doc["previous_stable"]["spec"]
    entry = st.history[0]
    assert (entry.action, entry.member, entry.previous, entry.run_id) == (
        "rollback-to-previous",
        first,
        second,
        "manual",
    )
    platform.restore_previous(run_id="manual", timeout_s=60)
    assert StateDir(state_dir).read_state().stable_member == second
    # Another service's state directory is refused, naming the field.
    with pytest.raises(SpecError) as err:
        LocalPlatform(_spec(state_dir, name="other-svc")).restore_previous(run_id="manual", timeout_s=60)
    assert err.value.field == "local.state_dir" and "belongs to service tiny-svc" in str(err.value)
    assert StateDir(state_dir).read_state().stable_member == second


def test_rollback_of_a_candidate_that_never_started_is_recorded_once(old_state):
    state_dir, doc = old_state
    platform = LocalPlatform(_spec(state_dir))
    record = DeploymentRecord(
        platform="local", kind="LocalServer", name=SERVICE, namespace="local", member="tiny-svc-ddd4",
        revision="ddd4", model_uri="/m/d", served_model_name=SERVICE, endpoint_url="http://127.0.0.1:9",
    )  # fmt: skip
    first = platform.rollback(record, reason="run ended FAILED", run_id="run-4")
    assert (first.action, first.stable, first.stopped) == ("rollback", doc["stable"]["member"], [])
    assert platform.rollback(record, reason="again", run_id="run-4").action == "none"
    history = StateDir(state_dir).read_state().history
    assert [(h.action, h.member) for h in history[:2]] == [("rollback", "tiny-svc-ddd4"), ("rollback", "tiny-svc-ccc3")]
    # A candidate whose server is gone is never promoted, whatever the verdict says.
    with pytest.raises(PermanentError, match="verdict is 'fail'"):
        platform.promote(record, ValidationConclusion(verdict="fail"), run_id="run-4")
    gone = record.model_copy(update={"member": "tiny-svc-eee5", "stable": StableRef(member=doc["stable"]["member"])})
    with pytest.raises(PermanentError, match="is not running"):
        platform.promote(gone, ValidationConclusion(verdict="pass"), run_id="run-5")
    # Another service is refused in this state directory.
    other = LocalPlatform(_spec(state_dir, name="other-svc"))
    with pytest.raises(PermanentError, match="records service 'tiny-svc', not 'other-svc'"):
        other.rollback(record.model_copy(update={"name": "other-svc"}), reason="", run_id="x")
