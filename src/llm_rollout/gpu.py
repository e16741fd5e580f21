"""What the pinned vLLM does with a KV-cache dtype and a quantization scheme on a given GPU.

The GPU preflight refuses only what vLLM itself refuses, and says what it will do otherwise. Every
rule below is ported from the vLLM release in :data:`llm_rollout.versions.VLLM_VERSION` (0.32),
file and function named beside it; ``tests/serving/test_gpu_rules.py`` reads those same classes in
the vLLM venv and fails when a rule here drifts from them.

Attention backend selection (``vllm/platforms/cuda.py``, ``CudaPlatform`` with
``_get_backend_priorities``; non-MLA, causal models): vLLM walks a priority list and takes the first
backend whose ``validate_configuration`` passes and whose module imports.

* SM10x (Blackwell): FLASHINFER, FLASH_ATTN, TRITON_ATTN, FLEX_ATTENTION, TURBOQUANT.
* every other capability: FLASH_ATTN, FLASHINFER, TRITON_ATTN, FLEX_ATTENTION, TURBOQUANT.

What each backend accepts (``vllm/v1/attention/backends/``):

* FLASH_ATTN (``flash_attn.py`` ``FlashAttentionBackend``): compute capability 8.0+
  (``supports_compute_capability``); KV dtypes auto/float16/bfloat16/fp8/fp8_e4m3
  (``supported_kv_cache_dtypes``); an FP8 KV cache only with FA3 on SM90 or FA4 on SM100
  (``supports_combination`` via ``fa_utils.flash_attn_supports_kv_cache_dtype``, which also
  refuses fp8_e5m2 outright).
* FLASHINFER (``flashinfer.py`` ``FlashInferBackend``): compute capability 8.0 to 12.1
  (``supports_compute_capability``); KV dtypes include fp8, fp8_e4m3 and fp8_e5m2. It must be
  installed in the image: an ImportError makes vLLM skip it.
* TRITON_ATTN (``triton_attn.py``): any capability passes selection, but ``TritonAttentionImpl``
  raises at start-up for an fp8* KV cache below SM89 ("native FP8 (fp8e4nv) requires SM89+") and
  for a bfloat16 KV cache below SM80.
* FLEX_ATTENTION (``flex_attention.py``): auto/float16/bfloat16 only. TURBOQUANT: its own
  turboquant_* dtypes only.

Quantization schemes (``model_executor/layers/quantization/compressed_tensors/``): W8A8 int8
(``CompressedTensorsW8A8Int8.get_min_capability`` = 75) and W4A16
(``CompressedTensorsWNA16.get_min_capability`` = 75) run from Turing up. FP8_DYNAMIC
(``CompressedTensorsW8A8Fp8.get_min_capability`` = 89) gets FP8 compute only from SM89; below that
``CompressedTensorsConfig._get_scheme_from_parts`` loads it as ``CompressedTensorsW8A16Fp8``
(weight-only FP8 through Marlin, min capability 75): it starts, but its FP8 activations are
dropped and the FP8 speed-up it was made for does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_rollout.errors import SpecError

Capability = tuple[int, int]

FLASH_ATTN = "FLASH_ATTN"
FLASHINFER = "FLASHINFER"
TRITON_ATTN = "TRITON_ATTN"
FLEX_ATTENTION = "FLEX_ATTENTION"
TURBOQUANT = "TURBOQUANT"

FP8_KV_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2")
FP8_COMPUTE_MIN_CAPABILITY: Capability = (8, 9)
"""``CompressedTensorsW8A8Fp8.get_min_capability()`` = 89 ("lovelace and up")."""

SCHEME_MIN_CAPABILITY: dict[str, Capability] = {
    "W8A8": (7, 5),  # CompressedTensorsW8A8Int8.get_min_capability() = 75 ("turing and up")
    "W4A16": (7, 5),  # CompressedTensorsWNA16.get_min_capability() = 75
    "FP8_DYNAMIC": (7, 5),  # loads from 75 (W8A16Fp8 fallback); FP8 compute from 89
}
"""The lowest compute capability vLLM loads each of optimize-model's schemes on."""


def backend_priorities(cap: Capability) -> list[str]:
    """``_get_backend_priorities`` (vllm/platforms/cuda.py) for a causal, non-MLA model."""
    if cap[0] == 10:
        return [FLASHINFER, FLASH_ATTN, TRITON_ATTN, FLEX_ATTENTION, TURBOQUANT]
    return [FLASH_ATTN, FLASHINFER, TRITON_ATTN, FLEX_ATTENTION, TURBOQUANT]


def backend_refusal(backend: str, cap: Capability, kv_cache_dtype: str) -> str | None:
    """Why ``backend`` would not serve ``kv_cache_dtype`` on ``cap`` (None: it would).

    Selection-time checks (``validate_configuration``) and the start-up check of
    ``TritonAttentionImpl.__init__`` are both reported: either way vLLM does not serve.
    """
    fp8 = kv_cache_dtype in FP8_KV_DTYPES
    if backend == FLASH_ATTN:
        if cap < (8, 0):
            return "FlashAttention needs compute capability 8.0+"
        if kv_cache_dtype == "fp8_e5m2":
            return "FlashAttention has no fp8_e5m2 KV cache"
        if fp8 and cap[0] not in (9, 10):
            return "FlashAttention takes an FP8 KV cache only with FA3 on SM90 or FA4 on SM100"
        return None
    if backend == FLASHINFER:
        if not (8, 0) <= cap <= (12, 1):
            return "FlashInfer is selected only on compute capability 8.0 to 12.1"
        return None
    if backend == TRITON_ATTN:
        if fp8 and cap < (8, 9):
            return "Triton attention refuses an FP8 KV cache below SM89 (native fp8e4nv)"
        if kv_cache_dtype == "bfloat16" and cap < (8, 0):
            return "Triton attention refuses a bfloat16 KV cache below SM80"
        return None
    if backend == FLEX_ATTENTION:
        return None if kv_cache_dtype in ("auto", "float16", "bfloat16") else "FlexAttention has no FP8 KV cache"
    return "TurboQuant serves only its own turboquant_* KV-cache dtypes"


