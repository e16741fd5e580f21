"""Waiting until a KServe object is ready, and proving that ready means serving.

:func:`wait_ready` is the one wait of the library:

* **watch-driven**: it lists the object (by ``metadata.name`` field selector), then watches from
  the List's resourceVersion; a 410 Gone (expired resourceVersion) re-lists, a transient error
  reconnects with jittered backoff; there is no polling interval to tune;
* **bounded**: one overall timeout; on expiry it raises
  :class:`~llm_rollout.errors.DeadlineExceeded` with the last conditions, the likely causes and,
  where the API server serves core/v1, pod states and recent events;
* **fresh by upstream's own signals**: a status counts only when it describes what we applied.
  LLMInferenceService: ``status.observedGeneration >= metadata.generation``. InferenceService: NOT
  by generation, because ``inference_service_status.go`` copies the first child Deployment's
  (``PropagateRawStatus``, Standard) or the Knative Service's (``PropagateStatus``, Knative)
  observedGeneration into it (kserve#6081), and raw mode keeps Ready=True through a rolling
  update (kserve#4626); comparing it with the InferenceService's generation can hang (spec edits
  that leave the Deployment alone) or accept a stale Ready. Instead, what upstream does write for
  the change we made: a Standard canary's entry in ``status.canaryStatuses`` with the
  ``trafficPercent`` we applied (``components/predictor.go`` ``reconcileCanaryDeployments``), a
  promoted or rolled-back canary gone from it, a Knative canary's new latest revision with the
  traffic share we applied (``ksvc_reconciler.go``);
* **condition-complete**: every condition the controller sets for the features in use must be
  True (see :class:`Readiness`), and no known sub-condition may be False;
* **quiet**: it logs one line each time the reasons change, not on every event.

KServe condition names (checked against KServe's sources):

* InferenceService (``pkg/apis/serving/v1beta1/inference_service_status.go``): ``Ready`` aggregates
  ``PredictorReady`` and ``IngressReady``. A Standard-mode canary (``spec.canary[]``, KServe >= 0.20)
  adds ``CanaryPredictorReady`` (reason ``AllCanariesReady`` when True) and
  ``status.canaryStatuses[] = {name, ready, trafficPercent, modelStatus}`` (KServe's Standard-mode
  canary e2e test; the CRD schema in ``shared/crds``). Some distributions' documentation also names
  a ``CanaryReady`` condition; either is accepted, and any that is present must be True.
* LLMInferenceService (``pkg/apis/serving/v1alpha2/llm_inference_service_lifecycle.go``): ``Ready``
  aggregates ``PresetsCombined``, ``WorkloadsReady`` and ``RouterReady``; ``WorkloadsReady`` rolls
  up ``MainWorkloadReady``/``WorkerWorkloadReady``/``PrefillWorkloadReady``/
  ``PrefillWorkerWorkloadReady``/``ScalingReady``/``PrefillScalingReady``; ``RouterReady`` rolls up
  ``GatewaysReady``/``HTTPRoutesReady``/``InferencePoolReady``/``SchedulerWorkloadReady``/
  ``TokenizerReady``.

:func:`probe_endpoint` then asks the server itself: ``GET /v1/models`` must list the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llm_rollout.errors import DeadlineExceeded, PermanentError, TransientError
from llm_rollout.kserve.diagnose import cluster_context, deleted_error, describe_condition, timeout_message
from llm_rollout.kube import (
    INFERENCE_SERVICES,
    LLM_INFERENCE_SERVICES,
    KubeClient,
    Resource,
    WatchExpired,
    backoff_delays,
)

log = logging.getLogger(__name__)

ISVC_REQUIRED = ("Ready",)
ISVC_SUBCONDITIONS = ("PredictorReady", "IngressReady", "PredictorRouteReady", "PredictorConfigurationReady")
ISVC_CANARY_CONDITIONS = ("CanaryPredictorReady", "CanaryReady")
LLMISVC_REQUIRED = ("Ready", "WorkloadsReady", "RouterReady")
LLMISVC_PREFILL = "PrefillWorkloadReady"
LLMISVC_SUBCONDITIONS = (
    "PresetsCombined",
    "MainWorkloadReady",
    "WorkerWorkloadReady",
    "PrefillWorkloadReady",
    "PrefillWorkerWorkloadReady",
    "ScalingReady",
    "PrefillScalingReady",
    "GatewaysReady",
    "HTTPRoutesReady",
    "InferencePoolReady",
    "SchedulerWorkloadReady",
    "TokenizerReady",
)


@dataclass(frozen=True)
class Readiness:
    """What "ready" means for one object.

    Attributes:
        resource: The resource (InferenceService or LLMInferenceService).
        required: Conditions that must be present and True.
        subconditions: Conditions that, when present, must not be False.
        canary: Standard-mode canary member (``spec.canary[].predictor.name``) that must be ready.
        knative_canary: Knative-mode canary (``canaryTrafficPercent``): the latest created revision
            must be the latest ready one.
        min_generation: The generation we applied; an older object (metadata.generation) is not
            accepted.
        canary_traffic: Standard canary: the ``trafficPercent`` we applied, which its
            ``status.canaryStatuses`` entry must show (the controller copies it from the spec).
        gone_canary: Standard promotion/rollback: this member must no longer be in
            ``status.canaryStatuses`` (the controller has seen the entry go).
        knative_percent: Knative: the traffic share the latest revision must have.
        knative_after: Knative: the latest created revision before our write; the status must name
            a newer one (our write created a revision).
        generation_rule: Compare ``status.observedGeneration`` with ``metadata.generation``
            (LLMInferenceService only; see the module docstring for why not InferenceService).
    """

    resource: Resource
    required: tuple[str, ...]
    subconditions: tuple[str, ...] = ()
    canary: str | None = None
    knative_canary: bool = False
    min_generation: int | None = None
    canary_traffic: int | None = None
    gone_canary: str | None = None
    knative_percent: int | None = None
    knative_after: str | None = None
    generation_rule: bool = True

    @classmethod
    def inference_service(
        cls,
        *,
        canary: str | None = None,
        knative_canary: bool = False,
        min_generation: int | None = None,
        canary_traffic: int | None = None,
        gone_canary: str | None = None,
        knative_percent: int | None = None,
        knative_after: str | None = None,
    ) -> Readiness:
        """Readiness of an InferenceService (with a Standard or Knative canary when given)."""
        return cls(
            INFERENCE_SERVICES,
            ISVC_REQUIRED,
            ISVC_SUBCONDITIONS,
            canary=canary,
            knative_canary=knative_canary,
            min_generation=min_generation,
            canary_traffic=canary_traffic,
            gone_canary=gone_canary,
            knative_percent=knative_percent,
            knative_after=knative_after,
            generation_rule=False,
        )

    @classmethod
    def llm_inference_service(cls, *, prefill: bool = False, min_generation: int | None = None) -> Readiness:
        """Readiness of an LLMInferenceService (with a prefill workload when ``prefill``).

        Unlike an InferenceService's, an LLMInferenceService's ``status.observedGeneration`` is its
        own ``metadata.generation``: KServe's llmisvc ``controller.go`` ``Reconcile`` ends every
        pass with knative.dev/pkg ``reconciler.PostProcessReconcile``, which sets it "regardless of
        success or failure", after ``PreProcessReconcile`` reset Ready to Unknown for a new
        generation. So ``min_generation`` (the generation we applied) plus Ready=True is exact:
        an in-progress write already claims the new generation but is not Ready.
        """
        required = LLMISVC_REQUIRED + ((LLMISVC_PREFILL,) if prefill else ())
        return cls(LLM_INFERENCE_SERVICES, required, LLMISVC_SUBCONDITIONS, min_generation=min_generation)


@dataclass
class ReadinessEvaluation:
    """The evaluation of one observed object.

    Attributes:
        ready: Everything required is satisfied.
        blockers: Human-readable reasons why not (empty when ready).
        conditions: ``type -> (status, reason, message)`` as last seen.
        generation: ``metadata.generation``.
        observed_generation: ``status.observedGeneration``.
        model_failure: ``(reason, message)`` of ``status.modelStatus.lastFailureInfo`` while KServe
            reports the predictor spec invalid (``transitionStatus: InvalidSpec``), else None.
    """

    ready: bool
    blockers: list[str] = field(default_factory=list)
    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    generation: int | None = None
    observed_generation: int | None = None
    model_failure: tuple[str, str] | None = None

    def signature(self) -> tuple[str, ...]:
        """What the log line is keyed on: it changes only when the reasons change."""
        return tuple(self.blockers)


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    out: dict[str, tuple[str, str, str]] = {}
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type"):
            out[cond["type"]] = (
                str(cond.get("status", "Unknown")),
                cond.get("reason") or "",
                cond.get("message") or "",
            )
    return out


def evaluate(obj: dict[str, Any] | None, readiness: Readiness) -> ReadinessEvaluation:
    """Decides whether ``obj`` is ready by ``readiness``; pure (no I/O).

    Args:
        obj: The object as read from the server (None: it does not exist).
        readiness: What ready means.

    Returns:
        The verdict with every blocker spelled out.
    """
    if obj is None:
        return ReadinessEvaluation(False, ["the object does not exist"])
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    gen = meta.get("generation")
    observed = status.get("observedGeneration")
    conds = _conditions(obj)
    verdict = ReadinessEvaluation(False, [], conds, gen, observed)
    blockers = verdict.blockers
    if readiness.min_generation is not None and (gen or 0) < readiness.min_generation:
        blockers.append(f"generation {gen} is older than the applied generation {readiness.min_generation}")
    if not readiness.generation_rule:
        if not status:
            blockers.append("the controller has not written a status yet")
    elif observed is None:
        blockers.append("the controller has not observed the object yet (no status.observedGeneration)")
    elif gen is not None and observed < gen:
        blockers.append(
            f"status is from generation {observed}, the object is at generation {gen} "
            "(the controller has not caught up; a Ready from the previous generation does not count)"
        )
    model_status = status.get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo") or {}
    if model_status.get("transitionStatus") == "InvalidSpec" and failure.get("reason"):
        # components/predictor.go reconcileModel: the runtime could not be used (RuntimeNotRecognized,
        # RuntimeDisabled, NoSupportingRuntime); KServe writes it here, not into a condition, and
        # retries until the runtime appears.
        verdict.model_failure = (failure["reason"], failure.get("message") or "")
        runtime = (((obj.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("runtime")
        blockers.append(
            f"KServe cannot use the ServingRuntime {runtime or '(auto-selected)'}: modelStatus "
            f"{failure['reason']} ({failure.get('message') or 'no message'})"
        )
    for kind in readiness.required:
        cond = conds.get(kind)
        if cond is None or cond[0] != "True":
            blockers.append(describe_condition(kind, cond))
    for kind in readiness.subconditions:
        cond = conds.get(kind)
        if cond is not None and cond[0] == "False" and kind not in readiness.required:
            blockers.append(describe_condition(kind, cond))
    if readiness.canary:
        present = [k for k in ISVC_CANARY_CONDITIONS if k in conds]
        if not present:
            blockers.append(f"{ISVC_CANARY_CONDITIONS[0]} not reported yet (canary {readiness.canary})")
        for kind in present:
            if conds[kind][0] != "True":
                blockers.append(describe_condition(kind, conds[kind]))
        statuses = status.get("canaryStatuses")
        if statuses is not None:
            mine = [c for c in statuses if c.get("name") == readiness.canary]
            if not mine:
                blockers.append(f"canary {readiness.canary} is not in status.canaryStatuses yet")
            elif not mine[0].get("ready"):
                blockers.append(f"canary {readiness.canary} reports ready=false in status.canaryStatuses")
            elif readiness.canary_traffic is not None and mine[0].get("trafficPercent") != readiness.canary_traffic:
                blockers.append(
                    f"status.canaryStatuses shows canary {readiness.canary} at {mine[0].get('trafficPercent')}%, "
                    f"not the {readiness.canary_traffic}% we applied (the controller has not caught up)"
                )
        else:
            blockers.append(f"canary {readiness.canary} is not in status.canaryStatuses yet")
    gone = readiness.gone_canary
    if gone and any(c.get("name") == gone for c in status.get("canaryStatuses") or []):
        blockers.append(
            f"status.canaryStatuses still lists {readiness.gone_canary} (the controller has not seen it leave "
            "spec.canary yet)"
        )
    if readiness.knative_canary:
        pred = (status.get("components") or {}).get("predictor") or {}
        created, ready_rev = pred.get("latestCreatedRevision"), pred.get("latestReadyRevision")
        if not created or created != ready_rev:
            blockers.append(
                f"the new Knative revision {created or '(not created yet)'} is not the latest ready one "
                f"({ready_rev or 'none'})"
            )
        elif readiness.knative_after and created == readiness.knative_after:
            blockers.append(f"no Knative revision newer than {created} yet (the controller has not caught up)")
    if readiness.knative_percent is not None:
        pred = (status.get("components") or {}).get("predictor") or {}
        latest = [t for t in pred.get("traffic") or [] if t.get("latestRevision")]
        share = latest[0].get("percent") if latest else None
        if share != readiness.knative_percent:
            blockers.append(
                f"the latest Knative revision has {share if share is not None else 'no'}% of the traffic, "
                f"not the {readiness.knative_percent}% we applied"
            )
    verdict.ready = not blockers
    return verdict


# Diagnosis -------------------------------------------------------------------------------------


def wait_ready(
    client: KubeClient,
    name: str,
    namespace: str,
    readiness: Readiness,
    *,
    timeout_s: float,
    on_change: Callable[[ReadinessEvaluation], None] | None = None,
    watch_timeout_s: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Waits until the object is ready by ``readiness`` and returns it.

    Lists the object, then watches it from the List's resourceVersion; re-lists on 410 Gone and
    reconnects with jittered backoff on transient errors, all within ``timeout_s``.

    Args:
        client: The kube client.
        name: Object name.
        namespace: Namespace.
        readiness: What ready means (conditions, canary, generation).
        timeout_s: Overall bound.
        on_change: Called with each new verdict whose reasons differ from the previous one.
        watch_timeout_s: Server-side timeout of one watch request (re-watched after).
        clock: Monotonic clock.

    Returns:
        The object as last seen (ready).

    Raises:
        DeadlineExceeded: Not ready in time; the message carries the last conditions, the likely
            causes and pod states/events where available.
        PermanentError: The object was deleted (or is being deleted) while waiting, or the server
            refused the reads.
    """
    res = readiness.resource
    kind = res.kind
    deadline = clock() + timeout_s
    selector = f"metadata.name={name}"
    last_sig: tuple[str, ...] | None = None
    last_verdict: ReadinessEvaluation | None = None
    last_error: BaseException | None = None
    delays = backoff_delays(0.05, 2.0)

    def observe(obj: dict[str, Any] | None) -> bool:
        nonlocal last_sig, last_verdict
        verdict = evaluate(obj, readiness)
        last_verdict = verdict
        sig = verdict.signature()
        if sig != last_sig:
            last_sig = sig
            if verdict.ready:
                log.info("%s %s/%s is ready (generation %s)", kind, namespace, name, verdict.generation)
            else:
                log.info("%s %s/%s waiting: %s", kind, namespace, name, "; ".join(verdict.blockers))
            if on_change is not None:
                on_change(verdict)
        return verdict.ready

    def remaining() -> float:
        return deadline - clock()

    current: dict[str, Any] | None = None
    while remaining() > 0:
        try:
            listed = client.list(res, namespace, field_selector=selector, deadline_s=max(0.1, remaining()))
            items = listed.get("items") or []
            current = items[0] if items else None
            if observe(current):
                return current  # type: ignore[return-value]
            if current is not None and (current.get("metadata") or {}).get("deletionTimestamp"):
                raise deleted_error(kind, namespace, name)
            rv = (listed.get("metadata") or {}).get("resourceVersion") or "0"
            while remaining() > 0:
                wt = max(1.0, min(watch_timeout_s, remaining()))
                with client.watch(res, namespace, resource_version=rv, field_selector=selector, timeout_s=wt) as events:
                    for event in events:
                        etype = event.get("type")
                        obj = event.get("object") or {}
                        new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                        if new_rv:
                            rv = new_rv
                        if etype == "BOOKMARK":
                            continue
                        if etype == "DELETED":
                            raise deleted_error(kind, namespace, name)
                        current = obj
                        if observe(current):
                            return current
                        if (obj.get("metadata") or {}).get("deletionTimestamp"):
                            raise deleted_error(kind, namespace, name)
                        if remaining() <= 0:
                            break
                last_error = None
        except WatchExpired as err:
            last_error = err
            log.info("%s %s/%s: watch expired (410), re-listing", kind, namespace, name)
            continue
        except (TransientError, DeadlineExceeded) as err:
            if isinstance(err, DeadlineExceeded) and remaining() <= 0:
                last_error = err.__cause__ or err
                break
            last_error = err
            pause = min(next(delays), max(0.0, remaining()))
            log.info("%s %s/%s: %s; reconnecting in %.2fs", kind, namespace, name, err, pause)
            time.sleep(pause)
            continue
    context, context_texts = cluster_context(client, readiness, name, namespace)
    raise DeadlineExceeded(
        timeout_message(readiness, name, namespace, timeout_s, last_verdict, context, context_texts, last_error)
    )


