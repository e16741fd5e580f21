"""optimize-model: step one, compress a model with llmcompressor."""

from typing import NamedTuple

from kfp import dsl


def optimize_model(
    input_model: dsl.Input[dsl.Model],
    optimized_model: dsl.Output[dsl.Model],
    scheme: str = "W8A8",
    recipe: str = "",
    calibration_data: str = "",
    ignore: list = ["lm_head"],  # noqa: B006 - KFP reads the default from the signature
    content_id: str = "",
) -> NamedTuple("OptimizeOutputs", [("model_uri", str), ("model_digest", str), ("model_scheme", str)]):
    """Compresses a model with llmcompressor ``oneshot`` and saves it compressed.

    The compressed model is a KFP Model artifact (lineage, metadata in the UI). Its URI and digest
    are also returned as parameters: the steps after this one pass them on and never take the
    artifact itself, because KFP's launcher downloads every input artifact into the step's pod
    (kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go``, ``downloadArtifacts``) and
    only the model server needs the bytes (KServe's storage initializer fetches them).

    Args:
        input_model: The model to compress (a Hugging Face model directory).
        optimized_model: The compressed model (``save_compressed=True``); its metadata records the
            scheme, parameter count, bytes before and after, compression ratio and llmcompressor
            version.
        scheme: Quantization scheme: ``W8A8`` (int8 weights and activations), ``FP8_DYNAMIC`` or
            ``W4A16``. Ignored when ``recipe`` is given.
        recipe: A user recipe (YAML text or a path to a YAML file) instead of ``scheme``.
        calibration_data: Local text file or dataset directory for schemes that calibrate; none is
            needed for W8A8 and FP8_DYNAMIC (round-to-nearest).
        ignore: Module names left unquantized.
        content_id: The input model's content identity (prepare-rollout's ``content_id``): part
            of KFP's cache key, so new weights at the same URI are optimized again and unchanged
            ones reuse the cached result; recorded in the metadata as ``source_content_id``.

    Returns:
        model_uri: Where the compressed model is stored (the artifact's URI), for deploy-model.
        model_digest: Content digest of the compressed model (recognises a rerun of the stable model).
        model_scheme: The scheme applied (``W8A8``, ``FP8_DYNAMIC``, ``W4A16``; empty for a recipe),
            for deploy-model's GPU preflight (an FP8_DYNAMIC model on a GPU below 8.9 is refused).
    """
    from collections import namedtuple

    from llm_rollout.steps import optimize_step

    metadata = optimize_step(
        input_model.path,
        optimized_model.path,
        scheme=scheme,
        recipe=recipe,
        calibration_data=calibration_data,
        ignore=list(ignore),
    )
    optimized_model.metadata.update(metadata)
    if content_id:
        optimized_model.metadata["source_content_id"] = content_id
    outputs = namedtuple("OptimizeOutputs", ["model_uri", "model_digest", "model_scheme"])
    scheme_applied = str(metadata.get("scheme") or "")
    return outputs(
        optimized_model.uri,
        str(metadata.get("digest") or ""),
        "" if scheme_applied == "custom" else scheme_applied,
    )
