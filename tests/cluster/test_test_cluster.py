"""The cluster tier's real parts prove themselves: API server, KServe CRDs, restarts, fault proxy."""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import pytest
import urllib3
from kubernetes.client.rest import ApiException

from tests.fixtures.cluster import (
    BUILD_COMMAND,
    SNAPSHOT_UNUSED_DAYS,
    ClusterBinaries,
    ClusterStartError,
    MissingBinaryError,
    TestCluster,
    crd_snapshot_key,
    kserve_crd_paths,
    kubernetes_crd_paths,
    locate_binaries,
    unique_namespace,
)
from tests.fixtures.faultproxy import FaultProxy

pytestmark = pytest.mark.cluster

GROUP = "serving.kserve.io"
MANAGER = "llm-rollout-tests"

EXPECTED_VERSIONS = {
    # kind: (plural, namespaced, served versions, storage version) - as in shared/crds/kserve
    "InferenceService": ("inferenceservices", True, ("v1beta1",), "v1beta1"),
    "ServingRuntime": ("servingruntimes", True, ("v1alpha1",), "v1alpha1"),
    "ClusterServingRuntime": ("clusterservingruntimes", False, ("v1alpha1",), "v1alpha1"),
    "LLMInferenceService": ("llminferenceservices", True, ("v1alpha1", "v1alpha2"), "v1alpha2"),
    "LLMInferenceServiceConfig": ("llminferenceserviceconfigs", True, ("v1alpha1", "v1alpha2"), "v1alpha2"),
}


def inference_service(namespace: str, name: str = "tiny", **predictor_extra: Any) -> dict[str, Any]:
    """A small valid InferenceService (Standard deployment mode, our vLLM runtime by name)."""
    return {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"serving.kserve.io/deploymentMode": "Standard"},
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {
                    "modelFormat": {"name": "vLLM"},
                    "runtime": "vllm-runtime",
                    "storageUri": "pvc://models/tiny",
                },
                **predictor_extra,
            }
        },
    }


