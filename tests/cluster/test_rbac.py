"""Least privilege, proven: what the library calls on the API server is exactly what manifests/rbac.yaml grants.

Every library entry point that talks to the API (check_crds, register_runtime, deploy for an
InferenceService and for llm-d, wait (also timing out, which reads pods and events), promote,
rollback, finalize_run, status, rollback_to_previous, and a second run waiting on the lease) runs
against the real test API server with one client. Two independent records are compared with the
Role and ClusterRole rules of the rendered ``manifests/rbac.yaml``:

* the audit of the client's calls (``(verb, group, resource)`` of every request it sends, the
  ``kube_audit`` fixture of :mod:`tests.fixtures.kube_audit`);
* the requests on the wire, seen by a pass-through proxy in front of the server (method and path,
  turned into the verb RBAC checks), which also proves that nothing but the by-name CRD reads
  leaves the namespace.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from llm_rollout.errors import DeadlineExceeded, PermanentError
from llm_rollout.kserve.builders.rbac import rbac
from llm_rollout.kserve.crds import check_crds, crd_requirements
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.lease import LeaseHeld
from llm_rollout.kserve.preflight import ModelStoreUnreachable
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.restore import rollback_to_previous
from llm_rollout.kserve.rollback import finalize_run, rollback
from llm_rollout.kserve.status import status
from tests.cluster._support import kube, llmd_spec, make_spec, with_runtime
from tests.fixtures.kube_audit import rbac_request

pytestmark = pytest.mark.cluster

RBAC_YAML = Path(__file__).resolve().parents[2] / "manifests" / "rbac.yaml"
CRD_GROUP = "apiextensions.k8s.io"
GW_GROUP = "gateway.networking.k8s.io"


class WireLog:
    """Records every request a fault proxy forwards (a matcher that never injects anything)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, method: str, target: str) -> bool:
        with self._lock:
            self.requests.append((method, target))
        return False

    def calls(self) -> set[tuple[str, str, str, str | None]]:
        """``(verb, group, resource, namespace)`` of each request, as the API server's authorizer sees it."""
        out = set()
        for method, target in self.requests:
            # The proxy sees requests, not responses: an apply reads as `patch` here; the audit,
            # which sees the status, adds the `create` of an apply that created the object.
            for verb, group, resource, namespace, name in rbac_request(method, target):
                out.add((verb, group, resource, namespace if namespace is not None else f"<cluster>/{name or '*'}"))
        return out


def granted(path: Path = RBAC_YAML) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str, str]]]:
    """What rbac.yaml grants: ``(verb, group, resource)`` from the Role, and the cluster-wide grants by name."""
    role: set[tuple[str, str, str]] = set()
    cluster: set[tuple[str, str, str, str]] = set()
    docs = list(yaml.safe_load_all(path.read_text()))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ClusterRole", "ClusterRoleBinding", "ServiceAccount"] + ["Role", "RoleBinding"] * 2)
    for doc in docs:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        if doc["metadata"]["name"].endswith("-kfp-run"):
            continue  # KFP's own pods' needs, not the library's (tests/unit/test_run_identity.py)
        for rule in doc["rules"]:
            for verb in rule["verbs"]:
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        assert "*" not in (verb, group, res), rule
                        if doc["kind"] == "Role":
                            role.add((verb, group, res))
                        else:
                            # GatewayClass names differ per cluster (the llm-d canary preflight reads them)
                            unnamed = rule["resources"] == ["gatewayclasses"] and rule["verbs"] == ["get"]
                            assert rule.get("resourceNames") or unnamed, f"a cluster-wide grant without names: {rule}"
                            for name in rule.get("resourceNames") or ["*"]:
                                cluster.add((verb, group, res, name))
    return role, cluster


def _deployer(spec, client):
    """deploy() for one spec and client, as the cluster steps call it (no endpoint probe here)."""

    def dep(uri, rev, run, **kw):
        return deploy(spec, client, model_uri=uri, revision=rev, run_id=run, timeout_s=30, probe=False, **kw)

    return dep


TOKEN_SECRET = "prometheus-reader"


