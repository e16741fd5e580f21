"""KFP v2 component wrappers (thin): one folder per component, each a ``component.py``.

Each wrapper converts parameters, calls one library function (``llm_rollout.steps``) and writes
outputs. Two public ways to use them in any pipeline (README: "Use the components in your own
pipeline"), both giving a namespace with one attribute per component (``optimize_model``,
``register_runtime``, ``deploy_model``, ``validate_deployment``, ``promote_model``,
``rollback_model``, ``finalize_rollout``, ``prepare_rollout``):

- :func:`build_components` turns the Python functions into KFP components for the given images,
  so the image is chosen when a pipeline is compiled, not when this package is imported;
- :func:`load_component_specs` loads the compiled ``components/<name>/component.yaml`` files (what
  ``kfp.components.load_component_from_file`` / ``_url`` read), optionally with other images.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

from kfp import dsl

from kfp_llm_rollout.components.deploy_model.component import deploy_model
from kfp_llm_rollout.components.finalize_rollout.component import finalize_rollout
from kfp_llm_rollout.components.images import resolve_images
from kfp_llm_rollout.components.optimize_model.component import optimize_model
from kfp_llm_rollout.components.prepare_rollout.component import prepare_rollout
from kfp_llm_rollout.components.promote_model.component import promote_model
from kfp_llm_rollout.components.register_runtime.component import register_runtime
from kfp_llm_rollout.components.rollback_model.component import rollback_model
from kfp_llm_rollout.components.validate_deployment.component import validate_deployment

COMPONENT_FUNCTIONS = {
    "prepare-rollout": prepare_rollout,
    "optimize-model": optimize_model,
    "register-runtime": register_runtime,
    "deploy-model": deploy_model,
    "validate-deployment": validate_deployment,
    "promote-model": promote_model,
    "rollback-model": rollback_model,
    "finalize-rollout": finalize_rollout,
}
"""Every component, by its KFP name."""


def build_components(image: str | None = None, optimize_image: str | None = None) -> SimpleNamespace:
    """Makes KFP components of the wrapper functions for the given images.

    Args:
        image: The components' image (library + kfp + kubernetes client), ``repo:tag`` or pinned
            ``repo@sha256:...``; default ``ghcr.io/kfp-llm-rollout/components:<package version>``.
        optimize_image: The optimize step's image (llmcompressor + torch); default
            ``ghcr.io/kfp-llm-rollout/optimize:<package version>``.

    Returns:
        A namespace with one attribute per component (``optimize_model``, ``deploy_model`` ...).

    Raises:
        SpecError: A malformed image reference, or no image while the package version (the
            default tag) is unknown.
    """
    image, optimize_image = resolve_images(image, optimize_image)
    built = {}
    for name, func in COMPONENT_FUNCTIONS.items():
        base = optimize_image if name == "optimize-model" else image
        built[func.__name__] = dsl.component(func=func, base_image=base, install_kfp_package=False)
    return SimpleNamespace(**built)


def component_spec_path(func_or_name: object) -> Path:
    """The compiled spec of a component: ``components/<folder>/component.yaml``.

    Args:
        func_or_name: The component's function or its KFP name (``deploy-model``).
    """
    func = COMPONENT_FUNCTIONS[func_or_name] if isinstance(func_or_name, str) else func_or_name
    return Path(inspect.getfile(func)).parent / "component.yaml"


def load_component_specs(image: str | None = None, optimize_image: str | None = None) -> SimpleNamespace:
    """Loads the compiled component specs (``component.yaml``), optionally with other images.

    The same components as :func:`build_components`, read from the YAML files other teams load
    with ``kfp.components.load_component_from_file`` / ``load_component_from_url``.

    Args:
        image: The components' image instead of the one the specs were compiled with
            (``repo:tag`` or ``repo@sha256:...``).
        optimize_image: The optimize step's image instead.

    Returns:
        A namespace with one attribute per component.

    Raises:
        SpecError: A malformed image reference.
    """
    import re

    from kfp import components

    from kfp_llm_rollout.components.images import check_image

    built = {}
    for name, func in COMPONENT_FUNCTIONS.items():
        text = component_spec_path(func).read_text()
        wanted = optimize_image if name == "optimize-model" else image
        if wanted:
            wanted = check_image(wanted, "--optimize-image" if name == "optimize-model" else "--image")
            # One executor per component spec, so exactly one container image line.
            text, count = re.subn(r"(?m)^(\s+image: ).*$", lambda m, w=wanted: m.group(1) + w, text)
            assert count == 1, f"{component_spec_path(func)}: expected one image, found {count}"
        built[func.__name__] = components.load_component_from_text(text)
    return SimpleNamespace(**built)
