"""The two pipelines: deploy, and optimize-deploy (the one scheduled for retrain-and-redeploy).

Both start with prepare-rollout (the effective spec from the ``platform`` and ``namespace``
parameters, and the model's content identity) and share one rollout body: register the runtime,
deploy the new revision beside the stable one, validate it, then promote on ``pass``, roll back on
``fail``/``inconclusive`` (failing the run with the reason unless ``fail_on_rollback`` is off) and
do neither when the model already is the stable one. An exit handler (finalize-rollout) runs after
every run, failed or cancelled included, rolls back anything the run deployed but did not promote,
and gives the pipeline's output ``outcome``: promoted, rolled-back, already-promoted or failed.

Every pod setting that is a pipeline parameter is typed as KFP 2.17's driver reads it: strings
for resources and the GPU count, a dict for the node selector, a list for tolerations
(``components/resources.py``).
"""

from types import SimpleNamespace
from typing import Any

from kfp import dsl

from kfp_llm_rollout.components import build_components
from kfp_llm_rollout.components.resources import (
    DEFAULT_OPTIMIZE_ACCELERATOR_COUNT,
    DEFAULT_OPTIMIZE_ACCELERATOR_TYPE,
    DEFAULT_OPTIMIZE_CPU,
    DEFAULT_OPTIMIZE_MEMORY,
    ScratchDisk,
    set_gpu_placement,
    set_optimize_resources,
    set_step_defaults,
)

DEPLOY_PIPELINE = "llm-deploy"
OPTIMIZE_DEPLOY_PIPELINE = "llm-optimize-deploy"
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER
API_KEY_ENV = "LLM_ROLLOUT_API_KEY"
"""Environment variable the endpoint's API key is put in (from ``--api-key-secret`` at compile time)."""


DEFAULT_PLATFORM = "kserve"
"""A run from the KFP UI rolls out on KServe unless ``platform`` says otherwise (run-local passes ``local``)."""
ALREADY_PROMOTED = "already-promoted"


def _no_cache(task: Any) -> Any:
    # Steps that touch the cluster or measure it must run every time.
    task.set_caching_options(False)
    return set_step_defaults(task, task.component_spec.name.replace("_", "-"))


def _api_key(task: Any, secret: tuple[str, str] | None) -> Any:
    # Steps that talk to the model endpoint get its API key from a Kubernetes Secret, as an
    # environment variable: never a pipeline parameter, which the KFP UI shows in clear text.
    if secret:
        from kfp import kubernetes

        kubernetes.use_secret_as_env(task, secret_name=secret[0], secret_key_to_env={secret[1]: API_KEY_ENV})
    return task


def _rollout(
    c: SimpleNamespace,
    spec: Any,
    model_uri: Any,
    model_digest: Any = "",
    secret: tuple[str, str] | None = None,
    model_scheme: Any = "",
    fail_on_rollback: Any = True,
    validate_node_selector: Any = None,
    validate_tolerations: Any = None,
) -> None:
    """register -> deploy -> validate -> promote | rollback | nothing, inside the caller's exit handler.

    The model reaches deploy-model as its URI (and digest), never as an input artifact: KFP's
    launcher downloads every input artifact into the step's pod before user code runs
    (kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go``, ``downloadArtifacts``), and
    no step after optimize-model reads the model's bytes. ``spec`` is prepare-rollout's output, so
    every step depends on it. A model that already is the stable revision (verdict
    ``already-promoted``) goes to neither branch.
    """
    register = _no_cache(c.register_runtime(spec=spec)).set_display_name("register-runtime")
    deploy = _no_cache(
        c.deploy_model(
            spec=spec, model_uri=model_uri, model_digest=model_digest, model_scheme=model_scheme, run_id=RUN_ID
        )
    )
    deploy = _api_key(deploy.after(register), secret)
    validate = _api_key(_no_cache(c.validate_deployment(spec=spec, record=deploy.output)), secret)
    set_gpu_placement(validate, validate_node_selector, validate_tolerations)
    verdict = validate.outputs["verdict"]
    with dsl.If(verdict == "pass", name="verdict-pass"):
        _api_key(
            _no_cache(
                c.promote_model(
                    spec=spec,
                    record=deploy.output,
                    verdict=verdict,
                    summary=validate.outputs["summary"],
                    metrics=validate.outputs["key_metrics"],
                    report_uri=validate.outputs["report_uri"],
                    run_id=RUN_ID,
                )
            ),
            secret,
        )
    with dsl.Elif(verdict != ALREADY_PROMOTED, name="verdict-not-pass"):
        _no_cache(
            c.rollback_model(
                spec=spec, record=deploy.output, reason=validate.outputs["summary"], fail_on_rollback=fail_on_rollback
            )
        )


