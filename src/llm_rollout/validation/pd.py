"""Proof of prefill/decode disaggregation, from each role's Prometheus counters around the load.

With llm-d P/D a request goes to a prefill pod first (prompt processed, KV cache written, one
token) and its KV cache is then moved to a decode pod (NIXL), which generates the rest without
recomputing the prompt. The known failures are silent: a mis-wired connector, side-channel port or
scheduler profile leaves the prefill pods idle and decode does all the work (decode-only
fallback), or the KV never arrives and decode re-runs every prefill. Latency alone does not show
it; the counters do. From scrapes of the roles' ``/metrics`` taken before and after the load:

1. **Prefill served prefills**: the prefill role's ``vllm:prompt_tokens`` (or finished requests)
   rose. Nothing there means a silent decode-only fallback: the verdict is ``fail``.
2. **Decode did not re-run them**: decode received the prompt KV by transfer rather than
   computing it. vLLM (V1) counts prompt tokens per source,
   ``vllm:prompt_tokens_by_source{source="local_compute"|"local_cache_hit"|"external_kv_transfer"}``;
   older servers have ``vllm:external_prefix_cache_hits``. Some KV must have arrived, and decode
   may compute at most ``max_decode_recompute_ratio`` of its prompt tokens itself (the rest came
   by transfer or from its own prefix cache). Without any KV-transfer counter the check falls back
   to decode's own prompt-token delta, which must be small against prefill's.
3. **The endpoint picker's decisions** (optional ``epp`` role,
   ``llm_d_inference_scheduler_disagg_decision_total{decision_type}``, or the deprecated
   ``llm_d_inference_scheduler_pd_decision_total`` of the old ``pd-profile-handler``) explain a failure: all
   requests decided decode-only (prompts under the P/D threshold) versus split requests that
   never reached prefill (connector or ports).
4. **Prefix-cache hits** (:func:`judge_prefix_cache`): on a repeated-prefix (RAG-like) workload
   with prefix-aware routing, ``vllm:prefix_cache_hits`` must rise on the serving roles.

Every decision says why; reasons name what to check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from llm_rollout.validation.answers import Decision
from llm_rollout.validation.prom import fetch_metrics, parse_prometheus

PREFILL_ROLE = "prefill"
DECODE_ROLE = "decode"
EPP_ROLE = "epp"

SILENT_FALLBACK = (
    "prefill served nothing: silent decode-only fallback (check the NIXL connector "
    "(--kv_transfer_config kv_producer/kv_consumer on both roles), the NIXL side-channel host/port, "
    "and the scheduler profile 'pd' with pd_threshold_tokens below the prompts' length)"
)
"""The reason given when the prefill role did no work while traffic was served."""

_COUNTERS: dict[str, tuple[str, ...]] = {
    "prompt_tokens": ("vllm:prompt_tokens_total", "vllm:prompt_tokens"),
    "requests": ("vllm:request_success_total", "vllm:request_success"),
    "prefix_cache_hits": (
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_hits",
        "vllm:gpu_prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_hits",
    ),
    "prefix_cache_queries": (
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_queries",
        "vllm:gpu_prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries",
    ),
    "external_prefix_cache_hits": ("vllm:external_prefix_cache_hits_total", "vllm:external_prefix_cache_hits"),
}
_BY_SOURCE = ("vllm:prompt_tokens_by_source_total", "vllm:prompt_tokens_by_source")
_SOURCES = {"local_compute": "computed", "local_cache_hit": "local_cache_hit", "external_kv_transfer": "transferred"}
_PD_DECISIONS = (
    # llm-d pkg/metrics/metrics.go SchedulerDisaggDecisionCount, recorded by disagg-profile-handler
    # (RecordDisaggDecision); docs/metrics.md names it the current counter.
    "llm_d_inference_scheduler_disagg_decision_total",
    # SchedulerPDDecisionCount, deprecated, recorded only by the old pd-profile-handler.
    "llm_d_inference_scheduler_pd_decision_total",
)
"""The picker's decision counters, newest first: the first one a scrape holds is read."""
# llm-d pkg/metrics/metrics.go DecisionType* constants (DisaggDecisionType): a decision with a
# prefill stage versus one that prefilled on the decode pod.
_SPLIT = {"prefill-decode", "encode-prefill-decode"}
_DECODE_ONLY = {"decode-only", "encode-decode"}


@dataclass
class Counters:
    """The counters of one role from one scrape.

    Attributes:
        values: Our name -> value, summed over label sets: ``prompt_tokens``, ``requests``,
            ``prefix_cache_hits``, ``prefix_cache_queries``, ``external_prefix_cache_hits``,
            ``computed``/``local_cache_hit``/``transferred`` (prompt tokens by source) and, for
            the endpoint picker, ``pd_split``/``pd_decode_only``.
        error: Why the scrape failed ("" when it worked).
        decision_metric: The endpoint picker's decision counter the scrape held (the current
            ``..._disagg_decision_total`` or the deprecated ``..._pd_decision_total``), else "".
    """

    values: dict[str, float] = field(default_factory=dict)
    error: str = ""
    decision_metric: str = ""


