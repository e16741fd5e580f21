"""finalize-rollout: the exit handler that runs after every run, failed or not."""

from kfp import dsl


def finalize_rollout(spec: str, run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Rolls back anything this run deployed but did not promote, then releases what it held.

    Runs after success and after failure (deploy timeout, validation error, cancellation). It finds
    the run's own revisions by ``run_id``, so it works even when a step died before writing its
    outputs. On the local platform it also stops the servers the run started (unless
    ``local.keep_serving``).

    Args:
        spec: The rollout spec as JSON.
        run_id: The pipeline run's id.
        status: The final status of the run's steps, provided by KFP.

    Returns:
        What was cleaned up, one line.
    """
    from llm_rollout.steps import finalize_step

    return finalize_step(spec, run_id=run_id, state=status.state, error=status.error_message or "")
