"""deploy-model: roll out the model beside (never instead of) what is stable."""


def deploy_model(spec: str, model_uri: str, run_id: str, model_digest: str = "", model_scheme: str = "") -> str:
    """Rolls the model out as a new revision and waits until it is ready and serving.

    A first rollout creates the service. When a stable revision already serves, the new model is
    added as a canary (``canary.traffic_percent``, 0 = dark launch) and the stable revision is left
    untouched. A rerun with the same inputs changes nothing; a restarted step resumes waiting.

    The model comes as its URI, not as a KFP artifact: KFP would download an input artifact into
    this step's pod before it starts, and this step never reads the model's bytes (on kserve the
    serving pod's storage initializer fetches them; on the local platform the URI is a local path).

    Args:
        spec: The rollout spec as JSON.
        model_uri: Where the model is: optimize-model's ``model_uri`` output, the pipeline's
            ``model_uri`` parameter, or your own step's Model URI (``s3://``, ``gs://``, ``pvc://``,
            ``hf://``, ``oci://``; a local directory on the local platform).
        run_id: The pipeline run's id; recorded on the revision so a failed run can be cleaned up.
        model_digest: The model's content digest (optimize-model's ``model_digest``), when known;
            a model whose digest is the stable one's is not rolled out again.
        model_scheme: The model's quantization scheme (optimize-model's ``model_scheme``), when
            known: on kserve an FP8_DYNAMIC model for a GPU below compute capability 8.9 is refused
            before anything is applied.

    Returns:
        The deployment record (JSON): what was rolled out, where the new revision answers, and
        what was stable before.
    """
    from llm_rollout.steps import deploy_step

    metadata = {k: v for k, v in (("digest", model_digest), ("scheme", model_scheme)) if v}
    return deploy_step(spec, model_uri=model_uri, model_metadata=metadata, run_id=run_id)
