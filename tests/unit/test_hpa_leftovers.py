"""KServe's HPA of a predictor that went is removed by the steps (issue 25, leftover of item 8).

Under KServe's own HPA (Standard mode, cpu/memory metrics or fixed replicas: class ``hpa``) KServe
gives every predictor, canaries included, an HPA named like its Deployment, owned by the
InferenceService (``hpa_reconciler.go`` ``createHPA``), and when a predictor goes it deletes only its
Deployment and Service (``predictor.go`` ``reconcileCanaryDeployments``). The HPAs KServe made over a
rollout are computed here by the stand-in's own port of ``createAutoscaler``
(:func:`tests.standin_autoscaler.autoscalers`) for the objects each phase writes (``llm-rollout
render``'s phases, planned by the variants' own code); the product's choice of what to delete
(:func:`llm_rollout.kserve.autoscaler.stale_hpas`) must be exactly what KServe leaves behind.

The API calls (list by KServe's labels, delete) run on a real cluster only (the test API server
serves no ``autoscaling/v2``): ``tests/cluster/test_keda_canary.py`` has the real-cluster-mode test.
"""

from __future__ import annotations

import pytest

from llm_rollout.kserve import builders
from llm_rollout.kserve.autoscaler import predictor_children, stale_hpas
from llm_rollout.kserve.builders.keda import HPA_RULES, uses_kserve_hpa
from llm_rollout.kserve.variants import variant_for
from llm_rollout.render import PHASES, serving_objects
from llm_rollout.spec import parse_spec
from tests.standin_autoscaler import autoscalers

BASE = {"name": "chat", "namespace": "team", "platform": "kserve", "model": {"uri": "s3://models/a"}}


def _hpas_kserve_makes(spec, isvc) -> set[str]:
    runtime = builders.serving_runtime(spec)
    return {a.component for a in autoscalers(isvc, runtime) if a.autoscaler_class == "hpa" and a.obj is not None}


def _steps_role(spec) -> dict:
    return next(
        o for o in builders.rbac(spec) if o["kind"] == "Role" and not o["metadata"]["name"].endswith("-kfp-run")
    )


def _phases(spec) -> dict[str, dict]:
    return {phase: serving_objects(variant_for(spec), phase)[0] for phase in PHASES}


@pytest.mark.parametrize(
    "extra",
    [
        {"scaling": {"metric": "cpu", "target": 70}},
        {"scaling": {"metric": "memory", "target": 80}},
        {"scaling": None, "replicas": 2},  # no class: KServe's default, hpa
    ],
    ids=["cpu", "memory", "fixed-replicas"],
)
def test_promotion_removes_exactly_the_replaced_predictors_hpa(extra):
    spec = parse_spec({**BASE, **extra})
    assert uses_kserve_hpa(spec)
    phases = _phases(spec)
    made = set().union(*(_hpas_kserve_makes(spec, isvc) for isvc in phases.values()))
    promoted = phases["promoted"]
    serving = _hpas_kserve_makes(spec, promoted)
    listed = [{"metadata": {"name": n}} for n in sorted(made)]

    # What KServe made and keeps making minus what it keeps: the stable's unnamed predictor's HPA.
    assert stale_hpas("chat", promoted, listed) == sorted(made - serving) == ["chat-predictor"]
    # The promoted predictor's HPA (its Deployment's name, the canary's) is kept.
    assert serving == predictor_children("chat", promoted) and serving <= made


def test_rollback_removes_the_canarys_hpa_and_keeps_the_stables():
    spec = parse_spec({**BASE, "scaling": {"metric": "cpu", "target": 70}})
    phases = _phases(spec)
    canary_hpas = _hpas_kserve_makes(spec, phases["canary"])
    assert len(canary_hpas) == 2  # KServe gives the fixed-replica canary an HPA too
    listed = [{"metadata": {"name": n}} for n in sorted(canary_hpas)]
    # Rolled back: the InferenceService is the first phase's again.
    rolled_back = phases["first"]
    assert stale_hpas("chat", rolled_back, listed) == sorted(canary_hpas - {"chat-predictor"})
    # During the canary phase nothing is stale.
    assert stale_hpas("chat", phases["canary"], listed) == []


def test_keda_and_knative_and_llmd_have_no_kserve_hpa_and_no_hpa_grant():
    keda = parse_spec(BASE)  # the default: request-rate through KEDA, KServe's class external
    knative = parse_spec({**BASE, "deployment_mode": "Knative"})
    llmd = parse_spec({**BASE, "llmd": {"enabled": True}, "scaling": None, "replicas": 1})
    for spec in (keda, knative, llmd):
        assert not uses_kserve_hpa(spec)
        role = _steps_role(spec)
        assert not any("horizontalpodautoscalers" in r["resources"] for r in role["rules"])
    # Under KEDA, KServe makes no HPA at all (class external) in any phase.
    assert all(not _hpas_kserve_makes(keda, isvc) for isvc in _phases(keda).values())


def test_a_spec_with_kserves_hpa_gets_the_list_and_delete_grant():
    spec = parse_spec({**BASE, "scaling": {"metric": "cpu", "target": 70}})
    role = _steps_role(spec)
    assert HPA_RULES[0] in role["rules"]
