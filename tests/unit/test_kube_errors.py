"""The kube layer's error mapping, retry helper and pure readiness/URI rules (no server needed).

The exceptions here are the real ``kubernetes.client.ApiException`` objects the client raises, with
the Status bodies the API server sends; the cluster tier checks the same paths against the server.
"""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.rest import ApiException

from llm_rollout.errors import DeadlineExceeded, PermanentError, SpecError, TransientError
from llm_rollout.kserve.deploy import to_storage_uri
from llm_rollout.kserve.diagnose import likely_causes
from llm_rollout.kserve.wait import Readiness, evaluate
from llm_rollout.kube import (
    ApiTransientError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    Target,
    WatchExpired,
    map_api_exception,
    map_error,
    resource_for,
    retry,
)

TARGET = Target("apply", "ServingRuntime", "rt", "team-a", "servingruntimes")


def api_exception(status: int, body: dict | str | None = None, headers: dict | None = None) -> ApiException:
    exc = ApiException(status=status, reason={409: "Conflict", 422: "Unprocessable Entity"}.get(status, "x"))
    exc.body = json.dumps(body) if isinstance(body, dict) else body
    exc.headers = headers
    return exc


def test_conflict_names_the_other_manager_and_fields_and_how_to_force():
    body = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Conflict",
        "code": 409,
        "message": 'Apply failed with 1 conflict: conflict with "team-b-deployer" using '
        "serving.kserve.io/v1alpha1: .spec.containers",
        "details": {
            "causes": [
                {
                    "reason": "FieldManagerConflict",
                    "message": 'conflict with "team-b-deployer" using serving.kserve.io/v1alpha1',
                    "field": ".spec.containers",
                }
            ]
        },
    }
    err = map_api_exception(api_exception(409, body), TARGET)
    assert isinstance(err, ConflictError) and isinstance(err, PermanentError)
    assert err.managers == ["team-b-deployer"]
    assert err.fields == [".spec.containers"]
    text = str(err)
    assert "team-b-deployer" in text and ".spec.containers" in text
    assert "force" in text and "ServingRuntime team-a/rt" in text


def test_invalid_field_is_permanent_and_named():
    body = {
        "kind": "Status",
        "reason": "BadRequest",
        "code": 400,
        "message": ".spec.predictor.modle: field not declared in schema",
        "details": {"causes": [{"reason": "FieldValueInvalid", "field": ".spec.predictor.modle"}]},
    }
    err = map_api_exception(api_exception(400, body), TARGET)
    assert isinstance(err, InvalidError)
    assert err.fields == [".spec.predictor.modle"]
    assert ".spec.predictor.modle" in str(err)


def test_apply_schema_mismatch_500_is_permanent_and_names_the_field():
    # What the API server answers a server-side apply with an unknown field under Strict validation.
    body = {
        "kind": "Status",
        "status": "Failure",
        "reason": "InternalError",
        "code": 500,
        "message": "failed to create typed patch object (team-a/chat; serving.kserve.io/v1beta1, "
        "Kind=InferenceService): .spec.predictor.modle: field not declared in schema",
    }
    err = map_api_exception(api_exception(500, body), TARGET)
    assert isinstance(err, InvalidError) and not isinstance(err, TransientError)
    assert err.fields == [".spec.predictor.modle"]


def test_unprocessable_carries_the_server_message():
    body = {
        "kind": "Status",
        "reason": "Invalid",
        "code": 422,
        "message": 'LLMInferenceService.serving.kserve.io "x" is invalid: spec: Invalid value: '
        '"object": replicas and scaling are mutually exclusive',
        "details": {"causes": [{"field": "spec", "message": "replicas and scaling are mutually exclusive"}]},
    }
    err = map_api_exception(api_exception(422, body), TARGET)
    assert isinstance(err, InvalidError)
    assert "replicas and scaling are mutually exclusive" in str(err)


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_server_errors_are_transient(code):
    err = map_api_exception(api_exception(code, {"message": "etcdserver: request timed out"}), TARGET)
    assert isinstance(err, ApiTransientError) and isinstance(err, TransientError)
    assert err.status == code


def test_429_honours_retry_after():
    err = map_api_exception(api_exception(429, {"message": "slow down"}, {"Retry-After": "3"}), TARGET)
    assert isinstance(err, ApiTransientError)
    assert err.retry_after == 3.0


def test_410_is_watch_expiry():
    err = map_api_exception(api_exception(410, {"message": "too old resource version: 5 (9)"}), TARGET)
    assert isinstance(err, WatchExpired) and isinstance(err, TransientError)