@dataclass(frozen=True)
class KVCachePlan:
    """What vLLM will do with a KV-cache dtype on one GPU.

    Attributes:
        backend: The attention backend vLLM picks, or None when none serves it.
        needs_flashinfer: The pick is FlashInfer and nothing after it would serve this dtype, so
            the serving image must ship FlashInfer (vLLM skips a backend that fails to import).
        fallback: The backend picked when FlashInfer is missing from the image (None: none).
        refusals: Why each earlier backend was passed over.
    """

    backend: str | None
    needs_flashinfer: bool
    fallback: str | None
    refusals: tuple[str, ...]


def kv_cache_plan(cap: Capability, kv_cache_dtype: str) -> KVCachePlan:
    """The attention backend vLLM 0.32 picks for ``kv_cache_dtype`` on compute capability ``cap``."""
    refusals: list[str] = []
    chosen = None
    for backend in backend_priorities(cap):
        reason = backend_refusal(backend, cap, kv_cache_dtype)
        if reason is None:
            chosen = backend
            break
        refusals.append(f"{backend}: {reason}")
    fallback = None
    if chosen == FLASHINFER:
        rest = backend_priorities(cap)
        for backend in rest[rest.index(FLASHINFER) + 1 :]:
            if backend_refusal(backend, cap, kv_cache_dtype) is None:
                fallback = backend
                break
    return KVCachePlan(chosen, chosen == FLASHINFER and fallback is None, fallback, tuple(refusals))


def _cap_text(cap: Capability) -> str:
    return f"{cap[0]}.{cap[1]}"


def check_kv_cache_dtype(gpu: str, cap: Capability, kv_cache_dtype: str) -> str:
    """Refuses a KV-cache dtype vLLM cannot serve on ``gpu``; else says how it will serve it.

    Args:
        gpu: The GPU family (for messages).
        cap: Its compute capability.
        kv_cache_dtype: ``--kv-cache-dtype``.

    Returns:
        A one-line note: the backend vLLM picks and, when only FlashInfer serves the dtype, that
        the image must ship FlashInfer.

    Raises:
        SpecError: No attention backend of vLLM serves it there.
    """
    plan = kv_cache_plan(cap, kv_cache_dtype)
    if plan.backend is None:
        raise SpecError(
            "runtime.kv_cache_dtype",
            f"vLLM has no attention backend for --kv-cache-dtype={kv_cache_dtype} on {gpu} (compute capability "
            f"{_cap_text(cap)}): " + "; ".join(plan.refusals),
            "use 'auto' (the model dtype) or 'float16' on this GPU",
        )
    note = (
        f"--kv-cache-dtype={kv_cache_dtype} on {gpu} (compute capability {_cap_text(cap)}): vLLM picks {plan.backend}"
    )
    if plan.needs_flashinfer:
        note += (
            "; only FlashInfer serves it there, so the serving image must ship FlashInfer (vllm/vllm-openai does); "
            "without it vLLM falls back to a backend that refuses it at start-up"
        )
    return note


def check_scheme(gpu: str, cap: Capability, scheme: str, field: str = "model.quantization") -> None:
    """Refuses a quantization scheme that does not do on ``gpu`` what it was made for.

    W8A8 (int8) and W4A16 run from compute capability 7.5. FP8_DYNAMIC runs with FP8 compute from
    8.9; below that vLLM loads it as weight-only FP8 (``CompressedTensorsW8A16Fp8``, Marlin) and
    drops its FP8 activations, so it is refused with the schemes that do compute there.

    Raises:
        SpecError: The scheme cannot run as quantized on this GPU.
    """
    name = scheme.upper()
    low = SCHEME_MIN_CAPABILITY.get(name)
    if low is not None and cap < low:
        raise SpecError(
            field,
            f"vLLM needs compute capability {_cap_text(low)}+ for {name}, but {gpu} has {_cap_text(cap)}",
            "serve the unquantized model on this GPU, or use a newer GPU",
        )
    if name == "FP8_DYNAMIC" and cap < FP8_COMPUTE_MIN_CAPABILITY:
        raise SpecError(
            field,
            f"FP8_DYNAMIC needs FP8 compute, which vLLM runs only from compute capability "
            f"{_cap_text(FP8_COMPUTE_MIN_CAPABILITY)} (CompressedTensorsW8A8Fp8); {gpu} has {_cap_text(cap)}, "
            "where vLLM loads it as weight-only FP8 (CompressedTensorsW8A16Fp8, Marlin) and drops its FP8 "
            "activations",
            "quantize with scheme W8A8 (int8 weights and activations, INT8 compute from 7.5) or W4A16 "
            "(4-bit weights), or serve on an L4/L40S/H100-class GPU",
        )