def apply(
    api: kubernetes.client.ApiClient,
    obj: dict[str, Any],
    *,
    validation: str = "Strict",
    manager: str = MANAGER,
) -> tuple[int, dict[str, Any]]:
    """Server-side apply through the kubernetes client; returns (HTTP status, the object the server sent).

    The generated ``patch_namespaced_custom_object`` always sends merge-patch and returns None on
    201, so the apply goes through ``call_api`` with the apply content type and the raw body.
    """
    group, version = obj["apiVersion"].split("/")
    plural = EXPECTED_VERSIONS[obj["kind"]][0]
    meta = obj["metadata"]
    resp = api.call_api(
        f"/apis/{group}/{version}/namespaces/{meta['namespace']}/{plural}/{meta['name']}",
        "PATCH",
        query_params=[("fieldManager", manager), ("fieldValidation", validation)],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=obj,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    try:
        return resp.status, json.loads(resp.data)
    finally:
        resp.release_conn()


def get_isvc(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """GET an InferenceService as a plain dict."""
    return kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, "v1beta1", namespace, "inferenceservices", name
    )


def status_of(err: ApiException) -> dict[str, Any]:
    """The Kubernetes Status object of an API error."""
    return json.loads(err.body)


# The server and its CRDs -----------------------------------------------------------------------


def test_all_five_kserve_crds_are_established_and_serve_their_versions(kube_cluster, kube_api_client):
    assert {
        kind: (i.plural, i.namespaced, i.served_versions, i.storage_version)
        for kind, i in kube_cluster.crds.items()
        if i.group == GROUP  # the built-in types and other projects' CRDs the tests serve are checked apart
    } == EXPECTED_VERSIONS
    assert len(kserve_crd_paths()) == 5
    ext = kubernetes.client.ApiextensionsV1Api(kube_api_client)
    objects = kubernetes.client.CustomObjectsApi(kube_api_client)
    for kind, (plural, _namespaced, versions, _storage) in EXPECTED_VERSIONS.items():
        resp = ext.read_custom_resource_definition(f"{plural}.{GROUP}", _preload_content=False)
        crd = json.loads(resp.data)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", (kind, conditions)
        assert conditions["NamesAccepted"] == "True", (kind, conditions)
        assert crd["status"]["acceptedNames"]["kind"] == kind
        for version in versions:
            listed = objects.list_cluster_custom_object(GROUP, version, plural)
            assert listed["kind"] == f"{kind}List" and isinstance(listed["items"], list), (kind, version)
    # Group discovery names every served version, preferring the GA-most one.
    group, status, _headers = kube_api_client.call_api(
        f"/apis/{GROUP}", "GET", response_type="object", auth_settings=["BearerToken"]
    )
    assert status == 200
    assert [v["version"] for v in group["versions"]] == ["v1beta1", "v1alpha2", "v1alpha1"]
    assert group["preferredVersion"]["version"] == "v1beta1"


def test_installing_an_installed_crd_again_is_harmless(kube_cluster, kube_api_client):
    path = next(p for p in kserve_crd_paths() if p.name.endswith("_servingruntimes.yaml"))
    [info] = kube_cluster.install_crds([path])
    assert (info.kind, info.served_versions) == ("ServingRuntime", ("v1alpha1",))
    listed = kubernetes.client.CustomObjectsApi(kube_api_client).list_cluster_custom_object(
        GROUP, "v1alpha1", "servingruntimes"
    )
    assert listed["kind"] == "ServingRuntimeList"


def test_it_is_a_real_apiserver_without_core_resources(kube_cluster, kube_api_client):
    version, status, _ = kube_api_client.call_api(
        "/version", "GET", response_type="object", auth_settings=["BearerToken"]
    )
    assert status == 200 and (version["major"], version["minor"]) == ("1", "36")
    with pytest.raises(ApiException) as info:
        kubernetes.client.CoreV1Api(kube_api_client).list_namespace()
    assert info.value.status == 404
    # Nor the root discovery documents (a full kube-apiserver's aggregator serves those):
    # clients that discover everything first (DynamicClient) cannot work here; per-group discovery does.
    with pytest.raises(ApiException) as info:
        kubernetes.client.ApisApi(kube_api_client).get_api_versions()
    assert info.value.status == 404
    # Without the client certificate a request is anonymous and never let in. Authorization is
    # delegated to the unreachable 'core' API, so the answer is a 500 naming it (not a 401/403).
    anonymous = kube_cluster.configuration()
    anonymous.cert_file = anonymous.key_file = None
    with kubernetes.client.ApiClient(anonymous) as api, pytest.raises(ApiException) as info:
        kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, "v1beta1", "inferenceservices")
    assert info.value.status == 500
    assert "subjectaccessreviews" in info.value.body


def test_kubeconfig_file_works_with_load_kube_config(kube_cluster, kube_namespace):
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kube_cluster.kubeconfig_path), client_configuration=config)
    assert config.host == kube_cluster.host
    with kubernetes.client.ApiClient(config) as api:
        status, created = apply(api, inference_service(kube_namespace))
    assert status == 201 and created["metadata"]["namespace"] == kube_namespace


# Server-side apply, Strict validation, schema ----------------------------------------------------


def test_server_side_apply_creates_then_is_a_no_op(kube_api_client, kube_namespace):
    status, created = apply(kube_api_client, inference_service(kube_namespace))
    assert status == 201
    meta = created["metadata"]
    assert meta["uid"] and meta["generation"] == 1
    assert [(m["manager"], m["operation"]) for m in meta["managedFields"]] == [(MANAGER, "Apply")]
    assert created["spec"]["predictor"]["model"]["runtime"] == "vllm-runtime"

    status, again = apply(kube_api_client, inference_service(kube_namespace))
    assert status == 200
    assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
    assert get_isvc(kube_api_client, kube_namespace, "tiny")["metadata"]["uid"] == meta["uid"]


def test_another_field_manager_conflicts(kube_api_client, kube_namespace):
    assert apply(kube_api_client, inference_service(kube_namespace))[0] == 201
    theirs = inference_service(kube_namespace)
    theirs["spec"]["predictor"]["minReplicas"] = 3
    with pytest.raises(ApiException) as info:
        apply(kube_api_client, theirs, manager="someone-else")
    assert info.value.status == 409
    assert "minReplicas" in status_of(info.value)["message"]


