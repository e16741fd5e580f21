"""What the heavy step (optimize-model) asks the cluster for: GPU, CPU, memory and scratch disk.

llmcompressor loads the whole model into CPU memory and moves one decoder layer at a time onto the
GPU (sequential onloading, llmcompressor's default pipeline), so CPU memory grows with the model
(2 bytes per parameter in bf16, plus room) and one GPU suffices up to 70B. KFP's launcher
downloads the input Model into the pod (``/minio/``, ``/s3/``, ``/gcs/`` + the URI's path;
kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go`` ``LocalPathForURI``) and writes the
compressed model beside it before uploading it, so the pod also needs disk for both.

GPU, CPU and memory may be pipeline parameters: KFP's driver resolves them per run
(``backend/src/v2/driver/driver.go``: ``getPodResource`` for CPU and memory; the accelerator's
``resourceType``/``resourceCount``, with no accelerator when the type resolves to ""). It reads
every one of them with ``GetStringValue()`` (``resolve.go`` ``resolvePodSpecInputRuntimeParameter``),
which is ``""`` for a number: such a parameter must be a *string* parameter, the GPU count
included, or the pod silently gets no GPU. Node selector and tolerations are kfp-kubernetes JSON
parameters, resolved as a struct (node selector) or a struct or list (tolerations)
(``driver/k8s.go`` ``extendPodSpecPatch``, ``resolve.go`` ``resolveK8sJsonParameter``).

The scratch disk is an emptyDir with a size limit, mounted at the pipeline root's bucket *below*
the launcher's directory (``/minio/mlpipeline`` for KFP's default ``minio://mlpipeline``), where
the launcher downloads the input model and the step writes the compressed one
(``launcher_v2.go`` ``LocalPathForURI``: ``/minio/`` + bucket + key). Why this and not a generic
ephemeral volume (what it was before, issue 27 item 5):

- Argo's executor template already mounts emptyDirs at ``/minio``, ``/s3``, ``/gcs``, ``/.local``,
  ``/.cache``, ``/.config`` (``argocompiler/container.go`` ``addContainerExecutorTemplate``); a
  volume mounted *at* ``/minio`` replaces KFP's in the pod spec patch (volume mounts merge by
  ``mountPath``). One below it leaves KFP's in place; the runtime mounts the shallower path first
  (containerd CRI ``orderedMounts``: by number of path components).
- The step runs as UID 65532. A PVC-backed volume's root belongs to root on most block storage
  and only a pod ``fsGroup`` would change that, which neither kfp-kubernetes
  (``set_security_context``: runAsUser/runAsGroup/runAsNonRoot of the container) nor the driver
  can set per task (the compiler's ``ApplyWorkflowSpecPatch`` is an administrator's setting). The
  kubelet creates every emptyDir world-writable (kubernetes ``pkg/volume/emptydir/empty_dir.go``
  ``setupDir``: mode 0777), on any node and without a StorageClass.
- The driver parses the size limit as a constant (``driver/k8s.go`` ``extendPodSpecPatch``,
  ``EmptyDirMounts``: ``MustParse``), so it is fixed when the pipeline is compiled and checked
  here first. The node's ephemeral storage must hold it (the README says how to size nodes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llm_rollout.errors import SpecError

DEFAULT_OPTIMIZE_ACCELERATOR_TYPE = "nvidia.com/gpu"
DEFAULT_OPTIMIZE_ACCELERATOR_COUNT = "1"
DEFAULT_OPTIMIZE_CPU = "8"
DEFAULT_OPTIMIZE_MEMORY = "48Gi"
DEFAULT_OPTIMIZE_DISK = "48Gi"
"""Defaults sized for an 8B model (:func:`optimize_resources_for`; the README's table has 1B and 70B)."""
DEFAULT_SCRATCH_MOUNT = "/minio/mlpipeline"
"""Where KFP's launcher puts artifacts of KFP's default pipeline root ``minio://mlpipeline``
(``launcher_v2.go`` ``LocalPathForURI``), below its own ``/minio`` emptyDir."""
LAUNCHER_ROOTS = ("/minio", "/s3", "/gcs")
"""The launcher's directories, one per scheme (``argocompiler/container.go``: ``minioScratchLocation``,
``s3ScratchLocation``, ``gcsScratchLocation``; each an emptyDir of Argo's executor template)."""
STEP_UID = 65532
"""The user the optimize image runs as (``containers/``); the scratch volume must be writable by it."""

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki|k)?$")


