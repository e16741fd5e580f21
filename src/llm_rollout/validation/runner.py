"""The validation gate: readiness -> correctness -> recovery -> load -> comparison -> verdict -> report.

Two comparisons, each with its own evidence (never mixed): *recovery* - a compressed candidate
against its own uncompressed original served beside it (``validation.recovery``: greedy token
agreement and ratio checks such as 2x output throughput) - and *comparison* - the candidate
against the stable revision it would replace (``validation.comparison``: the suite's score and
non-inferiority of TTFT, TPOT and output throughput measured in interleaved rounds,
:mod:`llm_rollout.validation.compare`).

:func:`validate` is the one entry point (the KFP step, the standalone ``llm-rollout validate``
command and the tests all call it). It measures only the endpoint it is given.

Failure handling:

* A malformed spec (SLO expression, suite file, API key source) raises
  :class:`~llm_rollout.errors.SpecError` before any request is sent.
* Everything the endpoint does wrong becomes a *reason* in the result, never an exception: not
  ready in time, model not served, a failed probe, request errors, the server going away during
  the load (the remaining levels are skipped and the verdict is ``fail``).
* The report is written whatever happens - also when the run is aborted by an unexpected
  exception, which is then re-raised.

Logs: one progress line per phase and level. Prompts and completions never appear in logs or in
the result's ``reasons`` unless ``ValidationSpec.log_text`` is set (the HTML report shows the
probes' completions, escaped). The API key never appears anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from llm_rollout.errors import RolloutError, SpecError, TransientError
from llm_rollout.slo_expr import RATIO_SUFFIX
from llm_rollout.spec import ValidationSpec
from llm_rollout.steplog import log as default_log
from llm_rollout.validation import pd
from llm_rollout.validation.client import (
    OPEN_LOOP_MAX_STREAMS,
    Endpoint,
    LoadResult,
    level_label,
    make_client,
    make_prompts,
    resolve_api_key,
    run_load,
)
from llm_rollout.validation.compare import StableComparison, compare_with_stable
from llm_rollout.validation.metrics import RequestRecord, calculate_metrics
from llm_rollout.validation.probes import (
    SMOKE_PROMPTS,
    Agreement,
    Probe,
    ProbeResult,
    Readiness,
    check_readiness,
    list_models,
    load_suite,
    run_smoke,
    run_suite,
    token_agreement,
)
from llm_rollout.validation.prom import Sampler, Snapshot, scrape, server_view
from llm_rollout.validation.report import gate_questions, kfp_metrics, write_reports
from llm_rollout.validation.sizing import Sizing, SizingInput, size
from llm_rollout.validation.slo import (
    CapacityResult,
    Check,
    Judgement,
    RateCapacityResult,
    Verdict,
    capacity_search,
    goodput_limits,
    judge,
    parse_checks,
    rate_capacity_search,
)
from llm_rollout.validation.workload import Workload, build_workload

LogFn = Callable[[str], None]
MAX_ERROR_KINDS = 10
"""Distinct error texts kept per level (with their counts)."""
AGREEMENT_MAX_TOKENS = 32
REPLAY_LABEL = "replay"
"""The level of a timed workload replayed at its recorded arrival times."""


@dataclass
class LevelResult:
    """One measured load level.

    Attributes:
        label: ``c<N>`` or ``rate<R>``.
        concurrency: Concurrency (closed loop) or in-flight cap (Poisson).
        request_rate: Poisson rate, None for closed loop.
        judged: The SLO checks apply to this level.
        truncated: The level's time bound ended it early.
        metrics: The aggregates (:func:`~llm_rollout.validation.metrics.calculate_metrics`).
        records: Every request's record.
        errors: Distinct error texts with their counts (at most :data:`MAX_ERROR_KINDS`).
        purpose: ``load``, ``capacity`` (measured by the capacity search) or ``baseline``.
    """

    label: str
    concurrency: int | None
    request_rate: float | None
    judged: bool
    truncated: bool
    metrics: dict[str, Any]
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    errors: dict[str, int] = field(default_factory=dict)
    purpose: str = "load"

    def to_dict(self, *, with_requests: bool = False) -> dict[str, Any]:
        """Plain JSON data; the TTFT sample (for the distribution plot) always, records on request."""
        data = {
            "label": self.label,
            "concurrency": self.concurrency,
            "request_rate": self.request_rate,
            "judged": self.judged,
            "truncated": self.truncated,
            "purpose": self.purpose,
            "metrics": self.metrics,
            "errors": self.errors,
            "ttft_ms": [r.ttft * 1000 for r in self.records if r.success],
        }
        if with_requests:
            data["requests"] = [r.to_dict() for r in self.records]
        return data


@dataclass
class Phase:
    """One phase's outcome (shown in the report).

    Attributes:
        name: ``readiness``, ``correctness``, ``baseline``, ``load``, ``capacity``, ``verdict``.
        status: ``ok``, ``fail`` or ``skipped``.
        seconds: How long it took.
        detail: One line about it.
    """

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""


_QUESTION_NAMES = {
    "recovery": "recovery against the original",
    "comparison": "comparison with the stable revision",
    "slo": "slo",
}


@dataclass
class ValidationResult:
    """Everything a validation found.

    Attributes:
        verdict: ``pass``, ``fail`` or ``inconclusive`` - the pipeline promotes on ``pass`` only.
        reasons: Why: every failed check with its measured value, every outside failure, every
            inconclusive level (empty on pass). Free of prompts and completions unless
            ``log_text``.
        metrics: Flat KFP metrics (unit in the name; see :func:`~llm_rollout.validation.report.kfp_metrics`).
        report_paths: ``{"html", "json", "metrics"}`` paths when a report directory was given.
        url: The endpoint validated.
        model: The model name used.
        baseline_url: The baseline endpoint, if any.
        baseline_model: The baseline model name, if any.
        readiness: What readiness saw (None when it failed).
        correctness: Every probe's result.
        agreement: Greedy token agreement with the baseline (None without a baseline).
        levels: Every measured level of the new revision.
        baseline_levels: Levels measured on the baseline (for ratio checks).
        server: Server view per metrics role.
        judgement: Per-check results and per-level verdicts.
        capacity: The capacity search's outcome, when it ran.
        rate_capacity: The open-loop (request rate) capacity search's outcome, when it ran.
        sizing: Replicas and GPUs for ``scaling.expected_peak_rps``, when a peak was given and a
            capacity measured.
        workload: What the load sent (:meth:`~llm_rollout.validation.workload.Workload.describe`
            and its kind).
        comparison: The comparison with the stable revision, when one was given.
        pd: The llm-d proofs from the roles' metrics, when they ran: ``disaggregation`` and
            ``prefix_cache`` (each :meth:`~llm_rollout.validation.pd.Proof.to_dict`).
        phases: Per-phase status and timing.
        started_at: ISO time the validation began.
        seconds: Its duration.
        spec: The validation spec used.
    """

    verdict: Verdict
    reasons: list[str]
    metrics: dict[str, float]
    report_paths: dict[str, Path]
    url: str
    model: str
    baseline_url: str | None = None
    baseline_model: str | None = None
    readiness: Readiness | None = None
    correctness: list[ProbeResult] = field(default_factory=list)
    agreement: Agreement | None = None
    levels: list[LevelResult] = field(default_factory=list)
    baseline_levels: list[LevelResult] = field(default_factory=list)
    server: dict[str, dict[str, Any]] = field(default_factory=dict)
    judgement: Judgement | None = None
    capacity: CapacityResult | None = None
    rate_capacity: RateCapacityResult | None = None
    sizing: Sizing | None = None
    workload: dict[str, Any] = field(default_factory=dict)
    comparison: StableComparison | None = None
    pd: dict[str, Any] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0
    spec: ValidationSpec | None = None

    @property
    def passed(self) -> bool:
        """Whether the verdict is ``pass``."""
        return self.verdict == "pass"

    @property
    def questions(self) -> list[dict[str, Any]]:
        """The gate's questions with their answers (:func:`~llm_rollout.validation.report.gate_questions`)."""
        return gate_questions({
            "baseline": {"url": self.baseline_url, "model": self.baseline_model} if self.baseline_url else None,
            "agreement": vars(self.agreement) if self.agreement else None,
            "spec": self.spec.model_dump(mode="json") if self.spec is not None else None,
            "judgement": self.judgement.to_dict() if self.judgement else None,
            "comparison": self.comparison.to_dict() if self.comparison else None,
        })  # fmt: skip

    @property
    def summary(self) -> str:
        """The step's ``summary`` output: which question failed, then one line per reason; or one pass line.

        The first line answers each question asked, e.g. ``fail: comparison with the stable
        revision: inferior (recovery: not asked; slo: met)``.
        """
        if self.reasons:
            questions = self.questions
            failed = [q for q in questions if q["ok"] is False] or [q for q in questions if q["ok"] is None]
            others = [q for q in questions if q not in failed]
            head = f"{self.verdict}: " + (
                "; ".join(f"{_QUESTION_NAMES[q['key']]}: {q['decision']}" for q in failed) or "validation"
            )
            if others:
                head += " (" + "; ".join(f"{_QUESTION_NAMES[q['key']]}: {q['decision']}" for q in others) + ")"
            return "\n".join([head, *self.reasons])
        return f"pass: every check met at {', '.join(lv.label for lv in self.levels if lv.judged) or 'no level'}"

    @property
    def report_html(self) -> Path | None:
        """The HTML report's path, if written."""
        return self.report_paths.get("html")

    @property
    def report_json(self) -> Path | None:
        """The full JSON's path, if written."""
        return self.report_paths.get("json")

    def level(self, label: str) -> LevelResult:
        """A measured level by label (``c10``)."""
        for lv in self.levels:
            if lv.label == label:
                return lv
        raise KeyError(f"no level {label!r}; measured: {[lv.label for lv in self.levels]}")

    def to_dict(self, *, with_requests: bool = False) -> dict[str, Any]:
        """Plain JSON data (what ``validation.json`` holds; per-request records with ``with_requests``)."""
        spec = self.spec.model_dump(mode="json") if self.spec is not None else None
        return {
            "verdict": self.verdict,
            "reasons": self.reasons,
            "summary": self.summary,
            "endpoint": {"url": self.url, "model": self.model},
            "baseline": {"url": self.baseline_url, "model": self.baseline_model} if self.baseline_url else None,
            "started_at": self.started_at,
            "seconds": self.seconds,
            "phases": [vars(p) for p in self.phases],
            "readiness": vars(self.readiness) if self.readiness else None,
            "correctness": [p.to_dict() for p in self.correctness],
            "agreement": vars(self.agreement) if self.agreement else None,
            "levels": [lv.to_dict(with_requests=with_requests) for lv in self.levels],
            "baseline_levels": [lv.to_dict(with_requests=with_requests) for lv in self.baseline_levels],
            "server": self.server,
            "judgement": self.judgement.to_dict() if self.judgement else None,
            "capacity": vars(self.capacity) if self.capacity else None,
            "rate_capacity": vars(self.rate_capacity) if self.rate_capacity else None,
            "sizing": self.sizing.to_dict() if self.sizing else None,
            "workload": self.workload,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "pd": self.pd,
            "metrics": self.metrics,
            "spec": spec,
        }


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


