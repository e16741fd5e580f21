"""``llm-rollout status``: a service's revisions, traffic, readiness, stable record and history.

What a user would otherwise piece together with kubectl, for one service found by name (an
InferenceService, or an llm-d group through its member labels; stable record, history and lease
from the service's Lease ``<service>-rollout``).
"""

from __future__ import annotations

from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kserve.lease import lease_of
from llm_rollout.kserve.records import PREVIOUS_STABLE, find_stable_record, history_of
from llm_rollout.kserve.variants import found_variant
from llm_rollout.kube import KubeClient
from llm_rollout.platform import HistoryEntry, RevisionStatus, StableRecord, Status
from llm_rollout.spec import RolloutSpec


def status(spec: RolloutSpec, client: KubeClient) -> Status:
    """What a user would otherwise piece together with kubectl, for one service.

    The service is found by name (``spec`` needs only ``name`` and ``namespace``): an
    InferenceService, or an llm-d group (its labelled members, or its rollout Lease's records).

    Returns:
        The revisions (role, traffic, readiness, model), the stable and previous stable records,
        the lease of a rollout in progress and the history (newest first).

    Raises:
        PermanentError: No InferenceService or llm-d group of that name.
    """
    name, namespace = spec.service_name, spec.namespace
    found = found_variant(client, spec)
    if found is None:
        raise PermanentError(
            f"no InferenceService or LLMInferenceService group named {name} in namespace {namespace}. "
            "Fix: check the name and -n NAMESPACE"
        )
    variant, holder = found
    stable_rec = find_stable_record(holder)
    rows, url = variant.status_rows(client, holder, stable_rec or None)
    return _typed(
        {
            "kind": variant.kind,
            "name": name,
            "namespace": namespace,
            "stable": stable_rec,
            "previous_stable": find_stable_record(holder, PREVIOUS_STABLE),
            "lease": lease_of(holder),
            "history": [h.model_dump(mode="json") for h in history_of(holder)],
            "revisions": rows,
            "url": url,
        }
    )


def _typed(d: dict[str, Any]) -> Status:
    """The status dict as the typed :class:`Status` (rows, stable record, history)."""
    fields = set(RevisionStatus.model_fields)
    revisions = [RevisionStatus(**{k: v for k, v in r.items() if k in fields}) for r in d.get("revisions") or []]
    history = [HistoryEntry.model_validate(h) for h in d.get("history") or [] if isinstance(h, dict)]
    stable, previous = (d.get(k) for k in ("stable", "previous_stable"))
    return Status(
        platform="kserve",
        kind=d["kind"],
        name=d["name"],
        namespace=d["namespace"],
        url=d.get("url"),
        revisions=revisions,
        stable=StableRecord.model_validate(stable) if isinstance(stable, dict) and stable.get("member") else None,
        previous_stable=StableRecord.model_validate(previous)
        if isinstance(previous, dict) and previous.get("member")
        else None,
        history=history,
        lease=d.get("lease"),
    )
