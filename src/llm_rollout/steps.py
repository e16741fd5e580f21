"""The pipeline steps: what each KFP component does, for both platforms.

Each component in ``components/<name>/component.py`` is a thin wrapper that calls one function
here with its parameters. A step parses the spec, dispatches on ``spec.platform`` (``kserve``:
the Kubernetes layer in :mod:`llm_rollout.rollout` and :mod:`llm_rollout.promotion`; ``local``:
vLLM processes and a state directory in :mod:`llm_rollout.local`) and runs inside
:func:`llm_rollout.steplog.step`, which prints progress lines and feeds ``llm-rollout
run-local``'s closing summary.

Every step is safe to rerun: deploy reuses the same revision, promote and rollback of an already
promoted or rolled back revision do nothing, finalize only acts on what its run left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_rollout import steplog
from llm_rollout.errors import SpecError
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec, check_gpu, coerce_spec

ALREADY_PROMOTED = "already-promoted"
"""Verdict of a run whose model already is the stable revision (nothing new to validate)."""

KEY_METRICS = ("p95_ttft_ms", "p95_tpot_ms", "output_throughput_tok_s", "error_rate", "token_agreement", "ratio")
"""Metric name fragments shown in summaries (the full set goes to the KFP Metrics artifact)."""


@dataclass
class ValidateOutcome:
    """What validate-deployment returns to the pipeline.

    Attributes:
        verdict: ``pass``, ``fail``, ``inconclusive`` or ``already-promoted``.
        summary: Why, one reason per line.
        metrics: Flat metrics for the KFP Metrics artifact.
        report_path: Where the HTML report was written.
    """

    verdict: str
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    report_path: str = ""


ADDRESS_MAP_ENV = "LLM_ROLLOUT_ADDRESS_MAP"
"""Maps in-cluster addresses to reachable ones when the steps run outside the cluster.

Comma-separated ``HOST_PATTERN=URL`` pairs; the pattern is matched (shell-style wildcards) against
the host of each address deploy-model records, e.g.
``*.team-a.svc.cluster.local=http://127.0.0.1:8080`` for a ``kubectl port-forward``.
"""


def address_resolver(text: str | None = None):
    """The ``resolve_url`` function for :func:`llm_rollout.rollout.deploy` from ``$LLM_ROLLOUT_ADDRESS_MAP``.

    Args:
        text: The map (default: the environment variable).

    Returns:
        A function from a cluster address to the address to use, or None when no map is set.

    Raises:
        SpecError: A pair is not ``HOST_PATTERN=URL``.
    """
    import fnmatch
    from urllib.parse import urlsplit

    raw = os.environ.get(ADDRESS_MAP_ENV, "") if text is None else text
    pairs = []
    for item in filter(None, (x.strip() for x in raw.split(","))):
        pattern, sep, target = item.partition("=")
        if not sep or not pattern or not target.startswith(("http://", "https://")):
            raise SpecError(
                ADDRESS_MAP_ENV,
                f"{item!r} is not HOST_PATTERN=URL",
                "write e.g. '*.svc.cluster.local=http://127.0.0.1:8080'",
            )
        pairs.append((pattern, target.rstrip("/")))
    if not pairs:
        return None

    def resolve(url: str) -> str:
        parts = urlsplit(url)
        for pattern, target in pairs:
            if fnmatch.fnmatch(parts.hostname or "", pattern):
                rest = parts.path.rstrip("/") + (f"?{parts.query}" if parts.query else "")
                return target + rest
        return url

    return resolve


def _kube_client():
    from llm_rollout.kube import KubeClient

    return KubeClient.from_environment()


def key_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The few metrics a summary line shows, picked from the flat KFP metrics."""
    return {k: v for k, v in metrics.items() if any(f in k for f in KEY_METRICS) and not k.startswith("baseline_")}


# optimize ---------------------------------------------------------------------------------------