class _Run:
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


async def validate_async(
    spec: ValidationSpec,
    url: str,
    model: str,
    *,
    baseline_url: str | None = None,
    baseline_model: str | None = None,
    stable_url: str | None = None,
    stable_model: str | None = None,
    report_dir: str | Path | None = None,
    suite: str | Path | Sequence[Probe] | None = None,
    metrics_urls: Mapping[str, str] | None = None,
    log: LogFn | None = None,
    sizing: SizingInput | None = None,
) -> ValidationResult:
    """The async form of :func:`validate` (same arguments and result)."""
    log = default_log if log is None else log
    started = time.monotonic()
    run = _Run(spec, url, model, log)
    res = run.result
    res.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    baseline_url = baseline_url or spec.recovery.base_url
    baseline_model = baseline_model or spec.recovery.base_model or (model if baseline_url else None)
    res.baseline_url, res.baseline_model = baseline_url, baseline_model

    # Everything that can be wrong with the input is found before the first request.
    checks = parse_checks(spec.slo.checks, "validation.slo.checks")
    base_checks = parse_checks(spec.recovery.checks, "validation.recovery.checks") if baseline_url else []
    probes: list[Probe] = []
    if spec.suite_file:
        probes += load_suite(spec.suite_file)
    if isinstance(suite, str | Path):
        probes += load_suite(suite)
    elif suite:
        probes += list(suite)
    api_key = resolve_api_key(spec.api_key_env, spec.api_key_file)
    run.workload = workload = build_workload(spec.load)
    if workload.timed and workload.trace_rate is None and spec.slo.capacity_max_request_rate:
        raise SpecError(
            "validation.slo.capacity_max_request_rate",
            "the workload file's timestamps span no time, so its replay cannot be made faster or slower",
            "spread the timestamps over the recorded period, or drop them to search concurrency only",
        )
    run.sizing = sizing
    res.workload = {
        "name": workload.name,
        "source": workload.source,
        "requests": len(workload.requests),
        "timed": workload.timed,
        "trace_rate_req_s": workload.trace_rate,
        "description": workload.describe(),
    }
    endpoint = Endpoint(url, model, api_key, spec.tls_verify, spec.ca_bundle)
    base_ep = (
        Endpoint(baseline_url, baseline_model or model, api_key, spec.tls_verify, spec.ca_bundle)
        if baseline_url
        else None
    )
    stable_ep = (
        Endpoint(stable_url, stable_model or model, api_key, spec.tls_verify, spec.ca_bundle)
        if stable_url and spec.comparison.enabled
        else None
    )
    load = spec.load
    conc = sorted({*load.concurrency, *spec.slo.judge_concurrency})
    judged_labels = {f"c{c}" for c in spec.slo.judge_concurrency}
    if workload.timed:
        # A recorded trace is replayed at its arrival times (open loop): that level is judged,
        # instead of the closed-loop levels.
        conc, judged_labels = [], {REPLAY_LABEL}
    pool = max([*conc, spec.slo.capacity_max_concurrency or 1, 1])
    if load.request_rate is not None or workload.timed or spec.slo.capacity_max_request_rate:
        pool = max(pool, OPEN_LOOP_MAX_STREAMS)
    level_names = [f"c{c}" for c in conc] + sorted(judged_labels - {f"c{c}" for c in conc})
    roles = dict(metrics_urls or spec.metrics_urls or {"server": endpoint.base_url + "/metrics"})
    log(
        f"validate: {model} at {endpoint.base_url}: levels {', '.join(level_names)}"
        + (f" + rate {load.request_rate:g}/s" if load.request_rate else "")
        + f", {load.num_prompts} requests each, {len(checks)} SLO checks; workload {workload.describe()}"
        + (f", recovery against {base_ep.model} at {base_ep.base_url}" if base_ep else "")
        + (f", compared with the stable revision at {stable_ep.base_url}" if stable_ep else "")
    )

    client = make_client(endpoint, pool + 2)
    base_client = make_client(base_ep, max(conc, default=1) + 2) if base_ep else None
    stable_client = make_client(stable_ep, spec.comparison.concurrency + 2) if stable_ep else None
    # /metrics gets the API key only on the endpoint's own origin (a gateway may guard it there);
    # other hosts (e.g. llm-d role pods) never see it.
    prom_client = make_client(Endpoint(endpoint.base_url, model, None, spec.tls_verify, spec.ca_bundle), 4)
    origin = httpx.URL(endpoint.base_url)
    prom_headers = {
        role: {"Authorization": f"Bearer {api_key}"}
        for role, u in roles.items()
        if api_key and (httpx.URL(u).scheme, httpx.URL(u).netloc) == (origin.scheme, origin.netloc)
    }
    prom_client.timeout = httpx.Timeout(5.0)
    aborted: BaseException | None = None
    try:
        await _run_phases(
            run, endpoint, client, base_ep, base_client, prom_client, checks, base_checks, probes, conc,
            judged_labels, roles, prom_headers,
        )  # fmt: skip
        # Already failing (readiness, correctness, recovery, the server gone): the comparison could
        # not change the verdict.
        failing = run.failures or run.server_gone or res.readiness is None
        if stable_ep is not None and stable_client is not None and not failing:
            await _compare(run, endpoint, client, stable_ep, stable_client, probes)
    except BaseException as err:  # the report is written whatever happens, then the error goes on
        aborted = err
        run.failures.append(f"validation aborted: {type(err).__name__}: {err}")
    finally:
        for c in (client, base_client, stable_client, prom_client):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.aclose()
    _finish(run, started, checks + base_checks, judged_labels)
    if report_dir is not None:
        data = res.to_dict()
        full = res.to_dict(with_requests=True)
        res.report_paths = write_reports(data, report_dir, full=full)
        log(f"validate: report {res.report_paths['html']}")
    log(f"validate: verdict {res.verdict}" + (f" ({len(res.reasons)} reasons)" if res.reasons else ""))
    for reason in res.reasons:
        log(f"validate:   {reason}")
    if aborted is not None:
        raise aborted
    return res


