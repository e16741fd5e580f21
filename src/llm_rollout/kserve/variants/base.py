"""The interface every serving variant implements, and what deploy plans with it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from llm_rollout.errors import PermanentError
from llm_rollout.kserve.builders import Member
from llm_rollout.kserve.records import ServiceRef, _meta
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import KubeClient, condition
from llm_rollout.platform import Gate
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import RolloutSpec

RunGate = Callable[..., None]

Doc = dict[str, Any]
"""A Kubernetes object or a promotion record as the API returns it."""


@dataclass(frozen=True)
class PromoteSteps:
    """How promote-model moves traffic to the new revision.

    Attributes:
        gate: The stepped-promotion gate (``canary.steps``), or None.
        run_gate: Runs ``gate`` at one traffic step (rolls back and raises when it fails).
        retire: What happens to the superseded revision: ``delete`` or ``stop``.
        timeout_s: Bound on each wait (default: ``validation.readiness_timeout_s``).
    """

    gate: Gate | None
    run_gate: RunGate
    retire: str
    timeout_s: float | None


"""``run_gate(percent, restore_stable_weight=None)``: re-runs the gate at a traffic step; on a failed
gate it rolls the new revision back and raises :class:`~llm_rollout.kserve.promote.GateFailed`."""


@dataclass(frozen=True)
class Promotion:
    """What a variant's :meth:`Variant.promote` did, and what promote-model records of it.

    Attributes:
        action: ``promote``, or ``none`` (already promoted: a rerun).
        message: One line for the step's log.
        member: The revision promoted.
        previous: The stable revision it replaced (None on a first rollout).
        served: What serves now, for the stable record (what ``llm-rollout rollback`` restores).
        previous_record: The replaced revision's stable record when no promotion recorded one.
        record: Record the promotion even though nothing was written (a rerun after the writes).
    """

    action: Literal["promote", "none"]
    message: str
    member: str
    previous: str | None = None
    served: dict[str, Any] = field(default_factory=dict)
    previous_record: dict[str, Any] | None = None
    record: bool = False

    @property
    def recorded(self) -> bool:
        """promote-model writes the stable record (and the autoscaler follows)."""
        return self.action == "promote" or self.record


@dataclass(frozen=True)
class Removal:
    """What a variant's :meth:`Variant.rollback` did: ``done`` (something was taken away) and why, one line."""

    done: bool
    message: str


class PromotionConflict(PermanentError):
    """The objects changed since deploy (someone else edited the stable revision): nothing was forced."""


def conditions_summary(obj: dict[str, Any] | None, *, own_generation: bool = True) -> dict[str, Any]:
    """An object's readiness as ``llm-rollout status`` shows it (Ready, why not, the failing conditions).

    Args:
        obj: The live object.
        own_generation: Its ``status.observedGeneration`` is its own (compared with its generation).
            An InferenceService's is its first child's, not its own (:mod:`llm_rollout.kserve.wait`).
    """
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    ready = condition(obj, "Ready")
    bad = [
        {"type": c.get("type"), "reason": c.get("reason", ""), "message": c.get("message", "")}
        for c in conds
        if c.get("status") != "True" and c.get("severity") != "Info"
    ]
    gen = _meta(obj).get("generation")
    observed = ((obj or {}).get("status") or {}).get("observedGeneration")
    behind = own_generation and None not in (observed, gen) and observed < gen
    return {
        "ready": bool(ready and ready.get("status") == "True") and not behind,
        "reason": (ready or {}).get("reason", "") if ready else "no Ready condition yet",
        "not_ready": bad,
        "generation": gen,
        "observed_generation": observed,
    }


class Plan:
    """What deploy is going to apply and wait for (built completely before any write)."""

    def __init__(self) -> None:
        self.kind = ""
        self.obj: dict[str, Any] = {}
        self.object_name = ""
        self.canary = False
        self.stable: StableRef | None = None
        self.traffic_percent = 0
        self.readiness_kwargs: dict[str, Any] = {}
        self.service_url: str | None = None
        self.notes: list[str] = []
        self.live_generation: int | None = None
        self.live_stable: dict[str, Any] | None = None
        """The stable object the plan was made beside (llm-d: the stable member), as it is live."""

    def record(
        self, spec: RolloutSpec, new: Member, *, generation: int | None = None, digest: str | None = None
    ) -> DeploymentRecord:
        """The deployment record of ``new`` rolled out by this plan (no address yet: deploy adds it
        once ready). ``llm-rollout render`` promotes the same record in its ``promoted`` phase."""
        return DeploymentRecord(
            platform="kserve",
            kind=self.kind,  # type: ignore[arg-type]
            name=spec.service_name,
            namespace=spec.namespace,
            member=new.name,
            revision=new.revision,
            model_uri=new.model_uri,
            served_model_name=spec.served_model_name,
            endpoint_url="",
            generation=generation,
            canary=self.canary,
            traffic_percent=self.traffic_percent,
            stable=self.stable,
            run_id=new.run_id,
            artifact_digest=digest,
        )


