"""The bad-input catalogue through the pipeline's kserve steps: refused while parsing, before any request.

``register_runtime_step`` and ``deploy_step`` (from :mod:`llm_rollout.steps`) are driven exactly as
the KFP components drive them: the spec as JSON, the cluster from ``KUBECONFIG``. Here
``KUBECONFIG`` names a cluster at a closed local port, so a step that sent any request before
refusing its input would fail with a connection error, not a :class:`SpecError`: every row below
is refused before anything could be written. The bad inputs that only a server can refuse (KServe's
CRDs missing or too old) are in ``tests/cluster/test_bad_inputs.py``.

Rows: every row of the unit tier's ``BAD_INPUTS`` (spec fields, URIs, SLO expressions, names,
vLLM flag combinations), plus the inputs that only the steps see (the model artifact URI, the spec
text itself).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.config import kube_config

from llm_rollout.errors import DeadlineExceeded, SpecError
from llm_rollout.kube import KubeClient
from llm_rollout.spec import deep_merge
from llm_rollout.steps import deploy_step, register_runtime_step
from tests.unit.test_hostile_inputs import HOSTILE, PD
from tests.unit.test_spec import BAD_INPUTS

GOOD_URI = "s3://models/chat"
P_D_1E8 = {**PD, "validation": {"expect_disaggregation": True, "load": {"num_prompts": 1e8}}}
RUN_ID = "bad-input-run"


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        doc: Overrides merged into a valid kserve spec (``None``: ``raw`` is the spec text).
        field: The field the error must name.
        problem: Words of the problem.
        fix: Words of the fix.
        model_uri: The model artifact URI deploy-model gets.
        raw: The spec text itself, when the text is what is wrong.
        steps: Which steps get the input.
    """

    doc: dict[str, Any] | None
    field: str
    problem: str
    fix: str
    model_uri: str = GOOD_URI
    raw: str | None = None
    steps: tuple[str, ...] = ("register", "deploy")


SPEC_CASES = [Case(doc, field, problem, fix) for doc, field, problem, fix in BAD_INPUTS]

# What the unit table cannot hold: inputs only the steps see, and more known mistakes.
STEP_CASES = [
    # The model artifact URI (a KFP artifact's .uri) handed to deploy-model.
    Case({}, "model.uri", "cannot load ftp://", "s3://", model_uri="ftp://files.example.com/m", steps=("deploy",)),
    Case({}, "model.uri", "no model URI was given", "pvc://", model_uri="", steps=("deploy",)),
    Case({}, "model.uri", "a local path", "PVC", model_uri="/data/models/m", steps=("deploy",)),
    Case({}, "model.uri", "names no bucket", "s3://bucket/path", model_uri="s3:///key-only", steps=("deploy",)),
    Case({}, "model.uri", "names no claim", "pvc://claim-name/path", model_uri="pvc://", steps=("deploy",)),
    Case({}, "model.uri", "but no repository", "hf://org/repo", model_uri="hf://meta-llama", steps=("deploy",)),
    Case(
        {"llmd": {"enabled": True}, "scaling": None, "replicas": 1},
        "model.uri",
        "llm-d's storage initializer cannot load gs://",
        "hf://",
        model_uri="gs://bucket/m",
        steps=("deploy",),
    ),
    # The endpoint's API key: a variable the step cannot see is found before anything is applied.
    Case(
        {"validation": {"api_key_env": "LLM_ROLLOUT_TEST_UNSET_KEY"}},
        "validation.api_key_env",
        "LLM_ROLLOUT_TEST_UNSET_KEY is not set or empty",
        "export LLM_ROLLOUT_TEST_UNSET_KEY",
        steps=("deploy",),
    ),
    # The spec text itself (KFP passes it as a JSON string parameter).
    Case(None, "spec", "is not JSON", "pass the spec as JSON", raw="{name: chat"),
    Case(None, "spec", "expected a mapping, got list", "YAML mapping", raw='["chat"]'),
    # Names and flag combinations beyond the unit table.
    Case({"runtime": {"runtime_name": "---"}}, "runtime.runtime_name", "no letters or digits", "lowercase"),
    Case(
        {"runtime": {"extra_args": ["--max-model-len", "512"]}},
        "runtime.extra_args[0]",
        "--max-model-len is set by the spec field 'runtime.max_model_len'",
        "set 'runtime.max_model_len' instead",
    ),
    Case(
        {"runtime": {"extra_args": ["--served-model-name=x"]}},
        "runtime.extra_args[0]",
        "set by the spec field 'model.name'",
        "model.name",
    ),
    Case({"runtime": {"extra_args": ["--model", "/m"]}}, "runtime.extra_args[0]", "'model.uri'", "model.uri"),
    Case({"deployment_mode": "Bogus"}, "deployment_mode", "'Bogus' is not allowed", "'Standard' or 'Knative'"),
    Case({"canary": {"traffic_percent": "ten"}}, "canary.traffic_percent", "'ten' is invalid", "integer"),
    Case(
        {"kserve_version": "zero.twenty", "canary": {"traffic_percent": 5}}, "kserve_version", "not a version", "0.20"
    ),
    Case(
        {"validation": {"slo": {"checks": [""]}}}, "validation.slo.checks[0]", "empty SLO check", "p95_ttft_ms <= 100"
    ),
]

