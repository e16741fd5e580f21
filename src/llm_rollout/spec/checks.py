"""Checks of a whole spec that no single field can make: GPU and scheme, vLLM flags, model URIs,
sizing, llm-d roles. Run by :class:`~llm_rollout.spec.RolloutSpec`'s validator; each raises a
:class:`~llm_rollout.errors.SpecError` naming the field and the fix.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from llm_rollout.errors import SpecError
from llm_rollout.slo_expr import parse_checks
from llm_rollout.spec.analysis import check_step_analysis
from llm_rollout.spec.base import (
    _FLAG_RE,
    _OWNED_FLAGS,
    _SECRET_LIKE_ENV,
    _URI_EXAMPLES,
    _URI_HOST_PART,
    GPU_COMPUTE_CAPABILITY,
    KSERVE_URI_SCHEMES,
    KV_CACHE_DTYPES,
    LLMD_URI_SCHEMES,
    LOCAL_URI_SCHEMES,
)
from llm_rollout.spec.rules import check_consumer_rules
from llm_rollout.spec.serving import WorkloadSpec

if TYPE_CHECKING:
    from llm_rollout.spec import RolloutSpec
    from llm_rollout.spec.validation import SLOSpec


def gpu_capability(family: str) -> tuple[int, int]:
    """The (major, minor) CUDA compute capability of a known GPU family."""
    value = GPU_COMPUTE_CAPABILITY[family]
    return int(value), round((value - int(value)) * 10)


def check_gpu(spec: RolloutSpec, scheme: str | None = None, field: str = "model.quantization") -> str | None:
    """The GPU preflight: what vLLM does with the spec's KV-cache dtype and the model's scheme.

    Args:
        spec: The spec (``runtime.accelerator``, ``runtime.kv_cache_dtype``, ``model.quantization``).
        scheme: The model's quantization scheme when known from elsewhere (the artifact metadata);
            defaults to ``model.quantization``.
        field: Where ``scheme`` came from, for messages.

    Returns:
        A note naming the attention backend vLLM picks (None without a declared GPU).

    Raises:
        SpecError: What vLLM cannot serve, or a scheme that loses what it was made for there.
    """
    from llm_rollout.gpu import check_kv_cache_dtype, check_scheme

    rt = spec.runtime
    if rt.accelerator is None:
        return None
    cap = gpu_capability(rt.accelerator)
    note = check_kv_cache_dtype(rt.accelerator, cap, rt.kv_cache_dtype)
    chosen = scheme or spec.model.quantization
    if chosen:
        check_scheme(rt.accelerator, cap, chosen, field if scheme else "model.quantization")
    return note


def check_vllm_args(args: list[str], field: str = "runtime.extra_args") -> None:
    """Checks the shape of free-form vLLM arguments.

    Each item must be ``--flag``, ``--flag=value`` or the value following a ``--flag``; flags the
    spec owns (``--model``, ``--port``, ``--tensor-parallel-size`` ...) are refused so that the typed
    knob stays the one source of truth.

    Args:
        args: The argument list.
        field: Spec field the list came from, for messages.

    Raises:
        SpecError: On the first malformed item.
    """
    expect_value = False
    for i, item in enumerate(args):
        where = f"{field}[{i}]"
        if not isinstance(item, str) or not item:
            raise SpecError(where, f"{item!r} is not a non-empty string", "give each argument as a string")
        if item.startswith("--"):
            if not _FLAG_RE.match(item):
                raise SpecError(
                    where,
                    f"{item!r} is not a vLLM flag (expected --lower-case-name or --name=value)",
                    "write flags like '--enable-prefix-caching' or '--max-num-seqs=256'",
                )
            flag = item.split("=", 1)[0]
            owner = _OWNED_FLAGS.get(flag.replace("_", "-"))
            if owner:
                raise SpecError(where, f"{flag} is set by the spec field '{owner}'", f"set '{owner}' instead")
            expect_value = "=" not in item
        elif item.startswith("-"):
            raise SpecError(
                where,
                f"{item!r} is a short or malformed flag; vLLM takes long flags only",
                "use the long form, e.g. '--tensor-parallel-size' instead of '-tp'",
            )
        elif " " in item and not expect_value:
            raise SpecError(
                where,
                f"{item!r} looks like a shell string",
                "split it into one list item per argument",
            )
        elif not expect_value:
            raise SpecError(
                where,
                f"{item!r} is a value without a flag before it",
                "put the flag before it, e.g. ['--max-num-seqs', '256'] or '--max-num-seqs=256'",
            )
        else:
            expect_value = False


def check_model_uri(uri: str, platform: str, *, llmd: bool = False, field: str = "model.uri") -> None:
    """Checks that ``uri`` has a scheme the target platform can load.

    Args:
        uri: The model URI or path.
        platform: ``kserve`` or ``local``.
        llmd: The target is an LLMInferenceService (llm-d), which takes fewer schemes.
        field: Spec field, for messages.

    Raises:
        SpecError: When the scheme is not accepted there.
    """
    if not uri:
        return  # filled in from the Model artifact at run time
    scheme = urlparse(uri).scheme.lower()
    if platform == "local":
        if scheme not in LOCAL_URI_SCHEMES:
            raise SpecError(
                field,
                f"the local platform serves models from this machine's disk, not {scheme}:// ({uri})",
                "give a local directory (or file:// URI), or use platform 'kserve'",
            )
        return
    accepted = LLMD_URI_SCHEMES if llmd else KSERVE_URI_SCHEMES
    if scheme not in accepted:
        what = "llm-d's storage initializer" if llmd else "KServe's storage initializer"
        shown = scheme + "://" if scheme else "a local path"
        raise SpecError(
            field,
            f"{what} cannot load {shown} ({uri})",
            "use one of "
            + ", ".join(f"{s}://" for s in accepted)
            + " (upload local models to object storage or a PVC)",
        )
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise SpecError(
            field,
            f"{uri!r} names no {_URI_HOST_PART.get(scheme, 'location')} after {scheme}://",
            f"write it like {_URI_EXAMPLES[scheme]}",
        )
    if scheme == "hf" and not parsed.path.strip("/"):
        raise SpecError(
            field,
            f"{uri!r} names an organisation but no repository",
            f"write it like {_URI_EXAMPLES[scheme]}",
        )


def _check_sizing(spec: RolloutSpec) -> None:
    """A stated peak needs a measured capacity to size from (the sizing itself runs in validation)."""
    slo = spec.validation.slo
    peaks = [("scaling", spec.scaling)] + [
        (f"llmd.{name}.scaling", role.scaling)
        for name, role in (("decode", spec.llmd.decode), ("prefill", spec.llmd.prefill))
        if role is not None
    ]
    for where, scaling in peaks:
        if scaling is not None and scaling.target == "auto":
            if spec.llmd.enabled or where != "scaling":
                raise SpecError(
                    f"{where}.target",
                    "'auto' is set from evidence at promotion of an InferenceService only; llm-d per-role "
                    "targets from evidence are not supported yet",
                    "give the llm-d role's scaling.target a number (e.g. the capacity_max_* the report measured "
                    "times 0.8)",
                )
            _check_auto_target(where, scaling.metric, slo)
        if scaling is None or scaling.expected_peak_rps is None:
            continue
        if slo.capacity_max_concurrency is None and slo.capacity_max_request_rate is None:
            raise SpecError(
                f"{where}.expected_peak_rps",
                "sizing needs the capacity per replica, and no capacity search is configured",
                "set validation.slo.capacity_max_concurrency (and/or capacity_max_request_rate) above the "
                "load one replica should carry",
            )


def _check_auto_target(where: str, metric: str, slo: SLOSpec) -> None:
    """``target: auto`` needs a metric a capacity is measured in, and the search that measures it."""
    if metric in ("cpu", "memory"):
        raise SpecError(
            f"{where}.target",
            f"'auto' sets the target from the measured capacity in requests, which says nothing about {metric}",
            f"give a {metric} utilization number, or use metric 'request-rate' or 'concurrency' with 'auto'",
        )
    if slo.capacity_max_concurrency is None and slo.capacity_max_request_rate is None:
        raise SpecError(
            f"{where}.target",
            "'auto' sets the target from the measured capacity per replica, and no capacity search is configured",
            "set validation.slo.capacity_max_concurrency (concurrency) or capacity_max_request_rate "
            "(request-rate) above the load one replica should carry, or give a number",
        )


def _check_accelerator_pin(rt) -> None:
    """The node selector ``runtime.accelerator`` pins the pods with is a valid label (key and value)."""
    from llm_rollout.spec.rules import DNS1123_SUBDOMAIN, LABEL_VALUE

    key = rt.accelerator_node_label
    if key:
        prefix, _, name = key.rpartition("/")
        ok = len(name) <= 63 and bool(LABEL_VALUE.fullmatch(name)) and bool(name)
        if prefix:
            ok = ok and len(prefix) <= 253 and bool(DNS1123_SUBDOMAIN.fullmatch(prefix))
        if not ok:
            raise SpecError(
                "runtime.accelerator_node_label",
                f"{key!r} is not a Kubernetes label key",
                "write it like 'nvidia.com/gpu.product', or leave it empty to pin nothing",
            )
    value = rt.accelerator_node_value
    if value is not None and (len(value) > 63 or not value or not LABEL_VALUE.fullmatch(value)):
        raise SpecError(
            "runtime.accelerator_node_value",
            f"{value!r} is not a Kubernetes label value (at most 63 letters, digits, '-', '_', '.')",
            "copy the value your GPU nodes carry: kubectl get nodes -L nvidia.com/gpu.product",
        )


def check_spec(spec: RolloutSpec) -> None:
    """Cross-field checks that pydantic's per-field validation cannot express.

    Raises:
        SpecError: On the first problem, naming the field and the fix.
    """
    # Names must be DNS-safe (dns_name raises when they cannot be made so).
    _ = spec.service_name, spec.runtime_name
    _check_sizing(spec)
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", spec.namespace) or len(spec.namespace) > 63:
        raise SpecError(
            "namespace",
            f"{spec.namespace!r} is not a valid Kubernetes namespace name",
            "use lowercase letters, digits and '-', at most 63 characters",
        )
    for field, sa in (
        ("service_account", spec.service_account),
        ("runtime.service_account", spec.runtime.service_account),
    ):
        if sa is not None and (not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", sa) or len(sa) > 253):
            raise SpecError(
                field,
                f"{sa!r} is not a valid service account name",
                "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            )
    if spec.runtime.service_account == spec.service_account:
        raise SpecError(
            "runtime.service_account",
            f"{spec.service_account!r} is the pipeline steps' account, which may patch and delete "
            "InferenceServices; the model server must not run with those rights",
            "leave runtime.service_account unset (the namespace's default account) or name an account of its own",
        )

    # SLO expressions: a typo must fail here, before deploy-model writes a canary, not at validation.
    parse_checks(spec.validation.slo.checks, "validation.slo.checks")
    parse_checks(spec.validation.recovery.checks, "validation.recovery.checks")

    # vLLM runtime.
    check_vllm_args(spec.runtime.extra_args)
    for var in spec.runtime.env:
        if _SECRET_LIKE_ENV.search(var):
            raise SpecError(
                f"runtime.env.{var}",
                "looks like a secret, and runtime.env values are written in plain text into the manifests",
                f"put it in a Secret and reference it: runtime.secret_env.{var}: {{name: <secret>, key: <key>}}",
            )
    both = sorted(set(spec.runtime.env) & set(spec.runtime.secret_env))
    if both:
        raise SpecError(f"runtime.secret_env.{both[0]}", "is set in runtime.env too", "keep one of them")
    rt = spec.runtime
    if rt.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise SpecError(
            "runtime.kv_cache_dtype",
            f"{rt.kv_cache_dtype!r} is not a KV-cache dtype vLLM knows",
            "use one of " + ", ".join(KV_CACHE_DTYPES),
        )
    if rt.accelerator is not None:
        if rt.accelerator not in GPU_COMPUTE_CAPABILITY:
            raise SpecError(
                "runtime.accelerator",
                f"unknown GPU family {rt.accelerator!r}",
                "use one of " + ", ".join(sorted(GPU_COMPUTE_CAPABILITY)) + ", or leave it empty",
            )
        check_gpu(spec)
        _check_accelerator_pin(rt)
    if spec.platform == "kserve" and not spec.llmd.enabled:
        # Every name and label KServe derives from name and namespace fits 63 (spec/derived.py).
        from llm_rollout.spec.derived import check_derived_names

        check_derived_names(spec)
    if spec.resources.gpus == 0 and spec.platform == "kserve" and not spec.llmd.enabled:
        raise SpecError(
            "resources.gpus",
            "0 GPUs per replica: the vLLM GPU image cannot serve without a GPU",
            "request at least 1 GPU (tensor parallel = GPUs per replica)",
        )

    # Scaling.
    if spec.scaling is not None:
        sc = spec.scaling
        if sc.min_replicas > sc.max_replicas:
            raise SpecError(
                "scaling.min_replicas",
                f"min_replicas ({sc.min_replicas}) is above max_replicas ({sc.max_replicas})",
                "make min_replicas <= max_replicas",
            )
        if sc.min_replicas == 0 and spec.deployment_mode == "Standard" and not spec.llmd.enabled:
            raise SpecError(
                "scaling.min_replicas",
                "scale to zero needs Knative; Standard mode keeps at least one replica",
                "set min_replicas >= 1 or deployment_mode 'Knative'",
            )

    _version_tuple(spec.kserve_version)  # checked even when no canary needs it yet

    # Canary.
    cn = spec.canary
    if not 0 <= cn.traffic_percent <= 100:
        raise SpecError(
            "canary.traffic_percent",
            f"{cn.traffic_percent} is outside 0-100",
            "give a percentage between 0 (dark launch) and 100",
        )
    previous = 0
    weights = cn.weights
    for i, step in enumerate(weights):
        if not 0 < step <= 100 or step <= previous:
            raise SpecError(
                f"canary.steps[{i}]",
                f"steps must rise strictly within 1-100, got {weights}",
                "give increasing percentages ending at 100, e.g. [10, 50, 100]",
            )
        previous = step
    if weights and weights[-1] != 100:
        raise SpecError("canary.steps", f"the last step is {weights[-1]}, not 100", "end the steps with 100")
    check_step_analysis(spec)
    split = bool(cn.traffic_percent or cn.steps) and spec.platform == "kserve" and not spec.llmd.enabled
    if split and spec.deployment_mode == "Standard" and _version_tuple(spec.kserve_version) < (0, 20):
        raise SpecError(
            "canary",
            f"KServe {spec.kserve_version} in Standard (RawDeployment) mode ignores canary traffic "
            "(spec.canary[] needs KServe >= 0.20)",
            "upgrade KServe to 0.20+, use deployment_mode 'Knative', or set canary.traffic_percent "
            "to 0 with no steps (dark launch, validated before any traffic)",
        )

    # Model URI.
    check_model_uri(spec.model.uri, spec.platform, llmd=spec.llmd.enabled)

    # llm-d.
    if spec.llmd.enabled:
        check_llmd(spec)

    # Every value against the grammar of what reads it (Kubernetes, KServe's template merge).
    check_consumer_rules(spec)


def check_llmd(spec: RolloutSpec) -> None:
    """Client-side mirror of the LLMInferenceService webhook rules, plus NIXL's own limits.

    Mirrored from KServe's v1alpha2 validator: weight requires group and group requires weight;
    traffic splitting needs the managed Gateway API route (no custom HTTPRoute refs); custom
    HTTPRoute refs need named gateways; a workload's ``replicas`` and ``scaling`` are exclusive;
    ``worker`` requires data or pipeline parallelism (``data`` and ``dataLocal`` together, not
    both kinds). Added for P/D: prefill tensor parallel <= decode's (NIXL), prefill needs the
    scheduler (nothing else routes to it), GPUs on the roles.

    Raises:
        SpecError: On the first problem.
    """
    ld = spec.llmd
    decode, prefill = ld.decode, ld.prefill
    roles = [("decode", decode)] + ([("prefill", prefill)] if prefill is not None else [])
    if prefill is not None:
        if prefill.tensor > decode.tensor:
            raise SpecError(
                "llmd.prefill.tensor",
                f"prefill tensor parallel ({prefill.tensor}) is larger than decode's ({decode.tensor}); "
                "NIXL KV transfer cannot map a wider prefill onto a narrower decode",
                f"set llmd.prefill.tensor <= {decode.tensor} or raise llmd.decode.tensor",
            )
        if not ld.scheduler.enabled:
            raise SpecError(
                "llmd.scheduler.enabled",
                "prefill is set but the scheduler is off; without the endpoint picker no request is "
                "ever sent to the prefill pods (silent decode-only fallback)",
                "enable llmd.scheduler (profile 'pd') or remove llmd.prefill",
            )
        if decode.gpus_per_pod() == 0 and prefill.gpus_per_pod() == 0:
            raise SpecError(
                "llmd.decode.gpus",
                "both prefill and decode would run on zero GPUs",
                "give each role at least 1 GPU (tensor parallel size or gpus)",
            )
    if spec.platform == "kserve":
        for role_name, role in roles:
            if role.gpus_per_pod() == 0:
                raise SpecError(
                    f"llmd.{role_name}.gpus",
                    f"the {role_name} role would run on zero GPUs; the vLLM GPU image cannot serve without one",
                    f"set llmd.{role_name}.gpus to at least 1 (or leave it empty: tensor x data_local)",
                )
    for role_name, role in roles:
        _check_workload(role_name, role)

    # Routing: the webhook's traffic rules.
    has_split = bool(spec.canary.traffic_percent or spec.canary.steps)
    if has_split and ld.http_route_refs:
        raise SpecError(
            "llmd.http_route_refs",
            "traffic splitting between members needs the managed Gateway API route, but custom HTTPRoute refs are set",
            "remove llmd.http_route_refs, or set canary.traffic_percent to 0 with no steps",
        )
    if has_split and ld.route_group == "":
        raise SpecError(
            "llmd.route_group",
            "canary traffic is a route weight, and weight requires group, but llmd.route_group is '' (no group)",
            "remove llmd.route_group (it defaults to the service name), "
            "or set canary.traffic_percent to 0 with no steps",
        )
    if ld.route_group and ld.http_route_refs:
        raise SpecError(
            "llmd.route_group",
            "group requires weight, but with custom HTTPRoute refs a member gets no weight "
            "(traffic splitting needs the managed route)",
            "remove llmd.route_group, or remove llmd.http_route_refs to let KServe manage the route",
        )
    if ld.http_route_refs and not ld.gateway_refs:
        raise SpecError(
            "llmd.http_route_refs",
            "custom HTTPRoutes cannot be used with the managed gateway (llmd.gateway_refs is empty)",
            "name the gateways your routes attach to in llmd.gateway_refs, or remove llmd.http_route_refs",
        )
    if ld.scheduler.profile == "pd" and prefill is None:
        raise SpecError(
            "llmd.scheduler.profile",
            "profile 'pd' decides between prefill and decode pods, but no prefill role is set",
            "set llmd.prefill, or use profile 'prefix-cache'",
        )
    threshold = ld.scheduler.pd_threshold_tokens
    if threshold is not None and ld.scheduler.profile != "pd":
        raise SpecError(
            "llmd.scheduler.pd_threshold_tokens",
            f"is set ({threshold}) but only profile 'pd' reads it (the profile is '{ld.scheduler.profile}')",
            "set llmd.scheduler.profile to 'pd', or remove pd_threshold_tokens",
        )
    if prefill is not None and ld.scheduler.profile not in ("default", "pd"):
        raise SpecError(
            "llmd.scheduler.profile",
            f"a prefill role is set but profile '{ld.scheduler.profile}' has no prefill/decode profiles, "
            "so no request would ever be sent to the prefill pods",
            "use profile 'default' (KServe's P/D config) or 'pd', or remove llmd.prefill",
        )

    # The P/D proof needs prompts the endpoint picker sends through prefill: llm-d's
    # prefix-based-pd-decider estimates a prompt's tokens as len(prompt) / 4
    # (prefix_based_pd_decider.go getUserInputLenInTokens) and disaggregates only at
    # nonCachedTokens or more. The load's distinct prompts are known here (seeded), so their
    # estimate is computed exactly; a shared prefix is cached and does not count.
    val = spec.validation
    proving = val.expect_disaggregation or (val.expect_disaggregation is None and "prefill" in val.metrics_urls)
    if prefill is not None and proving and ld.scheduler.profile == "pd" and threshold and val.load.workload is None:
        from llm_rollout.validation.load import iter_prompts

        # One prompt at a time: the check never holds the workload (num_prompts is bounded too).
        shortest = min(len(p) for p in iter_prompts(max(val.load.num_prompts, 1), val.load.input_words)) // 4
        if shortest < threshold:
            words = -(-val.load.input_words * threshold // max(shortest, 1))
            raise SpecError(
                "validation.load.input_words",
                f"the shortest of the load's prompts ({val.load.input_words} words) is {shortest} tokens as llm-d "
                f"estimates them (characters / 4), under llmd.scheduler.pd_threshold_tokens ({threshold}), so the "
                "endpoint picker prefills it on decode and the P/D proof would find prefill idle",
                f"set validation.load.input_words to about {words} or more, lower pd_threshold_tokens, "
                "or set validation.expect_disaggregation to false",
            )


def _check_workload(role_name: str, role: WorkloadSpec) -> None:
    field = f"llmd.{role_name}"
    if role.replicas is not None and role.scaling is not None:
        raise SpecError(
            f"{field}.scaling",
            "scaling and replicas are both set; they are mutually exclusive",
            f"keep {field}.replicas for a fixed count or {field}.scaling for autoscaling, not both",
        )
    if role.scaling is not None and role.scaling.min_replicas > role.scaling.max_replicas:
        raise SpecError(
            f"{field}.scaling.min_replicas",
            f"min_replicas ({role.scaling.min_replicas}) is above max_replicas ({role.scaling.max_replicas})",
            "make min_replicas <= max_replicas",
        )
    if (role.data is None) != (role.data_local is None):
        missing = "data_local" if role.data_local is None else "data"
        raise SpecError(
            f"{field}.{missing}",
            "data and data_local (parallelism.data / dataLocal) must be set together",
            f"set {field}.{missing} too (data = all data-parallel ranks, data_local = ranks per pod)",
        )
    if role.data is not None and role.pipeline is not None:
        raise SpecError(
            f"{field}.pipeline",
            "pipeline parallelism and data parallelism cannot be combined in one workload",
            f"remove {field}.pipeline or {field}.data/data_local",
        )
    size = None
    if role.data is not None and role.data_local is not None:
        if role.data % role.data_local:
            raise SpecError(
                f"{field}.data",
                f"data ({role.data}) is not a multiple of data_local ({role.data_local})",
                "make data = data_local x pods per replica",
            )
        size = role.data // role.data_local
    elif role.pipeline is not None:
        size = role.pipeline
    if role.nodes > 1 and size is None:
        raise SpecError(
            f"{field}.nodes",
            "a multi-node role (worker pods) needs parallelism set: worker requires data or pipeline parallelism",
            f"set {field}.data and data_local (data / data_local = {role.nodes}) or {field}.pipeline = {role.nodes}",
        )
    if size is not None and size != role.nodes:
        raise SpecError(
            f"{field}.nodes",
            f"parallelism spans {size} pods per replica but nodes is {role.nodes}",
            f"set {field}.nodes to {size}, or change data/data_local/pipeline",
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)
    if not parts:
        raise SpecError("kserve_version", f"{version!r} is not a version", "write it like '0.20'")
    return tuple(int(p) for p in parts[:3])
