"""The lean HTTP/1.1 transport and the streaming client over real loopback sockets.

A small scripted asyncio server answers each request with the bytes a test gives it (split at
any boundary, with pauses, closing when told), so framing, keep-alive, stale connections,
timeouts, truncated streams and the per-request record are pinned without a model server.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from llm_rollout.validation.client import Endpoint, build_payload, make_client, stream_request
from llm_rollout.validation.load import run_load
from llm_rollout.validation.transport import LeanTransport

Script = list[bytes | float | str | Callable[[], None]]
"""Response pieces: bytes are written (and flushed), a float sleeps, ``"close"`` closes, a callable is
called (a test marks the moment the server reached that point)."""


@dataclass
class Server:
    """A loopback server answering each request with ``respond(request_head, body)``'s script."""

    respond: Callable[[bytes, bytes], Script]
    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                for piece in self.respond(head, body):
                    if piece == "close":
                        writer.close()
                        return
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                    elif callable(piece):
                        piece()
                    else:
                        writer.write(piece)
                        await writer.drain()
        except ConnectionError:
            return
        finally:
            self.open_now -= 1


def chunk(part: bytes) -> bytes:
    """One HTTP chunk."""
    return f"{len(part):x}\r\n".encode() + part + b"\r\n"


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    """A whole chunked body (with the last chunk and optional trailers)."""
    return b"".join(chunk(p) for p in parts) + b"0\r\n" + trailers + b"\r\n"


HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def sse(*events: dict | str) -> list[bytes]:
    out = []
    for ev in events:
        data = ev if isinstance(ev, str) else json.dumps(ev, separators=(",", ":"))
        out.append(f"data: {data}\n\n".encode())
    return out


