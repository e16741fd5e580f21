"""Component READMEs are generated from the docstrings; every public parameter is documented."""

import inspect

import pytest

from kfp_llm_rollout.components import COMPONENT_FUNCTIONS
from kfp_llm_rollout.pipelines.docs import COMPONENTS_DIR, component_readme


@pytest.mark.parametrize("kfp_name", sorted(COMPONENT_FUNCTIONS))
def test_component_readme_in_sync(kfp_name):
    func = COMPONENT_FUNCTIONS[kfp_name]
    readme = COMPONENTS_DIR / inspect.getfile(func).split("/")[-2] / "README.md"
    assert readme.read_text() == component_readme(kfp_name), f"{readme} drifted: run `make docs`"


@pytest.mark.parametrize("kfp_name", sorted(COMPONENT_FUNCTIONS))
def test_every_component_parameter_is_documented(kfp_name):
    func = COMPONENT_FUNCTIONS[kfp_name]
    doc = func.__doc__ or ""
    for name in inspect.signature(func).parameters:
        assert f"    {name}:" in doc, f"{kfp_name}: parameter {name!r} has no docstring entry"


def test_readme_links_every_component():
    text = (COMPONENTS_DIR.parent / "README.md").read_text()
    for kfp_name, func in COMPONENT_FUNCTIONS.items():
        folder = inspect.getfile(func).split("/")[-2]
        assert f"(components/{folder}/README.md)" in text, kfp_name
