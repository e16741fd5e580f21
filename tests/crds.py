"""Where every test tier gets KServe's and KEDA's CRDs: the one locator (:func:`crd_paths`).

The unit tier checks what we render against the CRD schemas (:mod:`tests.schema_check`), the cluster
tier installs them into the test API server (:mod:`tests.fixtures.cluster`). They are the files the
project was written against, pinned here by upstream reference and sha256:

* KServe: ``kserve/kserve`` at commit ``aaac4e2`` (``config/crd/full/``; the commit of the pinned
  upstream reference files, ``shared/reference/kserve/COMMIT``, after v0.20.0-rc0: the v0.20.0 tag's
  ServingRuntime and LLMInferenceService CRDs differ from these);
* KEDA: ``kedacore/keda`` tag ``v2.18.0`` (``config/crd/bases/``; what KServe 0.20 installs).

Where they come from, first match wins:

1. ``shared/crds/<group>/`` beside the checkout, or ``$LLM_ROLLOUT_SHARED/crds/<group>/`` (the team's
   layout) when it holds every file;
2. the cache, ``${LLM_ROLLOUT_CACHE:-~/.cache/llm-rollout}/crds/<group>-<ref>/``, where every file is
   checked against its sha256 each time it is used;
3. otherwise the missing files are downloaded from ``raw.githubusercontent.com`` (or the mirror in
   ``$LLM_ROLLOUT_CRD_BASE_URL``, laid out the same: ``<base>/<owner>/<repo>/<ref>/<path>``), checked
   against their sha256 and only then written to the cache. A file whose checksum differs is refused
   (:class:`CrdError`, naming the URL and both checksums) and nothing of it is cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from llm_rollout.envs import cache_root

SHARED_ENV = "LLM_ROLLOUT_SHARED"
BASE_URL_ENV = "LLM_ROLLOUT_CRD_BASE_URL"
RAW_BASE_URL = "https://raw.githubusercontent.com"
MAX_FILE_BYTES = 16 * 2**20
"""A CRD file larger than this is refused (the largest pinned one is 2.7 MB)."""
DOWNLOAD_TIMEOUT_S = 60.0

_REPO = Path(__file__).resolve().parent.parent


class CrdError(RuntimeError):
    """The CRDs are not here and could not be fetched, or a fetched file is not the pinned one."""


@dataclass(frozen=True)
class CrdFile:
    """One pinned CRD file: its name here (``shared/crds/<group>/``, the cache), its upstream path, its sha256."""

    name: str
    path: str
    sha256: str


@dataclass(frozen=True)
class CrdSet:
    """The pinned CRD files of one upstream project at one reference (a tag or a commit)."""

    group: str
    repo: str
    ref: str
    files: tuple[CrdFile, ...]

    def url(self, file: CrdFile, base_url: str | None = None) -> str:
        """Where ``file`` is downloaded from (``$LLM_ROLLOUT_CRD_BASE_URL`` or raw.githubusercontent.com)."""
        base = (base_url or os.environ.get(BASE_URL_ENV) or RAW_BASE_URL).rstrip("/")
        return f"{base}/{self.repo}/{self.ref}/{file.path}"

    def cache_dir(self) -> Path:
        """``<cache>/crds/<group>-<ref>`` (a commit shortened to 12 characters)."""
        return cache_root() / "crds" / f"{self.group}-{self.ref[:12]}"


KSERVE = CrdSet(
    group="kserve",
    repo="kserve/kserve",
    ref="aaac4e294dae2c7b1aa1886447793f3aa1c30912",
    files=(
        CrdFile(
            "serving.kserve.io_clusterservingruntimes.yaml",
            "config/crd/full/serving.kserve.io_clusterservingruntimes.yaml",
            "f721d19516670d4a81181e231b1e58cbc32c36435969182ae457fad537151cc8",
        ),
        CrdFile(
            "serving.kserve.io_inferenceservices.yaml",
            "config/crd/full/serving.kserve.io_inferenceservices.yaml",
            "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff",
        ),
        CrdFile(
            "serving.kserve.io_llminferenceserviceconfigs.yaml",
            "config/crd/full/llmisvc/serving.kserve.io_llminferenceserviceconfigs.yaml",
            "221d71dcdefec8415430c306d274293b8f566e0b316b110065ff8e6e6d441104",
        ),
        CrdFile(
            "serving.kserve.io_llminferenceservices.yaml",
            "config/crd/full/llmisvc/serving.kserve.io_llminferenceservices.yaml",
            "fbd625c2a2ac7b79e17c9763b7a0c4acf3cd3eaa99ebf0fab06db008785b35f3",
        ),
        CrdFile(
            "serving.kserve.io_servingruntimes.yaml",
            "config/crd/full/serving.kserve.io_servingruntimes.yaml",
            "5a262831474e7bd23e7c4f76556d84e1a11fb3ad74a78a6d18cfc71fd8fca7a2",
        ),
    ),
)
"""KServe's five CRDs every tier checks against (InferenceService, ServingRuntime and the cluster one,
LLMInferenceService and its config)."""

KEDA = CrdSet(
    group="keda",
    repo="kedacore/keda",
    ref="v2.18.0",
    files=(
        CrdFile(
            "keda.sh_scaledobjects.yaml",
            "config/crd/bases/keda.sh_scaledobjects.yaml",
            "44e8d3444bb884ed5c8dc4f1b118944a54fe9c81534048793c20b9394ae1de2c",
        ),
    ),
)
"""KEDA's ScaledObject CRD (the KServe controller stand-in applies ScaledObjects with it)."""