def optimize_step(
    input_path: str,
    output_path: str,
    *,
    scheme: str = "W8A8",
    recipe: str = "",
    calibration_data: str = "",
    ignore: list[str] | None = None,
) -> dict[str, Any]:
    """Step one: compresses the model with llmcompressor and returns the artifact metadata.

    Args:
        input_path: The source model directory.
        output_path: Where the compressed model goes.
        scheme: ``W8A8``, ``FP8_DYNAMIC`` or ``W4A16`` (ignored with ``recipe``).
        recipe: A user recipe: a path to a YAML file, or the YAML text itself.
        calibration_data: A text/JSONL file or dataset directory, for schemes that calibrate.
        ignore: Modules left unquantized (default ``["lm_head"]``).

    Returns:
        The metadata of :func:`llm_rollout.optimize.optimize` plus ``digest`` (content digest of
        the compressed model, used to recognise a rerun that produced the stable model again).
    """
    from llm_rollout.model_files import model_digest
    from llm_rollout.optimize import run_optimize

    with steplog.step("optimize-model") as out, tempfile.TemporaryDirectory(prefix="llm-rollout-recipe-") as tmp:
        recipe_path = None
        if recipe.strip():
            candidate = Path(recipe).expanduser()
            if "\n" not in recipe and candidate.suffix in (".yaml", ".yml", ".json"):
                recipe_path = str(candidate)
            else:
                recipe_path = str(Path(tmp) / "recipe.yaml")
                Path(recipe_path).write_text(recipe)
        metadata = run_optimize(
            input_path,
            output_path,
            scheme=scheme,
            recipe_path=recipe_path,
            calibration=calibration_data or None,
            ignore=ignore,
        )
        metadata["digest"] = model_digest(output_path)
        out.update({k: metadata.get(k) for k in ("scheme", "compression_ratio", "bytes_before", "bytes_after")})
        out["model_path"] = output_path
    return metadata


# register-runtime -------------------------------------------------------------------------------


def register_runtime_step(spec: RolloutSpec | str) -> str:
    """Registers the vLLM runtime (kserve) or checks the local vLLM environment (local).

    Returns:
        The runtime's name.
    """
    with steplog.step("register-runtime") as out:
        s = coerce_spec(spec)
        if s.platform == "local":
            from llm_rollout.local import register_runtime_local

            runtime = register_runtime_local(s)
            name = runtime["runtime_name"]
            out["vllm_version"] = runtime.get("vllm_version")
        else:
            from llm_rollout.rollout import register_runtime

            applied = register_runtime(s, _kube_client())
            name = (applied.get("metadata") or {}).get("name") or s.runtime_name
        out["runtime"] = name
    return name


# deploy-model -----------------------------------------------------------------------------------


def _digest(model_path: str, model_metadata: dict[str, Any] | None, spec: RolloutSpec) -> str | None:
    from llm_rollout.model_files import model_digest

    meta = model_metadata or {}
    if spec.model.digest:
        return spec.model.digest
    if meta.get("digest"):
        return str(meta["digest"])
    if model_path and Path(model_path).is_dir():
        return model_digest(model_path)
    return None


def _local_already_promoted(spec: RolloutSpec, model_path: str, digest: str | None, run_id: str):
    from llm_rollout.local import resolve_state_dir

    if not digest:
        return None
    state = resolve_state_dir(spec.local.state_dir)
    stable = state.read_state().get("stable") or {}
    if stable.get("artifact_digest") != digest:
        return None
    return DeploymentRecord(
        platform="local",
        kind="LocalServer",
        name=spec.service_name,
        namespace="local",
        member=stable["member"],
        revision=stable.get("revision", ""),
        model_uri=stable.get("model_uri", model_path),
        served_model_name=stable.get("served_model_name", spec.served_model_name),
        endpoint_url=stable.get("endpoint_url", ""),
        run_id=run_id,
        artifact_digest=digest,
        already_promoted=True,
    )


