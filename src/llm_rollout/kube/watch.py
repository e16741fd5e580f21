"""Watch streams: the events of one watch request, read line by line, with errors mapped once.

:meth:`llm_rollout.kube.client.KubeClient.watch` opens the request and returns a
:class:`WatchStream`; re-watching from the last resourceVersion (and re-listing after a
:class:`~llm_rollout.kube.errors.WatchExpired`) is the caller's loop, see :mod:`llm_rollout.wait`.
:func:`condition` reads one status condition of an object a watch (or a read) delivered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from kubernetes.client.rest import ApiException

from llm_rollout.errors import RolloutError
from llm_rollout.kube.errors import ApiTransientError, Target, map_api_exception, map_error


class WatchStream:
    """The events of one watch request, as decoded dicts (``type``, ``object``).

    ``ERROR`` events are raised as mapped errors (410 becomes :class:`WatchExpired`). Call
    :meth:`close` (or use it as a context manager) to end it early, from any thread.
    """

    def __init__(self, resp: Any, target: Target) -> None:
        self._resp = resp
        self._target = target
        self._closed = False

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the watch (safe to call twice, and from another thread)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._resp.shutdown()
        with contextlib.suppress(Exception):
            self._resp.close()
        with contextlib.suppress(Exception):
            self._resp.release_conn()

    def _lines(self) -> Iterator[bytes]:
        buf = b""
        for chunk in self._resp.stream(65536, decode_content=True):
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield line
        if buf.strip():
            yield buf

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self._lines():
                try:
                    event = json.loads(line)
                except ValueError as err:
                    raise ApiTransientError(f"watch {self._target.describe()}: undecodable event: {err}") from None
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    code = int(status.get("code") or 500)
                    exc = ApiException(status=code, reason=status.get("reason", ""))
                    exc.body = json.dumps(status)
                    raise map_api_exception(exc, self._target)
                yield event
        except RolloutError:
            raise
        except BaseException as err:  # mapped once, re-raised
            if self._closed:
                return
            mapped = map_error(err, self._target)
            if mapped is err:
                raise
            raise mapped from err
        finally:
            self.close()


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind`` of ``obj``, or None."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None