KFP_STORE_SECRET = "mlpipeline-minio-artifact"
"""KFP's object-store keys (``config/env.go`` ``minioArtifactSecretName``, keys ``accesskey``/``secretkey``)."""


def _prepare(c: SimpleNamespace, spec: Any, model_uri: Any, platform: Any, namespace: Any, for_optimize: bool) -> Any:
    from kfp import kubernetes

    # The store's keys, so prepare-rollout can HEAD the model's manifest for its ETag (the content
    # identity of minio:// and s3:// models, model_source.store_content_id). Optional: without the
    # Secret the pod still starts and the identity falls back to the digest (driver/k8s.go sets
    # SecretKeySelector.Optional); the kubelet reads it, the run's account needs no grant for it.
    return kubernetes.use_secret_as_env(
        _prepare_task(c, spec, model_uri, platform, namespace, for_optimize),
        secret_name=KFP_STORE_SECRET,
        secret_key_to_env={"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"},
        optional=True,
    )


def _prepare_task(
    c: SimpleNamespace, spec: Any, model_uri: Any, platform: Any, namespace: Any, for_optimize: bool
) -> Any:
    return _no_cache(
        c.prepare_rollout(
            spec=spec,
            model_uri=model_uri,
            run_id=RUN_ID,
            platform=platform,
            namespace=namespace,
            for_optimize=for_optimize,
        )
    )


def _finalize(c: SimpleNamespace, spec: Any, platform: Any, namespace: Any) -> Any:
    return _no_cache(c.finalize_rollout(spec=spec, run_id=RUN_ID, platform=platform, namespace=namespace))


def parse_secret_ref(ref: str | None) -> tuple[str, str] | None:
    """``SECRET`` or ``SECRET:KEY`` -> ``(secret, key)`` (key default ``api-key``); None for none.

    Raises:
        SpecError: Not a valid Secret name or key.
    """
    import re

    from llm_rollout.errors import SpecError

    if not ref:
        return None
    name, _, key = ref.partition(":")
    key = key or "api-key"
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
        raise SpecError(
            "--api-key-secret", f"{ref!r} is not SECRET[:KEY]", "name a Kubernetes Secret, e.g. 'vllm-api-key:token'"
        )
    return name, key


