"""The ``kserve`` platform steps: register the vLLM runtime and roll a model revision out.

* :func:`register_runtime` checks the KServe CRDs and applies the namespaced ``ServingRuntime``
  (or, for llm-d, the shared ``LLMInferenceServiceConfig`` preset). A rerun changes nothing.
* :func:`deploy` rolls one model revision out *beside* what is stable, never instead of it:

  - no service yet: the first rollout creates it (no stable revision);
  - an InferenceService that already serves: the new model becomes a ``spec.canary[]`` entry with
    ``canary.traffic_percent`` (0 = dark launch; Standard mode) or goes into the predictor with
    ``canaryTrafficPercent`` (Knative mode). The stable predictor is copied exactly from the live
    object, so server-side apply changes nothing there;
  - llm-d: the new model is a second LLMInferenceService member in the same ``router.route.group``
    with its ``weight``; the stable member object is not written at all.

  It then waits (watch-driven, generation-aware, see :mod:`llm_rollout.wait`), optionally probes the
  new revision's endpoint (``GET /v1/models``) and returns the
  :class:`~llm_rollout.record.DeploymentRecord`.

Everything that can be refused is computed before the first write: the spec, the storage URI and
every object are built first, so a bad input leaves nothing half-applied. A deploy restarted
mid-way (pod preempted) computes the same objects, finds its own by name, re-applies them (a
no-op) and continues waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from llm_rollout import builders
from llm_rollout.builders import LABEL_REVISION, LABEL_SERVICE, Member
from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve.crds import check_crds
from llm_rollout.kube import (
    INFERENCE_SERVICES,
    LLM_INFERENCE_SERVICES,
    ApiError,
    ForbiddenError,
    KubeClient,
)
from llm_rollout.names import isvc_member_name, member_name, predictor_service_name, short_hash
from llm_rollout.record import DeploymentRecord, StableRef
from llm_rollout.spec import KSERVE_URI_SCHEMES, LLMD_URI_SCHEMES, RolloutSpec, check_model_uri, coerce_spec
from llm_rollout.validation.client import resolve_api_key
from llm_rollout.wait import Readiness, probe_endpoint, wait_ready

log = logging.getLogger(__name__)

DEFAULT_DEPLOY_TIMEOUT_S = 1800.0
"""Large models take long to download and load; the startup probe of the runtime allows 30 min."""

LLMD_STABLE_WEIGHT = 100
"""Weight a first llm-d member gets in its route group; a canary's weight is relative to it."""


# Inputs ----------------------------------------------------------------------------------------


def to_storage_uri(uri: str, *, llmd: bool = False) -> str:
    """Maps a KFP model artifact URI to what KServe's storage initializer loads.

    ``minio://bucket/key`` (KFP's default artifact store) becomes ``s3://bucket/key`` (MinIO speaks
    S3; the endpoint comes from the storage secret). ``s3://``, ``gs://``, ``pvc://``, ``hf://`` and
    ``oci://`` are kept (llm-d takes ``hf``, ``pvc``, ``oci`` and ``s3``).

    Args:
        uri: The artifact URI.
        llmd: The target is an LLMInferenceService.

    Returns:
        The ``storageUri`` / ``model.uri`` value.

    Raises:
        SpecError: For an empty URI, a local path or any other scheme; the message lists the
            accepted schemes.
    """
    if not uri or not uri.strip():
        accepted = LLMD_URI_SCHEMES if llmd else KSERVE_URI_SCHEMES
        raise SpecError(
            "model.uri",
            "no model URI was given",
            "pass the model artifact, or set model.uri to one of " + ", ".join(f"{s}://" for s in accepted),
        )
    uri = uri.strip()
    check_model_uri(uri, "kserve", llmd=llmd)
    if urlparse(uri).scheme.lower() == "minio":
        return "s3://" + uri.split("://", 1)[1]
    return uri


def revision_id(model_uri: str, digest: str | None = None) -> str:
    """The default revision id of a model: ``r`` + a short hash of its URI and digest."""
    return "r" + short_hash(model_uri + (digest or ""), 8)


def _require_kserve(spec: RolloutSpec) -> None:
    if spec.platform != "kserve":
        raise SpecError(
            "platform",
            f"this step runs on the kserve platform, but the spec says {spec.platform!r}",
            "set platform: kserve, or use the local platform's steps",
        )


