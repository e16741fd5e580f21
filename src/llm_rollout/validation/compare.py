"""The candidate against the stable revision: quality by the suite's score, speed by non-inferiority.

:func:`compare_with_stable` answers "is the candidate at least as good as what serves now?"
(``validation.comparison``, :class:`~llm_rollout.spec.ComparisonSpec`):

* The suite: the same correctness suite (smoke checks and the user's probes) is run on the
  stable revision, and the scored probes (not marked ``must_pass``) are paired item by item:
  the candidate fails when it gets fewer right than the stable beyond chance (McNemar's exact
  test, :func:`~llm_rollout.validation.stats.mcnemar_exact`, at ``confidence``) and by more than
  ``quality_tolerance`` of the suite; then no speed is measured. Never text agreement with the
  old model: a retrained model legitimately says other things. (The likelihood of reference
  texts is the quality question's, :mod:`llm_rollout.validation.quality`.)
* Speed: after one warm-up round each, rounds of ``round_requests`` requests at ``concurrency``
  run in counterbalanced blocks - candidate, stable, stable, candidate - so that whatever else the
  machine does, and any cost of following the other side, hits both alike. Before a round that
  follows the other side's, the comparison waits ``settle_s`` when set (vLLM's multiprocess
  workers busy-poll for 1 s after their last step; on shared CPUs that poll slowed the side
  measured next by 40-50 %), then sends a discarded burst of ``concurrency`` requests (the
  server's own wake-up). Each round gives its TTFT and TPOT statistics and its steady-state
  output throughput (``concurrency`` x the median request's tokens / end-to-end latency); the blocks are judged with
  :func:`~llm_rollout.validation.stats.paired_non_inferiority` at a look after every block from
  ``min_blocks`` to ``max_blocks`` (:func:`~llm_rollout.validation.stats.sequential_looks`: a
  trimmed-mean t interval of the block log-ratios, the sign test at the last look, the error
  spread over the looks). The blocks stop once every
  metric is decided (or one is worse); at ``max_blocks`` a metric still undecided makes the
  verdict inconclusive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from llm_rollout.errors import RolloutError
from llm_rollout.spec import ComparisonSpec
from llm_rollout.validation.answers import Decision
from llm_rollout.validation.client import Endpoint
from llm_rollout.validation.load import run_load
from llm_rollout.validation.metrics import MIN_TOKEN_GAP_S, RequestRecord, streamed  # noqa: F401
from llm_rollout.validation.probes import Probe, ProbeResult, run_smoke, run_suite
from llm_rollout.validation.readiness import check_readiness
from llm_rollout.validation.stats import (
    SAID,
    Comparison,
    Rule,
    block_sums,
    mcnemar_exact,
    paired_non_inferiority,
    sequential_looks,
    statistic,
)

LogFn = Callable[[str], None]


@dataclass
class StableComparison:
    """What the comparison with the stable revision found.

    Attributes:
        stable_url: The stable revision's endpoint.
        quality: The suite on both sides: ``{"candidate_passed", "stable_passed", "total", "scored",
            "tolerance", "ok"}`` and McNemar's counts (``only_stable``, ``only_candidate``,
            ``p_value``, ``confidence``, ``fewer``) over the scored probes.
        speed: The last look's comparisons.
        rounds: Rounds measured per side.
        blocks: Counterbalanced blocks (candidate, stable, stable, candidate) measured.
        looks: Looks taken.
        confidence: The confidence of the interim looks (the last look's is in its comparisons).
        per_round: Each side's per-round values in the order measured (``{"candidate": {"ttft":
            [...], "tpot": [...], "throughput": [...]}, "stable": {...}}``; rounds ``2b`` and
            ``2b + 1`` of a side form block ``b``), the evidence behind the intervals.
        failures: Reasons the candidate is worse (the verdict fails).
        inconclusive: Reasons it could not be decided.
        seconds: Time the comparison took.
    """

    stable_url: str
    quality: dict[str, Any] = field(default_factory=dict)
    speed: list[Comparison] = field(default_factory=list)
    rounds: int = 0
    blocks: int = 0
    looks: int = 0
    confidence: float = 0.0
    per_round: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def decision(self) -> Decision:
        """``fail`` (inferior), ``inconclusive`` or ``pass`` (non-inferior): the gate's one vocabulary."""
        return "fail" if self.failures else "inconclusive" if self.inconclusive else "pass"

    @property
    def said(self) -> str:
        """The decision as the comparison's lines say it (``not worse``, ``worse``, ``undecided``)."""
        return SAID[self.decision]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "stable_url": self.stable_url, "decision": self.decision, "said": self.said, "quality": self.quality,
            "speed": [c.to_dict() for c in self.speed], "rounds": self.rounds, "blocks": self.blocks,
            "looks": self.looks, "per_round": self.per_round,
            "confidence": self.confidence, "failures": self.failures, "inconclusive": self.inconclusive,
            "seconds": self.seconds,
        }  # fmt: skip


