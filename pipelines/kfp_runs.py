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

import os
import re
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llm_rollout.bounded import read_regular_file
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
    """``["k=v", ...]`` to a dict of texts (:func:`typed_params` converts them as the pipeline declares).

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


_PARAMETER_TYPES = {
    "STRING": "a string",
    "NUMBER_INTEGER": "a whole number",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "true or false",
    "STRUCT": "a JSON object",
    "LIST": "a JSON list",
}


def _typed(key: str, text: str, ptype: str) -> Any:
    import json

    def bad(why: str = "") -> SpecError:
        return SpecError(
            f"--param {key}",
            f"{text!r} is not {_PARAMETER_TYPES.get(ptype, ptype)}, as the pipeline declares {key}{why}",
            f"write e.g. --param {key}="
            + {"NUMBER_INTEGER": "2", "NUMBER_DOUBLE": "0.5", "BOOLEAN": "false", "STRUCT": '\'{"k": "v"}\''}.get(
                ptype, "'[]'" if ptype == "LIST" else "VALUE"
            ),
        )

    if ptype == "NUMBER_INTEGER":
        try:
            return int(text)
        except ValueError:
            raise bad() from None
    if ptype == "NUMBER_DOUBLE":
        try:
            return float(text)
        except ValueError:
            raise bad() from None
    if ptype == "BOOLEAN":
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise bad()
    if ptype in ("STRUCT", "LIST"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise bad(f" ({err.msg})") from None
        if not isinstance(value, dict if ptype == "STRUCT" else list):
            raise bad()
        return value
    return text


def typed_params(params: dict[str, str], package: str) -> dict[str, Any]:
    """``--param`` values converted to the types the compiled pipeline declares for them.

    The KFP API server checks each runtime parameter against the pipeline's input definitions:
    ``optimize_accelerator_count=2`` sent as a string to a pipeline that declares a number is
    refused. Values of ``STRING`` parameters stay text (JSON in ``spec`` included).

    Args:
        params: ``{name: text}`` from the command line.
        package: The compiled pipeline file.

    Returns:
        ``{name: value}`` with ints, floats, booleans, dicts and lists where declared.

    Raises:
        SpecError: A name the pipeline does not have, or a value that does not convert.
    """
    spec = read_package(package)
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    out: dict[str, Any] = {}
    for key, text in params.items():
        if key not in declared:
            raise SpecError(
                f"--param {key}",
                f"{spec.get('pipelineInfo', {}).get('name', 'the pipeline')} has no parameter {key!r}",
                f"use one of {', '.join(sorted(declared))}",
            )
        out[key] = _typed(key, text, declared[key].get("parameterType", "STRING"))
    return out


def read_package(package: str) -> dict[str, Any]:
    """The pipeline spec of a compiled package (``llm-rollout compile`` output), checked before use.

    A package is the YAML KFP's compiler writes: its first document is the pipeline spec
    (``pipelineInfo``, ``root``) or, with a platform spec, ``{pipeline_spec, platform_spec}``.

    Raises:
        SpecError: ``--package`` names a file that is not YAML or not a compiled pipeline.
    """
    import yaml

    fix = "give the .yaml that `llm-rollout compile --out DIR` wrote, or send --pipeline NAME instead"
    try:
        with open(package) as fh:
            spec = next(yaml.safe_load_all(fh), None)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError("--package", f"{package} is not a readable YAML file ({type(exc).__name__})", fix) from None
    if isinstance(spec, dict) and isinstance(spec.get("pipeline_spec"), dict):
        spec = spec["pipeline_spec"]  # a package with a platform spec, as schedule sends it
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise SpecError("--package", f"{package} is not a compiled KFP pipeline (no pipelineInfo/root)", fix)
    return spec


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


def pipeline_package(
    pipeline: str | None,
    package: str | None,
    out_dir: str | Path | None = None,
    compile_options: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """The compiled pipeline file to send, and the pipeline's name.

    Args:
        pipeline: ``llm-deploy`` or ``llm-optimize-deploy`` (compiled now).
        package: A compiled package instead (``llm-rollout compile`` output).
        out_dir: Where to compile to (a temporary directory when None).
        compile_options: Keyword arguments of :func:`kfp_llm_rollout.pipelines.compile.compile_pipelines`
            (``image``, ``optimize_image``, ``api_key_secret``, ``optimize_disk``) for ``pipeline``.

    Raises:
        SpecError: Both or neither given, an unknown pipeline, a missing package file, or compile
            options with a package (it is compiled already).
    """
    from kfp_llm_rollout.pipelines.pipelines import PIPELINES

    if bool(pipeline) == bool(package):
        raise SpecError("--pipeline/--package", "give exactly one of them", "e.g. --pipeline llm-deploy")
    if package:
        if compile_options:
            raise SpecError(
                f"--{sorted(compile_options)[0].replace('_', '-')}",
                "is a compile option, but --package is compiled already",
                "compile with it (`llm-rollout compile ... --out DIR`) or send --pipeline instead of --package",
            )
        path = Path(package)
        if not path.is_file():
            raise SpecError("--package", f"{package} does not exist", "run `llm-rollout compile --out DIR` first")
        read_package(str(path))
        return str(path), path.stem
    if pipeline not in PIPELINES:
        raise SpecError("--pipeline", f"unknown pipeline {pipeline!r}", f"use one of {', '.join(PIPELINES)}")
    from kfp_llm_rollout.pipelines.compile import compile_pipelines

    out = Path(out_dir or tempfile.mkdtemp(prefix="llm-rollout-"))
    for path in compile_pipelines(str(out), **(compile_options or {})):
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
    import warnings

    import urllib3

    try:
        with warnings.catch_warnings():  # "This client only works with ... v2.0.0-beta.2 and later": ours is
            warnings.simplefilter("ignore", FutureWarning)
            return kfp.Client(**kwargs)  # asks the endpoint's healthz
    except urllib3.exceptions.HTTPError as err:
        # One line instead of urllib3's traceback (issue 32): the host is wrong or not forwarded.
        reason = getattr(err, "reason", None) or err
        raise SpecError(
            "--host",
            f"cannot reach the KFP API at {host} ({str(reason).split(': ')[-1][:200]})",
            "give the KFP endpoint's address, e.g. `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80` "
            "and --host http://localhost:8080 (with --ssl-ca-cert for a private CA on https)",
        ) from None


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
    compile_options: dict[str, Any] | None = None,
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
        compile_options: For ``pipeline``: ``image``, ``optimize_image``, ``api_key_secret``,
            ``optimize_disk`` (see :func:`kfp_llm_rollout.pipelines.compile.compile_pipelines`).

    Returns:
        ``{"run_id", "run_name", "experiment", "pipeline", "package", "service_account"}``.

    Raises:
        SpecError: Bad input (nothing was sent): see :func:`pipeline_package` and :func:`typed_params`.
    """
    service_account = check_service_account(service_account)
    path, name = pipeline_package(pipeline, package, compile_options=compile_options)
    arguments = typed_params(dict(params or {}), path)
    run_name = run_name or unique_run_name(name)
    client = kfp_client(host, namespace=namespace, token=token, ssl_ca_cert=ssl_ca_cert)
    result = client.create_run_from_pipeline_package(
        path,
        arguments=arguments,
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
    compile_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Creates or replaces a recurring run (retrain-and-redeploy) on a KFP endpoint.

    The cron expression is validated before anything is compiled or sent. Given a ``name``, the
    recurring runs of that name in the experiment are replaced: the new one is created first, then
    the old ones are deleted (KFP's v2beta1 API has no update of a recurring run), so rerunning
    ``schedule`` with new parameters or a new image changes the schedule instead of adding one.
    The cron runs in UTC (KFP's scheduled workflow controller).

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
        compile_options: For ``pipeline``: see :func:`submit`.

    Returns:
        ``{"recurring_run_id", "name", "cron", "experiment_id", "max_concurrency", "no_catchup",
        "replaced", ...}`` (``replaced``: ids of the recurring runs of that name it deleted).

    Raises:
        SpecError: An invalid cron expression or service account (nothing was sent), or bad
            pipeline arguments.
    """
    cron = validate_cron(cron)
    service_account = check_service_account(service_account)
    if max_concurrency < 1:
        raise SpecError("--max-concurrency", f"{max_concurrency} is below 1", "give 1 (the default) or more")
    path, pname = pipeline_package(None if package else pipeline, package, compile_options=compile_options)
    arguments = typed_params(dict(params or {}), path)
    name = name or unique_run_name(f"{pname}-schedule")
    client = kfp_client(host, namespace=namespace, token=token, ssl_ca_cert=ssl_ca_cert)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    old_ids = _recurring_runs_named(client, exp.experiment_id, name)
    rr = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=name,
        cron_expression=cron,
        max_concurrency=max_concurrency,
        no_catchup=no_catchup,
        params=arguments,
        pipeline_package_path=path,
        enabled=True,
        service_account=service_account,
    )
    for old_id in old_ids:  # only after the new one exists: a failed create leaves the old schedule
        client.delete_recurring_run(old_id)
    return {
        "replaced": old_ids,
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


def _recurring_runs_named(client: Any, experiment_id: str, name: str) -> list[str]:
    """Ids of the experiment's recurring runs whose display name is ``name``."""
    import json

    query = {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    ids, token = [], ""
    while True:
        page = client.list_recurring_runs(
            page_token=token, page_size=100, experiment_id=experiment_id, filter=json.dumps(query)
        )
        ids += [r.recurring_run_id for r in page.recurring_runs or [] if r.display_name == name]
        token = page.next_page_token or ""
        if not token:
            return ids


def _compile_options(args: Any) -> dict[str, Any]:
    """The compile flags given on the command line (only those: a package takes none)."""
    from kfp_llm_rollout.components.resources import DEFAULT_OPTIMIZE_DISK, DEFAULT_SCRATCH_MOUNT, ScratchDisk

    options = {k: getattr(args, k) for k in ("image", "optimize_image", "api_key_secret") if getattr(args, k)}
    size, mount, storage_class = args.optimize_disk, args.optimize_disk_mount, args.optimize_storage_class
    if size or mount or storage_class:
        if (size or "").lower() == "none":
            options["optimize_disk"] = None
        else:
            disk = ScratchDisk(size or DEFAULT_OPTIMIZE_DISK, mount or DEFAULT_SCRATCH_MOUNT, storage_class)
            options["optimize_disk"] = disk.checked()
    return options


# Command line ------------------------------------------------------------------------------------


def _common(p: Any) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a pipeline parameter")
    p.add_argument("--spec", help="rollout spec file (YAML/JSON): checked here, sent as the `spec` parameter (JSON)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"experiment (default {DEFAULT_EXPERIMENT})")
    p.add_argument("--package", help="a compiled pipeline file (llm-rollout compile) instead of --pipeline")
    p.add_argument("--namespace", help="KFP namespace (multi-user deployments)")
    p.add_argument(
        "--token-file", help="file holding a bearer token for the endpoint (e.g. a mounted secret; default: none)"
    )
    p.add_argument("--token-env", metavar="NAME", help="environment variable holding a bearer token for the endpoint")
    p.add_argument(
        "--token", help="bearer token on the command line (visible to every user in `ps`: prefer --token-file/-env)"
    )
    p.add_argument("--ssl-ca-cert", help="CA bundle of the endpoint")
    p.add_argument(
        "--service-account",
        default=DEFAULT_SERVICE_ACCOUNT,
        help=f"service account the steps run as (default {DEFAULT_SERVICE_ACCOUNT}, see manifests/rbac.yaml)",
    )
    # Compile options (with --pipeline, which is compiled now), as `llm-rollout compile` takes them.
    p.add_argument("--image", help="components' image, REPO:TAG or REPO@sha256:DIGEST (compiles --pipeline with it)")
    p.add_argument("--optimize-image", help="optimize step's image, REPO:TAG or REPO@sha256:DIGEST")
    p.add_argument("--api-key-secret", metavar="SECRET[:KEY]", help="Secret with the model endpoint's API key")
    p.add_argument("--optimize-disk", metavar="SIZE|none", help="optimize step's scratch volume (compile's default)")
    p.add_argument("--optimize-disk-mount", help="/minio/mlpipeline (default), /s3/BUCKET or /gcs/BUCKET")
    p.add_argument("--optimize-storage-class", help="StorageClass of that volume")


def resolve_token(args: Any) -> str | None:
    """The KFP bearer token from ``--token-file``, ``--token-env`` or ``--token`` (one of them), with warnings.

    A token on the command line is visible in the process list, and one sent over plain http to
    a host other than this machine (a port-forward) travels in the clear: both are said on stderr
    (issue 31).

    Raises:
        SpecError: More than one source, or a source that is missing or empty.
    """
    given = [flag for flag, value in (("--token-file", args.token_file), ("--token-env", args.token_env),
                                      ("--token", args.token)) if value]  # fmt: skip
    if len(given) > 1:
        raise SpecError(given[1], f"is given together with {given[0]}", "give the token one way")
    token: str | None = None
    if args.token_file:
        raw = read_regular_file(args.token_file, "--token-file", 64 * 1024, "token")
        token = raw.decode("utf-8", "replace").strip()
        if not token:
            raise SpecError("--token-file", f"{args.token_file} is empty", "put the token in the file")
    elif args.token_env:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise SpecError("--token-env", f"{args.token_env} is not set or empty", f"export {args.token_env}")
    elif args.token:
        token = args.token
        print(
            "llm-rollout: warning: --token is visible to every user of this machine in the process list; "
            "use --token-file or --token-env",
            file=sys.stderr,
        )
    host = urlsplit(args.host)
    if token and host.scheme == "http" and (host.hostname or "") not in ("localhost", "127.0.0.1", "::1"):
        print(
            f"llm-rollout: warning: the token is sent over plain http to {host.hostname}, readable by anyone on "
            "the path; use the endpoint's https address",
            file=sys.stderr,
        )
    return token


def _run_options(args: Any) -> dict[str, Any]:
    """What ``submit`` and ``schedule`` take alike from their command lines."""
    keys = ("package", "experiment", "namespace", "ssl_ca_cert", "service_account")
    params = parse_params(args.param)
    if getattr(args, "spec", None):
        from llm_rollout.spec import load_spec, spec_to_json

        if "spec" in params:
            raise SpecError("--spec", "is given together with --param spec=...", "give the spec one way")
        # Checked before anything is sent; the pipeline's parameter is the spec's JSON text.
        params["spec"] = spec_to_json(load_spec(args.spec))
    return {
        "params": params,
        "compile_options": _compile_options(args),
        "token": resolve_token(args),
        **{key: getattr(args, key) for key in keys},
    }


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
    replaced = f", replacing {', '.join(result['replaced'])}" if result["replaced"] else ""
    print(
        f"created recurring run {result['name']} ({result['recurring_run_id']}{replaced}): {result['pipeline']} at "
        f"'{result['cron']}' UTC, max_concurrency={result['max_concurrency']}, "
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
    p.add_argument("--cron", required=True, help="KFP cron in UTC, 6 fields with seconds first, e.g. '0 0 3 * * *'")
    p.add_argument("--pipeline", default=SCHEDULED_PIPELINE, help=f"default {SCHEDULED_PIPELINE}")
    p.add_argument(
        "--name", help="the recurring run's name; an existing one of that name is replaced (default: unique, new)"
    )
    p.add_argument("--max-concurrency", type=int, default=1, help="runs at once (default 1)")
    p.add_argument(
        "--catchup",
        dest="no_catchup",
        action="store_false",
        help="also start the runs missed while the schedule was paused (default: skip them)",
    )
    p.set_defaults(func=_schedule_cmd)