@dataclass(frozen=True)
class ScratchDisk:
    """The heavy step's scratch space for the model files: an emptyDir with a size limit.

    Attributes:
        size: Its size limit, e.g. ``48Gi`` (input model + compressed model + slack).
        mount_path: The pipeline root's bucket below the launcher's directory of its scheme:
            ``/minio/mlpipeline`` (KFP's default ``minio://mlpipeline``), ``/s3/BUCKET`` or
            ``/gcs/BUCKET``; a bare ``/minio`` means ``/minio/mlpipeline``.
        storage_class: Refused when set (see the module docstring: a StorageClass-backed volume's
            root is not writable by the step's user); kept so an old ``--optimize-storage-class``
            says so instead of being ignored.
    """

    size: str = DEFAULT_OPTIMIZE_DISK
    mount_path: str = DEFAULT_SCRATCH_MOUNT
    storage_class: str | None = None

    def checked(self, field: str = "--optimize-disk") -> ScratchDisk:
        """Returns the disk with its mount path completed, after checking every field.

        Raises:
            SpecError: Naming ``field`` and the fix.
        """
        if not _QUANTITY.match(self.size or ""):
            raise SpecError(field, f"{self.size!r} is not a Kubernetes quantity", "write a size like 48Gi or 500G")
        if self.storage_class:
            raise SpecError(
                "--optimize-storage-class",
                f"{self.storage_class!r}: the scratch space is an emptyDir (writable by the step's user, UID "
                f"{STEP_UID}, on every node); a StorageClass volume's root is owned by root on most block storage "
                "and KFP cannot set the pod's fsGroup",
                "leave --optimize-storage-class out (size the nodes' ephemeral storage for --optimize-disk)",
            )
        mount = (self.mount_path or "").rstrip("/")
        if mount == "/minio":
            mount = DEFAULT_SCRATCH_MOUNT
        root, _, bucket = mount[1:].partition("/")
        if f"/{root}" not in LAUNCHER_ROOTS or not re.fullmatch(r"[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]", bucket):
            raise SpecError(
                f"{field}-mount",
                f"{self.mount_path!r} is not the pipeline root's bucket below a launcher directory (the volume "
                "must not cover the launcher's own /minio, /s3 or /gcs)",
                "use /minio (= /minio/mlpipeline, KFP's default pipeline root), /minio/BUCKET, /s3/BUCKET or "
                "/gcs/BUCKET for your pipeline root's bucket",
            )
        return ScratchDisk(self.size, mount, None)


def optimize_resources_for(parameters_billion: float) -> dict[str, Any]:
    """What optimize-model needs for a model of this many parameters (bf16 source, one GPU).

    The rule behind the README's table: bf16 weights take 2 bytes per parameter (llmcompressor's
    memory guide); CPU memory holds the whole model plus room for calibration activations and
    saving (2 x weights + 16 GiB); the disk holds the downloaded and the compressed model
    (2.5 x weights + 10 GiB); sequential onloading needs one GPU at any size. Sizes are rounded up
    to 16 GiB.

    Args:
        parameters_billion: The model's size in billions of parameters (e.g. 8 for Llama 3.1 8B).

    Returns:
        Keyword arguments for :func:`set_optimize_resources`: ``cpu``, ``memory``,
        ``accelerator_count``, ``disk``.

    Raises:
        SpecError: A size that is not positive.
    """
    import math

    if not parameters_billion or parameters_billion <= 0:
        raise SpecError(
            "parameters_billion", f"{parameters_billion!r} is not a model size", "give e.g. 8 for an 8B model"
        )
    weights_gb = 2.0 * parameters_billion * 1e9 / 2**30

    def gib(value: float) -> str:
        return f"{max(16, math.ceil(value / 16) * 16)}Gi"

    cpu = "4" if parameters_billion <= 3 else "8" if parameters_billion <= 14 else "32"
    return {
        "cpu": cpu,
        "memory": gib(2 * weights_gb + 16),
        "accelerator_count": "1",
        "disk": ScratchDisk(gib(2.5 * weights_gb + 10)),
    }


