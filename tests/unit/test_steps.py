"""Step helpers that need no real part: the address map and the spec/record parsing errors."""

from __future__ import annotations

import pytest

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve.addresses import address_resolver
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import coerce_spec


def test_address_map_rewrites_matching_hosts_and_keeps_the_path():
    resolve = address_resolver("*.team-a.svc.cluster.local=http://127.0.0.1:8080/, gw.example.com=https://10.0.0.1")
    assert resolve("http://svc-a-predictor.team-a.svc.cluster.local") == "http://127.0.0.1:8080"
    assert resolve("http://gw.example.com/team-a/svc/v1") == "https://10.0.0.1/team-a/svc/v1"
    assert resolve("http://other.team-b.svc.cluster.local") == "http://other.team-b.svc.cluster.local"


def test_no_address_map_means_no_resolver(monkeypatch):
    monkeypatch.delenv("LLM_ROLLOUT_ADDRESS_MAP", raising=False)
    assert address_resolver() is None
    assert address_resolver(" , ") is None


@pytest.mark.parametrize("bad", ["*.svc.cluster.local", "=http://x", "host=127.0.0.1:8080"])
def test_malformed_address_map_names_the_variable_and_the_fix(bad):
    with pytest.raises(SpecError) as err:
        address_resolver(bad)
    assert "LLM_ROLLOUT_ADDRESS_MAP" in str(err.value) and "HOST_PATTERN=URL" in str(err.value)


def test_spec_that_is_not_json_is_a_spec_error():
    with pytest.raises(SpecError) as err:
        coerce_spec("{platform: local")
    assert "spec" in str(err.value) and "JSON" in str(err.value)


def test_empty_record_says_deploy_did_not_finish():
    with pytest.raises(PermanentError, match="deploy-model did not finish"):
        DeploymentRecord.coerce("")
