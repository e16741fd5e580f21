"""The README's "When to add llm-d" example is a valid spec that turns on P/D and its proof."""

import re
from pathlib import Path

import yaml

from llm_rollout.kserve import builders
from llm_rollout.spec import parse_spec

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_llmd_example_is_a_valid_pd_spec():
    text = README.read_text()
    section = text.split("## When to add llm-d", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    spec = parse_spec(yaml.safe_load(block))
    assert spec.llmd.enabled and spec.llmd.prefill is not None and spec.llmd.scheduler.profile == "pd"
    assert set(spec.validation.metrics_urls) == {"prefill", "decode"}
    obj = builders.llm_inference_service(spec, builders.default_member(spec), weight=100)
    assert obj["spec"]["prefill"]["parallelism"] == {"tensor": 1}
    assert obj["spec"]["template"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