def deploy_step(
    spec: RolloutSpec | str,
    *,
    model_uri: str,
    model_path: str = "",
    model_metadata: dict[str, Any] | None = None,
    run_id: str = "",
) -> str:
    """Rolls the model out as a new revision beside the stable one and waits until it serves.

    A model whose content digest equals the stable revision's is not rolled out again: the record
    says ``already_promoted`` and the later steps end without touching anything.

    Args:
        spec: The rollout spec.
        model_uri: The model artifact's URI (what KServe's storage initializer fetches; on the
            local platform a local directory, as kfp.local's artifact URIs are).
        model_path: The model's local directory when it differs from ``model_uri`` (the local
            platform serves it from there; default: ``model_uri`` when it has no scheme).
        model_metadata: The artifact's metadata (its ``digest`` when step one made it).
        run_id: The pipeline run.

    Returns:
        The deployment record as JSON.
    """
    with steplog.step("deploy-model") as out:
        s = coerce_spec(spec)
        if not model_path and "://" not in model_uri:
            model_path = model_uri  # kfp.local and the local platform: the URI is the directory
        if s.platform == "kserve":
            # GPU preflight before any write: the artifact's scheme (step one) against the GPU.
            scheme = (model_metadata or {}).get("scheme")
            known = scheme if scheme in ("W8A8", "FP8_DYNAMIC", "W4A16") else None
            note = check_gpu(s, known, "model_metadata.scheme")
            if note:
                steplog.log(f"deploy-model: {note}")
        digest = _digest(model_path, model_metadata, s) if s.platform == "local" else None
        if s.platform == "local":
            from llm_rollout.local import deploy_local

            record = _local_already_promoted(s, model_path, digest, run_id)
            if record is None:
                if digest and not s.model.digest:
                    s = s.model_copy(update={"model": s.model.model_copy(update={"digest": digest})})
                record = deploy_local(s, model_dir=model_path or model_uri, run_id=run_id)
        else:
            from llm_rollout.rollout import deploy

            client = _kube_client()
            meta_digest = (model_metadata or {}).get("digest")
            try:
                record = deploy(
                    s,
                    client,
                    model_uri=model_uri,
                    run_id=run_id,
                    artifact_digest=s.model.digest or meta_digest,
                    resolve_url=address_resolver(),
                )
            except KeyboardInterrupt:
                # Cancelled (SIGTERM) while the canary was coming up: take it away before leaving.
                from llm_rollout.promotion import finalize_run

                finalize_run(s, client, run_id, state="CANCELLED", error="deploy-model was cancelled")
                raise
        if record.already_promoted:
            steplog.log(f"deploy-model: {record.member} already serves this model as stable: nothing to roll out")
        out.update(
            {
                "member": record.member,
                "endpoint_url": record.endpoint_url,
                "canary": record.canary,
                "already_promoted": record.already_promoted,
            }
        )
    return record.to_json()


# validate-deployment ----------------------------------------------------------------------------


def _stable_endpoint(rec: DeploymentRecord) -> str | None:
    """The stable revision's own endpoint while it serves (what the candidate is compared with).

    Through ``$LLM_ROLLOUT_ADDRESS_MAP`` like every other cluster address (deploy records the
    stable's address as the cluster reports it).
    """
    if not (rec.stable and rec.stable.endpoint_url):
        return None
    return _mapped(rec.stable.endpoint_url)


def _mapped(url: str) -> str:
    """``url`` through ``$LLM_ROLLOUT_ADDRESS_MAP`` (unchanged without a map)."""
    resolve = address_resolver()
    return resolve(url) if resolve else url


def _save_local_validation(s: RolloutSpec, rec: DeploymentRecord, outcome: ValidateOutcome) -> None:
    # promote-model on the local platform stores the metrics with the promotion; KFP passes it
    # only the verdict and summary, so the full outcome waits in the state directory.
    from llm_rollout.local import resolve_state_dir
    from llm_rollout.local_state import write_json_atomic

    state = resolve_state_dir(s.local.state_dir)
    write_json_atomic(
        state.root / "validations" / f"{rec.member}.json",
        {"verdict": outcome.verdict, "summary": outcome.summary, "metrics": outcome.metrics,
         "report_path": outcome.report_path},
    )  # fmt: skip


