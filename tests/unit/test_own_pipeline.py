"""Our components inside another team's pipeline: the Python import and the compiled component.yaml files.

The run under kfp.local on the local platform is tests/e2e/test_own_pipeline.py.
"""

import pytest
import yaml
from kfp import compiler, components

from kfp_llm_rollout.components import COMPONENT_FUNCTIONS, build_components, component_spec_path, load_component_specs
from kfp_llm_rollout.pipelines.docs import COMPONENTS_DIR, component_spec_texts
from llm_rollout.errors import SpecError
from tests.fast_yaml import YAML_LOADER
from tests.own_pipeline import train_and_serve_pipeline
from tests.unit.test_artifact_flow import _dag_tasks, artifact_inputs

IMAGE = "registry.example.com/llm-rollout/components@sha256:" + "1" * 64
OPTIMIZE_IMAGE = "registry.example.com/llm-rollout/optimize:0.1.0@sha256:" + "2" * 64


def _compile(c, path):
    compiler.Compiler().compile(train_and_serve_pipeline(c), str(path))
    return next(yaml.load_all(path.read_text(), Loader=YAML_LOADER))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = tmp_path_factory.mktemp("own")
    python = _compile(build_components(image=IMAGE, optimize_image=OPTIMIZE_IMAGE), out / "python.yaml")
    loaded = _compile(load_component_specs(image=IMAGE, optimize_image=OPTIMIZE_IMAGE), out / "yaml.yaml")
    return python, loaded


def _without_descriptions(node):
    # KFP's loader keeps types and defaults of a component.yaml but drops per-input descriptions.
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def test_the_user_pipeline_compiles_the_same_both_ways(both):
    python, loaded = both
    assert _without_descriptions(python) == _without_descriptions(loaded), "component.yaml = the Python components"
    tasks = _dag_tasks(python)
    assert {"train", "optimize-model", "register-runtime", "deploy-model", "validate-deployment"} <= set(tasks)
    assert {"promote-model", "rollback-model", "finalize-rollout"} <= set(tasks)
    assert tasks["finalize-rollout"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    images = {k: v["container"]["image"] for k, v in python["deploymentSpec"]["executors"].items()}
    assert images.pop("exec-train") == "python:3.11-slim"
    assert images.pop("exec-optimize-model") == OPTIMIZE_IMAGE
    assert set(images.values()) == {IMAGE}, "images pinned by digest reach every step"


def test_in_the_user_pipeline_only_optimize_reads_the_trained_model(both):
    python, _ = both
    assert artifact_inputs(python) == {"optimize-model": {"input_model": "train"}}
    deploy = _dag_tasks(python)["deploy-model"]
    assert deploy["inputs"]["parameters"]["model_uri"]["taskOutputParameter"]["producerTask"] == "optimize-model"
    resources = python["deploymentSpec"]["executors"]["exec-optimize-model"]["container"]["resources"]
    assert "accelerator" not in resources and resources["resourceMemoryLimit"] == "8Gi"


@pytest.mark.parametrize("kfp_name", sorted(COMPONENT_FUNCTIONS))
def test_component_yaml_is_in_sync_and_loads_with_kfp(kfp_name):
    path = component_spec_path(kfp_name)
    assert path.parent.parent == COMPONENTS_DIR
    assert path.read_text() == component_spec_texts()[path.parent.name], f"{path} drifted: run `make docs`"
    loaded = components.load_component_from_file(str(path)).component_spec
    built = getattr(build_components(), COMPONENT_FUNCTIONS[kfp_name].__name__).component_spec
    assert loaded.name == built.name and loaded.implementation == built.implementation
    for side in ("inputs", "outputs"):
        got, want = getattr(loaded, side) or {}, getattr(built, side) or {}
        assert {k: (v.type, getattr(v, "default", None)) for k, v in got.items()} == {
            k: (v.type, getattr(v, "default", None)) for k, v in want.items()
        }


@pytest.mark.parametrize(
    ("kwargs", "flag", "words"),
    [
        ({"image": "registry.example.com/c@sha256:abc"}, "--image", "sha256:<64 lowercase hex>"),
        ({"optimize_image": "Registry Example/o"}, "--optimize-image", "not an image reference"),
    ],
)
def test_bad_images_are_refused_either_way(kwargs, flag, words):
    for make in (build_components, load_component_specs):
        with pytest.raises(SpecError) as info:
            make(**kwargs)
        assert info.value.field == flag and words in str(info.value) and "Fix:" in str(info.value)


def test_the_readme_example_compiles_as_written(tmp_path):
    import re
    from pathlib import Path

    from tests.own_pipeline import train

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Use the components in your own pipeline", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace = {"train": train}
    exec(compile(code.replace("<digest>", "0" * 64), "README.md", "exec"), namespace)
    compiler.Compiler().compile(namespace["train_and_serve"], str(tmp_path / "readme.yaml"))
    ir = next(yaml.load_all((tmp_path / "readme.yaml").read_text(), Loader=YAML_LOADER))
    assert artifact_inputs(ir) == {"optimize-model": {"input_model": "train"}}
    assert {"promote-model", "rollback-model", "finalize-rollout"} <= set(_dag_tasks(ir))
