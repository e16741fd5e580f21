"""One function builds the vLLM server arguments for every platform.

The ServingRuntime (KServe), the llm-d workloads and the local vLLM process all serve with the
arguments built here, so that what is validated locally is what the cluster would run. The local
platform adjusts only what a CPU cannot do, and says so: each adjustment is returned as a
human-readable line that the caller logs as a warning.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

from llm_rollout.spec import RolloutSpec

Target = Literal["kserve", "llmd", "local"]

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
"""The upstream OpenAI-compatible server entry point (the ``vllm`` console script is not needed)."""

# What a CPU build of vLLM cannot use, and why.
_CPU_DROPS = {
    "--gpu-memory-utilization": "a CPU has no GPU memory to budget (KV cache size comes from VLLM_CPU_KVCACHE_SPACE)",
    "--tensor-parallel-size": "tensor parallelism across GPUs does not apply to one CPU process",
}


@dataclass
class ServerArgs:
    """Arguments for ``python -m vllm.entrypoints.openai.api_server``.

    Attributes:
        args: The argument list (never a shell string).
        adjustments: One line per change made for the target (e.g. a flag a CPU cannot use).
    """

    args: list[str]
    adjustments: list[str] = field(default_factory=list)

    def command(self, python: str = "python") -> list[str]:
        """The whole command line as a list."""
        return [python, "-m", VLLM_MODULE, *self.args]

    def __str__(self) -> str:
        return shlex.join(self.args)


def server_args(
    spec: RolloutSpec,
    target: Target = "kserve",
    *,
    model_path: str = "/mnt/models",
    served_model_name: str | None = None,
    port: int | None = None,
    host: str | None = None,
    tensor_parallel: int | None = None,
) -> ServerArgs:
    """Builds the vLLM OpenAI server arguments for ``spec``.

    Args:
        spec: The rollout spec (runtime knobs, resources).
        target: ``kserve`` (ServingRuntime), ``llmd`` (LLMInferenceService container) or ``local``
            (a process on this machine: GPU-only flags are dropped and reported).
        model_path: Where the model lies (``/mnt/models`` in KServe pods; a directory locally).
        served_model_name: Name clients use; defaults to the spec's served model name. KServe's
            ServingRuntime passes ``{{.Name}}`` so the InferenceService name fills it in.
        port: Listen port; defaults to ``spec.runtime.port``.
        host: Listen address (local only; pods listen on all interfaces).
        tensor_parallel: GPUs per replica; defaults to ``spec.resources.gpus`` (llm-d roles pass
            their own ``parallelism.tensor``).

    Returns:
        The arguments and the adjustments made for the target.
    """
    rt = spec.runtime
    name = served_model_name or spec.served_model_name
    tp = tensor_parallel if tensor_parallel is not None else max(spec.resources.gpus, 1)
    args: list[str] = []
    adjustments: list[str] = []

    if target != "llmd":
        # llm-d's LLMInferenceService sets the model path, name and port itself.
        args += [f"--port={port or rt.port}", f"--served-model-name={name}", f"--model={model_path}"]
    if host:
        args.append(f"--host={host}")

    wanted = [
        ("--gpu-memory-utilization", f"{rt.gpu_memory_utilization:g}"),
        ("--kv-cache-dtype", rt.kv_cache_dtype),
    ]
    if target != "llmd":
        # llm-d sets --tensor-parallel-size from the workload's parallelism.tensor itself.
        wanted.insert(0, ("--tensor-parallel-size", str(tp)))
    if rt.max_model_len is not None:
        wanted.append(("--max-model-len", str(rt.max_model_len)))
    for flag, value in wanted:
        if target == "local" and flag in _CPU_DROPS:
            adjustments.append(f"dropped {flag}={value}: {_CPU_DROPS[flag]}")
            continue
        if target == "local" and flag == "--kv-cache-dtype" and value.startswith("fp8"):
            adjustments.append(
                f"dropped {flag}={value}: the CPU backend keeps the KV cache in the model dtype "
                "(FP8 KV cache is a GPU feature; the cluster keeps it)"
            )
            continue
        args.append(f"{flag}={value}")
    args += list(rt.extra_args)
    return ServerArgs(args=args, adjustments=adjustments)
