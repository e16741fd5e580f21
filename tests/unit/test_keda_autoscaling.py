"""Standard mode + KEDA: KServe's class is ``external`` and the stable's ScaledObject is ours (issue 25 items 2, 8).

``builders/keda.py`` says why; these check the objects against upstream's rules
(``keda_reconciler.go`` ``createKedaScaledObject`` / ``getKedaMetrics``) in every rendered phase.
"""

from __future__ import annotations

from llm_rollout.kserve.builders.keda import keda_triggers, scaled_object, service_monitor
from llm_rollout.render import phase_objects
from llm_rollout.spec import parse_spec
from tests.standin_autoscaler import autoscalers, component_meta, keda_scaled_object


def _spec(**extra):
    return parse_spec(
        {"platform": "kserve", "name": "chat", "namespace": "team", "canary": {"traffic_percent": 10}, **extra}
    )


def test_every_phase_says_external_and_no_kserve_component_gets_a_scaled_object():
    spec = _spec()
    for phase in ("first", "canary", "promoted"):
        isvc = phase_objects(spec, phase)["kserve-inferenceservice.yaml"][0]
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external", phase
        # What KServe makes of it (the stand-in's port of createAutoscaler): no autoscaler at all.
        assert {a.autoscaler_class for a in autoscalers(isvc, None)} == {"external"}, phase


def test_the_scaled_object_is_what_kserve_would_build_for_the_stable_predictor():
    spec = _spec()
    for phase, name in (("first", "chat-predictor"), ("canary", "chat-predictor")):
        objs = phase_objects(spec, phase)
        isvc = objs["kserve-inferenceservice.yaml"][0]
        ours = objs["kserve-autoscaling.yaml"][0]
        assert ours["metadata"]["name"] == ours["spec"]["scaleTargetRef"]["name"] == name, phase
        # keda_reconciler.go createKedaScaledObject, as the stand-in ports it, from the same predictor
        pred = isvc["spec"]["predictor"]
        upstream = keda_scaled_object(component_meta(isvc, pred, None), pred)
        assert ours["spec"] == upstream["spec"], phase
    promoted = phase_objects(spec, "promoted")
    so = promoted["kserve-autoscaling.yaml"][0]
    pred = promoted["kserve-inferenceservice.yaml"][0]["spec"]["predictor"]
    assert so["spec"]["scaleTargetRef"]["name"] == f"chat-{pred['name']}-predictor"
    assert f'service="chat-{pred["name"]}-predictor"' in so["spec"]["triggers"][0]["metadata"]["query"]


def test_the_labels_of_the_autoscaling_objects_never_change_between_phases():
    spec = _spec()
    seen = {
        phase: [
            (o["metadata"]["labels"], o["metadata"].get("annotations"))
            for o in phase_objects(spec, phase)["kserve-autoscaling.yaml"]
        ]
        for phase in ("first", "canary", "promoted")
    }
    assert seen["first"] == seen["canary"] == seen["promoted"]


def test_the_service_monitor_selects_every_predictor_service_of_the_service_on_vllms_port():
    mon = service_monitor(_spec())
    assert mon["spec"]["selector"]["matchLabels"] == {"llm-rollout.io/service": "chat", "component": "predictor"}
    assert mon["spec"]["endpoints"][0]["port"] == "http1"  # the runtime container's port name


def test_nothing_for_hpa_metrics_knative_or_fixed_replicas():
    for extra in (
        {"scaling": {"metric": "cpu"}},
        {"deployment_mode": "Knative"},
        {"replicas": 2},
    ):
        spec = _spec(**extra)
        assert phase_objects(spec, "first")["kserve-autoscaling.yaml"] == [], extra
        pred = phase_objects(spec, "first")["kserve-inferenceservice.yaml"][0]["spec"]["predictor"]
        assert scaled_object(spec, pred) is None and keda_triggers(pred) == []
