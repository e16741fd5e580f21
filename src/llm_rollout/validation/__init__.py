"""Validation of a served model revision: readiness, correctness, load against an SLO, report.

No kfp import here: the KFP step, the ``llm-rollout validate`` command and the tests call
:func:`~llm_rollout.validation.runner.validate` directly.

Modules: :mod:`.client` (one streamed request), :mod:`.load` (the load generator),
:mod:`.metrics` (``vllm bench serve`` definitions), :mod:`.slo` (checks, their judgement, capacity
search), :mod:`.readiness`, :mod:`.probes` (correctness, baseline agreement), :mod:`.prom` (the
server's ``/metrics``), :mod:`.answers` (the typed answer every phase returns; the verdict is the
worst), :mod:`.summary` (each question's answer from its findings, the summary line, KFP metrics),
:mod:`.charts` (SVG plots), :mod:`.report` (HTML, JSON), :mod:`.runner` (the entry point),
:mod:`.phases` and :mod:`.load_phases` (the phases), :mod:`.gate` (a run's state, one level's
measurement), :mod:`.result` (what a validation found) and :mod:`.cli` (the command). The gate's
phases and where each lives: ``docs/architecture.md``.
"""

from llm_rollout.validation.answers import Answer, Decision, Evidence, Verdict
from llm_rollout.validation.result import LevelResult, ValidationResult
from llm_rollout.validation.runner import validate, validate_async
from llm_rollout.validation.slo import Check, SLOExpressionError, parse_check, parse_checks

__all__ = [
    "Answer",
    "Check",
    "Decision",
    "Evidence",
    "LevelResult",
    "SLOExpressionError",
    "ValidationResult",
    "Verdict",
    "parse_check",
    "parse_checks",
    "validate",
    "validate_async",
]
