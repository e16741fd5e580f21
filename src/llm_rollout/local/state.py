"""The local platform's state directory: promotions, history and the servers it started.

Layout (``spec.local.state_dir``, default ``~/.local/state/llm-rollout``)::

    state.json              :class:`LocalState`: {"format", "service", "generation", "stable",
                            "previous_stable", "history"}: what is promoted (a
                            :class:`~llm_rollout.platform.StableRecord`, with what restarting it
                            takes as extras: ``spec``, ``local_args``), what was before, and every
                            promotion and rollback (:class:`~llm_rollout.platform.HistoryEntry`),
                            newest first. Changed only by promote and rollback.
    state.lock              flock(2)ed while state.json or servers/ is read-modified-written,
                            so that two runs (two processes) never interleave.
    runtime.json            the registered runtime: vLLM interpreter, version, checked args.
    servers/<member>.json   :class:`ServerRecord`, one per vLLM server started and not yet
                            stopped: pid, pgid, start time, host, port, endpoint, model, role
                            (candidate|stable|baseline), log.
    logs/<member>.log       the server's stdout and stderr (kept after it stops; pruned).
    vllm_site/sitecustomize.py   put on the servers' PYTHONPATH (AMX permission, see
                            :mod:`llm_rollout.local.server`).

Every file is written atomically (temporary file in the same directory, fsync, ``os.replace``),
so a reader never sees half a file and a crash leaves either the old or the new content.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_rollout.errors import DeadlineExceeded, PermanentError
from llm_rollout.platform import HistoryEntry, StableRecord
from llm_rollout.spec import LocalSpec

STATE_FORMAT = 1
HISTORY_LIMIT = 500
"""History entries kept in state.json (newest first)."""
LOGS_KEPT = 30
"""Server log files kept in logs/ (newest first); older ones are deleted on deploy."""
STATE_DIR_ENV = "LLM_ROLLOUT_STATE_DIR"
"""Fallback state directory when none is passed (``llm-rollout run-local`` sets it for its steps)."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def json_safe(value: Any) -> Any:
    """Returns ``value`` with non-finite floats as None and unknown objects as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes ``data`` as JSON to ``path`` atomically (temp file + fsync + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(json_safe(data), fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any | None:
    """Reads a JSON file; None when it does not exist.

    Raises:
        PermanentError: When it exists but is not valid JSON (it is never overwritten then).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        raise PermanentError(
            f"{path} is not valid JSON ({err}); fix or move it away, it is never overwritten"
        ) from None


class LocalState(BaseModel):
    """``state.json``: what is promoted, what was before, and the history.

    Attributes:
        format: The file's format version.
        service: The service this state directory belongs to (set by the first promote/rollback).
        generation: Counts promotions and restores (a deploy records it; promote compares).
        stable: What serves as stable; its extras ``spec`` and ``local_args`` restart it.
        previous_stable: What ``llm-rollout rollback`` restores.
        history: Every promotion and rollback, newest first.
    """

    model_config = ConfigDict(extra="allow")

    format: int = STATE_FORMAT
    service: str | None = None
    generation: int = 0
    stable: StableRecord | None = None
    previous_stable: StableRecord | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def stable_member(self) -> str | None:
        """The stable revision's member, or None before the first promotion."""
        return self.stable.member if self.stable else None

    def to_json(self) -> dict[str, Any]:
        """The file's content: history entries without their empty fields, capped at :data:`HISTORY_LIMIT`."""
        data = self.model_dump(mode="json", exclude={"history"})
        data["history"] = [h.model_dump(mode="json", exclude_none=True) for h in self.history[:HISTORY_LIMIT]]
        return data


class ServerRecord(BaseModel):
    """``servers/<member>.json``: one vLLM server this platform started and has not stopped.

    Attributes:
        member: The server's id (a candidate's is the deployment record's ``member``).
        service: The service it serves.
        role: ``candidate`` (being validated), ``stable`` (promoted) or ``baseline`` (what
            validation compares against; never promoted or rolled back).
        status: ``starting`` until it serves, then ``serving``.
        pid: The server's pid; it leads its own process group.
        pgid: Its process group (== pid).
        start_time: The pid's start time (guards against pid reuse).
        marker: The value of ``LLM_ROLLOUT_SERVER`` in its environment (identity check).
        endpoint_url: Its address.
        command: The full command it was started with (a rerun with the same command reuses it).
        spec: The spec it was started with (what restoring it takes; secret references only).
        local_args: The local-only vLLM arguments it was started with.
    """

    model_config = ConfigDict(extra="allow")

    member: str
    service: str = ""
    role: str = "candidate"
    status: str = "starting"
    pid: int = 0
    pgid: int = 0
    start_time: int | None = None
    marker: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    endpoint_url: str = ""
    model_uri: str = ""
    revision: str = ""
    served_model_name: str = ""
    run_id: str = ""
    command: list[str] = Field(default_factory=list)
    log: str = ""
    started_at: str = ""
    spec: dict[str, Any] | None = None
    local_args: list[str] | None = None
    ready_after_s: float | None = None


