"""Mirrors of KServe's admission webhooks (InferenceService v1beta1, LLMInferenceService v1alpha2).

The test API server enforces the CRD schema and its CEL rules, but not KServe's validating
webhooks (Go code that runs in the controller). These are the webhooks' rules for the fields the
builders write, ported from the pinned upstream files (``../shared/reference/kserve``) with the
upstream function named beside each rule; ``tests/unit/test_webhook_mirror.py`` runs upstream's own
table-driven cases (``inference_service_validation_test.go``) against them.

* :func:`isvc_webhook_errors`: ``pkg/apis/serving/v1beta1/inference_service_validation.go``
  (ValidateCreate / ValidateUpdate). Like upstream, it stops at the first error and returns
  ``[<message>]`` (empty when the object would be admitted).
* :func:`llmisvc_webhook_errors`: ``pkg/apis/serving/v1alpha2/llm_inference_service_validation.go``
  (validateRouterCrossFieldConstraints, validateTrafficFields, validateWorkloadParallelism,
  validateSchedulerConfig, ValidateWorkloadScaling, ValidateActuatorConsistency,
  ValidateWorkloadRolloutFields, validateImmutable); each problem as ``<field path>: <message>``,
  upstream's message; ``tests/unit/test_llmd_webhook_mirror.py`` runs upstream's cases
  (``llm_inference_service_validation_test.go``) against it.
* :func:`llmisvc_config_webhook_errors`: ``llm_inference_service_config_validation.go``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

# InferenceService (v1beta1) ---------------------------------------------------------------------

# inference_service_validation.go: IsvcNameFmt / IsvcRegexp
_ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# the predictor's implementations (predictor.go GetImplementations); "model" is the ModelSpec
_FRAMEWORKS = (
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
    "model",
)
# constants.go AutoscalerAllowedClassList, AutoscalerAllowedHPAMetricsList, AutoscalerAllowedKPAMetricsList
_AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")
_HPA_METRICS = ("cpu", "memory")
_KPA_METRICS = ("concurrency", "rps")
_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
_AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
_KNATIVE_CLASS = "autoscaling.knative.dev/class"
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": Decimal("1e-9")}
_SUFFIX.update({"u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12})


class _Refused(Exception):
    pass


def _quantity(value: Any) -> Decimal:
    """A Kubernetes resource.Quantity as a number (for the 1Mi comparison)."""
    m = _QUANTITY.match(str(value))
    if not m:
        raise _Refused(f"quantities must match the regular expression: {value!r}")
    number, suffix = Decimal(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * Decimal(_SUFFIX.get(suffix, 1))


def _implementations(pred: dict[str, Any]) -> list[str]:
    found = [k for k in _FRAMEWORKS if pred.get(k) is not None]
    if not found and pred.get("containers"):
        found = ["customPredictor"]
    return found


def _storage_uri(pred: dict[str, Any]) -> str | None:
    """inference_service_validation.go getPredictorStorageURI."""
    for key in _FRAMEWORKS:
        impl = pred.get(key)
        if impl is not None and impl.get("storageUri") is not None:
            return impl["storageUri"]
    return None


def _validate_replicas(ext: dict[str, Any]) -> None:
    """component.go ComponentExtensionSpec.Validate: validateContainerConcurrency, validateReplicas
    (constants.DefaultMinReplicas 1); messages from component.go's known error messages."""
    if (ext.get("containerConcurrency") or 0) < 0:
        raise _Refused("Parallelism cannot be less than 0.")
    min_r = ext.get("minReplicas", 1)
    max_r = ext.get("maxReplicas", 0)
    if min_r < 0:
        raise _Refused("MinReplicas cannot be less than 0.")
    if max_r < 0:
        raise _Refused("MaxReplicas cannot be less than 0.")
    if min_r > max_r and max_r != 0:
        raise _Refused("MinReplicas cannot be greater than MaxReplicas.")


def _validate_scale_target(target: dict[str, Any]) -> None:
    """inference_service_validation.go validateScaleTarget."""
    kind = target.get("type")
    if kind == "Utilization":
        if target.get("averageUtilization") is None:
            raise _Refused("the AverageUtilization type should be set")
        if not 1 <= target["averageUtilization"] <= 100:
            raise _Refused("the target utilization percentage should be a [1-100] integer")
    elif kind == "AverageValue" and target.get("averageValue") is None:
        raise _Refused("the AverageValue type should be set")
    elif kind == "Value" and target.get("value") is None:
        raise _Refused("the Value type should be set")


