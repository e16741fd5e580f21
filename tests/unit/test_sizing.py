"""Sizing: replicas and GPUs for a stated peak from one replica's measured capacity; a too-low bound fails."""

from __future__ import annotations

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.spec import parse_spec
from llm_rollout.validation.sizing import SizingInput, size, sizing_input

CAPACITY = {"validation": {"slo": {"capacity_max_concurrency": 32}}}


@pytest.mark.parametrize(
    ("peak", "capacity", "replicas"),
    [(10, 2.5, 4), (10.1, 2.5, 5), (0.3, 2.5, 1), (7.5, 2.5, 3), (0.3 * 3, 0.3, 3), (100, 7, 15)],
)
def test_replicas_are_the_ceiling_of_peak_over_capacity(peak, capacity, replicas):
    s = size(SizingInput(peak, max_replicas=50, gpus_per_replica=2), capacity)
    assert s.replicas_needed == replicas
    assert s.gpus_needed == 2 * replicas
    assert s.fits and s.reason is None


def test_the_interval_gives_a_range_of_replicas():
    s = size(SizingInput(12, 10, 1), 3.0, low=3.0, high=4.0, source="open loop")
    assert s.replicas_needed == 4 and s.replicas_range == (3, 4)
    assert s.to_dict()["source"] == "open loop"


def test_a_max_replicas_that_cannot_carry_the_peak_fails_with_the_numbers_and_the_fix():
    s = size(SizingInput(20, 4, 2), 2.5)
    assert not s.fits and s.replicas_needed == 8 and s.gpus_needed == 16
    assert s.reason is not None
    assert s.reason.startswith("sizing: scaling.max_replicas 4 carries 4 x 2.5 = 10 req/s")
    assert "scaling.expected_peak_rps 20" in s.reason and "needs 8 replicas (16 GPUs" in s.reason
    assert "Fix: raise scaling.max_replicas to 8" in s.reason
    exact = size(SizingInput(10, 4, 1), 2.5)
    assert exact.fits and exact.replicas_needed == 4, "a peak exactly at max_replicas x capacity fits"


def test_no_capacity_means_no_replica_count_carries_the_peak():
    s = size(SizingInput(5, 10, 1, field="llmd.decode.scaling"), 0.0)
    assert not s.fits and s.replicas_needed == 0
    assert s.reason.startswith("sizing: llmd.decode.scaling.max_replicas: no load met the SLO on one replica")


def test_sizing_input_from_the_rollout_spec():
    assert sizing_input(parse_spec({})) is None
    spec = parse_spec({**CAPACITY, "scaling": {"expected_peak_rps": 40, "max_replicas": 6}, "resources": {"gpus": 2}})
    assert sizing_input(spec) == SizingInput(40, 6, 2, "scaling")
    llmd = parse_spec(
        {
            **CAPACITY,
            "llmd": {
                "enabled": True,
                "decode": {"tensor": 2, "scaling": {"expected_peak_rps": 9, "max_replicas": 3}},
            },
        }
    )
    assert sizing_input(llmd) == SizingInput(9, 3, 2, "llmd.decode.scaling")
    assert sizing_input(parse_spec({**CAPACITY, "replicas": 2})) is None


def test_a_peak_without_a_capacity_search_is_refused_at_parse_time():
    with pytest.raises(SpecError) as err:
        parse_spec({"scaling": {"expected_peak_rps": 10}})
    assert err.value.field == "scaling.expected_peak_rps"
    assert "capacity_max_concurrency" in err.value.fix
    rate_only = {"validation": {"slo": {"capacity_max_request_rate": 20}}, "scaling": {"expected_peak_rps": 10}}
    assert parse_spec(rate_only).scaling.expected_peak_rps == 10
    with pytest.raises(SpecError) as err:
        parse_spec({"scaling": {"expected_peak_rps": 0}})
    assert err.value.field == "scaling.expected_peak_rps"


def test_llm_rollout_validate_takes_the_peak_from_the_spec_and_the_capacity_from_flags(tmp_path):
    from llm_rollout.validation.cli import build_parser, rollout_spec_from_args

    spec = tmp_path / "spec.yaml"
    spec.write_text("scaling: {expected_peak_rps: 30, max_replicas: 4}\nresources: {gpus: 2}\n")
    args = build_parser().parse_args(
        ["--url", "http://h", "--model", "m", "--spec", str(spec), "--capacity-max-rate", "12", "--workload", "w.jsonl"]
    )
    rollout = rollout_spec_from_args(args)
    assert sizing_input(rollout) == SizingInput(30, 4, 2, "scaling")
    assert rollout.validation.slo.capacity_max_request_rate == 12
    assert rollout.validation.load.workload.path == "w.jsonl"
