"""The two pipelines: deploy, and optimize-deploy (the one scheduled for retrain-and-redeploy).

Both share one rollout body: register the runtime, deploy the new revision beside the stable one,
validate it, then promote on ``pass`` or roll back otherwise. An exit handler (finalize-rollout)
runs after every run, failed or cancelled included, and rolls back anything the run deployed but
did not promote, so no unvalidated revision is left taking traffic.
"""

from types import SimpleNamespace
from typing import Any

from kfp import dsl

from llm_rollout_components import build_components
from llm_rollout_components.images import DEFAULT_IMAGE, DEFAULT_OPTIMIZE_IMAGE

DEPLOY_PIPELINE = "llm-deploy"
OPTIMIZE_DEPLOY_PIPELINE = "llm-optimize-deploy"
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER


def _no_cache(task: Any) -> Any:
    # Steps that touch the cluster or measure it must run every time.
    task.set_caching_options(False)
    return task


def _rollout(c: SimpleNamespace, spec: str, model: Any) -> None:
    """register -> deploy -> validate -> promote | rollback, inside the caller's exit handler."""
    register = _no_cache(c.register_runtime(spec=spec)).set_display_name("register-runtime")
    deploy = _no_cache(c.deploy_model(spec=spec, model=model, run_id=RUN_ID)).after(register)
    validate = _no_cache(c.validate_deployment(spec=spec, record=deploy.output))
    with dsl.If(validate.outputs["verdict"] == "pass", name="verdict-pass"):
        _no_cache(
            c.promote_model(
                spec=spec,
                record=deploy.output,
                verdict=validate.outputs["verdict"],
                summary=validate.outputs["summary"],
                run_id=RUN_ID,
            )
        )
    with dsl.Else(name="verdict-not-pass"):
        _no_cache(c.rollback_model(spec=spec, record=deploy.output, reason=validate.outputs["summary"]))


def deploy_pipeline(image: str = DEFAULT_IMAGE, optimize_image: str = DEFAULT_OPTIMIZE_IMAGE):
    """Builds the deploy pipeline: an existing model -> register -> deploy -> validate -> promote.

    Args:
        image: The components' image.
        optimize_image: Unused here; accepted so both pipeline builders take the same arguments.

    Returns:
        The KFP pipeline (compile it with ``kfp.compiler.Compiler``).
    """
    c = build_components(image, optimize_image)

    @dsl.pipeline(
        name=DEPLOY_PIPELINE,
        description="Serve a model with vLLM (KServe or llm-d), validate it against the SLO, promote or roll back.",
    )
    def llm_deploy(model_uri: str, spec: str = "{}"):
        """Deploys, validates and promotes a model.

        Args:
            model_uri: Where the model is (a KFP Model artifact URI: minio://, s3://, gs://; pvc://,
                hf://, oci://; a local directory on the local platform).
            spec: The rollout spec as JSON (fields: ``llm-rollout render --help``).
        """
        finalize = _no_cache(c.finalize_rollout(spec=spec, run_id=RUN_ID))
        with dsl.ExitHandler(finalize, name="rollout"):
            model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
            _rollout(c, spec, model.output)

    return llm_deploy


def optimize_deploy_pipeline(image: str = DEFAULT_IMAGE, optimize_image: str = DEFAULT_OPTIMIZE_IMAGE):
    """Builds the optimize-deploy pipeline: compress with llmcompressor, then the deploy flow.

    This is the pipeline to schedule for retrain-and-redeploy: a rerun whose model is already the
    stable one ends as "already promoted" without a new rollout.

    Args:
        image: The components' image.
        optimize_image: The optimize step's image.

    Returns:
        The KFP pipeline.
    """
    c = build_components(image, optimize_image)

    @dsl.pipeline(
        name=OPTIMIZE_DEPLOY_PIPELINE,
        description="Compress a model with llmcompressor, serve it with vLLM, validate against the SLO, promote.",
    )
    def llm_optimize_deploy(
        model_uri: str,
        spec: str = "{}",
        scheme: str = "W8A8",
        recipe: str = "",
        calibration_data: str = "",
    ):
        """Optimizes, deploys, validates and promotes a model.

        Args:
            model_uri: The base model to compress (a Hugging Face model directory as an artifact URI).
            spec: The rollout spec as JSON.
            scheme: Quantization scheme: W8A8, FP8_DYNAMIC or W4A16.
            recipe: A llmcompressor recipe (YAML) instead of ``scheme``.
            calibration_data: Calibration text file or dataset directory (schemes that calibrate).
        """
        finalize = _no_cache(c.finalize_rollout(spec=spec, run_id=RUN_ID))
        with dsl.ExitHandler(finalize, name="rollout"):
            base = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
            optimize = c.optimize_model(
                input_model=base.output, scheme=scheme, recipe=recipe, calibration_data=calibration_data
            )
            _rollout(c, spec, optimize.outputs["optimized_model"])

    return llm_optimize_deploy


PIPELINES = {DEPLOY_PIPELINE: deploy_pipeline, OPTIMIZE_DEPLOY_PIPELINE: optimize_deploy_pipeline}
"""Pipeline builders by pipeline name (the compiled file is ``<name>.yaml``)."""
