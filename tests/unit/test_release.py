"""make images and the release workflow build exactly the images the compiled pipelines reference."""

import re
import subprocess
from pathlib import Path

import yaml

from kfp_llm_rollout.components.images import (
    DEFAULT_IMAGE,
    DEFAULT_OPTIMIZE_IMAGE,
    IMAGE_REPOSITORY,
    OPTIMIZE_IMAGE_REPOSITORY,
)

ROOT = Path(__file__).resolve().parents[2]


def test_make_images_builds_the_default_images_from_their_containerfiles():
    plan = subprocess.run(
        ["make", "-n", "images", "ENGINE=podman"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    builds = re.findall(r"^podman build -f (\S+) -t (\S+) \.$", plan, flags=re.M)
    assert builds == [
        ("containers/Containerfile", DEFAULT_IMAGE),
        ("containers/Containerfile.optimize", DEFAULT_OPTIMIZE_IMAGE),
    ], plan


def test_make_images_says_what_is_missing_without_an_engine():
    done = subprocess.run(["make", "images", "ENGINE="], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "needs podman or docker" in done.stdout + done.stderr


def test_the_release_workflow_pushes_the_same_images_on_a_version_tag():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    assert flow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    job = flow["jobs"]["images"]
    files = {m["name"]: m["file"] for m in job["strategy"]["matrix"]["include"]}
    assert files == {"components": "containers/Containerfile", "optimize": "containers/Containerfile.optimize"}
    push = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action"))
    tag = push["with"]["tags"]
    for name, repo in (("components", IMAGE_REPOSITORY), ("optimize", OPTIMIZE_IMAGE_REPOSITORY)):
        assert tag.replace("${{ matrix.name }}", name).replace(":${{ env.VERSION }}", "") == repo
    assert push["with"]["push"] is True
