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

  It then waits (watch-driven, generation-aware, see :mod:`llm_rollout.kserve.wait`), optionally probes the
  new revision's endpoint (``GET /v1/models``) and returns the
  :class:`~llm_rollout.record.DeploymentRecord`.

Everything that can be refused is computed before the first write: the spec, the storage URI and
every object are built first, so a bad input leaves nothing half-applied. A deploy restarted
mid-way (pod preempted) computes the same objects, finds its own by name, re-applies them (a
no-op) and continues waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve.builders import Member
from llm_rollout.kserve.crds import check_crds
from llm_rollout.kserve.lease import acquire_lease, rollout_state
from llm_rollout.kserve.preflight import check_model_store, preflight
from llm_rollout.kserve.records import find_stable_record, same_model
from llm_rollout.kserve.variants import Variant, variant_for
from llm_rollout.kserve.wait import probe_endpoint, wait_ready
from llm_rollout.kube import KubeClient
from llm_rollout.names import revision_id
from llm_rollout.record import DeploymentRecord
from llm_rollout.spec import KSERVE_URI_SCHEMES, LLMD_URI_SCHEMES, RolloutSpec, check_model_uri
from llm_rollout.validation.client import resolve_api_key

log = logging.getLogger(__name__)

DEFAULT_DEPLOY_TIMEOUT_S = 1800.0
"""Large models take long to download and load; the startup probe of the runtime allows 30 min."""


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


def _require_kserve(spec: RolloutSpec) -> None:
    if spec.platform != "kserve":
        raise SpecError(
            "platform",
            f"this step runs on the kserve platform, but the spec says {spec.platform!r}",
            "set platform: kserve, or use the local platform's steps",
        )


def register_runtime(
    spec: RolloutSpec, client: KubeClient, *, dry_run: bool = False, force: bool = False
) -> dict[str, Any]:
    """Checks the KServe CRDs and applies the vLLM runtime with server-side apply.

    InferenceService path: the namespaced ``ServingRuntime`` ``runtime_name``. llm-d path: the
    ``LLMInferenceServiceConfig`` preset the members reference (when ``llmd.use_preset``). A rerun
    with the same spec changes nothing (same generation and resourceVersion, no new managedFields
    entry).

    Args:
        spec: The rollout spec.
        client: The kube client.
        dry_run: Plan only (``dryRun=All``): validated by the server, nothing stored.
        force: Take over fields another field manager owns (only when the user asked).

    Returns:
        The applied object as the server has it (empty for llm-d without a preset).

    Raises:
        SpecError: The spec is invalid or not for the kserve platform.
        PermanentError: CRDs missing/too old, a conflict with another field manager, a rejected field.
    """
    _require_kserve(spec)
    variant = variant_for(spec)
    variant.runtime_object()  # a bad spec is refused before any call
    check_crds(client, variant.llmd, need_canary=variant.need_canary_field())
    obj = variant.owned_runtime_object(client)
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


# deploy-model ----------------------------------------------------------------------------------


def deploy(
    spec: RolloutSpec,
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
        spec: The rollout spec.
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
            (its lease, see :mod:`llm_rollout.kserve.lease`); 0 fails at once naming the holder.

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
    _require_kserve(spec)
    variant = variant_for(spec)
    digest = artifact_digest or spec.model.digest
    # The endpoint's key is read before anything is applied: a key this step cannot see is a
    # configuration error to fix now, not a rollback after the new revision is up. A dry run
    # (planning from a laptop) needs no key.
    api_key = None if dry_run else resolve_api_key(spec.validation.api_key_env, spec.validation.api_key_file)
    storage_uri = to_storage_uri(model_uri if model_uri is not None else spec.model.uri, llmd=variant.llmd)
    rev = revision or spec.model.revision or revision_id(storage_uri, digest)
    new = Member(name=variant.member_name(rev), model_uri=storage_uri, revision=rev, run_id=run_id)

    check_crds(client, variant.llmd, need_canary=variant.need_canary_field())

    ref = variant.ref()
    if not dry_run:
        stable_model = find_stable_model(variant, client)
        if same_model(stable_model, storage_uri, digest):
            return already_promoted_record(variant, stable_model, run_id=run_id)  # type: ignore[arg-type]
        first = variant.plan(client, new)
        preflight(client, [first.obj], step="deploy-model")
        check_model_store(client, spec, storage_uri)  # a model in the store: the serving account can read it
        if run_id:
            # One rollout of a service at a time (lease.py, a Lease of its own): taken before the plan is final.
            acquire_lease(ref, client, run_id, wait_s=lease_wait_s)
    plan = variant.plan(client, new)
    for note in plan.notes:
        log.warning("%s: %s", spec.service_name, note)

    applied = client.apply(plan.obj, dry_run=dry_run)
    variant.after_apply(client, applied, dry_run=dry_run)
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
    record = plan.record(spec, new, generation=generation, digest=digest)
    if dry_run:
        return record

    readiness = variant.readiness(plan, generation)
    remaining = max(1.0, timeout_s - (time.monotonic() - started))
    ready = wait_ready(client, plan.object_name, spec.namespace, readiness, timeout_s=remaining)

    endpoint, service_url = variant.addresses(ready, plan, new)
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


def find_stable_model(variant: Variant, client: KubeClient) -> dict[str, Any] | None:
    """The model the service's last promotion made stable while it still serves, or None.

    Returns:
        The ``llm-rollout.io/stable`` record: ``member``, ``revision``, ``model_uri``,
        ``artifact_digest``, ``run_id``, ``summary``, ``promoted_at``, ``endpoint_url`` ...
    """
    holder = rollout_state(client, variant.ref())
    stable = find_stable_record(holder)
    if not stable.get("member") or not variant.stable_serves(client, holder, stable):
        return None
    return stable


def already_promoted_record(variant: Variant, stable: dict[str, Any], *, run_id: str = "") -> DeploymentRecord:
    """The deployment record of a rerun whose model already is the stable one (nothing applied)."""
    spec = variant.spec
    log.info(
        "%s: %s (%s) already is the promoted model: nothing to roll out",
        spec.service_name,
        stable["member"],
        stable.get("model_uri"),
    )
    return DeploymentRecord(
        platform="kserve",
        kind=variant.kind,  # type: ignore[arg-type]
        name=spec.service_name,
        namespace=spec.namespace,
        member=stable["member"],
        revision=stable.get("revision") or "",
        model_uri=stable.get("model_uri") or "",
        served_model_name=stable.get("served_model_name") or spec.served_model_name,
        endpoint_url=stable.get("endpoint_url") or "",
        run_id=run_id,
        artifact_digest=stable.get("artifact_digest"),
        already_promoted=True,
    )
