"""One interface for the two platforms: what every pipeline step asks of where the model serves.

The steps (:mod:`llm_rollout.steps`) parse the spec once and then call
``platform_for(spec).<step>(...)``; nothing below them branches on the platform. Two
implementations:

- :class:`llm_rollout.kserve.platform.KServePlatform`: a ``ServingRuntime`` and an
  ``InferenceService`` (Standard or Knative mode) or an llm-d ``LLMInferenceService`` group, on a
  Kubernetes API server; the variant is a strategy object chosen once from the spec.
- :class:`llm_rollout.local.platform.LocalPlatform`: vLLM server processes on this machine and a
  state directory.

The flow: ``register`` -> ``deploy`` (a :class:`~llm_rollout.record.DeploymentRecord`) ->
``validation_target`` (what validate-deployment measures) -> ``promote`` or ``rollback`` (an
:class:`Outcome`) -> ``finalize`` (the exit handler). ``status`` and ``restore_previous`` serve the
``llm-rollout status`` / ``llm-rollout rollback`` commands.

Both platforms keep the same promotion history: :class:`StableRecord` (what serves as stable, and
why) and :class:`HistoryEntry` (each promotion and rollback), so ``status`` reads the same way
everywhere and :func:`format_status` is the one terminal rendering.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from llm_rollout.autoscaling import Capacity
from llm_rollout.autoscaling import describe as describe_autoscaling
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec

SUMMARY_LIMIT = 300
"""Longest summary kept on a stable record (annotations are small)."""


def one_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters (with an ellipsis when cut)."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class ModelRef:
    """The model a rollout serves, as the pipeline knows it.

    Attributes:
        uri: Where the model is (``s3://``, ``pvc://``, ``hf://``, ``oci://``, or a local directory).
        path: The model's local directory when it differs from ``uri`` (the local platform serves
            from there); empty when the model is not on this machine.
        digest: The model's content digest (optimize-model's, or computed from ``path``).
        scheme: The quantization scheme step one applied (``W8A8``, ``FP8_DYNAMIC``, ``W4A16``).
    """

    uri: str
    path: str = ""
    digest: str | None = None
    scheme: str | None = None


class ValidationConclusion(BaseModel):
    """What validate-deployment concluded, as promote-model receives it.

    Attributes:
        verdict: ``pass``, ``fail``, ``inconclusive`` or ``already-promoted``.
        summary: Why, one reason per line.
        metrics: The flat metrics (the KFP Metrics artifact).
        report_path: Where the HTML report was written.
        capacity: What one replica was measured to carry (the autoscaler's target comes from it
            with ``scaling.target: auto``); None when no capacity search ran.
        headline: The few numbers a summary shows and a promotion records, from the gate's
            answers (``ValidationResult.key_metrics``).
    """

    model_config = ConfigDict(extra="forbid")

    verdict: str
    summary: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    report_path: str = ""
    capacity: Capacity | None = None
    headline: dict[str, float] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


class StableRecord(BaseModel):
    """What serves as the stable revision and why: written at promotion, on both platforms.

    On kserve it is the ``llm-rollout.io/stable`` annotation (JSON) of the service's Lease
    ``<service>-rollout``; on the local platform the
    ``stable`` entry of ``state.json``. ``extra`` keeps what one platform needs to restore it
    (a predictor body, an llm-d member spec, a local server's launch arguments) and on kserve
    ``autoscaling``, the evidence behind a ``scaling.target: auto`` target.
    """

    model_config = ConfigDict(extra="allow")

    member: str
    revision: str = ""
    model_uri: str = ""
    artifact_digest: str | None = None
    served_model_name: str = ""
    endpoint_url: str | None = None
    run_id: str = ""
    verdict: str = "pass"
    summary: str = ""
    promoted_at: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    report_path: str = ""


class HistoryEntry(BaseModel):
    """One promotion or rollback, newest first in :attr:`Status.history`.

    Attributes:
        action: ``promote``, ``rollback``, or ``rollback-to-previous`` (the local platform's
            ``llm-rollout rollback``: ``member`` is the model restored, ``previous`` the one it replaced).
        member: The revision promoted or rolled back.
        previous: For a promotion, the stable revision it replaced.
        stable: For a rollback, the stable revision that stayed (or was restored).
        reason: For a rollback, why.
        summary: For a promotion, the validation's summary.
    """

    model_config = ConfigDict(extra="allow")

    action: Literal["promote", "rollback", "rollback-to-previous"]
    at: str = ""
    member: str | None = None
    revision: str | None = None
    model_uri: str | None = None
    artifact_digest: str | None = None
    run_id: str = ""
    verdict: str | None = None
    summary: str | None = None
    reason: str | None = None
    previous: str | None = None
    stable: str | None = None

    def same_event(self, other: HistoryEntry) -> bool:
        """The same action on the same member by the same run (a rerun records it once)."""
        return (self.action, self.member, self.run_id) == (other.action, other.member, other.run_id)


class Outcome(BaseModel):
    """What promote, rollback, finalize and restore_previous did, on either platform.

    Attributes:
        action: ``promote``, ``rollback``, ``finalize`` or ``none`` (nothing to do: a rerun).
        message: One line for the step's log and the run's summary.
        member: The revision acted on.
        stable: The stable revision afterwards.
        stopped: Revisions (servers, members) taken away on the way.
        analysis: promote's live analysis per canary step (lines: ratios with intervals, requests per side).
        analysis_metrics: The same as KFP Metrics (``analysis_step<N>_ok``, ratios, requests per side).
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["promote", "rollback", "finalize", "none"]
    message: str
    member: str | None = None
    stable: str | None = None
    stopped: list[str] = Field(default_factory=list)
    analysis: list[str] = Field(default_factory=list)
    analysis_metrics: dict[str, float] = Field(default_factory=dict)


class RevisionStatus(BaseModel):
    """One revision of a service as ``llm-rollout status`` shows it."""

    model_config = ConfigDict(extra="forbid")

    member: str
    role: Literal["stable", "canary", "candidate", "baseline", "stopped"]
    """``baseline``: a local server validation compares against (``run-local --baseline``)."""
    model_uri: str = ""
    revision: str = ""
    run_id: str = ""
    traffic_percent: int | None = None
    ready: bool = False
    reason: str = ""
    not_ready: list[dict[str, str]] = Field(default_factory=list)
    endpoint_url: str | None = None


class Status(BaseModel):
    """A service's state on either platform (``llm-rollout status``; ``--json`` prints this)."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["kserve", "local"]
    kind: str
    name: str
    namespace: str
    url: str | None = None
    revisions: list[RevisionStatus] = Field(default_factory=list)
    stable: StableRecord | None = None
    previous_stable: StableRecord | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    lease: dict[str, Any] | None = None
    location: str = ""
    """Where the platform keeps the record (the local state directory; empty on kserve)."""


def rollback_command(status: Status) -> str:
    """The ``llm-rollout rollback`` command line that restores this service, with the flags it needs."""
    import shlex

    if status.platform == "local":
        where = f" --state-dir {shlex.quote(status.location)}" if status.location else ""
        return f"llm-rollout rollback {shlex.quote(status.name)} --platform local{where}"
    return f"llm-rollout rollback {shlex.quote(status.name)} -n {shlex.quote(status.namespace)}"


def stop_command(status: Status) -> str:
    """The ``llm-rollout stop`` command line that stops a local service's servers (local platform only)."""
    import shlex

    where = f" --state-dir {shlex.quote(status.location)}" if status.location else ""
    return f"llm-rollout stop {shlex.quote(status.name)}{where}"


def format_status(status: Status) -> str:
    """Renders a :class:`Status` for a terminal (both platforms)."""
    where = f"  {status.url}" if status.url else ""
    head = f"{status.kind} {status.namespace}/{status.name}{where}"
    lines = [head + (f"  (state in {status.location})" if status.location else "")]
    if status.lease:
        lease = status.lease
        state = "expired" if lease.get("expired") else "until " + str(lease.get("expires", ""))
        lines.append(f"rollout in progress: run {lease.get('holder')} ({state})")
    lines += ["", f"{'ROLE':9} {'MEMBER':40} {'TRAFFIC':>7}  {'READY':5}  MODEL"]
    for r in status.revisions:
        traffic = "" if r.traffic_percent is None else f"{r.traffic_percent}%"
        lines.append(f"{r.role:9} {r.member:40} {traffic:>7}  {'yes' if r.ready else 'no':5}  {r.model_uri}")
        if not r.ready and r.reason:
            lines.append(f"{'':9} not ready: {r.reason}")
        for c in r.not_ready:
            if c.get("reason") or c.get("message"):
                lines.append(f"{'':9}   {c.get('type')}: {c.get('reason', '')} {c.get('message', '')}".rstrip())
    if status.platform == "local" and any(r.ready for r in status.revisions):
        # A server left up (run-local --keep-serving, a local rollback) runs until it is stopped.
        lines.append(f"the running servers keep serving until stopped: `{stop_command(status)}`")
    lines.append("")
    stable = status.stable
    if stable:
        digest = f", digest {stable.artifact_digest}" if stable.artifact_digest else ""
        lines.append(
            f"stable: {stable.member} ({stable.model_uri}{digest}), promoted {stable.promoted_at} "
            f"by run {stable.run_id}: {' '.join(str(stable.summary or 'pass').split())}"
        )
        # kserve keeps the evidence of a ``scaling.target: auto`` target in the record's extra fields.
        evidence = (stable.model_extra or {}).get("autoscaling")
        if isinstance(evidence, dict):
            lines.append(describe_autoscaling(evidence))
        # The canary steps' live analyses (validation/analysis_steps.py live_record): per interval, the
        # requests per side and each ratio with its interval.
        analysis = (stable.model_extra or {}).get("analysis")
        if isinstance(analysis, list) and analysis:
            lines += ["live analysis of the canary steps:", *(f"  {line}" for line in analysis)]
    else:
        lines.append("stable: never promoted by llm-rollout")
    prev = status.previous_stable
    if prev:
        lines.append(f"previous stable: {prev.member} ({prev.model_uri}) - `{rollback_command(status)}` restores it")
    if status.history:
        lines += ["", "last promotions and rollbacks:"]
        for h in status.history[:10]:
            # One line per entry whatever the reason holds (a multi-line summary would break the table).
            why = " ".join(str((h.summary if h.action == "promote" else h.reason) or "").split())
            lines.append(f"  {h.at:20} {h.action:9} {h.member or '':40} run {h.run_id}" + (f": {why}" if why else ""))
    return "\n".join(lines)


@dataclass
class ValidationTarget:
    """What validate-deployment measures for one deployment record.

    Attributes:
        endpoint_url: The new revision's own address (reachable from where the step runs).
        served_model_name: The ``model`` name requests send.
        stable_url: The stable revision's own address while it serves (the comparison), or None.
        metrics_urls: The new revision's Prometheus endpoints (per role for llm-d).
        guard: Entered around the measurement: on kserve, a SIGTERM (KFP cancelling the run)
            rolls the new revision back before the step exits.
    """

    endpoint_url: str
    served_model_name: str
    stable_url: str | None = None
    metrics_urls: dict[str, str] = field(default_factory=dict)
    guard: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext


Gate = Callable[[int], tuple[str, str]]
"""A stepped-promotion gate: traffic percent -> (verdict, summary) measured at that step."""


class Platform(Protocol):
    """Where the model serves; one instance per step, made by :func:`platform_for`."""

    spec: RolloutSpec

    def register(self) -> str:
        """Registers the vLLM runtime (or checks the local vLLM); returns the runtime's name."""
        ...

    def deploy(self, model: ModelRef, *, run_id: str) -> DeploymentRecord:
        """Rolls the model out beside the stable revision and waits until it serves.

        A model that already is the stable one returns a record with ``already_promoted``.
        """
        ...

    def validation_target(self, record: DeploymentRecord) -> ValidationTarget:
        """What validate-deployment measures for ``record``."""
        ...

    def promote(self, record: DeploymentRecord, verdict: ValidationConclusion, *, run_id: str) -> Outcome:
        """Makes the new revision stable; refuses unless the verdict passed."""
        ...

    def rollback(self, record: DeploymentRecord, *, reason: str, run_id: str) -> Outcome:
        """Removes the new revision; the stable one stays exactly as it was."""
        ...

    def finalize(self, *, run_id: str, state: str, error: str) -> Outcome:
        """The exit handler: rolls back what ``run_id`` deployed but did not promote."""
        ...

    def status(self) -> Status:
        """The service's revisions, stable record and history."""
        ...

    def restore_previous(self, *, run_id: str, timeout_s: float) -> Outcome:
        """Puts the previous stable model back (``llm-rollout rollback NAME``)."""
        ...


def platform_for(spec: RolloutSpec, **options: Any) -> Platform:
    """The platform ``spec.platform`` names, for ``spec``.

    Args:
        spec: The parsed rollout spec.
        options: Passed to the platform (kserve: ``client``, a :class:`~llm_rollout.kube.KubeClient`).
    """
    if spec.platform == "local":
        from llm_rollout.local.platform import LocalPlatform

        return LocalPlatform(spec, **options)
    from llm_rollout.kserve.platform import KServePlatform

    return KServePlatform(spec, **options)


@contextlib.contextmanager
def no_guard() -> Iterator[None]:
    """A :attr:`ValidationTarget.guard` that does nothing (the local platform's)."""
    yield
