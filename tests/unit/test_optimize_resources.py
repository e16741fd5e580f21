"""The heavy step asks for what it needs: GPU, CPU, memory, scratch disk, as the compiled IR shows."""

import pytest
import yaml
from kfp import compiler, dsl

from kfp_llm_rollout.components import build_components
from kfp_llm_rollout.components.resources import (
    DEFAULT_OPTIMIZE_CPU,
    DEFAULT_OPTIMIZE_DISK,
    DEFAULT_OPTIMIZE_MEMORY,
    ScratchDisk,
    optimize_resources_for,
    set_optimize_resources,
)
from kfp_llm_rollout.pipelines.cli import main
from kfp_llm_rollout.pipelines.pipelines import DEPLOY_PIPELINE, OPTIMIZE_DEPLOY_PIPELINE
from llm_rollout.errors import SpecError
from tests.fast_yaml import YAML_LOADER


def _docs(path):
    docs = list(yaml.load_all(path.read_text(), Loader=YAML_LOADER))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def _k8s(platform, executor):
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})[executor]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir")
    assert main(["compile", "--out", str(out)]) == 0
    return out


def test_optimize_resources_are_pipeline_parameters_with_8b_defaults(compiled):
    ir, platform = _docs(compiled / f"{OPTIMIZE_DEPLOY_PIPELINE}.yaml")
    resources = ir["deploymentSpec"]["executors"]["exec-optimize-model"]["container"]["resources"]
    param = "{{$.inputs.parameters['pipelinechannel--%s']}}"
    assert resources == {
        "accelerator": {
            "resourceType": param % "optimize_accelerator_type",
            "resourceCount": param % "optimize_accelerator_count",
        },
        "resourceCpuRequest": param % "optimize_cpu",
        "resourceMemoryRequest": param % "optimize_memory",
        "resourceMemoryLimit": param % "optimize_memory",
    }
    defaults = {k: v.get("defaultValue") for k, v in ir["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["optimize_accelerator_type"] == "nvidia.com/gpu"
    assert defaults["optimize_accelerator_count"] == "1"  # a string: the driver reads GetStringValue()
    assert (defaults["optimize_cpu"], defaults["optimize_memory"]) == ("8", "48Gi")
    (volume,) = _k8s(platform, "exec-optimize-model")["emptyDirMounts"]
    assert volume == {"volumeName": "model-scratch", "mountPath": "/minio/mlpipeline", "sizeLimit": "48Gi"}
    assert "genericEphemeralVolume" not in _k8s(platform, "exec-optimize-model")
    # Only the heavy step asks for a GPU; the others are light API clients with small requests.
    for name, executor in ir["deploymentSpec"]["executors"].items():
        if name != "exec-optimize-model" and "container" in executor:
            assert "accelerator" not in executor["container"]["resources"], name


def test_disk_size_and_bucket_are_set_at_compile_time(tmp_path):
    argv = ["compile", "--out", str(tmp_path), "--optimize-disk", "400Gi", "--optimize-disk-mount", "/s3/ml-artifacts"]
    assert main(argv) == 0
    _, platform = _docs(tmp_path / f"{OPTIMIZE_DEPLOY_PIPELINE}.yaml")
    (volume,) = _k8s(platform, "exec-optimize-model")["emptyDirMounts"]
    assert (volume["sizeLimit"], volume["mountPath"]) == ("400Gi", "/s3/ml-artifacts")
    assert main(["compile", "--out", str(tmp_path / "none"), "--optimize-disk", "none"]) == 0
    _, platform = _docs(tmp_path / "none" / f"{OPTIMIZE_DEPLOY_PIPELINE}.yaml")
    executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    assert "emptyDirMounts" not in executors.get("exec-optimize-model", {})
    _, platform = _docs(tmp_path / f"{DEPLOY_PIPELINE}.yaml")
    assert "emptyDirMounts" not in str(platform), "llm-deploy holds no model files"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--optimize-disk", "lots"], ["--optimize-disk", "'lots'", "48Gi"]),
        (["--optimize-disk-mount", "/data"], ["--optimize-disk-mount", "/minio"]),
        # A bucket-less /s3 would cover the launcher's own /s3 emptyDir (issue 27 item 5).
        (["--optimize-disk-mount", "/s3"], ["--optimize-disk-mount", "/s3/BUCKET", "not cover"]),
        (["--optimize-storage-class", "fast-ssd"], ["--optimize-storage-class", "65532", "fsGroup"]),
    ],
)
def test_bad_disk_flags_name_the_flag_and_the_fix(tmp_path, capsys, argv, words):
    assert main(["compile", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not list(tmp_path.iterdir()), "nothing compiled"


def test_constants_in_your_own_pipeline(tmp_path):
    c = build_components("reg.example/c:1", "reg.example/o:1")

    @dsl.pipeline(name="seventy-b")
    def seventy_b(model_uri: str):
        base = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        task = c.optimize_model(input_model=base.output)
        set_optimize_resources(
            task, accelerator_type="nvidia.com/gpu", accelerator_count=1, cpu="32", memory="256Gi",
            disk=ScratchDisk("400Gi"),
        )  # fmt: skip

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(seventy_b, str(path))
    ir, platform = _docs(path)
    resources = ir["deploymentSpec"]["executors"]["exec-optimize-model"]["container"]["resources"]
    assert (
        resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        and resources["accelerator"]["resourceCount"] == "1"
    )
    assert resources["resourceCpuRequest"] == "32" and resources["resourceMemoryLimit"] == "256Gi"
    assert _k8s(platform, "exec-optimize-model")["emptyDirMounts"][0]["sizeLimit"] == "400Gi"


def test_no_accelerator_and_bad_constants(tmp_path):
    c = build_components()

    @dsl.pipeline(name="cpu-only")
    def cpu_only(model_uri: str):
        base = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        task = set_optimize_resources(c.optimize_model(input_model=base.output), accelerator_type="", memory="16Gi")
        assert task.container_spec.resources.accelerator_type is None
        for kwargs, field in (({"memory": "lots"}, "optimize memory"), ({"accelerator_count": "two"}, "count")):
            with pytest.raises(SpecError, match=field):
                set_optimize_resources(c.optimize_model(input_model=base.output), **kwargs)

    compiler.Compiler().compile(cpu_only, str(tmp_path / "p.yaml"))
    ir, _ = _docs(tmp_path / "p.yaml")
    resources = ir["deploymentSpec"]["executors"]["exec-optimize-model"]["container"]["resources"]
    assert "accelerator" not in resources and resources["resourceMemoryLimit"] == "16Gi"


def _unwired(ir):
    """``(dag, task, input)`` for every task input naming a parameter its enclosing DAG does not have."""
    dags = {"root": ir["root"], **{k: v for k, v in ir["components"].items() if "dag" in v}}
    missing = []
    for dag_name, dag in dags.items():
        have = set(dag.get("inputDefinitions", {}).get("parameters", {}))
        for task_name, task in dag["dag"]["tasks"].items():
            for value in task.get("inputs", {}).get("parameters", {}).values():
                if "componentInputParameter" in value and value["componentInputParameter"] not in have:
                    missing.append((dag_name, task_name, value["componentInputParameter"]))
    return missing


def test_resource_parameters_reach_the_step_inside_the_exit_handler(compiled):
    # kfp 2.17 does not route a resource setter's parameter into an ExitHandler group by itself
    # (kfp.local: "Parent pipeline input argument 'pipelinechannel--optimize_cpu' not found").
    for name in (OPTIMIZE_DEPLOY_PIPELINE, DEPLOY_PIPELINE):
        ir, _ = _docs(compiled / f"{name}.yaml")
        assert _unwired(ir) == [], name
    ir, _ = _docs(compiled / f"{OPTIMIZE_DEPLOY_PIPELINE}.yaml")
    group = ir["components"]["comp-exit-handler-1"]["inputDefinitions"]["parameters"]
    assert {
        f"pipelinechannel--optimize_{k}" for k in ("cpu", "memory", "accelerator_type", "accelerator_count")
    } <= set(group)


@pytest.mark.parametrize(("label", "billions"), [("1B", 1.24), ("8B", 8.03), ("70B", 70.6)])
def test_the_readme_table_is_the_sizing_rule(label, billions):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith(f"| {label} (") and f"{billions}B" in line]
    r = optimize_resources_for(billions)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert (cells[2], cells[3], cells[5]) == (f"`{r['memory']}`", f"`{r['cpu']}`", f"`{r['disk'].size}`")
    assert cells[4].startswith(f"{r['accelerator_count']} x ")


def test_the_defaults_are_the_rule_for_an_8b_model_and_sizes_grow_with_the_model():
    r = optimize_resources_for(8.03)
    assert (r["cpu"], r["memory"], r["disk"].size) == (
        DEFAULT_OPTIMIZE_CPU,
        DEFAULT_OPTIMIZE_MEMORY,
        DEFAULT_OPTIMIZE_DISK,
    )
    # 405B: 754 GiB of bf16 weights -> 2 x 754 + 16 = 1524 -> 1536Gi; 2.5 x 754 + 10 = 1896 -> 1904Gi.
    big = optimize_resources_for(405)
    assert (big["cpu"], big["memory"], big["disk"].size, big["accelerator_count"]) == ("32", "1536Gi", "1904Gi", "1")
    assert optimize_resources_for(0.1)["disk"].size == "16Gi", "never below 16Gi"
    with pytest.raises(SpecError, match="parameters_billion"):
        optimize_resources_for(0)


def _argo_executor_mounts() -> dict[str, str]:
    """mountPath -> volume name of the user container in Argo's executor template, read from the
    pinned ``argocompiler/container.go`` (``addContainerExecutorTemplate``: its constants and the
    ``Container.VolumeMounts`` list), so a new launcher directory upstream shows up here."""
    import re

    from tests.crds import KFP_REFERENCE, reference_dir

    go = (reference_dir(KFP_REFERENCE) / "backend/src/v2/compiler/argocompiler/container.go").read_text()
    consts = dict(re.findall(r"^\s+(\w+)\s*=\s*\"([^\"]*)\"", go, re.M))
    container = go[go.index("Container: &k8score.Container{") :]
    container = container[: container.index("EnvFrom:")]
    mounts = re.findall(r"Name:\s+(\w+),\s+MountPath:\s+([\w.]+),", container)
    assert len(mounts) >= 6, "container.go's executor mounts were not found: reread it"
    return {consts.get(path, path): consts.get(name, name) for name, path in mounts}


def test_scratch_is_below_the_launchers_minio_and_writable_by_any_user(compiled):
    """Issue 27 item 5, read as Argo builds the optimize pod: the template's emptyDirs, then the
    driver's pod spec patch (``driver/k8s.go`` ``extendPodSpecPatch`` appends the emptyDir volume
    and its mount), merged by ``mountPath`` (volume mounts) and ``name`` (volumes)."""
    argo = _argo_executor_mounts()
    assert argo["/minio"] == "minio-scratch" and {"/s3", "/gcs"} <= set(argo)
    _, platform = _docs(compiled / f"{OPTIMIZE_DEPLOY_PIPELINE}.yaml")
    config = _k8s(platform, "exec-optimize-model")
    assert not config.get("genericEphemeralVolume") and not config.get("pvcMount"), "no PVC: its root is root's"
    merged = dict(argo)
    for mount in config["emptyDirMounts"]:
        assert mount["volumeName"] not in argo.values(), "a volume named like Argo's would replace it"
        assert mount["mountPath"] not in argo, f"{mount['mountPath']} would replace the launcher's own volume"
        merged[mount["mountPath"]] = mount["volumeName"]
    assert merged["/minio"] == "minio-scratch", "KFP's /minio emptyDir stays"
    scratch = config["emptyDirMounts"][0]["mountPath"]
    # The launcher's local paths (launcher_v2.go LocalPathForURI: "/minio/" + the URI's path) of the
    # compressed model under KFP's default pipeline root and of a model copied there.
    for uri in ("minio://mlpipeline/v2/artifacts/llm-optimize-deploy/run/optimize-model/x/optimized_model",
                "minio://mlpipeline/models/llama-3.1-8b"):  # fmt: skip
        local = "/minio/" + uri.removeprefix("minio://")
        owner = max((p for p in merged if local.startswith(p.rstrip("/") + "/")), key=len)
        assert owner == scratch, f"{local} lands on {merged[owner]}, not the scratch volume"
    # The runtime mounts /minio before /minio/mlpipeline (containerd CRI orderedMounts: by depth).
    assert scratch.count("/") > "/minio".count("/")
