"""Submitting and scheduling the compiled pipelines on a KFP endpoint (``llm-rollout submit|schedule``).

Both use :class:`kfp.Client` and send the compiled pipeline spec with the request (no separate
pipeline upload). Runs get a unique, placeholder-safe name (``<pipeline>-<UTC time>-<random>``);
inside the pipeline, each run's objects are named and labelled from KFP's run-id placeholder, so
two runs never collide. A schedule is a recurring run of ``llm-optimize-deploy`` with
``max_concurrency=1`` and no catch-up by default; its cron expression is checked here, before any
request, in KFP's own format (6 fields, seconds first; robfig/cron).

Both run the steps as a named Kubernetes service account (default ``llm-rollout``, the one
``manifests/rbac.yaml`` binds to its Role): without it KFP runs them as the namespace's default
pipeline runner (``pipeline-runner`` / ``default-editor``), which has none of our rights, or more.
KFP sends it as the run's ``service_account`` field (``kfp.Client.run_pipeline`` and
``create_recurring_run``), and the backend puts it into every step pod's ``serviceAccountName``.
"""

from __future__ import annotations

import re
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llm_rollout.errors import SpecError

DEFAULT_EXPERIMENT = "llm-rollout"
DEFAULT_SERVICE_ACCOUNT = "llm-rollout"
"""The account the steps run as; ``manifests/rbac.yaml`` gives it exactly the rights the steps use."""
SCHEDULED_PIPELINE = "llm-optimize-deploy"

# robfig/cron (KFP's scheduler): seconds minutes hours day-of-month month day-of-week.
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = (
    ("seconds", 0, 59, {}),
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {m: i + 1 for i, m in enumerate(_MONTHS)},
    ),
    ("day-of-week", 0, 6, {d: i for i, d in enumerate(_DAYS)}),
)
_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EVERY = re.compile(r"^@every\s+((\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$")


def _cron_value(text: str, field: str, low: int, high: int, names: dict[str, int], expr: str) -> int:
    value = names.get(text.upper()) if names else None
    if value is None:
        if not text.isdigit():
            hint = f" or one of {', '.join(names)}" if names else ""
            raise SpecError(
                "cron",
                f"{expr!r}: the {field} field has {text!r}, which is not a number{hint}",
                f"write the {field} field with numbers {low}-{high}, '*', ranges 'a-b', lists 'a,b' or steps '*/n'",
            )
        value = int(text)
    if not low <= value <= high:
        raise SpecError(
            "cron",
            f"{expr!r}: the {field} field has {value}, outside {low}-{high}",
            f"use values {low}-{high} in the {field} field",
        )
    return value


