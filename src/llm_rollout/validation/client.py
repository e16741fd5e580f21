"""Streamed OpenAI requests over one ``httpx.AsyncClient``, measured like ``vllm bench serve``.

Design points (the client must never be the bottleneck):

* One :class:`httpx.AsyncClient` per validation, its connection pool sized to the highest
  concurrency, keep-alive on: connections are reused across requests and levels. Its transport is
  :class:`~llm_rollout.validation.transport.LeanTransport`; the load path sends pre-encoded
  request bytes straight through it (no per-request URL parsing, header merging or cookie jar).
* Per streamed event the only Python work is one ``perf_counter()`` per network read, a
  ``bytes.split`` into SSE events and a substring test; JSON is parsed only for the server's
  usage event and error events (and for every event when the text is wanted, e.g. by probes).
  Events that arrive in the same network read share its timestamp.
* Each request is a :class:`~llm_rollout.validation.metrics.RequestRecord`; every error (HTTP
  status with a body excerpt, refused connection, a stream cut before ``[DONE]``, a timeout) is
  captured in it, never raised. Success is stricter than vLLM's (which accepts any stream with a
  first token): HTTP 200, at least one token event *and* the closing ``[DONE]``.

The load itself (levels of many such requests) is :mod:`llm_rollout.validation.load`.

Credentials: the API key comes from an environment variable or a file (a mounted secret); it is
sent as ``Authorization: Bearer`` and kept out of every ``repr``, log line and report.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import httpx

from llm_rollout.bounded import read_regular_file
from llm_rollout.errors import PermanentError, SpecError, TransientError
from llm_rollout.spec.rules import check_api_key_env, check_api_key_file
from llm_rollout.urls import redact_url, same_origin
from llm_rollout.validation.metrics import RequestRecord
from llm_rollout.validation.transport import LeanTransport

Api = Literal["completions", "chat"]
API_PATHS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
ERROR_BODY_LIMIT = 600
"""Characters of a server's error body kept in a record (enough to act on, bounded in memory)."""
OPEN_LOOP_MAX_STREAMS = 256
"""Connection cap for an uncapped Poisson level (requests beyond it wait for a connection)."""
CONNECT_TIMEOUT_S = 10.0
SSE_EVENT_LIMIT = 1024 * 1024
"""Bytes one server-sent event may have (a token event is ~200 B; a usage event ~300 B)."""
STREAM_LIMIT = 64 * 1024 * 1024
"""Bytes one streamed response may have (issue 31: a stream that never ended grew to 600 MB). Over
either limit the request fails with the reason; the rest of the validation goes on."""
MAX_TOKEN_EVENTS = 262_144
"""Token events one streamed response may have (above any ``max_tokens`` the spec allows): the
per-event timings are kept, so their number is bounded as well as the bytes."""
RESPONSE_LIMIT = 8 * 1024 * 1024
"""Bytes of a plain (non-streamed) JSON response read at most (``/v1/models``, a probe's completion)."""
JSON_HEADERS = {"Content-Type": "application/json"}

