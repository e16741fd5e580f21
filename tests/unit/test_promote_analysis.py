"""Stepped promotion with live analysis on the local platform (issue 29): the step loop of
:meth:`llm_rollout.local.platform.LocalPlatform.promote` moves the weighted router's weight per
``canary.steps`` entry and judges each analysed step against a real Prometheus (the test
Prometheus scraping ``metrics_target`` expositions labelled as the local servers are,
``pod=<server name>``). No vLLM: the users are played on the expositions' counters."""

from __future__ import annotations

import pytest

from llm_rollout.errors import PermanentError
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import parse_spec
from llm_rollout.validation.analysis_steps import step_metrics
from tests.fixtures.prometheus import metrics_target, scraped_pair, scraped_pairs  # noqa: F401 - fixtures
from tests.unit.test_analysis import Users


def _spec(tmp_path, url: str | None, steps=None):
    analysis = {"interval_s": 3, "count": 3, "min_requests": 10, "resolution_s": 1, "deadline_s": 10}
    steps = steps or [{"weight": 50, "analysis": analysis}, 100]
    doc = {
        "platform": "local",
        "name": "chat",
        "local": {"state_dir": str(tmp_path / "state")},
        "canary": {"steps": steps},
        "validation": {"analysis": {"prometheus_url": url} if url else {}},
    }
    return parse_spec(doc)


def _record(stable, canary) -> DeploymentRecord:
    return DeploymentRecord(
        platform="local",
        kind="LocalServer",
        name="chat",
        namespace="local",
        member="chat-v2",
        revision="v2",
        model_uri="/models/v2",
        served_model_name="tiny",
        endpoint_url=f"http://{canary.address}",
        canary=True,
        stable=StableRef(member="chat-v1", endpoint_url=f"http://{stable.address}"),
        run_id="run-1",
    )


LOCAL_LABELS = ({"pod": "chat-v1"}, {"pod": "chat-v2"})
KSERVE_LABELS = (
    {"namespace": "team", "pod": "chat-predictor-5d4c3b2a1-abcde"},
    {"namespace": "team", "pod": "chat-v2-predictor-6e5d4c3b2-fghij"},
)
SCRAPED_PAIRS = [LOCAL_LABELS, KSERVE_LABELS]
"""Both label sets' Prometheus pairs are prepared when the first test asks for one (tests/fixtures/prometheus.py)."""


@pytest.fixture
def sides(scraped_pair):  # noqa: F811
    return scraped_pair(*LOCAL_LABELS)


def test_slower_candidate_is_rolled_back_with_the_analysis_reasons(tmp_path, sides):
    url, stable, canary = sides
    platform = LocalPlatform(_spec(tmp_path, url))
    with Users(stable, canary, slow=2.0), pytest.raises(PermanentError) as err:
        platform._analysed_steps(_record(stable, canary), "run-1")
    text = str(err.value)
    assert "stopped at step 1 (50% traffic)" in text and "'fail'" in text and "worse" in text and "rolled back" in text


def test_too_little_traffic_holds_until_the_deadline_and_never_promotes(tmp_path, sides):
    url, stable, canary = sides
    platform = LocalPlatform(_spec(tmp_path, url))
    with Users(stable, canary, per_tick=(2, 0)), pytest.raises(PermanentError) as err:
        platform._analysed_steps(_record(stable, canary), "run-1")
    text = str(err.value)
    assert "'inconclusive'" in text and "not promoted" in text and "fewer than 10 requests" in text


def test_without_prometheus_the_steps_run_as_before_and_say_so(tmp_path, metrics_target, capsys):  # noqa: F811
    stable, canary = metrics_target(), metrics_target()
    platform = LocalPlatform(_spec(tmp_path, None, steps=[50, 100]))
    assert platform._analysed_steps(_record(stable, canary), "run-1") == []
    assert "no live analysis ran: validation.analysis.prometheus_url is not set" in capsys.readouterr().err


