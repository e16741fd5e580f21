"""Lint of the Containerfiles (no container engine here): the rules hadolint would hold us to."""

import re
from pathlib import Path

import pytest

CONTAINERS = Path(__file__).resolve().parents[2] / "containers"
FILES = sorted(CONTAINERS.glob("Containerfile*"))


def _instructions(path):
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_both_images_exist():
    assert {p.name for p in FILES} == {"Containerfile", "Containerfile.optimize"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_containerfile_rules(path):
    lines = _instructions(path)
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    assert froms, "no FROM"
    for line in froms:
        image = line.split()[1]
        assert ":" in image.split("/")[-1] and not image.endswith(":latest"), f"pin the base image tag: {line}"
    users = [line for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    for line in lines:
        assert not re.match(r"ADD\s+https?://", line, re.I), "use RUN with a checksum instead of ADD <url>"
        if "pip install" in line:
            assert "--no-cache-dir" in line, f"pip install without --no-cache-dir: {line}"
        if "apt-get install" in line:
            assert "--no-install-recommends" in line and "-y" in line
        assert not line.upper().startswith("MAINTAINER"), "MAINTAINER is deprecated"
    assert any(line.upper().startswith("WORKDIR ") for line in lines)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_copied_paths_exist(path):
    root = CONTAINERS.parent
    for line in _instructions(path):
        if line.upper().startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (root / src).exists(), f"{path.name}: COPY {src} does not exist"