def resolve_state_dir(state_dir: str | Path | None = None) -> StateDir:
    """The state directory: ``state_dir``, ``$LLM_ROLLOUT_STATE_DIR`` or the LocalSpec default."""
    return StateDir(state_dir or os.environ.get(STATE_DIR_ENV) or LocalSpec().state_dir)


class StateDir:
    """Access to one state directory.

    Args:
        root: The directory (``~`` is expanded; created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    # Paths -----------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        """``state.json``."""
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        """``state.lock``."""
        return self.root / "state.lock"

    @property
    def runtime_file(self) -> Path:
        """``runtime.json``."""
        return self.root / "runtime.json"

    @property
    def servers_dir(self) -> Path:
        """``servers/``."""
        return self.root / "servers"

    @property
    def logs_dir(self) -> Path:
        """``logs/``."""
        return self.root / "logs"

    def server_file(self, member: str) -> Path:
        """``servers/<member>.json``."""
        return self.servers_dir / f"{member}.json"

    def log_file(self, member: str) -> Path:
        """``logs/<member>.log``."""
        return self.logs_dir / f"{member}.log"

    # Locking ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 120.0) -> Iterator[None]:
        """Holds the state lock (an exclusive ``flock``) for the block.

        Raises:
            DeadlineExceeded: When another run holds it for longer than ``timeout_s``.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise DeadlineExceeded(
                            f"another run holds {self.lock_file} for more than {timeout_s:.0f} s; "
                            "wait for it to finish (or check for a hung llm-rollout process)"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # state.json --------------------------------------------------------------------------------

    def read_state(self) -> LocalState:
        """The state (a fresh, empty one when state.json does not exist yet).

        Raises:
            PermanentError: state.json is not an llm-rollout state file.
        """
        data = read_json(self.state_file)
        if data is None:
            return LocalState()
        if not isinstance(data, dict) or "history" not in data:
            raise PermanentError(f"{self.state_file} is not an llm-rollout state file; move it away")
        try:
            return LocalState.model_validate(data)
        except ValidationError as err:
            raise PermanentError(f"{self.state_file} is not an llm-rollout state file ({err}); move it away") from None

    def write_state(self, state: LocalState) -> None:
        """Writes state.json atomically (history capped at :data:`HISTORY_LIMIT`)."""
        write_json_atomic(self.state_file, state.to_json())

    def check_service(self, state: LocalState, service: str) -> None:
        """Refuses to mix two services in one state directory.

        Raises:
            PermanentError: When state.json belongs to another service.
        """
        owner = state.service
        if owner and owner != service:
            raise PermanentError(
                f"state dir {self.root} records service {owner!r}, not {service!r}; "
                "give each service its own local.state_dir"
            )

    # servers/ ----------------------------------------------------------------------------------

    def read_server(self, member: str) -> ServerRecord | None:
        """The server record of ``member``, or None."""
        return _server_record(read_json(self.server_file(member)))

    def write_server(self, info: ServerRecord) -> None:
        """Writes ``servers/<member>.json`` atomically."""
        write_json_atomic(self.server_file(info.member), info.model_dump(mode="json"))

    def remove_server(self, member: str) -> None:
        """Deletes ``servers/<member>.json`` (no error when it is gone)."""
        with contextlib.suppress(FileNotFoundError):
            self.server_file(member).unlink()

    def servers(self) -> list[ServerRecord]:
        """Every server record, oldest start first (unreadable files are skipped)."""
        out = []
        if self.servers_dir.is_dir():
            for path in self.servers_dir.glob("*.json"):
                with contextlib.suppress(PermanentError):
                    info = _server_record(read_json(path))
                    if info is not None:
                        out.append(info)
        return sorted(out, key=lambda s: s.started_at)

    def prune_logs(self, keep: int = LOGS_KEPT) -> None:
        """Deletes all but the newest ``keep`` server logs whose server is not recorded."""
        if not self.logs_dir.is_dir():
            return
        live = {s.member for s in self.servers()}
        logs = sorted(self.logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in logs[keep:]:
            if path.stem not in live:
                with contextlib.suppress(OSError):
                    path.unlink()


def _server_record(data: Any) -> ServerRecord | None:
    if not isinstance(data, dict) or not data.get("member"):
        return None
    try:
        return ServerRecord.model_validate(data)
    except ValidationError:
        return None
