"""Every name and label KServe derives from name and namespace is checked when the spec is read (issue 25 item 6).

``llm_rollout/spec/derived.py`` ports the rules: ``constants.go`` ``PredictorServiceName`` and
``GetRawServiceLabel`` (``app: isvc.<component>``), ``domain.go`` ``GenerateDomainName`` (each host
label, the namespace included, <= 63 by ``IsFullyQualifiedDomainName``).
"""

from __future__ import annotations

import re

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.names import ISVC_MEMBER_MAX_LEN, predictor_service_name
from llm_rollout.spec import parse_spec

NAME40 = "a" * 20 + "-" + "b" * 19
NS25 = "team-" + "c" * 20


def _kserve(name, namespace, **extra):
    return parse_spec({"platform": "kserve", "name": name, "namespace": namespace, **extra})


def test_a_40_character_name_in_a_25_character_namespace_is_refused_up_front():
    assert len(NAME40) == 40 and len(NS25) == 25
    with pytest.raises(SpecError) as err:
        _kserve(NAME40, NS25)
    e = err.value
    assert e.field == "name"
    assert "limit of 63" in str(e) and f"{NAME40}-{NS25}" in str(e)  # the InferenceService host label
    # The fix names a length that works in this namespace: with it every derived name fits.
    longest = int(re.search(r"at most (\d+) characters", str(e)).group(1))
    _kserve(NAME40[:longest], NS25)
    with pytest.raises(SpecError):
        _kserve(NAME40[: longest + 1], NS25)


def test_the_first_derived_name_over_the_limit_is_named_with_its_rule():
    with pytest.raises(SpecError) as err:
        _kserve("a" * 30, "n" * 13)
    text = str(err.value)
    assert f"'{'a' * 30}-<canary>-predictor-{'n' * 13}'" in text and "GenerateDomainName" in text
    assert "or deploy into a namespace of at most 9 characters" in text


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_what_is_accepted_fits_with_the_longest_canary_name(mode):
    member = "m" * ISVC_MEMBER_MAX_LEN
    for n in range(4, 41, 3):
        for ns_len in (7, 20, 30):
            name, ns = "s" * n, "n" * ns_len
            try:
                spec = _kserve(name, ns, deployment_mode=mode)
            except SpecError:
                continue
            svc = spec.service_name
            assert len(f"{svc}-{ns}") <= 63
            if mode == "Standard":
                canary = predictor_service_name(svc, member)
                assert len(canary) <= 63 and len("isvc." + canary) <= 63 and len(f"{canary}-{ns}") <= 63
            else:
                assert len(predictor_service_name(svc) + "-00001") <= 63


def test_local_and_llmd_are_not_judged_by_inference_service_names():
    parse_spec({"platform": "local", "name": NAME40, "namespace": NS25})
