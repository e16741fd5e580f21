"""The live analysis of a canary step (validation/analysis.py): default selectors, Argo's limits, one
measurement's outcome, and whole analyses against a real Prometheus scraping vLLM-named series.

The Prometheus here is Debian's server (tests/fixtures/prometheus.py, ``make test-prometheus``);
its targets are small exposition servers whose counters the test advances, so the analysis' queries,
differencing and statistics are checked on a real server's answers. The serving tier's scenarios
scrape real vLLM servers.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.validation.analysis import (
    AnalysisConfig,
    LiveAnalysis,
    Measurement,
    SideValues,
    assess,
    config_from_spec,
    default_selector,
    describe,
    judge_measurement,
    parse_analysis_checks,
    selectors_for,
)
from llm_rollout.validation.analysis_steps import StepAnalysis, analyse_step, not_run, step_metrics
from llm_rollout.validation.stats import paired_non_inferiority
from tests.fixtures.prometheus import (  # noqa: F401 - pytest fixtures
    MetricsTarget,
    metrics_target,
    scraped_pair,
    scraped_pairs,
)


def _pod_regex(selector: str) -> tuple[str, str]:
    """(label, value or regex) of the pod matcher; PromQL regexes are anchored like re.fullmatch."""
    m = re.search(r'(\w+)(=~|=)"([^"]+)"$', selector)
    assert m, selector
    return m.group(1), m.group(3).replace("\\\\", "\\")  # the PromQL string's escape undone


# Selectors ------------------------------------------------------------------------------------


def test_kserve_standard_selector_takes_the_predictor_deployments_pods_only():
    # constants.PredictorServiceName: <isvc>-predictor (stable), <isvc>-<name>-predictor (a named canary)
    stable = default_selector("kserve-standard", "chat-predictor", "team")
    canary = default_selector("kserve-standard", "chat-v2-predictor", "team")
    assert stable.startswith('namespace="team",')
    _, s = _pod_regex(stable)
    _, c = _pod_regex(canary)
    assert re.fullmatch(s, "chat-predictor-7d9f8c6b5-x2k4q")
    assert not re.fullmatch(s, "chat-v2-predictor-7d9f8c6b5-x2k4q")
    assert not re.fullmatch(s, "chat-predictor-canary-7d9f8c6b5-x2k4q")
    assert re.fullmatch(c, "chat-v2-predictor-5c6b7d8e9-abcde")
    assert not re.fullmatch(c, "chat-predictor-5c6b7d8e9-abcde")
    _, d = _pod_regex(default_selector("kserve-standard", "a.b-predictor"))
    assert re.fullmatch(d, "a.b-predictor-5c6b7d8e9-abcde") and not re.fullmatch(d, "axb-predictor-5c6b7d8e9-abcde")


def test_knative_selector_takes_one_revisions_pods():
    _, r = _pod_regex(default_selector("knative", "chat-predictor-00002", "team"))
    assert re.fullmatch(r, "chat-predictor-00002-deployment-6f7c9d8b4-q9w8e")
    assert not re.fullmatch(r, "chat-predictor-00001-deployment-6f7c9d8b4-q9w8e")


def test_llmd_selector_takes_the_decode_pods_not_prefill():
    # workload_single_node.go mainDeploymentName = kmeta.ChildName(name, "-kserve"); prefill "-kserve-prefill"
    _, r = _pod_regex(default_selector("llm-d", "chat-v2", "team"))
    assert re.fullmatch(r, "chat-v2-kserve-6d5f4c7b8-zx9yw")
    assert not re.fullmatch(r, "chat-v2-kserve-prefill-6d5f4c7b8-zx9yw")
    assert not re.fullmatch(r, "chat-kserve-6d5f4c7b8-zx9yw")
    long = "a" * 60
    _, r = _pod_regex(default_selector("llm-d", long))
    assert len(r.split("-[a-z0-9]+")[0]) <= 63  # hashed by ChildName like KServe's Deployment name


def test_selector_label_names_are_overridable():
    sel = default_selector(
        "local", "srv-1", "ns", pod_label="kubernetes_pod_name", namespace_label="kubernetes_namespace"
    )
    assert sel == 'kubernetes_namespace="ns",kubernetes_pod_name="srv-1"'
    with pytest.raises(ValueError, match="unknown flavour"):
        default_selector("openshift", "x")  # type: ignore[arg-type]


# Checks and limits ----------------------------------------------------------------------------


def test_checks_parse_like_slo_checks_and_name_the_field():
    checks = parse_analysis_checks(["p95_ttft_ms <= 500", "error_rate <= 0.01"], "canary.steps[0].analysis.checks")
    assert [c.metric for c in checks] == ["p95_ttft_ms", "error_rate"]
    with pytest.raises(SpecError, match=r"canary\.steps\[0\]\.analysis\.checks\[0\]"):
        parse_analysis_checks(["goodput_req_s >= 1"], "canary.steps[0].analysis.checks")
    with pytest.raises(SpecError, match=r"checks\[1\]"):
        parse_analysis_checks(["error_rate <= 0", "p95_ttft <= 5"], "checks")


@pytest.mark.parametrize(
    ("failed", "inconclusive", "fl", "il", "want"),
    [
        # argo-rollouts analysis/analysis.go assessMetricFailureInconclusiveOrError: failed > failureLimit
        # fails, equal does not; inconclusive > inconclusiveLimit is checked second and wins when both hold.
        (0, 0, 0, 0, None),
        (1, 0, 0, 0, "fail"),
        (1, 0, 1, 0, None),
        (2, 0, 1, 0, "fail"),
        (0, 1, 0, 0, "inconclusive"),
        (0, 1, 0, 1, None),
        (1, 1, 0, 0, "inconclusive"),
    ],
)
def test_argo_limits(failed, inconclusive, fl, il, want):
    config = AnalysisConfig("http://p", failure_limit=fl, inconclusive_limit=il)
    assert assess(failed, inconclusive, config)[0] == want


def _side(requests, e2e=100.0, errors=0.0):
    return SideValues(requests=requests, errors=errors, values={"mean_e2el_ms": e2e, "p95_ttft_ms": e2e / 2})


def test_too_little_traffic_is_inconclusive_never_pass():
    config = AnalysisConfig("http://p", min_requests=20)
    decision, reasons = judge_measurement(1, _side(19), _side(500), {}, config)
    assert decision == "inconclusive"
    assert "fewer than 20 requests" in reasons[0] and "candidate 19" in reasons[0]
    decision, _ = judge_measurement(1, _side(None), _side(500), {}, config)
    assert decision == "inconclusive"


def test_failed_check_and_worse_ratio_fail_the_measurement():
    checks = tuple(parse_analysis_checks(["p95_ttft_ms <= 40", "error_rate <= 0.01"], "c"))
    config = AnalysisConfig("http://p", min_requests=5, checks=checks)
    assert judge_measurement(1, _side(50), _side(50), {}, config)[0] == "fail"  # p95 50 > 40
    assert judge_measurement(1, _side(50, e2e=60), _side(50), {}, config)[0] == "pass"
    assert judge_measurement(1, _side(50, e2e=60, errors=5), _side(50), {}, config)[0] == "fail"
    worse = paired_non_inferiority(
        [2.0] * 8, [1.0] * 8, metric="mean_e2el_ms", better="lower", margin=0.1, confidence=0.95
    )
    config = AnalysisConfig("http://p", min_requests=5)
    decision, reasons = judge_measurement(2, _side(50), _side(50), {"mean_e2el_ms": worse}, config)
    assert decision == "fail" and "mean_e2el_ms: worse" in reasons[0]


def test_no_prometheus_says_no_live_analysis_ran():
    answer = not_run("validation.analysis.prometheus_url is not set")
    assert answer.decision == "pass" and answer.word == "not run"
    assert "no live analysis ran" in answer.evidence[0].line


# Against a real Prometheus -----------------------------------------------------------------------


class Users:
    """Plays users on both sides: each side finishes ``per_tick`` requests per 0.1 s, each request's
    latency jittered on its own.

    Users keep their rate whatever this thread's scheduling: a tick that comes late (a loaded
    machine, the GIL) finishes the requests of every tick it missed. With one latency per tick and
    missed ticks skipped, a starved 1 s sub-window could hold one or two ticks per side, and equal
    sides could show a sub-window ratio up to 1.22 (1.1 / 0.9), beyond a 10 % margin.
    """

    TICK_S = 0.1

    def __init__(self, stable: MetricsTarget, canary: MetricsTarget, *, per_tick=(2, 2), slow=1.0, seed=1):
        self.sides = ((stable, per_tick[0], 1.0), (canary, per_tick[1], slow))
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        due = time.monotonic() + self.TICK_S
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            ticks = 1 + int((time.monotonic() - due) // self.TICK_S)
            due += ticks * self.TICK_S
            for target, n, factor in self.sides:
                for _ in range(n * ticks):
                    target.serve_requests(1, e2e_s=0.2 * factor * self.rng.uniform(0.9, 1.1))

    def __enter__(self) -> Users:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def two_sides(scraped_pair) -> Iterator[tuple[str, MetricsTarget, MetricsTarget]]:  # noqa: F811
    """A Prometheus scraping a stable and a canary pod (each scraped twice), this test's own."""
    yield scraped_pair(
        {"namespace": "team", "pod": "chat-predictor-5d4c3b2a1-abcde"},
        {"namespace": "team", "pod": "chat-v2-predictor-6e5d4c3b2-fghij"},
    )


