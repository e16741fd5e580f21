"""prepare-rollout: the run's effective spec, the model's scheme and content identity, and the outcome.

The importer's schemes are KFP 2.17's (``backend/src/v2/component/importer_launcher.go``
``ImportSpecToMLMDArtifact``: ``oci://`` or an object-store provider from
``objectstore.ParseProviderFromPath``: gs, s3, minio, mem).
"""

import json
import shutil

import pytest

from llm_rollout import steps
from llm_rollout.errors import SpecError
from llm_rollout.model_source import content_id, effective_spec_doc, importable
from llm_rollout.platform import HistoryEntry


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("gs://b/m", True),
        ("s3://b/m", True),
        ("minio://mlpipeline/m", True),
        ("mem://x", True),
        ("oci://reg/m:1", True),
        ("hf://org/model", False),
        ("pvc://claim/path", False),
        ("https://example.com/m", False),
        ("/models/local", False),
    ],
)
def test_the_importer_runs_only_for_the_schemes_kfp_accepts(uri, ok):
    assert importable(uri) is ok
    result = steps.prepare_step('{"platform": "local"}', model_uri=uri, run_id="r1")
    assert result["importable"] == ("true" if ok else "false")
    assert result["lineage"]["source_uri"] == uri  # the lineage of every URI, importable or not


def test_platform_and_namespace_parameters_shape_the_spec_and_a_contradiction_is_refused():
    doc = effective_spec_doc("{}", "kserve", "team-a")
    assert doc == {"platform": "kserve", "namespace": "team-a"}
    # An empty namespace: the spec's, else the pod's own namespace (the run's, on KFP).
    assert effective_spec_doc("{}", "kserve", "", own_namespace="kubeflow-user")["namespace"] == "kubeflow-user"
    assert effective_spec_doc('{"namespace": "x"}', "kserve", "", own_namespace="y")["namespace"] == "x"
    assert "namespace" not in effective_spec_doc("{}", "kserve", "", own_namespace="")
    # Equal values are fine; different ones name the field and the fix.
    assert effective_spec_doc('{"platform": "local"}', "local", "")["platform"] == "local"
    with pytest.raises(SpecError) as info:
        effective_spec_doc('{"platform": "local"}', "kserve", "")
    assert info.value.field == "platform" and "remove 'platform' from the spec JSON" in str(info.value)
    for bad in ("[1]", "{oops"):
        with pytest.raises(SpecError) as info:
            effective_spec_doc(bad, "kserve", "")
        assert info.value.field == "spec"


def test_the_steps_get_the_effective_spec():
    result = steps.prepare_step("{}", model_uri="s3://m/x", platform="kserve", namespace="team-a", run_id="r1")
    spec = json.loads(result["spec"])
    assert (spec["platform"], spec["namespace"]) == ("kserve", "team-a")
    assert steps.effective_spec(result["spec"]).namespace == "team-a"


def test_content_identity_follows_the_bytes_not_the_path(tmp_path, tiny_model_files):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_files, model)
    first = content_id(str(model))
    assert first.startswith("sha256:") and content_id(f"file://{model}") == first
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert content_id(str(model)) != first
    # Unknown content (an object store read from here): every run is new content, by run id.
    result = steps.prepare_step('{"platform": "local"}', model_uri="s3://b/m", run_id="run-7")
    assert result["content_id"] == "run:run-7" and result["lineage"]["content_id"] == ""


def test_an_optimize_input_the_launcher_cannot_download_is_refused_first():
    for uri in ("hf://org/model", "pvc://claim/model"):
        with pytest.raises(SpecError) as info:
            steps.prepare_step("{}", model_uri=uri, platform="kserve", for_optimize=True, run_id="r")
        assert info.value.field == "model_uri" and "llm-deploy" in str(info.value)
    steps.prepare_step("{}", model_uri="minio://mlpipeline/m", platform="kserve", for_optimize=True, run_id="r")


@pytest.mark.parametrize(
    ("history", "state", "outcome"),
    [
        ([HistoryEntry(action="promote", run_id="r1")], "SUCCEEDED", "promoted"),
        ([HistoryEntry(action="rollback", run_id="r1")], "FAILED", "rolled-back"),
        ([HistoryEntry(action="rollback", run_id="r1")], "SUCCEEDED", "rolled-back"),
        ([HistoryEntry(action="promote", run_id="r0")], "SUCCEEDED", "already-promoted"),
        ([HistoryEntry(action="promote", run_id="r0")], "FAILED", "failed"),
        ([], "CANCELED", "failed"),
    ],
)
def test_the_outcome_comes_from_the_platforms_history(history, state, outcome):
    assert steps.run_outcome(history, "r1", state) == outcome
    assert outcome in steps.OUTCOMES


@pytest.fixture
def tiny_model_files(tmp_path):
    """A model directory's shape (config and weights) without any real model."""
    root = tmp_path / "files"
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(b"\x00" * 64)
    return root


def test_a_rolled_back_candidate_fails_the_run_with_the_reason_after_the_rollback(tmp_path):
    """fail_on_rollback: the rollback is complete and recorded first, then the step fails (red in the UI)."""
    from llm_rollout.record import DeploymentRecord

    spec = steps.effective_spec(json.dumps({"local": {"state_dir": str(tmp_path / "state")}}), "local")
    record = DeploymentRecord(
        platform="local",
        kind="LocalServer",
        name=spec.service_name,
        namespace="local",
        member=f"{spec.service_name}-cand",
        revision="r1",
        model_uri=str(tmp_path / "model"),
        served_model_name=spec.served_model_name,
        endpoint_url="http://127.0.0.1:9/v1",
        run_id="run-1",
    ).to_json()
    reason = "fail: slo: p95_ttft_ms 900 > 500"
    with pytest.raises(steps.RolledBack, match="p95_ttft_ms 900 > 500"):
        steps.rollback_step(spec, record, reason=reason, run_id="run-1", fail_on_rollback=True)
    _, outcome = steps.finalize_with_outcome(spec, run_id="run-1", state="FAILED", platform="local")
    assert outcome == "rolled-back"
    # Off: the same rollback is an answer, not a failure (a rerun records nothing twice).
    assert "nothing to roll back" in steps.rollback_step(spec, record, reason=reason, run_id="run-1")