def _load_local_validation(s: RolloutSpec, rec: DeploymentRecord) -> dict[str, Any]:
    from llm_rollout.local import resolve_state_dir
    from llm_rollout.local_state import read_json

    data = read_json(resolve_state_dir(s.local.state_dir).root / "validations" / f"{rec.member}.json")
    return data if isinstance(data, dict) else {}


@contextmanager
def _rollback_on_sigterm(s: RolloutSpec, rec: DeploymentRecord):
    if s.platform != "kserve":
        yield
        return
    from llm_rollout.promotion import rollback_on_termination

    with rollback_on_termination(s, _kube_client(), rec):
        yield


def _summary(reasons: list[str]) -> str:
    """A verdict's summary line(s): one reason per line, or that every check passed."""
    return "\n".join(reasons) or "every check passed"


def validate_step(
    spec: RolloutSpec | str,
    record: DeploymentRecord | str,
    *,
    report_path: str = "",
    results_path: str = "",
) -> ValidateOutcome:
    """Validates the new revision's own endpoint against the spec's suite, load and SLO.

    Two comparisons, never mixed: recovery against the uncompressed original when
    ``validation.recovery.base_url`` is set, and the comparison with the stable revision
    (``validation.comparison``) whenever it serves. A cancelled validation on kserve rolls the new
    revision back at once.

    Args:
        spec: The rollout spec.
        record: The deployment record from deploy-model.
        report_path: Where to write the HTML report (the KFP HTML artifact's path).
        results_path: Where to write the full results JSON (the KFP artifact's path).

    Returns:
        The verdict, the summary and the flat metrics.
    """
    from llm_rollout.validation import validate

    with steplog.step("validate-deployment") as out:
        s = coerce_spec(spec)
        rec = DeploymentRecord.coerce(record)
        if rec.already_promoted:
            summary = f"{rec.member} already serves this model as the stable revision: nothing new to validate"
            outcome = ValidateOutcome(ALREADY_PROMOTED, summary)
            for path, text in (
                (report_path, f"<p>{summary}</p>\n"),
                (results_path, json.dumps({"verdict": ALREADY_PROMOTED, "summary": summary})),
            ):
                if path:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    Path(path).write_text(text)
            out.update({"verdict": outcome.verdict, "summary": summary})
            return outcome
        stable_url = _stable_endpoint(rec)
        with tempfile.TemporaryDirectory(prefix="llm-rollout-validate-") as tmp, _rollback_on_sigterm(s, rec):
            result = validate(
                s.validation,
                rec.endpoint_url,
                rec.served_model_name,
                stable_url=stable_url,
                report_dir=tmp,
                metrics_urls=s.validation.metrics_urls or rec.metrics_urls or None,
            )
            for src_key, dest in (("html", report_path), ("json", results_path)):
                src = result.report_paths.get(src_key)
                if dest and src:
                    Path(dest).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
        summary = _summary(result.reasons)
        outcome = ValidateOutcome(result.verdict, summary, dict(result.metrics), report_path)
        if s.platform == "local":
            _save_local_validation(s, rec, outcome)
        out.update(
            {
                "verdict": outcome.verdict,
                "summary": summary,
                "metrics": key_metrics(outcome.metrics),
                "report": report_path,
                "results": results_path,
                "recovery_base": s.validation.recovery.base_url,
                "stable": stable_url,
            }
        )
    return outcome


# promote / rollback / finalize ------------------------------------------------------------------