def _analysis(url: str, count: int = 3, **kw) -> LiveAnalysis:
    config = AnalysisConfig(
        url, interval_s=3.0, count=count, min_requests=10, resolution_s=1.0, margin=0.1, confidence=0.95, **kw
    )
    return LiveAnalysis(
        config,
        candidate=default_selector("kserve-standard", "chat-v2-predictor", "team"),
        stable=default_selector("kserve-standard", "chat-predictor", "team"),
        step=1,
        weight=50,
    )


def test_equal_candidate_passes_with_every_ratio_not_worse(two_sides):
    url, stable, canary = two_sides
    with Users(stable, canary):
        result = _analysis(url).run()
    lines = describe(result)
    assert result.answer.decision == "pass", "\n".join([*lines, *result.answer.reasons])
    assert len(result.measurements) == 3
    m = result.measurements[-1]
    assert m.candidate.requests and m.candidate.requests >= 10 and m.stable.requests >= 10
    assert 0.8 < m.ratios["mean_e2el_ms"] < 1.25
    ev = {e.name: e for e in result.answer.evidence}
    assert ev["mean_e2el_ms_ratio"].high <= 1.1 and ev["candidate_requests"].value > 0
    assert "interval 3: pass" in lines[-1] and "requests" in lines[-1]


def test_slower_candidate_fails_before_the_last_interval(two_sides):
    """Four intervals of three 1 s sub-windows: at each look's confidence (1 - 0.05 / 4) the sign test
    calls a ratio worse from 7 sub-windows all beyond the margin, so the third look decides with two
    to spare. (With three intervals the second look needs all 6 of its sub-windows: one lost to a
    late scrape on a loaded machine moved the decision to the last interval and failed this test.)"""
    url, stable, canary = two_sides
    with Users(stable, canary, slow=2.0):
        result = _analysis(url, count=4).run()
    assert result.answer.decision == "fail", "\n".join(describe(result))
    assert len(result.measurements) < 4  # Argo: failed (1) > failure_limit (0) stops the run at once
    assert any("mean_e2el_ms: worse" in r for r in result.answer.reasons)
    assert "failure_limit (0)" in result.answer.reasons[0]


