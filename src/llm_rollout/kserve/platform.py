"""The ``kserve`` platform: :class:`KServePlatform`, the :class:`~llm_rollout.platform.Platform` on KServe.

One instance per step, made by :func:`llm_rollout.platform.platform_for` for ``platform: kserve``.
It holds the spec and the kube client and owns what only KServe needs around the steps: the GPU
preflight before deploy, ``$LLM_ROLLOUT_ADDRESS_MAP`` (:mod:`llm_rollout.kserve.addresses`), the
stepped-promotion gate (:mod:`llm_rollout.kserve.gate`) and the SIGTERM rollback around deploy and
validation (KFP cancels a run by sending SIGTERM to the step's container).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from llm_rollout import steplog
from llm_rollout.kserve.addresses import address_resolver, mapped
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.gate import traffic_gate
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.restore import rollback_to_previous
from llm_rollout.kserve.rollback import finalize_run, rollback, rollback_on_termination
from llm_rollout.kserve.status import status
from llm_rollout.kube import KubeClient
from llm_rollout.platform import ModelRef, Outcome, Status, ValidationConclusion, ValidationTarget
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec, check_gpu

log = logging.getLogger(__name__)

KNOWN_SCHEMES = ("W8A8", "FP8_DYNAMIC", "W4A16")
"""Schemes the GPU preflight knows (what optimize-model writes into the artifact's metadata)."""


class KServePlatform:
    """A ``ServingRuntime`` and an InferenceService (Standard or Knative) or an llm-d group.

    Args:
        spec: The parsed rollout spec (``RolloutSpec(name=..., namespace=..., platform="kserve")``
            is enough for :meth:`status` and :meth:`restore_previous`, which find the service's
            kind on the cluster).
        client: The kube client (default: :meth:`KubeClient.from_environment`, made on first use).
    """

    def __init__(self, spec: RolloutSpec, client: KubeClient | None = None) -> None:
        self.spec = spec
        self._client = client

    @property
    def client(self) -> KubeClient:
        """The kube client, made on first use (the GPU preflight needs no cluster)."""
        if self._client is None:
            self._client = KubeClient.from_environment()
        return self._client

    # register / deploy -------------------------------------------------------------------------

    def register(self) -> str:
        applied = register_runtime(self.spec, self.client)
        return (applied.get("metadata") or {}).get("name") or self.spec.runtime_name

    def deploy(self, model: ModelRef, *, run_id: str) -> DeploymentRecord:
        """Checks the GPU, then rolls ``model`` out; SIGTERM or Ctrl-C takes the half-made revision away."""
        # GPU preflight before any write: the artifact's scheme (step one) against the GPU.
        scheme = model.scheme if model.scheme in KNOWN_SCHEMES else None
        note = check_gpu(self.spec, scheme, "model_metadata.scheme")
        if note:
            steplog.log(f"deploy-model: {note}")
        with self._cancel_rolls_back(run_id):
            return deploy(
                self.spec,
                self.client,
                model_uri=model.uri,
                run_id=run_id,
                artifact_digest=self.spec.model.digest or model.digest,
                resolve_url=address_resolver(),
            )

    @contextlib.contextmanager
    def _cancel_rolls_back(self, run_id: str) -> Iterator[None]:
        """SIGTERM (KFP cancelling the run) or Ctrl-C: the run's half-made revision goes, then re-raises.

        Cancelling a run deletes its pods: the kubelet sends SIGTERM and waits
        ``terminationGracePeriodSeconds`` (30 s by default) before SIGKILL, and Argo's emissary
        executor, PID 1 of the step's container, forwards every signal it gets to the command it
        runs (argo-workflows ``cmd/argoexec/commands/emissary.go``: ``signal.Notify``, then
        ``Kill(command.Process.Pid, s)``). Python's default SIGTERM disposition would end the step
        at once and leave the canary serving until the exit handler runs, so the handler is
        installed here (:func:`llm_rollout.procs.sigterm_raises`).
        """
        with rollback_on_termination(self.spec, self.client, None, run_id=run_id, catch=KeyboardInterrupt):
            yield

    # validate ----------------------------------------------------------------------------------

    def validation_target(self, record: DeploymentRecord) -> ValidationTarget:
        stable_url = None
        if record.stable and record.stable.endpoint_url:
            # Through the address map like every other cluster address (deploy records the
            # stable's address as the cluster reports it).
            stable_url = mapped(record.stable.endpoint_url)

        @contextlib.contextmanager
        def guard() -> Iterator[None]:
            with rollback_on_termination(self.spec, self.client, record):
                yield

        return ValidationTarget(
            endpoint_url=record.endpoint_url,
            served_model_name=record.served_model_name,
            stable_url=stable_url,
            metrics_urls=dict(record.metrics_urls),
            guard=guard,
        )

    # promote / rollback / finalize -------------------------------------------------------------

    def promote(self, record: DeploymentRecord, verdict: ValidationConclusion, *, run_id: str) -> Outcome:
        gate = traffic_gate(self.spec, record) if self.spec.canary.steps else None
        result = promote(
            self.spec,
            self.client,
            record,
            verdict=verdict.verdict,
            summary=verdict.summary,
            metrics=verdict.metrics or None,
            capacity=verdict.capacity,
            run_id=run_id,
            gate=gate,
        )
        return result.outcome()

    def rollback(self, record: DeploymentRecord, *, reason: str, run_id: str) -> Outcome:
        return rollback(self.spec, self.client, record, reason=reason, run_id=run_id).outcome()

    def finalize(self, *, run_id: str, state: str, error: str) -> Outcome:
        return finalize_run(self.spec, self.client, run_id, state=state, error=error).outcome()

    # status / restore --------------------------------------------------------------------------

    def status(self) -> Status:
        return status(self.spec, self.client)

    def restore_previous(self, *, run_id: str, timeout_s: float) -> Outcome:
        return rollback_to_previous(self.spec, self.client, run_id=run_id, timeout_s=timeout_s).outcome()