def deploy_pipeline(
    image: str | None = None,
    optimize_image: str | None = None,
    api_key_secret: str | None = None,
    optimize_disk: ScratchDisk | None = None,
):
    """Builds the deploy pipeline: an existing model -> register -> deploy -> validate -> promote.

    Args:
        image: The components' image.
        optimize_image: Unused here; accepted so both pipeline builders take the same arguments.
        optimize_disk: Unused here (no step of this pipeline holds the model's files).
        api_key_secret: ``SECRET`` or ``SECRET:KEY`` (key default ``api-key``): the endpoint's API
            key, put into ``$LLM_ROLLOUT_API_KEY`` of the steps that call the model (set
            ``validation.api_key_env: LLM_ROLLOUT_API_KEY`` in the spec).

    Returns:
        The KFP pipeline (compile it with ``kfp.compiler.Compiler``).
    """
    c = build_components(image, optimize_image)
    secret = parse_secret_ref(api_key_secret)

    @dsl.pipeline(
        name=DEPLOY_PIPELINE,
        description="Serve a model with vLLM (KServe or llm-d), validate it against the SLO, promote or roll back.",
    )
    def llm_deploy(
        model_uri: str,
        namespace: str = "",
        platform: str = DEFAULT_PLATFORM,
        spec: str = "{}",
        fail_on_rollback: bool = True,
        validate_node_selector: dict = {},  # noqa: B006 - KFP reads the default from the signature
        validate_tolerations: list = [],  # noqa: B006
    ) -> str:
        """Deploys, validates and promotes a model.

        Args:
            model_uri: Where the model is: s3://, gs://, minio:// (registered as a KFP Model
                artifact), pvc://, hf://, oci:// (pvc:// and hf:// pass as a parameter, lineage in
                prepare-rollout's model_source metadata); a local directory on the local platform.
            namespace: The model server's namespace (empty: the run's own namespace).
            platform: kserve (a cluster, the default) or local (a vLLM process beside the runner).
            spec: The rest of the rollout spec as JSON (every field: docs/spec.md, ``llm-rollout spec FIELD``).
            fail_on_rollback: A rolled-back candidate fails the run with the reason (red in the UI);
                off: the run succeeds and its outcome says rolled-back.
            validate_node_selector: Node selector of validate-deployment (a dict, e.g.
                {"nvidia.com/gpu.present": "true"}).
            validate_tolerations: Tolerations of validate-deployment (a list of tolerations).

        Returns:
            The outcome: promoted, rolled-back, already-promoted or failed.
        """
        finalize = _finalize(c, spec, platform, namespace)
        with dsl.ExitHandler(finalize, name="rollout"):
            prepare = _prepare(c, spec, model_uri, platform, namespace, for_optimize=False)
            # KFP's importer registers the Model artifact (lineage, the UI) for the schemes it
            # accepts (importer_launcher.go); nothing downloads it. Other URIs skip it.
            with dsl.If(prepare.outputs["importable"] == "true", name="importable-uri"):
                dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
            _rollout(
                c,
                prepare.outputs["spec"],
                model_uri,
                prepare.outputs["model_digest"],
                secret=secret,
                fail_on_rollback=fail_on_rollback,
                validate_node_selector=validate_node_selector,
                validate_tolerations=validate_tolerations,
            )
        return finalize.outputs["outcome"]

    return llm_deploy