# One rule for a stream that arrived in one piece, here and in the load levels' metrics.
_streamed = streamed


@dataclass
class _Rounds:
    """Per-round values of one side: the TTFT statistic and mean TPOT (ms), steady-state throughput (tok/s)."""

    ttft: list[float | None] = field(default_factory=list)
    tpot: list[float | None] = field(default_factory=list)
    throughput: list[float | None] = field(default_factory=list)

    def add(self, records: Sequence[RequestRecord], spec: ComparisonSpec) -> None:
        ok = [r for r in records if r.success]
        self.ttft.append(statistic([r.ttft * 1000.0 for r in ok], spec.ttft_statistic))
        # Token-weighted mean time per output token after the first, over the requests the client
        # saw streamed. A stream that arrived in one piece (its gaps are parse times, microseconds)
        # has no decode time to measure, not a zero one; a round where most did has no TPOT.
        streamed = [r for r in ok if r.output_tokens > 1 and _streamed(r)]
        decode_s = sum(r.latency - r.ttft for r in streamed)
        decode_tokens = sum(r.output_tokens - 1 for r in streamed)
        seen = decode_tokens and decode_s > 0 and 2 * len(streamed) >= len(ok)
        self.tpot.append(1000.0 * decode_s / decode_tokens if seen else None)
        # Closed-loop steady state: `concurrency` streams, each making tokens at the rate of a
        # typical request (the median of tokens / end-to-end latency: a pause on a busy machine
        # that hits a few requests of the round moves it by a rank, not by its length). The
        # round's wall time would add its ramp-up and drain, which on short rounds is most of it.
        rate = statistic([r.output_tokens / r.latency for r in ok if r.latency > 0 and r.output_tokens], "median")
        self.throughput.append(spec.concurrency * rate if rate else None)


def judge_speed(
    cand: _Rounds, stable: _Rounds, spec: ComparisonSpec, confidence: float, rule: Rule | None = None
) -> list[Comparison]:
    """The three speed comparisons over the blocks measured so far (each side's rounds 2b, 2b+1 form block b).

    TPOT is unmeasured (``inconclusive`` with ``measured`` False: left out of the decision, and said
    so) when fewer than half of the blocks had token gaps on both sides: the client saw the streams
    arrive in one piece, which on a busy machine happens when the server's API process is
    descheduled for longer than a stream lasts (the tiny model makes 32 tokens in ~60 ms). More
    blocks would not change that, and the output throughput, from each request's end-to-end time,
    still covers decode speed.
    """
    comps = judge_blocks(cand, stable, spec, confidence, rule)
    blocks = len(cand.tpot) // 2
    tpot = comps[1]
    if tpot.undecided and blocks >= spec.min_blocks and 2 * tpot.pairs < blocks:
        comps[1] = replace(
            tpot, measured=False,
            note=f"only {tpot.pairs}/{blocks} blocks had token gaps on both sides: the streams arrived in one piece "
            "(a busy machine); output throughput still covers decode speed",
        )  # fmt: skip
    return comps


def judge_blocks(
    cand: _Rounds, stable: _Rounds, spec: ComparisonSpec, confidence: float, rule: Rule | None = None
) -> list[Comparison]:
    """The three comparisons as the statistics decide them (see :func:`judge_speed`; ``rule``: the look's)."""
    return [
        paired_non_inferiority(
            block_sums(cand.ttft), block_sums(stable.ttft), metric=f"{spec.ttft_statistic}_ttft_ms",
            better="lower", margin=spec.ttft_margin, confidence=confidence, min_pairs=spec.min_blocks, rule=rule,
        ),
        paired_non_inferiority(
            block_sums(cand.tpot), block_sums(stable.tpot), metric="mean_tpot_ms", better="lower",
            margin=spec.tpot_margin, confidence=confidence, min_pairs=spec.min_blocks, rule=rule,
        ),
        paired_non_inferiority(
            block_sums(cand.throughput), block_sums(stable.throughput), metric="output_throughput_tok_s",
            better="higher", margin=spec.throughput_margin, confidence=confidence, min_pairs=spec.min_blocks, rule=rule,
        ),
    ]  # fmt: skip


