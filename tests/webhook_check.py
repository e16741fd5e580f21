"""Mirror of KServe's LLMInferenceService admission webhook (v1alpha2), for rendered objects.

The test API server enforces the CRD schema and its CEL rules, but not KServe's validating
webhook (a Go program that runs in the controller). These are the webhook's rules that the
builders could break, transcribed from ``pkg/apis/serving/v1alpha2/llm_inference_service_validation.go``
(validateRouterCrossFieldConstraints, validateTrafficFields, validateWorkloadParallelism,
ValidateWorkloadScaling, validateSchedulerConfig). Each problem is returned as
``<field path>: <the webhook's message>``.
"""

from __future__ import annotations

from typing import Any


def _workload_errors(path: str, w: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    par = w.get("parallelism")
    if w.get("worker") is not None:
        dp = bool(par and ((par.get("data") or 0) > 0 or (par.get("dataLocal") or 0) > 0))
        pp = bool(par and (par.get("pipeline") or 0) > 0)
        if not (dp or pp):
            errors.append(f"{path}.worker: when worker is specified, parallelism must be data or pipeline parallelism")
    if par:
        if ((par.get("data") or 0) > 0 or (par.get("dataLocal") or 0) > 0) and (par.get("pipeline") or 0) > 0:
            errors.append(f"{path}.parallelism: cannot set both pipeline parallelism and data parallelism")
        if ("data" in par) != ("dataLocal" in par):
            errors.append(f"{path}.parallelism: data and dataLocal must be set together")
        for key in ("data", "dataLocal", "pipeline"):
            if key in par and par[key] <= 0:
                errors.append(f"{path}.parallelism.{key}: must be greater than 0")
    sc = w.get("scaling")
    if sc is not None:
        if "replicas" in w:
            errors.append(f"{path}.scaling: scaling and replicas are mutually exclusive")
        if sc.get("minReplicas") is not None and sc["minReplicas"] > sc.get("maxReplicas", 0):
            errors.append(f"{path}.scaling.minReplicas: cannot exceed maxReplicas")
        if ("wva" in sc) == ("keda" in sc):
            errors.append(f"{path}.scaling: exactly one of wva or keda must be specified")
        if "keda" in sc and not sc["keda"].get("triggers"):
            errors.append(f"{path}.scaling.keda.triggers: at least one trigger is required")
    return errors


def llmisvc_webhook_errors(obj: dict[str, Any]) -> list[str]:
    """The webhook's objections to an LLMInferenceService (empty when it would be admitted)."""
    if obj.get("kind") != "LLMInferenceService":
        return []
    spec = obj.get("spec") or {}
    errors = _workload_errors("spec", spec)
    if spec.get("prefill") is not None:
        errors += _workload_errors("spec.prefill", spec["prefill"])
    router = spec.get("router") or {}
    route = router.get("route")
    if route is not None:
        http = route.get("http")
        refs = (http or {}).get("refs") or []
        gateway = router.get("gateway")
        if refs and (http or {}).get("spec") is not None:
            errors.append("spec.router.route.http: cannot use both custom HTTPRoute refs and an inline route spec")
        if refs and gateway is not None and not gateway.get("refs"):
            errors.append("spec.router.route.http.refs: custom HTTP routes cannot be used with a managed gateway")
        has_group, has_weight = route.get("group") is not None, route.get("weight") is not None
        if has_group or has_weight:
            if router.get("ingress") is not None:
                errors.append("spec.router.route.group: traffic splitting requires Gateway API routing")
            elif has_weight and not has_group:
                errors.append("spec.router.route.group: weight requires group")
            elif has_group and not has_weight:
                errors.append("spec.router.route.weight: group requires weight")
            elif refs:
                errors.append("spec.router.route.group: traffic splitting cannot be used with custom HTTPRoute refs")
    scheduler = router.get("scheduler")
    if scheduler is not None:
        if scheduler.get("replicas") is not None and scheduler["replicas"] <= 0:
            errors.append("spec.router.scheduler.replicas: must be greater than zero")
        config = scheduler.get("config")
        if config is not None:
            if ("inline" in config) == ("ref" in config):
                errors.append("spec.router.scheduler.config: exactly one of inline or ref is required")
            if "inline" in config and not config["inline"]:
                errors.append("spec.router.scheduler.config.inline: inline configuration is invalid")
    return errors