def validate_scaling_hpa(ext: dict[str, Any]) -> None:
    """inference_service_validation.go validateScalingHPACompExtension (+ validateHPAMetrics)."""
    metric = ext.get("scaleMetric") or "cpu"
    if metric not in _HPA_METRICS:
        raise _Refused(f"[{metric}] is not a supported metric")
    target = ext.get("scaleTarget")
    if target is not None:
        # upstream's precedence: (cpu && target < 1) || target > 100
        if (metric == "cpu" and target < 1) or target > 100:
            raise _Refused("the target utilization percentage should be a [1-100] integer")
        if metric == "memory" and target < 1:
            raise _Refused("the target memory should be greater than 1 MiB")
    for m in (ext.get("autoScaling") or {}).get("metrics") or []:
        if m.get("type") == "Resource":
            if m.get("resource") is None:
                raise _Refused("metricSpec.Resource is not set for resource metric source type")
        else:
            raise _Refused(
                f"invalid HPA metric source type with value [{m.get('type', '')}],"
                "valid metric source types are Resource"
            )


def validate_scaling_keda(ext: dict[str, Any]) -> None:
    """inference_service_validation.go validateScalingKedaCompExtension."""
    if ext.get("scaleMetric") is not None:
        raise _Refused("ScaleMetric is not supported for KEDA")
    for m in (ext.get("autoScaling") or {}).get("metrics") or []:
        kind = m.get("type")
        if kind == "Resource":
            res = m.get("resource")
            if res is None:
                raise _Refused("metricSpec.Resource is not set for resource metric source type")
            target = res.get("target") or {}
            if res.get("name") == "cpu":
                if target.get("type") != "Utilization":
                    raise _Refused("the cpu target value type should be Utilization")
            elif res.get("name") == "memory":
                if target.get("type") not in ("AverageValue", "Utilization"):
                    raise _Refused("the memory target value type should be AverageValue or Utilization")
                if target.get("type") == "AverageValue" and _quantity(target.get("averageValue", 0)) < 2**20:
                    raise _Refused("the memory target value should be greater than 1 MiB")
            else:
                raise _Refused(f"resource type {res.get('name')} is not supported")
            _validate_scale_target(target)
        elif kind in ("External", "PodMetric"):
            source = m.get("external" if kind == "External" else "podmetric")
            if source is None:
                which = ("External", "external") if kind == "External" else ("PodMetric", "pod")
                raise _Refused(f"metricSpec.{which[0]} is not set for {which[1]} metric source type")
            if not (source.get("metric") or {}).get("query"):
                raise _Refused("the query should not be empty")
            target = source.get("target") or {}
            # the KEDA reconciler (keda_reconciler.go) reads only Target.Value as the threshold
            if target.get("value") is None:
                raise _Refused("the target threshold value should not be empty")
            _validate_scale_target(target)
        else:
            raise _Refused(
                f"unknown KEDA metric type with value [{kind or ''}].Valid types are Resource,External,PodMetric"
            )


def validate_scaling_kpa(ext: dict[str, Any]) -> None:
    """inference_service_validation.go validateScalingKPACompExtension (+ validateKPAMetrics)."""
    if ext.get("deploymentStrategy") is not None:
        raise _Refused("customizing deploymentStrategy is only supported for raw deployment mode")
    metric = ext.get("scaleMetric") or "concurrency"
    if metric not in _KPA_METRICS:
        raise _Refused(f"[{metric}] is not a supported metric")
    if ext.get("scaleTarget") is not None and metric == "rps" and ext["scaleTarget"] < 1:
        raise _Refused("the target for rps should be greater than 1")


def _validate_autoscaling(annotations: dict[str, str], ext: dict[str, Any]) -> None:
    """inference_service_validation.go validateAutoScalingCompExtension."""
    if annotations.get(_DEPLOYMENT_MODE) == "Standard":
        cls = annotations.get(_AUTOSCALER_CLASS)
        if cls == "hpa":
            validate_scaling_hpa(ext)
        elif cls == "keda":
            validate_scaling_keda(ext)
    elif annotations.get(_KNATIVE_CLASS) == "hpa.autoscaling.knative.dev":
        validate_scaling_hpa(ext)
    else:
        validate_scaling_kpa(ext)


