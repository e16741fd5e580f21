"""manifests/ is the render of the default spec; it must not drift from the builders."""

from pathlib import Path

import yaml

from llm_rollout.render import render_manifests
from llm_rollout.spec import parse_spec

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def test_manifests_are_in_sync_with_the_builders():
    rendered = render_manifests(parse_spec({}))
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert on_disk == set(rendered), "run `make render` and commit manifests/"
    for name, text in rendered.items():
        assert (MANIFESTS / name).read_text() == text, f"manifests/{name} drifted: run `make render`"


def test_manifests_parse_and_have_no_yaml_aliases():
    for path in MANIFESTS.glob("*.yaml"):
        text = path.read_text()
        assert "&id" not in text and "*id" not in text
        assert all(doc["apiVersion"] and doc["kind"] for doc in yaml.safe_load_all(text))


def test_render_cli_writes_the_same_files(tmp_path):
    from kfp_llm_rollout.pipelines.cli import main

    assert main(["render", "--out", str(tmp_path)]) == 0
    for path in MANIFESTS.glob("*.yaml"):
        assert (tmp_path / path.name).read_text() == path.read_text()
