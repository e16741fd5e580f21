"""Every pod setting of the compiled pipelines resolves under KFP 2.17's driver rules.

The test reads the compiled IR as the driver does, for a run with the pipeline's defaults and for
a run with other values:

* container resources and the accelerator (``backend/src/v2/driver/driver.go`` ``initPodSpecPatch``,
  ``getPodResource``): a placeholder ``{{$.inputs.parameters['X']}}`` is looked up in the task's
  executor input and read with ``GetStringValue()`` (``resolve.go``
  ``resolvePodSpecInputRuntimeParameter``): a number parameter resolves to ``""``, and the setting
  vanishes (the accelerator) or fails ``ParseQuantity`` (resources);
* kfp-kubernetes node selector and tolerations (``driver/k8s.go`` ``extendPodSpecPatch``): the
  parameter is resolved as a struct (node selector, ``resolveK8sJsonParameter``) or a struct or
  list (tolerations), unmarshalled into ``map[string]string`` / ``[]Toleration``;
* ``activeDeadlineSeconds`` on every step.

Parameter values travel as ``structpb.Value`` from the run's runtime config: a string parameter is
a string value, an integer a number value, a dict a struct, a list a list
(``pipeline_spec.proto`` ``ParameterType``).
"""

import re
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from kfp_llm_rollout.components.resources import set_gpu_placement, set_optimize_resources
from kfp_llm_rollout.pipelines.pipelines import PIPELINES
from llm_rollout.errors import SpecError
from tests.fast_yaml import YAML_LOADER

PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}$")
# k8s.io/apimachinery resource.ParseQuantity, the forms a request takes (no exponent forms).
QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
TOLERATION_FIELDS = {"key", "operator", "value", "effect", "tolerationSeconds"}


_DEFAULT_IR: dict[str, str] = {}
"""The IR text of each shipped pipeline as compiled with the images below: compiled once per module
(the same call gives the same text; each test parses its own copy)."""


def _compile(tmp_path, name: str, build=None) -> tuple[dict, dict]:
    path = tmp_path / f"{name}.yaml"
    if build is None and name in _DEFAULT_IR:
        text = _DEFAULT_IR[name]
    else:
        pipeline = build or PIPELINES[name](image="reg.example/c:1", optimize_image="reg.example/o:1")
        compiler.Compiler().compile(pipeline, str(path))
        text = path.read_text()
        if build is None:
            _DEFAULT_IR[name] = text
    docs = list(yaml.load_all(text, Loader=YAML_LOADER))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform


class Driver:
    """Resolves a task's input parameters the way the driver fills its executor input."""

    def __init__(self, ir: dict, run_values: dict[str, Any]) -> None:
        self.ir = ir
        self.root_inputs = ir["root"]["inputDefinitions"]["parameters"]
        unknown = set(run_values) - set(self.root_inputs)
        assert not unknown, f"not pipeline parameters: {unknown}"
        self.values = {k: d.get("defaultValue") for k, d in self.root_inputs.items()} | run_values
        self.parent: dict[str, tuple[str, dict]] = {}  # component -> (parent component, task in it)
        for comp_name, comp in [("root", ir["root"]), *ir["components"].items()]:
            for task in comp.get("dag", {}).get("tasks", {}).values():
                self.parent[task["componentRef"]["name"]] = (comp_name, task)

    def tasks(self):
        """``(task name, task, the component holding it)`` for every container task."""
        for comp_name, comp in [("root", self.ir["root"]), *self.ir["components"].items()]:
            for name, task in comp.get("dag", {}).get("tasks", {}).items():
                executor = self.ir["components"][task["componentRef"]["name"]].get("executorLabel")
                if executor:
                    yield name, task, comp_name, executor

    def component_input(self, comp_name: str, param: str) -> tuple[str, Any]:
        """``(ParameterType, value)`` of a component's input, followed up to the pipeline's parameters."""
        if comp_name == "root":
            return self.root_inputs[param]["parameterType"], self.values[param]
        parent, task = self.parent[comp_name]
        return self.task_input(parent, task, param)

    def task_input(self, comp_name: str, task: dict, param: str) -> tuple[str, Any]:
        spec = task["inputs"]["parameters"][param]
        if "componentInputParameter" in spec:
            return self.component_input(comp_name, spec["componentInputParameter"])
        if "runtimeValue" in spec:
            return "STRING", spec["runtimeValue"]["constant"]
        raise AssertionError(f"{param}: a pod setting from another task's output cannot be checked here: {spec}")

    def string_value(self, comp_name: str, task: dict, text: Any) -> str:
        """``resolvePodSpecInputRuntimeParameter``: a placeholder's ``GetStringValue()``, else the constant."""
        m = PLACEHOLDER.match(str(text))
        if not m:
            return str(text)
        assert m.group(1) in task["inputs"]["parameters"], f"executor input lacks {m.group(1)}"
        ptype, value = self.task_input(comp_name, task, m.group(1))
        return value if ptype == "STRING" and isinstance(value, str) else ""  # GetStringValue of a number: ""

    def json_value(self, comp_name: str, task: dict, spec: dict) -> tuple[str, Any]:
        if "componentInputParameter" in spec:
            return self.component_input(comp_name, spec["componentInputParameter"])
        return ("STRUCT" if isinstance(spec["runtimeValue"]["constant"], dict) else "LIST"), spec["runtimeValue"][
            "constant"
        ]