TOKEN = {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}
LAST = {"choices": [{"index": 0, "text": "y", "finish_reason": "length"}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


def run(coro):
    return asyncio.run(coro)


def bytewise(data: bytes) -> Script:
    return [data[i : i + 1] for i in range(len(data))]


# Framing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_chunked_bodies_at_any_boundary_and_keep_alive(split):
    payload = chunked(b"hello ", b"world", b"!" * 300, trailers=b"x-trailer: 1\r\n")

    def respond(head: bytes, body: bytes) -> Script:
        data = HEAD_CHUNKED + payload
        return [data] if split == "whole" else bytewise(data)

    async def main():
        async with Server(respond) as srv:
            client = make_client(Endpoint(srv.url, "m"), 4)
            for _ in range(3):
                r = await client.get(srv.url + "/x")
                assert r.status_code == 200
                assert r.content == b"hello world" + b"!" * 300
            await client.aclose()
            return srv.connections

    assert run(main()) == 1, "one connection, reused"


def test_content_length_close_delimited_and_no_body():
    bodies = {
        b"/cl": [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabcde"],
        b"/close": [b"HTTP/1.0 200 OK\r\n\r\nuntil the end", "close"],
        b"/nobody": [b"HTTP/1.1 204 No Content\r\n\r\n"],
        b"/interim": [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
    }

    def respond(head: bytes, body: bytes) -> Script:
        return bodies[head.split(b" ")[1]]

    async def main():
        async with Server(respond) as srv:
            client = make_client(Endpoint(srv.url, "m"), 2)
            out = {p: (await client.get(srv.url + p.decode())) for p in bodies}
            await client.aclose()
            return {p: (r.status_code, r.content) for p, r in out.items()}

    got = run(main())
    assert got[b"/cl"] == (200, b"abcde")
    assert got[b"/close"] == (200, b"until the end")
    assert got[b"/nobody"] == (204, b"")
    assert got[b"/interim"] == (200, b"ok")


def test_requests_carry_headers_body_and_api_key():
    def respond(head: bytes, body: bytes) -> Script:
        return [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]

    async def main():
        async with Server(respond) as srv:
            client = make_client(Endpoint(srv.url + "/v1", "m", api_key="sk-test"), 1)
            await client.post(srv.url + "/v1/completions", json={"a": 1})
            await client.aclose()
            return srv.requests[0]

    raw = run(main())
    assert raw.startswith(b"POST /v1/completions HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer sk-test\r\n" in raw or b"\r\nauthorization: Bearer sk-test\r\n" in raw
    assert raw.endswith(b'{"a":1}') or raw.endswith(b'{"a": 1}')


# Failures ---------------------------------------------------------------------------------------


def test_a_stale_keep_alive_connection_is_replaced():
    def respond(head: bytes, body: bytes) -> Script:
        return [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 0.01, "close"]  # server closes when idle

    async def main():
        async with Server(respond) as srv:
            client = make_client(Endpoint(srv.url, "m"), 1)
            a = await client.get(srv.url + "/")
            await asyncio.sleep(0.1)
            b = await client.get(srv.url + "/")
            await client.aclose()
            return a.content, b.content, srv.connections

    assert run(main()) == (b"ok", b"ok", 2)


def test_body_cut_mid_chunk_raises_remote_protocol_error():
    def respond(head: bytes, body: bytes) -> Script:
        return [HEAD_CHUNKED + b"a\r\n01234", "close"]

    async def main():
        async with Server(respond) as srv:
            client = make_client(Endpoint(srv.url, "m"), 1)
            with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
                await client.get(srv.url + "/")
            await client.aclose()

    run(main())


def test_timeouts_and_refused_connections():
    def respond(head: bytes, body: bytes) -> Script:
        return [5.0]

    async def main():
        async with Server(respond) as srv:
            client = make_client(Endpoint(srv.url, "m"), 1, read_timeout_s=0.2)
            with pytest.raises(httpx.ReadTimeout):
                await client.get(srv.url + "/")
            await client.aclose()
            port = srv.server.sockets[0].getsockname()[1]
        client = make_client(Endpoint(f"http://127.0.0.1:{port}", "m"), 1)
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
        await client.aclose()

    run(main())


def test_connection_cap_is_respected():
    def respond(head: bytes, body: bytes) -> Script:
        return [0.05, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]

    async def main():
        async with Server(respond) as srv:
            client = make_client(Endpoint(srv.url, "m"), 3)
            await asyncio.gather(*(client.get(srv.url + "/") for _ in range(12)))
            await client.aclose()
            return srv.max_open, srv.connections

    max_open, connections = run(main())
    assert max_open <= 3 and connections <= 3


def test_unsupported_scheme():
    t = LeanTransport(1)
    with pytest.raises(httpx.UnsupportedProtocol):
        t.pool_key(httpx.URL("ftp://x/"))


# The streaming client ---------------------------------------------------------------------------


def stream_once(respond: Callable[[bytes, bytes], Script], *, collect_text: bool = False, encoded: bool = True):
    async def main():
        async with Server(respond) as srv:
            ep = Endpoint(srv.url, "m")
            client = make_client(ep, 1)
            payload = build_payload("completions", "m", "p", 3)
            body = json.dumps(payload).encode() if encoded else payload
            rec = await stream_request(client, ep, "completions", body, collect_text=collect_text)
            await client.aclose()
            return rec

    return run(main())


@pytest.mark.parametrize("encoded", [True, False], ids=["lean-path", "httpx-path"])
def test_a_complete_stream_is_recorded_like_vllm_bench(encoded):
    events = sse(TOKEN, TOKEN, LAST, USAGE, "[DONE]")
    usage_sent: list[float] = []

    def mark() -> None:
        usage_sent.append(time.perf_counter())

    def respond(head: bytes, body: bytes) -> Script:
        first, second, last, usage, done = events
        return [HEAD_CHUNKED, chunk(first), 0.05, chunk(second), chunk(last), 0.02, mark, chunk(usage) + chunked(done)]

    rec = stream_once(respond, collect_text=True, encoded=encoded)
    assert rec.success, rec.error
    assert rec.output_tokens == 3 and rec.prompt_len == 7, "from the usage event"
    assert len(rec.itl) == 2
    assert rec.ttft > 0 and rec.itl[0] >= 0.04, "the gap before the 2nd token event is measured"
    assert rec.latency == pytest.approx(rec.ttft + sum(rec.itl))
    # Causal, not timed: the end the client recorded lies before the server even wrote the usage event
    # (same process, same perf_counter clock), however slow a loaded host makes the pauses.
    assert rec.start_time + rec.latency < usage_sent[0], "the usage event and [DONE] do not move the end"
    assert rec.generated_text == "xxy" and rec.finish_reason == "length"


def test_a_stream_without_done_is_a_failure():
    def respond(head: bytes, body: bytes) -> Script:
        return [HEAD_CHUNKED + chunked(*sse(TOKEN, TOKEN))]

    rec = stream_once(respond)
    assert not rec.success
    assert rec.error == "the stream ended before [DONE] after 2 token events"


def test_a_stream_cut_by_the_server_is_a_failure():
    def respond(head: bytes, body: bytes) -> Script:
        return [HEAD_CHUNKED + chunk(sse(TOKEN)[0]), 0.01, "close"]

    rec = stream_once(respond)
    assert not rec.success
    assert rec.error.startswith("connection closed mid-response") and rec.error.endswith("(after 1 token events)")


def test_http_errors_and_error_events_are_captured():
    def respond(head: bytes, body: bytes) -> Script:
        text = b'{"error":{"message":"<b>model overloaded</b>"}}'
        return [b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n" % len(text) + text]

    rec = stream_once(respond)
    assert not rec.success and rec.status_code == 503
    assert rec.error == 'HTTP 503: {"error":{"message":"<b>model overloaded</b>"}}'

    def respond_event(head: bytes, body: bytes) -> Script:
        return [HEAD_CHUNKED + chunked(*sse(TOKEN, {"error": {"message": "engine died", "code": 500}}))]

    rec = stream_once(respond_event)
    assert not rec.success and rec.error == "error event in stream: engine died"


def load_two_at_a_time(respond: Callable[[bytes, bytes], Script], *, max_duration_s: float):
    """A closed-loop level (10 requests, 2 in flight) against a scripted server."""

    async def main():
        async with Server(respond) as srv:
            ep = Endpoint(srv.url, "m")
            client = make_client(ep, 2)
            res = await run_load(
                client, ep, ["a", "b"], output_tokens=3, num_requests=10, concurrency=2, max_duration_s=max_duration_s
            )
            await client.aclose()
            return res

    return run(main())


def test_the_time_bound_marks_requests_incomplete():
    def respond(head: bytes, body: bytes) -> Script:
        return [HEAD_CHUNKED + chunk(sse(TOKEN)[0]), 30.0]

    res = load_two_at_a_time(respond, max_duration_s=0.2)
    assert res.truncated
    assert len(res.records) == 2
    assert all(r.incomplete and not r.success for r in res.records)
    # The bound ended the level (truncated), not the server (which holds each stream for 30 s); only
    # the lower end is timing, which a busy machine can only lengthen.
    assert res.duration_s >= 0.2


def test_a_stream_read_only_after_the_bound_is_incomplete_even_when_whole():
    # The server sends the whole stream at once, then the event loop is blocked until well past the
    # 100 ms bound (a client starved of CPU): the complete stream is read late, in one go. To this
    # client it was still in flight at the bound, so it counts as neither a success nor a failure.
    body = HEAD_CHUNKED + chunked(*sse(TOKEN, TOKEN, LAST, "[DONE]"))

    def respond(head: bytes, body_in: bytes) -> Script:
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        return [body]

    res = load_two_at_a_time(respond, max_duration_s=0.1)
    assert res.truncated
    assert len(res.records) == 2
    assert all(r.incomplete and not r.success for r in res.records), [r.error for r in res.records]
    assert not any(r.error and "bound" not in r.error for r in res.records)


# TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    d = tmp_path_factory.mktemp("tls")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make test certificates (apt-get install -y openssl)", pytrace=False)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem",
        "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    return d


def test_tls_verification_ca_bundle_and_insecure(tls_files):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_files / "srv.pem", tls_files / "srv.key")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntls")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        url = f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        results = {}
        for name, ep in {
            "ca_bundle": Endpoint(url, "m", ca_bundle=str(tls_files / "ca.pem")),
            "insecure": Endpoint(url, "m", tls_verify=False),
            "system_trust": Endpoint(url, "m"),
        }.items():
            client = make_client(ep, 1)
            try:
                results[name] = (await client.get(url + "/")).content
            except httpx.ConnectError as err:
                results[name] = err
            await client.aclose()
        srv.close()
        return results

    results = run(main())
    assert results["ca_bundle"] == b"tls"
    assert results["insecure"] == b"tls"
    assert isinstance(results["system_trust"], httpx.ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(results["system_trust"])