async def _run_phases(
    run: _Run,
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
    for p in bad:
        detail = "; ".join(p.failures) if spec.log_text else ", ".join(p.failed_checks())
        run.failures.append(f"correctness: {p.name} failed ({detail})")
    if res.correctness:
        run.phase(
            "correctness",
            "fail" if bad else "ok",
            t,
            f"{len(res.correctness) - len(bad)}/{len(res.correctness)} probes passed",
        )
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
    if cap_max and not run.server_gone:
        t = time.monotonic()
        known = {lv.concurrency: lv.metrics for lv in res.levels if lv.request_rate is None and lv.concurrency}

        async def measure_capacity(concurrency: int) -> Mapping[str, Any]:
            lv = await measure(endpoint, client, concurrency, None)
            lv.purpose, lv.judged = "capacity", False
            res.levels.append(lv)
            log(f"validate: capacity {_level_line(lv)}")
            return lv.metrics

        res.capacity = await capacity_search(
            measure_capacity,
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

        async def measure_rate(rate: float) -> Mapping[str, Any]:
            lv = await measure(endpoint, client, None, rate, replay=workload.timed)
            lv.purpose, lv.judged = "capacity", False
            res.levels.append(lv)
            log(f"validate: capacity {_level_line(lv)}")
            return lv.metrics

        res.rate_capacity = await rate_capacity_search(
            measure_rate,
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


def _size(run: _Run) -> None:
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


async def _compare(
    run: _Run,
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


def _prove(
    run: _Run,
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


def _finish(run: _Run, started: float, checks: list[Check], judged_labels: set[str]) -> None:
    res = run.result
    measured = {lv.label: lv.metrics for lv in res.levels if lv.judged}
    base = {lv.label: lv.metrics for lv in res.baseline_levels}
    # Judged levels never reached: after a readiness failure the failure says it all; after the
    # server went away, they are listed.
    missing = sorted(judged_labels - measured.keys()) if res.readiness is not None else []
    res.judgement = judge(
        measured,
        checks,
        min_successful=run.spec.slo.min_successful_requests,
        baseline_levels=base if res.baseline_levels else None,
        failures=run.failures,
        inconclusive=run.inconclusive,
        missing_levels=missing,
    )
    res.verdict = res.judgement.verdict
    # A recovery check's reason names its question (the run summary says which question failed).
    res.reasons = [f"recovery: {r}" if RATIO_SUFFIX in r else r for r in res.judgement.reasons]
    res.seconds = round(time.monotonic() - started, 3)
    res.metrics = kfp_metrics(res.to_dict())


def validate(
    spec: ValidationSpec,
    url: str,
    model: str,
    *,
    baseline_url: str | None = None,
    baseline_model: str | None = None,
    stable_url: str | None = None,
    stable_model: str | None = None,
    report_dir: str | Path | None = None,
    suite: str | Path | Sequence[Probe] | None = None,
    metrics_urls: Mapping[str, str] | None = None,
    log: LogFn | None = None,
    sizing: SizingInput | None = None,
) -> ValidationResult:
    """Validates one OpenAI-compatible endpoint (a new model revision) against the spec.

    Phases: readiness (model listed, one streamed completion, within
    ``spec.readiness_timeout_s``), correctness (smoke suite, ``spec.suite_file`` and ``suite``),
    recovery (greedy token agreement with the uncompressed original, when it is given), load at
    every level of ``spec.load.concurrency`` and ``spec.slo.judge_concurrency`` (plus a Poisson
    level with ``spec.load.request_rate``), the server's ``/metrics`` before and after, the
    original at the judged levels (for ``spec.recovery.checks``), the comparison with the stable
    revision (when given: suite score and interleaved non-inferiority), the SLO verdict, an
    optional capacity search, and the report.

    Args:
        spec: The validation spec (suite, load, SLO, credentials, TLS).
        url: Base URL of the endpoint (``http://host:port``; ``/v1`` is optional).
        model: The model name the endpoint serves.
        baseline_url: The uncompressed original's endpoint, for recovery (default
            ``spec.recovery.base_url``).
        baseline_model: Model name there (default ``spec.recovery.base_model``, else ``model``).
        stable_url: The stable revision's endpoint, for the comparison (none: no comparison).
        stable_model: Model name there (default ``model``).
        report_dir: Where ``report.html``, ``validation.json`` and ``metrics.json`` go (none if None).
        suite: More probes: a suite file or a list of :class:`~llm_rollout.validation.probes.Probe`.
        metrics_urls: Prometheus endpoints by role (default ``spec.metrics_urls``, else
            ``<url>/metrics`` as role ``server``).
        log: Progress callback (default: ``[llm-rollout]`` lines on stderr).
        sizing: The rollout spec's peak and bounds
            (:func:`~llm_rollout.validation.sizing.sizing_input`): with a capacity search, the
            replicas and GPUs the peak needs, and a failure when ``max_replicas`` is too low.

    Returns:
        The result: ``verdict``, ``reasons``, ``metrics``, ``report_paths`` and every detail.

    Raises:
        SpecError: A malformed SLO expression, suite file or credential source (before any request).
        RuntimeError: Called from a running event loop (use :func:`validate_async` there).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("validate() was called inside a running event loop; await validate_async() instead")
    return asyncio.run(
        validate_async(
            spec,
            url,
            model,
            baseline_url=baseline_url,
            baseline_model=baseline_model,
            stable_url=stable_url,
            stable_model=stable_model,
            report_dir=report_dir,
            suite=suite,
            metrics_urls=metrics_urls,
            log=log,
            sizing=sizing,
        )
    )
