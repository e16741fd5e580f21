"""A test-only stand-in for the KServe controller.

Nothing here can run pods, so cluster tests need something that does what KServe's controller does
to the custom resources: watch InferenceServices and LLMInferenceServices and write their
``status`` (conditions with reasons and lastTransitionTime, ``observedGeneration``, ``url``,
``address``, per-component and per-canary information). :class:`Reconciler` is that, as a thread,
with switches for the failure modes a rollout must survive:

* ``ready`` (default): Ready after ``ready_after_ms``;
* ``never``: never Ready; the conditions carry ``reason`` (default ``ImagePullBackOff``);
* ``degrade``: Ready, then after ``degrade_after_ms`` not Ready with ``reason``;
* ``stale``: writes Ready=True but keeps ``observedGeneration`` at the previous generation (what a
  lagging controller looks like; a correct waiter must not accept it).

Switches are global (:meth:`Reconciler.set_default`) or per object name
(:meth:`Reconciler.behave`). ``url`` points the written URLs at a real endpoint (a local vLLM)
for tests that need traffic. The status shapes follow KServe's own (see ``llm_rollout.wait`` for
the sources): ``PredictorReady``/``IngressReady``/``Ready``, ``CanaryPredictorReady`` (reason
``AllCanariesReady``) with ``status.canaryStatuses``; for LLMInferenceService ``PresetsCombined``,
``MainWorkloadReady``, ``PrefillWorkloadReady``, ``WorkloadsReady``, ``HTTPRoutesReady``,
``SchedulerWorkloadReady``, ``InferencePoolReady``, ``RouterReady``, ``Ready`` (``failing`` picks
which of them carry the failure, e.g. the gateway while the workloads are up).

Every Ready=True write is recorded in :attr:`Reconciler.ready_writes` with the time it was sent,
which the detection-latency benchmark compares with the moment the waiter returned.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes import client as k8s_client

from llm_rollout.errors import RolloutError
from llm_rollout.kube import INFERENCE_SERVICES, LLM_INFERENCE_SERVICES, KubeClient, Resource, WatchExpired

log = logging.getLogger("tests.reconciler")

Mode = Literal["ready", "never", "degrade", "stale"]
FIELD_MANAGER = "kserve-controller-standin"


@dataclass(frozen=True)
class Behaviour:
    """How the stand-in treats an object.

    Attributes:
        mode: ``ready``, ``never``, ``degrade`` or ``stale`` (see the module docstring).
        ready_after_ms: Delay between seeing a generation and writing its Ready status.
        reason: Reason of the not-ready conditions (``never``/``degrade``).
        message: Message of the not-ready conditions.
        degrade_after_ms: How long ``degrade`` stays Ready.
        url: Real endpoint to write as the object's URLs (e.g. a local vLLM ``http://127.0.0.1:PORT``).
        failing: LLMInferenceService only: the leaf conditions that carry ``reason`` while not
            ready (e.g. ``("GatewaysReady",)`` with ``WaitingForGateway``: workloads up, router
            not); the others are True and the roll-ups (``WorkloadsReady``, ``RouterReady``,
            ``Ready``) follow their leaves. Empty: the workload conditions fail (the default).
    """

    mode: Mode = "ready"
    ready_after_ms: int = 0
    reason: str = "ImagePullBackOff"
    message: str = 'Back-off pulling image "vllm/vllm-openai:v0.11.0"'
    degrade_after_ms: int = 300
    url: str | None = None
    failing: tuple[str, ...] = ()


@dataclass
class ReadyWrite:
    """One Ready=True status write.

    Attributes:
        kind: ``InferenceService`` or ``LLMInferenceService``.
        namespace: Namespace.
        name: Object name.
        generation: The generation the status claims to have observed.
        sent_at: ``time.monotonic()`` just before the write was sent.
        done_at: ``time.monotonic()`` when the server had accepted it.
    """

    kind: str
    namespace: str
    name: str
    generation: int
    sent_at: float
    done_at: float = 0.0


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    key: tuple[str, str, str] = field(compare=False)
    phase: str = field(compare=False, default="ready")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(kind: str, ok: bool, reason: str = "", message: str = "", severity: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    if severity:
        cond["severity"] = severity
    return cond


def _strip_times(status: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(status)
    for cond in out.get("conditions") or []:
        cond.pop("lastTransitionTime", None)
    return out


def _with_times(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Keeps lastTransitionTime of conditions whose status did not change (as Knative's helpers do)."""
    before = {c.get("type"): c for c in old.get("conditions") or []}
    now = _now()
    for cond in new.get("conditions") or []:
        prev = before.get(cond["type"])
        if prev is not None and prev.get("status") == cond["status"] and prev.get("lastTransitionTime"):
            cond["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = now
    return new


class Reconciler:
    """Watches KServe objects on an API server and writes their status like KServe's controller.

    Args:
        configuration: The kubernetes client Configuration of the (direct, not proxied) API server.
        default: Behaviour for objects without their own.
        namespace: Only objects in this namespace (all when None).
    """

    def __init__(
        self,
        configuration: k8s_client.Configuration,
        *,
        default: Behaviour | None = None,
        namespace: str | None = None,
    ) -> None:
        self._configuration = configuration
        self._default = default or Behaviour()
        self._per_name: dict[str, Behaviour] = {}
        self._namespace = namespace
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._seen_gen: dict[tuple[str, str, str], int] = {}
        self._jobs: list[_Job] = []
        self._seq = 0
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: list[Any] = []
        self.ready_writes: list[ReadyWrite] = []
        self.errors: list[str] = []
        self._ready_cv = threading.Condition(self._lock)

    # Switches ----------------------------------------------------------------------------------

    def set_default(self, behaviour: Behaviour | None = None, **changes: Any) -> None:
        """Sets the global behaviour (``behaviour`` or changes to the current one)."""
        with self._lock:
            self._default = behaviour or replace(self._default, **changes)
        self.resync()

    def behave(self, name: str, behaviour: Behaviour | None = None, **changes: Any) -> None:
        """Sets the behaviour of the object called ``name`` (any kind, any namespace)."""
        with self._lock:
            base = self._per_name.get(name, self._default)
            self._per_name[name] = behaviour or replace(base, **changes)
        self.resync(name)

    def forget(self, name: str) -> None:
        """Drops the per-object behaviour of ``name`` (it follows the default again)."""
        with self._lock:
            self._per_name.pop(name, None)
        self.resync(name)

    def behaviour_of(self, name: str) -> Behaviour:
        """The behaviour that applies to ``name``."""
        with self._lock:
            return self._per_name.get(name, self._default)

    def resync(self, name: str | None = None) -> None:
        """Re-evaluates known objects (all, or those called ``name``) now."""
        with self._lock:
            for key in list(self._objects):
                if name is None or key[2] == name:
                    self._schedule(key, 0.0)

    # Lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Reconciler:
        """Starts the watch threads and the worker; returns self."""
        self._stop.clear()
        for res in (INFERENCE_SERVICES, LLM_INFERENCE_SERVICES):
            t = threading.Thread(target=self._watch_loop, args=(res,), name=f"standin-watch-{res.plural}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._work_loop, name="standin-worker", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stops all threads (closes the open watches)."""
        self._stop.set()
        self._queue.put(("STOP", {}))
        for stream in list(self._streams):
            with contextlib.suppress(Exception):
                stream.close()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()

    def __enter__(self) -> Reconciler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_ready_write(
        self, name: str, generation: int | None = None, timeout: float = 10.0, *, since: float | None = None
    ) -> ReadyWrite:
        """Blocks until a Ready=True status was written for ``name``.

        Args:
            name: Object name.
            generation: Only a write claiming at least this observedGeneration counts.
            timeout: Seconds to wait.
            since: Only a write sent at or after this ``time.monotonic()`` counts.
        """
        deadline = time.monotonic() + timeout
        with self._ready_cv:
            while True:
                for w in reversed(self.ready_writes):
                    if (
                        w.name == name
                        and (generation is None or w.generation >= generation)
                        and (since is None or w.sent_at >= since)
                        and w.done_at
                    ):
                        return w
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no Ready write for {name} (generation {generation}) in {timeout}s")
                self._ready_cv.wait(left)

    # Internals ---------------------------------------------------------------------------------

    def _client(self) -> KubeClient:
        return KubeClient(
            k8s_client.ApiClient(self._configuration),
            field_manager=FIELD_MANAGER,
            audit=False,
            retry_deadline_s=10,
            request_timeout_s=10,
        )

    def _watch_loop(self, res: Resource) -> None:
        kube = self._client()
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listed = kube.list(res, self._namespace)
                    rv = (listed.get("metadata") or {}).get("resourceVersion") or "0"
                    for obj in listed.get("items") or []:
                        self._queue.put(("UPSERT", obj))
                stream = kube.watch(res, self._namespace, resource_version=rv, timeout_s=30)
                self._streams.append(stream)
                try:
                    for event in stream:
                        obj = event.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if event.get("type") == "BOOKMARK":
                            continue
                        self._queue.put(("DELETE" if event.get("type") == "DELETED" else "UPSERT", obj))
                finally:
                    with contextlib.suppress(ValueError):
                        self._streams.remove(stream)
                    stream.close()
            except WatchExpired:
                rv = None
            except (RolloutError, OSError) as err:
                if self._stop.is_set():
                    return
                self.errors.append(f"watch {res.plural}: {err}")
                rv = None
                self._stop.wait(0.2)

    def _schedule(self, key: tuple[str, str, str], delay_s: float, phase: str = "ready") -> None:
        self._seq += 1
        heapq.heappush(self._jobs, _Job(time.monotonic() + delay_s, self._seq, key, phase))
        self._queue.put(("WAKE", {}))

    def _work_loop(self) -> None:
        kube = self._client()
        while not self._stop.is_set():
            with self._lock:
                timeout = max(0.0, self._jobs[0].due - time.monotonic()) if self._jobs else 0.5
            try:
                op, obj = self._queue.get(timeout=timeout)
            except queue.Empty:
                op, obj = "TICK", {}
            if op == "STOP":
                return
            with self._lock:
                if op in ("UPSERT", "DELETE"):
                    self._on_event(op, obj)
                due: list[_Job] = []
                now = time.monotonic()
                while self._jobs and self._jobs[0].due <= now:
                    due.append(heapq.heappop(self._jobs))
            for job in due:
                try:
                    self._reconcile(kube, job)
                except RolloutError as err:
                    if self._stop.is_set():
                        return
                    self.errors.append(f"reconcile {job.key}: {err}")
                    with self._lock:
                        self._schedule(job.key, 0.1, job.phase)

    def _on_event(self, op: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if op == "DELETE":
            self._objects.pop(key, None)
            self._seen_gen.pop(key, None)
            return
        self._objects[key] = obj
        gen = int(meta.get("generation") or 0)
        if self._seen_gen.get(key) != gen:
            self._seen_gen[key] = gen
            b = self.behaviour_of(key[2])
            # A new generation: "in progress" at once (as KServe marks it), then the outcome.
            if b.ready_after_ms > 0:
                self._schedule(key, 0.0, "progress")
            self._schedule(key, b.ready_after_ms / 1000.0, "ready")

    def _reconcile(self, kube: KubeClient, job: _Job) -> None:
        with self._lock:
            obj = self._objects.get(job.key)
            if obj is None:
                return
            obj = copy.deepcopy(obj)
            b = self.behaviour_of(job.key[2])
        kind = job.key[0]
        gen = int((obj.get("metadata") or {}).get("generation") or 0)
        old_status = obj.get("status") or {}
        phase = job.phase
        if phase == "degraded" and b.mode != "degrade":
            phase = "ready"
        if phase == "ready" and b.mode == "never":
            phase = "failed"
        ready = phase == "ready"
        observed = gen
        if b.mode == "stale":
            # A lagging controller: Ready=True, but observedGeneration stays where it was.
            kept = old_status.get("observedGeneration")
            phase, ready, observed = "ready", True, kept if kept is not None else gen - 1
        if kind == "InferenceService":
            status = self._isvc_status(obj, b, phase, ready, observed)
            res = INFERENCE_SERVICES
        else:
            status = self._llmisvc_status(obj, b, phase, ready, observed)
            res = LLM_INFERENCE_SERVICES
        if _strip_times(status) != _strip_times(old_status):
            status = _with_times(status, old_status)
            patch: dict[str, Any] = {k: None for k in old_status if k not in status}
            patch.update(status)
            write = None
            if ready:
                write = ReadyWrite(kind, job.key[1], job.key[2], observed, time.monotonic())
                with self._lock:
                    self.ready_writes.append(write)
            updated = kube.patch_status(res, job.key[2], job.key[1], patch)
            if write is not None:
                with self._ready_cv:
                    write.done_at = time.monotonic()
                    self._ready_cv.notify_all()
            with self._lock:
                if job.key in self._objects:
                    self._objects[job.key] = updated
        if ready and b.mode == "degrade" and job.phase == "ready":
            with self._lock:
                self._schedule(job.key, b.degrade_after_ms / 1000.0, "degraded")

    # Status shapes -----------------------------------------------------------------------------

    @staticmethod
    def _not_ok(phase: str, b: Behaviour) -> tuple[str, str]:
        if phase == "progress":
            return "Progressing", "Deployment is progressing"
        if phase == "degraded":
            return b.reason if b.reason != "ImagePullBackOff" else "MinimumReplicasUnavailable", (
                "Deployment does not have minimum availability." if b.reason == "ImagePullBackOff" else b.message
            )
        return b.reason, b.message

    def _isvc_status(self, obj: dict[str, Any], b: Behaviour, phase: str, ready: bool, observed: int) -> dict[str, Any]:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        name, ns = meta["name"], meta["namespace"]
        mode = (meta.get("annotations") or {}).get("serving.kserve.io/deploymentMode", "Standard")
        reason, message = ("", "") if ready else self._not_ok(phase, b)
        pred = spec.get("predictor") or {}
        pred_name = pred.get("name")
        svc = f"{name}-{pred_name}-predictor" if pred_name else f"{name}-predictor"
        internal = f"http://{svc}.{ns}.svc.cluster.local"
        url = b.url or f"http://{name}-{ns}.example.com"
        conditions = [
            _cond("IngressReady", True),
            _cond("PredictorReady", ready, reason, message),
            _cond("Ready", ready, reason, message),
        ]
        component: dict[str, Any] = {"url": b.url or internal, "address": {"url": b.url or internal}}
        model_status: dict[str, Any] = {
            "transitionStatus": "UpToDate"
            if ready
            else ("InProgress" if phase == "progress" else "BlockedByFailedLoad"),
            "states": {
                "activeModelState": "Loaded" if ready else "Pending",
                "targetModelState": "Loaded" if ready else "Loading",
            },
            "copies": {"failedCopies": 0 if ready or phase == "progress" else 1, "totalCopies": 1 if ready else 0},
        }
        status: dict[str, Any] = {
            "observedGeneration": observed,
            "conditions": conditions,
            "url": url,
            "address": {"url": b.url or f"http://{name}.{ns}.svc.cluster.local"},
            "deploymentMode": mode,
            "servingRuntimeName": (pred.get("model") or {}).get("runtime", ""),
            "modelStatus": model_status,
            "components": {"predictor": component},
        }
        if mode == "Knative" and pred.get("canaryTrafficPercent") is not None:
            rev = f"{name}-predictor-{observed:05d}"
            prev = f"{name}-predictor-{max(1, observed - 1):05d}"
            pct = int(pred["canaryTrafficPercent"])
            component.update(
                latestCreatedRevision=rev,
                latestReadyRevision=rev if ready else prev,
                traffic=[
                    {
                        "revisionName": rev,
                        "percent": pct,
                        "latestRevision": True,
                        "tag": "latest",
                        "url": b.url or f"http://latest-{name}-predictor.{ns}.example.com",
                    },
                    {"revisionName": prev, "percent": 100 - pct, "latestRevision": False, "tag": "prev"},
                ],
            )
        canaries = spec.get("canary") or []
        if canaries:
            statuses = [
                {
                    "name": (c.get("predictor") or {}).get("name", ""),
                    "ready": ready,
                    "trafficPercent": int(c.get("trafficPercent") or 0),
                    "modelStatus": copy.deepcopy(model_status),
                }
                for c in canaries
            ]
            status["canaryStatuses"] = statuses
            conditions.insert(
                0,
                _cond(
                    "CanaryPredictorReady",
                    ready,
                    "AllCanariesReady" if ready else reason,
                    "" if ready else message,
                    severity="Info",
                ),
            )
        return status

    def _llmisvc_status(
        self, obj: dict[str, Any], b: Behaviour, phase: str, ready: bool, observed: int
    ) -> dict[str, Any]:
        """The status KServe's llmisvc controller writes (``controller.go`` ``Reconcile``).

        Every pass, in progress or done, writes ``observedGeneration = metadata.generation``
        (knative.dev/pkg ``reconciler.PostProcessReconcile``); conditions follow
        ``llm_inference_service_lifecycle.go`` (Ready from PresetsCombined, WorkloadsReady,
        RouterReady; the workload and router leaves roll up into those two).
        """
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        name, ns = meta["name"], meta["namespace"]
        reason, message = ("", "") if ready else self._not_ok(phase, b)
        router = spec.get("router") or {}
        prefill = spec.get("prefill") is not None
        scheduler = router.get("scheduler") is not None
        url = b.url or f"http://gateway.example.com/{ns}/{name}"
        workload_leaves = ["MainWorkloadReady"] + (["PrefillWorkloadReady"] if prefill else [])
        router_leaves = ["HTTPRoutesReady"] + (["InferencePoolReady", "SchedulerWorkloadReady"] if scheduler else [])
        failing = set(b.failing or workload_leaves)
        router_leaves += [c for c in b.failing if c not in workload_leaves + router_leaves]  # e.g. GatewaysReady

        def leaf(kind: str) -> dict[str, Any]:
            ok = ready or kind not in failing
            return _cond(kind, ok, "" if ok else reason, "" if ok else message)

        def rollup(kind: str, leaves: list[str]) -> dict[str, Any]:
            ok = ready or not failing.intersection(leaves)
            return _cond(kind, ok, "" if ok else reason, "" if ok else message)

        conds = [_cond("PresetsCombined", True)]
        conds += [leaf(k) for k in workload_leaves] + [rollup("WorkloadsReady", workload_leaves)]
        conds += [leaf(k) for k in router_leaves] + [rollup("RouterReady", router_leaves)]
        conds.append(rollup("Ready", workload_leaves + router_leaves))
        route = router.get("route") or {}
        if route.get("group") is not None and route.get("weight") is not None:
            conds.append(_cond("GroupReady", True))
        workloads: dict[str, Any] = {
            "primary": {
                "kind": "Deployment",
                "apiGroup": "apps",
                "name": f"{name}-kserve",
                "readyReplicas": 1 if ready else 0,
            }
        }
        if prefill:
            workloads["prefill"] = {
                "kind": "Deployment",
                "apiGroup": "apps",
                "name": f"{name}-kserve-prefill",
                "readyReplicas": 1 if ready else 0,
            }
        return {
            "observedGeneration": observed,
            "conditions": conds,
            "url": url,
            "address": {"url": url},
            "addresses": [{"name": "gateway-external", "url": url}],
            "workloads": workloads,
        }
