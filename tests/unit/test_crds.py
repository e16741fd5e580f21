"""The locator of pinned upstream files (tests/crds.py: KServe's and KEDA's CRDs and the
``shared/reference`` files the tests read) for a clone without ``../shared``: downloaded by pinned
reference, checked against the sha256 kept in the repository, cached; a changed file is refused.

The download runs against a local HTTP server laid out like raw.githubusercontent.com
(``/<owner>/<repo>/<ref>/<path>``) serving the real pinned files, through ``$LLM_ROLLOUT_CRD_BASE_URL``.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from llm_rollout.procs import free_port
from tests.crds import (
    BASE_URL_ENV,
    KEDA,
    KFP_REFERENCE,
    KSERVE,
    KSERVE_REFERENCE,
    LLMD_REFERENCE,
    REFERENCES,
    SHARED_ENV,
    CrdError,
    crd_paths,
    reference_dir,
)


class _Mirror(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path):
    """``(root, base_url, requests)``: an HTTP server serving ``root`` as raw.githubusercontent.com lays files out,
    holding the real pinned files."""
    root = tmp_path / "mirror"
    for crds in (KSERVE, KEDA, *REFERENCES):
        real = dict(zip(sorted(f.name for f in crds.files), crd_paths(crds), strict=True))  # shared/ or the cache
        for file in crds.files:
            dest = root / crds.repo / crds.ref / file.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real[file.name], dest)
    handler = type("Mirror", (_Mirror,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(root), **kw))
    # poll_interval: shutdown() returns within 0.05 s instead of up to 0.5 s (each test's teardown)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def fresh_clone(mirror, tmp_path, monkeypatch):
    """No shared/ folder (an empty $LLM_ROLLOUT_SHARED) and an empty cache: a clone of the public repository
    (after the mirror took its files from this checkout's)."""
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "no-shared"))
    monkeypatch.setenv("LLM_ROLLOUT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_crds_in_use_are_the_pinned_files():
    # shared/ (when it is there) and the repository's pins agree: a changed shared/ would go unnoticed otherwise.
    for crds in (KSERVE, KEDA, *REFERENCES):
        pins = {f.name: f.sha256 for f in crds.files}
        paths = crd_paths(crds)
        assert len(paths) == len(pins)
        for name, path in zip(sorted(pins), paths, strict=True):
            assert path.as_posix().endswith(name) and _sha256(path) == pins[name], path


def test_upstream_urls_are_the_pinned_references(monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    isvc = next(f for f in KSERVE.files if f.name == "serving.kserve.io_inferenceservices.yaml")
    assert KSERVE.url(isvc) == (
        "https://raw.githubusercontent.com/kserve/kserve/aaac4e294dae2c7b1aa1886447793f3aa1c30912/"
        "config/crd/full/serving.kserve.io_inferenceservices.yaml"
    )
    assert KEDA.url(KEDA.files[0]) == (
        "https://raw.githubusercontent.com/kedacore/keda/v2.18.0/config/crd/bases/keda.sh_scaledobjects.yaml"
    )


def test_without_shared_the_crds_are_downloaded_checked_and_cached_once(fresh_clone, mirror, monkeypatch):
    root, base, requests = mirror
    monkeypatch.setenv(BASE_URL_ENV, base)
    for crds in (KSERVE, KEDA):
        paths = crd_paths(crds)
        assert all(p.parent == fresh_clone / "crds" / f"{crds.group}-{crds.ref[:12]}" for p in paths)
        for path in paths:
            upstream = next(f for f in crds.files if f.name == path.name)
            assert path.read_bytes() == (root / crds.repo / crds.ref / upstream.path).read_bytes()
    assert len(requests) == len(KSERVE.files) + len(KEDA.files)
    assert crd_paths(KSERVE) and crd_paths(KEDA)
    assert len(requests) == len(KSERVE.files) + len(KEDA.files), "the cache was not used"


def test_a_tampered_download_is_refused_and_not_cached(fresh_clone, mirror):
    root, base, _ = mirror
    file = next(f for f in KSERVE.files if f.name == "serving.kserve.io_servingruntimes.yaml")
    served = root / KSERVE.repo / KSERVE.ref / file.path
    served.write_text(served.read_text().replace("type: integer", "type: string", 1))
    with pytest.raises(CrdError) as err:
        crd_paths(KSERVE, base_url=base)
    message = str(err.value)
    assert f"{base}/kserve/kserve/{KSERVE.ref}/{file.path} has sha256 {_sha256(served)}" in message
    assert f"not the pinned {file.sha256}" in message and "not cached" in message and SHARED_ENV in message
    assert not (KSERVE.cache_dir() / file.name).exists()


def test_a_changed_cached_file_is_downloaded_again(fresh_clone, mirror):
    _, base, requests = mirror
    paths = crd_paths(KEDA, base_url=base)
    paths[0].write_text("kind: NotACrd\n")
    assert crd_paths(KEDA, base_url=base) == paths
    assert _sha256(paths[0]) == KEDA.files[0].sha256
    assert len(requests) == 2


def test_no_shared_and_no_network_says_where_to_put_them(fresh_clone):
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(CrdError) as err:
        crd_paths(KEDA, base_url=base)
    message = str(err.value)
    assert "the keda CRDs are not in" in message and f"downloading {base}/kedacore/keda/v2.18.0/" in message
    assert SHARED_ENV in message and BASE_URL_ENV in message


def test_reference_files_come_from_their_pinned_upstream_commits(monkeypatch):
    # The commits of shared/reference/<group>/COMMIT, each file under its upstream path.
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    assert KSERVE_REFERENCE.ref == KSERVE.ref
    runtime = next(f for f in KSERVE_REFERENCE.files if f.name == "kserve-vllmserver.yaml")
    assert KSERVE_REFERENCE.url(runtime) == (
        "https://raw.githubusercontent.com/kserve/kserve/aaac4e294dae2c7b1aa1886447793f3aa1c30912/"
        "config/runtimes/kserve-vllmserver.yaml"
    )
    assert KFP_REFERENCE.url(KFP_REFERENCE.files[0]) == (
        "https://raw.githubusercontent.com/kubeflow/pipelines/4a3592cb2dd0a91a4652ab93893ec8beda1f3158/"
        "manifests/kustomize/base/pipeline/pipeline-runner-role.yaml"
    )
    assert LLMD_REFERENCE.url(LLMD_REFERENCE.files[0]) == (
        "https://raw.githubusercontent.com/llm-d/llm-d-inference-scheduler/520af47896e5f06e43d09aca281a1149187b0ffd/"
        "deploy/config/epp-config.yaml"
    )


def test_without_shared_the_reference_files_are_downloaded_into_the_cache_under_their_names(
    fresh_clone, mirror, monkeypatch
):
    root, base, requests = mirror
    monkeypatch.setenv(BASE_URL_ENV, base)
    for ref in REFERENCES:
        folder = reference_dir(ref)
        assert folder == fresh_clone / "reference" / f"{ref.group}-{ref.ref[:12]}"
        for file in ref.files:
            assert (folder / file.name).read_bytes() == (root / ref.repo / ref.ref / file.path).read_bytes()
    # What the tests glob finds exactly the pinned files.
    presets = reference_dir(KSERVE_REFERENCE) / "config" / "llmisvcconfig"
    assert len(list(presets.glob("*.yaml"))) == 8
    assert len(list((reference_dir(LLMD_REFERENCE) / "deploy" / "config").glob("*.yaml"))) == 3
    assert len(requests) == sum(len(ref.files) for ref in REFERENCES), "the cache was not used"


def test_a_tampered_reference_file_is_refused_and_not_cached(fresh_clone, mirror):
    root, base, _ = mirror
    file = next(f for f in KFP_REFERENCE.files if f.name.endswith("pipeline-runner-role.yaml"))
    served = root / KFP_REFERENCE.repo / KFP_REFERENCE.ref / file.path
    served.write_text(served.read_text() + "- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n")
    with pytest.raises(CrdError) as err:
        reference_dir(KFP_REFERENCE, base_url=base)
    message = str(err.value)
    assert f"{base}/kubeflow/pipelines/{KFP_REFERENCE.ref}/{file.path} has sha256 {_sha256(served)}" in message
    assert f"not the pinned {file.sha256}" in message and "reference/kubeflow-pipelines/" in message
    assert not (KFP_REFERENCE.cache_dir() / file.name).exists()
