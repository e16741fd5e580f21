"""validate-deployment: the gate before promotion."""

from typing import NamedTuple

from kfp import dsl


def validate_deployment(
    spec: str,
    record: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
    results: dsl.Output[dsl.Artifact],
) -> NamedTuple("ValidationOutputs", [("verdict", str), ("summary", str), ("key_metrics", str), ("report_uri", str)]):
    """Validates the new revision: readiness, correctness, quality, latency and throughput against the SLO.

    The new revision is measured at its own address, never through the service's traffic split.
    When a stable revision serves, it is measured too, at its own address: the correctness suite
    item by item, the reference texts' likelihood and, in counterbalanced blocks, TTFT, TPOT and
    throughput (validation.comparison, validation.quality). With the uncompressed original served
    beside it (validation.recovery.base_url) that is measured as well. The verdict is ``pass``,
    ``fail`` or ``inconclusive`` (too few successful requests, or a comparison still undecided at
    its bound); the pipeline promotes on ``pass`` only.

    Args:
        spec: The rollout spec as JSON (its ``validation`` section sets the suite, load and SLO).
        record: The deployment record from deploy-model.
        metrics: Flat metrics with the unit in the name (shown in the KFP UI).
        report: The HTML report (tables and plots; model output escaped).
        results: The full results as JSON.

    Returns:
        verdict: ``pass``, ``fail`` or ``inconclusive``.
        summary: One line per failed check with its measured value, or why the verdict was reached.
        key_metrics: The few headline metrics as JSON (p95 TTFT/TPOT, throughput, error rate, the
            comparisons' ratios), recorded with the promotion by promote-model, and the measured
            capacity per replica (``capacity``), which ``scaling.target: auto`` takes its target from.
        report_uri: Where the HTML report artifact is stored, recorded with the promotion.
    """
    import json
    from collections import namedtuple

    from llm_rollout.steps import key_metrics, validate_step

    outcome = validate_step(spec, record, report_path=report.path, results_path=results.path)
    for key, value in outcome.metrics.items():
        metrics.log_metric(key, value)
    outputs = namedtuple("ValidationOutputs", ["verdict", "summary", "key_metrics", "report_uri"])
    return outputs(outcome.verdict, outcome.summary, json.dumps(key_metrics(outcome)), report.uri)
