"""promote-model: give the validated revision production traffic."""


def promote_model(spec: str, record: str, verdict: str, summary: str, run_id: str, metrics: str = "") -> str:
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

    Returns:
        What happened, one line (e.g. ``promoted lean-rag-inference-1a2b3c4d``).
    """
    from llm_rollout.steps import promote_step

    return promote_step(spec, record, verdict=verdict, summary=summary, metrics=metrics, run_id=run_id)
