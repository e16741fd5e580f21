"""``llm-rollout validate``: validate any OpenAI-compatible endpoint from the command line.

Exit codes: 0 pass, 1 fail, 2 inconclusive or a usage/spec error (the message names the problem).
The verdict and its reasons go to stdout (``--json`` prints the whole result instead); progress
lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from llm_rollout.errors import RolloutError, SpecError
from llm_rollout.spec import RolloutSpec, ValidationSpec, deep_merge, parse_spec, read_mapping
from llm_rollout.validation.sizing import sizing_input

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 2}
USAGE_ERROR = 2


def _levels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 1,10,20; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"levels must be integers >= 1, got {text!r}")
    return values


def _role_url(text: str) -> tuple[str, str]:
    role, sep, url = text.partition("=")
    if not sep or not role or not url:
        raise argparse.ArgumentTypeError(f"expected ROLE=URL, e.g. decode=http://host:8000/metrics; got {text!r}")
    return role, url


def check_url(flag: str, url: str | None) -> None:
    """Refuses an endpoint URL without ``http://`` or ``https://`` and a host, before any request.

    Raises:
        SpecError: Naming the flag and the URL to write instead (``127.0.0.1:8000`` would otherwise
            be retried for the whole readiness timeout, then fail as ``UnsupportedProtocol``).
    """
    from urllib.parse import urlsplit

    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return
    bare = url.split("://", 1)[-1]
    raise SpecError(
        flag,
        f"{url[:200]!r} is not an http:// or https:// URL",
        f"write the scheme, e.g. {flag} http://{bare[:200]}",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llm-rollout validate``."""
    p = argparse.ArgumentParser(
        prog="llm-rollout validate",
        description="Validate an OpenAI-compatible endpoint: readiness, correctness, latency and throughput "
        "against an SLO. Exit code 0 pass, 1 fail, 2 inconclusive or usage error.",
    )
    p.add_argument("--url", required=True, help="endpoint base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="model name the endpoint serves")
    p.add_argument("--spec", help="rollout spec (its `validation` section is used) or a validation section alone")
    p.add_argument("--report", metavar="DIR", help="write report.html, validation.json and metrics.json here")
    p.add_argument(
        "--baseline-url", help="the uncompressed original's endpoint, for the recovery checks (agreement, ratios)"
    )
    p.add_argument("--baseline-model", help="model name at the original (default: --model)")
    p.add_argument("--stable-url", help="the stable revision's endpoint, to compare with (non-inferiority)")
    p.add_argument("--stable-model", help="model name at the stable revision (default: --model)")
    p.add_argument("--check", action="append", metavar="EXPR", help="SLO check (repeatable; replaces the spec's)")
    p.add_argument(
        "--baseline-check", action="append", metavar="EXPR", help="recovery check against the original (repeatable)"
    )
    p.add_argument("--judge-concurrency", type=_levels, metavar="LIST", help="levels the checks apply to, e.g. 10,20")
    p.add_argument("--concurrency", type=_levels, metavar="LIST", help="levels to measure, e.g. 1,10,20")
    p.add_argument("--request-rate", type=float, metavar="RPS", help="add a Poisson level at this request rate")
    p.add_argument("--num-prompts", type=int, metavar="N", help="requests per level")
    p.add_argument("--output-tokens", type=int, metavar="N", help="max_tokens per request (ignore_eos)")
    p.add_argument("--input-words", type=int, metavar="N", help="words per generated prompt")
    p.add_argument("--max-duration", type=float, metavar="S", help="time bound per level")
    p.add_argument("--endpoint", choices=["completions", "chat"], help="API used by the load")
    p.add_argument("--min-successful", type=int, metavar="N", help="successful requests needed to judge a level")
    p.add_argument("--capacity-max", type=int, metavar="N", help="also bisect for the highest passing concurrency")
    p.add_argument(
        "--capacity-max-rate", type=float, metavar="RPS", help="also search the highest passing request rate"
    )
    p.add_argument("--workload", metavar="FILE", help="JSONL requests to send (prompt|messages, max_tokens, timestamp)")
    p.add_argument("--suite", metavar="FILE", help="correctness suite (YAML/JSON)")
    p.add_argument("--no-smoke", action="store_true", help="skip the built-in smoke suite")
    p.add_argument(
        "--quality-texts", metavar="FILE", help='reference texts in the model\'s domain (JSONL {"text": ...} a line)'
    )
    p.add_argument("--readiness-timeout", type=float, metavar="S", help="deadline for readiness")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    p.add_argument("--api-key-file", metavar="FILE", help="file holding the API key (a mounted secret)")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--ca-bundle", metavar="FILE", help="CA bundle for TLS verification")
    p.add_argument("--metrics-url", action="append", type=_role_url, metavar="ROLE=URL", help="Prometheus endpoint")
    p.add_argument("--log-text", action="store_true", help="log prompts and completions")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    return p


def _spec_document(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    data = read_mapping(path, "--spec")
    if data and set(data) <= set(ValidationSpec.model_fields):
        return {"validation": data}  # a validation section alone
    return data


def spec_from_args(args: argparse.Namespace) -> ValidationSpec:
    """The validation spec: the ``--spec`` file with the flags on top.

    Raises:
        SpecError: The file or a flag value is invalid (the message names the field).
    """
    return rollout_spec_from_args(args).validation


def rollout_spec_from_args(args: argparse.Namespace) -> RolloutSpec:
    """The whole rollout spec behind :func:`spec_from_args` (its ``scaling`` sizes the service).

    Raises:
        SpecError: The file or a flag value is invalid (the message names the field).
    """
    load: dict[str, Any] = {}
    slo: dict[str, Any] = {}
    val: dict[str, Any] = {}
    for flag, key in (
        ("concurrency", "concurrency"),
        ("request_rate", "request_rate"),
        ("num_prompts", "num_prompts"),
        ("output_tokens", "output_tokens"),
        ("input_words", "input_words"),
        ("max_duration", "max_duration_s"),
        ("endpoint", "endpoint"),
    ):
        if getattr(args, flag) is not None:
            load[key] = getattr(args, flag)
    if args.baseline_check is not None:
        val["recovery"] = {"checks": args.baseline_check}
    for flag, key in (
        ("check", "checks"),
        ("judge_concurrency", "judge_concurrency"),
        ("min_successful", "min_successful_requests"),
        ("capacity_max", "capacity_max_concurrency"),
        ("capacity_max_rate", "capacity_max_request_rate"),
    ):
        if getattr(args, flag) is not None:
            slo[key] = getattr(args, flag)
    for flag, key in (
        ("readiness_timeout", "readiness_timeout_s"),
        ("api_key_env", "api_key_env"),
        ("api_key_file", "api_key_file"),
        ("ca_bundle", "ca_bundle"),
    ):
        if getattr(args, flag) is not None:
            val[key] = getattr(args, flag)
    if args.insecure:
        val["tls_verify"] = False
    if args.no_smoke:
        val["smoke_suite"] = False
    if args.quality_texts:
        val["quality"] = {"texts": args.quality_texts}
    if args.log_text:
        val["log_text"] = True
    if args.metrics_url:
        val["metrics_urls"] = dict(args.metrics_url)
    if load:
        val["load"] = load
    if slo:
        val["slo"] = slo
    doc = deep_merge(_spec_document(args.spec), {"validation": val})
    if args.workload:  # replaces the spec's workload whole (its fields belong to its dataset)
        doc.setdefault("validation", {}).setdefault("load", {})["workload"] = {
            "dataset": "custom",
            "path": args.workload,
        }
    return parse_spec(doc)


def validate_command(argv: Sequence[str] | None = None) -> int:
    """Runs ``llm-rollout validate`` with ``argv`` (the arguments after ``validate``).

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 pass, 1 fail, 2 inconclusive or a usage/spec error.
    """
    from llm_rollout.validation.runner import validate

    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        for flag in ("url", "baseline_url", "stable_url"):
            check_url("--" + flag.replace("_", "-"), getattr(args, flag))
        rollout = rollout_spec_from_args(args)
        spec = rollout.validation
        result = validate(
            spec,
            args.url,
            args.model,
            baseline_url=args.baseline_url,
            baseline_model=args.baseline_model,
            stable_url=args.stable_url,
            stable_model=args.stable_model,
            report_dir=args.report,
            suite=args.suite,
            sizing=sizing_input(rollout),
        )
    except SpecError as err:
        print(f"llm-rollout validate: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except RolloutError as err:
        print(f"llm-rollout validate: error: {err}", file=sys.stderr)
        return EXIT_CODES["fail"]
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
    else:
        print(f"verdict: {result.verdict}")
        for reason in result.reasons:
            print(f"  - {reason}")
        for kind, path in result.report_paths.items():
            print(f"{kind}: {path}")
    return EXIT_CODES[result.verdict]
