"""Which task takes which artifact: the model's bytes reach only the step that reads them.

KFP's v2 launcher downloads every input artifact of a task into its pod before user code runs
(kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go``: ``downloadArtifacts`` walks
``executorInput.inputs.artifacts``; only ``oci://`` and ``_kfp_workspace`` artifacts are skipped).
What a task's executor receives as artifacts is its component's ``inputDefinitions.artifacts``, so
the compiled IR is where "no step downloads the model" is decided; this test reads it there.
"""

from __future__ import annotations

import pytest
import yaml

from kfp_llm_rollout.pipelines.compile import compile_pipelines
from kfp_llm_rollout.pipelines.pipelines import DEPLOY_PIPELINE, OPTIMIZE_DEPLOY_PIPELINE
from tests.fast_yaml import YAML_LOADER


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir")
    return {p.stem: next(yaml.load_all(p.read_text(), Loader=YAML_LOADER)) for p in compile_pipelines(out)}


def _dag_tasks(ir):
    """Every task of the pipeline (root and sub-DAGs: exit handler, branches), by task name."""
    tasks = dict(ir["root"]["dag"]["tasks"])
    for comp in ir["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def artifact_inputs(ir) -> dict[str, dict[str, str]]:
    """``{task: {input artifact: producer}}`` for every task whose executor is given artifacts."""
    out: dict[str, dict[str, str]] = {}
    for name, task in _dag_tasks(ir).items():
        comp = ir["components"][task["componentRef"]["name"]]
        if "executorLabel" not in comp:
            continue  # a sub-DAG: its tasks are listed themselves
        declared = comp.get("inputDefinitions", {}).get("artifacts", {})
        wired = task.get("inputs", {}).get("artifacts", {})
        assert set(declared) >= set(wired), name
        if declared:
            out[name] = {
                key: (wired.get(key, {}).get("taskOutputArtifact") or {}).get("producerTask", "?") for key in declared
            }
    return out


def test_only_optimize_model_takes_the_model_as_an_artifact(compiled):
    assert artifact_inputs(compiled[OPTIMIZE_DEPLOY_PIPELINE]) == {"optimize-model": {"input_model": "importer"}}
    assert artifact_inputs(compiled[DEPLOY_PIPELINE]) == {}, "no step of llm-deploy reads the model's bytes"


@pytest.mark.parametrize("component", ["deploy-model", "validate-deployment", "promote-model", "rollback-model"])
def test_steps_after_optimize_declare_no_input_artifact(compiled, component):
    for ir in compiled.values():
        comp = ir["components"][f"comp-{component}"]
        assert "artifacts" not in comp.get("inputDefinitions", {}), component


def test_the_model_artifact_stays_visible_and_connects_optimize_to_deploy(compiled):
    ir = compiled[OPTIMIZE_DEPLOY_PIPELINE]
    outputs = ir["components"]["comp-optimize-model"]["outputDefinitions"]
    assert outputs["artifacts"]["optimized_model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert set(outputs["parameters"]) == {"model_uri", "model_digest", "model_scheme"}
    deploy = _dag_tasks(ir)["deploy-model"]
    for key in ("model_uri", "model_digest", "model_scheme"):  # scheme: deploy's GPU preflight
        source = deploy["inputs"]["parameters"][key]["taskOutputParameter"]
        assert source == {"producerTask": "optimize-model", "outputParameterKey": key}
    assert "optimize-model" in deploy["dependentTasks"]


def test_llm_deploy_registers_the_model_and_deploys_its_uri(compiled):
    ir = compiled[DEPLOY_PIPELINE]
    tasks = _dag_tasks(ir)
    importer = ir["components"][tasks["importer"]["componentRef"]["name"]]
    assert importer["outputDefinitions"]["artifacts"]["artifact"]["artifactType"]["schemaTitle"] == "system.Model"
    deploy = tasks["deploy-model"]
    assert deploy["inputs"]["parameters"]["model_uri"] == {"componentInputParameter": "pipelinechannel--model_uri"}
    # The importer runs only for the schemes KFP's importer accepts (importer_launcher.go); deploy
    # follows prepare-rollout, whose model_source artifact holds the lineage of any URI.
    assert "prepare-rollout" in deploy["dependentTasks"]
    # The digest, when prepare-rollout can read it, decides "already promoted"; never the run-id
    # fallback of content_id (which only keeps optimize-model's cache key new).
    assert deploy["inputs"]["parameters"]["model_digest"]["taskOutputParameter"] == {
        "producerTask": "prepare-rollout",
        "outputParameterKey": "model_digest",
    }
    importable_if = tasks[next(n for n, t in tasks.items() if t["componentRef"]["name"] == "comp-condition-2")]
    assert importable_if["triggerPolicy"]["condition"].endswith("prepare-rollout-importable'] == 'true'")
