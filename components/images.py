"""Container images the compiled pipelines reference (``<image>:<package version>``).

Override at compile time with ``llm-rollout compile --image ... --optimize-image ...``. No component
installs packages at run time: a pip install in every step costs tens of seconds and fails on
offline clusters, so everything a step needs is baked into these two images (see containers/).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    PACKAGE_VERSION = version("kfp-llm-rollout")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    PACKAGE_VERSION = "0.0.0"

DEFAULT_IMAGE = f"ghcr.io/kfp-llm-rollout/components:{PACKAGE_VERSION}"
"""The components' image: the library, kfp and the kubernetes client (containers/Containerfile)."""

DEFAULT_OPTIMIZE_IMAGE = f"ghcr.io/kfp-llm-rollout/optimize:{PACKAGE_VERSION}"
"""The optimize step's image: llmcompressor with torch (containers/Containerfile.optimize)."""