def _interval(comp: Comparison) -> str:
    if comp.low is None or comp.high is None:
        return f"({comp.note})" if comp.note else ""
    return f"[{comp.low:.2f}, {comp.high:.2f}]"


def judge_quality(
    candidate: Sequence[ProbeResult], stable: Sequence[ProbeResult], tolerance: float, confidence: float = 0.95
) -> dict[str, Any]:
    """The suite on both sides, its scored probes paired item by item.

    Args:
        candidate: The candidate's results.
        stable: The stable revision's, for the same probes in the same order.
        tolerance: Share of the suite the candidate may get right less than the stable.
        confidence: One-sided confidence of McNemar's "fewer right".

    Returns:
        The counts, McNemar's test over the scored probes, and ``ok``: False when the candidate
        gets fewer scored probes right than the stable beyond chance and by more than ``tolerance``.
    """
    total = len(candidate)
    cand_passed = sum(1 for p in candidate if p.passed)
    stable_passed = sum(1 for p in stable if p.passed)
    pairs = [(c.passed, s.passed) for c, s in zip(candidate, stable, strict=False) if not c.must_pass]
    test = mcnemar_exact([c for c, _ in pairs], [s for _, s in pairs], confidence=confidence)
    allowed = tolerance * total
    return {
        "candidate_passed": cand_passed, "stable_passed": stable_passed, "total": total, "scored": len(pairs),
        "tolerance": tolerance, **{k: v for k, v in test.to_dict().items() if k != "items"},
        "ok": not (test.fewer and test.candidate_right < test.stable_right - allowed),
    }  # fmt: skip


