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

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from llm_rollout.bounded import MAX_DEPTH, SPEC_FILE_LIMIT, depth, load_yaml, loads_json, read_regular_file
from llm_rollout.errors import SpecError
from llm_rollout.names import dns_name
from llm_rollout.spec.base import (
    DEFAULT_SERVICE_NAME,
    GPU_COMPUTE_CAPABILITY,
    KSERVE_URI_SCHEMES,
    KV_CACHE_DTYPES,
    LLMD_URI_SCHEMES,
    LOCAL_URI_SCHEMES,
    _Model,
)
from llm_rollout.spec.checks import (
    check_gpu,
    check_llmd,
    check_model_uri,
    check_spec,
    check_vllm_args,
    gpu_capability,
)
from llm_rollout.spec.rules import excerpt
from llm_rollout.spec.serving import (
    CanarySpec,
    LLMDSpec,
    LocalSpec,
    ModelSpec,
    ResourcesSpec,
    RuntimeSpec,
    ScalingSpec,
    SchedulerSpec,
    SecretKeyRef,
    WorkloadSpec,
)
from llm_rollout.spec.validation import (
    ComparisonSpec,
    LoadSpec,
    LoadWorkloadSpec,
    QualitySpec,
    RecoverySpec,
    SLOSpec,
    ValidationSpec,
)


class RolloutSpec(_Model):
    """Everything one rollout needs.

    Attributes:
        name: Service name (DNS-1123, at most 40 characters after normalisation).
        namespace: Kubernetes namespace.
        platform: ``kserve`` (a cluster) or ``local`` (a vLLM process here).
        deployment_mode: KServe deployment mode: ``Standard`` (raw Deployments; canary via
            ``spec.canary[]``, KServe >= 0.20) or ``Knative`` (canary via ``canaryTrafficPercent``).
        kserve_version: Oldest KServe version the target cluster runs (decides canary support).
        cluster_domain: The cluster's DNS domain: the steps reach a predictor at the Service KServe
            creates for it, ``http://<isvc>-predictor.<namespace>.svc.<cluster_domain>`` (default
            ``cluster.local``); the address KServe writes into the status must agree.
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
    cluster_domain: str = Field(
        "cluster.local", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    )
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


def _format_validation_error(err: ValidationError) -> SpecError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "spec"
    ctx = first.get("ctx", {})
    inner = ctx.get("error")
    if isinstance(inner, SpecError):
        return inner
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        from llm_rollout.spec.reference import closest, field_names

        last = first["loc"][-1] if first["loc"] else ""
        near = closest(str(last), field_names(tuple(first["loc"])))
        hint = f"did you mean '{near}'? " if near else ""
        return SpecError(loc, "unknown field", hint + "remove it or fix its spelling (llm-rollout spec, docs/spec.md)")
    if first["type"] == "literal_error":
        return SpecError(loc, f"{excerpt(first.get('input'))} is not allowed", msg.replace("Input should be", "use"))
    if msg.startswith("Input should be"):
        # A short excerpt only: the input may be huge (issue 31: an expanded YAML alias).
        return SpecError(
            loc, f"{excerpt(first.get('input'))} is invalid", msg.replace("Input should be", "give a value that is")
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
    if depth(data) > MAX_DEPTH:
        raise SpecError("spec", f"is nested deeper than {MAX_DEPTH} levels", "nest less deeply (a spec needs 5)")
    try:
        return RolloutSpec.model_validate(data)
    except SpecError:
        raise
    except ValidationError as err:
        raise _format_validation_error(err) from None
    except RecursionError:
        raise SpecError("spec", "is nested too deeply", "nest less deeply (a spec needs 5)") from None


def coerce_spec(spec: RolloutSpec | dict[str, Any] | str) -> RolloutSpec:
    """A typed spec from a spec, its dict or its JSON text (what KFP passes to a step).

    Raises:
        SpecError: Not JSON, or not a valid spec.
    """
    if isinstance(spec, RolloutSpec):
        return spec
    if isinstance(spec, str):
        spec = loads_json(spec or "{}", "spec", "the spec")
    return parse_spec(spec)  # type: ignore[arg-type]


def read_mapping(path: str, field: str) -> dict[str, Any]:
    """The YAML (or JSON) mapping in the file ``path``; ``{}`` for an empty file.

    Raises:
        SpecError: Named ``field``: the file cannot be read, is not YAML, or is not a mapping.
    """
    # A regular file of bounded size, YAML without aliases (issue 31: an alias bomb).
    loaded = load_yaml(read_regular_file(path, field, SPEC_FILE_LIMIT, "spec"), field, str(path)[:200])
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


__all__ = [
    "DEFAULT_SERVICE_NAME",
    "GPU_COMPUTE_CAPABILITY",
    "KSERVE_URI_SCHEMES",
    "KV_CACHE_DTYPES",
    "LLMD_URI_SCHEMES",
    "LOCAL_URI_SCHEMES",
    "CanarySpec",
    "ComparisonSpec",
    "LLMDSpec",
    "LoadSpec",
    "LoadWorkloadSpec",
    "LocalSpec",
    "ModelSpec",
    "QualitySpec",
    "RecoverySpec",
    "ResourcesSpec",
    "RolloutSpec",
    "RuntimeSpec",
    "SLOSpec",
    "ScalingSpec",
    "SchedulerSpec",
    "SecretKeyRef",
    "ValidationSpec",
    "WorkloadSpec",
    "check_gpu",
    "check_llmd",
    "check_model_uri",
    "check_spec",
    "check_vllm_args",
    "coerce_spec",
    "deep_merge",
    "gpu_capability",
    "load_spec",
    "parse_spec",
    "read_mapping",
    "spec_to_json",
]
