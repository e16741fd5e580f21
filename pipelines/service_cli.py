"""``llm-rollout status NAME`` and ``llm-rollout rollback NAME``, for kserve and the local platform.

Both go through :func:`llm_rollout.platform.platform_for`: ``status`` prints
:meth:`~llm_rollout.platform.Platform.status` with the one formatter
(:func:`llm_rollout.platform.format_status`, or its JSON with ``--json``), ``rollback`` calls
:meth:`~llm_rollout.platform.Platform.restore_previous`. ``llm-rollout stop [NAME]`` stops the local
servers a run left up (``run-local --keep-serving``, a local rollback); ``status`` and ``rollback``
print that command when one is running.
"""

from __future__ import annotations

import os
from typing import Any

from llm_rollout.local.state import STATE_DIR_ENV
from llm_rollout.platform import Platform, format_status, platform_for, stop_command
from llm_rollout.spec import RolloutSpec


def _platform(args: Any) -> Platform:
    """The platform the command line names, for the service ``args.name``."""
    if args.platform == "kserve":
        from llm_rollout.kube import KubeClient

        spec = RolloutSpec(name=args.name, namespace=args.namespace, platform="kserve")
        return platform_for(spec, client=KubeClient.from_environment(args.kubeconfig))
    state_dir = args.state_dir or os.environ.get(STATE_DIR_ENV)  # else the spec's default
    local = {"state_dir": state_dir} if state_dir else {}
    return platform_for(RolloutSpec(name=args.name, namespace=args.namespace, platform="local", local=local))


def _status_cmd(args: Any) -> int:
    status = _platform(args).status()
    print(status.model_dump_json(indent=2) if args.json else format_status(status))
    return 0


def _rollback_cmd(args: Any) -> int:
    platform = _platform(args)
    print(platform.restore_previous(run_id=args.run_id, timeout_s=args.timeout).message)
    if args.platform == "local":
        status = platform.status()
        if any(r.ready for r in status.revisions):  # the restored model was started: it runs until stopped
            print(f"it keeps serving until stopped: `{stop_command(status)}`")
    return 0


def _stop_cmd(args: Any) -> int:
    from llm_rollout.local.session import cleanup
    from llm_rollout.local.state import resolve_state_dir

    state_dir = args.state_dir or os.environ.get(STATE_DIR_ENV) or RolloutSpec().local.state_dir
    stopped = cleanup(state_dir, service=args.name)
    root = resolve_state_dir(state_dir).root
    whose = f" of {args.name}" if args.name else ""
    print(f"stopped {', '.join(stopped)} ({root})" if stopped else f"no local server{whose} was running ({root})")
    return 0


def add_parsers(sub: Any) -> None:
    """Adds ``status``, ``rollback`` and ``stop`` to the ``llm-rollout`` subcommands."""
    for name, func, text in (
        ("status", _status_cmd, "stable and canary revisions, traffic, readiness and the last promotions"),
        ("rollback", _rollback_cmd, "put the previous stable model back (one command)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="the service name")
        p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
        p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
        p.add_argument("--platform", choices=("kserve", "local"), default="kserve", help="default kserve")
        p.add_argument("--state-dir", help="the local platform's state directory")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the status as JSON")
        else:
            p.add_argument("--run-id", default="manual", help="recorded with the rollback (default: manual)")
            p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the restored revision")
        p.set_defaults(func=func)
    p = sub.add_parser("stop", help="stop the local vLLM servers of a state directory (what --keep-serving left up)")
    p.add_argument("name", nargs="?", help="the service name: only its servers (default: every server there)")
    p.add_argument("--state-dir", help="the local platform's state directory (default: the spec's local.state_dir)")
    p.add_argument("--platform", choices=("local",), default="local", help="local only: a cluster's pods stay")
    p.set_defaults(func=_stop_cmd)
