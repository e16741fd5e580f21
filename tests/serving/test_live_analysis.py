"""Live analysis through promote-model on the local platform, on real parts (issue 29).

Each scenario calls what the promote-model component calls (:func:`llm_rollout.steps.promote_step`,
hence ``LocalPlatform.promote`` -> :func:`llm_rollout.local.live.analysed_steps`) with a deployment
record of the candidate beside the stable, and a state directory that records the stable and the
candidate's server as deploy-model would have. The platform puts its weighted router at the
service's address (``local.service_port``) and moves it through ``canary.steps``; the team's
workload file (long support prompts) is replayed open loop at that address, so the router splits
the users; a real Prometheus scrapes the real vLLM servers (labelled ``pod=<server member>``, as the
local selectors read them) and each step's analysis judges the canary on those users.

* A candidate slow only on long prompts (``--max-num-batched-tokens 8``: a long prefill takes many
  engine steps) first passes the gate's own check on our synthetic (short) load, then promote
  rolls it back at the first step: the record still names the stable, the service's address is the
  stable's, the error names the step and the metric, and the candidate's server is stopped.
* An equal candidate (same model and arguments) is promoted through every step (50, 60, 100).
* Too little traffic on the canary (1 % of the users) is inconclusive and holds until the step's
  deadline, never promoting (rolled back, the reason says fewer than ``min_requests``).

Prometheus unreachable needs no vLLM: ``tests/unit/test_promote_analysis.py`` runs it through
``promote_step`` too. The servers are module-scoped (three vLLM starts for the file); a server a
rollback stopped is started again only when a later test of this file needs it (not in file order).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_rollout.errors import PermanentError
from llm_rollout.local.server import SERVER_MARKER
from llm_rollout.local.state import LocalState, ServerRecord, StableRecord, StateDir
from llm_rollout.platform import platform_for
from llm_rollout.procs import free_port
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import parse_spec
from llm_rollout.steps import promote_step
from llm_rollout.validation.runner import validate
from llm_rollout.validation.workload import load_file
from tests.fixtures.prometheus import ScrapeTarget, prometheus  # noqa: F401 - fixture
from tests.fixtures.serving import VllmServer, start_together, start_vllm

pytestmark = pytest.mark.serving

SLOW_ARGS = ["--max-num-batched-tokens", "8", "--max-num-seqs", "8", "--enable-chunked-prefill"]
"""Long prefills take many engine steps (8 tokens each); short prompts barely notice."""
SERVERS = {"stable": (), "equal": (), "slow": tuple(SLOW_ARGS)}
"""Each server's member name (also its ``pod`` label) and its extra vLLM arguments."""
MARGIN = 0.5
"""Candidate/stable may be up to 1.5x. At a few users a second on two CPU cores a 2.5 s sub-window
holds two or three requests per side, so one unit's ratio is noisy, and 16 units at the sign test's
per-look confidence do not bound an equal candidate's median below 1.25 (measured: upper ends
1.11-1.33 after 4 intervals); the slow candidate is several times slower on these prompts, far
beyond 1.5, so the same margin still fails it."""
ANALYSIS = {
    "interval_s": 10, "count": 4, "min_requests": 3, "inconclusive_limit": 1, "resolution_s": 2.5,
    "margin": MARGIN, "confidence": 0.95, "deadline_s": 120,
}  # fmt: skip
"""A step's analysis: four 10 s intervals of four paired 2.5 s units each."""
HOLD_S = 4.0
"""The first step's hold: the users warm the servers up before its analysis starts."""


class Servers:
    """The module's vLLM servers by member name; one a rollback stopped is started again on demand."""

    def __init__(self, stack: contextlib.ExitStack, model: Path) -> None:
        self.stack, self.model = stack, model
        self.running = dict(zip(SERVERS, start_together(stack, *(self._start(name) for name in SERVERS)), strict=True))

    def _start(self, name: str) -> contextlib.AbstractContextManager[VllmServer]:
        # The local platform claims a server only with its marker in the environment (server_alive).
        return start_vllm(self.model, "tiny", extra_args=SERVERS[name], env={SERVER_MARKER: f"live-{name}"})

    def __getitem__(self, name: str) -> VllmServer:
        if not self.running[name].alive():
            self.running[name] = self.stack.enter_context(self._start(name))
        return self.running[name]


@pytest.fixture(scope="module")
def servers(tiny_model: Path, vllm_python: Path) -> Iterator[Servers]:
    with contextlib.ExitStack() as stack:
        yield Servers(stack, tiny_model)


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    """The team's workload file: long support prompts (the users' shape), short answers."""
    words = ("the", "customer", "asked", "about", "the", "refund", "policy", "for", "the", "order", "placed")
    path = tmp_path / "users.jsonl"
    with path.open("w") as f:
        for i in range(16):
            prompt = " ".join(itertools.islice(itertools.cycle(words), i, i + 68))  # ~200 of the tiny model's 256
            f.write(json.dumps({"prompt": prompt, "max_tokens": 4}) + "\n")
    return path


