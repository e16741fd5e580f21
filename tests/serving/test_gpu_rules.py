"""The GPU preflight's rules agree with the pinned vLLM's own code, read in the vLLM venv.

``llm_rollout.gpu`` ports vLLM 0.32's attention-backend selection and quantization minimums. The
CPU build of vLLM cannot import its CUDA platform or its GPU backends (they need ``vllm._C`` and
``flashinfer``), so the script below reads them from vLLM's installed sources: it executes
``_get_backend_priorities`` (``vllm/platforms/cuda.py``) and each backend's
``supports_compute_capability`` as written, reads each ``supported_kv_cache_dtypes`` list, runs
``fa_utils.flash_attn_supports_kv_cache_dtype`` with the platform set to each capability (FA
version as ``get_flash_attn_version`` defaults it: 3 on SM9x, 4 on SM10x, else 2), reads the SM
floor of ``TritonAttentionImpl``'s FP8-KV refusal, and calls the compressed-tensors schemes'
``get_min_capability``. The test then walks vLLM's priority list with those facts for every GPU
family and KV-cache dtype the spec knows and compares with :func:`llm_rollout.gpu.kv_cache_plan`.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from llm_rollout import gpu
from llm_rollout.spec import GPU_COMPUTE_CAPABILITY, KV_CACHE_DTYPES, gpu_capability

pytestmark = [pytest.mark.parallel]

_FACTS = r"""
import ast, importlib.util, json, re, sys

def source(module):
    return importlib.util.find_spec(module).origin

from vllm.platforms.interface import DeviceCapability
from vllm.v1.attention.backends.registry import AttentionBackendEnum
caps = [tuple(c) for c in json.loads(sys.argv[1])]
dtypes = json.loads(sys.argv[2])

# _get_backend_priorities, executed as written (its module needs vllm._C, absent on CPU)
path = source("vllm.platforms.cuda")
fn = next(n for n in ast.parse(open(path).read()).body
          if isinstance(n, ast.FunctionDef) and n.name == "_get_backend_priorities")
fn.decorator_list = []
ns = {"AttentionBackendEnum": AttentionBackendEnum, "DeviceCapability": DeviceCapability, "CacheDType": str}
exec(compile(ast.Module([fn], []), path, "exec"), ns)
prio = ns["_get_backend_priorities"]
priorities = {
    f"{c[0]}.{c[1]}": {d: [b.name for b in prio(False, DeviceCapability(*c), kv_cache_dtype=d)] for d in dtypes}
    for c in caps
}

classes = {
    "FLASH_ATTN": ("vllm.v1.attention.backends.flash_attn", "FlashAttentionBackend"),
    "FLASHINFER": ("vllm.v1.attention.backends.flashinfer", "FlashInferBackend"),
    "TRITON_ATTN": ("vllm.v1.attention.backends.triton_attn", "TritonAttentionBackend"),
    "FLEX_ATTENTION": ("vllm.v1.attention.backends.flex_attention", "FlexAttentionBackend"),
    "TURBOQUANT": ("vllm.v1.attention.backends.turboquant_attn", "TurboQuantAttentionBackend"),
}
backends = {}
for name, (module, cls_name) in classes.items():
    path = source(module)
    text = open(path).read()
    cls = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    dt, cc = None, None
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "supported_kv_cache_dtypes":
            dt = ast.literal_eval(node.value)
        if isinstance(node, ast.FunctionDef) and node.name == "supports_compute_capability":
            node.decorator_list = []
            scope = {"DeviceCapability": DeviceCapability}
            exec(compile(ast.Module([node], []), path, "exec"), scope)
            cc = {f"{c[0]}.{c[1]}": bool(scope[node.name](None, DeviceCapability(*c))) for c in caps}
    backends[name] = {"dtypes": dt, "capability": cc}
    if name == "TRITON_ATTN":
        m = re.search(
            r'kv_cache_dtype\.startswith\("fp8"\)\s+and\s+not\s+\(\s*'
            r"current_platform\.has_device_capability\((\d+)\)",
            text,
        )
        backends[name]["fp8_min"] = int(m.group(1))