def test_missing_resource_type_points_at_the_crds():
    body = "404 page not found"
    err = map_api_exception(
        api_exception(404, {"message": "the server could not find the requested resource"}),
        Target("get", "InferenceService", "x", "ns", "inferenceservices"),
    )
    assert isinstance(err, NotFoundError)
    assert "CustomResourceDefinition" in str(err) and "KServe" in str(err)
    plain = map_api_exception(api_exception(404, body), TARGET)
    assert isinstance(plain, NotFoundError) and "CustomResourceDefinition" in str(plain)
    missing_object = {
        "kind": "Status",
        "reason": "NotFound",
        "code": 404,
        "message": 'servingruntimes.serving.kserve.io "rt" not found',
        "details": {"name": "rt", "group": "serving.kserve.io", "kind": "servingruntimes"},
    }
    err = map_api_exception(api_exception(404, missing_object), TARGET)
    assert isinstance(err, NotFoundError) and "CustomResourceDefinition" not in str(err)
    assert '"rt" not found' in str(err)


def test_forbidden_says_what_to_grant():
    err = map_api_exception(api_exception(403, {"message": "forbidden", "reason": "Forbidden"}), TARGET)
    assert isinstance(err, ForbiddenError)
    assert "rbac" in str(err).lower()


def test_connection_errors_are_transient():
    reset = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    assert isinstance(map_error(reset, TARGET), ApiTransientError)
    assert isinstance(map_error(ConnectionRefusedError(111, "refused"), TARGET), ApiTransientError)
    assert isinstance(map_error(api_exception(0, None), TARGET), ApiTransientError)
    other = KeyError("x")
    assert map_error(other, TARGET) is other


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retry_backs_off_with_jitter_and_returns():
    clock = FakeClock()
    calls = []

    def flaky():
        calls.append(clock.now)
        if len(calls) < 5:
            raise ApiTransientError("503")
        return "ok"

    assert retry(flaky, deadline_s=30, what="apply", sleep=clock.sleep, clock=clock) == "ok"
    assert len(clock.sleeps) == 4
    # Exponential with jitter: each delay within [d/2, d] for d = 0.1, 0.2, 0.4, 0.8.
    for delay, cap in zip(clock.sleeps, [0.1, 0.2, 0.4, 0.8], strict=True):
        assert cap / 2 <= delay <= cap


def test_retry_honours_retry_after():
    clock = FakeClock()
    attempts = []

    def throttled():
        attempts.append(1)
        if len(attempts) == 1:
            raise ApiTransientError("429", status=429, retry_after=2.5)
        return "ok"

    retry(throttled, deadline_s=30, what="list", sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [2.5]


def test_retry_deadline_carries_the_last_error():
    clock = FakeClock()

    def always():
        raise ApiTransientError(f"503 at {clock.now:.2f}")

    with pytest.raises(DeadlineExceeded) as info:
        retry(always, deadline_s=3, what="apply ServingRuntime x", sleep=clock.sleep, clock=clock)
    assert "apply ServingRuntime x" in str(info.value) and "503 at" in str(info.value)
    assert isinstance(info.value.__cause__, ApiTransientError)
    assert clock.now <= 3


def test_retry_does_not_retry_permanent_errors():
    calls = []

    def bad():
        calls.append(1)
        raise InvalidError("nope", status=422)

    with pytest.raises(InvalidError):
        retry(bad, deadline_s=30, what="x", sleep=lambda s: None)
    assert len(calls) == 1


def test_resource_for_known_kinds():
    assert resource_for({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}).plural == (
        "inferenceservices"
    )
    assert resource_for({"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService"}).plural == (
        "llminferenceservices"
    )
    with pytest.raises(PermanentError):
        resource_for({"kind": "X"})


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("minio://mlpipeline/v2/artifacts/run/model", "s3://mlpipeline/v2/artifacts/run/model"),
        ("s3://bucket/model", "s3://bucket/model"),
        ("gs://bucket/model", "gs://bucket/model"),
        ("pvc://models-claim/llama", "pvc://models-claim/llama"),
        ("hf://org/model", "hf://org/model"),
        ("oci://registry.example.com/models/llama:1", "oci://registry.example.com/models/llama:1"),
    ],
)
def test_storage_uri_mapping(uri, expected):
    assert to_storage_uri(uri) == expected


@pytest.mark.parametrize("uri", ["ftp://host/model", "/tmp/model", "file:///tmp/model", "http://x/y", ""])
def test_storage_uri_refuses_other_schemes_naming_the_accepted_ones(uri):
    with pytest.raises(SpecError) as info:
        to_storage_uri(uri)
    assert "s3://" in str(info.value) and "minio://" in str(info.value)


def test_llmd_refuses_gs():
    with pytest.raises(SpecError, match="llm-d"):
        to_storage_uri("gs://bucket/model", llmd=True)


