"""The pipeline steps: what each KFP component does, on either platform.

Each component in ``components/<name>/component.py`` is a thin wrapper that calls one function
here with its parameters. A step parses the spec and the deployment record once, here at the
component boundary, then asks the platform (:func:`llm_rollout.platform.platform_for`: kserve or
local, both behind :class:`llm_rollout.platform.Platform`) to act, inside
:func:`llm_rollout.steplog.step`, which prints progress lines and feeds ``llm-rollout
run-local``'s closing summary. Nothing below the steps takes a dict or a JSON string.

Every step is safe to rerun: deploy reuses the same revision, promote and rollback of an already
promoted or rolled back revision do nothing, finalize only acts on what its run left behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_rollout import steplog
from llm_rollout.autoscaling import Capacity, Measured
from llm_rollout.platform import ModelRef, Platform, ValidationConclusion, platform_for
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec, coerce_spec, spec_to_json

ALREADY_PROMOTED = "already-promoted"
"""The verdict of a run whose model already is the stable revision (nothing new to validate)."""


class RolledBack(RuntimeError):
    """rollback-model finished rolling back and fails the run on purpose (``fail_on_rollback``)."""


def key_metrics(verdict: ValidationConclusion) -> dict[str, Any]:
    """validate-deployment's ``key_metrics`` output: the headline numbers and the measured capacity.

    The headline numbers come from the gate's answers (``ValidationResult.key_metrics``); the
    capacity is the typed :class:`~llm_rollout.autoscaling.Capacity` under ``capacity`` (what
    promote-model's autoscaling target comes from), never picked out of metric names.
    """
    out: dict[str, Any] = dict(verdict.headline)
    if verdict.capacity is not None:
        out["capacity"] = verdict.capacity.model_dump(mode="json")
    return out


def _capacity_of(result: Any) -> Capacity | None:
    """The validation's typed capacity evidence (its capacity searches and sizing), None without them."""
    cap, rc, sz = result.capacity, result.rate_capacity, result.sizing
    if cap is None and rc is None and sz is None:
        return None
    return Capacity(
        concurrency=Measured(value=cap.max_concurrency, low=cap.low, high=cap.high) if cap is not None else None,
        request_rate=Measured(value=rc.max_request_rate, low=rc.low, high=rc.high) if rc is not None else None,
        per_replica_req_s=sz.capacity_rps if sz is not None else None,
    )


def _parse(spec: RolloutSpec | str, record: DeploymentRecord | str | None = None):
    """The component boundary: the spec (and record) as typed objects, parsed once."""
    s = coerce_spec(spec)
    return s, (DeploymentRecord.coerce(record) if record is not None else None)


def _platform(spec: RolloutSpec) -> Platform:
    return platform_for(spec)


# prepare-rollout --------------------------------------------------------------------------------

OUTCOMES = ("promoted", "rolled-back", ALREADY_PROMOTED, "failed")
"""The pipeline output ``outcome`` (finalize-rollout)."""


def effective_spec(spec: RolloutSpec | str, platform: str = "", namespace: str = "") -> RolloutSpec:
    """The run's spec: ``spec`` with the pipeline parameters ``platform`` and ``namespace`` applied.

    See :func:`llm_rollout.model_source.effective_spec_doc` (a contradiction is refused; an empty
    namespace is the spec's, else the run's own).
    """
    from llm_rollout.model_source import effective_spec_doc
    from llm_rollout.spec import parse_spec

    if isinstance(spec, RolloutSpec):
        spec = spec_to_json(spec)
    return parse_spec(effective_spec_doc(spec, platform, namespace))


def prepare_step(
    spec: RolloutSpec | str,
    *,
    model_uri: str,
    platform: str = "",
    namespace: str = "",
    for_optimize: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """The first step of a run: the effective spec, and what the model is (scheme, content identity).

    Args:
        spec: The rollout spec.
        model_uri: The model's URI (or local directory).
        platform: The pipeline's ``platform`` parameter (``""``: the spec's).
        namespace: The pipeline's ``namespace`` parameter (``""``: the spec's or the run's own).
        for_optimize: The model is the optimize step's input, which KFP's launcher must download.
        run_id: The pipeline run (the content identity when the content cannot be read from here).

    Returns:
        ``spec`` (JSON), ``content_id``, ``importable`` (``"true"``/``"false"``), ``scheme`` and
        ``lineage`` (metadata for the UI).

    Raises:
        SpecError: A contradicting parameter, or an optimize input KFP's launcher cannot download.
    """
    from llm_rollout.errors import SpecError
    from llm_rollout.model_source import (
        LAUNCHER_DOWNLOAD_SCHEMES,
        content_id,
        importable,
        store_content_id,
        uri_scheme,
    )

    with steplog.step("prepare-rollout") as out:
        s = effective_spec(spec, platform, namespace)
        scheme = uri_scheme(model_uri)
        # A local directory (no scheme) is kfp.local's case; on a cluster KFP's importer refuses it itself.
        if for_optimize and scheme and scheme not in (*LAUNCHER_DOWNLOAD_SCHEMES, "file"):
            raise SpecError(
                "model_uri",
                f"{model_uri!r}: the optimize step gets its input through KFP's launcher, which downloads only "
                f"{', '.join(f'{x}://' for x in LAUNCHER_DOWNLOAD_SCHEMES)} artifacts",
                "copy the model into the pipeline's object store (e.g. minio://mlpipeline/models/NAME) "
                "or deploy it as it is with the llm-deploy pipeline",
            )
        known = content_id(model_uri)
        # An object-store model: its manifest's ETag/generation (a HEAD) decides "same weights" for
        # the cache key; unknown -> the run id (every run new content; the optimized digest decides).
        stored = "" if known else store_content_id(model_uri)
        result = {
            "spec": spec_to_json(s),
            "content_id": known or stored or f"run:{run_id}",
            "importable": "true" if importable(model_uri) else "false",
            "scheme": scheme or "local",
            "lineage": {"source_uri": model_uri, "scheme": scheme or "local", "content_id": known or ""},
        }
        out.update({k: result[k] for k in ("content_id", "importable", "scheme")})
        out.update({"platform": s.platform, "namespace": s.namespace})
    return result


def run_outcome(history: list[Any], run_id: str, state: str) -> str:
    """What a run ended as, from the platform's history: one of :data:`OUTCOMES`.

    A promotion or rollback recorded for ``run_id`` decides; without one, a succeeded run found
    its model already stable (``already-promoted``) and any other run ``failed``.
    """
    for entry in history:  # newest first
        if getattr(entry, "run_id", None) == run_id and getattr(entry, "action", "") in ("promote", "rollback"):
            return "promoted" if entry.action == "promote" else "rolled-back"
    return ALREADY_PROMOTED if state.upper() == "SUCCEEDED" else "failed"


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
        s, _ = _parse(spec)
        out["runtime"] = name = _platform(s).register()
    return name


# deploy-model -----------------------------------------------------------------------------------


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
    says ``already_promoted`` and the later steps end without touching anything. Cancelled (KFP
    sends SIGTERM), the platform takes the half-made revision away before the step exits.

    Args:
        spec: The rollout spec.
        model_uri: The model artifact's URI (what KServe's storage initializer fetches; on the
            local platform a local directory, as kfp.local's artifact URIs are).
        model_path: The model's local directory when it differs from ``model_uri`` (the local
            platform serves it from there; default: ``model_uri`` when it has no scheme).
        model_metadata: The artifact's metadata (its ``digest`` and ``scheme`` when step one made it).
        run_id: The pipeline run.

    Returns:
        The deployment record as JSON.
    """
    with steplog.step("deploy-model") as out:
        s, _ = _parse(spec)
        meta = model_metadata or {}
        if not model_path and "://" not in model_uri:
            model_path = model_uri  # kfp.local and the local platform: the URI is the directory
        model = ModelRef(
            uri=model_uri,
            path=model_path,
            digest=s.model.digest or (str(meta["digest"]) if meta.get("digest") else None),
            scheme=str(meta["scheme"]) if meta.get("scheme") else None,
        )
        record = _platform(s).deploy(model, run_id=run_id)
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


def _write(path: str, text: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def validate_step(
    spec: RolloutSpec | str,
    record: DeploymentRecord | str,
    *,
    report_path: str = "",
    results_path: str = "",
) -> ValidationConclusion:
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
    from llm_rollout.validation.sizing import sizing_input

    with steplog.step("validate-deployment") as out:
        s, rec = _parse(spec, record)
        assert rec is not None
        if rec.already_promoted:
            summary = f"{rec.member} already serves this model as the stable revision: nothing new to validate"
            _write(report_path, f"<p>{summary}</p>\n")
            _write(results_path, json.dumps({"verdict": ALREADY_PROMOTED, "summary": summary}))
            out.update({"verdict": ALREADY_PROMOTED, "summary": summary})
            return ValidationConclusion(verdict=ALREADY_PROMOTED, summary=summary)
        target = _platform(s).validation_target(rec)
        with tempfile.TemporaryDirectory(prefix="llm-rollout-validate-") as tmp, target.guard():

            def log_kept(message: str, scratch: str = str(Path(tmp) / "report.html")) -> None:
                # The report is copied to the KFP artifact below and the scratch folder deleted:
                # name the copy that stays (issue 32).
                steplog.log(message.replace(scratch, report_path or "(not kept: no report path)"))

            result = validate(
                s.validation,
                target.endpoint_url,
                target.served_model_name,
                stable_url=target.stable_url,
                stable_is_same_service=True,  # the platform's own address of this service's stable
                report_dir=tmp,
                metrics_urls=s.validation.metrics_urls or target.metrics_urls or None,
                sizing=sizing_input(s),
                log=log_kept,
            )
            for src_key, dest in (("html", report_path), ("json", results_path)):
                src = result.report_paths.get(src_key)
                if dest and src:
                    Path(dest).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
        verdict = ValidationConclusion(
            verdict=result.verdict,
            summary=result.summary,
            metrics=dict(result.metrics),
            report_path=report_path,
            capacity=_capacity_of(result),
            headline=result.key_metrics(),
        )
        out.update(
            {
                "verdict": verdict.verdict,
                "summary": verdict.summary,
                "metrics": key_metrics(verdict),
                "report": report_path,
                "results": results_path,
                "recovery_base": s.validation.recovery.base_url,
                "stable": target.stable_url,
            }
        )
    return verdict


# promote / rollback / finalize ------------------------------------------------------------------


def promote_step(
    spec: RolloutSpec | str,
    record: DeploymentRecord | str,
    *,
    verdict: str,
    summary: str = "",
    metrics: dict[str, float] | str | None = None,
    report_uri: str = "",
    run_id: str = "",
    log_metric: Callable[[str, float], None] | None = None,
    analysis_report_path: str = "",
) -> str:
    """Promotes the validated revision; refuses unless the verdict is ``pass``.

    Args:
        spec: The rollout spec.
        record: The deployment record from deploy-model.
        verdict: validate-deployment's verdict.
        summary: validate-deployment's summary (recorded with the promotion).
        metrics: validate-deployment's key metrics (a dict or its JSON), recorded with the promotion;
            its ``capacity`` (:func:`key_metrics`) is the measured capacity the autoscaler's
            target comes from.
        report_uri: Where validate-deployment's report is, recorded with the promotion.
        run_id: The pipeline run.
        log_metric: Where each canary step's live-analysis numbers go (promote-model's KFP Metrics).
        analysis_report_path: Where the HTML report of the steps' live analyses goes
            (:mod:`llm_rollout.validation.analysis_report`); written whether the steps went on or
            the promotion stopped and rolled back, and named in the step's record.

    Returns:
        What happened, one line.
    """
    from llm_rollout.validation.analysis_steps import recorded_steps

    with steplog.step("promote-model") as out, recorded_steps() as analysed:
        s, rec = _parse(spec, record)
        assert rec is not None
        try:
            message = _promote(s, rec, out, verdict, summary, metrics, report_uri, run_id)
        except Exception as err:  # the steps analysed before it stopped are published all the same
            _publish_steps(analysed, rec, out, log_metric, analysis_report_path, outcome=f"stopped: {err}")
            raise
        _publish_steps(analysed, rec, out, log_metric, analysis_report_path, outcome=message)
    steplog.log(message)
    return message


def _promote(
    s: RolloutSpec,
    rec: DeploymentRecord,
    out: dict[str, Any],
    verdict: str,
    summary: str,
    metrics: dict[str, float] | str | None,
    report_uri: str,
    run_id: str,
) -> str:
    """promote-model's work inside its step record (:func:`promote_step`); returns its message."""
    if isinstance(metrics, str):
        metrics = json.loads(metrics) if metrics.strip() else {}
    metrics = dict(metrics or {})
    # validate-deployment's typed capacity rides beside the headline numbers (key_metrics).
    measured = metrics.pop("capacity", None)
    capacity = Capacity.model_validate(measured) if isinstance(measured, dict) else None
    if rec.already_promoted:
        message = f"already promoted: {rec.member} serves this model as the stable revision"
    else:
        given = ValidationConclusion(
            verdict=verdict, summary=summary, metrics=metrics, report_path=report_uri, capacity=capacity
        )
        done = _platform(s).promote(rec, given, run_id=run_id)
        message = done.message
        if done.analysis:  # each canary step's live analysis (run-local's summary, the step log)
            out["analysis"] = done.analysis
    out["message"] = message
    return message