def optimize_deploy_pipeline(
    image: str | None = None,
    optimize_image: str | None = None,
    api_key_secret: str | None = None,
    optimize_disk: ScratchDisk | None = ScratchDisk(),  # noqa: B008 - frozen dataclass
):
    """Builds the optimize-deploy pipeline: compress with llmcompressor, then the deploy flow.

    This is the pipeline to schedule for retrain-and-redeploy: a rerun whose model is already the
    stable one ends as "already promoted" without a new rollout.

    Args:
        image: The components' image.
        optimize_image: The optimize step's image.
        api_key_secret: ``SECRET[:KEY]`` holding the endpoint's API key (see :func:`deploy_pipeline`).
        optimize_disk: The optimize step's scratch disk for the model files (a generic ephemeral
            volume; None: the node's own ephemeral storage).

    Returns:
        The KFP pipeline.
    """
    c = build_components(image, optimize_image)
    secret = parse_secret_ref(api_key_secret)

    @dsl.pipeline(
        name=OPTIMIZE_DEPLOY_PIPELINE,
        description="Compress a model with llmcompressor, serve it with vLLM, validate against the SLO, promote.",
    )
    def llm_optimize_deploy(
        model_uri: str,
        namespace: str = "",
        platform: str = DEFAULT_PLATFORM,
        spec: str = "{}",
        scheme: str = "W8A8",
        recipe: str = "",
        calibration_data: str = "",
        fail_on_rollback: bool = True,
        optimize_accelerator_type: str = DEFAULT_OPTIMIZE_ACCELERATOR_TYPE,
        optimize_accelerator_count: str = DEFAULT_OPTIMIZE_ACCELERATOR_COUNT,
        optimize_cpu: str = DEFAULT_OPTIMIZE_CPU,
        optimize_memory: str = DEFAULT_OPTIMIZE_MEMORY,
        optimize_node_selector: dict = {},  # noqa: B006 - KFP reads the default from the signature
        optimize_tolerations: list = [],  # noqa: B006
        validate_node_selector: dict = {},  # noqa: B006
        validate_tolerations: list = [],  # noqa: B006
    ) -> str:
        """Optimizes, deploys, validates and promotes a model.

        Args:
            model_uri: The base model to compress (a Hugging Face model directory in the object
                store: s3://, gs://, minio://; a local directory on the local platform).
            namespace: The model server's namespace (empty: the run's own namespace).
            platform: kserve (a cluster, the default) or local.
            spec: The rest of the rollout spec as JSON.
            scheme: Quantization scheme: W8A8, FP8_DYNAMIC or W4A16.
            recipe: A llmcompressor recipe (YAML) instead of ``scheme``.
            calibration_data: Calibration text file or dataset directory (schemes that calibrate).
            fail_on_rollback: A rolled-back candidate fails the run with the reason.
            optimize_accelerator_type: The optimize step's GPU resource name (``nvidia.com/gpu``;
                empty for none).
            optimize_accelerator_count: GPUs for the optimize step (a string: KFP's driver reads
                pod settings as strings).
            optimize_cpu: CPU request of the optimize step.
            optimize_memory: Memory request and limit of the optimize step (about 2 bytes per
                parameter plus room: 32Gi for 1B, 48Gi for 8B, 288Gi for 70B; see
                ``optimize_resources_for``).
            optimize_node_selector: Node selector of the optimize step (a dict).
            optimize_tolerations: Tolerations of the optimize step (a list), e.g.
                [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}].
            validate_node_selector: Node selector of validate-deployment.
            validate_tolerations: Tolerations of validate-deployment.

        Returns:
            The outcome: promoted, rolled-back, already-promoted or failed.
        """
        finalize = _finalize(c, spec, platform, namespace)
        with dsl.ExitHandler(finalize, name="rollout"):
            prepare = _prepare(c, spec, model_uri, platform, namespace, for_optimize=True)
            base = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False).after(prepare)
            optimize = set_optimize_resources(
                c.optimize_model(
                    input_model=base.output,
                    scheme=scheme,
                    recipe=recipe,
                    calibration_data=calibration_data,
                    content_id=prepare.outputs["content_id"],
                ),
                accelerator_type=optimize_accelerator_type,
                accelerator_count=optimize_accelerator_count,
                cpu=optimize_cpu,
                memory=optimize_memory,
                disk=optimize_disk,
            )
            set_step_defaults(optimize, "optimize-model")
            set_gpu_placement(optimize, optimize_node_selector, optimize_tolerations)
            _rollout(
                c,
                prepare.outputs["spec"],
                optimize.outputs["model_uri"],
                optimize.outputs["model_digest"],
                secret=secret,
                model_scheme=optimize.outputs["model_scheme"],
                fail_on_rollback=fail_on_rollback,
                validate_node_selector=validate_node_selector,
                validate_tolerations=validate_tolerations,
            )
        return finalize.outputs["outcome"]

    return llm_optimize_deploy


PIPELINES = {DEPLOY_PIPELINE: deploy_pipeline, OPTIMIZE_DEPLOY_PIPELINE: optimize_deploy_pipeline}
"""Pipeline builders by pipeline name (the compiled file is ``<name>.yaml``)."""
