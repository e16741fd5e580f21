"""The local platform's weighted router (local/router.py): the users' requests split by weight, exactly,
streamed through as they come, and a missing upstream named in the answer."""

from __future__ import annotations

import http.server
import itertools
import socket
import threading
import time

import httpx
import pytest

from llm_rollout.local.router import Split, WeightedRouter


class _Upstream:
    """A tiny HTTP server answering its own name; ``/stream`` sends three chunks 0.2 s apart."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[bytes] = []
        up = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                up.seen.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self._send()

            def do_GET(self) -> None:
                if self.path == "/stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i in range(3):
                        self.wfile.write(f"data: {up.name} {i}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self._send()

            def _send(self) -> None:
                body = up.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # poll_interval: shutdown() returns within 0.05 s instead of up to 0.5 s (each test's teardown)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstreams():
    made = [_Upstream("stable"), _Upstream("candidate")]
    yield made
    for u in made:
        u.close()


def test_smooth_weighted_round_robin_gives_exactly_the_weight_evenly():
    split = Split("http://s:1", "http://c:2")
    split.set(weight=10)
    sides = [split.pick()[0] for _ in range(100)]
    assert sides.count("candidate") == 10
    # evenly spread: never two candidate requests within 5 of each other
    at = [i for i, s in enumerate(sides) if s == "candidate"]
    assert min(b - a for a, b in itertools.pairwise(at)) >= 5
    split.set(weight=0)
    assert {split.pick()[0] for _ in range(20)} == {"stable"}
    split.set(weight=100)
    assert {split.pick()[0] for _ in range(20)} == {"candidate"}
    with pytest.raises(ValueError, match="outside 0-100"):
        split.set(weight=101)


def test_router_splits_users_by_weight_and_moves_with_the_step(upstreams):
    stable, candidate = upstreams
    router = WeightedRouter(stable.url, candidate.url, weight=25).start()
    try:
        with httpx.Client(base_url=router.url, timeout=10) as client:
            answers = [client.post("/v1/completions", json={"i": i}).text for i in range(40)]
            assert answers.count("candidate") == 10 and answers.count("stable") == 30
            assert len(candidate.seen) == 10 and b'"i"' in candidate.seen[0]  # the body went through
            router.set_weight(50)
            answers = [client.get("/").text for _ in range(20)]
            assert answers.count("candidate") == 10
        assert router.sent() == {"stable": 40, "candidate": 20}
    finally:
        router.stop()


def test_router_streams_as_the_server_writes(upstreams):
    stable, candidate = upstreams
    router = WeightedRouter(stable.url, candidate.url, weight=0).start()
    try:
        arrivals = []
        started = time.monotonic()
        with httpx.stream("GET", f"{router.url}/stream", timeout=10) as resp:
            for line in resp.iter_lines():
                if line:
                    arrivals.append((time.monotonic() - started, line))
        assert [line for _, line in arrivals] == ["data: stable 0", "data: stable 1", "data: stable 2"]
        # Streamed: the first event arrived well before the last (written 0.4 s later), not all at once.
        assert arrivals[-1][0] - arrivals[0][0] > 0.25
    finally:
        router.stop()


def test_a_candidate_that_is_gone_answers_502_naming_it(upstreams):
    stable, _ = upstreams
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    router = WeightedRouter(stable.url, dead, weight=100).start()
    try:
        resp = httpx.get(router.url, timeout=10)
        assert resp.status_code == 502
        assert dead in resp.json()["error"]["message"] and "candidate" in resp.json()["error"]["message"]
    finally:
        router.stop()


def test_rollback_drains_the_candidate_and_stop_lets_requests_in_flight_finish(upstreams):
    stable, candidate = upstreams
    router = WeightedRouter(stable.url, candidate.url, weight=100).start()
    got: list[list[str]] = []

    def user() -> None:
        with httpx.stream("GET", f"{router.url}/stream", timeout=10) as resp:
            got.append([line for line in resp.iter_lines() if line])

    first = threading.Thread(target=user)
    first.start()
    deadline = time.monotonic() + 5
    while router.in_flight()["candidate"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert router.in_flight() == {"stable": 0, "candidate": 1}
    router.set_weight(0)  # what a failed step does first: new users go to the stable only
    assert router.drain("candidate", 5.0) == 0  # ... then waits for the candidate's users
    first.join()
    assert got == [["data: candidate 0", "data: candidate 1", "data: candidate 2"]]  # answered whole

    second = threading.Thread(target=user)
    second.start()
    while router.in_flight()["stable"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    router.stop()  # promote-model ends with a request in flight: it finishes, the address closes
    second.join()
    assert got[-1] == ["data: stable 0", "data: stable 1", "data: stable 2"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(router.url, timeout=2)


def test_drain_is_bounded_and_says_what_is_left(upstreams):
    stable, candidate = upstreams
    router = WeightedRouter(stable.url, candidate.url, weight=100).start()
    try:
        user = threading.Thread(target=lambda: httpx.get(f"{router.url}/stream", timeout=10))
        user.start()
        deadline = time.monotonic() + 5
        while router.in_flight()["candidate"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert router.drain("candidate", 0.05) == 1
        user.join()
        assert router.in_flight() == {"stable": 0, "candidate": 0}
    finally:
        router.stop()
