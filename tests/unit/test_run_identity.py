"""The run's service account can start and finish a KFP run: rbac.yaml against upstream's runner Role.

Every pod of a KFP run (driver, launcher, Argo's executor) runs as the run's service account, ours
(``llm-rollout``) included. What they call, read in the pinned KFP 2.17 code:

* the root driver gets the ``kfp-launcher`` ConfigMap in the run's namespace
  (``backend/src/v2/driver/root_dag.go`` -> ``config/env.go`` ``FromConfigMap``, ``configMapName``);
* the launcher gets the object store's Secret (``config/env.go`` ``minioArtifactSecretName``;
  ``objectstore/config.go`` ``secretName``);
* Argo's executor creates and patches ``workflowtaskresults``.

Upstream's ``pipeline-runner`` Role (``manifests/kustomize/base/pipeline/pipeline-runner-role.yaml``)
grants all three and much more. The test checks that the rendered ``manifests/rbac.yaml`` grants
each need, that every KFP grant of ours is one upstream grants too (nothing beyond the runner's
rights), and that the steps' own Role is untouched by them (it is compared with the library's
recorded calls in ``tests/cluster/test_rbac.py``).
"""

from pathlib import Path

import yaml

from llm_rollout.kserve.builders.rbac import KFP_RUN_RULES, RBAC_RULES
from tests.crds import KFP_REFERENCE, reference_dir

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = reference_dir(KFP_REFERENCE)
RUNNER_ROLE = UPSTREAM / "manifests" / "kustomize" / "base" / "pipeline" / "pipeline-runner-role.yaml"

# (verb, group, resource, name or None) each pod of a run needs, with where the pinned code does it.
RUN_NEEDS = {
    ("get", "", "configmaps", "kfp-launcher"): (
        "backend/src/v2/config/env.go",
        'configMapName                = "kfp-launcher"',
    ),
    ("get", "", "secrets", "mlpipeline-minio-artifact"): (
        "backend/src/v2/config/env.go",
        'minioArtifactSecretName      = "mlpipeline-minio-artifact"',
    ),
    ("create", "argoproj.io", "workflowtaskresults", None): (
        "manifests/kustomize/base/pipeline/pipeline-runner-role.yaml",
        "workflowtaskresults",
    ),
    ("patch", "argoproj.io", "workflowtaskresults", None): (
        "manifests/kustomize/base/pipeline/pipeline-runner-role.yaml",
        "workflowtaskresults",
    ),
}


def _grants(rules):
    """``(verb, group, resource, name or None)`` of every rule (``*`` kept as is)."""
    out = set()
    for rule in rules:
        for verb in rule["verbs"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for name in rule.get("resourceNames") or [None]:
                        out.add((verb, group, res, name))
    return out


def _allows(grants, verb, group, resource, name):
    return any(
        v in (verb, "*") and g in (group, "*") and r in (resource, "*") and n in (name, None) for v, g, r, n in grants
    )


def _rendered():
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text()))
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    return docs, roles, bindings


def test_the_needs_are_what_the_pinned_kfp_code_does():
    for path, text in RUN_NEEDS.values():
        assert text in (UPSTREAM / path).read_text(), (path, text)
    assert (
        "config.FromConfigMap(ctx, k8sClient, opts.Namespace)"
        in (UPSTREAM / "backend/src/v2/driver/root_dag.go").read_text()
    )


def test_the_run_account_is_granted_what_kfp_needs_and_nothing_beyond_the_runner_role():
    upstream = _grants(yaml.safe_load(RUNNER_ROLE.read_text())["rules"])
    docs, roles, bindings = _rendered()
    account = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    run_role = roles[f"{account}-kfp-run"]
    ours = _grants(run_role["rules"])
    # Each need is granted (by name where the code reads by name), by upstream and by us.
    for need in RUN_NEEDS:
        assert _allows(upstream, *need), f"upstream's runner Role lacks {need}"
        assert _allows(ours, *need), f"rbac.yaml does not grant {need}: the run fails at its first pod"
    # Nothing of ours goes beyond upstream's runner Role, and nothing is a wildcard or unnamed read.
    for grant in ours:
        assert "*" not in grant[:3], grant
        assert _allows(upstream, *grant), f"{grant} is more than KFP's own runner may do"
        assert grant in RUN_NEEDS or (*grant[:3], None) in RUN_NEEDS, f"{grant} is granted but nothing needs it"
    # The Role is bound to the account the runs use (submit/schedule --service-account, default llm-rollout).
    bound = [b for b in bindings if b["roleRef"]["name"] == run_role["metadata"]["name"]]
    assert [s["name"] for b in bound for s in b["subjects"]] == [account] == ["llm-rollout"]


def test_the_steps_role_keeps_only_the_librarys_own_calls():
    _, roles, _ = _rendered()
    store_reads = [  # runtime.model_store is on by default: deploy-model's preflight (test_model_store.py)
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"], "resourceNames": ["kfp-model-reader"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["kfp-model-store"]},
    ]
    assert roles["llm-rollout"]["rules"] == RBAC_RULES + store_reads
    assert not _grants(RBAC_RULES) & _grants(KFP_RUN_RULES)