def resolve_pods(ir: dict, platform: dict, run_values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the driver puts into each task's pod: resources, accelerator limit, node selector, tolerations."""
    driver = Driver(ir, run_values)
    pods: dict[str, dict[str, Any]] = {}
    for name, task, comp_name, label in driver.tasks():
        executor = ir["deploymentSpec"]["executors"][label]
        container = executor.get("container")
        if not container:
            continue  # the importer: no user pod settings
        pod: dict[str, Any] = {"requests": {}, "limits": {}}
        res = container.get("resources", {})
        for field, (kind, resource) in {
            "resourceCpuRequest": ("requests", "cpu"),
            "resourceCpuLimit": ("limits", "cpu"),
            "resourceMemoryRequest": ("requests", "memory"),
            "resourceMemoryLimit": ("limits", "memory"),
        }.items():
            if field in res:
                value = driver.string_value(comp_name, task, res[field])
                assert QUANTITY.match(value), f"{name}.{field} resolves to {value!r}: ParseQuantity fails the pod"
                pod[kind][resource] = value
        acc = res.get("accelerator")
        if acc:
            acc_type = driver.string_value(comp_name, task, acc.get("resourceType", ""))
            count = driver.string_value(comp_name, task, acc.get("resourceCount", ""))
            if acc_type and count:  # driver.go: no limit unless both resolve
                assert QUANTITY.match(count), f"{name}: accelerator count {count!r}"
                pod["limits"][acc_type] = count
        pod["image"] = driver.string_value(comp_name, task, container["image"])
        k8s = platform.get(label, {})
        pod["activeDeadlineSeconds"] = int(k8s["activeDeadlineSeconds"]) if "activeDeadlineSeconds" in k8s else None
        if "nodeSelector" in k8s:
            ptype, value = driver.json_value(comp_name, task, k8s["nodeSelector"]["nodeSelectorJson"])
            assert ptype == "STRUCT", f"{name}: node selector is {ptype}; resolveK8sJsonParameter reads a struct"
            assert all(isinstance(v, str) for v in value.values()), f"{name}: not a map[string]string: {value}"
            pod["nodeSelector"] = value
        tolerations: list[dict] = []
        for tol in k8s.get("tolerations", []):
            ptype, value = driver.json_value(comp_name, task, tol["tolerationJson"])
            assert ptype in ("STRUCT", "LIST"), f"{name}: tolerations are {ptype}; the driver reads a struct or list"
            for item in [value] if ptype == "STRUCT" and value else value or []:
                assert isinstance(item, dict) and set(item) <= TOLERATION_FIELDS, f"{name}: not a Toleration: {item}"
                tolerations.append(item)
        pod["tolerations"] = tolerations
        pods[name] = pod
    return pods


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_pod_setting_resolves_with_the_defaults(tmp_path, name):
    ir, platform = _compile(tmp_path, name)
    pods = resolve_pods(ir, platform, {"model_uri": "s3://models/m"})
    assert {"prepare-rollout", "deploy-model", "validate-deployment", "finalize-rollout"} <= set(pods)
    for task, pod in pods.items():
        # Requests on every step (a namespace ResourceQuota refuses pods without them), a deadline on every pod.
        assert {"cpu", "memory"} <= set(pod["requests"]), (task, pod)
        assert "memory" in pod["limits"], (task, pod)
        assert pod["activeDeadlineSeconds"] and pod["activeDeadlineSeconds"] > 0, task
        assert pod["image"] in ("reg.example/c:1", "reg.example/o:1")
    # KFP retries only the short, rerun-safe API steps; a failing gate or rollback is an answer.
    retried = {
        t: task["retryPolicy"]["maxRetryCount"] for t, task, _, _ in Driver(ir, {}).tasks() if "retryPolicy" in task
    }
    assert retried == {"prepare-rollout": 2, "register-runtime": 2}
    if name == "llm-optimize-deploy":
        assert pods["optimize-model"]["limits"] == {"memory": "48Gi", "nvidia.com/gpu": "1"}
        assert pods["optimize-model"]["requests"] == {"cpu": "8", "memory": "48Gi"}


def test_gpu_count_node_selector_and_tolerations_are_set_per_run(tmp_path):
    ir, platform = _compile(tmp_path, "llm-optimize-deploy")
    run = {
        "model_uri": "s3://models/m",
        "optimize_accelerator_count": "2",
        "optimize_memory": "96Gi",
        "optimize_node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "optimize_tolerations": [GPU_TOLERATION],
        "validate_node_selector": {"pool": "gpu"},
        "validate_tolerations": [GPU_TOLERATION, {"key": "spot", "operator": "Exists"}],
    }
    pods = resolve_pods(ir, platform, run)
    opt = pods["optimize-model"]
    assert opt["limits"] == {"memory": "96Gi", "nvidia.com/gpu": "2"}
    assert opt["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert opt["tolerations"] == [GPU_TOLERATION]
    assert pods["validate-deployment"]["nodeSelector"] == {"pool": "gpu"}
    assert len(pods["validate-deployment"]["tolerations"]) == 2
    # The defaults ({} and []) add nothing; the light steps get no placement at all.
    defaults = resolve_pods(ir, platform, {"model_uri": "s3://models/m"})
    assert defaults["optimize-model"]["nodeSelector"] == {} and defaults["optimize-model"]["tolerations"] == []
    assert "nodeSelector" not in defaults["deploy-model"]
    # No accelerator type: no GPU limit (driver.go needs both type and count).
    cpu_only = resolve_pods(ir, platform, {"model_uri": "s3://m/x", "optimize_accelerator_type": ""})
    assert cpu_only["optimize-model"]["limits"] == {"memory": "48Gi"}


def test_an_integer_gpu_count_would_resolve_to_no_gpu_and_is_refused(tmp_path):
    # The driver's reading, shown on a pipeline that bypasses our guard: an Integer count is a
    # number value, GetStringValue() is "", and the pod gets no nvidia.com/gpu limit.
    @dsl.component(base_image="python:3.11")
    def step():
        pass

    @dsl.pipeline(name="int-count")
    def int_count(count: int = 1):
        task = step()
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(count)
        task.register_pipeline_channels([count])

    ir, platform = _compile(tmp_path, "int-count", int_count)
    assert resolve_pods(ir, platform, {})["step"]["limits"] == {}
    assert resolve_pods(ir, platform, {"count": 2})["step"]["limits"] == {}

    # Ours refuses it when the pipeline is built, naming the parameter and the fix.
    with pytest.raises(SpecError) as info:

        @dsl.pipeline(name="ours")
        def ours(count: int = 1):
            set_optimize_resources(step(), accelerator_count=count)

    assert "driver reads pod settings as strings" in str(info.value) and "count: str" in str(info.value)


def test_placement_parameters_of_the_wrong_type_are_refused(tmp_path):
    @dsl.component(base_image="python:3.11")
    def step():
        pass

    with pytest.raises(SpecError, match="node selector"):

        @dsl.pipeline(name="bad-selector")
        def bad(selector: str = ""):
            set_gpu_placement(step(), node_selector=selector)

    with pytest.raises(SpecError, match="tolerations"):

        @dsl.pipeline(name="bad-tolerations")
        def bad_tolerations(tolerations: str = ""):
            set_gpu_placement(step(), tolerations=tolerations)
