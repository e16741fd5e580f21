"""A weighted router at the local service's address: the stepped canary splits real user traffic.

On a cluster the split is done by the Gateway (HTTPRoute weights, KServe Standard), Knative's
route (``canaryTrafficPercent``) or llm-d's route group. Locally, this router listens at the
service's address and sends each request to the stable server or the candidate by weight, so that
a step's live analysis (:mod:`llm_rollout.validation.analysis`) sees the candidate serve its share
of the users, and a replay of the team's workload file through this address plays those users.

The split is *smooth weighted round robin* (the nginx upstream algorithm, ``ngx_http_upstream_round_robin.c``
``ngx_http_upstream_get_peer``): over any 100 consecutive requests the candidate gets exactly
``weight`` of them, spread evenly, so a short step sees its share without sampling noise. Each
request is one upstream connection (``Connection: close`` upstream), and the response bytes are
passed through as they arrive (server-sent events stream token by token). Bounded: the request
head is at most 64 KiB, the body at most ``MAX_BODY_BYTES``, and an upstream that does not accept
within ``CONNECT_TIMEOUT_S`` answers 502 naming it. The requests each side is serving are
counted (:meth:`WeightedRouter.in_flight`), so a rollback moves the candidate's weight to 0 and
drains it (:meth:`WeightedRouter.drain`) before its server stops: no user's request is cut off.

Run it in-process (:class:`WeightedRouter` in a background thread) or as a process::

    python -m llm_rollout.local.router --port 8000 --stable http://127.0.0.1:8001 \\
        --candidate http://127.0.0.1:8002 --weight 10 --control FILE

where ``FILE`` (JSON ``{"weight": N, "stable": URL, "candidate": URL}``) is re-read when it changes,
so the promote step moves the weight of a running router without restarting it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0
CONTROL_POLL_S = 0.2
STOP_DRAIN_S = 30.0
"""How long :meth:`WeightedRouter.stop` lets the requests in flight finish."""


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: the local router forwards to http://host:port upstreams only")
    return parts.hostname, parts.port or 80


@dataclass
class Split:
    """Smooth weighted round robin between ``stable`` and ``candidate`` (``weight``: candidate percent)."""

    stable: str
    candidate: str | None = None
    weight: int = 0
    sent: dict[str, int] = field(default_factory=lambda: {"stable": 0, "candidate": 0})
    _current: dict[str, int] = field(default_factory=lambda: {"stable": 0, "candidate": 0})

    def set(self, *, weight: int, stable: str | None = None, candidate: str | None = None) -> None:
        """Moves the weight (0-100) and, when given, the upstreams."""
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} is outside 0-100")
        self.weight = weight
        if stable:
            self.stable = stable
        if candidate is not None:
            self.candidate = candidate or None
        self._current = {"stable": 0, "candidate": 0}

    def pick(self) -> tuple[str, str]:
        """The next request's side and upstream URL."""
        weights = {"stable": 100 - self.weight, "candidate": self.weight if self.candidate else 0}
        if weights["candidate"] == 0:
            side = "stable"
        elif weights["stable"] == 0:
            side = "candidate"
        else:
            for k, w in weights.items():
                self._current[k] += w
            side = max(self._current, key=lambda k: self._current[k])
            self._current[side] -= sum(weights.values())
        self.sent[side] += 1
        return side, (self.candidate if side == "candidate" else self.stable) or self.stable


