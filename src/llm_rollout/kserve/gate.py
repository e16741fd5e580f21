"""The stepped-promotion gate (``canary.steps``): validate the whole service at each traffic step.

Flagger-style: the load goes to the service address (stable and new revision by their weights);
correctness and the SLO must hold there before more traffic moves. No baseline: the stable
revision is part of what is measured, so there is neither a recovery base nor a stable comparison.

Each member's own vLLM request counters are read before and after that load
(:mod:`llm_rollout.validation.traffic`): a step whose canary got no traffic while its weight says
it should (Standard mode without Gateway API) fails with the cause and the fix. Where the members'
own addresses are unknown the proof is skipped, and the log says why.
"""

from __future__ import annotations

from llm_rollout import steplog
from llm_rollout.kserve.addresses import mapped
from llm_rollout.platform import Gate
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import RolloutSpec


def _summary(reasons: list[str]) -> str:
    return "\n".join(reasons) or "every check passed"


def member_metrics_urls(spec: RolloutSpec, rec: DeploymentRecord) -> tuple[dict[str, str], str]:
    """Each member's own vLLM ``/metrics`` (stable and canary), or why they are unknown.

    Only a Standard-mode InferenceService has them: the stable predictor's address
    (``status.components.predictor``) and the canary's (``<isvc>-<canary>-predictor``) are their own
    Services (kserve ``constants.PredictorServiceName``), vLLM serving ``/metrics`` beside the API.
    """
    if rec.kind != "InferenceService":
        return {}, f"{rec.kind} members answer through the gateway, not through an address of their own"
    if spec.deployment_mode != "Standard":
        return {}, "Knative splits traffic between revisions itself and gives the stable revision no address of its own"
    if rec.stable is None or not rec.stable.endpoint_url or not rec.endpoint_url:
        return {}, "the record has no address of its own for the stable and the canary predictor"
    urls = {rec.stable.member: mapped(rec.stable.endpoint_url), rec.member: rec.endpoint_url}
    return {m: u.rstrip("/") + "/metrics" for m, u in urls.items()}, ""


def traffic_gate(spec: RolloutSpec, rec: DeploymentRecord) -> Gate:
    """The gate for ``rec``'s stepped promotion: ``gate(percent) -> (verdict, summary)``."""
    from llm_rollout.validation import validate
    from llm_rollout.validation.traffic import judge_traffic, scrape_requests

    url = rec.service_url or rec.endpoint_url
    metrics, unknown = member_metrics_urls(spec, rec)
    verify = spec.validation.ca_bundle or spec.validation.tls_verify

    def counts() -> tuple[dict[str, float | None], list[str]]:
        got, errors = {}, []
        for member, murl in metrics.items():
            got[member], err = scrape_requests(murl, verify=verify)
            if err:
                errors.append(err)
        return got, errors

    def gate(percent: int) -> tuple[str, str]:
        steplog.log(f"promote-model: gate at {percent}% traffic on {url}")
        gate_spec = spec.validation.model_copy(
            update={"recovery": spec.validation.recovery.model_copy(update={"base_url": None})}
        )
        before, errors = counts() if metrics else ({}, [])
        result = validate(gate_spec, url, rec.served_model_name)
        reasons = list(result.reasons)
        if not metrics:
            note = f"traffic proof skipped: {unknown}"
            steplog.log(f"promote-model: {note}")
            return result.verdict, f"{_summary(reasons)}\n{note}"
        after, more = counts()
        assert rec.stable is not None  # member_metrics_urls found the stable's address
        proof = judge_traffic(before, after, canary=rec.member, stable=rec.stable.member, weight=percent)
        if proof.verdict == "skipped":
            proof.message = f"{proof.message} ({'; '.join(errors + more)})"
        steplog.log(f"promote-model: traffic at {percent}%: {proof.verdict}: {proof.message}")
        if proof.verdict == "fail":
            return "fail", _summary([proof.message, *reasons])
        return result.verdict, f"{_summary(reasons)}\ntraffic {proof.verdict}: {proof.message}"

    return gate