_LEAN: weakref.WeakKeyDictionary[httpx.AsyncClient, LeanTransport] = weakref.WeakKeyDictionary()
"""Clients made by :func:`make_client` with the lean transport (the load path writes pre-serialized
requests straight to it)."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and how to authenticate.

    Attributes:
        base_url: Server root, e.g. ``http://host:8000`` (a trailing ``/v1`` is dropped; a path
            prefix such as KServe's ``/serving/<ns>/<name>`` is kept).
        model: The ``model`` name requests use.
        api_key: Bearer token; never shown by ``repr`` or logged.
        tls_verify: Verify the server's certificate.
        ca_bundle: CA bundle file to verify against (default: the system's).
        userinfo: ``user:password`` taken out of ``base_url`` (sent as HTTP Basic auth when there
            is no API key); the URL kept, logged and reported never carries it.
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    tls_verify: bool = True
    ca_bundle: str | None = None
    userinfo: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        url = self.base_url.rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]
        parts = httpx.URL(url)
        if parts.userinfo:
            object.__setattr__(self, "userinfo", parts.userinfo.decode())
            url = str(parts.copy_with(username=None, password=None)).rstrip("/")
        object.__setattr__(self, "base_url", url)

    def url(self, path: str) -> str:
        """Absolute URL of an API path (``/v1/models``)."""
        return self.base_url + path


def key_for(url: str, endpoint_url: str, api_key: str | None, allowed: bool, field: str) -> str | None:
    """The API key to send to ``url``: the endpoint's own origin gets it, another only when ``allowed``.

    Args:
        url: Where requests would go (the original's or the stable revision's endpoint).
        endpoint_url: The endpoint under validation (the key's own origin).
        api_key: The key, if any.
        allowed: The spec field that lets the key go to another origin is set.
        field: That field, for the log line.

    Returns:
        The key, or None: requests to ``url`` then carry no ``Authorization`` (issue 31: a
        ``recovery.base_url`` on another host received the key).
    """
    if api_key is None or allowed or same_origin(url, endpoint_url):
        return api_key
    logging.getLogger(__name__).warning(
        "validate: the API key is not sent to %s (another origin than the endpoint's); set %s: true to send it",
        redact_url(url),
        field,
    )
    return None


def resolve_api_key(env_name: str | None = None, file: str | None = None) -> str | None:
    """Reads the API key from an environment variable or a file; never logs it.

    Args:
        env_name: Name of the environment variable holding the key.
        file: A file holding the key (e.g. a mounted Kubernetes secret); surrounding whitespace
            is stripped.

    Returns:
        The key, or None when neither source is configured.

    Raises:
        SpecError: A configured source is missing or empty (the message names the source,
            never the value).
    """
    if env_name:
        check_api_key_env(env_name)
        value = os.environ.get(env_name, "").strip()
        if not value:
            raise SpecError(
                "validation.api_key_env",
                f"the environment variable {env_name} is not set or empty",
                f"export {env_name} (or mount the secret as a file and set validation.api_key_file)",
            )
        return value
    if file:
        path = check_api_key_file(file)
        try:
            raw = read_regular_file(path, "validation.api_key_file", 64 * 1024, "API key")
        except SpecError as err:
            raise SpecError(err.field, err.problem, "mount the secret at that path") from None
        value = raw.decode("utf-8", "replace").strip()
        if not value:
            raise SpecError("validation.api_key_file", f"{file} is empty", "put the API key in the file")
        return value
    return None


def tls_setting(endpoint: Endpoint) -> ssl.SSLContext | bool:
    """The ``verify`` argument for httpx: False, the system trust store, or the CA bundle."""
    if not endpoint.tls_verify:
        return False
    if endpoint.ca_bundle:
        path = Path(endpoint.ca_bundle).expanduser()
        if not path.is_file():
            raise SpecError("validation.ca_bundle", f"{path} does not exist", "point it at a PEM CA bundle")
        return ssl.create_default_context(cafile=str(path))
    return True


def make_client(
    endpoint: Endpoint, max_connections: int, *, read_timeout_s: float = 300.0, lean: bool = True
) -> httpx.AsyncClient:
    """One pooled async client for an endpoint.

    Args:
        endpoint: The endpoint (TLS settings and API key are taken from it).
        max_connections: Pool size; set it to the highest concurrency so every stream has a
            connection and connections are reused between requests.
        read_timeout_s: Longest silence allowed between two reads of a response.
        lean: Use :class:`~llm_rollout.validation.transport.LeanTransport` (HTTP/1.1, parsing in
            an asyncio protocol; with pre-encoded bodies :func:`stream_request` writes straight to
            it): a few times less client CPU per streamed request than httpx's default transport
            (``bench/bench_validator.py``). False uses httpx's own transport.

    Returns:
        An ``httpx.AsyncClient`` (close it with ``await client.aclose()``).
    """
    headers = {"Accept": "text/event-stream, application/json", "Accept-Encoding": "identity"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    elif endpoint.userinfo:
        user, _, password = endpoint.userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"  # RFC 7617, as httpx does for a URL's userinfo
    timeout = httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=read_timeout_s, write=30.0, pool=None)
    verify = tls_setting(endpoint)
    if lean:
        ctx: ssl.SSLContext | None = None
        if verify is False:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif isinstance(verify, ssl.SSLContext):
            ctx = verify
        transport = LeanTransport(max_connections, ssl_context=ctx, connect_timeout_s=CONNECT_TIMEOUT_S)
        client = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport, trust_env=False)
        _LEAN[client] = transport
        return client
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=60.0
    )
    return httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout, verify=verify, trust_env=False)


def build_payload(
    api: Api,
    model: str,
    prompt: str,
    max_tokens: int,
    *,
    stream: bool = True,
    ignore_eos: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The request body: greedy (temperature 0), ``max_tokens``, streamed with a usage event.

    Args:
        api: ``completions`` or ``chat`` (the prompt becomes one user message).
        model: The ``model`` name.
        prompt: The prompt text.
        max_tokens: Output tokens to generate.
        stream: Stream the response (with ``stream_options.include_usage``).
        ignore_eos: Ask vLLM to generate exactly ``max_tokens`` (vLLM's own extension).
        extra: More fields (e.g. ``logprobs``).

    Returns:
        The JSON body.
    """
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if ignore_eos:
        body["ignore_eos"] = True
    if extra:
        body.update(extra)
    return body


def _excerpt(text: str, limit: int = ERROR_BODY_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def describe_exception(err: BaseException) -> str:
    """A one-line description of a transport error (type and message, no traceback)."""
    text = str(err) or repr(err)
    if isinstance(err, httpx.ConnectError):
        return f"connection failed: {_excerpt(text, 200)}"
    if isinstance(err, httpx.RemoteProtocolError):
        return f"connection closed mid-response: {_excerpt(text, 200)}"
    if isinstance(err, httpx.TimeoutException):
        return f"{type(err).__name__}: no data within the timeout"
    return f"{type(err).__name__}: {_excerpt(text, 200)}"


class MalformedEvent(ValueError):
    """A server-sent event that is not what the OpenAI API sends (the request fails, not the validation)."""


def _event(data: bytes) -> dict[str, Any]:
    """The JSON object of one event; anything else (a list, a number, bad JSON) is a :class:`MalformedEvent`."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedEvent(f"an event is not JSON: {_excerpt(data.decode('utf-8', 'replace'), 80)}") from None
    if not isinstance(value, dict):
        raise MalformedEvent(f"an event's JSON is a {type(value).__name__}, not an object")
    return value


def _count(value: Any, what: str) -> int:
    """A token count from the server, checked: a whole, finite, non-negative number."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**53:
        raise MalformedEvent(f"the server's {what} is {_excerpt(repr(value), 40)}, not a token count")
    return int(value)


def _text_of(event: dict[str, Any], api: Api) -> tuple[str, str | None]:
    try:
        choice = event["choices"][0]
        source = (choice.get("delta") or {}).get("content") if api == "chat" else choice.get("text")
        reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise MalformedEvent("a token event has no choices[0] object") from None
    if source is not None and not isinstance(source, str):
        raise MalformedEvent(f"a token event's text is a {type(source).__name__}, not a string")
    return source or "", reason if isinstance(reason, str) else None


def _target(client: httpx.AsyncClient, lean: LeanTransport, url: str) -> tuple[tuple[str, str, int], bytes]:
    """Pool key and the serialized request head up to ``Content-Length: `` for a POST to ``url``.

    Cached on the client's own transport (its headers, the API key included, never cross clients).
    """
    found = lean.templates.get(url)
    if found is None:
        u = httpx.URL(url)
        head = [b"POST ", u.raw_path, b" HTTP/1.1\r\nHost: ", u.netloc, b"\r\n"]
        for name, value in client.headers.raw:
            if name.lower() not in (b"host", b"content-length", b"content-type"):
                head += [name, b": ", value, b"\r\n"]
        head.append(b"Content-Type: application/json\r\nContent-Length: ")
        found = (LeanTransport.pool_key(u), b"".join(head))
        lean.templates[url] = found
    return found


@contextlib.asynccontextmanager
async def _open_stream(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any] | bytes
) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
    """(status, body chunks) of a POST; the lean path for pre-encoded bodies, httpx otherwise."""
    lean = _LEAN.get(client) if isinstance(payload, bytes) else None
    if lean is not None and isinstance(payload, bytes):
        key, head = _target(client, lean, url)
        conn = await lean.open(
            key,
            b"POST",
            b"".join((head, str(len(payload)).encode(), b"\r\n\r\n", payload)),
            connect_timeout=client.timeout.connect,
            read_timeout=client.timeout.read,
        )
        try:
            yield conn.status, lean.body(conn, client.timeout.read)
        finally:
            lean.release(conn)
        return
    if isinstance(payload, bytes):
        stream = client.stream("POST", url, content=payload, headers=JSON_HEADERS)
    else:
        stream = client.stream("POST", url, json=payload)
    async with stream as resp:
        yield resp.status_code, resp.aiter_raw()


async def stream_request(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    api: Api,
    payload: dict[str, Any] | bytes,
    record: RequestRecord | None = None,
    *,
    collect_text: bool = False,
) -> RequestRecord:
    """Sends one streamed request and records it; never raises for server or transport errors.

    Args:
        client: The pooled client.
        endpoint: The endpoint.
        api: ``completions`` or ``chat``.
        payload: The body (see :func:`build_payload`; must stream), or its JSON already encoded.
        record: The record to fill (lets a caller that cancels the request keep it).
        collect_text: Parse every event and keep the text and ``finish_reason`` (probes).

    Returns:
        The filled record.
    """
    rec = record if record is not None else RequestRecord()
    url = endpoint.url(API_PATHS[api])
    perf = time.perf_counter
    itl = rec.itl
    first = False
    done = False
    events = 0
    text_parts: list[str] = []
    st = perf()
    rec.start_time = st
    last = st
    try:
        async with _open_stream(client, url, payload) as (status, chunks):
            rec.status_code = status
            if status != 200:
                body = b""
                async for chunk in chunks:
                    body += chunk
                    if len(body) > 4 * ERROR_BODY_LIMIT:
                        break
                rec.error = f"HTTP {status}: {_excerpt(body.decode('utf-8', 'replace'))}"
                return rec
            buf = b""
            received = 0
            async for chunk in chunks:
                now = perf()
                received += len(chunk)
                if received > STREAM_LIMIT:
                    rec.error = (
                        f"the streamed response passed {STREAM_LIMIT // (1024 * 1024)} MiB after {events} token "
                        "events; the request was cut there"
                    )
                    return rec
                if buf:
                    chunk = buf + chunk
                if b"\r" in chunk:
                    chunk = chunk.replace(b"\r\n", b"\n")
                parts = chunk.split(b"\n\n")
                buf = parts.pop()
                if len(buf) > SSE_EVENT_LIMIT:
                    rec.error = (
                        f"a server-sent event passed {SSE_EVENT_LIMIT // 1024} KiB without ending; the request was cut"
                    )
                    return rec
                for ev in parts:
                    if not ev.startswith(b"data:"):
                        idx = ev.find(b"\ndata:")
                        if idx < 0:
                            continue  # comment, keep-alive or a field we do not use
                        ev = ev[idx + 1 :]
                    data = ev[5:].strip()
                    if data == b"[DONE]":
                        done = True
                    elif b'"choices":[]' in data or b'"choices": []' in data:
                        usage = _event(data).get("usage") or {}
                        if not isinstance(usage, dict):
                            raise MalformedEvent("the usage event's usage is not an object")
                        rec.output_tokens = _count(usage.get("completion_tokens"), "completion_tokens")
                        if usage.get("prompt_tokens") is not None:
                            rec.prompt_len = _count(usage["prompt_tokens"], "prompt_tokens")
                    elif b'"choices"' in data:
                        if first:
                            itl.append(now - last)
                        else:
                            rec.ttft = now - st
                            first = True
                        last = now
                        events += 1
                        if events > MAX_TOKEN_EVENTS:
                            rec.error = f"the stream passed {MAX_TOKEN_EVENTS} token events; the request was cut there"
                            return rec
                        if collect_text:
                            text, reason = _text_of(_event(data), api)
                            text_parts.append(text)
                            if reason is not None:
                                rec.finish_reason = reason
                    elif b'"error"' in data:
                        err = _event(data).get("error")
                        msg = err.get("message", err) if isinstance(err, dict) else err
                        rec.error = f"error event in stream: {_excerpt(str(msg))}"
                        return rec
    except MalformedEvent as err:
        rec.error = f"malformed stream: {err}"
        return rec
    except (httpx.HTTPError, OSError, ValueError) as err:
        rec.error = describe_exception(err)
        if first:
            rec.error += f" (after {events} token events)"
        return rec
    finally:
        if collect_text:
            rec.generated_text = "".join(text_parts)
        if first:
            rec.latency = last - st
        if not rec.output_tokens:
            rec.output_tokens = events
    if not first:
        rec.error = "the stream ended without a token event"
    elif not done:
        rec.error = f"the stream ended before [DONE] after {events} token events"
    else:
        rec.success = True
    return rec


async def post_json(
    client: httpx.AsyncClient, endpoint: Endpoint, path: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A plain (non-streamed) request; maps errors once, the house way.

    Args:
        client: The pooled client.
        endpoint: The endpoint.
        path: API path, e.g. ``/v1/completions`` (GET when ``payload`` is None).
        payload: JSON body for a POST.

    Returns:
        The decoded JSON response.

    Raises:
        TransientError: Connection problems, timeouts, HTTP 429 and 5xx.
        PermanentError: Other HTTP errors (4xx) or a body that is not JSON; the message has the
            status and an excerpt of the body.
    """
    url = endpoint.url(path)
    shown = redact_url(url)
    body = bytearray()
    try:
        request = client.stream("GET", url) if payload is None else client.stream("POST", url, json=payload)
        async with request as resp:
            status = resp.status_code
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > RESPONSE_LIMIT:
                    raise PermanentError(
                        f"{shown}: HTTP {status} with a body over {RESPONSE_LIMIT // (1024 * 1024)} MiB (not read)"
                    )
    except (httpx.HTTPError, OSError) as err:
        raise TransientError(f"{shown}: {describe_exception(err)}") from None
    text = body.decode("utf-8", "replace")
    if status == 429 or status >= 500:
        raise TransientError(f"{shown}: HTTP {status}: {_excerpt(text)}")
    if status >= 400:
        raise PermanentError(f"{shown}: HTTP {status}: {_excerpt(text)}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise PermanentError(f"{shown}: HTTP {status} but not JSON: {_excerpt(text, 200)}") from None
    if not isinstance(value, dict):
        raise PermanentError(f"{shown}: HTTP {status} but the JSON is a {type(value).__name__}, not an object")
    return value