def counters(text: str) -> Counters:
    """Reduces one ``/metrics`` exposition to the counters the proof uses.

    Args:
        text: Prometheus text (vLLM's or the endpoint picker's ``/metrics``).

    Returns:
        The counters found (names missing from the text are absent, not zero).
    """
    nonfinite: dict[str, str] = {}
    series = parse_prometheus(text, nonfinite)
    used = {n for names in _COUNTERS.values() for n in names} | set(_BY_SOURCE) | set(_PD_DECISIONS)
    odd = sorted(f"{k}={v}" for k, v in nonfinite.items() if k in used)
    if odd:
        # A server's NaN/Inf is data, not a number to subtract: the proof says it cannot tell.
        return Counters(error="the server reported non-finite values: " + ", ".join(odd))
    out: dict[str, float] = {}
    for ours, names in _COUNTERS.items():
        for name in names:
            if name in series:
                out[ours] = sum(v for _, v in series[name])
                break
    for name in _BY_SOURCE:
        if name in series:
            for labels, value in series[name]:
                ours = _SOURCES.get(labels.get("source", ""))
                if ours:
                    out[ours] = out.get(ours, 0.0) + value
            break
    decision_metric = ""
    for name in _PD_DECISIONS:
        if name in series:
            decision_metric = name
            out["pd_split"] = out["pd_decode_only"] = 0.0
            for labels, value in series[name]:
                kind = labels.get("decision_type", "")
                if kind in _SPLIT:
                    out["pd_split"] += value
                elif kind in _DECODE_ONLY:
                    out["pd_decode_only"] += value
            break
    return Counters(out, decision_metric=decision_metric)


async def scrape(client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None = None) -> Counters:
    """Scrapes one role's ``/metrics``; failures come back in ``error``, never raised."""
    text, error = await fetch_metrics(client, url, headers)  # bounded in size and time
    return Counters(error=error) if error else counters(text)


async def scrape_roles(
    client: httpx.AsyncClient,
    urls: Mapping[str, str],
    headers: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Counters]:
    """Scrapes every role at once: role -> :class:`Counters`."""
    hdrs = headers or {}
    snaps = await asyncio.gather(*(scrape(client, u, hdrs.get(r)) for r, u in urls.items()))
    return dict(zip(urls, snaps, strict=True))


def _delta(before: Counters | None, after: Counters) -> dict[str, float]:
    base = before.values if before is not None else {}
    return {k: v - base.get(k, 0.0) for k, v in after.values.items()}


@dataclass
class Proof:
    """The outcome of one check (disaggregation or prefix cache).

    Attributes:
        verdict: ``pass``, ``fail`` or ``inconclusive``.
        reasons: Why it failed or is inconclusive (empty on pass).
        notes: What was seen (shown also on pass).
        deltas: Per role, each counter's rise over the load.
    """

    verdict: Decision
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deltas: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {"verdict": self.verdict, "reasons": self.reasons, "notes": self.notes, "deltas": self.deltas}


def _finish(proof: Proof, failed: list[str], unsure: list[str]) -> Proof:
    proof.reasons = failed + unsure
    proof.verdict = "fail" if failed else "inconclusive" if unsure else "pass"
    return proof