def set_optimize_resources(
    task: Any,
    *,
    accelerator_type: Any = DEFAULT_OPTIMIZE_ACCELERATOR_TYPE,
    accelerator_count: Any = DEFAULT_OPTIMIZE_ACCELERATOR_COUNT,
    cpu: Any = DEFAULT_OPTIMIZE_CPU,
    memory: Any = DEFAULT_OPTIMIZE_MEMORY,
    disk: ScratchDisk | None = None,
) -> Any:
    """Sets the requests of an optimize-model task (yours or ours).

    Each of ``accelerator_type``, ``accelerator_count``, ``cpu`` and ``memory`` is a constant or a
    pipeline parameter. Memory is requested and limited alike (a predictable OOM instead of an
    eviction); CPU is a request only (no throttling).

    Args:
        task: The ``optimize_model(...)`` task.
        accelerator_type: The GPU's extended resource name (``nvidia.com/gpu``, ``amd.com/gpu``);
            ``""`` for none.
        accelerator_count: GPUs (one is enough up to 70B with sequential onloading).
        cpu: CPU request.
        memory: Memory request and limit (about 2 bytes per parameter plus room, see README).
        disk: Scratch space for the downloaded and the compressed model (an emptyDir with this size
            limit at the pipeline root's bucket); None: KFP's own unbounded ``/minio`` emptyDir.

    Returns:
        The task.

    Raises:
        SpecError: A constant that is not a valid quantity or count.
    """
    from kfp.dsl import pipeline_channel

    def constant(value: Any) -> bool:
        return not isinstance(value, pipeline_channel.PipelineChannel)

    for name, value in (("cpu", cpu), ("memory", memory)):
        if constant(value) and not _QUANTITY.match(str(value)):
            raise SpecError(f"optimize {name}", f"{value!r} is not a Kubernetes quantity", "write e.g. 8 or 48Gi")
    if constant(accelerator_count) and not str(accelerator_count).isdigit():
        raise SpecError("optimize accelerator count", f"{accelerator_count!r} is not a whole number", "write e.g. 1")
    for name, value in (
        ("cpu", cpu),
        ("memory", memory),
        ("accelerator type", accelerator_type),
        ("accelerator count", accelerator_count),
    ):
        _string_parameter(f"optimize {name}", value)
    task.set_cpu_request(cpu)
    task.set_memory_request(memory).set_memory_limit(memory)
    use_accelerator = not constant(accelerator_type) or accelerator_type
    if use_accelerator:
        task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    # kfp 2.17's resource setters do not record the parameters they use as the task's inputs, so
    # inside an ExitHandler/If group the group never receives them and the run fails with "Parent
    # pipeline input argument 'pipelinechannel--...' not found" (kfp.local; the same IR on a
    # cluster). Register them as kfp does for secrets (dsl/pipeline_task.py register_pipeline_channels).
    used = [cpu, memory, *((accelerator_type, accelerator_count) if use_accelerator else ())]
    task.register_pipeline_channels([v for v in used if not constant(v)])
    if disk is not None:
        from kfp import kubernetes

        disk = disk.checked()
        kubernetes.empty_dir_mount(task, volume_name="model-scratch", mount_path=disk.mount_path, size_limit=disk.size)
    return task


def _string_parameter(field: str, value: Any) -> None:
    """Refuses a non-string pipeline parameter where KFP's driver reads a string.

    kubeflow/pipelines ``backend/src/v2/driver/resolve.go`` ``resolvePodSpecInputRuntimeParameter``
    returns ``GetStringValue()``, which is ``""`` for an integer or number parameter: the setting
    would silently vanish from the pod.
    """
    from kfp.dsl import pipeline_channel

    if isinstance(value, pipeline_channel.PipelineParameterChannel) and value.channel_type != "String":
        raise SpecError(
            field,
            f"the pipeline parameter {value.name!r} is {value.channel_type}, but KFP's driver reads pod "
            "settings as strings (an Integer resolves to nothing: no GPU, no request)",
            f'declare it as a str parameter, e.g. {value.name}: str = "1"',
        )


