"""Live analysis on real parts: a real Prometheus scrapes real vLLM servers while the team's workload file
is replayed through the local weighted router, and the step's analysis judges the canary on those users.

* A candidate that is slower only on long prompts (launched with ``--max-num-batched-tokens 8``, so a
  long prefill takes many engine steps) is judged worse and the step fails at once (roll back).
* An equal candidate (the same model and arguments as the stable) passes the step.
* Too little traffic on the canary (weight 0) is inconclusive and holds until the step's deadline,
  never promoting.

Intervals are a few seconds; the servers are the tiny model (``make serving-env``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llm_rollout.local.router import WeightedRouter
from llm_rollout.validation.analysis import AnalysisConfig, LiveAnalysis, default_selector, describe
from llm_rollout.validation.analysis_steps import analyse_step
from llm_rollout.validation.workload import load_file
from tests.fixtures.prometheus import ScrapeTarget, metrics_target, prometheus  # noqa: F401 - fixtures
from tests.fixtures.serving import VllmServer, start_together, start_vllm

pytestmark = pytest.mark.serving

SLOW_ARGS = ["--max-num-batched-tokens", "8", "--max-num-seqs", "8", "--enable-chunked-prefill"]
"""Long prefills take many engine steps (8 tokens each); short prompts barely notice."""
HOLD_S = 5.0
MARGIN = 0.5
"""Candidate/stable may be up to 1.5x. At 2 users a second split 50/50 on two CPU cores a 2.5 s
sub-window holds two or three requests per side, so one unit's ratio is noisy, and 16 units at the
sign test's per-look confidence do not bound an equal candidate's median below 1.25 (measured: upper
ends 1.11-1.33 after 4 intervals); the slow candidate is several times slower on these prompts, far
beyond 1.5, so the same margin still fails it."""
"""The step's hold: the users warm the servers up before the analysis starts."""


@pytest.fixture(scope="module")
def servers(tiny_model: Path, vllm_python: Path) -> Iterator[dict[str, VllmServer]]:
    with contextlib.ExitStack() as stack:
        stable, equal, slow = start_together(
            stack,
            start_vllm(tiny_model, "tiny"),
            start_vllm(tiny_model, "tiny"),
            start_vllm(tiny_model, "tiny", extra_args=SLOW_ARGS),
        )
        yield {"stable": stable, "equal": equal, "slow": slow}


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    """The team's workload file: long support prompts (the users' shape), short answers."""
    words = ("the", "customer", "asked", "about", "the", "refund", "policy", "for", "the", "order", "placed")
    path = tmp_path / "users.jsonl"
    with path.open("w") as f:
        for i in range(16):
            prompt = " ".join(
                itertools.islice(itertools.cycle(words), i, i + 68)
            )  # ~200 tokens of the tiny model's 256
            f.write(json.dumps({"prompt": prompt, "max_tokens": 4}) + "\n")
    return path


class Replay:
    """Plays the workload file's requests through the router's address, open loop at ``rate`` per second
    (users do not wait for each other: a slow candidate does not slow the stable's users down)."""

    def __init__(self, url: str, path: Path, rate: float = 2.0) -> None:
        self.requests = load_file(str(path)).requests
        self.url = url
        self.rate = rate
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.pool = ThreadPoolExecutor(32)
        self.client = httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=32))
        self.thread = threading.Thread(target=self._arrive, daemon=True)

    def _send(self, prompt: str, max_tokens: int) -> None:
        if self.stop.is_set():
            return
        try:
            resp = self.client.post(
                "/v1/completions",
                json={"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True},
            )
        except Exception as err:  # the client is closed under in-flight requests at the end
            if not self.stop.is_set():
                self.errors.append(f"{type(err).__name__}: {err}")
            return
        if resp.status_code != 200:
            self.errors.append(f"{resp.status_code} {resp.text[:200]}")

    def _arrive(self) -> None:
        for req in itertools.cycle(self.requests):
            if self.stop.wait(1.0 / self.rate):
                return
            self.pool.submit(self._send, req.prompt, req.max_tokens)

    def __enter__(self) -> Replay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
        self.pool.shutdown(wait=True)


@pytest.fixture
def watched(servers, prometheus):  # noqa: F811
    prom = prometheus([ScrapeTarget(s.base_url.removeprefix("http://"), {"pod": name}) for name, s in servers.items()])
    prom.wait_scraped(2)
    return prom


def _analysis(prom_url: str, candidate: str, **kw) -> LiveAnalysis:
    config = AnalysisConfig(
        prom_url,
        interval_s=10.0,
        count=4,
        min_requests=3,
        inconclusive_limit=1,
        resolution_s=2.5,
        margin=MARGIN,
        confidence=0.95,
        **kw,
    )
    return LiveAnalysis(
        config,
        candidate=default_selector("local", candidate),
        stable=default_selector("local", "stable"),
        step=1,
        weight=50,
    )


def test_candidate_slow_on_the_users_long_prompts_is_rolled_back_at_the_first_step(servers, watched, users_file):
    router = WeightedRouter(servers["stable"].base_url, servers["slow"].base_url, weight=50).start()
    try:
        with Replay(router.url, users_file) as users:
            step = analyse_step(lambda: _analysis(watched.url, "slow"), hold_s=HOLD_S, deadline_s=120.0)
            result = step.attempts[-1]
        lines = describe(result)
        assert not users.errors, users.errors[:3]
        assert result.answer.decision == "fail", "\n".join([*lines, *result.answer.reasons][:12])
        assert any(": worse" in r for r in result.answer.reasons), result.answer.reasons
        m = result.measurements[-1]
        assert m.candidate.requests >= 3 and m.stable.requests >= 3
    finally:
        router.stop()


def test_equal_candidate_passes_the_step(servers, watched, users_file):
    router = WeightedRouter(servers["stable"].base_url, servers["equal"].base_url, weight=50).start()
    try:
        with Replay(router.url, users_file) as users:
            step = analyse_step(lambda: _analysis(watched.url, "equal"), hold_s=HOLD_S, deadline_s=120.0)
            result = step.attempts[-1]
        lines = describe(result)
        assert not users.errors, users.errors[:3]
        assert result.answer.decision == "pass", "\n".join([*lines, *result.answer.reasons][:12])
        sent = router.sent()
        assert abs(sent["candidate"] - sent["stable"]) <= 1  # the users were split 50/50
    finally:
        router.stop()


def test_too_little_traffic_holds_until_the_deadline_and_never_promotes(servers, watched, users_file):
    router = WeightedRouter(servers["stable"].base_url, servers["equal"].base_url, weight=0).start()
    try:
        with Replay(router.url, users_file):
            step = analyse_step(lambda: _analysis(watched.url, "equal"), hold_s=HOLD_S, deadline_s=85.0)
        assert step.answer.decision == "inconclusive"
        assert "not promoted" in step.answer.reasons[0]
        assert len(step.attempts) >= 2 and all(a.answer.decision == "inconclusive" for a in step.attempts)
        assert "fewer than 3 requests" in " ".join(step.answer.reasons)
    finally:
        router.stop()