def _need_canary_field(spec: RolloutSpec) -> bool:
    return spec.deployment_mode == "Standard" and not spec.llmd.enabled


# register-runtime -------------------------------------------------------------------------------


def register_runtime(
    spec: RolloutSpec | dict[str, Any] | str, client: KubeClient, *, dry_run: bool = False, force: bool = False
) -> dict[str, Any]:
    """Checks the KServe CRDs and applies the vLLM runtime with server-side apply.

    InferenceService path: the namespaced ``ServingRuntime`` ``runtime_name``. llm-d path: the
    ``LLMInferenceServiceConfig`` preset the members reference (when ``llmd.use_preset``). A rerun
    with the same spec changes nothing (same generation and resourceVersion, no new managedFields
    entry).

    Args:
        spec: The rollout spec (typed, a dict or JSON).
        client: The kube client.
        dry_run: Plan only (``dryRun=All``): validated by the server, nothing stored.
        force: Take over fields another field manager owns (only when the user asked).

    Returns:
        The applied object as the server has it (empty for llm-d without a preset).

    Raises:
        SpecError: The spec is invalid or not for the kserve platform.
        PermanentError: CRDs missing/too old, a conflict with another field manager, a rejected field.
    """
    spec = coerce_spec(spec)
    _require_kserve(spec)
    if spec.llmd.enabled:
        obj = builders.llm_inference_service_config(spec) if spec.llmd.use_preset else None
    else:
        obj = builders.serving_runtime(spec)
    check_crds(client, spec.llmd.enabled, need_canary=_need_canary_field(spec))
    if obj is None:
        log.info("llm-d without a preset: no runtime object to register")
        return {}
    applied = client.apply(obj, dry_run=dry_run, force=force)
    meta = applied.get("metadata") or {}
    log.info(
        "%s %s/%s %s (generation %s, resourceVersion %s)",
        obj["kind"],
        spec.namespace,
        meta.get("name"),
        "planned (dry run)" if dry_run else "applied",
        meta.get("generation"),
        meta.get("resourceVersion"),
    )
    return applied


# preflight --------------------------------------------------------------------------------------


class PreflightRefused(PermanentError):
    """The cluster refused an object of a step in a server-side dry run; nothing was applied.

    Attributes:
        step: The step that stopped.
        kind: The refused object's kind.
        name: The refused object's name.
        fields: The field paths the server named (may be empty).
    """

    def __init__(self, message: str, *, step: str, kind: str, name: str, fields: list[str]) -> None:
        super().__init__(message)
        self.step, self.kind, self.name, self.fields = step, kind, name, fields


def preflight(client: KubeClient, objects: list[dict[str, Any]], *, step: str) -> None:
    """Server-side dry run (``dryRun=All``) of every object of a step, before its first write.

    A dry run goes through the cluster's real admission chain (KServe's validating webhooks, the
    CRD schema and CEL rules, server-side apply ownership) without persisting anything, so KServe's
    own verdict is known before the step changes anything (not even its lease).

    Args:
        client: The kube client.
        objects: What the step is going to apply, in order.
        step: The step's name, for the message.

    Raises:
        PreflightRefused: An object was refused; the message carries the server's (the webhook's)
            message, the fields it named and what to change. Nothing was applied.
    """
    for obj in objects:
        meta = obj.get("metadata") or {}
        kind, name = obj.get("kind", "object"), f"{meta.get('namespace')}/{meta.get('name')}"
        try:
            client.apply(obj, dry_run=True)
        except ApiError as err:
            fields = list(getattr(err, "fields", []) or [])
            text = str(err)
            if isinstance(err, ForbiddenError) and "admission webhook" in text:
                # controller-runtime answers a CustomValidator's error with 403 "admission webhook
                # ... denied the request: <KServe's message>" (inference_service_validation.go)
                fix = (
                    "Fix: the message is KServe's admission rule (pkg/apis/serving/v1beta1/"
                    "inference_service_validation.go or v1alpha2/llm_inference_service_validation.go); change "
                    "the spec field it names, or check that the cluster runs KServe >= 0.20 (spec.canary), "
                    "then run the step again"
                )
                text = f"{text}. {fix}"
            raise PreflightRefused(
                f"{step}: the cluster refused {kind} {name} in a server-side dry run (dryRun=All), so nothing "
                f"was applied: {text}",
                step=step,
                kind=kind,
                name=name,
                fields=fields,
            ) from err


