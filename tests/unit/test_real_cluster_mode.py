"""Real-cluster mode of the cluster and e2e tiers: the fixtures' choice (issue 25).

With ``$LLM_ROLLOUT_TEST_KUBECONFIG`` set, :func:`tests.fixtures.cluster.start_cluster` starts no
etcd and no API server and hands out clients for that kubeconfig; whatever only the test API server
or the KServe stand-in has skips the test asking for it, with a reason naming the mode. Without
the variable nothing changes (the default of ``make test``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fixtures import cluster as fx

SERVER = "https://real-cluster.example:6443"


def _kubeconfig(path: Path) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kind-llm-rollout", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "kind-llm-rollout", "context": {"cluster": "kind-llm-rollout", "user": "admin"}}],
        "current-context": "kind-llm-rollout",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def no_local_binaries(monkeypatch, tmp_path):
    """Points the test API server's binaries at nothing: starting it would fail with MissingBinaryError."""
    monkeypatch.setenv(fx.ETCD_ENV, str(tmp_path / "no-etcd"))
    monkeypatch.setenv(fx.APISERVER_ENV, str(tmp_path / "no-apiserver"))
    monkeypatch.delenv(fx.ASSETS_ENV, raising=False)


def test_without_the_variable_the_test_api_server_is_chosen(monkeypatch, tmp_path, no_local_binaries):
    monkeypatch.delenv(fx.REAL_CLUSTER_ENV, raising=False)
    assert fx.real_cluster_kubeconfig() is None
    # The local route is taken: here it stops at the missing binaries (failing, never skipping).
    with pytest.raises(pytest.fail.Exception, match="make test-apiserver"):
        fx.start_cluster(tmp_path / "work")
    monkeypatch.setenv(fx.REAL_CLUSTER_ENV, "  ")
    assert fx.real_cluster_kubeconfig() is None


def test_with_the_variable_no_api_server_starts_and_the_kubeconfig_is_used(monkeypatch, tmp_path, no_local_binaries):
    config = _kubeconfig(tmp_path / "kind.kubeconfig")
    monkeypatch.setenv(fx.REAL_CLUSTER_ENV, str(config))
    work = tmp_path / "work"
    work.mkdir()

    cluster = fx.start_cluster(work)

    assert isinstance(cluster, fx.RealCluster) and cluster.kubeconfig_path == config
    assert list(work.iterdir()) == []  # no etcd data, no PKI, no logs: nothing was started
    assert cluster.configuration().host == SERVER
    api = cluster.api_client()
    try:
        assert api.configuration.host == SERVER
    finally:
        api.close()
    copied = cluster.write_kubeconfig(tmp_path / "copy")
    assert copied.read_bytes() == config.read_bytes()
    cluster.close()  # nothing to stop


def test_a_variable_naming_no_file_fails_instead_of_falling_back(monkeypatch, tmp_path):
    monkeypatch.setenv(fx.REAL_CLUSTER_ENV, str(tmp_path / "missing"))
    with pytest.raises(fx.ClusterStartError, match="LLM_ROLLOUT_TEST_KUBECONFIG"):
        fx.real_cluster_kubeconfig()


def test_what_only_the_test_api_server_and_the_stand_in_have_skips_naming_the_mode(tmp_path):
    cluster = fx.RealCluster(_kubeconfig(tmp_path / "kubeconfig"))
    for needs in (
        lambda: cluster.stop_apiserver(),
        lambda: cluster.fault_proxy(),
        lambda: cluster.configuration(via=object()),
        lambda: fx.RealController().behave("chat", mode="never"),
        lambda: fx.RealController().template_changes,
    ):
        with pytest.raises(pytest.skip.Exception, match=r"real-cluster mode \(\$LLM_ROLLOUT_TEST_KUBECONFIG\)"):
            needs()
    # Python's own protocol lookups still see a plain object (no skip from copy, pickle, hasattr).
    assert not hasattr(cluster, "__deepcopy__") and fx.RealController().errors == []