class Replay:
    """Plays the workload file's requests at ``url``, open loop at ``rate`` per second (users do not
    wait for each other: a slow candidate does not slow the stable's users down). Every failed
    request is kept (:attr:`errors`); :attr:`lost` leaves out those refused once promote-model ended
    and the service's address closed (the router lets the requests in flight finish first)."""

    @property
    def lost(self) -> list[str]:
        """Requests that failed other than by finding the address closed after the promotion."""
        return [e for e in self.errors if not e.startswith("ConnectError")]

    def __init__(self, url: str, path: Path, rate: float) -> None:
        self.requests = load_file(str(path)).requests
        self.rate = rate
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.answered = 0
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
        except Exception as err:  # after finish(): the service's address closed under the request
            if not self.stop.is_set():
                self.errors.append(f"{type(err).__name__}: {err}")
            return
        if resp.status_code != 200:
            self.errors.append(f"{resp.status_code} {resp.text[:200]}")
        else:
            self.answered += 1

    def _arrive(self) -> None:
        for req in itertools.cycle(self.requests):
            if self.stop.wait(1.0 / self.rate):
                return
            self.pool.submit(self._send, req.prompt, req.max_tokens)

    def start(self) -> Replay:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
        self.pool.shutdown(wait=True)


@pytest.fixture
def watched(servers, prometheus):  # noqa: F811
    """Prometheus scraping the three servers every second, labelled as the local selectors read them."""

    def start(*names: str):
        targets = [ScrapeTarget(servers[n].base_url.removeprefix("http://"), {"pod": n}) for n in names]
        prom = prometheus(targets)
        prom.wait_scraped(2)
        return prom

    return start


def rollout(tmp_path: Path, servers: Servers, candidate: str, prom_url: str, steps: list[Any], *, own_stable: bool):
    """The spec, and the record deploy-model returns for ``candidate`` beside the stable, with the
    state directory as deploy left it: the stable promoted, the candidate's server recorded (and the
    stable's with ``own_stable``; without it a promotion stops nothing the module still needs)."""
    spec = parse_spec(
        {
            "name": "chat",
            "platform": "local",
            "local": {"state_dir": str(tmp_path / "state"), "service_port": free_port()},
            "canary": {"steps": steps},
            "validation": {"analysis": {"prometheus_url": prom_url}},
        }
    )
    stable, cand = servers["stable"], servers[candidate]
    state = StateDir(tmp_path / "state")
    with state.lock():
        state.write_state(
            LocalState(
                service="chat",
                generation=1,
                stable=StableRecord(member="stable", model_uri=str(stable.model_dir), endpoint_url=stable.base_url),
            )
        )
        for role, member, server in (("stable", "stable", stable), ("candidate", candidate, cand)):
            if role == "stable" and not own_stable:
                continue
            state.write_server(
                ServerRecord(
                    member=member, service="chat", role=role, status="serving", pid=server.pgid, pgid=server.pgid,
                    marker=f"live-{member}", port=server.port, endpoint_url=server.base_url,
                    model_uri=str(server.model_dir), served_model_name="tiny", run_id="run-1",
                )
            )  # fmt: skip
    record = DeploymentRecord(
        platform="local", kind="LocalServer", name="chat", namespace="local", member=candidate, revision=candidate,
        model_uri=str(cand.model_dir), served_model_name="tiny", endpoint_url=cand.base_url,
        service_url=stable.base_url, generation=1, canary=True, traffic_percent=0, run_id="run-1",
        stable=StableRef(member="stable", model_uri=str(stable.model_dir), endpoint_url=stable.base_url),
    )  # fmt: skip
    return spec, record


