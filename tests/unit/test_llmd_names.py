"""llm-d names and presets (issue 28 items 1 and 2).

Member names come from the whole service name, so two services sharing a long prefix never write
each other's members, and every child KServe's llm-d controller derives from a member
(``kmeta.ChildName``: ``-kserve``, ``-kserve-prefill``, ``-kserve-workload-svc``, ...) keeps its plain
``<member><suffix>`` name. Each service gets its own preset, named by its content, so a P/D
service's ``prefill`` never reaches a plain one (``config_merge.go`` ``combineBaseRefsConfig``
treats ``Prefill != nil`` as P/D).
"""

from __future__ import annotations

import hashlib

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.kserve import builders as b
from llm_rollout.names import LLMD_CHILD_SUFFIXES, LLMD_MEMBER_MAX_LEN, child_name, is_dns_label, member_name
from llm_rollout.spec import parse_spec

ALPHA = "lean-rag-inference-team-alpha1"
ALPHA_EU = "lean-rag-inference-team-alpha1-eu"


def _spec(name: str, **llmd):
    return parse_spec(
        {"platform": "kserve", "name": name, "scaling": None, "replicas": 1, "llmd": {"enabled": True, **llmd}}
    )


def test_two_services_with_a_common_30_character_prefix_get_different_members():
    assert ALPHA_EU.startswith(ALPHA) and len(ALPHA) == 30
    for revision in ("ra", "r1a2b3c4d", "s3://models/llama-3-8b-w8a8"):
        a = b.default_member(_spec(ALPHA), "hf://org/model", revision).name
        eu = b.default_member(_spec(ALPHA_EU), "hf://org/model", revision).name
        assert a != eu, revision
        assert a == member_name(ALPHA, revision) and eu == member_name(ALPHA_EU, revision)
        # The same pair always gives the same name (a rerun finds its member again).
        assert member_name(ALPHA, revision) == a


def test_short_service_names_keep_their_readable_member_names():
    assert member_name("chat", "ra") == "chat-" + hashlib.sha256(b"ra").hexdigest()[:8]


@pytest.mark.parametrize("service", ["chat", ALPHA, ALPHA_EU, "a" * 40, "x-" * 19 + "y"])
def test_every_child_kserve_derives_keeps_its_plain_name(service):
    name = member_name(service, "r1a2b3c4d")
    assert len(name) <= LLMD_MEMBER_MAX_LEN == 38 and is_dns_label(name) and name[0].isalpha()
    for suffix in LLMD_CHILD_SUFFIXES:
        assert child_name(name, suffix) == name + suffix and len(name + suffix) <= 63
    b.check_member_name(name)


def test_child_name_is_kmeta_child_name():
    """knative.dev/pkg kmeta.ChildName: plain up to 63, else head + md5(parent) + suffix."""
    assert child_name("chat-37e7702e", "-kserve-workload-svc") == "chat-37e7702e-kserve-workload-svc"
    parent = "p" * 50
    got = child_name(parent, "-kserve-workload-svc")
    assert got == "p" * 11 + hashlib.md5(parent.encode()).hexdigest() + "-kserve-workload-svc"
    assert len(got) == 63
    # A suffix of 31 or more: md5 over parent + suffix, padded with the suffix's start.
    long_suffix = "-" + "s" * 40
    got = child_name("q" * 40, long_suffix)
    assert got == "q" * 31 + hashlib.md5(("q" * 40 + long_suffix).encode()).hexdigest()
    # Two long parents sharing 50 characters stay apart.
    assert child_name("r" * 50 + "-a", "-kserve") != child_name("r" * 50 + "-b", "-kserve")


def test_a_member_name_kserve_cannot_run_is_refused_with_the_derived_names_and_fix():
    spec = _spec("chat")
    too_long = "m" * 64  # app.kubernetes.io/name on its pods is a label value: at most 63
    member = b.Member(name=too_long, model_uri="hf://org/model", revision="ra")
    with pytest.raises(SpecError) as info:
        b.llm_inference_service(spec, member, weight=100)
    text = str(info.value)
    assert "app.kubernetes.io/name" in text and "kmeta.ChildName" in text
    assert child_name(too_long, "-kserve-workload-svc") in text  # the hashed name KServe would derive
    assert "at most 63 characters" in text and "redeploy" in text
    with pytest.raises(SpecError, match="a letter first"):
        b.check_member_name("9-starts-with-a-digit")
    # A 40-character member of an older version still runs (its longer children hashed by ChildName).
    b.check_member_name("lean-rag-inference-team-alpha1-37e7702e")


def test_a_pd_and_a_plain_service_get_their_own_presets():
    pd = _spec("gen", prefill={"replicas": 1})
    plain = _spec("chat")
    pd_preset, plain_preset = b.llm_inference_service_config(pd), b.llm_inference_service_config(plain)
    assert "prefill" in pd_preset["spec"] and "prefill" not in plain_preset["spec"]
    assert pd_preset["metadata"]["name"] != plain_preset["metadata"]["name"]
    for spec, preset in ((pd, pd_preset), (plain, plain_preset)):
        member = b.llm_inference_service(spec, b.default_member(spec, "hf://org/m", "ra"), weight=100)
        assert member["spec"]["baseRefs"] == [{"name": preset["metadata"]["name"]}]
        assert preset["metadata"]["name"].startswith(f"{spec.service_name}-preset-")
    # The same content in another service is still another preset (never shared across services).
    assert b.preset_name(_spec("chat-eu")) != b.preset_name(plain)


def test_a_new_preset_content_is_a_new_preset_so_the_stable_members_is_never_rewritten():
    before = _spec("chat")
    after = _spec("chat", image="registry.example.com/llm-d-cuda:v2")
    assert b.preset_name(before) != b.preset_name(after)
    assert b.preset_name(before) == b.preset_name(_spec("chat"))  # deterministic: reruns change nothing


def test_an_explicit_preset_name_is_used_as_given():
    spec = _spec("chat", preset_name="team-preset")
    assert b.llm_inference_service_config(spec)["metadata"]["name"] == "team-preset"


def test_preset_owners_are_the_members_that_use_it():
    spec = _spec("chat")
    live = {"metadata": {"name": "chat-37e7702e", "uid": "u-1"}}
    obj = b.llm_inference_service_config(spec, owners=[b.owner_reference(live)])
    (owner,) = obj["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": b.LLMISVC_API, "kind": "LLMInferenceService", "name": "chat-37e7702e", "uid": "u-1"}