def _validate_canaries(annotations: dict[str, str], spec: dict[str, Any]) -> None:
    """inference_service_validation.go validateCanarySpecs."""
    canaries = spec.get("canary") or []
    if not canaries:
        return
    if annotations.get(_DEPLOYMENT_MODE) != "Standard":
        raise _Refused("canary is only supported in Standard deployment mode")
    stable = spec.get("predictor") or {}
    if _storage_uri(stable) is None and stable.get("model") is None:
        raise _Refused(
            "canary requires a stable predictor with a model (multi-model serving is not supported with canary)"
        )
    names: set[str] = set()
    total = 0
    for i, entry in enumerate(canaries):
        pred = entry.get("predictor") or {}
        name = pred.get("name") or ""
        if not name:
            raise _Refused(f"canary[{i}] predictor.name is required")
        if name in names:
            raise _Refused(f'canary predictor.name "{name}" is duplicated')
        names.add(name)
        if name == (stable.get("name") or ""):
            raise _Refused(f'canary predictor.name "{name}" conflicts with stable predictor name')
        pct = entry.get("trafficPercent") or 0
        if not 0 <= pct <= 100:
            raise _Refused(f'canary "{name}" trafficPercent must be between 0 and 100, got {pct}')
        total += pct
        impls = _implementations(pred)
        if len(impls) != 1:
            raise _Refused(f'canary "{name}" predictor: exactly one of [...] must be specified in PredictorSpec')
        try:
            _validate_replicas(pred)
        except _Refused as err:
            raise _Refused(f'canary "{name}" predictor: {err}') from None
        if pred.get("workerSpec") is not None:
            raise _Refused(f'canary "{name}" must not set workerSpec (multi-node is not yet supported for canary)')
        if (pred.get("maxReplicas") or 0) > 0:
            raise _Refused(f'canary "{name}" must not set maxReplicas (canary uses fixed replicas)')
        for key in ("scaleTarget", "scaleMetric", "autoScaling"):
            if pred.get(key) is not None:
                raise _Refused(f'canary "{name}" must not set {key} (canary uses fixed replicas)')
        if pred.get("minReplicas") is not None:
            stable_min = stable.get("minReplicas", 1)
            if pred["minReplicas"] > stable_min:
                raise _Refused(
                    f'canary "{name}" minReplicas ({pred["minReplicas"]}) must not exceed stable predictor '
                    f"minReplicas ({stable_min})"
                )
    if total > 100:
        raise _Refused(f"sum of canary trafficPercent values ({total}) must be <= 100")


def _validate_blocked_env(name: str, spec: dict[str, Any]) -> None:
    """inference_service_validation.go validateBlockedEnvVars (PYTHONPATH)."""
    for comp in ("predictor", "transformer", "explainer"):
        c = spec.get(comp) or {}
        containers = [c.get(k) for k in _FRAMEWORKS if c.get(k) is not None]
        containers += list(c.get("containers") or []) + list(c.get("initContainers") or [])
        worker = c.get("workerSpec") or {}
        containers += list(worker.get("containers") or []) + list(worker.get("initContainers") or [])
        for cont in containers:
            for env in cont.get("env") or []:
                if env.get("name") == "PYTHONPATH":  # validation.DefaultBlockedEnvVars
                    raise _Refused(
                        f'the InferenceService "{name}" is invalid: environment variable PYTHONPATH is blocked'
                    )


def _validate_predictor_names(spec: dict[str, Any]) -> None:
    """inference_service_validation.go validatePredictor: no ``name`` on a framework/model spec."""
    pred = spec.get("predictor") or {}
    for key in _FRAMEWORKS:
        if (pred.get(key) or {}).get("name"):
            raise _Refused("the 'name' field is not allowed in standard predictor")


