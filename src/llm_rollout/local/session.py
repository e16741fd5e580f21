"""One local run's servers, from start to cleanup: :func:`local_session`, :func:`cleanup`, the baseline server.

The process that drives a whole run (``llm-rollout run-local``, a test) wraps it in
:func:`local_session`, which calls :func:`cleanup` when the run ends, fails or is interrupted
(SIGINT, SIGTERM, ``atexit``): every candidate and baseline server is stopped, and the stable
server too unless ``keep_serving``. Nothing keeps running after a run unless ``keep_serving`` is
set. ``state.json`` is never changed here, so an interrupted run leaves it as it was.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from llm_rollout.local import server
from llm_rollout.local.state import ServerRecord, resolve_state_dir
from llm_rollout.model_files import check_model_dir
from llm_rollout.names import member_name
from llm_rollout.procs import sigterm_raises
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)


def start_baseline(
    spec: RolloutSpec,
    *,
    model_dir: str,
    run_id: str = "",
    port: int = 0,
    local_args: list[str] | None = None,
) -> ServerRecord:
    """Starts (or reuses) a vLLM server for a baseline model that validation compares against.

    For example the unquantized original of an optimized candidate. It is served with the same
    arguments as the candidate, recorded in ``servers/`` with role ``baseline`` (never promoted
    or rolled back) and stopped by :func:`cleanup` at the end of the run.

    Args:
        spec: The rollout spec.
        model_dir: The baseline model directory.
        run_id: The pipeline run (part of the member name).
        port: Listen port; 0 picks a free one.
        local_args: Local-only vLLM arguments (default :data:`~llm_rollout.local.server.LOCAL_VLLM_ARGS`).

    Returns:
        Its server record: pass ``endpoint_url`` / ``served_model_name`` as the validation baseline.

    Raises:
        PermanentError: Not a model directory, no vLLM environment, port in use, vLLM failed.
        DeadlineExceeded: Not ready within ``spec.local.startup_timeout_s``.
    """
    path = check_model_dir(model_dir, field="baseline model_dir")
    python = server.vllm_python(spec)
    state = resolve_state_dir(spec.local.state_dir)
    revision = server.revision_for(path, None)
    member = member_name(f"{spec.service_name}-base", f"{revision}@{run_id}" if run_id else revision)
    log.info("baseline: %s serves %s", member, path)
    plan = server.Launch(spec=spec, state=state, python=python, path=path, member=member, revision=revision,
                         run_id=run_id, local_args=local_args, role="baseline")  # fmt: skip
    return server.launch(plan, port=port, existing=state.read_server(member))


def cleanup(
    state_dir: str | Path | None = None, *, keep_serving: bool = False, service: str | None = None
) -> list[str]:
    """Stops the servers a run leaves behind; ``state.json`` is not changed.

    Every candidate and baseline is stopped; the stable (promoted) server too unless
    ``keep_serving``. Records of servers that are no longer running are removed.

    Args:
        state_dir: The state directory (``spec.local.state_dir``; default ``$LLM_ROLLOUT_STATE_DIR``).
        keep_serving: Leave the promoted model's server running.
        service: Only this service's servers (``llm-rollout stop NAME``); default every one.

    Returns:
        The members whose servers were stopped.
    """
    state = resolve_state_dir(state_dir)
    if not state.root.is_dir():
        return []
    stopped = []
    with state.lock():
        stable_member = state.read_state().stable_member
        for info in state.servers():
            if service is not None and info.service != service:
                continue
            if keep_serving and info.member == stable_member and server.server_alive(info):
                log.info("keeping the promoted server %s at %s (keep_serving)", info.member, info.endpoint_url)
                continue
            if server.stop_server(info):
                stopped.append(info.member)
            state.remove_server(info.member)
    if service is None:
        server.stop_owned()
    return stopped


@contextlib.contextmanager
def local_session(state_dir: str | Path | None = None, *, keep_serving: bool = False) -> Iterator[None]:
    """Runs a block (a whole local run) so that its servers are cleaned up however it ends.

    On leaving the block - normally, by an exception, by Ctrl-C (SIGINT) or SIGTERM (turned into
    :class:`~llm_rollout.procs.Terminated`) - and at interpreter exit, :func:`cleanup` stops
    every candidate server and, unless ``keep_serving``, the promoted one.

    Args:
        state_dir: The state directory.
        keep_serving: Leave the promoted server running after the run.
    """
    done = False

    def _cleanup() -> None:
        nonlocal done
        if done:
            return
        done = True
        # A second Ctrl-C must not cut the cleanup short.
        previous = None
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stopped = cleanup(state_dir, keep_serving=keep_serving)
            if stopped:
                log.info("stopped local servers: %s", ", ".join(stopped))
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    atexit.register(_cleanup)
    try:
        with sigterm_raises():
            yield
    finally:
        _cleanup()
        atexit.unregister(_cleanup)
