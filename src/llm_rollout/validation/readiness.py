"""Is the endpoint serving the model yet?

Readiness (:func:`check_readiness`): ``GET /v1/models`` must list the model (when it does not, the
error lists what the server does serve), then one streamed completion must succeed, all within a
deadline. Connection errors, 429 and 5xx are retried with backoff until the deadline; a 4xx or a
model that is not served fails at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from llm_rollout.errors import DeadlineExceeded, PermanentError, TransientError
from llm_rollout.validation.client import Api, Endpoint, build_payload, post_json, stream_request
from llm_rollout.validation.probes import SMOKE_PROMPTS


@dataclass
class Readiness:
    """What the readiness phase saw.

    Attributes:
        seconds: Time until ready.
        served_models: Model ids ``/v1/models`` listed.
        attempts: Attempts made.
    """

    seconds: float
    served_models: list[str]
    attempts: int


async def list_models(client: httpx.AsyncClient, endpoint: Endpoint) -> list[str]:
    """The model ids ``GET /v1/models`` lists.

    Raises:
        TransientError: Connection problems, 429, 5xx.
        PermanentError: 4xx (e.g. 401 without the right API key) or not an OpenAI model list.
    """
    data = await post_json(client, endpoint, "/v1/models")
    try:
        return [str(m["id"]) for m in data["data"]]
    except (KeyError, TypeError):
        raise PermanentError(f"{endpoint.url('/v1/models')} is not an OpenAI model list: {str(data)[:200]}") from None


async def check_readiness(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    *,
    timeout_s: float,
    api: Api = "completions",
    log: Callable[[str], None] = lambda _: None,
) -> Readiness:
    """Waits until the model is listed and one streamed completion succeeds.

    Args:
        client: The pooled client.
        endpoint: The endpoint.
        timeout_s: Deadline for the whole phase.
        api: Which endpoint the streamed request uses.
        log: Progress callback (called only when what is seen changes).

    Returns:
        What was seen.

    Raises:
        PermanentError: The model is not served (the message lists the served names) or the
            server answered with a 4xx.
        DeadlineExceeded: Not ready in time (the message has the last error).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    delay = 0.5
    attempts = 0
    last = ""
    while True:
        attempts += 1
        try:
            models = await list_models(client, endpoint)
            if endpoint.model not in models:
                served = ", ".join(repr(m) for m in models) or "nothing"
                raise PermanentError(
                    f"model {endpoint.model!r} is not served at {endpoint.base_url}; it serves {served}. "
                    f"Fix: pass the served name (--model / served_model_name), e.g. {models[0]!r}"
                    if models
                    else f"model {endpoint.model!r} is not served at {endpoint.base_url}; it serves nothing"
                )
            body = build_payload(api, endpoint.model, SMOKE_PROMPTS[0], 4, ignore_eos=True)
            rec = await asyncio.wait_for(
                stream_request(client, endpoint, api, body), timeout=max(1.0, deadline - time.monotonic())
            )
            if rec.success:
                return Readiness(time.monotonic() - started, models, attempts)
            if 400 <= rec.status_code < 500 and rec.status_code != 429:
                raise PermanentError(f"the first streamed request failed: {rec.error}")
            raise TransientError(f"the first streamed request failed: {rec.error}")
        except (TransientError, TimeoutError) as err:
            why = str(err) or "the first streamed request timed out"
            if why != last:
                log(f"readiness: not ready yet: {why}")
                last = why
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"{endpoint.base_url} was not ready within {timeout_s:g} s ({attempts} attempts); last error: {last}. "
                "Check that the server is running and reachable from here (URL, port, TLS settings)."
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 5.0)
