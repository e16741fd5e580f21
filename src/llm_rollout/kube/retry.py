"""Retries of transient errors: jittered exponential backoff under an overall deadline.

:func:`retry` retries :class:`~llm_rollout.errors.TransientError` (connection problems, 429, 5xx,
an expired watch: see :mod:`llm_rollout.kube.errors`) and raises
:class:`~llm_rollout.errors.DeadlineExceeded` carrying the last error when the deadline runs out; a
permanent error propagates at once. Every public call of :class:`~llm_rollout.kube.client.KubeClient`
already runs under it; :mod:`llm_rollout.wait` uses :func:`backoff_delays` between re-watches.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from llm_rollout.errors import DeadlineExceeded, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delays(initial: float = 0.1, maximum: float = 5.0, factor: float = 2.0) -> Iterator[float]:
    """Yields jittered exponential delays: ``uniform(d/2, d)`` with ``d`` doubling up to ``maximum``."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(maximum, delay * factor)


def retry(
    fn: Callable[[], T],
    *,
    deadline_s: float,
    what: str,
    initial_delay_s: float = 0.1,
    max_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Calls ``fn`` until it succeeds, retrying :class:`TransientError` within a deadline.

    Delays grow exponentially with jitter; a server's ``Retry-After`` is honoured when it is
    longer. A :class:`PermanentError` (or anything else) propagates at once.

    Args:
        fn: The operation.
        deadline_s: Overall time budget, first attempt included.
        what: What is being done, for the deadline message.
        initial_delay_s: First backoff delay.
        max_delay_s: Cap on a single delay.
        sleep: Sleep function (tests may pass a fake).
        clock: Monotonic clock (tests may pass a fake).

    Returns:
        What ``fn`` returned.

    Raises:
        DeadlineExceeded: When the deadline ran out; the message and ``__cause__`` carry the last
            transient error.
    """
    start = clock()
    attempts = 0
    delays = backoff_delays(initial_delay_s, max_delay_s)
    while True:
        attempts += 1
        try:
            return fn()
        except TransientError as err:
            last = err
        elapsed = clock() - start
        remaining = deadline_s - elapsed
        delay = next(delays)
        after = getattr(last, "retry_after", None)
        if after:
            delay = max(delay, after)
        if remaining <= 0 or (after and after > remaining):
            raise DeadlineExceeded(
                f"{what}: gave up after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f}s "
                f"(deadline {deadline_s:g}s); last error: {last}"
            ) from last
        delay = min(delay, remaining)  # one last attempt right at the deadline
        log.info("%s: %s; retrying in %.2fs", what, last, delay)
        sleep(delay)
