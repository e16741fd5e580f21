"""The GPU preflight: what vLLM 0.32 serves per compute capability (rules in llm_rollout.gpu).

``tests/serving/test_gpu_rules.py`` checks the same rules against vLLM's own code in the venv.
"""

from __future__ import annotations

import pytest

from llm_rollout import gpu
from llm_rollout.errors import SpecError
from llm_rollout.kserve import builders as b
from llm_rollout.spec import check_gpu, parse_spec
from llm_rollout.steps import deploy_step
from llm_rollout.vllm_args import server_args

A10G = {"runtime": {"accelerator": "nvidia-a10g"}}


def test_the_seed_default_on_an_a10g_renders_fp8_kv_cache_on_flashinfer():
    spec = parse_spec({"platform": "kserve", **A10G})
    assert "--kv-cache-dtype=fp8" in server_args(spec, "kserve").args
    assert "--kv-cache-dtype=fp8" in b.serving_runtime(spec)["spec"]["containers"][0]["args"]
    note = check_gpu(spec)
    assert "vLLM picks FLASHINFER" in note and "image must ship FlashInfer" in note
    plan = gpu.kv_cache_plan((8, 6), "fp8")
    assert plan.needs_flashinfer and plan.fallback is None
    assert any("FLASH_ATTN" in r and "SM90" in r for r in plan.refusals)


@pytest.mark.parametrize(
    ("cap", "dtype", "backend"),
    [
        ((9, 0), "fp8", "FLASH_ATTN"),  # FA3 stores an FP8 KV cache on Hopper
        ((9, 0), "fp8_e5m2", "FLASHINFER"),  # FlashAttention has no e5m2
        ((8, 9), "fp8", "FLASHINFER"),  # Ada: FA2 has no FP8 KV; Triton would serve it too
        ((10, 0), "auto", "FLASHINFER"),  # Blackwell tries FlashInfer first
        ((8, 6), "auto", "FLASH_ATTN"),
        ((7, 5), "auto", "TRITON_ATTN"),
    ],
)
def test_backend_choice_per_capability(cap, dtype, backend):
    assert gpu.kv_cache_plan(cap, dtype).backend == backend


def test_without_flashinfer_ada_still_serves_fp8_on_triton():
    plan = gpu.kv_cache_plan((8, 9), "fp8")
    assert plan.fallback == "TRITON_ATTN" and not plan.needs_flashinfer


def test_fp8_kv_cache_below_ampere_is_refused_with_every_backend_named():
    with pytest.raises(SpecError) as info:
        parse_spec({"runtime": {"accelerator": "nvidia-t4", "kv_cache_dtype": "fp8"}})
    err = info.value
    assert err.field == "runtime.kv_cache_dtype"
    for backend in ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"):
        assert backend in err.problem


@pytest.mark.parametrize("scheme", ["W8A8", "W4A16"])
def test_int8_and_4bit_schemes_run_on_an_a10g(scheme):
    assert parse_spec({**A10G, "model": {"quantization": scheme}}).model.quantization == scheme


def test_fp8_dynamic_runs_with_fp8_compute_from_sm89():
    parse_spec({"runtime": {"accelerator": "nvidia-l4"}, "model": {"quantization": "FP8_DYNAMIC"}})


def test_an_fp8_dynamic_artifact_on_an_a10g_is_refused_before_any_write():
    """deploy-model reads the scheme from the Model artifact's metadata and stops before the cluster."""
    spec = parse_spec({"platform": "kserve", **A10G})
    with pytest.raises(SpecError) as info:
        deploy_step(spec.model_dump_json(), model_uri="s3://bucket/m", model_metadata={"scheme": "FP8_DYNAMIC"})
    assert info.value.field == "model_metadata.scheme"
    assert "W8A8" in info.value.fix and "W4A16" in info.value.fix


def test_the_deploy_component_passes_optimize_models_scheme_to_the_preflight():
    """The pipeline wires optimize-model's ``model_scheme`` into deploy-model (tests/unit/test_artifact_flow.py);
    the component hands it to the same preflight."""
    from kfp_llm_rollout.components.deploy_model.component import deploy_model

    spec = parse_spec({"platform": "kserve", **A10G})
    with pytest.raises(SpecError) as info:
        deploy_model(spec.model_dump_json(), "s3://bucket/m", "run-1", model_scheme="FP8_DYNAMIC")
    assert info.value.field == "model_metadata.scheme"
