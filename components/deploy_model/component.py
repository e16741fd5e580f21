"""deploy-model: roll out the model beside (never instead of) what is stable."""

from kfp import dsl


def deploy_model(spec: str, model: dsl.Input[dsl.Model], run_id: str) -> str:
    """Rolls the model out as a new revision and waits until it is ready and serving.

    A first rollout creates the service. When a stable revision already serves, the new model is
    added as a canary (``canary.traffic_percent``, 0 = dark launch) and the stable revision is left
    untouched. A rerun with the same inputs changes nothing; a restarted step resumes waiting.

    Args:
        spec: The rollout spec as JSON.
        model: The model to serve (the optimize step's output or an imported artifact).
        run_id: The pipeline run's id; recorded on the revision so a failed run can be cleaned up.

    Returns:
        The deployment record (JSON): what was rolled out, where the new revision answers, and
        what was stable before.
    """
    from llm_rollout.steps import deploy_step

    return deploy_step(
        spec, model_uri=model.uri, model_path=model.path, model_metadata=dict(model.metadata), run_id=run_id
    )
