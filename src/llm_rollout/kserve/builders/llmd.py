"""The llm-d objects.

``LLMInferenceService`` members (prefill/decode workloads, NIXL KV transfer, router and route
weight), the service's ``LLMInferenceServiceConfig`` preset and the endpoint-picker configuration.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from llm_rollout.errors import SpecError
from llm_rollout.kserve.builders.common import (
    LABEL_REVISION,
    LABEL_RUN_ID,
    LLMISVC_API,
    Member,
    _env,
    _labels,
    _meta,
    _resources,
    _security_context,
    run_label,
)
from llm_rollout.kserve.builders.promql import selector
from llm_rollout.kserve.builders.storage import serving_account
from llm_rollout.names import LLMD_MEMBER_MAX_LEN, is_dns_label, llmd_children, short_hash
from llm_rollout.spec import RolloutSpec, WorkloadSpec
from llm_rollout.spec.rules import check_no_template_actions, excerpt
from llm_rollout.vllm_args import server_args


def kv_transfer_config(role: str, connector: str = "NixlConnector") -> str:
    """The ``--kv_transfer_config`` JSON for one P/D role (``kv_producer`` or ``kv_consumer``)."""
    return json.dumps({"kv_connector": connector, "kv_role": role}, separators=(",", ":"))


def vllm_additional_args(args: list[str], field: str = "runtime.extra_args") -> str:
    """The ``VLLM_ADDITIONAL_ARGS`` value that gives vLLM exactly ``args`` through KServe's presets.

    The well-known presets start vLLM with ``eval "exec vllm serve ... ${VLLM_ADDITIONAL_ARGS} $@"``
    (KServe ``config/llmisvcconfig/config-llm-*template.yaml`` and ``*-worker-data-parallel.yaml``):
    the value is parsed again as shell code, so word splitting, brace expansion, globbing and quote
    removal would tear a JSON argument apart. Each argument is therefore shell-quoted on its own
    (``shlex.quote``), which ``eval`` turns back into exactly that argument.

    Before that, KServe runs the whole merged spec through Go's ``text/template``
    (``pkg/controller/v1alpha2/llmisvc/config_merge.go``, ``ReplaceVariables``), so an argument
    holding ``{{`` would be executed as a template action: it is refused here.

    Args:
        args: The vLLM arguments, one list item per argument.
        field: Spec field named in the error.

    Returns:
        The environment variable's value.

    Raises:
        SpecError: An argument contains ``{{``.
    """
    for i, arg in enumerate(args):
        if "{{" in arg:
            raise SpecError(
                field,
                f"argument {i} ({arg!r}) contains '{{{{', which KServe executes as a Go template action "
                "when it merges the LLMInferenceService (config_merge.go ReplaceVariables)",
                "write the value without '{{' (e.g. put a space between the braces of nested JSON)",
            )
    return " ".join(shlex.quote(arg) for arg in args)


def _llmd_container(spec: RolloutSpec, role: str | None, workload: WorkloadSpec) -> dict[str, Any]:
    sargs = server_args(spec, "llmd", tensor_parallel=workload.tensor)
    extra = list(sargs.args)
    env = _env(spec)
    if role is not None:
        kv_role = "kv_producer" if role == "prefill" else "kv_consumer"
        extra.append("--kv_transfer_config=" + kv_transfer_config(kv_role, spec.llmd.kv_connector))
        env.append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    env.append({"name": "VLLM_ADDITIONAL_ARGS", "value": vllm_additional_args(extra)})
    return {
        "name": "main",
        "env": env,
        "resources": _resources(spec, gpus=workload.gpus_per_pod()),
        "securityContext": _security_context(),
    }


def _parallelism(workload: WorkloadSpec) -> dict[str, Any]:
    par: dict[str, Any] = {"tensor": workload.tensor}
    if workload.data is not None:
        par["data"] = workload.data
    if workload.data_local is not None:
        par["dataLocal"] = workload.data_local
    if workload.pipeline is not None:
        par["pipeline"] = workload.pipeline
    return par


def _workload_scaling(spec: RolloutSpec, role: str, workload: WorkloadSpec) -> dict[str, Any]:
    """``scaling`` of one llm-d role: direct KEDA on the role's own vLLM metrics (or CPU/memory)."""
    sc = workload.scaling
    assert sc is not None
    if sc.metric in ("cpu", "memory"):
        trigger: dict[str, Any] = {
            "type": sc.metric,
            "metricType": "Utilization",
            "metadata": {"value": str(sc.static_target())},
        }
    else:
        # vLLM labels its series with model_name; KServe labels llm-d pods llm-d.ai/role
        # (decode, prefill, or both without P/D), which a pod scrape's labelmap turns into
        # llm_d_ai_role. So each role scales on its own pods' load only.
        # Values escaped as PromQL string literals (promql.py; issue 31: a model name rewrote the query).
        match = selector(namespace=spec.namespace, model_name=spec.served_model_name, llm_d_ai_role=role)
        query = {
            "request-rate": "sum(rate(vllm:request_success_total{%s}[1m]))",
            "concurrency": "sum(vllm:num_requests_running{%s})",
        }[sc.metric] % match
        trigger = {
            "type": "prometheus",
            "metadata": {"serverAddress": sc.prometheus_url, "query": query, "threshold": str(sc.static_target())},
        }
    return {"minReplicas": sc.min_replicas, "maxReplicas": sc.max_replicas, "keda": {"triggers": [trigger]}}


def _workload(spec: RolloutSpec, role: str | None, workload: WorkloadSpec, model_uri: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if workload.scaling is not None:
        body["scaling"] = _workload_scaling(spec, role or "both", workload)
    else:
        body["replicas"] = workload.replica_count()
    body["parallelism"] = _parallelism(workload)
    body["template"] = {"containers": [_llmd_container(spec, role, workload)]}
    if account := serving_account(spec, model_uri):  # the serving pods' own (the model store's), never the steps'
        body["template"]["serviceAccountName"] = account
    if spec.runtime.node_selector():  # runtime.accelerator: on the GPU the spec was checked against
        body["template"]["nodeSelector"] = spec.runtime.node_selector()
    if workload.nodes > 1:
        body["worker"] = {"containers": [_llmd_container(spec, role, workload)]}
        if spec.runtime.node_selector():
            body["worker"]["nodeSelector"] = spec.runtime.node_selector()
    return body


EPP_API_VERSION = "llm-d.ai/v1alpha1"
"""The EndpointPickerConfig API of llm-d >= 0.7 (KServe ``scheduler.go`` ``withMigrateLLMDAPIVersion``)."""


def endpoint_picker_config(spec: RolloutSpec) -> dict[str, Any] | None:
    """The inline EndpointPickerConfig of the llm-d scheduler, or None for KServe's own default.

    ``default`` (nothing customised): no inline config, so KServe's ``schedulerConfigText``
    (``pkg/controller/v1alpha2/llmisvc/scheduler.go``) picks its llm-d baseline: with a prefill
    role, P/D for every request (``always-disagg-pd-decider``) with prefix-cache, queue and
    KV-cache-utilization scoring on prefill and active-request and prefix-cache scoring on decode;
    without one, a single profile scoring queue, KV-cache utilisation, prefix cache and no-hit LRU.

    The other profiles render today's format (``llm-d.ai/v1alpha1``, as llm-d's
    ``deploy/config/*.yaml`` and KServe's default configs write it):

    * ``prefix-cache``: score pods by prefix-cache locality (RAG prompts sharing long prefixes land
      where their KV cache already is), queue depth and KV-cache utilisation.
    * ``load``: queue depth and KV-cache utilisation only.
    * ``pd``: the same scoring per role (``prefill-filter`` / ``decode-filter`` profiles), the
      ``disagg-headers-handler`` and a ``disagg-profile-handler`` whose prefill decider is
      ``prefix-based-pd-decider`` with ``nonCachedTokens = pd_threshold_tokens`` (llm-d's token
      estimate of the prompt's uncached part), or ``always-disagg-pd-decider`` when the threshold is
      unset or 0. The prefix-cache scorer stays in the decode profile: the decider reads the prefix
      match it records for the decode pod.

    ``prefix-cache-scorer`` takes no parameters: KServe strips every one but
    ``prefixMatchInfoProducerName`` (``withRemovePrefixCacheScorerParametersV09``).
    """
    sch = spec.llmd.scheduler
    if sch.profile == "default":
        return None
    scorers = [
        {"pluginRef": "prefix-cache-scorer", "weight": 3},
        {"pluginRef": "queue-scorer", "weight": 1},
        {"pluginRef": "kv-cache-utilization-scorer", "weight": 1},
    ]
    if sch.profile == "load":
        scorers = scorers[1:]
    plugins: list[dict[str, Any]] = [{"type": s["pluginRef"]} for s in scorers]
    plugins.append({"type": "max-score-picker"})
    if sch.profile != "pd":
        plugins.append({"type": "single-profile-handler"})
        profiles = [{"name": "default", "plugins": [*scorers, {"pluginRef": "max-score-picker"}]}]
    else:
        if sch.pd_threshold_tokens:
            decider = {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": sch.pd_threshold_tokens}}
        else:
            decider = {"type": "always-disagg-pd-decider"}
        plugins += [
            {"type": "disagg-headers-handler"},
            {"type": "prefill-filter"},
            {"type": "decode-filter"},
            decider,
            {"type": "disagg-profile-handler", "parameters": {"deciders": {"prefill": decider["type"]}}},
        ]
        profiles = [
            {
                "name": role,
                "plugins": [
                    {"pluginRef": f"{role}-filter"},
                    *(dict(s) for s in scorers),
                    {"pluginRef": "max-score-picker"},
                ],
            }
            for role in ("prefill", "decode")
        ]
    return {
        "apiVersion": EPP_API_VERSION,
        "kind": "EndpointPickerConfig",
        "plugins": plugins,
        "schedulingProfiles": profiles,
    }


def _router(spec: RolloutSpec, weight: int | None) -> dict[str, Any]:
    ld = spec.llmd
    route: dict[str, Any] = {}
    if ld.http_route_refs:
        route["http"] = {"refs": [{"name": n} for n in ld.http_route_refs]}
    else:
        route["http"] = {}
    if weight is not None:
        # The webhook's rules: weight requires group, and splitting needs the managed route.
        if spec.route_group is None:
            raise SpecError(
                "llmd.route_group",
                f"a member weight ({weight}) was asked for, but weight requires group and llmd.route_group is ''",
                "remove llmd.route_group (it defaults to the service name)",
            )
        if ld.http_route_refs:
            raise SpecError(
                "llmd.http_route_refs",
                f"a member weight ({weight}) was asked for, but traffic splitting cannot use custom HTTPRoute refs",
                "remove llmd.http_route_refs to let KServe manage the route",
            )
        route["group"] = spec.route_group
        route["weight"] = weight
    router: dict[str, Any] = {
        "route": route,
        "gateway": {"refs": [{"name": n} for n in ld.gateway_refs]} if ld.gateway_refs else {},
    }
    if ld.scheduler.enabled:
        inline = endpoint_picker_config(spec)
        # No config: KServe's controller picks its own default (scheduler.go schedulerConfigText).
        router["scheduler"] = {} if inline is None else {"config": {"inline": inline}}
    return router


def llm_inference_service(spec: RolloutSpec, member: Member, weight: int | None = None) -> dict[str, Any]:
    """One ``LLMInferenceService`` member (serving.kserve.io/v1alpha2) for llm-d.

    The decode workload is the top-level ``template``/``replicas``/``parallelism``; with
    ``llmd.prefill`` a separate prefill workload is added and both roles get the NIXL wiring
    (``VLLM_NIXL_SIDE_CHANNEL_HOST`` from the pod IP and ``--kv_transfer_config`` through
    ``VLLM_ADDITIONAL_ARGS``, which KServe does not add by itself). Stable and canary members share
    ``router.route.group`` and split traffic by ``weight``.

    Args:
        spec: The rollout spec (``llmd`` section).
        member: The revision this object serves; its ``name`` is the object name.
        weight: Traffic weight within the route group; ``None`` for a lone member without a group.

    Returns:
        The object, ready for server-side apply.
    """
    ld = spec.llmd
    pd = ld.prefill is not None
    body: dict[str, Any] = {
        "model": {"uri": member.model_uri, "name": spec.served_model_name},
        **_workload(spec, "decode" if pd else None, ld.decode, member.model_uri),
        "router": _router(spec, weight),
    }
    if pd:
        body["prefill"] = _workload(spec, "prefill", ld.prefill, member.model_uri)
    if ld.use_preset:
        body["baseRefs"] = [{"name": preset_name(spec)}]
    check_member_name(member.name)
    labels = _labels(spec, **{LABEL_REVISION: member.revision})
    if member.run_id:
        labels[LABEL_RUN_ID] = run_label(member.run_id)
    obj = {
        "apiVersion": LLMISVC_API,
        "kind": "LLMInferenceService",
        "metadata": _meta(spec, member.name, labels=labels),
        "spec": body,
    }
    check_no_template_actions(obj)  # KServe runs the merged object through text/template
    return obj


def check_member_name(name: str) -> None:
    """Refuses a member name KServe's llm-d controller cannot run, naming what it derives and the fix.

    KServe labels the member's pods ``app.kubernetes.io/name: <name>`` (``workload_single_node.go``,
    ``router.go``, ``scheduler.go``: a label value, at most 63 characters) and names its children
    ``kmeta.ChildName(<name>, <suffix>)`` (:data:`~llm_rollout.names.LLMD_CHILD_SUFFIXES`), among
    them the workload Service, a DNS-1035 label (a letter first). Our own names
    (:func:`~llm_rollout.names.member_name`) are at most 38 characters, so every child keeps its
    plain ``<member><suffix>`` name; a longer name from elsewhere (a record written by an older
    version, a restored member) still works, its longer children hashed by ``ChildName``, and only
    a name KServe cannot run is refused, before anything is written.

    Raises:
        SpecError: The name is over 63 characters, not a DNS-1123 label, or starts with a digit.
    """
    if len(name) <= 63 and is_dns_label(name) and name[:1].isalpha():
        return
    children = llmd_children(name, ("-kserve", "-kserve-prefill", "-kserve-workload-svc"))
    raise SpecError(
        "name",
        f"member {excerpt(name)} cannot be an LLMInferenceService: KServe labels its pods "
        "app.kubernetes.io/name with it (a label value: at most 63 characters, letters, digits and '-') and "
        f"derives {', '.join(repr(c) for c in children.values())} from it (kmeta.ChildName), whose workload "
        "Service must start with a letter",
        f"use a member name of at most 63 characters (at most {LLMD_MEMBER_MAX_LEN} keeps every derived name "
        "plain), lowercase letters, digits and '-', a letter first; llm-rollout derives '<service>-<hash>' "
        "itself: redeploy instead of reusing this name",
    )


def preset_body(spec: RolloutSpec) -> dict[str, Any]:
    """The ``spec`` of this service's preset (see :func:`llm_inference_service_config`)."""
    main: dict[str, Any] = {"name": "main", "securityContext": _security_context()}
    if spec.llmd.image:
        main["image"] = spec.llmd.image
    body: dict[str, Any] = {"template": {"containers": [main]}}
    if spec.llmd.prefill is not None:
        body["prefill"] = {"template": {"containers": [dict(main)]}}
    return body


def preset_name(spec: RolloutSpec) -> str:
    """The preset's name: ``llmd.preset_name``, else ``<service>-preset-<hash of its content>``.

    One preset per service *and* content: a P/D service's preset (with ``prefill``) never reaches
    a service without P/D (KServe merges ``baseRefs`` first and treats ``Prefill != nil`` as P/D,
    ``config_merge.go`` ``combineBaseRefsConfig``), and a new content is a new preset, so the
    stable member's preset is never rewritten under it by a rollout.
    """
    if spec.llmd.preset_name:
        return spec.llmd.preset_name
    content = json.dumps(preset_body(spec), sort_keys=True, separators=(",", ":"))
    return f"{spec.service_name}-preset-{short_hash(content, 8)}"


def llm_inference_service_config(spec: RolloutSpec, owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """This service's ``LLMInferenceServiceConfig`` preset, which its members reference through ``baseRefs``.

    It carries what every member of the service shares: the hardening of the ``main``
    container and, only when ``llmd.image`` is set, its image; with ``llmd.prefill`` the same for
    the prefill role. By default the image stays the one
    of KServe's well-known presets (``config/llmisvcconfig/config-llm-*template.yaml``:
    ``ghcr.io/llm-d/llm-d-cuda``), because those presets also set ``runAsNonRoot: true`` and the
    routing sidecar's ``--kv-connector=nixlv2``: the image must run as a non-root user and ship
    NIXL. Upstream ``vllm/vllm-openai`` has no ``USER`` (vLLM ``docker/Dockerfile``, target
    ``vllm-openai``), so under ``runAsNonRoot`` the kubelet would refuse to start it. The per-role
    NIXL wiring lives on the members themselves, because its ``kv_role`` differs between the
    prefill and decode roles.

    Named by :func:`preset_name` (per service and content). ``owners`` are the members that
    reference it (:func:`owner_reference`): Kubernetes' garbage collector deletes an object once
    every owner is gone, so the preset goes with the service's last member.
    """
    meta = _meta(spec, preset_name(spec))
    if owners:
        meta["ownerReferences"] = sorted(owners, key=lambda o: o["name"])
    obj = {
        "apiVersion": LLMISVC_API,
        "kind": "LLMInferenceServiceConfig",
        "metadata": meta,
        "spec": preset_body(spec),
    }
    check_no_template_actions(obj)
    return obj


def owner_reference(member: dict[str, Any]) -> dict[str, Any]:
    """The ``ownerReferences`` entry that makes a live LLMInferenceService an owner of a preset."""
    meta = member.get("metadata") or {}
    return {"apiVersion": LLMISVC_API, "kind": "LLMInferenceService", "name": meta["name"], "uid": meta["uid"]}