def test_apply_with_an_unknown_field_is_refused_with_a_500(kube_api_client, kube_namespace):
    """Upstream behaviour (kubernetes/kubernetes#139253): SSA's typed conversion fails before any
    fieldValidation applies, and that plain error becomes HTTP 500 without a reason. Error mapping
    must not take it for a transient server fault."""
    obj = inference_service(kube_namespace, "typo", minReplica=2)  # sic: minReplicas
    for validation in ("Strict", "Ignore"):
        with pytest.raises(ApiException) as info:
            apply(kube_api_client, obj, validation=validation)
        assert info.value.status == 500
        body = status_of(info.value)
        assert "reason" not in body
        assert body["message"].startswith("failed to create typed patch object")
        assert ".spec.predictor.minReplica: field not declared in schema" in body["message"]
    with pytest.raises(ApiException) as info:
        get_isvc(kube_api_client, kube_namespace, "typo")
    assert info.value.status == 404


def test_strict_create_rejects_an_unknown_field_that_ignore_would_prune(kube_api_client, kube_namespace):
    objects = kubernetes.client.CustomObjectsApi(kube_api_client)
    obj = inference_service(kube_namespace, "typo", minReplica=2)
    with pytest.raises(ApiException) as info:
        objects.create_namespaced_custom_object(
            GROUP, "v1beta1", kube_namespace, "inferenceservices", obj, field_validation="Strict"
        )
    assert info.value.status == 400
    body = status_of(info.value)
    assert body["reason"] == "BadRequest"
    assert 'unknown field "spec.predictor.minReplica"' in body["message"]
    # Without Strict the same object is accepted and the field silently pruned.
    created = objects.create_namespaced_custom_object(
        GROUP, "v1beta1", kube_namespace, "inferenceservices", obj, field_validation="Ignore"
    )
    assert "minReplica" not in created["spec"]["predictor"]
    assert created["spec"]["predictor"]["minReplicas"] == 1


def test_schema_violations(kube_api_client, kube_namespace):
    # A value of the right type that the schema refuses (enum): 422 Invalid naming the field, SSA too.
    obj = inference_service(kube_namespace, "bad-enum", scaleMetric="gpu")
    with pytest.raises(ApiException) as info:
        apply(kube_api_client, obj)
    assert info.value.status == 422
    body = status_of(info.value)
    assert body["reason"] == "Invalid"
    assert [c["field"] for c in body["details"]["causes"]] == ["spec.predictor.scaleMetric"]
    # A value of the wrong type: 422 on create, but SSA's typed conversion fails first (500, as above).
    obj = inference_service(kube_namespace, "wrong-type", minReplicas="two")
    with pytest.raises(ApiException) as info:
        kubernetes.client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
            GROUP, "v1beta1", kube_namespace, "inferenceservices", obj
        )
    assert info.value.status == 422
    assert any(c.get("field") == "spec.predictor.minReplicas" for c in status_of(info.value)["details"]["causes"])
    with pytest.raises(ApiException) as info:
        apply(kube_api_client, obj)
    assert info.value.status == 500
    assert "expected numeric (int or float), got string" in status_of(info.value)["message"]