from vllm.v1.attention.backends import fa_utils
class _Platform:
    def __init__(self, cap): self.cap = cap
    def is_xpu(self): return False
    def is_rocm(self): return False
    def is_device_capability_family(self, family): return self.cap[0] * 10 == family
fa = {}
for c in caps:
    fa_utils.current_platform = _Platform(c)
    version = 3 if c[0] == 9 else 4 if c[0] == 10 else 2
    fa_utils.get_flash_attn_version = lambda v=version, **kw: v
    fa[f"{c[0]}.{c[1]}"] = {d: fa_utils.flash_attn_supports_kv_cache_dtype(d) for d in ("fp8", "fp8_e4m3", "fp8_e5m2")}

from vllm.model_executor.layers.quantization.compressed_tensors import schemes as s
names = ("CompressedTensorsW8A8Fp8", "CompressedTensorsW8A8Int8", "CompressedTensorsWNA16", "CompressedTensorsW8A16Fp8")
mins = {n: getattr(s, n).get_min_capability() for n in names}
print("FACTS " + json.dumps({"priorities": priorities, "backends": backends, "fa_fp8": fa, "mins": mins}))
"""


def _vllm_pick(facts: dict, cap: tuple[int, int], dtype: str) -> str | None:
    key = f"{cap[0]}.{cap[1]}"
    for name in facts["priorities"][key][dtype]:
        b = facts["backends"][name]
        if b["dtypes"] is not None and dtype not in b["dtypes"]:
            continue
        if b["capability"] is not None and not b["capability"][key]:
            continue
        if name == "FLASH_ATTN" and dtype.startswith("fp8") and not facts["fa_fp8"][key][dtype]:
            continue  # supports_combination: FP8 KV needs FA3 on SM90 / FA4 on SM100
        if name == "TRITON_ATTN" and dtype.startswith("fp8") and cap[0] * 10 + cap[1] < b["fp8_min"]:
            continue  # TritonAttentionImpl refuses at start-up
        if name == "TRITON_ATTN" and dtype == "bfloat16" and cap < (8, 0):
            continue
        return name
    return None


def test_the_preflight_picks_the_backend_vllm_picks_for_every_gpu_and_dtype(vllm_python):
    caps = sorted({gpu_capability(f) for f in GPU_COMPUTE_CAPABILITY})
    proc = subprocess.run(
        [str(vllm_python), "-c", _FACTS, json.dumps(caps), json.dumps(list(KV_CACHE_DTYPES))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FACTS ")]
    assert lines, proc.stderr[-3000:]
    facts = json.loads(lines[0].split(" ", 1)[1])
    assert facts["backends"]["TRITON_ATTN"]["fp8_min"] == 89
    for cap in caps:
        assert facts["priorities"][f"{cap[0]}.{cap[1]}"]["fp8"] == gpu.backend_priorities(cap)
        for dtype in KV_CACHE_DTYPES:
            assert gpu.kv_cache_plan(cap, dtype).backend == _vllm_pick(facts, cap, dtype), (cap, dtype)
    # the A10G (SM86) + fp8 default: FlashInfer, as docs/architecture.md says ("Facts the code relies on")
    assert _vllm_pick(facts, (8, 6), "fp8") == "FLASHINFER"
    assert facts["mins"] == {
        "CompressedTensorsW8A8Fp8": 89,  # FP8_DYNAMIC with FP8 compute
        "CompressedTensorsW8A8Int8": 75,  # W8A8
        "CompressedTensorsWNA16": 75,  # W4A16
        "CompressedTensorsW8A16Fp8": 75,  # FP8_DYNAMIC's weight-only fallback below 89
    }
    assert gpu.FP8_COMPUTE_MIN_CAPABILITY == (8, 9)
    assert gpu.SCHEME_MIN_CAPABILITY == {"W8A8": (7, 5), "W4A16": (7, 5), "FP8_DYNAMIC": (7, 5)}