def test_too_little_traffic_is_inconclusive(two_sides):
    url, stable, canary = two_sides
    with Users(stable, canary, per_tick=(2, 0)):
        canary.serve_requests(3, e2e_s=0.2)
        result = _analysis(url).run()
    assert result.answer.decision == "inconclusive"
    assert "fewer than 10 requests" in " ".join(result.answer.reasons)
    assert result.measurements[0].stable.requests >= 10


@pytest.mark.timeout(60)  # retry_s bounds the retries; a hang fails here instead of on a wall-clock figure
def test_prometheus_unreachable_fails_naming_the_address():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from llm_rollout.validation.analysis import PrometheusClient

    analysis = _analysis(f"http://127.0.0.1:{port}")
    analysis.config = AnalysisConfig(analysis.config.prometheus_url, interval_s=0.1, count=1)
    result = analysis.run(PrometheusClient(analysis.config.prometheus_url, retry_s=1.0))
    assert result.answer.decision == "fail"
    reason = result.answer.reasons[0]
    assert f"127.0.0.1:{port}" in reason and "unreachable" in reason and "prometheus_url" in reason


# The spec --------------------------------------------------------------------------------------


def _spec(steps, url="http://prometheus.monitoring:9090"):
    from llm_rollout.spec import parse_spec

    return parse_spec({"canary": {"steps": steps}, "validation": {"analysis": {"prometheus_url": url}}})


def test_steps_take_weights_and_steps_with_a_hold_and_an_analysis():
    spec = _spec([{"weight": 10, "hold_s": 5, "analysis": {"interval_s": 4, "count": 2, "resolution_s": 2}}, 50, 100])
    assert spec.canary.weights == [10, 50, 100]
    step = spec.canary.step_at(10)
    assert step.hold_s == 5 and step.analysis.count == 2
    assert spec.canary.step_at(50).analysis is None
    config = config_from_spec(step.analysis, spec.validation.analysis.prometheus_url, field="canary.steps[0].analysis")
    assert config.interval_s == 4 and config.failure_limit == 0 and config.inconclusive_limit == 0
    # A bare list of weights is what it was.
    assert _spec([10, 100], url=None).canary.steps == [10, 100]