def validate_cron(expr: str) -> str:
    """Checks a cron expression the way KFP's scheduler (robfig/cron, with seconds) reads it.

    Accepts 6 fields ``seconds minutes hours day-of-month month day-of-week`` (``*``, ``?`` in the
    day fields, ranges, lists, steps, month/day names), the descriptors ``@daily`` etc. and
    ``@every <duration>``.

    Args:
        expr: The expression.

    Returns:
        The expression, stripped.

    Raises:
        SpecError: Naming the field that is wrong and the fix (a 5-field Unix cron gets the
            seconds field added in the suggestion).
    """
    expr = " ".join((expr or "").split())
    if not expr:
        raise SpecError("cron", "no cron expression was given", "pass one, e.g. --cron '0 0 3 * * *' (03:00 daily)")
    if expr.startswith("@"):
        if expr in _DESCRIPTORS or _EVERY.match(expr):
            return expr
        raise SpecError(
            "cron",
            f"{expr!r} is not a known descriptor",
            f"use one of {', '.join(_DESCRIPTORS)} or '@every 6h', or 6 fields like '0 0 3 * * *'",
        )
    fields = expr.split(" ")
    if len(fields) == 5:
        raise SpecError(
            "cron",
            f"{expr!r} has 5 fields, but KFP's cron has 6 with seconds first "
            "(seconds minutes hours day-of-month month day-of-week)",
            f"add the seconds field: '0 {expr}'",
        )
    if len(fields) != 6:
        raise SpecError(
            "cron",
            f"{expr!r} has {len(fields)} fields; KFP's cron has 6 "
            "(seconds minutes hours day-of-month month day-of-week)",
            "write e.g. '0 0 3 * * *' (03:00 every day) or '0 30 2 * * MON-FRI'",
        )
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            if not part:
                raise SpecError("cron", f"{expr!r}: the {field} field has an empty list item", "remove the extra ','")
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise SpecError(
                    "cron",
                    f"{expr!r}: the {field} field has step {step!r}",
                    f"give a positive whole step, e.g. '*/5' in the {field} field",
                )
            if base in ("*", "?"):
                if base == "?" and field not in ("day-of-month", "day-of-week"):
                    raise SpecError(
                        "cron",
                        f"{expr!r}: '?' is only allowed in the day-of-month and day-of-week fields, not {field}",
                        f"use '*' in the {field} field",
                    )
                continue
            lo_text, dash, hi_text = base.partition("-")
            lo = _cron_value(lo_text, field, low, high, names, expr)
            if dash:
                hi = _cron_value(hi_text, field, low, high, names, expr)
                if hi < lo:
                    raise SpecError(
                        "cron",
                        f"{expr!r}: the {field} field has the range {base!r}, which runs backwards",
                        f"write it low-high, e.g. '{hi_text}-{lo_text}'",
                    )
    return expr


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` to a dict (values stay strings, as the pipelines' parameters are).

    Raises:
        SpecError: An item without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError("--param", f"{item!r} is not KEY=VALUE", "write e.g. --param model_uri=s3://models/llama")
        out[key.strip()] = value
    return out


def check_service_account(name: str) -> str:
    """Checks a Kubernetes service account name (DNS-1123 subdomain) before any request is sent.

    Raises:
        SpecError: An empty or invalid name, naming ``--service-account`` and the fix.
    """
    name = (name or "").strip()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
        raise SpecError(
            "--service-account",
            f"{name!r} is not a Kubernetes service account name",
            f"name the account the steps run as (lowercase letters, digits, '-', '.'), e.g. {DEFAULT_SERVICE_ACCOUNT}",
        )
    return name


def unique_run_name(prefix: str) -> str:
    """A run name that never collides and has no placeholder syntax: ``<prefix>-<UTC time>-<hex>``."""
    safe = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-") or "llm-rollout"
    return f"{safe}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def pipeline_package(pipeline: str | None, package: str | None, out_dir: str | Path | None = None) -> tuple[str, str]:
    """The compiled pipeline file to send, and the pipeline's name.

    Args:
        pipeline: ``llm-deploy`` or ``llm-optimize-deploy`` (compiled now, with the default images).
        package: A compiled package instead (``llm-rollout compile`` output).
        out_dir: Where to compile to (a temporary directory when None).

    Raises:
        SpecError: Both or neither given, an unknown pipeline, or a missing package file.
    """
    from pipelines.pipelines import PIPELINES

    if bool(pipeline) == bool(package):
        raise SpecError("--pipeline/--package", "give exactly one of them", "e.g. --pipeline llm-deploy")
    if package:
        path = Path(package)
        if not path.is_file():
            raise SpecError("--package", f"{package} does not exist", "run `llm-rollout compile --out DIR` first")
        return str(path), path.stem
    if pipeline not in PIPELINES:
        raise SpecError("--pipeline", f"unknown pipeline {pipeline!r}", f"use one of {', '.join(PIPELINES)}")
    from pipelines.compile import compile_pipelines

    out = Path(out_dir or tempfile.mkdtemp(prefix="llm-rollout-"))
    for path in compile_pipelines(str(out)):
        if Path(path).stem == pipeline:
            return str(path), pipeline
    raise SpecError("--pipeline", f"compiling did not produce {pipeline}.yaml", "check `llm-rollout compile`")


def kfp_client(host: str, *, namespace: str | None = None, token: str | None = None, ssl_ca_cert: str | None = None):
    """A :class:`kfp.Client` for ``host``."""
    import kfp

    kwargs: dict[str, Any] = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    if token:
        kwargs["existing_token"] = token
    if ssl_ca_cert:
        kwargs["ssl_ca_cert"] = ssl_ca_cert
    return kfp.Client(**kwargs)


def submit(
    host: str,
    *,
    pipeline: str | None = None,
    package: str | None = None,
    params: dict[str, str] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    ssl_ca_cert: str | None = None,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
) -> dict[str, Any]:
    """Creates one run of a pipeline on a KFP endpoint.

    Args:
        host: The KFP API endpoint (``http://localhost:8080`` after a port-forward, or the ingress).
        pipeline: ``llm-deploy`` or ``llm-optimize-deploy`` (compiled now).
        package: A compiled pipeline package instead.
        params: Pipeline parameters (``model_uri``, ``spec`` ...).
        experiment: Experiment name (looked up, created when missing).
        run_name: The run's display name; unique by default.
        namespace: KFP namespace (multi-user deployments).
        token: A bearer token for the endpoint.
        ssl_ca_cert: CA bundle of the endpoint.
        service_account: The Kubernetes service account every step runs as (bind it to the Role
            of ``manifests/rbac.yaml`` in the run's namespace).

    Returns:
        ``{"run_id", "run_name", "experiment", "pipeline", "package", "service_account"}``.
    """
    service_account = check_service_account(service_account)
    path, name = pipeline_package(pipeline, package)
    run_name = run_name or unique_run_name(name)
    client = kfp_client(host, namespace=namespace, token=token, ssl_ca_cert=ssl_ca_cert)
    result = client.create_run_from_pipeline_package(
        path,
        arguments=dict(params or {}),
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        service_account=service_account,
    )
    return {
        "run_id": result.run_id,
        "run_name": run_name,
        "experiment": experiment,
        "pipeline": name,
        "package": path,
        "service_account": service_account,
    }


def schedule(
    host: str,
    *,
    cron: str,
    pipeline: str | None = SCHEDULED_PIPELINE,
    package: str | None = None,
    params: dict[str, str] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    name: str | None = None,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    namespace: str | None = None,
    token: str | None = None,
    ssl_ca_cert: str | None = None,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
) -> dict[str, Any]:
    """Creates a recurring run (retrain-and-redeploy) on a KFP endpoint.

    The cron expression is validated before anything is compiled or sent.

    Args:
        host: The KFP API endpoint.
        cron: KFP cron expression (6 fields, seconds first), e.g. ``0 0 3 * * *``.
        pipeline: The pipeline (default ``llm-optimize-deploy``); ignored when ``package`` is given.
        package: A compiled pipeline package instead.
        params: Pipeline parameters.
        experiment: Experiment name (looked up, created when missing).
        name: The recurring run's name; unique by default.
        max_concurrency: Runs of it at once (1: a rollout never overlaps the previous one).
        no_catchup: Do not start the runs missed while the schedule was paused.
        namespace: KFP namespace (multi-user deployments).
        token: A bearer token for the endpoint.
        ssl_ca_cert: CA bundle of the endpoint.
        service_account: The Kubernetes service account every step of every run runs as.

    Returns:
        ``{"recurring_run_id", "name", "cron", "experiment_id", "max_concurrency", "no_catchup", ...}``.

    Raises:
        SpecError: An invalid cron expression or service account (nothing was sent), or bad
            pipeline arguments.
    """
    cron = validate_cron(cron)
    service_account = check_service_account(service_account)
    if max_concurrency < 1:
        raise SpecError("--max-concurrency", f"{max_concurrency} is below 1", "give 1 (the default) or more")
    path, pname = pipeline_package(None if package else pipeline, package)
    name = name or unique_run_name(f"{pname}-schedule")
    client = kfp_client(host, namespace=namespace, token=token, ssl_ca_cert=ssl_ca_cert)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    rr = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=name,
        cron_expression=cron,
        max_concurrency=max_concurrency,
        no_catchup=no_catchup,
        params=dict(params or {}),
        pipeline_package_path=path,
        enabled=True,
        service_account=service_account,
    )
    return {
        "recurring_run_id": rr.recurring_run_id,
        "name": name,
        "cron": cron,
        "experiment_id": exp.experiment_id,
        "max_concurrency": max_concurrency,
        "no_catchup": no_catchup,
        "pipeline": pname,
        "package": path,
        "service_account": service_account,
    }


# Command line ------------------------------------------------------------------------------------


def _common(p: Any) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a pipeline parameter")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"experiment (default {DEFAULT_EXPERIMENT})")
    p.add_argument("--package", help="a compiled pipeline file (llm-rollout compile) instead of --pipeline")
    p.add_argument("--namespace", help="KFP namespace (multi-user deployments)")
    p.add_argument("--token", help="bearer token for the endpoint (default: none)")
    p.add_argument("--ssl-ca-cert", help="CA bundle of the endpoint")
    p.add_argument(
        "--service-account",
        default=DEFAULT_SERVICE_ACCOUNT,
        help=f"service account the steps run as (default {DEFAULT_SERVICE_ACCOUNT}, see manifests/rbac.yaml)",
    )


def _run_options(args: Any) -> dict[str, Any]:
    """What ``submit`` and ``schedule`` take alike from their command lines."""
    keys = ("package", "experiment", "namespace", "token", "ssl_ca_cert", "service_account")
    return {"params": parse_params(args.param), **{key: getattr(args, key) for key in keys}}


def _submit_cmd(args: Any) -> int:
    result = submit(
        args.host, pipeline=None if args.package else args.pipeline, run_name=args.run_name, **_run_options(args)
    )
    print(
        f"created run {result['run_name']} ({result['run_id']}) of {result['pipeline']} in {result['experiment']}, "
        f"steps as service account {result['service_account']}"
    )
    return 0


def _schedule_cmd(args: Any) -> int:
    cron = validate_cron(args.cron)  # before anything else: a bad expression sends nothing
    result = schedule(
        args.host,
        cron=cron,
        pipeline=args.pipeline,
        name=args.name,
        max_concurrency=args.max_concurrency,
        no_catchup=args.no_catchup,
        **_run_options(args),
    )
    print(
        f"created recurring run {result['name']} ({result['recurring_run_id']}): {result['pipeline']} at "
        f"'{result['cron']}', max_concurrency={result['max_concurrency']}, "
        f"{'no catch-up' if result['no_catchup'] else 'catch-up'}"
    )
    return 0


def add_parsers(sub: Any) -> None:
    """Adds ``submit`` and ``schedule`` to the ``llm-rollout`` subcommands."""

    p = sub.add_parser("submit", help="create a run of a pipeline on a KFP endpoint")
    _common(p)
    p.add_argument("--pipeline", default="llm-deploy", help="llm-deploy (default) or llm-optimize-deploy")
    p.add_argument("--run-name", help="the run's name (default: unique, <pipeline>-<time>-<random>)")
    p.set_defaults(func=_submit_cmd)

    p = sub.add_parser("schedule", help="create a recurring run (retrain-and-redeploy) on a KFP endpoint")
    _common(p)
    p.add_argument("--cron", required=True, help="KFP cron, 6 fields with seconds first, e.g. '0 0 3 * * *'")
    p.add_argument("--pipeline", default=SCHEDULED_PIPELINE, help=f"default {SCHEDULED_PIPELINE}")
    p.add_argument("--name", help="the recurring run's name (default: unique)")
    p.add_argument("--max-concurrency", type=int, default=1, help="runs at once (default 1)")
    p.add_argument(
        "--catchup",
        dest="no_catchup",
        action="store_false",
        help="also start the runs missed while the schedule was paused (default: skip them)",
    )
    p.set_defaults(func=_schedule_cmd)
