"""Where every test tier gets KServe's and KEDA's CRDs and the pinned upstream reference files it reads:
the one locator (:func:`crd_paths`, :func:`reference_dir`).

The unit tier checks what we render against the CRD schemas (:mod:`tests.schema_check`), the cluster
tier installs them into the test API server (:mod:`tests.fixtures.cluster`). They are the files the
project was written against, pinned here by upstream reference and sha256:

* KServe: ``kserve/kserve`` at commit ``aaac4e2`` (``config/crd/full/``; the commit of the pinned
  upstream reference files, ``shared/reference/kserve/COMMIT``, after v0.20.0-rc0: the v0.20.0 tag's
  ServingRuntime and LLMInferenceService CRDs differ from these);
* KEDA: ``kedacore/keda`` tag ``v2.18.0`` (``config/crd/bases/``; what KServe 0.20 installs).

The tests also read upstream files pinned in ``shared/reference/`` (``shared/reference/README.md``):
KServe's llm-d presets, runtime and scheduler defaults (:data:`KSERVE_REFERENCE`), KFP's driver and
runner Role (:data:`KFP_REFERENCE`), llm-d's EndpointPickerConfig samples (:data:`LLMD_REFERENCE`),
each at the commit in its folder's ``COMMIT`` file and under its upstream path.

Where they come from, first match wins (``<kind>`` is ``crds`` or ``reference``):

1. ``shared/<kind>/<group>/`` beside the checkout, or ``$LLM_ROLLOUT_SHARED/<kind>/<group>/`` (the
   team's layout) when it holds every file;
2. the cache, ``${LLM_ROLLOUT_CACHE:-~/.cache/llm-rollout}/<kind>/<group>-<ref>/``, where every file is
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
"""A downloaded file larger than this is refused (the largest pinned one, a CRD, is 2.7 MB)."""
DOWNLOAD_TIMEOUT_S = 60.0

_REPO = Path(__file__).resolve().parent.parent


class CrdError(RuntimeError):
    """Pinned files (CRDs or reference files) are not here and could not be fetched, or a fetched file is
    not the pinned one."""


@dataclass(frozen=True)
class CrdFile:
    """One pinned file: its name here (relative to ``shared/<kind>/<group>/`` and the cache folder), its
    upstream path, its sha256."""

    name: str
    path: str
    sha256: str


@dataclass(frozen=True)
class CrdSet:
    """The pinned files of one upstream project at one reference (a tag or a commit).

    ``kind`` is the folder of ``shared/`` (and of the cache) they live under: ``crds`` or ``reference``.
    """

    group: str
    repo: str
    ref: str
    files: tuple[CrdFile, ...]
    kind: str = "crds"

    @property
    def what(self) -> str:
        """How messages name the set: ``the kserve CRDs``, ``the kserve reference files``."""
        return f"the {self.group} CRDs" if self.kind == "crds" else f"the {self.group} reference files"

    def shared_folder(self) -> Path:
        """``shared/<kind>/<group>`` (beside the checkout or in ``$LLM_ROLLOUT_SHARED``)."""
        return shared_dir() / self.kind / self.group

    def url(self, file: CrdFile, base_url: str | None = None) -> str:
        """Where ``file`` is downloaded from (``$LLM_ROLLOUT_CRD_BASE_URL`` or raw.githubusercontent.com)."""
        base = (base_url or os.environ.get(BASE_URL_ENV) or RAW_BASE_URL).rstrip("/")
        return f"{base}/{self.repo}/{self.ref}/{file.path}"

    def cache_dir(self) -> Path:
        """``<cache>/<kind>/<group>-<ref>`` (a commit shortened to 12 characters)."""
        return cache_root() / self.kind / f"{self.group}-{self.ref[:12]}"


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


def _upstream(path: str, sha256: str) -> CrdFile:
    """A reference file kept under its upstream path."""
    return CrdFile(path, path, sha256)


KSERVE_REFERENCE = CrdSet(
    group="kserve",
    repo="kserve/kserve",
    ref="aaac4e294dae2c7b1aa1886447793f3aa1c30912",
    kind="reference",
    files=(
        CrdFile(
            "kserve-vllmserver.yaml",
            "config/runtimes/kserve-vllmserver.yaml",
            "3fbf7e64c7832b8c78bd3f64aac13de742ac70587f8dd02425116c2cb187f01a",
        ),
        _upstream(
            "pkg/controller/v1alpha2/llmisvc/scheduler.go",
            "f4012c4fa24c11aa1d157bb5bbbb88dff14f7305932bd6731b6ebf3b1ca6100c",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-decode-template.yaml",
            "526df9b4e23a51b34e890a1f57b0b4aec122e1f645f18aae3072f9ee46ed80ff",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-decode-worker-data-parallel.yaml",
            "40ed5fa6f46219c174b15755a8a9b7c8ada1c09984c3899dce8857bab3e1f8c8",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-prefill-template.yaml",
            "67243dbfcff5cf0a3e7fd76ca5e29b6d129e0167d6cd41abbd107c49903dbb58",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-prefill-worker-data-parallel.yaml",
            "00d1606364c9448fb3d271f296ed3960fd3207dca608f6f5f57c5863709bea69",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-router-route.yaml",
            "ab946e175f46a2e7a57f3a949b3d376284ec650efffb1f3d3f85df848394df19",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-scheduler.yaml",
            "65e37e104b58c2b29e19e18ed4a36e4e40ef758691c457f6422e8d64cf7dc971",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-template.yaml",
            "398b56dac5a5879cb1646ed5dda3d8e24e04fe0b288240b95e31cb1a2c665db9",
        ),
        _upstream(
            "config/llmisvcconfig/config-llm-worker-data-parallel.yaml",
            "b2317f3e89df0b0eb74bb3d43b17a64a72f167d1aa2db97488916d6176f988db",
        ),
    ),
)
"""KServe files the tests read (``shared/reference/kserve``, commit in its ``COMMIT``): the vLLM
ServingRuntime (``kserve-vllmserver.yaml``, upstream ``config/runtimes/``), the default scheduler configs
(``scheduler.go``) and the llm-d presets (``config/llmisvcconfig/``: the pinned subset, every one the
tests glob)."""

KFP_REFERENCE = CrdSet(
    group="kubeflow-pipelines",
    repo="kubeflow/pipelines",
    ref="4a3592cb2dd0a91a4652ab93893ec8beda1f3158",
    kind="reference",
    files=(
        _upstream(
            "manifests/kustomize/base/pipeline/pipeline-runner-role.yaml",
            "bc62e7917f3f5ce578881288a39b3221135ce56df5f2397193b98f267349597a",
        ),
        _upstream("backend/src/v2/config/env.go", "439d918c22144e0fa2501c31a1eca1fe8025ce4034cea85b5974801353ae2ace"),
        _upstream(
            "backend/src/v2/driver/root_dag.go", "215d977861c9d020932288c4def1b762c03c931caea6809ad41966a6f3390917"
        ),
        _upstream(
            "backend/src/v2/compiler/argocompiler/container.go",
            "64acfd1ea4d72092f06f70f66b61ce1adc69ad958cac939d21277c2933b64f30",
        ),
    ),
)
"""KFP 2.17.0 files the tests read (``shared/reference/kubeflow-pipelines``, commit in its ``COMMIT``)."""

LLMD_REFERENCE = CrdSet(
    group="llm-d-inference-scheduler",
    repo="llm-d/llm-d-inference-scheduler",
    ref="520af47896e5f06e43d09aca281a1149187b0ffd",
    kind="reference",
    files=(
        _upstream("deploy/config/epp-config.yaml", "a3c404b566ca0d06ec17533818c380b75281e265a9f48f8a8f4a63b418c09579"),
        _upstream(
            "deploy/config/epp-precise-prefix-cache-config.yaml",
            "834882894ddadc69d01214b158625182f39a4d0c3f6adf1032cd46fb99a7d81d",
        ),
        _upstream(
            "deploy/config/pd-epp-config.yaml", "397f77a35f66092ae6adf6cf338a27f79e52714335dd2f7410e423ef7e792ece"
        ),
    ),
)
"""llm-d's EndpointPickerConfig samples the tests read (``shared/reference/llm-d-inference-scheduler``;
the pinned subset of ``deploy/config/``, every one the tests glob)."""

REFERENCES = (KSERVE_REFERENCE, KFP_REFERENCE, LLMD_REFERENCE)
"""Every pinned reference set the tests read."""


def shared_dir() -> Path:
    """The shared/ folder: ``$LLM_ROLLOUT_SHARED`` or ``shared/`` beside the checkout."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else _REPO.parent / "shared"


