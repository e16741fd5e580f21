"""The phases of one validation, run in order on a :class:`Run`'s state.

:func:`run_phases`: readiness, correctness, the baseline (readiness and greedy token agreement),
the load levels (with the server's ``/metrics`` around them and the llm-d proofs), the baseline's
load for ratio checks, the capacity searches (concurrency, then request rate) and the sizing for
the stated peak. :func:`quality_phase`: the quality question (likelihood of reference texts,
against the stable revision and the floor of guessing). :func:`compare_stable`: the comparison
with the stable revision. Each phase adds
its failures or inconclusive reasons to the run and one :class:`~llm_rollout.validation.result.Phase`
line to the result; :mod:`llm_rollout.validation.runner` orders them and judges.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from llm_rollout.errors import RolloutError, TransientError
from llm_rollout.spec import ValidationSpec
from llm_rollout.validation import pd
from llm_rollout.validation.client import Endpoint
from llm_rollout.validation.compare import compare_with_stable
from llm_rollout.validation.load import LoadResult, level_label, make_prompts, run_load
from llm_rollout.validation.metrics import RequestRecord, calculate_metrics
from llm_rollout.validation.probes import (
    SMOKE_PROMPTS,
    Probe,
    failure_line,
    run_smoke,
    run_suite,
    tally_line,
    token_agreement,
)
from llm_rollout.validation.prom import Sampler, Snapshot, scrape, server_view
from llm_rollout.validation.quality import ReferenceTexts, ask_quality
from llm_rollout.validation.readiness import check_readiness, list_models
from llm_rollout.validation.result import LevelResult, Phase, ValidationResult
from llm_rollout.validation.sizing import SizingInput, size
from llm_rollout.validation.slo import Check, capacity_search, goodput_limits, rate_capacity_search
from llm_rollout.validation.workload import Workload

LogFn = Callable[[str], None]
MAX_ERROR_KINDS = 10
"""Distinct error texts kept per level (with their counts)."""
AGREEMENT_MAX_TOKENS = 32
REPLAY_LABEL = "replay"
"""The level of a timed workload replayed at its recorded arrival times."""


def _error_kinds(records: Sequence[RequestRecord]) -> dict[str, int]:
    counts = Counter(r.error for r in records if not r.success and r.error)
    return dict(counts.most_common(MAX_ERROR_KINDS))


def _level_line(lv: LevelResult) -> str:
    m = lv.metrics

    def ms(name: str) -> str:
        v = m.get(name)
        return "-" if v is None else f"{v:.1f} ms"

    tput = m.get("output_throughput_tok_s")
    line = (
        f"load {lv.label}: {m['successful_requests']}/{m['sent_requests']} ok, "
        f"p50/p95 TTFT {ms('p50_ttft_ms')}/{ms('p95_ttft_ms')}, mean TPOT {ms('mean_tpot_ms')}, "
        f"{'-' if tput is None else f'{tput:.0f}'} tok/s"
    )
    if m["failed_requests"]:
        first = next(iter(lv.errors), "")
        line += f", {m['failed_requests']} failed (e.g. {first[:160]})"
    if lv.truncated:
        line += f", cut by the time bound ({m['incomplete_requests']} incomplete)"
    return line


class Run:
    """State of one validation (kept small so the report can always be written from it)."""

    def __init__(self, spec: ValidationSpec, url: str, model: str, log: LogFn) -> None:
        self.spec = spec
        self.log = log
        self.failures: list[str] = []
        self.inconclusive: list[str] = []
        self.result = ValidationResult("inconclusive", [], {}, {}, url, model, spec=spec)
        self.server_gone = False
        self.workload: Workload | None = None
        self.sizing: SizingInput | None = None
        self.suite_paired = False
        """The scored probes are judged against the stable revision's (the comparison runs)."""

    def phase(self, name: str, status: str, started: float, detail: str = "") -> None:
        seconds = time.monotonic() - started
        self.result.phases.append(Phase(name, status, round(seconds, 3), detail))
        self.log(f"validate: {name} {status} in {seconds:.1f} s" + (f": {detail}" if detail else ""))


