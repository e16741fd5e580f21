"""The local platform behind :class:`llm_rollout.platform.Platform`: vLLM servers on this machine.

:class:`LocalPlatform` is what :func:`llm_rollout.platform.platform_for` returns for
``platform: local``. Each method is one pipeline step (or ``llm-rollout status`` /
``llm-rollout rollback``) acting on the state directory ``spec.local.state_dir``: deploy starts a
vLLM server beside the stable one, promote records it as stable in ``state.json`` and stops the
server it replaced, rollback stops the candidate, finalize rolls back what a run left behind.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_rollout import local
from llm_rollout.platform import (
    HistoryEntry,
    ModelRef,
    Outcome,
    RevisionStatus,
    StableRecord,
    Status,
    ValidationTarget,
    Verdict,
    no_guard,
)
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec

log = logging.getLogger(__name__)

_LAUNCH_KEYS = ("spec", "local_args")
"""What a stable entry keeps to restart its server; not shown by ``status``."""


class LocalPlatform:
    """The ``local`` platform for one spec: vLLM processes and a state directory.

    Args:
        spec: The parsed rollout spec; ``spec.local.state_dir`` is the state directory.
    """

    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec
        self.state = local.resolve_state_dir(spec.local.state_dir)

    @property
    def _state_dir(self) -> str:
        return str(self.state.root)

    # register / deploy ---------------------------------------------------------------------------

    def register(self) -> str:
        """Checks the vLLM environment and the server arguments with vLLM's own parser.

        Returns:
            The runtime's name.
        """
        runtime = local.register_runtime_local(self.spec)
        log.info("vLLM %s in %s", runtime.get("vllm_version"), runtime.get("vllm_python"))
        return str(runtime["runtime_name"])

    def deploy(self, model: ModelRef, *, run_id: str) -> DeploymentRecord:
        """Starts a vLLM server for the model beside the stable one and waits until it serves.

        The model's content digest (``model.digest``, else computed from its directory) equal to
        the stable model's means nothing is started: the record says ``already_promoted``.
        """
        digest = model.digest or _digest_of(model.path)
        already = self._already_promoted(model, digest, run_id)
        if already is not None:
            return already
        spec = self.spec
        if digest and not spec.model.digest:
            spec = spec.model_copy(update={"model": spec.model.model_copy(update={"digest": digest})})
        return local.deploy_local(spec, model_dir=model.path or model.uri, run_id=run_id)

    def _already_promoted(self, model: ModelRef, digest: str | None, run_id: str) -> DeploymentRecord | None:
        """The record of a model that already is the stable one (same digest), else None."""
        if not digest:
            return None
        stable = self.state.read_state().get("stable") or {}
        if stable.get("artifact_digest") != digest:
            return None
        return DeploymentRecord(
            platform="local",
            kind="LocalServer",
            name=self.spec.service_name,
            namespace="local",
            member=stable["member"],
            revision=stable.get("revision", ""),
            model_uri=stable.get("model_uri", model.path),
            served_model_name=stable.get("served_model_name", self.spec.served_model_name),
            endpoint_url=stable.get("endpoint_url", ""),
            run_id=run_id,
            artifact_digest=digest,
            already_promoted=True,
        )

    def validation_target(self, record: DeploymentRecord) -> ValidationTarget:
        """The candidate server's own address, and the stable server's while it serves."""
        return ValidationTarget(
            endpoint_url=record.endpoint_url,
            served_model_name=record.served_model_name,
            stable_url=record.stable.endpoint_url if record.stable and record.stable.endpoint_url else None,
            metrics_urls=dict(record.metrics_urls),
            guard=no_guard,
        )

    # promote / rollback / finalize ---------------------------------------------------------------

    def promote(self, record: DeploymentRecord, verdict: Verdict, *, run_id: str) -> Outcome:
        """Records the candidate as stable (with the verdict's metrics and report) and stops the old server.

        Raises:
            PermanentError: The verdict is not ``pass``, the candidate is not running, or the
                stable model changed since deploy.
        """
        result = local.promote_local(
            record,
            verdict=verdict.verdict,
            metrics=verdict.metrics,
            report_path=verdict.report_path,
            run_id=run_id,
            state_dir=self._state_dir,
            summary=verdict.summary,
        )
        if result["action"] == "none":
            return Outcome(
                action="none", message=f"already promoted: {record.member}", member=record.member, stable=record.member
            )
        stopped = list(result["stopped"])
        return Outcome(
            action="promote",
            message=(
                f"promoted {record.member} ({record.model_uri}); stopped {', '.join(stopped) or 'nothing'}; "
                f"state in {result['state_file']}"
            ),
            member=record.member,
            stable=record.member,
            stopped=stopped,
        )

    def rollback(self, record: DeploymentRecord, *, reason: str, run_id: str) -> Outcome:
        """Stops the candidate's server; the stable one stays exactly as it was."""
        result = local.rollback_local(record, reason, run_id=run_id, state_dir=self._state_dir)
        kept = result.get("stable")
        if result["action"] == "none":
            return Outcome(
                action="none",
                message=f"nothing to roll back for {record.member} (already rolled back or promoted)",
                member=record.member,
                stable=kept,
            )
        return Outcome(
            action="rollback",
            message=f"rolled back {record.member}; stable stays {kept or 'nothing (first rollout)'}",
            member=record.member,
            stable=kept,
            stopped=[record.member] if result.get("stopped") else [],
        )

    def finalize(self, *, run_id: str, state: str, error: str) -> Outcome:
        """Rolls back every candidate server of ``run_id`` that was not promoted."""
        stable = (self.state.read_state().get("stable") or {}).get("member")
        reason = f"run ended {state or 'without promoting it'}" + (f": {error}" if error else "")
        done = []
        for info in self.state.servers():
            if info.get("run_id") != run_id or info.get("role") != "candidate" or info["member"] == stable:
                continue
            record = DeploymentRecord(
                platform="local",
                kind="LocalServer",
                name=info.get("service") or self.spec.service_name,
                namespace="local",
                member=info["member"],
                revision=info.get("revision", ""),
                model_uri=info.get("model_uri", ""),
                served_model_name=info.get("served_model_name", self.spec.served_model_name),
                endpoint_url=info.get("endpoint_url", ""),
                run_id=run_id,
            )
            local.rollback_local(record, reason, run_id=run_id, state_dir=self._state_dir)
            done.append(info["member"])
        if not done:
            return Outcome(action="none", message="nothing left to clean up", stable=stable)
        return Outcome(action="finalize", message=f"rolled back {', '.join(done)}", stable=stable, stopped=done)

    # status / restore_previous -------------------------------------------------------------------

    def status(self) -> Status:
        """The servers the state directory knows, the stable record and the history."""
        st = self.state.read_state()
        revisions = []
        serving = None
        stable_member = (st.get("stable") or {}).get("member")
        for info in self.state.servers():
            alive = local.server_alive(info)
            role = info.get("role") or "candidate"
            revisions.append(
                RevisionStatus(
                    member=info["member"],
                    role=role if role in ("stable", "candidate", "baseline") else "candidate",
                    model_uri=info.get("model_uri") or "",
                    revision=info.get("revision") or "",
                    run_id=info.get("run_id") or "",
                    ready=alive,
                    reason="" if alive else "the server is not running",
                    endpoint_url=info.get("endpoint_url"),
                )
            )
            if alive and info["member"] == stable_member:
                serving = info.get("endpoint_url")
        return Status(
            platform="local",
            kind="LocalServer",
            name=st.get("service") or self.spec.service_name,
            namespace="local",
            url=serving,
            revisions=revisions,
            stable=_stable_record(st.get("stable")),
            previous_stable=_stable_record(st.get("previous_stable")),
            history=[HistoryEntry.model_validate(h) for h in st.get("history", [])],
            location=str(self.state.root),
        )

    def restore_previous(self, *, run_id: str, timeout_s: float) -> Outcome:
        """Puts the previous promoted model back; see :func:`llm_rollout.local.rollback_to_previous_local`."""
        result = local.rollback_to_previous_local(self._state_dir, run_id=run_id, timeout_s=timeout_s)
        return Outcome(
            action="rollback",
            message=result["message"],
            member=result["member"],
            stable=result["member"],
            stopped=[result["previous"]] if result["stopped"] else [],
        )


def _stable_record(entry: dict | None) -> StableRecord | None:
    """A stable entry of ``state.json`` as shown by ``status`` (without its launch data)."""
    if not entry:
        return None
    return StableRecord.model_validate({k: v for k, v in entry.items() if k not in _LAUNCH_KEYS})


def _digest_of(path: str) -> str | None:
    """The content digest of the model directory ``path`` (None when it is not a directory)."""
    from llm_rollout.model_files import model_digest

    return model_digest(path) if path and Path(path).is_dir() else None
