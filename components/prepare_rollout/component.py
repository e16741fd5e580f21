"""prepare-rollout: the run's effective spec and what its model is, before anything else runs."""

from typing import NamedTuple

from kfp import dsl


def prepare_rollout(
    spec: str,
    model_uri: str,
    run_id: str,
    model_source: dsl.Output[dsl.Artifact],
    platform: str = "",
    namespace: str = "",
    for_optimize: bool = False,
) -> NamedTuple("PrepareOutputs", [("spec", str), ("content_id", str), ("model_digest", str), ("importable", str)]):
    """Applies the run's main choices to the spec and identifies the model by its content.

    The later steps take this step's ``spec``, so the pipeline's ``platform`` and ``namespace``
    parameters reach them all. The content identity enters the optimize step's cache key: new
    weights written to the same URI optimize and roll out again, unchanged weights reuse the cached
    result and end "already promoted" (KFP's cache key is input artifact names and parameters,
    ``backend/src/v2/cacheutils/cache.go``).

    Args:
        spec: The rollout spec as JSON.
        model_uri: The model's URI (or a local directory on the local platform).
        run_id: The pipeline run's id (the content identity when the content is not readable here:
            every run then counts as new content).
        model_source: Lineage of the model in the KFP UI: its metadata holds ``source_uri``,
            ``scheme`` and ``content_id`` (also for URIs KFP's importer refuses, hf:// and pvc://).
        platform: ``kserve`` or ``local``; empty: the spec's.
        namespace: The model server's namespace; empty: the spec's, else the run's own.
        for_optimize: The model is the optimize step's input (refused unless KFP's launcher can
            download it: gs://, s3://, minio://).

    Returns:
        spec: The effective spec as JSON, for the later steps.
        content_id: The model's content identity, for the optimize step's cache key: ``sha256:...`` of a
            local directory, ``etag:sha256:...`` of an object-store model's manifest ETags (a HEAD of
            ``model.safetensors.index.json``, ``model.safetensors``, ``config.json`` at
            ``$AWS_ENDPOINT_URL``, KFP's store for minio://), or ``run:<id>`` when unknown (every run
            is then new content, and the optimized model's digest decides).
        model_digest: The content digest when known here, else empty: deploy-model's "already
            promoted" test (an empty digest leaves it to the URI and the stable record).
        importable: ``true`` when KFP's importer accepts the URI (gs, s3, minio, mem, oci).
    """
    from collections import namedtuple

    from llm_rollout.steps import prepare_step

    result = prepare_step(
        spec, model_uri=model_uri, platform=platform, namespace=namespace, for_optimize=for_optimize, run_id=run_id
    )
    model_source.metadata.update(result["lineage"])
    with open(model_source.path, "w") as fh:
        fh.write(model_uri + "\n")
    outputs = namedtuple("PrepareOutputs", ["spec", "content_id", "model_digest", "importable"])
    return outputs(result["spec"], result["content_id"], result["lineage"]["content_id"], result["importable"])