async def _endpoint_gone(client: httpx.AsyncClient, endpoint: Endpoint) -> str | None:
    """None when the endpoint still lists models; else the error that says it is gone."""
    try:
        await asyncio.wait_for(list_models(client, endpoint), timeout=10)
    except TransientError as err:
        return str(err)
    except (RolloutError, TimeoutError):
        return "the endpoint does not answer /v1/models within 10 s"
    return None


async def run_phases(
    run: Run,
    endpoint: Endpoint,
    client: httpx.AsyncClient,
    base_ep: Endpoint | None,
    base_client: httpx.AsyncClient | None,
    prom_client: httpx.AsyncClient,
    checks: list[Check],
    base_checks: list[Check],
    probes: list[Probe],
    conc: list[int],
    judged_labels: set[str],
    roles: dict[str, str],
    prom_headers: dict[str, dict[str, str]],
) -> None:
    spec, log, res = run.spec, run.log, run.result
    load = spec.load

    # Readiness ---------------------------------------------------------------------------------
    t = time.monotonic()
    try:
        res.readiness = await check_readiness(
            client, endpoint, timeout_s=spec.readiness_timeout_s, api=load.endpoint, log=log
        )
    except RolloutError as err:
        run.failures.append(f"readiness: {err}")
        run.phase("readiness", "fail", t, str(err))
        return
    run.phase("readiness", "ok", t, f"serves {', '.join(res.readiness.served_models)}")

    # Correctness -------------------------------------------------------------------------------
    t = time.monotonic()
    if spec.smoke_suite:
        res.correctness += await run_smoke(client, endpoint, chat=load.endpoint == "chat")
    res.correctness += await run_suite(client, endpoint, probes)
    bad = [p for p in res.correctness if not p.passed]
    for p in res.correctness:
        if spec.log_text:
            log(f"validate: probe {p.name}: prompt={p.prompt!r} completion={p.text!r} passed={p.passed}")
    # Must-pass probes (the smoke checks, probes marked so) fail the gate on their own; scored
    # probes are judged as a proportion: against the stable revision's item by item when the
    # comparison runs (compare.judge_quality), else against validation.suite_min_score.
    scored = [p for p in res.correctness if not p.must_pass]
    scored_right = sum(1 for p in scored if p.passed)
    below_bar = bool(scored) and not run.suite_paired and scored_right < spec.suite_min_score * len(scored)
    failing = [p for p in bad if p.must_pass or below_bar]
    for p in failing:
        detail = "; ".join(p.failures) if spec.log_text else ", ".join(p.failed_checks())
        run.failures.append(f"correctness: {failure_line(p.name, detail)}")
    if below_bar and spec.suite_min_score < 1:
        run.failures.append(
            f"correctness: the suite scored {scored_right}/{len(scored)}, below validation.suite_min_score "
            f"{spec.suite_min_score:g}"
        )
    if res.correctness:
        detail = tally_line(len(res.correctness) - len(bad), len(res.correctness))
        if scored and run.suite_paired:
            detail += f"; {scored_right}/{len(scored)} scored probes right, judged against the stable revision's"
        run.phase("correctness", "fail" if failing else "ok", t, detail)
    else:
        run.phase("correctness", "skipped", t, "no smoke suite and no probes")

    # Baseline: readiness and greedy agreement --------------------------------------------------
    base_ready = False
    if base_ep is not None and base_client is not None:
        t = time.monotonic()
        try:
            await check_readiness(base_client, base_ep, timeout_s=spec.readiness_timeout_s, api=load.endpoint)
            base_ready = True
        except RolloutError as err:
            run.inconclusive.append(f"baseline {base_ep.base_url} not usable: {err}")
            run.phase("baseline", "fail", t, str(err))
        if base_ready:
            prompts = [p.prompt for p in probes if not p.chat] or list(SMOKE_PROMPTS)
            res.agreement = await token_agreement(
                client, endpoint, base_client, base_ep, prompts, max_tokens=AGREEMENT_MAX_TOKENS
            )
            value = res.agreement.agreement
            if value is None:
                run.inconclusive.append("token agreement with the baseline could not be measured")
            elif value < spec.recovery.min_token_agreement:
                run.failures.append(
                    f"recovery: greedy token agreement with the original {value:.3f} < "
                    f"{spec.recovery.min_token_agreement:g} (validation.recovery.min_token_agreement)"
                )
            run.phase("baseline", "ok", t, f"token agreement {'-' if value is None else f'{value:.3f}'}")

    # Load --------------------------------------------------------------------------------------
    t = time.monotonic()
    limits = goodput_limits(checks)
    workload = run.workload
    assert workload is not None
    prompts = [r.prompt or "" for r in workload.requests]
    encoded: dict[str, list[tuple[Any, bytes]]] = {}

    def bodies(ep: Endpoint) -> list[tuple[Any, bytes]]:
        """The workload's requests for one endpoint's model name, encoded once."""
        if ep.model not in encoded:
            encoded[ep.model] = [
                (r.api(load.endpoint), json.dumps(r.payload(load.endpoint, ep.model)).encode())
                for r in workload.requests
            ]
        return encoded[ep.model]

    async def measure(
        ep: Endpoint, cl: httpx.AsyncClient, concurrency: int | None, rate: float | None, *, replay: bool = False
    ) -> LevelResult:
        replayed = replay and workload.timed
        label = None
        if replayed:
            label = REPLAY_LABEL if rate is None else f"{REPLAY_LABEL}_{level_label(None, rate)}"
        lr: LoadResult = await run_load(
            cl,
            ep,
            prompts,
            api=load.endpoint,
            output_tokens=load.output_tokens,
            num_requests=len(workload.requests) if replayed else load.num_prompts,
            concurrency=concurrency,
            request_rate=(rate or workload.trace_rate) if replayed else rate,
            max_duration_s=load.max_duration_s,
            bodies=bodies(ep),
            arrivals=workload.arrivals(rate) if replayed else None,
            label=label,
        )
        if replayed:
            concurrency, rate = None, lr.request_rate
        metrics = calculate_metrics(lr.records, lr.duration_s, limits)
        return LevelResult(
            lr.label,
            concurrency,
            rate,
            lr.label in judged_labels,
            lr.truncated,
            metrics,
            lr.records,
            _error_kinds(lr.records),
        )

    if load.warmup_requests:
        await run_load(
            client,
            endpoint,
            prompts,
            api=load.endpoint,
            output_tokens=load.output_tokens,
            num_requests=load.warmup_requests,
            concurrency=min(load.warmup_requests, max(conc, default=1)),
            max_duration_s=load.max_duration_s,
            bodies=bodies(endpoint),
        )

    async def scrape_all() -> dict[str, Snapshot]:
        snaps = await asyncio.gather(*(scrape(prom_client, u, prom_headers.get(r)) for r, u in roles.items()))
        return dict(zip(roles, snaps, strict=True))

    prove_pd = spec.expect_disaggregation if spec.expect_disaggregation is not None else pd.PREFILL_ROLE in roles
    prove_prefix = (
        spec.expect_prefix_cache_hits if spec.expect_prefix_cache_hits is not None else load.shared_prefix_words > 0
    )
    pd_before = await pd.scrape_roles(prom_client, roles, prom_headers) if prove_pd or prove_prefix else {}
    before = await scrape_all()
    sampler = Sampler(prom_client, roles, headers=prom_headers)
    sampler.start()
    plan: list[tuple[int | None, float | None]] = [(c, None) for c in conc]
    if load.request_rate is not None:
        plan.append((None, load.request_rate))
        judged_labels.add(f"rate{load.request_rate:g}".replace(".", "_"))
    if workload.timed:
        plan.insert(0, (None, None))
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
            lv = await measure(endpoint, client, concurrency, rate, replay=replay)
            lv.judged = lv.label in judged_labels
            res.levels.append(lv)
            log(f"validate: {_level_line(lv)}")
            if lv.metrics["failed_requests"] and any(r.status_code == 0 and not r.success for r in lv.records):
                gone = await _endpoint_gone(client, endpoint)
                if gone:
                    run.server_gone = True
                    run.failures.append(f"{lv.label}: the server stopped answering during the load: {gone}")
                    break
    finally:
        await sampler.stop()
    after = await scrape_all()
    if prove_pd or prove_prefix:
        _prove(run, pd_before, await pd.scrape_roles(prom_client, roles, prom_headers), prove_pd, prove_prefix)
    for role in roles:
        res.server[role] = server_view(before.get(role, Snapshot()), after[role], sampler.peaks.get(role))
    ok_levels = sum(1 for lv in res.levels if lv.metrics["failed_requests"] == 0)
    run.phase(
        "load",
        "fail" if run.server_gone else "ok",
        t,
        f"{len(res.levels)}/{len(plan)} levels measured, {ok_levels} without errors",
    )

    # Baseline load (for ratio checks) ----------------------------------------------------------
    if base_ep is not None and base_client is not None and base_checks and base_ready and not run.server_gone:
        t = time.monotonic()
        for lv in res.levels:
            if not lv.judged:
                continue
            replay = lv.label == REPLAY_LABEL
            blv = await measure(
                base_ep, base_client, lv.concurrency, None if replay else lv.request_rate, replay=replay
            )
            blv.purpose = "baseline"
            res.baseline_levels.append(blv)
            log(f"validate: baseline {_level_line(blv)}")
        run.phase("baseline load", "ok", t, f"{len(res.baseline_levels)} levels")

    # Capacity search ---------------------------------------------------------------------------
    cap_max = spec.slo.capacity_max_concurrency

    async def capacity_level(concurrency: int | None, rate: float | None, **options: Any) -> Mapping[str, Any]:
        """One measurement of the capacity searches (kept in the report, never judged)."""
        lv = await measure(endpoint, client, concurrency, rate, **options)
        lv.purpose, lv.judged = "capacity", False
        res.levels.append(lv)
        log(f"validate: capacity {_level_line(lv)}")
        return lv.metrics

    if cap_max and not run.server_gone:
        t = time.monotonic()
        known = {lv.concurrency: lv.metrics for lv in res.levels if lv.request_rate is None and lv.concurrency}

        res.capacity = await capacity_search(
            lambda concurrency: capacity_level(concurrency, None),
            checks,
            min_successful=spec.slo.min_successful_requests,
            high=cap_max,
            known={c: m for c, m in known.items() if c <= cap_max},
            repeats=spec.slo.capacity_repeats,
            max_measurements=spec.slo.capacity_max_measurements,
        )
        cap = res.capacity
        bound = " (the upper bound)" if cap.bounded else ""
        within = f", within [{cap.low}, {cap.high}]" + ("" if cap.settled else " (measurement budget spent)")
        run.phase("capacity", "ok", t, f"highest concurrency meeting the SLO: {cap.max_concurrency}{bound}{within}")

    # Capacity in request rate (open loop) ------------------------------------------------------
    rate_max = spec.slo.capacity_max_request_rate
    if rate_max and not run.server_gone:
        t = time.monotonic()

        res.rate_capacity = await rate_capacity_search(
            lambda rate: capacity_level(None, rate, replay=workload.timed),
            checks,
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
            t,
            f"highest request rate meeting the SLO ({how}): {rc.max_request_rate:g} req/s{bound}, "
            f"within [{rc.low:g}, {rc.high:g}]" + ("" if rc.settled else " (measurement budget spent)"),
        )

    # Sizing ------------------------------------------------------------------------------------
    if run.sizing is not None and (res.capacity is not None or res.rate_capacity is not None):
        _size(run)


