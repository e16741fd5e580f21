"""Fuzzing the spec parser: whatever the document, the only failure is a SpecError."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_rollout.errors import SpecError
from llm_rollout.spec import RolloutSpec, parse_spec

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

FIELDS = {
    "name": st.one_of(st.text(max_size=80), values),
    "namespace": st.one_of(st.text(max_size=70), values),
    "platform": st.sampled_from(["kserve", "local", "other", 3, None]),
    "deployment_mode": st.sampled_from(["Standard", "Knative", "RawDeployment", "Serverless", "ModelMesh", 1]),
    "replicas": st.one_of(st.integers(-3, 20), values),
    "scaling": st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {},
            optional={
                "min_replicas": st.integers(-2, 12),
                "max_replicas": st.integers(-2, 12),
                "metric": st.sampled_from(["request-rate", "cpu", "x"]),
            },
        ),
    ),
    "canary": st.fixed_dictionaries(
        {}, optional={"traffic_percent": st.integers(-50, 200), "steps": st.lists(st.integers(-10, 150), max_size=4)}
    ),
    "model": st.fixed_dictionaries(
        {},
        optional={
            "uri": st.text(max_size=40) | st.sampled_from(["s3://b/m", "hf://o/m", "ftp://x", "/tmp/m", "minio://b/k"])
        },
    ),
    "runtime": st.fixed_dictionaries(
        {},
        optional={
            "kv_cache_dtype": st.sampled_from(["fp8", "auto", "fp8_e5m2", "int4", ""]),
            "accelerator": st.sampled_from(["nvidia-a10g", "nvidia-h100", "tpu", None]),
            "extra_args": st.one_of(st.text(max_size=20), st.lists(st.text(max_size=12), max_size=4)),
            "gpu_memory_utilization": st.floats(allow_nan=True),
            "max_model_len": st.integers(-5, 10**6),
        },
    ),
    "llmd": st.fixed_dictionaries(
        {},
        optional={
            "enabled": st.booleans(),
            "prefill": st.one_of(
                st.none(), st.fixed_dictionaries({}, optional={"tensor": st.integers(0, 9), "gpus": st.integers(-1, 3)})
            ),
            "decode": st.fixed_dictionaries(
                {}, optional={"tensor": st.integers(0, 9), "nodes": st.integers(0, 3), "gpus": st.integers(-1, 3)}
            ),
            "scheduler": st.fixed_dictionaries(
                {},
                optional={"enabled": st.booleans(), "profile": st.sampled_from(["pd", "load", "prefix-cache", "zz"])},
            ),
        },
    ),
}
documents = st.one_of(
    st.fixed_dictionaries({}, optional=FIELDS), st.dictionaries(st.text(max_size=10), values, max_size=5), values
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_spec_parser_never_crashes(doc):
    try:
        spec = parse_spec(doc)
    except SpecError as err:
        assert err.field and err.problem and err.fix
        return
    assert isinstance(spec, RolloutSpec)
    # A spec that parses renders: names are safe and derived values exist.
    assert spec.service_name and spec.runtime_name and spec.served_model_name
