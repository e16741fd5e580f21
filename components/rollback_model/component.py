"""rollback-model: remove a revision that failed validation."""


def rollback_model(spec: str, record: str, reason: str, fail_on_rollback: bool = False) -> str:
    """Removes the new revision and leaves the stable one serving exactly as it was.

    On a first rollout (nothing stable yet) the unvalidated service is removed, so no unvalidated
    model ever serves. Rolling back twice is a no-op.

    Args:
        spec: The rollout spec as JSON.
        record: The deployment record from deploy-model.
        reason: Why (the validation summary), recorded in the history.
        fail_on_rollback: After rolling back, fail this step with the reason, so the run shows
            red (Failed) in the KFP UI; the stable revision keeps serving either way.

    Returns:
        What happened, one line.
    """
    from llm_rollout.steps import rollback_step

    return rollback_step(spec, record, reason=reason, fail_on_rollback=fail_on_rollback)