def _token_spec(namespace):
    """A spec whose canary steps run a live analysis against a Prometheus behind a bearer token."""
    analysis = {"interval_s": 1, "count": 1, "resolution_s": 1, "deadline_s": 5}
    return make_spec(
        namespace,
        name="live",
        canary={"steps": [{"weight": 50, "analysis": analysis}, 100]},
        validation={"analysis": {"prometheus_url": "http://127.0.0.1:9", "token_secret": {"name": TOKEN_SECRET}}},
    )


def _secret_names(rules) -> set[str]:
    """The Secrets a Role's rules let the account ``get``, by name."""
    return {
        name
        for rule in rules
        if "secrets" in rule["resources"] and "get" in rule["verbs"]
        for name in rule.get("resourceNames") or ["*"]
    }


def _exercise_inference_service(proxy, namespace, reconciler, client) -> None:
    spec = make_spec(namespace, canary={"traffic_percent": 10})
    check_crds(client, need_llmd=False)
    register_runtime(spec, client)

    dep = _deployer(spec, client)

    first = dep("s3://models/a", "ra", "run-1")
    promote(spec, client, first, verdict="pass", summary="ok", run_id="run-1")
    second = dep("s3://models/b", "rb", "run-2")
    status(spec, client)
    with pytest.raises(LeaseHeld):  # a second run waits on the lease (a watch), then gives up
        dep("s3://models/c", "rc", "run-3", lease_wait_s=1.5)
    rollback(spec, client, second, reason="validation failed", run_id="run-2")
    third = dep("s3://models/c", "rc", "run-3")
    promote(spec, client, third, verdict="pass", summary="ok", run_id="run-3")
    rollback_to_previous(spec, client, run_id="manual", timeout_s=30)
    dep("s3://models/d", "rd", "run-4")
    finalize_run(spec, client, "run-4", state="FAILED", error="validate-deployment failed")
    # A model in KFP's store (the spec is silent on runtime.model_store: KFP's default store): the
    # preflight reads the serving account and its Secret by name. The test server has no core/v1
    # (404), so the step stops there, before any write.
    with pytest.raises(ModelStoreUnreachable):
        dep("minio://mlpipeline/v2/artifacts/run-5/model", "re", "run-5")

    # A deploy that times out explains itself with pod states and events (core/v1 reads). The test
    # server has no core/v1; the proxy answers the pods list itself (an empty list) as a full
    # cluster would, so the events read that follows is made too (and gets the server's 404).
    proxy.fail_next_requests(1, status=200, match=lambda method, target: "/pods" in target)
    never = make_spec(namespace, name="never")
    reconciler.behave(never.service_name, mode="never")
    with pytest.raises(DeadlineExceeded):
        deploy(never, client, model_uri="s3://models/n", revision="rn", run_id="run-5", timeout_s=2, probe=False)
    # ... and its exit handler removes the unvalidated first rollout (delete).
    finalize_run(never, client, "run-5", state="FAILED")

    # A stepped promotion with a live analysis whose Prometheus wants a bearer token: promote reads the
    # token's Secret by name (kserve/promote.py _prometheus_token) before it writes anything; the test
    # server has no core/v1 (404), so it stops there.
    live = _token_spec(namespace)
    with_runtime(live, client)
    live_first = _deployer(live, client)("s3://models/a", "ra", "run-6")
    with pytest.raises(PermanentError, match=f"Secret {namespace}/{TOKEN_SECRET}"):
        promote(live, client, live_first, verdict="pass", summary="ok", run_id="run-6")
    finalize_run(live, client, "run-6", state="FAILED")

    knative = make_spec(namespace, name="kn", deployment_mode="Knative", canary={"traffic_percent": 10})
    register_runtime(knative, client)
    kdep = _deployer(knative, client)
    kfirst = kdep("s3://models/a", "ra", "k1")
    promote(knative, client, kfirst, verdict="pass", summary="ok", run_id="k1")
    kcanary = kdep("s3://models/b", "rb", "k2")
    rollback(knative, client, kcanary, reason="fail", run_id="k2")


