"""promote-model: give the validated revision production traffic."""

from kfp import dsl


def promote_model(
    spec: str,
    record: str,
    verdict: str,
    summary: str,
    run_id: str,
    analysis: dsl.Output[dsl.Metrics],
    analysis_report: dsl.Output[dsl.HTML],
    metrics: str = "",
    report_uri: str = "",
) -> str:
    """Promotes the validated revision to stable and retires the one it replaces.

    Refuses unless ``verdict`` is ``pass``. The promotion (model URI, artifact digest, run id,
    verdict summary, time) is recorded on the service, and the previous stable model is kept for a
    one-command rollback.

    Args:
        spec: The rollout spec as JSON.
        record: The deployment record from deploy-model.
        verdict: The validation verdict; anything but ``pass`` is refused.
        summary: The validation summary, recorded with the promotion.
        run_id: The pipeline run's id, recorded with the promotion.
        metrics: validate-deployment's ``key_metrics`` (JSON), recorded with the promotion so that
            ``llm-rollout status`` shows what the stable revision measured.
        report_uri: validate-deployment's ``report_uri``, recorded with the promotion.
        analysis: Each canary step's live analysis (``canary.steps[].analysis``): ``analysis_step<N>_ok``
            (1 pass, 0 fail, -1 inconclusive), the candidate/stable ratios with their intervals
            (``_low``/``_high``) and the requests seen per side; written for the steps analysed
            before a failed step's rollback too.
        analysis_report: The steps' live analyses as an HTML page: per step its answer and evidence,
            per interval the requests finished per side and each ratio with its interval so far
            (the validation report is written before promotion and cannot show them).

    Returns:
        What happened, one line (e.g. ``promoted lean-rag-inference-1a2b3c4d``).
    """
    from llm_rollout.steps import promote_step

    return promote_step(
        spec,
        record,
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        report_uri=report_uri,
        run_id=run_id,
        log_metric=analysis.log_metric,
        analysis_report_path=analysis_report.path,
    )
