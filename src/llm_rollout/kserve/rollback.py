"""Rollback on the ``kserve`` platform, the run's exit handler and cancellation.

* :func:`rollback`: the canary entry is removed (Standard), the stable predictor is put back with
  ``canaryTrafficPercent: 0`` (Knative: all traffic on the previous rolled-out revision), the new
  llm-d member's weight goes to 0 and the member is deleted; a first rollout's service is deleted
  so no unvalidated model keeps serving. The stable revision's object is not written.
* :func:`finalize_run` (the exit handler): finds what a run deployed and did not promote by the
  ``llm-rollout.io/run-id`` label, rolls it back and releases the run's lease.
* :func:`rollback_on_termination`: a cancelled run (KFP deletes the step's pod: the kubelet sends
  SIGTERM and waits ``terminationGracePeriodSeconds``, 30 s by default, before SIGKILL) rolls back
  what it deployed before the step exits.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from llm_rollout.errors import RolloutError
from llm_rollout.kserve.lease import release_lease
from llm_rollout.kserve.records import _one_line, _record_rollback
from llm_rollout.kserve.variants import Variant, variant_for
from llm_rollout.kube import KubeClient
from llm_rollout.platform import Outcome
from llm_rollout.procs import Terminated, sigterm_raises
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolledBack:
    """What :func:`rollback` did.

    Attributes:
        action: ``rollback``, or ``none`` (nothing to take away: rolled back before, or promoted).
        message: One line for the step's log.
        member: The revision rolled back.
        stable: The stable revision that serves (None after a first rollout's rollback).
        lease_released: The run's rollout lease was released here.
    """

    action: Literal["rollback", "none"]
    message: str
    member: str
    stable: str | None = None
    lease_released: bool = False

    def outcome(self) -> Outcome:
        """As :meth:`llm_rollout.platform.Platform.rollback` reports it (the same on both platforms)."""
        stopped = [self.member] if self.action == "rollback" else []
        return Outcome(
            action=self.action, message=self.message, member=self.member, stable=self.stable, stopped=stopped
        )


@dataclass(frozen=True)
class Finalized:
    """What :func:`finalize_run` (the exit handler) did.

    Attributes:
        message: One line for the step's log.
        rolled_back: The revisions of the run it rolled back.
        lease_released: The run's rollout lease was released.
    """

    message: str
    rolled_back: tuple[str, ...] = ()
    lease_released: bool = False

    @property
    def action(self) -> Literal["rollback", "none"]:
        """``rollback`` when anything was rolled back."""
        return "rollback" if self.rolled_back else "none"

    def outcome(self) -> Outcome:
        """As :meth:`llm_rollout.platform.Platform.finalize` reports it (the same on both platforms)."""
        return Outcome(
            action="finalize" if self.rolled_back else "none", message=self.message, stopped=list(self.rolled_back)
        )


def rollback(
    spec: RolloutSpec, client: KubeClient, record: DeploymentRecord, *, reason: str, run_id: str = ""
) -> RolledBack:
    """Removes the new revision of ``record``; the stable revision keeps serving as it was.

    Standard: the canary entry is removed. Knative: the stable predictor is put back with
    ``canaryTrafficPercent: 0`` (all traffic on the previously rolled-out revision). llm-d: the new
    member's weight goes to 0, then the member is deleted. First rollout: the unvalidated service
    (or member) is deleted. An already promoted revision is never demoted. Twice is a no-op. The
    rollback is recorded on the service and the run's lease released.

    Args:
        spec: The rollout spec.
        client: The kube client.
        record: The deployment record.
        reason: Why (recorded).
        run_id: The run that rolls back (recorded; the record's run when empty).

    Returns:
        What was done (``none`` for a rerun or a promoted revision).
    """
    return _rollback(spec, client, record, reason=reason, run_id=run_id)


def _rollback(
    spec: RolloutSpec,
    client: KubeClient,
    rec: DeploymentRecord,
    *,
    reason: str,
    run_id: str,
    restore_stable_weight: int | None = None,
) -> RolledBack:
    stable_name = rec.stable.member if rec.stable else None
    if rec.already_promoted:
        return RolledBack(
            "none",
            f"already promoted: {rec.member} stays the stable revision; nothing to roll back",
            rec.member,
            rec.member,
        )
    variant = variant_for(spec)
    ref = variant.ref()
    removal = variant.rollback(client, rec, ref, restore_stable_weight)
    done, message = removal.done, removal.message
    if done:
        _record_rollback(client, ref, rec, reason, run_id)
    released = release_lease(client, ref, rec.run_id or run_id)
    if done:
        log.warning("%s: %s (%s)", spec.service_name, message, _one_line(reason, 300) or "no reason given")
    else:
        log.info("%s: %s", spec.service_name, message)
    return RolledBack("rollback" if done else "none", message, rec.member, stable_name, lease_released=released)


def _records_of_run(variant: Variant, client: KubeClient, run_id: str) -> list[DeploymentRecord]:
    """Revisions ``run_id`` deployed that are not promoted (found by the run-id label)."""
    spec = variant.spec
    base = {
        "platform": "kserve",
        "name": spec.service_name,
        "namespace": spec.namespace,
        "served_model_name": spec.served_model_name,
        "endpoint_url": "",
        "run_id": run_id,
    }
    return variant.revisions_of_run(client, run_id, base)


def finalize_run(spec: RolloutSpec, client: KubeClient, run_id: str, *, state: str = "", error: str = "") -> Finalized:
    """The exit handler: rolls back what ``run_id`` deployed but did not promote, releases its lease.

    The run's revisions are found on the server by the ``llm-rollout.io/run-id`` label, so this
    works when a step died before writing its outputs. Promoted revisions are left alone.

    Args:
        spec: The rollout spec.
        client: The kube client.
        run_id: The run.
        state: The run's final state (``SUCCEEDED``, ``FAILED``, ``CANCELLED`` ...), recorded.
        error: The run's error message, recorded.

    Returns:
        The members rolled back and whether the lease was released.
    """
    variant = variant_for(spec)
    ref = variant.ref()
    if not run_id:
        return Finalized("no run id: nothing to finalize")
    reason = f"run {run_id} ended {state or 'without promoting it'}" + (f": {_one_line(error, 300)}" if error else "")
    rolled: list[str] = []
    released_any = False
    for rec in _records_of_run(variant, client, run_id):
        if variant.without_record(client, rec):
            rolled.append(rec.member)
            continue
        result = _rollback(spec, client, rec, reason=reason, run_id=run_id)
        released_any = released_any or result.lease_released
        if result.action == "rollback":
            rolled.append(rec.member)
    released = release_lease(client, ref, run_id) or released_any
    message = f"rolled back {', '.join(rolled)}" if rolled else "nothing left to roll back"
    if released:
        message += f"; released run {run_id}'s lease"
    return Finalized(message, tuple(rolled), released)


@contextlib.contextmanager
def rollback_on_termination(
    spec: RolloutSpec,
    client: KubeClient,
    record: DeploymentRecord | None,
    *,
    run_id: str = "",
    catch: type[KeyboardInterrupt] = Terminated,
) -> Iterator[None]:
    """Within the block, SIGTERM (a cancelled run) rolls the new revision back, then re-raises.

    With a record, that revision is rolled back; without one (the block *is* the deploy) the run's
    revisions are found by ``run_id`` (:func:`finalize_run`). A second SIGTERM during the rollback
    is ignored so the rollback finishes.

    Args:
        spec: The rollout spec.
        client: The kube client.
        record: The deployment record, or None while deploy runs in the block.
        run_id: The run (needed when ``record`` is None).
        catch: What triggers the rollback: :class:`Terminated` (SIGTERM), or
            :class:`KeyboardInterrupt` for Ctrl-C as well.

    Raises:
        Terminated: After the rollback (a :class:`KeyboardInterrupt`).
    """
    try:
        with sigterm_raises():
            yield
    except catch as stopped:
        why = "SIGTERM" if isinstance(stopped, Terminated) else "interrupted"
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if in_main else None
        try:
            if record:
                rec = record
                rollback(spec, client, rec, reason=f"run cancelled ({why})", run_id=run_id or rec.run_id)
            elif run_id:
                finalize_run(spec, client, run_id, state="CANCELLED", error=why)
        except RolloutError as err:
            log.error("rollback after %s failed: %s (the exit handler retries it)", why, err)
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        raise
