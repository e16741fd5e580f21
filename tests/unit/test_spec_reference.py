"""docs/spec.md is generated from the typed spec; every field is documented; unknown fields get a did-you-mean."""

import pytest

from kfp_llm_rollout.pipelines.cli import main
from kfp_llm_rollout.pipelines.docs import SPEC_REFERENCE
from llm_rollout.errors import SpecError
from llm_rollout.spec import parse_spec
from llm_rollout.spec.reference import describe, fields, index, spec_markdown


def test_spec_reference_is_in_sync_with_the_typed_spec():
    assert SPEC_REFERENCE.read_text() == spec_markdown(), "docs/spec.md drifted: run `make docs`"


def test_every_field_of_every_section_has_a_doc():
    missing = [f.path for f in fields() if not f.doc.strip()]
    assert not missing, f"fields without an Attributes entry in their model's docstring: {missing}"


def test_every_field_is_in_the_reference_with_type_and_default():
    text = spec_markdown()
    for f in fields():
        # A section seen before (llmd.prefill is llmd.decode's WorkloadSpec) is referenced, not repeated.
        if f.path.startswith(("llmd.prefill.", "llmd.decode.scaling.")):
            continue
        assert f"| `{f.path}` |" in text, f.path


def test_reference_covers_the_suite_and_workload_formats():
    text = spec_markdown()
    for key in ("exact", "contains", "regex", "json", "must_pass", "messages", "timestamp", "max_tokens"):
        assert f"`{key}`" in text, key
    assert "parsed as YAML" in text  # --set values


def test_spec_command_prints_one_field(capsys):
    assert main(["spec", "validation.comparison.settle_s"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("validation.comparison.settle_s\n")
    assert "type:    float" in out and "default: 0.0" in out and "<= 60" in out
    assert "busy-poll" in out


def test_spec_command_names_the_checks_of_a_field(capsys):
    assert main(["spec", "canary.steps"]) == 0
    assert "checks.check_spec" in capsys.readouterr().out


def test_spec_command_without_a_field_lists_every_field(capsys):
    assert main(["spec"]) == 0
    out = capsys.readouterr().out
    assert out == index()
    assert len(out.splitlines()) == len(fields())


def test_spec_command_unknown_field_exits_2_with_the_closest_name(capsys):
    assert main(["spec", "validation.comparision.settle_s"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'validation.comparison.settle_s'" in err


def test_describe_a_section_lists_its_fields():
    out = describe("validation.slo")
    assert "validation.slo.checks" in out and "validation.slo.capacity_repeats" in out


@pytest.mark.parametrize(
    ("doc", "field", "suggestion"),
    [
        ({"validaton": {}}, "validaton", "validation"),
        ({"validation": {"comparison": {"settle": 1}}}, "validation.comparison.settle", "settle_s"),
        ({"llmd": {"prefill": {"tensr": 2}}}, "llmd.prefill.tensr", "tensor"),
        ({"runtime": {"secret_env": {"K": {"name": "s", "key": "k", "kye": "k"}}}}, "runtime.secret_env.K.kye", "key"),
    ],
)
def test_unknown_field_gets_the_closest_valid_name(doc, field, suggestion):
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert err.value.field == field
    assert f"did you mean '{suggestion}'" in err.value.fix


def test_unknown_field_far_from_any_name_gets_no_guess():
    with pytest.raises(SpecError) as err:
        parse_spec({"zzzzzz": 1})
    assert "did you mean" not in err.value.fix and "spelling" in err.value.fix