def _publish_steps(
    analysed: list[Any],
    rec: DeploymentRecord,
    out: dict[str, Any],
    log_metric: Callable[[str, float], None] | None,
    report_path: str,
    *,
    outcome: str,
) -> None:
    """The steps' live analyses as promote-model's KFP Metrics (:func:`step_metrics`, the failed step's
    too) and HTML report (:func:`write_steps_report`), from the steps analysed so far."""
    from llm_rollout.validation.analysis_report import steps_decision, write_steps_report
    from llm_rollout.validation.analysis_steps import step_metrics

    if log_metric is not None:
        for step in analysed:
            for key, value in step_metrics(step).items():
                log_metric(key, value)
    if report_path:
        steps = [step.to_dict() for step in analysed]
        write_steps_report(report_path, steps, service=rec.name, member=rec.member, outcome=outcome)
        out["analysis_report"] = report_path
        out["analysis_decision"] = steps_decision(steps)


def rollback_step(
    spec: RolloutSpec | str,
    record: DeploymentRecord | str,
    *,
    reason: str = "",
    run_id: str = "",
    fail_on_rollback: bool = False,
) -> str:
    """Removes the new revision and leaves the stable one exactly as it was.

    Args:
        spec: The rollout spec.
        record: The deployment record from deploy-model.
        reason: Why (validate-deployment's summary).
        run_id: The pipeline run.
        fail_on_rollback: After rolling back, fail the step with the reason, so the run shows
            red in the KFP UI (the rollback itself is complete by then).

    Returns:
        What happened, one line.

    Raises:
        RolledBack: ``fail_on_rollback`` and the candidate was rolled back.
    """
    with steplog.step("rollback-model") as out:
        s, rec = _parse(spec, record)
        assert rec is not None
        if rec.already_promoted:
            message = f"already promoted: {rec.member} stays the stable revision; nothing to roll back"
        else:
            message = _platform(s).rollback(rec, reason=reason, run_id=run_id).message
        out["message"] = message
        out["reason"] = reason
    steplog.log(message)
    if fail_on_rollback and not rec.already_promoted:
        raise RolledBack(f"rolled back, the stable revision keeps serving: {reason or message}")
    return message