@pytest.mark.timeout(120)  # bounded by the client's retry window (promql.UNREACHABLE_RETRY_S)
def test_prometheus_unreachable_fails_the_step_through_promote_naming_the_address_and_fix(
    tmp_path,
    metrics_target,  # noqa: F811
    monkeypatch,
):
    import socket

    from llm_rollout.local.state import LocalState, StableRecord, StateDir
    from llm_rollout.steps import promote_step
    from llm_rollout.validation.promql import PrometheusClient

    # The client's retry window (15 s by default) shortened: what ends the step is the same, the
    # connection errors still retried several times (test_analysis.py checks the window with 1 s too).
    monkeypatch.setitem(PrometheusClient.__init__.__kwdefaults__, "retry_s", 1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stable, canary = metrics_target(), metrics_target()
    spec = _spec(tmp_path, f"http://127.0.0.1:{port}")
    state = StateDir(tmp_path / "state")
    with state.lock():
        state.write_state(LocalState(service="chat", stable=StableRecord(member="chat-v1", model_uri="/models/v1")))
    metrics: dict[str, float] = {}
    report = tmp_path / "analysis.html"
    # What the promote-model component calls (LocalPlatform.promote behind it).
    with pytest.raises(PermanentError) as err:
        promote_step(spec, _record(stable, canary), verdict="pass", run_id="run-1", log_metric=metrics.__setitem__,
                     analysis_report_path=str(report))  # fmt: skip
    text = str(err.value)
    assert "stopped at step 1 (50% traffic)" in text and f"Prometheus at http://127.0.0.1:{port} is unreachable" in text
    assert "check validation.analysis.prometheus_url" in text and "rolled back" in text
    status = LocalPlatform(spec).status()
    assert status.stable is not None and status.stable.member == "chat-v1"  # the record still names the stable
    assert status.history[0].action == "rollback" and status.history[0].member == "chat-v2"
    assert metrics["analysis_step1_ok"] == 0.0  # the failed step's decision reaches the Metrics
    page = report.read_text()
    assert "FAIL" in page and "is unreachable" in page and "No interval was measured" in page


# KServe: the stepped promotion's gate with the live analysis behind it ----------------------------


def _kserve_spec(url: str | None, **extra):
    analysis = {"interval_s": 3, "count": 3, "min_requests": 10, "resolution_s": 1, "deadline_s": 10}
    doc = {
        "name": "chat",
        "namespace": "team",
        "canary": {"steps": [{"weight": 50, "analysis": analysis}, 100]},
        "validation": {"analysis": {"prometheus_url": url} if url else {}},
        **extra,
    }
    return parse_spec(doc)


def _kserve_record() -> DeploymentRecord:
    return DeploymentRecord(
        platform="kserve",
        kind="InferenceService",
        name="chat",
        namespace="team",
        member="v2",
        revision="v2",
        model_uri="pvc://models/v2",
        served_model_name="tiny",
        endpoint_url="http://chat-v2-predictor.team.svc.cluster.local",
        canary=True,
        stable=StableRef(member="chat-predictor"),
        run_id="run-1",
    )


def test_kserve_workloads_follow_predictor_service_name():
    from llm_rollout.kserve.promote import live_workloads

    assert live_workloads(_kserve_spec("http://p:9090"), _kserve_record()) == (
        "kserve-standard",
        "chat-v2-predictor",
        "chat-predictor",
    )


def test_kserve_stable_workload_is_the_predictor_deploy_recorded_named_or_not():
    """A first rollout's predictor stays unnamed (``<isvc>-predictor``) though its member is ``ra`` (its
    label); once a canary was promoted into it, it is named (``<isvc>-<name>-predictor``)."""
    from llm_rollout.kserve.promote import live_workloads

    spec = _kserve_spec("http://p:9090")
    for service in ("chat-predictor", "chat-ra-predictor"):
        stable = StableRef(member="ra", endpoint_url=f"http://{service}.team.svc.cluster.local")
        record = _kserve_record().model_copy(update={"stable": stable})
        assert live_workloads(spec, record) == ("kserve-standard", "chat-v2-predictor", service)
    # Without a recorded address, or with one that is not this service's predictor in its namespace
    # (another namespace, another service, a gateway's host): from the member.
    for url in ("", "http://chat-predictor.other.svc.cluster.local", "http://rag-predictor.team.svc.cluster.local",
                "http://chat.example.com"):  # fmt: skip
        record = _kserve_record().model_copy(update={"stable": StableRef(member="ra", endpoint_url=url)})
        assert live_workloads(spec, record)[2] == "chat-ra-predictor", url


def test_service_of_reads_back_what_service_address_writes():
    from llm_rollout.kserve.addresses import service_address, service_of

    for domain in ("cluster.local", "corp.example"):
        assert service_of(service_address("chat-predictor", "team", domain), "team") == "chat-predictor"
        assert service_of(service_address("chat-predictor", "team", domain) + "/v1/models", "team") == "chat-predictor"
    for url in ("http://chat-predictor.other.svc.cluster.local", "http://chat-predictor", "http://10.0.0.1:8080", ""):
        assert service_of(url, "team") == "", url


@pytest.fixture
def kserve_sides(scraped_pair):  # noqa: F811
    return scraped_pair(*KSERVE_LABELS)


def test_kserve_gate_runs_the_analysis_after_the_gate_and_fails_a_slower_candidate(kserve_sides):
    from llm_rollout.kserve.promote import with_live_analysis
    from llm_rollout.validation.analysis_steps import recorded_steps

    url, stable, canary = kserve_sides
    calls: list[int] = []

    def gate(percent: int) -> tuple[str, str]:
        calls.append(percent)
        return "pass", "every check passed"

    # No token_secret: the client is never asked.
    analysed = with_live_analysis(_kserve_spec(url), None, _kserve_record(), gate)  # type: ignore[arg-type]
    # promote-model's block (steps.py) and the promotion's own (promote.py) each get the step.
    with recorded_steps() as outer, Users(stable, canary, slow=2.0), recorded_steps() as inner:
        verdict, why = analysed(50)
    assert calls == [50] and verdict == "fail" and "mean_e2el_ms: worse" in why
    assert len(inner) == 1 and outer == inner
    assert step_metrics(inner[0])["analysis_step1_ok"] == 0.0


def test_kserve_gate_failing_first_skips_the_analysis_and_without_prometheus_is_unchanged(capsys):
    from llm_rollout.kserve.promote import with_live_analysis

    def gate(percent: int) -> tuple[str, str]:
        return "fail", "p95_ttft_ms <= 1 failed"

    from llm_rollout.validation.analysis_steps import recorded_steps

    analysed = with_live_analysis(_kserve_spec("http://127.0.0.1:9"), None, _kserve_record(), gate)  # type: ignore[arg-type]
    with recorded_steps() as seen:
        assert analysed(50) == ("fail", "p95_ttft_ms <= 1 failed")
    assert seen == []
    spec = parse_spec({"name": "chat", "canary": {"steps": [50, 100]}})
    assert with_live_analysis(spec, None, _kserve_record(), gate) is gate  # type: ignore[arg-type]
    assert "no live analysis ran" in capsys.readouterr().err


def test_equal_candidate_passes_each_analysed_step_and_status_shows_it(tmp_path, sides, capsys):
    from llm_rollout.platform import StableRecord, Status, format_status
    from llm_rollout.validation.analysis_steps import live_record

    url, stable, canary = sides
    platform = LocalPlatform(_spec(tmp_path, url))
    with Users(stable, canary):
        analysed = platform._analysed_steps(_record(stable, canary), "run-1")
    assert [a.weight for a in analysed] == [50]
    assert analysed[0].answer.decision == "pass", analysed[0].answer.reasons
    log = capsys.readouterr().err
    assert "splits the users by canary.steps" in log and "interval 3: pass" in log
    extra = live_record(analysed)
    metrics = extra["analysis_metrics"]
    assert metrics["analysis_step1_ok"] == 1.0 and metrics["analysis_step1_candidate_requests"] >= 10
    record = StableRecord(member="chat-v2", model_uri="/models/v2", run_id="run-1", **extra)
    status = Status(platform="local", kind="LocalServer", name="chat", namespace="local", stable=record)
    text = format_status(status)
    assert "live analysis of the canary steps:" in text
    assert "step 1 (50 %): live analysis not worse" in text
    assert "interval 3: pass: candidate" in text and "mean_e2el_ms" in text and "stable" in text
