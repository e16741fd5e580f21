"""The spec's shared pieces: defaults from the serving design, URI schemes, the flags the spec owns,
and the strict pydantic base every section derives from.
"""

from __future__ import annotations

import logging
import re

from pydantic import BaseModel, ConfigDict

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
GPU_PRODUCT_LABEL_VALUE: dict[str, str] = {
    "nvidia-t4": "Tesla-T4",
    "nvidia-a100": "NVIDIA-A100-SXM4-80GB",
    "nvidia-a10": "NVIDIA-A10",
    "nvidia-a10g": "NVIDIA-A10G",
    "nvidia-a40": "NVIDIA-A40",
    "nvidia-l4": "NVIDIA-L4",
    "nvidia-l40s": "NVIDIA-L40S",
    "nvidia-h100": "NVIDIA-H100-80GB-HBM3",
    "nvidia-h200": "NVIDIA-H200",
    "nvidia-b200": "NVIDIA-B200",
}
"""The ``nvidia.com/gpu.product`` value NVIDIA GPU Feature Discovery gives a node with that GPU
(the device name with spaces as dashes); a family with several parts names its most common one."""
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
    # inf/nan are refused everywhere (issue 31: readiness_timeout_s: inf waited forever).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)