def crd_paths(crds: CrdSet, *, base_url: str | None = None) -> list[Path]:
    """The pinned files of ``crds``, sorted by name: from shared/, else the cache, else downloaded.

    Args:
        crds: :data:`KSERVE`, :data:`KEDA` or one of :data:`REFERENCES`.
        base_url: Download from this mirror instead of ``$LLM_ROLLOUT_CRD_BASE_URL`` / GitHub.

    Raises:
        CrdError: Not in shared/ nor in the cache, and a download failed or was not the pinned file.
    """
    files = sorted(crds.files, key=lambda f: f.name)
    folder = crds.shared_folder()
    if all((folder / f.name).is_file() for f in files):
        return [folder / f.name for f in files]
    return fetch(crds, crds.cache_dir(), base_url=base_url, shared=folder)


def reference_dir(reference: CrdSet, *, base_url: str | None = None) -> Path:
    """The folder holding the pinned reference files of ``reference`` under their names (upstream paths):
    ``shared/reference/<group>`` when it holds every one, else the cache folder, filled by
    :func:`fetch` (only the pinned files are there, so a glob finds the same files in both).

    Args:
        reference: :data:`KSERVE_REFERENCE`, :data:`KFP_REFERENCE` or :data:`LLMD_REFERENCE`.
        base_url: Download from this mirror instead of ``$LLM_ROLLOUT_CRD_BASE_URL`` / GitHub.

    Raises:
        CrdError: Not in shared/ nor in the cache, and a download failed or was not the pinned file.
    """
    paths = crd_paths(reference, base_url=base_url)
    return reference.shared_folder() if paths[0].is_relative_to(reference.shared_folder()) else reference.cache_dir()


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
    folder = shared or crds.shared_folder()
    return (
        f"Put the pinned files in {folder} (or set {SHARED_ENV} to a folder holding {crds.kind}/{crds.group}/), "
        f"or point {BASE_URL_ENV} at a mirror of raw.githubusercontent.com."
    )


def _download(url: str, crds: CrdSet, shared: Path | None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read(MAX_FILE_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise CrdError(
            f"{crds.what} are not in {shared or crds.shared_folder()} and downloading "
            f"{url} failed ({reason}). " + _where_else(crds, shared)
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise CrdError(f"{url} is larger than {MAX_FILE_BYTES // 2**20} MiB: not a pinned file; nothing was cached")
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