def _member_metrics_urls(s: RolloutSpec, rec: DeploymentRecord) -> tuple[dict[str, str], str]:
    """Each member's own vLLM ``/metrics`` (stable and canary), or why they are unknown.

    Only a Standard-mode InferenceService has them: the stable predictor's address
    (``status.components.predictor``) and the canary's (``<isvc>-<canary>-predictor``) are their own
    Services (``constants.PredictorServiceName``), vLLM serving ``/metrics`` beside the API.
    """
    if rec.kind != "InferenceService":
        return {}, f"{rec.kind} members answer through the gateway, not through an address of their own"
    if s.deployment_mode != "Standard":
        return {}, "Knative splits traffic between revisions itself and gives the stable revision no address of its own"
    if rec.stable is None or not rec.stable.endpoint_url or not rec.endpoint_url:
        return {}, "the record has no address of its own for the stable and the canary predictor"
    urls = {rec.stable.member: _mapped(rec.stable.endpoint_url), rec.member: rec.endpoint_url}
    return {m: u.rstrip("/") + "/metrics" for m, u in urls.items()}, ""


def _traffic_gate(s: RolloutSpec, rec: DeploymentRecord):
    """Flagger-style gate for stepped promotion: validate the whole service at each traffic step.

    The load goes to the service address (stable and new revision by their weights); correctness
    and the SLO must hold there before more traffic moves. No baseline: the stable revision is
    part of what is measured, so there is neither a recovery base nor a stable comparison here.

    Each member's own vLLM request counters are read before and after that load
    (:mod:`llm_rollout.validation.traffic`): a step whose canary got no traffic while its weight
    says it should (Standard mode without Gateway API) fails with the cause and the fix. Where the
    members' own addresses are unknown the proof is skipped, and the log says why.
    """
    from llm_rollout.validation import validate
    from llm_rollout.validation.traffic import judge_traffic, scrape_requests

    url = rec.service_url or rec.endpoint_url
    metrics, unknown = _member_metrics_urls(s, rec)
    verify = s.validation.ca_bundle or s.validation.tls_verify

    def counts() -> tuple[dict[str, float | None], list[str]]:
        got, errors = {}, []
        for member, murl in metrics.items():
            got[member], err = scrape_requests(murl, verify=verify)
            if err:
                errors.append(err)
        return got, errors

    def gate(percent: int) -> tuple[str, str]:
        steplog.log(f"promote-model: gate at {percent}% traffic on {url}")
        gate_spec = s.validation.model_copy(
            update={"recovery": s.validation.recovery.model_copy(update={"base_url": None})}
        )
        before, errors = counts() if metrics else ({}, [])
        result = validate(gate_spec, url, rec.served_model_name)
        reasons = list(result.reasons)
        if not metrics:
            note = f"traffic proof skipped: {unknown}"
            steplog.log(f"promote-model: {note}")
            return result.verdict, f"{_summary(reasons)}\n{note}"
        after, more = counts()
        proof = judge_traffic(before, after, canary=rec.member, stable=rec.stable.member, weight=percent)
        if proof.verdict == "skipped":
            proof.message = f"{proof.message} ({'; '.join(errors + more)})"
        steplog.log(f"promote-model: traffic at {percent}%: {proof.verdict}: {proof.message}")
        if proof.verdict == "fail":
            return "fail", _summary([proof.message, *reasons])
        return result.verdict, f"{_summary(reasons)}\ntraffic {proof.verdict}: {proof.message}"

    return gate


