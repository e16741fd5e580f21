"""KFP v2 component wrappers (thin): one folder per component, each a ``component.py``.

Each wrapper converts parameters, calls one library function (``llm_rollout.steps``) and writes
outputs. :func:`build_components` turns the plain functions into KFP components for a given image,
so the image is chosen when a pipeline is compiled, not when this package is imported.
"""

from __future__ import annotations

from types import SimpleNamespace

from kfp import dsl

from llm_rollout_components.deploy_model.component import deploy_model
from llm_rollout_components.finalize_rollout.component import finalize_rollout
from llm_rollout_components.images import DEFAULT_IMAGE, DEFAULT_OPTIMIZE_IMAGE
from llm_rollout_components.optimize_model.component import optimize_model
from llm_rollout_components.promote_model.component import promote_model
from llm_rollout_components.register_runtime.component import register_runtime
from llm_rollout_components.rollback_model.component import rollback_model
from llm_rollout_components.validate_deployment.component import validate_deployment

COMPONENT_FUNCTIONS = {
    "optimize-model": optimize_model,
    "register-runtime": register_runtime,
    "deploy-model": deploy_model,
    "validate-deployment": validate_deployment,
    "promote-model": promote_model,
    "rollback-model": rollback_model,
    "finalize-rollout": finalize_rollout,
}
"""Every component, by its KFP name."""


def build_components(image: str = DEFAULT_IMAGE, optimize_image: str = DEFAULT_OPTIMIZE_IMAGE) -> SimpleNamespace:
    """Makes KFP components of the wrapper functions for the given images.

    Args:
        image: The components' image (library + kfp + kubernetes client).
        optimize_image: The optimize step's image (llmcompressor + torch).

    Returns:
        A namespace with one attribute per component (``optimize_model``, ``deploy_model`` ...).
    """
    built = {}
    for name, func in COMPONENT_FUNCTIONS.items():
        base = optimize_image if name == "optimize-model" else image
        built[func.__name__] = dsl.component(func=func, base_image=base, install_kfp_package=False)
    return SimpleNamespace(**built)