class WeightedRouter:
    """The router: :meth:`start` listens on ``host:port`` in a background thread; :meth:`set_weight`
    moves the split; :meth:`stop` closes it.

    Args:
        stable: The stable server's base URL (``http://127.0.0.1:8001``).
        candidate: The candidate's, or None (everything to the stable).
        weight: The candidate's percent.
        host: Where to listen.
        port: The service's port (0: any free one; see :attr:`url`).
    """

    def __init__(
        self, stable: str, candidate: str | None = None, *, weight: int = 0, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        _host_port(stable)
        if candidate:
            _host_port(candidate)
        self.split = Split(stable, candidate)
        self.split.set(weight=weight)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._in_flight = {"stable": 0, "candidate": 0}

    @property
    def url(self) -> str:
        """The service's address."""
        return f"http://{self.host}:{self.port}"

    def set_weight(self, weight: int, *, stable: str | None = None, candidate: str | None = None) -> None:
        """Moves the candidate's share (and the upstreams, when given); requests in flight finish where they went."""
        with self._lock:
            self.split.set(weight=weight, stable=stable, candidate=candidate)

    def sent(self) -> dict[str, int]:
        """Requests sent to each side since the router started."""
        with self._lock:
            return dict(self.split.sent)

    def in_flight(self) -> dict[str, int]:
        """Requests each side is serving now (sent upstream, response not yet passed on whole)."""
        with self._lock:
            return dict(self._in_flight)

    def drain(self, side: str, timeout_s: float) -> int:
        """Waits (bounded) until ``side`` serves no request any more; returns how many it still
        served at the bound. Call it after moving that side's weight to 0, before stopping its
        server, so the users it was serving get their answers (a rollback loses no request)."""
        deadline = time.monotonic() + timeout_s
        while (left := self.in_flight()[side]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def start(self) -> WeightedRouter:
        """Listens in a background thread; returns once the socket is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as err:
                failure.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            # Requests still in flight were cancelled by stop(); let them unwind before closing.
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="weighted-router", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self, drain_s: float = STOP_DRAIN_S) -> None:
        """Stops listening, lets the requests in flight finish (at most ``drain_s``), then closes the loop."""
        if self._loop is None:
            return
        loop = self._loop
        if self._server is not None:
            loop.call_soon_threadsafe(self._server.close)
        deadline = time.monotonic() + drain_s
        while any(self.in_flight().values()) and time.monotonic() < deadline:
            time.sleep(0.05)

        def close() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.call_soon(loop.stop)

        loop.call_soon_threadsafe(close)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        if len(head) > MAX_HEAD_BYTES:
            await _answer(writer, 431, "request head too large")
            return
        lines = head.decode("latin-1").split("\r\n")
        headers = [ln for ln in lines[1:] if ln]
        length = 0
        kept: list[str] = []
        for line in headers:
            name, _, value = line.partition(":")
            low = name.strip().lower()
            if low == "content-length":
                length = int(value.strip() or 0)
            if low in ("connection", "keep-alive", "proxy-connection"):
                continue
            kept.append(line)
        if length > MAX_BODY_BYTES:
            await _answer(writer, 413, f"request body over {MAX_BODY_BYTES} bytes")
            return
        body = await reader.readexactly(length) if length else b""
        with self._lock:
            side, upstream = self.split.pick()
            self._in_flight[side] += 1
        try:
            await self._forward(writer, side, upstream, (lines[0], *kept), body)
        finally:
            with self._lock:
                self._in_flight[side] -= 1

    async def _forward(
        self, writer: asyncio.StreamWriter, side: str, upstream: str, head: tuple[str, ...], body: bytes
    ) -> None:
        host, port = _host_port(upstream)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            await _answer(writer, 502, f"the {side} server at {upstream} did not accept the connection ({err})")
            return
        up_writer.write(("\r\n".join([*head, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body)
        try:
            await up_writer.drain()
            while chunk := await asyncio.wait_for(up_reader.read(65536), READ_TIMEOUT_S):
                writer.write(chunk)
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            up_writer.close()
            writer.close()


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = json.dumps({"error": {"message": text, "type": "router_error", "code": status}}).encode()
    writer.write(
        f"HTTP/1.1 {status} Router\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    finally:
        writer.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m llm_rollout.local.router``: the router as a process, steered by a control file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stable", required=True)
    parser.add_argument("--candidate")
    parser.add_argument("--weight", type=int, default=0)
    parser.add_argument("--control", type=Path, help="JSON {weight, stable, candidate}, re-read when it changes")
    args = parser.parse_args(argv)
    router = WeightedRouter(args.stable, args.candidate, weight=args.weight, host=args.host, port=args.port).start()
    stamp = None
    stop = threading.Event()
    try:
        while not stop.wait(CONTROL_POLL_S):
            if args.control is None or not args.control.is_file():
                continue
            mtime = args.control.stat().st_mtime_ns
            if mtime == stamp:
                continue
            stamp = mtime
            try:
                data = json.loads(args.control.read_text()[:4096])
                router.set_weight(int(data["weight"]), stable=data.get("stable"), candidate=data.get("candidate"))
            except (ValueError, KeyError, TypeError) as err:
                print(f"router: ignoring control file {args.control}: {err}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        router.stop()


if __name__ == "__main__":
    main()
