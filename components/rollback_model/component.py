"""rollback-model: remove a revision that failed validation."""


def rollback_model(spec: str, record: str, reason: str) -> str:
    """Removes the new revision and leaves the stable one serving exactly as it was.

    On a first rollout (nothing stable yet) the unvalidated service is removed, so no unvalidated
    model ever serves. Rolling back twice is a no-op.

    Args:
        spec: The rollout spec as JSON.
        record: The deployment record from deploy-model.
        reason: Why (the validation summary), recorded in the history.

    Returns:
        What happened, one line.
    """
    from llm_rollout.steps import rollback_step

    return rollback_step(spec, record, reason=reason)