def finalize_step(
    spec: RolloutSpec | str,
    *,
    run_id: str,
    state: str = "",
    error: str = "",
    platform: str = "",
    namespace: str = "",
) -> str:
    """The exit handler's cleanup (:func:`finalize_with_outcome`); returns its one line."""
    return finalize_with_outcome(spec, run_id=run_id, state=state, error=error, platform=platform, namespace=namespace)[
        0
    ]


def finalize_with_outcome(
    spec: RolloutSpec | str,
    *,
    run_id: str,
    state: str = "",
    error: str = "",
    platform: str = "",
    namespace: str = "",
) -> tuple[str, str]:
    """The exit handler: rolls back what this run deployed but did not promote.

    Runs after success and failure alike; finds the run's revisions by ``run_id``, so it works even
    when a step died before writing its outputs.

    Args:
        spec: The rollout spec.
        run_id: The pipeline run.
        state: The run's final state (KFP's ``PipelineTaskFinalStatus.state``).
        error: The failed task's error message.
        platform: The pipeline's ``platform`` parameter (see :func:`effective_spec`).
        namespace: The pipeline's ``namespace`` parameter.

    Returns:
        What was cleaned up (one line), and the run's outcome (:data:`OUTCOMES`).
    """
    with steplog.step("finalize-rollout") as out:
        s = effective_spec(spec, platform, namespace)
        platform_ = _platform(s)
        message = platform_.finalize(run_id=run_id, state=state, error=error).message
        try:
            history = platform_.status().history
        except Exception as err:  # the outcome is a summary: a status that cannot be read says failed
            steplog.log(f"finalize-rollout: could not read the promotion history: {err}")
            history = []
        outcome = run_outcome(history, run_id, state)
        out.update({"message": message, "state": state, "outcome": outcome})
    steplog.log(f"finalize-rollout ({state or 'unknown state'}): {message}; outcome {outcome}")
    return message, outcome
