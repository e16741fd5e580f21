"""``llm-rollout status NAME`` and ``llm-rollout rollback NAME``, for kserve and the local platform."""

from __future__ import annotations

import json
from typing import Any

from llm_rollout.errors import SpecError


def _kserve_client(args: Any):
    from llm_rollout.kube import KubeClient

    return KubeClient.from_environment(args.kubeconfig)


def format_local_status(d: dict[str, Any]) -> str:
    """Renders :func:`llm_rollout.local.status_local` for a terminal."""
    lines = [f"local platform, state in {d['state_dir']}: service {d.get('service') or '(none yet)'}"]
    stable = d.get("stable")
    if stable:
        running = "running" if stable.get("running") else "not running"
        lines.append(
            f"stable: {stable['member']} ({stable.get('model_uri')}) at {stable.get('endpoint_url')}, {running}; "
            f"promoted {stable.get('promoted_at')} by run {stable.get('run_id')}: {stable.get('summary') or 'pass'}"
        )
    else:
        lines.append("stable: nothing promoted yet")
    previous = d.get("previous")
    if previous:
        lines.append(f"previous (what rollback restores): {previous['member']} ({previous.get('model_uri')})")
    for s in d.get("servers") or []:
        lines.append(f"server {s.get('member')}: {s.get('role')}, {'alive' if s.get('alive') else 'stopped'}")
    history = d.get("history") or []
    if history:
        lines.append("last promotions and rollbacks:")
        for h in history[:10]:
            why = h.get("summary") if h.get("action") == "promote" else h.get("reason")
            lines.append(f"  {h.get('at', '')} {h.get('action', ''):9} {h.get('member', '')}: {why or ''}".rstrip())
    return "\n".join(lines)


def _status_cmd(args: Any) -> int:
    if args.platform == "local":
        from llm_rollout.local import status_local

        d = status_local(args.state_dir)
        print(json.dumps(d, indent=2, default=str) if args.json else format_local_status(d))
        return 0
    from llm_rollout.promotion import format_status, status

    d = status(_kserve_client(args), args.name, args.namespace)
    print(json.dumps(d, indent=2, default=str) if args.json else format_status(d))
    return 0


def _rollback_cmd(args: Any) -> int:
    if args.platform == "local":
        from llm_rollout.local import rollback_to_previous_local, status_local

        service = status_local(args.state_dir).get("service")
        if service and service != args.name:
            raise SpecError(
                "--state-dir",
                f"the state directory {args.state_dir or '(default)'} belongs to service {service}, not {args.name}",
                f"pass the state directory of {args.name} (its spec's local.state_dir)",
            )
        result = rollback_to_previous_local(args.state_dir, run_id=args.run_id, timeout_s=args.timeout)
        print(result["message"])
        return 0
    from llm_rollout.promotion import rollback_to_previous

    result = rollback_to_previous(
        _kserve_client(args), args.name, args.namespace, run_id=args.run_id, timeout_s=args.timeout
    )
    print(result["message"])
    return 0


def add_parsers(sub: Any) -> None:
    """Adds ``status`` and ``rollback`` to the ``llm-rollout`` subcommands."""
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
