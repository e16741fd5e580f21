"""The state of one validation and the measuring of one load level, shared by the gate's phases.

:class:`Targets` is what the phases measure and with what (fixed before the first request);
:class:`Run` holds what they found so far: the result, its answers
(:class:`~llm_rollout.validation.answers.Verdict`) and the phase lines, and measures one load level
(:meth:`Run.measure`). The phases are in :mod:`llm_rollout.validation.phases` (the questions) and
:mod:`llm_rollout.validation.load_phases` (the load, capacity, sizing and llm-d proofs).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from llm_rollout.spec import ValidationSpec
from llm_rollout.validation.answers import Answer, Verdict
from llm_rollout.validation.client import Endpoint
from llm_rollout.validation.load import LoadResult, level_label, run_load
from llm_rollout.validation.metrics import RequestRecord, calculate_metrics, unmeasured_series
from llm_rollout.validation.probes import Probe
from llm_rollout.validation.result import LevelResult, Phase, ValidationResult
from llm_rollout.validation.sizing import SizingInput
from llm_rollout.validation.slo import Check, goodput_limits
from llm_rollout.validation.workload import Workload

LogFn = Callable[[str], None]
MAX_ERROR_KINDS = 10
"""Distinct error texts kept per level (with their counts)."""
AGREEMENT_MAX_TOKENS = 32
REPLAY_LABEL = "replay"
"""The level of a timed workload replayed at its recorded arrival times."""


def error_kinds(records: Sequence[RequestRecord]) -> dict[str, int]:
    counts = Counter(r.error for r in records if not r.success and r.error)
    return dict(counts.most_common(MAX_ERROR_KINDS))


def level_line(lv: LevelResult) -> str:
    m = lv.metrics

    def ms(name: str) -> str:
        v = m.get(name)
        if v is None and name.split("_")[1] in lv.unmeasured:
            return "unmeasured"
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


@dataclass
class Targets:
    """What the phases measure and with what (fixed before the first request).

    Attributes:
        endpoint: The candidate.
        client: Its HTTP client.
        prom_client: The client for the servers' ``/metrics``.
        roles: ``/metrics`` URL per role (``server``, or llm-d's ``prefill``/``decode``/``epp``).
        prom_headers: Headers per role (the API key only on the endpoint's own origin).
        checks: The SLO's checks.
        base_checks: Recovery's ratio checks (``*_ratio_vs_baseline``).
        probes: The correctness suite's probes.
        conc: The closed-loop concurrency levels.
        judged_labels: The levels the SLO judges.
        base: The uncompressed original and its client (recovery), when given.
    """

    endpoint: Endpoint
    client: httpx.AsyncClient
    prom_client: httpx.AsyncClient
    roles: dict[str, str]
    prom_headers: dict[str, dict[str, str]]
    checks: list[Check]
    base_checks: list[Check] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    conc: list[int] = field(default_factory=list)
    judged_labels: set[str] = field(default_factory=set)
    base: tuple[Endpoint, httpx.AsyncClient] | None = None


class Run:
    """State of one validation (kept small so the report can always be written from it)."""

    def __init__(self, spec: ValidationSpec, url: str, model: str, log: LogFn) -> None:
        self.spec = spec
        self.log = log
        self.result = ValidationResult("inconclusive", [], {}, {}, url, model, spec=spec)
        self.server_gone = False
        self.workload: Workload | None = None
        self.sizing: SizingInput | None = None
        self.suite_paired = False
        """The scored probes are judged against the stable revision's (the comparison runs)."""
        self.base_ready = False
        self.recovery_reasons: list[str] = []
        """Recovery's reasons before its ratio checks are judged (the original unusable, agreement lost)."""
        self._encoded: dict[str, list[tuple[Any, bytes]]] = {}

    @property
    def gate(self) -> Verdict:
        """The answers so far (the result's)."""
        return self.result.gate

    @property
    def failing(self) -> bool:
        """Some question already failed (the comparison could not change the verdict)."""
        return any(a.decision == "fail" for a in self.gate.answers)

    def answer(self, answer: Answer) -> Answer:
        """Adds (or completes, by key) one question's answer."""
        return self.gate.add(answer)

    def phase(self, name: str, status: str, started: float, detail: str = "") -> None:
        seconds = time.monotonic() - started
        self.result.phases.append(Phase(name, status, round(seconds, 3), detail))
        self.log(f"validate: {name} {status} in {seconds:.1f} s" + (f": {detail}" if detail else ""))

    # Measuring one level ------------------------------------------------------------------------

    def bodies(self, ep: Endpoint) -> list[tuple[Any, bytes]]:
        """The workload's requests for one endpoint's model name, encoded once."""
        workload, api = self.workload, self.spec.load.endpoint
        assert workload is not None
        if ep.model not in self._encoded:
            self._encoded[ep.model] = [
                (r.api(api), json.dumps(r.payload(api, ep.model)).encode()) for r in workload.requests
            ]
        return self._encoded[ep.model]

    async def measure(
        self,
        t: Targets,
        ep: Endpoint,
        cl: httpx.AsyncClient,
        concurrency: int | None,
        rate: float | None,
        *,
        replay: bool = False,
    ) -> LevelResult:
        """One load level on ``ep`` (closed loop, Poisson, or the workload's recorded times)."""
        workload, load = self.workload, self.spec.load
        assert workload is not None
        replayed = replay and workload.timed
        label = None
        if replayed:
            label = REPLAY_LABEL if rate is None else f"{REPLAY_LABEL}_{level_label(None, rate)}"
        lr: LoadResult = await run_load(
            cl,
            ep,
            [r.prompt or "" for r in workload.requests],
            api=load.endpoint,
            output_tokens=load.output_tokens,
            num_requests=len(workload.requests) if replayed else load.num_prompts,
            concurrency=concurrency,
            request_rate=(rate or workload.trace_rate) if replayed else rate,
            max_duration_s=load.max_duration_s,
            bodies=self.bodies(ep),
            arrivals=workload.arrivals(rate) if replayed else None,
            label=label,
        )
        if replayed:
            concurrency, rate = None, lr.request_rate
        metrics = calculate_metrics(lr.records, lr.duration_s, goodput_limits(t.checks))
        return LevelResult(
            lr.label,
            concurrency,
            rate,
            lr.label in t.judged_labels,
            lr.truncated,
            metrics,
            lr.records,
            error_kinds(lr.records),
            unmeasured=unmeasured_series(lr.records),
        )
