"""Renders the builders' objects to the YAML files in ``manifests/``.

``llm-rollout render`` writes them; a test renders the default spec again and fails when the
committed files drift from the builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llm_rollout.kserve import builders
from llm_rollout.kserve.builders import render_all
from llm_rollout.kserve.builders.keda import autoscaling_objects
from llm_rollout.kserve.variants import Variant, variant_for
from llm_rollout.spec import RolloutSpec

PHASES = ("first", "canary", "promoted")
"""Rollout phases ``llm-rollout render --phase`` can show."""

DEFAULT_CANDIDATE_URI = "s3://models/REPLACE-ME-CANDIDATE"
"""Model URI of the new revision in the ``canary`` and ``promoted`` phases (``--candidate-uri``)."""

_HEADERS = {
    "vllm-runtime.yaml": """\
# The namespaced vLLM ServingRuntime (serving.kserve.io/v1alpha1), rendered from the default spec.
# Upstream vLLM OpenAI server on port 8080, model at /mnt/models, served under the
# InferenceService's name. Serving-design defaults: --gpu-memory-utilization=0.9,
# --kv-cache-dtype=fp8 (on an A10G/A100 vLLM stores it with the FlashInfer attention backend,
# which this image ships; the spec refuses it below compute capability 8.0), --tensor-parallel-size
# = GPUs per replica. Probes hit /v1/models; the startup probe allows 30 minutes for large models.
""",
    "kserve-inferenceservice.yaml": """\
# The InferenceService (serving.kserve.io/v1beta1) for a first rollout, rendered from the default
# spec: Standard deployment mode, one A10G-class GPU per replica (16-32 GiB, 4-8 CPUs), 1-10
# replicas scaled by KEDA on vLLM's request rate. A later rollout adds the new model as a
# spec.canary[] entry beside this predictor and leaves the predictor untouched until promotion.
""",
    "kserve-autoscaling.yaml": """\
# Standard mode scaled by KEDA on vLLM's metrics (the default spec). The ScaledObject of the stable
# predictor is applied by the steps (deploy, promote, rollback), not by KServe, whose class is
# `external`: KServe would give every canary a ScaledObject without triggers, which KEDA refuses
# (see README, "Autoscaling and canaries"). The ServiceMonitor (Prometheus Operator) is for the
# cluster's admin to apply once: it gives vLLM's series the `service` label the KEDA query selects.
""",
    "llm-d-configuration.yaml": """\