# deploy-model ----------------------------------------------------------------------------------


def _status_url(obj: dict[str, Any]) -> str | None:
    status = obj.get("status") or {}
    return status.get("url") or (status.get("address") or {}).get("url")


def _predictor_url(obj: dict[str, Any]) -> str | None:
    status = obj.get("status") or {}
    pred = (status.get("components") or {}).get("predictor") or {}
    return pred.get("url") or pred.get("restUrl") or (pred.get("address") or {}).get("url") or _status_url(obj)


def canary_address(isvc_name: str, member: str, namespace: str) -> str:
    """In-cluster address of a Standard-mode canary: KServe names its Service ``<isvc>-<canary>-predictor``
    (``constants.PredictorServiceName``)."""
    return f"http://{predictor_service_name(isvc_name, member)}.{namespace}.svc.cluster.local"


def _canary_url(obj: dict[str, Any], member: str) -> str:
    status = obj.get("status") or {}
    for entry in status.get("canaryStatuses") or []:
        if entry.get("name") == member:
            url = entry.get("url") or (entry.get("address") or {}).get("url")
            if url:
                return url
    meta = obj.get("metadata") or {}
    return canary_address(meta.get("name", ""), member, meta.get("namespace", ""))


def _knative_latest_url(obj: dict[str, Any]) -> str | None:
    pred = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
    for entry in pred.get("traffic") or []:
        if entry.get("latestRevision") and entry.get("url"):
            return entry["url"]
    return None


def _llmisvc_url(obj: dict[str, Any]) -> str | None:
    status = obj.get("status") or {}
    if status.get("url"):
        return status["url"]
    if (status.get("address") or {}).get("url"):
        return status["address"]["url"]
    for addr in status.get("addresses") or []:
        if addr.get("url"):
            return addr["url"]
    return None


class _Plan:
    """What deploy is going to apply and wait for (built completely before any write)."""

    def __init__(self) -> None:
        self.kind = ""
        self.obj: dict[str, Any] = {}
        self.object_name = ""
        self.canary = False
        self.stable: StableRef | None = None
        self.traffic_percent = 0
        self.readiness_kwargs: dict[str, Any] = {}
        self.service_url: str | None = None
        self.notes: list[str] = []
        self.live_generation: int | None = None