@pytest.mark.parametrize(
    ("steps", "url", "field", "fix"),
    [
        ([{"weight": 10, "analysis": {}}, 100], None, "validation.analysis.prometheus_url", "Prometheus"),
        ([10, {"weight": 100, "analysis": {}}], "http://p", "canary.steps[1].analysis", "before 100"),
        (
            [{"weight": 10, "analysis": {"checks": ["goodput_req_s >= 1"]}}, 100],
            "http://p",
            "canary.steps[0].analysis.checks[0]",
            "error_rate",
        ),
        (
            [{"weight": 10, "analysis": {"interval_s": 5, "resolution_s": 10}}, 100],
            "http://p",
            "canary.steps[0].analysis.resolution_s",
            "at most interval_s",
        ),
        (
            [{"weight": 10, "analysis": {"interval_s": 60, "count": 5, "deadline_s": 100}}, 100],
            "http://p",
            "canary.steps[0].analysis.deadline_s",
            "raise deadline_s",
        ),
        (
            [{"weight": 10, "analysis": {"intervall_s": 5}}, 100],
            "http://p",
            "canary.steps[0].analysis.intervall_s",
            "spelling",
        ),
        (
            [{"weight": 10, "analysis": {"queries": {"requests": "sum(x)"}}}, 100],
            "http://p",
            "canary.steps[0].analysis.queries",
            "{selector}",
        ),
        ([{"weight": 10}], "localhost:9090", "validation.analysis.prometheus_url", ""),
    ],
)
def test_bad_analysis_specs_name_the_field_and_the_fix(steps, url, field, fix):
    with pytest.raises(SpecError) as err:
        _spec(steps, url)
    assert err.value.field == field, str(err.value)
    assert fix in str(err.value)


def test_team_selectors_and_query_overrides():
    spec = _spec(
        [
            {
                "weight": 10,
                "analysis": {
                    "candidate_selector": 'ns="{namespace}",svc="{name}"',
                    "queries": {"requests": "sum(my_requests_total{{{selector}}})"},
                },
            },
            100,
        ]
    )
    a = spec.canary.step_at(10).analysis
    cand, stab = selectors_for(a, "knative", namespace="team", candidate="chat-00002", stable="chat-00001")
    assert cand == 'ns="team",svc="chat-00002"'
    assert stab == 'namespace="team",pod=~"chat-00001-deployment-[a-z0-9]+-[a-z0-9]+"'
    config = config_from_spec(a, "http://p", field="f")
    assert config.queries.render("requests", cand) == 'sum(my_requests_total{ns="team",svc="chat-00002"})'


def test_inconclusive_step_holds_until_its_deadline_and_is_not_promoted(two_sides):
    url, stable, canary = two_sides

    def make() -> LiveAnalysis:
        analysis = _analysis(url)
        analysis.config = AnalysisConfig(url, interval_s=2.0, count=1, min_requests=10, resolution_s=1.0)
        return analysis

    with Users(stable, canary, per_tick=(2, 0)):
        step = analyse_step(make, hold_s=0.5, deadline_s=9.0)
    assert step.answer.decision == "inconclusive"
    # Repeated while a whole analysis (2 s) fitted before the deadline, and no more: the deadline's effect
    # read from the attempts, not from a wall clock.
    assert 2 <= len(step.attempts) <= 4
    assert "not promoted" in step.answer.reasons[0] and "deadline (9 s)" in step.answer.reasons[0]
    assert step.to_dict()["attempts"][0]["measurements"][0]["requests"]["candidate"] in (0.0, None)


def test_step_metrics_carry_the_decision_requests_and_ratios_never_an_unmeasured_number():
    comp = paired_non_inferiority(
        [1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97],
        [1.0] * 8,
        metric="mean_e2el_ms",
        better="lower",
        margin=0.1,
        confidence=0.95,
        unit="sub-windows",
    )
    unmeasured = paired_non_inferiority([], [], metric="mean_itl_ms", better="lower", margin=0.1, confidence=0.95)
    analysis = _analysis("http://p")
    m = Measurement(
        1,
        0.0,
        3.0,
        _side(40),
        _side(42),
        {"mean_e2el_ms": 1.0},
        {"mean_e2el_ms": comp, "mean_itl_ms": unmeasured},
        "pass",
    )
    result = analysis._result([m], "pass", [])
    step = StepAnalysis(1, 50, 3.0, [result], result.answer)
    metrics = step_metrics(step)
    assert metrics["analysis_step1_ok"] == 1.0 and metrics["analysis_step1_weight_percent"] == 50
    assert metrics["analysis_step1_candidate_requests"] == 40 and metrics["analysis_step1_stable_requests"] == 42
    assert metrics["analysis_step1_mean_e2el_ms_ratio_high"] <= 1.1
    assert not any("mean_itl_ms" in k for k in metrics)  # unmeasured: no number
    assert any("mean_itl_ms" in e.name and e.value is None and e.unmeasured for e in result.answer.evidence)
