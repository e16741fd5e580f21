"""finalize-rollout: the exit handler that runs after every run, failed or not."""

from typing import NamedTuple

from kfp import dsl


def finalize_rollout(
    spec: str,
    run_id: str,
    status: dsl.PipelineTaskFinalStatus,
    platform: str = "",
    namespace: str = "",
) -> NamedTuple("FinalizeOutputs", [("message", str), ("outcome", str)]):
    """Rolls back anything this run deployed but did not promote, then releases what it held.

    Runs after success and after failure (deploy timeout, validation error, cancellation). It finds
    the run's own revisions by ``run_id``, so it works even when a step died before writing its
    outputs. On the local platform it also stops the servers the run started (unless
    ``local.keep_serving``).

    Args:
        spec: The rollout spec as JSON.
        run_id: The pipeline run's id.
        status: The final status of the run's steps, provided by KFP.
        platform: The pipeline's ``platform`` parameter (empty: the spec's).
        namespace: The pipeline's ``namespace`` parameter (empty: the spec's, else the run's own).

    Returns:
        message: What was cleaned up, one line.
        outcome: What the run ended as: ``promoted``, ``rolled-back``, ``already-promoted`` or
            ``failed`` (the pipeline's output).
    """
    from collections import namedtuple

    from llm_rollout.steps import finalize_with_outcome

    message, outcome = finalize_with_outcome(
        spec,
        run_id=run_id,
        state=status.state,
        error=status.error_message or "",
        platform=platform,
        namespace=namespace,
    )
    return namedtuple("FinalizeOutputs", ["message", "outcome"])(message, outcome)
