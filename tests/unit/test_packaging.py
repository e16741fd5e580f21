"""The installed distribution claims no generic top-level import names (issue 27 item 9).

``components`` and ``pipelines`` are folders at the top of the repository, but a wheel that
installed them as top-level packages would collide with any other KFP project's ``components`` or
``pipelines`` in the same environment. They install as ``kfp_llm_rollout.components`` and
``kfp_llm_rollout.pipelines`` (``[tool.setuptools] package-dir`` in pyproject.toml); the library is
``llm_rollout``. Read from the build configuration setuptools uses, and the editable install the
test environment has, so a new package folder or a new top-level name fails here.
"""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_TOP_LEVEL = {"llm_rollout", "kfp_llm_rollout"}


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _folder(package: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools takes ``package`` from: the longest ``package-dir`` prefix, as it resolves it."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[cut:])
    return ROOT / package_dir.get("", ".") / Path(*parts)


def test_only_project_names_at_the_top_level():
    tool = _config()["tool"]["setuptools"]
    assert "packages" in tool and "find" not in tool.get("packages", []), "an explicit list, checked below"
    top = {p.split(".")[0] for p in tool["packages"]} | {m.split(".")[0] for m in tool.get("py-modules", [])}
    assert top == ALLOWED_TOP_LEVEL, f"generic top-level names would be installed: {top - ALLOWED_TOP_LEVEL}"
    scripts = _config()["project"]["scripts"]
    assert all(target.split(".")[0] in ALLOWED_TOP_LEVEL for target in scripts.values()), scripts


def test_every_package_folder_is_installed_and_nothing_else():
    tool = _config()["tool"]["setuptools"]
    package_dir = tool["package-dir"]
    listed = set(tool["packages"])
    for package in listed:
        assert (_folder(package, package_dir) / "__init__.py").is_file(), f"{package}: no such package folder"
    on_disk = set()
    for name, base in (
        ("", ROOT / "src"),
        ("kfp_llm_rollout.components", ROOT / "components"),
        ("kfp_llm_rollout.pipelines", ROOT / "pipelines"),
    ):
        for init in base.rglob("__init__.py"):
            parts = [name] if name else []
            on_disk.add(".".join(parts + list(init.parent.relative_to(base).parts)))
    assert on_disk - listed == set(), "package folders the wheel would leave out (add them to packages)"


def test_the_installed_console_script_and_names():
    # The environment's own install (a stale *.egg-info in the working directory would shadow it).
    site = [p for p in sys.path if p.endswith("site-packages")]
    (dist,) = [d for d in importlib.metadata.distributions(path=site) if d.metadata["Name"] == "kfp-llm-rollout"]
    entry = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert entry["llm-rollout"] == "kfp_llm_rollout.pipelines.cli:main", "reinstall: pip install -e ."
    import kfp_llm_rollout.components
    import kfp_llm_rollout.pipelines.cli

    assert Path(kfp_llm_rollout.components.__file__).parent == ROOT / "components"
    assert Path(kfp_llm_rollout.pipelines.cli.__file__).parent == ROOT / "pipelines"
