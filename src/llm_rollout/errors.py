"""The two kinds of error the library raises.

Every failure is mapped once, at the edge where it happens, into one of two kinds:

* :class:`PermanentError` - retrying cannot help (bad spec, HTTP 4xx, a missing prerequisite).
  It fails the step at once with a message a user can act on.
* :class:`TransientError` - the same call may succeed later (connection refused/reset, HTTP 429
  and 5xx, watch expiry). Callers retry these with backoff inside a deadline; when the deadline
  runs out the last transient error is re-raised as a :class:`DeadlineExceeded`, which is
  permanent for the step.
"""

from __future__ import annotations


class RolloutError(Exception):
    """Base class of every error the library raises on purpose."""


class PermanentError(RolloutError):
    """Retrying cannot help: the input, the cluster state or a prerequisite must change first."""


class SpecError(PermanentError, ValueError):
    """A rollout spec (or flag, URI, name, SLO expression) is invalid.

    Args:
        field: Dotted path of the offending field, e.g. ``runtime.kv_cache_dtype``.
        problem: What is wrong, in the user's terms.
        fix: What to change to make it right.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        # Bounded whatever a check quoted: a hostile value is never repeated in full (issue 31).
        self.field = _cut(field, MESSAGE_PART_LIMIT // 4)
        self.problem = _cut(problem, MESSAGE_PART_LIMIT)
        self.fix = _cut(fix, MESSAGE_PART_LIMIT)
        super().__init__(f"{self.field}: {self.problem}. Fix: {self.fix}")


MESSAGE_PART_LIMIT = 800
"""Characters of a SpecError's problem or fix kept (the field: a quarter of it)."""


def _cut(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TransientError(RolloutError):
    """The operation may succeed if retried (connection error, 429, 5xx, watch expired)."""


class DeadlineExceeded(PermanentError, TimeoutError):
    """A bounded wait or retry loop ran out of time; the message says what was last seen."""
