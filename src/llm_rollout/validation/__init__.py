"""Validation of a served model revision: readiness, correctness, load against an SLO, report.

No kfp import here: the KFP step, the ``llm-rollout validate`` command and the tests call
:func:`~llm_rollout.validation.runner.validate` directly.

Modules: :mod:`.client` (one streamed request), :mod:`.load` (the load generator),
:mod:`.metrics` (``vllm bench serve`` definitions), :mod:`.slo` (checks, verdict, capacity
search), :mod:`.readiness`, :mod:`.probes` (correctness, baseline agreement), :mod:`.prom` (the
server's ``/metrics``), :mod:`.summary` (the gate's questions, KFP metrics), :mod:`.charts` (SVG
plots), :mod:`.report` (HTML, JSON), :mod:`.runner` (the entry point), :mod:`.phases` (the
phases), :mod:`.result` (what a validation found) and :mod:`.cli` (the command).
"""

from llm_rollout.validation.result import LevelResult, ValidationResult
from llm_rollout.validation.runner import validate, validate_async
from llm_rollout.validation.slo import Check, SLOExpressionError, parse_check, parse_checks

__all__ = [
    "Check",
    "LevelResult",
    "SLOExpressionError",
    "ValidationResult",
    "parse_check",
    "parse_checks",
    "validate",
    "validate_async",
]