def _isvc(gen, observed, conditions, **status):
    return {
        "metadata": {"name": "svc", "generation": gen},
        "status": {"observedGeneration": observed, "conditions": conditions, **status},
    }


READY = [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}]


CANARY_READY = {"type": "CanaryPredictorReady", "status": "True", "reason": "AllCanariesReady"}


def test_isvc_freshness_is_not_read_from_observed_generation():
    """inference_service_status.go copies the child Deployment's observedGeneration (kserve#6081)."""
    readiness = Readiness.inference_service(canary="rb", canary_traffic=10, min_generation=2)
    # hang case: a canary entry leaves the stable Deployment (generation 1) alone
    fresh = _isvc(2, 1, [*READY, CANARY_READY], canaryStatuses=[{"name": "rb", "ready": True, "trafficPercent": 10}])
    assert evaluate(fresh, readiness).ready
    # stale-Ready case: an autoscaled Deployment's generation (5) runs ahead, the status predates our write
    stale = _isvc(2, 5, READY)
    verdict = evaluate(stale, readiness)
    assert not verdict.ready and "canary rb is not in status.canaryStatuses yet" in verdict.blockers
    # a traffic step the controller has not seen yet
    behind = _isvc(3, 5, [*READY, CANARY_READY], canaryStatuses=[{"name": "rb", "ready": True, "trafficPercent": 10}])
    step = Readiness.inference_service(canary="rb", canary_traffic=50, min_generation=3)
    assert any("not the 50% we applied" in b for b in evaluate(behind, step).blockers)
    # promotion: the entry must have left status.canaryStatuses
    gone = Readiness.inference_service(gone_canary="rb", min_generation=4)
    assert not evaluate(_isvc(4, 5, READY, canaryStatuses=[{"name": "rb", "ready": True}]), gone).ready
    assert evaluate(_isvc(4, 2, READY), gone).ready


def test_knative_freshness_reads_revisions_and_traffic():
    pred = {
        "latestCreatedRevision": "svc-predictor-00002",
        "latestReadyRevision": "svc-predictor-00002",
        "traffic": [
            {"revisionName": "svc-predictor-00002", "percent": 20, "latestRevision": True},
            {"revisionName": "svc-predictor-00001", "percent": 80, "latestRevision": False},
        ],
    }
    obj = _isvc(2, 3, READY, components={"predictor": pred})
    ok = Readiness.inference_service(knative_canary=True, knative_percent=20, knative_after="svc-predictor-00001")
    assert evaluate(obj, ok).ready
    stale = Readiness.inference_service(knative_canary=True, knative_percent=20, knative_after="svc-predictor-00002")
    assert not evaluate(obj, stale).ready
    assert not evaluate(obj, Readiness.inference_service(knative_percent=100)).ready


def test_llmisvc_keeps_the_generation_rule():
    obj = _isvc(2, 1, [{"type": t, "status": "True"} for t in ("Ready", "WorkloadsReady", "RouterReady")])
    verdict = evaluate(obj, Readiness.llm_inference_service())
    assert not verdict.ready and "generation 1" in verdict.blockers[0]


def test_canary_must_be_reported_ready():
    readiness = Readiness.inference_service(canary="svc-abc")
    assert not evaluate(_isvc(2, 2, READY), readiness).ready
    canary_cond = {"type": "CanaryPredictorReady", "status": "True", "reason": "AllCanariesReady"}
    not_listed = _isvc(2, 2, [*READY, canary_cond], canaryStatuses=[{"name": "other", "ready": True}])
    assert not evaluate(not_listed, readiness).ready
    listed = _isvc(2, 2, [*READY, canary_cond], canaryStatuses=[{"name": "svc-abc", "ready": True}])
    assert evaluate(listed, readiness).ready


def test_llmisvc_needs_every_condition():
    conds = [{"type": t, "status": "True"} for t in ("Ready", "WorkloadsReady", "RouterReady")]
    obj = _isvc(1, 1, conds)
    assert evaluate(obj, Readiness.llm_inference_service()).ready
    assert not evaluate(obj, Readiness.llm_inference_service(prefill=True)).ready
    failing_sub = _isvc(1, 1, [*conds, {"type": "SchedulerWorkloadReady", "status": "False", "reason": "x"}])
    assert not evaluate(failing_sub, Readiness.llm_inference_service()).ready


def test_likely_causes():
    assert "image pull" in likely_causes(["ImagePullBackOff", "Back-off pulling image"])[0]
    assert "OOM" in likely_causes(["OOMKilled"])[0]
    assert "max_model_len" in likely_causes(["ValueError: max_model_len (8192) is larger than KV cache"])[0]
    assert "common causes" in likely_causes(["Progressing"])[0]