def _size(run: Run) -> None:
    """Replicas and GPUs for the stated peak from the measured capacity; a peak too high fails."""
    res, inp = run.result, run.sizing
    assert inp is not None
    t = time.monotonic()
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
    if not sz.fits and sz.reason:
        run.failures.append(sz.reason)
    detail = (
        f"peak {sz.expected_peak_rps:g} req/s / {sz.capacity_rps:.3g} req/s per replica = {sz.replicas_needed} "
        f"replicas, {sz.gpus_needed} GPUs; {sz.field}.max_replicas {sz.max_replicas}"
    )
    run.phase("sizing", "ok" if sz.fits else "fail", t, detail)


async def compare_stable(
    run: Run,
    endpoint: Endpoint,
    client: httpx.AsyncClient,
    stable_ep: Endpoint,
    stable_client: httpx.AsyncClient,
    probes: list[Probe],
) -> None:
    """The comparison with the stable revision; its reasons join the verdict."""
    spec, load = run.spec, run.spec.load
    t = time.monotonic()
    run.log(
        f"validate: comparison with the stable revision at {stable_ep.base_url}: rounds of "
        f"{spec.comparison.round_requests} requests at concurrency {spec.comparison.concurrency}, "
        f"blocks of 4 rounds (candidate, stable, stable, candidate), {spec.comparison.min_blocks}-"
        f"{spec.comparison.max_blocks} blocks"
    )
    result = await compare_with_stable(
        spec.comparison,
        candidate=(client, endpoint),
        stable=(stable_client, stable_ep),
        candidate_suite=run.result.correctness,
        probes=probes,
        smoke=spec.smoke_suite,
        chat=load.endpoint == "chat",
        prompts=make_prompts(max(spec.comparison.round_requests, 1), load.input_words, seed=2),
        api=load.endpoint,
        output_tokens=spec.comparison.output_tokens,
        readiness_timeout_s=spec.readiness_timeout_s,
        max_duration_s=load.max_duration_s,
        log=run.log,
    )
    run.result.comparison = result
    run.failures.extend(result.failures)
    run.inconclusive.extend(result.inconclusive)
    status = {"worse": "fail", "undecided": "inconclusive"}.get(result.decision, "ok")
    detail = f"{result.decision.replace('_', ' ')} after {result.blocks} blocks"
    run.phase("comparison", status, t, detail)