# Restarts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "crash"])
def test_restart_keeps_objects_and_clients_recover(kube_cluster, kube_api_client, kube_namespace, kill):
    status, created = apply(kube_api_client, inference_service(kube_namespace))
    assert status == 201
    port = kube_cluster.port

    kube_cluster.stop_apiserver(kill=kill)
    assert not kube_cluster.apiserver_running()
    down = kube_cluster.configuration()
    down.retries = 0
    with kubernetes.client.ApiClient(down) as api, pytest.raises(urllib3.exceptions.MaxRetryError):
        get_isvc(api, kube_namespace, "tiny")

    kube_cluster.start_apiserver()
    assert kube_cluster.port == port
    # The client made before the restart works again (its pooled connection is replaced).
    live = get_isvc(kube_api_client, kube_namespace, "tiny")
    assert live["metadata"]["uid"] == created["metadata"]["uid"]
    assert live["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert apply(kube_api_client, inference_service(kube_namespace))[0] == 200


def test_start_apiserver_from_a_short_lived_thread_survives_the_thread(kube_cluster, kube_api_client, kube_namespace):
    kube_cluster.stop_apiserver()
    starter = threading.Thread(target=kube_cluster.start_apiserver)
    starter.start()
    starter.join(timeout=120)
    assert not starter.is_alive()
    time.sleep(0.5)
    assert kube_cluster.apiserver_running()
    assert apply(kube_api_client, inference_service(kube_namespace))[0] == 201


# The fault proxy -------------------------------------------------------------------------------


def test_proxy_passes_requests_through(kube_cluster, kube_fault_proxy, kube_namespace):
    with kube_cluster.api_client(via=kube_fault_proxy) as api:
        assert apply(api, inference_service(kube_namespace))[0] == 201
        assert get_isvc(api, kube_namespace, "tiny")["metadata"]["name"] == "tiny"
    stats = kube_fault_proxy.stats
    assert stats.requests_forwarded == 2 and stats.requests_failed == 0 and stats.connections == 1


def test_proxy_resets_the_next_connections(kube_cluster, kube_fault_proxy, kube_namespace):
    no_retries = kube_cluster.configuration(via=kube_fault_proxy)
    no_retries.retries = 0
    kube_fault_proxy.reset_next_connections(1)
    with kubernetes.client.ApiClient(no_retries) as api:
        with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
            get_isvc(api, kube_namespace, "missing")
        assert isinstance(info.value.reason, urllib3.exceptions.ProtocolError | urllib3.exceptions.SSLError)
        # Only the next one: the following connection passes (404: the object does not exist).
        with pytest.raises(ApiException) as not_found:
            get_isvc(api, kube_namespace, "missing")
        assert not_found.value.status == 404
    assert kube_fault_proxy.stats.connections_reset == 1

    # urllib3's default retries (the kubernetes client's default) hide a single reset.
    kube_fault_proxy.reset_next_connections(2)
    with kube_cluster.api_client(via=kube_fault_proxy) as api, pytest.raises(ApiException) as not_found:
        get_isvc(api, kube_namespace, "missing")
    assert not_found.value.status == 404
    assert kube_fault_proxy.stats.connections_reset == 3


@pytest.mark.parametrize(
    ("status", "reason"), [(503, "ServiceUnavailable"), (429, "TooManyRequests"), (500, "InternalError")]
)
def test_proxy_answers_the_next_requests_itself(kube_cluster, kube_fault_proxy, kube_namespace, status, reason):
    with kube_cluster.api_client(via=kube_fault_proxy) as api:
        assert apply(api, inference_service(kube_namespace))[0] == 201
        kube_fault_proxy.fail_next_requests(2, status)
        for _ in range(2):
            with pytest.raises(ApiException) as info:
                get_isvc(api, kube_namespace, "tiny")
            assert info.value.status == status
            assert status_of(info.value)["reason"] == reason
            assert "Retry-After" not in info.value.headers
        assert get_isvc(api, kube_namespace, "tiny")["metadata"]["name"] == "tiny"
    stats = kube_fault_proxy.stats
    assert stats.injected_statuses == {status: 2}
    assert stats.requests_failed == 2 and stats.requests_forwarded == 2
    assert stats.connections == 1  # injected answers keep the connection, like the API server's


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_sent_and_the_default_client_honours_it_by_itself(
    kube_cluster, kube_fault_proxy, kube_namespace, status
):
    no_retries = kube_cluster.configuration(via=kube_fault_proxy)
    no_retries.retries = 0
    kube_fault_proxy.fail_next_requests(1, status, retry_after=1)
    with kubernetes.client.ApiClient(no_retries) as api, pytest.raises(ApiException) as info:
        get_isvc(api, kube_namespace, "missing")
    assert info.value.status == status
    assert info.value.headers["Retry-After"] == "1"
    # The kubernetes client's default (urllib3's Retry(3)) retries 413/429/503 answers that carry
    # Retry-After on its own, sleeping as told: the caller only sees the final answer.
    kube_fault_proxy.fail_next_requests(2, status, retry_after=1)
    started = time.monotonic()
    with kube_cluster.api_client(via=kube_fault_proxy) as api, pytest.raises(ApiException) as info:
        get_isvc(api, kube_namespace, "missing")
    assert info.value.status == 404
    assert time.monotonic() - started >= 2
    assert kube_fault_proxy.stats.injected_statuses == {status: 3}


def test_proxy_failures_can_target_one_kind_of_request(kube_cluster, kube_fault_proxy, kube_namespace):
    kube_fault_proxy.fail_next_requests(1, 503, match=lambda method, _path: method == "PATCH")
    with kube_cluster.api_client(via=kube_fault_proxy) as api:
        with pytest.raises(ApiException) as missing:
            get_isvc(api, kube_namespace, "tiny")
        assert missing.value.status == 404  # a GET: passed through
        with pytest.raises(ApiException) as unavailable:
            apply(api, inference_service(kube_namespace))
        assert unavailable.value.status == 503
        assert apply(api, inference_service(kube_namespace))[0] == 201


def test_proxy_delays_new_connections(kube_cluster, kube_fault_proxy, kube_namespace):
    kube_fault_proxy.delay_connections(400)
    with kube_cluster.api_client(via=kube_fault_proxy) as api:
        with pytest.raises(ApiException):
            get_isvc(api, kube_namespace, "missing")
        # The first request's connection was held back before a byte was forwarded ...
        assert kube_fault_proxy.stats.connections_delayed == 1
        with pytest.raises(ApiException):
            get_isvc(api, kube_namespace, "missing")
    # ... and the second reused that pooled connection: no new connection, no second delay.
    stats = kube_fault_proxy.stats
    assert stats.connections == 1 and stats.connections_delayed == 1 and stats.requests_forwarded == 2


def test_proxy_drop_connections_cuts_a_watch(kube_cluster, kube_fault_proxy, kube_namespace):
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def watch() -> None:
        with kube_cluster.api_client(via=kube_fault_proxy) as api:
            objects = kubernetes.client.CustomObjectsApi(api)
            try:
                for event in kubernetes.watch.Watch().stream(
                    objects.list_namespaced_custom_object,
                    GROUP,
                    "v1beta1",
                    kube_namespace,
                    "inferenceservices",
                    timeout_seconds=60,
                ):
                    events.put(("event", event["type"]))
                events.put(("end", None))
            except Exception as err:
                events.put(("error", type(err).__name__))

    with kube_cluster.api_client() as direct:
        assert apply(direct, inference_service(kube_namespace))[0] == 201
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert events.get(timeout=30) == ("event", "ADDED")
    assert kube_fault_proxy.open_connections == 1

    assert kube_fault_proxy.drop_connections() == 1
    # The watch ends because its connection was cut, not by its 60 s timeout: the next thing it
    # reports is its end (the wait's bound only catches a hang).
    kind, _detail = events.get(timeout=45)
    assert kind in ("end", "error")
    watcher.join(timeout=30)
    assert kube_fault_proxy.stats.connections_dropped == 1


def test_raw_proxy_without_tls_termination_forwards_tls_end_to_end(kube_cluster, kube_namespace):
    with FaultProxy("127.0.0.1", kube_cluster.port, scheme="https") as proxy:
        assert not proxy.terminates_tls
        with pytest.raises(RuntimeError, match="TLS-terminating"):
            proxy.fail_next_requests(1)
        with kube_cluster.api_client(via=proxy) as api, pytest.raises(ApiException) as info:
            get_isvc(api, kube_namespace, "missing")
        assert info.value.status == 404
        assert proxy.stats.connections == 1


# Binary lookup and startup failures ---------------------------------------------------------------


def test_missing_binaries_fail_with_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_ASSET_ETCD", str(tmp_path / "no-etcd"))
    monkeypatch.delenv("TEST_ASSET_KUBE_APISERVER", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("LLM_ROLLOUT_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingBinaryError) as info:
        locate_binaries()
    message = str(info.value)
    assert BUILD_COMMAND in message
    assert str(tmp_path / "no-etcd") in message
    assert str(tmp_path / "empty-cache" / "k8s" / "bin" / "apiextensions-apiserver") in message


def test_kubebuilder_assets_dir_is_used(monkeypatch, tmp_path, kube_cluster):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "etcd").symlink_to(kube_cluster.binaries.etcd)
    (assets / "kube-apiserver").symlink_to(kube_cluster.binaries.apiserver)
    for name in ("TEST_ASSET_ETCD", "TEST_ASSET_KUBE_APISERVER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found = locate_binaries()
    assert (found.etcd, found.apiserver) == (assets / "etcd", assets / "kube-apiserver")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_cluster_starts_and_closes_without_orphans(kube_cluster, tmp_path):
    with TestCluster(tmp_path / "second", binaries=kube_cluster.binaries, crd_paths=[]) as second:
        assert second.port != kube_cluster.port
        status, body = second.request("GET", "/healthz")
        assert (status, body) == (200, "ok")
        groups = [second._etcd.pid, second._apiserver.pid]  # type: ignore[union-attr]
        assert all(_group_alive(g) for g in groups)
    assert not any(_group_alive(g) for g in groups)
    assert (tmp_path / "second" / "apiserver.log").stat().st_size > 0


def test_startup_failure_reports_the_logs_and_leaves_nothing_running(kube_cluster, tmp_path):
    broken = tmp_path / "broken-apiserver"
    broken.write_text("#!/bin/sh\necho 'broken apiserver: cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    cluster = TestCluster(
        tmp_path / "broken",
        binaries=ClusterBinaries(etcd=kube_cluster.binaries.etcd, apiserver=broken),
        crd_paths=[],
        startup_timeout=20,
    )
    with pytest.raises(ClusterStartError) as info:
        cluster.start()
    message = str(info.value)
    assert "exited with code 3" in message
    assert "broken apiserver: cannot start" in message
    assert "etcd.log" in message
    assert cluster._etcd is None and cluster._apiserver is None


# The CRD snapshot the session cluster starts from -------------------------------------------------


def test_the_snapshot_key_covers_both_binaries_and_every_crd_file(tmp_path):
    etcd, apiserver, first, second = (tmp_path / n for n in ("etcd", "apiserver", "a.yaml", "b.yaml"))
    for path in (etcd, apiserver, first, second):
        path.write_text(path.name)
    binaries = ClusterBinaries(etcd=etcd, apiserver=apiserver)
    key = crd_snapshot_key(binaries, [first, second])
    assert key == crd_snapshot_key(binaries, [first, second])
    assert key != crd_snapshot_key(binaries, [second, first])  # install order
    assert key != crd_snapshot_key(binaries, [first])
    first.write_text("a.yaml changed")
    changed = crd_snapshot_key(binaries, [first, second])
    assert changed != key
    st = apiserver.stat()
    os.utime(apiserver, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a rebuilt API server
    assert crd_snapshot_key(binaries, [first, second]) != changed


def _copied_crds(directory: Path) -> list[Path]:
    directory.mkdir()
    return [Path(shutil.copy(p, directory / p.name)) for p in kubernetes_crd_paths()]


def test_a_snapshot_hit_serves_every_crd_and_a_changed_crd_file_misses(kube_cluster, tmp_path):
    root = tmp_path / "snapshots"
    paths = _copied_crds(tmp_path / "crds")

    def start(name: str) -> TestCluster:
        return TestCluster(tmp_path / name, binaries=kube_cluster.binaries, crd_paths=paths).start_cached(root)

    # Snapshots of other keys: one unused for longer than SNAPSHOT_UNUSED_DAYS, one used recently.
    for name, age_days in (("stale", SNAPSHOT_UNUSED_DAYS + 1), ("recent", 1)):
        (root / name).mkdir(parents=True)
        (root / name / "crds.json").write_text("[]")
        then = time.time() - age_days * 86400
        os.utime(root / name / "crds.json", (then, then))

    first = start("miss")  # a real install, then the snapshot
    try:
        assert not first.started_from_snapshot
        installed = dict(first.crds)
    finally:
        first.close()
    key = crd_snapshot_key(kube_cluster.binaries, paths)
    assert sorted(p.name for p in root.iterdir()) == sorted([key, "recent"])  # the stale one was removed
    assert set(installed) == {"Lease", "Gateway", "GatewayClass"}

    second = start("hit")
    try:
        assert second.started_from_snapshot
        assert second.crds == installed
        for info in second.crds.values():
            status, crd = second.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{info.name}")
            assert status == 200
            conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
            assert conditions["Established"] == "True", (info.name, conditions)
            for version in info.served_versions:
                status, listed = second.request("GET", f"/apis/{info.group}/{version}/{info.plural}")
                # Served, and empty: the snapshot was taken before any object existed.
                assert (status, listed["kind"], listed["items"]) == (200, f"{info.kind}List", []), (info, version)
    finally:
        second.close()

    lease = next(p for p in paths if p.name.endswith("_leases.yaml"))
    lease.write_text(lease.read_text() + "# any change of a CRD file\n")
    third = start("changed")
    try:
        assert not third.started_from_snapshot
        assert third.crds == installed
    finally:
        third.close()
    assert len(list(root.iterdir())) == 3  # the changed files' snapshot beside the first


def test_a_snapshot_that_does_not_start_falls_back_to_a_real_install(kube_cluster, tmp_path, capfd):
    root = tmp_path / "snapshots"
    paths = _copied_crds(tmp_path / "crds")
    broken = root / crd_snapshot_key(kube_cluster.binaries, paths)
    (broken / "etcd-data").mkdir(parents=True)
    (broken / "crds.json").write_text("not JSON")
    cluster = TestCluster(tmp_path / "c", binaries=kube_cluster.binaries, crd_paths=paths).start_cached(root)
    try:
        assert not cluster.started_from_snapshot
        assert set(cluster.crds) == {"Lease", "Gateway", "GatewayClass"}
        status, listed = cluster.request("GET", "/apis/coordination.k8s.io/v1/leases")
        assert (status, listed["items"]) == (200, [])
    finally:
        cluster.close()
    err = capfd.readouterr().err
    assert f"the cached CRD snapshot {broken} did not start" in err and "installing the CRDs instead" in err
    # The broken snapshot was replaced by a good one.
    assert {e["kind"] for e in json.loads((broken / "crds.json").read_text())} == set(cluster.crds)


def test_unique_namespace_is_dns_safe():
    names = {unique_namespace("Test_Something[with-Params 1]") for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert len(name) <= 20 and name[0].isalpha()  # short: the namespace is in KServe's host labels
        assert all(c.isdigit() or c == "-" or (c.isalpha() and c.islower()) for c in name)
    assert unique_namespace("x" * 200).startswith("x" * 11 + "-")
    assert Path(unique_namespace("9lives")).name.startswith("t-9lives-")


def test_the_lease_is_served_with_kubernetes_own_schema(kube_cluster, kube_namespace):
    """coordination.k8s.io/v1 Lease (tests/fixtures/crds/): what the real type accepts is accepted, a
    field it lacks or a wrong type is refused, as a cluster's built-in Lease refuses them."""
    from llm_rollout.kube import LEASES, InvalidError
    from tests.cluster._support import kube

    client = kube(kube_cluster)
    info = kube_cluster.crds["Lease"]
    assert (info.group, info.plural, info.namespaced, info.served_versions) == (
        "coordination.k8s.io",
        "leases",
        True,
        ("v1",),
    )
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l", "namespace": kube_namespace},
        "spec": {
            "holderIdentity": "run-1",
            "leaseDurationSeconds": 30,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z",
            "leaseTransitions": 0,
        },
    }
    assert client.apply(lease)["spec"]["holderIdentity"] == "run-1"
    assert client.get(LEASES, "l", kube_namespace)["spec"]["leaseDurationSeconds"] == 30
    with pytest.raises(InvalidError):
        client.apply({**lease, "spec": {**lease["spec"], "holder": "run-2"}})  # not a field of LeaseSpec
    with pytest.raises(InvalidError):
        client.apply({**lease, "spec": {**lease["spec"], "leaseDurationSeconds": 2**31}})  # int32
    with pytest.raises(InvalidError):
        client.apply({**lease, "spec": {**lease["spec"], "renewTime": "yesterday"}})  # MicroTime
