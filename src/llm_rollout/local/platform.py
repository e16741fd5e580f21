"""The local platform behind :class:`llm_rollout.platform.Platform`: vLLM servers on this machine.

:class:`LocalPlatform` is what :func:`llm_rollout.platform.platform_for` returns for
``platform: local``. Each method is one pipeline step (or ``llm-rollout status`` /
``llm-rollout rollback``) acting on the state directory ``spec.local.state_dir``
(:mod:`llm_rollout.local.state`):

* :meth:`~LocalPlatform.register` finds the vLLM interpreter (:func:`llm_rollout.envs.vllm_python`),
  parses the server arguments with vLLM's own parser in that interpreter and records them in
  ``runtime.json``.
* :meth:`~LocalPlatform.deploy` starts ``python -m vllm.entrypoints.openai.api_server`` with the
  arguments :func:`llm_rollout.vllm_args.server_args` builds for every platform (GPU-only flags
  dropped and logged as warnings), on a free port, waits until ``/health`` answers and
  ``/v1/models`` lists the model (:mod:`llm_rollout.local.server`), and returns the same
  :class:`~llm_rollout.record.DeploymentRecord` as the kserve platform (kind ``LocalServer``).
  Canary = the new server starts *beside* the stable one. A model whose digest is the stable
  one's starts nothing (``already_promoted``).
* :meth:`~LocalPlatform.promote` records the promotion in ``state.json`` (a
  :class:`~llm_rollout.platform.StableRecord` with the verdict's metrics and report) and stops the
  superseded server; :meth:`~LocalPlatform.rollback` stops the candidate and keeps the stable one;
  :meth:`~LocalPlatform.finalize` rolls back what a run left behind.
* :meth:`~LocalPlatform.status` and :meth:`~LocalPlatform.restore_previous` serve ``llm-rollout
  status`` and ``llm-rollout rollback``.

A stable model whose server is no longer running (the previous run ended without
``keep_serving``) stays promoted in ``state.json``; the next deploy is then not a canary
(``canary=False``, nothing serves beside it) and its record's ``stable`` names the promoted model
with ``endpoint_url=None``. ``state.json`` is only changed by promote, rollback and
restore_previous, so an interrupted run leaves it as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.local import server
from llm_rollout.local.live import analysed_steps
from llm_rollout.local.runtime import register_runtime
from llm_rollout.local.server import server_alive, server_healthy, stop_server
from llm_rollout.local.state import (
    LocalState,
    ServerRecord,
    StateDir,
    now_iso,
    resolve_state_dir,
)
from llm_rollout.model_files import check_model_dir, model_digest
from llm_rollout.names import member_name
from llm_rollout.platform import (
    HistoryEntry,
    ModelRef,
    Outcome,
    RevisionStatus,
    StableRecord,
    Status,
    ValidationConclusion,
    ValidationTarget,
    no_guard,
)
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import RolloutSpec, parse_spec
from llm_rollout.validation.analysis_steps import StepAnalysis, live_record

log = logging.getLogger(__name__)

LAUNCH_KEYS = ("spec", "local_args")
"""A stable record's extras that restart its server (kept once, not in history, not shown by status)."""