def _plan_inference_service(spec: RolloutSpec, client: KubeClient, new: Member) -> _Plan:
    plan = _Plan()
    plan.kind = "InferenceService"
    plan.object_name = spec.service_name
    live = client.get_or_none(INFERENCE_SERVICES, spec.service_name, spec.namespace)
    live_pred = ((live or {}).get("spec") or {}).get("predictor")
    live_member = builders.predictor_member(spec.service_name, live_pred or {})
    if live is None or not live_pred:
        # First rollout (or a rerun/resume of it): the stable predictor is unnamed, as upstream's.
        plan.obj = builders.inference_service(spec, new)
        return plan
    live_uri = (live_pred.get("model") or {}).get("storageUri") or ""
    knative_canary = spec.deployment_mode == "Knative" and live_pred.get("canaryTrafficPercent") is not None
    if live_member == new.name and live_uri == new.model_uri and not knative_canary:
        # This revision already is the predictor (a rerun of the first rollout, or promoted):
        # re-applying the live predictor changes nothing.
        plan.obj = builders.inference_service(spec, new, stable_predictor=live_pred)
        return plan
    labels = (live.get("metadata") or {}).get("labels") or {}
    stable_rev = labels.get(LABEL_REVISION, "")
    if spec.deployment_mode == "Standard" and live_uri == new.model_uri:
        raise SpecError(
            "model.uri",
            f"the new revision {new.revision} has the same storage URI as the stable predictor {live_member} "
            f"({live_uri}); KServe refuses to promote it, since predictor.name may change only together with the "
            "model (inference_service_validation.go validatePredictorNameChange)",
            "publish the new model under its own URI (a new path or version), then deploy again",
        )
    if spec.deployment_mode == "Standard" and live_pred.get("name") and live_pred["name"] == new.name:
        raise SpecError(
            "model.revision",
            f"revision {new.revision} gives the predictor name {new.name}, which the stable predictor already has "
            f"(with {live_uri}); KServe refuses a canary named like the stable predictor "
            "(inference_service_validation.go validateCanarySpecs: 'conflicts with stable predictor name')",
            "give the new model its own revision id (model.revision), or leave it empty to derive one from the URI",
        )
    stable_name = live_member
    if knative_canary and live_member == new.name:
        # A rerun of this Knative canary: the predictor already holds it; the stable revision is the
        # one the last promotion recorded (nothing else names it once the predictor was replaced).
        from llm_rollout import promotion

        recorded = promotion.find_stable_record(live)
        stable_name, live_uri, stable_rev = recorded.get("member", ""), recorded.get("model_uri", ""), stable_rev
    stable_member = Member(name=stable_name, model_uri=live_uri, revision=stable_rev)
    plan.stable = StableRef(
        member=stable_name,
        model_uri=live_uri,
        revision=stable_rev,
        resource_version=(live.get("metadata") or {}).get("resourceVersion"),
        endpoint_url=_predictor_url(live),
        generation=(live.get("metadata") or {}).get("generation"),
    )
    canary = dataclasses.replace(new, traffic_percent=spec.canary.traffic_percent)
    if spec.deployment_mode == "Standard":
        # The stable predictor is copied exactly as it is on the server: applying it changes nothing.
        obj = builders.inference_service(spec, stable_member, canary, stable_predictor=live_pred)
        others = [
            c.get("predictor", {}).get("name")
            for c in (live.get("spec") or {}).get("canary") or []
            if c.get("predictor", {}).get("name") != new.name
        ]
        if others:
            plan.notes.append(f"replacing leftover canary entries {others} (from an earlier run that did not finish)")
        plan.readiness_kwargs = {"canary": new.name, "canary_traffic": canary.traffic_percent}
    else:
        obj = builders.inference_service(spec, stable_member, canary)
        live_pred_status = ((live.get("status") or {}).get("components") or {}).get("predictor") or {}
        plan.readiness_kwargs = {
            "knative_canary": True,
            "knative_percent": canary.traffic_percent,
            # our write makes a new revision; a status still naming the old one is stale
            "knative_after": live_pred_status.get("latestCreatedRevision"),
        }
        plan.live_generation = (live.get("metadata") or {}).get("generation")
    obj_labels = obj["metadata"].setdefault("labels", {})
    if stable_rev:
        obj_labels[LABEL_REVISION] = stable_rev
    else:
        obj_labels.pop(LABEL_REVISION, None)
    plan.obj = obj
    plan.canary = True
    plan.traffic_percent = spec.canary.traffic_percent
    return plan


def _llmd_canary_weight(percent: int, stable_weight: int) -> int:
    if percent >= 100:
        raise SpecError(
            "canary.traffic_percent",
            "100% for a new llm-d member would need the stable member's weight at 0, but a rollout never "
            "touches the stable member",
            "give at most 99 (promotion moves the rest of the traffic after validation)",
        )
    return round(stable_weight * percent / (100 - percent))


def _plan_llm_inference_service(spec: RolloutSpec, client: KubeClient, new: Member) -> _Plan:
    plan = _Plan()
    plan.kind = "LLMInferenceService"
    plan.object_name = new.name
    plan.readiness_kwargs = {"prefill": spec.llmd.prefill is not None}
    members = (
        client.list(LLM_INFERENCE_SERVICES, spec.namespace, label_selector=f"{LABEL_SERVICE}={spec.service_name}").get(
            "items"
        )
        or []
    )
    others = [m for m in members if (m.get("metadata") or {}).get("name") != new.name]
    # A weight needs a group and the managed route (KServe's webhook refuses it otherwise).
    grouped = spec.route_group is not None and not spec.llmd.http_route_refs
    if not others:
        plan.obj = builders.llm_inference_service(spec, new, weight=LLMD_STABLE_WEIGHT if grouped else None)
        return plan

    def weight(m: dict[str, Any]) -> int:
        route = (((m.get("spec") or {}).get("router") or {}).get("route")) or {}
        return int(route.get("weight") or 0)

    stable = max(others, key=lambda m: (weight(m), (m.get("metadata") or {}).get("creationTimestamp") or ""))
    if len(others) > 1:
        plan.notes.append(
            "more than one other member exists; taking "
            f"{stable['metadata']['name']} (highest weight) as stable and leaving the others alone"
        )
    smeta = stable.get("metadata") or {}
    plan.stable = StableRef(
        member=smeta.get("name", ""),
        model_uri=((stable.get("spec") or {}).get("model") or {}).get("uri", ""),
        revision=(smeta.get("labels") or {}).get(LABEL_REVISION, ""),
        resource_version=smeta.get("resourceVersion"),
        endpoint_url=_llmisvc_url(stable),
        generation=smeta.get("generation"),
    )
    plan.service_url = _llmisvc_url(stable)
    w = _llmd_canary_weight(spec.canary.traffic_percent, weight(stable) or LLMD_STABLE_WEIGHT) if grouped else None
    plan.obj = builders.llm_inference_service(spec, new, weight=w)
    plan.canary = True
    plan.traffic_percent = spec.canary.traffic_percent
    return plan


