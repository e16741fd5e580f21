"""optimize-model: step one, compress a model with llmcompressor."""

from kfp import dsl


def optimize_model(
    input_model: dsl.Input[dsl.Model],
    optimized_model: dsl.Output[dsl.Model],
    scheme: str = "W8A8",
    recipe: str = "",
    calibration_data: str = "",
    ignore: list = ["lm_head"],  # noqa: B006 - KFP reads the default from the signature
):
    """Compresses a model with llmcompressor ``oneshot`` and saves it compressed.

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
    """
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
