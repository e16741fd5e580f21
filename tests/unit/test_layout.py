"""The README's layout section matches the tree, and the library keeps its shape (issue 12).

* every path the section names exists, and every package and top-level module of the library is
  named there (a new package without a line in the README fails here);
* no library module is over 600 lines;
* an import's name leads to its folder (``llm_rollout`` -> ``src/llm_rollout``,
  ``kfp_llm_rollout.components`` -> ``components/``, ``kfp_llm_rollout.pipelines`` -> ``pipelines/``:
  installed under the project's name, kept at the top of the repository);
* nothing below the steps branches on the platform: ``platform ==`` appears only where the platform
  is chosen.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "src" / "llm_rollout"
MAX_LINES = 600


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## How the code is laid out", 1)[1]
    return section.split("```", 2)[1]


def test_every_path_in_the_layout_section_exists():
    named = []  # (name, at the top of the repository: not indented; else inside the library)
    for line in _layout_block().splitlines():
        first = line.strip().split(" ", 1)[0]
        if first.endswith("/") or first.endswith(".py"):
            named.append((first, not line[:1].isspace()))
    assert ("src/llm_rollout/", True) in named and ("kserve/", False) in named
    for name, top in named:
        path = (ROOT if top else LIB) / name.replace("<name>/", "")
        assert path.exists(), f"README layout names {name}, which is not at {path}"


def test_every_library_package_is_in_the_layout_section():
    block = _layout_block()
    packages = sorted(p.name for p in LIB.iterdir() if (p / "__init__.py").is_file())
    assert packages, "the library has packages"
    for name in packages:
        assert re.search(rf"^\s+{name}/", block, flags=re.M), f"src/llm_rollout/{name}/ is missing from the README"


def test_no_library_module_is_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n for p in LIB.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, long


def test_import_names_lead_to_their_folders():
    for name, folder in (
        ("llm_rollout", LIB),
        ("kfp_llm_rollout.components", ROOT / "components"),
        ("kfp_llm_rollout.pipelines", ROOT / "pipelines"),
    ):
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().parent == folder.resolve(), name


ALLOWED_PLATFORM_TESTS = {
    LIB / "platform.py": "platform_for: where the platform is chosen",
    LIB / "spec" / "checks.py": "the spec's own rules for which fields apply on which platform",
    LIB / "kserve" / "deploy.py": "register_runtime refuses a spec for another platform before any call",
}


def test_nothing_below_the_steps_branches_on_the_platform():
    found = []
    for path in LIB.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.platform\s*[!=]=", line) and path not in ALLOWED_PLATFORM_TESTS:
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)
