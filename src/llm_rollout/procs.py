"""Process helpers for the child processes the library and the tests start (vLLM, optimize, API server).

The one place for stopping a process group (:func:`stop_group`), finding a free port
(:func:`free_port`) and reading the end of a child's log (:func:`log_tail`); the test fixtures
use these too.

Every long-lived child is started in its own session (``start_new_session=True``), so it leads its
own process group whose id equals its pid. vLLM forks helpers (the engine core, its worker, a
multiprocessing resource tracker) into that group, so signalling the *group* stops the whole tree,
and "no orphan left" can be checked by asking whether any process of the group is still there.

Before a group recorded in a file by another process is signalled, :func:`is_our_process` checks
that its leader is still the process we started (same start time, same marker in its environment),
so that a reused pid is never killed by mistake.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

LOOPBACK = "127.0.0.1"
LOG_TAIL_LINES = 30
"""Lines of a child's log shown in an error message."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives inside :func:`sigterm_raises`.

    It subclasses :class:`KeyboardInterrupt` so that the cleanup written for Ctrl-C (``except
    BaseException`` / ``finally``) runs for SIGTERM too.
    """


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or len(fields) < 3:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int | None) -> bool:
    """Tells whether any live process is left in process group ``pgid``."""
    return bool(pgid) and bool(group_members(int(pgid)))


def pid_alive(pid: int | None) -> bool:
    """Tells whether ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    fields = _stat_fields(int(pid))
    return fields is not None and fields[0] not in ("Z", "X")


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty when it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def is_our_process(pid: int, *, start_time: int | None, marker: tuple[str, str] | None = None) -> bool:
    """Tells whether ``pid`` is still the process that was recorded (guards against pid reuse).

    Args:
        pid: The recorded pid.
        start_time: The recorded :func:`proc_start_time`; None skips that check.
        marker: ``(NAME, VALUE)`` that must be in the process's environment; None skips it.

    Returns:
        True when the process is alive and matches.
    """
    if not pid_alive(pid):
        return False
    if start_time is not None and proc_start_time(pid) != start_time:
        return False
    if marker is not None:
        name, value = marker
        env = environ_of(pid)
        if env and env.get(name) != value:
            return False
    return True


def marked_members(pgid: int, marker: tuple[str, str]) -> list[int]:
    """Live members of ``pgid`` whose environment carries ``marker`` (the leader may be gone)."""
    name, value = marker
    return [pid for pid in group_members(pgid) if environ_of(pid).get(name) == value]


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, *, grace_s: float = 20.0, proc: subprocess.Popen | None = None, kill: bool = False) -> bool:
    """Stops process group ``pgid``: SIGTERM, then SIGKILL after ``grace_s``; waits until it is gone.

    Args:
        pgid: The group (the leader's pid, for children started with ``start_new_session``).
        grace_s: How long the group may take to shut down cleanly before it is killed.
        proc: The leader's :class:`subprocess.Popen` when this process started it; it is reaped
            so that no zombie is left behind.
        kill: SIGKILL at once (a crash) instead of SIGTERM first.

    Returns:
        True when nothing of the group is left.
    """
    if group_alive(pgid) and not kill:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and group_alive(pgid):
            _reap(proc)
            time.sleep(0.1)
    if group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and group_alive(pgid):
            _reap(proc)
            time.sleep(0.1)
    _reap(proc, block=True)
    # Zombies (already dead children of a dead leader) are reaped by init; wait briefly so that
    # os.killpg(pgid, 0) also reports the group gone.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            break
        time.sleep(0.05)
    return not group_alive(pgid)


def _reap(proc: subprocess.Popen | None, *, block: bool = False) -> None:
    if proc is None:
        return
    try:
        if block:
            proc.wait(timeout=5)
        else:
            proc.poll()
    except subprocess.TimeoutExpired:
        pass


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (like Ctrl-C).

    Outside the main thread (where handlers cannot be installed) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Terminated(f"received signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Ports and logs ----------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Tells whether something listens on ``host:port`` (a bind with SO_REUSEADDR fails)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a log file (progress-bar noise folded), or ``(no log)``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    out = []
    for raw in text.splitlines():
        line = raw.rsplit("\r", 1)[-1].rstrip()
        if line:
            out.append(line[:600])
    return "\n".join(out[-lines:])