def promote_step(
    spec: RolloutSpec | str, record: DeploymentRecord | str, *, verdict: str, summary: str = "", run_id: str = ""
) -> str:
    """Promotes the validated revision; refuses unless the verdict is ``pass``.

    Returns:
        What happened, one line.
    """
    with steplog.step("promote-model") as out:
        s = coerce_spec(spec)
        rec = DeploymentRecord.coerce(record)
        if rec.already_promoted:
            message = f"already promoted: {rec.member} serves this model as the stable revision"
        elif s.platform == "local":
            from llm_rollout.local import promote_local

            saved = _load_local_validation(s, rec)
            result = promote_local(
                rec,
                verdict=verdict,
                metrics=saved.get("metrics"),
                report_path=saved.get("report_path", ""),
                run_id=run_id,
                state_dir=s.local.state_dir,
                summary=summary,
            )
            if result["action"] == "none":
                message = f"already promoted: {rec.member}"
            else:
                stopped = ", ".join(result["stopped"]) or "nothing"
                message = f"promoted {rec.member} ({rec.model_uri}); stopped {stopped}; state in {result['state_file']}"
        else:
            from llm_rollout.promotion import promote

            gate = _traffic_gate(s, rec) if s.canary.steps else None
            result = promote(s, _kube_client(), rec, verdict=verdict, summary=summary, run_id=run_id, gate=gate)
            message = result.get("message") or f"{result.get('action')} {rec.member}"
        out["message"] = message
    steplog.log(message)
    return message


def rollback_step(
    spec: RolloutSpec | str, record: DeploymentRecord | str, *, reason: str = "", run_id: str = ""
) -> str:
    """Removes the new revision and leaves the stable one exactly as it was.

    Returns:
        What happened, one line.
    """
    with steplog.step("rollback-model") as out:
        s = coerce_spec(spec)
        rec = DeploymentRecord.coerce(record)
        if rec.already_promoted:
            message = f"already promoted: {rec.member} stays the stable revision; nothing to roll back"
        elif s.platform == "local":
            from llm_rollout.local import rollback_local

            result = rollback_local(rec, reason, run_id=run_id, state_dir=s.local.state_dir)
            kept = result.get("stable") or "nothing (first rollout)"
            message = f"rolled back {rec.member}; stable stays {kept}"
            if result["action"] == "none":
                message = f"nothing to roll back for {rec.member} (already rolled back or promoted)"
        else:
            from llm_rollout.promotion import rollback

            result = rollback(s, _kube_client(), rec, reason=reason, run_id=run_id)
            message = result.get("message") or f"{result.get('action')} {rec.member}"
        out["message"] = message
        out["reason"] = reason
    steplog.log(message)
    return message


def _finalize_local(s: RolloutSpec, run_id: str, state: str, error: str) -> list[str]:
    from llm_rollout.local import resolve_state_dir, rollback_local

    st = resolve_state_dir(s.local.state_dir)
    stable = (st.read_state().get("stable") or {}).get("member")
    done = []
    for info in st.servers():
        if info.get("run_id") != run_id or info.get("role") != "candidate" or info["member"] == stable:
            continue
        rec = DeploymentRecord(
            platform="local",
            kind="LocalServer",
            name=info.get("service") or s.service_name,
            namespace="local",
            member=info["member"],
            revision=info.get("revision", ""),
            model_uri=info.get("model_uri", ""),
            served_model_name=info.get("served_model_name", s.served_model_name),
            endpoint_url=info.get("endpoint_url", ""),
            run_id=run_id,
        )
        reason = f"run ended {state or 'without promoting it'}" + (f": {error}" if error else "")
        rollback_local(rec, reason, run_id=run_id, state_dir=s.local.state_dir)
        done.append(info["member"])
    return done


def finalize_step(spec: RolloutSpec | str, *, run_id: str, state: str = "", error: str = "") -> str:
    """The exit handler: rolls back what this run deployed but did not promote.

    Runs after success and failure alike; finds the run's revisions by ``run_id``, so it works even
    when a step died before writing its outputs.

    Returns:
        What was cleaned up, one line.
    """
    with steplog.step("finalize-rollout") as out:
        s = coerce_spec(spec)
        if s.platform == "local":
            rolled = _finalize_local(s, run_id, state, error)
            message = f"rolled back {', '.join(rolled)}" if rolled else "nothing left to clean up"
        else:
            from llm_rollout.promotion import finalize_run

            result = finalize_run(s, _kube_client(), run_id, state=state, error=error)
            message = result.get("message") or "finalized"
        out.update({"message": message, "state": state})
    steplog.log(f"finalize-rollout ({state or 'unknown state'}): {message}")
    return message
