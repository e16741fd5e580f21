"""The typed rollout spec: one document describes a whole rollout.

Every default comes from the serving design the project was given:

* vLLM ``--gpu-memory-utilization=0.9``, ``--kv-cache-dtype=fp8`` (where the GPU supports it),
  ``--tensor-parallel-size`` = GPUs per replica;
* one NVIDIA A10G-class GPU per replica, memory 16Gi request / 32Gi limit, CPU 4 request / 8 limit;
* 1-10 replicas, scaled on request rate;
* SLO: TTFT p95 under 100 ms at 10-20 concurrent requests per GPU, no errors, and (only when a
  baseline is given) 2x the baseline's output throughput;
* service name ``lean-rag-inference``.

The spec is validated as a whole before anything is rendered or applied
(:func:`load_spec` / :meth:`RolloutSpec.model_validate`); every problem is raised as a
:class:`~llm_rollout.errors.SpecError` naming the field and the fix.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_rollout.errors import SpecError
from llm_rollout.names import dns_name
from llm_rollout.slo_expr import parse_checks
from llm_rollout.versions import DEFAULT_VLLM_IMAGE

DEFAULT_SERVICE_NAME = "lean-rag-inference"

# GPU families we know, with their CUDA compute capability. What vLLM serves on each (KV-cache
# dtype, quantization scheme) is decided in llm_rollout.gpu, from the pinned vLLM's code.
GPU_COMPUTE_CAPABILITY: dict[str, float] = {
    "nvidia-t4": 7.5,
    "nvidia-a100": 8.0,
    "nvidia-a10": 8.6,
    "nvidia-a10g": 8.6,
    "nvidia-a40": 8.6,
    "nvidia-l4": 8.9,
    "nvidia-l40s": 8.9,
    "nvidia-h100": 9.0,
    "nvidia-h200": 9.0,
    "nvidia-b200": 10.0,
}
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")

# Model URI schemes per platform. KFP writes artifact URIs as minio://, s3://, gs:// (object
# stores) and local paths (kfp.local); KServe's storage initializer takes s3/gs/pvc/hf/oci.
KSERVE_URI_SCHEMES = ("s3", "gs", "pvc", "hf", "oci", "minio")
LLMD_URI_SCHEMES = ("hf", "pvc", "oci", "s3", "minio")
LOCAL_URI_SCHEMES = ("", "file")
_URI_HOST_PART = {
    "s3": "bucket",
    "gs": "bucket",
    "minio": "bucket",
    "pvc": "claim",
    "hf": "organisation",
    "oci": "registry",
}
_URI_EXAMPLES = {
    "s3": "s3://bucket/path/to/model",
    "gs": "gs://bucket/path/to/model",
    "minio": "minio://bucket/path/to/model",
    "pvc": "pvc://claim-name/path/to/model",
    "hf": "hf://org/repo",
    "oci": "oci://registry/repository:tag",
}

# vLLM flags the spec owns: passing them again in extra_args would silently fight the typed knob.
_OWNED_FLAGS = {
    "--model": "model.uri",
    "--served-model-name": "model.name",
    "--port": "runtime.port",
    "--tensor-parallel-size": "resources.gpus",
    "--gpu-memory-utilization": "runtime.gpu_memory_utilization",
    "--kv-cache-dtype": "runtime.kv_cache_dtype",
    "--max-model-len": "runtime.max_model_len",
    # A key on the command line lands in plain text in the ServingRuntime; vLLM reads VLLM_API_KEY.
    "--api-key": "runtime.secret_env.VLLM_API_KEY",
}
_SECRET_LIKE_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)S?$|^AWS_SECRET", re.IGNORECASE)
"""Environment variable names whose values are secrets: they must come from a Secret, never inline."""
_FLAG_RE = re.compile(r"^--[a-z0-9][a-z0-9-_.]*(=.*)?$")


def _warn_deprecated(old: str, new: str) -> None:
    """Logs that a spec field moved (the step log and the run log show it)."""
    logging.getLogger(__name__).warning(
        "%s is deprecated: it is now %s (the uncompressed original a compressed model is compared with; "
        "the stable revision is compared through validation.comparison). Rename it in your spec",
        old,
        new,
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelSpec(_Model):
    """Which model to serve.

    Attributes:
        uri: The model location: a KFP Model artifact URI (``minio://``, ``s3://``, ``gs://``),
            ``pvc://``, ``hf://``, ``oci://``, or a local directory (``local`` platform only).
        name: The name clients send as ``model`` in OpenAI requests; defaults to the service name.
        digest: Content digest of the artifact, recorded on promotion (optional).
        revision: A short id for this model revision; derived from ``uri`` and ``digest`` when empty.
        quantization: The optimize-model scheme the model was compressed with (``W8A8``,
            ``FP8_DYNAMIC``, ``W4A16``), when known; deploy-model also reads it from the Model
            artifact's metadata. With ``runtime.accelerator`` it is checked against the GPU.
    """

    uri: str = ""
    name: str | None = None
    digest: str | None = None
    revision: str | None = None
    quantization: Literal["W8A8", "FP8_DYNAMIC", "W4A16"] | None = None


class SecretKeyRef(_Model):
    """A key of a Kubernetes Secret in the service's namespace (the value never enters the spec).

    Attributes:
        name: The Secret's name.
        key: The key inside it.
    """

    name: str
    key: str


class RuntimeSpec(_Model):
    """vLLM OpenAI server knobs, shared by the ServingRuntime, llm-d workloads and the local server.

    Attributes:
        image: Container image of the vLLM OpenAI server.
        gpu_memory_utilization: ``--gpu-memory-utilization`` (fraction of GPU memory vLLM may use).
        kv_cache_dtype: ``--kv-cache-dtype``. ``fp8`` is served from compute capability 8.0: on
            Ampere (A10G, A100) by the FlashInfer attention backend, which the image must ship; on
            Hopper by FlashAttention 3 (see :mod:`llm_rollout.gpu`).
        max_model_len: ``--max-model-len``; must fit the KV cache or vLLM refuses to start.
        extra_args: More vLLM flags, one list item per argument (never a shell string).
        env: Extra environment variables for the server container (plain values; names that look
            like secrets, e.g. ``HF_TOKEN`` or ``*_API_KEY``, are refused: use ``secret_env``).
        secret_env: Environment variables taken from Secrets (``valueFrom.secretKeyRef``), e.g.
            ``{VLLM_API_KEY: {name: vllm-api-key, key: token}}`` for the server's API key or
            ``HF_TOKEN`` for gated Hugging Face models. The kubelet resolves them: the manifests
            carry only the reference and the pipeline needs no rights on Secrets (kserve platform).
        accelerator: GPU family (e.g. ``nvidia-a10g``, ``nvidia-h100``); the KV-cache dtype and
            the model's quantization scheme are checked against what vLLM serves on it.
            Leave empty when unknown: the preflight on the node then decides.
        port: Port the server listens on inside the pod.
        runtime_name: Name of the namespaced ServingRuntime; defaults to ``<service>-vllm``.
        service_account: Service account of the serving pods (``serviceAccountName``). Default none:
            the namespace's ``default`` account. Set it when the pods need one (e.g. to read the
            model from object storage with workload identity); it must not be the pipeline steps'
            account (``service_account``), which may patch and delete InferenceServices.
    """

    image: str = DEFAULT_VLLM_IMAGE
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_dtype: str = "fp8"
    max_model_len: int | None = Field(4096, ge=16)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, SecretKeyRef] = Field(default_factory=dict)
    accelerator: str | None = None
    port: int = Field(8080, ge=1, le=65535)
    runtime_name: str | None = None
    service_account: str | None = None

    @field_validator("extra_args", mode="before")
    @classmethod
    def _args_are_a_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise SpecError(
                "runtime.extra_args",
                "a shell string was given; arguments are passed as a list, never through a shell",
                f"write one list item per argument, e.g. {json.dumps(value.split())}",
            )
        return value


class ResourcesSpec(_Model):
    """Per-replica resources (defaults: one A10G-class GPU, 16-32 GiB, 4-8 CPUs).

    Attributes:
        gpus: GPUs per replica; also the tensor-parallel size.
        gpu_resource: Extended resource name of the GPU.
        cpu_request: CPU request.
        cpu_limit: CPU limit.
        memory_request: Memory request.
        memory_limit: Memory limit.
    """

    gpus: int = Field(1, ge=0, le=64)
    gpu_resource: str = "nvidia.com/gpu"
    cpu_request: str = "4"
    cpu_limit: str = "8"
    memory_request: str = "16Gi"
    memory_limit: str = "32Gi"


class ScalingSpec(_Model):
    """Autoscaling between ``min_replicas`` and ``max_replicas`` on a metric.

    Attributes:
        min_replicas: Lower bound (0 allows scale to zero in Knative mode only).
        max_replicas: Upper bound.
        metric: ``request-rate`` (requests/s per replica), ``concurrency``, ``cpu`` or ``memory``.
        target: Target value of the metric per replica.
        prometheus_url: Prometheus address KEDA queries for request-rate scaling in Standard mode.
        expected_peak_rps: The peak request rate (requests/s) the service must carry. With a
            measured capacity per replica (``validation.slo.capacity_max_concurrency`` or
            ``capacity_max_request_rate``), validation sizes the service (replicas =
            ceil(peak / capacity), GPUs = replicas x GPUs per replica) and fails when
            ``max_replicas`` cannot carry the peak.
    """

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(10, ge=1)
    metric: Literal["request-rate", "concurrency", "cpu", "memory"] = "request-rate"
    target: int = Field(10, ge=1)
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    expected_peak_rps: float | None = Field(None, gt=0)


class CanarySpec(_Model):
    """How a new revision meets traffic when a stable one already serves.

    Attributes:
        traffic_percent: Share of traffic the new revision gets while it is validated
            (0 = dark launch: only the validator talks to it).
        steps: Stepped promotion, e.g. ``[10, 50, 100]``; the gate is re-run at each step.
    """

    traffic_percent: int = 0
    steps: list[int] = Field(default_factory=list)


class WorkloadSpec(_Model):
    """One llm-d role (decode or prefill), rendered as an LLMInferenceService workload.

    Attributes:
        replicas: Fixed replica count (``replicas``); 1 when neither this nor ``scaling`` is set.
            Exclusive with ``scaling``.
        scaling: Autoscaling of this role alone (``scaling`` with a direct KEDA trigger), so that
            prefill and decode scale independently. Exclusive with ``replicas``.
        tensor: Tensor-parallel size (``parallelism.tensor``); GPUs per pod unless ``gpus`` says more.
            A prefill role's must not exceed decode's (NIXL cannot map a wider prefill).
        data: Data-parallel size across all pods of a replica (``parallelism.data``, multi-node).
        data_local: Data-parallel ranks per pod (``parallelism.dataLocal``); set with ``data``.
        pipeline: Pipeline-parallel size (``parallelism.pipeline``): one pipeline stage per pod
            (multi-node, instead of ``data``).
        gpus: GPUs per pod; defaults to ``tensor * data_local``.
        nodes: Pods per replica; more than 1 means a leader plus ``worker`` pods (multi-node), and
            needs ``data``/``data_local`` (``data / data_local == nodes``) or ``pipeline == nodes``.
    """

    replicas: int | None = Field(None, ge=0)
    scaling: ScalingSpec | None = None
    tensor: int = Field(1, ge=1)
    data: int | None = Field(None, ge=1)
    data_local: int | None = Field(None, ge=1)
    pipeline: int | None = Field(None, ge=1)
    gpus: int | None = Field(None, ge=0)
    nodes: int = Field(1, ge=1)

    def gpus_per_pod(self) -> int:
        """GPUs requested by each pod of this role."""
        if self.gpus is not None:
            return self.gpus
        return self.tensor * (self.data_local or 1)

    def replica_count(self) -> int:
        """The fixed replica count (1 unless set); meaningless when ``scaling`` is set."""
        return 1 if self.replicas is None else self.replicas


class SchedulerSpec(_Model):
    """The llm-d endpoint picker (inference scheduler).

    Attributes:
        enabled: Deploy the endpoint picker (needed for KV-cache-aware routing and P/D).
        profile: ``default`` (no inline config: KServe's own llm-d baseline, which with a prefill
            role sends every request through prefill and otherwise scores queue, KV-cache
            utilisation and prefix cache), ``prefix-cache`` (route repeated prefixes to the pod
            that holds them, for RAG), ``load`` (queue depth and KV-cache utilisation only) or
            ``pd`` (prefill/decode split decided by ``pd_threshold_tokens``).
        pd_threshold_tokens: With ``pd``: the ``nonCachedTokens`` of llm-d's
            ``prefix-based-pd-decider``. A request gets a separate prefill when its prompt has at
            least this many tokens not in the decode pod's prefix cache; shorter ones are
            prefilled on the decode pod. Tokens as llm-d estimates them: prompt characters / 4
            (``AverageCharactersPerToken``), minus the prefix-cache hit. Unset or 0: every
            request is disaggregated (``always-disagg-pd-decider``).
    """

    enabled: bool = True
    profile: Literal["default", "prefix-cache", "load", "pd"] = "default"
    pd_threshold_tokens: int | None = Field(None, ge=0)


class LLMDSpec(_Model):
    """llm-d disaggregated serving through KServe's LLMInferenceService.

    Attributes:
        enabled: Roll out an LLMInferenceService instead of an InferenceService.
        decode: The decode role (the main workload).
        prefill: The prefill role; set it to disaggregate prefill from decode.
        scheduler: The endpoint picker.
        route_group: Traffic-splitting group (``router.route.group``) shared by the stable and
            canary members; defaults to the service name. ``""`` means no group: the member
            takes no ``weight`` either, so no canary traffic can be split to it.
        gateway_refs: Gateways to attach to; empty uses KServe's default gateway.
        http_route_refs: Existing HTTPRoutes to use instead of a managed one (no traffic splitting).
        use_preset: Reference the shared LLMInferenceServiceConfig preset (``baseRefs``).
        preset_name: Name of that preset.
        kv_connector: KV-transfer connector for P/D (``--kv_transfer_config`` on both roles).
        image: vLLM image of the llm-d roles. Empty (the default) keeps the image of KServe's
            well-known presets (``config-llm-*template.yaml``: ``ghcr.io/llm-d/llm-d-cuda``, built
            to run as non-root, with NIXL for the routing sidecar's ``--kv-connector=nixlv2``).
            Those presets set ``runAsNonRoot: true``, so an image given here must run as a
            non-root user and ship NIXL; upstream ``vllm/vllm-openai`` runs as root and would not
            start under them.
    """

    enabled: bool = False
    decode: WorkloadSpec = Field(default_factory=WorkloadSpec)
    prefill: WorkloadSpec | None = None
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    route_group: str | None = None
    gateway_refs: list[str] = Field(default_factory=list)
    http_route_refs: list[str] = Field(default_factory=list)
    use_preset: bool = True
    preset_name: str = "llm-rollout-pd-nixl"
    kv_connector: str = "NixlConnector"
    image: str | None = None


class SLOSpec(_Model):
    """What the new revision must meet before it is promoted.

    Attributes:
        checks: Expressions ``<metric> <op> <number>`` judged at each of ``judge_concurrency``,
            e.g. ``p95_ttft_ms <= 100``. Metric names carry their unit.
        judge_concurrency: Concurrency levels the checks apply to (10-20 per GPU by default).
        min_successful_requests: Below this many successful requests a level is inconclusive.
        capacity_max_concurrency: When set, also search (by bisection between 1 and this) for the
            highest concurrency that still meets ``checks`` ("concurrent requests per replica").
        capacity_max_request_rate: When set, also search the highest open-loop request rate
            (requests/s) that still meets ``checks``, on a ladder of ``capacity_rate_steps`` rates
            up to this one: Poisson arrivals, or a timed workload file replayed faster or slower.
        capacity_rate_steps: Rungs of that ladder (its resolution is the maximum / steps).
        capacity_repeats: Measurements that settle a value near the boundary: a value is *met*
            only when every one of them meets the checks and *missed* only when none does; mixed
            values lie inside the reported interval. 1 is a plain bisection.
        capacity_max_measurements: Upper bound on each search's measurements (each at most
            ``load.max_duration_s``); when it runs out the interval reported is what was settled.
    """

    checks: list[str] = Field(default_factory=lambda: ["p95_ttft_ms <= 100", "error_rate == 0"])
    judge_concurrency: list[int] = Field(default_factory=lambda: [10, 20])
    min_successful_requests: int = Field(10, ge=1)
    capacity_max_concurrency: int | None = Field(None, ge=1)
    capacity_max_request_rate: float | None = Field(None, gt=0)
    capacity_rate_steps: int = Field(16, ge=2, le=1024)
    capacity_repeats: int = Field(3, ge=1, le=10)
    capacity_max_measurements: int = Field(40, ge=2, le=1000)


class LoadWorkloadSpec(_Model):
    """What the load phase sends, besides the generated prompts (``validation.load.workload``).

    The datasets and their parameters are those of ``vllm bench serve`` (vLLM 0.32,
    ``vllm/benchmarks/datasets/datasets.py``; see :mod:`llm_rollout.validation.workload`):

    Attributes:
        dataset: ``custom`` (a JSONL file of requests: ``--dataset-name custom``), ``random``
            (lengths from a range: ``--dataset-name random``) or ``prefix_repetition`` (shared
            prefixes, RAG-like: ``--dataset-name prefix_repetition``).
        path: ``custom``: the JSONL file (``--dataset-path``), or ``sample:support-rag`` for the
            shipped sample. One request per line: ``prompt`` or ``messages``, ``max_tokens``,
            optionally ``timestamp`` (arrival, seconds from the start; on every line or none).
        time_scale: ``custom``: multiplier from the file's timestamps to seconds
            (``--timed-trace-sec-multiplier``; 0.001 for milliseconds).
        input_len: ``random``: mean prompt length in words (``--random-input-len``; default
            ``load.input_words``).
        output_len: ``random``/``prefix_repetition``: mean output tokens (``--random-output-len``,
            ``--prefix-repetition-output-len``; default ``load.output_tokens``).
        range_ratio: ``random``: lengths vary uniformly by this share around the means
            (``--random-range-ratio``, in [0, 1)).
        prefix_len: ``random``: words of one fixed prefix (``--random-prefix-len``, default 0);
            ``prefix_repetition``: words of each shared prefix (``--prefix-repetition-prefix-len``,
            default ``load.input_words``).
        suffix_len: ``prefix_repetition``: words after the prefix (``--prefix-repetition-suffix-len``,
            default ``load.input_words / 4``).
        num_prefixes: ``prefix_repetition``: distinct prefixes (``--prefix-repetition-num-prefixes``,
            default 10); ``load.num_prompts`` must be at least this.
    """

    dataset: Literal["custom", "random", "prefix_repetition"]
    path: str | None = None
    time_scale: float = Field(1.0, gt=0)
    input_len: int | None = Field(None, ge=1)
    output_len: int | None = Field(None, ge=1)
    range_ratio: float = Field(0.0, ge=0, lt=1)
    prefix_len: int | None = Field(None, ge=0)
    suffix_len: int | None = Field(None, ge=1)
    num_prefixes: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _fields_of_the_dataset(self) -> LoadWorkloadSpec:
        allowed = {
            "custom": {"path", "time_scale"},
            "random": {"input_len", "output_len", "range_ratio", "prefix_len"},
            "prefix_repetition": {"prefix_len", "suffix_len", "num_prefixes", "output_len"},
        }[self.dataset]
        # A field left at its default is not "given" (a dumped spec carries every field, e.g. as JSON).
        fields = type(self).model_fields
        stray = sorted(
            name
            for name in fields
            if name not in allowed and name != "dataset" and getattr(self, name) != fields[name].default
        )
        if stray:
            raise SpecError(
                f"validation.load.workload.{stray[0]}",
                f"does not apply to dataset {self.dataset!r} (it takes {', '.join(sorted(allowed))})",
                "remove it or choose the dataset it belongs to",
            )
        if self.dataset == "custom" and not self.path:
            raise SpecError(
                "validation.load.workload.path",
                "dataset 'custom' needs a JSONL file",
                "set path to the file (or sample:support-rag for the shipped sample)",
            )
        return self


class LoadSpec(_Model):
    """The load phase of validation (measured like ``vllm bench serve``).

    Attributes:
        concurrency: Fixed concurrency levels to measure.
        request_rate: Poisson request rate (requests/s) for an extra open-loop level; none by default.
        num_prompts: Requests sent per level.
        max_duration_s: Upper bound on the time spent at one level.
        input_words: Approximate prompt length (words) of generated prompts.
        output_tokens: ``max_tokens`` per request (with ``ignore_eos`` so every request is full length).
        endpoint: ``completions`` or ``chat``.
        warmup_requests: Requests sent and discarded before measuring.
        shared_prefix_words: Words of one shared prefix put in front of every prompt (a RAG-like
            workload: the same retrieved context, different questions); 0 = fully distinct
            prompts. When set, validation also checks that prefix-cache hits rise.
        workload: Send a workload file or a ``vllm bench serve`` shape instead of the generated
            prompts (:class:`LoadWorkloadSpec`). A file with timestamps is replayed open loop at
            its arrival times (one level, ``replay``, judged); otherwise every concurrency level
            draws its requests from the workload in turn.
    """

    concurrency: list[int] = Field(default_factory=lambda: [1, 10, 20])
    request_rate: float | None = Field(None, gt=0)
    num_prompts: int = Field(100, ge=1)
    max_duration_s: float = Field(120.0, gt=0)
    input_words: int = Field(64, ge=1)
    output_tokens: int = Field(64, ge=1)
    endpoint: Literal["completions", "chat"] = "completions"
    warmup_requests: int = Field(2, ge=0)
    shared_prefix_words: int = Field(0, ge=0)
    workload: LoadWorkloadSpec | None = None

    @model_validator(mode="after")
    def _workload_or_shared_prefix(self) -> LoadSpec:
        if self.workload is not None and self.shared_prefix_words:
            raise SpecError(
                "validation.load.shared_prefix_words",
                "applies to the generated prompts, not to validation.load.workload",
                "use workload.dataset: prefix_repetition (or random with prefix_len) instead",
            )
        return self


class RecoverySpec(_Model):
    """Did compression keep the model? The compressed candidate against its own uncompressed original.

    Used only when the original is served beside the candidate (``base_url``; ``llm-rollout
    run-local --baseline`` and the demo start it): never against the stable revision, which is
    another model (that question is :class:`ComparisonSpec`'s).

    Attributes:
        base_url: The uncompressed original's endpoint.
        base_model: Model name served at ``base_url`` (default: the candidate's).
        min_token_agreement: Minimum greedy token agreement with the original (0-1).
        checks: Ratio checks against the original at the judged levels (``<stem>_ratio_vs_baseline``),
            e.g. the serving design's 2x output throughput.
    """

    base_url: str | None = None
    base_model: str | None = None
    min_token_agreement: float = Field(0.9, ge=0, le=1)
    checks: list[str] = Field(default_factory=lambda: ["output_throughput_ratio_vs_baseline >= 2"])


class ComparisonSpec(_Model):
    """Is the candidate at least as good as what serves now? (every rollout with a stable revision).

    The stable revision and the candidate are measured in counterbalanced blocks of four rounds
    (candidate, stable, stable, candidate) at one concurrency, so that noise on the machine and
    the cost of being measured right after the other side hit both alike, and judged for
    non-inferiority over the blocks (a distribution-free interval of the median block ratio,
    :mod:`llm_rollout.validation.stats`): the candidate passes a metric when it is not worse than
    the stable by more than the margin at the stated confidence, fails it when it is worse by more
    than the margin at that confidence, and more blocks are measured while neither holds, up to
    ``max_blocks`` (then the verdict is inconclusive). Tail latency is the absolute SLO's job
    (``slo.checks``); the comparison uses per-round medians by default, which a round of 16
    requests measures well. Never text agreement: a retrained model legitimately says other
    things; its quality is the correctness suite's score.

    Attributes:
        enabled: Compare with the stable revision when one serves.
        concurrency: Concurrent streams in each round.
        round_requests: Requests per round and side.
        output_tokens: ``max_tokens`` of each round's requests (with ``ignore_eos``). Longer than
            the load phase's default on purpose: a stream must last long enough for its
            inter-token gaps to be measured on a busy client (a 16-token stream on the tiny model
            lasts ~30 ms and often arrives in one read, leaving no TPOT to compare).
        min_blocks: Blocks before the first look (looks then double: 6, 12, 24). The sign test
            needs 6 for a decision at 95 % spread over 3 looks.
        max_blocks: Blocks at most (the bound of the sequential test).
        settle_s: Pause before each round that follows the other side's, so that the other
            server is idle while this one is measured. vLLM's workers busy-poll their shared
            memory queue for 1 s after their last step (``SpinCondition``, busy_loop_s=1, in
            vllm/distributed/device_communicators/shm_broadcast.py): on shared CPUs that poll
            took half a core from the side measured next. 0 turns it off (servers on separate
            machines).
        confidence: One-sided confidence of every decision, kept over all looks (Bonferroni).
        ttft_statistic: The per-round TTFT statistic compared (``median``, ``mean``, ``p<NN>``).
        ttft_margin: Tolerated relative TTFT increase (0.2 = 20 %). The defaults (20 %) are what a
            shared 2-core machine can decide within 24 blocks; on steady GPU serving tighten
            them (10 % decides there in a few looks).
        tpot_margin: Tolerated relative increase of the mean time per output token (token-weighted).
        throughput_margin: Tolerated relative loss of output throughput (tokens/s of a round).
        quality_tolerance: Share of the correctness suite the candidate may pass less than the
            stable (0: it must pass at least every probe the stable passes, by count).
    """

    enabled: bool = True
    concurrency: int = Field(4, ge=1)
    round_requests: int = Field(16, ge=1)
    output_tokens: int = Field(32, ge=2)
    min_blocks: int = Field(6, ge=2)
    max_blocks: int = Field(24, ge=2)
    settle_s: float = Field(1.2, ge=0, le=60)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    ttft_statistic: str = Field("median", pattern=r"^(mean|median|p\d{1,2})$")
    ttft_margin: float = Field(0.20, ge=0)
    tpot_margin: float = Field(0.20, ge=0)
    throughput_margin: float = Field(0.20, ge=0, lt=1)
    quality_tolerance: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _blocks_in_order(self) -> ComparisonSpec:
        if self.min_blocks > self.max_blocks:
            raise ValueError(f"min_blocks {self.min_blocks} is above max_blocks {self.max_blocks}")
        return self


_DEPRECATED_VALIDATION = {
    "baseline_url": "base_url",
    "baseline_model": "base_model",
    "min_token_agreement": "min_token_agreement",
}
"""Old ``validation.*`` fields and their place in ``validation.recovery`` (mapped with a warning)."""


class ValidationSpec(_Model):
    """The validation gate.

    Attributes:
        readiness_timeout_s: How long the endpoint may take to list the model and stream once.
        smoke_suite: Run the built-in correctness smoke suite.
        suite_file: A user-supplied correctness suite (YAML/JSON list of prompts and expectations).
        recovery: Compressed against its uncompressed original (agreement, speed-up), when the
            original is served beside it. The old ``baseline_url``, ``baseline_model``,
            ``min_token_agreement`` and ``slo.baseline_checks`` map here (with a warning).
        comparison: The candidate against the stable revision (non-inferiority).
        load: The load phase.
        slo: The SLO checks.
        api_key_env: Environment variable holding the endpoint's API key (never logged).
        api_key_file: File (e.g. a mounted secret) holding the API key.
        tls_verify: Verify the endpoint's TLS certificate.
        ca_bundle: CA bundle file for TLS verification.
        metrics_urls: Prometheus text endpoints to scrape (e.g. per llm-d role: ``prefill``,
            ``decode``, and ``epp`` for the endpoint picker).
        log_text: Log prompts and completions (off by default).
        expect_disaggregation: Prove prefill/decode disaggregation from the roles' metrics
            (prefill served the prefills, decode did not re-run them); a prefill role that served
            nothing fails validation. ``None``: prove it whenever ``metrics_urls`` has a
            ``prefill`` role.
        pd_max_decode_recompute_ratio: Share of decode's prompt tokens it may compute itself
            (the rest must arrive from prefill by KV transfer or hit its prefix cache).
        expect_prefix_cache_hits: Require prefix-cache hits to rise over the load. ``None``: when
            ``load.shared_prefix_words`` is set (a repeated-prefix workload).
    """

    readiness_timeout_s: float = Field(300.0, gt=0)
    smoke_suite: bool = True
    suite_file: str | None = None
    recovery: RecoverySpec = Field(default_factory=RecoverySpec)
    comparison: ComparisonSpec = Field(default_factory=ComparisonSpec)
    load: LoadSpec = Field(default_factory=LoadSpec)
    slo: SLOSpec = Field(default_factory=SLOSpec)
    api_key_env: str | None = None
    api_key_file: str | None = None
    tls_verify: bool = True
    ca_bundle: str | None = None
    metrics_urls: dict[str, str] = Field(default_factory=dict)
    log_text: bool = False
    expect_disaggregation: bool | None = None
    pd_max_decode_recompute_ratio: float = Field(0.5, ge=0, le=1)
    expect_prefix_cache_hits: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _map_deprecated(cls, data: Any) -> Any:
        """Moves the pre-0.2 baseline fields into ``recovery``, saying so once per field."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        moved: dict[str, Any] = {}
        for old, new in _DEPRECATED_VALIDATION.items():
            if old in data:
                moved[new] = data.pop(old)
                _warn_deprecated(f"validation.{old}", f"validation.recovery.{new}")
        slo = data.get("slo")
        if isinstance(slo, dict) and "baseline_checks" in slo:
            slo = dict(slo)
            moved["checks"] = slo.pop("baseline_checks")
            data["slo"] = slo
            _warn_deprecated("validation.slo.baseline_checks", "validation.recovery.checks")
        if moved:
            recovery = data.get("recovery")
            if isinstance(recovery, BaseModel):
                recovery = recovery.model_dump()
            clash = sorted(set(moved) & set(recovery or {}))
            if clash:
                raise ValueError(
                    f"validation.recovery.{clash[0]} is set together with its deprecated old name; keep the new one"
                )
            data["recovery"] = {**(recovery or {}), **moved}
        return data


class LocalSpec(_Model):
    """The ``local`` platform (a vLLM process on this machine, no cluster).

    Attributes:
        state_dir: Where promotions and their history are recorded.
        vllm_python: Python interpreter that has vLLM; defaults to the project's cached venv.
        host: Address the local servers bind to.
        device: vLLM device (``cpu`` here).
        keep_serving: Leave the promoted server running after the run.
        startup_timeout_s: How long a local server may take to become healthy.
    """

    state_dir: str = "~/.local/state/llm-rollout"
    vllm_python: str | None = None
    host: str = "127.0.0.1"
    device: str = "cpu"
    keep_serving: bool = False
    startup_timeout_s: float = Field(300.0, gt=0)


class RolloutSpec(_Model):
    """Everything one rollout needs.

    Attributes:
        name: Service name (DNS-1123, at most 40 characters after normalisation).
        namespace: Kubernetes namespace.
        platform: ``kserve`` (a cluster) or ``local`` (a vLLM process here).
        deployment_mode: KServe deployment mode: ``Standard`` (raw Deployments; canary via
            ``spec.canary[]``, KServe >= 0.20) or ``Knative`` (canary via ``canaryTrafficPercent``).
        kserve_version: Oldest KServe version the target cluster runs (decides canary support).
        service_account: Service account the pipeline steps run as (``llm-rollout submit|schedule
            --service-account``); ``manifests/rbac.yaml`` gives it its Role. The serving pods never
            use it (``runtime.service_account``).
        model: The model to serve.
        runtime: vLLM runtime knobs.
        resources: Per-replica resources.
        replicas: Fixed replica count (exclusive with ``scaling``).
        scaling: Autoscaling (the default unless ``replicas`` is set).
        canary: Canary behaviour.
        llmd: llm-d disaggregated serving.
        validation: The validation gate.
        local: The local platform.
    """

    name: str = DEFAULT_SERVICE_NAME
    namespace: str = "default"
    platform: Literal["kserve", "local"] = "local"
    deployment_mode: Literal["Standard", "Knative"] = "Standard"
    kserve_version: str = "0.20"
    service_account: str = "llm-rollout"
    model: ModelSpec = Field(default_factory=ModelSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    replicas: int | None = Field(None, ge=0)
    scaling: ScalingSpec | None = Field(default_factory=ScalingSpec)
    canary: CanarySpec = Field(default_factory=CanarySpec)
    llmd: LLMDSpec = Field(default_factory=LLMDSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    local: LocalSpec = Field(default_factory=LocalSpec)

    @field_validator("deployment_mode", mode="before")
    @classmethod
    def _legacy_mode_names(cls, value: Any) -> Any:
        # KServe renamed RawDeployment -> Standard and Serverless -> Knative; accept the old names.
        return {"RawDeployment": "Standard", "Serverless": "Knative"}.get(value, value)

    @model_validator(mode="before")
    @classmethod
    def _replicas_vs_scaling(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("replicas") is not None:
            if data.get("scaling") is not None and "scaling" in data:
                raise SpecError(
                    "replicas",
                    "replicas and scaling are both set; they are mutually exclusive",
                    "keep 'replicas' for a fixed count or 'scaling' for autoscaling, not both",
                )
            data = {**data, "scaling": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> RolloutSpec:
        check_spec(self)
        return self

    # Derived values -------------------------------------------------------------------------

    @property
    def service_name(self) -> str:
        """The DNS-safe service name."""
        return dns_name(self.name, field="name")

    @property
    def served_model_name(self) -> str:
        """The ``model`` name clients use."""
        return self.model.name or self.service_name

    @property
    def runtime_name(self) -> str:
        """Name of the namespaced ServingRuntime."""
        return dns_name(self.runtime.runtime_name or f"{self.service_name}-vllm", field="runtime.runtime_name")

    @property
    def route_group(self) -> str | None:
        """llm-d traffic-splitting group shared by stable and canary members (None: no group)."""
        if self.llmd.route_group == "":
            return None
        return dns_name(self.llmd.route_group or self.service_name, field="llmd.route_group", max_len=63)


def gpu_capability(family: str) -> tuple[int, int]:
    """The (major, minor) CUDA compute capability of a known GPU family."""
    value = GPU_COMPUTE_CAPABILITY[family]
    return int(value), round((value - int(value)) * 10)


def check_gpu(spec: RolloutSpec, scheme: str | None = None, field: str = "model.quantization") -> str | None:
    """The GPU preflight: what vLLM does with the spec's KV-cache dtype and the model's scheme.

    Args:
        spec: The spec (``runtime.accelerator``, ``runtime.kv_cache_dtype``, ``model.quantization``).
        scheme: The model's quantization scheme when known from elsewhere (the artifact metadata);
            defaults to ``model.quantization``.
        field: Where ``scheme`` came from, for messages.

    Returns:
        A note naming the attention backend vLLM picks (None without a declared GPU).

    Raises:
        SpecError: What vLLM cannot serve, or a scheme that loses what it was made for there.
    """
    from llm_rollout.gpu import check_kv_cache_dtype, check_scheme

    rt = spec.runtime
    if rt.accelerator is None:
        return None
    cap = gpu_capability(rt.accelerator)
    note = check_kv_cache_dtype(rt.accelerator, cap, rt.kv_cache_dtype)
    chosen = scheme or spec.model.quantization
    if chosen:
        check_scheme(rt.accelerator, cap, chosen, field if scheme else "model.quantization")
    return note


def check_vllm_args(args: list[str], field: str = "runtime.extra_args") -> None:
    """Checks the shape of free-form vLLM arguments.

    Each item must be ``--flag``, ``--flag=value`` or the value following a ``--flag``; flags the
    spec owns (``--model``, ``--port``, ``--tensor-parallel-size`` ...) are refused so that the typed
    knob stays the one source of truth.

    Args:
        args: The argument list.
        field: Spec field the list came from, for messages.

    Raises:
        SpecError: On the first malformed item.
    """
    expect_value = False
    for i, item in enumerate(args):
        where = f"{field}[{i}]"
        if not isinstance(item, str) or not item:
            raise SpecError(where, f"{item!r} is not a non-empty string", "give each argument as a string")
        if item.startswith("--"):
            if not _FLAG_RE.match(item):
                raise SpecError(
                    where,
                    f"{item!r} is not a vLLM flag (expected --lower-case-name or --name=value)",
                    "write flags like '--enable-prefix-caching' or '--max-num-seqs=256'",
                )
            flag = item.split("=", 1)[0]
            owner = _OWNED_FLAGS.get(flag.replace("_", "-"))
            if owner:
                raise SpecError(where, f"{flag} is set by the spec field '{owner}'", f"set '{owner}' instead")
            expect_value = "=" not in item
        elif item.startswith("-"):
            raise SpecError(
                where,
                f"{item!r} is a short or malformed flag; vLLM takes long flags only",
                "use the long form, e.g. '--tensor-parallel-size' instead of '-tp'",
            )
        elif " " in item and not expect_value:
            raise SpecError(
                where,
                f"{item!r} looks like a shell string",
                "split it into one list item per argument",
            )
        elif not expect_value:
            raise SpecError(
                where,
                f"{item!r} is a value without a flag before it",
                "put the flag before it, e.g. ['--max-num-seqs', '256'] or '--max-num-seqs=256'",
            )
        else:
            expect_value = False


def check_model_uri(uri: str, platform: str, *, llmd: bool = False, field: str = "model.uri") -> None:
    """Checks that ``uri`` has a scheme the target platform can load.

    Args:
        uri: The model URI or path.
        platform: ``kserve`` or ``local``.
        llmd: The target is an LLMInferenceService (llm-d), which takes fewer schemes.
        field: Spec field, for messages.

    Raises:
        SpecError: When the scheme is not accepted there.
    """
    if not uri:
        return  # filled in from the Model artifact at run time
    scheme = urlparse(uri).scheme.lower()
    if platform == "local":
        if scheme not in LOCAL_URI_SCHEMES:
            raise SpecError(
                field,
                f"the local platform serves models from this machine's disk, not {scheme}:// ({uri})",
                "give a local directory (or file:// URI), or use platform 'kserve'",
            )
        return
    accepted = LLMD_URI_SCHEMES if llmd else KSERVE_URI_SCHEMES
    if scheme not in accepted:
        what = "llm-d's storage initializer" if llmd else "KServe's storage initializer"
        shown = scheme + "://" if scheme else "a local path"
        raise SpecError(
            field,
            f"{what} cannot load {shown} ({uri})",
            "use one of "
            + ", ".join(f"{s}://" for s in accepted)
            + " (upload local models to object storage or a PVC)",
        )
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise SpecError(
            field,
            f"{uri!r} names no {_URI_HOST_PART.get(scheme, 'location')} after {scheme}://",
            f"write it like {_URI_EXAMPLES[scheme]}",
        )
    if scheme == "hf" and not parsed.path.strip("/"):
        raise SpecError(
            field,
            f"{uri!r} names an organisation but no repository",
            f"write it like {_URI_EXAMPLES[scheme]}",
        )


def _check_sizing(spec: RolloutSpec) -> None:
    """A stated peak needs a measured capacity to size from (the sizing itself runs in validation)."""
    slo = spec.validation.slo
    peaks = [("scaling", spec.scaling)] + [
        (f"llmd.{name}.scaling", role.scaling)
        for name, role in (("decode", spec.llmd.decode), ("prefill", spec.llmd.prefill))
        if role is not None
    ]
    for where, scaling in peaks:
        if scaling is None or scaling.expected_peak_rps is None:
            continue
        if slo.capacity_max_concurrency is None and slo.capacity_max_request_rate is None:
            raise SpecError(
                f"{where}.expected_peak_rps",
                "sizing needs the capacity per replica, and no capacity search is configured",
                "set validation.slo.capacity_max_concurrency (and/or capacity_max_request_rate) above the "
                "load one replica should carry",
            )


def check_spec(spec: RolloutSpec) -> None:
    """Cross-field checks that pydantic's per-field validation cannot express.

    Raises:
        SpecError: On the first problem, naming the field and the fix.
    """
    # Names must be DNS-safe (dns_name raises when they cannot be made so).
    _ = spec.service_name, spec.runtime_name
    _check_sizing(spec)
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", spec.namespace) or len(spec.namespace) > 63:
        raise SpecError(
            "namespace",
            f"{spec.namespace!r} is not a valid Kubernetes namespace name",
            "use lowercase letters, digits and '-', at most 63 characters",
        )
    for field, sa in (
        ("service_account", spec.service_account),
        ("runtime.service_account", spec.runtime.service_account),
    ):
        if sa is not None and (not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", sa) or len(sa) > 253):
            raise SpecError(
                field,
                f"{sa!r} is not a valid service account name",
                "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            )
    if spec.runtime.service_account == spec.service_account:
        raise SpecError(
            "runtime.service_account",
            f"{spec.service_account!r} is the pipeline steps' account, which may patch and delete "
            "InferenceServices; the model server must not run with those rights",
            "leave runtime.service_account unset (the namespace's default account) or name an account of its own",
        )

    # SLO expressions: a typo must fail here, before deploy-model writes a canary, not at validation.
    parse_checks(spec.validation.slo.checks, "validation.slo.checks")
    parse_checks(spec.validation.recovery.checks, "validation.recovery.checks")

    # vLLM runtime.
    check_vllm_args(spec.runtime.extra_args)
    for var in spec.runtime.env:
        if _SECRET_LIKE_ENV.search(var):
            raise SpecError(
                f"runtime.env.{var}",
                "looks like a secret, and runtime.env values are written in plain text into the manifests",
                f"put it in a Secret and reference it: runtime.secret_env.{var}: {{name: <secret>, key: <key>}}",
            )
    both = sorted(set(spec.runtime.env) & set(spec.runtime.secret_env))
    if both:
        raise SpecError(f"runtime.secret_env.{both[0]}", "is set in runtime.env too", "keep one of them")
    rt = spec.runtime
    if rt.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise SpecError(
            "runtime.kv_cache_dtype",
            f"{rt.kv_cache_dtype!r} is not a KV-cache dtype vLLM knows",
            "use one of " + ", ".join(KV_CACHE_DTYPES),
        )
    if rt.accelerator is not None:
        if rt.accelerator not in GPU_COMPUTE_CAPABILITY:
            raise SpecError(
                "runtime.accelerator",
                f"unknown GPU family {rt.accelerator!r}",
                "use one of " + ", ".join(sorted(GPU_COMPUTE_CAPABILITY)) + ", or leave it empty",
            )
        check_gpu(spec)
    if spec.resources.gpus == 0 and spec.platform == "kserve" and not spec.llmd.enabled:
        raise SpecError(
            "resources.gpus",
            "0 GPUs per replica: the vLLM GPU image cannot serve without a GPU",
            "request at least 1 GPU (tensor parallel = GPUs per replica)",
        )

    # Scaling.
    if spec.scaling is not None:
        sc = spec.scaling
        if sc.min_replicas > sc.max_replicas:
            raise SpecError(
                "scaling.min_replicas",
                f"min_replicas ({sc.min_replicas}) is above max_replicas ({sc.max_replicas})",
                "make min_replicas <= max_replicas",
            )
        if sc.min_replicas == 0 and spec.deployment_mode == "Standard" and not spec.llmd.enabled:
            raise SpecError(
                "scaling.min_replicas",
                "scale to zero needs Knative; Standard mode keeps at least one replica",
                "set min_replicas >= 1 or deployment_mode 'Knative'",
            )

    _version_tuple(spec.kserve_version)  # checked even when no canary needs it yet

    # Canary.
    cn = spec.canary
    if not 0 <= cn.traffic_percent <= 100:
        raise SpecError(
            "canary.traffic_percent",
            f"{cn.traffic_percent} is outside 0-100",
            "give a percentage between 0 (dark launch) and 100",
        )
    previous = 0
    for i, step in enumerate(cn.steps):
        if not 0 < step <= 100 or step <= previous:
            raise SpecError(
                f"canary.steps[{i}]",
                f"steps must rise strictly within 1-100, got {cn.steps}",
                "give increasing percentages ending at 100, e.g. [10, 50, 100]",
            )
        previous = step
    if cn.steps and cn.steps[-1] != 100:
        raise SpecError("canary.steps", f"the last step is {cn.steps[-1]}, not 100", "end the steps with 100")
    split = bool(cn.traffic_percent or cn.steps) and spec.platform == "kserve" and not spec.llmd.enabled
    if split and spec.deployment_mode == "Standard" and _version_tuple(spec.kserve_version) < (0, 20):
        raise SpecError(
            "canary",
            f"KServe {spec.kserve_version} in Standard (RawDeployment) mode ignores canary traffic "
            "(spec.canary[] needs KServe >= 0.20)",
            "upgrade KServe to 0.20+, use deployment_mode 'Knative', or set canary.traffic_percent "
            "to 0 with no steps (dark launch, validated before any traffic)",
        )

    # Model URI.
    check_model_uri(spec.model.uri, spec.platform, llmd=spec.llmd.enabled)

    # llm-d.
    if spec.llmd.enabled:
        check_llmd(spec)


def check_llmd(spec: RolloutSpec) -> None:
    """Client-side mirror of the LLMInferenceService webhook rules, plus NIXL's own limits.

    Mirrored from KServe's v1alpha2 validator: weight requires group and group requires weight;
    traffic splitting needs the managed Gateway API route (no custom HTTPRoute refs); custom
    HTTPRoute refs need named gateways; a workload's ``replicas`` and ``scaling`` are exclusive;
    ``worker`` requires data or pipeline parallelism (``data`` and ``dataLocal`` together, not
    both kinds). Added for P/D: prefill tensor parallel <= decode's (NIXL), prefill needs the
    scheduler (nothing else routes to it), GPUs on the roles.

    Raises:
        SpecError: On the first problem.
    """
    ld = spec.llmd
    decode, prefill = ld.decode, ld.prefill
    roles = [("decode", decode)] + ([("prefill", prefill)] if prefill is not None else [])
    if prefill is not None:
        if prefill.tensor > decode.tensor:
            raise SpecError(
                "llmd.prefill.tensor",
                f"prefill tensor parallel ({prefill.tensor}) is larger than decode's ({decode.tensor}); "
                "NIXL KV transfer cannot map a wider prefill onto a narrower decode",
                f"set llmd.prefill.tensor <= {decode.tensor} or raise llmd.decode.tensor",
            )
        if not ld.scheduler.enabled:
            raise SpecError(
                "llmd.scheduler.enabled",
                "prefill is set but the scheduler is off; without the endpoint picker no request is "
                "ever sent to the prefill pods (silent decode-only fallback)",
                "enable llmd.scheduler (profile 'pd') or remove llmd.prefill",
            )
        if decode.gpus_per_pod() == 0 and prefill.gpus_per_pod() == 0:
            raise SpecError(
                "llmd.decode.gpus",
                "both prefill and decode would run on zero GPUs",
                "give each role at least 1 GPU (tensor parallel size or gpus)",
            )
    if spec.platform == "kserve":
        for role_name, role in roles:
            if role.gpus_per_pod() == 0:
                raise SpecError(
                    f"llmd.{role_name}.gpus",
                    f"the {role_name} role would run on zero GPUs; the vLLM GPU image cannot serve without one",
                    f"set llmd.{role_name}.gpus to at least 1 (or leave it empty: tensor x data_local)",
                )
    for role_name, role in roles:
        _check_workload(role_name, role)

    # Routing: the webhook's traffic rules.
    has_split = bool(spec.canary.traffic_percent or spec.canary.steps)
    if has_split and ld.http_route_refs:
        raise SpecError(
            "llmd.http_route_refs",
            "traffic splitting between members needs the managed Gateway API route, but custom HTTPRoute refs are set",
            "remove llmd.http_route_refs, or set canary.traffic_percent to 0 with no steps",
        )
    if has_split and ld.route_group == "":
        raise SpecError(
            "llmd.route_group",
            "canary traffic is a route weight, and weight requires group, but llmd.route_group is '' (no group)",
            "remove llmd.route_group (it defaults to the service name), "
            "or set canary.traffic_percent to 0 with no steps",
        )
    if ld.route_group and ld.http_route_refs:
        raise SpecError(
            "llmd.route_group",
            "group requires weight, but with custom HTTPRoute refs a member gets no weight "
            "(traffic splitting needs the managed route)",
            "remove llmd.route_group, or remove llmd.http_route_refs to let KServe manage the route",
        )
    if ld.http_route_refs and not ld.gateway_refs:
        raise SpecError(
            "llmd.http_route_refs",
            "custom HTTPRoutes cannot be used with the managed gateway (llmd.gateway_refs is empty)",
            "name the gateways your routes attach to in llmd.gateway_refs, or remove llmd.http_route_refs",
        )
    if ld.scheduler.profile == "pd" and prefill is None:
        raise SpecError(
            "llmd.scheduler.profile",
            "profile 'pd' decides between prefill and decode pods, but no prefill role is set",
            "set llmd.prefill, or use profile 'prefix-cache'",
        )
    threshold = ld.scheduler.pd_threshold_tokens
    if threshold is not None and ld.scheduler.profile != "pd":
        raise SpecError(
            "llmd.scheduler.pd_threshold_tokens",
            f"is set ({threshold}) but only profile 'pd' reads it (the profile is '{ld.scheduler.profile}')",
            "set llmd.scheduler.profile to 'pd', or remove pd_threshold_tokens",
        )
    if prefill is not None and ld.scheduler.profile not in ("default", "pd"):
        raise SpecError(
            "llmd.scheduler.profile",
            f"a prefill role is set but profile '{ld.scheduler.profile}' has no prefill/decode profiles, "
            "so no request would ever be sent to the prefill pods",
            "use profile 'default' (KServe's P/D config) or 'pd', or remove llmd.prefill",
        )

    # The P/D proof needs prompts the endpoint picker sends through prefill: llm-d's
    # prefix-based-pd-decider estimates a prompt's tokens as len(prompt) / 4
    # (prefix_based_pd_decider.go getUserInputLenInTokens) and disaggregates only at
    # nonCachedTokens or more. The load's distinct prompts are known here (seeded), so their
    # estimate is computed exactly; a shared prefix is cached and does not count.
    val = spec.validation
    proving = val.expect_disaggregation or (val.expect_disaggregation is None and "prefill" in val.metrics_urls)
    if prefill is not None and proving and ld.scheduler.profile == "pd" and threshold and val.load.workload is None:
        from llm_rollout.validation.client import make_prompts

        shortest = min(len(p) for p in make_prompts(max(val.load.num_prompts, 1), val.load.input_words)) // 4
        if shortest < threshold:
            words = -(-val.load.input_words * threshold // max(shortest, 1))
            raise SpecError(
                "validation.load.input_words",
                f"the shortest of the load's prompts ({val.load.input_words} words) is {shortest} tokens as llm-d "
                f"estimates them (characters / 4), under llmd.scheduler.pd_threshold_tokens ({threshold}), so the "
                "endpoint picker prefills it on decode and the P/D proof would find prefill idle",
                f"set validation.load.input_words to about {words} or more, lower pd_threshold_tokens, "
                "or set validation.expect_disaggregation to false",
            )


def _check_workload(role_name: str, role: WorkloadSpec) -> None:
    field = f"llmd.{role_name}"
    if role.replicas is not None and role.scaling is not None:
        raise SpecError(
            f"{field}.scaling",
            "scaling and replicas are both set; they are mutually exclusive",
            f"keep {field}.replicas for a fixed count or {field}.scaling for autoscaling, not both",
        )
    if role.scaling is not None and role.scaling.min_replicas > role.scaling.max_replicas:
        raise SpecError(
            f"{field}.scaling.min_replicas",
            f"min_replicas ({role.scaling.min_replicas}) is above max_replicas ({role.scaling.max_replicas})",
            "make min_replicas <= max_replicas",
        )
    if (role.data is None) != (role.data_local is None):
        missing = "data_local" if role.data_local is None else "data"
        raise SpecError(
            f"{field}.{missing}",
            "data and data_local (parallelism.data / dataLocal) must be set together",
            f"set {field}.{missing} too (data = all data-parallel ranks, data_local = ranks per pod)",
        )
    if role.data is not None and role.pipeline is not None:
        raise SpecError(
            f"{field}.pipeline",
            "pipeline parallelism and data parallelism cannot be combined in one workload",
            f"remove {field}.pipeline or {field}.data/data_local",
        )
    size = None
    if role.data is not None and role.data_local is not None:
        if role.data % role.data_local:
            raise SpecError(
                f"{field}.data",
                f"data ({role.data}) is not a multiple of data_local ({role.data_local})",
                "make data = data_local x pods per replica",
            )
        size = role.data // role.data_local
    elif role.pipeline is not None:
        size = role.pipeline
    if role.nodes > 1 and size is None:
        raise SpecError(
            f"{field}.nodes",
            "a multi-node role (worker pods) needs parallelism set: worker requires data or pipeline parallelism",
            f"set {field}.data and data_local (data / data_local = {role.nodes}) or {field}.pipeline = {role.nodes}",
        )
    if size is not None and size != role.nodes:
        raise SpecError(
            f"{field}.nodes",
            f"parallelism spans {size} pods per replica but nodes is {role.nodes}",
            f"set {field}.nodes to {size}, or change data/data_local/pipeline",
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)
    if not parts:
        raise SpecError("kserve_version", f"{version!r} is not a version", "write it like '0.20'")
    return tuple(int(p) for p in parts[:3])


def _format_validation_error(err: ValidationError) -> SpecError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "spec"
    ctx = first.get("ctx", {})
    inner = ctx.get("error")
    if isinstance(inner, SpecError):
        return inner
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return SpecError(loc, "unknown field", "remove it or check its spelling against the spec reference")
    if first["type"] == "literal_error":
        return SpecError(loc, f"{first.get('input')!r} is not allowed", msg.replace("Input should be", "use"))
    if msg.startswith("Input should be"):
        return SpecError(
            loc, f"{first.get('input')!r} is invalid", msg.replace("Input should be", "give a value that is")
        )
    return SpecError(loc, msg, "correct the value")


def parse_spec(data: dict[str, Any] | None) -> RolloutSpec:
    """Validates a spec document (a dict) and returns the typed spec.

    Args:
        data: The document; ``None`` or ``{}`` gives the defaults.

    Returns:
        The validated spec.

    Raises:
        SpecError: On the first problem, naming the field and the fix.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("spec", f"expected a mapping, got {type(data).__name__}", "write the spec as a YAML mapping")
    try:
        return RolloutSpec.model_validate(data)
    except SpecError:
        raise
    except ValidationError as err:
        raise _format_validation_error(err) from None


def coerce_spec(spec: RolloutSpec | dict[str, Any] | str) -> RolloutSpec:
    """A typed spec from a spec, its dict or its JSON text (what KFP passes to a step).

    Raises:
        SpecError: Not JSON, or not a valid spec.
    """
    if isinstance(spec, RolloutSpec):
        return spec
    if isinstance(spec, str):
        try:
            spec = json.loads(spec or "{}")
        except ValueError as err:
            raise SpecError("spec", f"is not JSON ({err})", "pass the spec as JSON (an object)") from None
    return parse_spec(spec)  # type: ignore[arg-type]


def read_mapping(path: str, field: str) -> dict[str, Any]:
    """The YAML (or JSON) mapping in the file ``path``; ``{}`` for an empty file.

    Raises:
        SpecError: Named ``field``: the file cannot be read, is not YAML, or is not a mapping.
    """
    try:
        loaded = yaml.safe_load(Path(path).expanduser().read_text())
    except OSError as err:
        raise SpecError(field, f"cannot read {path}: {err.strerror}", "check the path") from None
    except yaml.YAMLError as err:
        raise SpecError(field, f"{path} is not valid YAML/JSON: {err}", "fix the syntax") from None
    data = loaded or {}
    if not isinstance(data, dict):
        raise SpecError(field, f"{path} holds a {type(data).__name__}, not a mapping", "write a YAML mapping")
    return data


def load_spec(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RolloutSpec:
    """Loads a spec from a YAML/JSON file, applies overrides and validates it.

    Args:
        path: The file; ``None`` gives the defaults.
        overrides: Values merged on top, keyed like the document (nested mappings merge).

    Returns:
        The validated spec.

    Raises:
        SpecError: When the file cannot be read/parsed or the result is invalid.
    """
    data = read_mapping(path, "spec") if path else {}
    if overrides:
        data = deep_merge(data, overrides)
    return parse_spec(data)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Returns ``base`` with ``extra`` merged in (nested dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def spec_to_json(spec: RolloutSpec) -> str:
    """Serialises a spec for a KFP string parameter (round-trips through :func:`parse_spec`).

    Only the fields that were set are written, so a default stays a default on the other side
    (e.g. ``runtime.max_model_len`` left unset is fitted to the model; set, it is checked).
    """
    return spec.model_dump_json(exclude_unset=True)
