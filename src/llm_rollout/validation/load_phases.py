"""The gate's measuring phases: the load, the original's load, capacity, sizing and the llm-d proofs.

Each returns its typed :class:`~llm_rollout.validation.answers.Answer` (the load: the server stayed
up; capacity: never judged, evidence for sizing and the autoscaler's target; sizing: the peak fits
``max_replicas``; the proofs: disaggregation and prefix-cache hits seen in the roles' counters) and
adds it to the run; :func:`llm_rollout.validation.phases.run_phases` calls them in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from llm_rollout.errors import RolloutError, TransientError
from llm_rollout.validation import pd
from llm_rollout.validation.answers import Answer
from llm_rollout.validation.client import Endpoint
from llm_rollout.validation.gate import REPLAY_LABEL, Run, Targets, level_line
from llm_rollout.validation.load import level_label, run_load
from llm_rollout.validation.prom import Sampler, Snapshot, scrape, server_view
from llm_rollout.validation.readiness import list_models
from llm_rollout.validation.sizing import size
from llm_rollout.validation.slo import capacity_search, rate_capacity_search
from llm_rollout.validation.summary import capacity_answer, proof_answer, sizing_answer


async def _endpoint_gone(client: httpx.AsyncClient, endpoint: Endpoint) -> str | None:
    """None when the endpoint still lists models; else the error that says it is gone."""
    try:
        await asyncio.wait_for(list_models(client, endpoint), timeout=10)
    except TransientError as err:
        return str(err)
    except (RolloutError, TimeoutError):
        return "the endpoint does not answer /v1/models within 10 s"
    return None


async def load_phase(run: Run, t: Targets) -> Answer:
    """The load levels (the judged ones for the SLO), the server's view around them and the llm-d proofs.

    A server that stops answering during the load fails the gate at once (the remaining levels
    are not measured).
    """
    spec, log, res = run.spec, run.log, run.result
    load, workload = spec.load, run.workload
    assert workload is not None
    started = time.monotonic()
    if load.warmup_requests:
        await run_load(
            t.client,
            t.endpoint,
            [r.prompt or "" for r in workload.requests],
            api=load.endpoint,
            output_tokens=load.output_tokens,
            num_requests=load.warmup_requests,
            concurrency=min(load.warmup_requests, max(t.conc, default=1)),
            max_duration_s=load.max_duration_s,
            bodies=run.bodies(t.endpoint),
        )

    async def scrape_all() -> dict[str, Snapshot]:
        snaps = await asyncio.gather(*(scrape(t.prom_client, u, t.prom_headers.get(r)) for r, u in t.roles.items()))
        return dict(zip(t.roles, snaps, strict=True))

    prove_pd = spec.expect_disaggregation if spec.expect_disaggregation is not None else pd.PREFILL_ROLE in t.roles
    prove_prefix = (
        spec.expect_prefix_cache_hits if spec.expect_prefix_cache_hits is not None else load.shared_prefix_words > 0
    )
    pd_before = await pd.scrape_roles(t.prom_client, t.roles, t.prom_headers) if prove_pd or prove_prefix else {}
    before = await scrape_all()
    sampler = Sampler(t.prom_client, t.roles, headers=t.prom_headers)
    sampler.start()
    plan: list[tuple[int | None, float | None]] = [(c, None) for c in t.conc]
    if load.request_rate is not None:
        plan.append((None, load.request_rate))
        t.judged_labels.add(f"rate{load.request_rate:g}".replace(".", "_"))
    if workload.timed:
        plan.insert(0, (None, None))
    reasons: list[str] = []
    try:
        for concurrency, rate in plan:
            replay = workload.timed and concurrency is None and rate is None
            if replay:
                log(
                    f"validate: load {REPLAY_LABEL}: starting, {len(workload.requests)} requests at their recorded "
                    f"times over {workload.span_s:.1f} s, at most {load.max_duration_s:g} s"
                )
            else:
                log(
                    f"validate: load {level_label(concurrency, rate)}: starting, {load.num_prompts} requests"
                    f" of {workload.describe() if load.workload else f'{load.output_tokens} tokens'}, "
                    f"at most {load.max_duration_s:g} s"
                )
            lv = await run.measure(t, t.endpoint, t.client, concurrency, rate, replay=replay)
            lv.judged = lv.label in t.judged_labels
            res.levels.append(lv)
            log(f"validate: {level_line(lv)}")
            if lv.metrics["failed_requests"] and any(r.status_code == 0 and not r.success for r in lv.records):
                gone = await _endpoint_gone(t.client, t.endpoint)
                if gone:
                    run.server_gone = True
                    reasons.append(f"{lv.label}: the server stopped answering during the load: {gone}")
                    break
    finally:
        await sampler.stop()
    after = await scrape_all()
    answer = run.answer(Answer("load", "fail" if run.server_gone else "pass", reasons=reasons, summarized=False))
    if prove_pd or prove_prefix:
        after_pd = await pd.scrape_roles(t.prom_client, t.roles, t.prom_headers)
        proof_phase(run, pd_before, after_pd, prove_pd, prove_prefix)
    for role in t.roles:
        res.server[role] = server_view(before.get(role, Snapshot()), after[role], sampler.peaks.get(role))
    ok_levels = sum(1 for lv in res.levels if lv.metrics["failed_requests"] == 0)
    run.phase(
        "load",
        "fail" if run.server_gone else "ok",
        started,
        f"{len(res.levels)}/{len(plan)} levels measured, {ok_levels} without errors",
    )
    return answer


async def baseline_load_phase(run: Run, t: Targets) -> None:
    """The original at every judged level, for recovery's ratio checks.

    They are judged with the SLO's, in :func:`~llm_rollout.validation.phases.judge_phase`.
    """
    assert t.base is not None
    base_ep, base_client = t.base
    res = run.result
    started = time.monotonic()
    for lv in res.levels:
        if not lv.judged:
            continue
        replay = lv.label == REPLAY_LABEL
        blv = await run.measure(
            t, base_ep, base_client, lv.concurrency, None if replay else lv.request_rate, replay=replay
        )
        blv.purpose = "baseline"
        res.baseline_levels.append(blv)
        run.log(f"validate: baseline {level_line(blv)}")
    run.phase("baseline load", "ok", started, f"{len(res.baseline_levels)} levels")


async def capacity_phase(run: Run, t: Targets) -> Answer | None:
    """The capacity searches (concurrency, then request rate): evidence for sizing and autoscaling, never judged."""
    spec, res, workload = run.spec, run.result, run.workload
    assert workload is not None
    cap_max, rate_max = spec.slo.capacity_max_concurrency, spec.slo.capacity_max_request_rate
    if not cap_max and not rate_max:
        return None

    async def capacity_level(concurrency: int | None, rate: float | None, **options: Any) -> Mapping[str, Any]:
        """One measurement of the capacity searches (kept in the report, never judged)."""
        lv = await run.measure(t, t.endpoint, t.client, concurrency, rate, **options)
        lv.purpose, lv.judged = "capacity", False
        res.levels.append(lv)
        run.log(f"validate: capacity {level_line(lv)}")
        return lv.metrics

    if cap_max:
        started = time.monotonic()
        known = {lv.concurrency: lv.metrics for lv in res.levels if lv.request_rate is None and lv.concurrency}
        res.capacity = await capacity_search(
            lambda concurrency: capacity_level(concurrency, None),
            t.checks,
            min_successful=spec.slo.min_successful_requests,
            high=cap_max,
            known={c: m for c, m in known.items() if c <= cap_max},
            repeats=spec.slo.capacity_repeats,
            max_measurements=spec.slo.capacity_max_measurements,
        )
        cap = res.capacity
        bound = " (the upper bound)" if cap.bounded else ""
        within = f", within [{cap.low}, {cap.high}]" + ("" if cap.settled else " (measurement budget spent)")
        run.phase(
            "capacity", "ok", started, f"highest concurrency meeting the SLO: {cap.max_concurrency}{bound}{within}"
        )
    if rate_max:
        started = time.monotonic()
        res.rate_capacity = await rate_capacity_search(
            lambda rate: capacity_level(None, rate, replay=workload.timed),
            t.checks,
            min_successful=spec.slo.min_successful_requests,
            max_rate=rate_max,
            steps=spec.slo.capacity_rate_steps,
            repeats=spec.slo.capacity_repeats,
            max_measurements=spec.slo.capacity_max_measurements,
        )
        rc = res.rate_capacity
        bound = " (the upper bound)" if rc.bounded else ""
        how = "the recorded trace rescaled" if workload.timed else "Poisson arrivals"
        run.phase(
            "rate capacity",
            "ok",
            started,
            f"highest request rate meeting the SLO ({how}): {rc.max_request_rate:g} req/s{bound}, "
            f"within [{rc.low:g}, {rc.high:g}]" + ("" if rc.settled else " (measurement budget spent)"),
        )
    return run.answer(capacity_answer(res.capacity, res.rate_capacity))


def sizing_phase(run: Run) -> Answer:
    """Replicas and GPUs for the stated peak from the measured capacity; a peak too high fails."""
    res, inp = run.result, run.sizing
    assert inp is not None
    started = time.monotonic()
    rc, cap = res.rate_capacity, res.capacity
    if rc is not None:
        point, low, high = rc.max_request_rate, rc.low, rc.high
        source = f"open-loop search: {rc.max_request_rate:g} req/s met the SLO on every measurement"
    else:
        assert cap is not None
        closed = [lv for lv in res.levels if lv.request_rate is None and lv.concurrency is not None]

        def throughput(concurrency: int, pick: Callable[[list[float]], float]) -> float:
            values = [
                float(lv.metrics.get("request_throughput_req_s") or 0.0)
                for lv in closed
                if lv.concurrency == concurrency
            ]
            return pick(values) if values else 0.0

        point = throughput(cap.max_concurrency, min) if cap.max_concurrency else 0.0
        low, high = point, max(point, throughput(cap.high, max)) if cap.high else point
        source = (
            f"closed loop: the request throughput at concurrency {cap.max_concurrency}, the highest that met "
            "the SLO on every measurement (lowest of its measurements)"
        )
    res.sizing = size(inp, point, low=low, high=high, source=source)
    sz = res.sizing
    detail = (
        f"peak {sz.expected_peak_rps:g} req/s / {sz.capacity_rps:.3g} req/s per replica = {sz.replicas_needed} "
        f"replicas, {sz.gpus_needed} GPUs; {sz.field}.max_replicas {sz.max_replicas}"
    )
    run.phase("sizing", "ok" if sz.fits else "fail", started, detail)
    return run.answer(sizing_answer(sz))


def proof_phase(
    run: Run,
    before: Mapping[str, pd.Counters],
    after: Mapping[str, pd.Counters],
    prove_pd: bool,
    prove_prefix: bool,
) -> list[Answer]:
    """The llm-d proofs on the roles' counters around the load: one answer each."""
    started = time.monotonic()
    proofs: list[tuple[str, pd.Proof]] = []
    if prove_pd:
        proofs.append(
            (
                "disaggregation",
                pd.judge_disaggregation(
                    before, after, max_decode_recompute_ratio=run.spec.pd_max_decode_recompute_ratio
                ),
            )
        )
    if prove_prefix:
        proofs.append(("prefix_cache", pd.judge_prefix_cache(before, after)))
    answers = []
    for name, proof in proofs:
        run.result.pd[name] = proof.to_dict()
        for note in proof.notes:
            run.log(f"validate: {name}: {note}")
        answer = run.answer(proof_answer(name, proof))
        answers.append(answer)
        status = {"pass": "ok", "fail": "fail"}.get(answer.decision, "inconclusive")
        run.phase(name.replace("_", " "), status, started, "; ".join(proof.reasons or proof.notes))
    return answers