def promote_with_users(spec, record: DeploymentRecord, users_file: Path, tmp_path: Path, *, rate: float):
    """promote-model's library call, with the users replayed at the service's address once it listens.

    Returns (the promote's message or error, the replay, the Metrics it logged, the report's path)."""
    metrics: dict[str, float] = {}
    report = tmp_path / "analysis_report.html"
    port = spec.local.service_port
    with ThreadPoolExecutor(1) as pool:
        promoting = pool.submit(
            promote_step, spec, record, verdict="pass", summary="validated", run_id="run-1",
            log_metric=metrics.__setitem__, analysis_report_path=str(report),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:  # the router listens at the service's address well before the first step's hold ends
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if promoting.done():
                promoting.result()  # raises what stopped it before the router listened
            assert time.monotonic() < deadline, f"nothing listens at the service's address :{port}"
            time.sleep(0.05)
        users = Replay(f"http://127.0.0.1:{port}", users_file, rate=rate).start()
        try:
            outcome: str | BaseException = promoting.result(timeout=400)
        except PermanentError as err:
            outcome = err
        finally:
            users.finish()
    return outcome, users, metrics, report


def test_candidate_slow_on_the_users_long_prompts_passes_our_load_and_is_rolled_back_at_the_first_step(
    servers, watched, users_file, tmp_path
):
    spec, record = rollout(
        tmp_path, servers, "slow", watched("stable", "slow").url,
        [{"weight": 50, "hold_s": HOLD_S, "analysis": ANALYSIS}, 100], own_stable=True,
    )  # fmt: skip
    # The gate's own load with short synthetic prompts (one 8-token engine step each) and an SLO
    # check: the slow candidate passes. (The default 64-word prompts already take it ten steps.)
    ours = parse_spec(
        {
            "validation": {
                "load": {"concurrency": [4], "num_prompts": 16, "input_words": 4, "output_tokens": 16,
                         "warmup_requests": 2},
                "slo": {"checks": ["p95_ttft_ms <= 1000", "error_rate == 0"], "judge_concurrency": [4],
                        "min_successful_requests": 10},
                "quality": {"enabled": False},
                "smoke_suite": False,
            }
        }
    ).validation  # fmt: skip
    synthetic = validate(ours, record.endpoint_url, "tiny")
    assert synthetic.verdict == "pass", synthetic.summary

    outcome, users, metrics, report = promote_with_users(spec, record, users_file, tmp_path, rate=2.0)

    assert isinstance(outcome, PermanentError), outcome
    text = str(outcome)
    assert "stopped at step 1 (50% traffic)" in text and "'fail'" in text and "rolled back" in text, text
    assert "_ms: worse" in text, text  # the metric the users' long prompts made worse
    # The candidate's users were drained before its server stopped: no request was lost.
    assert not users.lost and users.answered > 0, users.lost[:3]
    state = platform_for(spec).status()
    assert state.stable is not None and state.stable.member == "stable"
    assert state.url == servers["stable"].base_url  # the service serves the stable only
    assert state.history[0].action == "rollback" and state.history[0].member == "slow"
    assert "live analysis at step 1 (50% traffic): fail" in (state.history[0].reason or "")
    assert not servers.running["slow"].alive() or _stops(servers.running["slow"])
    assert metrics["analysis_step1_ok"] == 0.0 and metrics["analysis_step1_candidate_requests"] >= 3
    page = report.read_text()
    assert "FAIL" in page and "Step 1 (50 %)" in page and "stopped at step 1" in page


def test_equal_candidate_is_promoted_through_every_step(servers, watched, users_file, tmp_path):
    steps = [{"weight": 50, "hold_s": HOLD_S, "analysis": ANALYSIS}, {"weight": 60, "analysis": ANALYSIS}, 100]
    spec, record = rollout(tmp_path, servers, "equal", watched("stable", "equal").url, steps, own_stable=False)

    # 4 users a second: at 60 % each side still finishes a request or more per 2.5 s sub-window.
    # (6 a second queued on two busy cores: the units' ratios spread from 0.06 to 2 and a step
    # stayed undecided until its deadline.)
    outcome, users, metrics, report = promote_with_users(spec, record, users_file, tmp_path, rate=4.0)

    assert isinstance(outcome, str) and outcome.startswith("promoted equal"), outcome
    assert not users.lost and users.answered > 0, users.lost[:3]
    assert metrics["analysis_step1_ok"] == 1.0 and metrics["analysis_step2_ok"] == 1.0
    assert metrics["analysis_step1_weight_percent"] == 50 and metrics["analysis_step2_weight_percent"] == 60
    status = platform_for(spec).status()
    assert status.stable is not None and status.stable.member == "equal"
    assert status.url == servers["equal"].base_url  # the service's address is the candidate's now
    assert status.history[0].action == "promote"
    shown = "\n".join((status.stable.model_extra or {}).get("analysis", []))
    assert "step 1 (50 %): live analysis not worse" in shown and "step 2 (60 %)" in shown
    page = report.read_text()
    assert "PASS" in page and "Step 2 (60 %)" in page


def test_too_little_traffic_holds_until_the_deadline_and_never_promotes(servers, watched, users_file, tmp_path):
    short = {**ANALYSIS, "interval_s": 4, "count": 2, "inconclusive_limit": 0, "resolution_s": 2, "deadline_s": 24}
    spec, record = rollout(
        tmp_path, servers, "equal", watched("stable", "equal").url,
        [{"weight": 1, "hold_s": 2, "analysis": short}, 100], own_stable=True,
    )  # fmt: skip

    outcome, users, metrics, _ = promote_with_users(spec, record, users_file, tmp_path, rate=2.0)

    assert isinstance(outcome, PermanentError), outcome
    text = str(outcome)
    assert "'inconclusive'" in text and "not promoted" in text and "fewer than 3 requests" in text, text
    assert not users.lost and users.answered > 0, users.lost[:3]
    assert metrics["analysis_step1_ok"] == -1.0 and metrics["analysis_step1_attempts"] >= 2
    status = platform_for(spec).status()
    assert status.stable is not None and status.stable.member == "stable"
    assert status.history[0].action == "rollback" and status.history[0].member == "equal"


def _stops(server: VllmServer, timeout: float = 20.0) -> bool:
    """Whether the server's process ends within ``timeout`` (a rollback stopped its group)."""
    deadline = time.monotonic() + timeout
    while server.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not server.alive()