# llm-d disaggregated serving through KServe's LLMInferenceService (serving.kserve.io/v1alpha2):
# prefill and decode in separate pods, the KV cache moved between them by NIXL, requests placed by
# the llm-d endpoint picker. Rendered from the default spec with llmd.enabled and a prefill role
# (see README "When to add llm-d"). Which knob does what:
#
#   LLMInferenceServiceConfig   this service's preset (<service>-preset-<hash of its content>, or
#                               llmd.preset_name) that its members reference in spec.baseRefs and
#                               that they own (ownerReferences, added at deploy: it goes with the
#                               last of them): container hardening for both roles (llmd.use_preset).
#                               Never shared: KServe merges a preset's prefill into every service
#                               that references it (config_merge.go). No image: KServe's
#                               well-known presets keep theirs (ghcr.io/llm-d/llm-d-cuda), which
#                               runs as non-root (the presets set runAsNonRoot: true) and ships
#                               NIXL; llmd.image overrides it with an image that does the same
#                               (vllm/vllm-openai runs as root and would not start under them).
#   spec.model.uri              hf://, pvc://, oci:// or s3:// (llm-d's storage initializer takes
#                               no gs:// and no local path; minio:// is rewritten to s3://).
#   spec.replicas               decode replicas (llmd.decode.replicas), independent of prefill's.
#                               Or spec.scaling (llmd.decode.scaling): KEDA on the role's own vLLM
#                               metrics; never both (the webhook and CEL refuse it).
#   spec.parallelism.tensor     decode tensor parallel = GPUs per pod (llmd.decode.tensor); vLLM's
#                               --tensor-parallel-size comes from it, not from the args.
#   spec.worker + parallelism   multi-node decode when the model needs more GPUs than one node has
#                               (e.g. a big MoE): llmd.decode.nodes > 1 adds worker pods and needs
#                               data/dataLocal (data / dataLocal = pods) or pipeline (= pods).
#   spec.prefill                the prefill role with its own replicas, parallelism and GPUs. Its
#                               tensor parallel must not exceed decode's (NIXL cannot map it).
#   VLLM_ADDITIONAL_ARGS        our vLLM flags, each shell-quoted: the presets run
#                               eval "exec vllm serve ... ${VLLM_ADDITIONAL_ARGS} $@", so an unquoted
#                               JSON value would be torn apart. On both roles --kv_transfer_config
#                               with NixlConnector: kv_producer on prefill, kv_consumer on decode.
#                               KServe does not add it by itself; without it P/D silently falls back
#                               to decode-only.
#   VLLM_NIXL_SIDE_CHANNEL_HOST the pod IP (fieldRef status.podIP), where NIXL's side channel listens
#                               for the peer's KV-transfer handshake.
#   resources                   GPUs/CPU/memory per pod of each role (nvidia.com/gpu = tensor x
#                               dataLocal unless llmd.<role>.gpus says otherwise).
#   router.scheduler {}         the endpoint picker with no inline config: nothing is customised
#                               (llmd.scheduler.profile 'default'), so KServe's own llm-d baseline
#                               applies (scheduler.go schedulerConfigText): every request is
#                               prefilled on a prefill pod (always-disagg-pd-decider); prefill pods
#                               are scored by prefix cache (3), queue (2) and KV-cache utilisation
#                               (2), decode pods by active requests (2) and prefix cache (3).
#                               Profile 'pd' renders an inline llm-d.ai/v1alpha1 config instead:
#                               disagg-headers-handler, prefill-/decode-filter profiles, and a
#                               disagg-profile-handler whose prefill decider is prefix-based-pd-decider
#                               with nonCachedTokens = llmd.scheduler.pd_threshold_tokens (tokens as
#                               llm-d estimates them, prompt characters / 4, minus the decode pod's
#                               prefix-cache hit; shorter prompts are prefilled on decode).
#   router.route.group/weight   stable and canary members share a group (llmd.route_group) and split
#                               traffic by weight; promotion shifts the weight (e.g. 10 -> 50 -> 100).
#                               A weight needs a group and the managed route (no http_route_refs).
#   router.gateway {}           KServe's default Gateway; name gateways in llmd.gateway_refs.
#
# Validation proves the disaggregation: give validation.metrics_urls roles `prefill` and `decode`
# (and `epp` for the picker's P/D decisions); the prefill role must have served the prefills and
# decode must have received their KV by transfer, else the rollout fails ("prefill served nothing:
# silent decode-only fallback"). With a pd_threshold_tokens, send prompts above it (the spec checks).
""",
    "kserve-model-store.yaml": """\
# KServe's access to the model's object store (runtime.model_store; defaults: KFP's SeaweedFS at
# seaweedfs.kubeflow:9000, no TLS, for models in bucket mlpipeline: minio:// or s3://). KServe's
# storage initializer reads the S3 keys and the serving.kserve.io/s3-* annotations of every Secret
# the serving pods' ServiceAccount lists (kserve pkg/credentials/service_account_credentials.go,
# pkg/credentials/s3/s3_secret.go). For the namespace's admin, once: put in the keys first
# (KServe's names; KFP's Secret calls them accesskey/secretkey), then apply this file (kubectl
# apply keeps data it does not name):
#   get() { kubectl -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath="{.data.$1}" | base64 -d; }
#   kubectl -n NAMESPACE create secret generic kfp-model-store \\
#     --from-literal=awsAccessKeyID="$(get accesskey)" --from-literal=awsSecretAccessKey="$(get secretkey)"
#   kubectl -n NAMESPACE apply -f kserve-model-store.yaml
# deploy-model checks both before it writes anything, for a model in the store's buckets (a run's
# optimized model, under KFP's pipeline root); runtime.model_store.enabled: false turns this off.
""",
    "rbac.yaml": """\
# Least privilege for the pipeline steps: exactly the verbs and resources the library calls (a
# cluster test records every call and compares), in one namespace. The cluster-scoped grants are
# `get` on KServe's three CRDs by name, for the version preflight, and, for the llm-d canary
# preflight (which gateway controller would split the traffic), `get` on KServe's default Gateway
# by name and on GatewayClasses (their names differ per cluster). The `-kfp-run` Role is what
# KFP's own pods need as the run's account (driver: ConfigMap kfp-launcher; launcher: the object
# store's Secret; Argo executor: workflowtaskresults), a by-name subset of KFP's pipeline-runner Role.
""",
}


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Dumps objects as a multi-document YAML stream, keys in builder order, no anchors."""
    return yaml.dump_all(objects, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False, width=100)