class LocalPlatform:
    """The ``local`` platform for one spec: vLLM processes and a state directory.

    Args:
        spec: The parsed rollout spec; ``spec.local.state_dir`` is the state directory.
        router_port: The service's port, where promote's weighted router listens during a stepped
            promotion with live analysis (0: ``local.service_port``; that 0 too: a free one, logged).
    """

    def __init__(self, spec: RolloutSpec, *, router_port: int = 0) -> None:
        self.spec = spec
        self.router_port = router_port or spec.local.service_port
        self.state: StateDir = resolve_state_dir(spec.local.state_dir)

    # register-runtime ----------------------------------------------------------------------------

    def register(self) -> str:
        """Checks the vLLM environment and the server arguments with vLLM's own parser.

        Returns:
            The runtime's name.
        """
        runtime = self.register_runtime()
        log.info("vLLM %s in %s", runtime.get("vllm_version"), runtime.get("vllm_python"))
        return str(runtime["runtime_name"])

    def register_runtime(self, *, local_args: list[str] | None = None) -> dict[str, Any]:
        """Checks and records the runtime: :func:`llm_rollout.local.runtime.register_runtime`."""
        return register_runtime(self.spec, self.state, local_args=local_args)

    # deploy-model --------------------------------------------------------------------------------

    def deploy(
        self, model: ModelRef, *, run_id: str, port: int = 0, local_args: list[str] | None = None
    ) -> DeploymentRecord:
        """Starts a vLLM server for the model beside the stable one and waits until it serves.

        The model's content digest (``model.digest``, else computed from its directory) equal to
        the stable model's means nothing is started: the record says ``already_promoted``.

        Args:
            model: The model; its ``path`` (else its ``uri``) is the directory served.
            run_id: The pipeline run (part of the server's member name).
            port: Listen port; 0 picks a free one.
            local_args: Local-only vLLM arguments (default :data:`~llm_rollout.local.server.LOCAL_VLLM_ARGS`).
        """
        digest = model.digest or _digest_of(model.path)
        already = self._already_promoted(model, digest, run_id)
        if already is not None:
            return already
        return self.start_candidate(model.path or model.uri, run_id=run_id, port=port, local_args=local_args,
                                    digest=digest)  # fmt: skip

    def _already_promoted(self, model: ModelRef, digest: str | None, run_id: str) -> DeploymentRecord | None:
        """The record of a model that already is the stable one (same digest), else None."""
        stable = self.state.read_state().stable
        if not digest or stable is None or stable.artifact_digest != digest:
            return None
        return DeploymentRecord(
            platform="local",
            kind="LocalServer",
            name=self.spec.service_name,
            namespace="local",
            member=stable.member,
            revision=stable.revision,
            model_uri=stable.model_uri or model.path,
            served_model_name=stable.served_model_name or self.spec.served_model_name,
            endpoint_url=stable.endpoint_url or "",
            run_id=run_id,
            artifact_digest=digest,
            already_promoted=True,
        )

    def start_candidate(
        self,
        model_dir: str,
        *,
        run_id: str = "",
        port: int = 0,
        local_args: list[str] | None = None,
        revision: str = "",
        digest: str | None = None,
    ) -> DeploymentRecord:
        """Starts a candidate server for ``model_dir`` (beside the stable one, if any); no digest check.

        Rerun-safe: when the server for the same member (service, revision, run) is already up with
        the same model and arguments, it is reused.

        Args:
            model_dir: The model directory (or ``file://`` URI).
            run_id: The pipeline run (part of the member name: every run gets its own server).
            port: Listen port; 0 picks a free one (and another if it is taken meanwhile). A fixed
                port that is in use is an error.
            local_args: Local-only vLLM arguments (default :data:`~llm_rollout.local.server.LOCAL_VLLM_ARGS`).
            revision: Short id of this model revision; derived from the model files when empty.
            digest: The model's content digest (default ``spec.model.digest``).

        Returns:
            The deployment record (platform ``local``, kind ``LocalServer``, namespace ``local``):
            ``endpoint_url`` is the new server, ``service_url`` the stable server while one serves
            (else the new one), ``canary`` tells whether a stable server serves beside it, and
            ``stable`` names what was promoted before (``endpoint_url`` None when it is not running).

        Raises:
            PermanentError: Not a model directory, no vLLM environment, fixed port in use, or vLLM
                failed to start (its last log lines included; its process group is gone).
            DeadlineExceeded: Not ready within ``spec.local.startup_timeout_s`` (the server is stopped).
        """
        spec = self.spec
        if digest and not spec.model.digest:
            spec = spec.model_copy(update={"model": spec.model.model_copy(update={"digest": digest})})
        path = check_model_dir(model_dir, field="model_dir")
        python = server.vllm_python(spec)
        if port and not 0 < int(port) < 65536:
            raise SpecError("port", f"{port} is not a TCP port", "give 1-65535, or 0 to pick a free one")
        state, service = self.state, spec.service_name
        revision = revision or spec.model.revision or server.revision_for(path, spec.model.digest)
        member = member_name(service, f"{revision}@{run_id}" if run_id else revision)
        with state.lock():
            st = state.read_state()
            state.check_service(st, service)
            stable, stable_server = _find_stable(state, st)
            existing = state.read_server(member)
        if stable is not None and stable.member == member:
            stable, stable_server = None, None
        if stable_server is not None:
            log.info("canary: %s starts beside the stable %s (%s)", member, stable.member, stable_server.endpoint_url)
        elif stable is not None:
            log.info("the stable %s is not running: %s is not a canary (nothing serves beside it)", stable.member,
                     member)  # fmt: skip
        else:
            log.info("first rollout of %s: no stable model yet", service)
        plan = server.Launch(spec=spec, state=state, python=python, path=path, member=member, revision=revision,
                             run_id=run_id, local_args=local_args, role="candidate")  # fmt: skip
        info = server.launch(plan, port=port, existing=existing)
        stable_ref = None
        if stable is not None:
            stable_ref = StableRef(
                member=stable.member,
                model_uri=stable.model_uri,
                revision=stable.revision,
                resource_version=str(st.generation),
                endpoint_url=stable_server.endpoint_url if stable_server else None,
            )
        return DeploymentRecord(
            platform="local",
            kind="LocalServer",
            name=service,
            namespace="local",
            member=member,
            revision=revision,
            model_uri=str(path),
            served_model_name=spec.served_model_name,
            endpoint_url=info.endpoint_url,
            service_url=stable_server.endpoint_url if stable_server else info.endpoint_url,
            generation=st.generation,
            canary=stable_server is not None,
            traffic_percent=0,
            stable=stable_ref,
            run_id=run_id,
            artifact_digest=spec.model.digest,
            metrics_urls={"server": f"{info.endpoint_url}/metrics"},
        )

    # validate-deployment -------------------------------------------------------------------------

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

    def promote(self, record: DeploymentRecord, verdict: ValidationConclusion, *, run_id: str) -> Outcome:
        """Records the candidate as stable (with the verdict's metrics and report) and stops the old server.

        Rerun-safe: promoting the already promoted member again changes nothing.

        Raises:
            PermanentError: The verdict is not ``pass``, the candidate server is not running, or
                the stable model changed since deploy (another run promoted meanwhile).
        """
        rec = record
        if not verdict.passed:
            raise PermanentError(
                f"refusing to promote {rec.member}: the verdict is {verdict.verdict!r}, not 'pass' (roll back instead)"
            )
        state = self.state
        stopped: list[str] = []
        live = live_record(self._analysed_steps(rec, run_id))  # the steps' live analyses
        with state.lock():
            st = state.read_state()
            state.check_service(st, rec.name)
            current = st.stable
            if current is not None and current.member == rec.member:
                log.info("%s is already the promoted model; nothing to do", rec.member)
                return Outcome(
                    action="none", message=f"already promoted: {rec.member}", member=rec.member, stable=rec.member
                )
            expected = rec.stable.member if rec.stable else None
            if st.stable_member != expected:
                raise PermanentError(
                    f"the stable model changed since {rec.member} was deployed (was {expected}, now "
                    f"{st.stable_member}): another run promoted meanwhile; redeploy to compare against it"
                )
            info = state.read_server(rec.member)
            if info is None or not server_alive(info):
                raise PermanentError(
                    f"the candidate server {rec.member} is not running (stopped, rolled back or cleaned up); "
                    "nothing to promote: redeploy it"
                )
            st.generation += 1
            entry = StableRecord(
                member=rec.member,
                revision=rec.revision,
                model_uri=rec.model_uri,
                served_model_name=rec.served_model_name,
                endpoint_url=rec.endpoint_url,
                artifact_digest=rec.artifact_digest,
                verdict=verdict.verdict,
                summary=verdict.summary,
                metrics=dict(verdict.metrics),
                report_path=verdict.report_path,
                run_id=run_id or rec.run_id,
                promoted_at=now_iso(),
                spec=info.spec,
                local_args=info.local_args,
                generation=st.generation,
                **live,  # (`llm-rollout status` shows them)
            )
            st.service = rec.name
            if current is not None:
                st.previous_stable = current
            st.stable = entry
            shown = entry.model_dump(exclude=set(LAUNCH_KEYS))
            previous = current.member if current else None
            promoted = {"action": "promote", **shown, "at": entry.promoted_at, "previous": previous}
            st.history.insert(0, HistoryEntry.model_validate(promoted))
            state.write_state(st)
            info.role = "stable"
            state.write_server(info)
            if current is not None:
                old = state.read_server(current.member)
                if old is not None:
                    if stop_server(old):
                        stopped.append(current.member)
                    state.remove_server(current.member)
        log.info("promoted %s (%s) in %s; stopped %s", rec.member, rec.model_uri, state.state_file,
                 stopped or "nothing")  # fmt: skip
        return Outcome(
            action="promote",
            message=(
                f"promoted {rec.member} ({rec.model_uri}); stopped {', '.join(stopped) or 'nothing'}; "
                f"state in {state.state_file}"
            ),
            member=rec.member,
            stable=rec.member,
            stopped=stopped,
            analysis=live.get("analysis", []),
            analysis_metrics=live.get("analysis_metrics", {}),
        )

    def _analysed_steps(self, rec: DeploymentRecord, run_id: str) -> list[StepAnalysis]:
        """The stepped canary with live analysis (:func:`llm_rollout.local.live.analysed_steps`)."""
        return analysed_steps(self, rec, run_id)

    def rollback(self, record: DeploymentRecord, *, reason: str, run_id: str) -> Outcome:
        """Stops the candidate's server; the stable one stays exactly as it was; records it.

        Rerun-safe: rolling back the same member twice records it once. A candidate that was
        already promoted is not demoted (a logged no-op).
        """
        rec, state = record, self.state
        with state.lock():
            st = state.read_state()
            state.check_service(st, rec.name)
            stable = st.stable_member
            none = Outcome(
                action="none",
                message=f"nothing to roll back for {rec.member} (already rolled back or promoted)",
                member=rec.member,
                stable=stable,
            )
            if stable == rec.member:
                log.warning("rollback: %s is already promoted; it is not demoted", rec.member)
                return none
            info = state.read_server(rec.member)
            stopped = info is not None and stop_server(info)
            state.remove_server(rec.member)
            if any(h.action == "rollback" and h.member == rec.member for h in st.history):
                log.info("rollback of %s was already recorded", rec.member)
                return none.model_copy(update={"stopped": [rec.member] if stopped else []})
            st.service = rec.name
            st.history.insert(
                0,
                HistoryEntry(
                    action="rollback",
                    at=now_iso(),
                    member=rec.member,
                    revision=rec.revision,
                    model_uri=rec.model_uri,
                    reason=reason,
                    run_id=run_id or rec.run_id,
                    stable=stable,
                ),
            )
            state.write_state(st)
        log.info("rolled back %s (%s); stable stays %s", rec.member, reason or "no reason given", stable)
        return Outcome(
            action="rollback",
            message=f"rolled back {rec.member}; stable stays {stable or 'nothing (first rollout)'}",
            member=rec.member,
            stable=stable,
            stopped=[rec.member] if stopped else [],
        )

    def finalize(self, *, run_id: str, state: str, error: str) -> Outcome:
        """Rolls back every candidate server of ``run_id`` that was not promoted (the exit handler)."""
        stable = self.state.read_state().stable_member
        reason = f"run ended {state or 'without promoting it'}" + (f": {error}" if error else "")
        done = []
        for info in self.state.servers():
            if info.run_id != run_id or info.role != "candidate" or info.member == stable:
                continue
            record = DeploymentRecord(
                platform="local",
                kind="LocalServer",
                name=info.service or self.spec.service_name,
                namespace="local",
                member=info.member,
                revision=info.revision,
                model_uri=info.model_uri,
                served_model_name=info.served_model_name or self.spec.served_model_name,
                endpoint_url=info.endpoint_url,
                run_id=run_id,
            )
            self.rollback(record, reason=reason, run_id=run_id)
            done.append(info.member)
        if not done:
            return Outcome(action="none", message="nothing left to clean up", stable=stable)
        return Outcome(action="finalize", message=f"rolled back {', '.join(done)}", stable=stable, stopped=done)

    # status / restore_previous -------------------------------------------------------------------

    def status(self) -> Status:
        """The servers the state directory knows, the stable record (without its launch data), the history."""
        st = self.state.read_state()
        revisions, url = [], None
        for info in self.state.servers():
            alive = server_alive(info)
            revisions.append(
                RevisionStatus(
                    member=info.member,
                    role=info.role if info.role in ("stable", "candidate", "baseline") else "candidate",
                    model_uri=info.model_uri,
                    revision=info.revision,
                    run_id=info.run_id,
                    ready=alive,
                    reason="" if alive else "the server is not running",
                    endpoint_url=info.endpoint_url or None,
                )
            )
            if alive and info.member == st.stable_member:
                url = info.endpoint_url
        return Status(
            platform="local",
            kind="LocalServer",
            name=st.service or self.spec.service_name,
            namespace="local",
            url=url,
            revisions=revisions,
            stable=_shown(st.stable),
            previous_stable=_shown(st.previous_stable),
            history=list(st.history),
            location=str(self.state.root),
        )

    def restore_previous(self, *, run_id: str, timeout_s: float) -> Outcome:
        """Puts the previous promoted model back (``llm-rollout rollback NAME --platform local``).

        The stable and previous-stable records swap, so running it again goes forward again. When
        the current stable server is running, the previous model is started first (same spec and
        arguments it was promoted with, a free port), and the current server is stopped only once
        the restored one serves; when nothing is serving, only the record changes (the next run
        compares against the restored model).

        Args:
            run_id: Recorded with the rollback.
            timeout_s: Bound on the restored server's startup.

        Raises:
            SpecError: The state directory belongs to another service.
            PermanentError: Nothing promoted, no previous model recorded (or recorded by an older
                version without its spec), its directory gone, a candidate of a run still running,
                the state changed while the restored server started, or vLLM failed to start.
        """
        state = self.state
        with state.lock():
            st = state.read_state()
            if st.service and st.service != self.spec.service_name:
                raise SpecError(
                    "local.state_dir",
                    f"the state directory {state.root} belongs to service {st.service}, not {self.spec.service_name}",
                    f"pass the state directory of {self.spec.service_name} (its spec's local.state_dir)",
                )
            current, prev = st.stable, st.previous_stable
            if current is None:
                raise PermanentError(f"nothing is promoted in {state.state_file}; nothing to roll back")
            if prev is None:
                raise PermanentError(
                    f"{current.member} is the only model promoted in {state.state_file}; nothing to roll back to"
                )
            running = [i.member for i in state.servers() if i.role == "candidate" and server_alive(i)]
            if running:
                raise PermanentError(
                    f"a run is rolling out right now (candidate {', '.join(running)} is running); "
                    "wait for it to finish, then roll back"
                )
            _, current_server = _find_stable(state, st)
        launch = prev.model_extra or {}
        if not launch.get("spec"):
            raise PermanentError(
                f"the previous model {prev.member} was promoted by an older llm-rollout that did not record "
                f"how to start it; run `llm-rollout run-local --model {prev.model_uri}` to validate and promote it"
            )
        path = check_model_dir(prev.model_uri, field="previous stable model")
        info = None
        if current_server is not None:
            spec = parse_spec(launch["spec"])
            spec = spec.model_copy(update={"local": spec.local.model_copy(update={"startup_timeout_s": timeout_s})})
            log.info("rollback: starting the previous model %s (%s) beside %s", prev.member, path, current.member)
            plan = server.Launch(spec=spec, state=state, python=server.vllm_python(spec), path=path, member=prev.member,
                                 revision=prev.revision, run_id=prev.run_id, local_args=launch.get("local_args"),
                                 role="stable")  # fmt: skip
            info = server.launch(plan, port=0, existing=state.read_server(prev.member))
        stopped = False
        with state.lock():
            st = state.read_state()
            if st.stable_member != current.member:
                if info is not None:
                    stop_server(info)
                    state.remove_server(prev.member)
                raise PermanentError(
                    f"the stable model changed while {prev.member} started (now {st.stable_member}); "
                    "nothing was rolled back"
                )
            st.generation += 1
            restored = {**prev.model_dump(), "generation": st.generation}
            if info is not None:
                restored["endpoint_url"] = info.endpoint_url
            st.stable, st.previous_stable = StableRecord.model_validate(restored), current
            st.history.insert(
                0,
                HistoryEntry(
                    action="rollback-to-previous",
                    at=now_iso(),
                    member=prev.member,
                    model_uri=prev.model_uri,
                    reason=f"manual rollback from {current.member}",
                    run_id=run_id,
                    previous=current.member,
                ),
            )
            state.write_state(st)
            if info is not None and info.role != "stable":
                info.role = "stable"
                state.write_server(info)
            if current_server is not None:
                stopped = stop_server(current_server)
                state.remove_server(current.member)
        where = f"serving at {info.endpoint_url}" if info else "not running (nothing was serving)"
        message = (
            f"rolled back to {prev.member} ({prev.model_uri}), {where}; "
            f"{current.member} is the previous model now{' and was stopped' if stopped else ''}"
        )
        log.info("%s", message)
        return Outcome(
            action="rollback",
            message=message,
            member=prev.member,
            stable=prev.member,
            stopped=[current.member] if stopped else [],
        )


def _find_stable(state: StateDir, st: LocalState) -> tuple[StableRecord | None, ServerRecord | None]:
    """(the stable record of ``state.json``, its server's record if it is alive and healthy)."""
    if st.stable is None:
        return None, None
    info = state.read_server(st.stable.member)
    return st.stable, info if server_healthy(info) else None


def _shown(entry: StableRecord | None) -> StableRecord | None:
    """A stable record as ``status`` shows it: without what restarting its server takes."""
    if entry is None:
        return None
    return StableRecord.model_validate(entry.model_dump(exclude=set(LAUNCH_KEYS)))


def _digest_of(path: str) -> str | None:
    """The content digest of the model directory ``path`` (None when it is not a directory)."""
    return model_digest(path) if path and Path(path).is_dir() else None
