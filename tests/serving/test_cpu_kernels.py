"""The local vLLM CPU build on this machine: what vLLM loads, what it registers, what is refused.

Expectations come from /proc/cpuinfo, not from the code under test: vLLM 0.32
(``vllm/platforms/cpu.py``, ``CpuPlatform.import_kernels``) loads ``_C`` when torch reports AVX-512
with BF16, ``_C_AVX512`` with AVX-512 alone and ``_C_AVX2`` otherwise; torch's AVX-512 test
(``torch.cpu._is_avx512_supported``, ATen ``cpu/Utils.cpp``) wants AVX-512 F, BW, VL and DQ.
So on an AVX-512 machine W4A16 passes and on an AVX2-only one it is refused; the other kind's
branch runs here too, from the recorded kernel lists (tests/unit/data/vllm_cpu_builds.json),
which the drift test below keeps equal to the installed libraries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_rollout.cpu_kernels import CpuBuild, probe_build, probe_cache_file
from llm_rollout.errors import SpecError
from llm_rollout.spec import parse_spec
from tests.fixtures.serving import RECORDED_BUILDS, cpu_flags, expected_vllm_library, has_avx512, seed_recorded_build

pytestmark = [pytest.mark.serving, pytest.mark.timeout(300), pytest.mark.parallel]

REPO = Path(__file__).parents[2]


def recorded_builds() -> dict:
    return json.loads(RECORDED_BUILDS.read_text())["builds"]


def test_the_probe_names_the_build_vllm_loads_on_this_cpu(vllm_python, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_ROLLOUT_CACHE", str(tmp_path))
    build = probe_build(str(vllm_python))
    assert build.library == expected_vllm_library(), (build.describe(), sorted(cpu_flags() & {"avx512f"}))
    assert ("_C::cpu_gemm_wna16" in build.ops) == has_avx512()
    assert build.vllm_version == "0.32.0"
    # The answer is cached for the next step (a probe costs seconds).
    assert CpuBuild.from_json(json.loads(probe_cache_file(str(vllm_python)).read_text())) == build


def test_the_recorded_kernel_lists_match_the_installed_vllm_cpu(vllm_python):
    """Drift check: each build this CPU can load registers exactly the recorded ops."""
    site = Path(
        subprocess.run(
            [str(vllm_python), "-c", "import os, vllm; print(os.path.dirname(vllm.__file__))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    loadable = ["_C_AVX2"] + (["_C_AVX512"] if has_avx512() else [])
    if has_avx512() and "avx512_bf16" in cpu_flags():
        loadable.append("_C")
    script = (
        "import json, sys, torch; torch.ops.load_library(sys.argv[1]); "
        "print(json.dumps(sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith('_C::'))))"
    )
    for library in loadable:
        out = subprocess.run(
            [str(vllm_python), "-c", script, str(site / f"{library}.abi3.so")],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert json.loads(out.strip().splitlines()[-1]) == recorded_builds()[library]["ops"], library


def test_run_local_checks_the_scheme_before_anything_on_this_cpu(vllm_python, monkeypatch, tmp_path):
    from kfp_llm_rollout.pipelines.run_local import _check_scheme_runs_here

    monkeypatch.setenv("LLM_ROLLOUT_CACHE", str(tmp_path))
    monkeypatch.setenv("LLM_ROLLOUT_VLLM_PYTHON", str(vllm_python))
    spec = parse_spec({"name": "tiny"})
    _check_scheme_runs_here("W8A8", spec)
    if has_avx512():
        _check_scheme_runs_here("W4A16", spec)
    else:
        with pytest.raises(SpecError, match="cpu_gemm_wna16"):
            _check_scheme_runs_here("W4A16", spec)


def test_run_local_w4a16_on_an_avx2_build_is_refused_up_front(vllm_python, tiny_model, tmp_path):
    """``llm-rollout run-local --scheme W4A16`` on the AVX2 build: exit 2 with the fix, nothing run."""
    cache = tmp_path / "cache"
    seed_recorded_build(cache, vllm_python, "_C_AVX2")
    out = tmp_path / "out"
    env = {**os.environ, "LLM_ROLLOUT_CACHE": str(cache), "LLM_ROLLOUT_VLLM_PYTHON": str(vllm_python)}
    proc = subprocess.run(
        [sys.executable, "-m", "kfp_llm_rollout.pipelines.cli", "run-local", "--pipeline", "llm-optimize-deploy",
         "--model", str(tiny_model), "--scheme", "W4A16", "--out", str(out),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--scheme: the requested scheme is W4A16" in proc.stderr
    assert "cpu_gemm_wna16" in proc.stderr and "_C_AVX2" in proc.stderr and "AVX-512" in proc.stderr
    assert "Fix: compress with scheme W8A8" in proc.stderr
    assert not out.exists()
    assert not (tmp_path / "state").exists()
