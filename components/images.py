"""Container images the compiled pipelines reference (``<image>:<package version>`` by default).

Override at compile time with ``llm-rollout compile --image ... --optimize-image ...``, by tag
(``repo:tag``) or pinned by digest (``repo@sha256:...``, what a production pipeline should use: a
tag can be moved, a digest cannot). No component installs packages at run time: a pip install in
every step costs tens of seconds and fails on offline clusters, so everything a step needs is baked
into these two images (see containers/).

The default tag is this package's version. From a source tree that is not installed the version is
unknown, and there is no default: compiling then needs ``--image`` / ``--optimize-image`` (a
made-up ``:0.0.0`` tag would compile and then fail to pull on the cluster).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

from llm_rollout.errors import SpecError

IMAGE_REPOSITORY = "ghcr.io/kfp-llm-rollout/components"
OPTIMIZE_IMAGE_REPOSITORY = "ghcr.io/kfp-llm-rollout/optimize"

try:
    PACKAGE_VERSION: str | None = version("kfp-llm-rollout")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    PACKAGE_VERSION = None

DEFAULT_IMAGE: str | None = f"{IMAGE_REPOSITORY}:{PACKAGE_VERSION}" if PACKAGE_VERSION else None
"""The components' image: the library, kfp and the kubernetes client (containers/Containerfile)."""

DEFAULT_OPTIMIZE_IMAGE: str | None = f"{OPTIMIZE_IMAGE_REPOSITORY}:{PACKAGE_VERSION}" if PACKAGE_VERSION else None
"""The optimize step's image: llmcompressor with torch (containers/Containerfile.optimize)."""

# The reference grammar of distribution/reference (regexp.go: domain, path components, tag,
# digest), simplified to what a registry accepts: lowercase path, optional :tag, optional @digest.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
_REFERENCE = re.compile(
    rf"^(?P<name>{_DOMAIN}{_COMPONENT}(?:/{_COMPONENT})*)(?::(?P<tag>[\w][\w.-]{{0,127}}))?(?:@(?P<digest>.+))?$"
)
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$")


def check_image(ref: str | None, flag: str = "--image") -> str:
    """Checks an image reference: ``repo:tag``, ``repo@sha256:<64 hex>`` or ``repo:tag@sha256:...``.

    Args:
        ref: The reference; None when there is no default (package version unknown).
        flag: The flag or argument it came from (named in the error).

    Returns:
        The reference.

    Raises:
        SpecError: No reference, a malformed one, or a malformed digest.
    """
    if not ref:
        raise SpecError(
            flag,
            "no image was given and this package's version is unknown (a source tree that is not installed), "
            "so there is no default image tag",
            f"pass {flag} REPO:TAG or {flag} REPO@sha256:DIGEST, or install the package (make venv)",
        )
    m = _REFERENCE.match(ref)
    if not m:
        raise SpecError(
            flag,
            f"{ref!r} is not an image reference",
            f"write it as REPO:TAG or REPO@sha256:DIGEST, e.g. {IMAGE_REPOSITORY}@sha256:{'0' * 64}",
        )
    if m.group("digest") is not None and not _DIGEST.match(m.group("digest")):
        raise SpecError(
            flag,
            f"{ref!r} has the digest {m.group('digest')!r}, which is not sha256:<64 lowercase hex>",
            "copy the digest from your registry (e.g. `crane digest REPO:TAG` or `skopeo inspect`)",
        )
    return ref


def resolve_images(image: str | None = None, optimize_image: str | None = None) -> tuple[str, str]:
    """The two images to compile with: the given ones or the defaults, checked.

    Raises:
        SpecError: See :func:`check_image`.
    """
    return (
        check_image(image or DEFAULT_IMAGE, "--image"),
        check_image(optimize_image or DEFAULT_OPTIMIZE_IMAGE, "--optimize-image"),
    )
