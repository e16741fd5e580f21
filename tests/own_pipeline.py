"""Another team's pipeline, as the README's "Use the components in your own pipeline" shows it.

Their "train" step ends in a Model artifact; our components take it from there: optimize ->
register -> deploy -> validate -> promote or roll back, inside an exit handler. ``c`` is either
``build_components(...)`` (the Python import) or ``load_component_specs(...)`` (the compiled
``component.yaml`` files): the pipeline is written once for both.
"""

from types import SimpleNamespace

from kfp import dsl

from kfp_llm_rollout.components.resources import set_optimize_resources

RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER


@dsl.component(base_image="python:3.11-slim")
def train(source: str, model: dsl.Output[dsl.Model]):
    """The other team's training step: here it copies a model directory into its Model artifact."""
    import shutil

    shutil.copytree(source, model.path, dirs_exist_ok=True)
    model.metadata["framework"] = "transformers"


def train_and_serve_pipeline(c: SimpleNamespace):
    """The user-style pipeline over the components ``c``."""

    @dsl.pipeline(name="team-train-and-serve")
    def train_and_serve(source: str, spec: str = "{}", scheme: str = "W8A8"):
        finalize = c.finalize_rollout(spec=spec, run_id=RUN_ID).set_caching_options(False)
        with dsl.ExitHandler(finalize, name="rollout"):
            trained = train(source=source)
            opt = c.optimize_model(input_model=trained.outputs["model"], scheme=scheme)
            set_optimize_resources(opt, accelerator_type="", cpu="2", memory="8Gi")  # a CPU-only test model
            reg = c.register_runtime(spec=spec).set_caching_options(False)
            dep = c.deploy_model(
                spec=spec, model_uri=opt.outputs["model_uri"], model_digest=opt.outputs["model_digest"], run_id=RUN_ID
            )
            dep.after(reg).set_caching_options(False)
            val = c.validate_deployment(spec=spec, record=dep.output).set_caching_options(False)
            with dsl.If(val.outputs["verdict"] == "pass", name="verdict-pass"):
                c.promote_model(
                    spec=spec,
                    record=dep.output,
                    verdict=val.outputs["verdict"],
                    summary=val.outputs["summary"],
                    metrics=val.outputs["key_metrics"],
                    report_uri=val.outputs["report_uri"],
                    run_id=RUN_ID,
                ).set_caching_options(False)
            with dsl.Else(name="verdict-not-pass"):
                c.rollback_model(spec=spec, record=dep.output, reason=val.outputs["summary"]).set_caching_options(False)

    return train_and_serve