async def compare_with_stable(
    spec: ComparisonSpec,
    *,
    candidate: tuple[httpx.AsyncClient, Endpoint],
    stable: tuple[httpx.AsyncClient, Endpoint],
    candidate_suite: Sequence[ProbeResult],
    probes: Sequence[Probe],
    smoke: bool,
    chat: bool,
    prompts: Sequence[str],
    api: str,
    output_tokens: int,
    readiness_timeout_s: float,
    max_duration_s: float,
    log: LogFn,
) -> StableComparison:
    """Compares the candidate with the stable revision (see the module doc).

    Args:
        spec: The comparison settings.
        candidate: The candidate's client and endpoint.
        stable: The stable revision's client and endpoint.
        candidate_suite: The candidate's correctness results (already measured).
        probes: The user's probes (scored on the stable too).
        smoke: Whether the smoke suite ran on the candidate (then it runs on the stable).
        chat: The load uses the chat endpoint.
        prompts: Load prompts.
        api: ``completions`` or ``chat``.
        output_tokens: ``max_tokens`` per load request.
        readiness_timeout_s: How long the stable may take to answer.
        max_duration_s: Bound on one round.
        log: Progress lines.

    Returns:
        The comparison; its ``failures`` and ``inconclusive`` join the verdict's reasons.
    """
    started = time.monotonic()
    (c_client, c_ep), (s_client, s_ep) = candidate, stable
    out = StableComparison(stable_url=s_ep.base_url)
    if s_ep.base_url == c_ep.base_url:
        # One server measured as both sides is "not worse" than itself whatever it serves: that
        # would promote anything. Seen when one LLM_ROLLOUT_ADDRESS_MAP pattern matches both Services.
        out.inconclusive.append(
            f"comparison: the candidate and the stable revision are both reached at {c_ep.base_url}, so the "
            "comparison would measure one server against itself. Fix: give the stable's and the canary's "
            "Services their own LLM_ROLLOUT_ADDRESS_MAP entries (the more specific pattern first), or set "
            "validation.comparison.enabled: false"
        )
        return out
    try:
        await check_readiness(s_client, s_ep, timeout_s=readiness_timeout_s, api=api)  # type: ignore[arg-type]
    except RolloutError as err:
        out.inconclusive.append(f"comparison: the stable revision at {s_ep.base_url} is not usable: {err}")
        return out

    stable_suite: list[ProbeResult] = []
    if smoke:
        stable_suite += await run_smoke(s_client, s_ep, chat=chat)
    stable_suite += await run_suite(s_client, s_ep, probes)
    out.quality = judge_quality(candidate_suite, stable_suite, spec.quality_tolerance, spec.confidence)
    q = out.quality
    log(f"validate: comparison: suite passed by candidate {q['candidate_passed']}/{q['total']}, stable "
        f"{q['stable_passed']}/{q['total']}; scored probes only one side got right: stable {q['only_stable']}, "
        f"candidate {q['only_candidate']} (McNemar p = {q['p_value']:.4g})")  # fmt: skip
    if not q["ok"]:
        out.failures.append(
            f"comparison: suite: the candidate gets fewer scored probes right than the stable beyond chance: "
            f"{q['candidate_right']}/{q['scored']} against {q['stable_right']}/{q['scored']}, McNemar's exact "
            f"p = {q['p_value']:.4g} <= {1 - q['confidence']:.4g} (validation.comparison.confidence)"
        )
        # Worse answers decide the question whatever speed would say: no rounds are measured.
        out.seconds = round(time.monotonic() - started, 3)
        return out

    looks = sequential_looks(spec.min_blocks, spec.max_blocks, spec.confidence)
    schedule = {n: (conf, rule) for n, conf, rule in looks}
    out.confidence = looks[0][1]
    cand, stab = _Rounds(), _Rounds()
    sides = {"candidate": (c_client, c_ep, cand), "stable": (s_client, s_ep, stab)}
    last_side = ""

    async def one_round(side: str, round_no: int, keep: bool) -> None:
        nonlocal last_side
        client, ep, rounds = sides[side]

        async def send(count: int) -> list[RequestRecord]:
            lr = await run_load(
                client, ep, prompts, api=api, output_tokens=output_tokens,  # type: ignore[arg-type]
                num_requests=count, concurrency=spec.concurrency, max_duration_s=max_duration_s, seed=round_no,
            )  # fmt: skip
            return lr.records

        if last_side and last_side != side and spec.settle_s:
            # The other server's worker busy-polls for 1 s after its last step (see the module doc).
            await asyncio.sleep(spec.settle_s)
        last_side = side
        if keep:
            # The server's own wake-up after the pause (its first steps after idling are slower).
            await send(spec.concurrency)
        records = await send(spec.round_requests)
        if keep:
            rounds.add(records, spec)

    # One warm-up round each (not counted): the first requests after idling are slower on both.
    await one_round("stable", 0, False)
    await one_round("candidate", 0, False)
    for block in range(1, spec.max_blocks + 1):
        for i, side in enumerate(("candidate", "stable", "stable", "candidate")):
            await one_round(side, 4 * block + i, True)
        out.blocks, out.rounds = block, 2 * block
        if block not in schedule:
            continue
        out.looks += 1
        out.speed = judge_speed(cand, stab, spec, *schedule[block])
        log(f"validate: comparison: look {out.looks} after {block} blocks: "
            + ", ".join(f"{c.metric} {c.word} {_interval(c)}" for c in out.speed))  # fmt: skip
        if any(c.decision == "fail" for c in out.speed) or not any(c.undecided for c in out.speed):
            break
    sides_rounds = (("candidate", cand), ("stable", stab))
    out.per_round = {name: {"ttft": r.ttft, "tpot": r.tpot, "throughput": r.throughput} for name, r in sides_rounds}
    any_worse = any(c.decision == "fail" for c in out.speed)
    for comp in out.speed:
        if comp.decision == "fail":
            out.failures.append(f"comparison: {comp.describe()}")
        elif comp.undecided and not any_worse:
            out.inconclusive.append(f"comparison: {comp.describe()} after {out.blocks} blocks (max_blocks)")
        elif comp.undecided:  # the rounds stopped because another metric is worse
            log(f"validate: comparison: {comp.describe()} (not measured further: another metric is worse)")
        elif not comp.measured:
            log(f"validate: comparison: {comp.describe()} (left out of the decision)")
    out.seconds = round(time.monotonic() - started, 3)
    return out
