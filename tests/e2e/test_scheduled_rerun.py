"""A schedule's reruns see new content: same pipeline, same parameters, new weights at the same path.

A recurring run has fixed parameters, KFP's importer reuses the artifact registered for a URI
(``importer_launcher.go`` ``findOrNewArtifactToImport``) and the cache key is the input artifacts'
names plus the parameters (``cacheutils/cache.go`` ``GenerateCacheKey``): retrained weights written
to the same URI would hit optimize-model's cache and end "already promoted". prepare-rollout's
content identity is a parameter of optimize-model, so the key follows the content.

kfp.local caches like the cluster when asked (``local.init(enable_caching=True, cache_root=...)``,
``kfp/local/cache.py``: the key is the component, image, command and arguments); the test asks,
and proves the cache was used: the unchanged rerun does not run optimize-model at all.
"""

from __future__ import annotations

import shutil

import pytest

from kfp_llm_rollout.pipelines.run_local import demo_spec, run_pipeline
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.session import local_session
from llm_rollout.spec import deep_merge, parse_spec
from tests.e2e.test_local_pipeline import _processes_in

pytestmark = [pytest.mark.e2e, pytest.mark.serving, pytest.mark.optimize, pytest.mark.timeout(1500)]


def test_new_weights_at_the_same_path_are_optimized_and_rolled_out_unchanged_ones_are_not(
    tmp_path, tiny_model, retrained_model, vllm_python, monkeypatch
):
    state, cache, model = tmp_path / "state", tmp_path / "kfp-cache", tmp_path / "models" / "llama"
    monkeypatch.setenv("LLM_ROLLOUT_STATE_DIR", str(state))
    shutil.copytree(tiny_model, model)
    # The subject is which runs roll out, not the gate: the quality question and the comparison
    # with the stable are off (the demo's business: run 3 below accepts any verdict, and the
    # comparison of two equal models was most of this test's time), everything else is the demo's spec.
    doc = deep_merge(demo_spec(state, tiny_model / "probes.json").model_dump(mode="json", exclude_unset=True), {
        "validation": {"quality": {"enabled": False}, "comparison": {"enabled": False}},
    })  # fmt: skip
    spec = parse_spec(doc)

    def run(label):
        with local_session(spec.local.state_dir):
            return run_pipeline("llm-optimize-deploy", str(model), spec, out_dir=tmp_path / label, quiet=True,
                                cache_root=cache)  # fmt: skip

    first = run("run-1")
    assert first.outcome == "promoted", first.step("validate-deployment")
    stable = LocalPlatform(spec).status().stable
    assert first.step("optimize-model") is not None
    server_logs = sorted((state / "logs").iterdir())

    # The schedule fires again, nothing changed: the cached optimization, "already promoted".
    second = run("run-2")
    assert second.outcome == "already promoted", second.steps
    assert second.step("optimize-model") is None, "optimize-model was cached (the control: the cache is on)"
    assert second.step("prepare-rollout")["content_id"] == first.step("prepare-rollout")["content_id"]
    deploy = second.step("deploy-model")
    assert deploy["already_promoted"] is True and deploy["member"] == stable.member
    assert sorted((state / "logs").iterdir()) == server_logs, "no server was started"
    assert second.step("validate-deployment")["verdict"] == "already-promoted"
    assert second.step("rollback-model") is None, "an already-promoted rerun skips rollback-model"
    after = LocalPlatform(spec).status()
    assert after.stable == stable
    assert [h.action for h in after.history] == ["promote"]
    assert _processes_in(state) == []

    # Retrained weights land at the same path; the same pipeline with the same parameters runs again.
    for item in retrained_model.iterdir():
        if item.is_file():
            shutil.copy2(item, model / item.name)
    third = run("run-3")
    assert third.step("prepare-rollout")["content_id"] != first.step("prepare-rollout")["content_id"]
    assert third.step("optimize-model") is not None, "new content is a new cache key: optimized again"
    deploy = third.step("deploy-model")
    assert deploy["already_promoted"] is False and deploy["member"] != stable.member
    assert third.step("validate-deployment")["verdict"] in ("pass", "fail", "inconclusive")
    assert third.outcome in ("promoted", "rolled back"), third.steps