def _validate_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    """inference_service_validation.go ValidateUpdate: validateDeploymentMode, validatePredictorNameChange."""
    old_mode = (old.get("status") or {}).get("deploymentMode") or ""
    if old_mode:
        # constants.ParseDeploymentMode folds the legacy names
        parsed = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(old_mode, old_mode)
        wanted = ((new.get("metadata") or {}).get("annotations") or {}).get(_DEPLOYMENT_MODE)
        if wanted is not None and wanted != parsed:
            raise _Refused(f"update rejected: deploymentMode cannot be changed from '{parsed}' to '{wanted}'")
    new_pred = (new.get("spec") or {}).get("predictor") or {}
    old_pred = (old.get("spec") or {}).get("predictor") or {}
    if (new_pred.get("name") or "") != (old_pred.get("name") or "") and _storage_uri(new_pred) == _storage_uri(
        old_pred
    ):
        raise _Refused("predictor.name change requires a model change (e.g. storageUri)")


def _validate_isvc(obj: dict[str, Any]) -> None:
    """inference_service_validation.go validateInferenceService, in upstream's order."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = obj.get("spec") or {}
    name = meta.get("name") or ""
    if not _ISVC_NAME.match(name):  # validateInferenceServiceName
        raise _Refused(
            f'the InferenceService "{name}" is invalid: a InferenceService name must consist of lower case '
            "alphanumeric characters or '-', and must start with alphabetical character. "
            '(e.g. "my-name" or "abc-123", regex used for validation is \'[a-z]([-a-z0-9]*[a-z0-9])?\')'
        )
    cls = annotations.get(_AUTOSCALER_CLASS)  # validateInferenceServiceAutoscaler
    if cls is not None and cls not in _AUTOSCALER_CLASSES:
        raise _Refused(f"[{cls}] is not a supported autoscaler class type")
    _validate_blocked_env(name, spec)
    _validate_predictor_names(spec)
    for comp in ("predictor", "transformer", "explainer"):
        c = spec.get(comp)
        if c is None:
            continue
        if len(_implementations(c)) != 1:  # validateExactlyOneImplementation
            raise _Refused(f"exactly one of [...] must be specified in {comp.capitalize()}Spec")
        _validate_replicas(c)  # GetExtensions().Validate()
        _validate_autoscaling(annotations, c)
    _validate_canaries(annotations, spec)


def isvc_webhook_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """KServe's InferenceService webhook verdict on ``obj`` (an update of ``old`` when given).

    Returns:
        ``[]`` when it would be admitted, else ``[the first error's message]`` (upstream stops there).
    """
    if obj.get("kind") != "InferenceService":
        return []
    try:
        if old is not None:
            _validate_update(obj, old)
        _validate_isvc(obj)
    except _Refused as err:
        return [str(err)]
    return []


# LLMInferenceService (v1alpha2) -----------------------------------------------------------------

_VARIANT_COST = re.compile(r"^\d+(\.\d+)?$")  # llm_inference_service_validation.go variantCostPattern


def _size(par: dict[str, Any] | None) -> int:
    """``ParallelismSpec.GetSize`` (llm_inference_service_types.go), nil counted as 1 as validateImmutable does."""
    if not par:
        return 1
    if (par.get("data") or 0) > 0 or (par.get("dataLocal") or 0) > 0:
        return max(max(par.get("data") or 1, 1) // max(par.get("dataLocal") or 1, 1), 1)
    if (par.get("pipeline") or 0) > 0:
        return par["pipeline"]
    return 1


def validate_workload_parallelism(path: str, w: dict[str, Any]) -> list[str]:
    """``validateWorkloadParallelism``."""
    par = w.get("parallelism")
    worker_msg = (
        "when worker is specified, parallelism must be configured for either data parallelism or pipeline parallelism"
    )
    if w.get("worker") is not None and par is None:
        return [f"{path}.worker: {worker_msg}"]
    if par is None:
        return []
    errors: list[str] = []
    dp = (par.get("data") or 0) > 0 or (par.get("dataLocal") or 0) > 0
    pp = (par.get("pipeline") or 0) > 0
    if w.get("worker") is not None and not dp and not pp:
        errors.append(f"{path}.worker: {worker_msg}")
    if pp and dp:
        errors.append(
            f"{path}.parallelism: cannot set both pipeline parallelism and data parallelism (data or dataLocal) "
            "simultaneously"
        )
    if "data" in par and "dataLocal" not in par:
        errors.append(f"{path}.parallelism.dataLocal: dataLocal must be set when data is set")
    if "dataLocal" in par and "data" not in par:
        errors.append(f"{path}.parallelism.data: data must be set when dataLocal is set")
    for key, what in (
        ("pipeline", "pipeline parallelism"),
        ("data", "data parallelism"),
        ("dataLocal", "dataLocal parallelism"),
    ):
        if key in par and par[key] <= 0:
            errors.append(f"{path}.parallelism.{key}: {what} must be greater than 0")
    return errors


def _keda_advanced(path: str, keda: dict[str, Any] | None, forbid_modifiers: bool) -> list[str]:
    """``validateKEDAAdvancedFields``."""
    adv = (keda or {}).get("advanced")
    if not adv:
        return []
    errors: list[str] = []
    sm = adv.get("scalingModifiers") or {}
    if forbid_modifiers and any(sm.get(k) for k in ("formula", "target", "activationTarget", "metricType")):
        errors.append(
            f"{path}.advanced.scalingModifiers: scalingModifiers must not be set; WVA controls the scaling metric "
            "formula and logic"
        )
    if ((adv.get("horizontalPodAutoscalerConfig") or {}).get("name") or "") != "":
        errors.append(
            f"{path}.advanced.horizontalPodAutoscalerConfig.name: horizontalPodAutoscalerConfig.name must not be "
            "set; the controller manages the HPA name"
        )
    return errors


def _keda_idle(scaling_path: str, keda_path: str, sc: dict[str, Any], keda: dict[str, Any] | None) -> list[str]:
    """``validateKEDAIdleReplicaCount``."""
    idle = (keda or {}).get("idleReplicaCount")
    if idle is None:
        return []
    if sc.get("minReplicas") is None:
        return [
            f"{scaling_path}.minReplicas: minReplicas is required when idleReplicaCount is set; idleReplicaCount "
            f"({idle}) must be less than minReplicas"
        ]
    if idle >= sc["minReplicas"]:
        return [
            f"{keda_path}.idleReplicaCount: idleReplicaCount ({idle}) must be less than minReplicas "
            f"({sc['minReplicas']}); idleReplicaCount defines the replica floor when no triggers are active"
        ]
    return []


def validate_workload_scaling(path: str, w: dict[str, Any]) -> list[str]:
    """``ValidateWorkloadScaling`` (with ``validateDirectKEDA``)."""
    sc = w.get("scaling")
    if sc is None:
        return []
    sp = f"{path}.scaling"
    errors: list[str] = []
    if w.get("replicas") is not None:
        errors.append(
            f"{sp}: scaling and replicas are mutually exclusive; use scaling for autoscaled deployments or "
            "replicas for static deployments"
        )
    if sc.get("minReplicas") is not None and sc["minReplicas"] > sc.get("maxReplicas", 0):
        errors.append(
            f"{sp}.minReplicas: minReplicas ({sc['minReplicas']}) cannot exceed maxReplicas "
            f"({sc.get('maxReplicas', 0)})"
        )
    wva, keda = sc.get("wva"), sc.get("keda")
    if wva is not None and keda is not None:
        return [*errors, f"{sp}: wva and keda are mutually exclusive; choose one scaling mechanism"]
    if wva is None and keda is None:
        return [*errors, f"{sp}: either wva or keda must be specified when scaling is configured"]
    if keda is not None:
        if not keda.get("triggers"):
            errors.append(f"{sp}.keda.triggers: at least one trigger is required when using direct KEDA scaling")
        errors += _keda_advanced(f"{sp}.keda", keda, False)
        return errors + _keda_idle(sp, f"{sp}.keda", sc, keda)
    wp = f"{sp}.wva"
    if wva.get("hpa") is not None and wva.get("keda") is not None:
        errors.append(f"{wp}: hpa and keda are mutually exclusive; choose one actuator backend")
    if wva.get("hpa") is None and wva.get("keda") is None:
        errors.append(f"{wp}: either hpa or keda must be specified as the actuator backend")
    cost = wva.get("variantCost") or ""
    if cost and not _VARIANT_COST.match(cost):
        errors.append(
            f'{wp}.variantCost: variantCost must be a non-negative numeric string (e.g., "10", "10.0", "0.5")'
        )
    if wva.get("keda") is not None:
        errors += _keda_advanced(f"{wp}.keda", wva["keda"], True)
        errors += _keda_idle(sp, f"{wp}.keda", sc, wva["keda"])
    return errors


def validate_actuator_consistency(decode: dict[str, Any], prefill: dict[str, Any] | None) -> list[str]:
    """``ValidateActuatorConsistency``: decode and prefill scale the same way (mode and actuator)."""
    if prefill is None or decode.get("scaling") is None or prefill.get("scaling") is None:
        return []
    d, p = decode["scaling"], prefill["scaling"]
    d_keda, p_keda = d.get("keda") is not None, p.get("keda") is not None
    if d_keda != p_keda:
        modes = ("direct keda", "wva") if d_keda else ("wva", "direct keda")
        return [
            f"spec.prefill.scaling: decode and prefill must use the same scaling mode; decode uses {modes[0]} but "
            f"prefill uses {modes[1]}"
        ]
    if d.get("wva") is None or p.get("wva") is None:
        return []
    d_hpa, p_hpa = d["wva"].get("hpa") is not None, p["wva"].get("hpa") is not None
    if d_hpa == p_hpa:
        return []
    backends = ("hpa", "keda") if d_hpa else ("keda", "hpa")
    return [
        f"spec.prefill.scaling.wva: decode and prefill must use the same actuator backend; decode uses {backends[0]} "
        f"but prefill uses {backends[1]} — mixing backends requires two separate metric pipelines and leads to "
        "independent, unsynchronised scaling decisions"
    ]


_PERCENT = re.compile(r"^[0-9]+%$")  # k8s.io/apimachinery validation.IsValidPercent


def _int_or_percent(path: str, value: Any) -> list[str]:
    """``validatePositiveIntOrPercent``."""
    if isinstance(value, int):
        return [f"{path}: must be greater than or equal to 0"] if value < 0 else []
    if not _PERCENT.match(str(value)):
        return [f"{path}: a valid percent string must be a numeric string followed by an ending '%'"]
    if int(str(value)[:-1]) > 100:
        return [f"{path}: must not be greater than 100%"]
    return []


def _scaled(value: Any, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent(v, 1, roundUp)``."""
    if isinstance(value, int):
        return value
    pct = int(str(value)[:-1])
    return (pct + 99) // 100 if round_up else pct // 100


def validate_workload_rollout_fields(path: str, rs: dict[str, Any] | None, multi_node: bool) -> list[str]:
    """``ValidateWorkloadRolloutFields``."""
    if rs is None:
        return []
    rp = f"{path}.rolloutStrategy"
    errors: list[str] = []
    if rs.get("maxUnavailable") is not None:
        errors += _int_or_percent(f"{rp}.maxUnavailable", rs["maxUnavailable"])
    if rs.get("maxSurge") is not None:
        errors += _int_or_percent(f"{rp}.maxSurge", rs["maxSurge"])
    if errors:
        return errors
    mu, ms = rs.get("maxUnavailable"), rs.get("maxSurge")
    if mu is not None and ms is not None and _scaled(mu, False) == 0 and _scaled(ms, True) == 0:
        errors.append(
            f"{rp}: maxUnavailable and maxSurge cannot both be zero; this would prevent any rolling update progress"
        )
    if multi_node and mu is not None and ms is None and _scaled(mu, False) == 0:
        errors.append(
            f"{rp}.maxSurge: maxSurge is required for multi-node workloads when maxUnavailable is 0, otherwise no "
            "rolling update progress is possible"
        )
    return errors


def _router_errors(spec: dict[str, Any]) -> list[str]:
    """``validateRouterCrossFieldConstraints`` and ``validateTrafficFields``."""
    router = spec.get("router") or {}
    route = router.get("route")
    if route is None:
        return []
    errors: list[str] = []
    http = route.get("http")
    refs = (http or {}).get("refs") or []
    gateway = router.get("gateway")
    if http is not None:
        if refs and http.get("spec") is not None:
            errors.append(
                "spec.router.route.http: unsupported configuration: cannot use both custom HTTPRoute refs "
                "('spec.router.route.http.refs') and an inline route spec ('spec.router.route.http.spec'); choose one"
            )
        if refs and gateway is not None and not gateway.get("refs"):
            errors.append(
                "spec.router.route.http.refs: unsupported configuration: custom HTTP routes "
                "('spec.router.route.http.refs') cannot be used with a managed gateway ('spec.router.gateway')"
            )
    has_group, has_weight = route.get("group") is not None, route.get("weight") is not None
    if not (has_group or has_weight):
        return errors
    if router.get("ingress") is not None:
        return [
            *errors,
            "spec.router.route.group: traffic splitting requires Gateway API routing; the controller manages "
            "HTTPRoutes, not Ingress resources",
        ]
    if has_weight and not has_group:
        return [*errors, "spec.router.route.group: weight requires group"]
    if has_group and not has_weight:
        return [*errors, "spec.router.route.weight: group requires weight"]
    if refs:
        errors.append(
            "spec.router.route.group: traffic splitting cannot be used with custom HTTPRoute refs; controller-managed "
            "routes (route.http.spec or route.http: {}) are required"
        )
    return errors


def _scheduler_errors(path: str, scheduler: dict[str, Any] | None, config_rules: bool = True) -> list[str]:
    """``validateSchedulerConfig`` (the config validator's ``validateScheduler`` checks replicas only)."""
    if scheduler is None:
        return []
    errors: list[str] = []
    if scheduler.get("replicas") is not None and scheduler["replicas"] <= 0:
        errors.append(f"{path}.replicas: scheduler replicas must be greater than zero")
    config = scheduler.get("config")
    if not config_rules or config is None:
        return errors
    if "inline" not in config and "ref" not in config:
        errors.append(f"{path}.config: either inline or ref is required")
    if "inline" in config and "ref" in config:
        errors.append(f"{path}.config: both inline and ref are set, either specify inline or ref")
    if "inline" in config and len(json.dumps(config["inline"], separators=(",", ":"))) < 3:
        errors.append(f"{path}.config.inline: inline configuration is invalid")
    if "ref" in config and not (config["ref"] or {}).get("name"):
        errors.append(f"{path}.config.ref.name: name is empty")
    return errors


def _immutable(prev: dict[str, Any], curr: dict[str, Any]) -> list[str]:
    """``validateImmutable``: the total parallelism size (``GetSize``) of each workload never changes."""
    errors: list[str] = []
    pairs = [("spec", prev, curr)]
    if prev.get("prefill") is not None and curr.get("prefill") is not None:
        pairs.append(("spec.prefill", prev["prefill"], curr["prefill"]))
    for path, p, c in pairs:
        before, after = _size(p.get("parallelism")), _size(c.get("parallelism"))
        if before != after:
            errors.append(
                f"{path}.parallelism: total parallelism size is immutable, previous size {before}, curr size {after}"
            )
    return errors


def llmisvc_webhook_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """The LLMInferenceService webhook's objections to ``obj`` (an update of ``old`` when given).

    ``llm_inference_service_validation.go`` ``validate`` in upstream's order: router cross-field
    constraints, traffic fields, parallelism, scheduler config, scaling (with
    ``validateActuatorConsistency``), rollout strategy, ``validateImmutable`` (updates only).
    ``ValidateUpdate`` admits an object that is being deleted. LoRA, KV-cache offloading, DRA
    annotations and confidential computing are not mirrored: we write none of those fields.

    Returns:
        Each problem as ``<field path>: <upstream's message>``; empty when it would be admitted.
    """
    if obj.get("kind") != "LLMInferenceService":
        return []
    if old is not None and (obj.get("metadata") or {}).get("deletionTimestamp"):
        return []
    spec = obj.get("spec") or {}
    prefill = spec.get("prefill")
    errors = _router_errors(spec)
    errors += validate_workload_parallelism("spec", spec)
    if prefill is not None:
        errors += validate_workload_parallelism("spec.prefill", prefill)
    errors += _scheduler_errors("spec.router.scheduler", (spec.get("router") or {}).get("scheduler"))
    errors += validate_workload_scaling("spec", spec)
    if prefill is not None:
        errors += validate_workload_scaling("spec.prefill", prefill)
    errors += validate_actuator_consistency(spec, prefill)
    errors += validate_workload_rollout_fields("spec", spec.get("rolloutStrategy"), spec.get("worker") is not None)
    if prefill is not None:
        errors += validate_workload_rollout_fields(
            "spec.prefill", prefill.get("rolloutStrategy"), prefill.get("worker") is not None
        )
    if old is not None:
        errors += _immutable(old.get("spec") or {}, spec)
    return errors


def llmisvc_config_webhook_errors(obj: dict[str, Any]) -> list[str]:
    """``llm_inference_service_config_validation.go`` ``validate``: no ``baseRefs`` in a config,
    scheduler replicas above zero."""
    if obj.get("kind") != "LLMInferenceServiceConfig":
        return []
    spec = obj.get("spec") or {}
    errors: list[str] = []
    if spec.get("baseRefs"):
        errors.append(
            "spec.baseRefs: baseRefs is not a permitted field in LLMInferenceServiceConfig, support for recursive "
            "refs has been disabled"
        )
    scheduler = (spec.get("router") or {}).get("scheduler")
    return errors + _scheduler_errors("spec.router.scheduler", scheduler, config_rules=False)


# ServingRuntime (v1alpha1) ----------------------------------------------------------------------


def _model_formats_equal(m1: dict[str, Any], m2: dict[str, Any]) -> bool:
    """servingruntime_webhook.go areSupportedModelFormatsEqual: names equal ignoring case, versions equal."""
    return str(m1.get("name", "")).lower() == str(m2.get("name", "")).lower() and m1.get("version") == m2.get("version")


def _runtime_priority_error(new: dict[str, Any], existing: dict[str, Any], new_name: str, existing_name: str) -> str:
    """servingruntime_webhook.go validateServingRuntimePriority ("" when admitted).

    Skipped when one is multi-model and the other not, the existing one is disabled, or both are the
    same runtime; otherwise two runtimes sharing a protocol version refuse one model format (name
    and version) auto-selected by both with the same priority.
    """
    if bool(new.get("multiModel")) != bool(existing.get("multiModel")) or existing.get("disabled"):
        return ""
    if existing_name == new_name:
        return ""
    if not set(existing.get("protocolVersions") or []) & set(new.get("protocolVersions") or []):
        return ""
    for old_fmt in existing.get("supportedModelFormats") or []:
        for new_fmt in new.get("supportedModelFormats") or []:
            both_auto = bool(old_fmt.get("autoSelect")) and bool(new_fmt.get("autoSelect"))
            priority = old_fmt.get("priority")
            same = priority is not None and priority == new_fmt.get("priority")
            if both_auto and same and _model_formats_equal(old_fmt, new_fmt):  # InvalidPriorityError
                return f"same priority assigned for the model format {new_fmt.get('name')}"
    return ""


def servingruntime_webhook_errors(obj: dict[str, Any], existing: list[dict[str, Any]]) -> list[str]:
    """``pkg/webhook/admission/servingruntime/servingruntime_webhook.go`` ``ServingRuntimeValidator.Handle``.

    The priority rules only: a disabled runtime is admitted; for every runtime already in the
    namespace (``existing``, the live objects, itself included on an update)
    ``validateModelFormatPrioritySame`` and ``validateServingRuntimePriority`` run, and the first
    refusal is the answer, worded as upstream's ``InvalidPriorityServingRuntimeError``.

    Returns:
        ``[<message>]`` when the webhook would deny the apply, else ``[]``.
    """
    spec, name = obj.get("spec") or {}, (obj.get("metadata") or {}).get("name", "")
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    if spec.get("disabled"):
        return []
    for other in existing:
        # validateModelFormatPrioritySame: one format auto-selected twice with different priorities
        seen: dict[str, Any] = {}
        for fmt in spec.get("supportedModelFormats") or []:
            if not fmt.get("autoSelect"):
                continue
            fname = fmt.get("name")
            if fname in seen:
                if seen[fname] is not None and fmt.get("priority") is not None and seen[fname] != fmt.get("priority"):
                    return [
                        f"different priorities assigned for the model format {fname} under the servingruntime {name}"
                    ]
            else:
                seen[fname] = fmt.get("priority")
        other_name = (other.get("metadata") or {}).get("name", "")
        err = _runtime_priority_error(spec, other.get("spec") or {}, name, other_name)
        if err:
            # InvalidPriorityServingRuntimeError: "%s in the servingruntimes %s and %s in namespace %s"
            return [f"{err} in the servingruntimes {other_name} and {name} in namespace {namespace}"]
    return []