def judge_disaggregation(
    before: Mapping[str, Counters],
    after: Mapping[str, Counters],
    *,
    max_decode_recompute_ratio: float = 0.5,
) -> Proof:
    """Decides whether the load was really served prefill-on-prefill, decode-on-decode.

    Args:
        before: Role -> counters scraped before the load (roles ``prefill``, ``decode``, and
            optionally ``epp``).
        after: The same after the load.
        max_decode_recompute_ratio: Share of decode's prompt tokens it may compute itself; the rest
            must come by KV transfer or from its own prefix cache (whole KV blocks move, so the
            last partial block of each prompt is always recomputed).

    Returns:
        The proof: ``fail`` on a silent decode-only fallback or when decode re-ran the prefills,
        ``inconclusive`` when a role's metrics are missing or cannot tell, else ``pass``.
    """
    proof = Proof("inconclusive")
    failed: list[str] = []
    unsure: list[str] = []
    for role in (PREFILL_ROLE, DECODE_ROLE):
        snap = after.get(role)
        if snap is None:
            unsure.append(f"P/D proof: no '{role}' metrics URL was given, so disaggregation cannot be proven")
        elif snap.error or (before.get(role) is not None and before[role].error):
            err = snap.error or before[role].error
            unsure.append(f"P/D proof: the {role} role's metrics could not be read ({err})")
    if unsure:
        return _finish(proof, failed, unsure)
    pre = _delta(before.get(PREFILL_ROLE), after[PREFILL_ROLE])
    dec = _delta(before.get(DECODE_ROLE), after[DECODE_ROLE])
    proof.deltas = {PREFILL_ROLE: pre, DECODE_ROLE: dec}
    epp: dict[str, float] = {}
    if EPP_ROLE in after and not after[EPP_ROLE].error:
        epp = _delta(before.get(EPP_ROLE), after[EPP_ROLE])
        proof.deltas[EPP_ROLE] = epp

    prefilled = pre.get("prompt_tokens", 0.0)
    served = max(dec.get("requests", 0.0), 0.0)
    picker = ""
    if "pd_split" in epp:
        split, alone = epp["pd_split"], epp.get("pd_decode_only", 0.0)
        metric = after[EPP_ROLE].decision_metric.removeprefix("llm_d_inference_scheduler_")
        picker = f"; the endpoint picker decided {split:g} requests prefill-decode and {alone:g} decode-only ({metric})"
        if split == 0 and alone > 0:
            picker += " (every prompt stayed under pd_threshold_tokens, or the profile is not 'pd')"
        elif split > 0 and prefilled <= 0:
            picker += " (it chose P/D, but the requests never reached prefill: connector, sidecar or ports)"
    if prefilled <= 0 and pre.get("requests", 0.0) <= 0:
        failed.append(f"{SILENT_FALLBACK}; decode served {served:g} requests alone{picker}")
        return _finish(proof, failed, unsure)
    requests = pre.get("requests", 0.0)
    proof.notes.append(f"prefill processed {prefilled:g} prompt tokens in {requests:g} requests{picker}")

    transferred = dec.get("transferred", dec.get("external_prefix_cache_hits"))
    total = dec.get("prompt_tokens", 0.0)
    cached = dec.get("local_cache_hit", dec.get("prefix_cache_hits", 0.0))
    computed = dec["computed"] if "computed" in dec else total - cached - (transferred or 0.0)
    if transferred is not None:
        share = computed / total if total > 0 else 0.0
        line = (
            f"decode received {transferred:g} prompt tokens by KV transfer, found {cached:g} in its prefix cache "
            f"and computed {computed:g} of {total:g} itself ({share:.0%})"
        )
        if transferred <= 0:
            failed.append(
                f"decode re-ran the prefills: it received no KV cache by transfer and computed {computed:g} "
                f"prompt tokens itself while prefill processed {prefilled:g} (check kv_transfer_config "
                "kv_producer on prefill / kv_consumer on decode, VLLM_NIXL_SIDE_CHANNEL_HOST and the side-channel port)"
            )
        elif share > max_decode_recompute_ratio:
            failed.append(
                f"{line}: above validation.pd_max_decode_recompute_ratio {max_decode_recompute_ratio:g}, so decode "
                "re-ran most prefills (KV transfers failing or timing out?)"
            )
        else:
            proof.notes.append(line)
    elif prefilled > 0 and total <= max_decode_recompute_ratio * prefilled:
        proof.notes.append(
            f"decode counted {total:g} prompt tokens against prefill's {prefilled:g} "
            "(this vLLM has no KV-transfer counters)"
        )
    else:
        unsure.append(
            f"P/D proof: decode's metrics have no KV-transfer counters and it counted {total:g} prompt tokens "
            f"against prefill's {prefilled:g}, so whether it re-ran the prefills cannot be told "
            "(a vLLM with vllm:prompt_tokens_by_source answers it)"
        )
    return _finish(proof, failed, unsure)


def judge_prefix_cache(before: Mapping[str, Counters], after: Mapping[str, Counters]) -> Proof:
    """Decides whether prefix-cache hits rose over a repeated-prefix workload.

    Hits are summed over every role whose metrics were read (with P/D the prefill pods hold the
    shared prefix; without, the serving pods).

    Args:
        before: Role -> counters before the load.
        after: Role -> counters after it.

    Returns:
        ``fail`` when no role's hits rose, ``inconclusive`` when no role has the counters,
        else ``pass``.
    """
    proof = Proof("inconclusive")
    failed: list[str] = []
    unsure: list[str] = []
    hits = queries = 0.0
    seen = False
    for role, snap in after.items():
        if role == EPP_ROLE or snap.error or "prefix_cache_hits" not in snap.values:
            continue
        d = _delta(before.get(role), snap)
        proof.deltas[role] = d
        seen = True
        hits += d.get("prefix_cache_hits", 0.0)
        queries += d.get("prefix_cache_queries", 0.0)
    if not seen:
        unsure.append("prefix cache: no role's metrics have vllm:prefix_cache_hits, so the hits cannot be checked")
    elif hits <= 0:
        failed.append(
            f"prefix cache: hits did not rise on the repeated-prefix workload ({queries:g} tokens looked up, "
            "0 hits): prefix caching is off (--enable-prefix-caching) or requests sharing a prefix are spread "
            "over pods (use llmd.scheduler.profile 'prefix-cache' or 'pd')"
        )
    else:
        ratio = f" ({hits / queries:.0%} of {queries:g} looked up)" if queries else ""
        proof.notes.append(f"prefix cache: {hits:g} prompt tokens hit{ratio}")
    return _finish(proof, failed, unsure)