STEP_CPU = "100m"
STEP_MEMORY = "256Mi"
STEP_MEMORY_LIMIT = "1Gi"
"""Requests of the light steps (API calls only): a namespace ResourceQuota refuses pods without them."""
VALIDATE_CPU = "1"
VALIDATE_MEMORY = "1Gi"
VALIDATE_MEMORY_LIMIT = "4Gi"
"""validate-deployment runs the load client and the statistics (and may load a tokenizer)."""

STEP_TIMEOUT_S = {
    "prepare-rollout": 15 * 60,
    "register-runtime": 15 * 60,
    "deploy-model": 2 * 3600,
    "validate-deployment": 3 * 3600,
    "promote-model": 6 * 3600,  # canary.steps re-run the gate at each traffic step (kserve/gate.py)
    "rollback-model": 30 * 60,
    "finalize-rollout": 30 * 60,
    "optimize-model": 12 * 3600,
}
"""Pod deadlines (``activeDeadlineSeconds``, kfp-kubernetes ``set_timeout``): a backstop above the
library's own bounded waits (deploy 30 min plus the lease wait; validation's load levels), so a hung
pod ends and the exit handler rolls back what it left."""

STEP_RETRIES = {"prepare-rollout": 2, "register-runtime": 2}
"""Steps that are short, rerun-safe and only talk to the API server are retried by KFP when their pod
is lost (backoff 30 s, doubling); API errors are retried inside the library already. deploy,
validate and promote wait and measure for long and their failures are verdicts (a stepped
promotion's gate rolls back) or spec problems the exit handler cleans up; rollback-model fails on
purpose with ``fail_on_rollback``, which a retry would only repeat."""


def set_step_defaults(task: Any, name: str) -> Any:
    """Requests, memory limit, pod deadline and retries of one of our steps (not optimize-model's).

    Args:
        task: The pipeline task.
        name: Its component name (``deploy-model`` ...), the key of :data:`STEP_TIMEOUT_S`.

    Returns:
        The task.
    """
    from kfp import kubernetes

    if name == "validate-deployment":
        task.set_cpu_request(VALIDATE_CPU).set_memory_request(VALIDATE_MEMORY).set_memory_limit(VALIDATE_MEMORY_LIMIT)
    elif name != "optimize-model":
        task.set_cpu_request(STEP_CPU).set_memory_request(STEP_MEMORY).set_memory_limit(STEP_MEMORY_LIMIT)
    kubernetes.set_timeout(task, STEP_TIMEOUT_S[name])
    if STEP_RETRIES.get(name):
        task.set_retry(STEP_RETRIES[name], backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s")
    return task


def set_gpu_placement(task: Any, node_selector: Any = None, tolerations: Any = None) -> Any:
    """Node selector and tolerations of a GPU step, as constants or pipeline parameters.

    Parameters use kfp-kubernetes' JSON forms (``add_node_selector_json``: a ``dict`` parameter;
    ``add_toleration_json``: a ``list`` of tolerations), which KFP's driver resolves per run; an
    empty dict or list adds nothing (``driver/k8s.go`` ``extendPodSpecPatch``).

    Args:
        task: The pipeline task.
        node_selector: e.g. ``{"nvidia.com/gpu.present": "true"}`` or a ``dict`` pipeline parameter.
        tolerations: e.g. ``[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]``
            or a ``list`` pipeline parameter.

    Returns:
        The task.

    Raises:
        SpecError: A parameter of another type (the driver would not resolve it).
    """
    from kfp import kubernetes
    from kfp.dsl import pipeline_channel

    channel = pipeline_channel.PipelineParameterChannel
    if node_selector is not None:
        if isinstance(node_selector, channel) and node_selector.channel_type != "Dict":
            raise SpecError("node selector", f"{node_selector.name!r} is {node_selector.channel_type}", "use dict")
        if isinstance(node_selector, channel) or node_selector:
            kubernetes.add_node_selector_json(task, node_selector)
    if tolerations is not None:
        if isinstance(tolerations, channel) and tolerations.channel_type not in ("List", "Dict"):
            raise SpecError("tolerations", f"{tolerations.name!r} is {tolerations.channel_type}", "use list")
        if isinstance(tolerations, channel) or tolerations:
            kubernetes.add_toleration_json(task, tolerations)
    return task
