"""The pipelines compile to KFP IR with the promised structure."""

import pytest
import yaml

from kfp_llm_rollout.pipelines.cli import main
from kfp_llm_rollout.pipelines.pipelines import DEPLOY_PIPELINE, OPTIMIZE_DEPLOY_PIPELINE
from kfp_llm_rollout.pipelines.run_local import CACHEABLE_STEPS, STEPS
from tests.fast_yaml import YAML_LOADER


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir")
    assert (
        main(["compile", "--out", str(out), "--image", "reg.example/c:9.9", "--optimize-image", "reg.example/o:9.9"])
        == 0
    )
    return {p.stem: next(yaml.load_all(p.read_text(), Loader=YAML_LOADER)) for p in out.glob("*.yaml")}


def _executors(ir):
    return ir["deploymentSpec"]["executors"]


def test_one_file_per_pipeline_named_after_it(compiled):
    assert set(compiled) == {"llm-deploy", "llm-optimize-deploy"} == {DEPLOY_PIPELINE, OPTIMIZE_DEPLOY_PIPELINE}
    for name, ir in compiled.items():
        assert ir["pipelineInfo"]["name"] == name


def test_images_are_overridable_and_nothing_is_installed_at_run_time(compiled):
    for ir in compiled.values():
        for executor in _executors(ir).values():
            container = executor.get("container")
            if not container:
                continue  # the importer
            assert container["image"] in {"reg.example/c:9.9", "reg.example/o:9.9"}
            assert "pip install" not in " ".join(container.get("command", []) + container.get("args", []))
    opt = [
        e["container"]["image"] for k, e in _executors(compiled[OPTIMIZE_DEPLOY_PIPELINE]).items() if "optimize" in k
    ]
    assert opt == ["reg.example/o:9.9"]


def _tasks(ir):
    tasks = dict(ir["root"]["dag"]["tasks"])
    for comp in ir["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


CLUSTER_STEPS = {"register-runtime", "deploy-model", "validate-deployment", "promote-model", "rollback-model"}


def test_cluster_steps_never_use_the_cache(compiled):
    # KFP writes a task without caching as `cachingOptions: {}` (enableCache false is proto3's
    # default, left out) and a cached one as `{enableCache: true}`.
    for name, ir in compiled.items():
        tasks = _tasks(ir)
        assert CLUSTER_STEPS | {"finalize-rollout"} <= set(tasks), name
        for step in CLUSTER_STEPS | {"finalize-rollout"}:
            assert tasks[step]["cachingOptions"] == {}, (name, step)
        # The control: the model import and the optimization (same input, same output) stay cached.
        cached = {t for t, task in tasks.items() if task.get("cachingOptions", {}).get("enableCache")}
        assert cached == ({"importer", "optimize-model"} if name == "llm-optimize-deploy" else {"importer"}), name
        # run-local reports a cacheable step that did not execute as cached: the same list.
        assert set(CACHEABLE_STEPS) & set(STEPS[name]) == cached - {"importer"}, name


def _branch_of(ir, task):
    """The name of the (condition) task whose component's DAG holds ``task``."""
    components = ir["components"]
    return next(
        name
        for name, t in _tasks(ir).items()
        if task in components.get(t["componentRef"]["name"], {}).get("dag", {}).get("tasks", {})
    )


def test_exit_handler_and_verdict_branch(compiled):
    verdict = "inputs.parameter_values['pipelinechannel--validate-deployment-verdict']"
    for ir in compiled.values():
        tasks = _tasks(ir)
        assert tasks["finalize-rollout"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
        # promote-model runs when the verdict is 'pass', rollback-model in the Else branch.
        promote_if = tasks[_branch_of(ir, "promote-model")]["triggerPolicy"]["condition"]
        rollback_if = tasks[_branch_of(ir, "rollback-model")]["triggerPolicy"]["condition"]
        assert promote_if == f"{verdict} == 'pass'"
        # An already-promoted model goes to neither branch (nothing to roll back).
        assert rollback_if == f"!({verdict} == 'pass') && {verdict} != 'already-promoted'"


def test_optimize_runs_before_deploy(compiled):
    tasks = _tasks(compiled[OPTIMIZE_DEPLOY_PIPELINE])
    deploy_inputs = tasks["deploy-model"]["inputs"]["parameters"]["model_uri"]
    assert deploy_inputs["taskOutputParameter"] == {"producerTask": "optimize-model", "outputParameterKey": "model_uri"}
    assert "optimize-model" in tasks["deploy-model"]["dependentTasks"]


def _platform_executors(path):
    docs = list(yaml.load_all(path.read_text(), Loader=YAML_LOADER))
    platform = docs[1] if len(docs) > 1 else {}
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def test_api_key_secret_reaches_exactly_the_steps_that_call_the_model(tmp_path):
    assert main(["compile", "--out", str(tmp_path), "--api-key-secret", "vllm-key:token"]) == 0
    for name in (DEPLOY_PIPELINE, OPTIMIZE_DEPLOY_PIPELINE):
        executors = _platform_executors(tmp_path / f"{name}.yaml")
        with_secret = {
            k for k, v in executors.items() if any(e["secretName"] == "vllm-key" for e in v.get("secretAsEnv", []))
        }
        assert with_secret == {"exec-deploy-model", "exec-validate-deployment", "exec-promote-model"}
        env = executors["exec-validate-deployment"]["secretAsEnv"][0]
        assert env["secretName"] == "vllm-key"
        assert env["keyToEnv"] == [{"envVar": "LLM_ROLLOUT_API_KEY", "secretKey": "token"}]
        pipeline_spec = next(yaml.load_all((tmp_path / f"{name}.yaml").read_text(), Loader=YAML_LOADER))
        assert "vllm-key" not in str(pipeline_spec["root"]), "the secret is not a pipeline parameter"


def test_no_api_key_secret_means_no_secret_in_the_pipelines(tmp_path):
    assert main(["compile", "--out", str(tmp_path)]) == 0
    executors = _platform_executors(tmp_path / f"{DEPLOY_PIPELINE}.yaml")
    with_secret = {k: v["secretAsEnv"] for k, v in executors.items() if v.get("secretAsEnv")}
    # Only KFP's own store keys, optional, for prepare-rollout's HEAD of the model's manifest (its ETag).
    assert with_secret == {
        "exec-prepare-rollout": [
            {
                "secretName": "mlpipeline-minio-artifact",
                "keyToEnv": [
                    {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
                    {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"},
                ],
                "optional": True,
                "secretNameParameter": {"runtimeValue": {"constant": "mlpipeline-minio-artifact"}},
            }
        ]
    }


def test_bad_api_key_secret_names_the_flag_and_the_fix(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path), "--api-key-secret", "Bad Secret"]) == 2
    err = capsys.readouterr().err
    assert "--api-key-secret" in err and "SECRET[:KEY]" in err