# Ready is not serving --------------------------------------------------------------------------


DELETE_TIMEOUT_S = 300.0
"""How long a deleted KServe object may stay behind its finalizers before a step gives up."""


def gone_if_terminating(
    client: KubeClient, res: Resource, live: dict[str, Any] | None, *, timeout_s: float
) -> dict[str, Any] | None:
    """``live``, or None once it is gone when it was being deleted.

    An object with ``metadata.deletionTimestamp`` stays until its controller drops its finalizer
    (KServe: ``inferenceservice.finalizers``, ``controller.go`` ``Reconcile``); an apply in that window
    writes to the terminating object and vanishes with it, so the caller waits it out
    (:func:`wait_deleted`) and plans as if there was none.
    """
    meta = (live or {}).get("metadata") or {}
    if not meta.get("deletionTimestamp"):
        return live
    log.info("%s %s/%s is being deleted; waiting until it is gone", res.kind, meta.get("namespace"), meta.get("name"))
    wait_deleted(client, res, meta.get("name", ""), meta.get("namespace", ""), timeout_s=timeout_s)
    return None


def wait_deleted(
    client: KubeClient,
    res: Resource,
    name: str,
    namespace: str,
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Waits until a deleted object is gone from the API server (watch-driven, bounded).

    A delete returns while the object still exists when it has finalizers: the API server sets
    ``metadata.deletionTimestamp`` and the object stays until its controller has cleaned up and
    dropped its finalizer (KServe: ``inferenceservice.finalizers``, ``controller.go`` ``Reconcile``).
    An apply in that window writes to the terminating object, which then disappears under it.

    Raises:
        DeadlineExceeded: Still there after ``timeout_s``, naming its finalizers.
    """
    deadline = clock() + timeout_s
    selector = f"metadata.name={name}"
    delays = backoff_delays(0.05, 2.0)
    current: dict[str, Any] | None = None
    while clock() < deadline:
        try:
            listed = client.list(res, namespace, field_selector=selector, deadline_s=max(0.1, deadline - clock()))
            items = listed.get("items") or []
            if not items:
                return
            current = items[0]
            rv = (listed.get("metadata") or {}).get("resourceVersion") or "0"
            wt = max(1.0, deadline - clock())
            with client.watch(res, namespace, resource_version=rv, field_selector=selector, timeout_s=wt) as events:
                for event in events:
                    if event.get("type") == "DELETED":
                        return
                    if event.get("type") != "BOOKMARK":
                        current = event.get("object") or current
                    if clock() >= deadline:
                        break
        except WatchExpired:
            continue
        except (TransientError, DeadlineExceeded):
            time.sleep(min(next(delays), max(0.0, deadline - clock())))
    finalizers = ((current or {}).get("metadata") or {}).get("finalizers") or []
    raise DeadlineExceeded(
        f"{res.kind} {namespace}/{name} was still there {timeout_s:g}s after its deletion "
        f"(finalizers {finalizers}): the controller that owns a finalizer removes it once it has cleaned up; "
        "check that the KServe controller is running (kubectl -n kserve get pods)"
    )


def probe_endpoint(
    url: str,
    model: str,
    timeout: float,
    *,
    api_key: str | None = None,
    verify: bool | str = True,
    interval_s: float = 1.0,
) -> list[str]:
    """Waits until the OpenAI-compatible server at ``url`` lists ``model`` on ``GET /v1/models``.

    Connection errors and non-200 answers are retried until ``timeout``; a 401/403 fails at once
    (retrying cannot fix credentials).

    Args:
        url: Base URL of the server (``http://host:port``; a trailing ``/v1`` is accepted).
        model: The served model name that must be listed.
        timeout: Overall bound in seconds.
        api_key: Bearer token, if the endpoint needs one (never logged).
        verify: TLS verification (True, False or a CA bundle path).
        interval_s: Pause between attempts.

    Returns:
        The model ids the server listed.

    Raises:
        DeadlineExceeded: The model was not listed in time (message says what was seen).
        PermanentError: The endpoint refused our credentials.
    """
    import httpx

    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    listed: list[str] = []
    with httpx.Client(timeout=min(10.0, max(1.0, timeout)), verify=verify, headers=headers) as http:
        while True:
            try:
                resp = http.get(f"{base}/v1/models")
                if resp.status_code in (401, 403):
                    raise PermanentError(
                        f"{base}/v1/models refused the credentials ({resp.status_code}); check "
                        "validation.api_key_env / api_key_file"
                    )
                if resp.status_code == 200:
                    listed = [m.get("id", "") for m in (resp.json().get("data") or [])]
                    if model in listed:
                        return listed
                    last = f"the server lists {listed or 'no models'}, not {model!r}"
                else:
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
            except ValueError as err:
                last = f"undecodable /v1/models answer: {err}"
            if time.monotonic() + interval_s > deadline:
                raise DeadlineExceeded(
                    f"{base} is Ready on the cluster but does not serve {model!r} after {timeout:g}s "
                    f"(last: {last}). Ready is not serving: check the server logs, the served model name "
                    "(model.name) and the network path to the endpoint"
                )
            time.sleep(interval_s)