class Variant(ABC):
    """One way of serving on KServe; chosen once (:func:`llm_rollout.kserve.variants.variant_for`).

    Args:
        spec: The rollout spec.
    """

    kind: ClassVar[str]
    """The serving objects' kind (what the deployment record says)."""
    llmd: ClassVar[bool] = False
    """Served by llm-d (its URI schemes and CRDs)."""

    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec

    # where the lease and the promotion record live
    @abstractmethod
    def ref(self) -> ServiceRef: ...

    # register-runtime
    @abstractmethod
    def runtime_object(self) -> dict[str, Any] | None:
        """The runtime object register-runtime applies (None: nothing to register)."""

    def owned_runtime_object(self, client: KubeClient) -> dict[str, Any] | None:
        """:meth:`runtime_object` as register-runtime applies it, with what it must keep from the cluster
        (llm-d: the preset's ``ownerReferences`` to the members that use it)."""
        return self.runtime_object()

    def after_apply(self, client: KubeClient, applied: dict[str, Any], *, dry_run: bool = False) -> None:
        """Called by deploy right after the new revision's object was applied (llm-d: the member
        becomes an owner of its preset)."""
        return None

    def need_canary_field(self) -> bool:
        """The InferenceService CRD must have ``spec.canary`` (KServe >= 0.20)."""
        return False

    # deploy-model
    @abstractmethod
    def member_name(self, revision: str) -> str: ...

    @abstractmethod
    def plan(self, client: KubeClient, new: Member) -> Plan:
        """What deploy applies for ``new`` beside what serves now (read from the cluster, then
        :meth:`plan_on`)."""

    @abstractmethod
    def plan_on(self, live: list[Doc], new: Member, recorded: Doc | None = None) -> Plan:
        """What deploy applies for ``new`` beside the ``live`` serving objects (no cluster call).

        Args:
            live: The service's serving objects as the server has them (the InferenceService, or
                the llm-d members); empty before the first rollout.
            new: The new revision.
            recorded: The stable record of the last promotion (``llm-rollout.io/stable``), if any.

        ``llm-rollout render`` plans its ``canary`` phase with it from the ``first`` phase's objects,
        deploy from what it read: one source of truth for what a rollout writes.
        """

    @abstractmethod
    def serving_after(self, live: list[Doc], plan: Plan) -> list[Doc]:
        """The serving objects once ``plan`` is applied beside ``live`` (what a canary phase holds)."""

    @abstractmethod
    def promoted_objects(self, live: list[Doc], rec: DeploymentRecord) -> list[Doc]:
        """The serving objects after promote-model made ``rec`` stable (no cluster call): the last
        write of the promotion (:meth:`promote` applies the same objects) over ``live``, the
        objects of the canary phase."""

    @abstractmethod
    def readiness(self, plan: Plan, generation: int | None) -> Readiness:
        """What the status must show once ``plan`` is applied (``generation`` is the applied one)."""

    @abstractmethod
    def addresses(self, ready: dict[str, Any], plan: Plan, new: Member) -> tuple[str | None, str | None]:
        """The new revision's own address and the service's, from the ready object."""

    @abstractmethod
    def stable_serves(self, client: KubeClient, holder: dict[str, Any] | None, stable: dict[str, Any]) -> bool:
        """The recorded stable model still serves (a rerun of it deploys nothing)."""

    # promote-model / rollback-model / finalize-rollout
    @abstractmethod
    def promote(self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, steps: PromoteSteps) -> Promotion:
        """Makes ``rec`` stable (what promote-model records comes back with it)."""

    def apply_scaling(self, client: KubeClient) -> dict[str, Any] | None:
        """Re-applies the stable's autoscaling as ``self.spec`` renders it (``scaling.target: auto``
        resolved from evidence); returns what now serves (for the record), None when not supported."""
        return None

    def sync_autoscaler(self, client: KubeClient) -> None:
        """Makes the autoscaler the steps own follow the stable revision (Standard mode with KEDA:
        :func:`llm_rollout.kserve.autoscaler.sync_autoscaler`); nothing for the others."""
        return None

    @abstractmethod
    def rollback(
        self, client: KubeClient, rec: DeploymentRecord, ref: ServiceRef, restore_stable_weight: int | None
    ) -> Removal:
        """Takes ``rec`` away; the stable revision's object is not written."""

    @abstractmethod
    def revisions_of_run(self, client: KubeClient, run_id: str, base: dict[str, Any]) -> list[DeploymentRecord]:
        """What ``run_id`` deployed and did not promote (found by its run-id label)."""

    def without_record(self, client: KubeClient, rec: DeploymentRecord) -> bool:
        """Takes away a revision of a dead run that no rollback can restore from; True when it did."""
        return False

    @abstractmethod
    def member_metrics_urls(self, rec: DeploymentRecord) -> tuple[dict[str, str], str]:
        """Each member's own vLLM ``/metrics`` (stable and canary), or why they are unknown."""

    # llm-rollout status / rollback NAME
    @abstractmethod
    def status_rows(
        self, client: KubeClient, holder: dict[str, Any] | None, stable: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The revisions as ``llm-rollout status`` shows them, and the service's address."""

    @abstractmethod
    def restore(self, client: KubeClient, holder: Doc, previous: Doc, current: Doc, timeout_s: float) -> None:
        """Serves ``previous`` (a stable record) again and retires ``current``."""

    # shared helpers
    def wait(self, client: KubeClient, name: str, readiness: Readiness, timeout_s: float | None) -> dict[str, Any]:
        """Waits for ``name`` (bounded by ``timeout_s`` or ``validation.readiness_timeout_s``)."""
        return wait_ready(
            client,
            name,
            self.spec.namespace,
            readiness,
            timeout_s=timeout_s or self.spec.validation.readiness_timeout_s,
        )

    def traffic_steps(self, rec: DeploymentRecord, gate: Gate | None) -> list[int]:
        """Traffic steps before the final switch: ``canary.steps`` above the current share (with 100)."""
        steps = [p for p in self.spec.canary.weights if p > rec.traffic_percent]
        if gate is not None and not steps:
            steps = [100]
        return steps
