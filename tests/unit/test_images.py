"""Images: pinned by digest when asked, and never a made-up ``:0.0.0`` tag when the version is unknown."""

import importlib
import importlib.metadata

import pytest
import yaml

from kfp_llm_rollout.components import build_components, images
from kfp_llm_rollout.pipelines.cli import main
from llm_rollout.errors import SpecError
from tests.fast_yaml import YAML_LOADER

DIGEST = "sha256:" + "ab" * 32


def _images(path):
    ir = next(yaml.load_all(path.read_text(), Loader=YAML_LOADER))
    return {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values() if "container" in e}


def test_compile_pins_images_by_digest(tmp_path):
    image, optimize = f"registry.example.com:5000/team/components@{DIGEST}", f"reg.example/optimize:1.2@{DIGEST}"
    assert main(["compile", "--out", str(tmp_path), "--image", image, "--optimize-image", optimize]) == 0
    assert _images(tmp_path / "llm-optimize-deploy.yaml") == {image, optimize}
    assert _images(tmp_path / "llm-deploy.yaml") == {image}


@pytest.mark.parametrize(
    ("flag", "ref", "words"),
    [
        ("--image", "reg.example/c@sha256:1234", "not sha256:<64 lowercase hex>"),
        ("--image", "reg.example/c@md5:" + "a" * 32, "not sha256:<64 lowercase hex>"),
        ("--optimize-image", "Reg Example/o:1", "not an image reference"),
        ("--image", "reg.example/c:", "not an image reference"),
    ],
)
def test_malformed_references_name_the_flag_and_write_nothing(tmp_path, capsys, flag, ref, words):
    out = tmp_path / "out"
    assert main(["compile", "--out", str(out), flag, ref]) == 2
    err = capsys.readouterr().err
    assert (flag in err and words in err and "REPO@sha256:DIGEST" in err) or "registry" in err
    assert not out.exists()


@pytest.fixture
def version_unknown(monkeypatch):
    """The package as a source tree that is not installed: no version, so no default tag."""

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    importlib.reload(images)
    yield
    monkeypatch.undo()
    importlib.reload(images)
    assert images.DEFAULT_IMAGE and images.PACKAGE_VERSION


def test_no_version_means_no_default_image_not_0_0_0(version_unknown, tmp_path, capsys):
    assert images.PACKAGE_VERSION is None and images.DEFAULT_IMAGE is None and images.DEFAULT_OPTIMIZE_IMAGE is None
    out = tmp_path / "out"
    assert main(["compile", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--image" in err and "version is unknown" in err and "REPO@sha256:DIGEST" in err
    assert "0.0.0" not in err and not out.exists()
    with pytest.raises(SpecError, match="--optimize-image"):
        build_components(image="reg.example/c:1")
    argv = ["compile", "--out", str(out), "--image", "reg.example/c:1", "--optimize-image", f"reg.example/o@{DIGEST}"]
    assert main(argv) == 0
    assert _images(out / "llm-optimize-deploy.yaml") == {"reg.example/c:1", f"reg.example/o@{DIGEST}"}


def test_the_installed_version_is_the_default_tag():
    version = importlib.metadata.version("kfp-llm-rollout")
    assert f"ghcr.io/kfp-llm-rollout/components:{version}" == images.DEFAULT_IMAGE
    assert build_components().deploy_model.component_spec.implementation.container.image == images.DEFAULT_IMAGE
