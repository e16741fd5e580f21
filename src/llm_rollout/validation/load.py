"""The load generator: levels of streamed requests, and the synthetic prompts they send.

:func:`run_load` sends one level through :func:`~llm_rollout.validation.client.stream_request`:

* Closed loop (``concurrency``: that many requests always in flight) or open loop (Poisson
  ``request_rate``, optionally capped by ``concurrency``), bounded by a request count and a
  wall-clock bound; requests still in flight at the bound are cancelled and marked incomplete.

:func:`make_prompts`: distinct, seeded prompts of common English words (no shared long prefix).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx

from llm_rollout.validation.client import Api, Endpoint, build_payload, stream_request
from llm_rollout.validation.metrics import RequestRecord

_WORDS_TEXT = (
    "the of and to in is was for on that with as by at from his an were are which this be has had or one "
    "their its first new after who they two her she been other when time during there into school more "
    "may years over only year most would world city some where between later three state such then "
    "national used made known under many university united while part season team these american than "
    "film second born south became states war through being including both well before north high "
    "however people family early history album area them series against until since district county name "
    "work life group music following number company several four called played released career league "
    "game government house each based day same won use station club international town located "
    "population general college east found age march end september began home public church line june "
    "river member system place century band july"
)
_WORDS = _WORDS_TEXT.split()


def make_prompts(count: int, words: int, seed: int = 0) -> list[str]:
    """Distinct synthetic prompts of ``words`` common English words (seeded, so runs compare).

    Each prompt starts with a different number so no two share a long prefix (the prefix cache
    would otherwise make the load unrealistically cheap).

    Args:
        count: How many prompts.
        words: Words per prompt (roughly 1-1.5 tokens each).
        seed: Random seed.

    Returns:
        The prompts.
    """
    return list(iter_prompts(count, words, seed))


def iter_prompts(count: int, words: int, seed: int = 0) -> Iterator[str]:
    """The prompts of :func:`make_prompts`, one at a time (a check that needs one property of them
    never holds them all)."""
    rng = random.Random(seed)
    for i in range(count):
        yield f"{i} " + " ".join(rng.choices(_WORDS, k=max(1, words - 1)))


@dataclass
class LoadResult:
    """One load level.

    Attributes:
        label: Level key: ``c<N>`` (closed loop at concurrency N) or ``rate<R>`` (Poisson).
        concurrency: In-flight cap (closed loop: the level itself).
        request_rate: Poisson arrival rate (requests/s), None for closed loop.
        records: One record per request sent, in send order.
        duration_s: First send to last completion (or to the time bound).
        truncated: The time bound ended the level before every request was sent or done.
        started_at: Wall-clock start (``time.time()``).
    """

    label: str
    concurrency: int | None
    request_rate: float | None
    records: list[RequestRecord]
    duration_s: float
    truncated: bool = False
    started_at: float = 0.0


def level_label(concurrency: int | None, request_rate: float | None) -> str:
    """The level key: ``c10`` for concurrency 10, ``rate2_5`` for a Poisson rate of 2.5 req/s."""
    if request_rate is None:
        return f"c{concurrency}"
    rate = f"{request_rate:g}".replace(".", "_")
    return f"rate{rate}" if concurrency is None else f"rate{rate}_c{concurrency}"


async def run_load(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    prompts: Sequence[str],
    *,
    api: Api = "completions",
    output_tokens: int,
    num_requests: int,
    concurrency: int | None = None,
    request_rate: float | None = None,
    max_duration_s: float = 120.0,
    ignore_eos: bool = True,
    seed: int = 0,
    on_record: Callable[[RequestRecord], None] | None = None,
    bodies: Sequence[tuple[Api, bytes]] | None = None,
    arrivals: Sequence[float] | None = None,
    label: str | None = None,
) -> LoadResult:
    """Runs one load level.

    Closed loop when ``request_rate`` is None: ``concurrency`` workers, each sending its next
    request as soon as the previous one ends. Open loop otherwise: Poisson arrivals at
    ``request_rate`` (seeded), at most ``concurrency`` in flight when given (a request waiting for
    a slot starts its clock when it is sent, as in ``vllm bench serve``).

    Args:
        client: The pooled client.
        endpoint: The endpoint.
        prompts: Prompt texts, used round-robin.
        api: ``completions`` or ``chat``.
        output_tokens: ``max_tokens`` per request.
        num_requests: Requests to send.
        concurrency: Requests in flight (closed loop) or the cap (open loop).
        request_rate: Poisson arrival rate in requests/s.
        max_duration_s: Wall-clock bound; at the bound no request is sent any more and those in
            flight are cancelled and marked ``incomplete`` (so is one whose last token this client
            read only after the bound).
        ignore_eos: Generate exactly ``output_tokens`` (vLLM extension).
        seed: Seed of the arrival process.
        on_record: Called with each finished record (e.g. to stop early when the server is gone).
        bodies: Prepared requests (API and encoded body, e.g. a workload file's), used
            round-robin instead of ``prompts``/``output_tokens``.
        arrivals: Open loop at these send times (s from the start, one per request, ascending)
            instead of Poisson arrivals: a recorded trace replayed (``request_rate`` is then only
            the level's nominal rate).
        label: The level's key (default :func:`level_label`).

    Returns:
        The level's records and duration.
    """
    if request_rate is None and not concurrency and arrivals is None:
        raise ValueError("a closed-loop level needs a concurrency >= 1")
    if arrivals is not None:
        num_requests = min(num_requests, len(arrivals))
    label = label or level_label(concurrency, request_rate)
    records: list[RequestRecord] = []
    if bodies is not None:
        apis = [a for a, _ in bodies]
        payloads = [b for _, b in bodies]
    else:
        apis = [api] * len(prompts)
        payloads = [
            json.dumps(build_payload(api, endpoint.model, p, output_tokens, ignore_eos=ignore_eos)).encode()
            for p in prompts
        ]
    started_at = time.time()
    t0 = time.perf_counter()
    deadline = t0 + max_duration_s

    def cut(rec: RequestRecord) -> None:
        rec.incomplete = True
        rec.success = False
        rec.error = rec.error or f"still running when the level's {max_duration_s:g} s bound ran out"

    async def one(index: int) -> None:
        rec = RequestRecord()
        records.append(rec)
        try:
            await stream_request(client, endpoint, apis[index % len(apis)], payloads[index % len(payloads)], rec)
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a cancellation some library swallowed
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            cut(rec)
            raise
        if rec.success and rec.start_time + rec.latency > deadline:
            # The last token was read after the bound: the event loop ran late (a starved client reads
            # a whole finished stream at once), so to this client the request was still in flight at
            # the bound. Counting it would make the outcome depend on which callback ran first.
            cut(rec)
            return
        if on_record is not None:
            on_record(rec)

    truncated = False
    if request_rate is None and arrivals is None:
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < num_requests and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                await one(index)

        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency or 1, num_requests))]
        _, pending = await asyncio.wait(workers, timeout=max(0.0, deadline - time.perf_counter()))
        truncated = bool(pending) or next_index < num_requests
    else:
        rng = random.Random(seed)
        slots = asyncio.Semaphore(concurrency) if concurrency else None
        running: set[asyncio.Task[None]] = set()

        async def capped(index: int) -> None:
            if slots is None:
                await one(index)
                return
            async with slots:
                await one(index)

        async def launcher() -> None:
            start = arrival = time.perf_counter()
            for index in range(num_requests):
                if arrivals is not None:
                    arrival = start + arrivals[index]
                elif index:
                    arrival += rng.expovariate(request_rate or 1.0)
                delay = arrival - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(capped(index))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.wait(set(running))

        launch = asyncio.create_task(launcher())
        _, pending = await asyncio.wait({launch}, timeout=max(0.0, deadline - time.perf_counter()))
        truncated = bool(pending)
        workers = [launch, *running]
        pending = {t for t in workers if not t.done()}
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    duration = time.perf_counter() - t0
    return LoadResult(label, concurrency, request_rate, records, duration, truncated, started_at)