def deploy(
    spec: RolloutSpec | dict[str, Any] | str,
    client: KubeClient,
    *,
    model_uri: str | None = None,
    revision: str | None = None,
    run_id: str = "",
    timeout_s: float = DEFAULT_DEPLOY_TIMEOUT_S,
    artifact_digest: str | None = None,
    probe: bool = True,
    dry_run: bool = False,
    resolve_url: Callable[[str], str] | None = None,
    lease_wait_s: float = 0.0,
) -> DeploymentRecord:
    """Rolls a model revision out on KServe beside the stable one and waits until it serves.

    Args:
        spec: The rollout spec (typed, a dict or JSON).
        client: The kube client.
        model_uri: The model artifact URI (``minio://``, ``s3://``, ``gs://``, ``pvc://``, ``hf://``,
            ``oci://``); ``spec.model.uri`` when None.
        revision: Short id of this revision; ``spec.model.revision`` or derived from URI and digest.
        run_id: The pipeline run, recorded in the deployment record.
        timeout_s: Bound on waiting for readiness and serving.
        artifact_digest: Digest of the model artifact (recorded; part of the derived revision id).
        probe: After Ready, check that the new revision's endpoint lists the model
            (``GET /v1/models``); turn off when this process cannot reach the cluster's addresses.
        dry_run: Plan only: server-side dry-run apply, no wait; the record has no endpoint.
        resolve_url: Maps a cluster address to one this process can reach (port-forward, ingress);
            applied to the recorded URLs before probing.
        lease_wait_s: How long to wait for another run's rollout of the same service to finish
            (its lease, see :mod:`llm_rollout.promotion`); 0 fails at once naming the holder.

    A model (storage URI and artifact digest) that already is the promoted stable one is not
    rolled out again: the record comes back with ``already_promoted=True`` and nothing is applied.
    With a ``run_id`` the run takes the service's rollout lease first (released by promote,
    rollback or the exit handler).

    Returns:
        The deployment record: what was rolled out, where the new revision itself answers and what
        was stable before.

    Raises:
        SpecError: Invalid spec or model URI, or an API key this step cannot read (nothing was
            written).
        PermanentError: CRDs missing, conflicts, rejected fields, the object deleted while waiting.
        PreflightRefused: The cluster (KServe's webhook, the CRD schema, another field manager)
            refused the object in a server-side dry run; nothing was applied.
        LeaseHeld: Another run is rolling the same service out (after ``lease_wait_s``).
        DeadlineExceeded: Not ready (or not serving) within ``timeout_s``; the message says why.
    """
    started = time.monotonic()
    spec = coerce_spec(spec)
    _require_kserve(spec)
    llmd = spec.llmd.enabled
    digest = artifact_digest or spec.model.digest
    # The endpoint's key is read before anything is applied: a key this step cannot see is a
    # configuration error to fix now, not a rollback after the new revision is up. A dry run
    # (planning from a laptop) needs no key.
    api_key = None if dry_run else resolve_api_key(spec.validation.api_key_env, spec.validation.api_key_file)
    storage_uri = to_storage_uri(model_uri if model_uri is not None else spec.model.uri, llmd=llmd)
    rev = revision or spec.model.revision or revision_id(storage_uri, digest)
    name = member_name(spec.service_name, rev) if llmd else isvc_member_name(rev)
    new = Member(name=name, model_uri=storage_uri, revision=rev, run_id=run_id)

    check_crds(client, llmd, need_canary=_need_canary_field(spec))

    def make_plan() -> _Plan:
        return _plan_llm_inference_service(spec, client, new) if llmd else _plan_inference_service(spec, client, new)

    lease = ""
    if not dry_run:
        from llm_rollout import promotion

        stable_model = promotion.find_stable_model(spec, client)
        if promotion.same_model(stable_model, storage_uri, digest):
            return promotion.already_promoted_record(spec, stable_model, run_id=run_id)  # type: ignore[arg-type]
        first = make_plan()
        preflight(client, [first.obj], step="deploy-model")
        if run_id:
            # One rollout of a service at a time (promotion.py): taken before the plan is final.
            lease = promotion.acquire_lease(
                spec, client, run_id, wait_s=lease_wait_s, first_object=None if first.stable else first.obj
            )
    plan = make_plan()
    for note in plan.notes:
        log.warning("%s: %s", spec.service_name, note)

    applied = client.apply(plan.obj, dry_run=dry_run)
    if lease == "created":
        promotion.acquire_lease(spec, client, run_id, rewrite=True)  # its manager keeps only the lease
    generation = (applied.get("metadata") or {}).get("generation")
    log.info(
        "%s %s/%s %s: %s revision %s (%s)%s",
        plan.kind,
        spec.namespace,
        plan.object_name,
        "planned (dry run)" if dry_run else "applied",
        "canary" if plan.canary else "first",
        rev,
        storage_uri,
        f" at {plan.traffic_percent}% traffic" if plan.canary else "",
    )
    record = DeploymentRecord(
        platform="kserve",
        kind=plan.kind,  # type: ignore[arg-type]
        name=spec.service_name,
        namespace=spec.namespace,
        member=new.name,
        revision=rev,
        model_uri=storage_uri,
        served_model_name=spec.served_model_name,
        endpoint_url="",
        generation=generation,
        canary=plan.canary,
        traffic_percent=plan.traffic_percent,
        stable=plan.stable,
        run_id=run_id,
        artifact_digest=digest,
    )
    if dry_run:
        return record

    if llmd:
        readiness = Readiness.llm_inference_service(min_generation=generation, **plan.readiness_kwargs)
    else:
        kwargs = dict(plan.readiness_kwargs)
        if plan.live_generation is not None and generation == plan.live_generation:
            kwargs.pop("knative_after", None)  # a rerun changed nothing: no new revision comes
        readiness = Readiness.inference_service(min_generation=generation, **kwargs)
    remaining = max(1.0, timeout_s - (time.monotonic() - started))
    ready = wait_ready(client, plan.object_name, spec.namespace, readiness, timeout_s=remaining)

    if llmd:
        endpoint = _llmisvc_url(ready)
        service_url = plan.service_url or endpoint
    elif plan.canary and spec.deployment_mode == "Standard":
        endpoint = _canary_url(ready, new.name)
        service_url = _status_url(ready)
    elif plan.canary:
        endpoint = _knative_latest_url(ready) or _predictor_url(ready)
        service_url = _status_url(ready)
    else:
        endpoint = _predictor_url(ready)
        service_url = _status_url(ready)
    if not endpoint:
        raise PermanentError(
            f"{plan.kind} {spec.namespace}/{plan.object_name} is Ready but reports no URL or address; "
            "check the KServe ingress/gateway configuration"
        )
    if resolve_url is not None:
        endpoint = resolve_url(endpoint)
        service_url = resolve_url(service_url) if service_url else service_url
    if probe:
        left = max(1.0, timeout_s - (time.monotonic() - started))
        probe_endpoint(
            endpoint,
            spec.served_model_name,
            min(left, spec.validation.readiness_timeout_s),
            api_key=api_key,
            verify=spec.validation.ca_bundle or spec.validation.tls_verify,
        )
    record.endpoint_url = endpoint
    record.service_url = service_url
    record.generation = (ready.get("metadata") or {}).get("generation", generation)
    log.info("%s revision %s ready at %s", spec.service_name, rev, endpoint)
    return record
