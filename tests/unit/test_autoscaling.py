"""``scaling.target: auto``: the target from measured capacity, the evidence, the drop gate, the parse-time refusals."""

from __future__ import annotations

import pytest

from llm_rollout.autoscaling import autoscaling_evidence, check_capacity_drop, describe, with_target
from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve import builders as b
from llm_rollout.platform import StableRecord, Status, format_status
from llm_rollout.spec import parse_spec
from tests.schema_check import schema_errors

RATE = {"validation": {"slo": {"capacity_max_request_rate": 20}}}
CONC = {"validation": {"slo": {"capacity_max_concurrency": 32}}}
MEMBER = b.Member(name="v1", model_uri="s3://models/v1", revision="v1")


def _spec(scaling, extra=RATE, **top):
    return parse_spec({"platform": "kserve", "scaling": scaling, **extra, **top})


def test_request_rate_target_is_the_rate_capacity_times_the_safety_factor_with_its_interval():
    spec = _spec({"target": "auto"})
    metrics = {
        "capacity_max_request_rate_req_s": 7.5,
        "capacity_max_request_rate_low_req_s": 7.0,
        "capacity_max_request_rate_high_req_s": 8.0,
        "sizing_capacity_per_replica_req_s": 6.0,
        "capacity_max_concurrency": 30.0,
    }
    ev = autoscaling_evidence(spec.scaling, metrics, "run-1")
    assert ev == {
        "metric": "request-rate",
        "target": 6,  # floor(7.5 x 0.8)
        "capacity": 7.5,
        "low": 7.0,
        "high": 8.0,
        "safety_factor": 0.8,
        "source": "capacity_max_request_rate_req_s",
        "run_id": "run-1",
    }


def test_request_rate_falls_back_to_the_sizing_capacity_and_concurrency_uses_the_concurrency_search():
    rate = _spec({"target": "auto", "safety_factor": 0.5}, CONC)
    ev = autoscaling_evidence(rate.scaling, {"sizing_capacity_per_replica_req_s": 9.0}, "r")
    assert (ev["target"], ev["source"], ev["low"]) == (4, "sizing_capacity_per_replica_req_s", None)
    conc = _spec({"target": "auto", "metric": "concurrency"}, CONC)
    metrics = {
        "capacity_max_concurrency": 24.0,
        "capacity_max_concurrency_low": 20.0,
        "capacity_max_request_rate_req_s": 3,
    }
    ev = autoscaling_evidence(conc.scaling, metrics, "r")
    assert (ev["target"], ev["capacity"], ev["low"], ev["high"]) == (19, 24.0, 20.0, None)
    tiny = autoscaling_evidence(rate.scaling, {"sizing_capacity_per_replica_req_s": 0.4}, "r")
    assert tiny["target"] == 1, "a target is at least 1 (KServe's scaleTarget is a positive integer)"


def test_a_number_target_has_no_evidence_and_auto_without_a_measured_capacity_fails_naming_the_fix():
    assert autoscaling_evidence(_spec({"target": 7}).scaling, {"capacity_max_request_rate_req_s": 5}, "r") is None
    with pytest.raises(PermanentError, match="measured no concurrency capacity") as err:
        autoscaling_evidence(_spec({"target": "auto", "metric": "concurrency"}, CONC).scaling, {}, "r")
    assert "capacity_max_concurrency" in str(err.value) and "Fix:" in str(err.value)


def test_auto_renders_the_static_default_until_promotion_and_the_resolved_target_after():
    spec = _spec({"target": "auto"})
    isvc = b.inference_service(spec, MEMBER)
    target = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]
    assert target == {"type": "Value", "value": "10"}
    resolved = spec.model_copy(update={"scaling": with_target(spec.scaling, 6)})
    isvc = b.inference_service(resolved, MEMBER)
    assert isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]["value"] == "6"
    assert schema_errors(isvc) == []
    knative = _spec({"target": "auto", "metric": "concurrency"}, CONC, deployment_mode="Knative")
    resolved = knative.model_copy(update={"scaling": with_target(knative.scaling, 19)})
    pred = b.inference_service(resolved, MEMBER)["spec"]["predictor"]
    assert (pred["scaleMetric"], pred["scaleTarget"]) == ("concurrency", 19)
    promoted = b.promoted_predictor(resolved, b.inference_service(knative, MEMBER)["spec"]["predictor"])
    assert promoted["scaleTarget"] == 19


def test_capacity_drop_beyond_the_tolerance_is_refused_unless_accepted():
    spec = _spec({"target": "auto", "max_capacity_drop": 0.2})
    old = {"metric": "request-rate", "capacity": 10.0, "run_id": "old-run"}
    check_capacity_drop(spec.scaling, {"metric": "request-rate", "capacity": 8.0}, old)  # exactly 20%: allowed
    check_capacity_drop(spec.scaling, {"metric": "request-rate", "capacity": 12.0}, old)
    check_capacity_drop(spec.scaling, {"metric": "request-rate", "capacity": 1.0}, None)  # first rollout
    check_capacity_drop(spec.scaling, {"metric": "concurrency", "capacity": 1.0}, old)  # other metric
    with pytest.raises(PermanentError) as err:
        check_capacity_drop(spec.scaling, {"metric": "request-rate", "capacity": 7.0}, old)
    msg = str(err.value)
    assert "from 10 (stable, run old-run) to 7" in msg and "30%" in msg and "max_capacity_drop 20%" in msg
    assert "scaling.accept_capacity_drop: true" in msg
    accepted = _spec({"target": "auto", "accept_capacity_drop": True})
    check_capacity_drop(accepted.scaling, {"metric": "request-rate", "capacity": 1.0}, old)


@pytest.mark.parametrize(
    ("doc", "field", "says"),
    [
        ({"scaling": {"target": "auto", "metric": "cpu"}, **RATE}, "scaling.target", "cpu"),
        ({"scaling": {"target": "auto", "metric": "memory"}, **RATE}, "scaling.target", "memory"),
        ({"scaling": {"target": "auto"}}, "scaling.target", "capacity_max_request_rate"),
    ],
)
def test_auto_is_refused_at_parse_time_for_cpu_memory_and_without_a_capacity_search(doc, field, says):
    with pytest.raises(SpecError) as err:
        parse_spec({"platform": "kserve", **doc})
    assert err.value.field == field
    assert says in str(err.value)


def test_auto_on_llmd_roles_is_refused_with_the_fix_and_bad_numbers_are_refused():
    with pytest.raises(SpecError) as err:
        parse_spec(
            {
                "platform": "kserve",
                "llmd": {"enabled": True, "decode": {"scaling": {"target": "auto"}}},
                **CONC,
            }
        )
    assert err.value.field == "llmd.decode.scaling.target"
    for bad in ({"target": 0}, {"target": "fast"}, {"safety_factor": 1.5}, {"max_capacity_drop": -0.1}):
        with pytest.raises(SpecError):
            _spec(bad)


def test_status_shows_the_autoscaling_evidence():
    ev = {
        "metric": "request-rate",
        "target": 6,
        "capacity": 7.5,
        "low": 7.0,
        "high": 8.0,
        "safety_factor": 0.8,
        "run_id": "run-1",
    }
    line = "autoscaling: request-rate target 6 per replica = capacity 7.5 [7, 8] x safety 0.8 (run run-1)"
    assert describe(ev) == line
    status = Status(
        platform="kserve",
        kind="InferenceService",
        name="svc",
        namespace="ns",
        stable=StableRecord(member="v1", autoscaling=ev),
    )
    assert line in format_status(status).splitlines()
