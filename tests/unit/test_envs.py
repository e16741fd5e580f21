"""The one lookup of the cache root and the vLLM / llmcompressor interpreters (llm_rollout.envs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_rollout import envs
from llm_rollout.cpu_kernels import probe_cache_file
from llm_rollout.errors import PermanentError

ROOT = Path(__file__).resolve().parents[2]


def _fake_python(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """``$LLM_ROLLOUT_CACHE`` set to an empty directory; no interpreter variable set."""
    root = tmp_path / "cache"
    monkeypatch.setenv(envs.CACHE_ENV, str(root))
    monkeypatch.delenv(envs.VLLM_PYTHON_ENV, raising=False)
    monkeypatch.delenv(envs.OPTIMIZE_PYTHON_ENV, raising=False)
    return root


def test_the_venvs_are_found_under_llm_rollout_cache(cache):
    vllm = _fake_python(cache / "venvs" / "vllm" / "bin" / "python")
    optimize = _fake_python(cache / "venvs" / "optimize" / "bin" / "python")
    assert envs.cache_root() == cache
    assert envs.vllm_python() == str(vllm)
    assert envs.optimize_python() == str(optimize)
    assert probe_cache_file(str(vllm)).parent == cache / "probes"


def test_without_llm_rollout_cache_the_root_is_the_makefiles_default(monkeypatch):
    monkeypatch.delenv(envs.CACHE_ENV, raising=False)
    assert envs.cache_root() == Path("~/.cache/llm-rollout").expanduser()
    make = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "--eval", "print-cache: ; @echo $(LLM_ROLLOUT_CACHE)", "print-cache"],
        env={k: v for k, v in os.environ.items() if k != envs.CACHE_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(make.stdout.strip()) == envs.cache_root()


def test_the_interpreter_variables_win_over_the_spec_and_the_cache(cache, tmp_path, monkeypatch):
    _fake_python(cache / "venvs" / "vllm" / "bin" / "python")
    configured = _fake_python(tmp_path / "spec" / "bin" / "python")
    assert envs.vllm_python(str(configured)) == str(configured)
    chosen = _fake_python(tmp_path / "env" / "bin" / "python")
    monkeypatch.setenv(envs.VLLM_PYTHON_ENV, str(chosen))
    monkeypatch.setenv(envs.OPTIMIZE_PYTHON_ENV, sys.executable)
    assert envs.vllm_python(str(configured)) == str(chosen)
    assert envs.optimize_python() == sys.executable


def test_a_missing_venv_names_the_make_target_and_the_path(cache):
    with pytest.raises(PermanentError) as err:
        envs.vllm_python()
    assert "make serving-env" in str(err.value) and str(cache / "venvs" / "vllm") in str(err.value)
    with pytest.raises(PermanentError) as err:
        envs.optimize_python()
    assert "make optimize-env" in str(err.value) and str(cache / "venvs" / "optimize") in str(err.value)