async def quality_phase(
    run: Run,
    endpoint: Endpoint,
    client: httpx.AsyncClient,
    stable: tuple[httpx.AsyncClient, Endpoint] | None,
    texts: ReferenceTexts,
) -> None:
    """The quality question (likelihood of the reference texts); its reasons join the verdict."""
    spec = run.spec.quality
    t = time.monotonic()
    against = f"the stable revision at {stable[1].base_url}" if stable else "uniform guessing (no stable revision)"
    run.log(
        f"validate: quality: {len(texts.texts)} reference texts from {texts.source}, scored by likelihood "
        f"against {against}" + (f"; margin {spec.margin:g} bits per byte" if stable else "")
    )
    result = await ask_quality(spec, texts, candidate=(client, endpoint), stable=stable, log=run.log)
    run.result.quality = result
    run.failures.extend(result.failures)
    run.inconclusive.extend(result.inconclusive)
    status = {"worse": "fail", "undecided": "inconclusive"}.get(result.decision, "ok")
    bpb = [f"candidate {result.candidate_bpb:.3f}" if result.candidate_bpb is not None else "candidate -"]
    if stable:
        bpb.append(f"stable {'-' if result.stable_bpb is None else f'{result.stable_bpb:.3f}'}")
    if result.uniform_bpb is not None:
        bpb.append(f"guessing {result.uniform_bpb:.3f}")
    run.phase("quality", status, t, f"{result.texts_scored} texts, bits per byte: {', '.join(bpb)}")


def _prove(
    run: Run,
    before: Mapping[str, pd.Counters],
    after: Mapping[str, pd.Counters],
    prove_pd: bool,
    prove_prefix: bool,
) -> None:
    """Runs the llm-d proofs on the roles' counters around the load; their reasons join the verdict."""
    t = time.monotonic()
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
    for name, proof in proofs:
        run.result.pd[name] = proof.to_dict()
        for note in proof.notes:
            run.log(f"validate: {name}: {note}")
        (run.failures if proof.verdict == "fail" else run.inconclusive).extend(proof.reasons)
        status = {"pass": "ok", "fail": "fail"}.get(proof.verdict, "inconclusive")
        run.phase(name.replace("_", " "), status, t, "; ".join(proof.reasons or proof.notes))