_PHASE_HEADERS = {
    "canary": "# Phase 'canary': the objects while a new revision is validated beside the stable one\n"
    "# (canary.traffic_percent of the traffic; Standard-mode weights need Gateway API, see README).\n",
    "promoted": "# Phase 'promoted': the objects after the new revision was promoted (it alone serves).\n",
}


def phase_objects(
    spec: RolloutSpec, phase: str = "first", candidate_uri: str = DEFAULT_CANDIDATE_URI
) -> dict[str, list[dict[str, Any]]]:
    """Every object for ``spec`` as it stands at ``phase`` of a rollout, grouped by manifest file.

    ``first``: the first rollout (stable only; what ``manifests/`` holds). ``canary``: the stable
    revision plus the new one (``candidate_uri``) at ``canary.traffic_percent``: a ``spec.canary[]``
    entry (Standard), ``canaryTrafficPercent`` on the predictor (Knative), a second llm-d member in
    the route group. ``promoted``: after promotion (Standard: the predictor named as the canary was,
    the entry gone; Knative: the new model without ``canaryTrafficPercent``; llm-d: the new member
    alone at the stable's weight).

    Each phase is planned by the serving variant's own code (:func:`serving_objects`), the code
    deploy-model and promote-model run: what is shown is what a rollout writes.

    Raises:
        ValueError: For an unknown phase.
        SpecError: What deploy-model would refuse for this spec (e.g. an llm-d canary at 100 %).
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}: use one of {', '.join(PHASES)}")
    out = render_all(spec)
    isvc = serving_objects(variant_for(spec), phase, candidate_uri)
    if spec.llmd.enabled:
        members = isvc
        llmd_spec = spec
    else:
        out["kserve-inferenceservice.yaml"] = isvc
        out["kserve-autoscaling.yaml"] = autoscaling_objects(spec, isvc[0]["spec"]["predictor"])
        llmd_spec = builders.llmd_example_spec(spec)
        if llmd_spec.canary.traffic_percent >= 100:
            # The example beside an InferenceService spec: an llm-d canary takes at most 99 %
            # (the stable member keeps a weight; deploy refuses 100, see variants/llmd.py).
            canary = llmd_spec.canary.model_copy(update={"traffic_percent": 99})
            llmd_spec = llmd_spec.model_copy(update={"canary": canary})
        members = serving_objects(variant_for(llmd_spec), phase, candidate_uri)
    preset = [o for o in out["llm-d-configuration.yaml"] if o.get("kind") == "LLMInferenceServiceConfig"]
    out["llm-d-configuration.yaml"] = preset + members
    return out


def serving_objects(variant: Variant, phase: str, candidate_uri: str = DEFAULT_CANDIDATE_URI) -> list[dict[str, Any]]:
    """The serving objects of ``variant`` at ``phase``, planned by the variant as deploy and promote do.

    ``first``: the plan of the spec's own model with nothing live. ``canary``: the plan of
    ``candidate_uri`` beside the first phase's objects (as if the server held them). ``promoted``:
    what promotion writes over the canary phase's objects.
    """
    spec = variant.spec
    stable = builders.default_member(spec)
    first = variant.plan_on([], stable)
    serving = variant.serving_after([], first)
    if phase == "first":
        return serving
    new = builders.default_member(spec, candidate_uri)
    plan = variant.plan_on(serving, new)
    serving = variant.serving_after(serving, plan)
    if phase == "canary":
        return serving
    return variant.promoted_objects(serving, plan.record(spec, new))


def render_manifests(
    spec: RolloutSpec, phase: str = "first", candidate_uri: str = DEFAULT_CANDIDATE_URI
) -> dict[str, str]:
    """The text of every manifest file for ``spec`` at ``phase``, by file name."""
    return {
        name: _PHASE_HEADERS.get(phase, "") + _HEADERS[name] + to_yaml(objs)
        for name, objs in phase_objects(spec, phase, candidate_uri).items()
    }


def write_manifests(
    spec: RolloutSpec, out_dir: str | Path, phase: str = "first", candidate_uri: str = DEFAULT_CANDIDATE_URI
) -> list[Path]:
    """Writes every manifest file for ``phase`` into ``out_dir`` and returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_manifests(spec, phase, candidate_uri).items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths


_APPLIED_ROLES = {
    "vllm-runtime.yaml": "register-runtime applies this ServingRuntime (every knob: manifests/vllm-runtime.yaml).",
    "kserve-inferenceservice.yaml": "deploy-model applies this InferenceService (promote-model, in the later phases).",
    "kserve-autoscaling.yaml": "The steps apply the ScaledObject; the ServiceMonitor is for the cluster's admin, once.",
    "llm-d-configuration.yaml": "register-runtime applies the preset (LLMInferenceServiceConfig), deploy-model the\n"
    "# LLMInferenceService member(s) (every knob: manifests/llm-d-configuration.yaml).",
    "kserve-model-store.yaml": "Not applied by a rollout: the serving account and the store's Secret (put its keys\n"
    "# in first, see manifests/kserve-model-store.yaml), for an admin, once per namespace; deploy-model checks them.",
    "rbac.yaml": "Not applied by a rollout: the steps' account and Roles, for an admin to apply once per\n"
    "# namespace (kubectl apply -n NAMESPACE -f rbac.yaml) before the first run.",
}
_ISVC_FILES = (
    "vllm-runtime.yaml",
    "kserve-inferenceservice.yaml",
    "kserve-autoscaling.yaml",
    "kserve-model-store.yaml",
    "rbac.yaml",
)
_LLMD_FILES = ("llm-d-configuration.yaml", "kserve-model-store.yaml", "rbac.yaml")


def applied_manifests(
    spec: RolloutSpec, phase: str = "first", candidate_uri: str | None = None, *, source: str
) -> dict[str, str]:
    """Exactly what the kserve platform applies for ``spec`` at ``phase``, by file name (``render --spec``).

    Unlike :func:`render_manifests` (``manifests/``: the annotated reference of the default spec,
    with the llm-d example beside the InferenceService and placeholder model URIs), only the
    objects of the spec's own serving path are written - the ServingRuntime, InferenceService and
    its autoscaling, or with ``llmd.enabled`` the llm-d preset (``llmd.use_preset``) and members -
    plus ``rbac.yaml`` for the admin; every file's header names the spec file and the phase.

    Args:
        spec: The spec.
        phase: ``first``, ``canary`` or ``promoted``.
        candidate_uri: The new revision's model URI (needed for ``canary`` and ``promoted``).
        source: The spec file it was read from, for the headers.

    Raises:
        SpecError: No ``model.uri`` in the spec, or no ``candidate_uri`` for a later phase: a
            placeholder would be applied as if it were a model.
    """
    from llm_rollout.errors import SpecError

    if not spec.model.uri:
        raise SpecError(
            "model.uri",
            f"is empty in {source}: render writes what a rollout applies, and a rollout needs the model's URI",
            "set model.uri (e.g. s3://bucket/path/to/model); `llm-rollout render --out DIR` without --spec "
            "writes the annotated reference manifests instead",
        )
    if phase != "first" and not candidate_uri:
        raise SpecError(
            "--candidate-uri",
            f"is needed for phase {phase}: the new revision's model",
            "pass --candidate-uri s3://bucket/path/to/new-model",
        )
    objs = phase_objects(spec, phase, candidate_uri or DEFAULT_CANDIDATE_URI)
    if spec.llmd.enabled and not spec.llmd.use_preset:
        objs["llm-d-configuration.yaml"] = [
            o for o in objs["llm-d-configuration.yaml"] if o.get("kind") != "LLMInferenceServiceConfig"
        ]
    what = {
        "first": "a first rollout (the stable revision only)",
        "canary": f"a later rollout while the new revision is validated ({candidate_uri})",
        "promoted": f"after the new revision ({candidate_uri}) was promoted",
    }[phase]
    out = {}
    for name in _LLMD_FILES if spec.llmd.enabled else _ISVC_FILES:
        if not objs.get(name) or (name == "kserve-model-store.yaml" and not spec.runtime.model_store.enabled):
            continue
        header = (
            f"# Rendered by `llm-rollout render --spec {source} --phase {phase}`\n"
            f"# (phase {phase}: {what}).\n# {_APPLIED_ROLES[name]}\n"
        )
        out[name] = header + to_yaml(objs[name])
    return out
