"""What one comparison round measures (llm_rollout.validation.compare), from request records.

The records are built as the load client writes them; expected values are literals.
"""

from __future__ import annotations

import pytest

from llm_rollout.spec import ComparisonSpec
from llm_rollout.validation.compare import MIN_TOKEN_GAP_S, _Rounds, judge_speed
from llm_rollout.validation.metrics import RequestRecord


def record(ttft: float, gap: float, tokens: int = 5) -> RequestRecord:
    """A successful stream: first token after ``ttft`` s, then ``tokens - 1`` gaps of ``gap`` s."""
    return RequestRecord(
        success=True, ttft=ttft, latency=ttft + gap * (tokens - 1), itl=[gap] * (tokens - 1), output_tokens=tokens
    )


def test_a_round_gives_median_ttft_token_weighted_tpot_and_the_median_requests_throughput():
    rounds = _Rounds()
    rounds.add([record(0.010, 0.002), record(0.020, 0.002), record(0.030, 0.004)], ComparisonSpec(concurrency=4))
    assert rounds.ttft == [pytest.approx(20.0)]
    assert rounds.tpot == [pytest.approx(1000 * (0.008 + 0.008 + 0.016) / 12)]
    # Median of tokens / latency: 5/0.018, 5/0.028, 5/0.046 -> 5/0.028, times 4 streams.
    assert rounds.throughput == [pytest.approx(4 * 5 / 0.028)]


def test_streams_that_arrived_in_one_piece_give_no_tpot_instead_of_zero():
    burst = MIN_TOKEN_GAP_S / 10  # parse time between events of one read
    rounds = _Rounds()
    rounds.add([record(0.05, burst), record(0.05, burst), record(0.01, 0.002)], ComparisonSpec())
    assert rounds.tpot == [None]  # 1 of 3 streamed: not this round's TPOT
    rounds.add([record(0.05, burst), record(0.01, 0.002), record(0.01, 0.004)], ComparisonSpec())
    assert rounds.tpot[1] == pytest.approx(1000 * (0.008 + 0.016) / 8)  # the two streamed ones


def test_tpot_is_unmeasured_when_most_blocks_had_none_and_the_rest_still_decides():
    spec = ComparisonSpec()
    cand, stable = _Rounds(), _Rounds()
    burst = MIN_TOKEN_GAP_S / 10
    for _ in range(2 * spec.min_blocks):  # two rounds per side and block
        for side in (cand, stable):
            side.add([record(0.02, burst)] * 4, spec)
    ttft, tpot, throughput = judge_speed(cand, stable, spec, 0.9833)
    assert tpot.decision == "unmeasured" and "0/6 blocks had token gaps" in tpot.note
    assert ttft.decision == "not_worse" and throughput.decision == "not_worse"