def shared_dir() -> Path:
    """The shared/ folder: ``$LLM_ROLLOUT_SHARED`` or ``shared/`` beside the checkout."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else _REPO.parent / "shared"


def crd_paths(crds: CrdSet, *, base_url: str | None = None) -> list[Path]:
    """The CRD files of ``crds``, sorted by name: from shared/, else the cache, else downloaded.

    Args:
        crds: :data:`KSERVE` or :data:`KEDA`.
        base_url: Download from this mirror instead of ``$LLM_ROLLOUT_CRD_BASE_URL`` / GitHub.

    Raises:
        CrdError: Not in shared/ nor in the cache, and a download failed or was not the pinned file.
    """
    files = sorted(crds.files, key=lambda f: f.name)
    folder = shared_dir() / "crds" / crds.group
    if all((folder / f.name).is_file() for f in files):
        return [folder / f.name for f in files]
    return fetch(crds, crds.cache_dir(), base_url=base_url, shared=folder)


def fetch(crds: CrdSet, dest: Path, *, base_url: str | None = None, shared: Path | None = None) -> list[Path]:
    """Makes ``dest`` hold every pinned file of ``crds``, downloading those missing or not matching.

    Returns:
        The files in ``dest``, sorted by name.

    Raises:
        CrdError: A download failed, or its sha256 is not the pinned one (nothing is written then).
    """
    out = []
    for file in sorted(crds.files, key=lambda f: f.name):
        target = dest / file.name
        if not (target.is_file() and _sha256(target.read_bytes()) == file.sha256):
            url = crds.url(file, base_url)
            data = _download(url, crds, shared)
            digest = _sha256(data)
            if digest != file.sha256:
                raise CrdError(
                    f"{url} has sha256 {digest}, not the pinned {file.sha256} (tests/crds.py): it is not "
                    f"{crds.repo}@{crds.ref}'s {file.path}, so it was not cached. " + _where_else(crds, shared)
                )
            _write_atomic(target, data)
        out.append(target)
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _where_else(crds: CrdSet, shared: Path | None) -> str:
    folder = shared or shared_dir() / "crds" / crds.group
    return (
        f"Put the pinned files in {folder} (or set {SHARED_ENV} to a folder holding crds/{crds.group}/), "
        f"or point {BASE_URL_ENV} at a mirror of raw.githubusercontent.com."
    )


def _download(url: str, crds: CrdSet, shared: Path | None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read(MAX_FILE_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise CrdError(
            f"the {crds.group} CRDs are not in {shared or shared_dir() / 'crds' / crds.group} and downloading "
            f"{url} failed ({reason}). " + _where_else(crds, shared)
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise CrdError(f"{url} is larger than {MAX_FILE_BYTES // 2**20} MiB: not a CRD file; nothing was cached")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
