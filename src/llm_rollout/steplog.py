"""Step timing and outcome records for a run, and progress lines.

Every library step (``llm_rollout.steps``) runs inside :func:`step`, which prints a progress line
when the step starts and ends and, when ``LLM_ROLLOUT_RUN_LOG`` names a file, appends one JSON
line per step (name, status, seconds, outcome fields). ``llm-rollout run-local`` sets it so that
its closing summary can show each step's status and duration, the verdict and the key metrics
even though kfp.local runs every step in a separate process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUN_LOG_ENV = "LLM_ROLLOUT_RUN_LOG"


def log(message: str) -> None:
    """Prints one progress line (flushed, so it shows up live under kfp.local and in pod logs)."""
    print(f"[llm-rollout] {message}", file=sys.stderr, flush=True)


def _append(record: dict[str, Any]) -> None:
    path = os.environ.get(RUN_LOG_ENV)
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


@contextmanager
def step(name: str) -> Iterator[dict[str, Any]]:
    """Times one step; the yielded dict collects outcome fields for the run log.

    Args:
        name: The step's name (the KFP component name).

    Yields:
        A dict the step fills with what the summary should show (verdict, paths, metrics ...).
    """
    outcome: dict[str, Any] = {}
    started = time.time()
    log(f"{name}: started")
    try:
        yield outcome
    except BaseException as err:
        seconds = time.time() - started
        log(f"{name}: FAILED after {seconds:.1f} s: {err}")
        _append({"step": name, "status": "failed", "seconds": seconds, "error": str(err), **outcome})
        raise
    seconds = time.time() - started
    log(f"{name}: done in {seconds:.1f} s")
    _append({"step": name, "status": "succeeded", "seconds": seconds, **outcome})


def read_run_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run log, in order; empty when the file does not exist."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