def _exercise_llmd(namespace, client, reconciler) -> None:
    spec = llmd_spec(namespace, name="gen", canary={"traffic_percent": 20})
    # Not Ready at the waiter's first read, so it watches (deploy also writes the preset's owners
    # before it waits, which an instant stand-in would otherwise outrun).
    reconciler.set_default(ready_after_ms=200)
    check_crds(client, need_llmd=True)
    register_runtime(spec, client)

    dep = _deployer(spec, client)

    first = dep("hf://org/a", "ra", "run-1")
    promote(spec, client, first, verdict="pass", summary="ok", run_id="run-1")
    second = dep("hf://org/b", "rb", "run-2")
    with pytest.raises(LeaseHeld):
        dep("hf://org/c", "rc", "run-3", lease_wait_s=1.5)
    promote(spec, client, second, verdict="pass", summary="ok", run_id="run-2")  # deletes the old member
    status(spec, client)
    rollback_to_previous(spec, client, run_id="manual", timeout_s=30)
    third = dep("hf://org/c", "rc", "run-3")
    rollback(spec, client, third, reason="validation failed", run_id="run-3")
    dep("hf://org/d", "rd", "run-4")
    finalize_run(spec, client, "run-4", state="CANCELLED")


def test_the_library_uses_exactly_what_rbac_yaml_grants(
    kube_cluster, kube_namespace, reconciler, kube_fault_proxy, kube_audit
):
    wire = WireLog()
    kube_fault_proxy.fail_next_requests(10**9, match=wire)  # never matches: records, forwards everything
    client = kube(kube_cluster, via=kube_fault_proxy)
    audit = kube_audit(client)

    _exercise_inference_service(kube_fault_proxy, kube_namespace, reconciler, client)
    _exercise_llmd(kube_namespace, client, reconciler)

    role, cluster_wide = granted()
    crd_names = {r.name for llmd in (False, True) for r in crd_requirements(need_llmd=llmd)}
    gateway_reads = {("get", GW_GROUP, "gateways", "kserve-ingress-gateway"), ("get", GW_GROUP, "gatewayclasses", "*")}
    assert cluster_wide == {("get", CRD_GROUP, "customresourcedefinitions", name) for name in crd_names} | gateway_reads

    # The audit: exactly the Role's grants plus the one documented cluster-wide read.
    used = set(audit)
    cluster_reads = {("get", CRD_GROUP, "customresourcedefinitions"), ("get", GW_GROUP, "gatewayclasses")}
    assert used - cluster_reads == role, (
        f"used but not granted: {sorted(used - role - cluster_reads)}; granted but never used: {sorted(role - used)}"
    )
    assert ("get", CRD_GROUP, "customresourcedefinitions") in used

    # Creating applies are authorized as `create` too (patch.go): every resource the library applies
    # into a fresh namespace needs both verbs, and the Role grants `create` for nothing else.
    applied = {(g, r) for v, g, r in used if v == "patch"}
    created = {(g, r) for v, g, r in used if v == "create"}
    assert created == applied, f"applied but never created: {sorted(applied - created)}"

    # The wire agrees with the audit (it cannot see which apply created), every write is an apply
    # (no POST), and nothing but the CRD reads by name and the llm-d canary's read of KServe's default
    # Gateway (kserve/kserve-ingress-gateway, granted by name) left the namespace.
    calls = wire.calls()
    assert {(v, g, r) for v, g, r, _ns in calls} == {c for c in used if c[0] != "create"}

    # Secrets by name: each one read is granted by name in the Role rendered for the spec that reads
    # it; Prometheus' token Secret only where the spec names one (the default rbac.yaml does not).
    read = {name for m, t in wire.requests for v, _g, res, _ns, name in rbac_request(m, t) if res == "secrets"}
    live_role = next(d for d in rbac(_token_spec(kube_namespace)) if d["kind"] == "Role")
    default_role = next(
        d
        for d in yaml.safe_load_all(RBAC_YAML.read_text())
        if d["kind"] == "Role" and not d["metadata"]["name"].endswith("-kfp-run")
    )
    assert TOKEN_SECRET in read and read == _secret_names(live_role["rules"]), read
    assert _secret_names(default_role["rules"]) == read - {TOKEN_SECRET}
    outside = {c for c in calls if c[3] != kube_namespace}
    assert outside == {("get", CRD_GROUP, "customresourcedefinitions", f"<cluster>/{n}") for n in crd_names} | {
        ("get", GW_GROUP, "gateways", "kserve")
    }