# Issue 31's hostile values (tests/unit/test_hostile_inputs.py), as KFP hands them to the steps: the
# model URI rows only where the spec's URI is used (deploy-model takes the artifact's).
HOSTILE_CASES = [
    Case(doc, field, problem, fix, steps=("register",) if field == "model.uri" else ("register", "deploy"))
    for doc, field, problem, fix in HOSTILE
] + [
    Case(None, "spec", "nested", "nest", raw='{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    Case(None, "validation.load.num_prompts", "is invalid", "less than or equal", raw=json.dumps(P_D_1E8)),
]

CASES = SPEC_CASES + STEP_CASES + HOSTILE_CASES


def _case_id(case: Case) -> str:
    return f"{case.field}:{case.problem}"[:80]


def _spec_text(case: Case) -> str:
    if case.raw is not None:
        return case.raw
    base = {"name": "chat", "namespace": "team-a", "platform": "kserve"}
    return json.dumps(deep_merge(base, case.doc or {}))


def _run_step(step: str, case: Case) -> None:
    text = _spec_text(case)
    if step == "register":
        register_runtime_step(text)
    else:
        deploy_step(text, model_uri=case.model_uri, run_id=RUN_ID)


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released: a connection to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_cluster(tmp_path, monkeypatch):
    """``KUBECONFIG`` naming a cluster at a closed port, set the way a KFP pod outside the cluster has it."""
    path = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{_closed_port()}"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    # The kubernetes client reads $KUBECONFIG once, at import; a pod has it set before that.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    # A step that did send a request gives up on the refused connection after a second, not a minute.
    monkeypatch.setitem(KubeClient.__init__.__kwdefaults__, "retry_deadline_s", 1.0)
    return server


def test_the_unreachable_cluster_is_really_unreachable(unreachable_cluster):
    # The control case: a good spec gets as far as the cluster and fails there, not with a SpecError;
    # so the rows below, which end in a SpecError, were refused before the first request.
    text = json.dumps({"name": "chat", "namespace": "team-a", "platform": "kserve"})
    with pytest.raises(DeadlineExceeded) as info:
        register_runtime_step(text)
    message = str(info.value)
    assert "connection problem" in message and f"port={unreachable_cluster.rsplit(':', 1)[1]}" in message, message


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_with_field_and_fix_before_any_request(case, unreachable_cluster):
    for step in case.steps:
        with pytest.raises(SpecError) as info:
            _run_step(step, case)
        err = info.value
        assert err.field == case.field, f"{step}: {err}"
        assert case.problem in err.problem, f"{step}: {err}"
        assert case.fix in err.fix, f"{step}: {err}"
        assert str(err).startswith(f"{case.field}: ") and "Fix: " in str(err), str(err)
