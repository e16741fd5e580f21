"""The ``llm-rollout`` command line.

Subcommands:
  compile     compile both pipelines to KFP IR YAML (for the KFP UI, schedules and CI)
  render      write the Kubernetes manifests the kserve platform would apply
  spec        the spec reference: every field, or one field's type, default and doc
  validate    validate any OpenAI-compatible endpoint against the SLO (standalone)
  run-local   run a pipeline end to end on this machine (kfp.local + a real vLLM process)
  status      show a service's stable and canary revisions, traffic and promotion history
  rollback    put the previous stable model back (one command)
  stop        stop the local vLLM servers a run left up (--keep-serving): stop NAME --state-dir DIR
  submit      create a run of a compiled pipeline on a KFP endpoint
  schedule    create a recurring run (retrain-and-redeploy) on a KFP endpoint
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from llm_rollout.errors import RolloutError


def _compile(args: argparse.Namespace) -> int:
    from kfp_llm_rollout.components.resources import ScratchDisk
    from kfp_llm_rollout.pipelines.compile import compile_pipelines

    disk = None
    if args.optimize_disk.lower() != "none":
        disk = ScratchDisk(args.optimize_disk, args.optimize_disk_mount, args.optimize_storage_class).checked()
    started = time.perf_counter()
    paths = compile_pipelines(
        args.out,
        image=args.image,
        optimize_image=args.optimize_image,
        api_key_secret=args.api_key_secret,
        optimize_disk=disk,
    )
    for path in paths:
        print(path)
    print(f"compiled {len(paths)} pipelines in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


def _render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llm_rollout.render import DEFAULT_CANDIDATE_URI, applied_manifests, write_manifests
    from llm_rollout.spec import load_spec

    if not args.spec:  # manifests/: the annotated reference of the default spec
        print(
            "llm-rollout render: no --spec: the annotated reference manifests of the default spec (placeholder "
            "model URIs, the llm-d example beside the InferenceService); give --spec FILE for what a rollout applies",
            file=sys.stderr,
        )
        for path in write_manifests(load_spec(None), args.out, args.phase, args.candidate_uri or DEFAULT_CANDIDATE_URI):
            print(path)
        return 0
    texts = applied_manifests(load_spec(args.spec), args.phase, args.candidate_uri, source=args.spec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out / name).write_text(text)
        print(out / name)
    return 0


def _spec(args: argparse.Namespace) -> int:
    from llm_rollout.spec.reference import describe, index

    print(describe(args.field) if args.field else index(), end="")
    return 0


def _validate(args: argparse.Namespace, rest: list[str]) -> int:
    from llm_rollout.validation.cli import validate_command

    return validate_command(rest)


def plain_text(text: str) -> str:
    """``text`` without reST markup (``llm-rollout`` literals, :func:`x` roles), as ``--help`` prints it."""
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text).replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llm-rollout`` (subcommands and their flags)."""
    from kfp_llm_rollout.components.images import DEFAULT_IMAGE, DEFAULT_OPTIMIZE_IMAGE
    from kfp_llm_rollout.components.resources import DEFAULT_OPTIMIZE_DISK, DEFAULT_SCRATCH_MOUNT

    parser = argparse.ArgumentParser(
        prog="llm-rollout", description=plain_text(__doc__ or ""), formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="compile the pipelines to KFP IR YAML")
    p.add_argument("--out", required=True, help="directory for <pipeline-name>.yaml files")
    p.add_argument(
        "--image",
        help=f"components' image, REPO:TAG or pinned REPO@sha256:DIGEST (default {DEFAULT_IMAGE or 'none: give one'})",
    )
    p.add_argument(
        "--optimize-image",
        help=f"optimize step's image, REPO:TAG or REPO@sha256:DIGEST (default {DEFAULT_OPTIMIZE_IMAGE or 'none'})",
    )
    p.add_argument(
        "--api-key-secret",
        metavar="SECRET[:KEY]",
        help="Kubernetes Secret with the model endpoint's API key (key default api-key): the steps that call "
        "the model get it as $LLM_ROLLOUT_API_KEY (set validation.api_key_env: LLM_ROLLOUT_API_KEY)",
    )
    p.add_argument(
        "--optimize-disk",
        default=DEFAULT_OPTIMIZE_DISK,
        metavar="SIZE|none",
        help=f"scratch volume of the optimize step for the downloaded and the compressed model (default "
        f"{DEFAULT_OPTIMIZE_DISK}, an emptyDir size limit; 'none': KFP's unbounded /minio emptyDir)",
    )
    p.add_argument(
        "--optimize-disk-mount",
        default=DEFAULT_SCRATCH_MOUNT,
        help="the pipeline root's bucket below the launcher's directory: /minio/mlpipeline (default), /s3/BUCKET, "
        "/gcs/BUCKET",
    )
    p.add_argument("--optimize-storage-class", help="StorageClass of that volume (default: the cluster's default)")
    p.set_defaults(func=_compile)

    p = sub.add_parser("render", help="write the Kubernetes manifests the kserve platform applies for a spec")
    p.add_argument(
        "--spec",
        help="rollout spec (YAML/JSON): exactly what a rollout of it applies; without it, the annotated "
        "reference manifests of the default spec (manifests/)",
    )
    p.add_argument("--out", required=True, help="directory for the manifest files")
    p.add_argument(
        "--phase",
        choices=("first", "canary", "promoted"),
        default="first",
        help="the rollout phase to show: first (stable only, default), canary (stable plus the new revision at "
        "canary.traffic_percent), promoted (after promotion)",
    )
    p.add_argument(
        "--candidate-uri",
        help="model URI of the new revision in the canary and promoted phases (needed with --spec)",
    )
    p.set_defaults(func=_render)

    p = sub.add_parser("spec", help="the spec's fields: every one, or one field's type, default and doc")
    p.add_argument("field", nargs="?", help="a dotted field path, e.g. validation.comparison.settle_s")
    p.set_defaults(func=_spec)

    p = sub.add_parser("validate", help="validate an OpenAI-compatible endpoint (see validate --help)", add_help=False)
    p.set_defaults(func=_validate, passthrough=True)

    from kfp_llm_rollout.pipelines.run_local import add_parser as add_run_local

    add_run_local(sub)

    from kfp_llm_rollout.pipelines.kfp_runs import add_parsers as add_kfp_runs
    from kfp_llm_rollout.pipelines.service_cli import add_parsers as add_service

    add_service(sub)
    add_kfp_runs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``llm-rollout``; returns the exit code (0 ok, 1 failed, 2 bad usage or input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `validate` owns its flags; pass everything after it through untouched.
    if argv and argv[0] == "validate":
        args, rest = parser.parse_known_args(argv[:1])
        rest = argv[1:]
    else:
        args, rest = parser.parse_args(argv), []
    try:
        if getattr(args, "passthrough", False):
            return args.func(args, rest)
        return args.func(args)
    except RolloutError as err:
        print(f"llm-rollout {args.command}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1
    except KeyboardInterrupt:
        print(f"llm-rollout {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
