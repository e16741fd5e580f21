"""Compiles the pipelines to KFP IR YAML, one file per pipeline named after it."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from kfp_llm_rollout.components.resources import ScratchDisk
from kfp_llm_rollout.pipelines.pipelines import PIPELINES


def compile_pipelines(
    out_dir: str | Path,
    *,
    image: str | None = None,
    optimize_image: str | None = None,
    api_key_secret: str | None = None,
    optimize_disk: ScratchDisk | None = ScratchDisk(),  # noqa: B008 - frozen dataclass
) -> list[Path]:
    """Compiles every pipeline into ``out_dir/<pipeline-name>.yaml``.

    Args:
        out_dir: Output directory (created if missing).
        image: The components' image (``repo:tag`` or ``repo@sha256:...``; default: the package
            version's tag, refused when the version is unknown).
        optimize_image: The optimize step's image.
        api_key_secret: ``SECRET[:KEY]`` with the model endpoint's API key (``$LLM_ROLLOUT_API_KEY``
            in the steps that call the model).
        optimize_disk: The optimize step's scratch disk (None: the node's ephemeral storage).

    Returns:
        The written paths.
    """
    from kfp_llm_rollout.components.images import resolve_images

    image, optimize_image = resolve_images(image, optimize_image)  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in PIPELINES.items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(
            build(
                image=image, optimize_image=optimize_image, api_key_secret=api_key_secret, optimize_disk=optimize_disk
            ),
            str(path),
        )
        paths.append(path)
    return paths
