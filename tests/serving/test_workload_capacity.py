"""Workloads and capacity on a real vLLM server: the shipped sample drives validation; the capacity search repeats.

The capacity test serves the deep tiny model (slow enough per token that a request's service time
dwarfs the client's overheads) with ``--max-num-seqs 2``: vLLM's scheduler runs at most two
requests at once, so from three concurrent requests on most requests wait for another to finish
before their first token. The SLO's TTFT threshold is a third of one request's end-to-end
latency measured on the same server just before (calibration), so the boundary sits where the
scheduler puts it, whatever this shared machine's speed: at two requests the first token comes
after one prefill (a small fraction of the threshold), at three the waiting request's comes after
a whole request (about three times the threshold). The test asserts only relations between
the two searches' intervals (and what the search itself promises), never a latency or throughput.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_rollout.spec import ValidationSpec, parse_spec
from llm_rollout.validation import validate
from llm_rollout.validation.sizing import SizingInput
from llm_rollout.validation.workload import load_file
from tests.fixtures.serving import start_vllm, tiny_quality

pytest_plugins = ["tests.fixtures.serving"]
pytestmark = [pytest.mark.serving, pytest.mark.timeout(900)]

HEALTHY_CHECKS = ["p95_ttft_ms <= 1500", "p99_e2el_ms <= 5000", "error_rate == 0"]


def spec_of(**validation: Any) -> ValidationSpec:
    # The tiny model's reference texts: the sample's prompts are outside its domain (see tiny_quality).
    doc: dict[str, Any] = {"readiness_timeout_s": 60, "smoke_suite": False, "quality": tiny_quality(), **validation}
    return parse_spec({"validation": doc}).validation


def test_the_shipped_sample_drives_validation_replayed_at_its_times(vllm_server, tmp_path):
    spec = spec_of(
        load={"workload": {"dataset": "custom", "path": "sample:support-rag"}, "max_duration_s": 60},
        slo={
            "checks": HEALTHY_CHECKS,
            "min_successful_requests": 10,
            "capacity_max_request_rate": 40,
            "capacity_rate_steps": 4,
            "capacity_repeats": 2,
        },
    )
    # A peak no two replicas can carry within the ladder's top rate (2 x 40 req/s < 1000 req/s).
    result = validate(
        spec,
        vllm_server.base_url,
        "tiny",
        report_dir=tmp_path,
        sizing=SizingInput(expected_peak_rps=1000, max_replicas=2, gpus_per_replica=1),
    )
    replay = result.level("replay")
    assert replay.judged and replay.concurrency is None
    assert [lv.label for lv in result.levels if lv.judged] == ["replay"], "a timed file replaces the levels"
    assert replay.metrics["sent_requests"] == result.workload["requests"] == 28
    assert replay.metrics["successful_requests"] == 28, replay.errors
    # The sample mixes completions and chat conversations; each request asked for its own max_tokens.
    assert replay.metrics["total_output_tokens"] == sum(r.max_tokens for r in load_file("sample:support-rag").requests)
    starts = sorted(r.start_time for r in replay.records)
    recorded = result.workload["trace_rate_req_s"]
    assert replay.request_rate == pytest.approx(recorded)
    assert starts[-1] - starts[0] >= 0.9 * (27 / recorded), "sent at the recorded times, not all at once"
    # The open-loop search replays the same trace faster.
    rc = result.rate_capacity
    assert rc is not None and rc.low <= rc.high <= 40
    fast = [lv for lv in result.levels if lv.label.startswith("replay_rate")]
    assert fast and all(lv.metrics["sent_requests"] == 28 for lv in fast)
    # Sizing: the stated peak cannot be carried, and the verdict says so with the numbers.
    assert result.sizing is not None and not result.sizing.fits
    assert result.verdict == "fail"
    assert any(r.startswith("sizing: scaling.max_replicas 2 carries") for r in result.reasons), result.reasons
    assert result.metrics["sizing_fits"] == 0.0
    assert result.metrics["sizing_replicas_needed"] == result.sizing.replicas_needed > 2
    page = (tmp_path / "report.html").read_text()
    assert 'id="capacity"' in page and 'id="sizing"' in page and "support-rag" in page


@pytest.fixture(scope="module")
def two_slot_server(deep_model, vllm_python, tmp_path_factory):
    """The deep tiny model with at most two requests running at once (``--max-num-seqs 2``)."""
    log = tmp_path_factory.mktemp("vllm-two-slots") / "vllm.log"
    with start_vllm(deep_model, "tiny-deep", extra_args=["--max-num-seqs", "2"], log_path=log) as server:
        yield server


def test_the_capacity_search_gives_the_same_answer_within_its_interval_twice(two_slot_server):
    url = two_slot_server.base_url
    load = {"concurrency": [1], "num_prompts": 10, "input_words": 12, "output_tokens": 48, "warmup_requests": 2}
    calibration = validate(
        spec_of(load=load, slo={"checks": ["error_rate == 0"], "judge_concurrency": [1]}), url, "tiny-deep"
    )
    one_request_ms = calibration.level("c1").metrics["median_e2el_ms"]
    slo = {
        "checks": [f"p90_ttft_ms <= {one_request_ms / 3:.3f}", "error_rate == 0"],
        "judge_concurrency": [1],
        "min_successful_requests": 10,
        "capacity_max_concurrency": 5,
        "capacity_repeats": 3,
        "capacity_max_measurements": 20,
    }
    runs = [validate(spec_of(load=load, slo=slo), url, "tiny-deep") for _ in range(2)]
    first, second = (r.capacity for r in runs)
    assert first is not None and second is not None
    for cap in (first, second):
        assert cap.low <= cap.high
        assert all(len(v) <= 3 for v in cap.measurements.values())
        if cap.low:
            assert cap.measurements[cap.low] == ["pass"] * 3, "the answer met the SLO on every measurement"
        if cap.settled and cap.high < 5:
            assert cap.measurements[cap.high + 1] == ["fail"] * 3, "the interval ends below a value that always failed"
    assert max(first.low, second.low) <= min(first.high, second.high), (first, second)


def test_on_the_local_platform_the_shipped_sample_drives_the_validate_step(tiny_model, tmp_path):
    """The product path: register, deploy and validate steps on the local platform, the sample as the load."""
    from llm_rollout import steps
    from llm_rollout.local.session import cleanup

    state = tmp_path / "state"
    spec = parse_spec(
        {
            "name": "workload-svc",
            "platform": "local",
            "runtime": {"max_model_len": 256},
            "local": {"state_dir": str(state), "startup_timeout_s": 240},
            "validation": {
                "readiness_timeout_s": 60,
                "load": {"workload": {"dataset": "custom", "path": "sample:support-rag"}, "max_duration_s": 60},
                "slo": {"checks": HEALTHY_CHECKS, "min_successful_requests": 10},
                "quality": tiny_quality(),
            },
        }
    ).model_dump_json()
    try:
        steps.register_runtime_step(spec)
        record = steps.deploy_step(spec, model_uri=str(tiny_model), model_path=str(tiny_model), run_id="wl-1")
        verdict = steps.validate_step(
            spec, record, report_path=str(tmp_path / "report.html"), results_path=str(tmp_path / "results.json")
        )
    finally:
        cleanup(str(state))
    assert verdict.verdict == "pass", verdict.summary
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["workload"]["name"] == "custom" and results["workload"]["timed"]
    judged = [lv for lv in results["levels"] if lv["judged"]]
    assert [lv["label"] for lv in judged] == ["replay"]
    assert judged[0]["metrics"]["successful_requests"] == results["workload"]["requests"] == 28
    assert "support-rag" in (tmp_path / "report.html").read_text()
