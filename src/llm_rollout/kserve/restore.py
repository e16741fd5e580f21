"""``llm-rollout rollback NAME``: puts the previous stable model back from its promotion record."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from llm_rollout.errors import PermanentError
from llm_rollout.kserve.lease import LeaseHeld, lease_of
from llm_rollout.kserve.records import (
    AUTOSCALING,
    HISTORY,
    LAST_ROLLBACK,
    PREVIOUS_STABLE,
    PROMOTED_AT,
    PROMOTED_DIGEST,
    PROMOTED_MEMBER,
    PROMOTED_MODEL_URI,
    PROMOTED_REVISION,
    PROMOTED_RUN_ID,
    PROMOTED_VERDICT,
    STABLE,
    _compact,
    _dump,
    _history_with,
    _iso,
    _now,
    _write_record,
    find_stable_record,
)
from llm_rollout.kserve.variants import found_variant
from llm_rollout.kube import KubeClient
from llm_rollout.platform import HistoryEntry, Outcome, StableRecord
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """What :func:`rollback_to_previous` did: ``member`` serves as stable again, ``previous`` was retired.

    Attributes:
        message: One line for the command's output.
        member: The revision restored.
        previous: The stable revision it replaced.
    """

    message: str
    member: str
    previous: str | None = None
    action: Literal["rollback"] = "rollback"

    def outcome(self) -> Outcome:
        """As :meth:`llm_rollout.platform.Platform.restore_previous` reports it (the same on both platforms)."""
        stopped = [self.previous] if self.previous else []
        return Outcome(action="rollback", message=self.message, member=self.member, stable=self.member, stopped=stopped)


def rollback_to_previous(
    spec: RolloutSpec, client: KubeClient, *, run_id: str = "", timeout_s: float = 900.0
) -> Restored:
    """Puts the previous stable model back (``llm-rollout rollback NAME``).

    Uses the ``llm-rollout.io/previous-stable`` record: InferenceService: its predictor becomes
    ``spec.predictor`` again (canaries removed); llm-d: its member is applied again (or restarted
    if it was stopped) at the current stable's weight, and the current stable member is deleted
    once the restored one is ready. The records swap, so running it again goes forward again.

    Args:
        spec: The service (``name`` and ``namespace`` are enough: its kind is found on the cluster).
        client: The kube client.
        run_id: Recorded with the rollback (e.g. ``manual-<user>``).
        timeout_s: Bound on waiting for the restored revision.

    Returns:
        The revision restored and the one it replaced.

    Raises:
        PermanentError: No such service, no previous stable model recorded, or a run holds the lease.
    """
    name, namespace = spec.service_name, spec.namespace
    found = found_variant(client, spec)
    if found is None or found[1] is None:
        raise PermanentError(f"no InferenceService or llm-d group named {name} in namespace {namespace}")
    variant, holder = found
    ref = variant.ref()
    lease = lease_of(holder)
    if lease and not lease["expired"]:
        raise LeaseHeld(
            f"{name}: run {lease['holder']} is rolling out right now (lease until {lease['expires']}); "
            "Fix: wait for it to finish, then roll back",
            holder=lease["holder"],
            expires=lease["expires"],
        )
    prev = find_stable_record(holder, PREVIOUS_STABLE)
    current = find_stable_record(holder)
    if not prev:
        raise PermanentError(
            f"{name}: no previous stable model is recorded (only promotions by llm-rollout are); "
            "nothing to roll back to"
        )
    variant.restore(client, holder, prev, current, timeout_s)
    variant.sync_autoscaler(client)  # the restored predictor's autoscaler, the retired one's removed
    at = _iso(_now())
    restored = StableRecord.model_validate(
        {**prev, "promoted_at": at, "run_id": run_id or prev.get("run_id", ""), "summary": "restored by rollback"}
    )
    entry = HistoryEntry(
        action="rollback",
        at=at,
        member=current.get("member"),
        revision=current.get("revision"),
        model_uri=current.get("model_uri"),
        run_id=run_id,
        reason=f"manual rollback to {prev['member']}",
        stable=prev["member"],
    )
    live = client.get_or_none(ref.res, ref.name, namespace)
    history = _history_with(live, entry)
    updates: dict[str, str | None] = {
        PROMOTED_MEMBER: prev["member"],
        PROMOTED_REVISION: prev.get("revision") or "",
        PROMOTED_MODEL_URI: prev.get("model_uri") or "",
        PROMOTED_DIGEST: prev.get("artifact_digest") or "",
        PROMOTED_RUN_ID: restored.run_id,
        PROMOTED_VERDICT: "restored by rollback",
        PROMOTED_AT: at,
        STABLE: _compact(_dump(restored)),
        PREVIOUS_STABLE: _compact(current) if current else None,
        LAST_ROLLBACK: _compact(_dump(entry)),
        # The restored predictor carries its own target; the evidence annotation follows it.
        AUTOSCALING: _compact(prev["autoscaling"]) if isinstance(prev.get("autoscaling"), dict) else None,
    }
    if history is not None:
        updates[HISTORY] = history
    _write_record(client, ref, updates)
    message = f"rolled {name} back to {prev['member']} ({prev.get('model_uri')}); {current.get('member')} retired"
    log.info(message)
    return Restored(message, prev["member"], current.get("member"))
