"""runtime.max_model_len against the model's own context length (the local platform, before a server starts)."""

from __future__ import annotations

import json

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.local.server import fit_max_model_len
from llm_rollout.model_files import context_limit
from llm_rollout.spec import coerce_spec, parse_spec, spec_to_json


def model(tmp_path, tokenizer_max=None, **config):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    if tokenizer_max is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": tokenizer_max}))
    return tmp_path


@pytest.mark.parametrize(
    ("config", "tokenizer_max", "expected"),
    [
        ({"max_position_embeddings": 256}, None, (256, True)),
        ({"max_position_embeddings": 8192, "n_positions": 2048}, None, (2048, True)),  # the smallest key
        ({"max_position_embeddings": 8192}, 1024, (1024, True)),  # the tokenizer's limit too
        (
            {"max_position_embeddings": 8192, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
            None,
            (8192, False),
        ),
        (
            {"max_position_embeddings": 256, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}},
            None,
            (256, True),
        ),
        ({"hidden_size": 128}, None, (None, False)),
    ],
)
def test_context_limit_reads_the_keys_vllm_reads(tmp_path, config, tokenizer_max, expected):
    assert context_limit(model(tmp_path, tokenizer_max, **config)) == expected


def test_left_unset_it_becomes_the_models_limit(tmp_path):
    spec = parse_spec({})
    fitted = fit_max_model_len(spec, model(tmp_path, max_position_embeddings=256))
    assert fitted.runtime.max_model_len == 256


def test_left_unset_a_long_context_model_keeps_the_serving_designs_4096(tmp_path):
    spec = parse_spec({})
    assert fit_max_model_len(spec, model(tmp_path, max_position_embeddings=131072)).runtime.max_model_len == 4096


def test_unset_survives_the_kfp_string_round_trip(tmp_path):
    spec = coerce_spec(spec_to_json(parse_spec({"name": "x"})))
    assert fit_max_model_len(spec, model(tmp_path, max_position_embeddings=256)).runtime.max_model_len == 256


def test_set_above_the_models_limit_is_refused_naming_the_field(tmp_path):
    spec = coerce_spec(spec_to_json(parse_spec({"runtime": {"max_model_len": 4096}})))
    with pytest.raises(SpecError) as caught:
        fit_max_model_len(spec, model(tmp_path, max_position_embeddings=256))
    assert caught.value.field == "runtime.max_model_len"
    assert "4096 is longer than the model's context length 256" in str(caught.value)
    assert "leave it unset" in caught.value.fix


def test_set_within_the_limit_or_on_a_rope_scaled_model_is_kept(tmp_path):
    spec = parse_spec({"runtime": {"max_model_len": 128}})
    assert fit_max_model_len(spec, model(tmp_path, max_position_embeddings=256)).runtime.max_model_len == 128
    long = parse_spec({"runtime": {"max_model_len": 16384}})
    scaled = model(tmp_path, max_position_embeddings=8192, rope_scaling={"rope_type": "linear", "factor": 4.0})
    assert fit_max_model_len(long, scaled).runtime.max_model_len == 16384
