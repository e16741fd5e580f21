"""The validation gate: readiness -> correctness -> recovery -> load -> comparison -> verdict -> report.

Two comparisons, each with its own evidence (never mixed): *recovery* - a compressed candidate
against its own uncompressed original served beside it (``validation.recovery``: greedy token
agreement and ratio checks such as 2x output throughput) - and *comparison* - the candidate
against the stable revision it would replace (``validation.comparison``: the suite's score and
non-inferiority of TTFT, TPOT and output throughput measured in interleaved rounds,
:mod:`llm_rollout.validation.compare`).

:func:`validate` is the one entry point (the KFP step, the standalone ``llm-rollout validate``
command and the tests all call it). It measures only the endpoint it is given.

This module holds the entry point and the order of things (inputs checked, clients opened, the
phases, the comparison, the verdict, the report); the phases themselves are in
:mod:`llm_rollout.validation.phases`, each returning its typed answer
(:mod:`llm_rollout.validation.answers`; the verdict is the worst), and the result types in
:mod:`llm_rollout.validation.result`.

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
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from llm_rollout.errors import SpecError
from llm_rollout.spec import ValidationSpec
from llm_rollout.steplog import log as default_log
from llm_rollout.urls import redact_text, redact_tree, redact_url, same_origin
from llm_rollout.validation.answers import Answer
from llm_rollout.validation.client import OPEN_LOOP_MAX_STREAMS, Endpoint, key_for, make_client, resolve_api_key
from llm_rollout.validation.phases import (
    REPLAY_LABEL,
    LogFn,
    Run,
    Targets,
    compare_stable,
    judge_phase,
    quality_phase,
    run_phases,
)
from llm_rollout.validation.probes import Probe, load_suite
from llm_rollout.validation.quality import reference_texts
from llm_rollout.validation.report import write_reports
from llm_rollout.validation.result import ValidationResult
from llm_rollout.validation.sizing import SizingInput
from llm_rollout.validation.slo import Check, parse_checks
from llm_rollout.validation.summary import kfp_metrics
from llm_rollout.validation.workload import build_workload


async def validate_async(
    spec: ValidationSpec,
    url: str,
    model: str,
    *,
    baseline_url: str | None = None,
    baseline_model: str | None = None,
    stable_url: str | None = None,
    stable_model: str | None = None,
    stable_is_same_service: bool = False,
    report_dir: str | Path | None = None,
    suite: str | Path | Sequence[Probe] | None = None,
    metrics_urls: Mapping[str, str] | None = None,
    log: LogFn | None = None,
    sizing: SizingInput | None = None,
) -> ValidationResult:
    """The async form of :func:`validate` (same arguments and result)."""
    log = _without_credentials(default_log if log is None else log)
    started = time.monotonic()
    run = Run(spec, redact_url(url), model, log)
    res = run.result
    res.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    baseline_url = baseline_url or spec.recovery.base_url
    baseline_model = baseline_model or spec.recovery.base_model or (model if baseline_url else None)
    res.baseline_url, res.baseline_model = redact_url(baseline_url) if baseline_url else None, baseline_model

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
    texts = reference_texts(spec.quality, spec.load) if spec.quality.enabled else None
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
        Endpoint(
            baseline_url,
            baseline_model or model,
            key_for(baseline_url, url, api_key, spec.recovery.send_api_key, "validation.recovery.send_api_key"),
            spec.tls_verify,
            spec.ca_bundle,
        )
        if baseline_url
        else None
    )
    stable_ep = (
        Endpoint(
            stable_url,
            stable_model or model,
            key_for(
                stable_url,
                url,
                api_key,
                spec.comparison.send_api_key or stable_is_same_service,
                "validation.comparison.send_api_key",
            ),
            spec.tls_verify,
            spec.ca_bundle,
        )
        if stable_url and (spec.comparison.enabled or spec.quality.enabled)
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
    prom_headers = {
        role: {"Authorization": f"Bearer {api_key}"}
        for role, u in roles.items()
        if api_key and same_origin(u, endpoint.base_url)
    }
    prom_client.timeout = httpx.Timeout(5.0)
    # With the comparison running, the suite's scored probes are judged against the stable's.
    run.suite_paired = res.suite_paired = stable_ep is not None and spec.comparison.enabled
    targets = Targets(
        endpoint, client, prom_client, roles, prom_headers, checks, base_checks, probes, conc, judged_labels,
        base=(base_ep, base_client) if base_ep is not None and base_client is not None else None,
    )  # fmt: skip
    aborted: BaseException | None = None
    try:
        await run_phases(run, targets)
        stable = (stable_client, stable_ep) if stable_client is not None and stable_ep is not None else None
        if texts is not None and res.readiness is not None and not run.server_gone:
            await quality_phase(run, targets, stable if spec.quality.enabled else None, texts)
        # Already failing (readiness, correctness, quality, recovery, the server gone): the
        # comparison could not change the verdict.
        failing = run.failing or run.server_gone or res.readiness is None
        if stable_ep is not None and stable_client is not None and spec.comparison.enabled and not failing:
            await compare_stable(run, targets, stable_ep, stable_client)
    except BaseException as err:  # the report is written whatever happens, then the error goes on
        aborted = err
        reason = f"validation aborted: {type(err).__name__}: {err}"
        run.answer(Answer("aborted", "fail", reasons=[reason], summarized=False))
    finally:
        for c in (client, base_client, stable_client, prom_client):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.aclose()
    _finish(run, started, checks, base_checks, judged_labels)
    if report_dir is not None:
        # No URL in a report or results file carries credentials (a user:password@ in a given URL).
        data = redact_tree(res.to_dict())
        full = redact_tree(res.to_dict(with_requests=True))
        res.report_paths = write_reports(data, report_dir, full=full)
        log(f"validate: report {res.report_paths['html']}")
    log(f"validate: verdict {res.verdict}" + (f" ({len(res.reasons)} reasons)" if res.reasons else ""))
    for reason in res.reasons:
        log(f"validate:   {reason}")
    if aborted is not None:
        raise aborted
    return res


def _without_credentials(log: LogFn) -> LogFn:
    """``log`` with the credentials of every URL in a line removed."""
    return lambda line: log(redact_text(line))


def _finish(run: Run, started: float, checks: list[Check], base_checks: list[Check], judged_labels: set[str]) -> None:
    """The SLO's and recovery's judgement, then the verdict (the worst answer) and the Metrics from the answers."""
    res = run.result
    judge_phase(run, checks, base_checks, judged_labels)
    res.verdict = run.gate.decision
    res.reasons = run.gate.reasons
    res.seconds = round(time.monotonic() - started, 3)
    res.metrics = kfp_metrics(res.to_dict())


def validate(*args: Any, **kwargs: Any) -> ValidationResult:
    """Validates one OpenAI-compatible endpoint (a new model revision) against the spec.

    Takes :func:`validate_async`'s arguments (``spec, url, model`` and the keywords below) and runs
    it to completion.

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
        stable_is_same_service: The platform derived ``stable_url`` from the same service's own
            names (its stable revision, serving with the same key): the key goes there whatever
            its origin. A URL a person typed gets it only with ``comparison.send_api_key``.
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
    return asyncio.run(validate_async(*args, **kwargs))
