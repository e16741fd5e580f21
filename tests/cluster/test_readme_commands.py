"""The README's cluster commands for a service, run as printed (issue 32): ``llm-rollout status NAME -n NS``
and ``llm-rollout rollback NAME -n NS`` (section "Status and rollback"), against the test API server and
the KServe controller stand-in, with ``$KUBECONFIG`` naming the test cluster as a user's would.

The service is the one ``examples/kserve-team.yaml`` describes (the README's team example), rolled out
twice by the library's own deploy and promote (a GPU cannot serve here; what the commands read is what
those steps write), so ``status`` has a stable and a previous model to show and ``rollback`` one to
restore.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from llm_rollout.kserve import records
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.promote import promote
from llm_rollout.kube import INFERENCE_SERVICES, LEASES
from llm_rollout.spec import load_spec
from tests.cluster._support import kube
from tests.reconciler import Behaviour, Reconciler, delete_without_controller
from tests.unit.test_first_hour import readme_commands

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
TEAM_EXAMPLE = ROOT / "examples" / "kserve-team.yaml"


def _service_commands() -> list[list[str]]:
    """The README's ``llm-rollout status|rollback NAME -n NS`` lines, as argv."""
    out = []
    for command in readme_commands():
        argv = shlex.split(command)[1:]
        if argv[0] in ("status", "rollback") and "-n" in argv:
            out.append(argv)
    return out


def test_the_readme_names_the_team_examples_service():
    spec = load_spec(str(TEAM_EXAMPLE))
    commands = _service_commands()
    assert [argv[0] for argv in commands] == ["status", "rollback"]
    for argv in commands:
        assert argv[1] == spec.service_name and argv[argv.index("-n") + 1] == spec.namespace, argv


def _run(argv: list[str], kubeconfig: Path) -> subprocess.CompletedProcess:
    """``llm-rollout ARGV`` as a user's shell runs it: the command on PATH, ``$KUBECONFIG`` set."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["llm-rollout", *argv], env=env, capture_output=True, text=True, timeout=300)


def test_status_and_rollback_as_printed_against_the_cluster(kube_cluster, tmp_path):
    spec = load_spec(str(TEAM_EXAMPLE))
    kubeconfig = kube_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    stand_in = Reconciler(kube_cluster.configuration(), default=Behaviour(), namespace=spec.namespace)
    stand_in.start()
    try:
        client = kube(kube_cluster)  # KServe's webhooks mirrored on every write
        register_runtime(spec, client)
        uris = ["s3://team-a-models/support-assistant/v2", spec.model.uri]
        members = []
        for run, uri in enumerate(uris, start=1):
            record = deploy(spec, client, model_uri=uri, revision=f"r{run}", run_id=f"run-{run}", timeout_s=60,
                            probe=False)  # fmt: skip
            # The team example promotes in steps (canary.steps); the gate passes at each.
            promote(spec, client, record, verdict="pass", summary="p95_ttft_ms 42 <= 100", run_id=f"run-{run}",
                    gate=lambda percent: ("pass", f"ok at {percent} %"))  # fmt: skip
            members.append(record.member)
        status, rollback = _service_commands()

        done = _run(status, kubeconfig)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert out.startswith(f"InferenceService {spec.namespace}/{spec.service_name}")
        assert f"stable: {members[1]} ({spec.model.uri}" in out
        assert f"previous stable: {members[0]} (s3://team-a-models/support-assistant/v2)" in out
        assert f"`llm-rollout rollback {spec.service_name} -n {spec.namespace}` restores it" in out

        done = _run(rollback, kubeconfig)
        assert done.returncode == 0 and "v2" in done.stdout, done.stdout + done.stderr
        live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)
        assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://team-a-models/support-assistant/v2"
        lease = client.get(LEASES, f"{spec.service_name}-rollout", spec.namespace)
        assert lease["metadata"]["annotations"][records.PROMOTED_MEMBER] == members[0]
        done = _run(status, kubeconfig)
        assert f"stable: {members[0]} (s3://team-a-models/support-assistant/v2" in done.stdout, done.stdout
    finally:
        stand_in.stop()
        # The README's other team-a commands (tests/serving/test_examples.py) start from no service.
        delete_without_controller(kube(kube_cluster), spec.service_name, spec.namespace)  # its finalizer too
        kube(kube_cluster).delete(LEASES, f"{spec.service_name}-rollout", spec.namespace)
