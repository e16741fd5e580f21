"""Generates each component's README.md and compiled ``component.yaml``, and ``docs/spec.md`` (``make docs``).

The docstrings are the one source (Google style: summary, body, ``Args:``, ``Returns:``); types
and defaults come from the compiled component spec. ``component.yaml`` is the component compiled
by KFP with the default image, for other teams' pipelines
(``kfp.components.load_component_from_file`` / ``load_component_from_url``). Tests fail when
either drifts: regenerate with ``make docs``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from kfp import dsl

from kfp_llm_rollout.components import COMPONENT_FUNCTIONS, build_components
from kfp_llm_rollout.components.images import DEFAULT_IMAGE, IMAGE_REPOSITORY

COMPONENTS_DIR = Path(__file__).resolve().parent.parent / "components"


def _sections(doc: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Splits a Google-style docstring into (description, args, returns)."""
    doc = inspect.cleandoc(doc)
    head, args, returns = [], {}, {}
    current, target = None, head
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Returns:"):
            target = args if line.strip() == "Args:" else returns
            current = None
            continue
        if target is head:
            head.append(line)
            continue
        m = re.match(r"^    (\w+)(?: \(.*\))?: (.*)$", line)
        if m:
            current = m.group(1)
            target[current] = m.group(2).strip()
        elif line.startswith("        ") and current:
            target[current] += " " + line.strip()
        elif line.strip() and target is returns and current is None:
            target["return"] = (target.get("return", "") + " " + line.strip()).strip()
    return "\n".join(head).strip(), args, returns


def _type_name(spec) -> str:
    if spec is None:
        return ""
    t = getattr(spec, "type", "")
    return str(t).split("@")[0].replace("system.", "")


def component_readme(kfp_name: str) -> str:
    """The README text of one component."""
    func = COMPONENT_FUNCTIONS[kfp_name]
    comp = dsl.component(func=func, base_image=DEFAULT_IMAGE or IMAGE_REPOSITORY, install_kfp_package=False)
    interface = comp.component_spec
    description, args, returns = _sections(func.__doc__ or "")
    summary, _, body = description.partition("\n")
    lines = [f"# {kfp_name}", "", summary.strip(), ""]
    if body.strip():
        lines += [body.strip(), ""]
    lines += ["## Inputs", "", "| name | type | default | description |", "| --- | --- | --- | --- |"]
    sig = inspect.signature(func)
    for name, spec in (interface.inputs or {}).items():
        param = sig.parameters.get(name)
        default = "" if param is None or param.default is inspect.Parameter.empty else f"`{param.default!r}`"
        lines.append(f"| `{name}` | {_type_name(spec)} | {default} | {args.get(name, '')} |")
    lines += ["", "## Outputs", "", "| name | type | description |", "| --- | --- | --- |"]
    for name, spec in (interface.outputs or {}).items():
        text = args.get(name) or returns.get(name) or returns.get("return", "")
        lines.append(f"| `{name}` | {_type_name(spec)} | {text} |")
    lines += [
        "",
        "## Where it runs",
        "",
        "Thin wrapper: it converts parameters and calls the library (`src/llm_rollout/`).",
        "Image: "
        + (
            "the optimize image (`containers/Containerfile.optimize`)."
            if kfp_name == "optimize-model"
            else "the components' image (`containers/Containerfile`)."
        ),
        "",
        "_Generated from the component's docstring by `make docs`; do not edit by hand._",
        "",
    ]
    return "\n".join(lines)


def write_readmes(components_dir: Path = COMPONENTS_DIR) -> list[Path]:
    """Writes every component's README.md and returns the paths."""
    paths = []
    for kfp_name, func in COMPONENT_FUNCTIONS.items():
        folder = components_dir / Path(inspect.getfile(func)).parent.name
        path = folder / "README.md"
        path.write_text(component_readme(kfp_name))
        paths.append(path)
    return paths


def component_spec_texts() -> dict[str, str]:
    """Every component compiled with the default images: ``{component folder: component.yaml text}``.

    Raises:
        SpecError: The package version (the default image tag) is unknown.
    """
    import tempfile

    from kfp import compiler

    built = build_components()
    texts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for func in COMPONENT_FUNCTIONS.values():
            path = Path(tmp) / f"{func.__name__}.yaml"
            compiler.Compiler().compile(getattr(built, func.__name__), str(path))
            texts[Path(inspect.getfile(func)).parent.name] = path.read_text()
    return texts


def write_component_specs(components_dir: Path = COMPONENTS_DIR) -> list[Path]:
    """Writes every component's ``component.yaml`` and returns the paths."""
    paths = []
    for folder, text in component_spec_texts().items():
        path = components_dir / folder / "component.yaml"
        path.write_text(text)
        paths.append(path)
    return paths


SPEC_REFERENCE = COMPONENTS_DIR.parent / "docs" / "spec.md"
"""The spec reference, generated from the typed spec (:mod:`llm_rollout.spec.reference`)."""


def write_spec_reference(path: Path = SPEC_REFERENCE) -> Path:
    """Writes ``docs/spec.md`` from the typed spec and returns its path."""
    from llm_rollout.spec.reference import spec_markdown

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec_markdown())
    return path


if __name__ == "__main__":  # pragma: no cover
    for p in [*write_readmes(), *write_component_specs(), write_spec_reference()]:
        print(p)
