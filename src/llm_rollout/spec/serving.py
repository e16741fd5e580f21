"""What serves: the model, the vLLM runtime, resources, scaling, canary, llm-d roles and the
local platform's section of the spec.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from llm_rollout.errors import SpecError
from llm_rollout.spec.analysis import CanaryStep, coerce_steps
from llm_rollout.spec.base import _Model
from llm_rollout.versions import DEFAULT_VLLM_IMAGE

SERVED_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
"""What ``model.name`` may be: letters, digits and ``. _ : / -``, starting with a letter or digit.

The name reaches a shell: KServe's llm-d presets start vLLM with ``eval "exec vllm serve ...
--served-model-name "{{ .Spec.Model.Name }}" ..."`` (``config/llmisvcconfig/config-llm-template.yaml``
and the prefill, decode and data-parallel presets). The inner quotes close the outer ones, so the
name stands unquoted in the line ``eval`` runs again: ``$( )``, backticks, ``;``, globs, braces and
spaces would execute or split. KServe first runs the merged spec through Go's ``text/template``
and parses it as JSON (``config_merge.go`` ``ReplaceVariables``), where ``{{``, ``"`` and newlines
would be executed or break the merge. Every character in this set is inert in all three, and it
covers the names people give models (``meta-llama/Llama-3.1-8B-Instruct``, ``qwen2:7b-int8``).
"""


class ModelSpec(_Model):
    """Which model to serve.

    Attributes:
        uri: The model location: a KFP Model artifact URI (``minio://``, ``s3://``, ``gs://``),
            ``pvc://``, ``hf://``, ``oci://``, or a local directory (``local`` platform only).
        name: The name clients send as ``model`` in OpenAI requests; defaults to the service name.
            Letters, digits and ``. _ : / -``, starting with a letter or digit, at most 128
            characters (:data:`SERVED_MODEL_NAME`: the llm-d presets put it into a shell line).
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

    @field_validator("name")
    @classmethod
    def _served_name_is_inert(cls, value: str | None) -> str | None:
        if not value or SERVED_MODEL_NAME.fullmatch(value):  # empty: the service name serves
            return value
        shown = value if len(value) <= 60 else value[:57] + "..."
        bad = sorted({c for c in value if not re.fullmatch(r"[A-Za-z0-9._:/-]", c)})
        why = (
            f"{shown!r} has characters vLLM's command line cannot carry safely ({''.join(bad)!r})"
            if bad
            else f"{shown!r} must start with a letter or digit and have at most 128 characters"
        )
        raise SpecError(
            "model.name",
            why + ": KServe's llm-d presets put it unquoted into the shell line that starts vLLM "
            '(eval "exec vllm serve ... --served-model-name ..."), after a Go-template and JSON step',
            "use letters, digits and . _ : / - only, starting with a letter or digit, "
            "at most 128 characters (e.g. 'org/model-7b')",
        )


class SecretKeyRef(_Model):
    """A key of a Kubernetes Secret in the service's namespace (the value never enters the spec).

    Attributes:
        name: The Secret's name.
        key: The key inside it.
    """

    name: str
    key: str


class ModelStore(_Model):
    """How KServe's storage initializer reaches an S3-compatible model store (KFP's, or a bucket).

    The defaults are KFP 2.17's default store: SeaweedFS (S3 API) at ``seaweedfs.kubeflow:9000``
    without TLS (kubeflow/pipelines ``backend/src/v2/objectstore/config.go``
    ``DefaultEndpointInMultiUserMode``, ``config/env.go`` ``getDefaultMinioSessionInfo``: region
    ``minio``, ``disableSSL``). The serving pods run as ``service_account``, which lists ``secret``;
    KServe reads that Secret's S3 keys and ``serving.kserve.io/s3-*`` annotations into the storage
    initializer (kserve ``pkg/credentials/service_account_credentials.go``
    ``CreateSecretVolumeAndEnvFromServiceAccount`` -> ``mountSecretCredential``,
    ``pkg/credentials/s3/s3_secret.go`` ``BuildSecretEnvs``, ``s3/utils.go`` ``BuildS3EnvVars``).

    Attributes:
        service_account: The serving pods' ServiceAccount (it lists ``secret``).
        secret: The Secret with the store's keys (``awsAccessKeyID``, ``awsSecretAccessKey``: KServe's
            default key names; KFP's ``mlpipeline-minio-artifact`` names them ``accesskey``/``secretkey``,
            so copy them) and the endpoint annotations.
        endpoint: ``host:port`` of the S3 API (``serving.kserve.io/s3-endpoint``); empty for AWS S3.
        use_https: TLS to the endpoint (``serving.kserve.io/s3-usehttps``).
        verify_ssl: Verify the endpoint's certificate (``serving.kserve.io/s3-verifyssl``).
        region: The bucket's region (``serving.kserve.io/s3-region``); empty: not set.
        ca_bundle_configmap: A ConfigMap with the CA bundle of a private TLS endpoint
            (``serving.kserve.io/s3-cabundle-configmap``).
        enabled: ``false`` turns the store off: KServe gets no credentials for any model (public
            buckets, workload identity through ``runtime.service_account``). ``model_store: null``
            means the same.
        buckets: The buckets this store holds: a ``minio://`` or ``s3://`` model in one of them is
            read through the store (``minio://`` is rewritten to ``s3://`` for KServe, so both name
            the bucket the same way); ``"*"``: every ``minio://``/``s3://`` bucket. Default KFP's
            pipeline root bucket ``mlpipeline`` (KFP 2.17 ``backend/src/v2/config/env.go``
            ``defaultPipelineRoot`` ``minio://mlpipeline/v2/artifacts``), where a run's optimized
            model lands. Other schemes (``hf://``, ``pvc://``, ``gs://``, ``oci://``) never are.
    """

    service_account: str = "kfp-model-reader"
    secret: str = "kfp-model-store"
    endpoint: str = "seaweedfs.kubeflow:9000"
    use_https: bool = False
    verify_ssl: bool = True
    region: str = "minio"
    ca_bundle_configmap: str | None = None
    enabled: bool = True
    buckets: list[str] = Field(default_factory=lambda: ["mlpipeline"])

    def serves(self, uri: str | None) -> bool:
        """Whether KServe reads the model at ``uri`` through this store (``enabled`` and a bucket of ``buckets``)."""
        if not self.enabled or not uri or "://" not in uri:
            return False
        scheme, rest = uri.strip().split("://", 1)
        if scheme.lower() not in ("minio", "s3"):
            return False
        return "*" in self.buckets or rest.split("/", 1)[0] in self.buckets


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
            the model's quantization scheme are checked against what vLLM serves on it, and the
            serving pods are pinned to nodes with that GPU (``nodeSelector``
            ``{accelerator_node_label: accelerator_node_value}``), so what was checked is what
            runs. Leave empty when unknown: the preflight on the node then decides.
        accelerator_node_label: Node label the pin selects on (default
            ``nvidia.com/gpu.product``, set by NVIDIA GPU Feature Discovery); empty: no pin.
        accelerator_node_value: The label's value on the nodes with that GPU. Default: GPU Feature
            Discovery's product name of the family (e.g. ``NVIDIA-A10G``; for A100/H100 the SXM
            80 GB part). Set it when your nodes carry another (``kubectl get nodes -L <label>``).
        port: Port the server listens on inside the pod.
        runtime_name: Name of the namespaced ServingRuntime; defaults to ``<service>-vllm``.
        service_account: Service account of the serving pods (``serviceAccountName``). Default none:
            the namespace's ``default`` account, or for a model in ``model_store`` the store's. Set
            it when the pods need one (e.g. to read the model from object storage with workload
            identity); it must not be the pipeline steps' account (``service_account``), which may
            patch and delete InferenceServices.
        model_store: KServe's access to an S3-compatible model store. Used for a model in one of
            its ``buckets`` (default: KFP's default store, SeaweedFS, for ``minio://mlpipeline/``
            and ``s3://mlpipeline/``, where a run from the UI puts the optimized model): the serving
            pods then run as its ``service_account``, which lists its Secret, and deploy-model
            checks both exist before it writes anything. Models elsewhere (``hf://``, ``pvc://``,
            ``gs://``, other buckets) get nothing. ``enabled: false`` (or ``null``) turns it off.
    """

    image: str = DEFAULT_VLLM_IMAGE
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_dtype: str = "fp8"
    max_model_len: int | None = Field(4096, ge=16, le=16_777_216)  # 16M tokens: above any model's context
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, SecretKeyRef] = Field(default_factory=dict)
    accelerator: str | None = None
    accelerator_node_label: str = "nvidia.com/gpu.product"
    accelerator_node_value: str | None = None
    port: int = Field(8080, ge=1, le=65535)
    runtime_name: str | None = None
    service_account: str | None = None
    model_store: ModelStore = Field(default_factory=ModelStore)

    @field_validator("model_store", mode="before")
    @classmethod
    def _null_store_is_off(cls, value: Any) -> Any:
        # `model_store: null` was the off switch before the store became the default: keep its meaning.
        return {"enabled": False} if value is None else value

    @field_validator("env", "secret_env")
    @classmethod
    def _not_the_presets_eval_input(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        # The llm-d presets expand ${VLLM_ADDITIONAL_ARGS} inside eval "exec vllm serve ..."
        # (config/llmisvcconfig/config-llm-template.yaml): a value set here would run as shell code.
        if "VLLM_ADDITIONAL_ARGS" in value:
            raise SpecError(
                f"runtime.{info.field_name}.VLLM_ADDITIONAL_ARGS",
                "the llm-d presets run this variable through eval, so its value would execute as shell "
                "code; the project sets it from runtime.extra_args, each argument shell-quoted",
                "put the vLLM arguments in runtime.extra_args, one list item per argument",
            )
        return value

    def node_selector(self) -> dict[str, str]:
        """The serving pods' ``nodeSelector`` for ``accelerator`` (empty without one, or without a label key)."""
        if self.accelerator is None or not self.accelerator_node_label:
            return {}
        from llm_rollout.spec.base import GPU_PRODUCT_LABEL_VALUE

        value = self.accelerator_node_value or GPU_PRODUCT_LABEL_VALUE.get(self.accelerator)
        return {self.accelerator_node_label: value} if value else {}

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
        target: Target value of the metric per replica, or ``auto``: promotion sets it from the
            measured capacity per replica (request-rate: ``capacity_max_request_rate``, else the
            sizing's req/s capacity; concurrency: ``capacity_max_concurrency``) times
            ``safety_factor``, and records the evidence on the service. Until evidence exists
            (deploy, before any promotion) ``auto`` renders the static default, 10.
        safety_factor: Share of the measured capacity used as the ``auto`` target (0-1].
        max_capacity_drop: With ``auto``: the largest drop (a share, 0-1) of the measured capacity
            against the stable's recorded capacity that promotion still accepts.
        accept_capacity_drop: Promote anyway when the capacity dropped by more than
            ``max_capacity_drop`` (the new target follows the lower capacity).
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
    target: int | Literal["auto"] = 10
    safety_factor: float = Field(0.8, gt=0, le=1)
    max_capacity_drop: float = Field(0.2, ge=0, le=1)
    accept_capacity_drop: bool = False
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    expected_peak_rps: float | None = Field(None, gt=0)

    @field_validator("target")
    @classmethod
    def _target_positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("target must be at least 1, or 'auto' (set from the measured capacity at promotion)")
        return v

    def static_target(self) -> int:
        """The target rendered without evidence: the number given, or the default 10 for ``auto``."""
        return AUTO_DEFAULT_TARGET if self.target == "auto" else int(self.target)


AUTO_DEFAULT_TARGET = 10
"""What ``scaling.target: auto`` renders until a promotion measured the capacity."""


class CanarySpec(_Model):
    """How a new revision meets traffic when a stable one already serves.

    Attributes:
        traffic_percent: Share of traffic the new revision gets while it is validated
            (0 = dark launch: only the validator talks to it).
        steps: Stepped promotion, e.g. ``[10, 50, 100]``; the gate is re-run at each step. An
            entry may be a step with a hold and a live analysis of the users' traffic instead of a
            bare weight: ``{weight: 10, hold_s: 60, analysis: {...}}`` (:class:`CanaryStep`).
    """

    traffic_percent: int = 0
    steps: list[int | CanaryStep] = Field(default_factory=list)

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: object) -> object:
        return coerce_steps(value)

    @property
    def weights(self) -> list[int]:
        """The steps' weights, in order."""
        return [s if isinstance(s, int) else s.weight for s in self.steps]

    def step_at(self, weight: int) -> CanaryStep:
        """The step with ``weight`` (a bare weight as a step without hold or analysis)."""
        for s in self.steps:
            if (s if isinstance(s, int) else s.weight) == weight:
                return s if not isinstance(s, int) else CanaryStep(weight=s)
        return CanaryStep(weight=weight)


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
        use_preset: Reference an LLMInferenceServiceConfig preset of this service (``baseRefs``).
        preset_name: Name of that preset. Empty (the default): ``<service>-preset-<hash of its
            content>``, one per service and content, owned by the members that reference it
            (``ownerReferences``: the garbage collector removes it with the last of them). KServe
            merges a preset's ``prefill`` into every service that references it
            (``config_merge.go`` ``combineBaseRefsConfig``: ``Prefill != nil`` is P/D), so a name
            given here must not be shared with another service.
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
    preset_name: str | None = None
    kv_connector: str = "NixlConnector"
    image: str | None = None


class LocalSpec(_Model):
    """The ``local`` platform (a vLLM process on this machine, no cluster).

    Attributes:
        state_dir: Where promotions and their history are recorded.
        vllm_python: Python interpreter that has vLLM; defaults to the project's cached venv.
        host: Address the local servers bind to.
        device: vLLM device (``cpu`` here).
        keep_serving: Leave the promoted server running after the run.
        startup_timeout_s: How long a local server may take to become healthy.
        service_port: The service's port during a stepped promotion with live analysis: promote's
            weighted router listens on ``host:service_port`` and splits the users between the
            stable server and the candidate by ``canary.steps`` (point the users' traffic here);
            0 picks a free port and the step log names it.
    """

    state_dir: str = "~/.local/state/llm-rollout"
    vllm_python: str | None = None
    host: str = "127.0.0.1"
    device: str = "cpu"
    keep_serving: bool = False
    startup_timeout_s: float = Field(300.0, gt=0, le=86_400)
    service_port: int = Field(0, ge=0, le=65535)
